//! Finding repeated windows with suffix arrays built in parts and merged.
//!
//! # What is found
//!
//! For a window length `L`, a byte position `p` of document `d` is a *window
//! start* when its window `text[p .. p + L]` lies inside `d` (`p + L` is at
//! most the end of `d`). A window start is *duplicated* when another window
//! start has the same `L` bytes. With [`Keep::None`] every duplicated window
//! start is marked; with [`Keep::First`] all but the smallest position of each
//! group of equal windows are.
//!
//! # Document boundaries
//!
//! The documents are concatenated without any separator, and windows that
//! would reach past the end of their document are simply never considered
//! (they are not window starts). The suffix array sorts suffixes of the
//! concatenation, which may run on into the next document; but two window
//! starts are only ever compared on their first `L` bytes, which lie inside
//! their own documents. So a match can never span a boundary and no
//! separator byte can take part in one, unlike the reference's `<EOT>`
//! separator, whose text can itself be matched and cut, merging documents.
//!
//! # Parts and merging (memory)
//!
//! The window starts are split by position into parts of at most
//! `part_bytes`. Each part's text (extended by `L - 1` bytes, so every window
//! starting in it is complete) gets its suffix array from `libsais` (SA-IS;
//! one part per thread, in parallel), 4 bytes per byte while it is built; the
//! window starts of the part, in suffix order, are then written to a scratch
//! file as `u32` (4 bytes per window start) and the array is freed. Restricted
//! to window starts, a part's suffix order is also sorted by `L`-byte windows.
//! A k-way merge (binary heap, keyed by the `L`-byte windows) of the part
//! files then yields all window starts sorted by window, so equal windows come
//! out contiguously and one pass finds every group. With a single part the
//! array is scanned in memory and no file is written.
//!
//! # Memory
//!
//! In memory ([`find_duplicates`]): the text (1 byte per input byte), the
//! marks bitmap (1/8 byte), the document offsets (8 bytes per document), and
//! `4 × (part_bytes + L)` bytes for the suffix array of each part being
//! built (one per thread); the merge streams with 64 KiB buffers per part
//! and thread. So about `1.125 × corpus + 4 × threads × part_bytes` bytes,
//! see [`memory_estimate`].
//!
//! Under a budget ([`find_duplicates_within`]), as Lee et al.'s tool keeps
//! its tables on disk: the text is a file ([`CorpusWriter`]), memory-mapped
//! for the parts' suffix arrays and the cuts and read by `pread` in the merge
//! (see [`windows`]), and the marks a shared map of a scratch file; a
//! [`crate::residency::Residency`] drops the maps' pages from the resident
//! set once they pass a quarter of the budget.
//! The parts are sized so that the suffix arrays built at once take half the
//! budget and the merge's read buffers an eighth, which needs a budget of a
//! few MiB per thread and, for very large corpora, `8 × threads × parts`
//! KiB. Disk: the text (1 byte per byte), the marks (1/8) and the part files
//! (4 bytes per window start). The marks, and so the output, are the same
//! whichever path runs.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use libsais::SuffixArrayConstruction;
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::bits::{AtomicBits, Bits};
use crate::residency::Residency;

mod corpus;
mod merge;
mod scan;
mod windows;

pub use corpus::{Corpus, CorpusWriter};
use merge::{Source, choose_pivots, merge};
use scan::{Scan, ScanTotals};
use windows::{FromFile, InMemory, Windows};

/// Which copies of a repeated window are cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Keep {
    /// Cut every copy (the reference's behaviour).
    None,
    /// Keep the first occurrence (smallest position in corpus order) of each
    /// repeated window and cut the others.
    First,
}

/// Largest text a part may span: `libsais` with `i32` output.
pub const MAX_PART_BYTES: usize = (i32::MAX as usize) / 2;

/// Number of top repeated windows kept while scanning (before deduplicating
/// their displayed text).
const TOP_CANDIDATES: usize = 256;

/// Errors of the suffix-array pass.
#[derive(Debug, thiserror::Error)]
pub enum SuffixError {
    /// `libsais` refused the input or ran out of memory.
    #[error(
        "suffix array construction of part {part} (bytes {start}..{end}) failed: {message}; lower part_mb if memory ran out"
    )]
    Construction {
        /// Index of the part.
        part: usize,
        /// First byte of the part in the concatenated corpus.
        start: usize,
        /// End byte of the part text.
        end: usize,
        /// What `libsais` reported.
        message: String,
    },
    /// The memory budget cannot hold what the pass needs at the least.
    #[error(
        "a memory budget of {budget_mb} MiB is too small to deduplicate {corpus_mb} MiB in {documents} documents with {threads} threads: {reason}; raise memory_mb to at least {needed_mb}"
    )]
    Budget {
        /// The budget in MiB.
        budget_mb: u64,
        /// The corpus in MiB.
        corpus_mb: u64,
        /// Documents in the corpus.
        documents: usize,
        /// Threads of the pass.
        threads: usize,
        /// What does not fit.
        reason: String,
        /// The smallest budget that would do, in MiB.
        needed_mb: u64,
    },
    /// A scratch file could not be written or read back.
    #[error("{path}: scratch file of the suffix-array merge: {source}")]
    Scratch {
        /// The scratch file at fault.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// A window repeated in the corpus, as reported in the summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RepeatedWindow {
    /// Number of occurrences of the window.
    pub count: u64,
    /// Byte offset of its first occurrence in the concatenated corpus.
    pub offset: u64,
    /// The window's text (whole characters only), truncated to 80
    /// characters with "…".
    pub text: String,
}

/// The result of [`find_duplicates`]: which window starts are marked.
#[derive(Debug)]
pub struct Duplicates {
    /// Window length `L`.
    pub min_length: usize,
    /// Marked window starts (on the heap, or mapped from a scratch file
    /// under a budget).
    marked: AtomicBits,
    /// Number of window starts (positions with a full window in their
    /// document).
    pub window_starts: u64,
    /// Window starts whose window occurs at least twice.
    pub duplicated_windows: u64,
    /// Groups of equal windows with two or more members.
    pub groups: u64,
    /// Number of parts the suffix array was built in.
    pub parts: usize,
    /// Seconds spent building the parts' suffix arrays.
    pub seconds_suffix_arrays: f64,
    /// Seconds spent merging and scanning them.
    pub seconds_merge: f64,
    /// How many times mapped pages were dropped to stay in the budget.
    pub page_releases: u64,
    /// Candidates for the most repeated windows: (count, first position),
    /// only left-maximal groups (see [`find_duplicates`]).
    top: Vec<(u64, usize)>,
}

impl Duplicates {
    /// The marks bitmap (its map's pages are capped while cuts are written).
    pub(crate) fn marks(&self) -> &AtomicBits {
        &self.marked
    }

    /// Covered byte ranges of document `doc`, relative to its start, sorted
    /// and disjoint: the union of `[p, p + L)` over the marked window starts
    /// `p` of the document. Ranges of byte offsets, not snapped to
    /// characters (see [`Duplicates::cuts`]).
    pub fn covered(&self, corpus: &Corpus, doc: usize) -> Vec<Range<usize>> {
        let range = corpus.range(doc);
        let mut out: Vec<Range<usize>> = Vec::new();
        let mut p = range.start;
        while let Some(i) = self.marked.next_set(p, range.end) {
            let (a, b) = (i - range.start, i + self.min_length - range.start);
            match out.last_mut() {
                Some(last) if last.end >= a => last.end = last.end.max(b),
                _ => out.push(a..b),
            }
            p = i + 1;
        }
        out
    }

    /// The byte ranges cut from document `doc` (relative to its start):
    /// [`Duplicates::covered`] widened to whole UTF-8 characters. A range
    /// that starts or ends inside a multi-byte character also removes that
    /// character (the start moves back to the character's first byte, the end
    /// forward past its last), so the remaining text is valid UTF-8;
    /// overlapping ranges are merged.
    pub fn cuts(&self, corpus: &Corpus, doc: usize) -> Vec<Range<usize>> {
        let text = &corpus.text()[corpus.range(doc)];
        let is_continuation = |i: usize| i < text.len() && (text[i] & 0xC0) == 0x80;
        let mut out: Vec<Range<usize>> = Vec::new();
        for r in self.covered(corpus, doc) {
            let (mut a, mut b) = (r.start, r.end);
            while a > 0 && is_continuation(a) {
                a -= 1;
            }
            while is_continuation(b) {
                b += 1;
            }
            match out.last_mut() {
                Some(last) if last.end >= a => last.end = last.end.max(b),
                _ => out.push(a..b),
            }
        }
        out
    }

    /// Up to `n` most repeated windows (distinct texts, most frequent first).
    pub fn top_windows(&self, corpus: &Corpus, n: usize) -> Vec<RepeatedWindow> {
        let mut candidates = self.top.clone();
        candidates.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        candidates.truncate(TOP_CANDIDATES);
        let mut out: Vec<RepeatedWindow> = Vec::new();
        for (count, pos) in candidates {
            let text = display_window(&corpus.text()[pos..pos + self.min_length]);
            if out.iter().any(|w| w.text == text) {
                continue;
            }
            out.push(RepeatedWindow {
                count,
                offset: pos as u64,
                text,
            });
            if out.len() == n {
                break;
            }
        }
        out
    }
}

/// Whole characters of a window (partial characters at either end dropped),
/// truncated to 80 characters.
fn display_window(bytes: &[u8]) -> String {
    let mut a = 0;
    while a < bytes.len() && (bytes[a] & 0xC0) == 0x80 {
        a += 1;
    }
    let text = String::from_utf8_lossy(&bytes[a..]);
    let text = text.trim_end_matches('\u{FFFD}');
    if text.chars().count() > 80 {
        let mut s: String = text.chars().take(79).collect();
        s.push('…');
        s
    } else {
        text.to_string()
    }
}

/// Memory the in-memory pass needs for a corpus of `bytes` bytes in
/// `documents` documents: text, marks, document offsets and the suffix
/// arrays built at once, one per thread (see the module documentation).
pub fn memory_estimate(
    bytes: usize,
    documents: usize,
    part_bytes: usize,
    min_length: usize,
    threads: usize,
) -> u64 {
    let parts = bytes.div_ceil(part_bytes.max(1)).clamp(1, threads.max(1));
    let part = part_bytes.min(bytes) + min_length;
    (bytes + bytes / 8 + 8 * (documents + 1) + 4 * part * parts) as u64
}

/// A memory budget for [`find_duplicates_within`]: the bytes the pass may
/// hold resident on top of what the process held before it (its code, the
/// allocator's caches, what earlier work left).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The budget in bytes.
    pub bytes: u64,
}

/// How a pass lays out its work: the part size, the merge's read buffers
/// and where the marks live.
struct Plan {
    part_bytes: usize,
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
const MAX_CHUNK: usize = 1 << 14;
const MIN_CHUNK: usize = 1 << 8;

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
    fn within(
        corpus: &Corpus,
        min_length: usize,
        budget: Budget,
        threads: usize,
    ) -> Result<Self, SuffixError> {
        let b = budget.bytes as usize;
        let t = threads.max(1);
        let n = corpus.len();
        let fail = |reason: String, needed: usize| SuffixError::Budget {
            budget_mb: budget.bytes >> 20,
            corpus_mb: (n >> 20) as u64,
            documents: corpus.documents(),
            threads: t,
            reason,
            needed_mb: (needed as u64).div_ceil(1 << 20),
        };
        let offsets = 8 * (corpus.documents() + 1);
        if offsets > b / 8 {
            return Err(fail(
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
            return Err(fail(
                format!(
                    "a suffix-array part per thread would be under {} KiB",
                    MIN_PART_BYTES >> 10
                ),
                needed,
            ));
        }
        let parts = n.div_ceil(part_bytes).max(1);
        let chunk = (b / 8 / (t * parts * 4)).min(MAX_CHUNK);
        if chunk < MIN_CHUNK {
            return Err(fail(
                format!(
                    "{parts} parts need {} MiB of merge buffers",
                    (t * parts * 4 * MIN_CHUNK) >> 20
                ),
                8 * t * parts * 4 * MIN_CHUNK,
            ));
        }
        Ok(Plan {
            part_bytes,
            chunk,
            budget: Some(budget),
        })
    }
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
    let text = corpus.text();
    let n = text.len();
    let min_length = min_length.max(1);
    let part_bytes = plan.part_bytes;
    let window_starts = corpus.window_start_count(min_length);
    let parts: Vec<Range<usize>> = (0..n.div_ceil(part_bytes))
        .map(|k| k * part_bytes..((k + 1) * part_bytes).min(n))
        .filter(|r| {
            corpus
                .window_starts_in(r.clone(), min_length)
                .next()
                .is_some()
        })
        .collect();
    progress.set_length(parts.len() as u64);
    progress.set_position(0);
    let threads = rayon::current_num_threads().max(1);
    progress.set_message(format!("suffix arrays of {} parts", parts.len()));
    let marked = match plan.budget {
        None => AtomicBits::new(n),
        Some(_) => {
            let path = scratch.join("marks.bits");
            AtomicBits::mapped(n, &path).map_err(|source| SuffixError::Scratch { path, source })?
        }
    };
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
    let t0 = std::time::Instant::now();
    let single = parts.len() == 1;
    let sources: Vec<Source> = parts
        .par_iter()
        .enumerate()
        .map(|(k, part)| {
            let mut is_start = Bits::new(part.len());
            for r in corpus.window_starts_in(part.clone(), min_length) {
                is_start.set_range(r.start - part.start, r.end - part.start);
            }
            let mut sa = part_suffix_array(text, part, k, min_length)?;
            sa.retain(|&local| (local as usize) < part.len() && is_start.get(local as usize));
            drop(is_start);
            let source = if single {
                sa.shrink_to_fit();
                Source::Memory {
                    starts: sa,
                    base: part.start,
                }
            } else {
                let path = scratch.join(format!("part-{k:05}.sa"));
                let io = |source| SuffixError::Scratch {
                    path: path.clone(),
                    source,
                };
                let mut w = BufWriter::with_capacity(1 << 16, File::create(&path).map_err(io)?);
                for &local in &sa {
                    w.write_all(&(local as u32).to_le_bytes()).map_err(io)?;
                }
                w.flush().map_err(io)?;
                let count = sa.len() as u64;
                drop(sa);
                let file = File::open(&path).map_err(io)?;
                Source::File {
                    path,
                    file,
                    base: part.start,
                    count,
                }
            };
            residency.check();
            progress.inc(1);
            Ok(source)
        })
        .collect::<Result<_, SuffixError>>()?;

    // 2. Split the window space between the threads, merge and scan.
    let seconds_suffix_arrays = t0.elapsed().as_secs_f64();
    let t1 = std::time::Instant::now();
    progress.set_message(format!(
        "merging and scanning {} suffix arrays (window starts)",
        parts.len()
    ));
    progress.set_length(window_starts);
    progress.set_position(0);
    let merging = Merging {
        corpus,
        sources: &sources,
        marked: &marked,
        residency: &residency,
        threads,
        chunk: plan.chunk,
        min_length,
        keep,
        progress,
    };
    let scans = match (plan.budget, corpus.path()) {
        (Some(_), Some(path)) => merging.run(&FromFile::open(path, min_length)?)?,
        _ => merging.run(&InMemory { text, min_length })?,
    };
    let mut totals = ScanTotals::default();
    for s in scans {
        totals.duplicated_windows += s.duplicated_windows;
        totals.groups += s.groups;
        totals.top.extend(s.top);
    }
    let page_releases = residency.releases();
    Ok(Duplicates {
        min_length,
        marked,
        window_starts,
        duplicated_windows: totals.duplicated_windows,
        groups: totals.groups,
        parts: parts.len(),
        seconds_suffix_arrays,
        seconds_merge: t1.elapsed().as_secs_f64(),
        page_releases,
        top: totals.top,
    })
}

/// What the merge and scan of every thread share, whichever [`Windows`]
/// they read.
struct Merging<'a> {
    corpus: &'a Corpus,
    sources: &'a [Source],
    marked: &'a AtomicBits,
    residency: &'a Residency<'a>,
    threads: usize,
    chunk: usize,
    min_length: usize,
    keep: Keep,
    progress: &'a ProgressBar,
}

impl Merging<'_> {
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
