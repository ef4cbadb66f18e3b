//! The pass split over processes, for an executor that spreads the suffix
//! arrays over machines: [`plan_parts`] cuts the parts once,
//! [`build_part_files`] builds any run of them into files, anywhere, and
//! [`find_duplicates_in_part_files`] merges every part's file. The parts
//! are the same windows in the same order whichever process built them, and
//! the marks do not depend on where the window starts were cut, so they are
//! the one pass's.

use std::ops::Range;
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::find::{MAX_CHUNK, Merging, Plan, merge_chunk, new_marks, part_ranges, write_part_file};
use super::merge::Source;
use super::{Budget, Corpus, Duplicates, Keep, SuffixError};
use crate::residency::Residency;

/// The parts of a pass split over processes, cut once by [`plan_parts`]
/// and read by every process that builds or merges them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartPlan {
    /// Window length.
    pub min_length: usize,
    /// The parts (byte ranges of the corpus that hold window starts).
    pub parts: Vec<Range<usize>>,
    /// Window starts in each part, to check the built files by.
    pub window_starts: Vec<u64>,
    /// Parts whose suffix arrays fit the budget at once.
    pub concurrent: usize,
    /// The budget the parts were sized to, in bytes.
    pub budget_bytes: u64,
}

/// Cuts `corpus` into parts of at most `max_part_bytes`, smaller where
/// [`super::find_duplicates_within`] would cut them smaller with `threads`
/// threads under `budget`, for [`build_part_files`].
pub fn plan_parts(
    corpus: &Corpus,
    min_length: usize,
    max_part_bytes: usize,
    budget: Budget,
    threads: usize,
) -> Result<PartPlan, SuffixError> {
    let min_length = min_length.max(1);
    let plan = Plan::within(corpus, min_length, budget, threads)?;
    let part_bytes = plan.part_bytes.min(max_part_bytes.max(1));
    let parts = part_ranges(corpus, min_length, part_bytes);
    let window_starts = parts
        .iter()
        .map(|p| {
            corpus
                .window_starts_in(p.clone(), min_length)
                .map(|r| r.len() as u64)
                .sum()
        })
        .collect();
    Ok(PartPlan {
        min_length,
        parts,
        window_starts,
        concurrent: threads.max(1),
        budget_bytes: budget.bytes,
    })
}

/// Builds the window-start files of parts `which` of `plan` into `dir`
/// (`part-K.sa`, K the part's index in the plan), at most
/// `plan.concurrent` suffix arrays at once so that a process with more
/// threads than the planner stays within the plan's budget. Returns the
/// files, in order.
pub fn build_part_files(
    corpus: &Corpus,
    plan: &PartPlan,
    which: Range<usize>,
    dir: &Path,
    progress: &ProgressBar,
) -> Result<Vec<PathBuf>, SuffixError> {
    let which = which.start.min(plan.parts.len())..which.end.min(plan.parts.len());
    progress.set_length(which.len() as u64);
    progress.set_position(0);
    progress.set_message(format!("suffix arrays of {} parts", which.len()));
    let threads = rayon::current_num_threads().max(1);
    let residency = Residency::limited(corpus, None, plan.budget_bytes / 4, threads);
    let mut files = Vec::with_capacity(which.len());
    let indices: Vec<usize> = which.collect();
    for batch in indices.chunks(plan.concurrent.max(1)) {
        let built: Vec<PathBuf> = batch
            .par_iter()
            .map(|&k| {
                let path = write_part_file(corpus, &plan.parts[k], k, plan.min_length, dir)?;
                residency.check();
                progress.inc(1);
                Ok(path)
            })
            .collect::<Result<_, SuffixError>>()?;
        files.extend(built);
    }
    Ok(files)
}

/// Whether the merge of `plan`'s parts with `threads` threads fits
/// `budget` with the corpus on the heap: the text, the marks (1/8 byte per
/// byte), the document offsets and the read buffers of every part and
/// thread (the part files are read, never held).
pub fn merge_fits_in_memory(
    corpus: &Corpus,
    plan: &PartPlan,
    budget: Budget,
    threads: usize,
) -> bool {
    let n = corpus.len() as u64;
    let buffers = 4 * MAX_CHUNK as u64 * plan.parts.len() as u64 * threads as u64;
    n + n / 8 + 8 * (corpus.documents() as u64 + 1) + buffers <= budget.bytes
}

/// The marks of the pass whose parts `plan` cut and whose window-start
/// files (one per part, in order, from [`build_part_files`]) are `files`:
/// the merge and scan of [`super::find_duplicates`] for a corpus on the heap, of
/// [`super::find_duplicates_within`] under `budget` (marks in `scratch`) for a
/// mapped one. A missing file, or one whose size is not its
/// part's window starts, is an error.
pub fn find_duplicates_in_part_files(
    corpus: &Corpus,
    plan: &PartPlan,
    files: &[PathBuf],
    keep: Keep,
    budget: Budget,
    scratch: &Path,
    progress: &ProgressBar,
) -> Result<Duplicates, SuffixError> {
    let bad = |path: &Path, what: String| SuffixError::Scratch {
        path: path.to_path_buf(),
        source: std::io::Error::other(what),
    };
    if files.len() != plan.parts.len() {
        return Err(bad(
            files.first().map(PathBuf::as_path).unwrap_or(scratch),
            format!(
                "{} part files for a plan of {} parts",
                files.len(),
                plan.parts.len()
            ),
        ));
    }
    let mut sources = Vec::with_capacity(files.len());
    for (k, path) in files.iter().enumerate() {
        let source = Source::open(path.clone(), plan.parts[k].start)?;
        if source.len() != plan.window_starts[k] {
            return Err(bad(
                path,
                format!(
                    "{} window starts where part {k} has {}: the file is damaged or from another plan",
                    source.len(),
                    plan.window_starts[k],
                ),
            ));
        }
        sources.push(source);
    }
    // A corpus on the heap merges as the in-memory pass does; a mapped one
    // within the budget.
    let threads = rayon::current_num_threads().max(1);
    let mapped = corpus.is_mapped();
    let (chunk, budget) = if mapped {
        (
            merge_chunk(corpus, budget, threads, sources.len())?,
            Some(budget),
        )
    } else {
        (MAX_CHUNK, None)
    };
    let marked = new_marks(corpus, budget, scratch)?;
    let residency = match budget {
        Some(b) => Residency::limited(corpus, Some(&marked), b.bytes / 4, threads),
        None => Residency::unlimited(corpus),
    };
    let merged = Merging {
        corpus,
        sources: &sources,
        marked: &marked,
        residency: &residency,
        threads,
        chunk,
        min_length: plan.min_length,
        keep,
        from_file: mapped,
        progress,
    }
    .merge_and_scan()?;
    let page_releases = residency.releases();
    Ok(merged.into_duplicates(marked, 0.0, page_releases))
}
