//! Data stages of `cram`: the documents format shared by every text stage
//! ([`documents`]), the `download` kind (hub, URLs, local files) and the
//! `synthetic` kind (English-like documents for offline pipelines).

pub mod documents;
pub mod download;
pub mod synthetic;

pub use download::{
    DownloadError, DownloadMode, DownloadParams, DownloadSummary, HubConfig, SourceIdentity,
    resolve_source, run_download,
};
pub use synthetic::{SyntheticError, SyntheticParams, SyntheticSummary, run_synthetic};
