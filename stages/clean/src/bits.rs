//! Fixed-size bitmaps over byte positions.
//!
//! Hand-written rather than taken from `fixedbitset`/`bitvec`: the pass needs
//! only set/clear/test, range fill and "next set bit in a range", which are a
//! few lines over `u64` words, and the scan's hot loop wants them inlined
//! without an extra dependency for every stage of the workspace.

use std::fs::OpenOptions;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

use memmap2::{Advice, MmapMut, MmapOptions, UncheckedAdvice};

/// One bit per position, `len` positions.
#[derive(Debug, Clone, Default)]
pub(crate) struct Bits {
    words: Vec<u64>,
    len: usize,
}

impl Bits {
    /// All clear.
    pub(crate) fn new(len: usize) -> Self {
        Bits {
            words: vec![0; len.div_ceil(64)],
            len,
        }
    }

    #[inline]
    pub(crate) fn get(&self, i: usize) -> bool {
        debug_assert!(i < self.len);
        self.words[i / 64] >> (i % 64) & 1 == 1
    }

    #[inline]
    pub(crate) fn set(&mut self, i: usize) {
        debug_assert!(i < self.len);
        self.words[i / 64] |= 1 << (i % 64);
    }

    /// Sets every bit of `a..b`.
    pub(crate) fn set_range(&mut self, a: usize, b: usize) {
        debug_assert!(a <= b && b <= self.len);
        let mut i = a;
        while i < b {
            if i.is_multiple_of(64) && b - i >= 64 {
                self.words[i / 64] = u64::MAX;
                i += 64;
            } else {
                self.set(i);
                i += 1;
            }
        }
    }
}

/// A bitmap that several threads set and clear at once (relaxed atomic
/// `fetch_or`/`fetch_and` on the words: neighbouring bits may belong to
/// different threads). Its words live on the heap, or in a shared memory map
/// of a scratch file when the pass runs under a memory budget: the kernel
/// then keeps the dirty pages in its page cache (written back to the file as
/// it needs room), and [`AtomicBits::release_pages`] takes them out of the
/// process's resident set without losing a bit.
#[derive(Debug)]
pub(crate) struct AtomicBits {
    words: WordStore,
    len: usize,
}

#[derive(Debug)]
enum WordStore {
    Heap(Vec<AtomicU64>),
    Mapped(MmapMut),
}

impl AtomicBits {
    /// All clear, on the heap.
    pub(crate) fn new(len: usize) -> Self {
        AtomicBits {
            words: WordStore::Heap((0..len.div_ceil(64)).map(|_| AtomicU64::new(0)).collect()),
            len,
        }
    }

    /// All clear, in a shared map of the new file `path` (created, sized,
    /// and left for the caller to remove with its scratch folder).
    pub(crate) fn mapped(len: usize, path: &Path) -> std::io::Result<Self> {
        let bytes = (len.div_ceil(64) * 8).max(8);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        file.set_len(bytes as u64)?;
        // SAFETY: the file was just created by this process in its own
        // scratch folder and nothing else maps or truncates it; the pages of
        // a new sparse file read as zero, i.e. all bits clear.
        let map = unsafe { MmapOptions::new().len(bytes).map_mut(&file)? };
        // Marks are set at random places: fault in one page at a time.
        map.advise(Advice::Random)?;
        Ok(AtomicBits {
            words: WordStore::Mapped(map),
            len,
        })
    }

    #[inline]
    fn words(&self) -> &[AtomicU64] {
        match &self.words {
            WordStore::Heap(words) => words,
            // SAFETY: the map is page-aligned (so aligned for `u64`), at least
            // `len / 64` words long, lives as long as `self`, and is only ever
            // accessed through these atomics.
            WordStore::Mapped(map) => unsafe {
                std::slice::from_raw_parts(map.as_ptr().cast::<AtomicU64>(), map.len() / 8)
            },
        }
    }

    #[inline]
    pub(crate) fn set(&self, i: usize) {
        debug_assert!(i < self.len);
        self.words()[i / 64].fetch_or(1 << (i % 64), Relaxed);
    }

    #[inline]
    pub(crate) fn clear(&self, i: usize) {
        debug_assert!(i < self.len);
        self.words()[i / 64].fetch_and(!(1 << (i % 64)), Relaxed);
    }

    #[cfg(test)]
    pub(crate) fn get(&self, i: usize) -> bool {
        debug_assert!(i < self.len);
        self.words()[i / 64].load(Relaxed) >> (i % 64) & 1 == 1
    }

    /// The first set bit in `from..to`, if any (read once every thread is
    /// done setting bits).
    pub(crate) fn next_set(&self, from: usize, to: usize) -> Option<usize> {
        let to = to.min(self.len);
        if from >= to {
            return None;
        }
        let words = self.words();
        let mut w = from / 64;
        let mut word = words[w].load(Relaxed) & (u64::MAX << (from % 64));
        loop {
            if word != 0 {
                let i = w * 64 + word.trailing_zeros() as usize;
                return (i < to).then_some(i);
            }
            w += 1;
            if w * 64 >= to {
                return None;
            }
            word = words[w].load(Relaxed);
        }
    }

    /// Drops the map's pages from the resident set (no-op on the heap). The
    /// data stay in the page cache or the file; the next access faults them
    /// back in.
    pub(crate) fn release_pages(&self) {
        if let WordStore::Mapped(map) = &self.words {
            // SAFETY: for a shared file mapping, MADV_DONTNEED only unmaps
            // the pages: their contents, dirty ones included, stay in the
            // page cache and are read back on the next access, by any thread.
            let _ = unsafe { map.unchecked_advise(UncheckedAdvice::DontNeed) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{AtomicBits, Bits};

    #[test]
    fn ranges_and_search() {
        let mut b = Bits::new(300);
        b.set_range(3, 200);
        assert!(!b.get(2) && b.get(3) && b.get(199) && !b.get(200));
        b.set(299);
        assert!(b.get(299) && !b.get(298));
        let a = AtomicBits::new(130);
        a.set(5);
        a.set(129);
        a.set(64);
        a.clear(64);
        assert_eq!(a.next_set(0, 300), Some(5));
        assert_eq!(a.next_set(6, 129), None);
        assert_eq!(
            (a.get(5), a.get(64), a.get(129), a.next_set(6, 130)),
            (true, false, true, Some(129))
        );
        let dir = tempfile::tempdir().unwrap();
        let m = AtomicBits::mapped(1000, &dir.path().join("bits")).unwrap();
        m.set(999);
        m.set(3);
        m.release_pages();
        assert_eq!(
            (m.next_set(0, 1000), m.next_set(4, 1000)),
            (Some(3), Some(999))
        );
    }
}
