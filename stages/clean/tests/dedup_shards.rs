//! `dedup` split into shards (as a Slurm array runs it): the shards build
//! the parts' suffix arrays in any order, the merge gives the one pass's
//! bytes, and damaged or missing part files are refused.

use std::path::{Path, PathBuf};

use cram_clean::dedup_shards::{merge_dedup_shards, prepare_dedup_shards, run_dedup_shard};
use cram_clean::{DedupParams, DedupSummary, Keep, run_dedup};
use indicatif::ProgressBar;

mod common;
use common::{output_files, two_threads, word_docs, write_docs};

/// Prepares, builds `shards` shards (last first) and returns the prepared
/// folder and the shard folders in order.
fn build_shards(
    params: &DedupParams,
    input: &Path,
    root: &Path,
    shards: usize,
) -> (PathBuf, Vec<PathBuf>, usize) {
    let hidden = ProgressBar::hidden();
    let prepared = root.join("prepared");
    std::fs::create_dir_all(&prepared).unwrap();
    prepare_dedup_shards(params, input, &prepared, &hidden).unwrap();
    let mut dirs = Vec::new();
    let mut parts = 0;
    for shard in (0..shards).rev() {
        let d = root.join(format!("shard-{shard}"));
        std::fs::create_dir_all(&d).unwrap();
        parts += run_dedup_shard(params, &prepared, shard, shards, &d, &hidden).unwrap();
        dirs.push(d);
    }
    dirs.reverse();
    (prepared, dirs, parts)
}

/// The summary as `summary.json` holds it (the run's facts left out).
fn hashed(s: &DedupSummary) -> serde_json::Value {
    serde_json::to_value(s).unwrap()
}

#[test]
fn sharded_dedup_merges_to_the_one_pass_output_byte_for_byte() {
    let docs = word_docs(41, 1_500_000);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    write_docs(&input, &docs);
    let hidden = ProgressBar::hidden();
    for keep in [Keep::None, Keep::First] {
        let one_pass = DedupParams {
            min_length: 50,
            keep,
            ..DedupParams::default()
        };
        let one = dir.path().join(format!("one-{keep:?}"));
        std::fs::create_dir(&one).unwrap();
        let single = run_dedup(&one_pass, &input, &one, &hidden).unwrap();
        assert!(!single.within_budget && single.duplicate_bytes > 0);
        // A 1 MiB budget cuts the 1.5 MB corpus into a few dozen parts and
        // merges them mapped; 1 MiB parts under the default budget make two,
        // merged with the corpus on the heap.
        for (memory_mb, part_mb, shards) in [(1, 8, 1), (1, 8, 4), (1, 8, 9), (4096, 1, 2)] {
            let params = DedupParams {
                memory_mb,
                part_mb,
                ..one_pass.clone()
            };
            let root = dir
                .path()
                .join(format!("sharded-{keep:?}-{memory_mb}-{shards}"));
            let (prepared, dirs, built) =
                two_threads().install(|| build_shards(&params, &input, &root, shards));
            if memory_mb == 1 {
                assert!(built > 2 * shards, "{built} parts in {shards} shards");
            } else {
                assert_eq!(built, 2);
            }
            let out = root.join("out");
            std::fs::create_dir_all(&out).unwrap();
            let merged = two_threads()
                .install(|| merge_dedup_shards(&params, &prepared, &dirs, &out, &hidden))
                .unwrap();
            assert_eq!(merged.parts, built);
            assert_eq!(merged.within_budget, memory_mb == 1);
            assert_eq!(
                hashed(&merged),
                hashed(&single),
                "{keep:?}, {shards} shards"
            );
            let (a, b) = (output_files(&one), output_files(&out));
            assert_eq!(
                a.iter().map(|x| &x.0).collect::<Vec<_>>(),
                b.iter().map(|x| &x.0).collect::<Vec<_>>()
            );
            assert!(a == b, "{keep:?}, {shards} shards: the files differ");
        }
    }
}

#[test]
fn damaged_or_missing_part_files_and_other_parameters_are_refused() {
    let docs = word_docs(7, 400_000);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    write_docs(&input, &docs);
    let params = DedupParams {
        min_length: 40,
        memory_mb: 1,
        ..DedupParams::default()
    };
    let hidden = ProgressBar::hidden();
    let root = dir.path().join("sharded");
    let (prepared, dirs, _) = two_threads().install(|| build_shards(&params, &input, &root, 3));
    let merge = |dirs: &[PathBuf]| {
        let out = tempfile::tempdir_in(dir.path()).unwrap();
        two_threads()
            .install(|| merge_dedup_shards(&params, &prepared, dirs, out.path(), &hidden))
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    // A truncated part file.
    let victim = std::fs::read_dir(&dirs[1])
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "sa"))
        .unwrap();
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &bytes[..bytes.len() - 4]).unwrap();
    let err = merge(&dirs).unwrap_err();
    assert!(err.contains(victim.to_str().unwrap()), "{err}");
    assert!(err.contains("damaged"), "{err}");
    std::fs::write(&victim, &bytes).unwrap();
    assert_eq!(merge(&dirs), Ok(()));
    // Shards in the wrong order or one missing: a part file is not found.
    let swapped = [dirs[1].clone(), dirs[0].clone(), dirs[2].clone()];
    assert!(merge(&swapped).is_err());
    let err = merge(&dirs[..2]).unwrap_err();
    assert!(err.contains(".sa") && err.contains("No such file"), "{err}");
    // A shard of a plan made for another window length.
    let other = DedupParams {
        min_length: 41,
        ..params.clone()
    };
    let d = root.join("other");
    std::fs::create_dir_all(&d).unwrap();
    let err = run_dedup_shard(&other, &prepared, 0, 3, &d, &hidden)
        .unwrap_err()
        .to_string();
    assert!(err.contains("prepared for min_length 40, not 41"), "{err}");
}
