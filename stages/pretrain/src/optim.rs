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

use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::tensor::{Device, Gradients, Tensor, TensorData};
use cram_model::{MlmModel, NamedParam};
use safetensors::tensor::{Dtype, TensorView};

use crate::error::PretrainError;

/// Hyper-parameters of [`AdamW`] (the learning rate is given at each step).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// `(beta1, beta2)`.
    pub betas: (f64, f64),
    /// Added to the bias-corrected `sqrt(v)` (outside the square root).
    pub eps: f64,
    /// Decoupled weight decay, applied to parameters for which `decays(name)` holds.
    pub weight_decay: f64,
    /// Global L2 norm the gradients are clipped to (`None`: no clipping).
    pub grad_clip: Option<f64>,
}

impl Default for AdamWConfig {
    /// The `bert-o4` values: betas (0.9, 0.98), eps 1e-12, weight decay 0.01, clip 0.5.
    fn default() -> Self {
        Self {
            betas: (0.9, 0.98),
            eps: 1e-12,
            weight_decay: 0.01,
            grad_clip: Some(0.5),
        }
    }
}

/// Whether the reference decays the named parameter: every one except those whose name contains
/// `bias` or `norm` (so the word embedding and `pos_scale` are decayed).
pub fn decays(name: &str) -> bool {
    cram_model::names::decays(name)
}

/// The sum of a model's gradients over micro-batches, flattened per parameter, off the autodiff
/// graph. The caller scales each micro-batch's loss (by `1 / micro-batches`, as the reference
/// does) before its backward pass.
#[derive(Debug, Default)]
pub struct GradAccumulator {
    grads: HashMap<ParamId, Tensor<1>>,
    micro_batches: usize,
}

impl GradAccumulator {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the gradients of every parameter of `model` found in `grads` (consumed).
    pub fn add(&mut self, model: &MlmModel, mut grads: Gradients) {
        let acc = &mut self.grads;
        model.visit_named(&mut |_, p| {
            let (id, g) = match p {
                NamedParam::D1(p) => (p.id, p.val().grad_remove(&mut grads)),
                NamedParam::D2(p) => (
                    p.id,
                    p.val().grad_remove(&mut grads).map(|g| {
                        let n = g.shape().num_elements();
                        g.reshape([n])
                    }),
                ),
            };
            if let Some(g) = g {
                let sum = match acc.remove(&id) {
                    Some(prev) => prev + g,
                    None => g,
                };
                acc.insert(id, sum);
            }
        });
        self.micro_batches += 1;
    }

    /// Multiplies every accumulated gradient by `factor` (an accumulation cut short keeps the
    /// mean over the micro-batches it has).
    pub fn scale(&mut self, factor: f64) {
        for g in self.grads.values_mut() {
            *g = g.clone().mul_scalar(factor);
        }
    }

    /// Micro-batches added so far.
    pub fn micro_batches(&self) -> usize {
        self.micro_batches
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.grads.is_empty()
    }

    /// The accumulated (flattened) gradient of a parameter.
    pub fn get(&self, id: &ParamId) -> Option<&Tensor<1>> {
        self.grads.get(id)
    }

    /// The global L2 norm of all gradients, shape `[1]`, left on the device.
    pub fn global_norm(&self) -> Option<Tensor<1>> {
        let mut total: Option<Tensor<1>> = None;
        for g in self.grads.values() {
            let sq = g.clone().square().sum();
            total = Some(match total {
                Some(t) => t + sq,
                None => sq,
            });
        }
        total.map(|t| t.sqrt())
    }
}

/// First and second moments of one parameter, flattened, off the autodiff graph.
#[derive(Debug, Clone)]
struct Moments {
    m: Tensor<1>,
    v: Tensor<1>,
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
}

impl AdamW {
    /// A fresh optimizer (no moments, step 0).
    pub fn new(config: AdamWConfig) -> Self {
        Self {
            config,
            state: HashMap::new(),
            steps: 0,
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
    pub fn step(
        &mut self,
        model: MlmModel,
        grads: GradAccumulator,
        lr: f64,
    ) -> (MlmModel, StepReport) {
        let names: HashMap<ParamId, String> = cram_model::param_names(&model).into_iter().collect();
        let norm = grads.global_norm();
        let grad_norm = match &norm {
            Some(n) => n.clone(),
            None => Tensor::zeros([1], &model.encoder().device().inner()),
        };
        let coef = match (self.config.grad_clip, norm) {
            (Some(max), Some(norm)) => {
                Some(norm.add_scalar(1e-6).recip().mul_scalar(max).clamp_max(1.0))
            }
            _ => None,
        };
        self.steps += 1;
        let t = self.steps as i32;
        let (b1, b2) = self.config.betas;
        let mut mapper = StepMapper {
            names: &names,
            grads: grads.grads,
            state: &mut self.state,
            coef,
            lr,
            b1,
            b2,
            eps: self.config.eps,
            weight_decay: self.config.weight_decay,
            bc1: 1.0 - b1.powi(t),
            bc2: 1.0 - b2.powi(t),
        };
        let model = model.map(&mut mapper);
        (model, StepReport { grad_norm })
    }

    /// Writes the moments (`m.<name>`, `v.<name>`) and the step count to a safetensors file.
    pub fn save(&self, path: &Path) -> Result<(), PretrainError> {
        let mut bufs: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        let mut names: Vec<&String> = self.state.keys().collect();
        names.sort();
        for name in names {
            let mom = &self.state[name];
            for (prefix, t) in [("m", &mom.m), ("v", &mom.v)] {
                let values = host_f32(t.clone()).map_err(|reason| PretrainError::Tensor {
                    what: format!("optimizer state {prefix}.{name}"),
                    reason,
                })?;
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
            .map_err(|e| PretrainError::safetensors(path, e))?;
        let meta = HashMap::from([
            ("format".to_string(), "cram-adamw-v1".to_string()),
            ("steps".to_string(), self.steps.to_string()),
        ]);
        safetensors::serialize_to_file(views, Some(meta), path)
            .map_err(|e| PretrainError::safetensors(path, e))
    }

    /// Reads what [`AdamW::save`] wrote; the moments go to `device` (without autodiff).
    pub fn load(config: AdamWConfig, path: &Path, device: &Device) -> Result<Self, PretrainError> {
        let bytes = std::fs::read(path).map_err(|e| PretrainError::io(path, e))?;
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| PretrainError::safetensors(path, e))?;
        let steps = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get("steps"))
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| PretrainError::Checkpoint {
                path: path.to_path_buf(),
                reason: "optimizer state has no `steps` metadata".into(),
            })?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| PretrainError::safetensors(path, e))?;
        let device = device.clone().inner();
        let read = |name: &str| -> Result<Tensor<1>, PretrainError> {
            let view = st
                .tensor(name)
                .map_err(|e| PretrainError::safetensors(path, e))?;
            if view.dtype() != Dtype::F32 {
                return Err(PretrainError::Checkpoint {
                    path: path.to_path_buf(),
                    reason: format!("{name} is {:?}, expected F32", view.dtype()),
                });
            }
            let values: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let n = values.len();
            Ok(Tensor::from_data(TensorData::new(values, [n]), &device))
        };
        let mut state = HashMap::new();
        for name in st.names() {
            if let Some(param) = name.strip_prefix("m.") {
                let m = read(name)?;
                let v = read(&format!("v.{param}"))?;
                state.insert(param.to_string(), Moments { m, v });
            }
        }
        Ok(Self {
            config,
            state,
            steps,
        })
    }
}

/// Reads a tensor back to the host as f32.
pub(crate) fn host_f32<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>, String> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| format!("{e:?}"))
}

/// Applies the AdamW update to each float parameter as the module is rebuilt.
struct StepMapper<'a> {
    names: &'a HashMap<ParamId, String>,
    grads: HashMap<ParamId, Tensor<1>>,
    state: &'a mut HashMap<String, Moments>,
    coef: Option<Tensor<1>>,
    lr: f64,
    b1: f64,
    b2: f64,
    eps: f64,
    weight_decay: f64,
    bc1: f64,
    bc2: f64,
}

impl ModuleMapper for StepMapper<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let (Some(grad), Some(name)) = (self.grads.remove(&id), self.names.get(&id)) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let require_grad = tensor.is_require_grad();
        let dims = tensor.dims();
        let n = tensor.shape().num_elements();
        let theta = tensor.inner().reshape([n]);
        let g = match &self.coef {
            Some(c) => grad * c.clone(),
            None => grad,
        };
        let mom = match self.state.remove(name) {
            Some(Moments { m, v }) => Moments {
                m: m.clone() + (g.clone() - m).mul_scalar(1.0 - self.b1),
                v: v.mul_scalar(self.b2) + g.square().mul_scalar(1.0 - self.b2),
            },
            None => Moments {
                m: g.clone().mul_scalar(1.0 - self.b1),
                v: g.square().mul_scalar(1.0 - self.b2),
            },
        };
        let theta = if self.weight_decay != 0.0 && decays(name) {
            theta.mul_scalar(1.0 - self.lr * self.weight_decay)
        } else {
            theta
        };
        let denom = mom
            .v
            .clone()
            .sqrt()
            .div_scalar(self.bc2.sqrt())
            .add_scalar(self.eps);
        let theta = theta - (mom.m.clone() / denom).mul_scalar(self.lr / self.bc1);
        self.state.insert(name.clone(), mom);
        let mut updated = Tensor::from_inner(theta.reshape(dims));
        if require_grad {
            updated = updated.require_grad();
        }
        Param::from_mapped_value(id, updated, mapper)
    }
}
