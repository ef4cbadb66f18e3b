//! End-to-end tests of the shipped recipes: the offline sanity recipe runs
//! the whole DAG; every recipe file loads and resolves.

use std::path::Path;
use std::process::{Command, Output};

fn cram(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cram"))
        .args(args)
        .current_dir(dir)
        .env_remove("CRAM_CACHE")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ran(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("ran "))
        .map(|l| l.trim().split(' ').next().unwrap().to_string())
        .collect()
}

/// The cache entry of the `pretrain` stage recorded in the lock file `lock` in `dir`.
fn pretrain_entry(dir: &Path, lock: &str) -> std::path::PathBuf {
    let lock: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(lock)).unwrap()).unwrap();
    let key = lock["stages"]["pretrain"]["key"].as_str().unwrap();
    dir.join("cache/entries").join(key)
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The `summary.json` of the `pretrain` stage recorded in the lock file `lock` in `dir`.
fn pretrain_summary(dir: &Path, lock: &str) -> serde_json::Value {
    read_json(&pretrain_entry(dir, lock).join("out/summary.json"))
}

/// Whether this CPU has the vector units of the machine that wrote
/// `pipelines/sanity.toml.lock` (x86-64 with AVX-512).
fn same_cpu_family_as_the_lock() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn recipe(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("pipelines")
            .join(name),
    )
    .unwrap()
}

#[test]
fn sanity_recipe_runs_end_to_end_then_caches_then_reruns_only_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sanity.toml"), recipe("sanity.toml")).unwrap();
    // The shipped lock pins every stage's output: a fresh cache must give
    // the same bytes (`--locked` fails, naming the stage, where it does not).
    std::fs::write(
        dir.path().join("sanity.toml.lock"),
        recipe("sanity.toml.lock"),
    )
    .unwrap();

    // The lock was written on an x86-64 CPU with AVX-512, where burn's CPU
    // backend takes gemm's AVX-512 kernels; other vector units sum matrix
    // products in another order (docs/architecture.md), so elsewhere only
    // the stages before pretraining (integer work) are held to it.
    if !same_cpu_family_as_the_lock() {
        eprintln!(
            "NOTE: no AVX-512 here: only the preprocessing stages are checked against sanity.toml.lock"
        );
        let pre = cram(
            dir.path(),
            &[
                "--cache",
                "precheck",
                "run",
                "sanity.toml",
                "--locked",
                "--until",
                "tokenize",
            ],
        );
        assert!(pre.status.success(), "{}", text(&pre));
    }
    let locked: &[&str] = if same_cpu_family_as_the_lock() {
        &["run", "sanity.toml", "--locked"]
    } else {
        &["run", "sanity.toml"]
    };
    // With `-j` at its default (the cores), independent stages run side by
    // side, but pretraining runs alone: its wall clock is the budget.
    let first = cram(dir.path(), locked);
    assert!(first.status.success(), "{}", text(&first));
    let mut stages = ran(&first);
    stages.sort();
    assert_eq!(
        stages,
        [
            "clean",
            "corpus",
            "dedup",
            "glue",
            "glue_data",
            "pretrain",
            "report",
            "tokenize",
            "tokenizer",
        ],
        "{}",
        text(&first)
    );
    let interval = |stage: &str| {
        let lock = read_json(&dir.path().join("sanity.toml.lock"));
        let key = lock["stages"][stage]["key"].as_str().unwrap().to_string();
        let m = read_json(
            &dir.path()
                .join("cache/entries")
                .join(key)
                .join("manifest.json"),
        );
        (
            m["started_at"].as_str().unwrap().to_string(),
            m["finished_at"].as_str().unwrap().to_string(),
        )
    };
    let (p0, p1) = interval("pretrain");
    for other in stages.iter().filter(|s| *s != "pretrain") {
        let (s0, s1) = interval(other);
        assert!(
            s1 <= p0 || s0 >= p1,
            "{other} ({s0} .. {s1}) ran beside pretrain ({p0} .. {p1})"
        );
    }
    let report_line = String::from_utf8_lossy(&first.stdout)
        .lines()
        .find(|l| l.starts_with("report (report): "))
        .expect("the report's path is printed")
        .to_string();
    let html_path = dir
        .path()
        .join(report_line.trim_start_matches("report (report): "));
    let html = std::fs::read_to_string(&html_path).unwrap();
    let md = std::fs::read_to_string(html_path.with_file_name("report.md")).unwrap();
    for section in [
        "rules",
        "glue",
        "pretraining",
        "schedule",
        "preprocessing",
        "budget",
        "machine",
        "reproduce",
    ] {
        assert!(
            html.contains(&format!("id=\"{section}\"")),
            "html lacks {section}"
        );
        assert!(
            md.contains(&format!("<a id=\"{section}\"></a>")),
            "md lacks {section}"
        );
    }
    assert!(md.contains("crammed-bert v2 (Pile, A6000, 24 h), paper"));
    assert!(md.contains("| this run (sanity) |"));
    assert!(html.contains("<svg"), "plots are inlined");
    // The held-out loss (rows `tokenize` kept aside, fixed masks), as a fact and a curve.
    assert!(md.contains("**Held-out loss:**"), "{md}");
    assert!(md.contains("held-out rows, fixed masks"), "{md}");
    assert!(md.contains("Held-out loss against tokens seen"), "{md}");
    // And the power-law fit of the loss against compute, taken out to 24 h.
    assert!(md.contains("**Scaling fit:** "), "{md}");
    assert!(md.contains("· C^−"), "{md}");
    assert!(md.contains("at 24 h of this run's throughput"), "{md}");

    // The tiny model learned something: its final MLM loss is well below
    // the uniform guess over the vocabulary.
    let summary = pretrain_summary(dir.path(), "sanity.toml.lock");
    let final_loss = summary["final_loss"].as_f64().unwrap();
    assert!(final_loss < 0.8 * (1024f64).ln(), "final loss {final_loss}");

    // Unchanged: nothing runs.
    let second = cram(dir.path(), &["run", "sanity.toml"]);
    assert!(second.status.success(), "{}", text(&second));
    assert!(ran(&second).is_empty(), "{}", text(&second));

    // A different model size reruns pretraining and what depends on it only.
    let status = cram(
        dir.path(),
        &[
            "status",
            "sanity.toml",
            "--set",
            "pretrain.model.num_layers=1",
        ],
    );
    assert!(
        text(&status).contains("param model.num_layers: 2 → 1"),
        "{}",
        text(&status)
    );
    let third = cram(
        dir.path(),
        &["run", "sanity.toml", "--set", "pretrain.model.num_layers=1"],
    );
    assert!(third.status.success(), "{}", text(&third));
    assert_eq!(
        ran(&third),
        ["pretrain", "glue", "report"],
        "{}",
        text(&third)
    );
}

#[test]
fn every_recipe_loads_and_resolves() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "sanity.toml",
        "quickstart.toml",
        "final.toml",
        "c4-subset.toml",
        "bert-original.toml",
    ] {
        std::fs::write(dir.path().join(name), recipe(name)).unwrap();
        let dag = cram(dir.path(), &["dag", name]);
        assert!(dag.status.success(), "{name}: {}", text(&dag));
        assert!(
            text(&dag).contains("pretrain (pretrain) <- tokenize"),
            "{name}"
        );
    }
    // The paper recipe expands its preset: 16 layers of 768, 12 heads.
    let show = Command::new(env!("CARGO_BIN_EXE_cram"))
        .args(["--cache", dir.path().join("c").to_str().unwrap()])
        .args(["show", "pipelines/final.toml", "pretrain"])
        .current_dir(root)
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .output()
        .unwrap();
    let t = text(&show);
    assert!(show.status.success(), "{t}");
    for needle in [
        "model.num_layers = 16",
        "model.hidden_size = 768",
        "model.num_heads = 12",
        "budget_seconds = 86400",
        "lr = 0.001",
    ] {
        assert!(t.contains(needle), "missing {needle} in {t}");
    }
    // bert-original includes final.toml and changes the architecture only
    // where it says so.
    std::fs::write(dir.path().join("final.toml"), recipe("final.toml")).unwrap();
    let show = cram(dir.path(), &["show", "bert-original.toml", "pretrain"]);
    let t = text(&show);
    assert!(t.contains("arch = \"bert-original\""), "{t}");
    assert!(t.contains("model.norm_scheme = \"post\""), "{t}");
}

/// A small corpus → tokenizer → pack → pretrain pipeline with a wall-clock budget.
const INTERRUPTIBLE: &str = r#"
name = "interruptible"
seed = 0

[stages.corpus]
kind = "synthetic"
documents = 1500

[stages.tokenizer]
kind = "tokenizer"
inputs = ["corpus"]
model = "wordpiece"
vocab_size = 512

[stages.tokenize]
kind = "pack"
inputs = ["corpus", "tokenizer"]
seq_length = 32

[stages.pretrain]
kind = "pretrain"
inputs = ["tokenize"]
arch = "tiny"
budget = "6s"
micro_batch = 8
batch_size = 16
device = "cpu"
log_every = 1

[stages.after]
kind = "command"
inputs = ["pretrain"]
run = "echo done > {output}/after.txt"
"#;

#[test]
fn ctrl_c_stops_pretraining_with_a_checkpoint_and_the_rerun_resumes_within_the_budget() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.toml"), INTERRUPTIBLE).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_cram"))
        .args(["run", "p.toml"])
        .current_dir(dir.path())
        .env_remove("CRAM_CACHE")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Pretraining starts once the lock file records the packed sequences.
    let lock = dir.path().join("p.toml.lock");
    let t0 = Instant::now();
    while !std::fs::read_to_string(&lock).is_ok_and(|l| l.contains("\"tokenize\"")) {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "pack never finished"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(2));
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    let first = text(&out);
    assert_eq!(out.status.code(), Some(130), "an interrupted run: {first}");
    assert!(first.contains("interrupted at step"), "{first}");
    assert!(
        first.contains("skipped after"),
        "the stage after it does not run: {first}"
    );

    let second = cram(dir.path(), &["run", "p.toml"]);
    let again = text(&second);
    assert!(second.status.success(), "{again}");
    assert_eq!(ran(&second), ["pretrain", "after"], "{again}");
    let summary = pretrain_summary(dir.path(), "p.toml.lock");
    let manifest = read_json(&pretrain_entry(dir.path(), "p.toml.lock").join("manifest.json"));
    // How the run went is a run fact (the manifest's timings), not part of the hashed summary.
    assert!(summary.get("resumed_from_step").is_none(), "{summary}");
    let resumed = manifest["metrics"]["timings"]["resumed_from_step"].as_u64();
    assert!(resumed.is_some(), "the rerun resumed: {manifest}");
    let steps = summary["steps"].as_u64().unwrap();
    assert!(steps > resumed.unwrap(), "and went on: {summary}");
    // The wall clock is a run fact: in the manifest, not the hashed summary.
    assert!(summary.get("wall_seconds").is_none(), "{summary}");
    let wall = manifest["metrics"]["timings"]["wall_seconds"]
        .as_f64()
        .unwrap();
    assert!(
        (4.0..9.0).contains(&wall),
        "the budget (6 s) counts both runs: {wall} s"
    );
}
