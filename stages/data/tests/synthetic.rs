//! Tests of the `synthetic` kind.

use cram_data::documents::read_documents;
use cram_data::synthetic::{SyntheticError, SyntheticParams, run_synthetic};

fn generate(params: &SyntheticParams, seed: u64) -> (Vec<String>, cram_data::SyntheticSummary) {
    let dir = tempfile::tempdir().unwrap();
    let s = run_synthetic(params, seed, dir.path(), &indicatif::ProgressBar::hidden()).unwrap();
    assert!(dir.path().join("summary.json").is_file());
    let docs = read_documents(dir.path())
        .unwrap()
        .flat_map(|b| b.unwrap())
        .collect();
    (docs, s)
}

#[test]
fn deterministic_and_english_like() {
    let params = SyntheticParams {
        documents: 300,
        ..SyntheticParams::default()
    };
    let (a, summary) = generate(&params, 7);
    let (b, _) = generate(&params, 7);
    let (c, _) = generate(&params, 8);
    assert_eq!(a, b, "same seed, same corpus");
    assert_ne!(a, c, "another seed, another corpus");
    assert_eq!(a.len(), 300);
    eprintln!("sample document:\n{}", a[0]);
    assert_eq!(summary.documents, 300);
    assert_eq!(summary.bytes, a.iter().map(|d| d.len() as u64).sum::<u64>());

    let all = a.join("\n");
    // Sentences end in periods (possibly inside a closing quote).
    for line in all.lines() {
        assert!(line.ends_with('.') || line.ends_with(".”"), "{line:?}");
        assert!(line.chars().next().unwrap().is_uppercase(), "{line:?}");
    }
    // Material for normalisation and dedup is present.
    assert!(all.contains('“') && all.contains('”'));
    assert!(all.chars().any(|c| "éëèçïüøóá".contains(c)));
    assert!(summary.boilerplate_lines > 20);
    let boiler = "This article is part of a synthetic corpus";
    assert!(a.iter().filter(|d| d.contains(boiler)).count() >= 5);
    // A real vocabulary: many distinct words, common words frequent.
    let words: std::collections::HashMap<&str, usize> =
        all.split_whitespace().fold(Default::default(), |mut m, w| {
            *m.entry(w).or_default() += 1;
            m
        });
    assert!(words.len() > 300, "{} distinct words", words.len());
    assert!(words.get("the").copied().unwrap_or(0) > 100);
    // Lengths vary.
    let min = a.iter().map(String::len).min().unwrap();
    let max = a.iter().map(String::len).max().unwrap();
    assert!(max > 4 * min, "lengths {min}..{max}");
}

#[test]
fn sentence_bounds_and_validation() {
    let params = SyntheticParams {
        documents: 50,
        min_sentences: 2,
        max_sentences: 2,
        boilerplate_probability: 0.0,
        quote_probability: 0.0,
        ..SyntheticParams::default()
    };
    let (docs, s) = generate(&params, 1);
    assert_eq!(s.sentences, 100);
    for d in &docs {
        assert_eq!(
            d.matches(". ").count() + d.matches(".\n").count() + 1,
            2,
            "{d:?}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let bad = SyntheticParams {
        min_sentences: 5,
        max_sentences: 2,
        ..SyntheticParams::default()
    };
    let err = run_synthetic(&bad, 0, dir.path(), &indicatif::ProgressBar::hidden()).unwrap_err();
    assert!(matches!(err, SyntheticError::InvalidParams(_)));
    let empty = SyntheticParams {
        documents: 0,
        ..SyntheticParams::default()
    };
    let (docs, s) = generate(&empty, 0);
    assert!(docs.is_empty());
    assert_eq!(s.shards.len(), 1);
}
