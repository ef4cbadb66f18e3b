//! Benchmark: training the 32,768-token WordPiece tokenizer on the mirror's
//! English Wikipedia sample, three ways on the same documents:
//!
//! * cram's deterministic trainer (the `tokenizer` kind),
//! * the `tokenizers` crate's own `WordPieceTrainer` (what cram used before),
//! * Python `tokenizers` (`scripts/bench/tokenizer_train.py`, the reference's
//!   way), when `python3` (or `$CRAM_PYTHON`) has `tokenizers` and `pyarrow`.
//!
//! It prints the training seconds and the ratios, and the quality of each
//! vocabulary on 1000 held-back articles: the UNK rate and tokens per byte.
//! Then it trains ours again at one thread and checks the file is the same.
//! Run: `cargo bench -p cram-tokens --bench tokenizer_train`.

mod common;

use std::path::Path;
use std::time::Instant;

use cram_tokens::{TokenizerParams, run_tokenizer};
use tokenizers::Tokenizer;
use tokenizers::models::wordpiece::{WordPiece, WordPieceTrainerBuilder};
use tokenizers::models::{ModelWrapper, TrainerWrapper};

const HELD_BACK: usize = 1000;

fn main() {
    let Some(files) = common::enwiki_files() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("temp dir");
    let all = tmp.path().join("all");
    let (documents, bytes) = common::write_enwiki_documents(files, &all);
    let mut texts: Vec<String> = cram_data::documents::read_documents(&all)
        .expect("read")
        .flat_map(|b| b.expect("batch"))
        .collect();
    let held: Vec<String> = texts.split_off(texts.len() - HELD_BACK);
    let docs = tmp.path().join("docs");
    let mut w = cram_data::documents::DocumentWriter::create(&docs).expect("docs");
    for t in &texts {
        w.push(t).expect("write");
    }
    w.finish().expect("finish");
    println!(
        "corpus: {documents} non-empty articles, {:.1} MB; training on {}, {HELD_BACK} held back",
        bytes as f64 / 1e6,
        texts.len()
    );
    let params = TokenizerParams {
        eval_documents: 0,
        ..TokenizerParams::default()
    };

    // Ours.
    let out = tmp.path().join("ours");
    std::fs::create_dir_all(&out).expect("out dir");
    let summary =
        run_tokenizer(&params, &docs, 0, &out, &indicatif::ProgressBar::hidden()).expect("train");
    let ours_s = summary.timings.train_seconds;
    let threads = rayon::current_num_threads();
    println!(
        "cram trainer:            {ours_s:6.2} s ({threads} threads; stage {:.2} s)",
        summary.timings.seconds
    );

    // The library's trainer, on the same untrained tokenizer.
    let mut lib: Tokenizer = Tokenizer::from_file(out.join("tokenizer.json")).expect("load");
    lib.with_model(ModelWrapper::WordPiece(
        WordPiece::builder()
            .unk_token("[UNK]".into())
            .build()
            .expect("model"),
    ));
    let mut trainer = TrainerWrapper::WordPieceTrainer(
        WordPieceTrainerBuilder::new()
            .vocab_size(params.vocab_size)
            .special_tokens(
                cram_tokens::tokenizer::SPECIAL_TOKENS
                    .iter()
                    .map(|t| tokenizers::AddedToken::from(*t, true))
                    .collect(),
            )
            .show_progress(false)
            .build(),
    );
    let t0 = Instant::now();
    lib.train(&mut trainer, texts.iter())
        .expect("library training");
    let lib_s = t0.elapsed().as_secs_f64();
    println!(
        "tokenizers crate:        {lib_s:6.2} s; cram/crate speed {:.2}x",
        lib_s / ours_s
    );

    // Python.
    let py_json = tmp.path().join("python-tokenizer.json");
    let python = python_seconds(&docs, params.vocab_size, &py_json);
    match python {
        Some(py_s) => println!(
            "python tokenizers:       {py_s:6.2} s; cram/python speed {:.2}x",
            py_s / ours_s
        ),
        None => {
            println!("python tokenizers:       not run (no python3 with tokenizers and pyarrow)")
        }
    }

    // Quality on the held-back articles.
    let ours = Tokenizer::from_file(out.join("tokenizer.json")).expect("load ours");
    let mut rows = vec![("cram trainer", quality(&ours, &held))];
    rows.push(("tokenizers crate", quality(&lib, &held)));
    if python.is_some() {
        let py = Tokenizer::from_file(&py_json).expect("load python's");
        rows.push(("python tokenizers", quality(&py, &held)));
    }
    for (name, (unk, tpb)) in &rows {
        println!("held-back quality, {name:<18} UNK rate {unk:.5}, tokens/byte {tpb:.4}");
    }
    let overlap = vocab_overlap(&ours, &lib);
    println!(
        "vocabulary overlap with the crate's trainer: {:.2} %",
        100.0 * overlap
    );

    // The same bytes at one thread.
    let one = tmp.path().join("one-thread");
    std::fs::create_dir_all(&one).expect("dir");
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("pool")
        .install(|| {
            run_tokenizer(&params, &docs, 0, &one, &indicatif::ProgressBar::hidden())
                .expect("train at one thread")
        });
    let same = std::fs::read(one.join("tokenizer.json")).expect("read")
        == std::fs::read(out.join("tokenizer.json")).expect("read");
    println!("tokenizer.json at 1 and {threads} threads identical: {same}");
    assert!(same, "training depends on the thread count");
    println!("peak RSS {:.0} MiB", common::peak_rss_mib());
}

/// (UNK rate, tokens per byte) of `tokenizer` on `texts`.
fn quality(tokenizer: &Tokenizer, texts: &[String]) -> (f64, f64) {
    let unk = tokenizer.token_to_id("[UNK]").expect("[UNK]");
    let (mut tokens, mut unks, mut bytes) = (0u64, 0u64, 0u64);
    for t in texts {
        let ids = tokenizer.encode_fast(t.as_str(), false).expect("encode");
        tokens += ids.get_ids().len() as u64;
        unks += ids.get_ids().iter().filter(|&&i| i == unk).count() as u64;
        bytes += t.len() as u64;
    }
    (unks as f64 / tokens as f64, tokens as f64 / bytes as f64)
}

/// Jaccard overlap of two vocabularies.
fn vocab_overlap(a: &Tokenizer, b: &Tokenizer) -> f64 {
    let va: std::collections::HashSet<String> = a.get_vocab(true).into_keys().collect();
    let vb: std::collections::HashSet<String> = b.get_vocab(true).into_keys().collect();
    va.intersection(&vb).count() as f64 / va.union(&vb).count() as f64
}

/// Python `tokenizers`' training seconds on `docs`, saving its tokenizer to
/// `out`; `None` when Python lacks the packages.
fn python_seconds(docs: &Path, vocab_size: usize, out: &Path) -> Option<f64> {
    let python = std::env::var("CRAM_PYTHON").unwrap_or_else(|_| "python3".into());
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/bench/tokenizer_train.py");
    let o = std::process::Command::new(python)
        .arg(script)
        .arg(docs)
        .arg(vocab_size.to_string())
        .arg(out)
        .output()
        .ok()?;
    if !o.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&o.stderr));
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
    v["seconds"].as_f64()
}
