//! Device selection.

use cram_model::{DeviceError, DeviceSpec, select_device};

#[test]
fn specs_parse() {
    assert_eq!("auto".parse::<DeviceSpec>(), Ok(DeviceSpec::Auto));
    assert_eq!("cpu".parse::<DeviceSpec>(), Ok(DeviceSpec::Cpu));
    assert_eq!("cuda:1".parse::<DeviceSpec>(), Ok(DeviceSpec::Cuda(1)));
    assert_eq!("cuda".parse::<DeviceSpec>(), Ok(DeviceSpec::Cuda(0)));
    assert_eq!("vulkan:0".parse::<DeviceSpec>(), Ok(DeviceSpec::Vulkan(0)));
    assert!(matches!(
        "tpu".parse::<DeviceSpec>(),
        Err(DeviceError::Parse(_))
    ));
    assert!(matches!(
        "cuda:x".parse::<DeviceSpec>(),
        Err(DeviceError::Parse(_))
    ));
}

#[test]
fn cpu_and_auto_select_without_panicking() {
    let cpu = select_device("cpu").unwrap();
    assert_eq!(cpu, burn::tensor::Device::flex());
    select_device("auto").unwrap();
}

#[cfg(not(feature = "cuda"))]
#[test]
fn gpu_backend_not_compiled_is_a_clear_error() {
    let err = select_device("cuda:0").unwrap_err();
    assert!(matches!(
        err,
        DeviceError::NotCompiled {
            feature: "cuda",
            ..
        }
    ));
    assert!(err.to_string().contains("--features cuda"));
}

#[cfg(not(feature = "vulkan"))]
#[test]
fn vulkan_not_compiled_is_a_clear_error() {
    let err = select_device("vulkan:0").unwrap_err();
    assert!(matches!(
        err,
        DeviceError::NotCompiled {
            feature: "vulkan",
            ..
        }
    ));
}

/// Software adapters (SwiftShader, lavapipe) count only when asked for: `vulkan:N` and `auto` skip them by
/// default, and with the opt-in `auto` picks one where there is no hardware GPU.
#[cfg(feature = "vulkan")]
#[test]
fn software_vulkan_is_opt_in() {
    use cram_model::{DeviceOptions, is_host, select_device_with, vulkan_test_device};
    let Some(any_vulkan) = vulkan_test_device() else {
        return;
    };
    let software = DeviceOptions {
        software_vulkan: true,
    };
    assert!(!is_host(&any_vulkan));
    let hardware = select_device_with("vulkan:0", DeviceOptions::default());
    let auto = select_device_with("auto", software).unwrap();
    assert!(
        !is_host(&auto),
        "auto takes a Vulkan device over the CPU: {auto:?}"
    );
    match hardware {
        Err(e) => {
            // Only software adapters here (CI's SwiftShader): the error says how to use them, and
            // without the opt-in `auto` stays on the CPU.
            assert!(
                matches!(e, DeviceError::NoVulkanDevice { skipped_software, .. } if skipped_software > 0),
                "{e}"
            );
            assert!(
                e.to_string().contains(cram_model::SOFTWARE_VULKAN_ENV),
                "{e}"
            );
            assert_eq!(auto, any_vulkan, "auto picks the software adapter");
            let plain = select_device_with("auto", DeviceOptions::default()).unwrap();
            assert!(is_host(&plain), "no opt-in: auto stays on the CPU");
        }
        Ok(gpu) => assert!(!is_host(&gpu), "a hardware adapter: {gpu:?}"),
    }
}
