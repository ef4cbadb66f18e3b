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

fn small_params() -> PretrainParams {
    common::small_params(SEQ)
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
            "epochs",
            "grad_norm",
            "loss",
            "lr",
            "step",
            "tokens"
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
        "steps",
        "micro_steps",
        "tokens",
        "sequences",
        "final_loss",
        "initial_loss",
        "device",
        "backend",
        "stopped_by",
        "dropout",
        "epochs",
        "rows",
        "max_epochs",
        "final_lr",
        "peak_lr",
    ] {
        assert!(summary.get(k).is_some(), "summary has {k}");
    }
    assert_eq!(summary["backend"], "flex");
    assert_eq!(summary["stopped_by"], "steps");
    assert!(summary["budget_seconds"].is_null());
    assert!(
        summary.get("resumed_from_step").is_none(),
        "how the run went is not an output"
    );
    // Timings are not outputs: they come back with the summary (for the
    // engine's manifest and run directory), never in the files.
    for k in ["wall_seconds", "peak_memory_bytes", "timings"] {
        assert!(summary.get(k).is_none(), "summary.json has no {k}");
    }
    assert!(s.timings.wall_seconds > 0.0);
    let logged: Vec<u64> = s.timings.timeline.iter().map(|t| t.step).collect();
    assert_eq!(logged, steps, "one timeline point per metrics line");
    assert!(s.timings.timeline.iter().all(|t| t.elapsed_seconds > 0.0));
    assert!((s.epochs - 4800.0 / 6000.0).abs() < 1e-9);
    assert_eq!(s.rows, 6000);
}

#[test]
fn a_killed_run_resumes_and_ends_like_an_uninterrupted_one() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("seqs");
    // 30 rows in 3 shards: the 12 ramped steps read 144 sequences, 4.8 passes, and the
    // interruption after step 5 (36 sequences) falls in the second pass, which is reshuffled.
    corpus(&data, 30);
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
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(work.join("checkpoint").join("state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["position"], 36, "{state}");
    assert_eq!(36 / 30, 1, "the checkpoint is inside the second pass");
    assert!(
        !out.join("summary.json").exists(),
        "no finished entry after a kill"
    );

    let out2 = tmp.path().join("out-b2");
    let resumed = run(&params, &data, &work, &out2);
    assert_eq!(resumed.timings.resumed_from_step, Some(5));
    assert_eq!(whole.timings.resumed_from_step, None);
    assert_eq!(resumed.steps, 12);
    assert_eq!(resumed.steps, whole.steps);
    assert_eq!(resumed.micro_steps, whole.micro_steps);
    assert_eq!(resumed.tokens, whole.tokens);
    assert_eq!(whole.final_loss, resumed.final_loss, "same final loss");
    assert!((whole.epochs - 4.8).abs() < 1e-9, "{}", whole.epochs);
    let bytes = |dir: &str, file: &str| std::fs::read(tmp.path().join(dir).join(file)).unwrap();
    for file in ["model.safetensors", "summary.json", "metrics.jsonl"] {
        assert!(
            bytes("out-a", file) == bytes("out-b2", file),
            "the resumed run writes the uninterrupted run's {file}, byte for byte"
        );
    }
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
fn max_epochs_stops_early_and_the_wall_clock_repeats_the_data() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("seqs");
    corpus(&data, 100);
    let mut params = small_params();
    params.budget_steps = Some(1000);
    params.max_epochs = Some(1.0);
    let s = run(
        &params,
        &data,
        &tmp.path().join("w1"),
        &tmp.path().join("o1"),
    );
    assert_eq!(s.stopped_by, StoppedBy::Data);
    assert_eq!(s.steps, 100 / 16);
    assert_eq!(s.max_epochs, Some(1.0));
    assert!((s.epochs - 0.96).abs() < 1e-9, "{}", s.epochs);

    // 2.5 passes are 250 rows: 15 whole micro-batches, across two pass boundaries.
    params.max_epochs = Some(2.5);
    let s = run(
        &params,
        &data,
        &tmp.path().join("w2"),
        &tmp.path().join("o2"),
    );
    assert_eq!((s.stopped_by, s.steps), (StoppedBy::Data, 15));
    // The schedule was cut short: the last step's rate is the triangle's at step 14 of 1000,
    // near its start, not its end (4/1000 of the peak).
    let lr_at = |p: f64| cram_pretrain::LrSchedule::BudgetTriangle2.lr(s.peak_lr, p);
    assert_eq!(s.final_lr, Some(lr_at(14.0 / 1000.0)));
    assert!(s.final_lr.unwrap() > 50.0 * lr_at(999.0 / 1000.0));

    // A wall-clock budget over a corpus that one second of training reads several times
    // (20 rows: two micro-batches already start a second pass).
    let small = tmp.path().join("small");
    corpus(&small, 20);
    let mut params = small_params();
    params.budget = "1s".into();
    let s = run(
        &params,
        &small,
        &tmp.path().join("w3"),
        &tmp.path().join("o3"),
    );
    assert_eq!(s.stopped_by, StoppedBy::Budget);
    assert_eq!(s.budget_seconds, Some(1.0));
    assert!(s.epochs > 1.0, "{} passes in a second", s.epochs);
    // Stops when the next micro-batch would end past the budget: just short of it at most.
    assert!(
        s.timings.wall_seconds > 0.5 && s.timings.wall_seconds < 1.5,
        "{}",
        s.timings.wall_seconds
    );
}

#[test]
fn a_corpus_smaller_than_a_micro_batch_stops_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("seqs");
    corpus(&data, 10);
    let mut params = small_params();
    params.budget_steps = Some(5);
    let s = run(&params, &data, &tmp.path().join("w"), &tmp.path().join("o"));
    assert_eq!((s.stopped_by, s.steps, s.rows), (StoppedBy::Data, 0, 10));
}

#[test]
fn micro_batches_without_a_masked_token_contribute_nothing_and_the_run_goes_on() {
    // At this rate almost no micro-batch of 4 x 32 tokens has a masked position: those have no
    // loss to differentiate (burn refused the backward pass of the untracked zero, and the
    // stage died), so they add no gradient; a step with none at all leaves the weights alone.
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("seqs");
    corpus(&data, 200);
    let mut params = small_params();
    params.micro_batch = 4;
    params.batch_size = 8;
    params.mlm_rate = 0.0001;
    params.budget_steps = Some(4);
    params.log_every = 1;
    let s = run(
        &params,
        &data,
        &tmp.path().join("work"),
        &tmp.path().join("out"),
    );
    assert_eq!((s.stopped_by, s.steps), (StoppedBy::Steps, 4));
    assert!(s.final_loss.is_some_and(f64::is_finite), "{s:?}");
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
        s.timings.wall_seconds < 0.7 + 0.5,
        "{} s against a 0.7 s budget",
        s.timings.wall_seconds
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

#[test]
fn a_token_budget_stops_at_the_first_step_that_reaches_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("seqs");
    corpus(&data, 600);
    let mut params = small_params();
    params.budget_steps = None;
    params.budget = "1s".into();
    // 20 steps of 16 sequences of 32 tokens and a bit: the 21st step reaches it.
    let budget = 20 * 16 * SEQ as u64 + 7;
    params.budget_tokens = Some(budget);
    let s = run(&params, &data, &tmp.path().join("w"), &tmp.path().join("o"));
    assert_eq!(s.stopped_by, StoppedBy::Tokens);
    assert_eq!(s.budget_tokens, Some(budget));
    assert!(
        s.budget_seconds.is_none(),
        "the token budget replaces the clock"
    );
    assert!(s.tokens >= budget, "{} of {budget}", s.tokens);
    let per_step = s.tokens / s.steps;
    assert!(
        s.tokens < budget + per_step,
        "stopped at the first step past it"
    );
    // The schedule ran on tokens: the last step's learning rate is the budget-triangle's
    // value near the end, far below the peak.
    assert!(s.final_lr.unwrap() < 0.2 * s.peak_lr, "{:?}", s.final_lr);

    // Same data, same run: a token budget is as deterministic as a step budget.
    let again = run(
        &params,
        &data,
        &tmp.path().join("w2"),
        &tmp.path().join("o2"),
    );
    assert_eq!(
        std::fs::read(tmp.path().join("o/model.safetensors")).unwrap(),
        std::fs::read(tmp.path().join("o2/model.safetensors")).unwrap()
    );
    assert_eq!(again.tokens, s.tokens);

    params.budget_steps = Some(5);
    let err = cram_pretrain::PretrainParams::resolve(&params).unwrap_err();
    assert!(err.to_string().contains("budget_steps"), "{err}");
}

#[test]
fn the_heldout_loss_is_measured_on_fixed_masks_and_falls() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("seqs");
    corpus(&data, 1200);
    // Held-out rows from another draw of the same synthetic language.
    let held = common::synthetic_rows(64, SEQ, VOCAB, 99);
    common::write_sequences(&data.join("heldout"), &held, SEQ, 64, VOCAB);
    let mut params = small_params();
    params.budget_steps = Some(60);
    params.lr = 2e-3;
    params.heldout_every = 20;
    let s = run(&params, &data, &tmp.path().join("w"), &tmp.path().join("o"));
    assert_eq!(s.heldout_rows, 64);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(tmp.path().join("o/metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let evaluated: Vec<(u64, f64)> = lines
        .iter()
        .filter_map(|l| Some((l["step"].as_u64()?, l["heldout_loss"].as_f64()?)))
        .collect();
    let steps: Vec<u64> = evaluated.iter().map(|e| e.0).collect();
    assert_eq!(steps, [20, 40, 60], "{lines:?}");
    assert_eq!(s.heldout_loss, Some(evaluated[2].1));
    assert!(
        evaluated[2].1 < evaluated[0].1,
        "the model learned: {evaluated:?}"
    );
    // Fixed masks and no dropout: the same run measures the same numbers.
    let again = run(
        &params,
        &data,
        &tmp.path().join("w2"),
        &tmp.path().join("o2"),
    );
    assert_eq!(again.heldout_loss, s.heldout_loss);
    // Without held-out rows there is no held-out loss.
    let bare = tmp.path().join("bare");
    corpus(&bare, 1200);
    let b = run(
        &params,
        &bare,
        &tmp.path().join("w3"),
        &tmp.path().join("o3"),
    );
    assert_eq!((b.heldout_loss, b.heldout_rows), (None, 0));
}
