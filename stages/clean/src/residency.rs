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
//! disk read, while the machine has memory to spare. Pages are dropped only
//! when the file-backed part of the resident set grew by more than the
//! headroom since the last drop, so an anonymous peak above the limit (which
//! dropping cannot help) does not turn every check into a drop.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::bits::AtomicBits;
use crate::suffix::Corpus;

/// Bytes of a page, for turning "bytes of headroom" into "accesses between
/// checks" (each access touches at most one new page).
const PAGE: u64 = 4096;

/// A cap on the mapped pages in the resident set, enforced by dropping them.
pub(crate) struct Residency<'a> {
    /// Growth of the file-backed resident bytes that triggers a drop
    /// (`None`: no cap).
    cap: Option<u64>,
    /// Accesses between two checks of the resident set.
    interval: u64,
    corpus: &'a Corpus,
    marks: Option<&'a AtomicBits>,
    /// File-backed resident bytes right after the last drop (or at the
    /// start): the binary's own pages and the like.
    file_floor: AtomicU64,
    releases: AtomicU64,
}

impl<'a> Residency<'a> {
    /// No cap (the in-memory path): checks cost nothing.
    pub(crate) fn unlimited(corpus: &'a Corpus) -> Self {
        Residency {
            cap: None,
            interval: u64::MAX,
            corpus,
            marks: None,
            file_floor: AtomicU64::new(0),
            releases: AtomicU64::new(0),
        }
    }

    /// Keeps the pages of the corpus's and the marks' maps in the resident
    /// set under `cap` bytes: they are dropped once the file-backed resident
    /// set grew by `cap / 2`, checked every `cap / 2` bytes' worth of
    /// 4 KiB pages per thread (a fault may map more: the merge therefore
    /// reads the text by `pread`, and the map faults only on marks). The cap does not depend on the anonymous memory of the
    /// moment, so a peak of the heap never turns every check into a drop.
    pub(crate) fn limited(
        corpus: &'a Corpus,
        marks: Option<&'a AtomicBits>,
        cap: u64,
        threads: usize,
    ) -> Self {
        Residency {
            cap: Some(cap),
            interval: (cap / 2 / PAGE / threads.max(1) as u64).max(64),
            corpus,
            marks,
            file_floor: AtomicU64::new(file_resident().unwrap_or(0)),
            releases: AtomicU64::new(0),
        }
    }

    /// Accesses (window starts visited, per thread) between two checks.
    #[inline]
    pub(crate) fn interval(&self) -> u64 {
        self.interval
    }

    /// Drops the mapped pages if they grew by half the cap.
    pub(crate) fn check(&self) {
        let Some(cap) = self.cap else { return };
        let Some(file) = file_resident() else { return };
        if file.saturating_sub(self.file_floor.load(Relaxed)) > cap / 2 {
            self.corpus.release_pages();
            if let Some(marks) = self.marks {
                marks.release_pages();
            }
            self.releases.fetch_add(1, Relaxed);
            if let Some(after) = file_resident() {
                self.file_floor.store(after, Relaxed);
            }
        }
    }

    /// How many times pages were dropped.
    pub(crate) fn releases(&self) -> u64 {
        self.releases.load(Relaxed)
    }
}

/// File-backed and shared resident bytes (`RssFile + RssShmem`): the
/// binary, libraries, and the maps of the corpus and the marks.
fn file_resident() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    Some((kib(&status, "RssFile:")? + kib(&status, "RssShmem:")?) * 1024)
}

/// The current resident set of this process (Linux `VmRSS`; `None`
/// elsewhere, where no limit is enforced and mapped pages are left to the
/// kernel).
pub(crate) fn resident_bytes() -> Option<u64> {
    status_kib("VmRSS:").map(|k| k * 1024)
}

/// A `kB` line of `/proc/self/status`.
pub(crate) fn status_kib(field: &str) -> Option<u64> {
    kib(&std::fs::read_to_string("/proc/self/status").ok()?, field)
}

/// The value of the `kB` line `field` of a `/proc/PID/status` text.
fn kib(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::file_resident;
    use crate::bits::AtomicBits;
    use crate::suffix::CorpusWriter;

    #[test]
    fn dropping_the_maps_pages_shrinks_the_resident_set() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = CorpusWriter::create(&dir.path().join("text")).unwrap();
        let doc = "x".repeat(1000);
        for _ in 0..16_000 {
            w.push(&doc).unwrap();
        }
        let corpus = w.finish().unwrap();
        let marks = AtomicBits::mapped(128 << 20, &dir.path().join("marks")).unwrap();
        let before = file_resident().unwrap();
        let sum: u64 = corpus
            .text()
            .iter()
            .step_by(4096)
            .map(|&b| u64::from(b))
            .sum();
        for i in (0..128 << 20).step_by(4096 * 8) {
            marks.set(i);
        }
        let touched = file_resident().unwrap();
        corpus.release_pages();
        marks.release_pages();
        let after = file_resident().unwrap();
        assert_eq!(sum, 120 * 3907);
        assert!(touched >= before + (30 << 20), "{before} -> {touched}");
        assert!(after < before + (2 << 20), "{touched} -> {after}");
        assert_eq!(marks.next_set(1, 128 << 20), Some(4096 * 8));
    }
}
