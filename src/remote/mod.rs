//! The shared cache: cache entries pushed to and pulled from an object
//! store (S3, Google Cloud Storage, Azure Blob Storage or a local or shared
//! directory), by key.
//!
//! Layout under the remote's prefix, the local store's own:
//!
//! ```text
//! entries/<key>/out/...         the output files, as the manifest lists them
//! entries/<key>/run/...         the run facts (not hashed)
//! entries/<key>/log.txt         the stage's log
//! entries/<key>/manifest.json   uploaded last: without it there is no entry
//! ```
//!
//! An entry's manifest is uploaded only after every file it lists, so a push
//! cut short leaves files without a manifest, which no pull takes for an
//! entry. A pull trusts nothing it downloads: the manifest must hash to the
//! key asked for, its file list to its output hash, and every file to its
//! listed size and blake3; only then is the entry moved into the local store,
//! so a corrupted or partial remote entry is never used.

mod transfer;

pub mod commands;

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;
use serde_json::json;

use crate::hashing::{hash_json, output_hash};
use crate::plan::KeyMaterial;
use crate::store::{Entry, MANIFEST_FORMAT, Manifest, RUN_DIR, Store, check_entry};

/// The environment variable that names a remote when neither the command
/// line nor the pipeline file does.
pub const REMOTE_ENV: &str = "CRAM_REMOTE";

/// A connection to a shared cache.
pub struct Remote {
    address: String,
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("address", &self.address)
            .finish()
    }
}

/// What a push did with one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// The remote had it already.
    AlreadyThere,
    /// Uploaded, with this many bytes.
    Uploaded(u64),
}

impl Remote {
    /// Connects to the remote at `address`: `s3://bucket/prefix`,
    /// `gs://bucket/prefix`, `az://container/prefix` (and the other forms
    /// `object_store` knows), `file:///abs/path`, or a bare directory path,
    /// relative to `base`. Credentials and endpoints come from the
    /// environment as the clouds' own tools read them (`AWS_*`, `GOOGLE_*`,
    /// `AZURE_*`; e.g. `AWS_ENDPOINT` and `AWS_ALLOW_HTTP=true` for an S3
    /// server on loopback).
    pub fn open(address: &str, base: &Path) -> Result<Remote> {
        let url = parse_address(address, base)?;
        // Only the clouds' own variables: the builders also accept short
        // names (`endpoint`, `bucket`) that unrelated variables may carry.
        let options = std::env::vars()
            .filter(|(k, _)| {
                ["AWS_", "GOOGLE_", "AZURE_"]
                    .iter()
                    .any(|p| k.starts_with(p))
            })
            .map(|(k, v)| (k.to_ascii_lowercase(), v));
        let (store, prefix) = object_store::parse_url_opts(&url, options)
            .with_context(|| format!("cannot open the remote cache {address}"))?;
        if url.scheme() == "file" {
            let dir = url
                .to_file_path()
                .map_err(|()| anyhow::anyhow!("remote {address} is not a local path"))?;
            std::fs::create_dir_all(&dir).with_context(|| {
                format!("cannot create the remote cache directory {}", dir.display())
            })?;
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the I/O runtime for the remote cache")?;
        Ok(Remote {
            address: address.to_string(),
            store: Arc::from(store),
            prefix,
            runtime,
        })
    }

    /// The remote's address, as given.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Where an entry's objects lie.
    fn entry_path(&self, key: &str) -> ObjectPath {
        self.prefix.child("entries").child(key)
    }

    /// The manifest the remote holds for `key`, if it holds a complete
    /// entry (the manifest is not checked here; see [`Remote::pull`]).
    pub fn manifest(&self, key: &str) -> Result<Option<Manifest>> {
        let path = self.entry_path(key).child("manifest.json");
        let Some(bytes) = self
            .runtime
            .block_on(transfer::get_bytes(&*self.store, &path))?
        else {
            return Ok(None);
        };
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .with_context(|| format!("the remote manifest of {key} is not a manifest"))?;
        Ok(Some(manifest))
    }

    /// Uploads `entry` (and first the sub-units it lists, which must be in
    /// `store`) unless the remote has it already. A damaged local entry is
    /// refused. The manifest goes last.
    pub fn push(
        &self,
        store: &Store,
        entry: &Entry,
        bar: &indicatif::ProgressBar,
    ) -> Result<Pushed> {
        let mut bytes = 0;
        for unit in &entry.manifest.units {
            let local = store.get(&unit.key).with_context(|| {
                format!(
                    "{} lists the sub-unit {} ({}), which is missing from the local cache",
                    entry.manifest.stage, unit.name, unit.key
                )
            })?;
            if let Pushed::Uploaded(n) = self.push(store, &local, bar)? {
                bytes += n;
            }
        }
        let key = &entry.manifest.key;
        if self
            .manifest(key)
            .ok()
            .flatten()
            .is_some_and(|m| m.key == *key)
        {
            return Ok(if bytes > 0 {
                Pushed::Uploaded(bytes)
            } else {
                Pushed::AlreadyThere
            });
        }
        let problems = check_entry(entry);
        if !problems.is_empty() {
            bail!(
                "the local entry of {} ({key}) is damaged, not pushing it: {} (`cram verify` quarantines it)",
                entry.manifest.stage,
                problems.join("; ")
            );
        }
        let base = self.entry_path(key);
        let mut uploads: Vec<(ObjectPath, std::path::PathBuf)> = Vec::new();
        for f in &entry.manifest.files {
            uploads.push((
                child_path(&base.child("out"), &f.path),
                entry.out_dir().join(&f.path),
            ));
        }
        let run = entry.run_dir();
        if run.is_dir() {
            for (rel, path) in crate::hashing::list_files(&run)? {
                uploads.push((child_path(&base.child(RUN_DIR), &rel), path));
            }
        }
        let log = entry.dir.join("log.txt");
        if log.is_file() {
            uploads.push((base.child("log.txt"), log));
        }
        let total: u64 = uploads
            .iter()
            .map(|(_, p)| std::fs::metadata(p).map_or(0, |m| m.len()))
            .sum();
        bar.set_length(bar.length().unwrap_or(0) + total);
        self.runtime.block_on(async {
            for (dest, src) in &uploads {
                transfer::upload(&self.store, dest, src, bar)
                    .await
                    .with_context(|| {
                        format!("cannot upload {} to {}", src.display(), self.address)
                    })?;
            }
            let manifest = serde_json::to_vec_pretty(&entry.manifest)?;
            self.store
                .put(&base.child("manifest.json"), manifest.into())
                .await
                .with_context(|| format!("cannot upload the manifest of {key}"))?;
            anyhow::Ok(())
        })?;
        Ok(Pushed::Uploaded(bytes + total))
    }

    /// Downloads the entry for `key` (and the sub-units it lists) into
    /// `store`, checking everything on the way. `Ok(None)`: the remote has
    /// no complete entry for the key. An error: it has one that cannot be
    /// used (damaged, incomplete, or not what its key says); nothing of it
    /// is kept.
    pub fn pull(
        &self,
        store: &Store,
        key: &str,
        bar: &indicatif::ProgressBar,
    ) -> Result<Option<Entry>> {
        if let Some(entry) = store.get(key) {
            return Ok(Some(entry));
        }
        let Some(manifest) = self.manifest(key)? else {
            return Ok(None);
        };
        check_manifest(key, &manifest)
            .with_context(|| format!("the remote entry {key} cannot be trusted"))?;
        for unit in &manifest.units {
            if self.pull(store, &unit.key, bar)?.is_none() {
                bail!(
                    "the remote entry of {} ({key}) lists the sub-unit {} ({}), which the remote lacks",
                    manifest.stage,
                    unit.name,
                    unit.key
                );
            }
        }
        let staging = store.stage(key)?;
        let base = self.entry_path(key);
        let total: u64 = manifest.files.iter().map(|f| f.size).sum();
        bar.set_length(bar.length().unwrap_or(0) + total);
        let fetched = self.runtime.block_on(async {
            for f in &manifest.files {
                let dest = staging.out_dir().join(&f.path);
                let (size, blake3) =
                    transfer::download(&*self.store, &child_path(&base.child("out"), &f.path), &dest, bar)
                        .await
                        .with_context(|| format!("cannot download {} of {key}", f.path))?
                        .with_context(|| format!("the remote entry {key} lacks its file {}", f.path))?;
                if size != f.size || blake3 != f.blake3 {
                    bail!(
                        "the remote copy of {} in {key} is damaged: {size} bytes with blake3 {} where the manifest says {} bytes with {}",
                        f.path,
                        &blake3[..16],
                        f.size,
                        &f.blake3[..16.min(f.blake3.len())]
                    );
                }
            }
            let run = base.child(RUN_DIR);
            for (rel, path) in transfer::list(&*self.store, &run).await? {
                transfer::download(&*self.store, &path, &staging.run_dir().join(&rel), bar).await?;
            }
            transfer::download(&*self.store, &base.child("log.txt"), &staging.log_path(), bar)
                .await?;
            anyhow::Ok(())
        });
        if let Err(e) = fetched {
            let _ = std::fs::remove_dir_all(&staging.dir);
            return Err(e);
        }
        store.install(staging, manifest, false).map(Some)
    }
}

/// Checks what a remote manifest says of itself before anything it lists
/// is downloaded: its format, that its material hashes to `key` (as a
/// stage's or as a sub-unit's), that its file list hashes to its output
/// hash, and that no listed path leaves the entry.
fn check_manifest(key: &str, m: &Manifest) -> Result<()> {
    if m.format != MANIFEST_FORMAT {
        bail!("manifest format {:?}, not {MANIFEST_FORMAT}", m.format);
    }
    if m.key != key {
        bail!("its manifest is for key {}", m.key);
    }
    let as_stage = KeyMaterial {
        kind: m.kind.clone(),
        code_version: m.code_version,
        params: m.params.clone(),
        seed: m.seed,
        identity: m.identity.clone(),
        inputs: m.inputs.clone(),
    }
    .key();
    let as_unit = hash_json(&json!({
        "unit_kind": m.kind,
        "code_version": m.code_version,
        "material": m.params,
    }));
    if as_stage != key && as_unit != key {
        bail!("its manifest's kind, parameters and inputs do not hash to its key");
    }
    if output_hash(&m.files) != m.output_hash {
        bail!("its file list does not hash to its output hash");
    }
    for f in &m.files {
        let safe = !f.path.is_empty()
            && f.path
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\\'));
        if !safe {
            bail!("its manifest lists a file outside the entry: {:?}", f.path);
        }
    }
    Ok(())
}

/// `base` joined with a `/`-separated relative path.
fn child_path(base: &ObjectPath, rel: &str) -> ObjectPath {
    rel.split('/').fold(base.clone(), |p, part| p.child(part))
}

/// A remote address as a URL: URLs as given, bare paths as `file://` URLs
/// (relative ones against `base`).
fn parse_address(address: &str, base: &Path) -> Result<url::Url> {
    if address.contains("://") {
        return url::Url::parse(address)
            .with_context(|| format!("remote {address:?} is not a valid address"));
    }
    let path = base.join(address);
    let path = std::path::absolute(&path)
        .with_context(|| format!("cannot resolve the remote path {}", path.display()))?;
    url::Url::from_directory_path(&path)
        .map_err(|()| anyhow::anyhow!("remote path {} is not usable", path.display()))
}

/// The remote to use: `--remote` first, then `$CRAM_REMOTE`, then the
/// pipeline file's `remote` (relative to its directory). `None` where none
/// names one, or where the one that wins is `none`.
pub fn resolve(
    flag: Option<&str>,
    pipeline: Option<&crate::registry::PipelineMeta>,
) -> Result<Option<Remote>> {
    let env = std::env::var(REMOTE_ENV).ok().filter(|s| !s.is_empty());
    let (address, base) = match (flag, env, pipeline.and_then(|p| p.remote.as_deref())) {
        (Some(a), _, _) => (a.to_string(), std::path::PathBuf::from(".")),
        (None, Some(a), _) => (a, std::path::PathBuf::from(".")),
        (None, None, Some(a)) => (
            a.to_string(),
            pipeline.map(|p| p.dir.clone()).unwrap_or_default(),
        ),
        (None, None, None) => return Ok(None),
    };
    if address == "none" {
        return Ok(None);
    }
    Remote::open(&address, &base).map(Some)
}
