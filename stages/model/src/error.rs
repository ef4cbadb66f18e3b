//! The crate's error type.

use std::path::PathBuf;

use crate::config::ConfigError;

/// Errors of building, loading and saving models.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The architecture config is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A safetensors file could not be parsed or written.
    #[error("{path}: safetensors: {source}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: safetensors::SafeTensorError,
    },
    /// A tensor the model needs is absent from the checkpoint.
    #[error("{path}: missing tensor {name:?} (expected shape {expected:?})")]
    MissingTensor {
        /// The file.
        path: PathBuf,
        /// The contract name.
        name: String,
        /// The shape the model expects.
        expected: Vec<usize>,
    },
    /// A tensor has another shape than the config implies.
    #[error("{path}: tensor {name:?} has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The file.
        path: PathBuf,
        /// The contract name.
        name: String,
        /// The shape the model expects.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A tensor is not stored as F32.
    #[error("{path}: tensor {name:?} has dtype {found}, expected F32")]
    Dtype {
        /// The file.
        path: PathBuf,
        /// The contract name.
        name: String,
        /// The dtype in the file.
        found: String,
    },
    /// The `__metadata__` block is missing a key or holds an unexpected value.
    #[error("{path}: metadata: {reason}")]
    Metadata {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A `config.json` or metadata config could not be parsed.
    #[error("{path}: config JSON: {source}")]
    ConfigJson {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// A checkpoint directory cannot be exported (a file is missing or unusable).
    #[error("{path}: {reason}")]
    Export {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
    /// A tensor could not be read back from the device.
    #[error("reading tensor {name:?} from the device: {reason}")]
    Read {
        /// The contract name.
        name: String,
        /// The backend's message.
        reason: String,
    },
}
