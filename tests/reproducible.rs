//! Reproducibility, end to end: a pipeline with every built-in kind gives the
//! same lock (keys and output hashes) on two fresh caches at 1 and 2 threads;
//! a forced rerun of every stage keeps every output hash; `--locked` holds a
//! run to the lock and names the stage and both hashes where it differs;
//! `cram reproduce` reruns a cached stage and says whether the bytes agree.
//!
//! The GLUE data come from the real RTE files of `../shared/hf-mirror`,
//! served by `cram serve-hub` on loopback.

mod common;

use common::{Hub, Project, differing, pins, python, read_json, text};

/// Every built-in kind, each at least once (the test checks this against
/// `cram kinds`). Three tokenizers: WordPiece, BPE and Unigram.
const PIPELINE: &str = r#"
name = "every-kind"
seed = 3

[stages.corpus]
kind = "synthetic"
documents = 1200

[stages.clean]
kind = "filter"
inputs = ["corpus"]
remove_trash = true
trash_cutoff = 0.3
trash_vocab_size = 512
min_chars = 40

[stages.dedup]
kind = "dedup"
inputs = ["clean"]
min_length = 50

[stages.tokenizer]
kind = "tokenizer"
inputs = ["dedup"]
vocab_size = 600

[stages.bpe]
kind = "tokenizer"
inputs = ["dedup"]
model = "bpe"
vocab_size = 600

[stages.unigram]
kind = "tokenizer"
inputs = ["dedup"]
model = "unigram"
vocab_size = 400

[stages.tokenize]
kind = "pack"
inputs = ["dedup", "tokenizer"]
seq_length = 32
ordering = "randomized"

[stages.pretrain]
kind = "pretrain"
inputs = ["tokenize"]
arch = "tiny"
budget_steps = 12
micro_batch = 16
batch_size = 32
device = "cpu"
log_every = 4

[stages.rte]
kind = "download"
source = "hf://datasets/nyu-mll/glue/rte/*.parquet"
mode = "files"

[stages.glue]
kind = "glue"
inputs = ["pretrain", "rte"]
tasks = ["rte"]
epochs = 1
batch_size = 16
max_train_examples = 96
max_dev_examples = 48
device = "cpu"

[stages.synthetic_glue]
kind = "synthetic-glue"
train_size = 64
dev_size = 32
tasks = ["sst2"]

[stages.report]
kind = "report"
inputs = ["pretrain", "glue"]

[stages.after]
kind = "command"
inputs = ["tokenizer"]
run = "wc -c < {inputs.tokenizer}/tokenizer.json > {output}/size.txt"
"#;

#[test]
fn every_kind_reproduces_across_caches_threads_forced_reruns_and_locks() {
    let hub = Hub::start();

    // The pipeline covers every built-in kind.
    let a = Project::new(&hub, PIPELINE);
    let kinds = a.run_ok(&["kinds"], 2);
    for line in String::from_utf8_lossy(&kinds.stdout).lines() {
        let Some(kind) = line.split_whitespace().next() else {
            continue;
        };
        if line.starts_with([' ', '`']) {
            continue;
        }
        assert!(
            PIPELINE.contains(&format!("kind = \"{kind}\"")),
            "the pipeline lacks kind {kind} (from `cram kinds`: {line})"
        );
    }

    // Two fresh caches, one and two threads: the same lock.
    a.run_ok(&["run", "p.toml"], 1);
    let b = Project::new(&hub, PIPELINE);
    b.run_ok(&["run", "p.toml"], 2);
    let (pa, pb) = (a.pins(), b.pins());
    assert_eq!(pa.len(), 13, "{pa:?}");
    let diff = differing(&pa, &pb);
    assert!(
        diff.is_empty(),
        "fresh caches disagree:\n{}",
        diff.join("\n")
    );

    // A forced rerun of every stage gives every output hash again.
    let mut args = vec!["run", "p.toml"];
    for name in pa.keys() {
        args.extend(["--force", name]);
    }
    let forced = b.run_ok(&args, 2);
    let reran = String::from_utf8_lossy(&forced.stdout)
        .lines()
        .filter(|l| l.trim_start().starts_with("ran "))
        .count();
    assert_eq!(reran, pa.len(), "{}", text(&forced));
    let diff = differing(&pa, &b.pins());
    assert!(
        diff.is_empty(),
        "forced reruns changed outputs:\n{}",
        diff.join("\n")
    );

    // --locked passes on the pinned cache and leaves the lock alone ...
    let lock = std::fs::read_to_string(a.lock_path()).unwrap();
    let ok = a.run_ok(&["run", "p.toml", "--locked"], 2);
    assert!(
        text(&ok).contains("cached  pretrain, as locked"),
        "{}",
        text(&ok)
    );
    assert_eq!(std::fs::read_to_string(a.lock_path()).unwrap(), lock);
    // ... and fails, naming the stage and both hashes, where the lock pins
    // other bytes; the stages after it do not run.
    let pinned = &pa["tokenizer"].2;
    let wrong = "0".repeat(pinned.len());
    std::fs::write(a.lock_path(), lock.replace(pinned.as_str(), &wrong)).unwrap();
    let bad = a.cram(&["run", "p.toml", "--locked"], 2);
    let t = text(&bad);
    assert!(!bad.status.success(), "{t}");
    assert!(t.contains("stage tokenizer"), "{t}");
    assert!(t.contains(pinned.as_str()) && t.contains(&wrong), "{t}");
    assert!(t.contains("skipped tokenize"), "{t}");
    std::fs::write(a.lock_path(), &lock).unwrap();

    // `cram reproduce` reruns a cached stage (and its cached sub-units) in
    // scratch space.
    for stage in ["unigram", "glue"] {
        let r = a.run_ok(&["reproduce", "p.toml", stage], 2);
        let t = text(&r);
        assert!(t.contains("the rerun gave the same bytes"), "{t}");
        assert!(t.contains(&format!("equal    {stage}:")), "{t}");
    }
    let r = a.run_ok(&["reproduce", "p.toml", "glue"], 1);
    assert!(text(&r).contains("equal    glue.rte:"), "{}", text(&r));
    assert_eq!(
        std::fs::read_to_string(a.lock_path()).unwrap(),
        lock,
        "reproduce leaves the lock alone"
    );
}

#[test]
fn reproduce_needs_the_stage_cached_and_says_what_to_run() {
    let hub = Hub::start();
    let p = Project::new(&hub, PIPELINE);
    let out = p.cram(&["reproduce", "p.toml", "tokenizer"], 2);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("is not cached"), "{t}");
    assert!(t.contains("--until tokenizer"), "{t}");
}

#[test]
fn glue_trials_add_cached_units_and_the_report_gives_the_median() {
    let hub = Hub::start();
    let p = Project::new(&hub, PIPELINE);
    p.run_ok(&["run", "p.toml", "--until", "report"], 2);
    let entry = |name: &str| {
        let key = p.pins()[name].1.clone();
        p.dir.path().join("cache/entries").join(key)
    };
    let one = read_json(&entry("glue").join("manifest.json"));
    let first_unit = one["units"][0]["key"].as_str().unwrap().to_string();

    let out = p.run_ok(
        &[
            "run",
            "p.toml",
            "--until",
            "report",
            "--set",
            "glue.trials=3",
        ],
        2,
    );
    let t = text(&out);
    let ran: Vec<&str> = t
        .lines()
        .filter_map(|l| l.trim().strip_prefix("ran "))
        .map(|l| l.trim().split(' ').next().unwrap())
        .collect();
    assert_eq!(ran, ["glue", "report"], "{t}");
    let three = read_json(&entry("glue").join("manifest.json"));
    let units: Vec<&str> = three["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(units, ["glue.rte", "glue.rte@1", "glue.rte@2"]);
    assert_eq!(
        three["units"][0]["key"].as_str().unwrap(),
        first_unit,
        "the first trial is the cached single run"
    );
    let summary = read_json(&entry("glue").join("out/summary.json"));
    let rte = &summary["tasks"]["rte"];
    assert_eq!(rte["trials"], 3);
    let trials: Vec<f64> = rte["trial_metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["accuracy"].as_f64().unwrap())
        .collect();
    let mut sorted = trials.clone();
    sorted.sort_by(f64::total_cmp);
    assert_eq!(
        rte["metrics"]["accuracy"].as_f64().unwrap(),
        sorted[1],
        "{trials:?}"
    );
    assert_eq!(rte["metrics_min"]["accuracy"].as_f64().unwrap(), sorted[0]);
    assert_eq!(rte["metrics_max"]["accuracy"].as_f64().unwrap(), sorted[2]);
    let md = std::fs::read_to_string(entry("report").join("run/report.md")).unwrap();
    assert!(md.contains("median of 3 fine-tunings"), "{md}");
    assert!(md.contains("3 trials"), "{md}");
}

#[test]
fn glue_units_side_by_side_give_the_bytes_of_one_at_a_time() {
    // Three fine-tunings (trials) of RTE: one at a time on one thread in one
    // cache, three at once on two threads in another. Their keys, their
    // predictions and the stage's output are the same bytes.
    let hub = Hub::start();
    let set = ["--set", "glue.trials=3", "--until", "glue"];
    let serial = Project::new(&hub, PIPELINE);
    let mut args = vec!["run", "p.toml", "-j", "1"];
    args.extend(set);
    serial.run_ok(&args, 1);
    let parallel = Project::new(&hub, PIPELINE);
    let mut args = vec!["run", "p.toml", "-j", "3"];
    args.extend(set);
    let out = parallel.run_ok(&args, 2);
    let (a, b) = (serial.pins(), parallel.pins());
    assert_eq!(a["glue"], b["glue"], "{}", text(&out));
    let units = |p: &Project| -> Vec<(String, String)> {
        let key = &p.pins()["glue"].1;
        let m = read_json(
            &p.dir
                .path()
                .join("cache/entries")
                .join(key)
                .join("manifest.json"),
        );
        m["units"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| {
                (
                    u["name"].as_str().unwrap().to_string(),
                    u["key"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let (ua, ub) = (units(&serial), units(&parallel));
    assert_eq!(ua.len(), 3);
    assert_eq!(ua, ub, "units are listed in order with the same keys");
    for (name, key) in &ua {
        let file = |p: &Project| {
            let dir = p.dir.path().join("cache/entries").join(key).join("out");
            std::fs::read(dir.join("predictions.parquet"))
                .unwrap_or_else(|e| panic!("{name}: {}: {e}", dir.display()))
        };
        assert_eq!(file(&serial), file(&parallel), "{name}: predictions differ");
    }
}

#[test]
fn diff_compares_two_runs_by_pipeline_lock_or_key() {
    let hub = Hub::start();
    let p = Project::new(&hub, PIPELINE);
    p.run_ok(&["run", "p.toml", "--until", "glue"], 2);
    std::fs::copy(p.lock_path(), p.dir.path().join("first.lock")).unwrap();
    p.run_ok(
        &[
            "run",
            "p.toml",
            "--until",
            "glue",
            "--set",
            "pretrain.lr=5e-4",
        ],
        2,
    );
    let d = p.run_ok(
        &["diff", "p.toml", "p.toml", "--set-b", "pretrain.lr=5e-4"],
        2,
    );
    let t = text(&d);
    assert!(t.contains("pretrain.lr: 0.001 → 0.0005"), "{t}");
    assert!(t.contains("same output: "), "{t}");
    assert!(t.contains("tokenizer"), "{t}");
    assert!(t.contains("pretrain: output "), "{t}");
    let loss = t
        .lines()
        .find(|l| l.trim_start().starts_with("pretrain.final_loss"))
        .unwrap_or_else(|| panic!("no final loss row: {t}"));
    let cols: Vec<&str> = loss.split_whitespace().collect();
    let (a, b): (f64, f64) = (cols[1].parse().unwrap(), cols[2].parse().unwrap());
    assert!(a > 0.0 && b > 0.0 && a != b, "{loss}");
    let delta: f64 = cols[3].parse().unwrap();
    assert!((delta - (b - a)).abs() < 1e-3, "{loss}");
    assert!(loss.ends_with("%)"), "the relative change: {loss}");
    assert!(
        t.contains("glue.tasks.rte.metrics.accuracy") || t.contains("glue.glue_average"),
        "{t}"
    );
    // A lock file against the pipeline as it is now (the second run).
    let l = p.run_ok(&["diff", "first.lock", "p.toml.lock"], 2);
    assert!(
        text(&l).contains("pretrain.lr: 0.001 → 0.0005"),
        "{}",
        text(&l)
    );
    // A cache key against another.
    let first = pins(&std::fs::read_to_string(p.dir.path().join("first.lock")).unwrap());
    let second = p.pins();
    let (ka, kb) = (&first["pretrain"].1, &second["pretrain"].1);
    let k = p.run_ok(&["diff", &ka[..10], &kb[..10]], 2);
    assert!(
        text(&k).contains("pretrain.lr: 0.001 → 0.0005"),
        "{}",
        text(&k)
    );
    // A bad side says what a side may be.
    let bad = p.cram(&["diff", "p.toml", "nonsense"], 2);
    assert!(!bad.status.success());
    assert!(
        text(&bad).contains("neither a file nor a cache key"),
        "{}",
        text(&bad)
    );
}

#[test]
fn a_token_budget_pipeline_pins_and_the_report_names_the_budget() {
    let hub = Hub::start();
    let p = Project::new(&hub, PIPELINE);
    std::fs::write(
        p.dir.path().join("p.toml"),
        PIPELINE.replace("budget_steps = 12", "budget_tokens = 6000"),
    )
    .unwrap();
    p.run_ok(&["run", "p.toml", "--until", "report"], 2);
    let key = p.pins()["pretrain"].1.clone();
    let entry = p.dir.path().join("cache/entries").join(&key);
    let summary = read_json(&entry.join("out/summary.json"));
    assert_eq!(summary["stopped_by"], "tokens", "{summary}");
    assert_eq!(summary["budget_tokens"], 6000);
    let tokens = summary["tokens"].as_u64().unwrap();
    assert!((6000..6000 + 32 * 32).contains(&tokens), "{summary}");
    let report = p.pins()["report"].1.clone();
    let md = std::fs::read_to_string(
        p.dir
            .path()
            .join("cache/entries")
            .join(report)
            .join("run/report.md"),
    )
    .unwrap();
    assert!(
        md.contains("6,000 tokens (equal data across machines"),
        "{md}"
    );
    assert!(md.contains("trained to a token budget"), "{md}");
    // A second cache at another thread count: the same pretrain output.
    let q = Project::new(&hub, PIPELINE);
    std::fs::write(
        q.dir.path().join("p.toml"),
        PIPELINE.replace("budget_steps = 12", "budget_tokens = 6000"),
    )
    .unwrap();
    q.run_ok(&["run", "p.toml", "--until", "pretrain"], 1);
    assert_eq!(q.pins()["pretrain"], p.pins()["pretrain"]);
}

#[test]
fn tensorboard_reads_the_event_files_of_pretraining_and_glue() {
    let hub = Hub::start();
    let p = Project::new(&hub, PIPELINE);
    p.run_ok(&["run", "p.toml", "--until", "glue"], 2);
    let entry = |key: &str| p.dir.path().join("cache/entries").join(key);
    let pretrain = entry(&p.pins()["pretrain"].1);
    let glue = read_json(&entry(&p.pins()["glue"].1).join("manifest.json"));
    let task = entry(glue["units"][0]["key"].as_str().unwrap());
    for dir in [&pretrain, &task] {
        assert!(
            dir.join("run/tensorboard/events.out.tfevents.0.cram")
                .is_file(),
            "{}",
            dir.display()
        );
        assert!(
            !dir.join("out/tensorboard").exists(),
            "not in the hashed output"
        );
    }
    let script = r#"
import json, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
out = {}
for d in sys.argv[1:]:
    ea = EventAccumulator(d)
    ea.Reload()
    out[d] = {t: [[e.step, e.value] for e in ea.Scalars(t)] for t in ea.Tags()["scalars"]}
print(json.dumps(out))
"#;
    let dirs = [
        pretrain.join("run/tensorboard"),
        task.join("run/tensorboard"),
    ];
    let args: Vec<&str> = dirs.iter().map(|d| d.to_str().unwrap()).collect();
    let Some(out) = python("tensorboard", script, &args) else {
        return;
    };
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let pre = &v[args[0]];
    for tag in [
        "train/loss",
        "train/lr",
        "train/batch_size",
        "train/tokens_per_second",
        "train/grad_norm",
        "heldout/loss",
    ] {
        assert!(
            pre[tag].as_array().is_some_and(|a| !a.is_empty()),
            "{tag}: {pre}"
        );
    }
    // The losses are those of metrics.jsonl, step for step (as f32).
    let metrics = std::fs::read_to_string(pretrain.join("out/metrics.jsonl")).unwrap();
    let want: Vec<(u64, f64)> = metrics
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|l| (l["step"].as_u64().unwrap(), l["loss"].as_f64().unwrap()))
        .collect();
    let got: Vec<(u64, f64)> = pre["train/loss"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e[0].as_u64().unwrap(), e[1].as_f64().unwrap()))
        .collect();
    assert_eq!(got.len(), want.len());
    for ((gs, gl), (ws, wl)) in got.iter().zip(&want) {
        assert_eq!(gs, ws);
        assert!((gl - wl).abs() < 1e-5 * wl.abs().max(1.0), "{gl} vs {wl}");
    }
    let glue_tags = &v[args[1]];
    assert!(
        glue_tags["dev/accuracy"]
            .as_array()
            .is_some_and(|a| a.len() == 1),
        "{glue_tags}"
    );
    assert!(glue_tags["train/loss"].is_array(), "{glue_tags}");
}

#[test]
fn sweep_runs_the_grid_sharing_preprocessing_and_reports_each_combination() {
    let hub = Hub::start();
    let p = Project::new(&hub, PIPELINE);
    let sweep = |extra: &[&str]| {
        let mut args = vec![
            "sweep",
            "p.toml",
            "--grid",
            "pretrain.lr=1e-3,5e-4",
            "--set",
            "glue.epochs=1",
        ];
        args.extend_from_slice(extra);
        p.run_ok(&args, 2)
    };
    let first = sweep(&[]);
    let t = text(&first);
    assert!(t.contains("combination 1/2: pretrain.lr=1e-3"), "{t}");
    assert!(t.contains("combination 2/2: pretrain.lr=5e-4"), "{t}");
    // The second combination reuses every stage before pretraining.
    let second = t.split("combination 2/2").nth(1).unwrap();
    for stage in ["corpus", "clean", "dedup", "tokenizer", "tokenize", "rte"] {
        assert!(
            second.contains(&format!("cached  {stage}")),
            "{stage}: {second}"
        );
    }
    assert!(second.contains("ran     pretrain"), "{second}");
    let dir = p.dir.path().join("p.sweep");
    assert!(dir.join("combination-01.lock").is_file() && dir.join("combination-02.lock").is_file());
    assert!(
        !p.lock_path().exists(),
        "a sweep leaves the pipeline's own lock alone"
    );
    let summary = read_json(&dir.join("summary.json"));
    assert_eq!(summary["combinations"], 2);
    assert_eq!(summary["failed"], 0);
    let rows = summary["rows"].as_array().unwrap();
    let losses: Vec<f64> = rows
        .iter()
        .map(|r| r["heldout_loss"].as_f64().unwrap())
        .collect();
    assert!(losses[0] != losses[1], "{losses:?}");
    for r in rows {
        assert!(r["glue"]["rte"].as_f64().is_some(), "{r}");
        assert!(r["tokens"].as_f64().unwrap() > 0.0, "{r}");
    }
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("2 combinations of pretrain.lr"), "{md}");
    assert!(md.contains("plots/loss.svg"), "{md}");
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("pretrain.lr=5e-4"));
    // Run again: everything is cached.
    let again = text(&sweep(&[]));
    assert!(!again.contains("ran     "), "{again}");
    // A bad value fails before anything runs.
    let bad = p.cram(
        &["sweep", "p.toml", "--grid", "pretrain.micro_batch=16,lots"],
        2,
    );
    assert!(!bad.status.success());
    assert!(!text(&bad).contains("combination 1/2"), "{}", text(&bad));
}
