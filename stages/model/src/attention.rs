//! The attention kernel: the explicit product–softmax–product, or burn's fused attention op.
//!
//! `explicit` computes `softmax(q kᵀ · scale + bias) v` as two matrix products around the
//! closed-form softmax ([`crate::encoder::softmax_closed_form`]), with dropout on the
//! probabilities. `fused` calls burn's `attention` op, which the backend implements as one
//! kernel (a flash-attention kernel on CPU and GPU backends) when no gradient is recorded:
//! scoring, GLUE's dev evaluation, inference. Under autodiff burn 0.22 records the same op
//! decomposed, so training keeps its arithmetic either way. The op has no dropout: with
//! attention dropout active in training (`attn_dropout > 0`, GLUE's fine-tuning) the explicit
//! path runs instead, so `fused` never changes what a model computes beyond float rounding.

use burn::tensor::Tensor;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::precision::Precision;

/// Which attention kernel a model runs (a run-time setting, like [`Precision`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AttentionKernel {
    /// Two matrix products around the closed-form softmax.
    #[default]
    Explicit,
    /// burn's fused attention op where it applies (see the module docs).
    Fused,
}

/// `softmax(q kᵀ · scale + bias) v` through burn's attention op, in `precision`; `q`, `k`, `v`
/// are `[B, heads, S, hd]`, `bias` the additive key mask `[B, 1, 1, S]`. Returns `[B, heads,
/// S, hd]` in fp32.
pub fn fused_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    bias: Option<&Tensor<4>>,
    scale: f32,
    precision: Precision,
) -> Tensor<4> {
    let [b, heads, s, _] = q.dims();
    let bias = bias.map(|t| t.clone().expand([b, heads, s, s]));
    let options = AttentionModuleOptions {
        scale: Some(scale as f64),
        softcap: None,
        is_causal: false,
    };
    match precision.compute_dtype() {
        None => attention(q, k, v, None, bias, options),
        Some(dt) => attention(
            q.cast(dt),
            k.cast(dt),
            v.cast(dt),
            None,
            bias.map(|t| t.cast(dt)),
            options,
        )
        .cast(burn::tensor::FloatDType::F32),
    }
}
