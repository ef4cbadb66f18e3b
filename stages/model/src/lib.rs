//! Crammed BERT in burn: the encoder, the masked-language model and the sequence-classification
//! model of Geiping & Goldstein (2022), their configs and presets, and the `cram-ref-v1`
//! safetensors checkpoint contract (`../shared/vectors/README.md`).
//!
//! ```no_run
//! use cram_model::{MlmModel, ModelConfig, select_device};
//! let device = select_device("cpu").unwrap().autodiff();
//! let config = ModelConfig::tiny().with_dropout(0.0);
//! let model = MlmModel::init(&config, 0, &device).unwrap();
//! # let _ = model;
//! ```
//!
//! Modules:
//!
//! * [`config`] — [`ModelConfig`], presets, [`ModelOverrides`];
//! * [`encoder`] — embeddings, layers, [`Encoder`];
//! * [`mlm`] — [`MlmModel`] (tied decoder, sparse prediction);
//! * [`classification`] — [`ClassificationModel`];
//! * [`checkpoint`] — save/load in the contract naming, `config.json`;
//! * [`names`] — the one table of tensor names;
//! * [`device`] — [`select_device`];
//! * [`dropout`] — [`DropoutStream`], dropout masks keyed by seed, site and batch row;
//! * [`flops`] — the matrix-product operations of a step, from the architecture;
//! * [`precision`] — [`Precision`] (bf16 matrix products);
//! * [`traffic`] — kernel launches, transfers and synchronisations of a step, counted;
//! * [`tuning`] — where the GPU backends keep their autotune results.

#![warn(missing_docs)]

mod activation;
pub mod attention;
pub mod checkpoint;
pub mod classification;
pub mod config;
pub mod device;
pub mod dropout;
pub mod encoder;
pub mod error;
pub mod flops;
pub mod hf_export;
mod init;
pub mod mlm;
pub mod names;
pub mod precision;
pub mod traffic;
pub mod tuning;

pub use attention::AttentionKernel;
pub use checkpoint::{
    TensorFile, load_classification, load_classification_with_config, load_mlm,
    load_mlm_with_config, read_config_json, save_classification, save_mlm, write_config_json,
};
pub use classification::{ClassLabels, ClassificationModel};
pub use config::{
    ConfigError, FfnActivation, ModelConfig, ModelOverrides, NormScheme, PositionEmbedding,
};
pub use device::{
    DeviceChoice, DeviceError, DeviceOptions, DeviceSpec, REQUIRE_VULKAN_ENV, SOFTWARE_VULKAN_ENV,
    choose_device, choose_device_with, gpu_build_hint, is_host, is_software_vulkan,
    nvidia_gpu_visible, select_device, select_device_with, vulkan_test_device,
};
pub use dropout::DropoutStream;
pub use encoder::{Encoder, NamedParam};
pub use error::ModelError;
pub use hf_export::{HfExportInfo, HfExported, export_hugging_face};
pub use init::transpose;
pub use mlm::{IGNORE_INDEX, MlmModel, MlmOutput};
pub use precision::{Precision, PrecisionError, PrecisionSpec};

use burn::module::{Module, ParamId};

/// A model whose parameters carry contract names: what optimizers key their state by and
/// checkpoints are written under. [`MlmModel`] and [`ClassificationModel`] are ones.
pub trait NamedModule: Module + Clone + Send + Sync {
    /// Calls `f` with the contract name and a reference of every parameter, in a fixed order.
    fn visit_named(&self, f: &mut dyn FnMut(String, NamedParam<'_>));
    /// The device the parameters live on.
    fn device(&self) -> burn::tensor::Device;
}

impl NamedModule for MlmModel {
    fn visit_named(&self, f: &mut dyn FnMut(String, NamedParam<'_>)) {
        MlmModel::visit_named(self, f)
    }
    fn device(&self) -> burn::tensor::Device {
        self.encoder().device()
    }
}

impl NamedModule for ClassificationModel {
    fn visit_named(&self, f: &mut dyn FnMut(String, NamedParam<'_>)) {
        ClassificationModel::visit_named(self, f)
    }
    fn device(&self) -> burn::tensor::Device {
        self.encoder().device()
    }
}

/// `(id, contract name)` of every parameter of a model, in a fixed order; weight decay
/// applies where [`names::decays`] says so.
pub fn param_names<M: NamedModule>(model: &M) -> Vec<(ParamId, String)> {
    let mut out = Vec::new();
    model.visit_named(&mut |name, p| out.push((p.id(), name)));
    out
}

/// `(id, contract name)` of every parameter of a classification model, in a fixed order.
pub fn classification_param_names(model: &ClassificationModel) -> Vec<(ParamId, String)> {
    param_names(model)
}

/// Number of scalar parameters of an MLM model (the tied decoder counted once, `pos_scale`
/// included).
pub fn num_params(model: &MlmModel) -> usize {
    let mut n = 0;
    model.visit_named(&mut |_, p| n += p.shape().iter().product::<usize>());
    n
}
