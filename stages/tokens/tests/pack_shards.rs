//! `pack` in shards: prepared once, encoded range by range, merged in order,
//! it writes the one-pass run's files byte for byte.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{corpus, pack, setup};
use cram_data::documents::DocumentWriter;
use cram_tokens::pack::PackError;
use cram_tokens::pack_shards::{
    merge_pack_shards, pack_splits, prepare_pack_shards, run_pack_shard,
};
use cram_tokens::{PackParams, RowOrdering};

/// Every file under `dir`, by relative path, with its bytes.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let name = path.strip_prefix(root).unwrap().display().to_string();
                out.insert(name, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Runs `params` in `shards` shards under `work`; returns the output dir.
fn sharded(
    docs: &Path,
    tok: &Path,
    params: &PackParams,
    shards: usize,
    work: &Path,
) -> Result<PathBuf, PackError> {
    let bar = indicatif::ProgressBar::hidden();
    let prepared = work.join("prepared");
    std::fs::create_dir_all(&prepared).unwrap();
    prepare_pack_shards(params, docs, tok, &prepared)?;
    let mut dirs = Vec::new();
    for shard in 0..shards {
        let dir = work.join(format!("shard-{shard}"));
        std::fs::create_dir_all(&dir).unwrap();
        run_pack_shard(params, docs, tok, &prepared, shard, shards, &dir, &bar)?;
        dirs.push(dir);
    }
    let out = work.join("out");
    std::fs::create_dir_all(&out).unwrap();
    merge_pack_shards(params, docs, tok, 7, &prepared, &dirs, &out, &bar)?;
    Ok(out)
}

/// The corpus re-written in small Parquet files, so that shard ranges
/// cross files.
fn split_documents(dir: &Path, docs: &[String]) {
    let mut w = DocumentWriter::create(dir)
        .unwrap()
        .with_shard_bytes(40_000);
    for d in docs {
        w.push(d).unwrap();
    }
    assert!(w.finish().unwrap().shards.len() >= 4);
}

#[test]
fn shards_merge_to_the_one_pass_bytes_in_every_ordering() {
    let docs = corpus(3000);
    let (tmp, _, tok) = setup(&docs, 400);
    let docs_dir = tmp.path().join("split-docs");
    split_documents(&docs_dir, &docs);
    let cases = [
        PackParams {
            ordering: RowOrdering::None,
            seq_length: 32,
            heldout_rows: 0,
            ..PackParams::default()
        },
        PackParams {
            ordering: RowOrdering::Randomized,
            seq_length: 24,
            heldout_rows: 6,
            // Several buckets, some split again.
            shuffle_memory_bytes: 3_000,
            shard_bytes: 20_000,
            ..PackParams::default()
        },
        PackParams {
            ordering: RowOrdering::SentenceLengthCurriculum,
            seq_length: 40,
            heldout_rows: 4,
            max_sequences: Some(500),
            fast_wordpiece: false,
            ..PackParams::default()
        },
    ];
    for (i, params) in cases.iter().enumerate() {
        assert!(pack_splits(params));
        let one = tmp.path().join(format!("one-{i}"));
        let summary = pack(&docs_dir, &tok, params, &one).unwrap();
        assert!(summary.rows > 100, "{summary:?}");
        assert_eq!(summary.heldout_rows, params.heldout_rows);
        let expected = tree(&one);
        for shards in [1, 3, 7] {
            let work = tmp.path().join(format!("work-{i}-{shards}"));
            let out = sharded(&docs_dir, &tok, params, shards, &work).unwrap();
            let got = tree(&out);
            assert_eq!(
                got.keys().collect::<Vec<_>>(),
                expected.keys().collect::<Vec<_>>(),
                "case {i}, {shards} shards: the files"
            );
            for (name, bytes) in &expected {
                assert!(
                    &got[name] == bytes,
                    "case {i}, {shards} shards: {name} differs"
                );
            }
        }
    }
}

#[test]
fn a_damaged_shard_or_a_stopping_ordering_is_refused() {
    let docs = corpus(600);
    let (tmp, docs_dir, tok) = setup(&docs, 300);
    let early = PackParams {
        ordering: RowOrdering::None,
        max_sequences: Some(10),
        ..PackParams::default()
    };
    assert!(!pack_splits(&early));
    let err = sharded(&docs_dir, &tok, &early, 2, &tmp.path().join("early")).unwrap_err();
    assert!(err.to_string().contains("one task"), "{err}");

    let params = PackParams {
        seq_length: 16,
        ..PackParams::default()
    };
    let work = tmp.path().join("damaged");
    sharded(&docs_dir, &tok, &params, 2, &work).unwrap();
    let bar = indicatif::ProgressBar::hidden();
    let dirs = [work.join("shard-0"), work.join("shard-1")];
    let merge = |name: &str| {
        let out = work.join(name);
        std::fs::create_dir_all(&out).unwrap();
        merge_pack_shards(
            &params,
            &docs_dir,
            &tok,
            7,
            &work.join("prepared"),
            &dirs,
            &out,
            &bar,
        )
    };
    merge("again").unwrap();
    let ids = dirs[1].join("ids.bin");
    let bytes = std::fs::read(&ids).unwrap();
    std::fs::write(&ids, &bytes[..bytes.len() - 3]).unwrap();
    let err = merge("truncated").unwrap_err();
    assert!(
        matches!(&err, PackError::Shard { dir, .. } if dir == &dirs[1]),
        "{err}"
    );
    assert!(err.to_string().contains("ends inside a document"), "{err}");
    let mut longer = bytes.clone();
    longer.extend_from_slice(&[1, 0]);
    std::fs::write(&ids, &longer).unwrap();
    let err = merge("longer").unwrap_err();
    assert!(err.to_string().contains("more ids"), "{err}");
    // Shards in the wrong order do not cover their ranges.
    std::fs::write(&ids, &bytes).unwrap();
    let out = work.join("swapped");
    std::fs::create_dir_all(&out).unwrap();
    let swapped = [dirs[1].clone(), dirs[0].clone()];
    let err = merge_pack_shards(
        &params,
        &docs_dir,
        &tok,
        7,
        &work.join("prepared"),
        &swapped,
        &out,
        &bar,
    )
    .unwrap_err();
    assert!(err.to_string().contains("covers"), "{err}");
}
