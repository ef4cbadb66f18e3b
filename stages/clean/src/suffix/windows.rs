//! Where the merge reads the windows it compares: the text in memory, or
//! the corpus file by positional reads.
//!
//! Under a budget the merge reads the text by `pread`, not through the
//! corpus's memory map: its reads land at random places, and a fault on a
//! mapped file maps the 16 or more pages around the one it needs (the
//! kernel's fault-around and large page-cache folios: 64–150 KiB per read
//! measured here), so a map's share of the resident set fills after a few
//! thousand reads and must be dropped over and over. A positional read costs
//! one system call, copies the window out of the page cache and adds nothing
//! to the resident set.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::SuffixError;

/// The windows of a corpus, by position.
pub(super) trait Windows: Sync {
    /// A window's bytes, borrowed or owned.
    type Window: Ord + Clone + Send;
    /// The `L` bytes at `p`.
    fn window(&self, p: usize) -> Result<Self::Window, SuffixError>;
    /// The byte at `p`.
    fn byte(&self, p: usize) -> Result<u8, SuffixError>;
    /// Hints that the window at `p` will be read soon.
    fn prefetch(&self, p: usize);
}

/// Windows of text in memory (or mapped), borrowed.
pub(super) struct InMemory<'t> {
    pub(super) text: &'t [u8],
    pub(super) min_length: usize,
}

impl<'t> Windows for InMemory<'t> {
    type Window = &'t [u8];

    #[inline]
    fn window(&self, p: usize) -> Result<&'t [u8], SuffixError> {
        Ok(&self.text[p..p + self.min_length])
    }

    #[inline]
    fn byte(&self, p: usize) -> Result<u8, SuffixError> {
        Ok(self.text[p])
    }

    /// Asks the CPU to load the cache line of `text[p]` (no effect off
    /// x86-64): the merge is bound by memory latency unless the next
    /// windows are already on their way to the cache.
    #[inline(always)]
    fn prefetch(&self, p: usize) {
        #[cfg(target_arch = "x86_64")]
        if p < self.text.len() {
            // SAFETY: `p` is in bounds, and a prefetch is only a hint: it
            // never faults and has no visible effect on memory.
            unsafe {
                std::arch::x86_64::_mm_prefetch(
                    self.text.as_ptr().add(p).cast::<i8>(),
                    std::arch::x86_64::_MM_HINT_T0,
                );
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = p;
    }
}

/// Windows read from the corpus file, copied out.
pub(super) struct FromFile {
    file: File,
    path: PathBuf,
    min_length: usize,
}

impl FromFile {
    /// Opens the corpus file `path` for windows of `min_length` bytes.
    pub(super) fn open(path: &Path, min_length: usize) -> Result<Self, SuffixError> {
        let file = File::open(path).map_err(|source| SuffixError::Scratch {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(FromFile {
            file,
            path: path.to_path_buf(),
            min_length,
        })
    }

    fn read(&self, p: usize, buf: &mut [u8]) -> Result<(), SuffixError> {
        self.file
            .read_exact_at(buf, p as u64)
            .map_err(|source| SuffixError::Scratch {
                path: self.path.clone(),
                source,
            })
    }
}

impl Windows for FromFile {
    type Window = Box<[u8]>;

    fn window(&self, p: usize) -> Result<Box<[u8]>, SuffixError> {
        let mut buf = vec![0u8; self.min_length].into_boxed_slice();
        self.read(p, &mut buf)?;
        Ok(buf)
    }

    fn byte(&self, p: usize) -> Result<u8, SuffixError> {
        let mut b = [0u8];
        self.read(p, &mut b)?;
        Ok(b[0])
    }

    fn prefetch(&self, _p: usize) {}
}
