//! The `pretrain` stage end to end on small packed corpora written in temp dirs.

mod common;

use std::path::Path;

use cram_pretrain::{
    PretrainError, PretrainParams, PretrainSummary, RunControl, StoppedBy, run_pretrain,
    run_pretrain_with,
};
use indicatif::ProgressBar;

const VOCAB: usize = 64;
const SEQ: usize = 32;

/// A small crammed-bert (2 layers, H 64) for CPU tests.
fn small_params() -> PretrainParams {
    let mut p = PretrainParams {
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
    p.model.max_seq_length = Some(SEQ);
    p
}

fn corpus(dir: &Path, rows: usize) {
    let tokens = common::synthetic_rows(rows, SEQ, VOCAB, 1);
    common::write_sequences(dir, &tokens, SEQ, rows / 3 + 1, VOCAB);
}

fn run(params: &PretrainParams, data: &Path, work: &Path, out: &Path) -> PretrainSummary {
    std::fs::create_dir_all(out).unwrap();
    run_pretrain(params, data, 0, work, out, &ProgressBar::hidden()).unwrap()
}

#[test]
fn tiny_model_learns_the_synthetic_language() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("seqs");
    corpus(&data, 6000);
    let mut params = small_params();
    params.budget_steps = Some(300);
    params.lr = 2e-3;
    let out = tmp.path().join("out");
    let s = run(&params, &data, &tmp.path().join("work"), &out);

    assert_eq!(s.steps, 300);
    assert_eq!(s.stopped_by, StoppedBy::Steps);
    assert_eq!(s.tokens, 300 * 16 * SEQ as u64);
    let ln_v = (VOCAB as f64).ln();
    let initial = s.initial_loss.unwrap();
    let last = s.final_loss.unwrap();
    assert!((initial - ln_v).abs() < 0.5, "starts near ln V: {initial}");
    assert!(
        last < 0.6 * ln_v,
        "final loss {last} not below 0.6 ln V = {}",
        0.6 * ln_v
    );

    // The entry's files.
    for f in [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "metrics.jsonl",
        "summary.json",
    ] {
        assert!(out.join(f).is_file(), "{f} written");
    }
    let config = cram_model::read_config_json(&out.join("config.json")).unwrap();
    assert_eq!(config.vocab_size, VOCAB, "vocab size from the tokenizer");
    assert_eq!(
        config.hidden_dropout, 0.1,
        "config keeps the architecture's dropout"
    );
    let (reloaded, _) = cram_model::load_mlm(
        &out.join("model.safetensors"),
        &burn::tensor::Device::flex(),
    )
    .unwrap();
    assert_eq!(cram_model::num_params(&reloaded), s.parameters);

    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let steps: Vec<u64> = lines.iter().map(|l| l["step"].as_u64().unwrap()).collect();
    assert_eq!(steps[0], 1);
    assert_eq!(steps[1], 10);
    assert_eq!(*steps.last().unwrap(), 300);
    let mut keys: Vec<&str> = lines[0]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "batch_size",
            "elapsed_seconds",
            "loss",
            "lr",
            "step",
            "tokens",
            "tokens_per_second"
        ]
    );
    // budget-triangle2 over 300 steps: 25 % of the peak at step 1, the peak at 75 %.
    assert!((lines[0]["lr"].as_f64().unwrap() - 0.25 * 2e-3).abs() < 1e-12);

    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    for k in [
        "arch",
        "parameters",
        "budget_seconds",
        "budget_steps",
        "wall_seconds",
        "steps",
        "micro_steps",
        "tokens",
        "sequences",
        "final_loss",
        "initial_loss",
        "device",
        "backend",
        "peak_memory_bytes",
        "stopped_by",
        "dropout",
        "resumed_from_step",
        "epochs_fraction",
    ] {
        assert!(summary.get(k).is_some(), "summary has {k}");
    }
    assert_eq!(summary["backend"], "flex");
    assert_eq!(summary["stopped_by"], "steps");
    assert!(summary["budget_seconds"].is_null());
    assert!(summary["resumed_from_step"].is_null());
    assert!((s.epochs_fraction - 4800.0 / 6000.0).abs() < 1e-9);
}

#[test]
fn a_killed_run_resumes_and_ends_like_an_uninterrupted_one() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("seqs");
    corpus(&data, 1200);
    let mut params = small_params();
    params.micro_batch = 4;
    params.batch_size = 16;
    params.ramp_fraction = 0.6; // exercise accumulation and the ramp
    params.budget_steps = Some(12);
    params.log_every = 1;

    let whole = run(
        &params,
        &data,
        &tmp.path().join("work-a"),
        &tmp.path().join("out-a"),
    );

    let work = tmp.path().join("work-b");
    let out = tmp.path().join("out-b");
    std::fs::create_dir_all(&out).unwrap();
    let control = RunControl {
        interrupt_after_steps: Some(5),
        ..Default::default()
    };
    let err = run_pretrain_with(
        &params,
        &data,
        0,
        &work,
        &out,
        &ProgressBar::hidden(),
        &control,
    )
    .unwrap_err();
    assert!(
        matches!(err, PretrainError::Interrupted { step: 5, .. }),
        "{err}"
    );
    assert!(work.join("checkpoint").join("state.json").is_file());
    assert!(
        !out.join("summary.json").exists(),
        "no finished entry after a kill"
    );

    let out2 = tmp.path().join("out-b2");
    let resumed = run(&params, &data, &work, &out2);
    assert_eq!(resumed.resumed_from_step, Some(5));
    assert_eq!(resumed.steps, 12);
    assert_eq!(resumed.steps, whole.steps);
    assert_eq!(resumed.micro_steps, whole.micro_steps);
    assert_eq!(resumed.tokens, whole.tokens);
    let (a, b) = (whole.final_loss.unwrap(), resumed.final_loss.unwrap());
    assert!((a - b).abs() < 1e-4, "same final loss: {a} vs {b}");
    // The ramp grew the batch: 12 steps took more than 12 micro-batches.
    assert!(whole.micro_steps > 12);

    let steps = |dir: &Path| -> Vec<u64> {
        std::fs::read_to_string(dir.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    };
    assert_eq!(
        steps(&out2),
        (1..=12).collect::<Vec<_>>(),
        "metrics continue across the resume"
    );
    assert_eq!(steps(&tmp.path().join("out-a")), steps(&out2));
    assert!(
        !work.join("checkpoint").exists(),
        "checkpoint removed after the finished run"
    );
}

#[test]
fn stops_at_the_end_of_the_data_and_on_the_wall_clock() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("seqs");
    corpus(&data, 100);
    let mut params = small_params();
    params.budget_steps = Some(1000);
    let s = run(
        &params,
        &data,
        &tmp.path().join("w1"),
        &tmp.path().join("o1"),
    );
    assert_eq!(s.stopped_by, StoppedBy::Data);
    assert_eq!(s.steps, 100 / 16);
    assert!(s.epochs_fraction <= 1.0);

    let mut params = small_params();
    params.budget = "1s".into();
    let s = run(
        &params,
        &data,
        &tmp.path().join("w2"),
        &tmp.path().join("o2"),
    );
    assert!(matches!(s.stopped_by, StoppedBy::Budget | StoppedBy::Data));
    assert_eq!(s.budget_seconds, Some(1.0));
    if s.stopped_by == StoppedBy::Budget {
        // Stops when the next micro-batch would end past the budget: just short of it at most.
        assert!(
            s.wall_seconds > 0.5 && s.wall_seconds < 1.5,
            "{}",
            s.wall_seconds
        );
    }
}

#[test]
fn a_wall_clock_budget_ends_inside_a_long_accumulation() {
    // One step accumulates 2048 micro-batches, far more than fit into the budget: the stage
    // stops starting micro-batches when the next one would end past the budget and takes the
    // last step with the ones it has, instead of overrunning by a whole step.
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("seqs");
    corpus(&data, 6000);
    let mut params = small_params();
    params.micro_batch = 2;
    params.batch_size = 4096;
    params.budget = "700ms".into();
    let s = run(
        &params,
        &data,
        &tmp.path().join("work"),
        &tmp.path().join("out"),
    );
    assert_eq!(s.stopped_by, StoppedBy::Budget);
    assert_eq!(s.steps, 1, "the partial step is taken");
    let sequences = s.tokens / SEQ as u64;
    assert!(
        sequences > 0 && sequences < 4096,
        "{sequences} sequences in the cut-short step"
    );
    assert!(
        s.wall_seconds < 0.7 + 0.5,
        "{} s against a 0.7 s budget",
        s.wall_seconds
    );
    assert!(s.final_loss.unwrap().is_finite());
}

#[test]
fn bad_inputs_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("seqs");
    corpus(&data, 50);
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let bar = ProgressBar::hidden();

    let mut params = small_params();
    params.model.vocab_size = Some(32);
    let err = run_pretrain(&params, &data, 0, &tmp.path().join("w"), &out, &bar).unwrap_err();
    assert!(err.to_string().contains("64 tokens"), "{err}");

    let mut params = small_params();
    params.budget = "a while".into();
    assert!(params.resolve().is_err());

    let mut params = small_params();
    params.model.max_seq_length = Some(16);
    let err = run_pretrain(&params, &data, 0, &tmp.path().join("w"), &out, &bar).unwrap_err();
    assert!(err.to_string().contains("max_seq_length"), "{err}");

    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    common::write_tokenizer(&empty.join("tokenizer.json"), VOCAB);
    let err = run_pretrain(
        &small_params(),
        &empty,
        0,
        &tmp.path().join("w"),
        &out,
        &bar,
    )
    .unwrap_err();
    assert!(err.to_string().contains("part-"), "{err}");
}

#[test]
fn runs_with_dropout_on_are_reproducible() {
    // Dropout masks come from the backend's random stream, reseeded every step: the same seed
    // gives the same model, byte for byte (checkpoint metadata included).
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("seqs");
    corpus(&data, 400);
    let mut params = small_params();
    params.dropout = true;
    params.budget_steps = Some(6);
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    let sa = run(&params, &data, &tmp.path().join("wa"), &a);
    let sb = run(&params, &data, &tmp.path().join("wb"), &b);
    assert!(sa.dropout);
    assert_eq!(sa.final_loss, sb.final_loss);
    let ma = std::fs::read(a.join("model.safetensors")).unwrap();
    let mb = std::fs::read(b.join("model.safetensors")).unwrap();
    assert!(ma == mb, "same seed, same bytes");
    // Dropout is really on: a run without it ends elsewhere.
    params.dropout = false;
    let sc = run(
        &params,
        &data,
        &tmp.path().join("wc"),
        &tmp.path().join("c"),
    );
    assert_ne!(sa.final_loss, sc.final_loss);
}
