//! `cram export`, end to end: cached models written as Hugging Face
//! directories load in `transformers` (`AutoModelForMaskedLM`,
//! `AutoModelForSequenceClassification`, `trust_remote_code=True`) and give
//! cram's logits within 1e-5; the fine-tuned RTE and STS-B models, fed by
//! `AutoTokenizer`, predict on the real dev rows what cram's GLUE stage wrote.
//!
//! The GLUE data are the real RTE and STS-B files of `../shared/hf-mirror`,
//! served by `cram serve-hub` and downloaded by the pipeline.

mod common;

use std::path::Path;

use common::{Hub, Project, python, read_json, text};

/// Two pretraining runs (the crammed-bert layout and a small original-BERT
/// layout: post-norm, learned positions, token types, biases, head transform,
/// plain GELU, no final norm) and GLUE on a classification and a regression
/// task. Both start from weights five times the usual scale (`init_std`):
/// after a few steps from the usual 0.02 the activations are so small that
/// a wrong op (the tanh GELU for the erf one, say) moves the logits by less
/// than 1e-6; at 0.1 it moves them by 2.5e-4 to 1e-3, while the right model
/// stays within 5e-6.
const PIPELINE: &str = r#"
name = "export"
seed = 5

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
budget_steps = 8
micro_batch = 16
batch_size = 16
device = "cpu"

[stages.pretrain.model]
init_std = 0.1

[stages.pretrain_bert]
kind = "pretrain"
inputs = ["tokenize"]
arch = "bert-original"
budget_steps = 4
micro_batch = 16
batch_size = 16
device = "cpu"

[stages.pretrain_bert.model]
hidden_size = 32
num_layers = 2
num_heads = 2
intermed_size = 64
max_seq_length = 64
head_dim = 32
init_std = 0.1

[stages.glue_data]
kind = "download"
source = "hf://datasets/nyu-mll/glue/{rte,stsb}/*.parquet"
mode = "files"

[stages.glue]
kind = "glue"
inputs = ["pretrain", "glue_data"]
tasks = ["rte", "stsb"]
epochs = 1
batch_size = 16
max_train_examples = 96
max_dev_examples = 48
device = "cpu"
"#;

/// Loads each exported directory in `transformers`, compares it with cram's
/// reference logits, and for GLUE tasks predicts the dev rows cram predicted.
const CHECK: &str = r#"
import json, sys
import pyarrow.parquet as pq
import torch
from safetensors.torch import load_file
from transformers import (AutoModel, AutoModelForMaskedLM,
                          AutoModelForSequenceClassification, AutoTokenizer)

out = {}
data = sys.argv[1]
for spec in sys.argv[2:]:
    d, kind, task = spec.split(":")
    auto = AutoModelForMaskedLM if kind == "mlm" else AutoModelForSequenceClassification
    model = auto.from_pretrained(d, trust_remote_code=True).eval()
    ref = load_file(d + "/cram_reference.safetensors")
    with torch.no_grad():
        got = model(input_ids=ref["input_ids"], attention_mask=ref["attention_mask"]).logits
    r = {
        "class": type(model).__name__,
        "shape": list(got.shape),
        "ref_shape": list(ref["logits"].shape),
        "max_abs_diff": (got - ref["logits"]).abs().max().item(),
        "scale": ref["logits"].abs().max().item(),
        "labels": {str(k): v for k, v in model.config.id2label.items()},
    }
    if task:
        tok = AutoTokenizer.from_pretrained(d, trust_remote_code=True)
        preds = pq.read_table(d + "/../preds-" + task + ".parquet").to_pylist()
        dev = pq.read_table(f"{data}/{task}/validation-00000-of-00001.parquet").to_pylist()
        by_idx = {row["idx"]: row for row in dev}
        agree, bad, rows, worst = 0, 0, 0, 0.0
        for p in preds:
            row = by_idx[p["idx"]]
            enc = tok(row["sentence1"], row["sentence2"], truncation=True, return_tensors="pt")
            with torch.no_grad():
                logits = model(**enc).logits[0]
            rows += 1
            if kind == "regression":
                worst = max(worst, abs(logits[0].item() - p["prediction"]))
            else:
                same = int(logits.argmax().item()) == p["prediction"]
                agree += same
                # A row whose two logits nearly tie may flip on rounding.
                bad += not same and abs((logits[0] - logits[1]).item()) >= 1e-4
        r.update(rows=rows, agree=agree, bad=bad, worst=worst)
    if kind == "mlm":
        base = AutoModel.from_pretrained(d, trust_remote_code=True).eval()
        with torch.no_grad():
            h = base(input_ids=ref["input_ids"], attention_mask=ref["attention_mask"]).last_hidden_state
        r["hidden_shape"] = list(h.shape)
    out[d] = r
print(json.dumps(out))
"#;

#[test]
fn exported_models_load_in_transformers_and_give_crams_logits_and_predictions() {
    let hub = Hub::start();
    let p = Project::new(&hub, PIPELINE);
    p.run_ok(&["run", "p.toml"], 2);
    let root = p.dir.path();
    let exports = [
        ("pretrain", "mlm", "mlm", ""),
        ("pretrain_bert", "bert", "mlm", ""),
        ("glue.rte", "rte", "classification", "rte"),
        ("glue.stsb", "stsb", "regression", "stsb"),
    ];
    for (stage, dir, _, _) in exports {
        let out = p.run_ok(&["export", "p.toml", stage, dir], 1);
        assert!(
            text(&out).contains(&format!("exported {stage}")),
            "{}",
            text(&out)
        );
        let d = root.join(dir);
        for f in [
            "config.json",
            "configuration_cram.py",
            "modeling_cram.py",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
            "cram_reference.safetensors",
            "README.md",
        ] {
            assert!(d.join(f).is_file(), "{stage}: no {f}");
        }
        let config = read_json(&d.join("config.json"));
        assert_eq!(config["model_type"], "cram-bert");
        assert_eq!(
            config["auto_map"]["AutoModelForSequenceClassification"],
            "modeling_cram.CramForSequenceClassification"
        );
        assert_eq!(config["cram"]["stage"], stage);
    }
    let rte = read_json(&root.join("rte/config.json"));
    assert_eq!(rte["architectures"][0], "CramForSequenceClassification");
    assert_eq!(rte["id2label"]["1"], "not_entailment");
    assert_eq!(rte["problem_type"], "single_label_classification");
    let stsb = read_json(&root.join("stsb/config.json"));
    assert_eq!(stsb["problem_type"], "regression");
    let bert = read_json(&root.join("bert/config.json"));
    assert_eq!(bert["norm_scheme"], "post");
    assert_eq!(bert["architectures"][0], "CramForMaskedLM");

    // The GLUE stage's own predictions, beside the exports, for the check.
    let glue = read_json(&p.dir.path().join(format!(
        "cache/entries/{}/manifest.json",
        p.pins()["glue"].1
    )));
    for unit in glue["units"].as_array().unwrap() {
        let task = unit["name"].as_str().unwrap().trim_start_matches("glue.");
        let entry = root
            .join("cache/entries")
            .join(unit["key"].as_str().unwrap());
        std::fs::copy(
            entry.join("out/predictions.parquet"),
            root.join(format!("preds-{task}.parquet")),
        )
        .unwrap();
    }

    // Refusals: a glue stage names its tasks; a non-model stage says so; a
    // full directory needs --force.
    let out = p.cram(&["export", "p.toml", "glue", "x"], 1);
    assert!(!out.status.success());
    assert!(text(&out).contains("glue.rte, glue.stsb"), "{}", text(&out));
    let out = p.cram(&["export", "p.toml", "glue.cola", "x"], 1);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("no task unit `glue.cola`"),
        "{}",
        text(&out)
    );
    let out = p.cram(&["export", "p.toml", "tokenize", "x"], 1);
    assert!(
        text(&out).contains("does not make a model"),
        "{}",
        text(&out)
    );
    let out = p.cram(&["export", "p.toml", "pretrain", "rte"], 1);
    assert!(text(&out).contains("pass --force"), "{}", text(&out));
    assert_eq!(
        read_json(&root.join("rte/config.json"))["cram"]["stage"],
        "glue.rte",
        "a refused export leaves the directory alone"
    );
    p.run_ok(&["export", "p.toml", "glue.rte", "rte", "--force"], 1);
    assert!(!root.join("x").exists());

    // The dev files cram read: the download stage's output.
    let data = root
        .join("cache/entries")
        .join(&p.pins()["glue_data"].1)
        .join("out");
    let mut args = vec![data.display().to_string()];
    for (_, dir, kind, task) in exports {
        args.push(format!("{}:{kind}:{task}", root.join(dir).display()));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let Some(out) = python("torch, transformers, safetensors, pyarrow", CHECK, &args) else {
        return;
    };
    let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    println!("transformers against cram: {v:#}");
    for (_, dir, kind, task) in exports {
        let r = &v[root.join(dir).display().to_string()];
        let want = if kind == "mlm" {
            "CramForMaskedLM"
        } else {
            "CramForSequenceClassification"
        };
        assert_eq!(r["class"], want, "{dir}: {r}");
        assert_eq!(r["shape"], r["ref_shape"], "{dir}: {r}");
        let diff = r["max_abs_diff"].as_f64().unwrap();
        assert!(
            diff < 1e-5,
            "{dir}: transformers' logits differ by {diff}: {r}"
        );
        assert!(
            r["scale"].as_f64().unwrap() > 1e-3,
            "{dir}: trivial logits {r}"
        );
        if kind == "mlm" {
            assert_eq!(r["hidden_shape"][2], if dir == "bert" { 32 } else { 128 });
        }
        if !task.is_empty() {
            let rows = r["rows"].as_u64().unwrap();
            assert_eq!(rows, 48, "{dir}: {r}");
            if kind == "regression" {
                let worst = r["worst"].as_f64().unwrap();
                assert!(worst < 1e-4, "{dir}: scores differ by {worst}: {r}");
            } else {
                assert_eq!(r["bad"], 0, "{dir}: predictions differ: {r}");
                assert!(r["agree"].as_u64().unwrap() + 2 >= rows, "{dir}: {r}");
            }
        }
    }
    assert_eq!(
        v[root.join("rte").display().to_string()]["labels"]["0"],
        "entailment"
    );
}

/// An export of a stage that is not cached says what to run first.
#[test]
fn export_of_an_uncached_stage_says_what_to_run() {
    let hub = Hub::start();
    let p = Project::new(&hub, PIPELINE);
    let out = p.cram(&["export", "p.toml", "pretrain", "out"], 1);
    assert!(!out.status.success());
    let t = text(&out);
    assert!(
        t.contains("is not cached") && t.contains("--until pretrain"),
        "{t}"
    );
    assert!(!Path::new(&p.dir.path().join("out")).exists());
}

/// The exported modeling code against the independent PyTorch implementation's
/// test vectors (`../shared/vectors`): the same logits, MLM and classification,
/// with and without a padding mask.
#[test]
fn the_modeling_code_matches_the_shared_pytorch_test_vectors() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let vectors = root.join("../shared/vectors");
    assert!(
        vectors.join("tiny.safetensors").is_file(),
        "{} is missing: this test reads the shared test vectors",
        vectors.display()
    );
    let pkg = tempfile::tempdir().unwrap();
    let dir = pkg.path().join("cram_hf");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("__init__.py"), "").unwrap();
    for f in ["configuration_cram.py", "modeling_cram.py"] {
        std::fs::copy(root.join("stages/model/hf").join(f), dir.join(f)).unwrap();
    }
    let script = r#"
import json, sys
import torch
from safetensors import safe_open
sys.path.insert(0, sys.argv[1])
from cram_hf.configuration_cram import CramConfig
from cram_hf.modeling_cram import CramForMaskedLM, CramForSequenceClassification
out = {}
for name, cls in [("tiny", CramForMaskedLM), ("tiny_cls", CramForSequenceClassification)]:
    f = safe_open(f"{sys.argv[2]}/{name}.safetensors", "pt")
    config = json.loads(f.metadata()["config"])
    classes = config.pop("num_labels")
    model = cls(CramConfig(**config, num_labels=classes or 2)).eval()
    weights = {k: f.get_tensor(k) for k in f.keys() if not k.split(".")[0] in ("input", "expected", "grad", "step1")}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    ids, mask = f.get_tensor("input.ids"), f.get_tensor("input.attention_mask")
    r = {"missing": missing, "unexpected": unexpected}
    with torch.no_grad():
        if cls is CramForMaskedLM:
            logits = model(input_ids=ids).logits.reshape(-1, config["vocab_size"])
            r["logits"] = (logits - f.get_tensor("expected.logits")).abs().max().item()
            hidden = model.encoder(ids, mask)
            want = f.get_tensor("expected.encoder_out_masked").reshape(hidden.shape)
            r["encoder_masked"] = (hidden - want).abs().max().item()
        else:
            logits = model(input_ids=ids, attention_mask=mask).logits
            r["logits"] = (logits - f.get_tensor("expected.cls_logits")).abs().max().item()
    out[name] = r
print(json.dumps(out))
"#;
    let args = [pkg.path().to_str().unwrap(), vectors.to_str().unwrap()];
    let Some(out) = python("torch, transformers, safetensors", script, &args) else {
        return;
    };
    let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    println!("modeling_cram.py against the test vectors: {v}");
    for name in ["tiny", "tiny_cls"] {
        let r = &v[name];
        assert_eq!(r["missing"], serde_json::json!([]), "{name}: {r}");
        assert_eq!(r["unexpected"], serde_json::json!([]), "{name}: {r}");
        for k in ["logits", "encoder_masked"] {
            if let Some(d) = r[k].as_f64() {
                assert!(d < 1e-5, "{name} {k}: off by {d}: {r}");
            }
        }
    }
    assert!(v["tiny"]["encoder_masked"].is_f64());
}
