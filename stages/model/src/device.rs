//! Choosing the burn device from a user-facing spec: `auto`, `cpu`, `cuda:N`, `vulkan:N`.
//!
//! burn's default device is fixed at compile time and a missing CUDA driver panics inside
//! burn, so the device is chosen explicitly here and the driver is probed first.
//!
//! Software Vulkan drivers (Mesa's lavapipe, which runs shaders on the CPU) are skipped unless
//! [`SOFTWARE_VULKAN_ENV`] is set: on a desktop with Mesa installed, `auto` would otherwise
//! train on an emulated GPU many times slower than the CPU backend. CI sets it to run the GPU
//! code path (device-side optimizer, kernels compiled to SPIR-V) on lavapipe.

use burn::tensor::Device;

/// Set to `1` to let software Vulkan adapters (lavapipe) count as Vulkan devices, for
/// `vulkan:N` and `auto` alike. They are listed after the hardware adapters.
pub const SOFTWARE_VULKAN_ENV: &str = "CRAM_VULKAN_SOFTWARE";

/// How [`select_device_with`] treats adapters beyond the spec.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceOptions {
    /// Count software Vulkan adapters (lavapipe) as Vulkan devices.
    pub software_vulkan: bool,
}

impl DeviceOptions {
    /// The options the environment asks for ([`SOFTWARE_VULKAN_ENV`]).
    pub fn from_env() -> Self {
        let on = std::env::var(SOFTWARE_VULKAN_ENV)
            .map(|v| !matches!(v.trim(), "" | "0" | "false" | "no"))
            .unwrap_or(false);
        Self {
            software_vulkan: on,
        }
    }
}

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
    #[error(
        "device {spec:?}: no Vulkan GPU with index {index} ({found} found{})",
        software_hint(*.skipped_software)
    )]
    NoVulkanDevice {
        /// The spec asked for.
        spec: String,
        /// The index asked for.
        index: usize,
        /// How many adapters were usable.
        found: usize,
        /// Software adapters skipped because [`SOFTWARE_VULKAN_ENV`] is not set.
        skipped_software: usize,
    },
}

fn software_hint(skipped: usize) -> String {
    if skipped == 0 {
        String::new()
    } else {
        format!(
            "; {skipped} software adapter(s) such as lavapipe skipped: set \
             {SOFTWARE_VULKAN_ENV}=1 to use them"
        )
    }
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
/// present), else the CPU. Software Vulkan adapters count only with [`SOFTWARE_VULKAN_ENV`]
/// set (see the module docs).
pub fn select_device(spec: &str) -> Result<Device, DeviceError> {
    select_device_with(spec, DeviceOptions::from_env())
}

/// [`select_device`] with explicit [`DeviceOptions`] instead of the environment's.
pub fn select_device_with(spec: &str, options: DeviceOptions) -> Result<Device, DeviceError> {
    match spec.parse::<DeviceSpec>()? {
        DeviceSpec::Cpu => Ok(Device::flex()),
        DeviceSpec::Cuda(i) => cuda(spec, i),
        DeviceSpec::Vulkan(i) => vulkan(spec, i, options),
        DeviceSpec::Auto => Ok(cuda(spec, 0)
            .or_else(|_| vulkan(spec, 0, options))
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
fn vulkan(spec: &str, index: usize, options: DeviceOptions) -> Result<Device, DeviceError> {
    use burn::tensor::DeviceType;
    // Adapter discovery goes through wgpu; guard against a panic from a broken loader.
    let devices = std::panic::catch_unwind(|| Device::enumerate(DeviceType::Vulkan).into_vec())
        .unwrap_or_default();
    // wgpu reports a software driver's adapter type as `Cpu`.
    let (software, mut usable): (Vec<Device>, Vec<Device>) = devices
        .into_iter()
        .partition(|d| format!("{d:?}").contains("Cpu"));
    let skipped_software = if options.software_vulkan {
        usable.extend(software);
        0
    } else {
        software.len()
    };
    let found = usable.len();
    usable
        .into_iter()
        .nth(index)
        .ok_or_else(|| DeviceError::NoVulkanDevice {
            spec: spec.to_string(),
            index,
            found,
            skipped_software,
        })
}

#[cfg(not(feature = "vulkan"))]
fn vulkan(spec: &str, _index: usize, _options: DeviceOptions) -> Result<Device, DeviceError> {
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

/// Set to `1` (CI does) to make [`vulkan_test_device`] panic, not skip, where no Vulkan device
/// is found: the GPU-path tests must then run.
pub const REQUIRE_VULKAN_ENV: &str = "CRAM_REQUIRE_VULKAN";

/// The first Vulkan adapter, software ones (lavapipe) included, for the test suites of the GPU
/// code path. `None`, with a note on stderr, where there is none (or the `vulkan` feature is
/// off), unless [`REQUIRE_VULKAN_ENV`] is set, which turns that into a panic.
pub fn vulkan_test_device() -> Option<Device> {
    let options = DeviceOptions {
        software_vulkan: true,
    };
    match select_device_with("vulkan:0", options) {
        Ok(device) => Some(device),
        Err(e) if std::env::var_os(REQUIRE_VULKAN_ENV).is_some() => {
            panic!("{REQUIRE_VULKAN_ENV} is set but no Vulkan device can be used: {e}")
        }
        Err(e) => {
            eprintln!(
                "skipped: no Vulkan device ({e}); install Mesa's lavapipe \
                 (mesa-vulkan-drivers) to run the GPU-path tests"
            );
            None
        }
    }
}

/// Whether `device` is a software Vulkan adapter (Mesa's lavapipe): wgpu reports its adapter
/// type as `Cpu`.
pub fn is_software_vulkan(device: &Device) -> bool {
    !is_host(device) && format!("{:?}", device.clone().inner()).contains("Cpu")
}

/// What keeps the model's kernels off lavapipe: Mesa's lavapipe (22.3.6 and 25.0.7, both on
/// LLVM 15, Debian bookworm and bookworm-backports) dies with SIGSEGV inside
/// `vkCreateComputePipelines` when it compiles cubecl 0.11's tiled matmul kernel (the
/// `SimpleUnit` strategy that burn's matmul autotuner tries first: SPIR-V with workgroup memory,
/// 8×8 invocations). Element-wise kernels, reductions and transfers run.
pub const LAVAPIPE_MATMUL_CRASH: &str = "lavapipe (Mesa 22.3/25.0 on LLVM 15) crashes \
    compiling cubecl's tiled matmul kernel";

/// Like [`vulkan_test_device`], for tests that run the model (matrix products): `None` on a
/// software adapter, with the reason on stderr ([`LAVAPIPE_MATMUL_CRASH`]). These run on
/// hardware Vulkan devices.
pub fn vulkan_model_test_device() -> Option<Device> {
    let device = vulkan_test_device()?;
    if is_software_vulkan(&device) {
        eprintln!("skipped on a software Vulkan adapter: {LAVAPIPE_MATMUL_CRASH}");
        return None;
    }
    Some(device)
}

/// Whether tensors on `device` live in host memory: burn's CPU backend (`flex`), with or
/// without autodiff. Host tensors can be read and rebuilt without a device transfer, which the
/// optimizer and the per-core micro-batch split use.
pub fn is_host(device: &Device) -> bool {
    // `inner` strips the autodiff wrapper.
    let device = device.clone().inner();
    matches!(device.as_dispatch(), burn::backend::DispatchDevice::Flex(_))
}
