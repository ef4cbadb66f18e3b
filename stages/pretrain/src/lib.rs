//! The `pretrain` stage of cram: masked-language-model pretraining of a crammed-bert-style
//! encoder for a fixed budget, with the `bert-o4` recipe of Geiping & Goldstein (2022).
//!
//! Input: a packed-sequences directory (`part-*.parquet` with `input_ids:
//! fixed_size_list<uint16|uint32>[seq_length]`, `tokenizer.json`). Output (`out_dir`):
//! `model.safetensors` (contract `cram-ref-v1`), `config.json`, `tokenizer.json`,
//! `metrics.jsonl` and `summary.json`.
//!
//! * [`collator`]: the reference's MLM masking (exactly `round(rate * S)` positions per row);
//! * [`schedule`]: learning-rate schedules and the batch-size ramp over the budget fraction;
//! * [`optim`]: AdamW with PyTorch's arithmetic, decay by contract name, global-norm clipping,
//!   gradient accumulation;
//! * [`data`]: the Parquet shards, the tokenizer facts and the prefetching reader thread;
//! * [`passes`]: the order of the rows, pass after pass: training repeats the data, reshuffled
//!   each pass, until its budget is spent (or `max_epochs` passes);
//! * [`shards`]: a micro-batch split over the CPU cores (data parallelism inside a step);
//! * [`checkpoint`]: atomic, resumable checkpoints in the stage's work directory;
//! * [`train`]: the loop: [`run_pretrain`].
//!
//! ```no_run
//! use cram_pretrain::{PretrainParams, run_pretrain};
//! let params = PretrainParams {
//!     arch: "tiny".into(),
//!     budget: "15m".into(),
//!     micro_batch: 32,
//!     batch_size: 256,
//!     device: "cpu".into(),
//!     ..Default::default()
//! };
//! let bar = indicatif::ProgressBar::hidden();
//! let summary = run_pretrain(
//!     &params,
//!     "cache/sequences".as_ref(),
//!     0,
//!     "work/pretrain".as_ref(),
//!     "out/pretrain".as_ref(),
//!     &bar,
//! )
//! .unwrap();
//! println!("{} steps, final loss {:?}", summary.steps, summary.final_loss);
//! ```

#![warn(missing_docs)]

/// Allocator tuning for CPU training (it lives in the shared kit, `cram-train`).
pub use cram_train::alloc;
pub mod bench;
pub mod checkpoint;
pub mod collator;
pub mod data;
pub mod error;
pub mod exact_float;
pub mod heldout;
/// The optimizer, from the training kit shared with fine-tuning (`cram-train`).
pub use cram_train::optim;
pub mod params;
pub mod passes;
pub mod schedule;
pub mod shards;
pub mod train;

pub use collator::{IGNORE_INDEX, MaskedBatch, MlmCollator, mask_counts};
pub use error::PretrainError;
pub use optim::{AdamW, AdamWConfig, GradAccumulator};
pub use params::{
    MetricsLine, PretrainParams, PretrainSummary, PretrainTimings, ResolvedPretrain, StoppedBy,
    TimelinePoint, parse_budget,
};
pub use schedule::{LrSchedule, accumulation_steps, batch_size};
pub use train::{RunControl, run_pretrain, run_pretrain_with, write_timeline};

/// Bumped whenever a change to the code changes the bytes this kind writes.
pub const CODE_VERSION: u32 = 5;
