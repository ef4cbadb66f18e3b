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

use std::ops::Range;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::bits::AtomicBits;

mod corpus;
mod find;
mod merge;
mod parts;
mod scan;
mod windows;

pub use corpus::{Corpus, CorpusWriter};
pub use find::{find_duplicates, find_duplicates_within, part_file_name};
pub use parts::{
    PartPlan, build_part_files, find_duplicates_in_part_files, merge_fits_in_memory, plan_parts,
};

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
