//! End-to-end tests of the Slurm executor against a real Slurm cluster on
//! this machine (munged, slurmctld and slurmd: `scripts/slurm-local.sh`,
//! which `.ci/run` starts). Where no cluster answers they skip, unless
//! CRAM_REQUIRE_SLURM=1 makes that a failure.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

fn slurm_up() -> bool {
    let up = Command::new("sinfo")
        .args(["-h", "-o", "%T"])
        .output()
        .is_ok_and(|o| {
            o.status.success() && {
                let s = String::from_utf8_lossy(&o.stdout);
                s.contains("idle") || s.contains("mixed") || s.contains("allocated")
            }
        });
    if !up {
        assert!(
            std::env::var("CRAM_REQUIRE_SLURM").as_deref() != Ok("1"),
            "CRAM_REQUIRE_SLURM=1 but no Slurm cluster answers `sinfo` (scripts/slurm-local.sh starts one)"
        );
        println!("SKIP: no Slurm cluster (scripts/slurm-local.sh starts one)");
    }
    up
}

struct Project {
    dir: tempfile::TempDir,
    /// `HF_ENDPOINT` for its runs (and so for its array tasks: sbatch
    /// passes the submitter's environment on).
    hub: Option<String>,
}

impl Project {
    fn new(pipeline: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.toml"), pipeline).unwrap();
        Project { dir, hub: None }
    }

    fn against(mut self, hub: &common::Hub) -> Project {
        self.hub = Some(hub.endpoint.clone());
        self
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cram"));
        c.env_remove("CRAM_CACHE")
            .env_remove("CRAM_REMOTE")
            .args(args)
            .current_dir(self.dir.path());
        if let Some(endpoint) = &self.hub {
            c.env("HF_ENDPOINT", endpoint);
        }
        c
    }

    fn cram(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cram(args);
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "cram {args:?} failed:\n{all}");
        all
    }

    fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn lock(&self) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(self.dir.path().join("p.toml.lock")).unwrap())
            .unwrap()
    }

    fn entry(&self, stage: &str) -> std::path::PathBuf {
        let key = self.lock()["stages"][stage]["key"]
            .as_str()
            .unwrap()
            .to_string();
        self.dir.path().join("cache/entries").join(key)
    }

    fn log(&self, stage: &str) -> String {
        std::fs::read_to_string(self.entry(stage).join("log.txt")).unwrap()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The running array tasks whose job name starts with `prefix`, as the
/// `JOB_INDEX` ids scancel takes.
fn running_tasks(prefix: &str) -> Vec<String> {
    let out = Command::new("squeue")
        .args(["-h", "-r", "-o", "%i %j %T"])
        .output()
        .unwrap();
    text(&out.stdout)
        .lines()
        .filter_map(|l| {
            let v: Vec<&str> = l.split_whitespace().collect();
            (v.len() == 3 && v[1].starts_with(prefix) && v[2] == "RUNNING")
                .then(|| v[0].to_string())
        })
        .collect()
}

fn wait_for(what: &str, limit: Duration, cond: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `body` built by the Slurm executor: quick polls, `retries` retries, and
/// the filter in three shards.
fn on_slurm(body: &str, retries: u32) -> String {
    format!(
        "executor = \"slurm\"\n{body}\n[slurm]\npoll_seconds = 0.2\nretries = {retries}\nshards = 3\n"
    )
}

/// Real stages: synthetic documents, the filter (with its own trash
/// tokenizer), dedup, a tokenizer and the packed rows.
const PREPROCESS: &str = r#"
name = "slurm-preprocess"
seed = 5

[stages.corpus]
kind = "synthetic"
documents = 600

[stages.clean]
kind = "filter"
inputs = ["corpus"]
remove_trash = true
trash_vocab_size = 512

[stages.dedup]
kind = "dedup"
inputs = ["clean"]
min_length = 40

[stages.tok]
kind = "tokenizer"
inputs = ["dedup"]
vocab_size = 600

[stages.tokenize]
kind = "pack"
inputs = ["dedup", "tok"]
seq_length = 32
ordering = "randomized"
heldout_rows = 8
"#;

#[test]
fn slurm_builds_the_same_bytes_as_the_local_executor() {
    if !slurm_up() {
        return;
    }
    let local = Project::new(PREPROCESS);
    local.ok(&["run", "p.toml"]);
    let cluster = Project::new(&on_slurm(PREPROCESS, 2));
    let out = cluster.ok(&["run", "p.toml"]);
    assert!(out.contains("Slurm array jobs"), "{out}");
    for stage in ["corpus", "clean", "dedup", "tok", "tokenize"] {
        assert_eq!(
            local.lock()["stages"][stage]["output_hash"],
            cluster.lock()["stages"][stage]["output_hash"],
            "stage {stage}"
        );
        assert_eq!(
            local.lock()["stages"][stage]["key"],
            cluster.lock()["stages"][stage]["key"]
        );
        let log = cluster.log(stage);
        assert!(log.contains("slurm: submitted job"), "{stage}: {log}");
    }
    // The filter, dedup and pack split into three array tasks, merged on
    // this host; the others run as one task.
    for stage in ["clean", "dedup", "tokenize"] {
        let log = cluster.log(stage);
        assert!(log.contains("(3 tasks)"), "{stage}: {log}");
        assert!(log.contains("merging 3 shards"), "{stage}: {log}");
    }
    assert!(cluster.log("tok").contains("(1 task)"));
    // The scratch of the builds is gone once their entries are in.
    let work = cluster.dir.path().join("cache/work");
    let left: Vec<_> = std::fs::read_dir(&work).unwrap().flatten().collect();
    assert!(left.is_empty(), "{left:?}");
    // --executor local overrides the file; all is cached either way.
    let again = cluster.ok(&["run", "p.toml", "--executor", "local"]);
    assert!(!again.contains("Slurm"), "{again}");
    assert!(again.contains("0 ran, 5 cached"), "{again}");
}

#[test]
fn a_download_fetches_its_files_in_array_tasks_and_extracts_them_as_one_pass() {
    if !slurm_up() {
        return;
    }
    let hub = common::Hub::start();
    let body = r#"
name = "slurm-download"

[stages.glue]
kind = "download"
source = "hf://datasets/nyu-mll/glue/{rte,stsb}/*.parquet"
mode = "files"

[stages.sentences]
kind = "download"
source = "hf://datasets/nyu-mll/glue/{cola,sst2}/*.parquet"
text_column = "sentence"
shard_bytes = 200000
"#;
    let local = Project::new(body).against(&hub);
    local.ok(&["run", "p.toml"]);
    let cluster = Project::new(&on_slurm(body, 1)).against(&hub);
    cluster.ok(&["run", "p.toml"]);
    for stage in ["glue", "sentences"] {
        assert_eq!(
            local.lock()["stages"][stage]["output_hash"],
            cluster.lock()["stages"][stage]["output_hash"],
            "stage {stage}"
        );
        let log = cluster.log(stage);
        assert!(log.contains("(3 tasks)"), "{stage}: {log}");
        assert!(log.contains("merging 3 shards"), "{stage}: {log}");
        // The tasks did the transfers; the merge found every file cached.
        let manifest = common::read_json(&cluster.entry(stage).join("manifest.json"));
        let timings = &manifest["metrics"]["timings"];
        assert_eq!(timings["shards"], 3, "{manifest}");
        assert_eq!(timings["fetched_files"].as_array().unwrap().len(), 6);
        assert!(timings["fetched_bytes"].as_u64().unwrap() > 1_000_000);
    }
}

#[test]
fn a_killed_task_is_submitted_again_and_the_stage_completes() {
    if !slurm_up() {
        return;
    }
    // The first attempt marks its scratch and sleeps until it is killed;
    // the second finds the mark and finishes.
    let p = Project::new(&on_slurm(
        r#"
name = "slurm-retry"
[stages.slow]
kind = "command"
run = "if [ -e {work}/tried ]; then echo second > {output}/attempt.txt; else touch {work}/tried; sleep 300; fi"
"#,
        2,
    ));
    let child = p.spawn(&["run", "p.toml"]);
    wait_for("the task to run", Duration::from_secs(60), || {
        !running_tasks("cram-slow-").is_empty()
            && has_file(&p.dir.path().join("cache/work"), "tried")
    });
    let tasks = running_tasks("cram-slow-");
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    let killed = Command::new("scancel").arg(&tasks[0]).status().unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{all}");
    let attempt = std::fs::read_to_string(p.entry("slow").join("out/attempt.txt")).unwrap();
    assert_eq!(attempt, "second\n");
    let log = p.log("slow");
    assert!(log.contains("retrying"), "{log}");
    assert!(log.contains("resubmitted 1 task(s)"), "{log}");
}

#[test]
fn a_task_that_keeps_failing_fails_the_stage_naming_its_log() {
    if !slurm_up() {
        return;
    }
    let p = Project::new(&on_slurm(
        r#"
name = "slurm-fail"
[stages.bad]
kind = "command"
run = "echo 'the data is not there' >&2; exit 3"
"#,
        1,
    ));
    let out = p.cram(&["run", "p.toml"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("Slurm task 0 of stage bad failed 2 times"),
        "{err}"
    );
    assert!(err.contains("task-0-job-"), "{err}");
    assert!(err.contains("the data is not there"), "{err}");
}

#[test]
fn a_relaunch_collects_a_task_that_finished_after_its_submitter_died() {
    if !slurm_up() {
        return;
    }
    let p = Project::new(&on_slurm(
        r#"
name = "slurm-relaunch"
[stages.work]
kind = "command"
run = "sleep 2; echo built > {output}/x.txt"
"#,
        2,
    ));
    let mut child = p.spawn(&["run", "p.toml"]);
    wait_for("the task to run", Duration::from_secs(60), || {
        !running_tasks("cram-work-").is_empty()
    });
    child.kill().unwrap();
    let _ = child.wait();
    wait_for("the task to finish", Duration::from_secs(60), || {
        running_tasks("cram-work-").is_empty()
            && has_file(&p.dir.path().join("cache/work"), "0.json")
    });
    let out = p.ok(&["run", "p.toml"]);
    assert!(out.contains("ran     work"), "{out}");
    let log = p.log("work");
    assert!(
        log.contains("every task finished in an earlier run"),
        "{log}"
    );
    assert!(!log.contains("submitted job"), "{log}");
    assert_eq!(
        std::fs::read_to_string(p.entry("work").join("out/x.txt")).unwrap(),
        "built\n"
    );
}

/// Whether a file called `name` lies anywhere under `dir`.
fn has_file(dir: &Path, name: &str) -> bool {
    let Ok(items) = std::fs::read_dir(dir) else {
        return false;
    };
    items.flatten().any(|e| {
        let p = e.path();
        if p.is_dir() {
            has_file(&p, name)
        } else {
            e.file_name() == name
        }
    })
}
