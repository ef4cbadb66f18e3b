//! The `dedup` stage split into shards, for an executor that spreads them
//! over machines (a Slurm array). The parts' suffix arrays are the pass's
//! main cost, so they are what the shards build:
//!
//! * [`prepare_dedup_shards`], once: reads the documents into a corpus file
//!   (`corpus.txt`, with `corpus.offsets`) and cuts the parts (`plan.json`):
//!   at most `part_mb`, smaller where `memory_mb` with the submitting
//!   host's threads needs it.
//! * [`run_dedup_shard`], anywhere: builds the window-start files of a
//!   contiguous run of the parts (`part-K.sa`), at most as many suffix
//!   arrays at once as the plan's budget holds.
//! * [`merge_dedup_shards`], on the submitting host: the k-way merge and
//!   scan over every part's file, then the cuts and the writing, with the
//!   corpus on the heap where that fits `memory_mb` (as the one pass), else
//!   mapped within it.
//!
//! The parts are the same windows whoever builds them, and the marks do not
//! depend on how the window starts were cut into parts, so the merged
//! output is the one-pass [`crate::run_dedup`]'s, byte for byte. Disk: the
//! corpus (1 byte per input byte) in the prepared folder and the part files
//! (4 bytes per window start) in the shards', on the shared filesystem until
//! the entry is committed.

use std::path::{Path, PathBuf};

use cram_data::documents::shard_range;
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use crate::dedup::{
    DedupError, DedupParams, DedupSummary, RunFacts, budget, check_params, close_scratch,
    read_corpus, scratch_dir, write_deduplicated,
};
use crate::residency::resident_bytes;
use crate::suffix::{
    Corpus, PartPlan, build_part_files, find_duplicates_in_part_files, merge_fits_in_memory,
    part_file_name, plan_parts,
};

const CORPUS_FILE: &str = "corpus.txt";
const OFFSETS_FILE: &str = "corpus.offsets";
const PLAN_FILE: &str = "plan.json";

/// What [`prepare_dedup_shards`] leaves beside the corpus.
#[derive(Debug, Serialize, Deserialize)]
struct Prepared {
    plan: PartPlan,
    /// Seconds the documents took to read (for the summary's timings).
    seconds_read: f64,
}

/// Reads the documents of `documents_dir` into `prepared` and cuts the
/// parts the shards build.
pub fn prepare_dedup_shards(
    params: &DedupParams,
    documents_dir: &Path,
    prepared: &Path,
    progress: &ProgressBar,
) -> Result<(), DedupError> {
    check_params(params)?;
    let t0 = std::time::Instant::now();
    let corpus = read_corpus(
        params,
        documents_dir,
        &prepared.join(CORPUS_FILE),
        true,
        progress,
    )?;
    corpus.save_offsets(&prepared.join(OFFSETS_FILE))?;
    let plan = plan_parts(
        &corpus,
        params.min_length,
        params.part_mb.saturating_mul(1 << 20),
        budget(params),
        rayon::current_num_threads(),
    )?;
    let record = Prepared {
        plan,
        seconds_read: t0.elapsed().as_secs_f64(),
    };
    let path = prepared.join(PLAN_FILE);
    let json = serde_json::to_vec_pretty(&record).expect("the plan serialises");
    std::fs::write(&path, json).map_err(|source| DedupError::Io { path, source })
}

/// The prepared corpus and plan, checked against `params`.
fn open_prepared(params: &DedupParams, prepared: &Path) -> Result<(Corpus, Prepared), DedupError> {
    let path = prepared.join(PLAN_FILE);
    let bytes = std::fs::read(&path).map_err(|source| DedupError::Io {
        path: path.clone(),
        source,
    })?;
    let record: Prepared = serde_json::from_slice(&bytes).map_err(|e| DedupError::Io {
        path: path.clone(),
        source: std::io::Error::other(e),
    })?;
    if record.plan.min_length != params.min_length.max(1) {
        return Err(DedupError::InvalidParams(format!(
            "{}: prepared for min_length {}, not {}",
            path.display(),
            record.plan.min_length,
            params.min_length
        )));
    }
    let corpus = Corpus::open(&prepared.join(CORPUS_FILE), &prepared.join(OFFSETS_FILE))?;
    Ok((corpus, record))
}

/// The parts shard `shard` of `shards` builds.
fn shard_parts(plan: &PartPlan, shard: usize, shards: usize) -> std::ops::Range<usize> {
    let r = shard_range(plan.parts.len() as u64, shard, shards);
    r.start as usize..r.end as usize
}

/// Builds shard `shard` of `shards` (a contiguous run of the plan's parts)
/// into `dir`; returns the number of parts built.
pub fn run_dedup_shard(
    params: &DedupParams,
    prepared: &Path,
    shard: usize,
    shards: usize,
    dir: &Path,
    progress: &ProgressBar,
) -> Result<usize, DedupError> {
    let (corpus, record) = open_prepared(params, prepared)?;
    let files = build_part_files(
        &corpus,
        &record.plan,
        shard_parts(&record.plan, shard, shards),
        dir,
        progress,
    )?;
    progress.set_message(format!("built {} suffix-array parts", files.len()));
    Ok(files.len())
}

/// Merges the shards' part files (`dirs`, in shard order) and writes the
/// deduplicated documents and `summary.json` into `out_dir`.
pub fn merge_dedup_shards(
    params: &DedupParams,
    prepared: &Path,
    dirs: &[PathBuf],
    out_dir: &Path,
    progress: &ProgressBar,
) -> Result<DedupSummary, DedupError> {
    let baseline = resident_bytes();
    let (mut corpus, record) = open_prepared(params, prepared)?;
    if merge_fits_in_memory(
        &corpus,
        &record.plan,
        budget(params),
        rayon::current_num_threads(),
    ) {
        // As the one pass, which holds what fits on the heap.
        corpus = Corpus::load(&prepared.join(CORPUS_FILE), &prepared.join(OFFSETS_FILE))?;
    }
    let mut files = Vec::with_capacity(record.plan.parts.len());
    for (shard, dir) in dirs.iter().enumerate() {
        for k in shard_parts(&record.plan, shard, dirs.len()) {
            files.push(dir.join(part_file_name(k)));
        }
    }
    let scratch = scratch_dir(out_dir)?;
    let t1 = std::time::Instant::now();
    let duplicates = find_duplicates_in_part_files(
        &corpus,
        &record.plan,
        &files,
        params.keep,
        budget(params),
        scratch.path(),
        progress,
    )?;
    let summary = write_deduplicated(
        params,
        &corpus,
        duplicates,
        out_dir,
        progress,
        RunFacts {
            baseline_rss_bytes: baseline,
            seconds_read: record.seconds_read,
            seconds_find: t1.elapsed().as_secs_f64(),
        },
    )?;
    drop(corpus);
    close_scratch(scratch)?;
    Ok(summary)
}
