//! Shared helpers of the benchmarks: the mirror's English Wikipedia sample.

use std::path::{Path, PathBuf};

use cram_data::documents::{DocumentWriter, StringColumnBatches};

/// The enwiki sample's Parquet files, or `None` (with a message) if the
/// shared mirror is absent.
pub fn enwiki_files() -> Option<Vec<PathBuf>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(
        "../../../shared/hf-mirror/datasets/cramming-mirror/enwiki-sample/resolve/main/articles",
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    files.sort();
    if files.is_empty() {
        println!("SKIP: no enwiki sample under {}", dir.display());
        return None;
    }
    Some(files)
}

/// Reads the non-empty articles (column `text`) straight from the Parquet
/// files and writes them as a documents directory; returns (documents, bytes).
pub fn write_enwiki_documents(files: Vec<PathBuf>, out: &Path) -> (u64, u64) {
    let mut writer = DocumentWriter::create(out).expect("create documents dir");
    for batch in StringColumnBatches::new(files, "text", 8192) {
        for text in batch.expect("read enwiki parquet") {
            if !text.trim().is_empty() {
                writer.push(&text).expect("write document");
            }
        }
    }
    let written = writer.finish().expect("finish documents");
    (written.documents, written.bytes)
}

/// Peak resident set size of this process in MiB (VmHWM).
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}
