//! End-to-end tests of the GLUE stage on tiny models and small data in the hub schema.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Float32Type, Int64Type, Schema};
use cram_glue::data::{Label, load_split};
use cram_glue::encode::GlueTokenizer;
use cram_glue::metrics::Predictions;
use cram_glue::predict::predict;
use cram_glue::synthetic::synthetic_vocabulary;
use cram_glue::{
    GlueParams, GlueTask, SyntheticGlueParams, TaskSummary, aggregate, run_task,
    write_synthetic_glue,
};
use cram_model::{MlmModel, ModelConfig, select_device};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// A WordLevel `tokenizer.json` over the synthetic words with the pipeline's special ids
/// ([PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4) and the BERT template post-processor.
fn write_tokenizer(path: &Path) -> usize {
    let specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
    let mut vocab = serde_json::Map::new();
    for (i, t) in specials.iter().enumerate() {
        vocab.insert(t.to_string(), i.into());
    }
    for w in synthetic_vocabulary() {
        let id = vocab.len();
        vocab.insert(w, id.into());
    }
    let added: Vec<_> = specials
        .iter()
        .enumerate()
        .map(|(i, t)| {
            serde_json::json!({"id": i, "content": t, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let special = |s: &str| serde_json::json!({"SpecialToken": {"id": s, "type_id": 0}});
    let seq = |s: &str, t: u32| serde_json::json!({"Sequence": {"id": s, "type_id": t}});
    let n = vocab.len();
    let json = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [special("[CLS]"), seq("A", 0), special("[SEP]")],
            "pair": [special("[CLS]"), seq("A", 0), special("[SEP]"), seq("B", 1),
                     {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}
            }
        },
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
    });
    std::fs::write(path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    n
}

fn tiny_config(vocab: usize) -> ModelConfig {
    ModelConfig {
        vocab_size: vocab.next_multiple_of(8),
        hidden_size: 64,
        num_layers: 2,
        num_heads: 2,
        intermed_size: 128,
        max_seq_length: 128,
        head_dim: 64,
        ..ModelConfig::tiny()
    }
}

/// A checkpoint directory as the pretrain stage writes it: a freshly initialised tiny MLM
/// model saved through cram-model, its config and the tokenizer.
fn write_checkpoint(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let vocab = write_tokenizer(&dir.join("tokenizer.json"));
    let config = tiny_config(vocab);
    let device = select_device("cpu").unwrap();
    let model = MlmModel::init(&config, 3, &device).unwrap();
    cram_model::save_mlm(&model, &config, &dir.join("model.safetensors")).unwrap();
    cram_model::write_config_json(&config, &dir.join("config.json")).unwrap();
}

fn read_predictions(path: &Path) -> (Vec<i64>, RecordBatch) {
    let file = File::open(path).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    let batch = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    let idx = batch
        .column_by_name("idx")
        .unwrap()
        .as_primitive::<Int64Type>();
    (idx.values().to_vec(), batch)
}

fn quick_params(task: GlueTask) -> GlueParams {
    GlueParams {
        tasks: vec![task],
        // Higher than GLUE_sane's 4e-5: the encoder here is random, not pretrained.
        lr: 1e-3,
        epochs: 4,
        device: "cpu".into(),
        eval_batch_size: 64,
        ..GlueParams::default()
    }
}

#[test]
fn tiny_model_learns_synthetic_sst2_and_its_checkpoint_reproduces_predictions() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("ckpt");
    write_checkpoint(&ckpt);
    let data = tmp.path().join("glue");
    let synth = SyntheticGlueParams {
        train_size: 384,
        dev_size: 128,
        tasks: vec![GlueTask::Sst2, GlueTask::Stsb],
    };
    write_synthetic_glue(&synth, 0, &data).unwrap();

    let params = quick_params(GlueTask::Sst2);
    let out = tmp.path().join("sst2");
    std::fs::create_dir_all(&out).unwrap();
    let bar = indicatif::ProgressBar::hidden();
    let summary = run_task(&params, GlueTask::Sst2, &ckpt, &data, 0, &out, &bar).unwrap();
    let acc = summary.metrics["accuracy"];
    assert!(
        acc >= 0.95,
        "dev accuracy {acc} after {} epochs: {summary:#?}",
        summary.epochs
    );
    assert_eq!(summary.train_examples, 384);
    assert_eq!(summary.dev_examples, 128);
    assert_eq!(summary.steps, 4 * 384 / 16);
    assert!(summary.quick_run, "4 epochs is a quick run");
    let base = summary.majority_baseline["accuracy"];
    assert!((0.3..0.7).contains(&base), "majority baseline {base}");
    for f in [
        "metrics.json",
        "epochs.jsonl",
        "predictions.parquet",
        "model.safetensors",
        "tokenizer.json",
        "config.json",
        "summary.json",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let epochs = std::fs::read_to_string(out.join("epochs.jsonl")).unwrap();
    assert_eq!(epochs.lines().count(), 4);
    let last: serde_json::Value = serde_json::from_str(epochs.lines().last().unwrap()).unwrap();
    assert_eq!(last["dev"]["accuracy"].as_f64().unwrap(), acc);
    let first: serde_json::Value = serde_json::from_str(epochs.lines().next().unwrap()).unwrap();
    assert!(last["train_loss"].as_f64().unwrap() < first["train_loss"].as_f64().unwrap());

    // The prediction file recomputes the score and matches the dev file's idx and labels.
    let (idx, batch) = read_predictions(&out.join("predictions.parquet"));
    let dev = load_split(&data, GlueTask::Sst2, "validation").unwrap();
    assert_eq!(idx, dev.examples.iter().map(|e| e.idx).collect::<Vec<_>>());
    let pred: Vec<i64> = batch
        .column_by_name("prediction")
        .unwrap()
        .as_primitive::<Int64Type>()
        .values()
        .to_vec();
    let gold: Vec<i64> = batch
        .column_by_name("label")
        .unwrap()
        .as_primitive::<Int64Type>()
        .values()
        .to_vec();
    let hits = pred.iter().zip(&gold).filter(|(p, g)| p == g).count();
    assert_eq!(hits as f64 / gold.len() as f64, acc);

    // The saved classification checkpoint (contract naming, kind classification) reloads and
    // gives the same predictions.
    let file = cram_model::TensorFile::open(&out.join("model.safetensors")).unwrap();
    file.check_kind("classification").unwrap();
    assert!(file.names().iter().any(|n| n == "head.weight"));
    assert!(file.names().iter().any(|n| n == "pooler.weight"));
    let device = select_device("cpu").unwrap();
    let (model, config) =
        cram_model::load_classification(&out.join("model.safetensors"), &device).unwrap();
    assert_eq!(config.num_labels, 2);
    let tokenizer = GlueTokenizer::from_file(&out.join("tokenizer.json"), 128).unwrap();
    let encoded = tokenizer.encode(&dev.examples).unwrap();
    let Predictions::Classes { predicted, .. } = predict(
        &model,
        GlueTask::Sst2,
        &encoded.ids,
        0,
        32,
        &device,
        &dev.examples,
    ) else {
        panic!("classes expected")
    };
    assert_eq!(
        predicted.iter().map(|&p| p as i64).collect::<Vec<_>>(),
        pred
    );

    // STS-B: a regression head, float predictions; dropout off (gradients must still flow).
    let stsb_params = GlueParams {
        epochs: 2,
        dropout: false,
        max_train_examples: Some(96),
        ..quick_params(GlueTask::Stsb)
    };
    let stsb_out = tmp.path().join("stsb");
    let stsb = run_task(
        &stsb_params,
        GlueTask::Stsb,
        &ckpt,
        &data,
        0,
        &stsb_out,
        &bar,
    )
    .unwrap();
    assert_eq!(stsb.train_examples, 96);
    let epochs = std::fs::read_to_string(stsb_out.join("epochs.jsonl")).unwrap();
    let losses: Vec<f64> = epochs
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["train_loss"]
                .as_f64()
                .unwrap()
        })
        .collect();
    assert!(
        losses[1] < losses[0],
        "training without dropout does not learn: {losses:?}"
    );
    assert_eq!(
        stsb.metrics.keys().collect::<Vec<_>>(),
        ["pearson", "spearman"]
    );
    assert_eq!(stsb.majority_baseline["pearson"], 0.0);
    let (_, batch) = read_predictions(&stsb_out.join("predictions.parquet"));
    assert_eq!(
        batch.column_by_name("prediction").unwrap().data_type(),
        &DataType::Float32
    );
    let labels = batch
        .column_by_name("label")
        .unwrap()
        .as_primitive::<Float32Type>();
    assert_eq!(labels.len(), 128);

    // The aggregate: partial averages over the three numbers present.
    let agg_params = GlueParams {
        tasks: vec![GlueTask::Sst2, GlueTask::Stsb],
        ..params.clone()
    };
    let agg_out = tmp.path().join("glue");
    let glue = aggregate(
        &agg_params,
        &[
            (GlueTask::Sst2, out.clone()),
            (GlueTask::Stsb, stsb_out.clone()),
        ],
        &agg_out,
    )
    .unwrap();
    assert_eq!(glue.glue_average_tasks, ["sst2", "stsb"]);
    let expected = (acc + stsb.metrics["pearson"]) / 2.0;
    assert!((glue.glue_average.unwrap() - expected).abs() < 1e-12);
    assert_eq!(glue.glue_average, glue.glue_average_acc);
    assert!(glue.quick_run);
    assert!(glue.outside_rules.is_empty());
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(agg_out.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(
        written["tasks"]["sst2"]["metrics"]["accuracy"]
            .as_f64()
            .unwrap(),
        acc
    );
    assert!(written["tasks"]["stsb"]["majority_baseline"]["pearson"].is_number());
    // A directory holding another task's results is refused.
    assert!(aggregate(&agg_params, &[(GlueTask::Rte, out)], &agg_out).is_err());
}

/// Writes a fixture in the hub schema: `(first, second)` text columns, int64 labels, int32 idx.
fn write_pair_fixture(path: &Path, columns: (&str, &str), rows: &[(&str, &str, i64)]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new(columns.0, DataType::Utf8, true),
        Field::new(columns.1, DataType::Utf8, true),
        Field::new("label", DataType::Int64, true),
        Field::new("idx", DataType::Int32, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
            Arc::new(Int32Array::from_iter_values(0..rows.len() as i32)),
        ],
    )
    .unwrap();
    let mut w = ArrowWriter::try_new(File::create(path).unwrap(), schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn fixture_path(dir: &Path, config: &str, split: &str) -> PathBuf {
    dir.join(config)
        .join(format!("{split}-00000-of-00001.parquet"))
}

#[test]
fn mnli_and_qqp_fixtures_in_the_hub_schema() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("glue");
    let nli = [
        ("the cat sees a dog .", "the cat sees a dog .", 0),
        ("the cat sees a dog .", "a bird finds the tree .", 1),
        ("the cat sees a dog .", "the cat does not see a dog .", 2),
        (
            "a good teacher helps the child .",
            "the teacher helps a child .",
            0,
        ),
    ];
    for split in ["train", "validation_matched", "validation_mismatched"] {
        write_pair_fixture(
            &fixture_path(&data, "mnli", split),
            ("premise", "hypothesis"),
            &nli,
        );
    }
    let qqp = [
        (
            "does the cat see a dog ?",
            "is it true that the cat sees a dog ?",
            1,
        ),
        ("does the cat see a dog ?", "what does the farmer take ?", 0),
    ];
    for split in ["train", "validation"] {
        write_pair_fixture(
            &fixture_path(&data, "qqp", split),
            ("question1", "question2"),
            &qqp,
        );
    }

    let m = load_split(&data, GlueTask::Mnli, "validation_mismatched").unwrap();
    assert_eq!(m.examples.len(), 4);
    assert_eq!(
        m.examples[2].text_b.as_deref(),
        Some("the cat does not see a dog .")
    );
    assert_eq!(m.examples[2].label, Label::Class(2));
    assert_eq!(GlueTask::Mnli.label_names()[2], "contradiction");
    let q = load_split(&data, GlueTask::Qqp, "validation").unwrap();
    assert_eq!(q.examples[0].text_a, "does the cat see a dog ?");
    assert_eq!(q.examples[0].label, Label::Class(1));
    assert_eq!(
        cram_glue::task_files(&data, GlueTask::Mnli).unwrap().len(),
        3
    );
    assert!(
        load_split(&data, GlueTask::Mnli, "validation").is_err(),
        "MNLI has no plain validation split"
    );

    // A label outside MNLI's three classes is an error naming file and row.
    let bad = tmp.path().join("bad");
    write_pair_fixture(
        &fixture_path(&bad, "mnli", "train"),
        ("premise", "hypothesis"),
        &[("a", "b", 0), ("a", "b", 3)],
    );
    let err = load_split(&bad, GlueTask::Mnli, "train")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("row 1") && err.contains("mnli/train-00000-of-00001.parquet"),
        "{err}"
    );

    // A quick fine-tune writes one prediction file per MNLI dev split and suffixed metrics.
    let ckpt = tmp.path().join("ckpt");
    write_checkpoint(&ckpt);
    let params = GlueParams {
        epochs: 1,
        ..quick_params(GlueTask::Mnli)
    };
    let out = tmp.path().join("mnli");
    let bar = indicatif::ProgressBar::hidden();
    let s: TaskSummary = run_task(&params, GlueTask::Mnli, &ckpt, &data, 1, &out, &bar).unwrap();
    assert_eq!(
        s.metrics.keys().collect::<Vec<_>>(),
        ["accuracy_matched", "accuracy_mismatched"]
    );
    assert_eq!(s.dev_examples, 8);
    assert!(out.join("predictions_matched.parquet").is_file());
    assert!(out.join("predictions_mismatched.parquet").is_file());
    assert!(!out.join("predictions.parquet").exists());
    let (idx, _) = read_predictions(&out.join("predictions_mismatched.parquet"));
    assert_eq!(idx, [0, 1, 2, 3]);
    let file = cram_model::TensorFile::open(&out.join("model.safetensors")).unwrap();
    assert_eq!(file.f32("head.weight").unwrap().unwrap().0, vec![3, 64]);

    // QQP reports F1 and accuracy.
    let out = tmp.path().join("qqp");
    let params = GlueParams {
        epochs: 1,
        ..quick_params(GlueTask::Qqp)
    };
    let s = run_task(&params, GlueTask::Qqp, &ckpt, &data, 1, &out, &bar).unwrap();
    assert_eq!(s.metrics.keys().collect::<Vec<_>>(), ["accuracy", "f1"]);
    let _ = s.metrics["f1"];
    let (_, batch) = read_predictions(&out.join("predictions.parquet"));
    assert!(
        batch
            .column_by_name("prediction")
            .unwrap()
            .as_primitive::<Int64Type>()
            .values()
            .iter()
            .all(|p| *p == 0 || *p == 1)
    );
}

#[test]
fn encodes_pairs_with_the_template_and_truncates_longest_first() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("tokenizer.json");
    write_tokenizer(&path);
    let tok = GlueTokenizer::from_file(&path, 10).unwrap();
    assert_eq!((tok.pad_id(), tok.cls_id()), (0, 2));
    let ex = |a: &str, b: Option<&str>| cram_glue::data::Example {
        idx: 0,
        text_a: a.into(),
        text_b: b.map(Into::into),
        label: Label::Class(0),
    };
    let enc = tok
        .encode(&[
            ex("the cat", None),
            ex("the cat sees a dog", Some("a dog")),
            ex("the big old cat sees the small dog", Some("a dog")),
        ])
        .unwrap();
    assert_eq!(enc.ids[0].len(), 4);
    assert_eq!((enc.ids[0][0], enc.ids[0][3]), (2, 3));
    assert_eq!(enc.ids[1].len(), 10);
    assert_eq!(enc.ids[1].iter().filter(|&&t| t == 3).count(), 2);
    // 8 + 2 words + 3 specials = 13 > 10: the longer text loses 3 words, the shorter keeps both.
    assert_eq!(enc.ids[2].len(), 10);
    assert_eq!(&enc.ids[2][7..], &enc.ids[1][7..]);
    assert_eq!(enc.truncated, 1);

    // A tokenizer.json without a post-processor gets the BERT template.
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    json["post_processor"] = serde_json::Value::Null;
    let bare = tmp.path().join("bare.json");
    std::fs::write(&bare, json.to_string()).unwrap();
    let tok = GlueTokenizer::from_file(&bare, 10).unwrap();
    assert_eq!(
        tok.encode(&[ex("the cat sees a dog", Some("a dog"))])
            .unwrap()
            .ids[0],
        enc.ids[1]
    );
    // One whose post-processor frames inputs otherwise is refused, naming the file.
    json["post_processor"] = serde_json::json!({"type": "TemplateProcessing",
        "single": [{"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {}});
    std::fs::write(&bare, json.to_string()).unwrap();
    let err = GlueTokenizer::from_file(&bare, 10).unwrap_err().to_string();
    assert!(
        err.contains("bare.json") && err.contains("[CLS] a [SEP] b [SEP]"),
        "{err}"
    );
}

/// Calibration run over every synthetic task (not part of CI: `cargo test -p cram-glue --
/// --ignored --nocapture`). Prints the dev metrics a random-init tiny model reaches.
#[test]
#[ignore]
fn synthetic_task_set_calibration() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("ckpt");
    write_checkpoint(&ckpt);
    let data = tmp.path().join("glue");
    write_synthetic_glue(&SyntheticGlueParams::default(), 0, &data).unwrap();
    let lr: f64 = std::env::var("GLUE_LR")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1e-3);
    let epochs: usize = std::env::var("GLUE_EPOCHS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let bar = indicatif::ProgressBar::hidden();
    let mut dirs = Vec::new();
    for task in GlueTask::GLUE_SANE {
        let params = GlueParams {
            lr,
            epochs,
            ..quick_params(task)
        };
        let out = tmp.path().join(task.name());
        let s = run_task(&params, task, &ckpt, &data, 0, &out, &bar).unwrap();
        eprintln!(
            "{task}: {:?} (majority {:?}) {:.1}s",
            s.metrics, s.majority_baseline, s.timings.seconds
        );
        dirs.push((task, out));
    }
    let params = GlueParams {
        lr,
        epochs,
        device: "cpu".into(),
        ..GlueParams::default()
    };
    let glue = aggregate(&params, &dirs, &tmp.path().join("all")).unwrap();
    eprintln!(
        "GLUE average {:?} (acc {:?}), majority {:?}",
        glue.glue_average, glue.glue_average_acc, glue.majority_glue_average
    );
}
