//! The stage's error type.

use std::path::{Path, PathBuf};

/// Errors of the pretraining stage.
#[derive(Debug, thiserror::Error)]
pub enum PretrainError {
    /// A parameter has a value the stage cannot run with.
    #[error("invalid pretrain parameter {field} = {value}: {reason}")]
    Param {
        /// The parameter.
        field: &'static str,
        /// Its value, rendered.
        value: String,
        /// Why it is rejected.
        reason: String,
    },
    /// The architecture could not be resolved or built.
    #[error("model: {0}")]
    Model(#[from] cram_model::ModelError),
    /// The optimizer state could not be saved or loaded.
    #[error("optimizer state: {0}")]
    Train(#[from] cram_train::TrainError),
    /// The architecture preset or overrides are invalid.
    #[error("model config: {0}")]
    Config(#[from] cram_model::ConfigError),
    /// The device could not be selected.
    #[error("device: {0}")]
    Device(#[from] cram_model::DeviceError),
    /// The precision cannot be used on the device.
    #[error("{0}")]
    Precision(#[from] cram_model::PrecisionError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A JSON file could not be parsed or written.
    #[error("{path}: JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// A Parquet shard could not be read or has an unexpected layout.
    #[error("{path}: {reason}")]
    Data {
        /// The shard (or the sequences directory).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The tokenizer does not fit the model or lacks a needed token.
    #[error("{path}: {reason}")]
    Tokenizer {
        /// The `tokenizer.json`.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A training checkpoint is unusable.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The checkpoint file or directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A tensor could not be read back from the device.
    #[error("reading {what} from the device: {reason}")]
    Tensor {
        /// Which tensor.
        what: String,
        /// The backend's message.
        reason: String,
    },
    /// The loss became NaN or infinite.
    #[error("training diverged at step {step}: loss {loss}")]
    Diverged {
        /// The optimizer step.
        step: u64,
        /// The loss value.
        loss: f64,
    },
    /// The run was interrupted on request after writing a checkpoint at `step`; running the
    /// stage again with the same work directory resumes from there.
    #[error("interrupted at step {step}; checkpoint written to {work_dir}, rerun to resume")]
    Interrupted {
        /// The optimizer steps completed and checkpointed.
        step: u64,
        /// The work directory holding the checkpoint.
        work_dir: PathBuf,
    },
    /// The data reader thread failed.
    #[error("data reader thread panicked")]
    ReaderPanicked,
}

impl PretrainError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn json(path: &Path, source: serde_json::Error) -> Self {
        Self::Json {
            path: path.to_path_buf(),
            source,
        }
    }
}
