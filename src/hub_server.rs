//! `cram serve-hub DIR`: serves a local copy of Hugging Face Hub dataset
//! repositories (laid out as `DIR/datasets/ORG/NAME/resolve/main/PATH`, the
//! hub's URL layout) with the parts of the hub's API that downloads need:
//! the revision and tree endpoints, `ETag`/`X-Linked-Etag`/`X-Repo-Commit`
//! headers and HTTP `Range`. Point `HF_ENDPOINT` at it to run recipes
//! offline or on a cluster without internet access.
//!
//! A plain static server (`python3 -m http.server`) is not enough: listing a
//! glob needs the tree API, and verified, resumable downloads need the
//! checksum headers and ranges. No well-kept crate offers a hub-compatible
//! server, so this is written here on top of `tiny_http`.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use serde_json::{Value, json};
use sha2::Digest;
use tiny_http::{Header, Method, Response, Server, StatusCode};

/// A hub-compatible server over a mirror directory.
pub struct HubServer {
    root: PathBuf,
    sha_cache: Mutex<HashMap<PathBuf, String>>,
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("valid header")
}

fn json_response(status: u16, body: &Value) -> Response<std::io::Cursor<Vec<u8>>> {
    Response::from_data(body.to_string().into_bytes())
        .with_status_code(StatusCode(status))
        .with_header(header("Content-Type", "application/json"))
}

impl HubServer {
    /// A server over `root` (which holds `datasets/ORG/NAME/resolve/main/...`).
    pub fn new(root: &Path) -> Result<HubServer> {
        anyhow::ensure!(
            root.join("datasets").is_dir(),
            "{} has no datasets/ folder: expected the hub layout DIR/datasets/ORG/NAME/resolve/main/FILE",
            root.display()
        );
        Ok(HubServer {
            root: root.to_path_buf(),
            sha_cache: Mutex::new(HashMap::new()),
        })
    }

    fn repo_dir(&self, repo: &str) -> PathBuf {
        self.root
            .join("datasets")
            .join(repo)
            .join("resolve")
            .join("main")
    }

    fn sha256(&self, path: &Path) -> Result<String> {
        if let Some(s) = self.sha_cache.lock().expect("cache lock").get(path) {
            return Ok(s.clone());
        }
        let mut file = std::fs::File::open(path)?;
        let mut hasher = sha2::Sha256::new();
        std::io::copy(&mut file, &mut hasher)?;
        let hex = format!("{:x}", hasher.finalize());
        self.sha_cache
            .lock()
            .expect("cache lock")
            .insert(path.to_path_buf(), hex.clone());
        Ok(hex)
    }

    /// A stable commit id for a repository: a hash of its file list.
    fn commit(&self, repo: &str) -> Result<String> {
        let mut files = Vec::new();
        list_files(&self.repo_dir(repo), "", &mut files)?;
        let mut h = blake3::Hasher::new();
        for (rel, path) in &files {
            h.update(rel.as_bytes());
            h.update(&std::fs::metadata(path)?.len().to_le_bytes());
        }
        Ok(h.finalize().to_hex()[..40].to_string())
    }

    /// Answers requests until the process ends.
    pub fn serve(&self, addr: &str) -> Result<()> {
        let server =
            Server::http(addr).map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
        eprintln!(
            "serving {} as a Hugging Face hub at http://{addr} (set HF_ENDPOINT=http://{addr})",
            self.root.display()
        );
        for request in server.incoming_requests() {
            let url = request.url().to_string();
            let method = request.method().clone();
            let range = request
                .headers()
                .iter()
                .find(|h| h.field.equiv("Range"))
                .map(|h| h.value.to_string());
            let result = self.answer(&method, &url, range.as_deref());
            let _ = match result {
                Ok(Answer::Json(status, body)) => request.respond(json_response(status, &body)),
                Ok(Answer::File(resp)) => request.respond(resp),
                Err(e) => request.respond(json_response(500, &json!({"error": format!("{e:#}")}))),
            };
        }
        Ok(())
    }

    fn answer(&self, method: &Method, url: &str, range: Option<&str>) -> Result<Answer> {
        let path = url.split('?').next().unwrap_or("");
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let not_found = || {
            Ok(Answer::Json(
                404,
                json!({"error": format!("not found: {path}")}),
            ))
        };
        match parts.as_slice() {
            ["api", "datasets", org, name, "revision", _rev, ..] => {
                let repo = format!("{org}/{name}");
                if !self.repo_dir(&repo).is_dir() {
                    return not_found();
                }
                Ok(Answer::Json(
                    200,
                    json!({"id": repo, "sha": self.commit(&repo)?}),
                ))
            }
            ["api", "datasets", org, name, "tree", _rev, rest @ ..] => {
                let repo = format!("{org}/{name}");
                let base = self.repo_dir(&repo);
                let prefix = rest.join("/");
                let dir = base.join(&prefix);
                if !dir.exists() {
                    return not_found();
                }
                let mut files = Vec::new();
                if dir.is_file() {
                    files.push((prefix.clone(), dir.clone()));
                } else {
                    list_files(&dir, &prefix, &mut files)?;
                }
                let mut entries = Vec::new();
                for (rel, p) in files {
                    let size = std::fs::metadata(&p)?.len();
                    entries.push(json!({
                        "type": "file",
                        "path": rel,
                        "size": size,
                        "lfs": {"oid": self.sha256(&p)?, "size": size},
                    }));
                }
                Ok(Answer::Json(200, Value::Array(entries)))
            }
            ["datasets", org, name, "resolve", _rev, rest @ ..] if !rest.is_empty() => {
                let repo = format!("{org}/{name}");
                let rel = rest.join("/");
                if rel.split('/').any(|s| s == "..") {
                    return not_found();
                }
                let file = self.repo_dir(&repo).join(&rel);
                if !file.is_file() {
                    return not_found();
                }
                let size = std::fs::metadata(&file)?.len();
                let sha = self.sha256(&file)?;
                let start = range
                    .and_then(|r| r.strip_prefix("bytes="))
                    .and_then(|r| r.split('-').next())
                    .and_then(|s| s.parse::<u64>().ok())
                    .unwrap_or(0);
                if start > size {
                    return Ok(Answer::Json(416, json!({"error": "range not satisfiable"})));
                }
                let mut f = std::fs::File::open(&file)?;
                f.seek(SeekFrom::Start(start))?;
                let body: Box<dyn Read + Send> = if *method == Method::Head {
                    Box::new(std::io::empty())
                } else {
                    Box::new(f)
                };
                let status = if start > 0 { 206 } else { 200 };
                let mut resp = Response::new(
                    StatusCode(status),
                    Vec::new(),
                    body,
                    Some((size - start) as usize),
                    None,
                )
                .with_header(header("ETag", &format!("\"{sha}\"")))
                .with_header(header("X-Linked-Etag", &format!("\"{sha}\"")))
                .with_header(header("X-Linked-Size", &size.to_string()))
                .with_header(header("X-Repo-Commit", &self.commit(&repo)?))
                .with_header(header("Accept-Ranges", "bytes"));
                if start > 0 {
                    resp = resp.with_header(header(
                        "Content-Range",
                        &format!("bytes {start}-{}/{size}", size.saturating_sub(1)),
                    ));
                }
                Ok(Answer::File(resp))
            }
            _ => not_found(),
        }
    }
}

enum Answer {
    Json(u16, Value),
    File(Response<Box<dyn Read + Send>>),
}

fn list_files(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) -> Result<()> {
    let mut items: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .flatten()
        .collect();
    items.sort_by_key(|e| e.file_name());
    for item in items {
        let name = item.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        let p = item.path();
        if p.is_dir() {
            list_files(&p, &rel, out)?;
        } else {
            out.push((rel, p));
        }
    }
    Ok(())
}
