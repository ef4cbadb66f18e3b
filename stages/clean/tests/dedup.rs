//! Deduplication against a brute-force reference, boundary and UTF-8 cases,
//! and the whole stage on a documents directory.

use std::collections::HashMap;
use std::ops::Range;

use cram_clean::suffix::SuffixError;
use cram_clean::{
    Budget, Corpus, CorpusWriter, DedupParams, Keep, find_duplicates, find_duplicates_within,
    run_dedup,
};
use indicatif::ProgressBar;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod common;
use common::{output_files, read_all, two_threads, word_docs, write_docs};

/// Brute force: every window of every document in a hash map; covered ranges
/// per document, relative to the document.
fn brute_force(docs: &[String], l: usize, keep: Keep) -> Vec<Vec<Range<usize>>> {
    let mut groups: HashMap<&[u8], Vec<(usize, usize)>> = HashMap::new();
    for (d, doc) in docs.iter().enumerate() {
        let b = doc.as_bytes();
        if b.len() >= l {
            for off in 0..=b.len() - l {
                groups.entry(&b[off..off + l]).or_default().push((d, off));
            }
        }
    }
    let mut marked: Vec<Vec<bool>> = docs.iter().map(|d| vec![false; d.len()]).collect();
    for members in groups.values() {
        if members.len() < 2 {
            continue;
        }
        // Members were pushed in corpus order: the first is the smallest.
        let skip = usize::from(keep == Keep::First);
        for &(d, off) in &members[skip..] {
            marked[d][off] = true;
        }
    }
    marked
        .iter()
        .map(|m| {
            let mut out: Vec<Range<usize>> = Vec::new();
            for (i, _) in m.iter().enumerate().filter(|(_, x)| **x) {
                match out.last_mut() {
                    Some(last) if last.end >= i => last.end = last.end.max(i + l),
                    _ => out.push(i..i + l),
                }
            }
            out
        })
        .collect()
}

fn sa_covered(docs: &[String], l: usize, keep: Keep, part_bytes: usize) -> Vec<Vec<Range<usize>>> {
    let corpus = Corpus::from_documents(docs);
    let scratch = tempfile::tempdir().unwrap();
    let dups = find_duplicates(
        &corpus,
        l,
        keep,
        part_bytes,
        scratch.path(),
        &ProgressBar::hidden(),
    )
    .unwrap();
    (0..corpus.documents())
        .map(|d| dups.covered(&corpus, d))
        .collect()
}

/// Random documents over a small alphabet (many chance repeats) with planted
/// copies of substrings of earlier documents.
fn random_docs(rng: &mut ChaCha8Rng, n: usize, alphabet: &[&str], max_chars: usize) -> Vec<String> {
    let mut docs: Vec<String> = Vec::new();
    for _ in 0..n {
        let len = rng.random_range(0..max_chars);
        let mut s = String::new();
        while s.chars().count() < len {
            if !docs.is_empty() && rng.random_bool(0.05) {
                let src = &docs[rng.random_range(0..docs.len())];
                let chars: Vec<char> = src.chars().collect();
                if chars.len() > 2 {
                    let a = rng.random_range(0..chars.len() - 1);
                    let b = rng.random_range(a + 1..chars.len().min(a + 60) + 1);
                    s.extend(&chars[a..b]);
                }
            } else {
                s.push_str(alphabet[rng.random_range(0..alphabet.len())]);
            }
        }
        docs.push(s);
    }
    docs
}

#[test]
fn matches_brute_force_on_random_texts_for_every_part_size() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let alphabet = ["a", "b", "c", " ", "ab", "the "];
    for round in 0..6 {
        let docs = random_docs(&mut rng, 40, &alphabet, 120);
        let total: usize = docs.iter().map(|d| d.len()).sum();
        for l in [4, 9, 16] {
            for keep in [Keep::None, Keep::First] {
                let expected = brute_force(&docs, l, keep);
                assert!(
                    expected.iter().any(|c| !c.is_empty()),
                    "round {round}: test data has repeats"
                );
                for part in [7, 64, 500, total + 1] {
                    let got = sa_covered(&docs, l, keep, part);
                    assert_eq!(
                        got, expected,
                        "round {round}, L={l}, keep={keep:?}, part={part}"
                    );
                }
            }
        }
    }
}

#[test]
fn same_result_with_more_threads_than_cores() {
    // The merge splits the window space between rayon threads at sampled
    // pivots: more threads, more pivots, same marks.
    let mut rng = ChaCha8Rng::seed_from_u64(19);
    let docs = random_docs(&mut rng, 60, &["a", "b", "c", " ", "ab", "the "], 150);
    for threads in [1, 3, 8] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        for keep in [Keep::None, Keep::First] {
            for part in [50, 100_000] {
                let got = pool.install(|| sa_covered(&docs, 6, keep, part));
                assert_eq!(
                    got,
                    brute_force(&docs, 6, keep),
                    "threads={threads}, keep={keep:?}, part={part}"
                );
            }
        }
    }
}

#[test]
fn non_ascii_matches_brute_force_and_cuts_whole_characters() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let alphabet = ["α", "β", "é", "中", "文", "🙂", "a", " "];
    let docs = random_docs(&mut rng, 50, &alphabet, 60);
    for l in [5, 7, 13] {
        for part in [3, 50, 100_000] {
            assert_eq!(
                sa_covered(&docs, l, Keep::None, part),
                brute_force(&docs, l, Keep::None),
                "L={l}"
            );
        }
        let corpus = Corpus::from_documents(&docs);
        let scratch = tempfile::tempdir().unwrap();
        let dups = find_duplicates(
            &corpus,
            l,
            Keep::None,
            40,
            scratch.path(),
            &ProgressBar::hidden(),
        )
        .unwrap();
        for (d, doc) in docs.iter().enumerate() {
            let covered = dups.covered(&corpus, d);
            let cuts = dups.cuts(&corpus, d);
            for c in &cuts {
                assert!(
                    doc.is_char_boundary(c.start) && doc.is_char_boundary(c.end),
                    "cut {c:?} of {doc:?}"
                );
            }
            // Every covered byte is cut; a cut is at most 3 bytes wider on each side.
            for r in &covered {
                let c = cuts
                    .iter()
                    .find(|c| c.start <= r.start && r.end <= c.end)
                    .expect("covered inside a cut");
                assert!(r.start - c.start <= 3 || cuts.len() < covered.len());
            }
        }
    }
}

#[test]
fn span_straddling_two_documents_is_cut_inside_each_only() {
    let prefix = "The first half of a repeated passage, long enough to be a match. ";
    let suffix = "And here its second half, which begins the next document in the corpus.";
    let docs = vec![
        format!("Document A starts with something unique 1:{prefix}"),
        format!("{suffix}|Then B goes on with unique words 2."),
        format!("C has its own start 3;{prefix}{suffix}#and its own end 3."),
        "D is entirely unique and stays as it is, 4.".to_string(),
    ];
    let l = 30;
    let expected = brute_force(&docs, l, Keep::None);
    for part in [16, 100, 10_000] {
        assert_eq!(sa_covered(&docs, l, Keep::None, part), expected);
    }
    let got = &expected;
    // A: the prefix at its end is cut, nothing past the document.
    assert_eq!(got[0], vec![docs[0].len() - prefix.len()..docs[0].len()]);
    // B: the suffix at its start.
    assert_eq!(got[1], vec![0..suffix.len()]);
    // C: the prefix and the suffix (each matched in A and B), but not the
    // window that straddles the junction inside C, which occurs only once
    // as A|B is not a match: the cut is two adjacent ranges merged.
    let c0 = docs[2].find(prefix).unwrap();
    assert_eq!(got[2], vec![c0..c0 + prefix.len() + suffix.len()]);
    assert!(got[3].is_empty());

    // Through the stage: four documents stay four (none merged).
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    write_docs(&input, &docs);
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let params = DedupParams {
        min_length: l,
        ..DedupParams::default()
    };
    let summary = run_dedup(&params, &input, &out, &ProgressBar::hidden()).unwrap();
    let texts = read_all(&out);
    assert_eq!(summary.documents_out, 4);
    assert_eq!(texts[0], "Document A starts with something unique 1:");
    assert_eq!(texts[1], "|Then B goes on with unique words 2.");
    assert_eq!(texts[2], "C has its own start 3;#and its own end 3.");
    assert_eq!(texts[3], docs[3]);
}

#[test]
fn keep_first_keeps_the_first_copy() {
    let boiler = "Subscribe to our newsletter to get the latest updates every week!";
    let docs = vec![
        format!("First page. {boiler}"),
        format!("Second page. {boiler} More."),
        format!("{boiler}"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    write_docs(&input, &docs);
    for (keep, expected) in [
        // " page. " precedes the boilerplate in the first two documents, so it
        // is part of their repeat.
        (
            Keep::First,
            vec![docs[0].clone(), "Second More.".to_string()],
        ),
        (
            Keep::None,
            vec!["First".to_string(), "Second More.".to_string()],
        ),
    ] {
        let out = dir.path().join(format!("out-{keep:?}"));
        std::fs::create_dir(&out).unwrap();
        let params = DedupParams {
            min_length: 20,
            keep,
            ..DedupParams::default()
        };
        let summary = run_dedup(&params, &input, &out, &ProgressBar::hidden()).unwrap();
        assert_eq!(read_all(&out), expected, "keep={keep:?}");
        // The third document became empty and was dropped.
        assert_eq!(summary.documents_dropped, 1);
        assert_eq!(summary.top_repeated[0].count, 3);
        assert!(
            boiler.starts_with(&summary.top_repeated[0].text),
            "{:?}",
            summary.top_repeated
        );
        assert_eq!(summary.top_repeated[1].count, 2);
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap())
                .unwrap();
        assert_eq!(json["documents_in"], 3);
    }
    assert_eq!(
        brute_force(&docs, 20, Keep::First),
        sa_covered(&docs, 20, Keep::First, 30)
    );
}

#[test]
fn empty_input_and_short_documents() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    write_docs(&input, &[]);
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let summary = run_dedup(
        &DedupParams::default(),
        &input,
        &out,
        &ProgressBar::hidden(),
    )
    .unwrap();
    assert_eq!(
        (
            summary.documents_in,
            summary.documents_out,
            summary.bytes_out
        ),
        (0, 0, 0)
    );
    assert!(read_all(&out).is_empty());

    // Documents shorter than the window are never touched; empty ones are
    // dropped with the default min_chars = 1, kept with 0.
    let docs = vec!["short".to_string(), String::new(), "short".to_string()];
    assert!(
        sa_covered(&docs, 6, Keep::None, 4)
            .iter()
            .all(|c| c.is_empty())
    );
    let input = dir.path().join("in2");
    write_docs(&input, &docs);
    for (min_chars, n) in [(1, 0), (0, 3)] {
        let out = dir.path().join(format!("out2-{min_chars}"));
        std::fs::create_dir(&out).unwrap();
        let params = DedupParams {
            min_length: 3,
            min_chars,
            ..DedupParams::default()
        };
        let summary = run_dedup(&params, &input, &out, &ProgressBar::hidden()).unwrap();
        // "short" twice with L = 3: both copies fully cut, all three
        // documents are empty then.
        assert_eq!(summary.duplicate_bytes, 10);
        assert_eq!(summary.documents_out, n, "min_chars={min_chars}");
    }
}

#[test]
fn one_huge_document_split_into_parts() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let words = [
        "lorem",
        "ipsum",
        "dolor",
        "sit",
        "amet",
        "consectetur",
        "adipiscing",
        "elit",
        "sed",
        "do",
    ];
    let mut doc = String::new();
    let block: String = (0..40)
        .map(|_| words[rng.random_range(0..words.len())])
        .collect::<Vec<_>>()
        .join(" ");
    while doc.len() < 200_000 {
        if rng.random_bool(0.02) {
            doc.push_str(&block);
        }
        doc.push_str(words[rng.random_range(0..words.len())]);
        doc.push_str(&format!(" {} ", rng.random_range(0..1_000_000u32)));
    }
    let docs = vec![doc];
    let expected = brute_force(&docs, 50, Keep::None);
    assert!(!expected[0].is_empty());
    for part in [10_000, 65_536, 1 << 20] {
        assert_eq!(
            sa_covered(&docs, 50, Keep::None, part),
            expected,
            "part={part}"
        );
    }
}

#[test]
fn within_a_budget_the_marks_are_those_of_the_in_memory_pass() {
    let docs = word_docs(23, 1_500_000);
    let heap = Corpus::from_documents(&docs);
    let dir = tempfile::tempdir().unwrap();
    let mut writer = CorpusWriter::create(&dir.path().join("corpus.txt")).unwrap();
    for d in &docs {
        writer.push(d).unwrap();
    }
    let mapped = writer.finish().unwrap();
    assert!(mapped.is_mapped() && !heap.is_mapped());
    assert!(mapped.text() == heap.text() && mapped.documents() == heap.documents());
    // The mapped pages of the text and of the marks are capped at 256 KiB,
    // a sixth of the corpus: they are dropped again and again while parts
    // are built and in the middle of the scan, and no mark may be lost.
    let budget = Budget { bytes: 1 << 20 };
    for (l, keep) in [(1, Keep::First), (12, Keep::None), (40, Keep::First)] {
        let scratch = tempfile::tempdir().unwrap();
        let a = find_duplicates(
            &heap,
            l,
            keep,
            8 << 20,
            scratch.path(),
            &ProgressBar::hidden(),
        )
        .unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let b = two_threads()
            .install(|| {
                find_duplicates_within(
                    &mapped,
                    l,
                    keep,
                    budget,
                    scratch.path(),
                    &ProgressBar::hidden(),
                )
            })
            .unwrap();
        assert!(b.parts > 10, "L={l}: {} parts", b.parts);
        assert!(b.page_releases > 0, "L={l}");
        assert!(a.duplicated_windows > 0, "L={l}: test data has repeats");
        assert_eq!(
            (a.window_starts, a.duplicated_windows, a.groups),
            (b.window_starts, b.duplicated_windows, b.groups),
            "L={l}"
        );
        for d in 0..heap.documents() {
            assert_eq!(a.cuts(&heap, d), b.cuts(&mapped, d), "L={l}, document {d}");
        }
        assert_eq!(
            a.top_windows(&heap, 20),
            b.top_windows(&mapped, 20),
            "L={l}"
        );
    }
}

#[test]
fn a_budget_too_small_names_the_parameter_and_the_least_that_works() {
    let docs = word_docs(5, 300_000);
    let dir = tempfile::tempdir().unwrap();
    let mut writer = CorpusWriter::create(&dir.path().join("corpus.txt")).unwrap();
    for d in &docs {
        writer.push(d).unwrap();
    }
    let corpus = writer.finish().unwrap();
    let budget = Budget { bytes: 100 << 10 };
    let err = two_threads()
        .install(|| {
            find_duplicates_within(
                &corpus,
                50,
                Keep::None,
                budget,
                dir.path(),
                &ProgressBar::hidden(),
            )
        })
        .unwrap_err();
    assert!(matches!(err, SuffixError::Budget { needed_mb, .. } if needed_mb >= 1));
    let message = err.to_string();
    assert!(message.contains("raise memory_mb to at least"), "{message}");
}

#[test]
fn the_stage_writes_the_same_bytes_in_memory_and_within_a_budget() {
    let docs = word_docs(31, 2_000_000);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    write_docs(&input, &docs);
    let mut outputs = Vec::new();
    for memory_mb in [4096, 1] {
        let out = dir.path().join(format!("out-{memory_mb}"));
        std::fs::create_dir(&out).unwrap();
        let params = DedupParams {
            min_length: 50,
            memory_mb,
            ..DedupParams::default()
        };
        let summary = two_threads()
            .install(|| run_dedup(&params, &input, &out, &ProgressBar::hidden()))
            .unwrap();
        assert_eq!(summary.within_budget, memory_mb == 1);
        assert!(summary.duplicate_bytes > 0);
        outputs.push(output_files(&out));
    }
    let names: Vec<&String> = outputs[0].iter().map(|f| &f.0).collect();
    assert!(names.iter().any(|n| n.ends_with(".parquet")), "{names:?}");
    assert!(outputs[0] == outputs[1], "outputs differ: {names:?}");
}
