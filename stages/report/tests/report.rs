//! End-to-end tests of the report stage on fabricated but realistic records.

use std::path::{Path, PathBuf};
use std::process::Command;

use cram_report::{MachineInfo, PipelineInfo, ReportParams, RuleStatus, StageRecord, run_report};
use indicatif::ProgressBar;
use serde_json::{Value, json};

/// Writes `value` as pretty JSON to `dir/name`.
fn write_json(dir: &Path, name: &str, value: &Value) {
    std::fs::write(dir.join(name), serde_json::to_string_pretty(value).unwrap()).unwrap();
}

/// A stage record with its output directory under `root`.
fn record(
    root: &Path,
    name: &str,
    kind: &str,
    params: Value,
    inputs: &[&str],
    metrics: Value,
    seconds: f64,
) -> StageRecord {
    let out_dir = root.join(name);
    std::fs::create_dir_all(&out_dir).unwrap();
    let inputs: serde_json::Map<String, Value> = inputs
        .iter()
        .map(|i| {
            (
                i.to_string(),
                json!({"key": format!("key-{i}"), "output_hash": format!("hash-{i}")}),
            )
        })
        .collect();
    StageRecord {
        name: name.to_string(),
        kind: kind.to_string(),
        run_dir: out_dir.join("run"),
        out_dir,
        manifest: json!({
            "format": "cram-manifest-v1",
            "stage": name, "kind": kind, "key": format!("key-{name}"),
            "code_version": 1, "tool_version": "0.1.0",
            "params": params, "seed": 0,
            "inputs": inputs,
            "output_hash": format!("hash-{name}"),
            "files": [],
            "started_at": "2026-11-28T03:00:00Z", "finished_at": "2026-11-28T03:01:00Z",
            "wall_seconds": seconds,
            "metrics": metrics,
        }),
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    out: PathBuf,
    records: Vec<StageRecord>,
    pipeline: PipelineInfo,
}

/// A sanity-like run: download → filter → dedup → tokenizer → pack →
/// pretrain → glue (two tasks, cached per task).
fn fixture(glue_in_pretrain: bool, quick: bool) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    let out = dir.path().join("report-out");
    std::fs::create_dir_all(&out).unwrap();
    let mut records = vec![
        record(
            &root,
            "corpus",
            "download",
            json!({"source": "hf://datasets/Salesforce/wikitext/*.parquet"}),
            &[],
            json!({"documents": 1200, "bytes": 5_400_000, "files": 2}),
            3.5,
        ),
        record(
            &root,
            "glue_data",
            "download",
            json!({"source": "hf://datasets/nyu-mll/glue/cola/*.parquet"}),
            &[],
            json!({"files": 3, "bytes": 400_000}),
            1.0,
        ),
        record(
            &root,
            "clean",
            "filter",
            json!({"trash_cutoff": 0.25}),
            &["corpus"],
            json!({"documents_in": 1200, "documents_out": 1100, "bytes_in": 5_400_000, "bytes_out": 5_000_000}),
            2.0,
        ),
        record(
            &root,
            "dedup",
            "dedup",
            json!({"min_length": 75}),
            &["clean"],
            json!({"documents_in": 1100, "documents_out": 1100, "dedup_bytes_removed": 123_456, "bytes_out": 4_876_544}),
            6.0,
        ),
        record(
            &root,
            "tokenizer",
            "tokenizer",
            json!({"vocab_size": 8192}),
            &["dedup"],
            json!({"vocab_size": 8192, "unk_rate": 0.0012, "model": "wordpiece"}),
            4.0,
        ),
        record(
            &root,
            "tokenize",
            "pack",
            json!({"seq_length": 128}),
            &["dedup", "tokenizer"],
            json!({"rows": 9000, "seq_length": 128, "tokens": 1_152_000, "ordering": "randomized"}),
            5.0,
        ),
    ];
    let pretrain_inputs: &[&str] = if glue_in_pretrain {
        &["tokenize", "glue_data"]
    } else {
        &["tokenize"]
    };
    let pre = record(
        &root,
        "pretrain",
        "pretrain",
        json!({"arch": "tiny", "budget": "2m", "model": {"hidden": 128, "layers": 2}, "lr": 1e-3}),
        pretrain_inputs,
        json!({}),
        125.0,
    );
    // metrics.jsonl: a falling loss, triangle lr, ramped batch size.
    let mut lines = String::new();
    for i in 0..200u32 {
        let p = f64::from(i) / 200.0;
        let bs = (32.0 * ((p * 256.0 / 0.6 / 32.0).floor() + 1.0)).min(256.0);
        lines.push_str(&format!(
            "{}\n",
            json!({"step": i, "elapsed_seconds": p * 120.0, "tokens": f64::from(i) * 128.0 * bs, "loss": 9.0 * (-p * 2.0).exp() + 2.0, "lr": 1e-3 * (0.25 + p).min(4.0 * (1.0 - p)), "batch_size": bs, "tokens_per_second": 20500.0})
        ));
    }
    std::fs::write(pre.out_dir.join("metrics.jsonl"), lines).unwrap();
    write_json(
        &pre.out_dir,
        "summary.json",
        &json!({
            "arch": "tiny", "parameters": 1_234_567, "budget_seconds": 120.0, "budget_steps": null,
            "wall_seconds": 120.4, "steps": 200, "tokens": 5_000_000, "final_loss": 2.15,
            "device": "cpu", "backend": "flex", "peak_memory_bytes": null, "stopped_by": "budget", "dropout": false
        }),
    );
    records.push(pre);
    let task_entry = |metrics: Value, baseline: Value| {
        json!({
            "metrics": metrics, "epochs": 5, "train_examples": 800, "dev_examples": 200,
            "seconds": 12.5, "overrides": {}, "majority_baseline": baseline
        })
    };
    let cola = task_entry(json!({"matthews": 0.123}), json!({"matthews": 0.0}));
    let sst2 = task_entry(json!({"accuracy": 0.8012}), json!({"accuracy": 0.509}));
    let mnli = task_entry(
        json!({"accuracy_matched": 0.61, "accuracy_mismatched": 0.62}),
        json!({"accuracy_matched": 0.354, "accuracy_mismatched": 0.352}),
    );
    for (task, entry) in [("cola", &cola), ("sst2", &sst2), ("mnli", &mnli)] {
        let r = record(
            &root,
            &format!("glue.{task}"),
            "glue-task",
            json!({}),
            &["pretrain"],
            entry.clone(),
            12.5,
        );
        write_json(&r.out_dir, "summary.json", entry);
        write_json(&r.out_dir, "metrics.json", &entry["metrics"]);
        records.push(r);
    }
    let agg = record(
        &root,
        "glue",
        "glue",
        json!({"tasks": ["cola", "sst2", "mnli"]}),
        &["pretrain"],
        json!({}),
        40.0,
    );
    write_json(
        &agg.out_dir,
        "summary.json",
        &json!({
            "tasks": {"cola": cola, "sst2": sst2, "mnli": mnli},
            "glue_average": 0.5, "glue_average_acc": 0.6, "glue_average_tasks": 4,
            "quick_run": quick,
            "outside_rules": if quick { json!(["max_train_examples = 800 (quick run)"]) } else { json!([]) },
            "fine_tune_seconds": 37.5,
            "hyperparameters": {"lr": 4e-5, "batch_size": 16, "epochs": 5, "scheduler": "cosine-decay"}
        }),
    );
    records.push(agg);
    let pipeline = PipelineInfo {
        name: "sanity <test> & co".to_string(),
        file: "pipelines/sanity.toml".to_string(),
        file_blake3: "ab".repeat(32),
        seed: 0,
        lock: json!({"corpus": {"key": "k1", "output_hash": "h1"}, "pretrain": {"key": "k2", "output_hash": "h2"}}),
        tool_version: "0.1.0".to_string(),
        machine: MachineInfo::detect(),
    };
    Fixture {
        _dir: dir,
        out,
        records,
        pipeline,
    }
}

const SECTIONS: &[(&str, &str)] = &[
    ("rules", "Rules check"),
    ("glue", "GLUE dev results"),
    ("pretraining", "Pretraining"),
    ("schedule", "Learning-rate and batch-size schedule"),
    ("preprocessing", "Preprocessing"),
    ("budget", "Budget account"),
    ("machine", "Device and machine"),
    ("reproduce", "Reproducing this run"),
];

#[test]
fn report_has_every_section_in_markdown_and_html() {
    let f = fixture(false, true);
    let summary = run_report(
        &ReportParams::default(),
        &f.pipeline,
        &f.records,
        &f.out,
        &ProgressBar::hidden(),
    )
    .unwrap();
    let md = std::fs::read_to_string(f.out.join("report.md")).unwrap();
    let html = std::fs::read_to_string(f.out.join("report.html")).unwrap();
    for (id, title) in SECTIONS {
        assert!(
            md.contains(&format!("## {title}")),
            "markdown lacks {title}"
        );
        assert!(
            html.contains(&format!("<section id=\"{id}\">")),
            "html lacks {id}"
        );
        assert!(
            html.contains(&format!("<h2>{title}</h2>")),
            "html lacks {title}"
        );
    }
    // The GLUE table: paper layout, reference rows, ours, majority baselines.
    for needle in [
        "MNLI-m/mm",
        "QQP",
        "QNLI",
        "SST-2",
        "CoLA",
        "STS-B",
        "MRPC",
        "RTE",
        "Avg",
        "83.9/84.1",
        "78.6",
        "84.1/84.6",
        "80.7",
        "61.0/62.0",
        "80.1",
        "12.3",
        "50.0 (4 of 9)",
        "35.4/35.2",
        "majority class",
    ] {
        assert!(md.contains(needle), "markdown lacks {needle}");
        assert!(html.contains(needle), "html lacks {needle}");
    }
    // Preprocessing figures with friendly names, budget account, reproduction.
    for needle in [
        "bytes removed by dedup",
        "120.56 KiB",
        "UNK rate",
        "0.12 %",
        "packed rows",
        "9,000",
        "free (preprocessing)",
        "budgeted: 2 min 00 s of 2 min 00 s",
        "not counted (fine-tuning)",
        "cram run pipelines/sanity.toml",
        &"ab".repeat(32),
        "k2",
        "h2",
    ] {
        assert!(md.contains(needle), "markdown lacks {needle}");
    }
    // Plots: four SVG files linked from Markdown and inlined in HTML.
    assert_eq!(html.matches("<svg").count(), 4);
    for file in [
        "plots/pretrain-loss-tokens.svg",
        "plots/pretrain-loss-time.svg",
        "plots/pretrain-lr.svg",
        "plots/pretrain-batch-size.svg",
    ] {
        assert!(
            md.contains(&format!("]({file})")),
            "markdown does not link {file}"
        );
        assert!(f.out.join(file).is_file());
    }
    // The pipeline name is escaped.
    assert!(html.contains("sanity &lt;test&gt; &amp; co"));
    assert!(!html.contains("<test>"));
    // Rules: quick run fails, the GLUE download is not an ancestor of pretrain.
    let status = |prefix: &str| {
        summary
            .rules
            .iter()
            .find(|r| r.rule.starts_with(prefix))
            .unwrap()
            .status
    };
    assert_eq!(status("Pretraining within"), RuleStatus::Pass);
    assert_eq!(status("No pretrained"), RuleStatus::Pass);
    assert_eq!(status("GLUE fine-tuning"), RuleStatus::Pass);
    assert_eq!(status("No downstream"), RuleStatus::Pass);
    assert_eq!(status("Full-size"), RuleStatus::Fail);
    assert!(!summary.comparable_to_paper);
    assert!(md.contains("not comparable to the paper"));
    assert_eq!(summary.glue_average, Some(50.0));
    assert_eq!(summary.final_loss, Some(2.15));
    assert_eq!(summary.glue_tasks, vec!["cola", "mnli", "sst2"]);
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(f.out.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(written["pipeline"], "sanity <test> & co");
}

#[test]
fn rules_catch_glue_data_in_pretraining_commands_and_overrides() {
    let mut f = fixture(true, false);
    // A user command stage and per-task overrides with too many epochs.
    let cmd = record(
        &f.out.parent().unwrap().join("cache"),
        "extra",
        "command",
        json!({"run": "python x.py"}),
        &[],
        json!({"rows": 3}),
        1.0,
    );
    f.records.insert(0, cmd);
    let agg = f
        .records
        .iter()
        .find(|r| r.kind == "glue")
        .unwrap()
        .out_dir
        .clone();
    let mut s: Value =
        serde_json::from_str(&std::fs::read_to_string(agg.join("summary.json")).unwrap()).unwrap();
    s["tasks"]["cola"]["epochs"] = json!(10);
    s["tasks"]["cola"]["overrides"] = json!({"lr": 1e-4});
    write_json(&agg, "summary.json", &s);
    // Pretraining ran well past its budget, on two devices.
    let pre = f
        .records
        .iter()
        .find(|r| r.kind == "pretrain")
        .unwrap()
        .out_dir
        .clone();
    let mut p: Value =
        serde_json::from_str(&std::fs::read_to_string(pre.join("summary.json")).unwrap()).unwrap();
    p["wall_seconds"] = json!(200.0);
    p["device"] = json!("cuda:0,cuda:1");
    write_json(&pre, "summary.json", &p);
    let summary = run_report(
        &ReportParams::default(),
        &f.pipeline,
        &f.records,
        &f.out,
        &ProgressBar::hidden(),
    )
    .unwrap();
    let rule = |prefix: &str| {
        summary
            .rules
            .iter()
            .find(|r| r.rule.starts_with(prefix))
            .unwrap()
            .clone()
    };
    let downstream = rule("No downstream");
    assert_eq!(downstream.status, RuleStatus::Fail, "{}", downstream.reason);
    assert!(downstream.reason.contains("glue_data"));
    let weights = rule("No pretrained");
    assert_eq!(weights.status, RuleStatus::Warn);
    assert!(weights.reason.contains("extra"));
    let glue = rule("GLUE fine-tuning");
    assert_eq!(glue.status, RuleStatus::Fail);
    assert!(glue.reason.contains("10 epochs") && glue.reason.contains("overrides"));
    assert_eq!(rule("Full-size").status, RuleStatus::Pass);
    let budget = rule("Pretraining within");
    assert_eq!(budget.status, RuleStatus::Fail);
    assert!(
        budget.reason.contains("past its 2 min 00 s budget")
            && budget.reason.contains("several devices"),
        "{}",
        budget.reason
    );
    assert!(!summary.comparable_to_paper);
}

#[test]
fn missing_outputs_show_as_not_available() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    // A pretrain stage with nothing on disk, a glue task without aggregate.
    let mut records = vec![record(
        &root,
        "pretrain",
        "pretrain",
        json!({}),
        &[],
        json!({}),
        1.0,
    )];
    let t = record(
        &root,
        "glue.rte",
        "glue-task",
        json!({}),
        &["pretrain"],
        json!({}),
        2.0,
    );
    write_json(&t.out_dir, "metrics.json", &json!({"accuracy": 0.55}));
    records.push(t);
    let pipeline = PipelineInfo {
        name: "bare".into(),
        file: "bare.toml".into(),
        file_blake3: String::new(),
        seed: 1,
        lock: Value::Null,
        tool_version: "0.1.0".into(),
        machine: MachineInfo::default(),
    };
    let params = ReportParams {
        reference_rows: false,
        ..ReportParams::default()
    };
    let summary = run_report(&params, &pipeline, &records, &out, &ProgressBar::hidden()).unwrap();
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("n/a"));
    assert!(md.contains("No training metrics were recorded"));
    assert!(!md.contains("83.9/84.1"));
    assert!(md.contains("55.0"));
    assert_eq!(summary.glue_tasks, vec!["rte"]);
    assert!((summary.glue_average.unwrap() - 55.0).abs() < 1e-9);
}

#[test]
fn damaged_metrics_name_file_and_line() {
    let f = fixture(false, false);
    let pre = f.records.iter().find(|r| r.kind == "pretrain").unwrap();
    std::fs::write(pre.out_dir.join("metrics.jsonl"), "{\"step\": 1}\n{oops\n").unwrap();
    let err = run_report(
        &ReportParams::default(),
        &f.pipeline,
        &f.records,
        &f.out,
        &ProgressBar::hidden(),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("metrics.jsonl:2"), "{msg}");
}

#[test]
fn params_reject_unknown_keys_and_fill_defaults() {
    let p: ReportParams = serde_json::from_value(json!({"title": "T"})).unwrap();
    assert_eq!(p.title, "T");
    assert!(p.reference_rows);
    assert!(serde_json::from_value::<ReportParams>(json!({"titel": "T"})).is_err());
    let schema = serde_json::to_value(schemars::schema_for!(ReportParams)).unwrap();
    for (name, prop) in schema["properties"].as_object().unwrap() {
        assert!(prop.get("description").is_some(), "{name} has no doc");
    }
}

#[test]
fn html_is_well_formed_xhtml() {
    let f = fixture(false, true);
    run_report(
        &ReportParams::default(),
        &f.pipeline,
        &f.records,
        &f.out,
        &ProgressBar::hidden(),
    )
    .unwrap();
    let html = std::fs::read_to_string(f.out.join("report.html")).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    let mut reader = quick_xml::Reader::from_str(&html);
    reader.config_mut().check_end_names = true;
    let mut depth = 0i64;
    let mut tables = 0;
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Start(e)) => {
                depth += 1;
                if e.name().as_ref() == b"table" {
                    tables += 1;
                }
            }
            Ok(quick_xml::events::Event::End(_)) => depth -= 1,
            Ok(quick_xml::events::Event::Text(e)) => {
                e.decode().expect("text decodes");
            }
            Ok(quick_xml::events::Event::Eof) => break,
            Ok(_) => {}
            Err(e) => panic!(
                "report.html is not well-formed at byte {}: {e}",
                reader.error_position()
            ),
        }
    }
    assert_eq!(depth, 0, "unbalanced elements");
    assert!(tables >= 8);
}

/// The Chromium binary on PATH, if any.
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|p| p.is_file())
}

#[test]
fn html_renders_in_headless_chromium() {
    let Some(chrome) = chromium() else {
        if std::env::var("CRAM_REQUIRE_CHROMIUM").as_deref() == Ok("1") {
            panic!("CRAM_REQUIRE_CHROMIUM=1 but neither chromium nor chromium-browser is on PATH");
        }
        println!("SKIP html_renders_in_headless_chromium: chromium is not on PATH");
        return;
    };
    let f = fixture(false, true);
    run_report(
        &ReportParams::default(),
        &f.pipeline,
        &f.records,
        &f.out,
        &ProgressBar::hidden(),
    )
    .unwrap();
    let page = format!(
        "file://{}",
        f.out.join("report.html").canonicalize().unwrap().display()
    );
    let profile = tempfile::tempdir().unwrap();
    let shot = profile.path().join("shot.png");
    let base_args = |cmd: &mut Command| {
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!(
            "--user-data-dir={}",
            profile.path().join("profile").display()
        ));
    };
    let mut dump = Command::new(&chrome);
    base_args(&mut dump);
    let out = dump
        .arg("--dump-dom")
        .arg(&page)
        .output()
        .expect("chromium runs");
    let dom = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chromium --dump-dom failed: {stderr}");
    assert!(dom.contains("<table"), "dumped DOM has no table:\n{stderr}");
    assert!(dom.contains("GLUE dev results"));
    assert!(dom.contains("<svg"));
    for bad in [
        "Uncaught",
        "SyntaxError",
        "ERR_FILE_NOT_FOUND",
        "This page contains the following errors",
    ] {
        assert!(
            !stderr.contains(bad) && !dom.contains(bad),
            "page error {bad}: {stderr}"
        );
    }

    let mut cmd = Command::new(&chrome);
    base_args(&mut cmd);
    let out = cmd
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--window-size=1200,2000")
        .arg(&page)
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium --screenshot failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let pixels = &buf[..info.buffer_size()];
    let px = info.color_type.samples();
    let first = &pixels[..px];
    let differing = pixels.chunks(px).filter(|p| p != &first).count();
    assert!(
        differing > 1000,
        "the screenshot is blank ({differing} differing pixels)"
    );
    if let Ok(keep) = std::env::var("CRAM_REPORT_SCREENSHOT") {
        std::fs::copy(&shot, &keep).unwrap();
        std::fs::copy(f.out.join("report.html"), format!("{keep}.html")).unwrap();
        std::fs::copy(f.out.join("report.md"), format!("{keep}.md")).unwrap();
    }
}

/// Writes the fixture's report with `params`.
fn report(f: &Fixture, params: &ReportParams) -> cram_report::ReportSummary {
    run_report(
        params,
        &f.pipeline,
        &f.records,
        &f.out,
        &ProgressBar::hidden(),
    )
    .unwrap()
}

#[test]
fn passes_over_the_data_and_training_warnings_are_reported() {
    let f = fixture(false, false);
    let summary = report(&f, &ReportParams::default());
    assert!(summary.warnings.is_empty(), "{:?}", summary.warnings);

    // The same run, stopped by `max_epochs` after reading its data 6.2 times.
    let f = fixture(false, false);
    let pre = f.records.iter().find(|r| r.kind == "pretrain").unwrap();
    let path = pre.out_dir.join("summary.json");
    let mut stopped: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for (k, v) in [
        ("wall_seconds", json!(80.0)),
        ("steps", json!(150)),
        ("stopped_by", json!("data")),
        ("epochs", json!(6.2)),
        ("rows", json!(1000)),
        ("max_epochs", json!(6.2)),
        ("final_lr", json!(6e-4)),
        ("peak_lr", json!(1e-3)),
    ] {
        stopped[k] = v;
    }
    write_json(&pre.out_dir, "summary.json", &stopped);
    let summary = report(&f, &ReportParams::default());
    assert_eq!(summary.warnings.len(), 2, "{:?}", summary.warnings);
    assert!(summary.warnings[0].contains("max_epochs = 6.2"));
    assert!(summary.warnings[0].contains("did not finish"));
    assert!(summary.warnings[1].contains("6.2 times"));
    let md = std::fs::read_to_string(f.out.join("report.md")).unwrap();
    assert!(md.contains("6.20 (of 1,000 rows)"), "passes shown");
    assert!(
        md.contains("60.0 % of the peak"),
        "last learning rate shown"
    );
    assert!(md.contains("**Warning: **") || md.contains("**Warning:**"));
    assert!(md.contains("2 pretraining warnings"));
    let html = std::fs::read_to_string(f.out.join("report.html")).unwrap();
    assert!(html.contains("read its data 6.2 times"));

    // The threshold is the report's parameter.
    let params = ReportParams {
        repeat_warning_epochs: 10.0,
        ..ReportParams::default()
    };
    let f2 = fixture(false, false);
    let pre2 = f2.records.iter().find(|r| r.kind == "pretrain").unwrap();
    std::fs::copy(
        pre.out_dir.join("summary.json"),
        pre2.out_dir.join("summary.json"),
    )
    .unwrap();
    let summary = report(&f2, &params);
    assert_eq!(summary.warnings.len(), 1, "{:?}", summary.warnings);
}
