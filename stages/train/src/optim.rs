//! AdamW as PyTorch computes it, with the reference's per-parameter weight decay and global-L2
//! gradient clipping (vectors README, fact 10), plus gradient accumulation over micro-batches.
//!
//! Why not burn's `AdamW`: its update is the same formula, but (1) its gradient clipping is
//! per parameter, while the reference clips the norm of all gradients together, which needs every
//! gradient before any parameter moves; (2) its state is keyed by `ParamId`, which a model
//! reloaded from a checkpoint does not keep, while ours is keyed by the contract tensor names so
//! that a resumed run finds its moments again and the state file is readable by other tools;
//! (3) the decay exemption is by contract name (`bias`, `norm`). The step itself is written
//! over the module's parameters with burn's [`ModuleMapper`], like burn's own optimisers.
//!
//! PyTorch's `AdamW` step (`torch/optim/adamw.py`, single-tensor path), for step `t`:
//! ```text
//! theta <- theta * (1 - lr * wd)
//! m <- m + (g - m) * (1 - beta1);   v <- beta2 * v + (1 - beta2) * g^2
//! theta <- theta - (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
//! ```
//! and `clip_grad_norm_(max)`: `g <- g * min(max / (||g||_2 + 1e-6), 1)` over all gradients.

use std::collections::HashMap;
use std::path::Path;

use burn::module::{ModuleMapper, Param, ParamId};
use burn::tensor::{Device, Tensor, TensorData};
use cram_model::{NamedModule, transpose};
use rayon::prelude::*;
use safetensors::tensor::{Dtype, TensorView};

use crate::error::TrainError;
pub use crate::grads::GradAccumulator;
use crate::grads::{CHUNK, GradSum, f32_slice, f32_slice_mut, host_data};

/// Hyper-parameters of [`AdamW`] (the learning rate is given at each step).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// `(beta1, beta2)`.
    pub betas: (f64, f64),
    /// Added to the bias-corrected `sqrt(v)` (outside the square root).
    pub eps: f64,
    /// Decoupled weight decay, applied to the parameters [`AdamWConfig::decay`] names.
    pub weight_decay: f64,
    /// Which parameters weight decay applies to.
    pub decay: Decay,
    /// Global L2 norm the gradients are clipped to (`None`: no clipping).
    pub grad_clip: Option<f64>,
}

/// Which parameters [`AdamWConfig::weight_decay`] applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decay {
    /// Every one but biases and norms ([`decays`]), as the reference pretrains.
    ByName,
    /// Every parameter, as a single-group `torch.optim.AdamW` (the reference's fine-tuning).
    All,
}

impl Default for AdamWConfig {
    /// The `bert-o4` values: betas (0.9, 0.98), eps 1e-12, weight decay 0.01, clip 0.5.
    fn default() -> Self {
        Self {
            betas: (0.9, 0.98),
            eps: 1e-12,
            weight_decay: 0.01,
            decay: Decay::ByName,
            grad_clip: Some(0.5),
        }
    }
}

/// Whether the reference decays the named parameter: every one except those whose name contains
/// `bias` or `norm` (so the word embedding and `pos_scale` are decayed).
pub fn decays(name: &str) -> bool {
    cram_model::names::decays(name)
}

/// First and second moments of one parameter, flattened, off the autodiff graph: host vectors
/// on the CPU backend, tensors on a GPU.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // one per parameter: size does not matter
enum Moments {
    Device { m: Tensor<1>, v: Tensor<1> },
    Host { m: Vec<f32>, v: Vec<f32> },
}

impl Moments {
    /// The moments as host vectors (read back from a device if needed).
    fn into_host(self) -> Result<(Vec<f32>, Vec<f32>), String> {
        match self {
            Self::Host { m, v } => Ok((m, v)),
            Self::Device { m, v } => Ok((host_f32(m)?, host_f32(v)?)),
        }
    }

    /// The moments as tensors on `device`.
    fn into_device(self, device: &Device) -> (Tensor<1>, Tensor<1>) {
        match self {
            Self::Device { m, v } => (m.to_device(device), v.to_device(device)),
            Self::Host { m, v } => {
                let n = m.len();
                (
                    Tensor::from_data(TensorData::new(m, [n]), device),
                    Tensor::from_data(TensorData::new(v, [n]), device),
                )
            }
        }
    }
}

/// What one optimizer step reports.
#[derive(Debug, Clone)]
pub struct StepReport {
    /// Global L2 norm of the gradients before clipping, shape `[1]` (on the device; read it back
    /// only when needed, it synchronises).
    pub grad_norm: Tensor<1>,
}

/// AdamW with PyTorch's arithmetic, decay by contract name and global-norm clipping.
#[derive(Debug, Clone)]
pub struct AdamW {
    config: AdamWConfig,
    state: HashMap<String, Moments>,
    steps: u64,
    /// Contract `[rows, cols]` of the parameters the model holds transposed: their moments lie
    /// in the model's layout and are transposed to the contract's in the state file.
    transposed: HashMap<String, [usize; 2]>,
}

impl AdamW {
    /// A fresh optimizer (no moments, step 0).
    pub fn new(config: AdamWConfig) -> Self {
        Self {
            config,
            state: HashMap::new(),
            steps: 0,
            transposed: HashMap::new(),
        }
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// Optimizer steps taken (PyTorch's `state["step"]`).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Clips `grads` to the global norm and applies one AdamW step with learning rate `lr` to
    /// every parameter of `model` that has a gradient.
    ///
    /// On the CPU backend the update is one fused pass per parameter over host memory, in
    /// parallel over chunks; on a GPU it is a sequence of tensor ops. Both follow PyTorch's
    /// arithmetic in f32, in the same order.
    pub fn step<M: NamedModule>(
        &mut self,
        model: M,
        grads: GradAccumulator,
        lr: f64,
    ) -> (M, StepReport) {
        let names: HashMap<ParamId, String> = cram_model::param_names(&model).into_iter().collect();
        self.transposed = transposed_params(&model);
        self.steps += 1;
        let t = self.steps as i32;
        let (b1, b2) = self.config.betas;
        let consts = StepConsts {
            lr,
            b1,
            b2,
            eps: self.config.eps,
            weight_decay: self.config.weight_decay,
            decay: self.config.decay,
            bc1: 1.0 - b1.powi(t),
            bc2: 1.0 - b2.powi(t),
        };
        let device = model.device().inner();
        let (clip, grad_norm) = match grads.host_norm() {
            Some(norm) => {
                // PyTorch's clip coefficient, computed in f32 like its tensor.
                let coef = self
                    .config
                    .grad_clip
                    .map(|max| (max as f32 / (norm as f32 + 1e-6)).min(1.0));
                let norm = Tensor::from_data(TensorData::new(vec![norm as f32], [1]), &device);
                (Clip::Host(coef), norm)
            }
            None => {
                let norm = grads.global_norm();
                let coef = match (self.config.grad_clip, &norm) {
                    (Some(max), Some(norm)) => Some(
                        norm.clone()
                            .add_scalar(1e-6)
                            .recip()
                            .mul_scalar(max)
                            .clamp_max(1.0),
                    ),
                    _ => None,
                };
                let norm = norm.unwrap_or_else(|| Tensor::zeros([1], &device));
                (Clip::Device(coef), norm)
            }
        };
        let mut mapper = StepMapper {
            names: &names,
            grads: grads.grads,
            state: &mut self.state,
            clip,
            consts,
        };
        let model = model.map(&mut mapper);
        (model, StepReport { grad_norm })
    }

    /// Writes the moments (`m.<name>`, `v.<name>`) and the step count to a safetensors file.
    pub fn save(&self, path: &Path) -> Result<(), TrainError> {
        let mut bufs: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        let mut names: Vec<&String> = self.state.keys().collect();
        names.sort();
        for name in names {
            let (m, v) =
                self.state[name]
                    .clone()
                    .into_host()
                    .map_err(|reason| TrainError::Tensor {
                        what: format!("optimizer state of {name}"),
                        reason,
                    })?;
            let (m, v) = match self.transposed.get(name) {
                // Held as [c, r]; written as the contract's [r, c].
                Some(&[r, c]) => (transpose(&m, c, r), transpose(&v, c, r)),
                None => (m, v),
            };
            for (prefix, values) in [("m", m), ("v", v)] {
                let bytes: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
                bufs.push((format!("{prefix}.{name}"), vec![values.len()], bytes));
            }
        }
        let views = bufs
            .iter()
            .map(|(n, shape, bytes)| {
                TensorView::new(Dtype::F32, shape.clone(), bytes).map(|v| (n.clone(), v))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TrainError::safetensors(path, e))?;
        let meta = std::collections::BTreeMap::from([
            ("format".to_string(), "cram-adamw-v1".to_string()),
            ("steps".to_string(), self.steps.to_string()),
        ]);
        Ok(cram_model::checkpoint::write_safetensors(
            path, views, &meta,
        )?)
    }

    /// Reads what [`AdamW::save`] wrote, for `model` (whose parameter layouts the moments take);
    /// the moments go to the model's device (without autodiff).
    pub fn load<M: NamedModule>(
        config: AdamWConfig,
        path: &Path,
        model: &M,
    ) -> Result<Self, TrainError> {
        let device = model.device();
        let transposed = transposed_params(model);
        let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| TrainError::safetensors(path, e))?;
        let steps = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get("steps"))
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| TrainError::State {
                path: path.to_path_buf(),
                reason: "optimizer state has no `steps` metadata".into(),
            })?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| TrainError::safetensors(path, e))?;
        let device = device.clone().inner();
        let read = |name: &str| -> Result<Vec<f32>, TrainError> {
            let view = st
                .tensor(name)
                .map_err(|e| TrainError::safetensors(path, e))?;
            if view.dtype() != Dtype::F32 {
                return Err(TrainError::State {
                    path: path.to_path_buf(),
                    reason: format!("{name} is {:?}, expected F32", view.dtype()),
                });
            }
            let values: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            Ok(values)
        };
        let mut state = HashMap::new();
        for name in st.names() {
            if let Some(param) = name.strip_prefix("m.") {
                let (m, v) = (read(name)?, read(&format!("v.{param}"))?);
                let (m, v) = match transposed.get(param) {
                    // The contract's [r, c] into the model's [c, r].
                    Some(&[r, c]) if m.len() == r * c && v.len() == r * c => {
                        (transpose(&m, r, c), transpose(&v, r, c))
                    }
                    Some(&[r, c]) => {
                        return Err(TrainError::State {
                            path: path.to_path_buf(),
                            reason: format!(
                                "optimizer state of {param} has {} values, the model's [{r}, {c}] \
                                 has {}",
                                m.len(),
                                r * c
                            ),
                        });
                    }
                    None => (m, v),
                };
                let moments = Moments::Host { m, v };
                let moments = if cram_model::is_host(&device) {
                    moments
                } else {
                    let (m, v) = moments.into_device(&device);
                    Moments::Device { m, v }
                };
                state.insert(param.to_string(), moments);
            }
        }
        Ok(Self {
            config,
            state,
            steps,
            transposed,
        })
    }
}

/// Contract `[rows, cols]` of every parameter `model` holds transposed, by contract name.
fn transposed_params<M: NamedModule>(model: &M) -> HashMap<String, [usize; 2]> {
    let mut out = HashMap::new();
    model.visit_named(&mut |name, p| {
        if let Some(shape) = p.transposed_shape() {
            out.insert(name, shape);
        }
    });
    out
}

/// Reads a tensor back to the host as f32.
pub fn host_f32<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>, String> {
    cram_model::traffic::read_f32(t)
}

/// The scalars of one AdamW step.
#[derive(Debug, Clone, Copy)]
struct StepConsts {
    lr: f64,
    b1: f64,
    b2: f64,
    eps: f64,
    weight_decay: f64,
    decay: Decay,
    /// `1 - beta1^t`.
    bc1: f64,
    /// `1 - beta2^t`.
    bc2: f64,
}

impl StepConsts {
    /// The factor the parameter is multiplied by before the update (decoupled weight decay).
    fn decay_factor(&self, name: &str) -> f64 {
        let applies = match self.decay {
            Decay::All => true,
            Decay::ByName => decays(name),
        };
        if self.weight_decay != 0.0 && applies {
            1.0 - self.lr * self.weight_decay
        } else {
            1.0
        }
    }
}

/// The gradient-clipping coefficient of a step, where the gradients are.
#[allow(clippy::large_enum_variant)] // one per step: size does not matter
enum Clip {
    /// Host gradients: the coefficient as a number (`None`: no clipping).
    Host(Option<f32>),
    /// Device gradients: the coefficient as a tensor `[1]` on the device.
    Device(Option<Tensor<1>>),
}

/// Applies the AdamW update to each float parameter as the module is rebuilt: one fused pass
/// over host memory for host gradients (the CPU backend), tensor ops otherwise.
struct StepMapper<'a> {
    names: &'a HashMap<ParamId, String>,
    grads: HashMap<ParamId, GradSum>,
    state: &'a mut HashMap<String, Moments>,
    clip: Clip,
    consts: StepConsts,
}

impl ModuleMapper for StepMapper<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let (Some(grad), Some(name)) = (self.grads.remove(&id), self.names.get(&id)) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let require_grad = tensor.is_require_grad();
        let moments = self.state.remove(name);
        let decay = self.consts.decay_factor(name);
        let (theta, moments) = match (grad, &self.clip) {
            (GradSum::Host { values, .. }, Clip::Host(coef)) => {
                self.consts
                    .host_update(tensor.inner(), &values, moments, *coef, decay)
            }
            (grad, clip) => {
                let coef = match clip {
                    Clip::Device(c) => c.clone(),
                    Clip::Host(c) => c.map(|c| Tensor::from_data([c], &tensor.device().inner())),
                };
                self.consts
                    .device_update(tensor.inner(), grad.tensor(), moments, coef, decay)
            }
        };
        self.state.insert(name.clone(), moments);
        let mut updated = Tensor::from_inner(theta);
        if require_grad {
            updated = updated.require_grad();
        }
        Param::from_mapped_value(id, updated, mapper)
    }
}

impl StepConsts {
    /// The update with tensor ops (any device) of `theta` (off the graph).
    fn device_update<const D: usize>(
        &self,
        theta: Tensor<D>,
        grad: Tensor<1>,
        moments: Option<Moments>,
        coef: Option<Tensor<1>>,
        decay: f64,
    ) -> (Tensor<D>, Moments) {
        let dims = theta.dims();
        let n = theta.shape().num_elements();
        let theta = theta.reshape([n]);
        let device = theta.device();
        let grad = grad.to_device(&device);
        let g = match coef {
            Some(c) => grad * c.to_device(&device),
            None => grad,
        };
        let (m, v) = match moments {
            Some(mom) => {
                let (m, v) = mom.into_device(&device);
                (
                    m.clone() + (g.clone() - m).mul_scalar(1.0 - self.b1),
                    v.mul_scalar(self.b2) + g.square().mul_scalar(1.0 - self.b2),
                )
            }
            None => (
                g.clone().mul_scalar(1.0 - self.b1),
                g.square().mul_scalar(1.0 - self.b2),
            ),
        };
        let theta = if decay != 1.0 {
            theta.mul_scalar(decay)
        } else {
            theta
        };
        let denom = v
            .clone()
            .sqrt()
            .div_scalar(self.bc2.sqrt())
            .add_scalar(self.eps);
        let theta = theta - (m.clone() / denom).mul_scalar(self.lr / self.bc1);
        (theta.reshape(dims), Moments::Device { m, v })
    }

    /// The update in one fused pass over host memory, in parallel over chunks: burn's
    /// element-wise CPU kernels run on one core and make a pass over memory per op, a dozen per
    /// parameter; this reads and writes each value once, on every core.
    fn host_update<const D: usize>(
        &self,
        theta: Tensor<D>,
        grad: &TensorData,
        moments: Option<Moments>,
        coef: Option<f32>,
        decay: f64,
    ) -> (Tensor<D>, Moments) {
        let device = theta.device();
        let mut data = host_data(theta);
        let g = f32_slice(grad);
        let (mut m, mut v) = match moments {
            Some(mom) => mom.into_host().expect("optimizer moments read back as f32"),
            None => (vec![0.0; g.len()], vec![0.0; g.len()]),
        };
        // Constants rounded to f32 as burn rounds a scalar operand of an f32 tensor op.
        let c = HostConsts {
            coef,
            one_minus_b1: (1.0 - self.b1) as f32,
            b2: self.b2 as f32,
            one_minus_b2: (1.0 - self.b2) as f32,
            decay: decay as f32,
            sqrt_bc2: self.bc2.sqrt() as f32,
            eps: self.eps as f32,
            step_size: (self.lr / self.bc1) as f32,
        };
        f32_slice_mut(&mut data)
            .par_chunks_mut(CHUNK)
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .zip(g.par_chunks(CHUNK))
            .for_each(|(((theta, m), v), g)| adamw_update(theta, m, v, g, &c));
        (Tensor::from_data(data, &device), Moments::Host { m, v })
    }
}

/// The f32 scalars of the fused host update.
struct HostConsts {
    coef: Option<f32>,
    one_minus_b1: f32,
    b2: f32,
    one_minus_b2: f32,
    decay: f32,
    sqrt_bc2: f32,
    eps: f32,
    step_size: f32,
}

/// PyTorch's AdamW update (module docs) of one chunk, in the order of its single-tensor path.
fn adamw_update(theta: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], c: &HostConsts) {
    for i in 0..theta.len() {
        let g = match c.coef {
            Some(coef) => g[i] * coef,
            None => g[i],
        };
        let mi = m[i] + (g - m[i]) * c.one_minus_b1;
        let vi = v[i] * c.b2 + (g * g) * c.one_minus_b2;
        m[i] = mi;
        v[i] = vi;
        let denom = vi.sqrt() / c.sqrt_bc2 + c.eps;
        let t = if c.decay != 1.0 {
            theta[i] * c.decay
        } else {
            theta[i]
        };
        theta[i] = t - (mi / denom) * c.step_size;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fused_update_matches_the_formula() {
        let c = HostConsts {
            coef: Some(0.5),
            one_minus_b1: 0.1,
            b2: 0.98,
            one_minus_b2: 0.02,
            decay: 0.99,
            sqrt_bc2: 0.2,
            eps: 1e-12,
            step_size: 0.01,
        };
        let (mut theta, mut m, mut v) = (vec![1.0f32, -2.0], vec![0.5f32, 0.0], vec![0.25f32, 0.0]);
        adamw_update(&mut theta, &mut m, &mut v, &[2.0, 0.0], &c);
        // g = 1: m = 0.5 + 0.5 * 0.1 = 0.55; v = 0.245 + 0.02 = 0.265;
        // theta = 0.99 - 0.55 / (sqrt(0.265) / 0.2 + 1e-12) * 0.01.
        let want = 0.99 - 0.55 / (0.265f64.sqrt() / 0.2) * 0.01;
        assert!((m[0] - 0.55).abs() < 1e-7 && (v[0] - 0.265).abs() < 1e-7);
        assert!(
            (theta[0] as f64 - want).abs() < 1e-6,
            "{} vs {want}",
            theta[0]
        );
        // A zero gradient with zero moments only decays (0 / eps is 0).
        assert_eq!((m[1], v[1]), (0.0, 0.0));
        assert!((theta[1] - (-2.0 * 0.99)).abs() < 1e-7);
    }
}
