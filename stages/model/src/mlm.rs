//! The masked-language model: encoder + tied decoder, sparse prediction (facts 5-6).

use burn::module::{Module, Param};
use burn::tensor::IndexingUpdateOp;
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::attention::AttentionKernel;
use crate::config::ModelConfig;
use crate::encoder::{Dense, Encoder, LayerNorm, NamedParam, gelu_closed_form};
use crate::error::ModelError;
use crate::init::{Init, ParamSource, RandomInit};
use crate::names;
use crate::precision::Precision;

/// Label value of positions the MLM loss ignores.
pub const IGNORE_INDEX: i64 = -100;

/// The optional MLM head transform of `bert-original`: dense `H -> H` with bias, GELU, LayerNorm.
#[derive(Module, Debug)]
pub struct HeadTransform {
    /// Dense `[H, H]` with bias.
    pub dense: Dense,
    /// LayerNorm.
    pub norm: LayerNorm,
}

/// Output of [`MlmModel::forward_loss`].
#[derive(Debug, Clone)]
pub struct MlmOutput {
    /// Mean cross-entropy over the labelled positions, shape `[1]` (0 when there are none).
    pub loss: Tensor<1>,
    /// Logits `[M, V]` at the `M` labelled positions, in row order `b*S + s`.
    pub logits: Tensor<2>,
    /// Number `M` of labelled positions.
    pub num_predictions: usize,
}

/// Encoder + tied MLM decoder (no bias and no head transform in crammed-bert).
#[derive(Module, Debug)]
pub struct MlmModel {
    /// The encoder.
    pub encoder: Encoder,
    /// Head transform (`bert-original` only).
    pub head_transform: Option<HeadTransform>,
    /// Decoder bias `[V]` (`bert-original` only).
    pub decoder_bias: Option<Param<Tensor<1>>>,
    /// Whether the decoder runs only on labelled rows (otherwise dense logits, then selected).
    pub sparse: bool,
    /// Precision of the decoder's product (see [`MlmModel::with_precision`]).
    #[module(skip)]
    pub precision: Precision,
}

impl MlmModel {
    /// A freshly initialised model (fact 9), deterministic in `seed`.
    pub fn init(config: &ModelConfig, seed: u64, device: &Device) -> Result<Self, ModelError> {
        let mut src = RandomInit::new(seed, config.init_std, device);
        Self::build(&mut src, config)
    }

    pub(crate) fn build(src: &mut dyn ParamSource, c: &ModelConfig) -> Result<Self, ModelError> {
        let encoder = Encoder::build(src, c)?;
        let head_transform = if c.head_transform {
            Some(HeadTransform {
                dense: Dense::build(
                    src,
                    names::HEAD_TRANSFORM_DENSE,
                    c.hidden_size,
                    c.hidden_size,
                    true,
                )?,
                norm: LayerNorm::build(src, names::HEAD_TRANSFORM_NORM, c.hidden_size, c.norm_eps)?,
            })
        } else {
            None
        };
        let decoder_bias = if c.decoder_bias {
            Some(src.param1(names::DECODER_BIAS, c.vocab_size, Init::Zeros)?)
        } else {
            None
        };
        Ok(Self {
            encoder,
            head_transform,
            decoder_bias,
            sparse: c.sparse_prediction > 0.0,
            precision: Precision::Fp32,
        })
    }

    /// The model with `kernel` in every attention layer.
    pub fn with_attention_kernel(mut self, kernel: AttentionKernel) -> Self {
        self.encoder.set_attention_kernel(kernel);
        self
    }

    /// The model with every matrix product (encoder, head transform, decoder) in `precision`;
    /// the weights are unchanged (fp32).
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.encoder.set_precision(precision);
        if let Some(t) = &mut self.head_transform {
            t.dense.precision = precision;
        }
        self.precision = precision;
        self
    }

    /// The encoder.
    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    /// Decoder logits `[N, V]` of hidden rows `[N, H]`: `h E^T (+ b)` after the optional transform.
    pub fn decode(&self, hidden: Tensor<2>) -> Tensor<2> {
        let hidden = match &self.head_transform {
            Some(t) => t.norm.forward(gelu_closed_form(t.dense.forward(hidden))),
            None => hidden,
        };
        let logits = self
            .precision
            .matmul(hidden, self.encoder.embedding.word.val().transpose());
        match &self.decoder_bias {
            Some(b) => logits + b.val().unsqueeze::<2>(),
            None => logits,
        }
    }

    /// Dense logits `[B*S, V]` (row `b*S + s`) for every position.
    pub fn forward_logits(&self, input_ids: Tensor<2, Int>) -> Tensor<2> {
        self.decode(self.encoder.forward_flat(input_ids, None))
    }

    /// MLM loss over the positions whose label is not [`IGNORE_INDEX`] (labels `[B, S]`).
    ///
    /// The labels are read back to the host to find the labelled rows; a caller that already
    /// knows them can use [`MlmModel::forward_loss_at`] and avoid the read.
    pub fn forward_loss(&self, input_ids: Tensor<2, Int>, labels: Tensor<2, Int>) -> MlmOutput {
        let device = labels.device();
        let flat: Vec<i64> = labels
            .into_data()
            .convert::<i64>()
            .try_into_vec::<i64>()
            .expect("integer labels");
        let (positions, targets) = labelled_rows(&flat);
        self.forward_loss_at(input_ids, &positions, &targets, &device)
    }

    /// MLM loss at the given flat rows `b*S + s` with the given target ids.
    pub fn forward_loss_at(
        &self,
        input_ids: Tensor<2, Int>,
        positions: &[i64],
        targets: &[i64],
        device: &Device,
    ) -> MlmOutput {
        assert_eq!(positions.len(), targets.len(), "one target per position");
        let m = positions.len();
        let hidden = self.encoder.forward_flat(input_ids, None);
        let [_, h] = hidden.dims();
        if m == 0 {
            let logits = self.decode(hidden.slice([0..0, 0..h]));
            return MlmOutput {
                loss: Tensor::zeros([1], device),
                logits,
                num_predictions: 0,
            };
        }
        let idx: Tensor<1, Int> =
            crate::traffic::upload(TensorData::new(positions.to_vec(), [m]), device);
        let logits = if self.sparse {
            self.decode(hidden.select(0, idx))
        } else {
            self.decode(hidden).select(0, idx)
        };
        let tgt: Tensor<2, Int> =
            crate::traffic::upload(TensorData::new(targets.to_vec(), [m, 1]), device);
        let loss = cross_entropy(logits.clone(), tgt);
        MlmOutput {
            loss,
            logits,
            num_predictions: m,
        }
    }

    /// Calls `f` with the contract name and a reference of every parameter, in a fixed order.
    pub fn visit_named(&self, f: &mut dyn FnMut(String, NamedParam<'_>)) {
        self.encoder.visit_named(f);
        if let Some(t) = &self.head_transform {
            t.dense.visit(names::HEAD_TRANSFORM_DENSE, f);
            t.norm.visit(names::HEAD_TRANSFORM_NORM, f);
        }
        if let Some(b) = &self.decoder_bias {
            f(names::DECODER_BIAS.to_string(), NamedParam::D1(b));
        }
    }
}

/// The flat rows and targets of labels `!= IGNORE_INDEX`.
pub fn labelled_rows(labels: &[i64]) -> (Vec<i64>, Vec<i64>) {
    labels
        .iter()
        .enumerate()
        .filter(|(_, l)| **l != IGNORE_INDEX)
        .map(|(i, l)| (i as i64, *l))
        .unzip()
}

/// Mean cross-entropy of `logits [M, C]` against `targets [M, 1]`, shape `[1]`.
///
/// burn's autodiff has no fused softmax: written with tensor ops, the loss costs a scalar
/// `exp` per logit plus a chain of elementwise passes forward and backward over the (large)
/// vocabulary logits. Since the loss is the end of the graph, its gradient is known in
/// closed form, `(softmax(x) - onehot(t)) / M`, so both are computed off the graph with the
/// backend's fused softmax, and the gradient is attached through a surrogate
/// `sum(x * stop(G))` whose value is cancelled out: the result equals the loss, and its
/// gradient with respect to `logits` is exactly `G`.
///
/// The loss itself is `logsumexp(x) - x[t]`, with `logsumexp(x) = max(x) - ln(max(softmax(x)))`
/// (the largest probability is at least `1/C`, so the logarithm never sees an underflow).
pub fn cross_entropy(logits: Tensor<2>, targets: Tensor<2, Int>) -> Tensor<1> {
    let [m, _] = logits.dims();
    let x = logits.clone().inner();
    let t = targets.inner();
    let probs = softmax(x.clone(), 1);
    let max_x = x.clone().max_dim(1);
    let max_p = probs.clone().max_dim(1);
    let picked = x.gather(1, t.clone());
    let loss = (max_x - picked - max_p.log()).mean();
    if !logits.is_tracked() {
        return if logits.is_autodiff() {
            Tensor::from_inner(loss)
        } else {
            loss
        };
    }
    let minus_one = Tensor::<2>::full([m, 1], -1.0, &t.device());
    let grad = probs
        .scatter(1, t, minus_one, IndexingUpdateOp::Add)
        .div_scalar(m as f32);
    let surrogate = (logits * Tensor::from_inner(grad)).sum();
    surrogate.clone() - surrogate.detach() + Tensor::from_inner(loss)
}

/// The straightforward cross-entropy through autodiff's own ops: the reference that
/// [`cross_entropy`] is tested against.
pub fn cross_entropy_reference(logits: Tensor<2>, targets: Tensor<2, Int>) -> Tensor<1> {
    let max = logits.clone().detach().max_dim(1);
    let picked = logits.clone().gather(1, targets);
    let lse = (logits - max.clone()).exp().sum_dim(1).log() + max;
    (lse - picked).mean()
}
