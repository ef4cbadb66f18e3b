//! TensorBoard event files of scalar series, written from a finished
//! stage's logs into its entry's `run/tensorboard/` (they carry wall-clock
//! times, so they stay outside the hashed output).
//!
//! Written by hand because the format is small and stable and no
//! maintained crate writes it: a file of TFRecords (`u64` length, masked
//! CRC-32C of the length, the bytes, masked CRC-32C of the bytes), each an
//! `Event` protobuf message. The first event names the file version; every
//! other holds one scalar: `Event { wall_time = 1 (double), step = 2
//! (int64), summary = 5 { value = 1 { tag = 1 (string), simple_value = 2
//! (float) } } }`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The folder of a run directory that holds the event files.
pub const TENSORBOARD_DIR: &str = "tensorboard";

fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    (crc.rotate_right(15)).wrapping_add(0xa282_ead8)
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn field_bytes(field: u32, bytes: &[u8], out: &mut Vec<u8>) {
    varint(u64::from(field << 3 | 2), out);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// An `Event` with its wall time and step, and either the file version or
/// one scalar.
fn event(wall_time: f64, step: i64, body: Body<'_>) -> Vec<u8> {
    let mut e = Vec::new();
    e.push(0x09); // wall_time, fixed64
    e.extend_from_slice(&wall_time.to_le_bytes());
    e.push(0x10); // step, varint
    varint(step as u64, &mut e);
    match body {
        Body::Version => field_bytes(3, b"brain.Event:2", &mut e),
        Body::Scalar(tag, value) => {
            let mut v = Vec::new();
            field_bytes(1, tag.as_bytes(), &mut v);
            v.push(0x15); // simple_value, fixed32
            v.extend_from_slice(&value.to_le_bytes());
            let mut summary = Vec::new();
            field_bytes(1, &v, &mut summary);
            field_bytes(5, &summary, &mut e);
        }
    }
    e
}

enum Body<'a> {
    Version,
    Scalar(&'a str, f32),
}

/// One scalar of a series.
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar {
    /// The series' name (`train/loss`).
    pub tag: String,
    /// The step (optimizer step, or epoch).
    pub step: i64,
    /// Seconds since the Unix epoch when it was measured.
    pub wall_time: f64,
    /// The value.
    pub value: f64,
}

/// Writes `scalars` as one event file in `run_dir/tensorboard/`; returns its
/// path. Non-finite values are left out.
pub fn write_scalars(run_dir: &Path, scalars: &[Scalar]) -> Result<PathBuf> {
    let dir = run_dir.join(TENSORBOARD_DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("events.out.tfevents.0.cram");
    let mut out = Vec::new();
    let first = scalars.first().map_or(0.0, |s| s.wall_time);
    let mut record = |data: Vec<u8>| {
        let len = (data.len() as u64).to_le_bytes();
        out.extend_from_slice(&len);
        out.extend_from_slice(&masked_crc(&len).to_le_bytes());
        out.extend_from_slice(&data);
        out.extend_from_slice(&masked_crc(&data).to_le_bytes());
    };
    record(event(first, 0, Body::Version));
    for s in scalars.iter().filter(|s| s.value.is_finite()) {
        record(event(
            s.wall_time,
            s.step,
            Body::Scalar(&s.tag, s.value as f32),
        ));
    }
    let mut f =
        std::fs::File::create(&path).with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(&out)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// Seconds since the Unix epoch, now.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_framed_with_masked_crcs() {
        // The CRC-32C check value of "123456789" is 0xe3069283.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        let tmp = tempfile::tempdir().unwrap();
        let path = write_scalars(
            tmp.path(),
            &[Scalar {
                tag: "train/loss".into(),
                step: 3,
                wall_time: 1.5,
                value: 2.25,
            }],
        )
        .unwrap();
        let bytes = std::fs::read(path).unwrap();
        let mut at = 0;
        let mut records = 0;
        while at < bytes.len() {
            let len = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
            let crc = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap());
            assert_eq!(crc, masked_crc(&bytes[at..at + 8]));
            let data = &bytes[at + 12..at + 12 + len];
            let dcrc = u32::from_le_bytes(bytes[at + 12 + len..at + 16 + len].try_into().unwrap());
            assert_eq!(dcrc, masked_crc(data));
            at += 16 + len;
            records += 1;
        }
        assert_eq!(records, 2);
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("brain.Event:2") && text.contains("train/loss"));
    }
}
