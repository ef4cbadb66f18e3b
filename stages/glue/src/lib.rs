//! GLUE fine-tuning and evaluation for `cram` (the `glue` stage kind).
//!
//! The downstream half of Cramming (Geiping & Goldstein 2022): fine-tune a pretrained
//! crammed-bert checkpoint on each GLUE task with the reference's `GLUE_sane` recipe (AdamW lr
//! 4e-5, betas (0.9, 0.98), eps 1e-6, no weight decay, batch 16, 5 epochs, cosine decay with
//! 10 % warm-up, max length 128, dropout on) and score it on the dev sets.
//!
//! * [`GlueTask`], [`task_files`]: the tasks and the Parquet files each reads (hub layout
//!   `<data_dir>/<config>/<split>-00000-of-00001.parquet`).
//! * [`data`]: reading splits in the hub schema.
//! * [`metrics`]: accuracy, F1, Matthews, Pearson, Spearman, computed exactly.
//! * [`run_task`]: fine-tunes one task (the engine caches tasks one by one) with cram-train's
//!   kit (row shards on the CPU cores, the fused AdamW) and dropout masks seeded per update, so
//!   tasks may train side by side; [`aggregate`] gathers the task results into the GLUE
//!   averages.
//! * [`bench`]: the fine-tuning step's throughput on synthetic batches (`cargo bench`).
//! * [`predict`]: logits and predictions without autodiff, and the majority baseline.
//! * [`write_synthetic_glue`]: small, clearly learnable tasks in the hub schema for the offline
//!   sanity recipe.

#![warn(missing_docs)]

pub mod aggregate;
pub mod bench;
pub mod data;
pub mod encode;
pub mod error;
pub mod finetune;
pub mod metrics;
pub mod params;
pub mod predict;
pub mod schedule;
mod step;
pub mod synthetic;
pub mod task;

pub use aggregate::{GlueSummary, TaskEntry, aggregate, aggregate_trials, median};
pub use error::{GlueError, Result};
pub use finetune::{TaskSummary, TaskTimings, run_task};
pub use params::{GlueParams, TaskHyperparameters, TaskOverrides};
pub use synthetic::{SyntheticGlueParams, SyntheticGlueSummary, write_synthetic_glue};
pub use task::{GlueTask, task_files};

/// Bumped whenever a change to the code changes the bytes the `glue` kind writes.
pub const CODE_VERSION: u32 = 5;

/// Bumped whenever a change to the code changes the bytes [`write_synthetic_glue`] writes.
pub const SYNTHETIC_CODE_VERSION: u32 = 1;
