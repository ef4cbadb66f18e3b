//! Fine-tuning throughput, examples/s: cram's GLUE step ([`cram_glue::bench`]) beside our
//! PyTorch implementation of the same step (`scripts/bench/glue_step.py`), on the same
//! synthetic batches, the same machine, one after the other.
//!
//! ```text
//! cargo bench -p cram-glue --bench glue_step
//! CRAM_BENCH=sst2-tiny CRAM_BENCH_STEPS=20 cargo bench -p cram-glue --bench glue_step
//! ```
//! `CRAM_BENCH` picks the cases (`sst2-tiny`, `crammed-bert`, comma-separated; both by
//! default), `CRAM_BENCH_STEPS` the timed steps, `CRAM_BENCH_SHARDS` the row shards per batch,
//! `CRAM_BENCH_DEVICE` the device (`cpu`). The PyTorch side runs when `CRAM_BENCH_PYTHON`
//! (default `python3`) imports torch; `CRAM_BENCH_PYTORCH=0` skips it.

use std::path::Path;
use std::process::Command;

use cram_glue::bench::{GlueStepBench, run_glue_step_bench};
use cram_glue::params::DEFAULT_CPU_SHARDS;
use cram_model::ModelConfig;

/// The allocator of the `cram` binary, so that the figures are the stage's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Case {
    name: &'static str,
    arch: &'static str,
    config: ModelConfig,
    lengths: (usize, usize),
    steps: usize,
}

fn env_usize(key: &str) -> Option<usize> {
    std::env::var(key).ok().and_then(|v| v.parse().ok())
}

/// examples/s of the PyTorch step, or why there is none.
fn pytorch(case: &Case, batch: usize, steps: usize) -> Result<f64, String> {
    if std::env::var("CRAM_BENCH_PYTORCH").as_deref() == Ok("0") {
        return Err("skipped (CRAM_BENCH_PYTORCH=0)".into());
    }
    let python = std::env::var("CRAM_BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/bench/glue_step.py");
    let json = std::env::temp_dir().join(format!("cram-glue-bench-{}.json", std::process::id()));
    let out = Command::new(&python)
        .arg(&script)
        .args(["--arch", case.arch])
        .args(["--batch", &batch.to_string()])
        .args(["--min-len", &case.lengths.0.to_string()])
        .args(["--max-len", &case.lengths.1.to_string()])
        .args(["--steps", &steps.to_string()])
        .arg("--json")
        .arg(&json)
        .output()
        .map_err(|e| format!("cannot run {python}: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "{python} {} failed: {}",
            script.display(),
            err.lines().last().unwrap_or("")
        ));
    }
    print!("{}", String::from_utf8_lossy(&out.stdout));
    let text = std::fs::read_to_string(&json).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&json);
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    v["examples_per_second"]
        .as_f64()
        .ok_or_else(|| "no examples_per_second in the script's JSON".into())
}

fn main() {
    cram_train::alloc::retain_freed_memory();
    let wanted = std::env::var("CRAM_BENCH").unwrap_or_else(|_| "sst2-tiny,crammed-bert".into());
    let device_spec = std::env::var("CRAM_BENCH_DEVICE").unwrap_or_else(|_| "cpu".into());
    let device = cram_model::select_device(&device_spec).expect("device");
    let batch = 16;
    let cases = [
        Case {
            name: "sst2-tiny",
            arch: "tiny",
            config: ModelConfig::tiny(),
            // SST-2's training sentences under a WordPiece 8192 vocabulary: 3 to 66 tokens.
            lengths: (8, 66),
            steps: 60,
        },
        Case {
            name: "crammed-bert",
            arch: "crammed-bert",
            config: ModelConfig::crammed_bert(),
            lengths: (8, 66),
            steps: 4,
        },
    ];
    println!(
        "device {device:?}, batch {batch}, dropout 0.1, AdamW eps 1e-6 without decay or clipping"
    );
    for case in cases
        .iter()
        .filter(|c| wanted.split(',').any(|w| w.trim() == c.name))
    {
        let steps = env_usize("CRAM_BENCH_STEPS").unwrap_or(case.steps);
        let bench = GlueStepBench {
            config: case.config.clone(),
            num_labels: 2,
            batch,
            lengths: case.lengths,
            steps,
            warmup: 2,
            cpu_shards: env_usize("CRAM_BENCH_SHARDS").unwrap_or(DEFAULT_CPU_SHARDS),
        };
        let r = run_glue_step_bench(&bench, &device).expect("benchmark step");
        println!(
            "cram          {:<13} batch {} (mean padded length {:.1}, {} shards): {:.4} s/step, {:>8.1} examples/s; loss {:.3} -> {:.3}",
            case.name,
            r.batch,
            r.mean_seq_len,
            r.shards,
            r.seconds_per_step,
            r.examples_per_second,
            r.first_loss,
            r.last_loss
        );
        match pytorch(case, batch, steps) {
            Ok(torch) => println!(
                "{:<13} ratio cram / PyTorch: {:.2}",
                case.name,
                r.examples_per_second / torch
            ),
            Err(why) => println!("{:<13} PyTorch: {why}", case.name),
        }
    }
}
