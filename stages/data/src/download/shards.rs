//! `download` split into shards, for an executor that spreads them over
//! machines (a Slurm array): each shard fetches a contiguous run of the
//! source's files, balanced by size, into the shared download cache, each
//! file verified as in a one-pass run. The merge is the one-pass
//! [`super::run_download_with`], which then finds every file in the cache
//! and extracts them in order, so its output is the one pass's, byte for
//! byte.
//!
//! Extraction stays in the merge because documents can depend on what came
//! before them (the `auto` layout's choice, `max_documents`), and it is
//! cheap next to a transfer. Local sources fetch nothing, and with
//! `max_documents` the one pass stops fetching once it has its documents,
//! so neither splits ([`download_splits`]).

use std::ops::Range;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::fetch::{Http, Meter};
use super::{
    DownloadError, DownloadParams, FileRecord, HubConfig, Origin, SourceIdentity, check_identity,
    obtain,
};

/// What a shard fetched (`fetched.json` in its directory).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FetchedShard {
    /// The files of the shard, in order (path, sha256, size).
    pub files: Vec<FileRecord>,
    /// Paths that came over the network (the others were in the cache).
    pub fetched_files: Vec<String>,
    /// Bytes received over the network.
    pub fetched_bytes: u64,
}

const FETCHED_FILE: &str = "fetched.json";

/// Whether a download with these parameters and this identity splits into
/// shards (see the module's documentation).
pub fn download_splits(params: &DownloadParams, identity: &SourceIdentity) -> bool {
    identity.origin != Origin::Local && params.max_documents.is_none() && identity.files.len() > 1
}

/// The files (indices into `identity.files`) shard `shard` of `shards`
/// fetches: contiguous runs, a file going to the shard whose share of the
/// total size holds the file's midpoint (files of unknown size weigh one
/// byte). Every file lands in exactly one shard, in order.
pub fn shard_files(identity: &SourceIdentity, shard: usize, shards: usize) -> Range<usize> {
    let shards = shards.max(1) as u128;
    let weights: Vec<u128> = identity
        .files
        .iter()
        .map(|f| u128::from(f.size.unwrap_or(1).max(1)))
        .collect();
    let total: u128 = weights.iter().sum::<u128>().max(1);
    let mut owners = Vec::with_capacity(weights.len());
    let mut before = 0u128;
    for w in &weights {
        // Twice the midpoint, over twice the total, keeps it in integers.
        let owner = ((2 * before + w) * shards / (2 * total)).min(shards - 1) as usize;
        owners.push(owner);
        before += w;
    }
    let start = owners.partition_point(|&o| o < shard);
    let end = owners.partition_point(|&o| o <= shard);
    start..end
}

/// Fetches the files of shard `shard` of `shards` into `download_cache`
/// and records them in `shard_dir/fetched.json`.
#[allow(clippy::too_many_arguments)]
pub fn fetch_download_shard(
    params: &DownloadParams,
    identity: &SourceIdentity,
    download_cache: &Path,
    shard: usize,
    shards: usize,
    shard_dir: &Path,
    progress: &indicatif::ProgressBar,
    hub: &HubConfig,
) -> Result<FetchedShard, DownloadError> {
    check_identity(params, identity)?;
    let files = &identity.files[shard_files(identity, shard, shards)];
    let total: u64 = files.iter().map(|f| f.size.unwrap_or(0)).sum();
    let mut meter = Meter::new(progress, total);
    let mut http: Option<Http> = None;
    let mut fetched = FetchedShard {
        files: Vec::with_capacity(files.len()),
        fetched_files: Vec::new(),
        fetched_bytes: 0,
    };
    for file in files {
        progress.set_message(format!("fetching {}", file.path));
        let (_, record) = obtain(
            &mut http,
            hub,
            params,
            identity,
            file,
            download_cache,
            &mut meter,
        )?;
        if !record.cached {
            fetched.fetched_files.push(record.path.clone());
        }
        fetched.files.push(record);
    }
    fetched.fetched_bytes = meter.fetched();
    let path = shard_dir.join(FETCHED_FILE);
    let json = serde_json::to_vec_pretty(&fetched).expect("the record serialises");
    std::fs::write(&path, json).map_err(|e| DownloadError::io(&path, e))?;
    progress.set_message(format!("fetched {} files", files.len()));
    Ok(fetched)
}

/// Reads what a shard fetched.
pub fn read_fetched_shard(shard_dir: &Path) -> Result<FetchedShard, DownloadError> {
    let path = shard_dir.join(FETCHED_FILE);
    let bytes = std::fs::read(&path).map_err(|e| DownloadError::io(&path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| DownloadError::io(&path, std::io::Error::other(e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::download::SourceFile;

    fn identity(sizes: &[Option<u64>]) -> SourceIdentity {
        SourceIdentity {
            source: "hf://datasets/o/n/*".into(),
            origin: Origin::Hub,
            repo: Some("o/n".into()),
            revision: None,
            commit: None,
            files: sizes
                .iter()
                .enumerate()
                .map(|(i, &size)| SourceFile {
                    path: format!("f{i}"),
                    location: format!("f{i}"),
                    size,
                    sha256: None,
                    git_oid: None,
                    etag: None,
                })
                .collect(),
        }
    }

    #[test]
    fn shards_cover_every_file_once_in_order_balanced_by_size() {
        // The CoLA and RTE files' sizes in kB: midpoints put the two small
        // CoLA files with CoLA's train set and split RTE's large two.
        let id = identity(&[37, 251, 37, 621, 584, 69].map(|k| Some(k * 1000)));
        let parts: Vec<_> = (0..3).map(|s| shard_files(&id, s, 3)).collect();
        assert_eq!(parts, vec![0..3, 3..4, 4..6]);
        for shards in 1..9 {
            let parts: Vec<_> = (0..shards).map(|s| shard_files(&id, s, shards)).collect();
            assert_eq!(parts[0].start, 0);
            assert_eq!(parts[shards - 1].end, 6);
            for w in parts.windows(2) {
                assert_eq!(w[0].end, w[1].start, "{parts:?}");
            }
        }
        // Unknown sizes weigh alike; one shard takes everything.
        let id = identity(&[None, None, None, None]);
        assert_eq!(shard_files(&id, 1, 2), 2..4);
        assert_eq!(shard_files(&id, 0, 1), 0..4);
    }
}
