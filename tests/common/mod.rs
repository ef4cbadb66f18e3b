//! Helpers shared by the end-to-end tests that run pipelines against the
//! shared hub mirror: `cram serve-hub` on loopback, a project directory with
//! its own cache, lock-file pins and Python interop checks.

// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn mirror() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/hf-mirror");
    assert!(
        dir.join("datasets/nyu-mll/glue").is_dir(),
        "{} is missing: these tests read the shared hub mirror",
        dir.display()
    );
    dir
}

/// `cram serve-hub` on a free loopback port, stopped on drop.
pub struct Hub {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

impl Hub {
    /// Starts it and waits until it listens.
    pub fn start() -> Hub {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_cram"))
            .args(["serve-hub", mirror().to_str().unwrap(), "--port"])
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "serve-hub never listened"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Hub {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A project directory with the pipeline and its own cache.
pub struct Project {
    /// The directory (removed on drop).
    pub dir: tempfile::TempDir,
    endpoint: String,
}

impl Project {
    /// A fresh directory holding `pipeline` as `p.toml`.
    pub fn new(hub: &Hub, pipeline: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.toml"), pipeline).unwrap();
        Project {
            dir,
            endpoint: hub.endpoint.clone(),
        }
    }

    /// Runs `cram ARGS` in the directory against the hub, with `threads` threads.
    pub fn cram(&self, args: &[&str], threads: usize) -> Output {
        Command::new(env!("CARGO_BIN_EXE_cram"))
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("CRAM_CACHE")
            .env("HF_ENDPOINT", &self.endpoint)
            .env("RAYON_NUM_THREADS", threads.to_string())
            .output()
            .unwrap()
    }

    /// [`Project::cram`], asserting success.
    pub fn run_ok(&self, args: &[&str], threads: usize) -> Output {
        let out = self.cram(args, threads);
        assert!(
            out.status.success(),
            "cram {args:?} failed:\n{}",
            text(&out)
        );
        out
    }

    /// `p.toml.lock`.
    pub fn lock_path(&self) -> PathBuf {
        self.dir.path().join("p.toml.lock")
    }

    /// Stage → (kind, key, output hash) from the lock file.
    pub fn pins(&self) -> BTreeMap<String, (String, String, String)> {
        pins(&std::fs::read_to_string(self.lock_path()).unwrap())
    }
}

/// Stage → (kind, key, output hash) of a lock file's text.
pub fn pins(lock: &str) -> BTreeMap<String, (String, String, String)> {
    let v: serde_json::Value = serde_json::from_str(lock).unwrap();
    v["stages"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, e)| {
            let s = |k: &str| e[k].as_str().unwrap().to_string();
            (name.clone(), (s("kind"), s("key"), s("output_hash")))
        })
        .collect()
}

/// A command's stdout and stderr.
pub fn text(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The stages whose pins differ, described.
pub fn differing(
    a: &BTreeMap<String, (String, String, String)>,
    b: &BTreeMap<String, (String, String, String)>,
) -> Vec<String> {
    a.keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("{k}: {:?} vs {:?}", a.get(k), b.get(k)))
        .collect()
}

/// Runs `script` with python3 if it can import `modules`; `None` (a skip)
/// otherwise, unless CRAM_REQUIRE_PYTHON=1 makes that a failure.
pub fn python(modules: &str, script: &str, args: &[&str]) -> Option<String> {
    let probe = Command::new("python3")
        .arg("-c")
        .arg(format!("import {modules}"))
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        assert!(
            std::env::var("CRAM_REQUIRE_PYTHON").as_deref() != Ok("1"),
            "CRAM_REQUIRE_PYTHON=1 but `python3 -c 'import {modules}'` fails"
        );
        println!("SKIP: python3 with {modules} not available");
        return None;
    }
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap())
}

/// A JSON file's value.
pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}
