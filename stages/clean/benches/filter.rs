//! Benchmark of `filter` on the mirror's English Wikipedia sample
//! (96,339 articles, 56.7 MB): normalisation alone, the stage with the
//! reference's defaults, and the stage with `remove_trash` (self-trained
//! tokenizer, cutoff 0.25).
//!
//! Run with `cargo bench -p cram-clean --bench filter`; prints MB/s.

use std::path::{Path, PathBuf};
use std::time::Instant;

use cram_clean::{FilterParams, NormalizeOptions, run_filter};
use cram_data::documents::{DocumentWriter, StringColumnBatches};
use indicatif::ProgressBar;
use rayon::prelude::*;

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

fn main() {
    let Some(files) = mirror_files() else {
        println!("skipped: ../shared/hf-mirror/.../enwiki-sample not found");
        return;
    };
    let work = tempfile::tempdir().expect("temp dir");
    let input = work.path().join("in");
    let mut writer = DocumentWriter::create(&input).expect("documents writer");
    let mut texts = Vec::new();
    for batch in StringColumnBatches::new(files, "text", 4096) {
        for text in batch.expect("mirror parquet") {
            writer.push(&text).expect("write documents");
            texts.push(text);
        }
    }
    let written = writer.finish().expect("finish documents");
    let mb = written.bytes as f64 / 1e6;
    println!(
        "enwiki-sample: {} documents, {mb:.1} MB, {} threads",
        written.documents,
        rayon::current_num_threads()
    );

    let options = NormalizeOptions::default();
    let t = Instant::now();
    let out_bytes: usize = texts.par_iter().map(|t| options.apply(t).len()).sum();
    let s = t.elapsed().as_secs_f64();
    println!(
        "normalisation only (in memory): {s:.2} s, {:.1} MB/s, {out_bytes} bytes out",
        mb / s
    );
    drop(texts);

    for (name, params) in [
        ("filter, reference defaults", FilterParams::default()),
        (
            "filter + remove_trash (self, cutoff 0.25)",
            FilterParams {
                remove_trash: true,
                trash_cutoff: 0.25,
                ..FilterParams::default()
            },
        ),
    ] {
        let out = tempfile::tempdir().expect("temp dir");
        let t = Instant::now();
        let summary = run_filter(&params, &input, None, 0, out.path(), &ProgressBar::hidden())
            .expect("filter");
        let s = t.elapsed().as_secs_f64();
        println!(
            "{name}: {s:.2} s, {:.1} MB/s; documents {} -> {}, dropped {:?}",
            mb / s,
            summary.documents_in,
            summary.documents_out,
            summary.dropped
        );
    }
}
