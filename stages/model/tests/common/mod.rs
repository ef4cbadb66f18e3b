//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use burn::tensor::{Device, Int, Tensor, TensorData};
use cram_model::TensorFile;

/// `../shared/vectors/<name>` relative to the workspace root.
pub fn vector_path(name: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/vectors"
    ))
    .join(name)
}

/// Opens a test-vector file.
pub fn open(name: &str) -> TensorFile {
    TensorFile::open(&vector_path(name)).expect("test vectors are readable")
}

/// An F32 tensor of the file, which must exist.
pub fn f32s(file: &TensorFile, name: &str) -> (Vec<usize>, Vec<f32>) {
    file.f32(name)
        .expect("readable")
        .unwrap_or_else(|| panic!("{name} missing from {}", file.path().display()))
}

/// A rank-2 integer tensor of the file on `device`.
pub fn ints2(file: &TensorFile, name: &str, device: &Device) -> Tensor<2, Int> {
    let (shape, v) = file.i64(name).expect("readable").expect("present");
    Tensor::from_data(TensorData::new(v, [shape[0], shape[1]]), device)
}

/// Reads a tensor back as f32.
pub fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

/// Asserts `got` and `want` agree elementwise to `tol` (absolute), reporting the worst index.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let (worst, diff) = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .enumerate()
        .fold((0, 0.0f32), |acc, (i, d)| {
            if d > acc.1 || d.is_nan() { (i, d) } else { acc }
        });
    assert!(
        diff <= tol,
        "{what}: max abs diff {diff:e} at {worst} (got {}, want {}), tolerance {tol:e}",
        got[worst],
        want[worst]
    );
}
