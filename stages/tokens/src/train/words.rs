//! Counting the pre-tokenized words of a corpus: the input of every trainer.
//!
//! Documents arrive in batches; each batch is split into chunks that the
//! rayon pool counts on its own, and the chunk counts are added into one
//! table. Sums of integers do not depend on the order they are added in, so
//! the table is the same whatever the thread count, and [`WordCounts`] hands
//! it out sorted by word: every later step sees one fixed order.

use rayon::prelude::*;
use rustc_hash::FxHashMap;
use tokenizers::tokenizer::{OffsetReferential, OffsetType, PreTokenizedString};
use tokenizers::{NormalizedString, Normalizer, PreTokenizer, Tokenizer};

use crate::fast::FastText;

/// Documents per counting chunk: big enough to amortise a table per chunk,
/// small enough to share a batch out among the threads.
const CHUNK_DOCUMENTS: usize = 64;

/// How a document is cut into words: the fast path of the default
/// configuration or the library's normaliser and pre-tokenizer.
enum Splitter<'a> {
    Fast(FastText),
    Library(&'a Tokenizer),
}

impl Splitter<'_> {
    fn count(&self, text: &str, table: &mut FxHashMap<String, u64>) -> tokenizers::Result<()> {
        let mut add = |word: &str| match table.get_mut(word) {
            Some(n) => *n += 1,
            None => {
                table.insert(word.to_string(), 1);
            }
        };
        match self {
            Splitter::Fast(fast) => fast.for_each_word(text, add),
            Splitter::Library(tokenizer) => {
                let mut normalized = NormalizedString::from(text);
                if let Some(n) = tokenizer.get_normalizer() {
                    n.normalize(&mut normalized)?;
                }
                let mut pre = PreTokenizedString::from(normalized);
                if let Some(p) = tokenizer.get_pre_tokenizer() {
                    p.pre_tokenize(&mut pre)?;
                }
                for (word, _, _) in pre.get_splits(OffsetReferential::Original, OffsetType::Byte) {
                    add(word);
                }
                Ok(())
            }
        }
    }
}

/// The word counts of a corpus, as the untrained `tokenizer`'s normaliser
/// and pre-tokenizer cut it (what the `tokenizers` trainers count in
/// `feed`).
pub struct WordCounter<'a> {
    splitter: Splitter<'a>,
    table: FxHashMap<String, u64>,
}

impl<'a> WordCounter<'a> {
    /// A counter for documents as `tokenizer` (untrained; only its
    /// normaliser and pre-tokenizer are used) splits them.
    pub fn new(tokenizer: &'a Tokenizer) -> WordCounter<'a> {
        let splitter = match FastText::new(tokenizer) {
            Some(fast) => Splitter::Fast(fast),
            None => Splitter::Library(tokenizer),
        };
        WordCounter {
            splitter,
            table: FxHashMap::default(),
        }
    }

    /// Counts the words of a batch of documents, in parallel.
    pub fn add(&mut self, documents: &[String]) -> tokenizers::Result<()> {
        let splitter = &self.splitter;
        let tables: Vec<FxHashMap<String, u64>> = documents
            .par_chunks(CHUNK_DOCUMENTS)
            .map(|chunk| {
                let mut table = FxHashMap::default();
                for text in chunk {
                    splitter.count(text, &mut table)?;
                }
                Ok(table)
            })
            .collect::<tokenizers::Result<_>>()?;
        for table in tables {
            if self.table.is_empty() {
                self.table = table;
                continue;
            }
            for (word, n) in table {
                *self.table.entry(word).or_default() += n;
            }
        }
        Ok(())
    }

    /// The counts, sorted by word (byte order).
    pub fn finish(self) -> WordCounts {
        let mut words: Vec<(String, u64)> = self.table.into_iter().collect();
        words.par_sort_unstable_by(|a, b| a.0.cmp(&b.0));
        WordCounts { words }
    }
}

/// Distinct words with their counts, sorted by word.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WordCounts {
    /// `(word, count)` in byte order of the words.
    pub words: Vec<(String, u64)>,
}

impl WordCounts {
    /// Counts from `(word, count)` pairs in any order (equal words added).
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, u64)>) -> WordCounts {
        let mut table: FxHashMap<String, u64> = FxHashMap::default();
        for (w, n) in pairs {
            *table.entry(w).or_default() += n;
        }
        let mut words: Vec<(String, u64)> = table.into_iter().collect();
        words.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        WordCounts { words }
    }

    /// Number of distinct words.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// Whether there are no words.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }
}
