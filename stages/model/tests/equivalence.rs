//! Equivalence with the PyTorch reference on `../shared/vectors/tiny*.safetensors`.
//!
//! Every check runs on the CPU backend at [`TOL`] and, in builds with the `vulkan` feature, on
//! a Vulkan device at [`GPU_TOL`] (SwiftShader in CI, `VK_DRIVER_FILES`): the GPU code path
//! (cubecl's kernels compiled to SPIR-V, with burn's kernel fusion and autotuning, device-side
//! reductions in their own order) is held to the same reference.

mod common;

use burn::tensor::{Device, Int, Tensor, TensorData};
use common::{assert_close, f32s, host, ints2, open, vector_path};
use cram_model::encoder::sinusoid_table;
use cram_model::{AttentionKernel, ClassLabels, ClassificationModel, MlmModel, ModelConfig};

const TOL: f32 = 1e-5;

/// Tolerance for GPU-style kernels, whose sums run in another order than PyTorch's CPU ones.
#[cfg(feature = "vulkan")]
const GPU_TOL: f32 = 1e-4;

fn tiny_config() -> ModelConfig {
    open("tiny.safetensors").config().expect("config metadata")
}

fn tiny_model(device: &Device) -> MlmModel {
    let config = tiny_config().with_dropout(0.0);
    cram_model::load_mlm_with_config(&vector_path("tiny.safetensors"), &config, device)
        .expect("weights load by contract name")
}

#[test]
fn config_metadata_describes_tiny() {
    let c = tiny_config();
    assert_eq!(
        (
            c.vocab_size,
            c.hidden_size,
            c.num_layers,
            c.num_heads,
            c.intermed_size,
            c.max_seq_length
        ),
        (512, 64, 2, 2, 128, 16)
    );
    assert_eq!(c.pad_token_id, 0);
    assert_eq!(c.norm_eps, 1e-12);
}

#[test]
fn pos_table_matches() {
    let f = open("tiny.safetensors");
    let (shape, want) = f32s(&f, "expected.pos_table");
    assert_eq!(shape, vec![16, 64]);
    assert_close("pos_table", &sinusoid_table(16, 64), &want, TOL);
}

#[test]
fn forward_matches() {
    check_forward(&Device::flex(), TOL);
}

fn check_forward(device: &Device, tol: f32) {
    check_forward_with(device, tol, AttentionKernel::Explicit);
}

fn check_forward_with(device: &Device, tol: f32, kernel: AttentionKernel) {
    let f = open("tiny.safetensors");
    let model = tiny_model(device).with_attention_kernel(kernel);
    let ids = ints2(&f, "input.ids", device);
    let mask = ints2(&f, "input.attention_mask", device);

    let emb = model.encoder().embedding.forward(ids.clone());
    assert_close(
        "embedding_out",
        &host(emb),
        &f32s(&f, "expected.embedding_out").1,
        tol,
    );

    let enc = model.encoder().forward(ids.clone(), None);
    assert_close(
        "encoder_out",
        &host(enc),
        &f32s(&f, "expected.encoder_out").1,
        tol,
    );

    let enc_m = model.encoder().forward(ids.clone(), Some(mask));
    assert_close(
        "encoder_out_masked",
        &host(enc_m),
        &f32s(&f, "expected.encoder_out_masked").1,
        tol,
    );

    let logits = model.forward_logits(ids);
    assert_close("logits", &host(logits), &f32s(&f, "expected.logits").1, tol);
}

/// burn's fused attention op (`attention = "fused"`) computes the reference's function, with
/// and without the padding mask, and its gradients (recorded decomposed under autodiff).
#[test]
fn fused_attention_matches() {
    check_forward_with(&Device::flex(), TOL, AttentionKernel::Fused);
    check_gradients_with(&Device::flex(), TOL, AttentionKernel::Fused);
}

#[test]
fn sparse_logits_and_loss_match() {
    check_sparse_loss(&Device::flex(), TOL);
}

fn check_sparse_loss(device: &Device, tol: f32) {
    let f = open("tiny.safetensors");
    let model = tiny_model(device);
    let ids = ints2(&f, "input.mlm_ids", device);
    let labels = ints2(&f, "input.mlm_labels", device);
    let out = model.forward_loss(ids, labels);
    let (_, positions) = f.i64("expected.mlm_positions").unwrap().unwrap();
    assert_eq!(out.num_predictions, positions.len());
    assert_close(
        "sparse_logits",
        &host(out.logits),
        &f32s(&f, "expected.sparse_logits").1,
        tol,
    );
    assert_close(
        "mlm_loss",
        &host(out.loss),
        &f32s(&f, "expected.mlm_loss").1,
        tol,
    );
}

#[test]
fn gradients_match() {
    check_gradients(&Device::flex(), TOL);
}

fn check_gradients(device: &Device, tol: f32) {
    check_gradients_with(device, tol, AttentionKernel::Explicit);
}

fn check_gradients_with(device: &Device, tol: f32, kernel: AttentionKernel) {
    let f = open("tiny.safetensors");
    let device = &device.clone().autodiff();
    let model = tiny_model(device).with_attention_kernel(kernel);
    let ids = ints2(&f, "input.mlm_ids", device);
    let labels = ints2(&f, "input.mlm_labels", device);
    let out = model.forward_loss(ids, labels);
    let grads = out.loss.backward();
    let mut checked = 0;
    let mut sq = 0.0f64;
    model.visit_named(&mut |name, p| {
        let want = f32s(&f, &format!("grad.{name}")).1;
        let got = p
            .grad_vec(&grads)
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        sq += got.iter().map(|g| (*g as f64).powi(2)).sum::<f64>();
        assert_close(&format!("grad.{name}"), &got, &want, tol);
        checked += 1;
    });
    assert_eq!(
        checked, 22,
        "every parameter of the tiny model has a reference gradient"
    );
    let want_norm = f32s(&f, "expected.grad_norm").1[0];
    assert!(
        ((sq.sqrt() as f32) - want_norm).abs() < 1e-4,
        "grad norm {} vs {want_norm}",
        sq.sqrt()
    );
}

#[test]
fn pad_row_gets_gradient_only_from_the_decoder() {
    // With the decoder's contribution isolated (hidden detached), the word embedding's pad row
    // must receive exactly zero gradient from the lookup even though pad tokens are present.
    let device = Device::flex().autodiff();
    let model = tiny_model(&device);
    let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![5i64, 0, 7, 0], [1, 4]), &device);
    let emb = model.encoder().embedding.forward(ids);
    let grads = emb.sum().backward();
    let g = host(model.encoder().embedding.word.val().grad(&grads).unwrap());
    assert!(
        g[..64].iter().all(|v| *v == 0.0),
        "pad row has no lookup gradient"
    );
    assert!(
        g[5 * 64..6 * 64].iter().any(|v| *v != 0.0),
        "a real token row does"
    );
}

#[test]
fn classification_matches() {
    check_classification(&Device::flex(), TOL);
}

fn check_classification(device: &Device, tol: f32) {
    let f = open("tiny_cls.safetensors");
    let config = f.config().unwrap().with_dropout(0.0);
    assert_eq!((config.num_labels, config.head_dim), (3, 32));
    let model = cram_model::load_classification_with_config(
        &vector_path("tiny_cls.safetensors"),
        &config,
        device,
    )
    .unwrap();
    let ids = ints2(&f, "input.ids", device);
    let mask = ints2(&f, "input.attention_mask", device);
    let logits = model.forward(ids, Some(mask));
    assert_close(
        "cls_logits",
        &host(logits.clone()),
        &f32s(&f, "expected.cls_logits").1,
        tol,
    );
    let (_, y) = f.i64("input.cls_labels").unwrap().unwrap();
    let y = Tensor::<1, Int>::from_data(TensorData::new(y, [2]), device);
    let loss = ClassificationModel::loss(logits, ClassLabels::Classes(y));
    assert_close(
        "cls_loss",
        &host(loss),
        &f32s(&f, "expected.cls_loss").1,
        tol,
    );
}

/// The same checks on a Vulkan device (`cram_model::vulkan_test_device`).
#[cfg(feature = "vulkan")]
mod vulkan {
    use super::*;

    #[test]
    fn forward_matches_on_vulkan() {
        if let Some(device) = cram_model::vulkan_test_device() {
            check_forward(&device, GPU_TOL);
        }
    }

    #[test]
    fn sparse_logits_and_loss_match_on_vulkan() {
        if let Some(device) = cram_model::vulkan_test_device() {
            check_sparse_loss(&device, GPU_TOL);
        }
    }

    #[test]
    fn gradients_match_on_vulkan() {
        if let Some(device) = cram_model::vulkan_test_device() {
            check_gradients(&device, GPU_TOL);
        }
    }

    #[test]
    fn classification_matches_on_vulkan() {
        if let Some(device) = cram_model::vulkan_test_device() {
            check_classification(&device, GPU_TOL);
        }
    }
}
