//! Data parallelism across CPU cores inside one micro-batch.
//!
//! burn's CPU backend (`flex`) runs its matrix products on every core, but its element-wise
//! kernels (norms, activations, softmax, the many small ops of the backward pass) on one: on
//! `crammed-bert` about half of a step's wall clock ran on a single core. Splitting a
//! micro-batch into row shards, running each shard's forward and backward pass on its own core
//! and summing the gradients keeps every core busy through those kernels too.
//!
//! The arithmetic is the micro-batch's: the loss is the mean over all selected positions, so
//! each shard's loss is weighted by its share of them and the gradients add up to the gradient
//! of the whole micro-batch's loss (up to the order of float summation).
//!
//! With dropout on, the training loop runs micro-batches whole: dropout masks come from the
//! backend's single random stream, which shards running at once would read in a varying order.
//!
//! Each shard but the first runs on a *replica* of the model: the same parameter values and
//! [`ParamId`](burn::module::ParamId)s, but fresh autodiff leaves. burn's autodiff keeps the
//! operations of graphs that share a leaf in one mutex-guarded graph; replicas keep the shards'
//! graphs apart, so their backward passes run at the same time.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Device, Gradients, Int, Tensor, TensorData};
use cram_model::MlmModel;
use rayon::prelude::*;

use crate::collator::MaskedBatch;

/// How many shards a micro-batch of `rows` is split into on `device`: `cpu_shards` on the CPU
/// (at most one per row), one on a GPU, whose kernels fill it on their own. Never the thread
/// count: the float sums of the gradients follow the layout, and a layout that followed the
/// machine would make the checkpoint follow it too.
pub fn shard_count(device: &Device, rows: usize, cpu_shards: usize) -> usize {
    if cram_model::is_host(device) {
        cpu_shards.clamp(1, rows.max(1))
    } else {
        1
    }
}

/// Splits `batch` into `shards` contiguous row groups of near-equal size (the first ones one
/// row larger), positions renumbered within each group. Empty groups are not returned.
pub fn split_rows(batch: &MaskedBatch, shards: usize) -> Vec<MaskedBatch> {
    let s = batch.seq_len;
    let shards = shards.clamp(1, batch.rows.max(1));
    let mut out = Vec::with_capacity(shards);
    let mut row = 0;
    for i in 0..shards {
        let rows = batch.rows / shards + usize::from(i < batch.rows % shards);
        if rows == 0 {
            continue;
        }
        let (lo, hi) = ((row * s) as i64, ((row + rows) * s) as i64);
        let first = batch.positions.partition_point(|&p| p < lo);
        let last = batch.positions.partition_point(|&p| p < hi);
        out.push(MaskedBatch {
            rows,
            seq_len: s,
            input_ids: batch.input_ids[row * s..(row + rows) * s].to_vec(),
            labels: batch.labels[row * s..(row + rows) * s].to_vec(),
            positions: batch.positions[first..last]
                .iter()
                .map(|p| p - lo)
                .collect(),
            targets: batch.targets[first..last].to_vec(),
        });
        row += rows;
    }
    out
}

/// A copy of `model` sharing its parameter values and ids, with fresh autodiff leaves.
pub fn replica(model: &MlmModel) -> MlmModel {
    model.clone().map(&mut FreshLeaves)
}

/// A copy of `model` on `device` (with autodiff), sharing its parameter ids, as fresh leaves
/// there: the replica a data-parallel device trains on.
pub fn replica_on(model: &MlmModel, device: &Device) -> MlmModel {
    model.clone().map(&mut OnDevice(device.clone()))
}

struct OnDevice(Device);

impl ModuleMapper for OnDevice {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let require_grad = tensor.is_require_grad();
        // The copy is an op on the graph; detached, it is a leaf of its own on the device.
        let mut moved = tensor.to_device(&self.0).detach();
        if require_grad {
            moved = moved.require_grad();
        }
        Param::from_mapped_value(id, moved, mapper)
    }
}

struct FreshLeaves;

impl ModuleMapper for FreshLeaves {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        // `detach` gives a new leaf node and keeps `require_grad`.
        Param::from_mapped_value(id, tensor.detach(), mapper)
    }
}

/// One shard's result: the model copy it ran on and the gradients of its weighted loss.
/// [`cram_train::GradAccumulator::add_shards`] takes them as `(model, gradients)` pairs
/// (`From`).
pub struct ShardGrads {
    /// The model (or replica) whose parameters the gradients belong to.
    pub model: MlmModel,
    /// Gradients of `scale * share * loss`.
    pub grads: Gradients,
}

impl From<ShardGrads> for (MlmModel, burn::tensor::Gradients) {
    fn from(s: ShardGrads) -> Self {
        (s.model, s.grads)
    }
}

/// Forward and backward passes of `batch` split into `shards` (see the module docs), each
/// shard's loss multiplied by `scale` (e.g. `1 / accumulation steps`) and its share of the
/// selected positions. Returns the shards' gradients and the micro-batch's mean loss (off the
/// graph, shape `[1]`).
pub fn forward_backward(
    model: &MlmModel,
    batch: &MaskedBatch,
    shards: usize,
    scale: f64,
    device: &Device,
) -> (Vec<ShardGrads>, Tensor<1>) {
    let parts = split_rows(batch, shards);
    let total = batch.positions.len().max(1) as f64;
    let models: Vec<MlmModel> = (0..parts.len())
        .map(|i| {
            if i == 0 {
                model.clone()
            } else {
                replica(model)
            }
        })
        .collect();
    let run = |(part, model): (&MaskedBatch, MlmModel)| {
        let ids = Tensor::<2, Int>::from_data(
            TensorData::new(part.input_ids.clone(), [part.rows, part.seq_len]),
            device,
        );
        let share = part.positions.len() as f64 / total;
        let loss = model
            .forward_loss_at(ids, &part.positions, &part.targets, device)
            .loss
            .mul_scalar(share);
        let detached = loss.clone().detach().inner();
        let grads = loss.mul_scalar(scale).backward();
        (ShardGrads { model, grads }, detached)
    };
    let results: Vec<(ShardGrads, Tensor<1>)> = if parts.len() == 1 {
        parts.iter().zip(models).map(run).collect()
    } else {
        parts
            .par_iter()
            .zip(models.into_par_iter())
            .map(run)
            .collect()
    };
    let mut loss: Option<Tensor<1>> = None;
    let mut out = Vec::with_capacity(results.len());
    for (g, l) in results {
        loss = Some(match loss {
            Some(t) => t + l,
            None => l,
        });
        out.push(g);
    }
    let loss = loss.unwrap_or_else(|| Tensor::zeros([1], &device.clone().inner()));
    (out, loss)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch() -> MaskedBatch {
        let s = 4;
        let rows = 5;
        let input_ids: Vec<i64> = (0..(rows * s) as i64).collect();
        let positions = vec![0, 3, 5, 9, 10, 11, 17, 19];
        let mut labels = vec![-100; rows * s];
        for &p in &positions {
            labels[p as usize] = 100 + p;
        }
        MaskedBatch {
            rows,
            seq_len: s,
            input_ids,
            targets: positions.iter().map(|p| 100 + p).collect(),
            labels,
            positions,
        }
    }

    #[test]
    fn rows_split_evenly_and_positions_are_renumbered() {
        let b = batch();
        let parts = split_rows(&b, 2);
        assert_eq!(parts.len(), 2);
        assert_eq!((parts[0].rows, parts[1].rows), (3, 2));
        assert_eq!(parts[0].positions, vec![0, 3, 5, 9, 10, 11]);
        assert_eq!(parts[1].positions, vec![5, 7]);
        assert_eq!(parts[1].targets, vec![117, 119]);
        assert_eq!(parts[1].input_ids[0], 12);
        for p in &parts {
            for (&pos, &t) in p.positions.iter().zip(&p.targets) {
                assert_eq!(p.labels[pos as usize], t, "label where the target is");
            }
        }
        assert_eq!(split_rows(&b, 1)[0], b);
        assert_eq!(split_rows(&b, 9).len(), 5, "at most one shard per row");
    }

    #[test]
    fn the_cpu_layout_is_the_parameter_not_the_pool() {
        let cpu = Device::flex().autodiff();
        assert!(cram_model::is_host(&cpu) && cram_model::is_host(&Device::flex()));
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                assert_eq!(shard_count(&cpu, 64, 8), 8);
                assert_eq!(shard_count(&cpu, 5, 8), 5, "at most one shard per row");
                assert_eq!(shard_count(&cpu, 1, 8), 1);
            });
        }
    }
}
