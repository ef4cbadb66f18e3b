//! The `filter` stage kind: normalise every document as the reference does,
//! then drop empty, too short, too long and "trash" documents.
//!
//! Order of the checks for one document (the first that fails names the
//! reason in the summary):
//!
//! 1. normalise (see [`crate::normalize`]);
//! 2. `empty`: nothing left after normalisation (if `drop_empty`);
//! 3. `too_short` / `too_long`: fewer than `min_chars` or more than
//!    `max_chars` characters (Unicode scalar values) after normalisation;
//! 4. `trash` (if `remove_trash`): the reference's rule from
//!    `raw_dataset_preprocessing`: keep a document iff
//!    `tokens < trash_cutoff × characters`, where `characters` is the length
//!    of the document *as read* (Python's `len(text)` there) and `tokens` the
//!    length of the encoding of the normalised text (the reference's tokenizer
//!    normalises internally; with special tokens, as `tokenizer(texts)` does).
//!
//! The tokenizer is either given (a `tokenizer.json` from a tokenizer stage,
//! loaded with `tokenizers`), or, as the reference's `remove_trash = "self"`,
//! trained by this stage: a WordPiece model with whitespace pre-tokenisation
//! and the reference's special tokens, on a seeded uniform sample (reservoir
//! sampling) of the normalised input. It is written to
//! `trash-tokenizer.json` in the output directory, so the filtering can be
//! checked with the exact tokenizer. Its training is `cram_tokens::train`'s
//! deterministic WordPiece, so the same input and seed keep the same
//! documents. The reference's trained tokenizer appends `<sep>` to
//! every encoding (its `$A <sep>` template): the count adds that one token.
//! Pretrained models are never used (a Cramming rule).
//!
//! Documents are processed in batches of [`BATCH_DOCUMENTS`] in parallel
//! (rayon); the output keeps the input order.

use std::path::{Path, PathBuf};

use cram_data::documents::{DocumentWriter, DocumentsError, read_documents};
use indicatif::ProgressBar;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::pre_tokenizers::whitespace::Whitespace;
use tokenizers::{AddedToken, Tokenizer};

use crate::normalize::{NormalizeOptions, UnicodeForm};

/// Bumped whenever a change to the code changes the bytes `filter` writes.
pub const FILTER_CODE_VERSION: u32 = 2;

/// Documents per parallel batch.
pub const BATCH_DOCUMENTS: usize = 4096;

/// Name of the self-trained trash tokenizer in the output directory.
pub const TRASH_TOKENIZER_FILE: &str = "trash-tokenizer.json";

/// Special tokens of the reference's tokenizers (`_get_sane_token_args`).
const SPECIAL_TOKENS: [&str; 7] = ["<pad>", "<s>", "</s>", "<unk>", "<cls>", "<sep>", "<mask>"];

/// Parameters of the `filter` stage kind. Defaults are the reference's
/// (`normalizer` block and data-cleaning keys of Cramming's data configs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct FilterParams {
    /// Apply the normalisation switches below at all (false: texts are
    /// written as read and only the filters run).
    pub normalize: bool,
    /// Replace the LaTeX-style quotes "``" and "''" by '"' (always on in the
    /// reference).
    pub replace_quotes: bool,
    /// Unicode normalisation form: "auto" (NFD if `strip_accents`, else
    /// NFKC, as the reference), "nfd", "nfkc" or "none".
    pub unicode_form: UnicodeForm,
    /// Lowercase every character (the reference's `force_lowercase`).
    pub lowercase: bool,
    /// Remove accents (combining marks after NFD; the reference's
    /// `strip_accents`).
    pub strip_accents: bool,
    /// Collapse runs of ASCII spaces into one (always on in the reference).
    pub collapse_spaces: bool,
    /// Delete every non-ASCII character (the reference's
    /// `force_english_keyboard`).
    pub force_english_keyboard: bool,
    /// Replace spaces by "一" (the reference's `whitespace_escape`).
    pub whitespace_escape: bool,
    /// Drop documents that are empty after normalisation.
    pub drop_empty: bool,
    /// Drop documents with fewer characters than this after normalisation
    /// (0: no minimum).
    pub min_chars: u64,
    /// Drop documents with more characters than this after normalisation
    /// (null: no maximum).
    pub max_chars: Option<u64>,
    /// Drop documents that tokenise badly: keep iff tokens < `trash_cutoff` ×
    /// characters (the reference's `remove_trash`, off by default there; on
    /// in its processed C4 and Pile recipes).
    pub remove_trash: bool,
    /// Tokens-per-character cutoff of `remove_trash` (reference default 0.3;
    /// 0.25 in its C4 and Pile recipes).
    pub trash_cutoff: f64,
    /// Vocabulary size of the tokenizer trained for `remove_trash` when no
    /// tokenizer input is given (the reference trains its 32768-token
    /// WordPiece).
    pub trash_vocab_size: usize,
    /// Number of documents sampled (seeded, uniformly) from the input to
    /// train that tokenizer (0: all documents).
    pub trash_sample_documents: usize,
}

impl Default for FilterParams {
    fn default() -> Self {
        let n = NormalizeOptions::default();
        FilterParams {
            normalize: true,
            replace_quotes: n.replace_quotes,
            unicode_form: n.unicode_form,
            lowercase: n.lowercase,
            strip_accents: n.strip_accents,
            collapse_spaces: n.collapse_spaces,
            force_english_keyboard: n.force_english_keyboard,
            whitespace_escape: n.whitespace_escape,
            drop_empty: true,
            min_chars: 0,
            max_chars: None,
            remove_trash: false,
            trash_cutoff: 0.3,
            trash_vocab_size: 32768,
            trash_sample_documents: 20_000,
        }
    }
}

impl FilterParams {
    /// The normalisation these parameters ask for.
    pub fn normalize_options(&self) -> NormalizeOptions {
        if !self.normalize {
            return NormalizeOptions::identity();
        }
        NormalizeOptions {
            replace_quotes: self.replace_quotes,
            unicode_form: self.unicode_form,
            lowercase: self.lowercase,
            strip_accents: self.strip_accents,
            collapse_spaces: self.collapse_spaces,
            force_english_keyboard: self.force_english_keyboard,
            whitespace_escape: self.whitespace_escape,
        }
    }
}

/// Number of documents dropped for each reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DropCounts {
    /// Empty after normalisation.
    pub empty: u64,
    /// Fewer than `min_chars` characters.
    pub too_short: u64,
    /// More than `max_chars` characters.
    pub too_long: u64,
    /// Failed the `remove_trash` rule.
    pub trash: u64,
}

/// What `filter` did; also written to `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FilterSummary {
    /// Documents read.
    pub documents_in: u64,
    /// UTF-8 bytes read.
    pub bytes_in: u64,
    /// Documents written.
    pub documents_out: u64,
    /// UTF-8 bytes written (after normalisation).
    pub bytes_out: u64,
    /// Documents whose text normalisation changed.
    pub documents_changed: u64,
    /// Documents dropped, per reason.
    pub dropped: DropCounts,
    /// Where the `remove_trash` tokenizer came from: "input", "self" (trained
    /// here, saved as `trash-tokenizer.json`) or null when off.
    pub trash_tokenizer: Option<String>,
    /// Documents the self-trained tokenizer was trained on.
    pub trash_training_documents: u64,
    /// Output shard file names.
    pub shards: Vec<String>,
    /// Wall-clock seconds of the whole stage (not serialised: `summary.json`
    /// holds only what the input and the parameters determine).
    #[serde(skip)]
    pub seconds: f64,
}

/// Errors of the `filter` stage.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// Reading the input or writing the output documents failed.
    #[error(transparent)]
    Documents(#[from] DocumentsError),
    /// The tokenizer input could not be loaded.
    #[error(
        "{path}: cannot load the tokenizer for remove_trash: {message} (give the tokenizer.json of a tokenizer stage, or no tokenizer input to train one on the data)"
    )]
    LoadTokenizer {
        /// The `tokenizer.json` at fault.
        path: PathBuf,
        /// What `tokenizers` said.
        message: String,
    },
    /// Training the `remove_trash` tokenizer failed.
    #[error(
        "training the remove_trash tokenizer on {documents} sampled documents failed: {message}"
    )]
    TrainTokenizer {
        /// Number of sampled documents.
        documents: usize,
        /// What `tokenizers` said.
        message: String,
    },
    /// Tokenising a document failed.
    #[error("document {document} (0-based, input order): tokenisation failed: {message}")]
    Encode {
        /// Index of the document in the input.
        document: u64,
        /// What `tokenizers` said.
        message: String,
    },
    /// A parameter is out of range.
    #[error("invalid filter parameter: {0}")]
    InvalidParams(String),
    /// Writing `summary.json` or the trained tokenizer failed.
    #[error("{path}: {source}")]
    Io {
        /// The file at fault.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Whether a document is kept, or why it is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Keep,
    Empty,
    TooShort,
    TooLong,
    Trash,
}

/// A tokenizer with the reference's `<sep>` convention.
pub(crate) struct TrashTokenizer {
    tokenizer: Tokenizer,
    /// Tokens the reference's template adds that this tokenizer does not.
    extra_tokens: usize,
}

impl TrashTokenizer {
    /// Loads a saved `tokenizer.json`.
    pub(crate) fn load(path: &Path, extra_tokens: usize) -> Result<TrashTokenizer, FilterError> {
        let tokenizer = Tokenizer::from_file(path).map_err(|e| FilterError::LoadTokenizer {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(TrashTokenizer {
            tokenizer,
            extra_tokens,
        })
    }

    fn count(&self, text: &str, document: u64) -> Result<usize, FilterError> {
        let encoding = self
            .tokenizer
            .encode_fast(text, true)
            .map_err(|e| FilterError::Encode {
                document,
                message: e.to_string(),
            })?;
        Ok(encoding.len() + self.extra_tokens)
    }
}

/// Applies the length filters (not the trash rule) to a normalised text.
fn length_verdict(params: &FilterParams, normalized: &str) -> Verdict {
    if params.drop_empty && normalized.is_empty() {
        return Verdict::Empty;
    }
    if params.min_chars > 0 || params.max_chars.is_some() {
        let chars = normalized.chars().count() as u64;
        if chars < params.min_chars {
            return Verdict::TooShort;
        }
        if params.max_chars.is_some_and(|max| chars > max) {
            return Verdict::TooLong;
        }
    }
    Verdict::Keep
}

/// The reference's trash rule: keep iff tokens < cutoff × characters.
pub fn passes_trash_rule(tokens: usize, characters: usize, cutoff: f64) -> bool {
    (tokens as f64) < cutoff * characters as f64
}

/// Trains the reference's WordPiece tokenizer on `texts` (already
/// normalised, so the tokenizer gets no normaliser of its own).
pub fn train_trash_tokenizer(
    texts: &[String],
    vocab_size: usize,
) -> Result<Tokenizer, FilterError> {
    let fail = |message: String| FilterError::TrainTokenizer {
        documents: texts.len(),
        message,
    };
    let model = WordPiece::builder()
        .unk_token("<unk>".to_string())
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let mut tokenizer = Tokenizer::new(model);
    tokenizer.with_pre_tokenizer(Some(Whitespace {}));
    // cram's deterministic WordPiece trainer (the library's trainer breaks
    // ties in hash-map order, so the documents kept would change between
    // runs), with the library trainer's defaults.
    let mut counter = cram_tokens::train::WordCounter::new(&tokenizer);
    counter.add(texts).map_err(|e| fail(e.to_string()))?;
    let words = counter.finish();
    let cfg = cram_tokens::train::MergeConfig {
        vocab_size,
        min_frequency: 0,
        limit_alphabet: None,
        initial_alphabet: Vec::new(),
        continuing_subword_prefix: Some(cram_tokens::train::CONTINUATION.into()),
        special_tokens: SPECIAL_TOKENS.iter().map(|t| t.to_string()).collect(),
    };
    let model = cram_tokens::train::wordpiece(&words, &cfg, "<unk>", |_| {}).map_err(fail)?;
    tokenizer.with_model(model);
    let special: Vec<AddedToken> = SPECIAL_TOKENS
        .iter()
        .map(|t| AddedToken::from(*t, true))
        .collect();
    tokenizer.add_special_tokens(&special);
    Ok(tokenizer)
}

/// Runs the `filter` stage: reads the documents in `documents_dir`, writes
/// the kept, normalised documents and `summary.json` into `out_dir`.
///
/// `tokenizer_json` is the optional tokenizer input used by `remove_trash`;
/// without it (and with `remove_trash` on) a tokenizer is trained on a sample
/// drawn with `seed`.
pub fn run_filter(
    params: &FilterParams,
    documents_dir: &Path,
    tokenizer_json: Option<&Path>,
    seed: u64,
    out_dir: &Path,
    progress: &ProgressBar,
) -> Result<FilterSummary, FilterError> {
    let started = std::time::Instant::now();
    check_params(params)?;
    let total = cram_data::documents::count_documents(documents_dir)?;
    progress.set_length(total);
    progress.set_position(0);
    let (trash, trash_training_documents) = trash_tokenizer(
        params,
        documents_dir,
        tokenizer_json,
        seed,
        out_dir,
        progress,
    )?;
    progress.set_message("normalising and filtering");
    let mut writer = DocumentWriter::create(out_dir)?;
    let mut tally = Tally::default();
    filter_batches(
        params,
        trash.as_ref().map(|(t, _)| t),
        read_documents(documents_dir)?,
        0,
        &mut writer,
        &mut tally,
        progress,
    )?;
    let written = writer.finish()?;
    let summary = FilterSummary {
        documents_in: tally.documents_in,
        bytes_in: tally.bytes_in,
        documents_out: written.documents,
        bytes_out: written.bytes,
        documents_changed: tally.documents_changed,
        dropped: tally.dropped,
        trash_tokenizer: trash.map(|(_, source)| source.to_string()),
        trash_training_documents,
        shards: written.shards,
        seconds: started.elapsed().as_secs_f64(),
    };
    crate::write_summary(out_dir, &summary)
        .map_err(|(path, source)| FilterError::Io { path, source })?;
    Ok(summary)
}

/// Rejects parameters no run can use (the engine calls it when a pipeline loads, so a bad
/// value is reported before anything runs).
pub fn check_params(params: &FilterParams) -> Result<(), FilterError> {
    if params.remove_trash && !(params.trash_cutoff > 0.0 && params.trash_cutoff.is_finite()) {
        return Err(FilterError::InvalidParams(format!(
            "trash_cutoff must be a positive number, got {}",
            params.trash_cutoff
        )));
    }
    if let Some(max) = params.max_chars
        && max < params.min_chars
    {
        return Err(FilterError::InvalidParams(format!(
            "max_chars ({max}) is below min_chars ({})",
            params.min_chars
        )));
    }
    Ok(())
}

/// The `remove_trash` tokenizer and where it came from ("input" or
/// "self"), with the number of documents a self-trained one was trained on
/// (it is saved into `save_dir`). `None` when `remove_trash` is off.
#[allow(clippy::type_complexity)]
pub(crate) fn trash_tokenizer(
    params: &FilterParams,
    documents_dir: &Path,
    tokenizer_json: Option<&Path>,
    seed: u64,
    save_dir: &Path,
    progress: &ProgressBar,
) -> Result<(Option<(TrashTokenizer, &'static str)>, u64), FilterError> {
    if !params.remove_trash {
        return Ok((None, 0));
    }
    if let Some(path) = tokenizer_json {
        return Ok((Some((TrashTokenizer::load(path, 0)?, "input")), 0));
    }
    progress.set_message("sampling documents to train the remove_trash tokenizer");
    let options = params.normalize_options();
    let sample = sample_normalized(documents_dir, &options, params.trash_sample_documents, seed)?;
    progress.set_message(format!(
        "training the remove_trash tokenizer on {} documents",
        sample.len()
    ));
    let tokenizer = train_trash_tokenizer(&sample, params.trash_vocab_size)?;
    let path = save_dir.join(TRASH_TOKENIZER_FILE);
    tokenizer.save(&path, true).map_err(|e| FilterError::Io {
        path: path.clone(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let trash = TrashTokenizer {
        tokenizer,
        extra_tokens: 1,
    };
    Ok((Some((trash, "self")), sample.len() as u64))
}

/// Counts of a filter pass (of the whole input or of one shard).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Tally {
    pub documents_in: u64,
    pub bytes_in: u64,
    pub documents_changed: u64,
    pub dropped: DropCounts,
}

impl Tally {
    /// Adds another pass's counts.
    pub fn add(&mut self, other: &Tally) {
        self.documents_in += other.documents_in;
        self.bytes_in += other.bytes_in;
        self.documents_changed += other.documents_changed;
        self.dropped.empty += other.dropped.empty;
        self.dropped.too_short += other.dropped.too_short;
        self.dropped.too_long += other.dropped.too_long;
        self.dropped.trash += other.dropped.trash;
    }
}

/// Normalises and filters `batches` (whose first document has index
/// `first` in the stage's input), pushing the kept documents into `writer`
/// in order and counting into `tally`.
pub(crate) fn filter_batches<I>(
    params: &FilterParams,
    trash: Option<&TrashTokenizer>,
    batches: I,
    first: u64,
    writer: &mut DocumentWriter,
    tally: &mut Tally,
    progress: &ProgressBar,
) -> Result<(), FilterError>
where
    I: IntoIterator<Item = Result<Vec<String>, DocumentsError>>,
{
    let options = params.normalize_options();
    let mut next = first;
    for batch in batches {
        let batch = batch?;
        let start = next;
        let results: Vec<Result<(Verdict, Option<String>), FilterError>> = batch
            .par_iter()
            .enumerate()
            .map(|(i, text)| {
                let normalized = options.apply(text);
                let mut verdict = length_verdict(params, &normalized);
                if verdict == Verdict::Keep
                    && let Some(tokenizer) = trash
                {
                    let tokens = tokenizer.count(&normalized, start + i as u64)?;
                    if !passes_trash_rule(tokens, text.chars().count(), params.trash_cutoff) {
                        verdict = Verdict::Trash;
                    }
                }
                let changed = normalized != *text;
                Ok((verdict, changed.then_some(normalized)))
            })
            .collect();
        for (text, result) in batch.iter().zip(results) {
            let (verdict, normalized) = result?;
            next += 1;
            tally.documents_in += 1;
            tally.bytes_in += text.len() as u64;
            tally.documents_changed += u64::from(normalized.is_some());
            match verdict {
                Verdict::Keep => writer.push(normalized.as_deref().unwrap_or(text))?,
                Verdict::Empty => tally.dropped.empty += 1,
                Verdict::TooShort => tally.dropped.too_short += 1,
                Verdict::TooLong => tally.dropped.too_long += 1,
                Verdict::Trash => tally.dropped.trash += 1,
            }
        }
        progress.inc(batch.len() as u64);
    }
    Ok(())
}

/// Draws a uniform sample of `size` non-empty documents (all if 0 or fewer
/// exist) with
/// reservoir sampling seeded by `seed`, and normalises them, in input order.
fn sample_normalized(
    documents_dir: &Path,
    options: &NormalizeOptions,
    size: usize,
    seed: u64,
) -> Result<Vec<String>, FilterError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut reservoir: Vec<(u64, String)> = Vec::new();
    let mut seen = 0u64;
    for batch in read_documents(documents_dir)? {
        // Empty documents teach the tokenizer nothing: not sampled.
        for text in batch?.into_iter().filter(|t| !t.is_empty()) {
            if size == 0 || reservoir.len() < size {
                reservoir.push((seen, text));
            } else {
                let j = rng.random_range(0..=seen);
                if (j as usize) < size {
                    reservoir[j as usize] = (seen, text);
                }
            }
            seen += 1;
        }
    }
    reservoir.sort_by_key(|(index, _)| *index);
    Ok(reservoir
        .into_par_iter()
        .map(|(_, text)| options.apply(&text))
        .collect())
}
