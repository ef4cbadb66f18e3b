//! The `download` stage kind: fetch raw text from the Hugging Face Hub, a URL
//! or local files, and write it in the documents format (or store the files
//! verbatim, `mode = "files"`).
//!
//! The engine calls [`resolve_source`] first: it lists the files and their
//! content identity (revision, commit, sha256 / git blob id / ETag, size)
//! without downloading bodies, and hashes that into the cache key. Then
//! [`run_download`] fetches the files into a content-addressed download cache
//! (files named by their hash, so a pinned source never touches the network
//! twice), verifies them, and extracts documents (see [`extract`] for formats
//! and layouts).
//!
//! Environment: `HF_ENDPOINT` (default `https://huggingface.co`) and
//! `HF_TOKEN` (sent as a bearer token to the endpoint only), as
//! `huggingface_hub` does.

pub mod extract;
pub(crate) mod fetch;
pub mod shards;
pub mod source;

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::documents::{DEFAULT_SHARD_BYTES, DocumentWriter, DocumentsError};
pub use extract::{InputFormat, Layout};
pub use fetch::HubConfig;
use fetch::{Http, Meter, cache_name, hash_file, verify};
pub use source::{Origin, SourceFile, SourceIdentity, resolve_source, resolve_source_with};

/// Bumped whenever a change to the code changes the bytes `download` writes.
pub const CODE_VERSION: u32 = 2;

/// What the stage writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DownloadMode {
    /// Extract text into the documents format (`part-*.parquet`).
    Documents,
    /// Store the matched files verbatim under their source-relative paths
    /// (e.g. `cola/train-00000-of-00001.parquet`).
    Files,
}

/// Parameters of the `download` stage kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DownloadParams {
    /// What to fetch: `hf://datasets/ORG/NAME[@REVISION]/GLOB` (files of a
    /// Hub dataset repository; `*` within a folder, `**` across folders),
    /// an `https://` URL of one file, or a local file, folder or glob.
    pub source: String,
    /// `documents` extracts text into the documents format; `files` stores
    /// the matched files verbatim.
    pub mode: DownloadMode,
    /// Input format: `auto` (by file name), `parquet`, `jsonl` (plain, `.gz`
    /// or `.zst`) or `text` (plain, `.gz` or `.zst`).
    pub format: InputFormat,
    /// Parquet column holding the text.
    pub text_column: String,
    /// JSON-lines field holding the text.
    pub text_field: String,
    /// How rows become documents: `auto`, `wikitext` (` = Title = ` headings
    /// start articles), `lines` (one per line), `paragraphs` (blank-line
    /// separated blocks), `rows` (one per row), `titled` (WikiExtractor
    /// output: title line, blank line, body) or `file` (one per input file,
    /// e.g. a folder of books, so that dedup sees repeats across paragraphs).
    pub layout: Layout,
    /// Keep only the first N documents (files after the one that completes
    /// them are not fetched).
    pub max_documents: Option<u64>,
    /// Text bytes per output shard.
    pub shard_bytes: u64,
    /// Retries of a failed transfer (network error, HTTP 5xx/429, truncated
    /// or corrupt body) before giving up.
    pub retries: u32,
    /// Backoff before the first retry in milliseconds; doubles per retry
    /// (capped at 60 s).
    pub retry_base_ms: u64,
}

impl Default for DownloadParams {
    fn default() -> Self {
        DownloadParams {
            source: String::new(),
            mode: DownloadMode::Documents,
            format: InputFormat::Auto,
            text_column: "text".to_string(),
            text_field: "text".to_string(),
            layout: Layout::Auto,
            max_documents: None,
            shard_bytes: DEFAULT_SHARD_BYTES,
            retries: 5,
            retry_base_ms: 500,
        }
    }
}

/// One file of the summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Source-relative path.
    pub path: String,
    /// Commit (hub) the file was fetched at, if any.
    pub revision: Option<String>,
    /// sha256 of the content (hex), verified against the source where it
    /// gives one.
    pub sha256: String,
    /// Size in bytes.
    pub bytes: u64,
    /// True when the file came from the download cache or a local path
    /// (no network transfer). A fact of this run, not of the output: not in
    /// `summary.json` (the engine keeps it in the manifest).
    #[serde(skip)]
    pub cached: bool,
}

/// What `download` did (also written to `summary.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DownloadSummary {
    /// The source string.
    pub source: String,
    /// Documents or files mode.
    pub mode: DownloadMode,
    /// Hub repository, if any.
    pub repo: Option<String>,
    /// Revision asked for, if any.
    pub revision: Option<String>,
    /// Commit it resolved to, if any.
    pub commit: Option<String>,
    /// Files used (in files mode: stored), in order.
    pub files: Vec<FileRecord>,
    /// Bytes received over the network in this run. Not in `summary.json`,
    /// whose bytes must not depend on what the download cache held (the
    /// engine keeps it in the manifest).
    #[serde(skip)]
    pub fetched_bytes: u64,
    /// Layout used (documents mode).
    pub layout: Option<Layout>,
    /// Rows read (documents mode).
    pub rows: u64,
    /// Documents written (documents mode).
    pub documents: u64,
    /// UTF-8 bytes of text written (documents mode).
    pub bytes: u64,
    /// Invalid UTF-8 sequences replaced by U+FFFD.
    pub replaced_characters: u64,
    /// Whitespace-only documents dropped.
    pub skipped_empty: u64,
    /// True when `max_documents` cut the input short.
    pub truncated: bool,
    /// Output shards (documents mode).
    pub shards: Vec<String>,
}

/// Errors of the `download` kind.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The `source` parameter cannot be understood.
    #[error("source {source_string:?}: {reason}")]
    InvalidSource {
        /// The source string.
        source_string: String,
        /// What is wrong.
        reason: String,
    },
    /// A parameter is out of range or inconsistent.
    #[error("download: invalid parameters: {0}")]
    InvalidParams(String),
    /// HTTP 404.
    #[error(
        "not found (HTTP 404): {url} (tried {what}); check the repository id, revision and path"
    )]
    NotFound {
        /// The URL requested.
        url: String,
        /// The repo/revision/path it stands for.
        what: String,
    },
    /// HTTP 401/403.
    #[error("access denied (HTTP {status}) for {url}: {}", if *token_set { "HF_TOKEN is set but was refused; check that the token can read this repository (gated datasets need their terms accepted)" } else { "set HF_TOKEN to a Hugging Face access token that can read this repository" })]
    Unauthorized {
        /// The URL requested.
        url: String,
        /// 401 or 403.
        status: u16,
        /// Whether a token was sent.
        token_set: bool,
    },
    /// Another unexpected HTTP status.
    #[error("HTTP {status} from {url}: {body}")]
    Http {
        /// The URL requested.
        url: String,
        /// The status.
        status: u16,
        /// The start of the response body.
        body: String,
    },
    /// A response that is not what the hub API returns.
    #[error("unexpected response from {url}: {reason}")]
    BadResponse {
        /// The URL requested.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// Every attempt failed with a retryable error.
    #[error("{url}: failed after {attempts} attempts; last error: {last}")]
    Failed {
        /// The URL requested.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// The last error.
        last: String,
    },
    /// The content never matched its expected hash/size.
    #[error("{file}: corrupt download from {url} after {attempts} attempts: {problem}")]
    Corrupt {
        /// Source-relative path of the file.
        file: String,
        /// The URL.
        url: String,
        /// The mismatch.
        problem: String,
        /// Attempts made.
        attempts: u32,
    },
    /// A local file changed since the source was resolved.
    #[error(
        "{file}: content changed since the source was resolved ({problem}); run again to re-resolve"
    )]
    Changed {
        /// The file.
        file: String,
        /// The mismatch.
        problem: String,
    },
    /// No file matched the pattern.
    #[error("source {source_string:?}: no file matches {pattern:?} ({detail})")]
    NoMatch {
        /// The source string.
        source_string: String,
        /// The glob.
        pattern: String,
        /// What was listed.
        detail: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file at fault.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Reading (decompressing) an input file failed.
    #[error("{file}: line {line}: {source}")]
    Read {
        /// Source-relative path.
        file: String,
        /// 1-based line number.
        line: u64,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON line is invalid or lacks the text field.
    #[error("{file}: line {line}: {reason}")]
    Json {
        /// Source-relative path.
        file: String,
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// A Parquet input could not be read as text.
    #[error("{file}: {source}")]
    Extract {
        /// Source-relative path.
        file: String,
        /// The underlying error (names the column or row).
        #[source]
        source: DocumentsError,
    },
    /// Writing the documents failed.
    #[error(transparent)]
    Documents(#[from] DocumentsError),
}

impl DownloadError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        DownloadError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Refuses file names that would escape the output directory.
fn safe_relative(path: &str) -> Result<PathBuf, DownloadError> {
    let p = Path::new(path);
    let ok = !path.is_empty()
        && p.components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    if ok {
        Ok(p.to_path_buf())
    } else {
        Err(DownloadError::InvalidParams(format!(
            "refusing to store a file under the unsafe path {path:?}"
        )))
    }
}

/// Makes one file available locally: the local file itself, a hit in the
/// download cache, or a fresh (verified) download into it.
fn obtain(
    http: &mut Option<Http>,
    hub: &HubConfig,
    params: &DownloadParams,
    identity: &SourceIdentity,
    file: &SourceFile,
    download_cache: &Path,
    meter: &mut Meter<'_>,
) -> Result<(PathBuf, FileRecord), DownloadError> {
    let record = |sha256: String, bytes: u64, cached: bool| FileRecord {
        path: file.path.clone(),
        revision: identity.commit.clone(),
        sha256,
        bytes,
        cached,
    };
    if identity.origin == Origin::Local {
        let path = PathBuf::from(&file.location);
        let h = hash_file(&path)?;
        if let Some(problem) = verify(file, &h) {
            return Err(DownloadError::Changed {
                file: file.location.clone(),
                problem,
            });
        }
        meter.skip(h.size);
        return Ok((path, record(h.sha256, h.size, true)));
    }
    std::fs::create_dir_all(download_cache).map_err(|e| DownloadError::io(download_cache, e))?;
    let dest = download_cache.join(cache_name(file));
    let pinned = file.sha256.is_some() || file.git_oid.is_some();
    if dest.is_file() && pinned {
        let size = std::fs::metadata(&dest)
            .map_err(|e| DownloadError::io(&dest, e))?
            .len();
        if file.size.is_none_or(|s| s == size) {
            // Verified when it was stored; the sha256 is the name or is
            // recomputed cheaply compared to a transfer.
            let sha256 = match &file.sha256 {
                Some(s) => s.clone(),
                None => hash_file(&dest)?.sha256,
            };
            meter.skip(size);
            return Ok((dest, record(sha256, size, true)));
        }
    }
    let url = match identity.origin {
        Origin::Hub => source::hub_file_url(
            &hub.endpoint,
            identity.repo.as_deref().unwrap_or_default(),
            identity
                .commit
                .as_deref()
                .or(identity.revision.as_deref())
                .unwrap_or("main"),
            &file.location,
        ),
        _ => file.location.clone(),
    };
    let what = match &identity.repo {
        Some(repo) => format!(
            "{repo}@{}/{}",
            identity.revision.as_deref().unwrap_or("main"),
            file.path
        ),
        None => file.path.clone(),
    };
    if http.is_none() {
        *http = Some(Http::new(params, hub)?);
    }
    meter.set_label(&file.path);
    let h = http
        .as_ref()
        .expect("set above")
        .download(&url, &what, file, &dest, meter)?;
    Ok((dest, record(h.sha256, h.size, false)))
}

/// Runs the `download` kind: fetches the files of `identity` (from
/// [`resolve_source`] on the same `params`) through `download_cache`, and
/// writes documents (or the files) into `out_dir`, plus `summary.json`.
/// The hub is found through `HF_ENDPOINT` / `HF_TOKEN`.
pub fn run_download(
    params: &DownloadParams,
    identity: &SourceIdentity,
    download_cache: &Path,
    out_dir: &Path,
    progress: &indicatif::ProgressBar,
) -> Result<DownloadSummary, DownloadError> {
    run_download_with(
        params,
        identity,
        download_cache,
        out_dir,
        progress,
        &HubConfig::from_env(),
    )
}

/// Refuses an identity resolved for another source than `params.source`.
pub(crate) fn check_identity(
    params: &DownloadParams,
    identity: &SourceIdentity,
) -> Result<(), DownloadError> {
    if identity.source != params.source {
        return Err(DownloadError::InvalidParams(format!(
            "the resolved identity is for {:?}, not for source {:?}",
            identity.source, params.source
        )));
    }
    Ok(())
}

/// [`run_download`] with an explicit hub configuration.
pub fn run_download_with(
    params: &DownloadParams,
    identity: &SourceIdentity,
    download_cache: &Path,
    out_dir: &Path,
    progress: &indicatif::ProgressBar,
    hub: &HubConfig,
) -> Result<DownloadSummary, DownloadError> {
    check_identity(params, identity)?;
    if identity.files.is_empty() {
        return Err(DownloadError::NoMatch {
            source_string: params.source.clone(),
            pattern: params.source.clone(),
            detail: "the resolved identity lists no file".to_string(),
        });
    }
    std::fs::create_dir_all(out_dir).map_err(|e| DownloadError::io(out_dir, e))?;
    let total: u64 = identity.files.iter().map(|f| f.size.unwrap_or(0)).sum();
    let mut meter = Meter::new(progress, total);
    let mut http: Option<Http> = None;
    let mut files = Vec::new();
    let mut summary = DownloadSummary {
        source: params.source.clone(),
        mode: params.mode,
        repo: identity.repo.clone(),
        revision: identity.revision.clone(),
        commit: identity.commit.clone(),
        files: Vec::new(),
        fetched_bytes: 0,
        layout: None,
        rows: 0,
        documents: 0,
        bytes: 0,
        replaced_characters: 0,
        skipped_empty: 0,
        truncated: false,
        shards: Vec::new(),
    };
    match params.mode {
        DownloadMode::Files => {
            for file in &identity.files {
                let rel = safe_relative(&file.path)?;
                let (path, record) = obtain(
                    &mut http,
                    hub,
                    params,
                    identity,
                    file,
                    download_cache,
                    &mut meter,
                )?;
                let target = out_dir.join(rel);
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| DownloadError::io(parent, e))?;
                }
                std::fs::copy(&path, &target).map_err(|e| DownloadError::io(&target, e))?;
                files.push(record);
            }
        }
        DownloadMode::Documents => {
            let writer = DocumentWriter::create(out_dir)?.with_shard_bytes(params.shard_bytes);
            let mut asm = extract::Assembler::new(params.layout, params.max_documents, writer);
            for file in &identity.files {
                if asm.full() {
                    summary.truncated = true;
                    break;
                }
                let (path, record) = obtain(
                    &mut http,
                    hub,
                    params,
                    identity,
                    file,
                    download_cache,
                    &mut meter,
                )?;
                progress.set_message(format!("extracting {}", file.path));
                let spec = extract::FileSpec {
                    path: &path,
                    name: &file.path,
                    format: params.format,
                    text_column: &params.text_column,
                    text_field: &params.text_field,
                };
                extract::extract_file(&spec, &mut asm)?;
                files.push(record);
            }
            if asm.full() {
                summary.truncated = true;
            }
            let (writer, counts, layout) = asm.finish()?;
            let written = writer.finish()?;
            summary.layout = Some(layout);
            summary.rows = counts.rows;
            summary.documents = written.documents;
            summary.bytes = written.bytes;
            summary.replaced_characters = counts.replaced_characters;
            summary.skipped_empty = counts.skipped_empty;
            summary.shards = written.shards;
        }
    }
    summary.files = files;
    summary.fetched_bytes = meter.fetched();
    let path = out_dir.join("summary.json");
    let json = serde_json::to_vec_pretty(&summary).expect("summary serialises");
    std::fs::write(&path, json).map_err(|e| DownloadError::io(&path, e))?;
    progress.set_message(format!("downloaded {} files", summary.files.len()));
    Ok(summary)
}
