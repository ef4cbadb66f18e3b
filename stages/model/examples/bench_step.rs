//! Steady-state MLM training throughput (forward + backward + AdamW step, fp32, dropout off).
//!
//! `cargo run -p cram-model --example bench_step --release -- [preset] [batch] [steps] [device]`
//! e.g. `tiny 32 20 cpu` or `crammed-bert 8 5 cpu`. Prints tokens/s over the steps after two
//! warm-up steps. Not a test: the figures depend on the machine.

use std::time::Instant;

use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Int, Tensor, TensorData};
use cram_model::{MlmModel, ModelConfig, select_device};
use rand::{Rng, SeedableRng};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let preset = args.first().map(String::as_str).unwrap_or("tiny");
    let batch: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(32);
    let steps: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    let device_spec = args.get(3).map(String::as_str).unwrap_or("cpu");
    let config = ModelConfig::try_preset(preset)
        .expect("known preset")
        .with_dropout(0.0);
    let device = select_device(device_spec).expect("device").autodiff();
    let seq = config.max_seq_length;
    let mut model = MlmModel::init(&config, 0, &device).expect("model");
    let mut optim = AdamWConfig::new()
        .with_beta_1(0.9)
        .with_beta_2(0.98)
        .with_epsilon(1e-12)
        .with_weight_decay(0.01)
        .init();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let per_row = (0.25 * seq as f64).round() as usize;
    let mut timed = 0.0;
    for step in 0..steps + 2 {
        let mut ids: Vec<i64> = (0..batch * seq)
            .map(|_| rng.random_range(5..config.vocab_size as i64))
            .collect();
        let mut labels = vec![cram_model::IGNORE_INDEX; batch * seq];
        for b in 0..batch {
            for s in rand::seq::index::sample(&mut rng, seq, per_row) {
                labels[b * seq + s] = ids[b * seq + s];
                // Hide the target as the collator does (id 4 stands in for [MASK]).
                ids[b * seq + s] = 4;
            }
        }
        let t0 = Instant::now();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [batch, seq]), &device);
        let labels = Tensor::<2, Int>::from_data(TensorData::new(labels, [batch, seq]), &device);
        let out = model.forward_loss(ids, labels);
        let loss: f32 = out.loss.clone().into_scalar();
        let grads = GradientsParams::from_grads(out.loss.backward(), &model);
        model = optim.step(1e-3, model, grads);
        device.sync().expect("sync");
        let dt = t0.elapsed().as_secs_f64();
        if step >= 2 {
            timed += dt;
        }
        eprintln!("step {step}: loss {loss:.4}, {dt:.3} s");
    }
    let tokens = (steps * batch * seq) as f64;
    println!(
        "{preset} batch {batch} seq {seq} on {device_spec}: {:.1} tokens/s ({:.3} s/step)",
        tokens / timed,
        timed / steps as f64
    );
}
