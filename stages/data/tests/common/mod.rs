//! A small hub-like HTTP server for the download tests.
//!
//! It serves a folder laid out like `shared/hf-mirror`
//! (`datasets/ORG/NAME/resolve/main/PATH`) and answers what the client needs
//! from the Hugging Face Hub: the revision and tree APIs (with pagination
//! through `Link` headers), `HEAD`/`GET` of files with `ETag`,
//! `X-Linked-Etag`, `X-Linked-Size` and `X-Repo-Commit`, and `Range`
//! requests; LFS files redirect to a `/cdn/SHA256` URL as on the hub. It can
//! be told to misbehave (truncate a body, answer 500, send
//! corrupt bytes, require a token) to test retries, resume and errors.
//!
//! It is written on `std::net` rather than a server crate because the tests
//! need to cut a response off mid-body and close the connection, which the
//! small server crates do not allow. Every response closes its connection.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::Digest;

/// The commit every revision of the test server resolves to.
pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// A fault to inject into the next matching file transfer.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Send only the first N body bytes (with the full Content-Length), then
    /// close the connection.
    Truncate(usize),
    /// Answer with this status and no body.
    Status(u16),
    /// Flip the bytes of the body.
    Corrupt,
}

/// One request the server saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
    pub authorization: Option<String>,
}

#[derive(Default)]
struct State {
    /// (path substring, fault, remaining count)
    faults: Vec<(String, Fault, usize)>,
    seen: Vec<Seen>,
    token: Option<String>,
    page_size: usize,
    hashes: HashMap<PathBuf, (String, String, u64)>,
    /// Redirect LFS files to `/cdn/SHA256` as the hub does.
    lfs_redirect: bool,
    /// An LFS oid the tree listing reports for every LFS file instead of its sha256 (a
    /// hostile or broken hub).
    forged_lfs_oid: Option<String>,
    cdn: HashMap<String, PathBuf>,
}

/// A running server; it lives until the test process ends.
pub struct HubServer {
    pub url: String,
    pub root: PathBuf,
    state: Arc<Mutex<State>>,
}

impl HubServer {
    /// Starts a server on 127.0.0.1 (a free port) serving `root`.
    pub fn start(root: &Path) -> HubServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State {
            page_size: 1000,
            lfs_redirect: true,
            ..State::default()
        }));
        let st = state.clone();
        let root_buf = root.to_path_buf();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let st = st.clone();
                let root = root_buf.clone();
                std::thread::spawn(move || {
                    let _ = handle(stream, &root, &st);
                });
            }
        });
        HubServer {
            url,
            root: root.to_path_buf(),
            state,
        }
    }

    /// Injects `fault` into the next `times` transfers whose path contains
    /// `path_part`.
    pub fn fault(&self, path_part: &str, fault: Fault, times: usize) {
        self.state
            .lock()
            .unwrap()
            .faults
            .push((path_part.to_string(), fault, times));
    }

    /// Requires `Authorization: Bearer TOKEN` on every request.
    pub fn require_token(&self, token: &str) {
        self.state.lock().unwrap().token = Some(token.to_string());
    }

    /// Makes the tree listing report `oid` as every LFS file's oid.
    pub fn forge_lfs_oid(&self, oid: &str) {
        self.state.lock().unwrap().forged_lfs_oid = Some(oid.to_string());
    }

    /// Entries per page of the tree API.
    pub fn page_size(&self, n: usize) {
        self.state.lock().unwrap().page_size = n;
    }

    /// The requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// Forgets the requests seen so far.
    pub fn clear_seen(&self) {
        self.state.lock().unwrap().seen.clear();
    }
}

/// Files the hub would store in LFS (so they get a sha256 in the tree).
fn is_lfs(path: &str) -> bool {
    [".parquet", ".gz", ".zst", ".bin"]
        .iter()
        .any(|e| path.ends_with(e))
}

fn hashes(state: &Mutex<State>, path: &Path) -> (String, String, u64) {
    if let Some(h) = state.lock().unwrap().hashes.get(path) {
        return h.clone();
    }
    let data = std::fs::read(path).unwrap();
    let sha256 = hex::encode(sha2::Sha256::digest(&data));
    let mut sha1 = sha1::Sha1::new();
    sha1.update(format!("blob {}\0", data.len()).as_bytes());
    sha1.update(&data);
    let h = (sha256, hex::encode(sha1.finalize()), data.len() as u64);
    state
        .lock()
        .unwrap()
        .hashes
        .insert(path.to_path_buf(), h.clone());
    h
}

fn write_response(
    stream: &mut TcpStream,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
    head_only: bool,
    content_length: usize,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        206 => "Partial Content",
        401 => "Unauthorized",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        500 => "Internal Server Error",
        _ => "Status",
    };
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Length: {content_length}\r\nConnection: close\r\n"
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    if !head_only {
        stream.write_all(body)?;
    }
    stream.flush()?;
    let _ = stream.shutdown(std::net::Shutdown::Both);
    Ok(())
}

fn json(
    stream: &mut TcpStream,
    status: u16,
    value: &serde_json::Value,
    extra: Vec<(String, String)>,
) -> std::io::Result<()> {
    let body = serde_json::to_vec(value).unwrap();
    let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
    headers.extend(extra);
    write_response(stream, status, &headers, &body, false, body.len())
}

fn handle(mut stream: TcpStream, root: &Path, state: &Mutex<State>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let path = path.to_string();
    let seen = Seen {
        method: method.clone(),
        path: path.clone(),
        range: headers.get("range").cloned(),
        authorization: headers.get("authorization").cloned(),
    };
    let token = {
        let mut st = state.lock().unwrap();
        st.seen.push(seen.clone());
        st.token.clone()
    };
    if let Some(token) = token
        && seen.authorization.as_deref() != Some(&format!("Bearer {token}"))
    {
        return json(
            &mut stream,
            401,
            &serde_json::json!({"error": "Invalid credentials"}),
            vec![],
        );
    }
    let head_only = method == "HEAD";
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // /api/datasets/ORG/NAME/revision/REV
    if segs.len() >= 6 && segs[0] == "api" && segs[1] == "datasets" && segs[4] == "revision" {
        let repo_dir = root.join("datasets").join(segs[2]).join(segs[3]);
        if !repo_dir.is_dir() || !(segs[5] == "main" || segs[5] == COMMIT) {
            return json(
                &mut stream,
                404,
                &serde_json::json!({"error": "Revision Not Found"}),
                vec![],
            );
        }
        let id = format!("{}/{}", segs[2], segs[3]);
        return json(
            &mut stream,
            200,
            &serde_json::json!({"id": id, "sha": COMMIT}),
            vec![],
        );
    }
    // /api/datasets/ORG/NAME/tree/REV[/PATH]
    if segs.len() >= 6 && segs[0] == "api" && segs[1] == "datasets" && segs[4] == "tree" {
        let base = root
            .join("datasets")
            .join(segs[2])
            .join(segs[3])
            .join("resolve")
            .join("main");
        let prefix = segs[6..].join("/");
        let dir = if prefix.is_empty() {
            base.clone()
        } else {
            base.join(&prefix)
        };
        if !(segs[5] == "main" || segs[5] == COMMIT) || !dir.is_dir() {
            return json(
                &mut stream,
                404,
                &serde_json::json!({"error": "Entry not found"}),
                vec![],
            );
        }
        let mut entries = Vec::new();
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            let mut children: Vec<_> = std::fs::read_dir(&d)?.map(|e| e.unwrap().path()).collect();
            children.sort();
            for c in children {
                let rel = c
                    .strip_prefix(&base)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                if c.is_dir() {
                    entries.push(serde_json::json!({"type": "directory", "oid": "0000000000000000000000000000000000000000", "size": 0, "path": rel}));
                    stack.push(c);
                } else {
                    let (sha256, oid, size) = hashes(state, &c);
                    let mut e =
                        serde_json::json!({"type": "file", "oid": oid, "size": size, "path": rel});
                    if is_lfs(&rel) {
                        let forged = state.lock().unwrap().forged_lfs_oid.clone();
                        let oid = forged.unwrap_or(sha256);
                        e["lfs"] =
                            serde_json::json!({"oid": oid, "size": size, "pointerSize": 134});
                    }
                    entries.push(e);
                }
            }
        }
        let page = state.lock().unwrap().page_size;
        let cursor: usize = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("cursor="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let end = (cursor + page).min(entries.len());
        let mut extra = vec![];
        if end < entries.len() {
            let host = headers.get("host").cloned().unwrap_or_default();
            extra.push((
                "Link".to_string(),
                format!("<http://{host}{path}?recursive=true&cursor={end}>; rel=\"next\""),
            ));
        }
        return json(
            &mut stream,
            200,
            &serde_json::Value::Array(entries[cursor..end].to_vec()),
            extra,
        );
    }
    // /datasets/ORG/NAME/resolve/REV/PATH
    if segs.len() >= 6 && segs[0] == "datasets" && segs[3] == "resolve" {
        let rel = segs[5..].join("/");
        let file = root
            .join("datasets")
            .join(segs[1])
            .join(segs[2])
            .join("resolve")
            .join("main")
            .join(&rel);
        if !(segs[4] == "main" || segs[4] == COMMIT) || !file.is_file() {
            return json(
                &mut stream,
                404,
                &serde_json::json!({"error": "Entry not found"}),
                vec![("X-Error-Code".into(), "EntryNotFound".into())],
            );
        }
        let (sha256, oid, size) = hashes(state, &file);
        let mut h = vec![
            ("Accept-Ranges".to_string(), "bytes".to_string()),
            ("X-Repo-Commit".to_string(), COMMIT.to_string()),
        ];
        if is_lfs(&rel) {
            h.push(("ETag".into(), format!("\"{sha256}\"")));
            h.push(("X-Linked-Etag".into(), format!("\"{sha256}\"")));
            h.push(("X-Linked-Size".into(), size.to_string()));
        } else {
            h.push(("ETag".into(), format!("\"{oid}\"")));
        }
        if is_lfs(&rel) && state.lock().unwrap().lfs_redirect {
            // Like the hub: an LFS file redirects to its CDN URL, and the
            // redirect carries the identity headers.
            let host = headers.get("host").cloned().unwrap_or_default();
            h.push((
                "Location".into(),
                format!("http://{host}/cdn/{sha256}?path={rel}"),
            ));
            state
                .lock()
                .unwrap()
                .cdn
                .insert(sha256.clone(), file.clone());
            return write_response(&mut stream, 302, &h, &[], head_only, 0);
        }
        if head_only {
            return write_response(&mut stream, 200, &h, &[], true, size as usize);
        }
        return send_file(&mut stream, state, &file, &rel, seen.range.as_deref(), h);
    }
    // /cdn/SHA256?path=REL: where LFS redirects go.
    if segs.len() == 2 && segs[0] == "cdn" {
        let rel = query.strip_prefix("path=").unwrap_or_default().to_string();
        let Some(file) = state.lock().unwrap().cdn.get(segs[1]).cloned() else {
            return write_response(&mut stream, 404, &[], &[], head_only, 0);
        };
        let h = vec![
            ("Accept-Ranges".to_string(), "bytes".to_string()),
            ("ETag".to_string(), format!("\"cdn-{}\"", &segs[1][..8])),
        ];
        if head_only {
            let size = std::fs::metadata(&file)?.len() as usize;
            return write_response(&mut stream, 200, &h, &[], true, size);
        }
        return send_file(&mut stream, state, &file, &rel, seen.range.as_deref(), h);
    }
    json(
        &mut stream,
        404,
        &serde_json::json!({"error": "Not Found"}),
        vec![],
    )
}

/// Sends a file (or the range asked for), applying the first pending fault
/// whose pattern `rel` contains.
fn send_file(
    stream: &mut TcpStream,
    state: &Mutex<State>,
    file: &Path,
    rel: &str,
    range: Option<&str>,
    mut h: Vec<(String, String)>,
) -> std::io::Result<()> {
    let fault = {
        let mut st = state.lock().unwrap();
        let mut found = None;
        for f in st.faults.iter_mut() {
            if f.2 > 0 && rel.contains(f.0.as_str()) {
                f.2 -= 1;
                found = Some(f.1.clone());
                break;
            }
        }
        found
    };
    if let Some(Fault::Status(code)) = fault {
        return write_response(stream, code, &[], &[], false, 0);
    }
    let mut data = Vec::new();
    std::fs::File::open(file)?.read_to_end(&mut data)?;
    let mut status = 200;
    let mut start = 0usize;
    if let Some(r) = range.and_then(|r| r.strip_prefix("bytes=")) {
        let from: usize = r.trim_end_matches('-').parse().unwrap_or(0);
        if from >= data.len() {
            return write_response(stream, 416, &[], &[], false, 0);
        }
        start = from;
        status = 206;
        h.push((
            "Content-Range".into(),
            format!("bytes {from}-{}/{}", data.len() - 1, data.len()),
        ));
    }
    let mut body = data[start..].to_vec();
    let full = body.len();
    match fault {
        Some(Fault::Truncate(n)) => {
            body.truncate(n.min(full));
        }
        Some(Fault::Corrupt) => {
            for b in body.iter_mut().take(64) {
                *b ^= 0xff;
            }
        }
        _ => {}
    }
    write_response(stream, status, &h, &body, false, full)
}

/// The mirror folder (`shared/hf-mirror` beside the workspace), if present.
pub fn mirror() -> Option<PathBuf> {
    let p = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/hf-mirror"
    ));
    if p.join("datasets").is_dir() {
        Some(p)
    } else {
        eprintln!(
            "SKIP: {} not found (the shared hf-mirror is needed for this test)",
            p.display()
        );
        None
    }
}
