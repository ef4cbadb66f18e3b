//! Saving and loading checkpoints in the `cram-ref-v1` contract.

mod common;

use std::process::Command;

use burn::tensor::{Device, Int, Tensor, TensorData};
use common::{assert_close, host, vector_path};
use cram_model::{
    ClassificationModel, MlmModel, ModelConfig, ModelError, TensorFile, load_classification,
    load_mlm, read_config_json, save_classification, save_mlm, write_config_json,
};

fn small() -> ModelConfig {
    let mut c = ModelConfig::tiny().with_dropout(0.0);
    c.vocab_size = 200;
    c.hidden_size = 32;
    c.intermed_size = 64;
    c.max_seq_length = 16;
    c
}

fn ids(device: &Device) -> Tensor<2, Int> {
    let v: Vec<i64> = (0..24).map(|i| (i * 37 % 199) as i64 + 1).collect();
    Tensor::from_data(TensorData::new(v, [2, 12]), device)
}

#[test]
fn mlm_round_trip_reproduces_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let device = Device::flex();
    for preset in ["crammed-bert", "bert-original"] {
        let mut c = ModelConfig::preset(preset).unwrap().with_dropout(0.0);
        let s = small();
        (
            c.vocab_size,
            c.hidden_size,
            c.intermed_size,
            c.max_seq_length,
            c.num_layers,
            c.num_heads,
        ) = (
            s.vocab_size,
            s.hidden_size,
            s.intermed_size,
            s.max_seq_length,
            2,
            2,
        );
        let model = MlmModel::init(&c, 3, &device).unwrap();
        save_mlm(&model, &c, &path).unwrap();
        let (back, c2) = load_mlm(&path, &device).unwrap();
        assert_eq!(c, c2, "{preset}: config survives");
        let a = host(model.forward_logits(ids(&device)));
        let b = host(back.forward_logits(ids(&device)));
        assert_close(preset, &b, &a, 0.0);
        // The same model gives the same bytes (the metadata block in a fixed order).
        let again = dir.path().join("again.safetensors");
        save_mlm(&back, &c2, &again).unwrap();
        assert!(
            std::fs::read(&path).unwrap() == std::fs::read(&again).unwrap(),
            "{preset}: saving is deterministic"
        );
        let meta = TensorFile::open(&again).unwrap().metadata().clone();
        assert_eq!(meta["format"], "cram-ref-v1");
        assert_eq!(meta["kind"], "mlm");
    }
    let c = small();
    write_config_json(&c, &dir.path().join("config.json")).unwrap();
    assert_eq!(
        read_config_json(&dir.path().join("config.json")).unwrap(),
        c
    );
}

#[test]
fn written_file_follows_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let c = small();
    let model = MlmModel::init(&c, 0, &Device::flex()).unwrap();
    save_mlm(&model, &c, &path).unwrap();
    let f = TensorFile::open(&path).unwrap();
    assert_eq!(f.metadata()["format"], "cram-ref-v1");
    assert_eq!(f.metadata()["kind"], "mlm");
    let config: serde_json::Value = serde_json::from_str(&f.metadata()["config"]).unwrap();
    for key in [
        "vocab_size",
        "hidden_size",
        "num_layers",
        "num_heads",
        "intermed_size",
        "max_seq_length",
        "norm_eps",
        "pad_token_id",
        "hidden_dropout",
        "attn_dropout",
        "embedding_dropout",
        "init_std",
        "sparse_prediction",
        "num_labels",
        "head_dim",
        "classifier_dropout",
    ] {
        assert!(config.get(key).is_some(), "config lacks {key}");
    }
    let mut names = f.names();
    names.sort();
    // Same names as the reference file, whose tiny model has the same structure.
    let reference = TensorFile::open(&vector_path("tiny.safetensors")).unwrap();
    let mut want: Vec<String> = reference
        .names()
        .into_iter()
        .filter(|n| n.starts_with("encoder."))
        .collect();
    want.sort();
    assert_eq!(names, want);
    let (shape, _) = f.f32("encoder.layers.1.attn.qkv.weight").unwrap().unwrap();
    assert_eq!(shape, vec![96, 32]);
    let (shape, _) = f.f32("encoder.layers.0.ffn.out.weight").unwrap().unwrap();
    assert_eq!(shape, vec![32, 32]);
}

#[test]
fn loading_errors_name_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let device = Device::flex();
    let c = small();
    let model = MlmModel::init(&c, 0, &device).unwrap();
    save_mlm(&model, &c, &path).unwrap();
    // A config that wants a wider FFN than the file holds.
    let mut wider = c.clone();
    wider.intermed_size = 128;
    let err = cram_model::load_mlm_with_config(&path, &wider, &device).unwrap_err();
    match &err {
        ModelError::ShapeMismatch {
            name,
            expected,
            found,
            ..
        } => {
            assert_eq!(name, "encoder.layers.0.ffn.inp.weight");
            assert_eq!(
                (expected.as_slice(), found.as_slice()),
                (&[128, 32][..], &[64, 32][..])
            );
        }
        other => panic!("unexpected {other}"),
    }
    let mut deeper = c.clone();
    deeper.num_layers = 3;
    let err = cram_model::load_mlm_with_config(&path, &deeper, &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("missing tensor \"encoder.layers.2.norm1.weight\"") && err.contains("[32]"),
        "{err}"
    );
    let err = load_classification(&path, &device).unwrap_err().to_string();
    assert!(
        err.contains("kind") && err.contains("classification"),
        "{err}"
    );
}

#[test]
fn classification_from_mlm_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mlm_path = dir.path().join("mlm.safetensors");
    let cls_path = dir.path().join("cls.safetensors");
    let device = Device::flex();
    let c = small();
    let mlm = MlmModel::init(&c, 5, &device).unwrap();
    save_mlm(&mlm, &c, &mlm_path).unwrap();
    let (cls, cc) = ClassificationModel::from_mlm_checkpoint(&mlm_path, 3, 11, &device).unwrap();
    assert_eq!(cc.num_labels, 3);
    // The encoder is the pretrained one.
    let a = host(mlm.encoder().forward(ids(&device), None));
    let b = host(cls.encoder().forward(ids(&device), None));
    assert_close("encoder", &b, &a, 0.0);
    // The head is fresh and seeded.
    let (again, _) = ClassificationModel::from_mlm_checkpoint(&mlm_path, 3, 11, &device).unwrap();
    let (other, _) = ClassificationModel::from_mlm_checkpoint(&mlm_path, 3, 12, &device).unwrap();
    let logits = host(cls.forward(ids(&device), None));
    assert_eq!(logits.len(), 6);
    assert_eq!(logits, host(again.forward(ids(&device), None)));
    assert_ne!(logits, host(other.forward(ids(&device), None)));
    // Classification round trip.
    save_classification(&cls, &cc, &cls_path).unwrap();
    let (back, _) = load_classification(&cls_path, &device).unwrap();
    assert_eq!(logits, host(back.forward(ids(&device), None)));
}

#[test]
fn python_safetensors_reads_our_checkpoint() {
    let have = Command::new("python3")
        .args(["-c", "import safetensors"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        assert!(
            std::env::var("CRAM_REQUIRE_PYTHON").as_deref() != Ok("1"),
            "CRAM_REQUIRE_PYTHON=1 but python3 cannot import safetensors"
        );
        eprintln!(
            "SKIP python_safetensors_reads_our_checkpoint: python3 cannot import safetensors"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let c = small();
    let model = MlmModel::init(&c, 0, &Device::flex()).unwrap();
    save_mlm(&model, &c, &path).unwrap();
    let script = r#"
import json, sys
from safetensors import safe_open
with safe_open(sys.argv[1], "np") as f:
    m = f.metadata()
    assert m["format"] == "cram-ref-v1" and m["kind"] == "mlm", m
    cfg = json.loads(m["config"])
    H = cfg["hidden_size"]
    assert f.get_tensor("encoder.embedding.word.weight").shape == (cfg["vocab_size"], H)
    assert f.get_tensor("encoder.layers.0.attn.qkv.weight").shape == (3 * H, H)
    assert abs(float(f.get_tensor("encoder.embedding.pos_scale")[0]) - H ** -0.5) < 1e-6
print("ok")
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_parameter_gets_a_gradient_in_both_architectures() {
    let device = Device::flex().autodiff();
    for preset in ["crammed-bert", "bert-original"] {
        let mut c = ModelConfig::preset(preset).unwrap().with_dropout(0.1);
        let s = small();
        (
            c.vocab_size,
            c.hidden_size,
            c.intermed_size,
            c.max_seq_length,
            c.num_layers,
            c.num_heads,
        ) = (
            s.vocab_size,
            s.hidden_size,
            s.intermed_size,
            s.max_seq_length,
            2,
            2,
        );
        let model = MlmModel::init(&c, 9, &device).unwrap();
        let labels: Vec<i64> = (0..24)
            .map(|i| {
                if i % 4 == 1 {
                    (i * 7 % 150) as i64 + 3
                } else {
                    cram_model::IGNORE_INDEX
                }
            })
            .collect();
        let labels = Tensor::<2, Int>::from_data(TensorData::new(labels, [2, 12]), &device);
        let out = model.forward_loss(ids(&device), labels);
        assert_eq!(out.num_predictions, 6);
        let loss = host(out.loss.clone())[0];
        assert!(
            (loss - (200f32).ln()).abs() < 0.5,
            "{preset}: initial loss {loss} near ln V"
        );
        let grads = out.loss.backward();
        model.visit_named(&mut |name, p| {
            let g = p
                .grad_vec(&grads)
                .unwrap_or_else(|| panic!("{preset}: no gradient for {name}"));
            assert!(g.iter().all(|v| v.is_finite()), "{preset}: {name}");
            assert!(
                g.iter().any(|v| *v != 0.0),
                "{preset}: zero gradient for {name}"
            );
        });
    }
}

#[test]
fn regression_head_uses_mse() {
    let device = Device::flex();
    let mut c = small();
    c.num_labels = 1;
    let model = ClassificationModel::init(&c, 2, &device).unwrap();
    let logits = model.forward(ids(&device), None);
    assert_eq!(logits.dims(), [2, 1]);
    let y = Tensor::<1>::from_data(TensorData::new(vec![0.5f32, -1.0], [2]), &device);
    let loss = host(ClassificationModel::loss(
        logits.clone(),
        cram_model::ClassLabels::Scores(y),
    ))[0];
    let l = host(logits);
    let want = ((l[0] - 0.5).powi(2) + (l[1] + 1.0).powi(2)) / 2.0;
    assert!((loss - want).abs() < 1e-6, "{loss} vs {want}");
}

/// A model initialised on a Vulkan device (SwiftShader in CI) holds the CPU's initial weights
/// (the initialiser draws on the host), writes the same checkpoint bytes, reads back onto the
/// device unchanged, and gives the CPU's outputs.
#[cfg(feature = "vulkan")]
#[test]
fn vulkan_checkpoint_round_trip() {
    let Some(gpu) = cram_model::vulkan_test_device() else {
        return;
    };
    let cpu = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let c = small();
    let on_gpu = MlmModel::init(&c, 7, &gpu).unwrap();
    let on_cpu = MlmModel::init(&c, 7, &cpu).unwrap();
    let (gpu_file, cpu_file) = (
        dir.path().join("gpu.safetensors"),
        dir.path().join("cpu.safetensors"),
    );
    save_mlm(&on_gpu, &c, &gpu_file).unwrap();
    save_mlm(&on_cpu, &c, &cpu_file).unwrap();
    assert_eq!(
        std::fs::read(&gpu_file).unwrap(),
        std::fs::read(&cpu_file).unwrap(),
        "the same seed gives the same checkpoint bytes on both devices"
    );

    // Read back onto the device, every weight is what was written.
    let (back_gpu, _) = load_mlm(&gpu_file, &gpu).unwrap();
    let values = |m: &MlmModel| {
        let mut v = Vec::new();
        m.visit_named(&mut |name, p| v.push((name, p.to_vec().unwrap())));
        v
    };
    assert_eq!(values(&back_gpu), values(&on_cpu), "reloaded on vulkan");
    save_mlm(&back_gpu, &c, &gpu_file).unwrap();
    assert_eq!(
        std::fs::read(&gpu_file).unwrap(),
        std::fs::read(&cpu_file).unwrap(),
        "written again from the device, the same bytes"
    );

    // The outputs agree across devices.
    let want = host(on_cpu.forward_logits(ids(&cpu)));
    assert_close(
        "reloaded on vulkan",
        &host(back_gpu.forward_logits(ids(&gpu))),
        &want,
        1e-4,
    );
}
