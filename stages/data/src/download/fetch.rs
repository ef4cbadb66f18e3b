//! HTTP for the `download` kind: hub API calls, and file transfers into the
//! content-addressed download cache with resume (HTTP `Range`), retries with
//! exponential backoff and verification of the content hash.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use sha2::Digest;

use super::source::SourceFile;
use super::{DownloadError, DownloadParams};

/// Where the hub is and how to authenticate to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubConfig {
    /// Base URL of the hub, without a trailing slash.
    pub endpoint: String,
    /// Access token sent as `Authorization: Bearer …` to `endpoint` only.
    pub token: Option<String>,
}

impl HubConfig {
    /// From the environment as `huggingface_hub` reads it: `HF_ENDPOINT`
    /// (default `https://huggingface.co`) and `HF_TOKEN`.
    pub fn from_env() -> HubConfig {
        let endpoint = std::env::var("HF_ENDPOINT")
            .ok()
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| "https://huggingface.co".to_string());
        let token = std::env::var("HF_TOKEN")
            .ok()
            .filter(|s| !s.trim().is_empty());
        HubConfig::new(&endpoint, token)
    }

    /// An explicit endpoint and token.
    pub fn new(endpoint: &str, token: Option<String>) -> HubConfig {
        HubConfig {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            token,
        }
    }
}

/// Response headers of a `HEAD` request that identify a file.
#[derive(Debug, Default)]
pub(crate) struct HeadInfo {
    pub size: Option<u64>,
    pub etag: Option<String>,
    pub linked_etag: Option<String>,
    pub commit: Option<String>,
}

/// A blocking HTTP client (ureq with rustls) that adds the hub token to
/// requests for the hub endpoint.
pub(crate) struct Http {
    agent: ureq::Agent,
    /// Same, but returning redirects instead of following them: the hub
    /// answers `HEAD` of an LFS file with a redirect to its CDN that carries
    /// the identity headers (`X-Linked-Etag`, `X-Linked-Size`), which the
    /// CDN's own answer lacks.
    no_redirect: ureq::Agent,
    endpoint: String,
    token: Option<String>,
    retries: u32,
    retry_base: Duration,
}

/// Why one attempt failed: fatal errors are returned at once, the others
/// are retried.
enum Attempt {
    Fatal(DownloadError),
    Retry(String),
}

fn strip_etag(v: &str) -> String {
    v.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_string()
}

impl Http {
    pub(crate) fn new(params: &DownloadParams, hub: &HubConfig) -> Result<Http, DownloadError> {
        let config = || {
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_connect(Some(Duration::from_secs(30)))
                .timeout_recv_response(Some(Duration::from_secs(120)))
                .redirect_auth_headers(ureq::config::RedirectAuthHeaders::SameHost)
                .user_agent(format!("cram-data/{}", env!("CARGO_PKG_VERSION")))
        };
        let agent: ureq::Agent = config().build().into();
        let no_redirect: ureq::Agent = config()
            .max_redirects(0)
            .max_redirects_will_error(false)
            .build()
            .into();
        Ok(Http {
            agent,
            no_redirect,
            endpoint: hub.endpoint.clone(),
            token: hub.token.clone(),
            retries: params.retries,
            retry_base: Duration::from_millis(params.retry_base_ms),
        })
    }

    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn auth_for(&self, url: &str) -> Option<String> {
        let token = self.token.as_ref()?;
        url.starts_with(&self.endpoint)
            .then(|| format!("Bearer {token}"))
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.min(6);
        (self.retry_base * factor).min(Duration::from_secs(60))
    }

    /// Classifies a non-success status into an error (fatal or retryable).
    fn status_error(&self, url: &str, what: &str, status: u16, body: String) -> Attempt {
        match status {
            404 => Attempt::Fatal(DownloadError::NotFound {
                url: url.to_string(),
                what: what.to_string(),
            }),
            401 | 403 => Attempt::Fatal(DownloadError::Unauthorized {
                url: url.to_string(),
                status,
                token_set: self.token.is_some(),
            }),
            408 | 429 | 500..=599 => Attempt::Retry(format!("HTTP {status} from {url}")),
            _ => Attempt::Fatal(DownloadError::Http {
                url: url.to_string(),
                status,
                body: body.chars().take(300).collect(),
            }),
        }
    }

    /// Runs `f` up to `retries + 1` times with exponential backoff.
    fn with_retries<T>(
        &self,
        url: &str,
        mut f: impl FnMut() -> Result<T, Attempt>,
    ) -> Result<T, DownloadError> {
        let mut last = String::new();
        for attempt in 0..=self.retries {
            if attempt > 0 {
                std::thread::sleep(self.backoff(attempt - 1));
            }
            match f() {
                Ok(v) => return Ok(v),
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Retry(msg)) => last = msg,
            }
        }
        Err(DownloadError::Failed {
            url: url.to_string(),
            attempts: self.retries + 1,
            last,
        })
    }

    fn get(&self, url: &str) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
        let mut req = self.agent.get(url);
        if let Some(auth) = self.auth_for(url) {
            req = req.header("Authorization", auth);
        }
        req
    }

    /// GET of a JSON document (hub API); `what` names the repo/path for a 404.
    pub(crate) fn get_json<T: DeserializeOwned>(
        &self,
        url: &str,
        what: &str,
    ) -> Result<T, DownloadError> {
        self.get_json_paged(url, what).map(|(v, _)| v)
    }

    /// GET of a JSON document, also returning the `Link: <…>; rel="next"`
    /// URL of the next page (the hub paginates long tree listings).
    pub(crate) fn get_json_paged<T: DeserializeOwned>(
        &self,
        url: &str,
        what: &str,
    ) -> Result<(T, Option<String>), DownloadError> {
        let text_and_link = self.with_retries(url, || {
            let mut resp = self
                .get(url)
                .call()
                .map_err(|e| Attempt::Retry(format!("{url}: {e}")))?;
            let status = resp.status().as_u16();
            let body = resp
                .body_mut()
                .with_config()
                .limit(256 * 1024 * 1024)
                .read_to_string()
                .map_err(|e| Attempt::Retry(format!("{url}: reading the body: {e}")))?;
            if !(200..300).contains(&status) {
                return Err(self.status_error(url, what, status, body));
            }
            let link = resp
                .headers()
                .get("link")
                .and_then(|v| v.to_str().ok())
                .and_then(next_link);
            Ok((body, link))
        })?;
        let (text, link) = text_and_link;
        let value = serde_json::from_str(&text).map_err(|e| DownloadError::BadResponse {
            url: url.to_string(),
            reason: format!("unexpected JSON: {e}"),
        })?;
        Ok((value, link))
    }

    /// HEAD of a file: size and identity headers.
    pub(crate) fn head(&self, url: &str) -> Result<HeadInfo, DownloadError> {
        self.with_retries(url, || {
            let request = |agent: &ureq::Agent| {
                let mut req = agent.head(url).header("Accept-Encoding", "identity");
                if let Some(auth) = self.auth_for(url) {
                    req = req.header("Authorization", auth);
                }
                req.call()
                    .map_err(|e| Attempt::Retry(format!("{url}: {e}")))
            };
            let mut resp = request(&self.no_redirect)?;
            let mut redirected = resp.status().is_redirection();
            if redirected && !resp.headers().contains_key("x-linked-etag") {
                // Not the hub's LFS redirect: follow it.
                resp = request(&self.agent)?;
                redirected = false;
            }
            let status = resp.status().as_u16();
            if !redirected && !(200..300).contains(&status) {
                return Err(self.status_error(url, url, status, String::new()));
            }
            let h = resp.headers();
            let get = |name: &str| {
                h.get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            // The Content-Length of a redirect is not the file's size.
            let size = get("x-linked-size")
                .or_else(|| {
                    if redirected {
                        None
                    } else {
                        get("content-length")
                    }
                })
                .and_then(|s| s.trim().parse().ok());
            Ok(HeadInfo {
                size,
                etag: get("etag").map(|v| strip_etag(&v)),
                linked_etag: get("x-linked-etag").map(|v| strip_etag(&v)),
                commit: get("x-repo-commit"),
            })
        })
    }

    /// Downloads `url` into `dest` (atomically: via `dest.partial`, renamed
    /// when complete and verified). An existing `.partial` is resumed with
    /// a `Range` request. Returns the verified content hashes.
    pub(crate) fn download(
        &self,
        url: &str,
        what: &str,
        file: &SourceFile,
        dest: &Path,
        meter: &mut Meter<'_>,
    ) -> Result<Hashes, DownloadError> {
        let partial = partial_path(dest);
        let mut corrupt: Option<DownloadError> = None;
        let hashes = self.with_retries(url, || {
            match self.fetch_once(url, what, file, &partial, meter) {
                Ok(()) => {}
                Err(a) => return Err(a),
            }
            let hashes = hash_file(&partial).map_err(Attempt::Fatal)?;
            if let Some(problem) = verify(file, &hashes) {
                // A corrupt body: start over from byte 0 next time.
                meter.rewind(hashes.size);
                let _ = std::fs::remove_file(&partial);
                corrupt = Some(DownloadError::Corrupt {
                    file: what.to_string(),
                    url: url.to_string(),
                    problem: problem.clone(),
                    attempts: self.retries + 1,
                });
                return Err(Attempt::Retry(problem));
            }
            Ok(hashes)
        });
        match hashes {
            Ok(h) => {
                std::fs::rename(&partial, dest).map_err(|e| DownloadError::io(dest, e))?;
                Ok(h)
            }
            Err(DownloadError::Failed { .. }) if corrupt.is_some() => {
                Err(corrupt.expect("checked"))
            }
            Err(e) => Err(e),
        }
    }

    fn fetch_once(
        &self,
        url: &str,
        what: &str,
        file: &SourceFile,
        partial: &Path,
        meter: &mut Meter<'_>,
    ) -> Result<(), Attempt> {
        let io = |e: std::io::Error| Attempt::Fatal(DownloadError::io(partial, e));
        let mut have = std::fs::metadata(partial).map(|m| m.len()).unwrap_or(0);
        if let Some(size) = file.size {
            if have == size && size > 0 {
                return Ok(());
            }
            if have > size {
                std::fs::remove_file(partial).map_err(io)?;
                meter.rewind(have);
                have = 0;
            }
        }
        // Redirects (the hub sends LFS files to a CDN) are followed here
        // rather than by ureq, so that every hop carries the `Range` header
        // and the token goes to the hub endpoint only.
        let mut target = url.to_string();
        let mut hops = 0;
        let mut resp = loop {
            let mut req = self
                .no_redirect
                .get(&target)
                .header("Accept-Encoding", "identity");
            if let Some(auth) = self.auth_for(&target) {
                req = req.header("Authorization", auth);
            }
            if have > 0 {
                req = req.header("Range", format!("bytes={have}-"));
            }
            let resp = req
                .call()
                .map_err(|e| Attempt::Retry(format!("{target}: {e}")))?;
            let location = resp
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            match location {
                Some(loc) if resp.status().is_redirection() && hops < 10 => {
                    target = join_url(&target, &loc);
                    hops += 1;
                }
                _ => break resp,
            }
        };
        let status = resp.status().as_u16();
        let append = match status {
            206 => true,
            200 => false,
            416 => {
                // Our partial file does not fit the server's file: restart.
                let _ = std::fs::remove_file(partial);
                meter.rewind(have);
                return Err(Attempt::Retry(format!(
                    "{url}: HTTP 416 for a resumed range; restarting"
                )));
            }
            _ => {
                let body = resp.body_mut().read_to_string().unwrap_or_default();
                return Err(self.status_error(url, what, status, body));
            }
        };
        let mut out = if append {
            OpenOptions::new().append(true).open(partial).map_err(io)?
        } else {
            meter.rewind(have);
            File::create(partial).map_err(io)?
        };
        let mut reader = resp.body_mut().as_reader();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    out.flush().map_err(io)?;
                    return Err(Attempt::Retry(format!("{url}: transfer interrupted: {e}")));
                }
            };
            out.write_all(&buf[..n]).map_err(io)?;
            meter.add(n as u64);
        }
        out.flush().map_err(io)?;
        if let Some(size) = file.size {
            let got = std::fs::metadata(partial).map(|m| m.len()).unwrap_or(0);
            if got < size {
                return Err(Attempt::Retry(format!(
                    "{url}: body ended after {got} of {size} bytes"
                )));
            }
        }
        Ok(())
    }
}

/// Resolves a `Location` header against the URL it came from.
fn join_url(base: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_string();
    }
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = base[scheme_end..]
        .find('/')
        .map(|i| scheme_end + i)
        .unwrap_or(base.len());
    if let Some(rest) = location.strip_prefix("//") {
        return format!("{}{rest}", &base[..scheme_end]);
    }
    if location.starts_with('/') {
        return format!("{}{location}", &base[..host_end]);
    }
    let path = base.split(['?', '#']).next().unwrap_or(base);
    let dir_end = path.rfind('/').filter(|&i| i >= host_end).map(|i| i + 1);
    match dir_end {
        Some(i) => format!("{}{location}", &path[..i]),
        None => format!("{}/{location}", &base[..host_end]),
    }
}

/// Extracts the `rel="next"` target of a `Link` header.
fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, rest) = part.split_once(';')?;
        rest.contains("rel=\"next\"").then(|| {
            target
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
    })
}

fn partial_path(dest: &Path) -> PathBuf {
    let mut name = dest
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".partial");
    dest.with_file_name(name)
}

/// Content hashes of a file.
#[derive(Debug, Clone)]
pub(crate) struct Hashes {
    pub sha256: String,
    pub git_oid: String,
    pub size: u64,
}

/// sha256 and git blob id of a file in one pass.
pub(crate) fn hash_file(path: &Path) -> Result<Hashes, DownloadError> {
    let size = std::fs::metadata(path)
        .map_err(|e| DownloadError::io(path, e))?
        .len();
    let mut file = File::open(path).map_err(|e| DownloadError::io(path, e))?;
    let mut sha256 = sha2::Sha256::new();
    let mut sha1 = sha1::Sha1::new();
    sha1.update(format!("blob {size}\0").as_bytes());
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| DownloadError::io(path, e))?;
        if n == 0 {
            break;
        }
        sha256.update(&buf[..n]);
        sha1.update(&buf[..n]);
    }
    Ok(Hashes {
        sha256: hex::encode(sha256.finalize()),
        git_oid: hex::encode(sha1.finalize()),
        size,
    })
}

/// Checks hashes against the identity; returns the problem if any.
pub(crate) fn verify(file: &SourceFile, h: &Hashes) -> Option<String> {
    if let Some(size) = file.size
        && size != h.size
    {
        return Some(format!("size {} bytes, expected {size}", h.size));
    }
    if let Some(expected) = &file.sha256
        && !expected.eq_ignore_ascii_case(&h.sha256)
    {
        return Some(format!("sha256 {}, expected {expected}", h.sha256));
    }
    if let Some(expected) = &file.git_oid
        && !expected.eq_ignore_ascii_case(&h.git_oid)
    {
        return Some(format!("git blob id {}, expected {expected}", h.git_oid));
    }
    None
}

/// Name of a file in the content-addressed download cache.
pub(crate) fn cache_name(file: &SourceFile) -> String {
    if let Some(s) = &file.sha256 {
        format!("sha256-{s}")
    } else if let Some(g) = &file.git_oid {
        format!("gitsha1-{g}")
    } else {
        // An unhashed URL: key on everything known about it.
        let key = format!("{}\n{:?}\n{:?}", file.location, file.etag, file.size);
        format!("url-{}", blake3::hash(key.as_bytes()).to_hex())
    }
}

/// Progress of the transfers on the engine's bar: bytes, bytes/s and ETA.
pub(crate) struct Meter<'a> {
    bar: &'a indicatif::ProgressBar,
    start: Instant,
    last: Instant,
    done: u64,
    fetched: u64,
    label: String,
}

impl<'a> Meter<'a> {
    pub(crate) fn new(bar: &'a indicatif::ProgressBar, total: u64) -> Self {
        bar.set_length(total);
        bar.set_position(0);
        let now = Instant::now();
        Meter {
            bar,
            start: now,
            last: now,
            done: 0,
            fetched: 0,
            label: String::new(),
        }
    }
    pub(crate) fn set_label(&mut self, label: &str) {
        self.label = label.to_string();
        self.bar.set_message(format!("downloading {label}"));
    }
    /// Counts bytes that did not come over the network (cache hits).
    pub(crate) fn skip(&mut self, n: u64) {
        self.done += n;
        self.bar.set_position(self.done);
    }
    fn add(&mut self, n: u64) {
        self.done += n;
        self.fetched += n;
        self.bar.set_position(self.done);
        let now = Instant::now();
        if now.duration_since(self.last) >= Duration::from_millis(250) {
            self.last = now;
            let secs = now.duration_since(self.start).as_secs_f64().max(1e-3);
            let rate = self.fetched as f64 / secs;
            let left = self
                .bar
                .length()
                .unwrap_or(self.done)
                .saturating_sub(self.done);
            let eta = if rate > 0.0 {
                Duration::from_secs_f64(left as f64 / rate)
            } else {
                Duration::ZERO
            };
            self.bar.set_message(format!(
                "downloading {}: {}/s, ETA {}",
                self.label,
                indicatif::HumanBytes(rate as u64),
                indicatif::HumanDuration(eta)
            ));
        }
    }
    fn rewind(&mut self, n: u64) {
        self.done = self.done.saturating_sub(n);
        self.bar.set_position(self.done);
    }
    /// Bytes received over the network so far (resumed and retried
    /// transfers count what was actually received).
    pub(crate) fn fetched(&self) -> u64 {
        self.fetched
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_redirects() {
        assert_eq!(join_url("https://h/a/b?x=1", "https://c/d"), "https://c/d");
        assert_eq!(join_url("https://h/a/b?x=1", "/d/e"), "https://h/d/e");
        assert_eq!(join_url("https://h/a/b", "c"), "https://h/a/c");
        assert_eq!(join_url("https://h", "c"), "https://h/c");
        assert_eq!(join_url("https://h/a", "//cdn/x"), "https://cdn/x");
    }

    #[test]
    fn link_header() {
        assert_eq!(
            next_link("<https://h/api/x?cursor=abc>; rel=\"next\""),
            Some("https://h/api/x?cursor=abc".to_string())
        );
        assert_eq!(next_link("<https://h/a>; rel=\"prev\""), None);
    }

    #[test]
    fn hashes_match_git() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"hello\n").unwrap();
        let h = hash_file(&p).unwrap();
        // `git hash-object` of "hello\n".
        assert_eq!(h.git_oid, "ce013625030ba8dba906f756967f9e9ca394464a");
        assert_eq!(
            h.sha256,
            "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
        );
    }
}
