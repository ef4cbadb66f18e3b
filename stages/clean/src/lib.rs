//! Cleaning stages of `cram`: the `filter` and `dedup` stage kinds.
//!
//! * [`filter`]: normalise every document exactly as Cramming's tokenizer
//!   normalisers do ([`normalize`]), then drop empty, too short, too long and
//!   badly tokenising ("trash") documents. Entry point [`run_filter`].
//! * [`dedup`]: exact-substring deduplication (Lee et al. 2021) with suffix
//!   arrays built in parts by `libsais` and merged ([`suffix`]); cuts never
//!   cross a document boundary and keep the text valid UTF-8. Entry point
//!   [`run_dedup`].
//!
//! Both read and write the *documents* artifact of `cram_data::documents`
//! and write their summary as `summary.json` into the output directory.

pub(crate) mod bits;
pub mod dedup;
pub mod dedup_shards;
pub mod filter;
pub mod filter_shards;
pub mod normalize;
pub(crate) mod residency;
pub mod suffix;

pub use dedup::{DEDUP_CODE_VERSION, DedupError, DedupParams, DedupSummary, run_dedup};
pub use filter::{FILTER_CODE_VERSION, FilterError, FilterParams, FilterSummary, run_filter};
pub use normalize::{NormalizeOptions, UnicodeForm};
pub use suffix::{
    Budget, Corpus, CorpusWriter, Duplicates, Keep, RepeatedWindow, find_duplicates,
    find_duplicates_within,
};

use std::path::{Path, PathBuf};

/// Writes `summary` as pretty JSON to `out_dir/summary.json`; on failure
/// returns the path and the error for the caller's error type.
pub(crate) fn write_summary<S: serde::Serialize>(
    out_dir: &Path,
    summary: &S,
) -> Result<(), (PathBuf, std::io::Error)> {
    let path = out_dir.join("summary.json");
    let json = serde_json::to_string_pretty(summary)
        .map_err(|e| (path.clone(), std::io::Error::other(e)))?;
    std::fs::write(&path, json + "\n").map_err(|e| (path, e))
}
