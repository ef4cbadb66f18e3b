//! The scan over window starts in window order: groups of equal windows,
//! the marks, the counts and the candidates for the summary's top list.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use indicatif::ProgressBar;

use super::windows::Windows;
use super::{Corpus, Keep, SuffixError, TOP_CANDIDATES};
use crate::bits::AtomicBits;
use crate::residency::Residency;

/// Window starts between two advances of the progress bar.
const PROGRESS_STEP: u64 = 1 << 16;

/// Counts of one thread's scan.
#[derive(Default)]
pub(super) struct ScanTotals {
    pub(super) duplicated_windows: u64,
    pub(super) groups: u64,
    pub(super) top: Vec<(u64, usize)>,
}

/// One pass over window starts in window order: groups equal windows and
/// marks duplicates.
pub(super) struct Scan<'a, W: Windows> {
    corpus: &'a Corpus,
    windows: &'a W,
    marked: &'a AtomicBits,
    residency: &'a Residency<'a>,
    progress: &'a ProgressBar,
    /// Window starts visited since the residency was last checked.
    unchecked: u64,
    /// Window starts visited since the progress bar was last advanced.
    unreported: u64,
    min_length: usize,
    keep: Keep,
    /// The current group's window (`None` before the first).
    window: Option<W::Window>,
    first: usize,
    min_pos: usize,
    count: u64,
    first_before: Option<u8>,
    left_maximal: bool,
    duplicated_windows: u64,
    groups: u64,
    top: BinaryHeap<Reverse<(u64, Reverse<usize>)>>,
}

impl<'a, W: Windows> Scan<'a, W> {
    pub(super) fn new(
        corpus: &'a Corpus,
        windows: &'a W,
        marked: &'a AtomicBits,
        residency: &'a Residency<'a>,
        progress: &'a ProgressBar,
        min_length: usize,
        keep: Keep,
    ) -> Self {
        Scan {
            corpus,
            windows,
            marked,
            residency,
            progress,
            unchecked: 0,
            unreported: 0,
            min_length,
            keep,
            window: None,
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

    /// The byte before window start `p` when `p - 1` is a window start too
    /// (`None` otherwise). Since `p` is one, `p - 1` is one when it lies in
    /// the same document, i.e. when `p` is no document's start; and when it
    /// is, only for windows of one byte (the previous document's last byte).
    fn before(&self, p: usize) -> Result<Option<u8>, SuffixError> {
        if p > 0 && (self.min_length == 1 || !self.corpus.is_document_start(p)) {
            Ok(Some(self.windows.byte(p - 1)?))
        } else {
            Ok(None)
        }
    }

    /// Takes the next window start `p`, whose window is `window`.
    #[inline]
    pub(super) fn push(&mut self, p: usize, window: W::Window) -> Result<(), SuffixError> {
        self.unchecked += 1;
        if self.unchecked >= self.residency.interval() {
            self.unchecked = 0;
            self.residency.check();
        }
        self.unreported += 1;
        if self.unreported == PROGRESS_STEP {
            self.unreported = 0;
            self.progress.inc(PROGRESS_STEP);
        }
        if self.count > 0 && self.window.as_ref() == Some(&window) {
            self.count += 1;
            if self.count == 2 {
                self.marked.set(self.first);
                // Looked up only for repeated windows (a random access).
                self.first_before = self.before(self.first)?;
                self.left_maximal = self.first_before.is_none();
            }
            self.marked.set(p);
            self.min_pos = self.min_pos.min(p);
            if !self.left_maximal {
                let before = self.before(p)?;
                self.left_maximal = before.is_none() || before != self.first_before;
            }
        } else {
            self.close();
            self.window = Some(window);
            self.first = p;
            self.min_pos = p;
            self.count = 1;
        }
        Ok(())
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

    pub(super) fn finish(mut self) -> ScanTotals {
        self.close();
        self.progress.inc(self.unreported);
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
