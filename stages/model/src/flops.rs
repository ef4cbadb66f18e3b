//! Floating-point operations of a training step, counted from the architecture: the matrix
//! products (which are nearly all of a transformer's arithmetic), forward and backward.
//!
//! A product of an `[m, k]` by a `[k, n]` matrix costs `2·m·k·n` operations forward and twice
//! that backward (the gradients of both operands), so a training step costs three times its
//! forward products. Element-wise work (norms, softmax, GELU, the optimizer) is left out, as
//! in the usual `6 × parameters × tokens` estimate; unlike that estimate, this counts the
//! attention products, which grow with the sequence length, and the decoder only where it runs
//! (the masked positions, with sparse prediction).

use crate::config::{FfnActivation, ModelConfig};

/// The matrix-product operations of one forward pass, by part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ForwardFlops {
    /// QKV and output projections, all layers.
    pub projections: u64,
    /// `Q·Kᵀ` and `P·V`, all layers.
    pub attention: u64,
    /// The feed-forward blocks, all layers.
    pub feed_forward: u64,
    /// The MLM head (transform, if any, and the tied decoder).
    pub decoder: u64,
}

impl ForwardFlops {
    /// Their sum.
    pub fn total(&self) -> u64 {
        self.projections + self.attention + self.feed_forward + self.decoder
    }

    /// A training step's products: the forward pass and a backward pass twice its cost.
    pub fn training(&self) -> u64 {
        3 * self.total()
    }
}

impl ModelConfig {
    /// The forward products of an MLM pass over `rows` sequences of `seq_len` tokens whose
    /// decoder runs on `predicted` positions (all `rows · seq_len` without sparse prediction).
    pub fn forward_flops(&self, rows: usize, seq_len: usize, predicted: usize) -> ForwardFlops {
        let (b, s) = (rows as u64, seq_len as u64);
        let t = b * s;
        let (h, i, v) = (
            self.hidden_size as u64,
            self.intermed_size as u64,
            self.vocab_size as u64,
        );
        let layers = self.num_layers as u64;
        let ffn_out = match self.ffn_activation {
            FfnActivation::GeluGlu => i / 2,
            FfnActivation::Gelu => i,
        };
        let decoded = if self.sparse_prediction > 0.0 {
            predicted as u64
        } else {
            t
        };
        let head = if self.head_transform {
            2 * decoded * h * h
        } else {
            0
        };
        ForwardFlops {
            projections: layers * (2 * t * h * 3 * h + 2 * t * h * h),
            attention: layers * 2 * (2 * b * s * s * h),
            feed_forward: layers * (2 * t * h * i + 2 * t * ffn_out * h),
            decoder: head + 2 * decoded * h * v,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crammed_bert_counts() {
        let c = ModelConfig::crammed_bert();
        let f = c.forward_flops(128, 128, 128 * 32);
        let t = 128u64 * 128;
        // 16 layers of 768: QKV 3·768², output 768², FFN 768·3072 + 1536·768.
        assert_eq!(f.projections, 16 * 2 * t * 4 * 768 * 768);
        assert_eq!(f.feed_forward, 16 * 2 * t * (768 * 3072 + 1536 * 768));
        assert_eq!(f.attention, 16 * 4 * 128 * 128 * 128 * 768);
        assert_eq!(f.decoder, 2 * 128 * 32 * 768 * 32768);
        assert_eq!(f.training(), 3 * f.total());
        // Within a few percent of 6·N·T for the non-embedding parameters plus the decoder.
        let per_token = f.training() as f64 / t as f64;
        assert!(
            per_token > 6.0 * 85e6 && per_token < 6.0 * 120e6,
            "{per_token:e}"
        );
    }
}
