//! Where parameter values come from when a model is built: a seeded random initialisation
//! (the reference's recipe) or the tensors of a checkpoint, both addressed by contract name.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::error::ModelError;

/// How a fresh parameter is initialised (fact 9 of the contract).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Init {
    /// normal(0, init_std).
    Normal,
    /// normal(0, init_std) with one row (the pad row) zeroed.
    NormalZeroRow(usize),
    /// All zeros (biases).
    Zeros,
    /// All ones (LayerNorm weights).
    Ones,
    /// A constant (e.g. `pos_scale = 1/sqrt(H)`).
    Const(f32),
}

/// A supplier of parameter values by contract name.
pub(crate) trait ParamSource {
    /// The values of `name`, row-major, with exactly `shape`.
    fn fetch(&mut self, name: &str, shape: &[usize], init: Init) -> Result<Vec<f32>, ModelError>;
    /// The device parameters are created on.
    fn device(&self) -> &Device;

    /// A rank-1 parameter.
    fn param1(&mut self, name: &str, n: usize, init: Init) -> Result<Param<Tensor<1>>, ModelError> {
        let values = self.fetch(name, &[n], init)?;
        Ok(Param::from_data(
            TensorData::new(values, [n]),
            self.device(),
        ))
    }

    /// A rank-2 parameter whose values (row-major `shape`, as named and stored in checkpoints)
    /// are held transposed, `[shape[1], shape[0]]`.
    fn param2_transposed(
        &mut self,
        name: &str,
        shape: [usize; 2],
        init: Init,
    ) -> Result<Param<Tensor<2>>, ModelError> {
        let values = self.fetch(name, &shape, init)?;
        let [rows, cols] = shape;
        Ok(Param::from_data(
            TensorData::new(transpose(&values, rows, cols), [cols, rows]),
            self.device(),
        ))
    }

    /// A rank-2 parameter.
    fn param2(
        &mut self,
        name: &str,
        shape: [usize; 2],
        init: Init,
    ) -> Result<Param<Tensor<2>>, ModelError> {
        let values = self.fetch(name, &shape, init)?;
        Ok(Param::from_data(
            TensorData::new(values, shape),
            self.device(),
        ))
    }
}

/// The `[cols, rows]` transpose of a row-major `[rows, cols]` matrix.
pub fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    assert_eq!(values.len(), rows * cols, "a [{rows}, {cols}] matrix");
    let mut out = vec![0.0; values.len()];
    for (r, row) in values.chunks_exact(cols.max(1)).enumerate() {
        for (c, &v) in row.iter().enumerate() {
            out[c * rows + r] = v;
        }
    }
    out
}

/// Seeded random initialisation: normal(0, std) weights, zero biases, unit norms.
///
/// The values are drawn on the host from a ChaCha8 stream in parameter order, so a seed gives
/// the same model on every backend and independently of burn's per-device RNG state.
pub(crate) struct RandomInit {
    rng: ChaCha8Rng,
    std: f32,
    device: Device,
}

impl RandomInit {
    /// A source seeded with `seed`, drawing normal weights with standard deviation `std`.
    pub(crate) fn new(seed: u64, std: f64, device: &Device) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            std: std as f32,
            device: device.clone(),
        }
    }

    fn values(&mut self, shape: &[usize], init: Init) -> Vec<f32> {
        let n: usize = shape.iter().product();
        match init {
            Init::Zeros => vec![0.0; n],
            Init::Ones => vec![1.0; n],
            Init::Const(c) => vec![c; n],
            Init::Normal | Init::NormalZeroRow(_) => {
                let mut v: Vec<f32> = if self.std > 0.0 {
                    let normal = Normal::new(0.0f32, self.std).expect("finite std");
                    (0..n).map(|_| normal.sample(&mut self.rng)).collect()
                } else {
                    vec![0.0; n]
                };
                if let Init::NormalZeroRow(row) = init {
                    let width = shape.get(1).copied().unwrap_or(1);
                    if let Some(r) = v.get_mut(row * width..(row + 1) * width) {
                        r.fill(0.0);
                    }
                }
                v
            }
        }
    }
}

impl ParamSource for RandomInit {
    fn fetch(&mut self, _name: &str, shape: &[usize], init: Init) -> Result<Vec<f32>, ModelError> {
        Ok(self.values(shape, init))
    }
    fn device(&self) -> &Device {
        &self.device
    }
}

/// A tensor read from a checkpoint: shape and F32 values.
#[derive(Debug, Clone)]
pub(crate) struct HostTensor {
    pub(crate) shape: Vec<usize>,
    pub(crate) values: Vec<f32>,
}

/// Selects the names a fallback initialises freshly.
pub(crate) type NamePredicate = Box<dyn Fn(&str) -> bool>;

/// Values from a checkpoint's tensors; names the model asks for that the checkpoint lacks
/// are an error unless a fallback (fresh initialisation) covers them.
pub(crate) struct CheckpointSource {
    pub(crate) path: PathBuf,
    pub(crate) tensors: HashMap<String, HostTensor>,
    pub(crate) fallback: Option<(NamePredicate, RandomInit)>,
    pub(crate) device: Device,
}

impl CheckpointSource {
    /// A source over already-parsed tensors of `path`.
    pub(crate) fn new(path: &Path, tensors: HashMap<String, HostTensor>, device: &Device) -> Self {
        Self {
            path: path.to_path_buf(),
            tensors,
            fallback: None,
            device: device.clone(),
        }
    }
}

impl ParamSource for CheckpointSource {
    fn fetch(&mut self, name: &str, shape: &[usize], init: Init) -> Result<Vec<f32>, ModelError> {
        if let Some((use_fresh, random)) = &mut self.fallback
            && use_fresh(name)
        {
            return random.fetch(name, shape, init);
        }
        let Some(t) = self.tensors.get(name) else {
            return Err(ModelError::MissingTensor {
                path: self.path.clone(),
                name: name.to_string(),
                expected: shape.to_vec(),
            });
        };
        if t.shape != shape {
            return Err(ModelError::ShapeMismatch {
                path: self.path.clone(),
                name: name.to_string(),
                expected: shape.to_vec(),
                found: t.shape.clone(),
            });
        }
        Ok(t.values.clone())
    }
    fn device(&self) -> &Device {
        &self.device
    }
}
