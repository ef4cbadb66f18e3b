//! `dedup` under a memory budget, through the `cram` binary: a synthetic
//! corpus more than four times the budget deduplicates with a peak resident
//! set under the budget plus a stated constant, and writes the same bytes as
//! the in-memory pass (whose peak is far above that bound).

use std::path::Path;
use std::process::Command;

/// The budget, in MiB.
const BUDGET_MB: u64 = 16;

/// What the stage holds outside the budget, whatever the corpus: Parquet's
/// buffers (the writer keeps a row group of up to 32 MiB of text before it
/// encodes it; the reader decodes a page at a time) and the allocator's
/// caches. Measured 25–42 MiB here (docs/performance.md).
const CONSTANT_MB: u64 = 64;

const PIPELINE: &str = r#"
name = "bounded"
seed = 0

[stages.corpus]
kind = "synthetic"
documents = 90000

[stages.dedup]
kind = "dedup"
inputs = ["corpus"]
min_length = 50
memory_mb = 16

[stages.in_memory]
kind = "dedup"
inputs = ["corpus"]
min_length = 50
"#;

fn run_until(dir: &Path, stage: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_cram"))
        .args(["run", "p.toml", "--until", stage])
        .current_dir(dir)
        .env_remove("CRAM_CACHE")
        .env("RAYON_NUM_THREADS", "2")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cram run --until {stage} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The manifest of the cache entry the lock file pins for `stage`.
fn manifest(dir: &Path, stage: &str) -> serde_json::Value {
    let lock: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("p.toml.lock")).unwrap()).unwrap();
    let key = lock["stages"][stage]["key"].as_str().unwrap().to_string();
    let path = dir.join("cache/entries").join(key).join("manifest.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn mib(v: &serde_json::Value) -> f64 {
    v.as_u64().unwrap() as f64 / (1 << 20) as f64
}

#[test]
fn dedup_within_a_budget_a_quarter_of_the_corpus() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.toml"), PIPELINE).unwrap();
    // Each dedup runs in a process of its own, so that its peak is its own.
    run_until(dir.path(), "corpus");
    run_until(dir.path(), "dedup");
    run_until(dir.path(), "in_memory");

    let bounded = manifest(dir.path(), "dedup");
    let heap = manifest(dir.path(), "in_memory");
    let corpus_mb = mib(&bounded["metrics"]["bytes_in"]);
    assert!(
        corpus_mb >= 4.0 * BUDGET_MB as f64,
        "the corpus ({corpus_mb:.1} MiB) must be at least 4x the budget"
    );
    let (t, h) = (&bounded["metrics"]["timings"], &heap["metrics"]["timings"]);
    assert_eq!(t["within_budget"], true, "{t}");
    assert_eq!(h["within_budget"], false, "{h}");
    let used = mib(&t["peak_rss_bytes"]) - mib(&t["baseline_rss_bytes"]);
    let heap_used = mib(&h["peak_rss_bytes"]) - mib(&h["baseline_rss_bytes"]);
    println!(
        "corpus {corpus_mb:.1} MiB: within {BUDGET_MB} MiB the stage held {used:.1} MiB over its baseline \
         ({} parts, {} page drops); in memory {heap_used:.1} MiB",
        t["parts"], t["page_releases"]
    );
    let bound = (BUDGET_MB + CONSTANT_MB) as f64;
    assert!(
        used <= bound,
        "peak {used:.1} MiB over the baseline, bound {bound} MiB"
    );
    // The bound means something: the in-memory pass of the same corpus is
    // far above it.
    assert!(heap_used > bound, "in memory: {heap_used:.1} MiB");
    // Span for span the same output.
    assert_eq!(bounded["output_hash"], heap["output_hash"]);
    assert_ne!(bounded["key"], heap["key"]);
}
