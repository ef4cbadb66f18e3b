//! Benchmark of `dedup` on the mirror's English Wikipedia sample
//! (96,339 articles, 56.7 MB), `min_length = 75`.
//!
//! Run with `cargo bench -p cram-clean --bench dedup`. Prints seconds, MB/s,
//! peak RSS and duplicate bytes, for the suffix-array pass alone (in-memory
//! corpus) and for the whole stage (documents directory in and out), and the
//! ratios to the reference tool (google-research/deduplicate-text-datasets as
//! Cramming calls it: 37.3 s, 1.52 MB/s, 184 MB peak on the 2-core machine).
//! Optional arguments: `--part-mb N` (default: the stage's default), `--keep first`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use cram_clean::dedup::peak_rss_bytes;
use cram_clean::{Corpus, DedupParams, Keep, find_duplicates, run_dedup};
use cram_data::documents::{DocumentWriter, StringColumnBatches};
use indicatif::ProgressBar;

const REFERENCE_SECONDS: f64 = 37.3;
const REFERENCE_PEAK_MB: f64 = 184.0;

fn mirror_files() -> Option<Vec<PathBuf>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(
        "../../../shared/hf-mirror/datasets/cramming-mirror/enwiki-sample/resolve/main/articles",
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    files.sort();
    (!files.is_empty()).then_some(files)
}

/// Resets the kernel's peak-RSS counter of this process (Linux).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let mut params = DedupParams {
        min_length: 75,
        ..DedupParams::default()
    };
    if let Some(p) = arg("--part-mb") {
        params.part_mb = p.parse().expect("--part-mb takes a number");
    }
    if arg("--keep").as_deref() == Some("first") {
        params.keep = Keep::First;
    }
    let Some(files) = mirror_files() else {
        println!("skipped: ../shared/hf-mirror/.../enwiki-sample not found");
        return;
    };
    let work = tempfile::tempdir().expect("temp dir");
    let input = work.path().join("in");
    let mut writer = DocumentWriter::create(&input).expect("documents writer");
    for batch in StringColumnBatches::new(files, "text", 4096) {
        for text in batch.expect("mirror parquet") {
            writer.push(&text).expect("write documents");
        }
    }
    let written = writer.finish().expect("finish documents");
    let bytes = written.bytes;
    println!(
        "enwiki-sample: {} documents, {:.1} MB; min_length {}, part_mb {}, keep {:?}, {} threads",
        written.documents,
        mb(bytes),
        params.min_length,
        params.part_mb,
        params.keep,
        rayon::current_num_threads()
    );

    // 1. The suffix-array pass and the cuts on an in-memory corpus.
    let mut corpus = Corpus::new();
    for batch in cram_data::documents::read_documents(&input).expect("read") {
        for text in batch.expect("read") {
            corpus.push(&text);
        }
    }
    reset_peak();
    let scratch = tempfile::tempdir().expect("temp dir");
    let t = Instant::now();
    let dups = find_duplicates(
        &corpus,
        params.min_length,
        params.keep,
        params.part_mb << 20,
        scratch.path(),
        &ProgressBar::hidden(),
    )
    .expect("find duplicates");
    let cut: u64 = (0..corpus.documents())
        .map(|d| {
            dups.cuts(&corpus, d)
                .iter()
                .map(|r| r.len() as u64)
                .sum::<u64>()
        })
        .sum();
    let s = t.elapsed().as_secs_f64();
    println!(
        "find duplicates + cuts (corpus in memory): {s:.2} s (suffix arrays {:.2}, merge+scan {:.2}), {:.2} MB/s, peak RSS {:.0} MB (corpus included), {} parts, duplicate bytes {} ({:.2} %)",
        dups.seconds_suffix_arrays,
        dups.seconds_merge,
        mb(bytes) / s,
        mb(peak_rss_bytes().unwrap_or(0)),
        dups.parts,
        cut,
        100.0 * cut as f64 / bytes as f64
    );
    drop(dups);
    drop(corpus);

    // 2. The whole stage: read the documents, deduplicate, write them.
    reset_peak();
    let out = work.path().join("out");
    std::fs::create_dir(&out).expect("out dir");
    let t = Instant::now();
    let summary = run_dedup(&params, &input, &out, &ProgressBar::hidden()).expect("dedup");
    let s = t.elapsed().as_secs_f64();
    let peak = mb(peak_rss_bytes().unwrap_or(0));
    println!(
        "run_dedup (parquet in and out): {s:.2} s (read {:.2}, find {:.2}, write {:.2}), {:.2} MB/s, peak RSS {peak:.0} MB",
        summary.seconds_read,
        summary.seconds_find,
        summary.seconds_write,
        mb(bytes) / s
    );
    println!(
        "  documents {} -> {} ({} changed, {} dropped), bytes {} -> {}, duplicate bytes {} in {} spans, {} repeated windows",
        summary.documents_in,
        summary.documents_out,
        summary.documents_changed,
        summary.documents_dropped,
        summary.bytes_in,
        summary.bytes_out,
        summary.duplicate_bytes,
        summary.duplicate_spans,
        summary.repeated_windows
    );
    println!(
        "  memory estimate {:.0} MB ({:.2} bytes per input byte)",
        mb(summary.memory_estimate_bytes),
        summary.memory_bytes_per_input_byte
    );
    println!(
        "  vs reference tool ({REFERENCE_SECONDS} s, {:.2} MB/s, {REFERENCE_PEAK_MB} MB): speed ×{:.2}, peak memory ×{:.2}",
        mb(bytes) / REFERENCE_SECONDS,
        REFERENCE_SECONDS / s,
        peak / REFERENCE_PEAK_MB
    );
    println!("  most repeated:");
    for w in summary.top_repeated.iter().take(10) {
        println!("    {:>6} × {:?}", w.count, w.text);
    }
}
