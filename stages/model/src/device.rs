//! Choosing the burn device from a user-facing spec: `auto`, `cpu`, `cuda:N`, `vulkan:N`.
//!
//! burn's default device is fixed at compile time and a missing CUDA driver panics inside
//! burn, so the device is chosen explicitly here and the driver is probed first.

use burn::tensor::Device;

/// Errors of [`select_device`].
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DeviceError {
    /// The spec is not one of the accepted forms.
    #[error("unknown device {0:?}: expected \"auto\", \"cpu\", \"cuda:N\" or \"vulkan:N\"")]
    Parse(String),
    /// The backend was not compiled into this build.
    #[error(
        "device {spec:?} needs cram-model's `{feature}` cargo feature, which this build lacks \
         (rebuild with --features {feature})"
    )]
    NotCompiled {
        /// The spec asked for.
        spec: String,
        /// The cargo feature that provides it.
        feature: &'static str,
    },
    /// The CUDA driver cannot be used.
    #[error(
        "device {spec:?}: CUDA is unavailable: {reason} (a CUDA run needs the NVIDIA driver's \
         libcuda.so.1, NVRTC's libnvrtc.so and the CUDA headers under $CUDA_PATH or \
         /usr/local/cuda)"
    )]
    CudaUnavailable {
        /// The spec asked for.
        spec: String,
        /// What failed (driver library, initialisation, device count).
        reason: String,
    },
    /// No Vulkan adapter with that index.
    #[error("device {spec:?}: no Vulkan GPU with index {index} ({found} found)")]
    NoVulkanDevice {
        /// The spec asked for.
        spec: String,
        /// The index asked for.
        index: usize,
        /// How many adapters were found.
        found: usize,
    },
}

/// A parsed device spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// A compiled-in GPU if one is present, else the CPU.
    Auto,
    /// burn's `flex` CPU backend.
    Cpu,
    /// CUDA device `N`.
    Cuda(usize),
    /// Vulkan adapter `N`.
    Vulkan(usize),
}

impl std::str::FromStr for DeviceSpec {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase();
        let index = |rest: &str| -> Result<usize, DeviceError> {
            if rest.is_empty() {
                return Ok(0);
            }
            rest.strip_prefix(':')
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| DeviceError::Parse(s.to_string()))
        };
        match t.as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" | "flex" => Ok(Self::Cpu),
            _ if t.starts_with("cuda") => Ok(Self::Cuda(index(&t[4..])?)),
            _ if t.starts_with("vulkan") => Ok(Self::Vulkan(index(&t[6..])?)),
            _ => Err(DeviceError::Parse(s.to_string())),
        }
    }
}

/// The device for `spec` (`auto`, `cpu`, `cuda:N`, `vulkan:N`).
///
/// A GPU backend that is not compiled in, a CUDA driver that cannot be loaded or a missing
/// adapter is an error, never a panic. `auto` picks CUDA, then Vulkan (when compiled in and
/// present), else the CPU.
pub fn select_device(spec: &str) -> Result<Device, DeviceError> {
    match spec.parse::<DeviceSpec>()? {
        DeviceSpec::Cpu => Ok(Device::flex()),
        DeviceSpec::Cuda(i) => cuda(spec, i),
        DeviceSpec::Vulkan(i) => vulkan(spec, i),
        DeviceSpec::Auto => Ok(cuda(spec, 0)
            .or_else(|_| vulkan(spec, 0))
            .unwrap_or_else(|_| Device::flex())),
    }
}

#[cfg(feature = "cuda")]
fn cuda(spec: &str, index: usize) -> Result<Device, DeviceError> {
    let count = cuda_probe::device_count().map_err(|reason| DeviceError::CudaUnavailable {
        spec: spec.to_string(),
        reason,
    })?;
    if index >= count {
        return Err(DeviceError::CudaUnavailable {
            spec: spec.to_string(),
            reason: format!("no CUDA device with index {index} ({count} found)"),
        });
    }
    Ok(Device::cuda(index))
}

#[cfg(not(feature = "cuda"))]
fn cuda(spec: &str, _index: usize) -> Result<Device, DeviceError> {
    Err(DeviceError::NotCompiled {
        spec: spec.to_string(),
        feature: "cuda",
    })
}

#[cfg(feature = "vulkan")]
fn vulkan(spec: &str, index: usize) -> Result<Device, DeviceError> {
    use burn::tensor::DeviceType;
    // Adapter discovery goes through wgpu; guard against a panic from a broken loader.
    let devices = std::panic::catch_unwind(|| Device::enumerate(DeviceType::Vulkan).into_vec())
        .unwrap_or_default();
    // Software rasterisers (a CPU adapter such as lavapipe) are not what `vulkan:N` means.
    let gpus: Vec<Device> = devices
        .into_iter()
        .filter(|d| !format!("{d:?}").contains("Cpu"))
        .collect();
    let found = gpus.len();
    gpus.into_iter()
        .nth(index)
        .ok_or_else(|| DeviceError::NoVulkanDevice {
            spec: spec.to_string(),
            index,
            found,
        })
}

#[cfg(not(feature = "vulkan"))]
fn vulkan(spec: &str, _index: usize) -> Result<Device, DeviceError> {
    Err(DeviceError::NotCompiled {
        spec: spec.to_string(),
        feature: "vulkan",
    })
}

#[cfg(feature = "cuda")]
mod cuda_probe {
    //! Loads the CUDA driver with `dlopen` and asks it for the device count, so that a missing
    //! or broken driver is reported before burn touches it (burn panics in that case).

    /// The number of CUDA devices the driver reports.
    pub(super) fn device_count() -> Result<usize, String> {
        // SAFETY: loading the system CUDA driver runs its initialisers, which is what burn's
        // CUDA backend would do anyway; the symbols are called with their documented C
        // signatures (`CUresult cuInit(unsigned int)`, `CUresult cuDeviceGetCount(int*)`).
        unsafe {
            let lib = libloading::Library::new("libcuda.so.1")
                .map_err(|e| format!("cannot load libcuda.so.1: {e}"))?;
            let init: libloading::Symbol<unsafe extern "C" fn(u32) -> i32> =
                lib.get(b"cuInit\0")
                    .map_err(|e| format!("libcuda.so.1 has no cuInit: {e}"))?;
            let rc = init(0);
            if rc != 0 {
                return Err(format!("cuInit failed with CUresult {rc}"));
            }
            let get_count: libloading::Symbol<unsafe extern "C" fn(*mut i32) -> i32> = lib
                .get(b"cuDeviceGetCount\0")
                .map_err(|e| format!("libcuda.so.1 has no cuDeviceGetCount: {e}"))?;
            let mut n = 0i32;
            let rc = get_count(&mut n);
            if rc != 0 {
                return Err(format!("cuDeviceGetCount failed with CUresult {rc}"));
            }
            Ok(n.max(0) as usize)
        }
    }
}

/// Whether tensors on `device` live in host memory: burn's CPU backend (`flex`), with or
/// without autodiff. Host tensors can be read and rebuilt without a device transfer, which the
/// optimizer and the per-core micro-batch split use.
pub fn is_host(device: &Device) -> bool {
    // `inner` strips the autodiff wrapper.
    let device = device.clone().inner();
    matches!(device.as_dispatch(), burn::backend::DispatchDevice::Flex(_))
}
