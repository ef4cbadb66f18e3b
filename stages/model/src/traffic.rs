//! What a training step asks of its device, counted: kernel launches, host↔device transfers,
//! synchronisations. `cram bench` prints them for one step (the step's anatomy), and the CI
//! holds them under bounds, so that a read slipped into the step or a launch storm is noticed.
//!
//! Launches are counted by cubecl itself (its launch observer sees every kernel any thread
//! issues, fused ones included). Transfers and synchronisations are counted where cram's code
//! asks for them: every upload of host data ([`upload`]) and every read of a tensor
//! ([`read`], [`read_f32`]) in the training stages goes through here. A read waits for the
//! device to reach the tensor, so each read is also a synchronisation; [`sync`] counts the
//! explicit ones. On the CPU backend none of these cross a bus, but they are counted alike so
//! that both paths can be compared.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use burn::tensor::kind::Basic;
use burn::tensor::{Device, Tensor, TensorData};

static UPLOADS: AtomicU64 = AtomicU64::new(0);
static UPLOAD_BYTES: AtomicU64 = AtomicU64::new(0);
static READS: AtomicU64 = AtomicU64::new(0);
static READ_BYTES: AtomicU64 = AtomicU64::new(0);
static SYNCS: AtomicU64 = AtomicU64::new(0);

/// Transfers and synchronisations counted so far in this process (see the module docs); take
/// two and subtract to count a stretch of work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Traffic {
    /// Host data sent to a device.
    pub uploads: u64,
    /// Their bytes.
    pub upload_bytes: u64,
    /// Tensors read back to the host (each waits for the device).
    pub reads: u64,
    /// Their bytes.
    pub read_bytes: u64,
    /// Explicit waits for the device ([`sync`]); reads wait too, and are counted as reads.
    pub syncs: u64,
}

impl Traffic {
    /// The counts now.
    pub fn now() -> Self {
        Self {
            uploads: UPLOADS.load(Ordering::Relaxed),
            upload_bytes: UPLOAD_BYTES.load(Ordering::Relaxed),
            reads: READS.load(Ordering::Relaxed),
            read_bytes: READ_BYTES.load(Ordering::Relaxed),
            syncs: SYNCS.load(Ordering::Relaxed),
        }
    }

    /// What was counted between `earlier` and `self`.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            uploads: self.uploads - earlier.uploads,
            upload_bytes: self.upload_bytes - earlier.upload_bytes,
            reads: self.reads - earlier.reads,
            read_bytes: self.read_bytes - earlier.read_bytes,
            syncs: self.syncs - earlier.syncs,
        }
    }

    /// Times the host waited for the device: reads and explicit waits.
    pub fn waits(&self) -> u64 {
        self.reads + self.syncs
    }
}

/// A tensor on `device` holding `data` (counted as an upload).
pub fn upload<const D: usize, K: Basic>(data: TensorData, device: &Device) -> Tensor<D, K> {
    UPLOADS.fetch_add(1, Ordering::Relaxed);
    UPLOAD_BYTES.fetch_add(data.as_bytes().len() as u64, Ordering::Relaxed);
    Tensor::from_data(data, device)
}

/// The values of `tensor` on the host (counted as a read; it waits for the device).
pub fn read<const D: usize, K: Basic>(tensor: Tensor<D, K>) -> TensorData {
    let data = tensor.into_data();
    READS.fetch_add(1, Ordering::Relaxed);
    READ_BYTES.fetch_add(data.as_bytes().len() as u64, Ordering::Relaxed);
    data
}

/// The values of a float tensor on the host as `f32` ([`read`]).
pub fn read_f32<const D: usize>(tensor: Tensor<D>) -> Result<Vec<f32>, String> {
    read(tensor)
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| format!("{e:?}"))
}

/// Waits until `device` has run everything queued on it (counted).
pub fn sync(device: &Device) -> Result<(), String> {
    SYNCS.fetch_add(1, Ordering::Relaxed);
    device.sync().map_err(|e| format!("{e:?}"))
}

/// Counts the kernels launched on any device while it lives (cubecl's launch observer: every
/// kernel issued by any thread, fused kernels included). `None` in builds without a GPU backend,
/// whose CPU backend launches no kernels.
pub struct LaunchCounter {
    counts: Arc<launches::Counts>,
    #[cfg(any(feature = "cuda", feature = "vulkan"))]
    _watching: burn::cubecl::logging::LaunchObservation,
}

impl std::fmt::Debug for LaunchCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaunchCounter")
            .field("launches", &self.total())
            .finish()
    }
}

impl LaunchCounter {
    /// Starts counting (one counter at a time per process: a second replaces the first for its
    /// lifetime).
    pub fn start() -> Option<Self> {
        #[cfg(any(feature = "cuda", feature = "vulkan"))]
        {
            let counts = Arc::new(launches::Counts::default());
            let watching = burn::cubecl::logging::LaunchObservation::new(counts.clone());
            Some(Self {
                counts,
                _watching: watching,
            })
        }
        #[cfg(not(any(feature = "cuda", feature = "vulkan")))]
        {
            None
        }
    }

    /// Kernels launched since the start.
    pub fn total(&self) -> u64 {
        self.counts.total()
    }

    /// Launches since the start, by kernel name (cubecl's own, shortened: `ElemwiseFuse`,
    /// `MatmulEntry`, ...), most launched first.
    pub fn by_kernel(&self) -> Vec<(String, u64)> {
        self.counts.by_kernel()
    }
}

mod launches {
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// Launches by the kernel's full name.
    #[derive(Default)]
    pub(super) struct Counts(Mutex<HashMap<&'static str, u64>>);

    impl Counts {
        pub(super) fn total(&self) -> u64 {
            self.0.lock().map(|m| m.values().sum()).unwrap_or(0)
        }

        pub(super) fn by_kernel(&self) -> Vec<(String, u64)> {
            let mut merged: HashMap<String, u64> = HashMap::new();
            if let Ok(m) = self.0.lock() {
                for (name, n) in m.iter() {
                    *merged.entry(short_name(name)).or_default() += n;
                }
            }
            let mut out: Vec<(String, u64)> = merged.into_iter().collect();
            out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            out
        }
    }

    /// A kernel's family: its name's first segment without the type path or the hash suffix
    /// cubecl appends (`cubek_matmul::...::MatmulEntry<...>_1a2b3c4d` → `MatmulEntry`).
    pub(super) fn short_name(name: &str) -> String {
        let first = name.split(['|', '<']).next().unwrap_or(name).trim();
        let last = first.rsplit("::").next().unwrap_or(first);
        match last.rsplit_once('_') {
            Some((stem, hash))
                if hash.len() == 8 && hash.chars().all(|c| c.is_ascii_hexdigit()) =>
            {
                stem.to_string()
            }
            _ => last.to_string(),
        }
    }

    #[cfg(any(feature = "cuda", feature = "vulkan"))]
    impl burn::cubecl::logging::LaunchObserver for Counts {
        fn launched(&self, kernel: &'static str) {
            if let Ok(mut m) = self.0.lock() {
                *m.entry(kernel).or_default() += 1;
            }
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn kernel_families() {
            assert_eq!(super::short_name("ElemwiseFuse_059689a5"), "ElemwiseFuse");
            assert_eq!(
                super::short_name("MatmulEntry | TensorArgs | SimpleMatmulFamily_27ec810c"),
                "MatmulEntry"
            );
            assert_eq!(super::short_name("a::b::CopyKernel<f32>"), "CopyKernel");
            assert_eq!(
                super::short_name("KernelBinop | MulOp_dcf6f85c"),
                "KernelBinop"
            );
            assert_eq!(super::short_name("snake_case_name"), "snake_case_name");
        }
    }
}
