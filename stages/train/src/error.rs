//! The crate's error type.

use std::path::{Path, PathBuf};

/// Errors of saving and loading optimizer state.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
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
    /// An optimizer state file does not fit the model.
    #[error("{path}: {reason}")]
    State {
        /// The file.
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
    /// Writing the state file failed in the checkpoint writer.
    #[error(transparent)]
    Model(#[from] cram_model::ModelError),
}

impl TrainError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn safetensors(path: &Path, source: safetensors::SafeTensorError) -> Self {
        Self::Safetensors {
            path: path.to_path_buf(),
            source,
        }
    }
}
