//! The crammed-bert encoder: embeddings, transformer layers, final LayerNorm.

use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};

pub use crate::activation::{gelu_closed_form, softmax_closed_form};
use crate::attention::{AttentionKernel, fused_attention};
use crate::config::{FfnActivation, ModelConfig, NormScheme, PositionEmbedding};
use crate::dropout::{self, DropoutStream, site};
use crate::error::ModelError;
use crate::init::{Init, ParamSource};
use crate::names;
use crate::precision::Precision;

/// The additive attention bias of a padded key (fact 3): `(1 - m) * -10000`.
pub const MASK_BIAS: f32 = -10000.0;

/// The interleaved sinusoid table `P[pos, 2j] = sin(pos * f_j)`, `P[pos, 2j+1] = cos(pos * f_j)`,
/// `f_j = exp(2j * (-ln(10000)/H))`, computed in f32 as the reference does (fact 1).
/// Returns `rows * hidden` values, row-major.
pub fn sinusoid_table(rows: usize, hidden: usize) -> Vec<f32> {
    // The reference multiplies a float32 `arange(0, H, 2)` by the Python float
    // `-ln(10000)/H`, which PyTorch rounds to float32 first.
    let step = (-(10000.0f64).ln() / hidden as f64) as f32;
    let freqs: Vec<f32> = (0..hidden / 2)
        .map(|j| ((2 * j) as f32 * step).exp())
        .collect();
    let mut table = vec![0.0f32; rows * hidden];
    for pos in 0..rows {
        let row = &mut table[pos * hidden..(pos + 1) * hidden];
        for (j, f) in freqs.iter().enumerate() {
            let angle = pos as f32 * f;
            row[2 * j] = angle.sin();
            row[2 * j + 1] = angle.cos();
        }
    }
    table
}

/// LayerNorm over the last dimension with affine weight and bias.
#[derive(Module, Debug)]
pub struct LayerNorm {
    /// Scale `[H]`, initialised to 1.
    pub weight: Param<Tensor<1>>,
    /// Shift `[H]`, initialised to 0.
    pub bias: Param<Tensor<1>>,
    /// Epsilon added to the variance.
    pub eps: f64,
}

impl LayerNorm {
    pub(crate) fn build(
        src: &mut dyn ParamSource,
        prefix: &str,
        dim: usize,
        eps: f64,
    ) -> Result<Self, ModelError> {
        Ok(Self {
            weight: src.param1(&names::weight(prefix), dim, Init::Ones)?,
            bias: src.param1(&names::bias(prefix), dim, Init::Zeros)?,
            eps,
        })
    }

    /// Normalises `x` over its last dimension.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        burn::tensor::module::layer_norm(x, self.weight.val(), Some(self.bias.val()), self.eps)
    }

    pub(crate) fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, NamedParam<'_>)) {
        f(names::weight(prefix), NamedParam::D1(&self.weight));
        f(names::bias(prefix), NamedParam::D1(&self.bias));
    }
}

/// A dense layer `y = x W^T (+ b)` with PyTorch's `weight` `[out, in]` in checkpoints.
///
/// The weight is held transposed, `[in, out]`: the product reads it as it lies and its gradient
/// (`x^T dy`) comes out contiguous. Held as `[out, in]`, its gradient is a transposed view that
/// every consumer (gradient sums, the optimizer) has to copy first. [`NamedParam::D2T`] gives
/// it back in the contract's layout.
#[derive(Module, Debug)]
pub struct Dense {
    /// Weight, transposed: `[in, out]`.
    pub weight_t: Param<Tensor<2>>,
    /// Optional bias `[out]`.
    pub bias: Option<Param<Tensor<1>>>,
    /// Precision of the product (run-time setting, see [`crate::precision`]).
    #[module(skip)]
    pub precision: Precision,
}

impl Dense {
    pub(crate) fn build(
        src: &mut dyn ParamSource,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
    ) -> Result<Self, ModelError> {
        Ok(Self {
            weight_t: src.param2_transposed(&names::weight(prefix), [d_out, d_in], Init::Normal)?,
            bias: if bias {
                Some(src.param1(&names::bias(prefix), d_out, Init::Zeros)?)
            } else {
                None
            },
            precision: Precision::Fp32,
        })
    }

    /// `x [N, in] -> [N, out]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let y = self.precision.matmul(x, self.weight_t.val());
        match &self.bias {
            Some(b) => y + b.val().unsqueeze::<2>(),
            None => y,
        }
    }

    pub(crate) fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, NamedParam<'_>)) {
        f(names::weight(prefix), NamedParam::D2T(&self.weight_t));
        if let Some(b) = &self.bias {
            f(names::bias(prefix), NamedParam::D1(b));
        }
    }
}

/// A reference to one parameter of either rank, as listed by the `named_params` walkers.
#[derive(Debug, Clone, Copy)]
pub enum NamedParam<'a> {
    /// A vector parameter (biases, norms, `pos_scale`).
    D1(&'a Param<Tensor<1>>),
    /// A matrix parameter held in the contract's layout (embeddings).
    D2(&'a Param<Tensor<2>>),
    /// A matrix parameter held transposed: the contract's `[r, c]` lies as `[c, r]` (dense
    /// weights, see [`Dense`]). [`NamedParam::shape`], [`NamedParam::to_vec`] and
    /// [`NamedParam::grad_vec`] give the contract's layout.
    D2T(&'a Param<Tensor<2>>),
}

impl NamedParam<'_> {
    /// The parameter's id (what burn's optimisers and gradients are keyed by).
    pub fn id(&self) -> burn::module::ParamId {
        match self {
            NamedParam::D1(p) => p.id,
            NamedParam::D2(p) | NamedParam::D2T(p) => p.id,
        }
    }

    /// The parameter's shape in the contract's layout.
    pub fn shape(&self) -> Vec<usize> {
        match (self, self.transposed_shape()) {
            (_, Some(contract)) => contract.to_vec(),
            (NamedParam::D1(p), None) => p.val().dims().to_vec(),
            (NamedParam::D2(p) | NamedParam::D2T(p), None) => p.val().dims().to_vec(),
        }
    }

    /// The contract's `[rows, cols]` of a parameter held transposed (`None` for the others).
    pub fn transposed_shape(&self) -> Option<[usize; 2]> {
        match self {
            NamedParam::D2T(p) => {
                let [c, r] = p.val().dims();
                Some([r, c])
            }
            _ => None,
        }
    }

    /// The current value, read back to the host as row-major f32 in the contract's layout.
    pub fn to_vec(&self) -> Result<Vec<f32>, String> {
        let data = match self {
            NamedParam::D1(p) => p.val().into_data(),
            NamedParam::D2(p) | NamedParam::D2T(p) => p.val().into_data(),
        };
        let values = data
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| format!("{e:?}"))?;
        Ok(self.in_contract_layout(values))
    }

    /// The gradient of this parameter in `grads`, as row-major f32 on the host in the
    /// contract's layout (`None` when the parameter received no gradient).
    pub fn grad_vec(&self, grads: &burn::tensor::Gradients) -> Option<Vec<f32>> {
        let data = match self {
            NamedParam::D1(p) => p.val().grad(grads)?.into_data(),
            NamedParam::D2(p) | NamedParam::D2T(p) => p.val().grad(grads)?.into_data(),
        };
        let values = data.convert::<f32>().try_into_vec::<f32>().ok()?;
        Some(self.in_contract_layout(values))
    }

    fn in_contract_layout(&self, values: Vec<f32>) -> Vec<f32> {
        match self.transposed_shape() {
            // Held as [c, r]: its transpose is the contract's [r, c].
            Some([r, c]) => crate::init::transpose(&values, c, r),
            None => values,
        }
    }
}

/// Word (+ position, + token type) embedding, LayerNorm and dropout (fact 1).
#[derive(Module, Debug)]
pub struct Embeddings {
    /// Word embedding `[V, H]`; also the tied MLM decoder.
    pub word: Param<Tensor<2>>,
    /// Learnable scale `[1]` of the sinusoid table (scaled-sinusoidal positions).
    pub pos_scale: Option<Param<Tensor<1>>>,
    /// The fixed sinusoid table `[max_seq_length, H]` (not a parameter).
    pub pos_table: Option<Tensor<2>>,
    /// Learned position table `[max_seq_length, H]` (learned positions).
    pub pos_learned: Option<Param<Tensor<2>>>,
    /// Token-type table `[type_vocab_size, H]`; row 0 is added everywhere.
    pub token_type: Option<Param<Tensor<2>>>,
    /// Embedding LayerNorm.
    pub norm: LayerNorm,
    /// Embedding dropout.
    pub dropout: Dropout,
    /// Padding token id: its lookups pass no gradient to the word embedding.
    pub pad_token_id: usize,
}

impl Embeddings {
    pub(crate) fn build(src: &mut dyn ParamSource, c: &ModelConfig) -> Result<Self, ModelError> {
        let h = c.hidden_size;
        let word = src.param2(
            names::WORD,
            [c.vocab_size, h],
            Init::NormalZeroRow(c.pad_token_id),
        )?;
        let (pos_scale, pos_table, pos_learned) = match c.position_embedding {
            PositionEmbedding::ScaledSinusoidal => {
                let scale =
                    src.param1(names::POS_SCALE, 1, Init::Const(1.0 / (h as f32).sqrt()))?;
                let table = Tensor::<2>::from_data(
                    TensorData::new(sinusoid_table(c.max_seq_length, h), [c.max_seq_length, h]),
                    src.device(),
                );
                (Some(scale), Some(table), None)
            }
            PositionEmbedding::Learned => {
                let table = src.param2(names::POS_LEARNED, [c.max_seq_length, h], Init::Normal)?;
                (None, None, Some(table))
            }
        };
        let token_type = if c.type_vocab_size > 0 {
            Some(src.param2(names::TOKEN_TYPE, [c.type_vocab_size, h], Init::Normal)?)
        } else {
            None
        };
        Ok(Self {
            word,
            pos_scale,
            pos_table,
            pos_learned,
            token_type,
            norm: LayerNorm::build(src, names::EMB_NORM, h, c.norm_eps)?,
            dropout: DropoutConfig::new(c.embedding_dropout).init(),
            pad_token_id: c.pad_token_id,
        })
    }

    /// The position term `[S, H]` added to every sequence (before the LayerNorm).
    pub fn positions(&self, seq: usize) -> Option<Tensor<2>> {
        if let (Some(scale), Some(table)) = (&self.pos_scale, &self.pos_table) {
            let [_, h] = table.dims();
            Some(table.clone().slice([0..seq, 0..h]) * scale.val().unsqueeze::<2>())
        } else {
            self.pos_learned.as_ref().map(|p| {
                let [_, h] = p.val().dims();
                p.val().slice([0..seq, 0..h])
            })
        }
    }

    /// `ids [B, S] -> [B, S, H]`.
    pub fn forward(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        self.forward_with(ids, None)
    }

    /// [`Embeddings::forward`] with dropout masks from `stream` (see [`crate::dropout`]).
    pub fn forward_with(&self, ids: Tensor<2, Int>, stream: Option<DropoutStream>) -> Tensor<3> {
        let [b, s] = ids.dims();
        let word_w = self.word.val();
        let [_, h] = word_w.dims();
        let looked_up = burn::tensor::module::embedding(word_w.clone(), ids.clone());
        // nn.Embedding(padding_idx): the pad row's value is used as is, but the lookup sends it
        // no gradient. Keep the gradient path only where the id is not the pad id and add the
        // detached pad row at pad positions.
        let keep = ids
            .not_equal_elem(self.pad_token_id as i64)
            .float()
            .unsqueeze_dim::<3>(2);
        let pad_row = word_w
            .detach()
            .slice([self.pad_token_id..self.pad_token_id + 1, 0..h])
            .unsqueeze::<3>();
        let drop = keep.clone().neg().add_scalar(1.0);
        let mut x = looked_up * keep + pad_row * drop;
        if let Some(pos) = self.positions(s) {
            x = x + pos.unsqueeze::<3>();
        }
        if let Some(tt) = &self.token_type {
            let row = tt.val().slice([0..1, 0..h]).unsqueeze::<3>();
            x = x + row;
        }
        dropout::apply(
            &self.dropout,
            self.norm.forward(x),
            stream,
            site::EMBEDDING,
            b,
        )
    }

    pub(crate) fn visit(&self, f: &mut dyn FnMut(String, NamedParam<'_>)) {
        f(names::WORD.to_string(), NamedParam::D2(&self.word));
        if let Some(p) = &self.pos_scale {
            f(names::POS_SCALE.to_string(), NamedParam::D1(p));
        }
        if let Some(p) = &self.pos_learned {
            f(names::POS_LEARNED.to_string(), NamedParam::D2(p));
        }
        if let Some(p) = &self.token_type {
            f(names::TOKEN_TYPE.to_string(), NamedParam::D2(p));
        }
        self.norm.visit(names::EMB_NORM, f);
    }
}

/// Multi-head self-attention with a fused, head-major QKV projection (fact 3).
#[derive(Module, Debug)]
pub struct Attention {
    /// Fused QKV `[3H, H]`, row `h*3*hd + part*hd + d`.
    pub qkv: Dense,
    /// Output projection `[H, H]`, input column `h*hd + d`.
    pub out: Dense,
    /// Dropout on the attention probabilities.
    pub dropout: Dropout,
    /// Number of heads.
    pub num_heads: usize,
    /// Precision of the two attention products (the projections have their own).
    #[module(skip)]
    pub precision: Precision,
    /// The attention kernel (see [`crate::attention`]).
    #[module(skip)]
    pub kernel: AttentionKernel,
}

impl Attention {
    /// `x [B*S, H]` (already normalised) -> `[B*S, H]`; `bias` is the additive key mask
    /// `[B, 1, 1, S]`; the probabilities' dropout masks come from `stream` as site `site`.
    pub fn forward(
        &self,
        x: Tensor<2>,
        (batch, seq): (usize, usize),
        bias: Option<&Tensor<4>>,
        stream: Option<DropoutStream>,
        site: u64,
    ) -> Tensor<2> {
        let [n, h] = x.dims();
        let nh = self.num_heads;
        let hd = h / nh;
        // [N, 3H] -> [B, S, nh, 3*hd] -> [B, nh, S, 3*hd]; q/k/v are strided views of it.
        let qkv = self
            .qkv
            .forward(x)
            .reshape([batch, seq, nh, 3 * hd])
            .swap_dims(1, 2);
        let q = qkv.clone().narrow(3, 0, hd);
        let k = qkv.clone().narrow(3, hd, hd);
        let v = qkv.narrow(3, 2 * hd, hd);
        let scale = 1.0f32 / (hd as f32).sqrt();
        let dropout_active = self.dropout.prob > 0.0 && q.is_tracked();
        if self.kernel == AttentionKernel::Fused && !dropout_active {
            let ctx = fused_attention(q, k, v, bias, scale, self.precision);
            return self.out.forward(ctx.swap_dims(1, 2).reshape([n, h]));
        }
        let mut scores = self
            .precision
            .matmul(q, k.swap_dims(2, 3))
            .mul_scalar(scale);
        if let Some(bias) = bias {
            scores = scores + bias.clone();
        }
        let probs = dropout::apply(
            &self.dropout,
            softmax_closed_form(scores),
            stream,
            site,
            batch,
        );
        let ctx = self
            .precision
            .matmul(probs, v)
            .swap_dims(1, 2)
            .reshape([n, h]);
        self.out.forward(ctx)
    }
}

/// The feed-forward block: GELU-GLU (`a * gelu(g)`) or plain GELU (fact 4).
#[derive(Module, Debug)]
pub struct FeedForward {
    /// Input projection `[I, H]` (GLU: rows `0..I/2` value half, `I/2..I` gate half).
    pub inp: Dense,
    /// Output projection `[H, I/2]` (GLU) or `[H, I]`.
    pub out: Dense,
    /// Whether the block is gated.
    pub glu: bool,
}

impl FeedForward {
    /// `x [N, H] -> [N, H]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let y = self.inp.forward(x);
        let z = if self.glu {
            let [_, i] = y.dims();
            let half = i / 2;
            let a = y.clone().narrow(1, 0, half);
            let g = y.narrow(1, half, half);
            a * gelu_closed_form(g)
        } else {
            gelu_closed_form(y)
        };
        self.out.forward(z)
    }
}

/// One transformer layer (pre- or post-norm, fact 2).
#[derive(Module, Debug)]
pub struct Layer {
    /// LayerNorm before attention (pre-norm) or after the attention residual (post-norm).
    pub norm1: LayerNorm,
    /// Self-attention.
    pub attn: Attention,
    /// LayerNorm before the FFN (pre-norm) or after the FFN residual (post-norm).
    pub norm2: LayerNorm,
    /// Feed-forward block.
    pub ffn: FeedForward,
    /// Residual-branch dropout.
    pub dropout: Dropout,
    /// Whether the layer is pre-norm.
    pub pre_norm: bool,
}

impl Layer {
    pub(crate) fn build(
        src: &mut dyn ParamSource,
        c: &ModelConfig,
        i: usize,
    ) -> Result<Self, ModelError> {
        let h = c.hidden_size;
        let b = c.dense_bias;
        Ok(Self {
            norm1: LayerNorm::build(src, &names::norm1(i), h, c.norm_eps)?,
            attn: Attention {
                qkv: Dense::build(src, &names::qkv(i), h, 3 * h, b)?,
                out: Dense::build(src, &names::attn_out(i), h, h, b)?,
                dropout: DropoutConfig::new(c.attn_dropout).init(),
                num_heads: c.num_heads,
                precision: Precision::Fp32,
                kernel: AttentionKernel::Explicit,
            },
            norm2: LayerNorm::build(src, &names::norm2(i), h, c.norm_eps)?,
            ffn: FeedForward {
                inp: Dense::build(src, &names::ffn_in(i), h, c.intermed_size, b)?,
                out: Dense::build(src, &names::ffn_out(i), c.ffn_inner(), h, b)?,
                glu: c.ffn_activation == FfnActivation::GeluGlu,
            },
            dropout: DropoutConfig::new(c.hidden_dropout).init(),
            pre_norm: c.norm_scheme == NormScheme::Pre,
        })
    }

    /// `x [B*S, H] -> [B*S, H]`, as layer `index` of the encoder (which names its dropout
    /// sites in `stream`).
    pub fn forward(
        &self,
        x: Tensor<2>,
        dims: (usize, usize),
        bias: Option<&Tensor<4>>,
        stream: Option<DropoutStream>,
        index: usize,
    ) -> Tensor<2> {
        let batch = dims.0;
        let drop = |t: Tensor<2>, s: u64| dropout::apply(&self.dropout, t, stream, s, batch);
        let attn_site = site::attention(index);
        if self.pre_norm {
            let a = self
                .attn
                .forward(self.norm1.forward(x.clone()), dims, bias, stream, attn_site);
            let x = x + drop(a, site::attention_residual(index));
            let f = self.ffn.forward(self.norm2.forward(x.clone()));
            x + drop(f, site::ffn_residual(index))
        } else {
            let a = self.attn.forward(x.clone(), dims, bias, stream, attn_site);
            let x = self
                .norm1
                .forward(x + drop(a, site::attention_residual(index)));
            let f = self.ffn.forward(x.clone());
            self.norm2.forward(x + drop(f, site::ffn_residual(index)))
        }
    }

    pub(crate) fn visit(&self, i: usize, f: &mut dyn FnMut(String, NamedParam<'_>)) {
        self.norm1.visit(&names::norm1(i), f);
        self.attn.qkv.visit(&names::qkv(i), f);
        self.attn.out.visit(&names::attn_out(i), f);
        self.norm2.visit(&names::norm2(i), f);
        self.ffn.inp.visit(&names::ffn_in(i), f);
        self.ffn.out.visit(&names::ffn_out(i), f);
    }
}

/// The encoder: embeddings, layers, optional final LayerNorm.
#[derive(Module, Debug)]
pub struct Encoder {
    /// Embedding block.
    pub embedding: Embeddings,
    /// Transformer layers.
    pub layers: Vec<Layer>,
    /// Final LayerNorm (crammed-bert) or none (bert-original).
    pub final_norm: Option<LayerNorm>,
}

impl Encoder {
    pub(crate) fn build(src: &mut dyn ParamSource, c: &ModelConfig) -> Result<Self, ModelError> {
        c.validate()?;
        let embedding = Embeddings::build(src, c)?;
        let layers = (0..c.num_layers)
            .map(|i| Layer::build(src, c, i))
            .collect::<Result<Vec<_>, _>>()?;
        let final_norm = if c.final_norm {
            Some(LayerNorm::build(
                src,
                names::FINAL_NORM,
                c.hidden_size,
                c.norm_eps,
            )?)
        } else {
            None
        };
        Ok(Self {
            embedding,
            layers,
            final_norm,
        })
    }

    /// The additive key mask `[B, 1, 1, S]` of an attention mask `[B, S]` (1 = keep).
    pub fn mask_bias(mask: Tensor<2, Int>) -> Tensor<4> {
        let [b, s] = mask.dims();
        mask.float()
            .neg()
            .add_scalar(1.0)
            .mul_scalar(MASK_BIAS)
            .reshape([b, 1, 1, s])
    }

    /// `ids [B, S]` (and an optional attention mask `[B, S]`, 1 = keep) -> hidden states
    /// `[B*S, H]`, row `b*S + s`.
    pub fn forward_flat(&self, ids: Tensor<2, Int>, mask: Option<Tensor<2, Int>>) -> Tensor<2> {
        self.forward_flat_with(ids, mask, None)
    }

    /// [`Encoder::forward_flat`] with dropout masks from `stream` (see [`crate::dropout`];
    /// `None`: the backend's random stream).
    pub fn forward_flat_with(
        &self,
        ids: Tensor<2, Int>,
        mask: Option<Tensor<2, Int>>,
        stream: Option<DropoutStream>,
    ) -> Tensor<2> {
        let [b, s] = ids.dims();
        let x = self.embedding.forward_with(ids, stream);
        let [_, _, h] = x.dims();
        let bias = mask.map(Self::mask_bias);
        let mut x = x.reshape([b * s, h]);
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x, (b, s), bias.as_ref(), stream, i);
        }
        match &self.final_norm {
            Some(norm) => norm.forward(x),
            None => x,
        }
    }

    /// `ids [B, S]` -> hidden states `[B, S, H]`.
    pub fn forward(&self, ids: Tensor<2, Int>, mask: Option<Tensor<2, Int>>) -> Tensor<3> {
        self.forward_with(ids, mask, None)
    }

    /// [`Encoder::forward`] with dropout masks from `stream`.
    pub fn forward_with(
        &self,
        ids: Tensor<2, Int>,
        mask: Option<Tensor<2, Int>>,
        stream: Option<DropoutStream>,
    ) -> Tensor<3> {
        let [b, s] = ids.dims();
        let x = self.forward_flat_with(ids, mask, stream);
        let [_, h] = x.dims();
        x.reshape([b, s, h])
    }

    /// Calls `f` with the contract name and a reference of every parameter, in a fixed order.
    pub fn visit_named(&self, f: &mut dyn FnMut(String, NamedParam<'_>)) {
        self.embedding.visit(f);
        for (i, layer) in self.layers.iter().enumerate() {
            layer.visit(i, f);
        }
        if let Some(n) = &self.final_norm {
            n.visit(names::FINAL_NORM, f);
        }
    }

    /// Sets the attention kernel of every layer.
    pub fn set_attention_kernel(&mut self, kernel: AttentionKernel) {
        for layer in &mut self.layers {
            layer.attn.kernel = kernel;
        }
    }

    /// Sets the precision of every matrix product of the encoder.
    pub fn set_precision(&mut self, precision: Precision) {
        for layer in &mut self.layers {
            layer.attn.qkv.precision = precision;
            layer.attn.out.precision = precision;
            layer.attn.precision = precision;
            layer.ffn.inp.precision = precision;
            layer.ffn.out.precision = precision;
        }
    }

    /// The device the encoder's weights live on.
    pub fn device(&self) -> Device {
        self.embedding.word.val().device()
    }
}
