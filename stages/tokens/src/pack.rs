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
use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::fast::FastWordPiece;
use crate::packer::{Encoder, Packed, Packer, encode_stream};
use crate::sequences::{DEFAULT_SHARD_BYTES, IdType, SequencesError};
use crate::tokenizer::{TOKENIZER_FILE, TokenizerError};

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
    /// A shard's directory does not hold what its run wrote (see
    /// [`crate::pack_shards`]).
    #[error(
        "{dir}: {message}; delete the folder that holds the shards and run the stage again to rebuild them"
    )]
    Shard {
        /// The shard's directory.
        dir: PathBuf,
        /// What is wrong.
        message: String,
    },
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

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PackError + '_ {
    move |source| PackError::Io {
        path: path.to_path_buf(),
        source,
    }
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

/// Upper bound of the text bytes of a documents directory from the Parquet
/// metadata (uncompressed size of the column chunks), to size the buckets.
pub(crate) fn estimate_text_bytes(dir: &Path) -> Result<u64, PackError> {
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

/// Checks the parameters that no input can make right (the engine calls it when a pipeline
/// loads, so a bad value is reported before anything runs). A row holds `[CLS]` and at least
/// one token, so `seq_length` is at least 2.
pub fn check_params(params: &PackParams) -> Result<(), PackError> {
    if params.seq_length < 2 || params.seq_length > i32::MAX as usize {
        return Err(PackError::Params(format!(
            "seq_length = {} must be in 2..=2^31-1",
            params.seq_length
        )));
    }
    if params.shuffle_memory_bytes == 0 {
        return Err(PackError::Params(
            "shuffle_memory_bytes must be positive".into(),
        ));
    }
    Ok(())
}

/// Counts of the documents encoded, summed over the batches (or shards).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Encoded {
    pub(crate) documents: u64,
    pub(crate) text_bytes: u64,
    pub(crate) unks: u64,
}

impl Encoded {
    pub(crate) fn add(&mut self, texts: &[String], unks: u64) {
        self.documents += texts.len() as u64;
        self.text_bytes += texts.iter().map(|t| t.len() as u64).sum::<u64>();
        self.unks += unks;
    }
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
    check_params(params)?;
    let encoder = Encoder::load(params, tokenizer_json)?;
    let total_documents = cram_data::documents::count_documents(documents_dir)?;
    progress.set_length(total_documents);
    progress.set_position(0);
    progress.set_message("packing");
    let text_bound = estimate_text_bytes(documents_dir)?;
    let mut packer = Packer::new(params, &encoder, seed, out_dir, total_documents, text_bound)?;
    let mut counts = Encoded::default();
    let batches = cram_data::documents::read_documents(documents_dir)?;
    encode_stream(&encoder, batches, 0, |first, texts, encoded, unks| {
        counts.add(texts, unks);
        progress.inc(texts.len() as u64);
        for (j, doc) in encoded.iter().enumerate() {
            if !packer.push(first + j as u64, doc)? {
                return Ok(false);
            }
        }
        Ok(true)
    })?;
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

/// Copies the tokenizer beside the rows and writes `summary.json`.
pub(crate) fn write_pack_output(
    params: &PackParams,
    encoder: &Encoder,
    tokenizer_json: &Path,
    counts: Encoded,
    packed: Packed,
    start: Instant,
    out_dir: &Path,
) -> Result<PackSummary, PackError> {
    let rows = rows_written(out_dir, &packed.shards)?;
    let copy = out_dir.join(TOKENIZER_FILE);
    std::fs::copy(tokenizer_json, &copy).map_err(io(&copy))?;
    let seconds = start.elapsed().as_secs_f64();
    let tokens = packed.tokens;
    let summary = PackSummary {
        rows,
        tokens,
        documents: counts.documents,
        text_bytes: counts.text_bytes,
        rows_formed: packed.rows_formed,
        dropped_tokens: packed.dropped_tokens,
        shards: packed.shards,
        seq_length: params.seq_length,
        vocab_size: encoder.vocab_size,
        dtype: encoder.dtype,
        unk_fraction: if tokens == 0 {
            0.0
        } else {
            counts.unks as f64 / tokens as f64
        },
        ordering: params.ordering,
        sep_id: encoder.ids.sep,
        pad_id: encoder.ids.pad,
        period_id: encoder.period,
        fast_wordpiece: encoder.fast.is_some(),
        heldout_rows: packed.heldout.rows,
        heldout_documents: packed.heldout.documents,
        heldout_tokens: packed.heldout.tokens,
        seconds,
        mb_per_second: if seconds > 0.0 {
            counts.text_bytes as f64 / 1e6 / seconds
        } else {
            0.0
        },
    };
    crate::write_summary(out_dir, &summary)
        .map_err(|(path, source)| PackError::Io { path, source })?;
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
