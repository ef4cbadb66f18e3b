//! `cram bench`: the pretraining step's throughput on synthetic tokens, as the GPU benchmark
//! (`scripts/gpu-bench.sh`) reports it: tokens/s, MFU against the card's dense bf16 peak, and
//! peak memory, for each precision asked for; and the step's anatomy (kernel launches by
//! family, uploads, reads and waits, device memory, FLOPs), on a GPU with burn's kernel fusion
//! and without.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};
use cram_model::{ModelConfig, PrecisionSpec};
use cram_pretrain::bench::{StepAnatomy, StepBench, fusion_enabled, run_step_bench};
use serde::Serialize;

/// Dense bf16 tensor-core peaks (no sparsity) in TFLOP/s, by a fragment of the card's name;
/// the first match wins, so more specific names come first.
const PEAKS: &[(&str, f64)] = &[
    ("H100 PCIe", 756.0),
    ("H100", 989.4),
    ("H200", 989.4),
    ("GH200", 989.4),
    ("A100", 312.0),
    ("A6000", 154.8),
    ("L40S", 362.1),
    ("L4", 121.0),
    ("A10", 125.0),
    ("RTX 4090", 165.2),
    ("RTX 3090", 71.0),
];

/// The dense bf16 peak of a card, by name.
pub fn peak_tflops(card: &str) -> Option<f64> {
    PEAKS
        .iter()
        .find(|(fragment, _)| card.contains(fragment))
        .map(|&(_, peak)| peak)
}

/// Whether `cram bench` measures with burn's kernel fusion, without it, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FusionMode {
    /// With fusion (the GPU builds' default).
    On,
    /// Without: each op its own kernel (`BURN_FUSION_MAX_EXPLORATIONS=0`, in a child process,
    /// since fusion is set once per process).
    Off,
    /// Both, one after the other (the default on a GPU).
    Both,
}

/// What `cram bench` measures.
#[derive(Debug, Clone)]
pub struct BenchArgs {
    /// Architecture preset.
    pub arch: String,
    /// Sequence length instead of the preset's.
    pub seq_len: Option<usize>,
    /// Vocabulary size instead of the preset's.
    pub vocab_size: Option<usize>,
    /// Sequences per step.
    pub micro_batch: usize,
    /// Timed steps.
    pub steps: usize,
    /// Untimed steps.
    pub warmup: usize,
    /// Device spec.
    pub device: String,
    /// Precisions, in order.
    pub precisions: Vec<String>,
    /// With fusion, without, or both (GPU builds).
    pub fusion: FusionMode,
    /// Peak for MFU, TFLOP/s.
    pub peak_tflops: Option<f64>,
    /// The card's name.
    pub card: Option<String>,
    /// JSON output file.
    pub json: Option<PathBuf>,
}

#[derive(Debug, Serialize, serde::Deserialize)]
struct Row {
    #[serde(flatten)]
    result: serde_json::Value,
    mfu: Option<f64>,
}

#[derive(Debug, Serialize, serde::Deserialize)]
struct Report {
    tool: String,
    arch: String,
    device: String,
    backend: String,
    card: Option<String>,
    peak_tflops: Option<f64>,
    rows: Vec<Row>,
}

/// The GPU's name as `nvidia-smi` reports it (the first card), if there is one.
fn nvidia_smi_name() -> Option<String> {
    let out = Command::new("nvidia-smi")
        .args(["--query-gpu=name", "--format=csv,noheader"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let name = text.lines().next()?.trim();
    (out.status.success() && !name.is_empty()).then(|| name.to_string())
}

fn bytes(b: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The step's anatomy, in lines.
fn anatomy_lines(a: &StepAnatomy) -> Vec<String> {
    let mut out = Vec::new();
    let launches = match a.launches {
        Some(n) => {
            let families: Vec<String> = a
                .launches_by_kernel
                .iter()
                .take(6)
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            format!("{n} kernel launches ({})", families.join(", "))
        }
        None => "no kernels (the CPU backend runs ops in place)".to_string(),
    };
    out.push(format!(
        "  step anatomy (fusion {}): {launches}",
        if a.fusion { "on" } else { "off" }
    ));
    let t = &a.traffic;
    out.push(format!(
        "    host -> device: {} uploads ({}); device -> host: {} reads ({}); waits for the \
         device: {} ({} reads, {} syncs)",
        t.uploads,
        bytes(t.upload_bytes),
        t.reads,
        bytes(t.read_bytes),
        t.waits(),
        t.reads,
        t.syncs
    ));
    if let (Some(n), Some(used), Some(reserved)) = (a.allocations, a.bytes_in_use, a.bytes_reserved)
    {
        out.push(format!(
            "    device memory after the step: {n} live allocations, {} in use, {} reserved by \
             the pools (the step's peak)",
            bytes(used),
            bytes(reserved)
        ));
    }
    let f = &a.forward_flops;
    out.push(format!(
        "    {:.3} GFLOP per step (3 x forward {:.3}: projections {:.3}, attention {:.3}, \
         feed-forward {:.3}, decoder {:.3})",
        a.training_flops as f64 / 1e9,
        f.total() as f64 / 1e9,
        f.projections as f64 / 1e9,
        f.attention as f64 / 1e9,
        f.feed_forward as f64 / 1e9,
        f.decoder as f64 / 1e9,
    ));
    out
}

/// Runs `cram bench` in a child process with fusion off (it is set once per process) and
/// returns its rows.
fn rows_without_fusion(args: &BenchArgs) -> Result<Vec<Row>> {
    let dir = tempfile::tempdir().context("a temporary directory for the child's results")?;
    let json = dir.path().join("no-fusion.json");
    let exe = std::env::current_exe().context("the path of this cram binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg("bench")
        .args(["--arch", &args.arch])
        .args(["--micro-batch", &args.micro_batch.to_string()])
        .args(["--steps", &args.steps.to_string()])
        .args(["--warmup", &args.warmup.to_string()])
        .args(["--device", &args.device])
        .args(["--precision", &args.precisions.join(",")])
        .args(["--fusion", "off"])
        .arg("--json")
        .arg(&json)
        .env("BURN_FUSION_MAX_EXPLORATIONS", "0");
    if let Some(n) = args.seq_len {
        cmd.args(["--seq-len", &n.to_string()]);
    }
    if let Some(n) = args.vocab_size {
        cmd.args(["--vocab-size", &n.to_string()]);
    }
    if let Some(p) = args.peak_tflops {
        cmd.args(["--peak-tflops", &p.to_string()]);
    }
    if let Some(c) = &args.card {
        cmd.args(["--card", c]);
    }
    let status = cmd.status().context("running cram bench without fusion")?;
    if !status.success() {
        bail!("cram bench without fusion failed ({status})");
    }
    let text = std::fs::read_to_string(&json).with_context(|| format!("{}", json.display()))?;
    let report: Report = serde_json::from_str(&text).context("the child's results")?;
    Ok(report.rows)
}

/// Runs the benchmark and prints one line per precision, with the step's anatomy.
pub fn run(args: &BenchArgs) -> Result<()> {
    let mut config = ModelConfig::try_preset(&args.arch).context("--arch")?;
    if let Some(n) = args.seq_len {
        config.max_seq_length = n;
    }
    if let Some(n) = args.vocab_size {
        config.vocab_size = n;
    }
    config
        .validate()
        .context("--arch with --seq-len/--vocab-size")?;
    let device = cram_model::select_device(&args.device)
        .with_context(|| format!("--device {:?}", args.device))?;
    let backend = cram_pretrain::train::backend_name(&device);
    let gpu = !cram_model::is_host(&device);
    let card = args
        .card
        .clone()
        .or_else(|| gpu.then(nvidia_smi_name).flatten());
    let peak = args
        .peak_tflops
        .or_else(|| card.as_deref().and_then(peak_tflops));
    let fusion_here = fusion_enabled();
    if args.fusion == FusionMode::Off && fusion_here && gpu {
        bail!(
            "--fusion off: set BURN_FUSION_MAX_EXPLORATIONS=0 for this process, or use \
             --fusion both (which runs a child without fusion)"
        );
    }
    println!(
        "cram bench: {}, micro-batch {} x {} tokens, {} steps after {} warm-up, device \
         {device:?} ({backend}){}",
        args.arch,
        args.micro_batch,
        config.max_seq_length,
        args.steps,
        args.warmup,
        card.as_deref()
            .map(|c| format!(", card {c}"))
            .unwrap_or_default()
    );
    let mut rows = Vec::new();
    for name in &args.precisions {
        let spec: PrecisionSpec = serde_json::from_value(serde_json::Value::String(name.clone()))
            .map_err(|_| {
            anyhow::anyhow!("--precision {name:?}: expected fp32, bf16 or auto")
        })?;
        let precision = spec.resolve(&device)?;
        let bench = StepBench {
            config: config.clone(),
            micro_batch: args.micro_batch,
            steps: args.steps,
            warmup: args.warmup,
            precision,
            shards: None,
        };
        let result = run_step_bench(&bench, &device)
            .with_context(|| format!("benchmark step in {}", precision.name()))?;
        if !(result.last_loss.is_finite() && result.first_loss.is_finite()) {
            bail!(
                "{}: the loss is not finite ({} -> {})",
                precision.name(),
                result.first_loss,
                result.last_loss
            );
        }
        let mfu = peak.map(|p| result.model_flops_per_second / (p * 1e12));
        if rows.is_empty() {
            println!("{} parameters", result.parameters);
        }
        let phases = match (
            result.forward_backward_seconds,
            result.gradient_sum_seconds,
            result.optimizer_seconds,
        ) {
            (Some(a), Some(b), Some(c)) => {
                format!("  (fwd+bwd {a:.4} s, grad sum {b:.4} s, optimizer {c:.4} s)")
            }
            _ => String::new(),
        };
        println!(
            "{:<5} fusion {:<3} {:>12.0} tokens/s  {:>8.4} s/step  MFU {}  peak memory {}  loss \
             {:.3} -> {:.3}{phases}",
            result.precision,
            if result.anatomy.fusion { "on" } else { "off" },
            result.tokens_per_second,
            result.seconds_per_step,
            mfu.map_or("n/a".to_string(), |m| format!("{:.1} %", 100.0 * m)),
            result.peak_memory_bytes.map_or("n/a".to_string(), bytes),
            result.first_loss,
            result.last_loss,
        );
        for line in anatomy_lines(&result.anatomy) {
            println!("{line}");
        }
        rows.push(Row {
            result: serde_json::to_value(&result).expect("bench result serialises"),
            mfu,
        });
    }
    if args.fusion == FusionMode::Both && fusion_here && gpu {
        println!("without fusion (a child process):");
        rows.extend(rows_without_fusion(args)?);
    }
    if let Some(path) = &args.json {
        let report = Report {
            tool: "cram".into(),
            arch: args.arch.clone(),
            device: format!("{device:?}"),
            backend,
            card,
            peak_tflops: peak,
            rows,
        };
        let text = serde_json::to_string_pretty(&report).expect("bench report serialises");
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peaks_by_card_name() {
        assert_eq!(peak_tflops("NVIDIA H200"), Some(989.4));
        assert_eq!(peak_tflops("NVIDIA H100 80GB HBM3"), Some(989.4));
        assert_eq!(peak_tflops("NVIDIA H100 PCIe"), Some(756.0));
        assert_eq!(peak_tflops("NVIDIA A100-SXM4-80GB"), Some(312.0));
        assert_eq!(peak_tflops("NVIDIA L40S"), Some(362.1));
        assert_eq!(peak_tflops("llvmpipe"), None);
    }
}
