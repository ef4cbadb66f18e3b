//! The `dedup` stage kind: exact-substring deduplication (Lee et al. 2021).
//!
//! Every byte position whose following `min_length` bytes occur at least
//! twice in the corpus (inside documents: matches never cross a document
//! boundary) starts a covered window; the union of the covered windows is cut
//! from the documents (all copies by default, as the reference; every copy
//! but the first with `keep = "first"`). Cuts that begin or end inside a
//! multi-byte character are widened to whole characters, so the output is
//! valid UTF-8. The remaining pieces of a document are concatenated as they
//! are (as the reference does); documents left with fewer than `min_chars`
//! characters are dropped. See [`crate::suffix`] for the algorithm.
//!
//! Memory: the corpus is read onto the heap while the in-memory pass fits
//! in `memory_mb` (≈ 1.125 bytes per input byte plus 4 bytes per byte of
//! each part being built, one per thread); past that it spills to a scratch
//! file, and the pass runs memory-mapped within the budget
//! ([`crate::suffix::find_duplicates_within`]). Both give the same bytes.

use std::path::{Path, PathBuf};

use cram_data::documents::{
    DocumentWriter, DocumentsError, StringColumnBatches, TEXT_COLUMN, list_shards,
};
use indicatif::ProgressBar;
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::residency::{Residency, resident_bytes, status_kib};
use crate::suffix::{
    Budget, Corpus, CorpusWriter, Duplicates, Keep, RepeatedWindow, SuffixError, find_duplicates,
    find_duplicates_within, memory_estimate,
};

/// Bumped whenever a change to the code changes the bytes `dedup` writes.
/// 2: `summary.json` no longer holds the part count and memory estimate
/// (facts of the run, which depend on the budget and the thread count).
pub const DEDUP_CODE_VERSION: u32 = 2;

/// Documents per parallel batch when writing.
const WRITE_BATCH: usize = 4096;

/// Documents per batch when reading: small batches keep the Arrow buffers
/// of the reader small (8192 measured 59 MB peak under mimalloc, 1024 29 MB).
const READ_BATCH: usize = 1024;

/// Parameters of the `dedup` stage kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DedupParams {
    /// Length in bytes of the windows compared (the reference's
    /// `deduplication_threshold`: 100 by default, 75 in its C4 recipe).
    pub min_length: usize,
    /// Which copies are cut: "none" keeps no copy of a repeated span (the
    /// reference), "first" keeps its first occurrence in corpus order.
    pub keep: Keep,
    /// Documents left with fewer characters than this are dropped (1: drop
    /// documents that became empty; 0: keep them).
    pub min_chars: u64,
    /// Largest part, in MiB, whose suffix array is built at once (4 bytes
    /// per byte while it is built, one part per thread in parallel); larger
    /// corpora are split into parts whose suffix arrays are merged. Memory ≈
    /// 1.125 × corpus + 4 × threads × part. Under the memory budget parts
    /// are sized to the budget instead.
    pub part_mb: usize,
    /// Memory budget in MiB. While the in-memory pass fits, it runs; a
    /// larger corpus is kept in memory-mapped scratch files (about 5.2 bytes
    /// of disk per input byte) and the pass holds its resident memory under
    /// the budget, on top of what the process held before the stage. The
    /// output is the same either way.
    pub memory_mb: u64,
    /// Number of most repeated spans listed in the summary.
    pub report_top: usize,
}

impl Default for DedupParams {
    fn default() -> Self {
        DedupParams {
            min_length: 100,
            keep: Keep::None,
            min_chars: 1,
            part_mb: 8,
            memory_mb: 4096,
            report_top: 20,
        }
    }
}

/// What `dedup` did; also written to `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DedupSummary {
    /// Documents read.
    pub documents_in: u64,
    /// UTF-8 bytes read.
    pub bytes_in: u64,
    /// Documents written.
    pub documents_out: u64,
    /// UTF-8 bytes written.
    pub bytes_out: u64,
    /// Documents from which something was cut.
    pub documents_changed: u64,
    /// Documents dropped because fewer than `min_chars` characters were left.
    pub documents_dropped: u64,
    /// Bytes cut (after widening to whole characters), dropped documents'
    /// remaining bytes not included.
    pub duplicate_bytes: u64,
    /// Number of contiguous spans cut.
    pub duplicate_spans: u64,
    /// Window starts (positions followed by `min_length` bytes of their
    /// document).
    pub window_starts: u64,
    /// Window starts whose window occurs at least twice.
    pub duplicated_windows: u64,
    /// Distinct repeated windows.
    pub repeated_windows: u64,
    /// The most repeated spans (left-maximal windows, text truncated).
    pub top_repeated: Vec<RepeatedWindow>,
    /// Parts the suffix array was built in (not serialised, as every field
    /// below: `summary.json` holds only what the input and the parameters
    /// determine, so identical outputs hash the same; these are facts of the
    /// run, which depend on the budget and the threads).
    #[serde(skip)]
    pub parts: usize,
    /// Whether the pass ran memory-mapped under the budget (else in memory).
    #[serde(skip)]
    pub within_budget: bool,
    /// Estimated memory of the in-memory pass in bytes (text, marks,
    /// document offsets, the suffix arrays built at once, one per thread).
    #[serde(skip)]
    pub memory_estimate_bytes: u64,
    /// That estimate per input byte.
    #[serde(skip)]
    pub memory_bytes_per_input_byte: f64,
    /// Resident memory of the process when the stage began (Linux `VmRSS`),
    /// not charged to the budget.
    #[serde(skip)]
    pub baseline_rss_bytes: Option<u64>,
    /// Peak resident memory of the process (Linux `VmHWM`) at the end of the
    /// stage, if known; includes whatever ran before in the same process.
    #[serde(skip)]
    pub peak_rss_bytes: Option<u64>,
    /// Times the mapped pages were dropped to stay within the budget.
    #[serde(skip)]
    pub page_releases: u64,
    /// Seconds spent reading the documents (not serialised).
    #[serde(skip)]
    pub seconds_read: f64,
    /// Seconds spent building and scanning suffix arrays (not serialised).
    #[serde(skip)]
    pub seconds_find: f64,
    /// Seconds spent cutting and writing (not serialised).
    #[serde(skip)]
    pub seconds_write: f64,
    /// Output shard file names.
    pub shards: Vec<String>,
}

/// Errors of the `dedup` stage.
#[derive(Debug, thiserror::Error)]
pub enum DedupError {
    /// Reading the input or writing the output documents failed.
    #[error(transparent)]
    Documents(#[from] DocumentsError),
    /// The suffix-array pass failed.
    #[error(transparent)]
    Suffix(#[from] SuffixError),
    /// A parameter is out of range.
    #[error("invalid dedup parameter: {0}")]
    InvalidParams(String),
    /// A scratch directory or `summary.json` could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory at fault.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Peak resident set size of this process (Linux only).
pub fn peak_rss_bytes() -> Option<u64> {
    status_kib("VmHWM:").map(|k| k * 1024)
}

/// What remains of one document after its cuts, or `None` if it is dropped.
struct Cut {
    text: Option<String>,
    cut_bytes: u64,
    spans: u64,
}

fn cut_document(corpus: &Corpus, duplicates: &Duplicates, doc: usize, min_chars: u64) -> Cut {
    let original = corpus.document(doc);
    let cuts = duplicates.cuts(corpus, doc);
    let mut kept = String::with_capacity(original.len());
    let mut at = 0;
    let mut cut_bytes = 0u64;
    for r in &cuts {
        kept.push_str(&original[at..r.start]);
        cut_bytes += r.len() as u64;
        at = r.end;
    }
    kept.push_str(&original[at..]);
    let keep = min_chars == 0 || kept.chars().nth(min_chars as usize - 1).is_some();
    Cut {
        text: keep.then_some(kept),
        cut_bytes,
        spans: cuts.len() as u64,
    }
}

/// Checks the parameters every path of the stage needs (the engine calls it when a pipeline
/// loads, so a bad value is reported before anything runs).
pub fn check_params(params: &DedupParams) -> Result<(), DedupError> {
    for (name, zero) in [
        ("min_length", params.min_length == 0),
        ("part_mb", params.part_mb == 0),
        ("memory_mb", params.memory_mb == 0),
    ] {
        if zero {
            return Err(DedupError::InvalidParams(format!(
                "{name} must be at least 1"
            )));
        }
    }
    Ok(())
}

/// The budget `memory_mb` gives.
pub(crate) fn budget(params: &DedupParams) -> Budget {
    Budget {
        bytes: params.memory_mb.saturating_mul(1 << 20),
    }
}

/// A scratch folder inside `dir`, removed when dropped or closed.
pub(crate) fn scratch_dir(dir: &Path) -> Result<tempfile::TempDir, DedupError> {
    tempfile::Builder::new()
        .prefix(".dedup-scratch-")
        .tempdir_in(dir)
        .map_err(|source| DedupError::Io {
            path: dir.to_path_buf(),
            source,
        })
}

/// Removes a [`scratch_dir`], reporting a failure.
pub(crate) fn close_scratch(scratch: tempfile::TempDir) -> Result<(), DedupError> {
    let path = scratch.path().to_path_buf();
    scratch
        .close()
        .map_err(|source| DedupError::Io { path, source })
}

/// Reads the documents of `documents_dir` into a corpus: on the heap while
/// the in-memory pass fits the budget, then in the file `file` (from the
/// start when `always_file`).
pub(crate) fn read_corpus(
    params: &DedupParams,
    documents_dir: &Path,
    file: &Path,
    always_file: bool,
    progress: &ProgressBar,
) -> Result<Corpus, DedupError> {
    let threads = rayon::current_num_threads();
    let part_bytes = params.part_mb.saturating_mul(1 << 20);
    let budget = budget(params);
    progress.set_message("reading documents");
    let documents = cram_data::documents::count_documents(documents_dir)?;
    progress.set_length(documents);
    progress.set_position(0);
    let mut loader = Loader::Heap(Corpus::new());
    if always_file {
        loader = loader.spill(file)?;
    }
    let shards = list_shards(documents_dir)?;
    for batch in StringColumnBatches::new(shards, TEXT_COLUMN, READ_BATCH) {
        let batch = batch?;
        for text in &batch {
            loader.push(text)?;
        }
        if let Loader::Heap(corpus) = &loader {
            let fits = memory_estimate(
                corpus.len(),
                documents as usize,
                part_bytes,
                params.min_length,
                threads,
            ) <= budget.bytes;
            if !fits {
                progress.set_message("reading documents (to a scratch file: over memory_mb)");
                loader = loader.spill(file)?;
            }
        }
        progress.inc(batch.len() as u64);
    }
    loader.finish()
}

/// Runs the `dedup` stage: reads the documents in `documents_dir`, writes the
/// deduplicated documents and `summary.json` into `out_dir`. Scratch files
/// go to a temporary folder inside `out_dir`, removed before returning.
pub fn run_dedup(
    params: &DedupParams,
    documents_dir: &Path,
    out_dir: &Path,
    progress: &ProgressBar,
) -> Result<DedupSummary, DedupError> {
    check_params(params)?;
    let baseline = resident_bytes();
    let budget = budget(params);
    let part_bytes = params.part_mb.saturating_mul(1 << 20);
    let scratch = scratch_dir(out_dir)?;

    let t0 = std::time::Instant::now();
    let corpus_file = scratch.path().join("corpus.txt");
    let corpus = read_corpus(params, documents_dir, &corpus_file, false, progress)?;
    let seconds_read = t0.elapsed().as_secs_f64();

    let t1 = std::time::Instant::now();
    let duplicates = if corpus.is_mapped() {
        find_duplicates_within(
            &corpus,
            params.min_length,
            params.keep,
            budget,
            scratch.path(),
            progress,
        )?
    } else {
        find_duplicates(
            &corpus,
            params.min_length,
            params.keep,
            part_bytes,
            scratch.path(),
            progress,
        )?
    };
    let seconds_find = t1.elapsed().as_secs_f64();
    let summary = write_deduplicated(
        params,
        &corpus,
        duplicates,
        out_dir,
        progress,
        RunFacts {
            baseline_rss_bytes: baseline,
            seconds_read,
            seconds_find,
        },
    )?;
    drop(corpus);
    close_scratch(scratch)?;
    Ok(summary)
}

/// What the summary records of the passes before the writing.
pub(crate) struct RunFacts {
    pub(crate) baseline_rss_bytes: Option<u64>,
    pub(crate) seconds_read: f64,
    pub(crate) seconds_find: f64,
}

/// Cuts the marked spans from every document of `corpus`, writes the
/// documents and `summary.json` to `out_dir`, and returns the summary.
pub(crate) fn write_deduplicated(
    params: &DedupParams,
    corpus: &Corpus,
    duplicates: Duplicates,
    out_dir: &Path,
    progress: &ProgressBar,
    facts: RunFacts,
) -> Result<DedupSummary, DedupError> {
    let budget = budget(params);
    let threads = rayon::current_num_threads();
    let part_bytes = params.part_mb.saturating_mul(1 << 20);
    let t2 = std::time::Instant::now();
    progress.set_message("cutting and writing");
    progress.set_length(corpus.documents() as u64);
    progress.set_position(0);
    // Under the budget, batches are also bounded in bytes (their texts are
    // held at once, twice) and the mapped pages they touched are capped at
    // a quarter of the budget.
    let (residency, batch_bytes) = if corpus.is_mapped() {
        (
            Residency::limited(corpus, Some(duplicates.marks()), budget.bytes / 4, threads),
            (budget.bytes / 16).max(1 << 20) as usize,
        )
    } else {
        (Residency::unlimited(corpus), usize::MAX)
    };
    let mut writer = DocumentWriter::create(out_dir)?;
    let (mut documents_changed, mut documents_dropped, mut duplicate_bytes, mut duplicate_spans) =
        (0u64, 0u64, 0u64, 0u64);
    let mut start = 0;
    while start < corpus.documents() {
        let mut end = start + 1;
        let mut bytes = corpus.range(start).len();
        while end < corpus.documents() && end - start < WRITE_BATCH && bytes < batch_bytes {
            bytes += corpus.range(end).len();
            end += 1;
        }
        let cuts: Vec<Cut> = (start..end)
            .into_par_iter()
            .map(|d| cut_document(corpus, &duplicates, d, params.min_chars))
            .collect();
        for cut in cuts {
            documents_changed += u64::from(cut.spans > 0);
            duplicate_bytes += cut.cut_bytes;
            duplicate_spans += cut.spans;
            match cut.text {
                Some(text) => writer.push(&text)?,
                None => documents_dropped += 1,
            }
        }
        residency.check();
        progress.set_position(end as u64);
        start = end;
    }
    let written = writer.finish()?;
    let (documents_in, bytes_in) = (corpus.documents() as u64, corpus.len() as u64);
    let within_budget = corpus.is_mapped();
    let (window_starts, duplicated_windows, repeated_windows, parts) = (
        duplicates.window_starts,
        duplicates.duplicated_windows,
        duplicates.groups,
        duplicates.parts,
    );
    let page_releases = duplicates.page_releases + residency.releases();
    let seconds_write = t2.elapsed().as_secs_f64();
    let top_repeated = duplicates.top_windows(corpus, params.report_top);
    drop(duplicates);

    let memory = memory_estimate(
        bytes_in as usize,
        documents_in as usize,
        part_bytes,
        params.min_length,
        threads,
    );
    let summary = DedupSummary {
        documents_in,
        bytes_in,
        documents_out: written.documents,
        bytes_out: written.bytes,
        documents_changed,
        documents_dropped,
        duplicate_bytes,
        duplicate_spans,
        window_starts,
        duplicated_windows,
        repeated_windows,
        top_repeated,
        parts,
        within_budget,
        memory_estimate_bytes: memory,
        memory_bytes_per_input_byte: if bytes_in == 0 {
            0.0
        } else {
            memory as f64 / bytes_in as f64
        },
        baseline_rss_bytes: facts.baseline_rss_bytes,
        peak_rss_bytes: peak_rss_bytes(),
        page_releases,
        seconds_read: facts.seconds_read,
        seconds_find: facts.seconds_find,
        seconds_write,
        shards: written.shards,
    };
    crate::write_summary(out_dir, &summary)
        .map_err(|(path, source)| DedupError::Io { path, source })?;
    Ok(summary)
}

/// The corpus while it is read: on the heap until the in-memory pass would
/// no longer fit the budget, then in a scratch file.
enum Loader {
    Heap(Corpus),
    File(CorpusWriter),
}

impl Loader {
    fn push(&mut self, document: &str) -> Result<(), DedupError> {
        match self {
            Loader::Heap(corpus) => corpus.push(document),
            Loader::File(writer) => writer.push(document)?,
        }
        Ok(())
    }

    /// Moves what was read so far to the file `path` and goes on there.
    fn spill(self, path: &Path) -> Result<Loader, DedupError> {
        match self {
            Loader::Heap(corpus) => {
                let mut writer = CorpusWriter::create(path)?;
                writer.push_corpus(&corpus)?;
                Ok(Loader::File(writer))
            }
            file => Ok(file),
        }
    }

    fn finish(self) -> Result<Corpus, DedupError> {
        match self {
            Loader::Heap(corpus) => Ok(corpus),
            Loader::File(writer) => Ok(writer.finish()?),
        }
    }
}
