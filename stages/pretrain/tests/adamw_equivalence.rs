//! The first AdamW step of the PyTorch reference (vectors README, fact 10): MLM loss on
//! `input.mlm_ids` / `input.mlm_labels`, backward, global clip at 0.5, AdamW with lr 1e-3,
//! betas (0.9, 0.98), eps 1e-12, weight decay 0.01 except `bias`/`norm` parameters.

mod common;

use burn::tensor::{Device, Int, Tensor, TensorData};
use cram_model::TensorFile;
use cram_pretrain::shards::forward_backward;
use cram_pretrain::{AdamW, AdamWConfig, GradAccumulator};

fn f32s(f: &TensorFile, name: &str) -> Vec<f32> {
    f.f32(name)
        .unwrap()
        .unwrap_or_else(|| panic!("{name} missing"))
        .1
}

fn ints2(f: &TensorFile, name: &str, device: &Device) -> Tensor<2, Int> {
    let (shape, v) = f.i64(name).unwrap().unwrap();
    Tensor::from_data(TensorData::new(v, [shape[0], shape[1]]), device)
}

/// The accumulated gradient of `id` as host f32.
fn accumulated(acc: &GradAccumulator, id: &burn::module::ParamId) -> Vec<f32> {
    acc.get(id)
        .unwrap()
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn first_step_matches_pytorch() {
    // The fused host update (the CPU path) and the tensor-op update (the GPU path).
    first_step(&Device::flex(), GradAccumulator::new(), 1e-5);
    first_step(&Device::flex(), GradAccumulator::on_device(), 1e-5);
}

/// On a Vulkan device the forward and backward passes, the gradient sums and the
/// update all run on the device, taking the tensor path because it is not host memory.
#[cfg(feature = "vulkan")]
#[test]
fn first_step_matches_pytorch_on_vulkan() {
    if let Some(device) = cram_model::vulkan_test_device() {
        assert!(
            !cram_model::is_host(&device),
            "a Vulkan device is not host memory"
        );
        first_step(&device, GradAccumulator::new(), 1e-4);
    }
}

/// The optimizer's device path alone on a Vulkan device: the reference gradients come from the
/// CPU, and the clipping, the moments and the update are tensor ops on the device. Its
/// moments then round-trip through the optimizer file, device to host to device.
#[cfg(feature = "vulkan")]
#[test]
fn optimizer_steps_on_vulkan() {
    let Some(gpu) = cram_model::vulkan_test_device() else {
        return;
    };
    let path = common::vector_path("tiny.safetensors");
    let f = TensorFile::open(&path).unwrap();
    let config = f.config().unwrap().with_dropout(0.0);
    let cpu = Device::flex().autodiff();
    let model = cram_model::load_mlm_with_config(&path, &config, &cpu).unwrap();
    let out = model.forward_loss(
        ints2(&f, "input.mlm_ids", &cpu),
        ints2(&f, "input.mlm_labels", &cpu),
    );
    let mut grads = GradAccumulator::on_device();
    grads.add(&model, out.loss.backward());
    assert!(!grads.on_host());

    // The same parameters (ids and values) on the device.
    let on_gpu = cram_pretrain::shards::replica_on(&model, &gpu.clone().autodiff());
    assert!(!cram_model::is_host(&on_gpu.encoder().device()));
    let mut optim = AdamW::new(AdamWConfig::default());
    let (stepped, _) = optim.step(on_gpu, grads, 1e-3);
    assert!(!cram_model::is_host(&stepped.encoder().device()));
    let mut checked = 0;
    stepped.visit_named(&mut |name, p| {
        let d = max_diff(&p.to_vec().unwrap(), &f32s(&f, &format!("step1.{name}")));
        assert!(d < 1e-5, "step1.{name} on vulkan: max abs diff {d:e}");
        checked += 1;
    });
    assert_eq!(checked, 22);

    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        dir.path().join("a.safetensors"),
        dir.path().join("b.safetensors"),
    );
    optim.save(&a).unwrap();
    let back = AdamW::load(AdamWConfig::default(), &a, &stepped).unwrap();
    assert_eq!(back.steps(), 1);
    back.save(&b).unwrap();
    assert_eq!(
        std::fs::read(&a).unwrap(),
        std::fs::read(&b).unwrap(),
        "moments survive device -> file -> device"
    );
}

/// One reference step on `device`: loss, gradient norm and the updated weights within `tol`.
fn first_step(device: &Device, mut grads: GradAccumulator, tol: f32) {
    let path = common::vector_path("tiny.safetensors");
    let f = TensorFile::open(&path).unwrap();
    let config = f.config().unwrap().with_dropout(0.0);
    let device = device.clone().autodiff();
    let model = cram_model::load_mlm_with_config(&path, &config, &device).unwrap();

    let ids = ints2(&f, "input.mlm_ids", &device);
    let labels = ints2(&f, "input.mlm_labels", &device);
    let out = model.forward_loss(ids, labels);
    let loss: f32 = out
        .loss
        .clone()
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()[0];
    let want_loss = f32s(&f, "expected.mlm_loss")[0];
    assert!((loss - want_loss).abs() < tol, "loss {loss} vs {want_loss}");

    grads.add(&model, out.loss.backward());
    assert_eq!(
        grads.on_host(),
        cram_model::is_host(&device) && !grads.is_device_only(),
        "gradient sums on the host exactly when the device is host memory"
    );
    let norm: f32 = grads
        .global_norm()
        .unwrap()
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()[0];
    let want_norm = f32s(&f, "expected.grad_norm")[0];
    assert!(
        (norm - want_norm).abs() < 1e-4 * want_norm.max(1.0),
        "grad norm {norm} vs {want_norm}"
    );
    assert!(norm > 0.5, "the reference step clips (norm {norm} > 0.5)");

    let before: Vec<(String, Vec<f32>)> = {
        let mut v = Vec::new();
        model.visit_named(&mut |name, p| v.push((name, p.to_vec().unwrap())));
        v
    };
    let mut optim = AdamW::new(AdamWConfig::default());
    let (model, _) = optim.step(model, grads, 1e-3);
    assert_eq!(optim.steps(), 1);

    let mut checked = 0;
    let mut moved_decay_only = 0;
    model.visit_named(&mut |name, p| {
        let got = p.to_vec().unwrap();
        let want = f32s(&f, &format!("step1.{name}"));
        let d = max_diff(&got, &want);
        assert!(d < tol, "step1.{name}: max abs diff {d:e}");
        let old = &before.iter().find(|(n, _)| *n == name).unwrap().1;
        assert!(max_diff(&got, old) > 1e-4, "{name} moved");
        if cram_pretrain::optim::decays(&name) {
            moved_decay_only += 1;
        }
        checked += 1;
    });
    assert_eq!(checked, 22, "every parameter has a reference value");
    assert!(moved_decay_only > 0);
}

#[test]
fn state_round_trips_through_a_file() {
    state_round_trip(&Device::flex(), 1e-6);
}

/// The optimizer state written from a Vulkan device and read back onto it (moments go
/// device → host file → device).
#[cfg(feature = "vulkan")]
#[test]
fn state_round_trips_through_a_file_on_vulkan() {
    if let Some(device) = cram_model::vulkan_test_device() {
        state_round_trip(&device, 1e-6);
    }
}

fn state_round_trip(device: &Device, tol: f32) {
    let path = common::vector_path("tiny.safetensors");
    let f = TensorFile::open(&path).unwrap();
    let config = f.config().unwrap().with_dropout(0.0);
    let device = device.clone().autodiff();
    let run = |optim: &mut AdamW, model: cram_model::MlmModel| {
        let ids = ints2(&f, "input.mlm_ids", &device);
        let labels = ints2(&f, "input.mlm_labels", &device);
        let out = model.forward_loss(ids, labels);
        let mut grads = GradAccumulator::new();
        grads.add(&model, out.loss.backward());
        optim.step(model, grads, 1e-3).0
    };
    let model = cram_model::load_mlm_with_config(&path, &config, &device).unwrap();
    let mut a = AdamW::new(AdamWConfig::default());
    let model = run(&mut a, model);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("optimizer.safetensors");
    a.save(&file).unwrap();
    let mut b = AdamW::load(AdamWConfig::default(), &file, &model).unwrap();
    assert_eq!(b.steps(), 1);

    // The file holds moments in the contract's layout (dense weights are held transposed in
    // the model): after one step from zero, m = (1 - beta1) * clip * g elementwise.
    let name = "encoder.layers.0.attn.qkv.weight";
    let model0 = cram_model::load_mlm_with_config(&path, &config, &device).unwrap();
    let out = model0.forward_loss(
        ints2(&f, "input.mlm_ids", &device),
        ints2(&f, "input.mlm_labels", &device),
    );
    let grads = out.loss.backward();
    let mut g = None;
    model0.visit_named(&mut |n, p| {
        if n == name {
            g = p.grad_vec(&grads);
        }
    });
    let g = g.unwrap();
    let (shape, m) = TensorFile::open(&file)
        .unwrap()
        .f32(&format!("m.{name}"))
        .unwrap()
        .unwrap();
    assert_eq!(shape, vec![g.len()]);
    let i = (0..g.len())
        .max_by(|&a, &b| g[a].abs().total_cmp(&g[b].abs()))
        .unwrap();
    let k = m[i] / g[i];
    assert!(k > 0.0 && k <= 0.1 + 1e-6, "m / g = {k}");
    let scale = m.iter().fold(0f32, |a, x| a.max(x.abs()));
    for (j, (&mj, &gj)) in m.iter().zip(&g).enumerate() {
        assert!(
            (mj - k * gj).abs() <= 1e-5 * scale,
            "m.{name}[{j}] = {mj}, expected {}",
            k * gj
        );
    }

    let model_b = model.clone();
    let next_a = run(&mut a, model);
    let next_b = run(&mut b, model_b);
    let mut va = Vec::new();
    next_a.visit_named(&mut |_, p| va.extend(p.to_vec().unwrap()));
    let mut vb = Vec::new();
    next_b.visit_named(&mut |_, p| vb.extend(p.to_vec().unwrap()));
    // Identical up to the order of floating-point reductions across threads.
    let d = max_diff(&va, &vb);
    assert!(
        d < tol,
        "second step differs by {d:e} after a state round trip"
    );
}

#[test]
fn accumulating_micro_batches_equals_the_whole_batch() {
    // Every row has the same number of labelled positions, so the mean of the micro-batch
    // losses (each scaled by 1/k before backward, as the reference does) is the batch loss.
    let path = common::vector_path("tiny.safetensors");
    let f = TensorFile::open(&path).unwrap();
    let config = f.config().unwrap().with_dropout(0.0);
    let device = Device::flex().autodiff();
    let model = cram_model::load_mlm_with_config(&path, &config, &device).unwrap();
    let (rows, seq) = (4usize, 16usize);
    let tokens: Vec<u32> = (0..rows * seq).map(|i| 5 + (i as u32 * 37) % 500).collect();
    let collator = cram_pretrain::MlmCollator {
        rate: 0.25,
        mask_id: 4,
        random_vocab: 512,
        seed: 11,
    };
    let grad_of = |parts: &[(usize, usize)]| {
        let mut acc = GradAccumulator::new();
        for &(first, n) in parts {
            let b = collator.mask(&tokens[first * seq..(first + n) * seq], seq, first as u64);
            let ids = Tensor::<2, Int>::from_data(TensorData::new(b.input_ids, [n, seq]), &device);
            let out = model.forward_loss_at(ids, &b.positions, &b.targets, &device);
            acc.add(&model, out.loss.div_scalar(parts.len() as f64).backward());
        }
        acc
    };
    let whole = grad_of(&[(0, 4)]);
    let split = grad_of(&[(0, 2), (2, 2)]);
    assert_eq!(split.micro_batches(), 2);
    let mut compared = 0;
    model.visit_named(&mut |name, p| {
        let (a, b) = (accumulated(&whole, &p.id()), accumulated(&split, &p.id()));
        let d = max_diff(&a, &b);
        assert!(d < 1e-6, "{name}: accumulated gradient differs by {d:e}");
        compared += 1;
    });
    assert_eq!(compared, 22);
}

#[test]
fn a_micro_batch_split_over_cores_has_the_whole_batch_gradient() {
    // Shards run on replicas of the model in parallel; their gradients, summed, are the
    // micro-batch's, also when the shards hold different numbers of selected positions.
    let path = common::vector_path("tiny.safetensors");
    let f = TensorFile::open(&path).unwrap();
    let config = f.config().unwrap().with_dropout(0.0);
    let device = Device::flex().autodiff();
    let model = cram_model::load_mlm_with_config(&path, &config, &device).unwrap();
    let (rows, seq) = (5usize, 16usize);
    let tokens: Vec<u32> = (0..rows * seq).map(|i| 5 + (i as u32 * 41) % 500).collect();
    let collator = cram_pretrain::MlmCollator {
        rate: 0.25,
        mask_id: 4,
        random_vocab: 512,
        seed: 5,
    };
    let mut batch = collator.mask(&tokens, seq, 0);
    // Uneven shares: drop the last row's selected positions but one.
    let keep = batch
        .positions
        .iter()
        .position(|&p| p >= (4 * seq) as i64)
        .unwrap()
        + 1;
    batch.positions.truncate(keep);
    batch.targets.truncate(keep);

    let run = |shards: usize| {
        let (parts, loss) = forward_backward(&model, &batch, shards, 0.5, &device);
        assert_eq!(parts.len(), shards);
        let mut acc = GradAccumulator::new();
        acc.add_shards(parts.into_iter().map(Into::into));
        assert_eq!(acc.micro_batches(), 1, "the shards are one micro-batch");
        let loss = loss
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap()[0];
        (acc, loss)
    };
    let (whole, whole_loss) = run(1);
    for shards in [2, 3] {
        let (split, loss) = run(shards);
        assert!(
            (loss - whole_loss).abs() < 1e-5,
            "{shards} shards: loss {loss} vs {whole_loss}"
        );
        let mut compared = 0;
        model.visit_named(&mut |name, p| {
            let (a, b) = (accumulated(&whole, &p.id()), accumulated(&split, &p.id()));
            let scale = a.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-3);
            let d = max_diff(&a, &b);
            assert!(
                d / scale < 1e-5,
                "{shards} shards, {name}: gradient differs by {d:e} (max {scale:e})"
            );
            compared += 1;
        });
        assert_eq!(compared, 22);
    }
}
