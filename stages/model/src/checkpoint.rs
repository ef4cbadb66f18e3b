//! Checkpoint IO in the `cram-ref-v1` safetensors contract, and `config.json`.
//!
//! Written with the `safetensors` crate directly rather than burn's `SafetensorsStore`: the
//! contract fixes every tensor name, the `[out, in]` layout and the `__metadata__` block
//! (`format`, `kind`, `config`), and the names come from one table ([`crate::names`]) that the
//! model builders use too.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::tensor::Device;
use safetensors::{Dtype, SafeTensors};

use crate::classification::ClassificationModel;
use crate::config::ModelConfig;
use crate::encoder::NamedParam;
use crate::error::ModelError;
use crate::init::{CheckpointSource, HostTensor, RandomInit};
use crate::mlm::MlmModel;

/// Value of the `format` metadata key.
pub const FORMAT: &str = "cram-ref-v1";
/// `kind` of an MLM checkpoint.
pub const KIND_MLM: &str = "mlm";
/// `kind` of a classification checkpoint.
pub const KIND_CLASSIFICATION: &str = "classification";

/// A tensor read from a file: its shape and row-major values.
pub type Loaded<T> = (Vec<usize>, Vec<T>);

/// A name, shape and little-endian F32 bytes of a tensor to write.
type Outgoing = (String, Vec<usize>, Vec<u8>);

/// A safetensors file read into memory, with typed access to its tensors.
#[derive(Debug, Clone)]
pub struct TensorFile {
    path: PathBuf,
    bytes: Vec<u8>,
    metadata: HashMap<String, String>,
}

impl TensorFile {
    /// Reads and parses `path`.
    pub fn open(path: &Path) -> Result<Self, ModelError> {
        let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let (_, meta) =
            SafeTensors::read_metadata(&bytes).map_err(|source| ModelError::Safetensors {
                path: path.to_path_buf(),
                source,
            })?;
        let metadata = meta.metadata().clone().unwrap_or_default();
        Ok(Self {
            path: path.to_path_buf(),
            bytes,
            metadata,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `__metadata__` block.
    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }

    pub(crate) fn view(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("parsed once in open")
    }

    /// Names of all tensors.
    pub fn names(&self) -> Vec<String> {
        self.view()
            .names()
            .into_iter()
            .map(str::to_string)
            .collect()
    }

    /// An F32 tensor's shape and values (`Ok(None)` when absent).
    pub fn f32(&self, name: &str) -> Result<Option<Loaded<f32>>, ModelError> {
        let st = self.view();
        let Ok(t) = st.tensor(name) else {
            return Ok(None);
        };
        if t.dtype() != Dtype::F32 {
            return Err(ModelError::Dtype {
                path: self.path.clone(),
                name: name.to_string(),
                found: format!("{:?}", t.dtype()),
            });
        }
        let values = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok(Some((t.shape().to_vec(), values)))
    }

    /// An integer (I64 or I32) tensor's shape and values (`Ok(None)` when absent).
    pub fn i64(&self, name: &str) -> Result<Option<Loaded<i64>>, ModelError> {
        let st = self.view();
        let Ok(t) = st.tensor(name) else {
            return Ok(None);
        };
        let values = match t.dtype() {
            Dtype::I64 => t
                .data()
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect(),
            Dtype::I32 => t
                .data()
                .chunks_exact(4)
                .map(|b| i32::from_le_bytes(b.try_into().expect("4 bytes")) as i64)
                .collect(),
            other => {
                return Err(ModelError::Dtype {
                    path: self.path.clone(),
                    name: name.to_string(),
                    found: format!("{other:?} (expected an integer type)"),
                });
            }
        };
        Ok(Some((t.shape().to_vec(), values)))
    }

    /// The model config of the `config` metadata key.
    pub fn config(&self) -> Result<ModelConfig, ModelError> {
        let json = self
            .metadata
            .get("config")
            .ok_or_else(|| ModelError::Metadata {
                path: self.path.clone(),
                reason: "no `config` key".into(),
            })?;
        let config: ModelConfig =
            serde_json::from_str(json).map_err(|source| ModelError::ConfigJson {
                path: self.path.clone(),
                source,
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks `format` (must be `cram-ref-v1`) and `kind` (must be `kind`).
    pub fn check_kind(&self, kind: &str) -> Result<(), ModelError> {
        match self.metadata.get("format").map(String::as_str) {
            Some(FORMAT) => {}
            other => {
                return Err(ModelError::Metadata {
                    path: self.path.clone(),
                    reason: format!("format is {other:?}, expected {FORMAT:?}"),
                });
            }
        }
        match self.metadata.get("kind").map(String::as_str) {
            Some(k) if k == kind => Ok(()),
            other => Err(ModelError::Metadata {
                path: self.path.clone(),
                reason: format!("kind is {other:?}, expected {kind:?}"),
            }),
        }
    }

    /// Every F32 tensor, as a source of model parameters.
    pub(crate) fn source(&self, device: &Device) -> Result<CheckpointSource, ModelError> {
        let mut tensors = HashMap::new();
        for name in self.names() {
            let st = self.view();
            let t = st.tensor(&name).map_err(|source| ModelError::Safetensors {
                path: self.path.clone(),
                source,
            })?;
            if t.dtype() != Dtype::F32 {
                continue;
            }
            if let Some((shape, values)) = self.f32(&name)? {
                tensors.insert(name, HostTensor { shape, values });
            }
        }
        Ok(CheckpointSource::new(&self.path, tensors, device))
    }
}

fn collect_named(
    visit: impl FnOnce(&mut dyn FnMut(String, NamedParam<'_>)),
) -> Result<Vec<Outgoing>, ModelError> {
    let mut out = Vec::new();
    let mut err = None;
    visit(&mut |name, p| {
        if err.is_some() {
            return;
        }
        match p.to_vec() {
            Ok(values) => {
                let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                out.push((name, p.shape(), bytes));
            }
            Err(reason) => err = Some(ModelError::Read { name, reason }),
        }
    });
    match err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

fn write(
    path: &Path,
    tensors: Vec<Outgoing>,
    kind: &str,
    config: &ModelConfig,
) -> Result<(), ModelError> {
    let st_err = |source| ModelError::Safetensors {
        path: path.to_path_buf(),
        source,
    };
    let views = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(st_err)?;
    let metadata = BTreeMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("kind".to_string(), kind.to_string()),
        ("config".to_string(), config.to_json()),
    ]);
    write_safetensors(path, views, &metadata)
}

/// Writes a safetensors file whose bytes depend only on its tensors and metadata.
///
/// The `safetensors` crate keeps `__metadata__` in a `HashMap` and writes it in the map's
/// iteration order, which differs from process to process: the same checkpoint would get
/// different bytes, and the engine's early cutoff (equal output hashes) would never fire after
/// a pretraining rerun. The crate serialises the tensors (their layout is deterministic); the
/// header is then rewritten here with its keys sorted, padded with spaces to 8 bytes as the
/// format allows.
pub fn write_safetensors(
    path: &Path,
    views: Vec<(String, safetensors::tensor::TensorView<'_>)>,
    metadata: &BTreeMap<String, String>,
) -> Result<(), ModelError> {
    let st_err = |source| ModelError::Safetensors {
        path: path.to_path_buf(),
        source,
    };
    let bytes = safetensors::serialize(views, None).map_err(st_err)?;
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8-byte length")) as usize;
    let mut header: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n]).expect("safetensors writes a JSON header");
    if !metadata.is_empty() {
        header.insert(
            "__metadata__".to_string(),
            serde_json::to_value(metadata).expect("string map"),
        );
    }
    let mut json = serde_json::to_vec(&header).expect("JSON header");
    json.resize(json.len().div_ceil(8) * 8, b' ');
    // Header then the tensor bytes as they are, without copying them into a second buffer.
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(path)?;
        file.write_all(&(json.len() as u64).to_le_bytes())?;
        file.write_all(&json)?;
        file.write_all(&bytes[8 + n..])
    };
    write().map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes an MLM checkpoint (`kind = mlm`) in the contract naming.
pub fn save_mlm(model: &MlmModel, config: &ModelConfig, path: &Path) -> Result<(), ModelError> {
    let tensors = collect_named(|f| model.visit_named(f))?;
    write(path, tensors, KIND_MLM, config)
}

/// Writes a classification checkpoint (`kind = classification`) in the contract naming.
pub fn save_classification(
    model: &ClassificationModel,
    config: &ModelConfig,
    path: &Path,
) -> Result<(), ModelError> {
    let tensors = collect_named(|f| model.visit_named(f))?;
    write(path, tensors, KIND_CLASSIFICATION, config)
}

/// Loads an MLM checkpoint and its config onto `device`.
pub fn load_mlm(path: &Path, device: &Device) -> Result<(MlmModel, ModelConfig), ModelError> {
    let file = TensorFile::open(path)?;
    file.check_kind(KIND_MLM)?;
    let config = file.config()?;
    let mut src = file.source(device)?;
    Ok((MlmModel::build(&mut src, &config)?, config))
}

/// Loads the tensors of an MLM checkpoint into a model of the given `config` (e.g. the
/// file's config with dropout switched off), checking every name and shape.
pub fn load_mlm_with_config(
    path: &Path,
    config: &ModelConfig,
    device: &Device,
) -> Result<MlmModel, ModelError> {
    let file = TensorFile::open(path)?;
    let mut src = file.source(device)?;
    MlmModel::build(&mut src, config)
}

/// Loads the tensors of a classification checkpoint into a model of the given `config`.
pub fn load_classification_with_config(
    path: &Path,
    config: &ModelConfig,
    device: &Device,
) -> Result<ClassificationModel, ModelError> {
    let file = TensorFile::open(path)?;
    let mut src = file.source(device)?;
    ClassificationModel::build(&mut src, config)
}

/// Loads a classification checkpoint and its config onto `device`.
pub fn load_classification(
    path: &Path,
    device: &Device,
) -> Result<(ClassificationModel, ModelConfig), ModelError> {
    let file = TensorFile::open(path)?;
    file.check_kind(KIND_CLASSIFICATION)?;
    let config = file.config()?;
    let mut src = file.source(device)?;
    Ok((ClassificationModel::build(&mut src, &config)?, config))
}

/// The encoder of an MLM checkpoint with a fresh, seeded pooler and head of `num_labels` classes.
pub(crate) fn load_classification_from_mlm(
    path: &Path,
    num_labels: usize,
    seed: u64,
    device: &Device,
) -> Result<(ClassificationModel, ModelConfig), ModelError> {
    let file = TensorFile::open(path)?;
    file.check_kind(KIND_MLM)?;
    let mut config = file.config()?;
    config.num_labels = num_labels;
    let mut src = file.source(device)?;
    let fresh = RandomInit::new(seed, config.init_std, device);
    src.fallback = Some((Box::new(|name: &str| !name.starts_with("encoder.")), fresh));
    Ok((ClassificationModel::build(&mut src, &config)?, config))
}

/// Writes the resolved config as pretty JSON (`config.json` of a checkpoint directory).
pub fn write_config_json(config: &ModelConfig, path: &Path) -> Result<(), ModelError> {
    let json = serde_json::to_string_pretty(config).expect("ModelConfig serialises to JSON");
    std::fs::write(path, json + "\n").map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads and validates a `config.json`.
pub fn read_config_json(path: &Path) -> Result<ModelConfig, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let config: ModelConfig =
        serde_json::from_str(&text).map_err(|source| ModelError::ConfigJson {
            path: path.to_path_buf(),
            source,
        })?;
    config.validate()?;
    Ok(config)
}
