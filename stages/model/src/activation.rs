//! Softmax and GELU with their gradients attached in closed form: burn's autodiff records
//! both as chains of element-wise ops, each a single-core pass on the CPU backend.

use burn::tensor::activation::{gelu, softmax};
use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;

/// Softmax over the last dimension, with its gradient attached in closed form.
///
/// burn's autodiff has no softmax op of its own: it records the decomposition (max, subtract,
/// `exp`, sum, divide) and differentiates each step, and on the CPU each is a single-core pass
/// with a scalar `exp`. Here the probabilities `P` come from the backend's fused kernel, off the
/// graph, and the gradient is attached through `d = x - stop(x)` (value 0, gradient the
/// identity): `y = P + P * (d - sum(P * d))` equals `P`, and its Jacobian is
/// `diag(P) - P P^T`, softmax's own.
pub fn softmax_closed_form<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let last = D - 1;
    let p = softmax(x.clone().inner(), last);
    if !x.is_tracked() {
        return if x.is_autodiff() {
            Tensor::from_inner(p)
        } else {
            p
        };
    }
    let p = Tensor::<D>::from_inner(p);
    let d = x.clone() - x.detach();
    let expected = (p.clone() * d.clone()).sum_dim(last);
    p.clone() + p * (d - expected)
}

/// GELU (`x * Phi(x)`, the exact erf form), with its gradient attached in closed form.
///
/// burn's autodiff GELU runs five single-core passes forward (the scalar `erf` among them) and
/// about a dozen backward, with the derivative of the tanh approximation. On the CPU backend
/// this computes `gelu(x)` and its exact slope `Phi(x) + x phi(x)` in one parallel host pass and
/// attaches the slope through `d = x - stop(x)`: `y = gelu(x) + slope * d`. Elsewhere (GPUs, or
/// off the graph) it is burn's `gelu`.
pub fn gelu_closed_form<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !x.is_tracked() || !crate::device::is_host(&x.device()) {
        return gelu(x);
    }
    let shape = x.shape();
    let device = x.device().inner();
    let data = x.clone().inner().into_data().convert::<f32>();
    let input = data.as_slice::<f32>().expect("f32 activations");
    let mut value = vec![0f32; input.len()];
    let mut slope = vec![0f32; input.len()];
    const CHUNK: usize = 1 << 14;
    value
        .par_chunks_mut(CHUNK)
        .zip(slope.par_chunks_mut(CHUNK))
        .zip(input.par_chunks(CHUNK))
        .for_each(|((value, slope), input)| gelu_with_slope(input, value, slope));
    let value = Tensor::<D>::from_data(TensorData::new(value, shape.clone()), &device);
    let slope = Tensor::<D>::from_data(TensorData::new(slope, shape), &device);
    let d = x.clone() - x.detach();
    Tensor::from_inner(value) + Tensor::from_inner(slope) * d
}

/// `gelu(x) = x (1 + erf(x / sqrt 2)) / 2` (in burn's order of operations) and its derivative
/// `(1 + erf(x / sqrt 2)) / 2 + x exp(-x^2 / 2) / sqrt(2 pi)`.
fn gelu_with_slope(input: &[f32], value: &mut [f32], slope: &mut [f32]) {
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    for ((&x, y), s) in input.iter().zip(value).zip(slope) {
        let cdf2 = libm::erff(x / std::f32::consts::SQRT_2) + 1.0;
        *y = x * cdf2 / 2.0;
        *s = cdf2 / 2.0 + x * (-0.5 * x * x).exp() * INV_SQRT_2PI;
    }
}
