//! The GPU code path of the `cram` binary, end to end, on a Vulkan device: Chromium's
//! SwiftShader in CI (`VK_DRIVER_FILES`), any hardware Vulkan GPU elsewhere.
//!
//! The sanity recipe pretrains on the CPU and on the device from the same packed data; on the
//! device every tensor lives off the host, so the gradient sums and AdamW take their tensor
//! path, and the kernels are burn's compiled ones (fused and autotuned) rather than the CPU
//! backend's. The two loss curves must agree. Then GLUE fine-tunes the device's checkpoint on
//! the device, and `auto` is what chose the device (software adapters are opted in with
//! `CRAM_VULKAN_SOFTWARE`).
//!
//! Built only with `--features vulkan`; without a Vulkan device the test says so and passes,
//! unless `CRAM_REQUIRE_VULKAN` is set (CI), which makes that a failure.
#![cfg(feature = "vulkan")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Overrides that keep the run to a couple of minutes on a software driver: 12 steps of 8 then
/// 16 sequences (the batch ramp makes a step of two micro-batches, so gradient accumulation runs
/// on the device too), small GLUE sets.
const SMALL: &[&str] = &[
    // Each held-out evaluation scores every held-out row; SwiftShader takes about 1.5 s per
    // micro-batch there, so the test holds out 64 rows instead of 512.
    "--set",
    "tokenize.heldout_rows=64",
    "--set",
    "pretrain.budget_steps=12",
    "--set",
    "pretrain.micro_batch=8",
    "--set",
    "pretrain.batch_size=16",
    "--set",
    "pretrain.heldout_every=6",
    "--set",
    "pretrain.log_every=1",
    "--set",
    "glue_data.train_size=64",
    "--set",
    "glue_data.dev_size=32",
    "--set",
    "glue_data.tasks=[\"sst2\", \"stsb\"]",
    "--set",
    "glue.tasks=[\"sst2\", \"stsb\"]",
    "--set",
    "glue.epochs=1",
    // Every padded length is a new shape to autotune on the device: at most two here.
    "--set",
    "glue.max_length=32",
];

fn cram(dir: &Path, args: &[&str], on_device: bool) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cram"));
    cmd.args(args)
        .args(SMALL)
        .current_dir(dir)
        .env_remove("CRAM_CACHE")
        .env_remove(cram_model::SOFTWARE_VULKAN_ENV);
    if on_device {
        cmd.env(cram_model::SOFTWARE_VULKAN_ENV, "1").args([
            "--set",
            "pretrain.device=auto",
            "--set",
            "glue.device=auto",
        ]);
    }
    cmd.output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// The output directory of `stage` as recorded in `dir/sanity.toml.lock`.
fn stage_out(dir: &Path, stage: &str) -> PathBuf {
    let lock = read_json(&dir.join("sanity.toml.lock"));
    let key = lock["stages"][stage]["key"].as_str().unwrap();
    dir.join("cache/entries").join(key).join("out")
}

/// The loss of every step in a pretrain entry's `metrics.jsonl`.
fn losses(out: &Path) -> Vec<f64> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect()
}

/// Every GLUE task unit's `summary.json` in the cache (they carry a `task` and a `device`).
fn task_summaries(dir: &Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut stack = vec![dir.join("cache")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == "summary.json") {
                let v = read_json(&p);
                if v.get("task").is_some() && v.get("device").is_some() {
                    out.push(v);
                }
            }
        }
    }
    out
}

/// The largest gap between two loss curves of the same steps, relative to the first.
fn worst_relative_gap(reference: &[f64], other: &[f64]) -> f64 {
    assert_eq!(reference.len(), other.len(), "the same logged steps");
    reference
        .iter()
        .zip(other)
        .map(|(x, y)| (x - y).abs() / x.abs())
        .fold(0.0, f64::max)
}

#[test]
fn sanity_recipe_trains_and_fine_tunes_on_a_vulkan_device_as_on_the_cpu() {
    if cram_model::vulkan_test_device().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let recipe = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/sanity.toml");
    std::fs::copy(recipe, dir.path().join("sanity.toml")).unwrap();

    let cpu = cram(
        dir.path(),
        &["run", "sanity.toml", "--until", "pretrain"],
        false,
    );
    assert!(cpu.status.success(), "{}", text(&cpu));
    let cpu_out = stage_out(dir.path(), "pretrain");
    let cpu_summary = read_json(&cpu_out.join("summary.json"));
    assert_eq!(cpu_summary["backend"], "flex", "{cpu_summary}");

    let gpu = cram(dir.path(), &["run", "sanity.toml"], true);
    assert!(gpu.status.success(), "{}", text(&gpu));
    let gpu_out = stage_out(dir.path(), "pretrain");
    let gpu_summary = read_json(&gpu_out.join("summary.json"));
    assert_eq!(
        gpu_summary["backend"], "vulkan",
        "`auto` chose the Vulkan device: {gpu_summary}"
    );
    assert_eq!(gpu_summary["steps"], 12);

    // Same initial weights, data order and masks: the curves differ only by the order of
    // floating-point sums (one device-wide reduction against the CPU's per-core shards).
    let (a, b) = (losses(&cpu_out), losses(&gpu_out));
    assert_eq!(a.len(), b.len());
    assert!(
        (a[0] - b[0]).abs() < 1e-4,
        "first step's loss: cpu {} vs vulkan {}",
        a[0],
        b[0]
    );
    let worst = worst_relative_gap(&a, &b);
    assert!(
        worst < 1e-2,
        "loss curves differ by {:.3} % (cpu {a:?}, vulkan {b:?})",
        100.0 * worst
    );
    assert!(b.last().unwrap() < &b[0], "the model learned: {b:?}");

    // GLUE fine-tuned that checkpoint on the device.
    let tasks = task_summaries(dir.path());
    let names: Vec<&str> = tasks.iter().filter_map(|t| t["task"].as_str()).collect();
    assert_eq!(tasks.len(), 2, "{names:?}");
    for t in &tasks {
        let device = t["device"].as_str().unwrap().to_ascii_lowercase();
        assert!(device.contains("wgpu") || device.contains("vulkan"), "{t}");
        assert!(t["steps"].as_u64().unwrap() > 0, "{t}");
        for (name, value) in t["metrics"].as_object().unwrap() {
            assert!(value.as_f64().unwrap().is_finite(), "{name} in {t}");
        }
    }
    // The report's documents are run facts: beside the output, in `run/`.
    let report = stage_out(dir.path(), "report").with_file_name("run");
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(
        md.to_ascii_lowercase().contains("vulkan"),
        "the report names the backend"
    );

    // Data parallelism with the device path on both sides of a device boundary: the model and
    // the optimizer on the Vulkan device, a replica on the CPU, the CPU's gradients summed onto
    // the device. (Two Vulkan devices cannot be had from software drivers: burn names every
    // CPU-type adapter `WgpuDeviceKind::Cpu`, without an index, so a second SwiftShader or a
    // lavapipe beside it is the same burn device as the first.) Same curve, within 1 %.
    let dp = cram(
        dir.path(),
        &[
            "run",
            "sanity.toml",
            "--until",
            "pretrain",
            "--set",
            "pretrain.devices=[\"vulkan:0\", \"cpu\"]",
        ],
        true,
    );
    assert!(dp.status.success(), "{}", text(&dp));
    let dp_summary = read_json(&stage_out(dir.path(), "pretrain").join("summary.json"));
    assert_eq!(dp_summary["devices"], 2, "{dp_summary}");
    let c = losses(&stage_out(dir.path(), "pretrain"));
    let worst = worst_relative_gap(&a, &c);
    assert!(
        worst < 1e-2,
        "data-parallel curve differs by {:.3} % (cpu {a:?}, vulkan + cpu {c:?})",
        100.0 * worst
    );
}

/// `cram bench` on the device: the step's anatomy with fusion on and off (a child process), as
/// JSON. A tiny model (2 layers, 22 parameter tensors; 32 tokens, vocabulary 1024) keeps it to a
/// minute on a software driver.
fn anatomy(dir: &Path) -> Vec<serde_json::Value> {
    let json = dir.join("bench.json");
    let out = Command::new(env!("CARGO_BIN_EXE_cram"))
        .args([
            "bench",
            "--device",
            "vulkan:0",
            "--arch",
            "tiny",
            "--seq-len",
            "32",
            "--vocab-size",
            "1024",
            "--micro-batch",
            "4",
            "--steps",
            "1",
            "--warmup",
            "1",
            "--precision",
            "fp32",
            "--fusion",
            "both",
            "--json",
        ])
        .arg(&json)
        .current_dir(dir)
        .env(cram_model::SOFTWARE_VULKAN_ENV, "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    read_json(&json)["rows"].as_array().unwrap().clone()
}

/// Bounds on what one training step asks of the device (tiny model, one micro-batch, a step
/// that is not logged), so that a read slipped into the step or a launch storm fails CI:
///
/// * uploads: exactly 3, the micro-batch's ids, masked positions and targets;
/// * reads and waits: none (the loss and the gradient norm are read at logged steps only);
/// * launches with fusion: at most half of those without, and at most [`MAX_FUSED_LAUNCHES`].
///
/// Measured on SwiftShader when the bound was set: 412 launches with fusion, 889 without.
#[test]
fn a_training_step_on_the_device_launches_few_kernels_and_never_waits() {
    if cram_model::vulkan_test_device().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rows = anatomy(dir.path());
    assert_eq!(rows.len(), 2, "fusion on and off: {rows:?}");
    let launches = |fusion: bool| -> u64 {
        let row = rows
            .iter()
            .find(|r| r["anatomy"]["fusion"] == fusion)
            .unwrap_or_else(|| panic!("no row with fusion {fusion}: {rows:?}"));
        let a = &row["anatomy"];
        let t = &a["traffic"];
        assert_eq!(t["uploads"], 3, "fusion {fusion}: {a}");
        assert_eq!(t["reads"], 0, "fusion {fusion}: {a}");
        assert_eq!(t["syncs"], 0, "fusion {fusion}: {a}");
        assert!(a["bytes_reserved"].as_u64().unwrap() > 0, "{a}");
        a["launches"].as_u64().unwrap()
    };
    let (on, off) = (launches(true), launches(false));
    assert!(
        2 * on <= off,
        "fusion must at least halve the launches: {on} with, {off} without"
    );
    assert!(
        on <= MAX_FUSED_LAUNCHES,
        "{on} launches per step with fusion (bound {MAX_FUSED_LAUNCHES})"
    );
}

/// See [`a_training_step_on_the_device_launches_few_kernels_and_never_waits`].
const MAX_FUSED_LAUNCHES: u64 = 480;
