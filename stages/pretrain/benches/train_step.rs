//! Steady-state training throughput: forward + backward + AdamW step (MLM rate 0.25, dropout
//! off, global clip 0.5), as the `pretrain` stage runs it ([`cram_pretrain::bench`]).
//!
//! ```text
//! cargo bench -p cram-pretrain --bench train_step
//! CRAM_BENCH=tiny CRAM_BENCH_STEPS=20 CRAM_BENCH_DEVICE=cpu cargo bench -p cram-pretrain --bench train_step
//! ```
//! `CRAM_BENCH` picks the configs (`tiny`, `crammed-bert`, comma-separated; both by default),
//! `CRAM_BENCH_STEPS` the timed steps, `CRAM_BENCH_DEVICE` the device (`cpu` by default;
//! `vulkan:0` with `--features vulkan`), `CRAM_BENCH_MICRO_BATCH` overrides the micro-batch,
//! `CRAM_BENCH_PRECISION` the precision (`fp32` by default, or `bf16`).
//! Reference: PyTorch 2.x on the same 2-core CPU, fp32: 27,246 tok/s (`tiny`, batch 32) and
//! 294.5 tok/s (`crammed-bert`, micro-batch 8). GPUs: `scripts/gpu-bench.sh`.

use cram_model::{ModelConfig, Precision};
use cram_pretrain::bench::{StepBench, run_step_bench};

/// The allocator of the `cram` binary, so that the figures are the stage's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Case {
    name: &'static str,
    config: ModelConfig,
    batch: usize,
    steps: usize,
    pytorch_tokens_per_second: f64,
}

fn env_usize(key: &str) -> Option<usize> {
    std::env::var(key).ok().and_then(|v| v.parse().ok())
}

fn main() {
    cram_pretrain::alloc::retain_freed_memory();
    let wanted = std::env::var("CRAM_BENCH").unwrap_or_else(|_| "tiny,crammed-bert".into());
    let device_spec = std::env::var("CRAM_BENCH_DEVICE").unwrap_or_else(|_| "cpu".into());
    let device = cram_model::select_device(&device_spec).expect("device");
    let precision = match std::env::var("CRAM_BENCH_PRECISION").as_deref() {
        Ok("bf16") => Precision::Bf16,
        _ => Precision::Fp32,
    };
    let cases = [
        Case {
            name: "tiny",
            config: ModelConfig::tiny(),
            batch: 32,
            steps: 20,
            pytorch_tokens_per_second: 27_246.0,
        },
        Case {
            name: "crammed-bert",
            config: ModelConfig::crammed_bert(),
            batch: 8,
            steps: 3,
            pytorch_tokens_per_second: 294.5,
        },
    ];
    println!("device {device:?}, {}", precision.name());
    for case in cases
        .iter()
        .filter(|c| wanted.split(',').any(|w| w.trim() == c.name))
    {
        let bench = StepBench {
            config: case.config.clone(),
            micro_batch: env_usize("CRAM_BENCH_MICRO_BATCH").unwrap_or(case.batch),
            steps: env_usize("CRAM_BENCH_STEPS").unwrap_or(case.steps),
            warmup: 2,
            precision,
            shards: env_usize("CRAM_BENCH_SHARDS"),
        };
        let r = run_step_bench(&bench, &device).expect("benchmark step");
        println!(
            "{:<13} batch {:>3} x seq {}: {:.3} s/step, {:>9.1} tokens/s (PyTorch CPU {:.1}: ratio {:.2}); loss {:.3} -> {:.3}",
            case.name,
            r.micro_batch,
            r.seq_len,
            r.seconds_per_step,
            r.tokens_per_second,
            case.pytorch_tokens_per_second,
            r.tokens_per_second / case.pytorch_tokens_per_second,
            r.first_loss,
            r.last_loss
        );
        if let (Some(fb), Some(sum), Some(opt)) = (
            r.forward_backward_seconds,
            r.gradient_sum_seconds,
            r.optimizer_seconds,
        ) {
            println!(
                "{:<13} per step: forward+backward {fb:.3} s ({} shards), gradient sum {sum:.3} s, optimizer {opt:.3} s",
                "", r.shards
            );
        }
        if let Some(n) = r.anatomy.launches {
            println!(
                "{:<13} per step: {n} kernel launches, {} uploads, {} reads",
                "", r.anatomy.traffic.uploads, r.anatomy.traffic.reads
            );
        }
    }
}
