//! End-to-end tests of the engine, driving the `cram` binary on small
//! pipelines of `command` stages.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn cram() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cram"));
    c.env_remove("CRAM_CACHE");
    c
}

struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn new(pipeline: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.toml"), pipeline).unwrap();
        Project { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path().join(name), text).unwrap();
    }

    fn cram(&self, args: &[&str]) -> Output {
        cram().args(args).current_dir(self.path()).output().unwrap()
    }

    fn run(&self, extra: &[&str]) -> Output {
        let mut args = vec!["run", "p.toml"];
        args.extend_from_slice(extra);
        let out = self.cram(&args);
        assert!(
            out.status.success(),
            "cram run failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn entries(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.path().join("cache/entries"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    fn output_of(&self, stage: &str, file: &str) -> String {
        let lock: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(self.path().join("p.toml.lock")).unwrap(),
        )
        .unwrap();
        let key = lock["stages"][stage]["key"].as_str().unwrap();
        std::fs::read_to_string(
            self.path()
                .join("cache/entries")
                .join(key)
                .join("out")
                .join(file),
        )
        .unwrap()
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The stages a run actually executed, from its `ran` lines.
fn ran(o: &Output) -> Vec<String> {
    stdout(o)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("ran "))
        .map(|l| l.trim().split(' ').next().unwrap().to_string())
        .collect()
}

const CHAIN: &str = r#"
name = "chain"
seed = 7

[stages.source]
kind = "command"
run = "printf 'alpha beta\ngamma\n' > {output}/text.txt"

[stages.upper]
kind = "command"
inputs = ["source"]
run = "tr a-z A-Z < {inputs.source}/text.txt > {output}/text.txt; echo $MODE >> {output}/text.txt"
env = { MODE = "plain" }

[stages.count]
kind = "command"
inputs = ["upper"]
run = "wc -l < {inputs.upper}/text.txt > {output}/lines.txt"
"#;

#[test]
fn second_run_executes_nothing() {
    let p = Project::new(CHAIN);
    let first = p.run(&[]);
    assert_eq!(ran(&first), ["source", "upper", "count"]);
    assert_eq!(
        p.output_of("upper", "text.txt"),
        "ALPHA BETA\nGAMMA\nplain\n"
    );
    assert_eq!(p.output_of("count", "lines.txt").trim(), "3");
    let second = p.run(&[]);
    assert!(ran(&second).is_empty(), "{}", stdout(&second));
    assert_eq!(
        stdout(&second).matches("cached").count(),
        4,
        "{}",
        stdout(&second)
    );
}

#[test]
fn changed_parameter_reruns_the_stage_and_its_descendants_only() {
    let p = Project::new(CHAIN);
    p.run(&[]);
    p.write(
        "p.toml",
        &CHAIN.replace("MODE = \"plain\"", "MODE = \"fancy\""),
    );
    let status = p.cram(&["status", "p.toml"]);
    let text = stdout(&status);
    assert!(
        text.contains("source") && text.lines().next().unwrap().contains("cached"),
        "{text}"
    );
    assert!(
        text.contains("param env.MODE: \"plain\" → \"fancy\""),
        "{text}"
    );
    assert!(text.contains("input upper will rerun"), "{text}");
    let out = p.run(&[]);
    assert_eq!(ran(&out), ["upper", "count"]);
}

#[test]
fn set_overrides_are_type_checked_and_change_the_key() {
    let p = Project::new(CHAIN);
    p.run(&[]);
    let status = p.cram(&["status", "p.toml", "--set", "upper.env.MODE=loud"]);
    assert!(
        stdout(&status).contains("param env.MODE"),
        "{}",
        stdout(&status)
    );
    let bad = p.cram(&["status", "p.toml", "--set", "upper.env=3"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("--set"), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("expected a map"), "{}", stderr(&bad));
    let missing = p.cram(&["status", "p.toml", "--set", "nosuch.x=1"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        stderr(&missing).contains("no stage `nosuch`"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn early_cutoff_stops_propagation_when_output_bytes_are_equal() {
    let p = Project::new(CHAIN);
    p.run(&[]);
    // A different command that writes the same bytes.
    p.write(
        "p.toml",
        &CHAIN.replace(
            "run = \"printf 'alpha beta\\ngamma\\n' > {output}/text.txt\"",
            "run = \"echo 'alpha beta' > {output}/text.txt; echo gamma >> {output}/text.txt\"",
        ),
    );
    let out = p.run(&[]);
    assert_eq!(ran(&out), ["source"], "{}", stdout(&out));
    assert!(stdout(&out).contains("cached  upper"));
}

#[test]
fn until_force_and_dry_run_do_what_they_say() {
    let p = Project::new(CHAIN);
    let out = p.run(&["--until", "upper"]);
    assert_eq!(ran(&out), ["source", "upper"]);
    let dry = p.run(&["--dry-run"]);
    assert!(
        stdout(&dry).contains("would run   count: never run"),
        "{}",
        stdout(&dry)
    );
    assert!(
        stdout(&dry).contains("cached      upper"),
        "{}",
        stdout(&dry)
    );
    assert_eq!(p.entries().len(), 2, "a dry run must not run anything");
    let forced = p.run(&["--force", "upper"]);
    assert_eq!(ran(&forced), ["upper", "count"]);
    let again = p.run(&["--force", "source"]);
    // The forced stage reruns; its output is identical, so nothing else does.
    assert_eq!(ran(&again), ["source"]);
    let bad = p.cram(&["run", "p.toml", "--until", "nope"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("has no stage `nope`"));
}

/// Asserts that loading `pipeline` fails with exit 2 and a message holding
/// every needle.
fn assert_load_error(pipeline: &str, needles: &[&str]) {
    let p = Project::new(pipeline);
    let out = p.cram(&["status", "p.toml"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for n in needles {
        assert!(err.contains(n), "missing {n:?} in:\n{err}");
    }
}

#[test]
fn pipeline_errors_name_file_line_column_and_what_was_expected() {
    // A typo'd key: file, line, column, the allowed keys.
    assert_load_error(
        "[stages.a]\nkind = \"command\"\nrun = \"true\"\ndepz = []\n",
        &[
            "p.toml:4:1",
            "unknown key `depz`",
            "allowed keys: kind, inputs",
            "deps",
        ],
    );
    // An unknown kind lists the kinds.
    assert_load_error(
        "[stages.a]\nkind = \"comand\"\n",
        &[
            "p.toml:2:8",
            "unknown stage kind `comand` (did you mean `command`?)",
            "kinds: download,",
        ],
    );
    // A wrong type says what was expected.
    assert_load_error(
        "[stages.a]\nkind = \"command\"\nrun = 5\n",
        &["p.toml:3:7", "bad value for `run`", "expected a string"],
    );
    // A missing input stage.
    assert_load_error(
        "[stages.a]\nkind = \"command\"\nrun = \"true\"\ninputs = [\"ghost\"]\n",
        &[
            "p.toml:4:11",
            "input `ghost` is not a stage",
            "stages are: a",
        ],
    );
    // A cycle names every stage on it.
    assert_load_error(
        "[stages.a]\nkind = \"command\"\nrun = \"true\"\ninputs = [\"c\"]\n\
         [stages.b]\nkind = \"command\"\nrun = \"true\"\ninputs = [\"a\"]\n\
         [stages.c]\nkind = \"command\"\nrun = \"true\"\ninputs = [\"b\"]\n",
        &["dependency cycle: a -> c -> b -> a", "p.toml:4:"],
    );
    // An unsafe stage name.
    assert_load_error(
        "[stages.\"../evil\"]\nkind = \"command\"\nrun = \"true\"\n",
        &["p.toml:1:9", "unsafe stage name `../evil`"],
    );
    // An unknown top-level key.
    assert_load_error(
        "nmae = \"x\"\n[stages.a]\nkind = \"command\"\nrun = \"true\"\n",
        &["p.toml:1:1", "unknown top-level key `nmae`"],
    );
    // Invalid TOML.
    assert_load_error("[stages.a\nkind = 1\n", &["p.toml:1:", "invalid TOML"]);
}

/// The shipped sanity recipe's text.
fn sanity_recipe() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/pipelines/sanity.toml"
    ))
    .unwrap()
}

/// An error message's words, without the terminal's wrapping and frame.
fn words(message: &str) -> String {
    message
        .split_whitespace()
        .filter(|w| *w != "│")
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn non_finite_numbers_are_refused_where_they_are_written() {
    // JSON has no nan or inf: serde_json made them `null`, which panicked in one kind and
    // silently meant "the default" in another. Every kind's table is checked on load.
    let sanity = sanity_recipe();
    let p = Project::new(&sanity);
    for (set, key) in [
        ("glue.lr=nan", "`lr`"),
        ("glue.eps=inf", "`eps`"),
        ("glue.overrides={rte={lr=nan}}", "`overrides.rte.lr`"),
        ("glue.warmup_fraction=-inf", "`warmup_fraction`"),
        ("clean.trash_cutoff=nan", "`trash_cutoff`"),
    ] {
        for command in ["status", "dag"] {
            let out = p.cram(&[command, "p.toml", "--set", set]);
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{command} --set {set}: {err}");
            let words = words(&err);
            assert!(
                words.contains("must be a finite number")
                    && words.contains(key)
                    && words.contains("--set:1:1"),
                "{command} --set {set}: {err}"
            );
            assert!(!err.contains("panicked"), "{err}");
        }
    }
    // In the file itself: the error points at the line.
    let in_file = sanity.replace("lr = 1e-3\nepochs = 3", "lr = nan\nepochs = 3");
    assert_ne!(in_file, sanity);
    let line = in_file
        .lines()
        .position(|l| l == "lr = nan")
        .map(|i| i + 1)
        .unwrap();
    assert_load_error(&in_file, &[&format!("p.toml:{line}:"), "finite"]);
}

#[test]
fn values_no_input_can_make_right_are_refused_when_the_pipeline_loads() {
    // These used to pass `status`, `dag` and `--dry-run` and fail only when the stage started.
    let sanity = sanity_recipe();
    let p = Project::new(&sanity);
    for (set, key) in [
        ("tokenize.seq_length=1", "`seq_length`"),
        ("tokenizer.vocab_size=3", "`vocab_size`"),
        ("dedup.min_length=0", "`min_length`"),
        ("clean.trash_cutoff=-3", "`trash_cutoff`"),
    ] {
        for args in [
            vec!["status", "p.toml"],
            vec!["dag", "p.toml"],
            vec!["run", "p.toml", "--dry-run"],
        ] {
            let mut args = args.clone();
            args.extend(["--set", set]);
            let out = p.cram(&args);
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
            let words = words(&err);
            assert!(
                words.contains("--set:1:1") && words.contains(key),
                "{args:?}: {err}"
            );
        }
    }
    // Written in the file, the error is on the key's line.
    let in_file = sanity.replace("seq_length = 64", "seq_length = 1");
    assert_ne!(in_file, sanity);
    let line = in_file
        .lines()
        .position(|l| l == "seq_length = 1")
        .map(|i| i + 1)
        .unwrap();
    assert_load_error(&in_file, &[&format!("p.toml:{line}:"), "seq_length"]);
}

#[test]
fn includes_merge_and_the_including_file_wins() {
    let p = Project::new(
        "include = [\"base.toml\"]\nname = \"top\"\n[stages.upper]\nenv = { MODE = \"mine\" }\n",
    );
    p.write("base.toml", CHAIN);
    let show = p.cram(&["show", "p.toml", "upper"]);
    let text = stdout(&show);
    assert!(show.status.success(), "{}", stderr(&show));
    assert!(text.contains("pipeline top"), "{text}");
    assert!(text.contains("env.MODE = \"mine\""), "{text}");
    assert!(text.contains("tr a-z A-Z"), "{text}");
    // An error inside an included file names that file.
    p.write(
        "base.toml",
        &CHAIN.replace(
            "kind = \"command\"\ninputs = [\"upper\"]",
            "kind = \"command\"\ninputs = [\"uper\"]",
        ),
    );
    let out = p.cram(&["status", "p.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("base.toml:"), "{}", stderr(&out));
}

#[test]
fn failed_stage_reports_its_log_and_independent_stages_finish() {
    let p = Project::new(
        r#"
[stages.bad]
kind = "command"
run = "echo 'something broke' >&2; exit 3"
[stages.after_bad]
kind = "command"
inputs = ["bad"]
run = "true"
[stages.good]
kind = "command"
run = "echo fine > {output}/ok.txt"
"#,
    );
    let out = p.cram(&["run", "p.toml"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("FAILED  bad"), "{err}");
    let log_line = err
        .lines()
        .find(|l| l.contains("log:"))
        .expect("a log path");
    let log = log_line.split("log:").nth(1).unwrap().trim();
    let log_text = std::fs::read_to_string(p.path().join(log)).unwrap();
    assert!(log_text.contains("something broke"), "{log_text}");
    assert!(stdout(&out).contains("skipped after_bad"));
    assert!(stdout(&out).contains("ran     good"));
    assert_eq!(p.entries().len(), 1);
}

const SLOW: &str = r#"
[stages.slow]
kind = "command"
run = "echo first > {output}/a.txt; if [ -f slow.flag ]; then sleep 60; fi; seq 1 1000 > {output}/b.txt"
[stages.next]
kind = "command"
inputs = ["slow"]
run = "wc -l < {inputs.slow}/b.txt > {output}/n.txt"
"#;

fn wait_for(cond: impl Fn() -> bool, what: &str) {
    let t0 = Instant::now();
    while !cond() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn kill_9_mid_stage_leaves_no_valid_entry_and_the_rerun_matches() {
    let p = Project::new(SLOW);
    p.write("slow.flag", "");
    let mut child = cram()
        .args(["run", "p.toml"])
        .current_dir(p.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let tmp = p.path().join("cache/tmp");
    wait_for(
        || {
            std::fs::read_dir(&tmp)
                .map(|d| d.flatten().any(|e| e.path().join("out/a.txt").exists()))
                .unwrap_or(false)
        },
        "the slow stage to start writing",
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(p.entries().is_empty(), "a killed stage must leave no entry");
    let status = p.cram(&["status", "p.toml"]);
    assert!(
        stdout(&status).contains("slow             stale: never run"),
        "{}",
        stdout(&status)
    );
    std::fs::remove_file(p.path().join("slow.flag")).unwrap();
    let out = p.run(&[]);
    assert_eq!(ran(&out), ["slow", "next"]);
    assert_eq!(p.output_of("next", "n.txt").trim(), "1000");
    // An uninterrupted run elsewhere gives the same keys and bytes.
    let q = Project::new(SLOW);
    q.run(&[]);
    let lock_p = std::fs::read_to_string(p.path().join("p.toml.lock")).unwrap();
    let lock_q = std::fs::read_to_string(q.path().join("p.toml.lock")).unwrap();
    assert_eq!(lock_p, lock_q);
    // `gc` clears the dead run's leftovers.
    let gc = p.cram(&["gc"]);
    assert!(stdout(&gc).contains("removed 0 entries"), "{}", stdout(&gc));
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
}

#[test]
fn two_concurrent_runs_on_one_cache_both_succeed_and_agree() {
    let p = Project::new(
        r#"
[stages.a]
kind = "command"
run = "sleep 1; seq 1 500 > {output}/a.txt"
[stages.b]
kind = "command"
inputs = ["a"]
run = "sleep 1; tail -n 3 {inputs.a}/a.txt > {output}/b.txt"
"#,
    );
    let spawn = || {
        cram()
            .args(["run", "p.toml"])
            .current_dir(p.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (c1, c2) = (spawn(), spawn());
    let (o1, o2) = (
        c1.wait_with_output().unwrap(),
        c2.wait_with_output().unwrap(),
    );
    assert!(o1.status.success(), "{}", stderr(&o1));
    assert!(o2.status.success(), "{}", stderr(&o2));
    // Each stage ran exactly once across both processes.
    let mut all = ran(&o1);
    all.extend(ran(&o2));
    all.sort();
    assert_eq!(all, ["a", "b"], "{}\n{}", stdout(&o1), stdout(&o2));
    assert_eq!(p.entries().len(), 2);
    assert_eq!(p.output_of("b", "b.txt"), "498\n499\n500\n");
}

#[test]
fn verify_detects_a_flipped_byte_and_quarantines_the_entry() {
    let p = Project::new(CHAIN);
    p.run(&[]);
    let ok = p.cram(&["verify"]);
    assert!(
        stdout(&ok).contains("3 intact, 0 damaged"),
        "{}",
        stdout(&ok)
    );
    let lock: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.path().join("p.toml.lock")).unwrap())
            .unwrap();
    let key = lock["stages"]["upper"]["key"].as_str().unwrap();
    let file = p
        .path()
        .join("cache/entries")
        .join(key)
        .join("out/text.txt");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[0] ^= 0x01;
    std::fs::write(&file, bytes).unwrap();
    let bad = p.cram(&["verify"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stdout(&bad).contains("text.txt: content changed"),
        "{}",
        stdout(&bad)
    );
    assert!(p.path().join("cache/quarantine").join(key).exists());
    // The damaged stage is rebuilt on the next run.
    let out = p.run(&[]);
    assert_eq!(ran(&out), ["upper"]);
}

#[test]
fn cache_location_follows_flag_then_environment() {
    let p = Project::new(CHAIN);
    let out = cram()
        .args(["run", "p.toml", "--until", "source"])
        .env("CRAM_CACHE", p.path().join("envcache"))
        .current_dir(p.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(p.path().join("envcache/entries").exists());
    let out = cram()
        .args(["--cache", "flagcache", "run", "p.toml", "--until", "source"])
        .env("CRAM_CACHE", p.path().join("envcache"))
        .current_dir(p.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(p.path().join("flagcache/entries").exists());
    assert!(!p.path().join("cache").exists());
}

#[test]
fn dag_formats_and_command_dependencies() {
    let p = Project::new(
        r#"
[stages.a]
kind = "command"
run = "sh script.sh > {output}/x.txt"
deps = ["script.sh"]
[stages.b]
kind = "command"
inputs = ["a"]
run = "cp {inputs.a}/x.txt {output}/"
"#,
    );
    p.write("script.sh", "echo one\n");
    p.run(&[]);
    let dot = stdout(&p.cram(&["dag", "p.toml", "--format", "dot"]));
    assert!(dot.contains("\"a\" -> \"b\""), "{dot}");
    let mermaid = stdout(&p.cram(&["dag", "p.toml", "--format", "mermaid"]));
    assert!(mermaid.contains("a --> b"), "{mermaid}");
    // Editing a dependency file reruns the stage.
    p.write("script.sh", "echo two\n");
    let status = stdout(&p.cram(&["status", "p.toml"]));
    assert!(status.contains("a dependency file"), "{status}");
    let out = p.run(&[]);
    assert_eq!(ran(&out), ["a", "b"]);
    assert_eq!(p.output_of("b", "x.txt"), "two\n");
}

#[test]
fn independent_stages_run_side_by_side_by_default() {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        println!("SKIP: one core, so -j defaults to 1");
        return;
    }
    // Each stage waits until it sees the other's start marker: they finish
    // only if they run at the same time (else the first one times out).
    let p = Project::new(
        r#"
[stages.left]
kind = "command"
run = "touch left.started; for i in $(seq 100); do [ -f right.started ] && break; sleep 0.1; done; [ -f right.started ] && echo ok > {output}/x.txt"
[stages.right]
kind = "command"
run = "touch right.started; for i in $(seq 100); do [ -f left.started ] && break; sleep 0.1; done; [ -f left.started ] && echo ok > {output}/x.txt"
"#,
    );
    let out = p.run(&[]);
    let mut stages = ran(&out);
    stages.sort();
    assert_eq!(stages, ["left", "right"]);
    // With -j 1 they run one after the other: the first one gives up.
    for f in ["left.started", "right.started"] {
        std::fs::remove_file(p.path().join(f)).unwrap();
    }
    std::fs::remove_dir_all(p.path().join("cache")).unwrap();
    let serial = p.cram(&["run", "p.toml", "-j", "1"]);
    assert!(!serial.status.success(), "{}", stdout(&serial));
}
