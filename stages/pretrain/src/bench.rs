//! Steady-state throughput of the pretraining step (forward, backward, gradient sum, AdamW) on
//! synthetic tokens, as the `pretrain` stage runs it: MLM rate 0.25, dropout off, global clip
//! 0.5, and no read of the device inside a step (the loss stays there and is read once the
//! timed steps are over, as the training loop reads it only at log steps). Shared by
//! `cargo bench -p cram-pretrain` and `cram bench` (the GPU benchmark).
//!
//! The step's anatomy ([`StepAnatomy`]) is what one timed step asked of the device: kernels
//! launched (by family), uploads, reads and waits, the memory the device's pools hold, and the
//! step's matrix-product operations.

use std::time::Instant;

use burn::tensor::{Device, Tensor};
use cram_model::flops::ForwardFlops;
use cram_model::traffic::{LaunchCounter, Traffic};
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
    /// The architecture (dropout is switched off); its `max_seq_length` is the rows' length.
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

/// What one training step asked of the device (the last timed step).
#[derive(Debug, Clone, Serialize)]
pub struct StepAnatomy {
    /// Kernels launched (`None` on the CPU backend, which launches none).
    pub launches: Option<u64>,
    /// Launches by kernel family, most first.
    pub launches_by_kernel: Vec<(String, u64)>,
    /// Uploads, reads and explicit waits ([`Traffic`]).
    pub traffic: Traffic,
    /// Live allocations in the device's pools after the step (GPUs).
    pub allocations: Option<u64>,
    /// Bytes in use in the device's pools after the step (GPUs).
    pub bytes_in_use: Option<u64>,
    /// Bytes the pools reserve: what the step needed at its peak, since pools keep what they
    /// took (GPUs).
    pub bytes_reserved: Option<u64>,
    /// The step's matrix products, forward ([`ForwardFlops`]); training is three times their
    /// sum.
    pub forward_flops: ForwardFlops,
    /// `3 ×` the forward products: the step's operations.
    pub training_flops: u64,
    /// Whether burn's kernel fusion was on (GPU builds, unless `BURN_FUSION_MAX_EXPLORATIONS=0`).
    pub fusion: bool,
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
    /// The step's counted matrix products per second ([`StepAnatomy::training_flops`]).
    pub counted_flops_per_second: f64,
    /// Per step: forward and backward passes, seconds (CPU only: on a GPU a phase boundary
    /// would need a wait that the step does not make).
    pub forward_backward_seconds: Option<f64>,
    /// Per step: summing the gradients, seconds (CPU only).
    pub gradient_sum_seconds: Option<f64>,
    /// Per step: the optimizer, seconds (CPU only).
    pub optimizer_seconds: Option<f64>,
    /// The loss of the first and the last step (it must fall: the step is really training).
    pub first_loss: f32,
    /// See `first_loss`.
    pub last_loss: f32,
    /// Most bytes the device's memory pools held after a step (GPUs), else the process's peak
    /// resident memory.
    pub peak_memory_bytes: Option<u64>,
    /// The last timed step, taken apart.
    pub anatomy: StepAnatomy,
}

/// Whether burn's kernel fusion runs in this process: compiled in (the GPU features), and not
/// switched off with `BURN_FUSION_MAX_EXPLORATIONS=0` (what `cram bench` sets in the child that
/// measures the step without fusion).
pub fn fusion_enabled() -> bool {
    cfg!(any(feature = "cuda", feature = "vulkan"))
        && std::env::var("BURN_FUSION_MAX_EXPLORATIONS").map_or(true, |v| v.trim() != "0")
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
    let tensor_err = |what: &str| {
        let what = what.to_string();
        move |reason| PretrainError::Tensor { what, reason }
    };
    let mut peak_pool: Option<u64> = None;
    let mut start = Instant::now();
    let mut losses: Vec<Tensor<1>> = Vec::new();
    let mut phases = [0.0f64; 3];
    let mut anatomy = None;
    let total = bench.warmup + steps;
    for step in 0..total {
        if step == bench.warmup {
            // Everything queued by the warm-up is done before the clock starts.
            cram_model::traffic::sync(device).map_err(tensor_err("warm-up"))?;
            start = Instant::now();
        }
        let tokens: Vec<u32> = (0..batch * seq)
            .map(|_| rng.random_range(5..vocab as u32))
            .collect();
        let b = collator.mask(&tokens, seq, (step * batch) as u64);
        let last = step + 1 == total;
        // The measured step starts and ends with the fusion queue handed to the device
        // (`flush`, which waits for nothing), so that its launches are its own.
        let before = if last {
            device
                .flush()
                .map_err(|e| tensor_err("flush")(format!("{e:?}")))?;
            Some((Traffic::now(), LaunchCounter::start()))
        } else {
            None
        };
        let t0 = Instant::now();
        let (parts, loss) = forward_backward(&model, &b, shards, 1.0, &ad);
        let t1 = Instant::now();
        let mut grads = GradAccumulator::new();
        grads.add_shards(parts.into_iter().map(Into::into));
        let t2 = Instant::now();
        let (next, _report) = optim.step(model, grads, 1e-3);
        model = next;
        let t3 = Instant::now();
        if let Some((traffic, launches)) = before {
            // Off the host, nothing has waited for the device yet: the step's work is queued
            // (some of it maybe run). What it launched and moved is counted as issued.
            device
                .flush()
                .map_err(|e| tensor_err("flush")(format!("{e:?}")))?;
            let traffic = Traffic::now().since(&traffic);
            let usage = (!host).then(|| device.memory_pool_usage()).flatten();
            anatomy = Some(StepAnatomy {
                launches: launches.as_ref().map(LaunchCounter::total),
                launches_by_kernel: launches
                    .as_ref()
                    .map(LaunchCounter::by_kernel)
                    .unwrap_or_default(),
                traffic,
                allocations: usage.as_ref().map(|u| u.number_allocs),
                bytes_in_use: usage.as_ref().map(|u| u.bytes_in_use),
                bytes_reserved: usage.as_ref().map(|u| u.bytes_reserved),
                forward_flops: config.forward_flops(batch, seq, b.positions.len()),
                training_flops: config
                    .forward_flops(batch, seq, b.positions.len())
                    .training(),
                fusion: fusion_enabled(),
            });
        }
        if step >= bench.warmup && host {
            phases[0] += (t1 - t0).as_secs_f64();
            phases[1] += (t2 - t1).as_secs_f64();
            phases[2] += (t3 - t2).as_secs_f64();
        }
        losses.push(loss);
    }
    // The timed steps end when the device has run them.
    cram_model::traffic::sync(device).map_err(tensor_err("the timed steps"))?;
    let secs = start.elapsed().as_secs_f64();
    if !host && let Some(usage) = device.memory_pool_usage() {
        peak_pool = Some(peak_pool.unwrap_or(0).max(usage.bytes_reserved));
    }
    let first_loss = host_f32(losses[0].clone()).map_err(tensor_err("loss"))?[0];
    let last_loss = host_f32(losses[losses.len() - 1].clone()).map_err(tensor_err("loss"))?[0];
    let anatomy = anatomy.expect("the last step is measured");
    let tokens_per_second = (steps * batch * seq) as f64 / secs;
    let per = |x: f64| host.then_some(x / steps as f64);
    Ok(StepBenchResult {
        parameters,
        micro_batch: batch,
        seq_len: seq,
        steps,
        precision: bench.precision.name().into(),
        shards,
        seconds_per_step: secs / steps as f64,
        tokens_per_second,
        model_flops_per_second: 6.0 * parameters as f64 * tokens_per_second,
        counted_flops_per_second: anatomy.training_flops as f64 * steps as f64 / secs,
        forward_backward_seconds: per(phases[0]),
        gradient_sum_seconds: per(phases[1]),
        optimizer_seconds: per(phases[2]),
        first_loss,
        last_loss,
        peak_memory_bytes: peak_pool.or_else(crate::train::peak_memory_bytes),
        anatomy,
    })
}
