//! Data parallelism across CPU cores inside one micro-batch: the MLM side of
//! [`cram_train::shards`] (the row split of a masked batch and its weighted loss).
//!
//! The loss is the mean over all selected positions, so each shard's loss is weighted by its
//! share of them and the gradients add up to the gradient of the whole micro-batch's loss (up
//! to the order of float summation).
//!
//! With dropout on, the training loop runs micro-batches whole: pretraining's dropout masks
//! come from the backend's single random stream, which shards running at once would read in a
//! varying order.

use burn::tensor::{Device, Gradients, Int, Tensor, TensorData};
use cram_model::MlmModel;
pub use cram_train::shards::{replica_on, shard_count};

use crate::collator::MaskedBatch;

/// Splits `batch` into `shards` contiguous row groups of near-equal size (the first ones one
/// row larger, [`cram_train::row_ranges`]), positions renumbered within each group. Empty
/// groups are not returned.
pub fn split_rows(batch: &MaskedBatch, shards: usize) -> Vec<MaskedBatch> {
    let s = batch.seq_len;
    cram_train::row_ranges(batch.rows, shards)
        .into_iter()
        .map(|r| {
            let (lo, hi) = ((r.start * s) as i64, (r.end * s) as i64);
            let first = batch.positions.partition_point(|&p| p < lo);
            let last = batch.positions.partition_point(|&p| p < hi);
            MaskedBatch {
                rows: r.len(),
                seq_len: s,
                input_ids: batch.input_ids[r.start * s..r.end * s].to_vec(),
                labels: batch.labels[r.start * s..r.end * s].to_vec(),
                positions: batch.positions[first..last]
                    .iter()
                    .map(|p| p - lo)
                    .collect(),
                targets: batch.targets[first..last].to_vec(),
            }
        })
        .collect()
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
///
/// A shard with no selected position has no loss and is not run (its share is 0); a
/// micro-batch with none at all (tiny `mlm_rate`, rows of one token) returns no gradients and
/// a loss of 0: it contributes nothing to the step, as it contributes nothing to the loss.
pub fn forward_backward(
    model: &MlmModel,
    batch: &MaskedBatch,
    shards: usize,
    scale: f64,
    device: &Device,
) -> (Vec<ShardGrads>, Tensor<1>) {
    let mut parts = split_rows(batch, shards);
    parts.retain(|p| !p.positions.is_empty());
    let total = batch.positions.len().max(1) as f64;
    if parts.is_empty() {
        return (Vec::new(), Tensor::zeros([1], &device.clone().inner()));
    }
    let results = cram_train::run_shards(model, parts.len(), |i, model: MlmModel| {
        let part = &parts[i];
        let ids: Tensor<2, Int> = cram_model::traffic::upload(
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
    });
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
}
