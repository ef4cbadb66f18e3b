//! Steady-state throughput of the pretraining step (forward, backward, gradient sum, AdamW) on
//! synthetic tokens, as the `pretrain` stage runs it: MLM rate 0.25, dropout off, global clip
//! 0.5. Shared by `cargo bench -p cram-pretrain` and `cram bench` (the GPU benchmark).

use std::time::Instant;

use burn::tensor::Device;
use cram_model::{MlmModel, ModelConfig, Precision};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::optim::{AdamW, AdamWConfig, GradAccumulator, host_f32};
use crate::shards::{forward_backward, shard_count};
use crate::{MlmCollator, PretrainError};

/// What to measure.
#[derive(Debug, Clone)]
pub struct StepBench {
    /// The architecture (dropout is switched off).
    pub config: ModelConfig,
    /// Sequences per step (one micro-batch per optimizer step).
    pub micro_batch: usize,
    /// Timed steps.
    pub steps: usize,
    /// Untimed steps first (kernel compilation, autotuning, allocator warm-up).
    pub warmup: usize,
    /// Precision of the matrix products.
    pub precision: Precision,
    /// Row shards per micro-batch (default: the `pretrain` kind's `cpu_shards` default on the
    /// CPU, one on a GPU).
    pub shards: Option<usize>,
}

/// What was measured.
#[derive(Debug, Clone, Serialize)]
pub struct StepBenchResult {
    /// Scalar parameters of the model.
    pub parameters: usize,
    /// Sequences per step.
    pub micro_batch: usize,
    /// Tokens per sequence.
    pub seq_len: usize,
    /// Timed steps.
    pub steps: usize,
    /// `fp32` or `bf16`.
    pub precision: String,
    /// Row shards per micro-batch.
    pub shards: usize,
    /// Mean seconds per timed step.
    pub seconds_per_step: f64,
    /// Tokens trained on per second.
    pub tokens_per_second: f64,
    /// `6 × parameters × tokens/s`, the FLOP rate that MFU divides by the card's peak.
    pub model_flops_per_second: f64,
    /// Per step: forward and backward passes, seconds.
    pub forward_backward_seconds: f64,
    /// Per step: summing the gradients, seconds.
    pub gradient_sum_seconds: f64,
    /// Per step: the optimizer, seconds.
    pub optimizer_seconds: f64,
    /// The loss of the first and the last step (it must fall: the step is really training).
    pub first_loss: f32,
    /// See `first_loss`.
    pub last_loss: f32,
    /// Most bytes the device's memory pools held after a step (GPUs), else the process's peak
    /// resident memory.
    pub peak_memory_bytes: Option<u64>,
}

/// Runs the benchmark on `device` (without autodiff; it is added here).
pub fn run_step_bench(
    bench: &StepBench,
    device: &Device,
) -> Result<StepBenchResult, PretrainError> {
    let ad = device.clone().autodiff();
    let config = bench.config.clone().with_dropout(0.0);
    let (batch, seq, vocab) = (bench.micro_batch, config.max_seq_length, config.vocab_size);
    let shards = bench
        .shards
        .unwrap_or_else(|| shard_count(&ad, batch, crate::params::DEFAULT_CPU_SHARDS));
    let mut model = MlmModel::init(&config, 0, &ad)?.with_precision(bench.precision);
    let parameters = cram_model::num_params(&model);
    let mut optim = AdamW::new(AdamWConfig::default());
    let collator = MlmCollator {
        rate: 0.25,
        mask_id: 4,
        random_vocab: vocab as u32,
        seed: 0,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let steps = bench.steps.max(1);
    let host = cram_model::is_host(device);
    let mut peak_pool: Option<u64> = None;
    let mut start = Instant::now();
    let mut losses = Vec::new();
    let mut phases = [0.0f64; 3];
    for step in 0..bench.warmup + steps {
        if step == bench.warmup {
            start = Instant::now();
        }
        let tokens: Vec<u32> = (0..batch * seq)
            .map(|_| rng.random_range(5..vocab as u32))
            .collect();
        let b = collator.mask(&tokens, seq, (step * batch) as u64);
        let t0 = Instant::now();
        let (parts, loss) = forward_backward(&model, &b, shards, 1.0, &ad);
        // Reading the loss back synchronises the device, as the training loop does.
        let loss = host_f32(loss).map_err(|reason| PretrainError::Tensor {
            what: "loss".into(),
            reason,
        })?[0];
        let t1 = Instant::now();
        let mut grads = GradAccumulator::new();
        grads.add_shards(parts.into_iter().map(Into::into));
        let t2 = Instant::now();
        let (next, report) = optim.step(model, grads, 1e-3);
        model = next;
        host_f32(report.grad_norm).map_err(|reason| PretrainError::Tensor {
            what: "gradient norm".into(),
            reason,
        })?;
        let t3 = Instant::now();
        if step >= bench.warmup {
            phases[0] += (t1 - t0).as_secs_f64();
            phases[1] += (t2 - t1).as_secs_f64();
            phases[2] += (t3 - t2).as_secs_f64();
        }
        if !host && let Some(usage) = device.memory_pool_usage() {
            peak_pool = Some(peak_pool.unwrap_or(0).max(usage.bytes_reserved));
        }
        losses.push(loss);
    }
    let secs = start.elapsed().as_secs_f64();
    let tokens_per_second = (steps * batch * seq) as f64 / secs;
    let per = |x: f64| x / steps as f64;
    Ok(StepBenchResult {
        parameters,
        micro_batch: batch,
        seq_len: seq,
        steps,
        precision: bench.precision.name().into(),
        shards,
        seconds_per_step: per(secs),
        tokens_per_second,
        model_flops_per_second: 6.0 * parameters as f64 * tokens_per_second,
        forward_backward_seconds: per(phases[0]),
        gradient_sum_seconds: per(phases[1]),
        optimizer_seconds: per(phases[2]),
        first_loss: losses[0],
        last_loss: losses[losses.len() - 1],
        peak_memory_bytes: peak_pool.or_else(crate::train::peak_memory_bytes),
    })
}
