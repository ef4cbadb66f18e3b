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
//! Memory: the text (1 byte per input byte), two bitmaps (window starts and
//! marks, 1/8 byte each), and `4 × (part_bytes + L)` bytes for the suffix
//! array of each part being built (one per thread); the merge streams with
//! 64 KiB buffers per part and thread. So about
//! `1.25 × corpus + 4 × threads × part_bytes` bytes, see [`memory_estimate`].

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::collections::binary_heap::PeekMut;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use libsais::SuffixArrayConstruction;
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::bits::{AtomicBits, Bits};

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
    /// A scratch file could not be written or read back.
    #[error("{path}: scratch file of the suffix-array merge: {source}")]
    Scratch {
        /// The scratch file at fault.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Documents concatenated into one byte buffer, the input of the
/// deduplication.
#[derive(Debug, Clone, Default)]
pub struct Corpus {
    text: Vec<u8>,
    /// Start offset of every document, followed by the total length.
    starts: Vec<usize>,
}

impl Corpus {
    /// An empty corpus.
    pub fn new() -> Self {
        Corpus {
            text: Vec::new(),
            starts: vec![0],
        }
    }

    /// Builds a corpus from documents.
    pub fn from_documents<S: AsRef<str>>(documents: &[S]) -> Self {
        let mut corpus = Corpus::new();
        for d in documents {
            corpus.push(d.as_ref());
        }
        corpus
    }

    /// Appends one document.
    pub fn push(&mut self, document: &str) {
        self.text.extend_from_slice(document.as_bytes());
        self.starts.push(self.text.len());
    }

    /// Total bytes.
    pub fn len(&self) -> usize {
        self.text.len()
    }

    /// Whether the corpus holds no byte.
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// Number of documents.
    pub fn documents(&self) -> usize {
        self.starts.len() - 1
    }

    /// Byte range of document `i` in the concatenation.
    pub fn range(&self, i: usize) -> Range<usize> {
        self.starts[i]..self.starts[i + 1]
    }

    /// Text of document `i`.
    pub fn document(&self, i: usize) -> &str {
        std::str::from_utf8(&self.text[self.range(i)]).expect("documents are pushed as str")
    }

    /// The concatenated bytes.
    pub fn text(&self) -> &[u8] {
        &self.text
    }
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
#[derive(Debug, Clone)]
pub struct Duplicates {
    /// Window length `L`.
    pub min_length: usize,
    /// Marked window starts.
    marked: Bits,
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
    /// Candidates for the most repeated windows: (count, first position),
    /// only left-maximal groups (see [`find_duplicates`]).
    top: Vec<(u64, usize)>,
}

impl Duplicates {
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

/// Memory the pass needs for a corpus of `bytes` bytes: text, bitmaps and
/// the suffix arrays built at once, one per thread (see the module
/// documentation).
pub fn memory_estimate(bytes: usize, part_bytes: usize, min_length: usize, threads: usize) -> u64 {
    let parts = bytes.div_ceil(part_bytes.max(1)).clamp(1, threads.max(1));
    let part = part_bytes.min(bytes) + min_length;
    (bytes + bytes / 4 + 4 * part * parts) as u64
}

/// Finds the duplicated windows of length `min_length` of `corpus` (see the
/// module documentation), building suffix arrays of at most `part_bytes`
/// bytes each and merging them through files in `scratch`.
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
    let text = corpus.text();
    let n = text.len();
    let min_length = min_length.max(1);
    let part_bytes = part_bytes.clamp(1, MAX_PART_BYTES);
    let mut starts = Bits::new(n);
    for d in 0..corpus.documents() {
        let r = corpus.range(d);
        if r.len() >= min_length {
            starts.set_range(r.start, r.end - min_length + 1);
        }
    }
    let window_starts = starts.count_ones();
    let parts: Vec<Range<usize>> = (0..n.div_ceil(part_bytes))
        .map(|k| k * part_bytes..((k + 1) * part_bytes).min(n))
        .filter(|r| starts.next_set(r.start, r.end).is_some())
        .collect();
    progress.set_length(parts.len() as u64 + 1);
    progress.set_position(0);
    let threads = rayon::current_num_threads().max(1);
    progress.set_message(format!("suffix arrays of {} parts", parts.len()));

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
            let mut sa = part_suffix_array(text, part, k, min_length)?;
            sa.retain(|&local| {
                (local as usize) < part.len() && starts.get(part.start + local as usize)
            });
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
            progress.inc(1);
            Ok(source)
        })
        .collect::<Result<_, SuffixError>>()?;

    // 2. Split the window space between the threads, merge and scan.
    let seconds_suffix_arrays = t0.elapsed().as_secs_f64();
    let t1 = std::time::Instant::now();
    progress.set_message(format!(
        "merging and scanning {} suffix arrays",
        parts.len()
    ));
    let window = |p: usize| &text[p..p + min_length];
    let pivots = choose_pivots(&sources, &window, threads)?;
    let mut cuts: Vec<Vec<u64>> = Vec::with_capacity(sources.len());
    for source in &sources {
        let mut c = vec![0u64];
        for pivot in &pivots {
            c.push(source.lower_bound(pivot, &window)?);
        }
        c.push(source.len());
        cuts.push(c);
    }
    let marked = AtomicBits::new(n);
    let scans: Vec<Result<ScanTotals, SuffixError>> = (0..=pivots.len())
        .into_par_iter()
        .map(|t| {
            let mut scan = Scan::new(text, &starts, &marked, min_length, keep);
            let mut readers = Vec::with_capacity(sources.len());
            for (source, c) in sources.iter().zip(&cuts) {
                readers.push(source.reader(c[t]..c[t + 1])?);
            }
            merge(text, &window, readers, |p| scan.push(p))?;
            Ok(scan.finish())
        })
        .collect();
    let mut totals = ScanTotals::default();
    for scan in scans {
        let s = scan?;
        totals.duplicated_windows += s.duplicated_windows;
        totals.groups += s.groups;
        totals.top.extend(s.top);
    }
    progress.inc(1);
    Ok(Duplicates {
        min_length,
        marked: marked.into_bits(),
        window_starts,
        duplicated_windows: totals.duplicated_windows,
        groups: totals.groups,
        parts: parts.len(),
        seconds_suffix_arrays,
        seconds_merge: t1.elapsed().as_secs_f64(),
        top: totals.top,
    })
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

/// The window starts of one part in window order: in memory (single part)
/// or in a scratch file of little-endian `u32` offsets from `base`.
enum Source {
    Memory {
        starts: Vec<i32>,
        base: usize,
    },
    File {
        path: PathBuf,
        file: File,
        base: usize,
        count: u64,
    },
}

impl Source {
    fn len(&self) -> u64 {
        match self {
            Source::Memory { starts, .. } => starts.len() as u64,
            Source::File { count, .. } => *count,
        }
    }

    /// Position of the `i`-th window start.
    fn get(&self, i: u64) -> Result<usize, SuffixError> {
        match self {
            Source::Memory { starts, base } => Ok(base + starts[i as usize] as u32 as usize),
            Source::File {
                path, file, base, ..
            } => {
                let mut b = [0u8; 4];
                file.read_exact_at(&mut b, i * 4)
                    .map_err(|source| SuffixError::Scratch {
                        path: path.clone(),
                        source,
                    })?;
                Ok(base + u32::from_le_bytes(b) as usize)
            }
        }
    }

    /// Index of the first window start whose window is not below `pivot`.
    fn lower_bound<'t>(
        &self,
        pivot: &[u8],
        window: &impl Fn(usize) -> &'t [u8],
    ) -> Result<u64, SuffixError> {
        let (mut lo, mut hi) = (0u64, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if window(self.get(mid)?) < pivot {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// A reader of the window starts with indices in `range`.
    fn reader(&self, range: Range<u64>) -> Result<Reader<'_>, SuffixError> {
        match self {
            Source::Memory { starts, base } => Ok(Reader::Memory {
                starts: &starts[range.start as usize..range.end as usize],
                base: *base,
            }),
            Source::File { path, base, .. } => {
                let io = |source| SuffixError::Scratch {
                    path: path.clone(),
                    source,
                };
                let mut file = File::open(path).map_err(io)?;
                file.seek(SeekFrom::Start(range.start * 4)).map_err(io)?;
                Ok(Reader::File {
                    path,
                    reader: BufReader::with_capacity(1 << 16, file),
                    base: *base,
                    remaining: range.end - range.start,
                    buffer: Vec::new(),
                    at: 0,
                })
            }
        }
    }
}

/// How many window starts ahead a reader asks the CPU to fetch the text of:
/// the merge visits text at random places, so it is bound by memory latency
/// unless the next windows are already on their way to the cache.
const PREFETCH_AHEAD: usize = 16;

/// Hints the CPU to load the cache line of `text[p]` (no effect off x86-64).
#[inline(always)]
fn prefetch(text: &[u8], p: usize) {
    #[cfg(target_arch = "x86_64")]
    if p < text.len() {
        // SAFETY: `p` is in bounds, and a prefetch is only a hint: it never
        // faults and has no visible effect on memory.
        unsafe {
            std::arch::x86_64::_mm_prefetch(
                text.as_ptr().add(p).cast::<i8>(),
                std::arch::x86_64::_MM_HINT_T0,
            );
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (text, p);
}

/// Streams window starts from a [`Source`].
enum Reader<'s> {
    Memory {
        starts: &'s [i32],
        base: usize,
    },
    File {
        path: &'s Path,
        reader: BufReader<File>,
        base: usize,
        remaining: u64,
        buffer: Vec<u8>,
        at: usize,
    },
}

impl Reader<'_> {
    fn next(&mut self, text: &[u8]) -> Result<Option<usize>, SuffixError> {
        match self {
            Reader::Memory { starts, base } => match starts.split_first() {
                Some((&first, rest)) => {
                    if let Some(&ahead) = rest.get(PREFETCH_AHEAD) {
                        prefetch(text, *base + ahead as u32 as usize);
                    }
                    *starts = rest;
                    Ok(Some(*base + first as u32 as usize))
                }
                None => Ok(None),
            },
            Reader::File {
                path,
                reader,
                base,
                remaining,
                buffer,
                at,
            } => {
                if *at == buffer.len() {
                    if *remaining == 0 {
                        return Ok(None);
                    }
                    let take = (*remaining).min(1 << 14) as usize;
                    buffer.resize(take * 4, 0);
                    reader
                        .read_exact(buffer)
                        .map_err(|source| SuffixError::Scratch {
                            path: path.to_path_buf(),
                            source,
                        })?;
                    *remaining -= take as u64;
                    *at = 0;
                }
                let b = &buffer[*at..*at + 4];
                *at += 4;
                if let Some(a) = buffer.get(*at + 4 * PREFETCH_AHEAD..*at + 4 * PREFETCH_AHEAD + 4)
                {
                    prefetch(
                        text,
                        *base + u32::from_le_bytes([a[0], a[1], a[2], a[3]]) as usize,
                    );
                }
                Ok(Some(
                    *base + u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize,
                ))
            }
        }
    }
}

/// `parts - 1` pivot windows splitting the window starts into ranges of
/// similar size: quantiles of windows sampled at evenly spaced indices of
/// every source.
fn choose_pivots<'t>(
    sources: &[Source],
    window: &impl Fn(usize) -> &'t [u8],
    parts: usize,
) -> Result<Vec<&'t [u8]>, SuffixError> {
    if parts < 2 {
        return Ok(Vec::new());
    }
    const SAMPLES_PER_SOURCE: u64 = 256;
    let mut samples: Vec<(&[u8], u64)> = Vec::new();
    for source in sources {
        let len = source.len();
        let step = len.div_ceil(SAMPLES_PER_SOURCE).max(1);
        let mut i = 0;
        while i < len {
            samples.push((window(source.get(i)?), step.min(len - i)));
            i += step;
        }
    }
    samples.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let total: u64 = samples.iter().map(|s| s.1).sum();
    let mut pivots: Vec<&[u8]> = Vec::new();
    let mut seen = 0u64;
    let mut next = 1;
    for (w, weight) in samples {
        seen += weight;
        while next < parts && seen * parts as u64 >= total * next as u64 {
            if pivots.last() != Some(&w) {
                pivots.push(w);
            }
            next += 1;
        }
    }
    Ok(pivots)
}

/// Head of one reader in the merge heap (ordered so that the smallest window
/// is on top of std's max-heap).
struct Head<'t> {
    window: &'t [u8],
    pos: usize,
    reader: usize,
}

impl PartialEq for Head<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Head<'_> {}
impl PartialOrd for Head<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Head<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        other.window.cmp(self.window).then(other.pos.cmp(&self.pos))
    }
}

/// k-way merge of the readers by window; calls `visit` with every window
/// start in window order.
fn merge<'t>(
    text: &[u8],
    window: &impl Fn(usize) -> &'t [u8],
    mut readers: Vec<Reader<'_>>,
    mut visit: impl FnMut(usize),
) -> Result<(), SuffixError> {
    if readers.len() == 1 {
        while let Some(p) = readers[0].next(text)? {
            visit(p);
        }
        return Ok(());
    }
    let mut heap = BinaryHeap::with_capacity(readers.len());
    for (i, r) in readers.iter_mut().enumerate() {
        if let Some(pos) = r.next(text)? {
            heap.push(Head {
                window: window(pos),
                pos,
                reader: i,
            });
        }
    }
    while let Some(mut top) = heap.peek_mut() {
        visit(top.pos);
        match readers[top.reader].next(text)? {
            Some(pos) => {
                top.window = window(pos);
                top.pos = pos;
            }
            None => {
                PeekMut::pop(top);
            }
        }
    }
    Ok(())
}

/// Counts of one thread's scan.
#[derive(Default)]
struct ScanTotals {
    duplicated_windows: u64,
    groups: u64,
    top: Vec<(u64, usize)>,
}

/// One pass over window starts in window order: groups equal windows and
/// marks duplicates.
struct Scan<'a> {
    text: &'a [u8],
    starts: &'a Bits,
    marked: &'a AtomicBits,
    min_length: usize,
    keep: Keep,
    window: &'a [u8],
    first: usize,
    min_pos: usize,
    count: u64,
    first_before: Option<u8>,
    left_maximal: bool,
    duplicated_windows: u64,
    groups: u64,
    top: BinaryHeap<Reverse<(u64, Reverse<usize>)>>,
}

impl<'a> Scan<'a> {
    fn new(
        text: &'a [u8],
        starts: &'a Bits,
        marked: &'a AtomicBits,
        min_length: usize,
        keep: Keep,
    ) -> Self {
        Scan {
            text,
            starts,
            marked,
            min_length,
            keep,
            window: &[],
            first: 0,
            min_pos: 0,
            count: 0,
            first_before: None,
            left_maximal: false,
            duplicated_windows: 0,
            groups: 0,
            top: BinaryHeap::new(),
        }
    }

    /// The byte before window start `p` in its document (`None` at a
    /// document start: `p - 1` is a window start iff it is in the same
    /// document, since `p` is one).
    fn before(&self, p: usize) -> Option<u8> {
        (p > 0 && self.starts.get(p - 1)).then(|| self.text[p - 1])
    }

    #[inline]
    fn push(&mut self, p: usize) {
        let window = &self.text[p..p + self.min_length];
        if self.count > 0 && window == self.window {
            self.count += 1;
            if self.count == 2 {
                self.marked.set(self.first);
                // Looked up only for repeated windows (a random access).
                self.first_before = self.before(self.first);
                self.left_maximal = self.first_before.is_none();
            }
            self.marked.set(p);
            self.min_pos = self.min_pos.min(p);
            if !self.left_maximal {
                let before = self.before(p);
                self.left_maximal = before.is_none() || before != self.first_before;
            }
        } else {
            self.close();
            self.window = window;
            self.first = p;
            self.min_pos = p;
            self.count = 1;
        }
    }

    fn close(&mut self) {
        if self.count < 2 {
            return;
        }
        self.groups += 1;
        self.duplicated_windows += self.count;
        if self.keep == Keep::First {
            self.marked.clear(self.min_pos);
        }
        if self.left_maximal {
            // Min-heap on (count, -position): the candidates kept are the
            // first under "most repeated, then earliest", a total order, so
            // the union over threads holds the global top whatever the split.
            self.top.push(Reverse((self.count, Reverse(self.min_pos))));
            if self.top.len() > TOP_CANDIDATES {
                self.top.pop();
            }
        }
    }

    fn finish(mut self) -> ScanTotals {
        self.close();
        ScanTotals {
            duplicated_windows: self.duplicated_windows,
            groups: self.groups,
            top: self
                .top
                .into_iter()
                .map(|Reverse((count, Reverse(pos)))| (count, pos))
                .collect(),
        }
    }
}
