//! End-to-end tests of the `tokenizer` and `pack` kinds on small generated
//! corpora, including interop with Python's `tokenizers`, `transformers`
//! and `pyarrow` when they are installed.

use std::path::Path;
use std::process::Command;

mod common;

use common::{all_rows, corpus, pack, setup, small_params, write_documents};
use cram_tokens::pack::PackError;
use cram_tokens::{
    IdType, PackParams, RowOrdering, TokenizerModel, TokenizerParams, load_tokenizer,
    read_sequences_summary, run_tokenizer, special_ids,
};

#[test]
fn tokenizer_has_exact_vocab_fixed_specials_and_templates() {
    let docs = corpus(400);
    let (tmp, _, tok_path) = setup(&docs, 200);
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tok_path.parent().unwrap().join("summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(summary["vocab_size"], 200);
    assert_eq!(summary["eval_documents"], 20);
    assert_eq!(summary["training_documents"], 380);
    let tok = load_tokenizer(&tok_path).unwrap();
    assert_eq!(tok.get_vocab_size(true), 200);
    let ids = special_ids(&tok).unwrap();
    assert_eq!(
        (ids.pad, ids.unk, ids.cls, ids.sep, ids.mask),
        (0, 1, 2, 3, 4)
    );
    // Normalisation baked in: lowercase, accents stripped, spaces collapsed.
    let a = tok.encode("Café   ÜBER the cat.", true).unwrap();
    let b = tok.encode("cafe uber the cat.", true).unwrap();
    assert_eq!(a.get_ids(), b.get_ids());
    assert_eq!(a.get_ids()[0], 2);
    assert_eq!(*a.get_ids().last().unwrap(), 3);
    let pair = tok.encode(("the cat", "a dog"), true).unwrap();
    let types = pair.get_type_ids();
    assert_eq!(pair.get_ids()[0], 2);
    assert_eq!(types[0], 0);
    assert_eq!(*types.last().unwrap(), 1);
    assert_eq!(pair.get_ids().iter().filter(|&&i| i == 3).count(), 2);
    // No padding or truncation in the saved file.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&tok_path).unwrap()).unwrap();
    assert!(json["padding"].is_null() && json["truncation"].is_null());
    drop(tmp);
}

#[test]
fn tokenizer_too_large_vocab_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let docs_dir = tmp.path().join("docs");
    write_documents(&docs_dir, &corpus(50));
    let out = tmp.path().join("tok");
    std::fs::create_dir_all(&out).unwrap();
    let err = run_tokenizer(
        &small_params(50_000),
        &docs_dir,
        0,
        &out,
        &indicatif::ProgressBar::hidden(),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("50000"), "{msg}");
    assert!(msg.contains("lower vocab_size"), "{msg}");
}

#[test]
fn bpe_and_unigram_train_with_fixed_specials() {
    let tmp = tempfile::tempdir().unwrap();
    let docs_dir = tmp.path().join("docs");
    write_documents(&docs_dir, &corpus(300));
    for (model, vocab) in [(TokenizerModel::Bpe, 400), (TokenizerModel::Unigram, 150)] {
        let out = tmp.path().join(format!("{model:?}"));
        std::fs::create_dir_all(&out).unwrap();
        let params = TokenizerParams {
            model,
            ..small_params(vocab)
        };
        let summary = run_tokenizer(
            &params,
            &docs_dir,
            0,
            &out,
            &indicatif::ProgressBar::hidden(),
        )
        .unwrap();
        assert_eq!(summary.vocab_size, vocab, "{model:?}");
        let tok = load_tokenizer(&out.join("tokenizer.json")).unwrap();
        let ids = special_ids(&tok).unwrap();
        assert_eq!(
            (ids.pad, ids.unk, ids.cls, ids.sep, ids.mask),
            (0, 1, 2, 3, 4),
            "{model:?}"
        );
    }
}

#[test]
fn pack_none_roundtrips_text_and_counts_rows() {
    let docs = corpus(300);
    let (tmp, docs_dir, tok_path) = setup(&docs, 200);
    let out = tmp.path().join("packed");
    let params = PackParams {
        seq_length: 16,
        ordering: RowOrdering::None,
        shard_bytes: 4096,
        heldout_rows: 0,
        ..PackParams::default()
    };
    let summary = pack(&docs_dir, &tok_path, &params, &out).unwrap();
    assert_eq!(summary.documents, 300);
    assert_eq!(summary.heldout_rows, 0);
    assert!(!out.join("heldout").exists());
    assert_eq!(summary.rows, (summary.tokens + summary.documents) / 16);
    assert_eq!(
        summary.dropped_tokens,
        (summary.tokens + summary.documents) % 16
    );
    assert_eq!(summary.dtype, IdType::U16);
    assert!(
        summary.shards.len() > 1,
        "small shard_bytes gives several shards"
    );
    assert!(out.join("tokenizer.json").is_file());
    // Timings are floats that JSON need not round-trip to the last bit.
    let mut reread = read_sequences_summary(&out).unwrap();
    reread.seconds = summary.seconds;
    reread.mb_per_second = summary.mb_per_second;
    assert_eq!(reread, summary);

    let tok = load_tokenizer(&tok_path).unwrap();
    let rows = all_rows(&out);
    assert_eq!(rows.len() as u64, summary.rows);
    assert!(rows.iter().all(|r| r.len() == 16 && r[0] != 2));
    let flat: Vec<u32> = rows.concat();
    // Expected stream: each document encoded without specials, then [SEP].
    let mut expected = Vec::new();
    for d in &docs {
        expected.extend(tok.encode(d.as_str(), false).unwrap().get_ids());
        expected.push(3);
    }
    assert_eq!(flat[..], expected[..flat.len()]);
    // Decoding gives the normalised text with [SEP] between documents.
    let text = tok.decode(&flat, false).unwrap();
    let pieces: Vec<&str> = text.split("[SEP]").map(str::trim).collect();
    let normalise = |s: &str| {
        let n = tok
            .decode(tok.encode(s, false).unwrap().get_ids(), false)
            .unwrap();
        n.trim().to_string()
    };
    for (piece, doc) in pieces.iter().zip(&docs).take(pieces.len() - 1) {
        assert_eq!(*piece, normalise(doc));
        assert!(
            !piece.chars().any(|c| c.is_uppercase() || !c.is_ascii()),
            "{piece}"
        );
    }
}

#[test]
fn pack_curriculum_and_randomized_orders() {
    let docs = corpus(300);
    let (tmp, docs_dir, tok_path) = setup(&docs, 200);
    let base = PackParams {
        seq_length: 16,
        ..PackParams::default()
    };
    let plain = pack(
        &docs_dir,
        &tok_path,
        &PackParams {
            ordering: RowOrdering::None,
            ..base.clone()
        },
        &tmp.path().join("n"),
    )
    .unwrap();
    let plain_rows = all_rows(&tmp.path().join("n"));
    let period = plain.period_id.expect("vocab has '.'");

    let cur = pack(&docs_dir, &tok_path, &base, &tmp.path().join("c")).unwrap();
    assert_eq!(cur.ordering, RowOrdering::SentenceLengthCurriculum);
    let cur_rows = all_rows(&tmp.path().join("c"));
    let dots = |r: &Vec<u32>| r.iter().filter(|&&i| i == period).count();
    // Stable descending sort by the number of "." tokens.
    let mut expected = plain_rows.clone();
    expected.sort_by_key(|r| std::cmp::Reverse(dots(r)));
    assert_eq!(cur_rows, expected);

    // Randomized: a permutation, seeded, reproducible; a tiny memory budget
    // forces several buckets and re-splitting.
    let rand_params = PackParams {
        ordering: RowOrdering::Randomized,
        shuffle_memory_bytes: 200,
        ..base.clone()
    };
    pack(&docs_dir, &tok_path, &rand_params, &tmp.path().join("r1")).unwrap();
    pack(&docs_dir, &tok_path, &rand_params, &tmp.path().join("r2")).unwrap();
    let r1 = all_rows(&tmp.path().join("r1"));
    assert_eq!(r1, all_rows(&tmp.path().join("r2")));
    assert_ne!(r1, plain_rows);
    let (mut a, mut b) = (r1.clone(), plain_rows.clone());
    a.sort();
    b.sort();
    assert_eq!(a, b);
    // No scratch left behind.
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path().join("r1"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".pack"))
        .collect();
    assert!(leftovers.is_empty());

    // max_sequences keeps the first rows after ordering.
    let capped = pack(
        &docs_dir,
        &tok_path,
        &PackParams {
            max_sequences: Some(5),
            ..base
        },
        &tmp.path().join("m"),
    )
    .unwrap();
    assert_eq!(capped.rows, 5);
    assert_eq!(all_rows(&tmp.path().join("m")), expected[..5].to_vec());
}

/// A WordPiece tokenizer.json with the given vocabulary (no normaliser).
fn handmade_tokenizer(path: &Path, vocab: &[(&str, u32)]) {
    let vocab: serde_json::Map<String, serde_json::Value> = vocab
        .iter()
        .map(|(t, i)| (t.to_string(), serde_json::json!(i)))
        .collect();
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null, "decoder": null,
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab}
    });
    std::fs::write(path, serde_json::to_string(&json).unwrap()).unwrap();
}

#[test]
fn pack_chooses_u32_for_large_vocab_and_rejects_overflow() {
    let tmp = tempfile::tempdir().unwrap();
    let docs_dir = tmp.path().join("docs");
    write_documents(
        &docs_dir,
        &["hello world hello".to_string(), "world".to_string()],
    );
    let specials = [
        ("[PAD]", 0),
        ("[UNK]", 1),
        ("[CLS]", 2),
        ("[SEP]", 3),
        ("[MASK]", 4),
    ];

    // Contiguous 70,000 ids: u32.
    let names: Vec<String> = (5..70_000).map(|i| format!("w{i}")).collect();
    let mut vocab: Vec<(&str, u32)> = specials.to_vec();
    vocab.extend(
        names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i as u32 + 5)),
    );
    vocab.push(("hello", 70_000));
    vocab.push(("world", 70_001));
    let big = tmp.path().join("big.json");
    handmade_tokenizer(&big, &vocab);
    let params = PackParams {
        seq_length: 2,
        ordering: RowOrdering::None,
        ..PackParams::default()
    };
    let s = pack(&docs_dir, &big, &params, &tmp.path().join("big")).unwrap();
    assert_eq!(s.dtype, IdType::U32);
    assert_eq!(
        all_rows(&tmp.path().join("big")),
        vec![vec![70_000, 70_001], vec![70_000, 3], vec![70_001, 3]]
    );

    // Small vocabulary with a hole: id 70,000 does not fit u16: an error.
    let mut vocab: Vec<(&str, u32)> = specials.to_vec();
    vocab.push(("hello", 70_000));
    vocab.push(("world", 5));
    let bad = tmp.path().join("bad.json");
    handmade_tokenizer(&bad, &vocab);
    let err = pack(&docs_dir, &bad, &params, &tmp.path().join("bad")).unwrap_err();
    assert!(
        matches!(
            err,
            PackError::IdOverflow {
                document: 0,
                id: 70_000,
                dtype: IdType::U16,
                ..
            }
        ),
        "{err}"
    );
}

/// Runs a Python snippet if `import <modules>` works; `None` (with a SKIP
/// line) otherwise, unless `CRAM_REQUIRE_PYTHON=1` and the modules are
/// `required` (`transformers` is optional even then).
fn python(modules: &str, required: bool, script: &str, args: &[&str]) -> Option<String> {
    let probe = Command::new("python3")
        .arg("-c")
        .arg(format!("import {modules}"))
        .output();
    if !probe.map(|o| o.status.success()).unwrap_or(false) {
        if required && std::env::var("CRAM_REQUIRE_PYTHON").as_deref() == Ok("1") {
            panic!("CRAM_REQUIRE_PYTHON=1 but `python3 -c 'import {modules}'` fails");
        }
        println!("SKIP: python3 with {modules} not available");
        return None;
    }
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap())
}

#[test]
fn python_tokenizers_and_transformers_encode_identically() {
    let docs = corpus(300);
    let (tmp, _, tok_path) = setup(&docs, 200);
    let sentences = [
        "The cat sat on the mat.",
        "Café ÜBER naïve   friends, played loudly!",
        "``quoted'' text with unknown zebra words",
        "",
        "people walked home after school.",
    ];
    let tok = load_tokenizer(&tok_path).unwrap();
    let ours: Vec<Vec<u32>> = sentences
        .iter()
        .map(|s| tok.encode(*s, true).unwrap().get_ids().to_vec())
        .collect();
    let ours_pair = tok
        .encode((sentences[0], sentences[1]), true)
        .unwrap()
        .get_ids()
        .to_vec();
    let input = serde_json::to_string(&sentences).unwrap();
    let path = tok_path.to_str().unwrap();
    let script = r#"
import json, sys
from tokenizers import Tokenizer
t = Tokenizer.from_file(sys.argv[1])
s = json.loads(sys.argv[2])
print(json.dumps({"single": [t.encode(x).ids for x in s], "pair": t.encode(s[0], s[1]).ids}))
"#;
    if let Some(out) = python("tokenizers", true, script, &[path, &input]) {
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let single: Vec<Vec<u32>> = serde_json::from_value(v["single"].clone()).unwrap();
        assert_eq!(single, ours);
        let pair: Vec<u32> = serde_json::from_value(v["pair"].clone()).unwrap();
        assert_eq!(pair, ours_pair);
    }
    let script = r#"
import json, sys
from transformers import PreTrainedTokenizerFast
t = PreTrainedTokenizerFast(tokenizer_file=sys.argv[1])
s = json.loads(sys.argv[2])
print(json.dumps({"single": [t(x)["input_ids"] for x in s], "pair": t(s[0], s[1])["input_ids"]}))
"#;
    if let Some(out) = python("transformers", false, script, &[path, &input]) {
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let single: Vec<Vec<u32>> = serde_json::from_value(v["single"].clone()).unwrap();
        assert_eq!(single, ours);
        let pair: Vec<u32> = serde_json::from_value(v["pair"].clone()).unwrap();
        assert_eq!(pair, ours_pair);
    }
    drop(tmp);
}

#[test]
fn pyarrow_reads_shards_with_documented_schema() {
    let docs = corpus(200);
    let (tmp, docs_dir, tok_path) = setup(&docs, 200);
    let out = tmp.path().join("packed");
    let params = PackParams {
        seq_length: 16,
        ordering: RowOrdering::None,
        ..PackParams::default()
    };
    let summary = pack(&docs_dir, &tok_path, &params, &out).unwrap();
    let ours = all_rows(&out);
    let script = r#"
import json, sys, glob
import pyarrow.parquet as pq
t = pq.read_table(sorted(glob.glob(sys.argv[1] + "/part-*.parquet")))
print(json.dumps({"schema": str(t.schema.field("input_ids").type), "names": t.schema.names,
                  "rows": t.column("input_ids").to_pylist()}))
"#;
    if let Some(text) = python("pyarrow", true, script, &[out.to_str().unwrap()]) {
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["names"], serde_json::json!(["input_ids"]));
        let ty = v["schema"].as_str().unwrap();
        assert!(
            ty.starts_with("fixed_size_list<") && ty.contains("uint16") && ty.ends_with("[16]"),
            "{ty}"
        );
        let rows: Vec<Vec<u32>> = serde_json::from_value(v["rows"].clone()).unwrap();
        assert_eq!(rows.len() as u64, summary.rows);
        assert_eq!(rows, ours);
    }
}

#[test]
fn fast_wordpiece_matches_the_library_on_tricky_text() {
    use cram_tokens::fast::FastWordPiece;
    let docs = corpus(300);
    let (tmp, _, tok_path) = setup(&docs, 200);
    let tok = load_tokenizer(&tok_path).unwrap();
    let fast = FastWordPiece::new(&tok).expect("default WordPiece gets the fast path");
    let long = "x".repeat(150);
    let mut tricky = vec![
        String::new(),
        "   ".to_string(),
        "The CAT sat on the mat.".to_string(),
        "``quoted'' and '''triple''' `single`".to_string(),
        "tabs\tand\nnewlines\r\x0bvt\x0cff\x01ctrl\x7f del".to_string(),
        "snake_case_word and 123 numbers 4.5e10".to_string(),
        "text with [MASK] and [SEP] inside, [mask] lowercase".to_string(),
        format!("a {long} b"),
        "İstanbul ﬁne Kelvin café naïve Über — dash “quotes” 日本語 emoji 🎉".to_string(),
        "mixed—dash and a\u{301}ccent e\u{300}".to_string(),
        "x ".repeat(200),
    ];
    tricky.extend(docs.iter().take(50).cloned());
    for text in &tricky {
        let mut ours = Vec::new();
        fast.encode(&tok, text, &mut ours).unwrap();
        let lib = tok.encode_fast(text.as_str(), false).unwrap();
        assert_eq!(ours, lib.get_ids(), "{text:?}");
    }
    // Any other configuration keeps the library path.
    let out = tmp.path().join("upper");
    std::fs::create_dir_all(&out).unwrap();
    let params = TokenizerParams {
        lowercase: false,
        ..small_params(200)
    };
    run_tokenizer(
        &params,
        &tmp.path().join("docs"),
        0,
        &out,
        &indicatif::ProgressBar::hidden(),
    )
    .unwrap();
    assert!(FastWordPiece::new(&load_tokenizer(&out.join("tokenizer.json")).unwrap()).is_none());
}

#[test]
fn every_model_trains_to_the_same_bytes_at_any_thread_count_and_loads_in_python() {
    let tmp = tempfile::tempdir().unwrap();
    let docs_dir = tmp.path().join("docs");
    write_documents(&docs_dir, &corpus(300));
    let sentences = [
        "The cat sat on the mat.",
        "Café ÜBER naïve   friends, played loudly!",
        "people walked home after school.",
    ];
    for (model, vocab) in [
        (TokenizerModel::Wordpiece, 200),
        (TokenizerModel::Bpe, 400),
        (TokenizerModel::Unigram, 150),
    ] {
        let params = TokenizerParams {
            model,
            ..small_params(vocab)
        };
        let train = |threads: usize| {
            let out = tmp.path().join(format!("{model:?}-{threads}"));
            std::fs::create_dir_all(&out).unwrap();
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| {
                    run_tokenizer(
                        &params,
                        &docs_dir,
                        0,
                        &out,
                        &indicatif::ProgressBar::hidden(),
                    )
                    .unwrap()
                });
            out
        };
        let (one, three) = (train(1), train(3));
        for file in ["tokenizer.json", "summary.json"] {
            assert_eq!(
                std::fs::read(one.join(file)).unwrap(),
                std::fs::read(three.join(file)).unwrap(),
                "{model:?}: {file} differs between 1 and 3 threads"
            );
        }
        // A second run at the same thread count: the same bytes again.
        let again = train(1);
        assert_eq!(
            std::fs::read(one.join("tokenizer.json")).unwrap(),
            std::fs::read(again.join("tokenizer.json")).unwrap(),
            "{model:?}: a rerun differs"
        );
        let tok_path = one.join("tokenizer.json");
        let tok = load_tokenizer(&tok_path).unwrap();
        let ours: Vec<Vec<u32>> = sentences
            .iter()
            .map(|s| tok.encode(*s, true).unwrap().get_ids().to_vec())
            .collect();
        let script = r#"
import json, sys
from tokenizers import Tokenizer
t = Tokenizer.from_file(sys.argv[1])
print(json.dumps([t.encode(x).ids for x in json.loads(sys.argv[2])]))
"#;
        let input = serde_json::to_string(&sentences).unwrap();
        if let Some(out) = python(
            "tokenizers",
            true,
            script,
            &[tok_path.to_str().unwrap(), &input],
        ) {
            let theirs: Vec<Vec<u32>> = serde_json::from_str(&out).unwrap();
            assert_eq!(theirs, ours, "{model:?}: Python encodes otherwise");
        }
    }
}

#[test]
fn pack_holds_out_whole_documents_in_rows_of_their_own() {
    let docs = corpus(600);
    let (tmp, docs_dir, tok_path) = setup(&docs, 200);
    let params = PackParams {
        seq_length: 16,
        ordering: RowOrdering::Randomized,
        heldout_rows: 30,
        ..PackParams::default()
    };
    let a = tmp.path().join("a");
    let s = pack(&docs_dir, &tok_path, &params, &a).unwrap();
    assert!(s.heldout_rows > 0 && s.heldout_rows <= 30, "{s:?}");
    assert!(s.heldout_documents > 0);
    let held = all_rows(&a.join("heldout"));
    assert_eq!(held.len() as u64, s.heldout_rows);
    // Every token is in exactly one place: the training rows, the dropped
    // tail, or the held-out documents.
    assert_eq!(
        s.tokens + s.documents,
        s.rows * 16 + s.dropped_tokens + s.heldout_tokens,
        "{s:?}"
    );
    assert!(s.heldout_tokens >= s.heldout_rows * 16);
    // The training rows do not include the held-out rows' directory.
    assert_eq!(all_rows(&a).len() as u64, s.rows);
    // Seeded: the same choice again.
    let b = tmp.path().join("b");
    pack(&docs_dir, &tok_path, &params, &b).unwrap();
    assert_eq!(
        std::fs::read(a.join("heldout/part-00000.parquet")).unwrap(),
        std::fs::read(b.join("heldout/part-00000.parquet")).unwrap()
    );
}
