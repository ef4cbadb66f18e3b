//! Training repeats its data until the budget is spent: the stream of rows over several passes,
//! each in its own seeded order, and a step budget three passes long.

mod common;

use std::path::Path;

use cram_pretrain::data::{Reader, Sequences, StreamSpan};
use cram_pretrain::passes::pass_order;
use cram_pretrain::{
    IGNORE_INDEX, LrSchedule, MlmCollator, PretrainParams, StoppedBy, run_pretrain,
};
use indicatif::ProgressBar;

const VOCAB: usize = 64;
const SEQ: usize = 32;

/// `rows` synthetic rows in three shards (so several row groups); returns the rows' tokens.
fn corpus(dir: &Path, rows: usize) -> Vec<Vec<u16>> {
    let tokens = common::synthetic_rows(rows, SEQ, VOCAB, 1);
    common::write_sequences(dir, &tokens, SEQ, rows / 3 + 1, VOCAB);
    tokens.chunks(SEQ).map(<[u16]>::to_vec).collect()
}

/// The original tokens of a masked row: the labels where positions were selected.
fn unmasked(input_ids: &[i64], labels: &[i64]) -> Vec<u16> {
    input_ids
        .iter()
        .zip(labels)
        .map(|(&i, &l)| {
            if l == IGNORE_INDEX {
                i as u16
            } else {
                l as u16
            }
        })
        .collect()
}

#[test]
fn the_stream_reads_pass_after_pass_each_in_its_own_order() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("seqs");
    let rows = corpus(&dir, 100);
    assert!(
        rows.windows(2).all(|w| w[0] != w[1]),
        "rows are distinguishable"
    );
    let seqs = Sequences::open(&dir).unwrap();
    assert!(seqs.blocks().len() >= 3, "several row groups");
    let seed = 3;
    let collator = MlmCollator {
        rate: 0.25,
        mask_id: 4,
        random_vocab: VOCAB as u32,
        seed: 11,
    };
    let orders: Vec<Vec<u64>> = (0..3)
        .map(|k| pass_order(&seqs.blocks(), SEQ, seed, k))
        .collect();
    assert_ne!(orders[0], orders[1]);
    assert_ne!(orders[1], orders[2]);
    assert_ne!(orders[0], orders[2]);

    // 18 micro-batches of 16 are 288 rows: the stream crosses two pass boundaries mid-batch.
    let span = StreamSpan {
        order_seed: seed,
        start: 0,
        end: Some(300),
    };
    let reader = Reader::spawn(&seqs, span, 16, collator, 4).unwrap();
    let mut position = 0u64;
    let mut masks_of_row0 = Vec::new();
    while let Some(mb) = reader.next_batch() {
        let mb = mb.unwrap();
        assert_eq!(mb.position, position);
        let b = &mb.batch;
        for r in 0..b.rows {
            let p = position + r as u64;
            let (pass, index) = ((p / 100) as usize, (p % 100) as usize);
            let row = orders[pass][index] as usize;
            let span = r * SEQ..(r + 1) * SEQ;
            assert_eq!(
                unmasked(&b.input_ids[span.clone()], &b.labels[span.clone()]),
                rows[row],
                "stream position {p} is row {row} of pass {pass}"
            );
            if row == 0 {
                masks_of_row0.push(b.labels[span].to_vec());
            }
        }
        position += b.rows as u64;
    }
    assert_eq!(
        position, 288,
        "whole micro-batches before the end of the span"
    );
    assert!(masks_of_row0.len() >= 2, "row 0 once per pass");
    assert_ne!(
        masks_of_row0[0], masks_of_row0[1],
        "a row read again gets fresh masks"
    );

    // Started in the middle of the second pass, the stream continues where it was.
    let span = StreamSpan {
        order_seed: seed,
        start: 137,
        end: None,
    };
    let reader = Reader::spawn(&seqs, span, 16, collator, 4).unwrap();
    let mb = reader.next_batch().unwrap().unwrap();
    assert_eq!(mb.position, 137);
    let first = unmasked(&mb.batch.input_ids[..SEQ], &mb.batch.labels[..SEQ]);
    assert_eq!(first, rows[orders[1][37] as usize]);
}

#[test]
fn a_step_budget_three_passes_long_trains_to_its_end() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("seqs");
    corpus(&data, 96);
    let params = PretrainParams {
        log_every: 1,
        lr: 1e-3,
        budget_steps: Some(18), // 6 steps read the 96 rows once
        ..common::small_params(SEQ)
    };
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let s = run_pretrain(
        &params,
        &data,
        0,
        &tmp.path().join("work"),
        &out,
        &ProgressBar::hidden(),
    )
    .unwrap();
    assert_eq!(s.stopped_by, StoppedBy::Steps);
    assert_eq!(s.steps, 18);
    assert_eq!(s.sequences, 3 * 96);
    assert!((s.epochs - 3.0).abs() < 1e-12, "{}", s.epochs);

    let lines: Vec<serde_json::Value> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 18);
    let epochs: Vec<f64> = lines
        .iter()
        .map(|l| l["epochs"].as_f64().unwrap())
        .collect();
    assert!((epochs[5] - 1.0).abs() < 1e-12 && (epochs[11] - 2.0).abs() < 1e-12);
    // The schedule ran to its end: the last step has budget-triangle2's last value, 4/18 of the
    // peak, and the summary says so.
    let last = lines[17]["lr"].as_f64().unwrap();
    let end = LrSchedule::BudgetTriangle2.lr(1e-3, 17.0 / 18.0);
    assert!((last - end).abs() < 1e-15, "{last} vs {end}");
    assert!((end - 4.0 / 18.0 * 1e-3).abs() < 1e-12);
    assert_eq!(s.final_lr, Some(last));
    assert_eq!(s.peak_lr, 1e-3);
}
