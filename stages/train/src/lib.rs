//! The training kit shared by `cram-pretrain` and `cram-glue`: AdamW with PyTorch's
//! arithmetic, per-parameter decay by contract name, optional global-norm clipping and
//! gradient accumulation over micro-batches or shards ([`optim`]).
//!
//! It works on any [`cram_model::NamedModule`]: the MLM model while pretraining, the
//! classifier while fine-tuning. On the CPU backend gradients are summed, and the update is
//! applied, in fused parallel passes over host memory (burn's element-wise CPU kernels run on
//! one core, a pass per op); on a GPU both are tensor ops. The model crate stays the model;
//! neither stage reaches into the other for its optimizer.

pub mod error;
pub mod optim;

pub use error::TrainError;
pub use optim::{AdamW, AdamWConfig, GradAccumulator, StepReport, decays, host_f32};
