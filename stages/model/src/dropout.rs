//! Dropout with masks of the caller's own seeding, independent of the backend's random stream.
//!
//! burn's `Dropout` draws its masks from the backend's one random stream (a process-wide,
//! mutex-guarded generator on the CPU backend). Two forward passes that run at once (the shards
//! of a batch on different cores, two GLUE tasks side by side) would read that stream in an
//! order that changes from run to run, and so would their masks and the fine-tuned weights.
//!
//! A [`DropoutStream`] names the masks instead: element `i` of the mask at dropout site `s` in
//! a pass over the rows `first_row..` of a batch is word `first_row * row_len + i` of the
//! ChaCha8 stream `s` under the step's seed. The mask of a batch row therefore depends only on
//! the seed, the site and the row's place in the batch: the shards of a batch draw exactly the
//! masks the whole batch would, whatever the split and however the threads run. The words are
//! generated in parallel chunks (ChaCha is seekable), so the masks cost less than burn's,
//! whose single generator runs on one core.
//!
//! Kept values are scaled by `1 / (1 - p)` in the mask itself, so applying it is one
//! multiplication (burn's layer multiplies twice). An element is dropped when its 32-bit word is
//! below `p * 2^32`.
//!
//! Written here rather than taken from a crate: no crate offers dropout keyed by position, and
//! the generator is `rand_chacha`'s.

use burn::nn::Dropout;
use burn::tensor::{Tensor, TensorData};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// The dropout masks of one forward pass: the step's seed and the batch row the pass starts at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropoutStream {
    /// Seed of the optimizer step (derive one per step, e.g. with [`DropoutStream::step_seed`]).
    pub seed: u64,
    /// Index, within the whole batch, of the pass's first row (0 unless the pass is a shard).
    pub first_row: usize,
}

/// Mask elements generated per parallel work item.
const CHUNK: usize = 1 << 14;

impl DropoutStream {
    /// The stream of a whole batch under `seed`.
    pub fn new(seed: u64) -> Self {
        Self { seed, first_row: 0 }
    }

    /// The same stream for a shard whose first row is row `first_row` of the batch.
    pub fn at_row(self, first_row: usize) -> Self {
        Self { first_row, ..self }
    }

    /// A seed for optimizer step `step` of a run seeded `seed` (splitmix64 of the pair, so
    /// consecutive steps get unrelated streams).
    pub fn step_seed(seed: u64, step: u64) -> u64 {
        let mut z =
            (seed ^ 0x6472_6f70_6f75_7421).wrapping_add(step.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// The mask of site `site` for a tensor of `rows` batch rows of `row_len` elements each:
    /// `0` where dropped, `1 / (1 - prob)` where kept.
    pub fn mask(&self, site: u64, prob: f64, rows: usize, row_len: usize) -> Vec<f32> {
        let n = rows * row_len;
        let mut out = vec![0f32; n];
        if n == 0 {
            return out;
        }
        let threshold = (prob * 4_294_967_296.0).round().min(u32::MAX as f64) as u32;
        let keep = (1.0 / (1.0 - prob)) as f32;
        let mut base = ChaCha8Rng::seed_from_u64(self.seed);
        base.set_stream(site);
        let start = (self.first_row as u128) * (row_len as u128);
        out.par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(c, chunk)| {
                let mut rng = base.clone();
                rng.set_word_pos(start + (c * CHUNK) as u128);
                for v in chunk {
                    *v = if rng.next_u32() < threshold {
                        0.0
                    } else {
                        keep
                    };
                }
            });
        out
    }
}

/// Site numbers: the embedding, three per layer (attention probabilities, the attention
/// residual, the feed-forward residual), and the classifier's pooler.
pub(crate) mod site {
    /// After the embedding LayerNorm.
    pub const EMBEDDING: u64 = 0;
    /// The attention probabilities of layer `i`.
    pub fn attention(i: usize) -> u64 {
        1 + 3 * i as u64
    }
    /// The attention branch of layer `i`.
    pub fn attention_residual(i: usize) -> u64 {
        2 + 3 * i as u64
    }
    /// The feed-forward branch of layer `i`.
    pub fn ffn_residual(i: usize) -> u64 {
        3 + 3 * i as u64
    }
    /// After the classifier's pooler.
    pub const POOLER: u64 = 1 << 32;
}

/// `layer` applied to `x`, whose first dimension holds `rows` batch rows (flattened tensors
/// `[B*S, H]` pass `rows = B`): with masks from `stream` when one is given, from the backend's
/// stream (burn's own layer) otherwise. Like burn's layer it is the identity outside training
/// (an inference device, a frozen layer, `p = 0`).
pub(crate) fn apply<const D: usize>(
    layer: &Dropout,
    x: Tensor<D>,
    stream: Option<DropoutStream>,
    site: u64,
    rows: usize,
) -> Tensor<D> {
    let Some(stream) = stream else {
        return layer.forward(x);
    };
    if layer.prob == 0.0 || !layer.training.is_enabled() || !x.device().is_autodiff() {
        return x;
    }
    let shape = x.shape();
    let n = shape.num_elements();
    let rows = rows.max(1);
    debug_assert_eq!(n % rows, 0, "{n} elements are not {rows} whole rows");
    let mask = stream.mask(site, layer.prob, rows, n / rows);
    let mask: Tensor<D> = crate::traffic::upload(TensorData::new(mask, shape), &x.device());
    x * mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_draws_the_rows_the_whole_batch_draws() {
        let s = DropoutStream::new(7);
        let whole = s.mask(3, 0.1, 5, 40_000);
        let tail = s.at_row(2).mask(3, 0.1, 3, 40_000);
        assert_eq!(&whole[2 * 40_000..], &tail[..]);
        assert_ne!(whole, s.mask(4, 0.1, 5, 40_000), "sites draw apart");
        let other = DropoutStream::new(DropoutStream::step_seed(7, 1));
        assert_ne!(whole, other.mask(3, 0.1, 5, 40_000), "steps draw apart");
    }

    #[test]
    fn the_mask_drops_about_p_and_scales_what_it_keeps() {
        let m = DropoutStream::new(1).mask(0, 0.1, 10, 100_000);
        let dropped = m.iter().filter(|&&v| v == 0.0).count() as f64 / m.len() as f64;
        assert!((dropped - 0.1).abs() < 0.002, "dropped {dropped}");
        let keep = (1.0 / 0.9f64) as f32;
        assert!(m.iter().all(|&v| v == 0.0 || v == keep));
    }

    #[test]
    fn chunked_generation_is_the_sequential_stream() {
        let m = DropoutStream::new(9).mask(2, 0.5, 1, 3 * CHUNK + 17);
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        rng.set_stream(2);
        let seq: Vec<f32> = (0..m.len())
            .map(|_| if rng.next_u32() < 1 << 31 { 0.0 } else { 2.0 })
            .collect();
        assert_eq!(m, seq);
    }
}
