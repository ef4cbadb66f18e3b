//! Parameters of the `glue` stage kind and their per-task resolution.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{GlueError, Result};
use crate::task::GlueTask;

/// Parameters of the `glue` stage kind. The defaults are the reference's `GLUE_sane`
/// evaluation: one set of hyperparameters for every task, at most 5 epochs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct GlueParams {
    /// Tasks to fine-tune and score, by Hub config name (`cola`, `sst2`, `mrpc`, `stsb`, `qqp`,
    /// `mnli`, `qnli`, `rte`, `wnli`). Default: the eight `GLUE_sane` tasks (WNLI excluded).
    pub tasks: Vec<GlueTask>,
    /// Peak learning rate of AdamW.
    pub lr: f64,
    /// AdamW β₁.
    pub beta1: f64,
    /// AdamW β₂.
    pub beta2: f64,
    /// AdamW ε (added to the square root of the second moment, as PyTorch does).
    pub eps: f64,
    /// Decoupled weight decay of AdamW (applied to every parameter when non-zero).
    pub weight_decay: f64,
    /// Training batch size (sequences per update).
    pub batch_size: usize,
    /// Epochs over the training split; the Cramming rules allow at most 5.
    pub epochs: usize,
    /// Fraction of all updates spent in the linear warm-up of the cosine schedule.
    pub warmup_fraction: f64,
    /// Longest input in tokens, special tokens included; longer pairs are cut longest-first.
    pub max_length: usize,
    /// Whether dropout is active while fine-tuning (`GLUE_sane`: yes; the probabilities are
    /// the checkpoint's).
    pub dropout: bool,
    /// Use at most this many training examples per task (a seeded random subset), for quick
    /// CPU runs; a run that sets it is marked as not comparable to the paper.
    pub max_train_examples: Option<usize>,
    /// Score on at most this many examples of each dev split (the first ones), for quick CPU
    /// runs; a run that sets it is marked as not comparable to the paper.
    pub max_dev_examples: Option<usize>,
    /// Batch size of evaluation (no gradients; only speed and memory depend on it).
    pub eval_batch_size: usize,
    /// Row shards per training batch on the CPU backend: each is a forward and backward pass
    /// of its own, spread over rayon's threads, and their gradients are added in shard order.
    /// The layout is this number, not the thread count, so the same run gives the same bytes on
    /// 1 or 64 cores (at most one shard per row; GPUs run a batch whole). Dropout masks are the
    /// same whatever the layout; only the float sums of the gradients follow it. The default
    /// (2) suits a batch of 16: the run's other tasks fill the other cores side by side.
    pub cpu_shards: usize,
    /// At most this many tasks (trials included) fine-tune at once; `None`: as many as `-j`
    /// allows. Each holds its own model, optimizer state and activations, so this bounds the
    /// memory of large models. Results do not depend on it (it is not part of a task's key).
    pub parallel_tasks: Option<usize>,
    /// Fine-tunings per task, with seeds `seed`, `seed + 1`, …, each cached on its own; the
    /// summary and the report give the median (and the min and max) of each metric, as the
    /// reference's model card reports GLUE over 5 trials. Adding trials keeps the ones done.
    pub trials: usize,
    /// Device: `auto` (a compiled-in GPU if present, else CPU), `gpu` (a GPU or an error),
    /// `cpu`, `cuda:N`, `vulkan:N`.
    pub device: String,
    /// Precision of the matrix products: `auto` (fp32 on the CPU, bf16 on a GPU that has it),
    /// `fp32` or `bf16`; weights and optimizer state stay fp32.
    pub precision: cram_model::PrecisionSpec,
    /// Attention kernel: `explicit` or `fused` (burn's attention op; it runs as one kernel in
    /// the dev evaluation, and training with attention dropout keeps the explicit path).
    pub attention: cram_model::AttentionKernel,
    /// Per-task overrides keyed by task name, e.g. `[overrides.rte] lr = 1e-4`. Allowed, but
    /// outside the Cramming rules (one set of hyperparameters for all tasks): the summary and
    /// the report flag every use.
    pub overrides: BTreeMap<String, TaskOverrides>,
}

impl Default for GlueParams {
    fn default() -> Self {
        Self {
            tasks: GlueTask::GLUE_SANE.to_vec(),
            lr: 4e-5,
            beta1: 0.9,
            beta2: 0.98,
            eps: 1e-6,
            weight_decay: 0.0,
            batch_size: 16,
            epochs: 5,
            warmup_fraction: 0.1,
            max_length: 128,
            dropout: true,
            max_train_examples: None,
            max_dev_examples: None,
            eval_batch_size: 128,
            cpu_shards: DEFAULT_CPU_SHARDS,
            parallel_tasks: None,
            trials: 1,
            device: "auto".to_string(),
            precision: cram_model::PrecisionSpec::Auto,
            attention: cram_model::AttentionKernel::Explicit,
            overrides: BTreeMap::new(),
        }
    }
}

/// Default of [`GlueParams::cpu_shards`]: two shards of 8 rows for `GLUE_sane`'s batch of 16.
///
/// Pretraining's micro-batches of 32–128 rows take 8 shards; a fine-tuning batch of 16 split
/// 8 ways leaves 2 rows a shard, whose many small kernels, graphs and gradient copies cost
/// more than the cores they fill (on 2 cores 8 shards ran at 0.64x the speed of 2, 4 shards at
/// 0.86x; `cargo bench -p cram-glue --bench glue_step`, docs/performance.md). The other cores
/// go to the run's other tasks and trials, which fine-tune side by side within `-j`.
pub const DEFAULT_CPU_SHARDS: usize = 2;

/// Hyperparameters one task may override (each flagged as outside the rules).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskOverrides {
    /// Overrides [`GlueParams::lr`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// Overrides [`GlueParams::batch_size`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    /// Overrides [`GlueParams::epochs`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<usize>,
    /// Overrides [`GlueParams::warmup_fraction`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_fraction: Option<f64>,
    /// Overrides [`GlueParams::weight_decay`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
    /// Overrides [`GlueParams::dropout`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropout: Option<bool>,
}

/// The hyperparameters one task actually trains with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskHyperparameters {
    /// Peak learning rate.
    pub lr: f64,
    /// AdamW β₁.
    pub beta1: f64,
    /// AdamW β₂.
    pub beta2: f64,
    /// AdamW ε.
    pub eps: f64,
    /// Weight decay.
    pub weight_decay: f64,
    /// Training batch size.
    pub batch_size: usize,
    /// Epochs.
    pub epochs: usize,
    /// Warm-up fraction of the cosine schedule.
    pub warmup_fraction: f64,
    /// Longest input in tokens.
    pub max_length: usize,
    /// Whether dropout is active while training.
    pub dropout: bool,
    /// Which fields came from `overrides` (`"lr = 0.0001"`, ...); empty within the rules.
    pub overrides: Vec<String>,
}

/// The most epochs the Cramming rules allow for fine-tuning.
pub const MAX_RULE_EPOCHS: usize = 5;

impl GlueParams {
    /// Checks ranges and that every override names a known task.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(GlueError::Params(m));
        if self.tasks.is_empty() {
            return bad("`tasks` is empty: name at least one GLUE task".into());
        }
        if self.trials == 0 {
            return bad("`trials` must be at least 1".into());
        }
        if self.cpu_shards == 0 {
            return bad("`cpu_shards` must be at least 1".into());
        }
        if self.parallel_tasks == Some(0) {
            return bad("`parallel_tasks` must be at least 1 when set".into());
        }
        for key in self.overrides.keys() {
            let task = GlueTask::parse(key)?;
            if !self.tasks.contains(&task) {
                return bad(format!(
                    "`overrides.{key}` names a task that is not in `tasks`"
                ));
            }
        }
        for task in &self.tasks {
            let h = self.for_task(*task)?;
            if h.batch_size == 0 || self.eval_batch_size == 0 {
                return bad(format!("{task}: batch sizes must be at least 1"));
            }
            if h.epochs == 0 {
                return bad(format!("{task}: `epochs` must be at least 1"));
            }
            if !(h.lr > 0.0 && h.lr.is_finite()) {
                return bad(format!("{task}: `lr` = {} must be positive", h.lr));
            }
            if !(0.0..=1.0).contains(&h.warmup_fraction) {
                return bad(format!("{task}: `warmup_fraction` must be in [0, 1]"));
            }
            if !(h.weight_decay.is_finite() && h.weight_decay >= 0.0) {
                return bad(format!("{task}: `weight_decay` must be non-negative"));
            }
        }
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) {
            return bad("`beta1` and `beta2` must be in [0, 1)".into());
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return bad("`eps` must be positive".into());
        }
        if self.max_length < 3 {
            return bad("`max_length` must leave room for [CLS] and [SEP] (at least 3)".into());
        }
        if self.max_train_examples == Some(0) || self.max_dev_examples == Some(0) {
            return bad(
                "`max_train_examples` / `max_dev_examples` must be at least 1 when set".into(),
            );
        }
        Ok(())
    }

    /// The overrides entry of `task`, whatever spelling of its name the key uses.
    fn overrides_of(&self, task: GlueTask) -> Option<&TaskOverrides> {
        self.overrides
            .iter()
            .find(|(k, _)| GlueTask::parse(k).ok() == Some(task))
            .map(|(_, v)| v)
    }

    /// The hyperparameters of `task`: the global ones with its overrides applied.
    pub fn for_task(&self, task: GlueTask) -> Result<TaskHyperparameters> {
        let mut h = TaskHyperparameters {
            lr: self.lr,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
            batch_size: self.batch_size,
            epochs: self.epochs,
            warmup_fraction: self.warmup_fraction,
            max_length: self.max_length,
            dropout: self.dropout,
            overrides: Vec::new(),
        };
        if let Some(o) = self.overrides_of(task) {
            let mut note =
                |field: &str, value: String| h.overrides.push(format!("{field} = {value}"));
            if let Some(v) = o.lr {
                note("lr", v.to_string());
            }
            if let Some(v) = o.batch_size {
                note("batch_size", v.to_string());
            }
            if let Some(v) = o.epochs {
                note("epochs", v.to_string());
            }
            if let Some(v) = o.warmup_fraction {
                note("warmup_fraction", v.to_string());
            }
            if let Some(v) = o.weight_decay {
                note("weight_decay", v.to_string());
            }
            if let Some(v) = o.dropout {
                note("dropout", v.to_string());
            }
            h.lr = o.lr.unwrap_or(h.lr);
            h.batch_size = o.batch_size.unwrap_or(h.batch_size);
            h.epochs = o.epochs.unwrap_or(h.epochs);
            h.warmup_fraction = o.warmup_fraction.unwrap_or(h.warmup_fraction);
            h.weight_decay = o.weight_decay.unwrap_or(h.weight_decay);
            h.dropout = o.dropout.unwrap_or(h.dropout);
        }
        Ok(h)
    }

    /// Whether a quick-run knob is in use (a training or dev subset, or fewer than 5 epochs):
    /// the scores are then not comparable to the paper's.
    pub fn quick_run(&self) -> bool {
        self.max_train_examples.is_some()
            || self.max_dev_examples.is_some()
            || self.epochs < MAX_RULE_EPOCHS
    }

    /// Why the configuration is outside the Cramming rules (empty when within them).
    pub fn outside_rules(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        if self.epochs > MAX_RULE_EPOCHS {
            reasons.push(format!(
                "epochs = {} exceeds the {MAX_RULE_EPOCHS} allowed for fine-tuning",
                self.epochs
            ));
        }
        for task in &self.tasks {
            if let Ok(h) = self.for_task(*task) {
                if !h.overrides.is_empty() {
                    reasons.push(format!(
                        "{task}: per-task hyperparameters ({}) break the one-setting-for-all-tasks rule",
                        h.overrides.join(", ")
                    ));
                }
                if h.epochs > MAX_RULE_EPOCHS && h.epochs != self.epochs {
                    reasons.push(format!(
                        "{task}: epochs = {} exceeds the {MAX_RULE_EPOCHS} allowed",
                        h.epochs
                    ));
                }
            }
        }
        reasons
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_glue_sane() {
        let p = GlueParams::default();
        p.validate().unwrap();
        assert_eq!(p.tasks.len(), 8);
        assert!(!p.tasks.contains(&GlueTask::Wnli));
        assert_eq!((p.lr, p.beta1, p.beta2, p.eps), (4e-5, 0.9, 0.98, 1e-6));
        assert_eq!((p.batch_size, p.epochs, p.max_length), (16, 5, 128));
        assert!(!p.quick_run());
        assert!(p.outside_rules().is_empty());
    }

    #[test]
    fn unknown_fields_and_tasks_are_rejected() {
        let err = serde_json::from_str::<GlueParams>(r#"{"learning_rate": 1e-4}"#).unwrap_err();
        assert!(err.to_string().contains("learning_rate"), "{err}");
        let err = serde_json::from_str::<GlueParams>(r#"{"tasks": ["squad"]}"#).unwrap_err();
        assert!(err.to_string().contains("squad"), "{err}");
        let p: GlueParams =
            serde_json::from_str(r#"{"tasks": ["rte"], "overrides": {"cola": {"lr": 1e-3}}}"#)
                .unwrap();
        assert!(
            p.validate()
                .unwrap_err()
                .to_string()
                .contains("overrides.cola")
        );
    }

    #[test]
    fn overrides_are_flagged() {
        let p: GlueParams = serde_json::from_str(
            r#"{"tasks": ["rte", "sst2"], "epochs": 3, "overrides": {"RTE": {"lr": 1e-4, "epochs": 8}}}"#,
        )
        .unwrap();
        p.validate().unwrap();
        let rte = p.for_task(GlueTask::Rte).unwrap();
        assert_eq!((rte.lr, rte.epochs), (1e-4, 8));
        assert_eq!(rte.overrides, ["lr = 0.0001", "epochs = 8"]);
        assert!(p.for_task(GlueTask::Sst2).unwrap().overrides.is_empty());
        assert!(p.quick_run());
        let reasons = p.outside_rules();
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert!(reasons[0].contains("rte") && reasons[1].contains("epochs = 8"));
    }
}
