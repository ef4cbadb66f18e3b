//! The training kit of cram's training stages, shared by `pretrain` and `glue`:
//!
//! * [`optim`]: AdamW with PyTorch's arithmetic, weight decay by contract name (or on every
//!   parameter) and optional global-norm clipping.
//! * [`grads`]: gradient accumulation over micro-batches or shards. On the CPU backend
//!   gradients are summed, and the update is applied, in fused parallel passes over host memory
//!   (burn's element-wise CPU kernels run on one core, a pass per op); on a GPU both are tensor
//!   ops.
//! * [`shards`]: a batch split into row shards that train at once on replicas of the model.
//! * [`alloc`]: mimalloc kept from handing freed memory back between steps.
//!
//! It works on any [`cram_model::NamedModule`] (the MLM model, the classifier), so that the
//! model crate stays the model and no stage reaches into another for its training loop's parts.

pub mod alloc;
pub mod error;
pub mod grads;
pub mod optim;
pub mod shards;

pub use error::TrainError;
pub use optim::{AdamW, AdamWConfig, Decay, GradAccumulator, StepReport, decays, host_f32};
pub use shards::{replica, replica_on, row_ranges, run_shards, shard_count};
