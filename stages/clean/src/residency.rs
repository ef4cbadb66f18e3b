//! Keeping the deduplication's resident memory under its budget.
//!
//! Under a memory budget the corpus text and the marks bitmap are memory
//! maps of scratch files. Pages of a file mapping count in the process's
//! resident set once touched, and the merge touches the text at random, so
//! without care the resident set would grow to the whole corpus even though
//! the kernel could reclaim every such page. A [`Residency`] watches the
//! resident set (Linux `VmRSS`) every so many window starts and, once it
//! passes the limit, drops the maps' pages from it (`MADV_DONTNEED`): they
//! stay in the page cache, so reading them again is a minor fault, not a
//! disk read, while the machine has memory to spare.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::bits::AtomicBits;
use crate::suffix::Corpus;

/// Bytes of a page, for turning "bytes of headroom" into "accesses between
/// checks" (each access touches at most one new page).
const PAGE: u64 = 4096;

/// A limit on the resident set, enforced by dropping mapped pages.
pub(crate) struct Residency<'a> {
    /// Resident bytes above which mapped pages are dropped (`None`: no limit).
    limit: Option<u64>,
    /// Accesses between two checks of the resident set.
    interval: u64,
    corpus: &'a Corpus,
    marks: Option<&'a AtomicBits>,
    releases: AtomicU64,
}

impl<'a> Residency<'a> {
    /// No limit (the in-memory path): checks cost nothing.
    pub(crate) fn unlimited(corpus: &'a Corpus) -> Self {
        Residency {
            limit: None,
            interval: u64::MAX,
            corpus,
            marks: None,
            releases: AtomicU64::new(0),
        }
    }

    /// Keeps the resident set under `limit` bytes, checked often enough that
    /// `threads` threads touching one new page per access overshoot it by at
    /// most `headroom` bytes between two checks.
    pub(crate) fn limited(
        corpus: &'a Corpus,
        marks: Option<&'a AtomicBits>,
        limit: u64,
        headroom: u64,
        threads: usize,
    ) -> Self {
        Residency {
            limit: Some(limit),
            interval: (headroom / PAGE / threads.max(1) as u64).max(256),
            corpus,
            marks,
            releases: AtomicU64::new(0),
        }
    }

    /// Accesses (window starts visited, per thread) between two checks.
    #[inline]
    pub(crate) fn interval(&self) -> u64 {
        self.interval
    }

    /// Drops the mapped pages if the resident set is over the limit.
    pub(crate) fn check(&self) {
        let Some(limit) = self.limit else { return };
        if resident_bytes().is_some_and(|rss| rss > limit) {
            self.corpus.release_pages();
            if let Some(marks) = self.marks {
                marks.release_pages();
            }
            self.releases.fetch_add(1, Relaxed);
        }
    }

    /// How many times pages were dropped.
    pub(crate) fn releases(&self) -> u64 {
        self.releases.load(Relaxed)
    }
}

/// The current resident set of this process (Linux `VmRSS`; `None`
/// elsewhere, where no limit is enforced and mapped pages are left to the
/// kernel).
pub(crate) fn resident_bytes() -> Option<u64> {
    status_kib("VmRSS:").map(|k| k * 1024)
}

/// A `kB` line of `/proc/self/status`.
pub(crate) fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
