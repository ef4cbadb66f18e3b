//! The crate's error type.

use std::path::PathBuf;

/// Errors of loading GLUE data, fine-tuning, scoring and writing results.
#[derive(Debug, thiserror::Error)]
pub enum GlueError {
    /// A task name is not one of the GLUE configs.
    #[error("unknown GLUE task {name:?}; known tasks: {known}")]
    UnknownTask {
        /// The name given.
        name: String,
        /// The accepted names, comma-separated.
        known: String,
    },
    /// A split file the task needs is absent.
    #[error(
        "GLUE task {task}: split {split:?} is missing: expected the file {path} \
         (layout `<data_dir>/<config>/<split>-00000-of-00001.parquet`, as on the Hugging Face Hub); \
         download it or remove {task} from `tasks`"
    )]
    MissingSplit {
        /// The task.
        task: String,
        /// The split (`train`, `validation`, `validation_matched`, ...).
        split: String,
        /// The file expected.
        path: PathBuf,
    },
    /// A file could not be read, written or created.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A Parquet file could not be read or written.
    #[error("{path}: Parquet: {source}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: parquet::errors::ParquetError,
    },
    /// An Arrow operation (cast, batch assembly) failed.
    #[error("{path}: Arrow: {source}")]
    Arrow {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: arrow::error::ArrowError,
    },
    /// A column the task needs is absent from the file.
    #[error(
        "{path}: GLUE task {task} needs column {column:?}, which is absent (columns found: {found})"
    )]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The task.
        task: String,
        /// The column needed.
        column: String,
        /// The columns present, comma-separated.
        found: String,
    },
    /// A column cannot be read as the type the task needs.
    #[error("{path}: column {column:?} has type {found}, which cannot be read as {expected}")]
    ColumnType {
        /// The file.
        path: PathBuf,
        /// The column.
        column: String,
        /// Its Arrow type.
        found: String,
        /// The type needed.
        expected: String,
    },
    /// A row holds a value the task cannot use (null text, label out of range, ...).
    #[error("{path}: row {row}: {reason}")]
    BadRow {
        /// The file.
        path: PathBuf,
        /// 0-based row number in the file.
        row: usize,
        /// What is wrong and what to do.
        reason: String,
    },
    /// The tokenizer could not be loaded or applied.
    #[error("{path}: tokenizer: {reason}")]
    Tokenizer {
        /// The `tokenizer.json`.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// A JSON file could not be parsed.
    #[error("{path}: JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser error.
        source: serde_json::Error,
    },
    /// The parameters are inconsistent.
    #[error("invalid GLUE parameters: {0}")]
    Params(String),
    /// The model could not be built, loaded or saved.
    #[error("model: {0}")]
    Model(#[from] cram_model::ModelError),
    /// The device could not be selected.
    #[error(transparent)]
    Device(#[from] cram_model::DeviceError),
    /// The precision cannot be used on the device.
    #[error("{0}")]
    Precision(#[from] cram_model::PrecisionError),
    /// Training diverged or produced no usable result.
    #[error("GLUE task {task}: {reason}")]
    Training {
        /// The task.
        task: String,
        /// What went wrong.
        reason: String,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = GlueError> = std::result::Result<T, E>;

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> GlueError {
    let path = path.into();
    move |source| GlueError::Io { path, source }
}
