//! Mixed precision: the matrix products in bf16 (or fp16), everything else in fp32.
//!
//! As PyTorch's autocast does for the reference, the weights (and the optimizer's state) stay
//! fp32; each product casts its operands down, multiplies in the low precision, and returns an
//! fp32 result, so that norms, softmax, the residual stream and the loss stay in fp32. The casts
//! are on the autodiff graph: the gradients reaching the fp32 weights are cast back up.
//!
//! `auto` is fp32 on the CPU and bf16 on a GPU whose backend has bf16 tensors (CUDA), fp32 on
//! one that has none (Vulkan drivers without bf16 shaders, such as lavapipe). bf16 keeps fp32's
//! exponent range, so it needs no loss scaling; fp16 does, and is not offered.

use burn::tensor::{DType, Device, FloatDType, Tensor};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The precision of a model's matrix products (a run-time setting: checkpoints are fp32).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// fp32 everywhere.
    #[default]
    Fp32,
    /// Matrix products in bfloat16 with fp32 results.
    Bf16,
}

/// A precision as a stage parameter: a fixed one, or `auto` (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PrecisionSpec {
    /// fp32 on the CPU and where the device lacks bf16, bf16 on other GPUs.
    #[default]
    Auto,
    /// fp32 everywhere.
    Fp32,
    /// Matrix products in bfloat16.
    Bf16,
}

/// Errors of [`PrecisionSpec::resolve`].
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PrecisionError {
    /// The device's backend has no tensors of that type.
    #[error(
        "precision {precision:?} is not supported on device {device} (its backend has no \
         {precision} tensors): use precision = \"fp32\" or \"auto\""
    )]
    Unsupported {
        /// The precision asked for.
        precision: &'static str,
        /// The device, as burn prints it.
        device: String,
    },
}

impl PrecisionSpec {
    /// The precision this spec gives on `device`.
    pub fn resolve(self, device: &Device) -> Result<Precision, PrecisionError> {
        let device = device.clone().inner();
        let bf16 = device.supports_dtype(DType::BF16);
        match self {
            Self::Fp32 => Ok(Precision::Fp32),
            Self::Bf16 if bf16 => Ok(Precision::Bf16),
            Self::Bf16 => Err(PrecisionError::Unsupported {
                precision: "bf16",
                device: format!("{device:?}"),
            }),
            Self::Auto if bf16 && !crate::device::is_host(&device) => Ok(Precision::Bf16),
            Self::Auto => Ok(Precision::Fp32),
        }
    }
}

impl Precision {
    /// The low-precision type of the products, `None` for fp32.
    pub fn compute_dtype(self) -> Option<FloatDType> {
        match self {
            Self::Fp32 => None,
            Self::Bf16 => Some(FloatDType::BF16),
        }
    }

    /// The name used in parameters and summaries (`fp32`, `bf16`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Fp32 => "fp32",
            Self::Bf16 => "bf16",
        }
    }

    /// `a.matmul(b)` in this precision, with an fp32 result.
    pub fn matmul<const D: usize>(self, a: Tensor<D>, b: Tensor<D>) -> Tensor<D> {
        match self.compute_dtype() {
            None => a.matmul(b),
            Some(dt) => a.cast(dt).matmul(b.cast(dt)).cast(FloatDType::F32),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    #[test]
    fn bf16_products_round_their_operands() {
        let device = Device::flex();
        // 1 + 2^-10 is exact in fp32 and rounds to 1 in bf16 (8 bits of mantissa).
        let a = || {
            Tensor::<2>::from_data(
                TensorData::new(vec![1.0f32 + 1.0 / 1024.0], [1, 1]),
                &device,
            )
        };
        let b = || Tensor::<2>::from_data(TensorData::new(vec![3.0f32], [1, 1]), &device);
        let read = |t: Tensor<2>| {
            t.into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .unwrap()[0]
        };
        let fp32 = Precision::Fp32.matmul(a(), b());
        let bf16 = Precision::Bf16.matmul(a(), b());
        assert_eq!(read(fp32), 3.0 * (1.0 + 1.0 / 1024.0));
        assert_eq!(bf16.dtype(), DType::F32, "the result is fp32 again");
        assert_eq!(read(bf16), 3.0);
    }

    #[test]
    fn auto_is_fp32_on_the_cpu_and_bf16_resolves_there() {
        let cpu = Device::flex();
        assert_eq!(PrecisionSpec::Auto.resolve(&cpu), Ok(Precision::Fp32));
        assert_eq!(PrecisionSpec::Bf16.resolve(&cpu), Ok(Precision::Bf16));
        assert_eq!(
            PrecisionSpec::Fp32.resolve(&cpu.autodiff()),
            Ok(Precision::Fp32)
        );
        let spec: PrecisionSpec = serde_json::from_str("\"bf16\"").unwrap();
        assert_eq!(spec, PrecisionSpec::Bf16);
    }
}
