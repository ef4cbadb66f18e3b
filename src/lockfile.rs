//! `FILE.lock` beside a pipeline: for each stage, the key and output hash of
//! its last successful run, with the parameters that produced it. Commit it
//! to pin a recipe's results (like `dvc.lock` or `Cargo.lock`).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::store::InputRecord;

/// The lock file's format tag.
pub const LOCK_FORMAT: &str = "cram-lock-v1";

/// One stage's pinned result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockEntry {
    /// Stage kind.
    pub kind: String,
    /// Cache key of the run.
    pub key: String,
    /// Content hash of its output.
    pub output_hash: String,
    /// The kind's code version.
    pub code_version: u32,
    /// Resolved parameters.
    pub params: Value,
    /// The seed, if the kind uses it.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Extra identity (a download's source revision and checksums, a
    /// command's dependency hashes).
    #[serde(default)]
    pub identity: Option<Value>,
    /// Inputs by stage name.
    pub inputs: BTreeMap<String, InputRecord>,
}

/// The whole lock file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LockFile {
    /// Always [`LOCK_FORMAT`].
    pub format: String,
    /// Entries by stage name.
    pub stages: BTreeMap<String, LockEntry>,
}

impl LockFile {
    /// Reads a lock file; a missing file is an empty lock.
    pub fn read(path: &Path) -> Result<LockFile> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).with_context(|| {
                format!(
                    "{} is not a valid cram lock file (delete it to start afresh)",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LockFile {
                format: LOCK_FORMAT.into(),
                stages: BTreeMap::new(),
            }),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Writes the lock file atomically (temporary file + rename).
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        // A name of our own, so that two runs writing at once never clash.
        let tmp = path.with_extension(format!("lock.{}.tmp", std::process::id()));
        std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }
}
