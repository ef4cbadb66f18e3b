//! Learning pair merges from word counts: the training of BPE and of
//! WordPiece (which, as in `tokenizers`, is BPE with a `##` prefix on every
//! symbol but a word's first, keeping the vocabulary and not the merges).
//!
//! Written here rather than taken from `tokenizers` because the library's
//! trainer is not a function of its input: ids of the `##` symbols follow a
//! hash map's iteration order, which changes from run to run, and merges
//! that tie on frequency are taken in id order. Here every id is given in a
//! fixed order (special tokens, then the alphabet by code point, then the
//! continuation symbols by code point, then merges as they are learned) and
//! ties go to the pair of smaller ids, as in the library. So the result is
//! one of the vocabularies the library can produce, always the same one.
//!
//! The algorithm is the usual one: count adjacent symbol pairs over the
//! distinct words weighted by their counts, take the most frequent pair,
//! merge it in every word that has it, update the counts of the pairs
//! around it, and repeat until the vocabulary is full. A max-heap with lazy
//! deletion holds the candidates; each pair keeps the list of words it
//! occurs in (a superset, cleaned as it is used).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use rayon::prelude::*;
use rustc_hash::{FxHashMap, FxHashSet};

use super::words::WordCounts;

/// What to learn.
#[derive(Debug, Clone)]
pub struct MergeConfig {
    /// Vocabulary size to reach, special tokens included.
    pub vocab_size: usize,
    /// Merges of pairs seen fewer times than this are not made.
    pub min_frequency: u64,
    /// Keep at most this many characters (the most frequent; the others are
    /// dropped from the words, as the library does).
    pub limit_alphabet: Option<usize>,
    /// Characters always in the alphabet (counted as the most frequent).
    pub initial_alphabet: Vec<char>,
    /// Prefix of every symbol but a word's first (`##` for WordPiece).
    pub continuing_subword_prefix: Option<String>,
    /// Tokens put first, in order (ids 0, 1, ...).
    pub special_tokens: Vec<String>,
}

/// A learned vocabulary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Learned {
    /// Tokens in id order.
    pub vocab: Vec<String>,
    /// Merges in the order they were learned: the two ids merged.
    pub merges: Vec<(u32, u32)>,
}

type Pair = (u32, u32);

/// A heap entry: a pair with the count it had when pushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Candidate {
    count: u64,
    pair: Pair,
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        // Most frequent first; among equals the smaller pair of ids.
        self.count
            .cmp(&other.count)
            .then_with(|| other.pair.cmp(&self.pair))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The growing vocabulary: tokens by id and ids by token.
struct Vocab {
    tokens: Vec<String>,
    ids: FxHashMap<String, u32>,
}

impl Vocab {
    fn id_or_insert(&mut self, token: String) -> u32 {
        if let Some(&id) = self.ids.get(&token) {
            return id;
        }
        let id = self.tokens.len() as u32;
        self.ids.insert(token.clone(), id);
        self.tokens.push(token);
        id
    }
}

/// The alphabet: every character of the words weighted by count, plus the
/// initial alphabet; when limited, the most frequent (ties to the smaller
/// code point); returned by code point.
fn alphabet(words: &WordCounts, cfg: &MergeConfig) -> Vec<char> {
    let mut counts: FxHashMap<char, u64> = FxHashMap::default();
    for (word, n) in &words.words {
        for c in word.chars() {
            *counts.entry(c).or_default() += n;
        }
    }
    for &c in &cfg.initial_alphabet {
        counts.insert(c, u64::MAX);
    }
    let mut chars: Vec<(char, u64)> = counts.into_iter().collect();
    if let Some(limit) = cfg.limit_alphabet
        && chars.len() > limit
    {
        chars.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        chars.truncate(limit);
    }
    let mut kept: Vec<char> = chars.into_iter().map(|(c, _)| c).collect();
    kept.sort_unstable();
    kept
}

/// Learns merges from `words` until the vocabulary has `cfg.vocab_size`
/// tokens or no pair is frequent enough. `progress` is called with the
/// vocabulary size after each merge.
pub fn learn(words: &WordCounts, cfg: &MergeConfig, mut progress: impl FnMut(usize)) -> Learned {
    let mut vocab = Vocab {
        tokens: Vec::with_capacity(cfg.vocab_size),
        ids: FxHashMap::default(),
    };
    for t in &cfg.special_tokens {
        vocab.id_or_insert(t.clone());
    }
    let alphabet = alphabet(words, cfg);
    let mut char_ids: FxHashMap<char, u32> = FxHashMap::default();
    for &c in &alphabet {
        char_ids.insert(c, vocab.id_or_insert(c.to_string()));
    }
    // Continuation symbols of the characters seen after a word's first
    // position, by code point.
    let prefix = cfg.continuing_subword_prefix.as_deref();
    let mut continued: FxHashMap<char, u32> = FxHashMap::default();
    if let Some(prefix) = prefix {
        let mut seen: FxHashSet<char> = FxHashSet::default();
        for (word, _) in &words.words {
            seen.extend(word.chars().skip(1).filter(|c| char_ids.contains_key(c)));
        }
        let mut seen: Vec<char> = seen.into_iter().collect();
        seen.sort_unstable();
        for c in seen {
            continued.insert(c, vocab.id_or_insert(format!("{prefix}{c}")));
        }
    }

    // Words as symbol ids (characters outside the alphabet dropped, as the
    // library drops them); words of one symbol have no pairs and are left out.
    let (mut symbols, counts): (Vec<Vec<u32>>, Vec<u64>) = words
        .words
        .par_iter()
        .filter_map(|(word, n)| {
            let syms: Vec<u32> = word
                .chars()
                .enumerate()
                .filter_map(|(i, c)| {
                    if i > 0 && prefix.is_some() {
                        continued.get(&c).copied()
                    } else {
                        char_ids.get(&c).copied()
                    }
                })
                .collect();
            (syms.len() > 1).then_some((syms, *n))
        })
        .unzip();

    let mut pair_counts: FxHashMap<Pair, u64> = FxHashMap::default();
    let mut places: FxHashMap<Pair, Vec<u32>> = FxHashMap::default();
    for (w, syms) in symbols.iter().enumerate() {
        for win in syms.windows(2) {
            let pair = (win[0], win[1]);
            *pair_counts.entry(pair).or_default() += counts[w];
            let list = places.entry(pair).or_default();
            if list.last() != Some(&(w as u32)) {
                list.push(w as u32);
            }
        }
    }
    let mut heap: BinaryHeap<Candidate> = pair_counts
        .iter()
        .map(|(&pair, &count)| Candidate { count, pair })
        .collect();

    let min_count = cfg.min_frequency.max(1);
    let mut merges: Vec<(u32, u32)> = Vec::new();
    let mut grown: FxHashSet<Pair> = FxHashSet::default();
    let mut merged: Vec<u32> = Vec::new();
    while vocab.tokens.len() < cfg.vocab_size {
        let Some(top) = heap.pop() else { break };
        let current = pair_counts.get(&top.pair).copied().unwrap_or(0);
        if current != top.count {
            // Stale: the pair lost occurrences since it was pushed.
            if current > 0 {
                heap.push(Candidate {
                    count: current,
                    pair: top.pair,
                });
            }
            continue;
        }
        if current < min_count {
            break;
        }
        let (a, b) = top.pair;
        let right = &vocab.tokens[b as usize];
        let right = prefix.and_then(|p| right.strip_prefix(p)).unwrap_or(right);
        let new_token = format!("{}{right}", vocab.tokens[a as usize]);
        let new_id = vocab.id_or_insert(new_token);
        merges.push((a, b));

        let mut list = places.remove(&top.pair).unwrap_or_default();
        list.sort_unstable();
        list.dedup();
        grown.clear();
        for &w in &list {
            let syms = &mut symbols[w as usize];
            if !syms.windows(2).any(|x| x[0] == a && x[1] == b) {
                continue;
            }
            let n = counts[w as usize];
            for win in syms.windows(2) {
                let c = pair_counts
                    .get_mut(&(win[0], win[1]))
                    .expect("counted pair");
                *c -= n;
            }
            merged.clear();
            let mut i = 0;
            while i < syms.len() {
                if i + 1 < syms.len() && syms[i] == a && syms[i + 1] == b {
                    merged.push(new_id);
                    i += 2;
                } else {
                    merged.push(syms[i]);
                    i += 1;
                }
            }
            std::mem::swap(syms, &mut merged);
            for win in syms.windows(2) {
                let pair = (win[0], win[1]);
                *pair_counts.entry(pair).or_default() += n;
                if pair.0 == new_id || pair.1 == new_id {
                    let list = places.entry(pair).or_default();
                    if list.last() != Some(&w) {
                        list.push(w);
                    }
                    grown.insert(pair);
                }
            }
        }
        pair_counts.remove(&top.pair);
        for pair in grown.drain() {
            let count = pair_counts[&pair];
            if count > 0 {
                heap.push(Candidate { count, pair });
            }
        }
        progress(vocab.tokens.len());
    }
    Learned {
        vocab: vocab.tokens,
        merges,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(vocab_size: usize, prefix: Option<&str>) -> MergeConfig {
        MergeConfig {
            vocab_size,
            min_frequency: 0,
            limit_alphabet: None,
            initial_alphabet: Vec::new(),
            continuing_subword_prefix: prefix.map(str::to_string),
            special_tokens: vec!["[UNK]".into()],
        }
    }

    fn words(list: &[(&str, u64)]) -> WordCounts {
        WordCounts::from_pairs(list.iter().map(|(w, n)| (w.to_string(), *n)))
    }

    #[test]
    fn merges_the_most_frequent_pair_first() {
        let w = words(&[
            ("hug", 10),
            ("pug", 5),
            ("pun", 12),
            ("bun", 4),
            ("hugs", 5),
        ]);
        let learned = learn(&w, &cfg(11, None), |_| {});
        // Alphabet b g h n p s u (ids 1..=7), then "ug" (20 times), then
        // "un" (16), then "hug" (15).
        assert_eq!(
            learned.vocab,
            [
                "[UNK]", "b", "g", "h", "n", "p", "s", "u", "ug", "un", "hug"
            ]
        );
        let id = |t: &str| learned.vocab.iter().position(|v| v == t).unwrap() as u32;
        assert_eq!(
            learned.merges,
            [(id("u"), id("g")), (id("u"), id("n")), (id("h"), id("ug"))]
        );
    }

    #[test]
    fn wordpiece_prefixes_continuations_and_breaks_ties_by_id() {
        // "ab" and "cd" tie at 3: the pair of smaller ids goes first.
        let w = words(&[("cd", 3), ("ab", 3)]);
        let learned = learn(&w, &cfg(8, Some("##")), |_| {});
        assert_eq!(
            learned.vocab,
            ["[UNK]", "a", "b", "c", "d", "##b", "##d", "ab"]
        );
    }

    #[test]
    fn repeated_pairs_in_one_word_merge_left_to_right() {
        let w = words(&[("aaaa", 1), ("aaa", 1)]);
        let learned = learn(&w, &cfg(4, None), |_| {});
        // (a, a) occurs 3 + 2 = 5 times as a window; "aaaa" becomes
        // [aa, aa] and "aaa" [aa, a]; (aa, aa) = (2, 2) and (aa, a) = (2, 1)
        // tie at 1 and the smaller pair wins: "aaa".
        assert_eq!(learned.vocab, ["[UNK]", "a", "aa", "aaa"]);
    }

    #[test]
    fn limit_alphabet_keeps_the_most_frequent_characters() {
        let w = words(&[("xy", 5), ("xz", 1)]);
        let mut c = cfg(3, None);
        c.limit_alphabet = Some(2);
        let learned = learn(&w, &c, |_| {});
        assert_eq!(learned.vocab, ["[UNK]", "x", "y"]);
    }

    #[test]
    fn the_result_does_not_depend_on_the_thread_count() {
        let text = "the quick brown fox jumps over the lazy dog and the dog sleeps";
        let w = WordCounts::from_pairs(
            text.split(' ')
                .enumerate()
                .map(|(i, s)| (s.to_string(), 1 + (i as u64 % 3))),
        );
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| learn(&w, &cfg(60, Some("##")), |_| {}));
        let four = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .unwrap()
            .install(|| learn(&w, &cfg(60, Some("##")), |_| {}));
        assert_eq!(one, four);
        assert_eq!(one.vocab.len(), 60);
    }
}
