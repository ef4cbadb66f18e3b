//! End-to-end tests of the shared cache: `cram run --push`, `cram push`,
//! `cram pull` and `cram run` pulling instead of building, against a
//! directory remote and a real S3 API on loopback (the `moto` server).

mod common;

use std::net::TcpStream;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Three small stages and one with a 20 MB output (uploaded in parts).
const PIPELINE: &str = r#"
name = "shared"
seed = 3

[stages.source]
kind = "command"
run = "printf 'alpha beta\ngamma\n' > {output}/text.txt"

[stages.upper]
kind = "command"
inputs = ["source"]
run = "tr a-z A-Z < {inputs.source}/text.txt > {output}/text.txt"

[stages.count]
kind = "command"
inputs = ["upper"]
run = "wc -l < {inputs.upper}/text.txt > {output}/lines.txt; mkdir {output}/sub; echo deep > {output}/sub/note.txt"

[stages.big]
kind = "command"
inputs = ["source"]
run = "for i in $(seq 1 200); do head -c 100000 {inputs.source}/text.txt; seq 1 20000; done | head -c 20000000 > {output}/big.bin"
"#;

/// A project directory: the pipeline, its own cache and lock file.
struct Project {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Project {
    fn new() -> Project {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.toml"), PIPELINE).unwrap();
        Project {
            dir,
            env: Vec::new(),
        }
    }

    fn with_env(mut self, env: &[(String, String)]) -> Project {
        self.env = env.to_vec();
        self
    }

    fn cram(&self, args: &[&str]) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cram"));
        c.env_remove("CRAM_CACHE").env_remove("CRAM_REMOTE");
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c.args(args).current_dir(self.dir.path()).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cram(args);
        assert!(
            out.status.success(),
            "cram {args:?} failed:\n{}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        format!("{}{}", text(&out.stdout), text(&out.stderr))
    }

    fn key(&self, stage: &str) -> String {
        let lock: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(self.dir.path().join("p.toml.lock")).unwrap(),
        )
        .unwrap();
        lock["stages"][stage]["key"].as_str().unwrap().to_string()
    }

    fn output(&self, stage: &str, file: &str) -> Vec<u8> {
        let path = self
            .dir
            .path()
            .join("cache/entries")
            .join(self.key(stage))
            .join("out")
            .join(file);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The stage names that follow `word` at the start of a line.
fn stages_with(out: &str, word: &str) -> Vec<String> {
    let mut v: Vec<String> = out
        .lines()
        .filter_map(|l| l.trim().strip_prefix(word)?.strip_prefix(' '))
        .filter_map(|l| {
            l.split_whitespace()
                .next()
                .map(|s| s.trim_end_matches(':').to_string())
        })
        .collect();
    v.sort();
    v
}

const ALL: [&str; 4] = ["big", "count", "source", "upper"];

#[test]
fn a_pushed_pipeline_is_pulled_by_a_fresh_cache_without_building_anything() {
    let remote = tempfile::tempdir().unwrap();
    let r = remote.path().to_str().unwrap();
    let a = Project::new();
    let first = a.ok(&["run", "p.toml", "--push", "--remote", r]);
    assert_eq!(stages_with(&first, "pushed"), ALL, "{first}");
    for s in ALL {
        let manifest = remote
            .path()
            .join("entries")
            .join(a.key(s))
            .join("manifest.json");
        assert!(manifest.is_file(), "{} missing", manifest.display());
    }
    // Pushing again moves nothing.
    let again = a.ok(&["push", "p.toml", "--remote", r]);
    assert_eq!(stages_with(&again, "there"), ALL, "{again}");
    assert!(again.contains("0 pushed"), "{again}");

    // A colleague with an empty cache names the remote in the environment.
    let b = Project::new().with_env(&[("CRAM_REMOTE".into(), r.into())]);
    let pulled = b.ok(&["run", "p.toml"]);
    assert_eq!(stages_with(&pulled, "pulled"), ALL, "{pulled}");
    assert!(stages_with(&pulled, "ran").is_empty(), "{pulled}");
    assert!(pulled.contains("4 pulled"), "{pulled}");
    for s in ALL {
        assert_eq!(a.key(s), b.key(s));
    }
    assert_eq!(b.output("upper", "text.txt"), b"ALPHA BETA\nGAMMA\n");
    assert_eq!(b.output("count", "sub/note.txt"), b"deep\n");
    assert_eq!(a.output("big", "big.bin"), b.output("big", "big.bin"));
    let verify = b.ok(&["verify"]);
    assert!(verify.contains("4 intact, 0 damaged"), "{verify}");
    // Run facts and logs come along.
    let log = b
        .dir
        .path()
        .join("cache/entries")
        .join(b.key("upper"))
        .join("log.txt");
    assert!(
        std::fs::read_to_string(log)
            .unwrap()
            .contains("stage upper")
    );

    // `cram pull` fills a third cache without running; `status` agrees.
    let c = Project::new();
    let out = c.ok(&["pull", "p.toml", "--remote", r]);
    assert_eq!(stages_with(&out, "pulled"), ALL, "{out}");
    let status = c.ok(&["status", "p.toml"]);
    assert_eq!(status.matches("cached").count(), 4, "{status}");
}

#[test]
fn damaged_or_partial_remote_entries_are_never_used() {
    let remote = tempfile::tempdir().unwrap();
    let r = remote.path().to_str().unwrap();
    let a = Project::new();
    a.ok(&["run", "p.toml"]);
    a.ok(&["push", "p.toml", "--remote", r]);
    let entry = |s: &str| remote.path().join("entries").join(a.key(s));
    // One flipped byte in upper's output; count's manifest gone (a push cut
    // short); big's manifest edited to claim other parameters.
    let damaged = entry("upper").join("out/text.txt");
    let mut bytes = std::fs::read(&damaged).unwrap();
    bytes[0] ^= 0x20;
    std::fs::write(&damaged, bytes).unwrap();
    std::fs::remove_file(entry("count").join("manifest.json")).unwrap();
    let manifest = entry("big").join("manifest.json");
    let edited = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace("head -c 20000000", "head -c 20000001");
    std::fs::write(&manifest, edited).unwrap();

    let b = Project::new();
    let out = b.ok(&["run", "p.toml", "--remote", r]);
    assert_eq!(stages_with(&out, "pulled"), ["source"], "{out}");
    assert_eq!(stages_with(&out, "ran"), ["big", "count", "upper"], "{out}");
    assert!(out.contains("damaged"), "{out}");
    assert!(out.contains("do not hash to its key"), "{out}");
    // What was built instead is right, and the same as the original.
    assert_eq!(b.output("upper", "text.txt"), b"ALPHA BETA\nGAMMA\n");
    for s in ALL {
        assert_eq!(a.key(s), b.key(s));
    }

    // `cram pull` says which entries it refused, and exits 1.
    let c = Project::new();
    let out = c.cram(&["pull", "p.toml", "--remote", r]);
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert_eq!(stages_with(&all, "pulled"), ["source"], "{all}");
    assert_eq!(stages_with(&all, "unusable"), ["big", "upper"], "{all}");
    assert!(all.contains("still to build"), "{all}");
    // Nothing of the refused entries is left in the cache.
    let entries: Vec<_> = std::fs::read_dir(c.dir.path().join("cache/entries"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(entries.len(), 1);
    let tmp: Vec<_> = std::fs::read_dir(c.dir.path().join("cache/tmp"))
        .unwrap()
        .flatten()
        .collect();
    assert!(tmp.is_empty(), "{tmp:?}");
}

#[test]
fn push_without_a_remote_says_how_to_name_one() {
    let a = Project::new();
    let out = a.cram(&["push", "p.toml"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("--remote") && err.contains("CRAM_REMOTE"),
        "{err}"
    );
    // The pipeline file may name it, relative to its own directory.
    std::fs::write(
        a.dir.path().join("p.toml"),
        format!("remote = \"shared-cache\"\n{PIPELINE}"),
    )
    .unwrap();
    a.ok(&["run", "p.toml", "--until", "source"]);
    let out = a.ok(&["push", "p.toml", "--until", "source"]);
    assert_eq!(stages_with(&out, "pushed"), ["source"], "{out}");
    assert!(
        a.dir
            .path()
            .join("shared-cache/entries")
            .join(a.key("source"))
            .join("manifest.json")
            .is_file()
    );
    // And `--remote none` turns it off for one run.
    let fresh = Project::new();
    std::fs::write(
        fresh.dir.path().join("p.toml"),
        format!(
            "remote = \"{}\"\n{PIPELINE}",
            a.dir.path().join("shared-cache").display()
        ),
    )
    .unwrap();
    let out = fresh.ok(&["run", "p.toml", "--until", "source", "--remote", "none"]);
    assert_eq!(stages_with(&out, "ran"), ["source"], "{out}");
}

/// An S3 API on loopback: `$CRAM_TEST_S3_ENDPOINT` where CI started one,
/// else a `moto_server` of our own. `None` (the test skips) where there is
/// neither, unless CRAM_REQUIRE_S3=1 makes that a failure.
struct S3 {
    child: Option<Child>,
    endpoint: String,
}

impl S3 {
    fn start() -> Option<S3> {
        if let Ok(endpoint) = std::env::var("CRAM_TEST_S3_ENDPOINT") {
            return Some(S3 {
                child: None,
                endpoint,
            });
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(child) = child else {
            assert!(
                std::env::var("CRAM_REQUIRE_S3").as_deref() != Ok("1"),
                "CRAM_REQUIRE_S3=1 but there is no moto_server (pip install 'moto[server]')"
            );
            println!("SKIP: no moto_server and no CRAM_TEST_S3_ENDPOINT");
            return None;
        };
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "moto_server never listened"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(S3 {
            child: Some(child),
            endpoint: format!("http://127.0.0.1:{port}"),
        })
    }

    fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT", self.endpoint.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Runs a boto3 snippet against the server (`s3` is the client).
    fn boto(&self, code: &str) -> Option<String> {
        let script = format!(
            "import boto3, sys\ns3 = boto3.client('s3', endpoint_url=sys.argv[1], \
             aws_access_key_id='testing', aws_secret_access_key='testing', region_name='us-east-1')\n{code}"
        );
        common::python("boto3", &script, &[&self.endpoint])
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn an_s3_remote_on_loopback_shares_entries_and_refuses_a_damaged_one() {
    let Some(s3) = S3::start() else { return };
    let bucket = format!("cram-{}", std::process::id());
    if s3
        .boto(&format!("s3.create_bucket(Bucket='{bucket}')"))
        .is_none()
    {
        return;
    }
    let url = format!("s3://{bucket}/team/cache");
    let a = Project::new().with_env(&s3.env());
    let out = a.ok(&["run", "p.toml", "--push", "--remote", &url]);
    assert_eq!(stages_with(&out, "pushed"), ALL, "{out}");
    // The 20 MB file went up in parts and came back whole.
    let b = Project::new().with_env(&s3.env());
    let out = b.ok(&["run", "p.toml", "--remote", &url]);
    assert_eq!(stages_with(&out, "pulled"), ALL, "{out}");
    assert_eq!(a.output("big", "big.bin"), b.output("big", "big.bin"));
    assert_eq!(
        b.output("count", "lines.txt"),
        a.output("count", "lines.txt")
    );

    // Someone overwrites one object: the next pull refuses that entry and
    // its stage is built instead.
    let object = format!("team/cache/entries/{}/out/text.txt", a.key("upper"));
    s3.boto(&format!(
        "s3.put_object(Bucket='{bucket}', Key='{object}', Body=b'alpha beta\\ngamma\\n')"
    ))
    .unwrap();
    let c = Project::new().with_env(&s3.env());
    let out = c.ok(&["run", "p.toml", "--remote", &url]);
    assert_eq!(stages_with(&out, "ran"), ["upper"], "{out}");
    assert_eq!(
        stages_with(&out, "pulled"),
        ["big", "count", "source"],
        "{out}"
    );
    assert!(out.contains("damaged"), "{out}");
    assert_eq!(c.output("upper", "text.txt"), b"ALPHA BETA\nGAMMA\n");
}
