//! The `pack` stage split into shards, for an executor that spreads them
//! over machines (a Slurm array). Encoding is the stage's cost, so that is
//! what the shards do:
//!
//! * [`prepare_pack_shards`], once: checks the parameters and the tokenizer
//!   and counts the documents.
//! * [`run_pack_shard`], anywhere: encodes one contiguous range of the
//!   documents into `ids.bin` (each document's ids with its `[SEP]`, raw
//!   little-endian at the column width), `lengths.bin` (one `u32` per
//!   document) and `encoded.json` (its counts).
//! * [`merge_pack_shards`], in shard order: feeds the encoded documents to
//!   the same packer the one-pass [`crate::run_pack`] uses, which holds
//!   documents out, cuts rows and orders them.
//!
//! The packer sees the same documents with the same indices either way, so
//! the merged output is the one pass's, byte for byte. The one exception is
//! `ordering = "none"` with `max_sequences`: the one pass stops reading once
//! it has its rows, so shards would encode text it never reads, and
//! [`pack_splits`] says such a stage runs in one task.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use cram_data::documents::{count_documents, read_document_range, shard_range};
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use crate::pack::{
    Encoded, PackError, PackParams, PackSummary, RowOrdering, check_params, estimate_text_bytes,
    io, write_pack_output,
};
use crate::packer::{Encoder, Packer, encode_stream};
use crate::sequences::IdType;

const PREPARED_FILE: &str = "prepared.json";
const IDS_FILE: &str = "ids.bin";
const LENGTHS_FILE: &str = "lengths.bin";
const ENCODED_FILE: &str = "encoded.json";

#[derive(Debug, Serialize, Deserialize)]
struct Prepared {
    documents: u64,
}

/// What a shard's run records beside its ids (`encoded.json`).
#[derive(Debug, Serialize, Deserialize)]
struct ShardRecord {
    /// Index of the shard's first document.
    first: u64,
    /// Its counts.
    counts: Encoded,
}

/// Whether a `pack` stage with these parameters splits into shards (see the
/// module's documentation for the one case that does not).
pub fn pack_splits(params: &PackParams) -> bool {
    !(params.ordering == RowOrdering::None && params.max_sequences.is_some())
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, PackError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    serde_json::from_slice(&bytes).map_err(|e| PackError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), PackError> {
    let text = serde_json::to_vec_pretty(value).map_err(|e| PackError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    std::fs::write(path, text).map_err(io(path))
}

/// Prepares the shards of a pack run into the empty directory
/// `prepared_dir`: checks the parameters and the tokenizer, counts the
/// documents.
pub fn prepare_pack_shards(
    params: &PackParams,
    documents_dir: &Path,
    tokenizer_json: &Path,
    prepared_dir: &Path,
) -> Result<(), PackError> {
    check_params(params)?;
    if !pack_splits(params) {
        return Err(PackError::Params(
            "ordering = \"none\" with max_sequences reads only the documents it needs, \
             so it runs in one task, not in shards"
                .into(),
        ));
    }
    Encoder::load(params, tokenizer_json)?;
    let prepared = Prepared {
        documents: count_documents(documents_dir)?,
    };
    write_json(&prepared_dir.join(PREPARED_FILE), &prepared)
}

/// Encodes shard `shard` of `shards` (a contiguous range of the documents)
/// into the empty directory `shard_dir`.
#[allow(clippy::too_many_arguments)]
pub fn run_pack_shard(
    params: &PackParams,
    documents_dir: &Path,
    tokenizer_json: &Path,
    prepared_dir: &Path,
    shard: usize,
    shards: usize,
    shard_dir: &Path,
    progress: &ProgressBar,
) -> Result<(), PackError> {
    let prepared: Prepared = read_json(&prepared_dir.join(PREPARED_FILE))?;
    let encoder = Encoder::load(params, tokenizer_json)?;
    let range = shard_range(prepared.documents, shard, shards);
    progress.set_length(range.end - range.start);
    progress.set_message("encoding");
    let create = |name: &str| -> Result<(PathBuf, BufWriter<File>), PackError> {
        let path = shard_dir.join(name);
        let file = File::create(&path).map_err(io(&path))?;
        Ok((path, BufWriter::with_capacity(1 << 20, file)))
    };
    let (ids_path, mut ids) = create(IDS_FILE)?;
    let (lengths_path, mut lengths) = create(LENGTHS_FILE)?;
    let mut counts = Encoded::default();
    let mut bytes = Vec::new();
    let batches = read_document_range(documents_dir, range.clone())?;
    encode_stream(&encoder, batches, range.start, |_, texts, encoded, unks| {
        counts.add(texts, unks);
        for doc in &encoded {
            let len = u32::try_from(doc.len()).map_err(|_| {
                PackError::Params(format!("a document of {} tokens is over 2^32", doc.len()))
            })?;
            lengths
                .write_all(&len.to_le_bytes())
                .map_err(io(&lengths_path))?;
            bytes.clear();
            match encoder.dtype {
                IdType::U16 => doc
                    .iter()
                    .for_each(|&v| bytes.extend_from_slice(&(v as u16).to_le_bytes())),
                IdType::U32 => doc
                    .iter()
                    .for_each(|&v| bytes.extend_from_slice(&v.to_le_bytes())),
            }
            ids.write_all(&bytes).map_err(io(&ids_path))?;
        }
        progress.inc(texts.len() as u64);
        Ok(true)
    })?;
    ids.flush().map_err(io(&ids_path))?;
    lengths.flush().map_err(io(&lengths_path))?;
    if counts.documents != range.end - range.start {
        return Err(PackError::Shard {
            dir: shard_dir.to_path_buf(),
            message: format!(
                "encoded {} documents where the range {range:?} holds {}; \
                 the documents changed since the shards were prepared",
                counts.documents,
                range.end - range.start
            ),
        });
    }
    let record = ShardRecord {
        first: range.start,
        counts,
    };
    write_json(&shard_dir.join(ENCODED_FILE), &record)
}

/// Reads back one shard's encoded documents, in order.
struct ShardReader {
    dir: PathBuf,
    ids: BufReader<File>,
    lengths: BufReader<File>,
    width: usize,
    bytes: Vec<u8>,
    doc: Vec<u32>,
}

impl ShardReader {
    fn open(dir: &Path, dtype: IdType) -> Result<ShardReader, PackError> {
        let open = |name: &str| -> Result<BufReader<File>, PackError> {
            let path = dir.join(name);
            let file = File::open(&path).map_err(io(&path))?;
            Ok(BufReader::with_capacity(1 << 20, file))
        };
        Ok(ShardReader {
            dir: dir.to_path_buf(),
            ids: open(IDS_FILE)?,
            lengths: open(LENGTHS_FILE)?,
            width: dtype.width(),
            bytes: Vec::new(),
            doc: Vec::new(),
        })
    }

    fn broken(&self, message: String) -> PackError {
        PackError::Shard {
            dir: self.dir.clone(),
            message,
        }
    }

    /// The next document's ids, or `None` after the last.
    fn next_doc(&mut self) -> Result<Option<&[u32]>, PackError> {
        let mut len = [0u8; 4];
        match self.lengths.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                let mut rest = [0u8; 1];
                return match self.ids.read(&mut rest).map_err(io(&self.dir))? {
                    0 => Ok(None),
                    _ => Err(self.broken(format!(
                        "{IDS_FILE} holds more ids than {LENGTHS_FILE} lists"
                    ))),
                };
            }
            Err(e) => return Err(io(&self.dir.join(LENGTHS_FILE))(e)),
        }
        let len = u32::from_le_bytes(len) as usize;
        self.bytes.resize(len * self.width, 0);
        if let Err(e) = self.ids.read_exact(&mut self.bytes) {
            return Err(if e.kind() == std::io::ErrorKind::UnexpectedEof {
                self.broken(format!("{IDS_FILE} ends inside a document"))
            } else {
                io(&self.dir.join(IDS_FILE))(e)
            });
        }
        self.doc.clear();
        if self.width == 2 {
            self.doc.extend(
                self.bytes
                    .chunks_exact(2)
                    .map(|b| u16::from_le_bytes([b[0], b[1]]) as u32),
            );
        } else {
            self.doc.extend(
                self.bytes
                    .chunks_exact(4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            );
        }
        if self.doc.is_empty() {
            return Err(self.broken("a document without its [SEP]".into()));
        }
        Ok(Some(&self.doc))
    }
}

/// Packs the shards' encoded documents (in shard order) into `out_dir`, as
/// the one-pass [`crate::run_pack`] would have written it, with its
/// `summary.json` and `tokenizer.json`.
#[allow(clippy::too_many_arguments)]
pub fn merge_pack_shards(
    params: &PackParams,
    documents_dir: &Path,
    tokenizer_json: &Path,
    seed: u64,
    prepared_dir: &Path,
    shard_dirs: &[PathBuf],
    out_dir: &Path,
    progress: &ProgressBar,
) -> Result<PackSummary, PackError> {
    let start = Instant::now();
    check_params(params)?;
    let prepared: Prepared = read_json(&prepared_dir.join(PREPARED_FILE))?;
    let encoder = Encoder::load(params, tokenizer_json)?;
    let text_bound = estimate_text_bytes(documents_dir)?;
    let mut packer = Packer::new(
        params,
        &encoder,
        seed,
        out_dir,
        prepared.documents,
        text_bound,
    )?;
    progress.set_length(prepared.documents);
    progress.set_position(0);
    progress.set_message("packing the shards");
    let mut counts = Encoded::default();
    let mut index = 0u64;
    'shards: for (shard, dir) in shard_dirs.iter().enumerate() {
        let range = shard_range(prepared.documents, shard, shard_dirs.len());
        let record: ShardRecord = read_json(&dir.join(ENCODED_FILE))?;
        let encoded = record.counts;
        if record.first != range.start || encoded.documents != range.end - range.start {
            return Err(PackError::Shard {
                dir: dir.clone(),
                message: format!(
                    "holds documents {:?} where shard {shard} of {} covers {range:?}",
                    record.first..record.first + encoded.documents,
                    shard_dirs.len()
                ),
            });
        }
        counts.documents += encoded.documents;
        counts.text_bytes += encoded.text_bytes;
        counts.unks += encoded.unks;
        let mut reader = ShardReader::open(dir, encoder.dtype)?;
        let mut read = 0u64;
        while let Some(doc) = reader.next_doc()? {
            read += 1;
            let more = packer.push(index, doc)?;
            index += 1;
            if !more {
                break 'shards;
            }
        }
        if read != encoded.documents {
            return Err(PackError::Shard {
                dir: dir.clone(),
                message: format!(
                    "{LENGTHS_FILE} lists {read} documents, {ENCODED_FILE} {}",
                    encoded.documents
                ),
            });
        }
        progress.inc(read);
    }
    progress.set_message("writing rows");
    let packed = packer.finish()?;
    let summary = write_pack_output(
        params,
        &encoder,
        tokenizer_json,
        counts,
        packed,
        start,
        out_dir,
    )?;
    progress.set_message("packed");
    Ok(summary)
}
