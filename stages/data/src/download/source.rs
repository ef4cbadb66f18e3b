//! Sources of the `download` kind and their identity (what the cache key of
//! a download is made of).
//!
//! Three kinds of source:
//!
//! * `hf://datasets/ORG/NAME[@REV]/GLOB`: files of a dataset repository on
//!   the Hugging Face Hub (or any endpoint speaking its API, chosen with
//!   `HF_ENDPOINT`). The revision (default `main`) is resolved to a commit
//!   through `/api/datasets/ORG/NAME/revision/REV`, the files are listed with
//!   the tree API (`/api/datasets/ORG/NAME/tree/COMMIT/PREFIX?recursive=true`)
//!   and matched against GLOB (`*` stays within one folder, `**` crosses
//!   folders). The hub gives every file's size and either its sha256 (LFS
//!   files) or its git blob id: both go into the identity, so a moved branch
//!   or a changed file changes the key.
//! * `https://…` (or `http://…`) URLs of one file: identified by a `HEAD`
//!   request (size, `ETag`, `X-Linked-Etag`, `X-Repo-Commit`).
//! * anything else is a local path: a file, a directory (all files under
//!   it) or a glob; identified by the sha256 of each file's content.

use std::path::{Path, PathBuf};

use globset::{Glob, GlobMatcher};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::DownloadError;
use super::fetch::{Http, HubConfig};

/// Where a source's files come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// A dataset repository on the Hugging Face Hub (`hf://datasets/…`).
    Hub,
    /// One file at an `http(s)://` URL.
    Url,
    /// Files on the local filesystem.
    Local,
}

/// The resolved identity of a source: every file with its content identity.
/// Computed without downloading any file body; the engine hashes it into the
/// download stage's cache key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceIdentity {
    /// The source string as given in the parameters.
    pub source: String,
    /// Where the files come from.
    pub origin: Origin,
    /// Repository id `ORG/NAME` (hub sources).
    pub repo: Option<String>,
    /// Revision asked for (hub sources; `main` by default).
    pub revision: Option<String>,
    /// Commit the revision resolved to (hub sources, and URLs whose server
    /// sends `X-Repo-Commit`).
    pub commit: Option<String>,
    /// The matched files, sorted by path.
    pub files: Vec<SourceFile>,
}

/// One file of a source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceFile {
    /// Path relative to the source root: repo-relative for the hub, relative
    /// to the glob's base folder for local files, the last URL segment for
    /// URLs. Files mode stores the file under this path.
    pub path: String,
    /// Where to read it: the URL for URL sources, the absolute path for local
    /// files; for hub files the repo path (the download URL is made from
    /// `HF_ENDPOINT` at run time, so moving endpoints keeps the key).
    pub location: String,
    /// Size in bytes, where known.
    pub size: Option<u64>,
    /// sha256 of the content (hex), where known (hub LFS files, local files,
    /// servers whose ETag is a sha256).
    pub sha256: Option<String>,
    /// Git blob id (sha1 hex) of the content, for hub files outside LFS.
    pub git_oid: Option<String>,
    /// The server's ETag (URL sources) when it is neither a sha256 nor a git
    /// blob id.
    pub etag: Option<String>,
}

/// A parsed source string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    Hub {
        repo: String,
        revision: String,
        pattern: String,
    },
    Url(String),
    Local(String),
}

const GLOB_META: &[char] = &['*', '?', '[', '{'];

/// Parses a source string (see the module docs).
pub(crate) fn parse_source(source: &str) -> Result<Source, DownloadError> {
    let invalid = |reason: &str| DownloadError::InvalidSource {
        source_string: source.to_string(),
        reason: reason.to_string(),
    };
    if source.trim().is_empty() {
        return Err(invalid(
            "the `source` parameter is empty; give hf://datasets/ORG/NAME/GLOB, a URL or a local path",
        ));
    }
    if let Some(rest) = source.strip_prefix("hf://") {
        let Some(rest) = rest.strip_prefix("datasets/") else {
            return Err(invalid(
                "only dataset repositories are supported: hf://datasets/ORG/NAME[@REV]/GLOB",
            ));
        };
        let mut parts = rest.splitn(3, '/');
        let org = parts.next().unwrap_or_default();
        let name_rev = parts.next().unwrap_or_default();
        let pattern = parts.next().unwrap_or_default();
        if org.is_empty() || name_rev.is_empty() {
            return Err(invalid("expected hf://datasets/ORG/NAME[@REV]/GLOB"));
        }
        if pattern.is_empty() {
            return Err(invalid(
                "no file pattern after the repository; use e.g. hf://datasets/ORG/NAME/**/*.parquet",
            ));
        }
        let (name, revision) = match name_rev.split_once('@') {
            Some((n, r)) if !n.is_empty() && !r.is_empty() => (n, r),
            Some(_) => return Err(invalid("empty repository name or revision around `@`")),
            None => (name_rev, "main"),
        };
        return Ok(Source::Hub {
            repo: format!("{org}/{name}"),
            revision: revision.to_string(),
            pattern: pattern.to_string(),
        });
    }
    if source.starts_with("https://") || source.starts_with("http://") {
        return Ok(Source::Url(source.to_string()));
    }
    if source.contains("://") {
        return Err(invalid(
            "unknown scheme; use hf://datasets/…, https://… or a local path",
        ));
    }
    Ok(Source::Local(source.to_string()))
}

/// Splits a `/`-separated glob into its literal leading folders and the
/// whole pattern. For a pattern without glob characters the literal part is
/// its parent folder.
fn literal_prefix(pattern: &str) -> String {
    let segments: Vec<&str> = pattern.split('/').collect();
    let mut prefix = Vec::new();
    for (i, seg) in segments.iter().enumerate() {
        if seg.contains(GLOB_META) || i + 1 == segments.len() {
            break;
        }
        prefix.push(*seg);
    }
    prefix.join("/")
}

fn matcher(source: &str, pattern: &str) -> Result<GlobMatcher, DownloadError> {
    Glob::new(pattern)
        .and_then(|g| {
            globset::GlobBuilder::new(g.glob())
                .literal_separator(true)
                .build()
        })
        .map(|g| g.compile_matcher())
        .map_err(|e| DownloadError::InvalidSource {
            source_string: source.to_string(),
            reason: format!("bad glob {pattern:?}: {e}"),
        })
}

/// Percent-encodes one revision for a URL path (a revision like
/// `refs/convert/parquet` has slashes that must be escaped).
fn encode_revision(rev: &str) -> String {
    let mut out = String::new();
    for b in rev.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Deserialize)]
struct RevisionInfo {
    sha: String,
}

#[derive(Deserialize)]
struct TreeEntry {
    #[serde(rename = "type")]
    kind: String,
    path: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    oid: Option<String>,
    #[serde(default)]
    lfs: Option<LfsInfo>,
}

#[derive(Deserialize)]
struct LfsInfo {
    oid: String,
    #[serde(default)]
    size: Option<u64>,
}

/// The URL of a hub file at a revision or commit.
pub(crate) fn hub_file_url(endpoint: &str, repo: &str, revision: &str, path: &str) -> String {
    format!(
        "{endpoint}/datasets/{repo}/resolve/{}/{path}",
        encode_revision(revision)
    )
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Lists the files of a source and their content identity, without
/// downloading any file body (local files are hashed). The hub is found
/// through `HF_ENDPOINT` / `HF_TOKEN` (see [`HubConfig::from_env`]).
pub fn resolve_source(params: &super::DownloadParams) -> Result<SourceIdentity, DownloadError> {
    resolve_source_with(params, &HubConfig::from_env())
}

/// [`resolve_source`] with an explicit hub configuration.
pub fn resolve_source_with(
    params: &super::DownloadParams,
    hub: &HubConfig,
) -> Result<SourceIdentity, DownloadError> {
    let source = &params.source;
    match parse_source(source)? {
        Source::Hub {
            repo,
            revision,
            pattern,
        } => {
            let http = Http::new(params, hub)?;
            resolve_hub(&http, source, &repo, &revision, &pattern)
        }
        Source::Url(url) => {
            let http = Http::new(params, hub)?;
            resolve_url(&http, source, &url)
        }
        Source::Local(pattern) => resolve_local(source, &pattern),
    }
}

fn resolve_hub(
    http: &Http,
    source: &str,
    repo: &str,
    revision: &str,
    pattern: &str,
) -> Result<SourceIdentity, DownloadError> {
    let endpoint = http.endpoint().to_string();
    let rev_url = format!(
        "{endpoint}/api/datasets/{repo}/revision/{}",
        encode_revision(revision)
    );
    let info: RevisionInfo = http.get_json(&rev_url, &format!("{repo}@{revision}"))?;
    let commit = info.sha;
    let prefix = literal_prefix(pattern);
    let glob = matcher(source, pattern)?;
    let mut url = format!(
        "{endpoint}/api/datasets/{repo}/tree/{}",
        encode_revision(&commit)
    );
    if !prefix.is_empty() {
        url.push('/');
        url.push_str(&prefix);
    }
    url.push_str("?recursive=true");
    let mut files = Vec::new();
    let mut listed = 0usize;
    let mut next = Some(url);
    while let Some(page) = next.take() {
        let (entries, link): (Vec<TreeEntry>, Option<String>) =
            http.get_json_paged(&page, &format!("{repo}@{revision}/{prefix}"))?;
        next = link;
        for e in entries {
            if e.kind != "file" {
                continue;
            }
            listed += 1;
            if !glob.is_match(&e.path) {
                continue;
            }
            let (sha256, size) = match &e.lfs {
                // The oid names the file under `downloads/`: anything but a sha256 is refused.
                Some(lfs) if !is_hex(&lfs.oid, 64) => {
                    return Err(DownloadError::BadResponse {
                        url: page.clone(),
                        reason: format!(
                            "the LFS oid of {:?} is not a sha256 (64 hex digits): {:?}",
                            e.path,
                            lfs.oid.chars().take(80).collect::<String>()
                        ),
                    });
                }
                Some(lfs) => (Some(lfs.oid.to_ascii_lowercase()), lfs.size.or(e.size)),
                None => (None, e.size),
            };
            let git_oid = if sha256.is_none() {
                e.oid.clone().filter(|o| is_hex(o, 40))
            } else {
                None
            };
            files.push(SourceFile {
                location: e.path.clone(),
                path: e.path,
                size,
                sha256,
                git_oid,
                etag: None,
            });
        }
    }
    if files.is_empty() {
        return Err(DownloadError::NoMatch {
            source_string: source.to_string(),
            pattern: pattern.to_string(),
            detail: format!("{listed} files listed under {repo}@{revision}/{prefix}"),
        });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(SourceIdentity {
        source: source.to_string(),
        origin: Origin::Hub,
        repo: Some(repo.to_string()),
        revision: Some(revision.to_string()),
        commit: Some(commit),
        files,
    })
}

fn resolve_url(http: &Http, source: &str, url: &str) -> Result<SourceIdentity, DownloadError> {
    let head = http.head(url)?;
    let name = url
        .split(['?', '#'])
        .next()
        .unwrap_or(url)
        .rsplit('/')
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or("download")
        .to_string();
    let mut sha256 = None;
    let mut git_oid = None;
    let mut etag = None;
    if let Some(tag) = head.linked_etag.or(head.etag) {
        if is_hex(&tag, 64) {
            sha256 = Some(tag.to_ascii_lowercase());
        } else if is_hex(&tag, 40) && head.commit.is_some() {
            // The hub's ETag of a file outside LFS is its git blob id.
            git_oid = Some(tag.to_ascii_lowercase());
        } else {
            etag = Some(tag);
        }
    }
    Ok(SourceIdentity {
        source: source.to_string(),
        origin: Origin::Url,
        repo: None,
        revision: None,
        commit: head.commit,
        files: vec![SourceFile {
            path: name,
            location: url.to_string(),
            size: head.size,
            sha256,
            git_oid,
            etag,
        }],
    })
}

/// sha256 (hex) of a file's content, streamed.
pub(crate) fn sha256_file(path: &Path) -> Result<String, DownloadError> {
    let mut file = std::fs::File::open(path).map_err(|e| DownloadError::io(path, e))?;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|e| DownloadError::io(path, e))?;
    Ok(hex::encode(hasher.finalize()))
}

fn resolve_local(source: &str, pattern: &str) -> Result<SourceIdentity, DownloadError> {
    let as_path = PathBuf::from(pattern);
    let mut found: Vec<(String, PathBuf)> = Vec::new();
    if !pattern.contains(GLOB_META) {
        let meta = std::fs::metadata(&as_path).map_err(|e| DownloadError::io(&as_path, e))?;
        if meta.is_file() {
            let name = as_path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| pattern.to_string());
            found.push((name, as_path.clone()));
        } else {
            walk(&as_path, &as_path, None, &mut found)?;
        }
    } else {
        let prefix = literal_prefix(pattern);
        let base = if prefix.is_empty() {
            if pattern.starts_with('/') {
                PathBuf::from("/")
            } else {
                PathBuf::from(".")
            }
        } else {
            PathBuf::from(&prefix)
        };
        let rest = if prefix.is_empty() {
            pattern.trim_start_matches('/').to_string()
        } else {
            pattern[prefix.len()..].trim_start_matches('/').to_string()
        };
        let glob = matcher(source, &rest)?;
        walk(&base, &base, Some(&glob), &mut found)?;
    }
    if found.is_empty() {
        return Err(DownloadError::NoMatch {
            source_string: source.to_string(),
            pattern: pattern.to_string(),
            detail: "no local file matched".to_string(),
        });
    }
    found.sort();
    let mut files = Vec::new();
    for (rel, path) in found {
        let abs = std::fs::canonicalize(&path).map_err(|e| DownloadError::io(&path, e))?;
        let size = std::fs::metadata(&abs)
            .map_err(|e| DownloadError::io(&abs, e))?
            .len();
        files.push(SourceFile {
            path: rel,
            sha256: Some(sha256_file(&abs)?),
            location: abs.to_string_lossy().into_owned(),
            size: Some(size),
            git_oid: None,
            etag: None,
        });
    }
    Ok(SourceIdentity {
        source: source.to_string(),
        origin: Origin::Local,
        repo: None,
        revision: None,
        commit: None,
        files,
    })
}

/// Collects the files under `dir` (relative paths with `/`), keeping those
/// the glob matches.
fn walk(
    base: &Path,
    dir: &Path,
    glob: Option<&GlobMatcher>,
    found: &mut Vec<(String, PathBuf)>,
) -> Result<(), DownloadError> {
    for entry in walkdir::WalkDir::new(dir)
        .follow_links(true)
        .sort_by_file_name()
    {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(dir).to_path_buf();
            DownloadError::io(&path, e.into())
        })?;
        if !entry.file_type().is_file() {
            continue;
        }
        let rel = entry
            .path()
            .strip_prefix(base)
            .unwrap_or(entry.path())
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        if glob.is_none_or(|g| g.is_match(&rel)) {
            found.push((rel, entry.path().to_path_buf()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sources() {
        assert_eq!(
            parse_source("hf://datasets/nyu-mll/glue/cola/*.parquet").unwrap(),
            Source::Hub {
                repo: "nyu-mll/glue".into(),
                revision: "main".into(),
                pattern: "cola/*.parquet".into()
            }
        );
        assert_eq!(
            parse_source("hf://datasets/a/b@v1.0/x/**").unwrap(),
            Source::Hub {
                repo: "a/b".into(),
                revision: "v1.0".into(),
                pattern: "x/**".into()
            }
        );
        assert!(parse_source("hf://models/a/b/x").is_err());
        assert!(parse_source("hf://datasets/a/b").is_err());
        assert!(parse_source("").is_err());
        assert!(parse_source("ftp://x/y").is_err());
        assert_eq!(
            parse_source("https://x/y.txt").unwrap(),
            Source::Url("https://x/y.txt".into())
        );
        assert_eq!(
            parse_source("data/*.txt").unwrap(),
            Source::Local("data/*.txt".into())
        );
    }

    #[test]
    fn literal_prefixes() {
        assert_eq!(literal_prefix("cola/train-*.parquet"), "cola");
        assert_eq!(literal_prefix("a/b/c.parquet"), "a/b");
        assert_eq!(literal_prefix("**/*.parquet"), "");
        assert_eq!(literal_prefix("x.txt"), "");
        assert_eq!(
            encode_revision("refs/convert/parquet"),
            "refs%2Fconvert%2Fparquet"
        );
    }
}
