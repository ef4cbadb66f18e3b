//! The closed-form cross-entropy against the plain autodiff one: same value, same gradient.

use burn::tensor::{Device, Int, Tensor, TensorData};
use cram_model::encoder::{gelu_closed_form, softmax_closed_form};
use cram_model::mlm::{cross_entropy, cross_entropy_reference};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

/// Loss and gradient of `loss_fn` at `logits` (rows × classes) for `targets`.
fn loss_and_grad(
    loss_fn: fn(Tensor<2>, Tensor<2, Int>) -> Tensor<1>,
    logits: &[f32],
    targets: &[i64],
    classes: usize,
) -> (f32, Vec<f32>) {
    let device = Device::flex().autodiff();
    let rows = targets.len();
    let x = Tensor::<2>::from_data(TensorData::new(logits.to_vec(), [rows, classes]), &device)
        .require_grad();
    let t = Tensor::<2, Int>::from_data(TensorData::new(targets.to_vec(), [rows, 1]), &device);
    let loss = loss_fn(x.clone(), t);
    let value = host(loss.clone())[0];
    let mut grads = loss.mul_scalar(3.0).backward();
    let grad = x.grad_remove(&mut grads).expect("logits have a gradient");
    (value, host(grad))
}

fn random_case(seed: u64, rows: usize, classes: usize, scale: f32) -> (Vec<f32>, Vec<i64>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let logits = (0..rows * classes)
        .map(|_| rng.random_range(-1.0f32..1.0) * scale)
        .collect();
    let targets = (0..rows)
        .map(|_| rng.random_range(0..classes as i64))
        .collect();
    (logits, targets)
}

#[test]
fn closed_form_matches_autodiff_in_value_and_gradient() {
    for (seed, rows, classes, scale) in [(1, 9, 37, 1.0), (2, 64, 512, 4.0), (3, 5, 3, 0.1)] {
        let (logits, targets) = random_case(seed, rows, classes, scale);
        let (want, want_grad) = loss_and_grad(cross_entropy_reference, &logits, &targets, classes);
        let (got, got_grad) = loss_and_grad(cross_entropy, &logits, &targets, classes);
        assert!(
            (got - want).abs() <= 1e-5 * want.abs().max(1.0),
            "loss {got} vs {want} (case {seed})"
        );
        for (i, (g, w)) in got_grad.iter().zip(&want_grad).enumerate() {
            assert!((g - w).abs() <= 1e-6, "grad[{i}] {g} vs {w} (case {seed})");
        }
        // The upstream factor 3 reaches the logits: the gradient is not just a constant.
        let row0: f32 = got_grad[..classes].iter().sum();
        assert!(row0.abs() < 1e-5, "each row of the gradient sums to zero");
    }
}

#[test]
fn confident_wrong_predictions_stay_finite_and_exact() {
    // The target's probability underflows f32 (logit gap 200): -ln(p_t) computed naively
    // would be infinite; logsumexp - x_t is 200 exactly.
    let classes = 4;
    let logits = vec![200.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
    let targets = vec![1, 2];
    let (got, grad) = loss_and_grad(cross_entropy, &logits, &targets, classes);
    let want = (200.0 + (4.0f32).ln()) / 2.0;
    assert!((got - want).abs() < 1e-4, "{got} vs {want}");
    assert!(grad.iter().all(|g| g.is_finite()));
    // Row 0: softmax is one-hot on class 0, target 1: gradient (1, -1, 0, 0) * 3 / 2.
    assert!((grad[0] - 1.5).abs() < 1e-6 && (grad[1] + 1.5).abs() < 1e-6);
}

#[test]
fn untracked_and_plain_devices_give_the_loss() {
    let (logits, targets) = random_case(7, 6, 11, 2.0);
    let (want, _) = loss_and_grad(cross_entropy_reference, &logits, &targets, 11);
    for device in [Device::flex(), Device::flex().autodiff()] {
        let x = Tensor::<2>::from_data(TensorData::new(logits.clone(), [6, 11]), &device);
        let t = Tensor::<2, Int>::from_data(TensorData::new(targets.clone(), [6, 1]), &device);
        let got = host(cross_entropy(x, t))[0];
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }
}

/// `sum(softmax_fn(x) * w)` and its gradient at `x` (`[2, 3, rows, cols]`).
fn softmax_and_grad(
    softmax_fn: fn(Tensor<4>) -> Tensor<4>,
    x: &[f32],
    w: &[f32],
    shape: [usize; 4],
) -> (Vec<f32>, Vec<f32>) {
    let device = Device::flex().autodiff();
    let x = Tensor::<4>::from_data(TensorData::new(x.to_vec(), shape), &device).require_grad();
    let w = Tensor::<4>::from_data(TensorData::new(w.to_vec(), shape), &device);
    let y = softmax_fn(x.clone());
    let value = host(y.clone());
    let mut grads = (y * w).sum().backward();
    let grad = x.grad_remove(&mut grads).expect("x has a gradient");
    (value, host(grad))
}

#[test]
fn closed_form_softmax_matches_autodiff_in_value_and_gradient() {
    let shape = [2, 3, 5, 17];
    let n: usize = shape.iter().product();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for scale in [0.1f32, 3.0, 30.0] {
        let x: Vec<f32> = (0..n)
            .map(|_| rng.random_range(-1.0f32..1.0) * scale)
            .collect();
        let w: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let reference = |t: Tensor<4>| burn::tensor::activation::softmax(t, 3);
        let (want, want_grad) = softmax_and_grad(reference, &x, &w, shape);
        let (got, got_grad) = softmax_and_grad(softmax_closed_form, &x, &w, shape);
        for (i, (g, v)) in got.iter().zip(&want).enumerate() {
            assert!((g - v).abs() <= 1e-6, "p[{i}] {g} vs {v} (scale {scale})");
        }
        for (i, (g, v)) in got_grad.iter().zip(&want_grad).enumerate() {
            assert!(
                (g - v).abs() <= 1e-6,
                "grad[{i}] {g} vs {v} (scale {scale})"
            );
        }
        assert!(got_grad.iter().any(|g| g.abs() > 1e-3), "a real gradient");
    }
    // Off the graph and on a plain device it is the plain softmax.
    let plain = Tensor::<4>::from_data(
        TensorData::new(vec![0.5f32; 8], [1, 1, 2, 4]),
        &Device::flex(),
    );
    let p = host(softmax_closed_form(plain));
    assert!(p.iter().all(|&v| (v - 0.25).abs() < 1e-7));
}

#[test]
fn closed_form_gelu_has_burns_value_and_the_exact_gradient() {
    let device = Device::flex().autodiff();
    let xs: Vec<f32> = (0..2 * 3 * 41).map(|i| (i as f32 - 120.0) / 17.0).collect();
    let w: Vec<f32> = (0..xs.len()).map(|i| 1.0 + (i % 5) as f32 / 4.0).collect();
    let x = Tensor::<3>::from_data(TensorData::new(xs.clone(), [2, 3, 41]), &device).require_grad();
    let wt = Tensor::<3>::from_data(TensorData::new(w.clone(), [2, 3, 41]), &device);
    let y = gelu_closed_form(x.clone());
    let want = host(burn::tensor::activation::gelu(x.clone().detach()));
    for (i, (g, v)) in host(y.clone()).iter().zip(&want).enumerate() {
        assert!((g - v).abs() <= 1e-6, "gelu[{i}] {g} vs {v}");
    }
    let mut grads = (y * wt).sum().backward();
    let grad = host(x.grad_remove(&mut grads).unwrap());
    for (i, ((&g, &x), &w)) in grad.iter().zip(&xs).zip(&w).enumerate() {
        let x = x as f64;
        // d/dx x Phi(x) = Phi(x) + x phi(x).
        let phi = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
        let cdf = 0.5 * erfc_f64(-x / std::f64::consts::SQRT_2);
        let want = (cdf + x * phi) * w as f64;
        assert!(
            (g as f64 - want).abs() <= 2e-6 * want.abs().max(1.0),
            "grad[{i}] {g} vs {want}"
        );
    }
    // Off the graph it is burn's GELU.
    let plain = Tensor::<1>::from_data(TensorData::new(vec![1.0f32], [1]), &Device::flex());
    assert!((host(gelu_closed_form(plain))[0] - 0.841_344_7).abs() < 1e-6);
}

/// The complementary error function in f64, `1 - erf(x)` with `erf` by Simpson's rule on
/// `[0, x]` (20000 intervals): an independent reference, ample for a test.
fn erfc_f64(x: f64) -> f64 {
    let n = 20_000;
    let h = x / n as f64;
    let f = |t: f64| (-t * t).exp();
    let mut s = f(0.0) + f(x);
    for i in 1..n {
        s += f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
    }
    1.0 - s * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt()
}
