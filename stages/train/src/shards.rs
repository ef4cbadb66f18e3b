//! Data parallelism across CPU cores inside one batch, for every training stage.
//!
//! burn's CPU backend (`flex`) runs its matrix products on every core, but its element-wise
//! kernels (norms, activations, softmax, dropout, the many small ops of the backward pass) on
//! one. Splitting a batch into row shards, running each shard's forward and backward pass on its
//! own core and summing the gradients ([`crate::GradAccumulator::add_shards`]) keeps every core
//! busy through those kernels too. The caller weights each shard's loss by its share of the
//! batch, so the gradients add up to the whole batch's (up to the order of float summation).
//!
//! Each shard but the first runs on a *replica* of the model: the same parameter values and
//! [`ParamId`](burn::module::ParamId)s, but fresh autodiff leaves. burn's autodiff keeps the
//! operations of graphs that share a leaf in one mutex-guarded graph; replicas keep the shards'
//! graphs apart, so their backward passes run at the same time.

use std::ops::Range;

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Device, Tensor};
use rayon::prelude::*;

/// How many shards a batch of `rows` is split into on `device`: `cpu_shards` on the CPU (at
/// most one per row), one on a GPU, whose kernels fill it on their own. Never the thread count:
/// the float sums of the gradients follow the layout, and a layout that followed the machine
/// would make the trained weights follow it too.
pub fn shard_count(device: &Device, rows: usize, cpu_shards: usize) -> usize {
    if cram_model::is_host(device) {
        cpu_shards.clamp(1, rows.max(1))
    } else {
        1
    }
}

/// `shards` contiguous row ranges of near-equal size covering `0..rows` (the first ones one row
/// larger); empty ranges are left out.
pub fn row_ranges(rows: usize, shards: usize) -> Vec<Range<usize>> {
    let shards = shards.clamp(1, rows.max(1));
    let mut out = Vec::with_capacity(shards);
    let mut start = 0;
    for i in 0..shards {
        let n = rows / shards + usize::from(i < rows % shards);
        if n > 0 {
            out.push(start..start + n);
        }
        start += n;
    }
    out
}

/// A copy of `model` sharing its parameter values and ids, with fresh autodiff leaves.
pub fn replica<M: Module>(model: &M) -> M {
    model.clone().map(&mut FreshLeaves)
}

/// A copy of `model` on `device` (with autodiff), sharing its parameter ids, as fresh leaves
/// there: the replica a data-parallel device trains on. burn's `fork` moves the constant
/// tensors too (the sinusoid table), which a parameter mapper never visits.
pub fn replica_on<M: Module>(model: &M, device: &Device) -> M {
    model.clone().fork(device)
}

/// Runs `f(shard, model)` for shards `0..shards` at once, shard 0 on `model` itself (a clone)
/// and every other on a [`replica`]; results in shard order. One shard runs on the calling
/// thread.
pub fn run_shards<M, T, F>(model: &M, shards: usize, f: F) -> Vec<T>
where
    M: Module + Send,
    T: Send,
    F: Fn(usize, M) -> T + Sync,
{
    let models: Vec<(usize, M)> = (0..shards.max(1))
        .map(|i| {
            (
                i,
                if i == 0 {
                    model.clone()
                } else {
                    replica(model)
                },
            )
        })
        .collect();
    if models.len() == 1 {
        models.into_iter().map(|(i, m)| f(i, m)).collect()
    } else {
        models.into_par_iter().map(|(i, m)| f(i, m)).collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_the_rows_evenly() {
        assert_eq!(row_ranges(5, 2), vec![0..3, 3..5]);
        assert_eq!(row_ranges(16, 3), vec![0..6, 6..11, 11..16]);
        assert_eq!(
            row_ranges(2, 8),
            vec![0..1, 1..2],
            "at most one shard per row"
        );
        assert_eq!(row_ranges(7, 1), vec![0..7]);
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
