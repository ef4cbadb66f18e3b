//! The `pack` stage kind (the recipes call the stage `tokenize`): encodes
//! documents with a trained tokenizer and packs them into fixed-length rows.
//!
//! As the reference does it: every document is encoded without special
//! tokens, followed by `[SEP]`; the token streams are concatenated in
//! document order and cut into rows of `seq_length` ids (no `[CLS]`, no
//! token types); the last partial row is dropped. Then the rows are ordered
//! and the first `max_sequences` kept.
//!
//! Encoding runs in parallel (rayon, one batch of about 8k documents at a
//! time, read by a separate thread), without offsets: through the
//! hand-written fast path of [`crate::fast`] when the tokenizer is the
//! default WordPiece (`fast_wordpiece`, on by default), else through the
//! library's `encode_fast`.
//!
//! Orderings, all with memory bounded independently of the corpus size:
//! * `none`: rows go straight to the Parquet shards (and encoding stops as
//!   soon as `max_sequences` rows exist).
//! * `randomized`: shard-level bucketing. Each row goes to one of K
//!   temporary bucket files picked by a seeded RNG, K chosen so that a
//!   bucket is expected to fit `shuffle_memory_bytes`; then each bucket in
//!   turn is loaded, shuffled in memory (Fisher–Yates) and written out. A
//!   bucket that still exceeds the budget is split again the same way.
//!   Assigning i.i.d. uniform buckets and then shuffling each uniformly
//!   gives a uniformly random permutation (it is a sort on i.i.d. random
//!   keys). Cost: the packed ids are written to and read from temporary
//!   files once (2 or 4 bytes per token each way, small next to the text).
//! * `sentence-length-curriculum`: rows with the most `"."` tokens first,
//!   ties in stored order (a stable counting sort: one temporary file per
//!   count 0..=seq_length, then the files from the highest count down).
//!   Same I/O cost as `randomized`, no RAM beyond write buffers.
//!
//! Temporary files live in a directory inside `out_dir` that is removed
//! when the stage ends, on success or error.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::fast::FastWordPiece;
use crate::sequences::{DEFAULT_SHARD_BYTES, IdType, SequencesError, ShardWriter};
use crate::tokenizer::{TOKENIZER_FILE, TokenizerError, load_tokenizer, special_ids};

/// Bumped whenever a change to the code changes the bytes the `pack` kind
/// writes.
pub const CODE_VERSION: u32 = 2;

/// Order of the packed rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RowOrdering {
    /// A seeded uniform shuffle of the rows.
    Randomized,
    /// Rows with the most `"."` tokens first, ties in stored order (the
    /// reference's recipes for C4 and the Pile).
    SentenceLengthCurriculum,
    /// Document order.
    None,
}

/// Parameters of the `pack` stage kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PackParams {
    /// Tokens per row (128 in the reference).
    pub seq_length: usize,
    /// Order of the rows: `sentence-length-curriculum` (reference recipes),
    /// `randomized` (seeded) or `none`.
    pub ordering: RowOrdering,
    /// Keep only the first this many rows after ordering (the reference's
    /// `max_seq_in_tokenized_dataset`); unset keeps all.
    pub max_sequences: Option<u64>,
    /// On-disk size after which a Parquet shard is closed (bytes).
    pub shard_bytes: u64,
    /// Memory budget of one shuffle bucket for `randomized` (bytes of packed
    /// ids held at once).
    pub shuffle_memory_bytes: u64,
    /// Rows of held-out text for pretraining's held-out loss: whole documents (a seeded
    /// choice) are packed into `heldout/part-*.parquet` instead of the training rows, until
    /// this many rows are full (at most a twentieth of the corpus). 0 holds nothing out.
    pub heldout_rows: u64,
    /// Encode with the hand-written WordPiece fast path when the tokenizer
    /// is the default WordPiece configuration (same ids as `tokenizers`,
    /// checked by the `pack` benchmark on the enwiki sample); `false`
    /// always uses the library.
    pub fast_wordpiece: bool,
}

impl Default for PackParams {
    fn default() -> Self {
        PackParams {
            seq_length: 128,
            ordering: RowOrdering::SentenceLengthCurriculum,
            max_sequences: None,
            shard_bytes: DEFAULT_SHARD_BYTES,
            shuffle_memory_bytes: 1 << 30,
            heldout_rows: 512,
            fast_wordpiece: true,
        }
    }
}

/// What the `pack` kind wrote (also its `summary.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackSummary {
    /// Rows written.
    pub rows: u64,
    /// Tokens of the documents encoded (without the `[SEP]` after each).
    pub tokens: u64,
    /// Documents encoded.
    pub documents: u64,
    /// UTF-8 bytes of the documents encoded.
    pub text_bytes: u64,
    /// Rows formed before `max_sequences` was applied.
    pub rows_formed: u64,
    /// Tokens (with separators) left over after the last full row.
    pub dropped_tokens: u64,
    /// Shard file names, in row order.
    pub shards: Vec<String>,
    /// Ids per row.
    pub seq_length: usize,
    /// Vocabulary size of the tokenizer (added tokens included).
    pub vocab_size: usize,
    /// Element type of the stored ids.
    pub dtype: IdType,
    /// Fraction of `[UNK]` among the encoded document tokens.
    pub unk_fraction: f64,
    /// Order of the rows.
    pub ordering: RowOrdering,
    /// Id of `[SEP]`, appended after each document.
    pub sep_id: u32,
    /// Id of `[PAD]` (never written by this stage; for consumers).
    pub pad_id: u32,
    /// Id of the `"."` token the curriculum counts (if the vocabulary has it).
    pub period_id: Option<u32>,
    /// Whether the hand-written WordPiece fast path encoded.
    pub fast_wordpiece: bool,
    /// Held-out rows written to `heldout/` (none of their documents is in the training rows).
    #[serde(default)]
    pub heldout_rows: u64,
    /// Documents held out.
    #[serde(default)]
    pub heldout_documents: u64,
    /// Tokens of the held-out documents, each with its `[SEP]` (they are not in the
    /// training rows: `tokens + documents = rows × seq_length + dropped_tokens +
    /// heldout_tokens`).
    #[serde(default)]
    pub heldout_tokens: u64,
    /// Wall-clock seconds of the stage. Not written to `summary.json`: the
    /// output must be the same bytes on every run, so that an unchanged
    /// rerun stops cache invalidation (the engine's manifest keeps the time).
    #[serde(skip)]
    pub seconds: f64,
    /// Megabytes (10^6) of text encoded per second of the stage (not
    /// written to `summary.json`, as `seconds`).
    #[serde(skip)]
    pub mb_per_second: f64,
}

/// Errors of the `pack` kind.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// The tokenizer could not be loaded or lacks a special token.
    #[error("{path}: {source}")]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: TokenizerError,
    },
    /// The documents could not be read.
    #[error("reading documents: {0}")]
    Documents(#[from] cram_data::documents::DocumentsError),
    /// The output could not be written.
    #[error("writing sequences: {0}")]
    Sequences(#[from] SequencesError),
    /// A temporary or copied file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file at fault.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The parameters cannot work.
    #[error("invalid pack parameters: {0}")]
    Params(String),
    /// Encoding a document failed.
    #[error("document {document}: encoding failed: {message}")]
    Encode {
        /// Index of the document (0-based, in input order).
        document: u64,
        /// The library's message.
        message: String,
    },
    /// An id does not fit the column type chosen from the vocabulary size.
    #[error(
        "document {document}: token id {id} does not fit {dtype:?} (vocabulary size {vocab_size}); \
         the tokenizer's ids are not contiguous; rebuild it with the tokenizer kind"
    )]
    IdOverflow {
        /// Index of the document (0-based, in input order).
        document: u64,
        /// The id at fault.
        id: u32,
        /// The column type.
        dtype: IdType,
        /// The tokenizer's vocabulary size.
        vocab_size: usize,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PackError + '_ {
    move |source| PackError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Loads a tokenizer for packing: padding and truncation off.
fn packing_tokenizer(path: &Path) -> Result<Tokenizer, PackError> {
    let wrap = |source| PackError::Tokenizer {
        path: path.to_path_buf(),
        source,
    };
    let mut tokenizer = load_tokenizer(path).map_err(wrap)?;
    tokenizer.with_padding(None);
    tokenizer.with_truncation(None).map_err(|e| {
        wrap(TokenizerError::Library {
            context: "disabling truncation".into(),
            message: e.to_string(),
        })
    })?;
    Ok(tokenizer)
}

/// Encodes a batch of documents in parallel (rayon): ids without special
/// tokens, each followed by `sep`; with `fast`, through the hand-written
/// encoder (identical ids, see [`crate::fast`]). Returns the token lists (with `[SEP]`)
/// and the number of `[UNK]` tokens. `first` is the index of the first
/// document, for error messages.
pub fn encode_documents(
    tokenizer: &Tokenizer,
    fast: Option<&FastWordPiece>,
    texts: &[String],
    sep: u32,
    unk: u32,
    max_id: u32,
    first: u64,
) -> Result<(Vec<Vec<u32>>, u64), PackError> {
    let encoded: Vec<(Vec<u32>, u64)> = texts
        .par_iter()
        .enumerate()
        .map(|(i, text)| {
            let document = first + i as u64;
            let mut raw = Vec::with_capacity(text.len() / 3 + 1);
            match fast {
                Some(fast) => fast.encode(tokenizer, text, &mut raw),
                None => tokenizer
                    .encode_fast(text.as_str(), false)
                    .map(|e| raw.extend_from_slice(e.get_ids())),
            }
            .map_err(|e| PackError::Encode {
                document,
                message: e.to_string(),
            })?;
            let mut ids = Vec::with_capacity(raw.len() + 1);
            let mut unks = 0u64;
            for &id in &raw {
                if id > max_id {
                    return Err(PackError::IdOverflow {
                        document,
                        id,
                        dtype: IdType::U16,
                        vocab_size: 0,
                    });
                }
                unks += u64::from(id == unk);
                ids.push(id);
            }
            ids.push(sep);
            Ok((ids, unks))
        })
        .collect::<Result<_, _>>()?;
    let unks = encoded.iter().map(|(_, u)| u).sum();
    Ok((encoded.into_iter().map(|(ids, _)| ids).collect(), unks))
}

/// Temporary files of raw little-endian ids, one row after another.
struct Spill {
    dtype: IdType,
    files: Vec<(PathBuf, BufWriter<File>, u64)>,
    bytes: Vec<u8>,
}

impl Spill {
    fn new(dir: &Path, prefix: &str, count: usize, dtype: IdType) -> Result<Spill, PackError> {
        let mut files = Vec::with_capacity(count);
        for i in 0..count {
            let path = dir.join(format!("{prefix}-{i:05}.bin"));
            let file = File::create(&path).map_err(io(&path))?;
            files.push((path, BufWriter::with_capacity(1 << 16, file), 0));
        }
        Ok(Spill {
            dtype,
            files,
            bytes: Vec::new(),
        })
    }

    fn push(&mut self, bucket: usize, row: &[u32]) -> Result<(), PackError> {
        self.bytes.clear();
        match self.dtype {
            IdType::U16 => row
                .iter()
                .for_each(|&v| self.bytes.extend_from_slice(&(v as u16).to_le_bytes())),
            IdType::U32 => row
                .iter()
                .for_each(|&v| self.bytes.extend_from_slice(&v.to_le_bytes())),
        }
        let (path, file, rows) = &mut self.files[bucket];
        file.write_all(&self.bytes).map_err(io(path))?;
        *rows += 1;
        Ok(())
    }

    /// Flushes and closes the files; returns (path, rows) per bucket.
    fn finish(self) -> Result<Vec<(PathBuf, u64)>, PackError> {
        self.files
            .into_iter()
            .map(|(path, mut file, rows)| {
                file.flush().map_err(io(&path))?;
                Ok((path, rows))
            })
            .collect()
    }
}

/// Reads rows back from a spill file, in order.
struct SpillReader {
    path: PathBuf,
    reader: BufReader<File>,
    dtype: IdType,
    seq_length: usize,
    bytes: Vec<u8>,
    row: Vec<u32>,
}

impl SpillReader {
    fn open(path: &Path, dtype: IdType, seq_length: usize) -> Result<SpillReader, PackError> {
        let file = File::open(path).map_err(io(path))?;
        Ok(SpillReader {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(1 << 16, file),
            dtype,
            seq_length,
            bytes: vec![0; seq_length * dtype.width()],
            row: vec![0; seq_length],
        })
    }

    /// The next row, or `None` at the end of the file.
    fn next_row(&mut self) -> Result<Option<&[u32]>, PackError> {
        match self.reader.read_exact(&mut self.bytes) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => {
                return Err(PackError::Io {
                    path: self.path.clone(),
                    source: e,
                });
            }
        }
        match self.dtype {
            IdType::U16 => {
                for (dst, src) in self.row.iter_mut().zip(self.bytes.chunks_exact(2)) {
                    *dst = u16::from_le_bytes([src[0], src[1]]) as u32;
                }
            }
            IdType::U32 => {
                for (dst, src) in self.row.iter_mut().zip(self.bytes.chunks_exact(4)) {
                    *dst = u32::from_le_bytes([src[0], src[1], src[2], src[3]]);
                }
            }
        }
        debug_assert_eq!(self.row.len(), self.seq_length);
        Ok(Some(&self.row))
    }
}

/// Where finished rows go, per ordering.
enum Sink {
    /// `none`: straight to the shards.
    Direct,
    /// `randomized`: rows to seeded random bucket files.
    Buckets { spill: Spill, rng: Box<ChaCha8Rng> },
    /// `sentence-length-curriculum`: rows to one file per count of `"."`.
    Curriculum { spill: Spill, period: Option<u32> },
}

impl Sink {
    /// Takes one row; returns `false` once no more rows are wanted.
    fn push(
        &mut self,
        row: &[u32],
        writer: &mut ShardWriter,
        limit: u64,
    ) -> Result<bool, PackError> {
        match self {
            Sink::Direct => {
                if writer.rows() < limit {
                    writer.push(row)?;
                }
                Ok(writer.rows() < limit)
            }
            Sink::Buckets { spill, rng } => {
                let bucket = rng.random_range(0..spill.files.len());
                spill.push(bucket, row)?;
                Ok(true)
            }
            Sink::Curriculum { spill, period } => {
                let count = period.map_or(0, |p| row.iter().filter(|&&id| id == p).count());
                spill.push(count, row)?;
                Ok(true)
            }
        }
    }
}

/// Shuffles one bucket file into the writer (splitting it again if it is
/// over the memory budget). Returns `false` once the writer has `limit` rows.
fn drain_shuffled(
    path: &Path,
    rows: u64,
    ctx: &mut ShuffleContext<'_>,
    writer: &mut ShardWriter,
    depth: u32,
) -> Result<bool, PackError> {
    let row_bytes = (ctx.seq_length * ctx.dtype.width()) as u64;
    if rows * row_bytes > ctx.budget && rows > 1 && depth < 8 {
        let parts = (rows * row_bytes).div_ceil(ctx.budget).max(2) as usize;
        let mut spill = Spill::new(
            ctx.dir,
            &format!("split{depth}-{}", ctx.splits),
            parts,
            ctx.dtype,
        )?;
        ctx.splits += 1;
        let mut reader = SpillReader::open(path, ctx.dtype, ctx.seq_length)?;
        while let Some(row) = reader.next_row()? {
            let bucket = ctx.rng.random_range(0..parts);
            spill.push(bucket, row)?;
        }
        drop(reader);
        std::fs::remove_file(path).map_err(io(path))?;
        for (part, part_rows) in spill.finish()? {
            if !drain_shuffled(&part, part_rows, ctx, writer, depth + 1)? {
                return Ok(false);
            }
        }
        return Ok(true);
    }
    let mut reader = SpillReader::open(path, ctx.dtype, ctx.seq_length)?;
    let mut all: Vec<u32> = Vec::with_capacity(rows as usize * ctx.seq_length);
    while let Some(row) = reader.next_row()? {
        all.extend_from_slice(row);
    }
    drop(reader);
    std::fs::remove_file(path).map_err(io(path))?;
    let mut order: Vec<u32> = (0..(all.len() / ctx.seq_length) as u32).collect();
    order.shuffle(&mut ctx.rng);
    for i in order {
        if writer.rows() >= ctx.limit {
            return Ok(false);
        }
        let start = i as usize * ctx.seq_length;
        writer.push(&all[start..start + ctx.seq_length])?;
    }
    Ok(writer.rows() < ctx.limit)
}

struct ShuffleContext<'a> {
    dir: &'a Path,
    dtype: IdType,
    seq_length: usize,
    budget: u64,
    limit: u64,
    rng: ChaCha8Rng,
    splits: usize,
}

/// Upper bound of the text bytes of a documents directory from the Parquet
/// metadata (uncompressed size of the column chunks), to size the buckets.
fn estimate_text_bytes(dir: &Path) -> Result<u64, PackError> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let mut total = 0u64;
    for path in cram_data::documents::list_shards(dir)? {
        let file = File::open(&path).map_err(io(&path))?;
        let reader = SerializedFileReader::new(file).map_err(|source| SequencesError::Parquet {
            path: path.clone(),
            source,
        })?;
        for rg in reader.metadata().row_groups() {
            total += rg
                .columns()
                .iter()
                .map(|c| c.uncompressed_size().max(0) as u64)
                .sum::<u64>();
        }
    }
    Ok(total)
}

/// Encodes the documents of `documents_dir` with the tokenizer at
/// `tokenizer_json`, packs them into rows and writes the Parquet shards,
/// `summary.json` and a copy of `tokenizer.json` into `out_dir`.
pub fn run_pack(
    params: &PackParams,
    documents_dir: &Path,
    tokenizer_json: &Path,
    seed: u64,
    out_dir: &Path,
    progress: &indicatif::ProgressBar,
) -> Result<PackSummary, PackError> {
    let start = Instant::now();
    if params.seq_length == 0 || params.seq_length > i32::MAX as usize {
        return Err(PackError::Params(format!(
            "seq_length = {} must be in 1..=2^31-1",
            params.seq_length
        )));
    }
    if params.shuffle_memory_bytes == 0 {
        return Err(PackError::Params(
            "shuffle_memory_bytes must be positive".into(),
        ));
    }
    let tokenizer = packing_tokenizer(tokenizer_json)?;
    let ids = special_ids(&tokenizer).map_err(|source| PackError::Tokenizer {
        path: tokenizer_json.to_path_buf(),
        source,
    })?;
    let vocab_size = tokenizer.get_vocab_size(true);
    let dtype = IdType::for_vocab(vocab_size);
    let period = tokenizer
        .encode_fast(".", false)
        .ok()
        .and_then(|e| e.get_ids().first().copied())
        .filter(|&id| id != ids.unk);
    let fast = if params.fast_wordpiece {
        FastWordPiece::new(&tokenizer)
    } else {
        None
    };
    let seq_length = params.seq_length;
    let limit = params.max_sequences.unwrap_or(u64::MAX);
    let total_documents = cram_data::documents::count_documents(documents_dir)?;
    progress.set_length(total_documents);
    progress.set_position(0);
    progress.set_message("packing");

    let scratch = tempfile::Builder::new()
        .prefix(".pack-scratch-")
        .tempdir_in(out_dir)
        .map_err(io(out_dir))?;
    let mut writer = ShardWriter::new(out_dir, seq_length, dtype, params.shard_bytes);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7061_636b);
    // About 4 bytes of text per token: the rows the corpus will give, to size
    // the held-out share.
    let text_bound = estimate_text_bytes(documents_dir)?;
    let estimated_rows = text_bound / (4 * seq_length as u64);
    let mut heldout = crate::heldout::HeldoutPicker::new(
        out_dir,
        params.heldout_rows,
        estimated_rows,
        seq_length,
        dtype,
        seed,
    )?;
    let mut sink = match params.ordering {
        RowOrdering::None => Sink::Direct,
        RowOrdering::Randomized => {
            // Tokens are at most bytes + documents (every token but [SEP]
            // covers at least one byte of text).
            let bound = (text_bound + total_documents) * dtype.width() as u64;
            let count = bound.div_ceil(params.shuffle_memory_bytes).clamp(1, 4096) as usize;
            Sink::Buckets {
                spill: Spill::new(scratch.path(), "bucket", count, dtype)?,
                rng: Box::new(ChaCha8Rng::seed_from_u64(rng.random())),
            }
        }
        RowOrdering::SentenceLengthCurriculum => Sink::Curriculum {
            spill: Spill::new(scratch.path(), "dots", seq_length + 1, dtype)?,
            period,
        },
    };

    // Encode and cut into rows; a reader thread decodes Parquet while the
    // rayon pool encodes the previous batch.
    let (mut documents, mut text_bytes, mut tokens, mut unks, mut rows_formed) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut pending: Vec<u32> = Vec::with_capacity(seq_length * 4);
    let batches = cram_data::documents::read_documents(documents_dir)?;
    std::thread::scope(|scope| -> Result<(), PackError> {
        let (tx, rx) = mpsc::sync_channel(2);
        let reader = scope.spawn(move || {
            for batch in batches {
                let stop = batch.is_err();
                if tx.send(batch).is_err() || stop {
                    break;
                }
            }
        });
        let result = (|| {
            for batch in rx.iter() {
                let batch = batch?;
                let (encoded, batch_unks) = encode_documents(
                    &tokenizer,
                    fast.as_ref(),
                    &batch,
                    ids.sep,
                    ids.unk,
                    dtype.max_id(),
                    documents,
                )
                .map_err(|e| match e {
                    PackError::IdOverflow { document, id, .. } => PackError::IdOverflow {
                        document,
                        id,
                        dtype,
                        vocab_size,
                    },
                    other => other,
                })?;
                let first = documents;
                documents += batch.len() as u64;
                text_bytes += batch.iter().map(|t| t.len() as u64).sum::<u64>();
                unks += batch_unks;
                progress.inc(batch.len() as u64);
                let mut more = true;
                for (j, doc) in encoded.into_iter().enumerate() {
                    tokens += doc.len() as u64 - 1;
                    if heldout.takes(first + j as u64) {
                        heldout.push(&doc)?;
                        continue;
                    }
                    pending.extend_from_slice(&doc);
                    let full = pending.len() / seq_length * seq_length;
                    for row in pending[..full].chunks_exact(seq_length) {
                        rows_formed += 1;
                        more = sink.push(row, &mut writer, limit)?;
                        if !more {
                            break;
                        }
                    }
                    pending.drain(..full);
                    if !more {
                        break;
                    }
                }
                if !more {
                    break;
                }
            }
            Ok(())
        })();
        drop(rx);
        reader.join().expect("the document reader thread panicked");
        result
    })?;
    let dropped_tokens = pending.len() as u64;

    // Order and write.
    progress.set_message("writing rows");
    match sink {
        Sink::Direct => {}
        Sink::Buckets { spill, .. } => {
            let mut ctx = ShuffleContext {
                dir: scratch.path(),
                dtype,
                seq_length,
                budget: params.shuffle_memory_bytes,
                limit,
                rng: ChaCha8Rng::seed_from_u64(rng.random()),
                splits: 0,
            };
            for (path, rows) in spill.finish()? {
                if !drain_shuffled(&path, rows, &mut ctx, &mut writer, 0)? {
                    break;
                }
            }
        }
        Sink::Curriculum { spill, .. } => {
            'outer: for (path, _) in spill.finish()?.iter().rev() {
                let mut reader = SpillReader::open(path, dtype, seq_length)?;
                while let Some(row) = reader.next_row()? {
                    if writer.rows() >= limit {
                        break 'outer;
                    }
                    writer.push(row)?;
                }
            }
        }
    }
    let shards = writer.finish()?;
    let held = heldout.finish()?;
    drop(scratch);
    let rows = rows_written(out_dir, &shards)?;

    let copy = out_dir.join(TOKENIZER_FILE);
    std::fs::copy(tokenizer_json, &copy).map_err(io(&copy))?;
    let seconds = start.elapsed().as_secs_f64();
    let summary = PackSummary {
        rows,
        tokens,
        documents,
        text_bytes,
        rows_formed,
        dropped_tokens,
        shards,
        seq_length,
        vocab_size,
        dtype,
        unk_fraction: if tokens == 0 {
            0.0
        } else {
            unks as f64 / tokens as f64
        },
        ordering: params.ordering,
        sep_id: ids.sep,
        pad_id: ids.pad,
        period_id: period,
        fast_wordpiece: fast.is_some(),
        heldout_rows: held.rows,
        heldout_documents: held.documents,
        heldout_tokens: held.tokens,
        seconds,
        mb_per_second: if seconds > 0.0 {
            text_bytes as f64 / 1e6 / seconds
        } else {
            0.0
        },
    };
    crate::write_summary(out_dir, &summary)
        .map_err(|(path, source)| PackError::Io { path, source })?;
    progress.set_message("packed");
    Ok(summary)
}

/// Rows in the written shards, from their Parquet metadata.
fn rows_written(out_dir: &Path, shards: &[String]) -> Result<u64, PackError> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let mut rows = 0u64;
    for name in shards {
        let path = out_dir.join(name);
        let file = File::open(&path).map_err(io(&path))?;
        let reader = SerializedFileReader::new(file).map_err(|source| SequencesError::Parquet {
            path: path.clone(),
            source,
        })?;
        rows += reader.metadata().file_metadata().num_rows() as u64;
    }
    Ok(rows)
}
