//! The deduplication's input: documents concatenated into one byte string,
//! held in memory or written to a file and memory-mapped.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use memmap2::{Mmap, UncheckedAdvice};

use super::SuffixError;

/// Documents concatenated into one byte string, the input of the
/// deduplication. The text lives on the heap ([`Corpus::new`],
/// [`Corpus::push`]) or in a file written by a [`CorpusWriter`] and mapped
/// read-only, whose pages the kernel can drop and read back at will (see
/// [`Corpus::release_pages`]). Document offsets stay in memory either way:
/// 8 bytes per document.
#[derive(Debug)]
pub struct Corpus {
    text: Text,
    /// Start offset of every document, followed by the total length.
    starts: Vec<usize>,
}

#[derive(Debug)]
enum Text {
    Heap(Vec<u8>),
    /// The file, and its map (`None` for an empty file, which cannot be
    /// mapped).
    Mapped(PathBuf, Option<Mmap>),
}

impl Default for Corpus {
    fn default() -> Self {
        Corpus::new()
    }
}

impl Corpus {
    /// An empty corpus on the heap.
    pub fn new() -> Self {
        Corpus {
            text: Text::Heap(Vec::new()),
            starts: vec![0],
        }
    }

    /// Builds a corpus on the heap from documents.
    pub fn from_documents<S: AsRef<str>>(documents: &[S]) -> Self {
        let mut corpus = Corpus::new();
        for d in documents {
            corpus.push(d.as_ref());
        }
        corpus
    }

    /// Appends one document.
    ///
    /// # Panics
    /// On a corpus mapped from a file (those are built by a [`CorpusWriter`]).
    pub fn push(&mut self, document: &str) {
        let Text::Heap(text) = &mut self.text else {
            panic!("documents are appended to a mapped corpus through its CorpusWriter");
        };
        text.extend_from_slice(document.as_bytes());
        self.starts.push(text.len());
    }

    /// Total bytes.
    pub fn len(&self) -> usize {
        *self.starts.last().expect("starts ends with the length")
    }

    /// Whether the corpus holds no byte.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
        std::str::from_utf8(&self.text()[self.range(i)]).expect("documents are written as str")
    }

    /// The concatenated bytes.
    pub fn text(&self) -> &[u8] {
        match &self.text {
            Text::Heap(text) => text,
            Text::Mapped(_, Some(map)) => map,
            Text::Mapped(_, None) => &[],
        }
    }

    /// Whether the text is memory-mapped from a file.
    pub fn is_mapped(&self) -> bool {
        matches!(self.text, Text::Mapped(..))
    }

    /// The file the text is mapped from, if it is.
    pub(crate) fn path(&self) -> Option<&Path> {
        match &self.text {
            Text::Mapped(path, _) => Some(path),
            Text::Heap(_) => None,
        }
    }

    /// Writes the document offsets to `path` (little-endian `u64`: every
    /// document's start, then the total length), for [`Corpus::open`] in
    /// another process.
    pub fn save_offsets(&self, path: &Path) -> Result<(), SuffixError> {
        let mut out = BufWriter::new(File::create(path).map_err(|e| scratch(path, e))?);
        for &s in &self.starts {
            out.write_all(&(s as u64).to_le_bytes())
                .map_err(|e| scratch(path, e))?;
        }
        out.flush().map_err(|e| scratch(path, e))
    }

    /// Maps the text file `text` (a [`CorpusWriter`]'s) with the offsets
    /// [`Corpus::save_offsets`] wrote; the file must be exactly as long as
    /// the offsets say and never written again while mapped.
    pub fn open(text: &Path, offsets: &Path) -> Result<Corpus, SuffixError> {
        let (file, starts) = open_checked(text, offsets)?;
        let map = if *starts.last().expect("at least one offset") == 0 {
            None
        } else {
            // SAFETY: the file is a finished corpus in a scratch folder that
            // nothing writes again (the caller's promise above).
            Some(unsafe { Mmap::map(&file) }.map_err(|e| scratch(text, e))?)
        };
        Ok(Corpus {
            text: Text::Mapped(text.to_path_buf(), map),
            starts,
        })
    }

    /// [`Corpus::open`], reading the text onto the heap instead.
    pub fn load(text: &Path, offsets: &Path) -> Result<Corpus, SuffixError> {
        let (mut file, starts) = open_checked(text, offsets)?;
        let mut bytes = Vec::with_capacity(*starts.last().expect("at least one offset"));
        std::io::Read::read_to_end(&mut file, &mut bytes).map_err(|e| scratch(text, e))?;
        Ok(Corpus {
            text: Text::Heap(bytes),
            starts,
        })
    }

    /// Whether `p` is the first byte of some document (binary search).
    pub(crate) fn is_document_start(&self, p: usize) -> bool {
        self.starts.binary_search(&p).is_ok()
    }

    /// Number of window starts of length `min_length` (positions followed by
    /// `min_length` bytes of their own document).
    pub(crate) fn window_start_count(&self, min_length: usize) -> u64 {
        self.starts
            .windows(2)
            .map(|w| (w[1] - w[0] + 1).saturating_sub(min_length) as u64)
            .sum()
    }

    /// The window starts of length `min_length` inside `range`, as disjoint
    /// ascending ranges (one per document that has any there).
    pub(crate) fn window_starts_in(
        &self,
        range: Range<usize>,
        min_length: usize,
    ) -> impl Iterator<Item = Range<usize>> + '_ {
        // The last document starting at or before `range.start`.
        let first = self.starts.partition_point(|&s| s <= range.start).max(1) - 1;
        (first..self.documents())
            .take_while(move |&d| self.starts[d] < range.end)
            .filter_map(move |d| {
                let r = self.range(d);
                let a = r.start.max(range.start);
                let b = (r.end + 1).saturating_sub(min_length).min(range.end);
                (a < b).then_some(a..b)
            })
    }

    /// Drops the text's pages from the resident set when it is mapped (no-op
    /// on the heap): they stay in the page cache, and the next access faults
    /// them back in from there or from the file.
    pub(crate) fn release_pages(&self) {
        if let Text::Mapped(_, Some(map)) = &self.text {
            // SAFETY: the map is read-only and private, and the file is never
            // written while mapped: dropped pages read back unchanged.
            let _ = unsafe { map.unchecked_advise(UncheckedAdvice::DontNeed) };
        }
    }
}

/// Writes a corpus's text to a file, document by document, and maps it
/// ([`CorpusWriter::finish`]): the way to build a corpus larger than memory.
pub struct CorpusWriter {
    path: PathBuf,
    out: BufWriter<File>,
    starts: Vec<usize>,
}

impl CorpusWriter {
    /// Creates the text file `path` (which must not exist).
    pub fn create(path: &Path) -> Result<Self, SuffixError> {
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|source| scratch(path, source))?;
        Ok(CorpusWriter {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(1 << 20, file),
            starts: vec![0],
        })
    }

    /// Appends one document.
    pub fn push(&mut self, document: &str) -> Result<(), SuffixError> {
        self.out
            .write_all(document.as_bytes())
            .map_err(|source| scratch(&self.path, source))?;
        let end = self.starts.last().expect("starts is never empty") + document.len();
        self.starts.push(end);
        Ok(())
    }

    /// Appends every document of `corpus`, its text in one write.
    pub fn push_corpus(&mut self, corpus: &Corpus) -> Result<(), SuffixError> {
        self.out
            .write_all(corpus.text())
            .map_err(|source| scratch(&self.path, source))?;
        let base = *self.starts.last().expect("starts is never empty");
        self.starts
            .extend(corpus.starts[1..].iter().map(|&end| base + end));
        Ok(())
    }

    /// Flushes the file and maps it read-only (no `fsync`: the map reads
    /// the page cache the writes went to).
    pub fn finish(self) -> Result<Corpus, SuffixError> {
        let path = self.path;
        let file = self
            .out
            .into_inner()
            .map_err(|e| scratch(&path, e.into_error()))?;
        let len = *self.starts.last().expect("starts is never empty");
        let map = if len == 0 {
            None
        } else {
            // SAFETY: the file was created by this writer in a scratch folder
            // of this process and is never written or truncated again while
            // the corpus maps it.
            Some(unsafe { Mmap::map(&file) }.map_err(|source| scratch(&path, source))?)
        };
        Ok(Corpus {
            text: Text::Mapped(path, map),
            starts: self.starts,
        })
    }
}

fn scratch(path: &Path, source: std::io::Error) -> SuffixError {
    SuffixError::Scratch {
        path: path.to_path_buf(),
        source,
    }
}

/// The text file and its document offsets, checked against each other.
fn open_checked(text: &Path, offsets: &Path) -> Result<(File, Vec<usize>), SuffixError> {
    let bytes = std::fs::read(offsets).map_err(|e| scratch(offsets, e))?;
    let damaged = |what: String| scratch(offsets, std::io::Error::other(what));
    if bytes.len() < 8 || bytes.len() % 8 != 0 {
        return Err(damaged(format!(
            "{} bytes is not a list of document offsets",
            bytes.len()
        )));
    }
    let starts: Vec<usize> = bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")) as usize)
        .collect();
    if starts[0] != 0 || starts.windows(2).any(|w| w[0] > w[1]) {
        return Err(damaged("the offsets are not ascending from 0".into()));
    }
    let file = File::open(text).map_err(|e| scratch(text, e))?;
    let len = file.metadata().map_err(|e| scratch(text, e))?.len() as usize;
    let total = *starts.last().expect("at least one offset");
    if len != total {
        return Err(scratch(
            text,
            std::io::Error::other(format!(
                "{len} bytes where the offsets say {total}: the corpus file is damaged"
            )),
        ));
    }
    Ok((file, starts))
}
