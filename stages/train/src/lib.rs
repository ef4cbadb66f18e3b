//! The training kit of cram's training stages: AdamW with PyTorch's arithmetic,
//! per-parameter decay by contract name, optional global-norm clipping and gradient
//! accumulation over micro-batches or shards ([`optim`]).
//!
//! It works on any [`cram_model::NamedModule`] (the MLM model, the classifier), so that the
//! model crate stays the model and no stage reaches into another for its optimizer.
//! `cram-pretrain` trains with it. `cram-glue` still steps with burn's `AdamW`: switched to
//! this one, a GLUE_sane step of crammed-bert (batch 16, one optimizer step per batch) measured
//! 14 % slower on the CPU, so it stays until that is understood. On the CPU backend gradients
//! are summed, and the update is applied, in fused parallel passes over host memory (burn's
//! element-wise CPU kernels run on one core, a pass per op); on a GPU both are tensor ops.

pub mod error;
pub mod optim;

pub use error::TrainError;
pub use optim::{AdamW, AdamWConfig, GradAccumulator, StepReport, decays, host_f32};
