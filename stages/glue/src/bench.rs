//! Steady-state throughput of the fine-tuning step (forward and backward over the batch's row
//! shards, gradient sum, AdamW) as [`crate::run_task`] trains: `GLUE_sane`'s optimizer
//! settings, dropout on, batches padded to their longest row. Used by
//! `cargo bench -p cram-glue --bench glue_step`, beside our PyTorch implementation of the same
//! step (`scripts/bench/glue_step.py`), which builds its batches by the same formulas.

use std::time::Instant;

use burn::module::Module;
use burn::tensor::Device;
use cram_model::{ClassificationModel, ModelConfig};
use serde::Serialize;

use crate::data::{Example, Label};
use crate::encode::pad_batch;
use crate::error::{GlueError, Result};
use crate::params::GlueParams;
use crate::step::Trainer;
use crate::task::GlueTask;

/// What to measure.
#[derive(Debug, Clone)]
pub struct GlueStepBench {
    /// The encoder's architecture (its dropout probabilities are used as they are).
    pub config: ModelConfig,
    /// Classes of the head.
    pub num_labels: usize,
    /// Sequences per step.
    pub batch: usize,
    /// Fewest and most real tokens of a row ([`bench_length`]).
    pub lengths: (usize, usize),
    /// Timed steps.
    pub steps: usize,
    /// Untimed steps first.
    pub warmup: usize,
    /// Row shards per batch on the CPU ([`GlueParams::cpu_shards`]).
    pub cpu_shards: usize,
}

/// What was measured.
#[derive(Debug, Clone, Serialize)]
pub struct GlueStepResult {
    /// Scalar parameters of the classifier.
    pub parameters: usize,
    /// Sequences per step.
    pub batch: usize,
    /// Row shards the batches were split into.
    pub shards: usize,
    /// Mean padded length of the timed batches.
    pub mean_seq_len: f64,
    /// Mean seconds per timed step.
    pub seconds_per_step: f64,
    /// Training examples per second.
    pub examples_per_second: f64,
    /// The loss of the first and the last step.
    pub first_loss: f64,
    /// See `first_loss`.
    pub last_loss: f64,
}

/// Real tokens of row `row` in step `step` of the benchmark: spread over `lo..=hi` by a fixed
/// formula (the PyTorch script uses the same one), so both sides pad the same batches.
pub fn bench_length(step: usize, row: usize, lo: usize, hi: usize) -> usize {
    lo + ((step * 16 + row) * 7919) % (hi - lo + 1)
}

/// Token `pos` of row `row` in step `step` (ids from 5 up, past the special tokens).
pub fn bench_token(step: usize, row: usize, pos: usize, vocab: usize) -> u32 {
    (5 + (step * 131 + row * 31 + pos * 7) % (vocab - 5)) as u32
}

/// Runs the benchmark on `device` (without autodiff; it is added here).
pub fn run_glue_step_bench(bench: &GlueStepBench, device: &Device) -> Result<GlueStepResult> {
    let (lo, hi) = bench.lengths;
    if lo == 0 || hi < lo || hi > bench.config.max_seq_length || bench.batch == 0 {
        return Err(GlueError::Params(format!(
            "benchmark lengths {lo}..={hi} must lie in 1..={} and the batch must not be empty",
            bench.config.max_seq_length
        )));
    }
    let ad = device.clone().autodiff();
    let config = ModelConfig {
        num_labels: bench.num_labels,
        ..bench.config.clone()
    };
    let mut model = ClassificationModel::init(&config, 0, &ad)?;
    let parameters = model.num_params();
    let task = if bench.num_labels == 3 {
        GlueTask::Mnli
    } else {
        GlueTask::Sst2
    };
    let h = GlueParams::default().for_task(task)?;
    let mut trainer = Trainer::new(&h, bench.cpu_shards, 0, &ad);
    let rows: Vec<usize> = (0..bench.batch).collect();
    let vocab = config.vocab_size;
    let steps = bench.steps.max(1);
    let mut start = Instant::now();
    let (mut first_loss, mut last_loss) = (f64::NAN, f64::NAN);
    let mut padded = 0usize;
    for step in 0..bench.warmup + steps {
        let encoded: Vec<Vec<u32>> = rows
            .iter()
            .map(|&r| {
                (0..bench_length(step, r, lo, hi))
                    .map(|p| bench_token(step, r, p, vocab))
                    .collect()
            })
            .collect();
        let examples: Vec<Example> = rows
            .iter()
            .map(|&r| Example {
                idx: r as i64,
                text_a: String::new(),
                text_b: None,
                label: Label::Class((step + r) % bench.num_labels),
            })
            .collect();
        let batch = pad_batch(&encoded, &rows, config.pad_token_id as u32, 1);
        if step == bench.warmup {
            start = Instant::now();
        }
        if step >= bench.warmup {
            padded += batch.seq;
        }
        let (next, loss) = trainer.step(model, task, &batch, &rows, &examples, h.lr);
        model = next;
        if step == 0 {
            first_loss = loss;
        }
        last_loss = loss;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(GlueStepResult {
        parameters,
        batch: bench.batch,
        shards: cram_train::shard_count(&ad, bench.batch, bench.cpu_shards),
        mean_seq_len: padded as f64 / steps as f64,
        seconds_per_step: secs / steps as f64,
        examples_per_second: (steps * bench.batch) as f64 / secs,
        first_loss,
        last_loss,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_cover_the_range_and_the_step_trains() {
        let lens: Vec<usize> = (0..64).map(|r| bench_length(0, r, 8, 66)).collect();
        assert!(lens.iter().all(|&n| (8..=66).contains(&n)));
        assert!(lens.iter().min() < Some(&16) && lens.iter().max() > Some(&58));
        let bench = GlueStepBench {
            config: ModelConfig {
                num_layers: 1,
                vocab_size: 64,
                hidden_size: 32,
                num_heads: 2,
                intermed_size: 64,
                head_dim: 32,
                ..ModelConfig::tiny()
            },
            num_labels: 2,
            batch: 4,
            lengths: (3, 9),
            steps: 2,
            warmup: 1,
            cpu_shards: 2,
        };
        let r = run_glue_step_bench(&bench, &Device::flex()).unwrap();
        assert_eq!((r.batch, r.shards), (4, 2));
        assert!(r.first_loss.is_finite() && r.last_loss.is_finite());
        assert!(r.examples_per_second > 0.0);
    }
}
