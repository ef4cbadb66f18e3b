//! Sequence classification: encoder + first-token pooler + linear head (fact 8).

use std::path::Path;

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig};
use burn::tensor::{Device, Int, Tensor};

use crate::attention::AttentionKernel;
use crate::checkpoint;
use crate::config::ModelConfig;
use crate::dropout::{self, DropoutStream, site};
use crate::encoder::{Dense, Encoder, NamedParam};
use crate::error::ModelError;
use crate::init::{ParamSource, RandomInit};
use crate::mlm::cross_entropy;
use crate::names;
use crate::precision::Precision;

/// Targets of a classification batch.
#[derive(Debug, Clone)]
pub enum ClassLabels {
    /// Class ids `[B]` (C > 1, cross-entropy).
    Classes(Tensor<1, Int>),
    /// Regression targets `[B]` (C = 1, mean squared error).
    Scores(Tensor<1>),
}

/// Encoder + pooler (`tanh(h[:,0] W_p^T + b_p)`, dropout) + head (`W_h`, `b_h`).
#[derive(Module, Debug)]
pub struct ClassificationModel {
    /// The encoder.
    pub encoder: Encoder,
    /// Pooler dense `[D, H]` with bias.
    pub pooler: Dense,
    /// Dropout after the pooler's tanh.
    pub dropout: Dropout,
    /// Head dense `[C, D]` with bias.
    pub head: Dense,
}

impl ClassificationModel {
    /// A freshly initialised model (fact 9), deterministic in `seed`; `config.num_labels`
    /// must be at least 1.
    pub fn init(config: &ModelConfig, seed: u64, device: &Device) -> Result<Self, ModelError> {
        let mut src = RandomInit::new(seed, config.init_std, device);
        Self::build(&mut src, config)
    }

    pub(crate) fn build(src: &mut dyn ParamSource, c: &ModelConfig) -> Result<Self, ModelError> {
        if c.num_labels == 0 {
            return Err(crate::config::ConfigError::Invalid {
                field: "num_labels",
                value: "0".into(),
                reason: "a classification model needs at least 1 label".into(),
            }
            .into());
        }
        let encoder = Encoder::build(src, c)?;
        Ok(Self {
            encoder,
            pooler: Dense::build(src, names::POOLER, c.hidden_size, c.head_dim, true)?,
            dropout: DropoutConfig::new(c.classifier_dropout).init(),
            head: Dense::build(src, names::HEAD, c.head_dim, c.num_labels, true)?,
        })
    }

    /// Loads the encoder of a pretrained MLM checkpoint and initialises the pooler and head
    /// freshly (seeded). Returns the model and its config (`num_labels` set).
    pub fn from_mlm_checkpoint(
        path: &Path,
        num_labels: usize,
        seed: u64,
        device: &Device,
    ) -> Result<(Self, ModelConfig), ModelError> {
        checkpoint::load_classification_from_mlm(path, num_labels, seed, device)
    }

    /// The model with `kernel` in every attention layer.
    pub fn with_attention_kernel(mut self, kernel: AttentionKernel) -> Self {
        self.encoder.set_attention_kernel(kernel);
        self
    }

    /// The model with every matrix product in `precision`; the weights are unchanged (fp32).
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.encoder.set_precision(precision);
        self.pooler.precision = precision;
        self.head.precision = precision;
        self
    }

    /// The encoder.
    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    /// Logits `[B, C]` of `input_ids [B, S]` with an optional attention mask `[B, S]` (1 = keep).
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
    ) -> Tensor<2> {
        self.forward_with(input_ids, attention_mask, None)
    }

    /// [`ClassificationModel::forward`] with dropout masks from `stream` (see
    /// [`crate::dropout`]; `None`: the backend's random stream). Training passes that may run
    /// at the same time as others (shards of a batch, tasks side by side) give one.
    pub fn forward_with(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
        stream: Option<DropoutStream>,
    ) -> Tensor<2> {
        let [b, _] = input_ids.dims();
        let hidden = self.encoder.forward_with(input_ids, attention_mask, stream);
        let [_, _, h] = hidden.dims();
        let first = hidden.slice([0..b, 0..1, 0..h]).reshape([b, h]);
        let pooled = dropout::apply(
            &self.dropout,
            self.pooler.forward(first).tanh(),
            stream,
            site::POOLER,
            b,
        );
        self.head.forward(pooled)
    }

    /// The loss of `logits [B, C]`: cross-entropy for class ids, MSE for scores (C = 1).
    pub fn loss(logits: Tensor<2>, labels: ClassLabels) -> Tensor<1> {
        match labels {
            ClassLabels::Classes(y) => {
                let [b] = y.dims();
                cross_entropy(logits, y.reshape([b, 1]))
            }
            ClassLabels::Scores(y) => {
                let [b] = y.dims();
                let d = logits.reshape([b]) - y;
                (d.clone() * d).mean()
            }
        }
    }

    /// Calls `f` with the contract name and a reference of every parameter, in a fixed order.
    pub fn visit_named(&self, f: &mut dyn FnMut(String, NamedParam<'_>)) {
        self.encoder.visit_named(f);
        self.pooler.visit(names::POOLER, f);
        self.head.visit(names::HEAD, f);
    }
}
