//! Fixtures shared by the integration tests: a small packed-sequences directory written with
//! arrow/parquet, and a minimal WordPiece `tokenizer.json`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, FixedSizeListArray, UInt16Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;

/// A small crammed-bert (2 layers, H 64) for CPU tests on rows of `seq` tokens: micro-batch
/// and batch 16, no ramp, no periodic checkpoints, a metrics line every 10 steps.
pub fn small_params(seq: usize) -> cram_pretrain::PretrainParams {
    let mut p = cram_pretrain::PretrainParams {
        arch: "tiny".into(),
        micro_batch: 16,
        batch_size: 16,
        ramp_fraction: 0.0,
        device: "cpu".into(),
        checkpoint_every: 0.0,
        log_every: 10,
        ..Default::default()
    };
    p.model.hidden_size = Some(64);
    p.model.intermed_size = Some(128);
    p.model.max_seq_length = Some(seq);
    p
}

/// Special tokens at the ids the tokens stage gives them.
pub const SPECIALS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// `../shared/vectors/<name>` relative to the workspace root.
pub fn vector_path(name: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/vectors"
    ))
    .join(name)
}

/// Writes a WordPiece-shaped `tokenizer.json` with `vocab` tokens (5 specials, then `t5`, ...).
pub fn write_tokenizer(path: &Path, vocab: usize) {
    let mut map = serde_json::Map::new();
    for i in 0..vocab {
        let tok = SPECIALS
            .get(i)
            .map_or_else(|| format!("t{i}"), |t| t.to_string());
        map.insert(tok, i.into());
    }
    let added: Vec<serde_json::Value> = SPECIALS
        .iter()
        .enumerate()
        .map(|(i, t)| serde_json::json!({"id": i, "content": t, "special": true}))
        .collect();
    let json = serde_json::json!({
        "version": "1.0",
        "added_tokens": added,
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "vocab": map},
    });
    std::fs::write(path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
}

/// A repetitive synthetic language: each row is made of runs `a, a+1, a+2, ...` (wrapping
/// inside the non-special ids) separated by `[SEP]`, so a masked token is predictable from its
/// neighbours.
pub fn synthetic_rows(rows: usize, seq: usize, vocab: usize, seed: u64) -> Vec<u16> {
    let first = SPECIALS.len() as u64;
    let span = vocab as u64 - first;
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        state >> 33
    };
    let mut out = Vec::with_capacity(rows * seq);
    let mut run_left = 0u64;
    let mut cur = 0u64;
    while out.len() < rows * seq {
        if run_left == 0 {
            if !out.is_empty() {
                out.push(3u16);
                if out.len() == rows * seq {
                    break;
                }
            }
            cur = next() % span;
            run_left = 6 + next() % 10;
        }
        out.push((first + cur) as u16);
        cur = (cur + 1) % span;
        run_left -= 1;
    }
    out
}

/// Writes `tokens` (whole rows of `seq`) as `part-00000.parquet`, ... with `rows_per_shard`
/// rows each, plus `tokenizer.json` and a `summary.json`, into `dir`.
pub fn write_sequences(
    dir: &Path,
    tokens: &[u16],
    seq: usize,
    rows_per_shard: usize,
    vocab: usize,
) {
    std::fs::create_dir_all(dir).unwrap();
    let rows = tokens.len() / seq;
    let item = Arc::new(Field::new("item", DataType::UInt16, false));
    let schema = Arc::new(Schema::new(vec![Field::new(
        "input_ids",
        DataType::FixedSizeList(item.clone(), seq as i32),
        false,
    )]));
    for (i, chunk) in tokens.chunks(rows_per_shard * seq).enumerate() {
        let values = Arc::new(UInt16Array::from(chunk.to_vec())) as ArrayRef;
        let list = FixedSizeListArray::new(item.clone(), seq as i32, values, None);
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(list) as ArrayRef]).unwrap();
        let file = std::fs::File::create(dir.join(format!("part-{i:05}.parquet"))).unwrap();
        let mut w = ArrowWriter::try_new(file, schema.clone(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }
    write_tokenizer(&dir.join("tokenizer.json"), vocab);
    let summary = serde_json::json!({"rows": rows, "seq_length": seq, "vocab_size": vocab});
    std::fs::write(dir.join("summary.json"), summary.to_string()).unwrap();
}

/// Runs `params` on the packed rows in `data` (seed 0) with `dir/work` and `dir/out`; returns
/// the summary and the loss of every line of `metrics.jsonl`.
pub fn train_with_losses(
    params: &cram_pretrain::PretrainParams,
    data: &Path,
    dir: &Path,
) -> (cram_pretrain::PretrainSummary, Vec<f64>) {
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let summary = cram_pretrain::run_pretrain(
        params,
        data,
        0,
        &dir.join("work"),
        &out,
        &indicatif::ProgressBar::hidden(),
    )
    .unwrap();
    let losses = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect();
    (summary, losses)
}
