//! Choosing the burn device from a user-facing spec: `auto`, `cpu`, `cuda:N`, `vulkan:N`.
//!
//! burn's default device is fixed at compile time and a missing CUDA driver panics inside
//! burn, so the device is chosen explicitly here and the driver is probed first.
//!
//! Software Vulkan drivers (SwiftShader, Mesa's lavapipe: shaders run on the CPU) are skipped unless
//! [`SOFTWARE_VULKAN_ENV`] is set: on a desktop with Mesa installed, `auto` would otherwise
//! train on an emulated GPU many times slower than the CPU backend. CI sets it to run the GPU
//! code path (the model, the device-side optimizer, kernels compiled to SPIR-V) on SwiftShader.

use burn::tensor::Device;

/// Set to `1` to let software Vulkan adapters (SwiftShader, lavapipe) count as Vulkan devices, for
/// `vulkan:N` and `auto` alike. They are listed after the hardware adapters.
pub const SOFTWARE_VULKAN_ENV: &str = "CRAM_VULKAN_SOFTWARE";

/// How [`select_device_with`] treats adapters beyond the spec.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceOptions {
    /// Count software Vulkan adapters (SwiftShader, lavapipe) as Vulkan devices.
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
    #[error(
        "unknown device {0:?}: expected \"auto\", \"gpu\", \"cpu\", \"cuda:N\" or \"vulkan:N\""
    )]
    Parse(String),
    /// `gpu` was asked for and no GPU can be used.
    #[error(
        "device \"gpu\": no GPU can be used by this binary ({tried}){}; set device = \"cpu\" \
         to train on the CPU on purpose",
        hint.as_deref().map(|h| format!(". {h}")).unwrap_or_default()
    )]
    NoGpu {
        /// What was tried, and why each failed.
        tried: String,
        /// How to get a binary that can use the GPU that is there, if one is visible.
        hint: Option<String>,
    },
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
            "; {skipped} software adapter(s) such as SwiftShader or lavapipe skipped: set \
             {SOFTWARE_VULKAN_ENV}=1 to use them"
        )
    }
}

/// A parsed device spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// A compiled-in GPU if one is present, else the CPU.
    Auto,
    /// A compiled-in GPU (CUDA first, then a hardware Vulkan adapter), else an error: for runs
    /// that must not fall back to the CPU (a day-long budget).
    Gpu,
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
            "gpu" => Ok(Self::Gpu),
            "cpu" | "flex" => Ok(Self::Cpu),
            _ if t.starts_with("cuda") => Ok(Self::Cuda(index(&t[4..])?)),
            _ if t.starts_with("vulkan") => Ok(Self::Vulkan(index(&t[6..])?)),
            _ => Err(DeviceError::Parse(s.to_string())),
        }
    }
}

/// The device for `spec` (`auto`, `gpu`, `cpu`, `cuda:N`, `vulkan:N`).
///
/// A GPU backend that is not compiled in, a CUDA driver that cannot be loaded or a missing
/// adapter is an error, never a panic. `auto` picks CUDA, then Vulkan (when compiled in and
/// present), else the CPU; `gpu` does the same but is an error where `auto` would take the
/// CPU. Software Vulkan adapters count only with [`SOFTWARE_VULKAN_ENV`]
/// set (see the module docs).
pub fn select_device(spec: &str) -> Result<Device, DeviceError> {
    select_device_with(spec, DeviceOptions::from_env())
}

/// [`select_device`] with explicit [`DeviceOptions`] instead of the environment's.
pub fn select_device_with(spec: &str, options: DeviceOptions) -> Result<Device, DeviceError> {
    choose_device_with(spec, options).map(|c| c.device)
}

/// A device chosen from a spec, and why: what a run prints before it starts, so that nobody
/// spends a day on the wrong device without a word.
#[derive(Debug, Clone)]
pub struct DeviceChoice {
    /// The device.
    pub device: Device,
    /// Why this one, in words (`device = "auto": CUDA device 0`, `... no GPU backend compiled
    /// in (built without --features cuda or vulkan)`).
    pub reason: String,
    /// Whether `auto` fell back to the CPU for want of a usable GPU.
    pub cpu_fallback: bool,
}

/// [`select_device`] with the reason for the choice ([`DeviceChoice`]).
pub fn choose_device(spec: &str) -> Result<DeviceChoice, DeviceError> {
    choose_device_with(spec, DeviceOptions::from_env())
}

/// [`choose_device`] with explicit [`DeviceOptions`].
pub fn choose_device_with(spec: &str, options: DeviceOptions) -> Result<DeviceChoice, DeviceError> {
    let chosen = |device: Device, reason: String| DeviceChoice {
        device,
        reason,
        cpu_fallback: false,
    };
    match spec.parse::<DeviceSpec>()? {
        DeviceSpec::Cpu => Ok(chosen(Device::flex(), format!("device = {spec:?}"))),
        DeviceSpec::Cuda(i) => Ok(chosen(cuda(spec, i)?, format!("device = {spec:?}"))),
        DeviceSpec::Vulkan(i) => Ok(chosen(
            vulkan(spec, i, options)?,
            format!("device = {spec:?}"),
        )),
        DeviceSpec::Auto | DeviceSpec::Gpu => {
            let gpu = spec.parse::<DeviceSpec>()? == DeviceSpec::Gpu;
            let cuda_err = match cuda(spec, 0) {
                Ok(d) => return Ok(chosen(d, format!("device = {spec:?}: CUDA device 0"))),
                Err(e) => e,
            };
            let vulkan_err = match vulkan(spec, 0, options) {
                Ok(d) => return Ok(chosen(d, format!("device = {spec:?}: Vulkan adapter 0"))),
                Err(e) => e,
            };
            let tried = format!(
                "CUDA: {}; Vulkan: {}",
                why_not(&cuda_err),
                why_not(&vulkan_err)
            );
            if gpu {
                return Err(DeviceError::NoGpu {
                    tried,
                    hint: gpu_build_hint(),
                });
            }
            Ok(DeviceChoice {
                device: Device::flex(),
                reason: format!("device = {spec:?}: no usable GPU, so the CPU ({tried})"),
                cpu_fallback: true,
            })
        }
    }
}

/// A short reason why a backend gave no device.
fn why_not(e: &DeviceError) -> String {
    match e {
        DeviceError::NotCompiled { feature, .. } => {
            format!("not in this binary (built without --features {feature})")
        }
        DeviceError::CudaUnavailable { reason, .. } => reason.clone(),
        DeviceError::NoVulkanDevice {
            found,
            skipped_software,
            ..
        } => format!(
            "{found} usable adapter(s){}",
            software_hint(*skipped_software)
        ),
        other => other.to_string(),
    }
}

/// Whether an NVIDIA GPU is visible to this process: a `/dev/nvidia0` device node, or an
/// `nvidia-smi` that lists a card.
pub fn nvidia_gpu_visible() -> bool {
    if std::path::Path::new("/dev/nvidia0").exists() {
        return true;
    }
    std::process::Command::new("nvidia-smi")
        .arg("-L")
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.is_empty())
}

/// When an NVIDIA GPU is visible but this binary cannot use CUDA, how to get one that can.
pub fn gpu_build_hint() -> Option<String> {
    if cfg!(feature = "cuda") || !nvidia_gpu_visible() {
        return None;
    }
    Some(
        "an NVIDIA GPU is visible (/dev/nvidia0 or nvidia-smi) but this cram binary was built \
         without CUDA: build it with `cargo build --release --features cuda` (README, GPUs; \
         scripts/cuda-offline-llvm.sh first on a machine without internet access)"
            .to_string(),
    )
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

/// The first Vulkan adapter, software ones included, for the test suites of the GPU code path.
/// Which driver that is follows the Vulkan loader's `VK_DRIVER_FILES`: CI names Chromium's
/// SwiftShader (`/usr/lib/chromium/vk_swiftshader_icd.json`); Mesa's lavapipe runs the same
/// tests. Both run the whole model since cubecl-spirv's shared-memory fix (vendor/README.md). `None`, with a note on stderr, where there is none (or the `vulkan` feature is
/// off), unless [`REQUIRE_VULKAN_ENV`] is set, which turns that into a panic.
pub fn vulkan_test_device() -> Option<Device> {
    // A test suite's processes share one tuning database where the environment names one
    // (`CRAM_TUNING_DIR`; CI does): on a software driver, tuning a shape takes minutes.
    if let Some(dir) = std::env::var_os(crate::tuning::TUNING_DIR_ENV).filter(|d| !d.is_empty()) {
        crate::tuning::keep_tuning_in(std::path::Path::new(&dir));
    }
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
                "skipped: no Vulkan device ({e}); install Chromium's SwiftShader (Debian's \
                 chromium-common, VK_DRIVER_FILES=/usr/lib/chromium/vk_swiftshader_icd.json) or Mesa's lavapipe \
                 (mesa-vulkan-drivers) to run the GPU-path tests"
            );
            None
        }
    }
}

/// Whether `device` is a software Vulkan adapter (SwiftShader, lavapipe): wgpu reports its adapter
/// type as `Cpu`.
pub fn is_software_vulkan(device: &Device) -> bool {
    !is_host(device) && format!("{:?}", device.clone().inner()).contains("Cpu")
}

/// Whether tensors on `device` live in host memory: burn's CPU backend (`flex`), with or
/// without autodiff. Host tensors can be read and rebuilt without a device transfer, which the
/// optimizer and the per-core micro-batch split use.
pub fn is_host(device: &Device) -> bool {
    // `inner` strips the autodiff wrapper.
    let device = device.clone().inner();
    matches!(device.as_dispatch(), burn::backend::DispatchDevice::Flex(_))
}
