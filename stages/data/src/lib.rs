//! Data stages of `cram`.
//!
//! * [`documents`]: the documents artifact every text stage reads and
//!   writes (Parquet shards `part-NNNNN.parquet`, one `text: Utf8` column,
//!   zstd) with a streaming reader and a sharding writer.
//! * [`download`]: the `download` kind. The engine calls
//!   [`resolve_source`] (lists files and their revision/sha256/size without
//!   downloading; hash it into the cache key), then [`run_download`] with a
//!   download cache folder it owns (files named by content hash).
//! * [`synthetic`]: the `synthetic` kind, English-like documents from a
//!   seed for offline pipelines ([`run_synthetic`]).

#![warn(missing_docs)]

pub mod documents;
pub mod download;
pub mod synthetic;

pub use download::{
    DownloadError, DownloadMode, DownloadParams, DownloadSummary, HubConfig, SourceIdentity,
    resolve_source, run_download,
};
pub use synthetic::{SyntheticError, SyntheticParams, SyntheticSummary, run_synthetic};
