//! The pass itself: parts cut to a plan, one suffix array per part reduced
//! to its window starts, then the k-way merge and scan that marks the
//! duplicates (see the parent module for what is found and how much memory
//! it takes).
//!
//! The pass also splits over processes (`parts.rs`), from the pieces here.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use libsais::SuffixArrayConstruction;
use rayon::prelude::*;

use super::merge::{Source, choose_pivots, merge};
use super::scan::{Scan, ScanTotals};
use super::windows::{FromFile, InMemory, Windows};
use super::{Budget, Corpus, Duplicates, Keep, MAX_PART_BYTES, SuffixError};
use crate::bits::{AtomicBits, Bits};
use crate::residency::Residency;

/// How a pass lays out its work: the part size, the merge's read buffers
/// and where the marks live.
pub(super) struct Plan {
    pub(super) part_bytes: usize,
    /// Window starts per read of a part file (per part and thread).
    chunk: usize,
    /// `Some` under a budget: the marks go to a mapped file and the mapped
    /// pages in the resident set are capped at a quarter of the budget.
    budget: Option<Budget>,
}

/// Smallest part worth building under a budget.
const MIN_PART_BYTES: usize = 16 << 10;
/// Window starts per read of a part file: most on the heap (64 KiB), fewest
/// under a tight budget (1 KiB).
pub(super) const MAX_CHUNK: usize = 1 << 14;
const MIN_CHUNK: usize = 1 << 8;

/// The error for a budget too small for `corpus` with `threads` threads.
fn too_small(
    corpus: &Corpus,
    budget: Budget,
    threads: usize,
    reason: String,
    needed: usize,
) -> SuffixError {
    SuffixError::Budget {
        budget_mb: budget.bytes >> 20,
        corpus_mb: (corpus.len() >> 20) as u64,
        documents: corpus.documents(),
        threads,
        reason,
        needed_mb: (needed as u64).div_ceil(1 << 20),
    }
}

impl Plan {
    fn in_memory(part_bytes: usize) -> Self {
        Plan {
            part_bytes: part_bytes.clamp(1, MAX_PART_BYTES),
            chunk: MAX_CHUNK,
            budget: None,
        }
    }

    /// Half the budget for the suffix arrays built at once (4 bytes per
    /// byte, one part per thread), an eighth for the merge's read buffers
    /// (one per part and thread), an eighth for the document offsets.
    pub(super) fn within(
        corpus: &Corpus,
        min_length: usize,
        budget: Budget,
        threads: usize,
    ) -> Result<Self, SuffixError> {
        let b = budget.bytes as usize;
        let t = threads.max(1);
        let n = corpus.len();
        let offsets = 8 * (corpus.documents() + 1);
        if offsets > b / 8 {
            return Err(too_small(
                corpus,
                budget,
                t,
                format!("the document offsets alone take {} MiB", offsets >> 20),
                8 * offsets,
            ));
        }
        // A sixteenth kept back for libsais's own buckets and the part's
        // window-start bitmap.
        let part_bytes = (b / 2 / t / 4 / 16 * 15)
            .saturating_sub(min_length)
            .min(MAX_PART_BYTES)
            .min(n.max(1));
        if part_bytes < MIN_PART_BYTES.min(n.max(1)) {
            let needed = 2 * t * 4 * (MIN_PART_BYTES + min_length) / 15 * 16;
            return Err(too_small(
                corpus,
                budget,
                t,
                format!(
                    "a suffix-array part per thread would be under {} KiB",
                    MIN_PART_BYTES >> 10
                ),
                needed,
            ));
        }
        let parts = n.div_ceil(part_bytes).max(1);
        Ok(Plan {
            part_bytes,
            chunk: merge_chunk(corpus, budget, t, parts)?,
            budget: Some(budget),
        })
    }
}

/// Window starts per read buffer when `threads` threads merge `parts`
/// parts within an eighth of `budget`.
pub(super) fn merge_chunk(
    corpus: &Corpus,
    budget: Budget,
    threads: usize,
    parts: usize,
) -> Result<usize, SuffixError> {
    let (b, t, parts) = (budget.bytes as usize, threads.max(1), parts.max(1));
    let chunk = (b / 8 / (t * parts * 4)).min(MAX_CHUNK);
    if chunk < MIN_CHUNK {
        return Err(too_small(
            corpus,
            budget,
            t,
            format!(
                "{parts} parts need {} MiB of merge buffers",
                (t * parts * 4 * MIN_CHUNK) >> 20
            ),
            8 * t * parts * 4 * MIN_CHUNK,
        ));
    }
    Ok(chunk)
}

/// Finds the duplicated windows of length `min_length` of `corpus` (see the
/// module documentation), building suffix arrays of at most `part_bytes`
/// bytes each and merging them through files in `scratch`; the marks are
/// kept on the heap.
///
/// The merge and scan run on all rayon threads: the window space is split
/// at sampled pivot windows, each thread merges the window starts of its key
/// range from every part (found by binary search) and marks duplicates in a
/// shared atomic bitmap; equal windows never straddle two ranges.
///
/// Also collects the most repeated *left-maximal* windows for the summary: a
/// group whose members all follow the same byte is the continuation of a
/// longer repeat that started one byte earlier and would only show that
/// repeat shifted, so it is not reported.
pub fn find_duplicates(
    corpus: &Corpus,
    min_length: usize,
    keep: Keep,
    part_bytes: usize,
    scratch: &Path,
    progress: &ProgressBar,
) -> Result<Duplicates, SuffixError> {
    find(
        corpus,
        min_length,
        keep,
        Plan::in_memory(part_bytes),
        scratch,
        progress,
    )
}

/// [`find_duplicates`] under a memory budget: the same marks, with the
/// parts sized to the budget and the marks in a mapped file in `scratch`.
/// What the pass holds resident stays under `budget.bytes`: the suffix
/// arrays built at once take at most half the budget, the merge's read
/// buffers and the document offsets an eighth each, and the mapped pages of
/// the corpus (mapped from a [`CorpusWriter`]'s file for the budget to hold)
/// and of the marks a quarter, past which they are dropped
/// ([`crate::residency`]). Fails with [`SuffixError::Budget`] when the
/// budget cannot hold the suffix arrays of small parts, the document offsets
/// or the merge's buffers.
pub fn find_duplicates_within(
    corpus: &Corpus,
    min_length: usize,
    keep: Keep,
    budget: Budget,
    scratch: &Path,
    progress: &ProgressBar,
) -> Result<Duplicates, SuffixError> {
    let threads = rayon::current_num_threads();
    let plan = Plan::within(corpus, min_length.max(1), budget, threads)?;
    find(corpus, min_length, keep, plan, scratch, progress)
}

fn find(
    corpus: &Corpus,
    min_length: usize,
    keep: Keep,
    plan: Plan,
    scratch: &Path,
    progress: &ProgressBar,
) -> Result<Duplicates, SuffixError> {
    let min_length = min_length.max(1);
    let parts = part_ranges(corpus, min_length, plan.part_bytes);
    let threads = rayon::current_num_threads().max(1);
    let marked = new_marks(corpus, plan.budget, scratch)?;
    let residency = match plan.budget {
        None => Residency::unlimited(corpus),
        Some(budget) => Residency::limited(corpus, Some(&marked), budget.bytes / 4, threads),
    };

    // 1. One suffix array per part, reduced to the part's window starts.
    // Parts are built concurrently, one per rayon thread, each with the
    // single-threaded libsais: OpenMP's multi-threaded mode spins at its
    // barriers and slowed down ten-fold on a machine busy with other work,
    // while independent parts scale the same on an idle one. At most one
    // suffix array per thread is alive at a time.
    progress.set_length(parts.len() as u64);
    progress.set_position(0);
    progress.set_message(format!("suffix arrays of {} parts", parts.len()));
    let t0 = std::time::Instant::now();
    let single = parts.len() == 1;
    let sources: Vec<Source> = parts
        .par_iter()
        .enumerate()
        .map(|(k, part)| {
            let source = if single {
                let (mut starts, _) = part_window_starts(corpus, part, k, min_length)?;
                starts.shrink_to_fit();
                Source::Memory {
                    starts,
                    base: part.start,
                }
            } else {
                Source::open(
                    write_part_file(corpus, part, k, min_length, scratch)?,
                    part.start,
                )?
            };
            residency.check();
            progress.inc(1);
            Ok(source)
        })
        .collect::<Result<_, SuffixError>>()?;
    let seconds_suffix_arrays = t0.elapsed().as_secs_f64();

    // 2. Split the window space between the threads, merge and scan.
    let merged = Merging {
        corpus,
        sources: &sources,
        marked: &marked,
        residency: &residency,
        threads,
        chunk: plan.chunk,
        min_length,
        keep,
        from_file: plan.budget.is_some(),
        progress,
    }
    .merge_and_scan()?;
    let page_releases = residency.releases();
    Ok(merged.into_duplicates(marked, seconds_suffix_arrays, page_releases))
}

/// The parts of at most `part_bytes` bytes that hold window starts.
pub(super) fn part_ranges(
    corpus: &Corpus,
    min_length: usize,
    part_bytes: usize,
) -> Vec<Range<usize>> {
    let n = corpus.len();
    (0..n.div_ceil(part_bytes))
        .map(|k| k * part_bytes..((k + 1) * part_bytes).min(n))
        .filter(|r| {
            corpus
                .window_starts_in(r.clone(), min_length)
                .next()
                .is_some()
        })
        .collect()
}

/// The marks: on the heap, or under a budget in the mapped file
/// `scratch/marks.bits`.
pub(super) fn new_marks(
    corpus: &Corpus,
    budget: Option<Budget>,
    scratch: &Path,
) -> Result<AtomicBits, SuffixError> {
    match budget {
        None => Ok(AtomicBits::new(corpus.len())),
        Some(_) => {
            let path = scratch.join("marks.bits");
            AtomicBits::mapped(corpus.len(), &path)
                .map_err(|source| SuffixError::Scratch { path, source })
        }
    }
}

/// Part `k`'s window starts (offsets from its start) in suffix order, and
/// how many window starts it holds.
fn part_window_starts(
    corpus: &Corpus,
    part: &Range<usize>,
    k: usize,
    min_length: usize,
) -> Result<(Vec<i32>, u64), SuffixError> {
    let mut is_start = Bits::new(part.len());
    let mut count = 0u64;
    for r in corpus.window_starts_in(part.clone(), min_length) {
        count += r.len() as u64;
        is_start.set_range(r.start - part.start, r.end - part.start);
    }
    let mut sa = part_suffix_array(corpus.text(), part, k, min_length)?;
    sa.retain(|&local| (local as usize) < part.len() && is_start.get(local as usize));
    Ok((sa, count))
}

/// The name of part `k`'s file of window starts ([`build_part_files`]).
pub fn part_file_name(k: usize) -> String {
    format!("part-{k:05}.sa")
}

/// Builds part `k`'s window starts in suffix order into
/// `dir/part-K.sa` (little-endian `u32` offsets from the part's start) and
/// returns its path.
pub(super) fn write_part_file(
    corpus: &Corpus,
    part: &Range<usize>,
    k: usize,
    min_length: usize,
    dir: &Path,
) -> Result<PathBuf, SuffixError> {
    let (sa, _) = part_window_starts(corpus, part, k, min_length)?;
    let path = dir.join(part_file_name(k));
    let io = |source| SuffixError::Scratch {
        path: path.clone(),
        source,
    };
    let mut w = BufWriter::with_capacity(1 << 16, File::create(&path).map_err(io)?);
    for &local in &sa {
        w.write_all(&(local as u32).to_le_bytes()).map_err(io)?;
    }
    w.flush().map_err(io)?;
    Ok(path)
}

/// What the merge and scan found, besides the marks.
pub(super) struct Merged {
    min_length: usize,
    parts: usize,
    window_starts: u64,
    totals: ScanTotals,
    seconds: f64,
}

impl Merged {
    pub(super) fn into_duplicates(
        self,
        marked: AtomicBits,
        seconds_suffix_arrays: f64,
        page_releases: u64,
    ) -> Duplicates {
        Duplicates {
            min_length: self.min_length,
            marked,
            window_starts: self.window_starts,
            duplicated_windows: self.totals.duplicated_windows,
            groups: self.totals.groups,
            parts: self.parts,
            seconds_suffix_arrays,
            seconds_merge: self.seconds,
            page_releases,
            top: self.totals.top,
        }
    }
}

/// The merge and scan of the parts' window starts into `marked`: what
/// every thread shares, whichever [`Windows`] they read.
pub(super) struct Merging<'a> {
    pub(super) corpus: &'a Corpus,
    pub(super) sources: &'a [Source],
    pub(super) marked: &'a AtomicBits,
    pub(super) residency: &'a Residency<'a>,
    pub(super) threads: usize,
    /// Window starts per read of a part file (per part and thread).
    pub(super) chunk: usize,
    pub(super) min_length: usize,
    pub(super) keep: Keep,
    /// Read the windows from the corpus's file (by `pread`) where it has
    /// one, rather than through memory.
    pub(super) from_file: bool,
    pub(super) progress: &'a ProgressBar,
}

impl Merging<'_> {
    /// Merges and scans every source.
    pub(super) fn merge_and_scan(&self) -> Result<Merged, SuffixError> {
        let Merging {
            corpus,
            sources,
            min_length,
            progress,
            ..
        } = *self;
        let t1 = std::time::Instant::now();
        progress.set_message(format!(
            "merging and scanning {} suffix arrays (window starts)",
            sources.len()
        ));
        let window_starts = corpus.window_start_count(min_length);
        progress.set_length(window_starts);
        progress.set_position(0);
        let scans = match (self.from_file, corpus.path()) {
            (true, Some(path)) => self.run(&FromFile::open(path, min_length)?)?,
            _ => self.run(&InMemory {
                text: corpus.text(),
                min_length,
            })?,
        };
        let mut totals = ScanTotals::default();
        for s in scans {
            totals.duplicated_windows += s.duplicated_windows;
            totals.groups += s.groups;
            totals.top.extend(s.top);
        }
        Ok(Merged {
            min_length,
            parts: sources.len(),
            window_starts,
            totals,
            seconds: t1.elapsed().as_secs_f64(),
        })
    }

    /// Splits the window space between the threads at pivot windows, merges
    /// each range from every source and scans it.
    fn run<W: Windows>(&self, windows: &W) -> Result<Vec<ScanTotals>, SuffixError> {
        let Merging {
            corpus,
            sources,
            marked,
            residency,
            threads,
            chunk,
            min_length,
            keep,
            progress,
            ..
        } = *self;
        let pivots = choose_pivots(sources, windows, threads)?;
        let mut cuts: Vec<Vec<u64>> = Vec::with_capacity(sources.len());
        for source in sources {
            let mut c = vec![0u64];
            for pivot in &pivots {
                c.push(source.lower_bound(pivot, windows)?);
            }
            c.push(source.len());
            cuts.push(c);
        }
        (0..=pivots.len())
            .into_par_iter()
            .map(|t| {
                let mut scan = Scan::new(
                    corpus, windows, marked, residency, progress, min_length, keep,
                );
                let mut readers = Vec::with_capacity(sources.len());
                for (source, c) in sources.iter().zip(&cuts) {
                    readers.push(source.reader(c[t]..c[t + 1], chunk)?);
                }
                merge(windows, readers, |p, w| scan.push(p, w))?;
                Ok(scan.finish())
            })
            .collect()
    }
}

/// Suffix array (local offsets) of the text of `part` extended by
/// `min_length - 1` bytes.
fn part_suffix_array(
    text: &[u8],
    part: &Range<usize>,
    index: usize,
    min_length: usize,
) -> Result<Vec<i32>, SuffixError> {
    let end = (part.end + min_length - 1).min(text.len());
    SuffixArrayConstruction::for_text(&text[part.start..end])
        .in_owned_buffer32()
        .single_threaded()
        .run()
        .map(|r| r.into_vec())
        .map_err(|e| SuffixError::Construction {
            part: index,
            start: part.start,
            end,
            message: format!("{e:?}"),
        })
}
