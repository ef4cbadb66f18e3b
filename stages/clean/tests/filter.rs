//! The `filter` stage on small documents directories.

use cram_clean::filter::{TRASH_TOKENIZER_FILE, passes_trash_rule, train_trash_tokenizer};
use cram_clean::{FilterError, FilterParams, FilterSummary, run_filter};
use cram_data::documents::DocumentWriter;
use indicatif::ProgressBar;

mod common;
use common::{output_files, read_all, write_docs};

fn run(
    params: &FilterParams,
    docs: &[String],
    tokenizer: Option<&std::path::Path>,
) -> (Vec<String>, cram_clean::FilterSummary) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    write_docs(&input, docs);
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let summary = run_filter(params, &input, tokenizer, 5, &out, &ProgressBar::hidden()).unwrap();
    let on_disk: cram_clean::FilterSummary =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(on_disk.documents_out, summary.documents_out);
    (read_all(&out), summary)
}

#[test]
fn normalises_and_drops_empty_in_order() {
    let docs: Vec<String> = vec![
        "Crème  Brûlée ``quoted''".into(),
        "中文".into(),
        "Plain text.".into(),
        "ΣΟΦΙΑ and Ａｂｃ".into(),
    ];
    let (out, summary) = run(&FilterParams::default(), &docs, None);
    // With strip_accents the form is NFD (not NFKC, as the reference), so the
    // fullwidth letters stay non-ASCII and force_english_keyboard deletes them.
    assert_eq!(out, vec!["creme brulee \"quoted\"", "plain text.", " and "]);
    assert_eq!(summary.dropped.empty, 1);
    assert_eq!(summary.documents_in, 4);
    assert_eq!(summary.documents_changed, 4);
    assert_eq!(
        summary.bytes_in,
        docs.iter().map(|d| d.len() as u64).sum::<u64>()
    );
    assert_eq!(
        summary.bytes_out,
        out.iter().map(|d| d.len() as u64).sum::<u64>()
    );

    let off = FilterParams {
        normalize: false,
        ..FilterParams::default()
    };
    let (out, summary) = run(&off, &docs, None);
    assert_eq!(out, docs);
    assert_eq!(summary.documents_changed, 0);
}

#[test]
fn length_filters_and_order_across_batches() {
    // More documents than one parallel batch and one reader batch.
    let docs: Vec<String> = (0..10_000)
        .map(|i| "x".repeat(i % 50) + &format!("#{i}"))
        .collect();
    let params = FilterParams {
        min_chars: 10,
        max_chars: Some(40),
        ..FilterParams::default()
    };
    let (out, summary) = run(&params, &docs, None);
    let expected: Vec<String> = docs
        .iter()
        .filter(|d| (10..=40).contains(&d.chars().count()))
        .cloned()
        .collect();
    assert_eq!(out, expected);
    assert_eq!(
        summary.dropped.too_short + summary.dropped.too_long + summary.documents_out,
        10_000
    );
    assert!(summary.dropped.too_short > 0 && summary.dropped.too_long > 0);
}

fn english_and_garbage() -> (Vec<String>, Vec<String>) {
    let sentences = [
        "the quick brown fox jumps over the lazy dog and runs into the forest",
        "a language model is trained on a large corpus of text for one day",
        "the cat sat on the mat while the dog slept near the warm fire",
        "students read books in the library and write notes about the story",
    ];
    let english: Vec<String> = (0..200).map(|i| sentences[i % 4].to_string()).collect();
    let garbage: Vec<String> = vec![
        "q9#zv!k2@x7$w1%j4^p8&m3*r6(t0)y5".into(),
        "zx;qv,kj.wp?xz!qj;vk,zw.jq?xv!kz".into(),
    ];
    (english, garbage)
}

#[test]
fn remove_trash_with_a_self_trained_tokenizer() {
    let (english, garbage) = english_and_garbage();
    let mut docs = english.clone();
    docs.insert(3, garbage[0].clone());
    docs.push(garbage[1].clone());
    let params = FilterParams {
        remove_trash: true,
        trash_cutoff: 0.3,
        trash_vocab_size: 300,
        ..FilterParams::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    write_docs(&input, &docs);
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let summary = run_filter(&params, &input, None, 1, &out, &ProgressBar::hidden()).unwrap();
    assert_eq!(summary.dropped.trash, 2, "{summary:?}");
    assert_eq!(read_all(&out), english);
    assert_eq!(summary.trash_tokenizer.as_deref(), Some("self"));
    assert_eq!(summary.trash_training_documents, docs.len() as u64);

    // The saved tokenizer as an input gives the same verdicts (the self
    // count adds the reference's <sep>; one token does not change these).
    let saved = out.join(TRASH_TOKENIZER_FILE);
    let (kept, summary) = run(&params, &docs, Some(&saved));
    assert_eq!(kept, english);
    assert_eq!(summary.trash_tokenizer.as_deref(), Some("input"));
}

#[test]
fn trash_rule_and_tokenizer_training() {
    assert!(passes_trash_rule(2, 10, 0.3));
    assert!(!passes_trash_rule(3, 10, 0.3));
    let (english, _) = english_and_garbage();
    let tokenizer = train_trash_tokenizer(&english, 200).unwrap();
    assert!(tokenizer.get_vocab_size(true) <= 200);
    let enc = tokenizer.encode("the quick brown fox", false).unwrap();
    assert_eq!(enc.len(), 4, "{:?}", enc.get_tokens());
}

#[test]
fn errors_name_the_tokenizer_file_and_bad_params() {
    let docs = vec!["some text".to_string()];
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    write_docs(&input, &docs);
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let params = FilterParams {
        remove_trash: true,
        ..FilterParams::default()
    };
    let missing = dir.path().join("nowhere/tokenizer.json");
    let err = run_filter(
        &params,
        &input,
        Some(&missing),
        0,
        &out,
        &ProgressBar::hidden(),
    )
    .unwrap_err();
    assert!(matches!(err, FilterError::LoadTokenizer { .. }));
    assert!(err.to_string().contains("nowhere/tokenizer.json"), "{err}");

    let bad = FilterParams {
        min_chars: 10,
        max_chars: Some(5),
        ..FilterParams::default()
    };
    let err = run_filter(&bad, &input, None, 0, &out, &ProgressBar::hidden()).unwrap_err();
    assert!(err.to_string().contains("max_chars"), "{err}");

    let err = run_filter(
        &FilterParams::default(),
        &dir.path().join("absent"),
        None,
        0,
        &out,
        &ProgressBar::hidden(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("absent"), "{err}");
}

#[test]
fn params_round_trip_with_defaults() {
    let params: FilterParams =
        serde_json::from_str(r#"{"remove_trash": true, "trash_cutoff": 0.25}"#).unwrap();
    assert!(
        params.remove_trash
            && params.lowercase
            && params.strip_accents
            && params.force_english_keyboard
    );
    assert_eq!(params.trash_cutoff, 0.25);
    assert!(serde_json::from_str::<FilterParams>(r#"{"lowercse": true}"#).is_err());
    let dedup: cram_clean::DedupParams =
        serde_json::from_str(r#"{"min_length": 75, "keep": "first"}"#).unwrap();
    assert_eq!(dedup.keep, cram_clean::Keep::First);
    assert_eq!(dedup.min_chars, 1);
}

#[test]
fn sharded_filter_merges_to_the_one_pass_output_byte_for_byte() {
    use cram_clean::filter_shards::{
        merge_filter_shards, prepare_filter_shards, run_filter_shard, shard_range,
    };
    let (english, garbage) = english_and_garbage();
    let mut docs: Vec<String> = english
        .iter()
        .enumerate()
        .map(|(i, s)| format!("{s} number {i}, with Ünïcode and “quotes”"))
        .collect();
    docs.insert(7, garbage[0].clone());
    docs.insert(150, garbage[1].clone());
    docs.insert(20, String::new());
    docs.insert(90, "short".into());
    let params = FilterParams {
        remove_trash: true,
        trash_cutoff: 0.3,
        trash_vocab_size: 300,
        min_chars: 10,
        ..FilterParams::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    // Small input shards, so that shard ranges cut across batches and files.
    let mut w = DocumentWriter::create(&input)
        .unwrap()
        .with_shard_bytes(2_000);
    for d in &docs {
        w.push(d).unwrap();
    }
    w.finish().unwrap();
    let hidden = ProgressBar::hidden();
    let one = dir.path().join("one");
    std::fs::create_dir(&one).unwrap();
    let single = run_filter(&params, &input, None, 9, &one, &hidden).unwrap();
    assert_eq!(single.dropped.trash, 2, "{single:?}");

    for shards in [1, 3, 7] {
        let root = dir.path().join(format!("sharded-{shards}"));
        let prepared = root.join("prepared");
        std::fs::create_dir_all(&prepared).unwrap();
        prepare_filter_shards(&params, &input, None, 9, &prepared, &hidden).unwrap();
        let mut dirs = Vec::new();
        // Shards run in any order (on any host); the merge takes them in order.
        for shard in (0..shards).rev() {
            let d = root.join(format!("shard-{shard}"));
            std::fs::create_dir_all(&d).unwrap();
            run_filter_shard(&params, &input, None, &prepared, shard, shards, &d, &hidden).unwrap();
            dirs.push(d);
        }
        dirs.reverse();
        let out = root.join("out");
        std::fs::create_dir_all(&out).unwrap();
        let merged = merge_filter_shards(&prepared, &dirs, &out, &hidden).unwrap();
        let timeless = |s: &FilterSummary| FilterSummary {
            seconds: 0.0,
            ..s.clone()
        };
        assert_eq!(timeless(&merged), timeless(&single), "{shards} shards");
        let (a, b) = (output_files(&one), output_files(&out));
        assert_eq!(
            a.iter().map(|x| &x.0).collect::<Vec<_>>(),
            b.iter().map(|x| &x.0).collect::<Vec<_>>(),
            "{shards} shards"
        );
        assert!(a == b, "{shards} shards: the files differ");
    }
    // The ranges cover every document once.
    let covered: u64 = (0..7)
        .map(|s| shard_range(301, s, 7))
        .map(|r| r.end - r.start)
        .sum();
    assert_eq!(covered, 301);
}
