//! The `pretrain` kind's parameters, their resolved form and the run summary.

use cram_model::{AttentionKernel, ModelConfig, ModelOverrides, PrecisionSpec};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::PretrainError;
use crate::optim::AdamWConfig;
use crate::schedule::LrSchedule;

/// Parameters of the `pretrain` stage kind: MLM pretraining of a crammed-bert-style encoder for a
/// fixed budget, with the `bert-o4` recipe of Geiping & Goldstein (2022) as defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PretrainParams {
    /// Architecture preset: `crammed-bert`, `bert-original`, `tiny` or `mini`.
    pub arch: String,
    /// Per-field overrides of the preset (`[stages.NAME.model]`). The vocabulary size is taken
    /// from the input's `tokenizer.json` unless `vocab_size` is set here.
    pub model: ModelOverrides,
    /// Wall-clock training budget, a human duration such as `"24h"`, `"15m"` or `"90s"`; the
    /// clock starts after model construction and data opening. Ignored when `budget_steps` is set.
    pub budget: String,
    /// Budget in optimizer steps instead of wall clock (deterministic; for tests and
    /// comparisons). The schedules then run on `step / budget_steps`.
    pub budget_steps: Option<u64>,
    /// Budget in tokens trained on instead of wall clock, so that runs on different GPUs are
    /// compared at equal data: training stops at the first step that reaches it, and the
    /// schedules run on `tokens / budget_tokens`. Deterministic like `budget_steps`; not both.
    pub budget_tokens: Option<u64>,
    /// Stop after this many passes over the packed rows (a float: `1.5` is one and a half),
    /// even if budget is left; by default training repeats the data, reshuffled each pass,
    /// until the budget is spent. A run stopped this way does not finish its schedule, and the
    /// report says so.
    pub max_epochs: Option<f64>,
    /// Sequences per forward/backward pass (micro-batch); larger batches are reached by
    /// gradient accumulation.
    pub micro_batch: usize,
    /// Target batch size in sequences (8192 in `bert-o4`), rounded up to whole micro-batches.
    pub batch_size: usize,
    /// Fraction of the budget at which the batch-size ramp reaches `batch_size` (0.6); 0 turns
    /// the ramp off (full batch from the start).
    pub ramp_fraction: f64,
    /// Peak learning rate.
    pub lr: f64,
    /// AdamW `(beta1, beta2)`.
    pub betas: [f64; 2],
    /// AdamW epsilon (added outside the square root, as PyTorch does).
    pub eps: f64,
    /// AdamW decoupled weight decay; parameters whose name contains `bias` or `norm` are exempt.
    pub weight_decay: f64,
    /// Global L2 norm the gradients are clipped to; 0 disables clipping.
    pub grad_clip: f64,
    /// Learning-rate schedule over the budget: `budget-triangle2`, `constant`, `linear` or
    /// `cosine` (no warm-up in any of them, as `bert-o4`).
    pub schedule: LrSchedule,
    /// Fraction of each sequence's tokens selected for the MLM objective.
    pub mlm_rate: f64,
    /// Train with the architecture's dropout on; by default pretraining runs with dropout off
    /// (the reference's `pretrain_in_train_mode: False`).
    pub dropout: bool,
    /// Device: `auto` (a compiled-in GPU if present, else the CPU, with a warning when a
    /// wall-clock budget of an hour or more would run there), `gpu` (the same, but refuse to
    /// start without a GPU), `cpu`, `cuda:N` or `vulkan:N`. The choice and its reason are
    /// printed before the budget clock starts.
    pub device: String,
    /// Data-parallel training over several devices, e.g. `["cuda:0", "cuda:1"]`: each runs its
    /// share of every step's micro-batches, the gradients are summed on the first and the
    /// optimizer steps once, so the batch, ramp and budget mean what they mean on one device.
    /// Empty (the default): `device` alone. Dropout must be off.
    pub devices: Vec<String>,
    /// Precision of the matrix products: `auto` (fp32 on the CPU, bf16 on a GPU that has it),
    /// `fp32` or `bf16`. Weights and optimizer state stay fp32 (as the reference's AMP).
    pub precision: PrecisionSpec,
    /// Attention kernel: `explicit` (two products around the softmax) or `fused` (burn's
    /// attention op, one kernel where no gradient is recorded; see `cram_model::attention`).
    pub attention: AttentionKernel,
    /// Row shards per micro-batch on the CPU backend: each is a forward and backward pass of its
    /// own, spread over rayon's threads, and their gradients are added in shard order. The
    /// layout is this number, not the thread count, so the same run gives the same bytes on 1
    /// or 64 cores (at most one shard per row; GPUs run a micro-batch whole). More shards than
    /// cores costs a little speed and one gradient copy per shard in memory.
    pub cpu_shards: usize,
    /// Minutes between resumable checkpoints in the stage's work directory; 0 disables them.
    pub checkpoint_every: f64,
    /// Optimizer steps between lines of `metrics.jsonl` (the first and last step are always
    /// logged).
    pub log_every: u64,
    /// Optimizer steps between evaluations of the held-out loss (on the `pack` stage's
    /// held-out rows, with fixed masks; always at the end too); 0: only at the end. The
    /// evaluations pause the budget clock.
    pub heldout_every: u64,
}

impl Default for PretrainParams {
    fn default() -> Self {
        let adam = AdamWConfig::default();
        Self {
            arch: "crammed-bert".into(),
            model: ModelOverrides::default(),
            budget: "24h".into(),
            budget_steps: None,
            budget_tokens: None,
            max_epochs: None,
            micro_batch: 128,
            batch_size: 8192,
            ramp_fraction: 0.6,
            lr: 1e-3,
            betas: [adam.betas.0, adam.betas.1],
            eps: adam.eps,
            weight_decay: adam.weight_decay,
            grad_clip: adam.grad_clip.unwrap_or(0.0),
            schedule: LrSchedule::BudgetTriangle2,
            mlm_rate: 0.25,
            dropout: false,
            device: "auto".into(),
            devices: Vec::new(),
            precision: PrecisionSpec::Auto,
            attention: AttentionKernel::Explicit,
            cpu_shards: DEFAULT_CPU_SHARDS,
            checkpoint_every: 30.0,
            log_every: 100,
            heldout_every: 1000,
        }
    }
}

/// Default of [`PretrainParams::cpu_shards`]: enough shards to keep 8 cores busy.
pub const DEFAULT_CPU_SHARDS: usize = 8;

/// The parameters with the preset expanded, as the engine hashes and shows them.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ResolvedPretrain {
    /// The preset name the architecture came from.
    pub arch: String,
    /// The full architecture (preset + overrides).
    pub model: ModelConfig,
    /// Whether `model.vocab_size` is replaced at run time by the tokenizer's vocabulary size
    /// (true unless the overrides set it).
    pub vocab_size_from_tokenizer: bool,
    /// Wall-clock budget in seconds (`None` when the budget is in steps or tokens).
    pub budget_seconds: Option<f64>,
    /// Step budget.
    pub budget_steps: Option<u64>,
    /// Token budget.
    pub budget_tokens: Option<u64>,
    /// Passes over the data after which training stops (`None`: no limit).
    pub max_epochs: Option<f64>,
    /// Micro-batch size.
    pub micro_batch: usize,
    /// Target batch size (a whole number of micro-batches).
    pub batch_size: usize,
    /// Ramp fraction.
    pub ramp_fraction: f64,
    /// Peak learning rate.
    pub lr: f64,
    /// AdamW betas.
    pub betas: [f64; 2],
    /// AdamW epsilon.
    pub eps: f64,
    /// Weight decay.
    pub weight_decay: f64,
    /// Gradient clipping norm (0: off).
    pub grad_clip: f64,
    /// Learning-rate schedule.
    pub schedule: LrSchedule,
    /// MLM selection rate.
    pub mlm_rate: f64,
    /// Dropout during pretraining.
    pub dropout: bool,
    /// Device spec (the first of `devices`).
    pub device: String,
    /// Every device trained on, the first holding the model and optimizer (one entry without
    /// data parallelism).
    pub devices: Vec<String>,
    /// Precision spec (resolved against the device when the run starts).
    pub precision: PrecisionSpec,
    /// Attention kernel.
    pub attention: AttentionKernel,
    /// Row shards per micro-batch on the CPU backend.
    pub cpu_shards: usize,
    /// Checkpoint interval in minutes.
    pub checkpoint_every: f64,
    /// Held-out evaluation interval in steps (0: at the end only).
    pub heldout_every: u64,
    /// Logging interval in steps.
    pub log_every: u64,
}

fn invalid(field: &'static str, value: impl ToString, reason: &str) -> PretrainError {
    PretrainError::Param {
        field,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// Parses a human duration (`"24h"`, `"1h 30m"`, `"90s"`) into seconds.
pub fn parse_budget(text: &str) -> Result<f64, PretrainError> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| invalid("budget", format!("{text:?}"), &e.to_string()))?;
    if d.is_zero() {
        return Err(invalid("budget", format!("{text:?}"), "must be positive"));
    }
    Ok(d.as_secs_f64())
}

impl PretrainParams {
    /// Expands the preset and checks every value.
    pub fn resolve(&self) -> Result<ResolvedPretrain, PretrainError> {
        let model = self.model.resolve(&self.arch)?;
        let budget_seconds = match (self.budget_steps, self.budget_tokens) {
            (Some(0), _) => return Err(invalid("budget_steps", 0, "must be at least 1")),
            (_, Some(0)) => return Err(invalid("budget_tokens", 0, "must be at least 1")),
            (Some(_), Some(t)) => {
                return Err(invalid(
                    "budget_tokens",
                    t,
                    "cannot be combined with `budget_steps`: set one of them",
                ));
            }
            (Some(_), None) | (None, Some(_)) => None,
            (None, None) => Some(parse_budget(&self.budget)?),
        };
        if self.micro_batch == 0 {
            return Err(invalid("micro_batch", 0, "must be at least 1"));
        }
        if let Some(e) = self.max_epochs
            && !(e > 0.0 && e.is_finite())
        {
            return Err(invalid(
                "max_epochs",
                e,
                "must be a positive number of passes (leave it out for no limit)",
            ));
        }
        if self.batch_size == 0 {
            return Err(invalid("batch_size", 0, "must be at least 1"));
        }
        if !(0.0..1.0).contains(&self.ramp_fraction) {
            return Err(invalid(
                "ramp_fraction",
                self.ramp_fraction,
                "must be in [0, 1)",
            ));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(invalid("lr", self.lr, "must be positive"));
        }
        for b in self.betas {
            if !(0.0..1.0).contains(&b) {
                return Err(invalid(
                    "betas",
                    format!("{:?}", self.betas),
                    "each must be in [0, 1)",
                ));
            }
        }
        if !(self.eps >= 0.0 && self.eps.is_finite()) {
            return Err(invalid("eps", self.eps, "must be non-negative"));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return Err(invalid(
                "weight_decay",
                self.weight_decay,
                "must be non-negative",
            ));
        }
        if !(self.grad_clip >= 0.0 && self.grad_clip.is_finite()) {
            return Err(invalid(
                "grad_clip",
                self.grad_clip,
                "must be non-negative (0: off)",
            ));
        }
        if !(self.mlm_rate > 0.0 && self.mlm_rate <= 1.0) {
            return Err(invalid("mlm_rate", self.mlm_rate, "must be in (0, 1]"));
        }
        if !(self.checkpoint_every >= 0.0 && self.checkpoint_every.is_finite()) {
            return Err(invalid(
                "checkpoint_every",
                self.checkpoint_every,
                "must be non-negative",
            ));
        }
        if self.log_every == 0 {
            return Err(invalid("log_every", 0, "must be at least 1"));
        }
        if self.cpu_shards == 0 {
            return Err(invalid("cpu_shards", 0, "must be at least 1"));
        }
        let devices = if self.devices.is_empty() {
            vec![self.device.clone()]
        } else {
            if self.device != "auto" && self.device != self.devices[0] {
                return Err(invalid(
                    "device",
                    format!("{:?}", self.device),
                    "set either `device` or `devices`, not both",
                ));
            }
            self.devices.clone()
        };
        for d in &devices {
            d.parse::<cram_model::DeviceSpec>()
                .map_err(PretrainError::Device)?;
        }
        if devices.len() > 1 && self.dropout {
            return Err(invalid(
                "devices",
                format!("{devices:?}"),
                "data parallelism needs dropout = false (the devices would draw dropout masks \
                 from streams whose order is not fixed)",
            ));
        }
        Ok(ResolvedPretrain {
            arch: self.arch.clone(),
            model,
            vocab_size_from_tokenizer: self.model.vocab_size.is_none(),
            budget_seconds,
            budget_steps: self.budget_steps,
            budget_tokens: self.budget_tokens,
            max_epochs: self.max_epochs,
            micro_batch: self.micro_batch,
            batch_size: self.batch_size.div_ceil(self.micro_batch) * self.micro_batch,
            ramp_fraction: self.ramp_fraction,
            lr: self.lr,
            betas: self.betas,
            eps: self.eps,
            weight_decay: self.weight_decay,
            grad_clip: self.grad_clip,
            schedule: self.schedule,
            mlm_rate: self.mlm_rate,
            dropout: self.dropout,
            device: devices[0].clone(),
            devices,
            precision: self.precision,
            attention: self.attention,
            cpu_shards: self.cpu_shards,
            checkpoint_every: self.checkpoint_every,
            log_every: self.log_every,
            heldout_every: self.heldout_every,
        })
    }
}

impl ResolvedPretrain {
    /// The optimizer's hyper-parameters.
    pub fn adamw(&self) -> AdamWConfig {
        AdamWConfig {
            betas: (self.betas[0], self.betas[1]),
            eps: self.eps,
            weight_decay: self.weight_decay,
            decay: cram_train::Decay::ByName,
            grad_clip: (self.grad_clip > 0.0).then_some(self.grad_clip),
        }
    }
}

/// One logged step, as kept in a checkpoint. The output's `metrics.jsonl`
/// holds every field but the two timings (see [`MetricsLine::record`]);
/// those go to the run's timeline ([`TimelinePoint`]), outside the hashed
/// output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsLine {
    /// Optimizer step just completed.
    pub step: u64,
    /// Budget seconds spent (including time before a resume).
    #[serde(with = "crate::exact_float::exact_f64")]
    pub elapsed_seconds: f64,
    /// Tokens trained on so far.
    pub tokens: u64,
    /// Mean MLM loss of this step's micro-batches.
    #[serde(with = "crate::exact_float::exact_f64")]
    pub loss: f64,
    /// Learning rate of this step.
    #[serde(with = "crate::exact_float::exact_f64")]
    pub lr: f64,
    /// Sequences in this step (micro-batches × micro-batch size).
    pub batch_size: usize,
    /// Training throughput since the previous line.
    #[serde(with = "crate::exact_float::exact_f64")]
    pub tokens_per_second: f64,
    /// Passes over the packed rows so far (sequences trained on ÷ rows).
    #[serde(with = "crate::exact_float::exact_f64")]
    pub epochs: f64,
    /// The held-out loss after this step, on the steps it was evaluated.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::exact_float::exact_opt_f64"
    )]
    pub heldout_loss: Option<f64>,
    /// Global L2 norm of this step's gradients before clipping.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::exact_float::exact_opt_f64"
    )]
    pub grad_norm: Option<f64>,
}

impl MetricsLine {
    /// The line as `metrics.jsonl` holds it: what the data, the parameters
    /// and the seed determine (step, tokens, loss, lr, batch size, epochs).
    pub fn record(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "step": self.step,
            "tokens": self.tokens,
            "loss": self.loss,
            "lr": self.lr,
            "batch_size": self.batch_size,
            "epochs": self.epochs,
        });
        if let Some(h) = self.heldout_loss {
            v["heldout_loss"] = serde_json::json!(h);
        }
        if let Some(g) = self.grad_norm {
            v["grad_norm"] = serde_json::json!(g);
        }
        v
    }

    /// The line's timings.
    pub fn timeline(&self) -> TimelinePoint {
        TimelinePoint {
            step: self.step,
            elapsed_seconds: self.elapsed_seconds,
            tokens_per_second: self.tokens_per_second,
        }
    }
}

/// The timings of one logged step (a line of the run's `timeline.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelinePoint {
    /// Optimizer step.
    pub step: u64,
    /// Budget seconds spent (including time before a resume).
    pub elapsed_seconds: f64,
    /// Training throughput since the previous line.
    pub tokens_per_second: f64,
}

/// What a run measured about itself: kept out of `summary.json` (the output
/// must be the same bytes whenever the inputs are), recorded in the cache
/// entry's manifest and run directory instead.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PretrainTimings {
    /// Training wall time spent, in seconds, including time before a resume
    /// (what the budget counts).
    pub wall_seconds: f64,
    /// Peak resident memory of the process in bytes (Linux `VmHWM`), when known.
    pub peak_memory_bytes: Option<u64>,
    /// The step a checkpoint resumed from (`null` for an uninterrupted run). How the run went,
    /// not what it made: the manifest keeps it, `summary.json` does not, so an interrupted and
    /// resumed run has the bytes of an uninterrupted one.
    pub resumed_from_step: Option<u64>,
    /// Every logged step's timings.
    #[serde(skip)]
    pub timeline: Vec<TimelinePoint>,
}

/// Why a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StoppedBy {
    /// The wall-clock budget was spent.
    Budget,
    /// `budget_steps` optimizer steps were taken.
    Steps,
    /// `budget_tokens` tokens were trained on.
    Tokens,
    /// The data ran out before the budget: `max_epochs` passes were read, or the corpus holds
    /// fewer rows than one micro-batch. The schedule did not finish.
    Data,
}

/// The `summary.json` of a finished run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PretrainSummary {
    /// Architecture preset.
    pub arch: String,
    /// Scalar parameters of the MLM model (tied decoder counted once).
    pub parameters: usize,
    /// Wall-clock budget in seconds (`null` for a step or token budget).
    pub budget_seconds: Option<f64>,
    /// Step budget.
    pub budget_steps: Option<u64>,
    /// Token budget.
    #[serde(default)]
    pub budget_tokens: Option<u64>,
    /// Optimizer steps.
    pub steps: u64,
    /// Forward/backward passes (micro-batches).
    pub micro_steps: u64,
    /// Tokens trained on.
    pub tokens: u64,
    /// Sequences trained on.
    pub sequences: u64,
    /// Loss of the last step.
    pub final_loss: Option<f64>,
    /// Loss of the first step.
    pub initial_loss: Option<f64>,
    /// Mean MLM loss on the held-out rows after the last step (fixed masks; `null` when the
    /// input has no held-out rows).
    #[serde(default)]
    pub heldout_loss: Option<f64>,
    /// Held-out rows it was measured on.
    #[serde(default)]
    pub heldout_rows: usize,
    /// The device, as burn names it.
    pub device: String,
    /// The backend: `flex`, `cuda` or `vulkan`.
    pub backend: String,
    /// Devices trained on at once (data parallelism above 1).
    #[serde(default = "one")]
    pub devices: usize,
    /// The precision of the matrix products (`fp32`, `bf16`).
    #[serde(default = "fp32")]
    pub precision: String,
    /// Why the run ended.
    pub stopped_by: StoppedBy,
    /// Whether dropout was on.
    pub dropout: bool,
    /// Passes over the input's rows: sequences trained on ÷ rows (above 1 when the data was
    /// repeated).
    #[serde(alias = "epochs_fraction")]
    pub epochs: f64,
    /// Rows (sequences) in the input.
    pub rows: u64,
    /// The `max_epochs` limit, if one was set.
    pub max_epochs: Option<f64>,
    /// Learning rate of the last step (the schedule's end when the budget was spent).
    pub final_lr: Option<f64>,
    /// Peak learning rate of the schedule.
    pub peak_lr: f64,
    /// The run's timings (not in `summary.json`; see [`PretrainTimings`]).
    #[serde(skip)]
    pub timings: PretrainTimings,
    /// Every logged step with its timings, for writers of other formats (TensorBoard).
    #[serde(skip)]
    pub log: Vec<MetricsLine>,
}

/// The device count of summaries written before data parallelism existed.
fn one() -> usize {
    1
}

/// The precision of summaries written before the parameter existed.
fn fp32() -> String {
    "fp32".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_bert_o4() {
        let r = PretrainParams::default().resolve().unwrap();
        assert_eq!(r.model, ModelConfig::crammed_bert());
        assert!(r.vocab_size_from_tokenizer);
        assert_eq!(r.budget_seconds, Some(86400.0));
        assert_eq!(
            (r.batch_size, r.micro_batch, r.ramp_fraction),
            (8192, 128, 0.6)
        );
        assert_eq!(
            (r.lr, r.betas, r.eps, r.weight_decay),
            (1e-3, [0.9, 0.98], 1e-12, 0.01)
        );
        assert_eq!((r.grad_clip, r.mlm_rate, r.dropout), (0.5, 0.25, false));
        assert_eq!(r.schedule, LrSchedule::BudgetTriangle2);
        let a = r.adamw();
        assert_eq!(a.grad_clip, Some(0.5));
    }

    #[test]
    fn nested_overrides_and_unknown_fields() {
        let p: PretrainParams = serde_json::from_value(serde_json::json!({
            "arch": "tiny",
            "budget": "15m",
            "model": {"num_layers": 3, "vocab_size": 1000},
            "schedule": "cosine"
        }))
        .unwrap();
        let r = p.resolve().unwrap();
        assert_eq!(r.model.num_layers, 3);
        assert_eq!(r.model.hidden_size, 128);
        assert_eq!(r.model.vocab_size, 1000);
        assert!(!r.vocab_size_from_tokenizer);
        assert_eq!(r.budget_seconds, Some(900.0));
        assert_eq!(r.schedule, LrSchedule::Cosine);

        let typo = serde_json::from_value::<PretrainParams>(serde_json::json!({"bugdet": "1h"}));
        assert!(typo.unwrap_err().to_string().contains("unknown field"));
        let typo =
            serde_json::from_value::<PretrainParams>(serde_json::json!({"model": {"layers": 2}}));
        assert!(typo.is_err());
    }

    #[test]
    fn invalid_values_are_rejected() {
        let bad = |f: &dyn Fn(&mut PretrainParams)| {
            let mut p = PretrainParams::default();
            f(&mut p);
            p.resolve().unwrap_err().to_string()
        };
        assert!(bad(&|p| p.arch = "gpt".into()).contains("unknown architecture preset"));
        assert!(bad(&|p| p.budget = "soon".into()).contains("budget"));
        assert!(bad(&|p| p.micro_batch = 0).contains("micro_batch"));
        assert!(bad(&|p| p.ramp_fraction = 1.5).contains("ramp_fraction"));
        assert!(bad(&|p| p.max_epochs = Some(0.0)).contains("max_epochs"));
        assert!(bad(&|p| p.max_epochs = Some(f64::NAN)).contains("max_epochs"));
        assert!(bad(&|p| p.device = "tpu".into()).contains("tpu"));
        assert_eq!(parse_budget("1h 30m").unwrap(), 5400.0);
        assert_eq!(parse_budget("90s").unwrap(), 90.0);
    }
}
