//! Streaming the parts' window starts back and merging them in window order.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::collections::binary_heap::PeekMut;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::SuffixError;
use super::windows::Windows;

/// The window starts of one part in window order: in memory (single part)
/// or in a scratch file of little-endian `u32` offsets from `base`.
pub(super) enum Source {
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
    /// The part file `path` (little-endian `u32` offsets from `base`).
    pub(super) fn open(path: PathBuf, base: usize) -> Result<Source, SuffixError> {
        let opened = File::open(&path).and_then(|file| Ok((file.metadata()?.len(), file)));
        match opened {
            Ok((len, _)) if len % 4 != 0 => Err(SuffixError::Scratch {
                path,
                source: std::io::Error::other(format!(
                    "{len} bytes is not a whole number of window starts: the file is damaged"
                )),
            }),
            Ok((len, file)) => Ok(Source::File {
                path,
                file,
                base,
                count: len / 4,
            }),
            Err(source) => Err(SuffixError::Scratch { path, source }),
        }
    }

    pub(super) fn len(&self) -> u64 {
        match self {
            Source::Memory { starts, .. } => starts.len() as u64,
            Source::File { count, .. } => *count,
        }
    }

    /// Position of the `i`-th window start.
    pub(super) fn get(&self, i: u64) -> Result<usize, SuffixError> {
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
    pub(super) fn lower_bound<W: Windows>(
        &self,
        pivot: &W::Window,
        windows: &W,
    ) -> Result<u64, SuffixError> {
        let (mut lo, mut hi) = (0u64, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if windows.window(self.get(mid)?)? < *pivot {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// A reader of the window starts with indices in `range`, reading
    /// `chunk` of them at a time from a file.
    pub(super) fn reader(
        &self,
        range: Range<u64>,
        chunk: usize,
    ) -> Result<Reader<'_>, SuffixError> {
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
                    file,
                    chunk: chunk.max(1),
                    base: *base,
                    remaining: range.end - range.start,
                    buffer: Vec::new(),
                    at: 0,
                })
            }
        }
    }
}

/// How many window starts ahead a reader asks for their windows to be
/// prefetched.
const PREFETCH_AHEAD: usize = 16;

/// Streams window starts from a [`Source`] (its file read by `chunk`
/// window starts: the merge holds one such buffer per part and thread).
pub(super) enum Reader<'s> {
    Memory {
        starts: &'s [i32],
        base: usize,
    },
    File {
        path: &'s Path,
        file: File,
        chunk: usize,
        base: usize,
        remaining: u64,
        buffer: Vec<u8>,
        at: usize,
    },
}

impl Reader<'_> {
    fn next<W: Windows>(&mut self, windows: &W) -> Result<Option<usize>, SuffixError> {
        match self {
            Reader::Memory { starts, base } => match starts.split_first() {
                Some((&first, rest)) => {
                    if let Some(&ahead) = rest.get(PREFETCH_AHEAD) {
                        windows.prefetch(*base + ahead as u32 as usize);
                    }
                    *starts = rest;
                    Ok(Some(*base + first as u32 as usize))
                }
                None => Ok(None),
            },
            Reader::File {
                path,
                file,
                chunk,
                base,
                remaining,
                buffer,
                at,
            } => {
                if *at == buffer.len() {
                    if *remaining == 0 {
                        return Ok(None);
                    }
                    let take = (*remaining).min(*chunk as u64) as usize;
                    buffer.resize(take * 4, 0);
                    file.read_exact(buffer)
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
                    windows.prefetch(*base + u32::from_le_bytes([a[0], a[1], a[2], a[3]]) as usize);
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
pub(super) fn choose_pivots<W: Windows>(
    sources: &[Source],
    windows: &W,
    parts: usize,
) -> Result<Vec<W::Window>, SuffixError> {
    if parts < 2 {
        return Ok(Vec::new());
    }
    const SAMPLES_PER_SOURCE: u64 = 256;
    let mut samples: Vec<(W::Window, u64)> = Vec::new();
    for source in sources {
        let len = source.len();
        let step = len.div_ceil(SAMPLES_PER_SOURCE).max(1);
        let mut i = 0;
        while i < len {
            samples.push((windows.window(source.get(i)?)?, step.min(len - i)));
            i += step;
        }
    }
    samples.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let total: u64 = samples.iter().map(|s| s.1).sum();
    let mut pivots: Vec<W::Window> = Vec::new();
    let mut seen = 0u64;
    let mut next = 1;
    for (w, weight) in samples {
        seen += weight;
        while next < parts && seen * parts as u64 >= total * next as u64 {
            if pivots.last() != Some(&w) {
                pivots.push(w.clone());
            }
            next += 1;
        }
    }
    Ok(pivots)
}

/// Head of one reader in the merge heap (ordered so that the smallest window
/// is on top of std's max-heap).
struct Head<T> {
    window: T,
    pos: usize,
    reader: usize,
}

impl<T: Ord> PartialEq for Head<T> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl<T: Ord> Eq for Head<T> {}
impl<T: Ord> PartialOrd for Head<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T: Ord> Ord for Head<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .window
            .cmp(&self.window)
            .then(other.pos.cmp(&self.pos))
    }
}

/// k-way merge of the readers by window; calls `visit` with every window
/// start and its window, in window order.
pub(super) fn merge<W: Windows>(
    windows: &W,
    mut readers: Vec<Reader<'_>>,
    mut visit: impl FnMut(usize, W::Window) -> Result<(), SuffixError>,
) -> Result<(), SuffixError> {
    if readers.len() == 1 {
        while let Some(p) = readers[0].next(windows)? {
            visit(p, windows.window(p)?)?;
        }
        return Ok(());
    }
    let mut heap = BinaryHeap::with_capacity(readers.len());
    for (i, r) in readers.iter_mut().enumerate() {
        if let Some(pos) = r.next(windows)? {
            heap.push(Head {
                window: windows.window(pos)?,
                pos,
                reader: i,
            });
        }
    }
    while let Some(mut top) = heap.peek_mut() {
        match readers[top.reader].next(windows)? {
            Some(pos) => {
                let window = std::mem::replace(&mut top.window, windows.window(pos)?);
                let visited = std::mem::replace(&mut top.pos, pos);
                visit(visited, window)?;
            }
            None => {
                let head = PeekMut::pop(top);
                visit(head.pos, head.window)?;
            }
        }
    }
    Ok(())
}
