//! Steady-state training throughput: forward + backward + AdamW step (MLM rate 0.25, fp32,
//! dropout off, global clip 0.5), as the `pretrain` stage runs it.
//!
//! ```text
//! cargo bench -p cram-pretrain --bench train_step
//! CRAM_BENCH=tiny CRAM_BENCH_STEPS=20 CRAM_BENCH_DEVICE=cpu cargo bench -p cram-pretrain --bench train_step
//! ```
//! `CRAM_BENCH` picks the configs (`tiny`, `crammed-bert`, comma-separated; both by default),
//! `CRAM_BENCH_STEPS` the timed steps, `CRAM_BENCH_DEVICE` the device (`cpu` by default;
//! `vulkan:0` with `--features vulkan`), `CRAM_BENCH_MICRO_BATCH` overrides the micro-batch.
//! Reference: PyTorch 2.x on the same 2-core CPU, fp32: 27,246 tok/s (`tiny`, batch 32) and
//! 294.5 tok/s (`crammed-bert`, micro-batch 8).

use std::time::Instant;

use cram_model::{MlmModel, ModelConfig};
use cram_pretrain::shards::{forward_backward, shard_count};
use cram_pretrain::{AdamW, AdamWConfig, GradAccumulator, MlmCollator};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

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
    let ad = device.clone().autodiff();
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
    println!("device {device:?}");
    for case in cases
        .iter()
        .filter(|c| wanted.split(',').any(|w| w.trim() == c.name))
    {
        let batch = env_usize("CRAM_BENCH_MICRO_BATCH").unwrap_or(case.batch);
        let steps = env_usize("CRAM_BENCH_STEPS").unwrap_or(case.steps).max(1);
        let shards = env_usize("CRAM_BENCH_SHARDS").unwrap_or_else(|| shard_count(&ad, batch));
        let config = case.config.clone().with_dropout(0.0);
        let seq = config.max_seq_length;
        let vocab = config.vocab_size;
        let mut model = MlmModel::init(&config, 0, &ad).expect("model");
        let mut optim = AdamW::new(AdamWConfig::default());
        let collator = MlmCollator {
            rate: 0.25,
            mask_id: 4,
            random_vocab: vocab as u32,
            seed: 0,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let warmup = 2;
        let mut start = Instant::now();
        let mut losses = Vec::new();
        let mut phases = [0.0f64; 3];
        for step in 0..warmup + steps {
            if step == warmup {
                start = Instant::now();
            }
            let tokens: Vec<u32> = (0..batch * seq)
                .map(|_| rng.random_range(5..vocab as u32))
                .collect();
            let b = collator.mask(&tokens, seq, (step * batch) as u64);
            let t0 = Instant::now();
            let (parts, loss) = forward_backward(&model, &b, shards, 1.0, &ad);
            // Reading the loss back synchronises the device, as the training loop does.
            let l: f32 = loss
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .unwrap()[0];
            let t1 = Instant::now();
            let mut grads = GradAccumulator::new();
            grads.add_shards(parts);
            let t2 = Instant::now();
            let (next, report) = optim.step(model, grads, 1e-3);
            model = next;
            let _ = report.grad_norm.into_data();
            let t3 = Instant::now();
            if step >= warmup {
                phases[0] += (t1 - t0).as_secs_f64();
                phases[1] += (t2 - t1).as_secs_f64();
                phases[2] += (t3 - t2).as_secs_f64();
            }
            losses.push(l);
        }
        let secs = start.elapsed().as_secs_f64();
        let tps = (steps * batch * seq) as f64 / secs;
        println!(
            "{:<13} batch {:>3} x seq {}: {:.3} s/step, {:>9.1} tokens/s (PyTorch CPU {:.1}: ratio {:.2}); loss {:.3} -> {:.3}",
            case.name,
            batch,
            seq,
            secs / steps as f64,
            tps,
            case.pytorch_tokens_per_second,
            tps / case.pytorch_tokens_per_second,
            losses[0],
            losses[losses.len() - 1]
        );
        println!(
            "{:<13} per step: forward+backward {:.3} s ({} shards), gradient sum {:.3} s, optimizer {:.3} s",
            "",
            phases[0] / steps as f64,
            shards,
            phases[1] / steps as f64,
            phases[2] / steps as f64
        );
    }
}
