//! Helpers shared by the tests of the token stages: a deterministic
//! English-like corpus, a trained tokenizer on it, and `pack` runs.

#![allow(dead_code)]

use std::path::Path;

use cram_data::documents::DocumentWriter;
use cram_tokens::pack::PackError;
use cram_tokens::{PackParams, TokenizerParams, read_sequences, run_pack, run_tokenizer};

const WORDS: &[&str] = &[
    "the",
    "cat",
    "sat",
    "on",
    "a",
    "mat",
    "while",
    "dog",
    "ran",
    "through",
    "green",
    "field",
    "and",
    "Café",
    "über",
    "naïve",
    "quickly",
    "jumped",
    "over",
    "lazy",
    "river",
    "bank",
    "with",
    "friends",
    "of",
    "mine",
    "under",
    "bright",
    "morning",
    "sun",
    "people",
    "walked",
    "home",
    "after",
    "school",
    "library",
    "books",
    "were",
    "interesting",
    "history",
    "science",
    "music",
    "played",
    "loudly",
    "in",
    "park",
];

const SYLLABLES: &[&str] = &[
    "ka", "lo", "mi", "ren", "tu", "sa", "vor", "ped", "qui", "ba", "nel", "dro", "fi", "gam",
    "hu", "jet", "zo", "wex", "yal", "cor",
];

/// Deterministic English-like documents of 1–6 sentences.
pub fn corpus(n: usize) -> Vec<String> {
    let mut state = 12345u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    (0..n)
        .map(|_| {
            let sentences = 1 + next() % 6;
            let mut doc = String::new();
            for s in 0..sentences {
                if s > 0 {
                    doc.push(' ');
                }
                let len = 3 + next() % 9;
                for w in 0..len {
                    if w > 0 {
                        doc.push(if next() % 17 == 0 { ',' } else { ' ' });
                        if doc.ends_with(',') {
                            doc.push(' ');
                        }
                    }
                    // Mostly common words, some made of random syllables so
                    // that the corpus has enough distinct pieces to train on.
                    let made;
                    let word = if next() % 3 == 0 {
                        made = (0..2 + next() % 2)
                            .map(|_| SYLLABLES[next() % SYLLABLES.len()])
                            .collect::<String>();
                        made.as_str()
                    } else {
                        WORDS[next() % WORDS.len()]
                    };
                    if w == 0 {
                        let mut c = word.chars();
                        let first = c.next().unwrap().to_uppercase().collect::<String>();
                        doc.push_str(&first);
                        doc.push_str(c.as_str());
                    } else {
                        doc.push_str(word);
                    }
                }
                doc.push_str(if next() % 5 == 0 { "!" } else { "." });
            }
            doc
        })
        .collect()
}

pub fn write_documents(dir: &Path, docs: &[String]) {
    let mut w = DocumentWriter::create(dir).unwrap();
    for d in docs {
        w.push(d).unwrap();
    }
    w.finish().unwrap();
}

pub fn small_params(vocab_size: usize) -> TokenizerParams {
    TokenizerParams {
        vocab_size,
        eval_documents: 20,
        ..TokenizerParams::default()
    }
}

/// Documents dir + trained tokenizer dir in a temp dir.
pub fn setup(
    docs: &[String],
    vocab: usize,
) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let docs_dir = tmp.path().join("docs");
    write_documents(&docs_dir, docs);
    let tok_dir = tmp.path().join("tok");
    std::fs::create_dir_all(&tok_dir).unwrap();
    let bar = indicatif::ProgressBar::hidden();
    let summary = run_tokenizer(&small_params(vocab), &docs_dir, 0, &tok_dir, &bar).unwrap();
    assert_eq!(summary.vocab_size, vocab);
    (tmp, docs_dir, tok_dir.join("tokenizer.json"))
}

pub fn pack(
    docs_dir: &Path,
    tok: &Path,
    params: &PackParams,
    out: &Path,
) -> Result<cram_tokens::PackSummary, PackError> {
    std::fs::create_dir_all(out).unwrap();
    run_pack(
        params,
        docs_dir,
        tok,
        7,
        out,
        &indicatif::ProgressBar::hidden(),
    )
}

pub fn all_rows(dir: &Path) -> Vec<Vec<u32>> {
    read_sequences(dir)
        .unwrap()
        .flat_map(|b| b.unwrap().into_rows())
        .collect()
}
