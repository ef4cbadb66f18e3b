//! Helpers shared by the stage tests: documents directories in and out,
//! word-salad corpora with repeats, a two-thread pool.

// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use std::path::Path;

use cram_data::documents::{DocumentWriter, read_documents};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Writes `docs` as a documents directory at `dir`.
pub fn write_docs(dir: &Path, docs: &[String]) {
    let mut w = DocumentWriter::create(dir).unwrap();
    for d in docs {
        w.push(d).unwrap();
    }
    w.finish().unwrap();
}

/// Every document of the documents directory `dir`, in order.
pub fn read_all(dir: &Path) -> Vec<String> {
    read_documents(dir)
        .unwrap()
        .flat_map(|b| b.unwrap())
        .collect()
}

/// Every file directly in `dir` with its bytes, by name.
pub fn output_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

/// About `bytes` of word salad in documents of up to 2 KB, a tenth of them
/// carrying a copy of a passage of an earlier one (quick to make in bulk,
/// unlike the brute-force tests' random texts).
pub fn word_docs(seed: u64, bytes: usize) -> Vec<String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let words = [
        "the", "a", "of", "cat", "sat", "on", "mat", "é", "naïve", "x",
    ];
    let mut docs: Vec<String> = Vec::new();
    let mut total = 0;
    while total < bytes {
        let mut s = String::new();
        let len = rng.random_range(0..2000);
        while s.len() < len {
            if !docs.is_empty() && rng.random_bool(0.01) {
                let src = docs[rng.random_range(0..docs.len())].as_bytes();
                let a = rng.random_range(0..src.len().max(1));
                let b = (a + rng.random_range(20..200)).min(src.len());
                s.push_str(&String::from_utf8_lossy(&src[a..b]));
            } else {
                s.push_str(words[rng.random_range(0..words.len())]);
                s.push(' ');
            }
        }
        total += s.len();
        docs.push(s);
    }
    docs
}

pub fn two_threads() -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap()
}
