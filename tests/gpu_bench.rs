//! The GPU benchmark's steps that a CPU can run: `scripts/gpu-bench.sh bundle` packs the built
//! binary as it travels to a GPU machine, and `run` unpacks it and runs `cram bench` (and the
//! PyTorch side where torch is installed) on a tiny model, writing the figures as JSON.

use std::path::Path;
use std::process::Command;

fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/gpu-bench.sh")
}

#[test]
fn bundle_then_run_on_the_cpu() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("bundle");
    let out = Command::new(script())
        .args(["bundle", env!("CARGO_BIN_EXE_cram")])
        .arg(&bundle)
        .env("ZSTD_LEVEL", "1")
        .output()
        .unwrap();
    let text = |o: &std::process::Output| {
        format!(
            "{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    assert!(out.status.success(), "{}", text(&out));
    for f in ["cram.zst", "torch_step.py", "gpu-bench.sh"] {
        assert!(bundle.join(f).is_file(), "{f} in the bundle");
    }

    // The bundle runs on its own, from its own copy of the script.
    let results = tmp.path().join("results");
    let run = Command::new(bundle.join("gpu-bench.sh"))
        .arg("run")
        .arg(&bundle)
        .arg(&results)
        .envs([
            ("DEVICE", "cpu"),
            ("ARCH", "tiny"),
            ("MICRO_BATCH", "4"),
            ("STEPS", "2"),
            ("WARMUP", "1"),
            ("TORCH_MODES", "eager"),
            ("PEAK_TFLOPS", "1"),
        ])
        .output()
        .unwrap();
    let log = text(&run);
    assert!(run.status.success(), "{log}");
    assert!(log.contains("== comparison"), "{log}");
    let cram: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(results.join("cram.json")).unwrap()).unwrap();
    assert_eq!(cram["backend"], "flex");
    let rows = cram["rows"].as_array().unwrap();
    let precisions: Vec<&str> = rows
        .iter()
        .map(|r| r["precision"].as_str().unwrap())
        .collect();
    assert_eq!(precisions, ["fp32", "bf16"], "{cram}");
    for r in rows {
        let tps = r["tokens_per_second"].as_f64().unwrap();
        assert!(tps > 0.0, "{r}");
        assert_eq!(r["micro_batch"], 4);
        assert_eq!(r["seq_len"], 128);
        // MFU = 6 N tokens/s / peak, here with a 1 TFLOP/s peak.
        let n = r["parameters"].as_f64().unwrap();
        let mfu = r["mfu"].as_f64().unwrap();
        assert!(
            (mfu - 6.0 * n * tps / 1e12).abs() < 1e-9 * mfu.max(1.0),
            "{r}"
        );
        assert!(r["last_loss"].as_f64().unwrap().is_finite());
    }
    // Same parameter count as PyTorch's model of the same preset, where torch is installed.
    if let Ok(torch) = std::fs::read_to_string(results.join("torch.json")) {
        let torch: serde_json::Value = serde_json::from_str(&torch).unwrap();
        for r in torch["rows"].as_array().unwrap() {
            assert_eq!(r["parameters"], rows[0]["parameters"], "{r}");
        }
    }
}

#[test]
fn bench_rejects_an_unknown_precision_and_arch() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_cram"))
            .args(["bench", "--device", "cpu", "--steps", "1", "--warmup", "0"])
            .args(args)
            .output()
            .unwrap()
    };
    let bad = run(&["--arch", "tiny", "--micro-batch", "2", "--precision", "fp8"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("fp8"));
    let bad = run(&["--arch", "gpt-5"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("crammed-bert"));
}
