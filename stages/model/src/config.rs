//! Architecture configuration: [`ModelConfig`], its named presets and [`ModelOverrides`].

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where the LayerNorm sits in a transformer layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum NormScheme {
    /// `x = x + drop(f(LN(x)))` (crammed-bert); a final LayerNorm usually follows the stack.
    Pre,
    /// `x = LN(x + drop(f(x)))` (original BERT).
    Post,
}

/// How positions enter the embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PositionEmbedding {
    /// Fixed interleaved sinusoid table times a learnable scalar initialised to `1/sqrt(H)`.
    ScaledSinusoidal,
    /// A learned `[max_seq_length, H]` table (original BERT).
    Learned,
}

/// The feed-forward block's nonlinearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FfnActivation {
    /// Gated GELU: `W_in` maps to `I`, split into value and gate halves, `a * gelu(g)`, then `I/2 -> H`.
    GeluGlu,
    /// Plain (erf) GELU: `H -> I -> H`.
    Gelu,
}

fn default_norm_scheme() -> NormScheme {
    NormScheme::Pre
}
fn default_position_embedding() -> PositionEmbedding {
    PositionEmbedding::ScaledSinusoidal
}
fn default_ffn_activation() -> FfnActivation {
    FfnActivation::GeluGlu
}
fn default_true() -> bool {
    true
}

/// The architecture of a crammed-bert-style encoder and its MLM / classification heads.
///
/// The first sixteen fields are the `CrammedConfig` of the `cram-ref-v1` checkpoint contract
/// (`../shared/vectors/README.md`); the others are switches needed by `bert-original` and
/// default to the crammed-bert choices when absent from a checkpoint's config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ModelConfig {
    /// Vocabulary size `V` (rows of the word embedding and columns of the MLM logits).
    pub vocab_size: usize,
    /// Hidden size `H` of the residual stream.
    pub hidden_size: usize,
    /// Number of transformer layers.
    pub num_layers: usize,
    /// Number of attention heads; `H` must be divisible by it.
    pub num_heads: usize,
    /// Width `I` of the feed-forward input projection (for GELU-GLU, halves of `I/2` each).
    pub intermed_size: usize,
    /// Longest sequence the position embedding is built for.
    pub max_seq_length: usize,
    /// LayerNorm epsilon.
    pub norm_eps: f64,
    /// Id of the padding token (embedding row zeroed at init, no gradient from the lookup).
    pub pad_token_id: usize,
    /// Dropout on the residual branches (attention output and FFN output).
    pub hidden_dropout: f64,
    /// Dropout on the attention probabilities.
    pub attn_dropout: f64,
    /// Dropout after the embedding LayerNorm.
    pub embedding_dropout: f64,
    /// Standard deviation of the normal initialisation of every linear and embedding weight.
    pub init_std: f64,
    /// Fraction of positions the MLM objective predicts; `> 0` means the decoder runs only on
    /// labelled rows (sparse prediction), `0` means dense logits over every position.
    pub sparse_prediction: f64,
    /// Number of classes `C` of the classification head (0 for an MLM model; 1 means regression).
    pub num_labels: usize,
    /// Width `D` of the classification pooler.
    pub head_dim: usize,
    /// Dropout after the pooler's tanh.
    pub classifier_dropout: f64,
    /// LayerNorm placement in each layer.
    #[serde(default = "default_norm_scheme")]
    pub norm_scheme: NormScheme,
    /// Whether every dense layer (QKV, attention output, FFN in/out) has a bias.
    #[serde(default)]
    pub dense_bias: bool,
    /// Position embedding kind.
    #[serde(default = "default_position_embedding")]
    pub position_embedding: PositionEmbedding,
    /// Rows of the token-type embedding (0: none). Inputs carry no segment ids, so type 0 is
    /// added at every position.
    #[serde(default)]
    pub type_vocab_size: usize,
    /// Feed-forward nonlinearity.
    #[serde(default = "default_ffn_activation")]
    pub ffn_activation: FfnActivation,
    /// Whether a LayerNorm follows the last layer.
    #[serde(default = "default_true")]
    pub final_norm: bool,
    /// Whether the MLM head applies a transform (dense `H -> H` with bias, GELU, LayerNorm)
    /// before the tied decoder.
    #[serde(default)]
    pub head_transform: bool,
    /// Whether the tied MLM decoder has a bias `[V]`.
    #[serde(default)]
    pub decoder_bias: bool,
}

/// Errors of [`ModelConfig::validate`] and preset lookup.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    /// A field has a value the model cannot be built with.
    #[error("invalid model config: {field} = {value}: {reason}")]
    Invalid {
        /// The offending field.
        field: &'static str,
        /// Its value, rendered.
        value: String,
        /// Why it is rejected.
        reason: String,
    },
    /// The preset name is not one of [`ModelConfig::PRESETS`].
    #[error("unknown architecture preset {name:?}; known presets: {known}")]
    UnknownPreset {
        /// The name asked for.
        name: String,
        /// The known names, comma-separated.
        known: String,
    },
}

impl ModelConfig {
    /// Names accepted by [`ModelConfig::preset`].
    pub const PRESETS: &'static [&'static str] = &["crammed-bert", "bert-original", "tiny", "mini"];

    /// The crammed-bert architecture of Geiping & Goldstein (arch/crammed-bert.yaml):
    /// 16 pre-norm layers, H 768, 12 heads, I 3072 (GELU-GLU), V 32768, seq 128.
    pub fn crammed_bert() -> Self {
        Self {
            vocab_size: 32768,
            hidden_size: 768,
            num_layers: 16,
            num_heads: 12,
            intermed_size: 3072,
            max_seq_length: 128,
            norm_eps: 1e-12,
            pad_token_id: 0,
            hidden_dropout: 0.1,
            attn_dropout: 0.1,
            embedding_dropout: 0.1,
            init_std: 0.02,
            sparse_prediction: 0.25,
            num_labels: 0,
            head_dim: 1024,
            classifier_dropout: 0.1,
            norm_scheme: NormScheme::Pre,
            dense_bias: false,
            position_embedding: PositionEmbedding::ScaledSinusoidal,
            type_vocab_size: 0,
            ffn_activation: FfnActivation::GeluGlu,
            final_norm: true,
            head_transform: false,
            decoder_bias: false,
        }
    }

    /// The original BERT-base recipe as the reference's arch/bert-original.yaml: 12 post-norm
    /// layers, H 768, 12 heads, I 3072 plain GELU, biases everywhere, learned positions for
    /// 512 tokens, a 2-row token-type embedding, MLM head transform and decoder bias, dense
    /// prediction, no final norm, pooler width = H.
    pub fn bert_original() -> Self {
        Self {
            num_layers: 12,
            max_seq_length: 512,
            sparse_prediction: 0.0,
            head_dim: 768,
            norm_scheme: NormScheme::Post,
            dense_bias: true,
            position_embedding: PositionEmbedding::Learned,
            type_vocab_size: 2,
            ffn_activation: FfnActivation::Gelu,
            final_norm: false,
            head_transform: true,
            decoder_bias: true,
            ..Self::crammed_bert()
        }
    }

    /// A small crammed-bert for CPU work: 2 layers, H 128, 2 heads, I 512, V 8192, seq 128.
    pub fn tiny() -> Self {
        Self {
            vocab_size: 8192,
            hidden_size: 128,
            num_layers: 2,
            num_heads: 2,
            intermed_size: 512,
            ..Self::crammed_bert()
        }
    }

    /// A medium-small crammed-bert: 4 layers, H 256, 4 heads, I 1024, V 8192, seq 128.
    pub fn mini() -> Self {
        Self {
            vocab_size: 8192,
            hidden_size: 256,
            num_layers: 4,
            num_heads: 4,
            intermed_size: 1024,
            ..Self::crammed_bert()
        }
    }

    /// The named preset, or `None` for an unknown name (see [`ModelConfig::PRESETS`]).
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "crammed-bert" => Some(Self::crammed_bert()),
            "bert-original" => Some(Self::bert_original()),
            "tiny" => Some(Self::tiny()),
            "mini" => Some(Self::mini()),
            _ => None,
        }
    }

    /// Like [`ModelConfig::preset`], with an error naming the known presets.
    pub fn try_preset(name: &str) -> Result<Self, ConfigError> {
        Self::preset(name).ok_or_else(|| ConfigError::UnknownPreset {
            name: name.to_string(),
            known: Self::PRESETS.join(", "),
        })
    }

    /// Head width `hd = H / num_heads`.
    pub fn head_size(&self) -> usize {
        self.hidden_size / self.num_heads.max(1)
    }

    /// Width of the FFN output projection's input: `I/2` for GELU-GLU, `I` for GELU.
    pub fn ffn_inner(&self) -> usize {
        match self.ffn_activation {
            FfnActivation::GeluGlu => self.intermed_size / 2,
            FfnActivation::Gelu => self.intermed_size,
        }
    }

    /// Number of scalar parameters of the encoder (tied decoder counted once, `pos_scale` and
    /// the LayerNorms included), computed from the sizes alone.
    pub fn num_encoder_params(&self) -> usize {
        let (h, v, i) = (self.hidden_size, self.vocab_size, self.intermed_size);
        let b = usize::from(self.dense_bias);
        let mut n = v * h + 2 * h;
        n += match self.position_embedding {
            PositionEmbedding::ScaledSinusoidal => 1,
            PositionEmbedding::Learned => self.max_seq_length * h,
        };
        n += self.type_vocab_size * h;
        let layer = 4 * h
            + 3 * h * h
            + 3 * h * b
            + h * h
            + h * b
            + i * h
            + i * b
            + self.ffn_inner() * h
            + h * b;
        n += self.num_layers * layer;
        if self.final_norm {
            n += 2 * h;
        }
        n
    }

    /// Number of scalar parameters of the MLM model built from this config.
    pub fn num_mlm_params(&self) -> usize {
        let h = self.hidden_size;
        let transform = if self.head_transform {
            h * h + 3 * h
        } else {
            0
        };
        let bias = if self.decoder_bias {
            self.vocab_size
        } else {
            0
        };
        self.num_encoder_params() + transform + bias
    }

    /// Checks that the model can be built from this config.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn bad(field: &'static str, value: impl ToString, reason: &str) -> ConfigError {
            ConfigError::Invalid {
                field,
                value: value.to_string(),
                reason: reason.to_string(),
            }
        }
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_layers", self.num_layers),
            ("num_heads", self.num_heads),
            ("intermed_size", self.intermed_size),
            ("max_seq_length", self.max_seq_length),
            ("head_dim", self.head_dim),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(bad(field, value, "must be at least 1"));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_heads) {
            return Err(bad(
                "hidden_size",
                self.hidden_size,
                &format!("must be divisible by num_heads = {}", self.num_heads),
            ));
        }
        if self.ffn_activation == FfnActivation::GeluGlu && !self.intermed_size.is_multiple_of(2) {
            return Err(bad(
                "intermed_size",
                self.intermed_size,
                "must be even for the gated GELU-GLU feed-forward",
            ));
        }
        if self.position_embedding == PositionEmbedding::ScaledSinusoidal
            && !self.hidden_size.is_multiple_of(2)
        {
            return Err(bad(
                "hidden_size",
                self.hidden_size,
                "must be even for the interleaved sinusoid table",
            ));
        }
        if self.pad_token_id >= self.vocab_size {
            return Err(bad(
                "pad_token_id",
                self.pad_token_id,
                &format!("must be below vocab_size = {}", self.vocab_size),
            ));
        }
        let probabilities = [
            ("hidden_dropout", self.hidden_dropout),
            ("attn_dropout", self.attn_dropout),
            ("embedding_dropout", self.embedding_dropout),
            ("classifier_dropout", self.classifier_dropout),
        ];
        for (field, p) in probabilities {
            if !(0.0..1.0).contains(&p) {
                return Err(bad(field, p, "a dropout probability must be in [0, 1)"));
            }
        }
        if !(0.0..=1.0).contains(&self.sparse_prediction) {
            return Err(bad(
                "sparse_prediction",
                self.sparse_prediction,
                "must be in [0, 1]",
            ));
        }
        if !(self.norm_eps > 0.0 && self.norm_eps.is_finite()) {
            return Err(bad(
                "norm_eps",
                self.norm_eps,
                "must be positive and finite",
            ));
        }
        if !(self.init_std >= 0.0 && self.init_std.is_finite()) {
            return Err(bad(
                "init_std",
                self.init_std,
                "must be non-negative and finite",
            ));
        }
        Ok(())
    }

    /// A copy with every dropout probability set to `p` (e.g. 0 for pretraining in eval mode).
    pub fn with_dropout(mut self, p: f64) -> Self {
        self.hidden_dropout = p;
        self.attn_dropout = p;
        self.embedding_dropout = p;
        self.classifier_dropout = p;
        self
    }

    /// The `CrammedConfig` JSON object of the checkpoint contract, with our extra switches.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("ModelConfig serialises to JSON")
    }
}

macro_rules! overrides {
    ($( $(#[$doc:meta])* $field:ident : $ty:ty ),* $(,)?) => {
        /// Optional per-field overrides of a [`ModelConfig`] preset; a pipeline sets
        /// `arch = "crammed-bert"` and any of these. Every field left out keeps the preset's value.
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct ModelOverrides {
            $( $(#[$doc])* #[serde(default, skip_serializing_if = "Option::is_none")] pub $field: Option<$ty>, )*
        }

        impl ModelOverrides {
            /// Writes every set field into `config`.
            pub fn apply(&self, config: &mut ModelConfig) {
                $( if let Some(v) = &self.$field { config.$field = v.clone(); } )*
            }

            /// Whether no field is set.
            pub fn is_empty(&self) -> bool {
                true $( && self.$field.is_none() )*
            }
        }
    };
}

overrides! {
    /// Overrides [`ModelConfig::vocab_size`].
    vocab_size: usize,
    /// Overrides [`ModelConfig::hidden_size`].
    hidden_size: usize,
    /// Overrides [`ModelConfig::num_layers`].
    num_layers: usize,
    /// Overrides [`ModelConfig::num_heads`].
    num_heads: usize,
    /// Overrides [`ModelConfig::intermed_size`].
    intermed_size: usize,
    /// Overrides [`ModelConfig::max_seq_length`].
    max_seq_length: usize,
    /// Overrides [`ModelConfig::norm_eps`].
    norm_eps: f64,
    /// Overrides [`ModelConfig::pad_token_id`].
    pad_token_id: usize,
    /// Overrides [`ModelConfig::hidden_dropout`].
    hidden_dropout: f64,
    /// Overrides [`ModelConfig::attn_dropout`].
    attn_dropout: f64,
    /// Overrides [`ModelConfig::embedding_dropout`].
    embedding_dropout: f64,
    /// Overrides [`ModelConfig::init_std`].
    init_std: f64,
    /// Overrides [`ModelConfig::sparse_prediction`].
    sparse_prediction: f64,
    /// Overrides [`ModelConfig::num_labels`].
    num_labels: usize,
    /// Overrides [`ModelConfig::head_dim`].
    head_dim: usize,
    /// Overrides [`ModelConfig::classifier_dropout`].
    classifier_dropout: f64,
    /// Overrides [`ModelConfig::norm_scheme`].
    norm_scheme: NormScheme,
    /// Overrides [`ModelConfig::dense_bias`].
    dense_bias: bool,
    /// Overrides [`ModelConfig::position_embedding`].
    position_embedding: PositionEmbedding,
    /// Overrides [`ModelConfig::type_vocab_size`].
    type_vocab_size: usize,
    /// Overrides [`ModelConfig::ffn_activation`].
    ffn_activation: FfnActivation,
    /// Overrides [`ModelConfig::final_norm`].
    final_norm: bool,
    /// Overrides [`ModelConfig::head_transform`].
    head_transform: bool,
    /// Overrides [`ModelConfig::decoder_bias`].
    decoder_bias: bool,
}

impl ModelOverrides {
    /// Resolves `preset` and applies these overrides, then validates the result.
    pub fn resolve(&self, preset: &str) -> Result<ModelConfig, ConfigError> {
        let mut config = ModelConfig::try_preset(preset)?;
        self.apply(&mut config);
        config.validate()?;
        Ok(config)
    }
}
