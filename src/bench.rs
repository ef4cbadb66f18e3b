//! `cram bench`: the pretraining step's throughput on synthetic tokens, as the GPU benchmark
//! (`scripts/gpu-bench.sh`) reports it: tokens/s, MFU against the card's dense bf16 peak, and
//! peak memory, for each precision asked for.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};
use cram_model::{ModelConfig, PrecisionSpec};
use cram_pretrain::bench::{StepBench, StepBenchResult, run_step_bench};
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

/// What `cram bench` measures.
#[derive(Debug, Clone)]
pub struct BenchArgs {
    /// Architecture preset.
    pub arch: String,
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
    /// Peak for MFU, TFLOP/s.
    pub peak_tflops: Option<f64>,
    /// The card's name.
    pub card: Option<String>,
    /// JSON output file.
    pub json: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Row {
    #[serde(flatten)]
    result: StepBenchResult,
    mfu: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Report {
    tool: &'static str,
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

/// Runs the benchmark and prints one line per precision.
pub fn run(args: &BenchArgs) -> Result<()> {
    let config = ModelConfig::try_preset(&args.arch).context("--arch")?;
    let device = cram_model::select_device(&args.device)
        .with_context(|| format!("--device {:?}", args.device))?;
    let backend = cram_pretrain::train::backend_name(&device);
    let card = args.card.clone().or_else(|| {
        (!cram_model::is_host(&device))
            .then(nvidia_smi_name)
            .flatten()
    });
    let peak = args
        .peak_tflops
        .or_else(|| card.as_deref().and_then(peak_tflops));
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
        println!(
            "{:<5} {:>12.0} tokens/s  {:>8.4} s/step  MFU {}  peak memory {}  loss {:.3} -> {:.3}  \
             (fwd+bwd {:.4} s, grad sum {:.4} s, optimizer {:.4} s)",
            result.precision,
            result.tokens_per_second,
            result.seconds_per_step,
            mfu.map_or("n/a".to_string(), |m| format!("{:.1} %", 100.0 * m)),
            result
                .peak_memory_bytes
                .map_or("n/a".to_string(), |b| format!(
                    "{:.2} GiB",
                    b as f64 / (1u64 << 30) as f64
                )),
            result.first_loss,
            result.last_loss,
            result.forward_backward_seconds,
            result.gradient_sum_seconds,
            result.optimizer_seconds,
        );
        rows.push(Row { result, mfu });
    }
    if let Some(path) = &args.json {
        let report = Report {
            tool: "cram",
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
