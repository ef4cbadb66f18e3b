//! A fixed-size bitmap over byte positions.
//!
//! Hand-written rather than taken from `fixedbitset`/`bitvec`: the pass needs
//! only set/clear/test, range fill and "next set bit in a range", which are a
//! few lines over `u64` words, and the scan's hot loop wants them inlined
//! without an extra dependency for every stage of the workspace.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

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

    /// The first set bit in `from..to`, if any.
    pub(crate) fn next_set(&self, from: usize, to: usize) -> Option<usize> {
        let to = to.min(self.len);
        if from >= to {
            return None;
        }
        let mut w = from / 64;
        let mut word = self.words[w] & (u64::MAX << (from % 64));
        loop {
            if word != 0 {
                let i = w * 64 + word.trailing_zeros() as usize;
                return (i < to).then_some(i);
            }
            w += 1;
            if w * 64 >= to {
                return None;
            }
            word = self.words[w];
        }
    }

    /// Number of set bits.
    pub(crate) fn count_ones(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }
}

/// A bitmap that several threads set and clear at once (relaxed atomic
/// `fetch_or`/`fetch_and` on the words: neighbouring bits may belong to
/// different threads).
#[derive(Debug, Default)]
pub(crate) struct AtomicBits {
    words: Vec<AtomicU64>,
    len: usize,
}

impl AtomicBits {
    /// All clear.
    pub(crate) fn new(len: usize) -> Self {
        AtomicBits {
            words: (0..len.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            len,
        }
    }

    #[inline]
    pub(crate) fn set(&self, i: usize) {
        debug_assert!(i < self.len);
        self.words[i / 64].fetch_or(1 << (i % 64), Relaxed);
    }

    #[inline]
    pub(crate) fn clear(&self, i: usize) {
        debug_assert!(i < self.len);
        self.words[i / 64].fetch_and(!(1 << (i % 64)), Relaxed);
    }

    /// The plain bitmap, once every thread is done.
    pub(crate) fn into_bits(self) -> Bits {
        Bits {
            words: self.words.into_iter().map(AtomicU64::into_inner).collect(),
            len: self.len,
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
        assert_eq!(b.count_ones(), 197);
        assert_eq!(b.next_set(0, 300), Some(3));
        assert_eq!(b.next_set(4, 300), Some(4));
        assert_eq!(b.next_set(200, 300), None);
        b.set(299);
        assert_eq!(b.next_set(200, 300), Some(299));
        assert_eq!(b.next_set(200, 299), None);
        assert_eq!(b.next_set(150, 151), Some(150));
        let a = AtomicBits::new(130);
        a.set(5);
        a.set(129);
        a.set(64);
        a.clear(64);
        let b = a.into_bits();
        assert_eq!(
            (b.get(5), b.get(64), b.get(129), b.count_ones()),
            (true, false, true, 2)
        );
    }
}
