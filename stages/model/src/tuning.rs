//! Where burn's GPU backends keep what they learn about the card they run on.
//!
//! With the `cuda` and `vulkan` features, burn runs with kernel fusion and autotuning on (its
//! own defaults for those backends): the first time a matrix product, reduction or fused
//! kernel of a given shape runs, cubecl times the candidate kernels and keeps the fastest. The
//! results are persisted (cubecl's `persistence` feature) in one database, by default under the
//! `target/` directory of the outermost Cargo workspace above the working directory, or the
//! user's cache directory outside any workspace. `cram` puts it beside its own cache instead
//! ([`keep_tuning_in`]), so that one cache directory holds everything a run learned, a second run
//! on the same card starts tuned, and `rm -r cache` forgets it all.

use std::path::Path;

/// The folder under a cram cache directory that holds cubecl's tuning database.
pub const TUNING_DIR: &str = "cubecl";

/// Set to a directory to keep the tuning there instead of in the cache directory (several
/// caches, or a test suite's many temporary ones, on one machine can then share it).
pub const TUNING_DIR_ENV: &str = "CRAM_TUNING_DIR";

/// Set to a number of samples (at least 1) to time each autotune candidate that many times
/// instead of cubecl's adaptive 3 to 10. For software Vulkan drivers in tests, where every
/// candidate runs on the CPU and a full tuning of one shape takes minutes; the choice is then
/// noisier, not skipped.
pub const AUTOTUNE_SAMPLES_ENV: &str = "CRAM_AUTOTUNE_SAMPLES";

/// Where the tuning of a cache at `cache` lives: [`TUNING_DIR_ENV`] if set, else
/// `cache/`[`TUNING_DIR`].
pub fn tuning_dir(cache: &Path) -> std::path::PathBuf {
    match std::env::var_os(TUNING_DIR_ENV) {
        Some(dir) if !dir.is_empty() => dir.into(),
        _ => cache.join(TUNING_DIR),
    }
}

/// Makes cubecl keep its autotune results (and other measurements of the device) under `dir`,
/// unless a `cubecl.toml` the user wrote says where. Must run before the first GPU kernel; a
/// later call changes nothing and returns `false`, as does a build without GPU backends.
pub fn keep_tuning_in(dir: &Path) -> bool {
    #[cfg(any(feature = "cuda", feature = "vulkan"))]
    {
        use burn::cubecl::config::{CubeClRuntimeConfig, RuntimeConfig, cache::CacheConfig};
        // The configuration cubecl would load itself (a `cubecl.toml` above the working
        // directory, then its `CUBECL_*` variables), with the location replaced only where that
        // is still the default.
        let mut config = CubeClRuntimeConfig::from_current_dir().override_from_env();
        if matches!(config.environment.path, CacheConfig::Target) {
            config.environment.path = CacheConfig::Directory(dir.to_path_buf());
        }
        if let Some(n) = std::env::var(AUTOTUNE_SAMPLES_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|&n| n > 0)
        {
            config.autotune.bench.min_samples = n;
            config.autotune.bench.max_samples = n;
            config.autotune.bench.short_circuit_samples = n;
        }
        CubeClRuntimeConfig::try_set(config)
    }
    #[cfg(not(any(feature = "cuda", feature = "vulkan")))]
    {
        let _ = dir;
        false
    }
}
