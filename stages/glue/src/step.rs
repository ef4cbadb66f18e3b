//! One fine-tuning update with cram-train's kit: the padded batch split into row shards that
//! run forward and backward at once, their gradients summed on the host, one fused AdamW step.
//!
//! Dropout masks come from a [`DropoutStream`] seeded by the run's seed and the update's
//! number, so they depend on neither the shard layout nor the threads: two tasks trained side
//! by side draw what each would draw alone.

use burn::tensor::{Device, TensorData};
use cram_model::{ClassificationModel, DropoutStream};
use cram_train::{AdamW, AdamWConfig, Decay, GradAccumulator, row_ranges, run_shards, shard_count};

use crate::data::Example;
use crate::encode::HostBatch;
use crate::params::TaskHyperparameters;
use crate::predict::label_tensor;
use crate::task::GlueTask;

/// The optimizer and the batch layout of one task's fine-tuning.
pub(crate) struct Trainer {
    optim: AdamW,
    cpu_shards: usize,
    seed: u64,
    device: Device,
}

impl Trainer {
    /// AdamW with the task's settings (decay, when set, on every parameter as a single-group
    /// `torch.optim.AdamW` applies it; no clipping, as `GLUE_sane`), batches split into
    /// `cpu_shards` on the CPU, dropout seeded by `seed`, training on `device` (autodiff).
    pub(crate) fn new(
        h: &TaskHyperparameters,
        cpu_shards: usize,
        seed: u64,
        device: &Device,
    ) -> Self {
        let optim = AdamW::new(AdamWConfig {
            betas: (h.beta1, h.beta2),
            eps: h.eps,
            weight_decay: h.weight_decay,
            decay: Decay::All,
            grad_clip: None,
        });
        Self {
            optim,
            cpu_shards,
            seed,
            device: device.clone(),
        }
    }

    /// One update on `batch` (the examples `rows` of `examples`, padded together) at learning
    /// rate `lr`: the trained model and the batch's mean loss (NaN or infinite when training
    /// diverged; the model is then not to be used).
    pub(crate) fn step(
        &mut self,
        model: ClassificationModel,
        task: GlueTask,
        batch: &HostBatch,
        rows: &[usize],
        examples: &[Example],
        lr: f64,
    ) -> (ClassificationModel, f64) {
        let n = rows.len();
        let seq = batch.seq;
        let stream = DropoutStream::new(DropoutStream::step_seed(self.seed, self.optim.steps()));
        let ranges = row_ranges(n, shard_count(&self.device, n, self.cpu_shards));
        let device = &self.device;
        let results = run_shards(&model, ranges.len(), |i, shard: ClassificationModel| {
            let r = ranges[i].clone();
            let shape = [r.len(), seq];
            let cells = r.start * seq..r.end * seq;
            let ids = TensorData::new(batch.ids[cells.clone()].to_vec(), shape);
            let mask = TensorData::new(batch.mask[cells].to_vec(), shape);
            let logits = shard.forward_with(
                cram_model::traffic::upload(ids, device),
                Some(cram_model::traffic::upload(mask, device)),
                Some(stream.at_row(r.start)),
            );
            let labels = label_tensor(task, examples, &rows[r.clone()], device);
            // The loss is a mean over rows: weighted by its share of the batch, each shard's
            // gradients add up to the whole batch's.
            let share = r.len() as f64 / n as f64;
            let loss = ClassificationModel::loss(logits, labels).mul_scalar(share);
            let value = cram_model::traffic::read(loss.clone())
                .iter::<f32>()
                .next()
                .unwrap_or(f32::NAN) as f64;
            let grads = loss.backward();
            ((shard, grads), value)
        });
        let loss = results.iter().map(|(_, v)| v).sum::<f64>();
        let mut grads = GradAccumulator::new();
        grads.add_shards(results.into_iter().map(|(g, _)| g));
        let (model, _) = self.optim.step(model, grads, lr);
        (model, loss)
    }
}
