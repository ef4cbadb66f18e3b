//! The content-addressed cache store.
//!
//! Layout under the store root:
//!
//! ```text
//! entries/<key>/manifest.json   complete entries only (renamed into place)
//! entries/<key>/out/...         the stage's output files (hashed)
//! entries/<key>/run/...         facts about the run that made them: timings,
//!                               the machine, documents built from those
//!                               (not hashed, not verified)
//! entries/<key>/log.txt         the stage's log
//! tmp/                          entries being built (never read as valid)
//! work/<key>/                   persistent scratch per key (resumable stages)
//! downloads/                    downloaded source files, by content
//! locks/<key>.lock              per-key build locks (two `cram run`s share work)
//! logs/                         logs of failed runs
//! quarantine/                   entries `cram verify` found damaged
//! store.lock                    shared by runs, exclusive for `cram gc`
//! cubecl/                       the GPU backends' autotune results for this
//!                               machine's cards (cram_model::tuning)
//! ```
//!
//! An entry is built in `tmp/` and renamed to `entries/<key>` only once its
//! manifest is written, so a crash at any point leaves either no entry or a
//! complete one.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::hashing::{FileRecord, hash_tree, output_hash};

/// The manifest format tag.
pub const MANIFEST_FORMAT: &str = "cram-manifest-v1";

/// The record of one input of an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputRecord {
    /// The input entry's key.
    pub key: String,
    /// The input entry's output hash (what this entry's key depends on).
    pub output_hash: String,
}

/// What a cache entry says about itself (`manifest.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`MANIFEST_FORMAT`].
    pub format: String,
    /// The stage name that produced it (informational: entries are shared
    /// between pipelines by key).
    pub stage: String,
    /// The stage kind.
    pub kind: String,
    /// The entry key.
    pub key: String,
    /// The kind's code version.
    pub code_version: u32,
    /// The cram version that wrote it.
    pub tool_version: String,
    /// Resolved parameters.
    pub params: Value,
    /// The seed, when the kind uses it.
    pub seed: Option<u64>,
    /// Extra identity (e.g. a download's resolved source).
    #[serde(default)]
    pub identity: Option<Value>,
    /// Inputs by stage name.
    pub inputs: std::collections::BTreeMap<String, InputRecord>,
    /// Content hash of the output files.
    pub output_hash: String,
    /// Every output file.
    pub files: Vec<FileRecord>,
    /// Start time (RFC 3339, UTC).
    pub started_at: String,
    /// End time (RFC 3339, UTC).
    pub finished_at: String,
    /// Wall-clock seconds the stage ran.
    pub wall_seconds: f64,
    /// What the stage reported.
    pub metrics: Value,
    /// Sub-units cached on their own while the stage ran (e.g. one GLUE
    /// task each), by key.
    #[serde(default)]
    pub units: Vec<UnitRef>,
}

/// A reference from an entry to a sub-unit entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitRef {
    /// Display name, `stage.unit` (e.g. `glue.cola`).
    pub name: String,
    /// The unit's kind (e.g. `glue-task`).
    pub kind: String,
    /// The unit entry's key.
    pub key: String,
}

/// A complete entry found in the store.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The entry's directory.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
}

impl Entry {
    /// The output directory.
    pub fn out_dir(&self) -> PathBuf {
        self.dir.join("out")
    }

    /// The run-facts directory: what the run that made the outputs wrote
    /// about itself (timings, the machine), outside the output hash. Entries
    /// from before it existed have none; readers treat it as empty.
    pub fn run_dir(&self) -> PathBuf {
        self.dir.join(RUN_DIR)
    }
}

/// Name of an entry's run-facts directory (see [`Entry::run_dir`]).
pub const RUN_DIR: &str = "run";

/// An entry being built: a fresh directory under `tmp/`.
pub struct Staging {
    /// The staging directory (holds `out/` and `log.txt`).
    pub dir: PathBuf,
    key: String,
}

impl Staging {
    /// The output directory the stage writes into.
    pub fn out_dir(&self) -> PathBuf {
        self.dir.join("out")
    }

    /// The run-facts directory the stage may write into (outside the
    /// output hash; see [`Entry::run_dir`]).
    pub fn run_dir(&self) -> PathBuf {
        self.dir.join(RUN_DIR)
    }

    /// The log file of this run.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("log.txt")
    }
}

/// The cache store.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// A held file lock; released on drop.
pub struct LockGuard {
    _file: File,
}

impl Store {
    /// Opens (creating if needed) a store at `root`.
    pub fn open(root: &Path) -> Result<Store> {
        for sub in [
            "entries",
            "tmp",
            "work",
            "downloads",
            "locks",
            "logs",
            "quarantine",
        ] {
            fs::create_dir_all(root.join(sub))
                .with_context(|| format!("cannot create cache directory {}", root.display()))?;
        }
        Ok(Store {
            root: root.to_path_buf(),
        })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where downloaded files are kept (by content).
    pub fn downloads_dir(&self) -> PathBuf {
        self.root.join("downloads")
    }

    /// The persistent scratch directory of a key (created).
    pub fn work_dir(&self, key: &str) -> Result<PathBuf> {
        let dir = self.root.join("work").join(key);
        fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// Removes the scratch directory of a key (after its entry is complete).
    pub fn drop_work_dir(&self, key: &str) {
        let _ = fs::remove_dir_all(self.root.join("work").join(key));
    }

    /// Directory for the logs of failed runs.
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    fn entry_dir(&self, key: &str) -> PathBuf {
        self.root.join("entries").join(key)
    }

    /// The complete entry for `key`, if there is one. A directory without a
    /// readable manifest is not an entry.
    pub fn get(&self, key: &str) -> Option<Entry> {
        let dir = self.entry_dir(key);
        let text = fs::read_to_string(dir.join("manifest.json")).ok()?;
        let manifest: Manifest = serde_json::from_str(&text).ok()?;
        (manifest.key == key).then_some(Entry { dir, manifest })
    }

    /// Every complete entry.
    pub fn entries(&self) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        for item in fs::read_dir(self.root.join("entries"))? {
            let item = item?;
            let key = item.file_name().to_string_lossy().into_owned();
            if let Some(e) = self.get(&key) {
                out.push(e);
            }
        }
        out.sort_by(|a, b| a.manifest.key.cmp(&b.manifest.key));
        Ok(out)
    }

    /// Takes the store lock: shared for runs, exclusive for garbage collection.
    pub fn lock_store(&self, exclusive: bool) -> Result<LockGuard> {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.root.join("store.lock"))?;
        if exclusive {
            file.lock()?;
        } else {
            file.lock_shared()?;
        }
        Ok(LockGuard { _file: file })
    }

    /// Takes the build lock of one key, waiting for another process that
    /// builds the same key. `on_wait` is called once if we have to wait.
    pub fn lock_key(&self, key: &str, on_wait: impl FnOnce()) -> Result<LockGuard> {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.root.join("locks").join(format!("{key}.lock")))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                on_wait();
                file.lock()?;
            }
            Err(fs::TryLockError::Error(e)) => return Err(e.into()),
        }
        Ok(LockGuard { _file: file })
    }

    /// Starts building an entry for `key` in a fresh temporary directory.
    pub fn stage(&self, key: &str) -> Result<Staging> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{key}-"))
            .tempdir_in(self.root.join("tmp"))?
            .keep();
        fs::create_dir_all(dir.join("out"))?;
        fs::create_dir_all(dir.join(RUN_DIR))?;
        Ok(Staging {
            dir,
            key: key.to_string(),
        })
    }

    /// Hashes the staged output, writes the manifest (filling `files` and
    /// `output_hash`) and renames the directory into place. If `replace` is
    /// set an existing entry for the key is removed first (`--force`).
    pub fn commit(&self, staging: Staging, mut manifest: Manifest, replace: bool) -> Result<Entry> {
        let files = hash_tree(&staging.out_dir())
            .with_context(|| format!("cannot hash outputs in {}", staging.out_dir().display()))?;
        manifest.output_hash = output_hash(&files);
        manifest.files = files;
        manifest.key = staging.key.clone();
        self.install(staging, manifest, replace)
    }

    /// Writes `manifest` as it is into the staged entry and renames the
    /// directory into place (what [`Store::commit`] does once it has hashed
    /// the outputs; a pulled entry arrives with its manifest, checked).
    pub fn install(&self, staging: Staging, manifest: Manifest, replace: bool) -> Result<Entry> {
        anyhow::ensure!(
            manifest.key == staging.key,
            "the manifest of {} cannot be installed as {}",
            manifest.key,
            staging.key
        );
        let manifest_path = staging.dir.join("manifest.json");
        {
            let mut f = File::create(&manifest_path)?;
            f.write_all(serde_json::to_string_pretty(&manifest)?.as_bytes())?;
            f.sync_all()?;
        }
        let target = self.entry_dir(&staging.key);
        if target.exists() {
            if replace || self.get(&staging.key).is_none() {
                let trash = self.root.join("tmp").join(format!(
                    "replaced-{}-{}",
                    staging.key,
                    std::process::id()
                ));
                fs::rename(&target, &trash)?;
                let _ = fs::remove_dir_all(&trash);
            } else {
                // Another process completed the same key first: keep theirs.
                let _ = fs::remove_dir_all(&staging.dir);
                return self
                    .get(&staging.key)
                    .context("entry vanished while committing");
            }
        }
        fs::rename(&staging.dir, &target).with_context(|| {
            format!(
                "cannot move {} into place at {}",
                staging.dir.display(),
                target.display()
            )
        })?;
        if let Ok(d) = File::open(target.parent().expect("entries dir")) {
            let _ = d.sync_all();
        }
        Ok(Entry {
            dir: target,
            manifest,
        })
    }

    /// Abandons a staged entry, keeping its log under `logs/` for the user.
    /// Returns the kept log's path.
    pub fn abandon(&self, staging: Staging, stage: &str) -> Option<PathBuf> {
        let kept = self.logs_dir().join(format!(
            "{stage}-{}.log",
            &staging.key[..16.min(staging.key.len())]
        ));
        let ok = fs::copy(staging.log_path(), &kept).is_ok();
        let _ = fs::remove_dir_all(&staging.dir);
        ok.then_some(kept)
    }

    /// Removes leftovers of crashed runs from `tmp/` that no process holds.
    /// Called by `gc`; a running build's directory is left alone because its
    /// key lock is held.
    pub fn clean_tmp(&self) -> Result<u64> {
        let mut freed = 0;
        for item in fs::read_dir(self.root.join("tmp"))? {
            let item = item?;
            let name = item.file_name().to_string_lossy().into_owned();
            let key = name.split('-').next().unwrap_or("").to_string();
            if key.len() == 64 {
                let lock = File::options()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(self.root.join("locks").join(format!("{key}.lock")))?;
                if lock.try_lock().is_err() {
                    continue;
                }
            }
            freed += dir_size(&item.path());
            let _ = fs::remove_dir_all(item.path());
        }
        Ok(freed)
    }

    /// Rechecks every entry's files against its manifest. Damaged entries
    /// are moved to `quarantine/`; returns (entry, problems) for each.
    pub fn verify(&self) -> Result<Vec<(Entry, Vec<String>)>> {
        let mut damaged = Vec::new();
        for entry in self.entries()? {
            let problems = check_entry(&entry);
            if !problems.is_empty() {
                let dest = self.root.join("quarantine").join(&entry.manifest.key);
                let _ = fs::remove_dir_all(&dest);
                fs::rename(&entry.dir, &dest)?;
                damaged.push((entry, problems));
            }
        }
        Ok(damaged)
    }

    /// Removes an entry (and its scratch), returning the bytes freed.
    pub fn remove(&self, key: &str) -> Result<u64> {
        let dir = self.entry_dir(key);
        let size = dir_size(&dir);
        fs::remove_dir_all(&dir)?;
        self.drop_work_dir(key);
        Ok(size)
    }
}

/// Compares an entry's files with its manifest.
pub fn check_entry(entry: &Entry) -> Vec<String> {
    let mut problems = Vec::new();
    let out = entry.out_dir();
    match hash_tree(&out) {
        Err(e) => problems.push(format!("cannot read outputs: {e}")),
        Ok(files) => {
            let listed: std::collections::BTreeMap<_, _> = entry
                .manifest
                .files
                .iter()
                .map(|f| (f.path.as_str(), f))
                .collect();
            let found: std::collections::BTreeMap<_, _> =
                files.iter().map(|f| (f.path.as_str(), f)).collect();
            for (path, want) in &listed {
                match found.get(path) {
                    None => problems.push(format!("{path}: missing")),
                    Some(got) if got.size != want.size => problems.push(format!(
                        "{path}: size {} but the manifest says {}",
                        got.size, want.size
                    )),
                    Some(got) if got.blake3 != want.blake3 => {
                        problems.push(format!("{path}: content changed (blake3 differs)"))
                    }
                    _ => {}
                }
            }
            for path in found.keys() {
                if !listed.contains_key(path) {
                    problems.push(format!("{path}: not in the manifest"));
                }
            }
        }
    }
    problems
}

/// Total size of the files under `path`.
pub fn dir_size(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if meta.is_file() {
        return meta.len();
    }
    let mut total = 0;
    if let Ok(items) = fs::read_dir(path) {
        for item in items.flatten() {
            total += dir_size(&item.path());
        }
    }
    total
}

/// The current time as RFC 3339 (UTC, seconds).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}
