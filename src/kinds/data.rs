//! Adapters for `cram-data`: `download` and `synthetic`.

use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use cram_data::download::shards::{download_splits, fetch_download_shard, read_fetched_shard};
use cram_data::{DownloadMode, DownloadParams, HubConfig, SourceIdentity, SyntheticParams};
use serde_json::Value;

use super::simple::{Simple, summary, summary_with_timings};
use crate::hashing::hash_json;
use crate::registry::{
    Artifact, InputSlot, Kind, ParamError, Params, PipelineMeta, Shards, StageContext, plain_params,
};
use crate::store::Store;

/// `synthetic`: English-like documents generated from a seed (offline).
pub static SYNTHETIC: Simple<SyntheticParams> = Simple {
    name: "synthetic",
    about: "Generates seeded, English-like documents (offline sanity runs).",
    code_version: cram_data::synthetic::CODE_VERSION,
    uses_seed: true,
    output: Artifact::Documents,
    inputs: &[],
    run: run_synthetic,
    shards: None,
    check: None,
    params: PhantomData,
};

fn run_synthetic(ctx: &StageContext<'_>, p: &SyntheticParams) -> Result<Value> {
    summary(&cram_data::run_synthetic(
        p,
        ctx.seed,
        ctx.out_dir,
        ctx.progress,
    )?)
}

/// `download`: files from the Hugging Face Hub (or a mirror at
/// `HF_ENDPOINT`), an https URL or local paths.
pub struct Download;

/// Local sources are relative to the pipeline file, like `deps`.
fn anchored(params: &DownloadParams, pipeline: &PipelineMeta) -> DownloadParams {
    let mut p = params.clone();
    let s = &p.source;
    let remote = s.starts_with("hf://") || s.starts_with("http://") || s.starts_with("https://");
    if !remote && Path::new(s).is_relative() {
        p.source = pipeline.dir.join(s).display().to_string();
    }
    p
}

/// A hub revision pinned to a full commit hash never moves, so its resolved
/// identity can be remembered instead of asking the hub again.
fn pinned_commit(source: &str) -> bool {
    source
        .strip_prefix("hf://")
        .and_then(|rest| rest.split('/').nth(2))
        .and_then(|name| name.split_once('@'))
        .is_some_and(|(_, rev)| rev.len() == 40 && rev.chars().all(|c| c.is_ascii_hexdigit()))
}

impl Kind for Download {
    fn name(&self) -> &'static str {
        "download"
    }
    fn about(&self) -> &'static str {
        "Fetches text from the Hugging Face Hub (hf://datasets/ORG/NAME[@REV]/GLOB), a URL or local files, verified and resumable; writes documents (or the files verbatim)."
    }
    fn code_version(&self) -> u32 {
        cram_data::download::CODE_VERSION
    }
    fn uses_seed(&self, _params: &Params) -> bool {
        false
    }
    fn output(&self) -> Artifact {
        Artifact::Documents
    }
    fn output_for(&self, params: &Params) -> Artifact {
        match serde_json::from_value::<DownloadParams>(params.raw.clone()) {
            Ok(p) if p.mode == DownloadMode::Files => Artifact::Files,
            _ => Artifact::Documents,
        }
    }
    fn inputs(&self) -> &'static [InputSlot] {
        &[]
    }
    fn schema(&self) -> schemars::Schema {
        schemars::schema_for!(DownloadParams)
    }
    fn params(&self, table: toml::Value) -> Result<Params, ParamError> {
        plain_params::<DownloadParams>(table)
    }
    fn identity(
        &self,
        params: &Params,
        pipeline: &PipelineMeta,
        store: &Store,
    ) -> Result<Option<Value>> {
        let p: DownloadParams = serde_json::from_value(params.raw.clone())?;
        let p = anchored(&p, pipeline);
        let memo = pinned_commit(&p.source).then(|| {
            store
                .root()
                .join("identities")
                .join(format!("{}.json", hash_json(&params.raw)))
        });
        if let Some(path) = &memo
            && let Ok(text) = std::fs::read_to_string(path)
            && let Ok(v) = serde_json::from_str::<Value>(&text)
        {
            return Ok(Some(v));
        }
        let identity = cram_data::resolve_source(&p)
            .with_context(|| format!("cannot resolve the source {}", p.source))?;
        let v = serde_json::to_value(&identity)?;
        if let Some(path) = memo {
            std::fs::create_dir_all(path.parent().expect("identities dir"))?;
            std::fs::write(path, serde_json::to_string_pretty(&v)?)?;
        }
        Ok(Some(v))
    }
    fn run(&self, ctx: &StageContext<'_>) -> Result<Value> {
        run_download(ctx, &[])
    }
    fn shards(&self) -> Option<&dyn Shards> {
        Some(&DownloadShards)
    }
}

/// The parameters (local sources anchored) and the resolved identity.
fn download_setup(ctx: &StageContext<'_>) -> Result<(DownloadParams, SourceIdentity)> {
    let p: DownloadParams = ctx.typed()?;
    let identity: SourceIdentity = serde_json::from_value(
        ctx.identity
            .cloned()
            .context("the download's source identity is missing")?,
    )?;
    Ok((anchored(&p, ctx.pipeline), identity))
}

/// Downloads (and extracts) in this process; `shards` are the directories
/// of shards that fetched files before, whose transfers the metrics count.
fn run_download(ctx: &StageContext<'_>, shards: &[PathBuf]) -> Result<Value> {
    let (p, identity) = download_setup(ctx)?;
    let s = cram_data::run_download(
        &p,
        &identity,
        &ctx.store.downloads_dir(),
        ctx.out_dir,
        ctx.progress,
    )?;
    // What came over the network depends on the download cache: a run
    // fact for the manifest, not part of the output.
    let mut fetched: Vec<String> = Vec::new();
    let mut fetched_bytes = 0;
    for dir in shards {
        let shard = read_fetched_shard(dir)?;
        fetched.extend(shard.fetched_files);
        fetched_bytes += shard.fetched_bytes;
    }
    fetched.extend(s.files.iter().filter(|f| !f.cached).map(|f| f.path.clone()));
    fetched_bytes += s.fetched_bytes;
    let mut timings =
        serde_json::json!({ "fetched_bytes": fetched_bytes, "fetched_files": fetched });
    if !shards.is_empty() {
        timings["shards"] = shards.len().into();
    }
    summary_with_timings(&s, &timings)
}

/// `download` in shards: each fetches a run of the files into the shared
/// download cache; the merge extracts them (see
/// `cram_data::download::shards`).
struct DownloadShards;

impl Shards for DownloadShards {
    fn splits(&self, ctx: &StageContext<'_>) -> Result<bool> {
        let (p, identity) = download_setup(ctx)?;
        Ok(download_splits(&p, &identity))
    }

    fn prepare(&self, _ctx: &StageContext<'_>, _prepared: &Path) -> Result<()> {
        Ok(())
    }

    fn run_shard(
        &self,
        ctx: &StageContext<'_>,
        _prepared: &Path,
        shard: usize,
        shards: usize,
        dir: &Path,
    ) -> Result<()> {
        let (p, identity) = download_setup(ctx)?;
        fetch_download_shard(
            &p,
            &identity,
            &ctx.store.downloads_dir(),
            shard,
            shards,
            dir,
            ctx.progress,
            &HubConfig::from_env(),
        )?;
        Ok(())
    }

    fn merge(&self, ctx: &StageContext<'_>, _prepared: &Path, dirs: &[PathBuf]) -> Result<Value> {
        run_download(ctx, dirs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_full_commit_hashes_count_as_pinned() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        assert!(pinned_commit(&format!(
            "hf://datasets/a/b@{sha}/x/*.parquet"
        )));
        assert!(!pinned_commit("hf://datasets/a/b@main/x/*.parquet"));
        assert!(!pinned_commit("hf://datasets/a/b/x/*.parquet"));
        assert!(!pinned_commit("/local/file.txt"));
    }
}
