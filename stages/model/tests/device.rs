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
