//! Gradient accumulation over micro-batches and shards, off the autodiff graph, and the host
//! buffers it shares with the optimizer step ([`crate::optim`]).

use std::collections::HashMap;

use burn::module::ParamId;
use burn::tensor::{Device, Gradients, Tensor, TensorData};
use cram_model::{NamedModule, NamedParam};
use rayon::prelude::*;

/// The sum of a model's gradients over micro-batches, flattened per parameter, off the autodiff
/// graph. The caller scales each micro-batch's loss (by `1 / micro-batches`, as the reference
/// does) before its backward pass.
///
/// Gradients on the CPU backend are summed in host memory, in parallel over chunks (burn's CPU
/// kernels for element-wise ops run on one core); on a GPU they stay on the device.
#[derive(Debug, Default)]
pub struct GradAccumulator {
    pub(crate) grads: HashMap<ParamId, GradSum>,
    micro_batches: usize,
    /// Keep CPU gradients as tensors too (and so take the tensor-op optimizer step).
    device_only: bool,
}

/// One parameter's accumulated gradient.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per parameter: size does not matter
pub(crate) enum GradSum {
    Device(Tensor<1>),
    /// f32 values in host memory (burn's own buffer, read without a copy).
    Host {
        values: TensorData,
        device: Device,
    },
}

/// Elements per parallel work item of the host loops.
pub(crate) const CHUNK: usize = 1 << 15;

impl GradSum {
    pub(crate) fn tensor(&self) -> Tensor<1> {
        match self {
            Self::Device(t) => t.clone(),
            Self::Host { values, device } => Tensor::from_data(values.clone(), device),
        }
    }
}

/// `sum(x^2)`, in parallel over chunks; within a chunk 16 f32 partial sums (which the compiler
/// turns into SIMD lanes; a single f64 running sum is a serial chain of additions), across
/// chunks in f64, in chunk order: rayon's own `sum` groups partial sums by how work was stolen,
/// which would change the last bits from run to run.
fn sum_of_squares(x: &[f32]) -> f64 {
    const LANES: usize = 16;
    let partial: Vec<f64> = x
        .par_chunks(CHUNK)
        .map(|c| {
            let mut acc = [0f32; LANES];
            let mut blocks = c.chunks_exact(LANES);
            for b in &mut blocks {
                for (a, v) in acc.iter_mut().zip(b) {
                    *a += v * v;
                }
            }
            let tail: f64 = blocks.remainder().iter().map(|&v| (v * v) as f64).sum();
            acc.iter().map(|&a| a as f64).sum::<f64>() + tail
        })
        .collect();
    partial.iter().sum()
}

impl GradAccumulator {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty accumulator that keeps gradients as tensors even on the CPU backend, so that
    /// [`AdamW::step`] takes the tensor-op path it takes on a GPU (for tests and comparisons).
    pub fn on_device() -> Self {
        Self {
            device_only: true,
            ..Self::default()
        }
    }

    /// Adds the gradients of every parameter of `model` found in `grads` (consumed), as one
    /// micro-batch.
    pub fn add<M: NamedModule>(&mut self, model: &M, grads: Gradients) {
        self.sum_in(model, grads);
        self.micro_batches += 1;
    }

    /// Adds one micro-batch that ran split into shards, each on its own model copy (a replica
    /// sharing the parameters' ids): every shard's gradients, in the order given, counted as
    /// one micro-batch.
    pub fn add_shards<M: NamedModule>(&mut self, shards: impl IntoIterator<Item = (M, Gradients)>) {
        for (model, grads) in shards {
            self.sum_in(&model, grads);
        }
        self.micro_batches += 1;
    }

    fn sum_in<M: NamedModule>(&mut self, model: &M, mut grads: Gradients) {
        let acc = &mut self.grads;
        let device_only = self.device_only;
        model.visit_named(&mut |_, p| {
            let (id, g) = match p {
                NamedParam::D1(p) => (p.id, p.val().grad_remove(&mut grads)),
                NamedParam::D2(p) | NamedParam::D2T(p) => (
                    p.id,
                    p.val().grad_remove(&mut grads).map(|g| {
                        let n = g.shape().num_elements();
                        g.reshape([n])
                    }),
                ),
            };
            let Some(g) = g else { return };
            let device = g.device();
            let host = !device_only && cram_model::is_host(&device);
            let sum = match (acc.remove(&id), host) {
                (None, false) => GradSum::Device(g),
                (None, true) => GradSum::Host {
                    values: host_data(g),
                    device,
                },
                (Some(GradSum::Host { mut values, device }), true) => {
                    let g = host_data(g);
                    f32_slice_mut(&mut values)
                        .par_chunks_mut(CHUNK)
                        .zip(f32_slice(&g).par_chunks(CHUNK))
                        .for_each(|(a, b)| a.iter_mut().zip(b).for_each(|(a, b)| *a += b));
                    GradSum::Host { values, device }
                }
                // Sums stay where they started (the first device, with data parallelism).
                (Some(prev), _) => {
                    let prev = prev.tensor();
                    let at = prev.device();
                    GradSum::Device(prev + g.to_device(&at))
                }
            };
            acc.insert(id, sum);
        });
    }

    /// Multiplies every accumulated gradient by `factor` (an accumulation cut short keeps the
    /// mean over the micro-batches it has).
    pub fn scale(&mut self, factor: f64) {
        for g in self.grads.values_mut() {
            match g {
                GradSum::Device(t) => *t = t.clone().mul_scalar(factor),
                GradSum::Host { values, .. } => {
                    let f = factor as f32;
                    f32_slice_mut(values).par_iter_mut().for_each(|x| *x *= f);
                }
            }
        }
    }

    /// Micro-batches added so far.
    pub fn micro_batches(&self) -> usize {
        self.micro_batches
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.grads.is_empty()
    }

    /// Whether the sums are host vectors (the CPU path, summed and stepped by the fused host
    /// kernels); `false` when they are device tensors (the GPU path) or nothing was added.
    pub fn on_host(&self) -> bool {
        !self.grads.is_empty()
            && self
                .grads
                .values()
                .all(|g| matches!(g, GradSum::Host { .. }))
    }

    /// Whether this accumulator was made by [`GradAccumulator::on_device`].
    pub fn is_device_only(&self) -> bool {
        self.device_only
    }

    /// The accumulated (flattened) gradient of a parameter, as a tensor on its device.
    pub fn get(&self, id: &ParamId) -> Option<Tensor<1>> {
        self.grads.get(id).map(GradSum::tensor)
    }

    /// The global L2 norm of all gradients, shape `[1]`, left on the device.
    pub fn global_norm(&self) -> Option<Tensor<1>> {
        let first = self.grads.values().next()?;
        if let Some(norm) = self.host_norm() {
            let device = match first {
                GradSum::Host { device, .. } => device.clone(),
                GradSum::Device(t) => t.device(),
            };
            return Some(Tensor::from_data(
                TensorData::new(vec![norm as f32], [1]),
                &device,
            ));
        }
        self.grads
            .values()
            .map(|g| g.tensor().square().sum())
            .reduce(|a, b| a + b)
            .map(|t| t.sqrt())
    }

    /// The global L2 norm when every gradient is in host memory (`None` otherwise).
    pub(crate) fn host_norm(&self) -> Option<f64> {
        let mut sum = 0f64;
        for g in self.grads.values() {
            match g {
                GradSum::Host { values, .. } => sum += sum_of_squares(f32_slice(values)),
                GradSum::Device(_) => return None,
            }
        }
        Some(sum.sqrt())
    }
}

/// A host tensor's f32 values as burn's own buffer (no copy when the tensor is contiguous and
/// not shared).
pub(crate) fn host_data<const D: usize>(t: Tensor<D>) -> TensorData {
    t.into_data().convert::<f32>()
}

pub(crate) fn f32_slice(data: &TensorData) -> &[f32] {
    data.as_slice::<f32>().expect("f32 data")
}

pub(crate) fn f32_slice_mut(data: &mut TensorData) -> &mut [f32] {
    data.as_mut_slice::<f32>().expect("f32 data")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_of_squares_matches_f64_over_chunk_and_lane_tails() {
        for n in [0, 1, 15, 17, CHUNK - 1, CHUNK + 5, 3 * CHUNK + 123] {
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 7919) % 1000) as f32 / 250.0 - 2.0)
                .collect();
            let want: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
            let got = sum_of_squares(&x);
            assert!(
                (got - want).abs() <= 1e-6 * want.max(1e-30),
                "n {n}: {got} vs {want}"
            );
        }
    }
}
