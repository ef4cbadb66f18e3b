//! The PyTorch side of the GLUE comparison does the work cram's `glue` stage
//! does: `scripts/bench/glue_finetune.py`, given the run's tokenizer and the
//! mirror's GLUE files, makes as many updates per task as the stage, over as
//! many training examples, and cuts as many of them at 128 tokens (the same
//! BERT template and longest-first truncation). A script that drifted from
//! the stage would time other work (docs/performance.md's five-task table).
//!
//! The GLUE data come from the real RTE and STS-B files of
//! `../shared/hf-mirror`, served by `cram serve-hub` on loopback.

mod common;

use std::path::Path;

use common::{Hub, Project, python, read_json};

/// A small model on a synthetic corpus, then RTE's whole train set
/// (long sentence pairs: many are cut at 128 tokens) and 48 examples of
/// STS-B's (the regression path), one epoch each.
const PIPELINE: &str = r#"
name = "bench-scripts"
seed = 1

[stages.corpus]
kind = "synthetic"
documents = 600

[stages.tokenizer]
kind = "tokenizer"
inputs = ["corpus"]
vocab_size = 600

[stages.tokenize]
kind = "pack"
inputs = ["corpus", "tokenizer"]
seq_length = 32

[stages.pretrain]
kind = "pretrain"
inputs = ["tokenize"]
arch = "tiny"
budget_steps = 2
micro_batch = 16
batch_size = 16
device = "cpu"

[stages.glue_data]
kind = "download"
source = "hf://datasets/nyu-mll/glue/{rte,stsb}/*.parquet"
mode = "files"

[stages.rte]
kind = "glue"
inputs = ["pretrain", "glue_data"]
tasks = ["rte"]
epochs = 1
device = "cpu"

[stages.stsb]
kind = "glue"
inputs = ["pretrain", "glue_data"]
tasks = ["stsb"]
epochs = 1
max_train_examples = 48
device = "cpu"
"#;

/// The cached unit summary of `task` in the project's glue stage `stage`.
fn unit_summary(p: &Project, stage: &str, task: &str) -> serde_json::Value {
    let entries = p.dir.path().join("cache/entries");
    let glue = read_json(&entries.join(&p.pins()[stage].1).join("manifest.json"));
    let unit = glue["units"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == format!("{stage}.{task}").as_str())
        .unwrap_or_else(|| panic!("no unit {task} in {glue}"));
    read_json(
        &entries
            .join(unit["key"].as_str().unwrap())
            .join("out/summary.json"),
    )
}

#[test]
fn glue_finetune_script_does_the_stages_work() {
    let hub = Hub::start();
    let p = Project::new(&hub, PIPELINE);
    p.run_ok(&["run", "p.toml"], 2);
    let tokenizer = p
        .dir
        .path()
        .join("cache/entries")
        .join(&p.pins()["tokenizer"].1)
        .join("out/tokenizer.json");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bench/glue_finetune.py");
    let glue_dir = common::mirror().join("datasets/nyu-mll/glue/resolve/main");
    let json = p.dir.path().join("torch.json");
    // Runs the script as `python3 SCRIPT ARGS` would, on one task for one
    // epoch; its JSON (`None`: Python with torch is missing, a skip).
    let torch_run = |task: &str, extra: &[&str]| -> Option<serde_json::Value> {
        let run = "import runpy, sys; sys.argv = sys.argv[1:]; \
                   runpy.run_path(sys.argv[0], run_name='__main__')";
        let mut args = vec![
            script.to_str().unwrap(),
            "--glue-dir",
            glue_dir.to_str().unwrap(),
            "--tokenizer",
            tokenizer.to_str().unwrap(),
            "--tasks",
            task,
            "--epochs",
            "1",
            "--threads",
            "2",
            "--json",
            json.to_str().unwrap(),
        ];
        args.extend(extra);
        python("torch, tokenizers, pyarrow", run, &args)?;
        Some(read_json(&json))
    };
    let Some(torch) = torch_run("rte", &[]) else {
        return;
    };
    let rte = &torch["tasks"][0];
    let cram = unit_summary(&p, "rte", "rte");
    assert_eq!(rte["task"], "rte");
    assert_eq!(
        rte["train_examples"], cram["train_examples"],
        "{rte} vs {cram}"
    );
    assert_eq!(rte["updates"], cram["steps"], "{rte} vs {cram}");
    let cut = cram["train_truncated"].as_u64().unwrap();
    assert!(cut > 0, "RTE has pairs longer than 128 tokens: {cram}");
    assert_eq!(
        rte["train_truncated"], cram["train_truncated"],
        "{rte} vs {cram}"
    );

    // STS-B, a subset: the regression head and loss run, over as many updates.
    let torch = torch_run("stsb", &["--max-train-examples", "48"]).expect("python ran before");
    let stsb = &torch["tasks"][0];
    let cram = unit_summary(&p, "stsb", "stsb");
    assert_eq!(stsb["train_examples"].as_u64(), Some(48));
    assert_eq!(
        stsb["train_examples"], cram["train_examples"],
        "{stsb} vs {cram}"
    );
    assert_eq!(stsb["updates"], cram["steps"], "{stsb} vs {cram}");
    assert!(stsb["last_loss"].as_f64().unwrap().is_finite(), "{stsb}");
}
