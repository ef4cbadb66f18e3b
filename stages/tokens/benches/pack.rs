//! Benchmark: packing the mirror's English Wikipedia sample (56.2 MB of
//! non-empty articles) into 128-token rows with a 32,768 WordPiece
//! tokenizer, for each ordering; prints MB/s of raw text in, rows/s out and
//! peak RSS. Run: `cargo bench -p cram-tokens --bench pack`.
//! Python (plain `tokenizers` + `pyarrow`, same machine, 2 threads):
//! 6.34 MB/s; the goal is at least 3x that (19 MB/s).

mod common;

use std::time::Instant;

use cram_tokens::fast::FastWordPiece;
use cram_tokens::pack::encode_documents;
use cram_tokens::{
    PackParams, RowOrdering, TokenizerParams, load_tokenizer, run_pack, run_tokenizer, special_ids,
};

const PYTHON_MB_S: f64 = 6.34;

fn main() {
    let Some(files) = common::enwiki_files() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("temp dir");
    let docs = tmp.path().join("docs");
    let (documents, bytes) = common::write_enwiki_documents(files, &docs);
    let mb = bytes as f64 / 1e6;
    println!(
        "corpus: {documents} non-empty articles, {mb:.1} MB; threads: {}",
        rayon::current_num_threads()
    );
    let tok_dir = tmp.path().join("tokenizer");
    std::fs::create_dir_all(&tok_dir).expect("out dir");
    let bar = indicatif::ProgressBar::hidden();
    run_tokenizer(&TokenizerParams::default(), &docs, 0, &tok_dir, &bar).expect("train tokenizer");
    let tok_path = tok_dir.join("tokenizer.json");

    let runs = [
        (RowOrdering::None, false),
        (RowOrdering::None, true),
        (RowOrdering::SentenceLengthCurriculum, true),
        (RowOrdering::Randomized, true),
    ];
    for (ordering, fast_wordpiece) in runs {
        let out = tmp
            .path()
            .join(format!("packed-{ordering:?}-{fast_wordpiece}"));
        std::fs::create_dir_all(&out).expect("out dir");
        let params = PackParams {
            ordering,
            fast_wordpiece,
            ..PackParams::default()
        };
        let summary = run_pack(&params, &docs, &tok_path, 0, &out, &bar).expect("pack");
        let on_disk: u64 = summary
            .shards
            .iter()
            .map(|n| std::fs::metadata(out.join(n)).map(|m| m.len()).unwrap_or(0))
            .sum();
        println!(
            "pack {ordering:?} (fast path: {fast_wordpiece}): {:.2} s, {:.2} MB/s in ({:.2}x python's {PYTHON_MB_S}), {:.0} rows/s out, {} rows, \
             {} tokens, unk {:.5}, {:.2} bytes/token on disk, peak RSS {:.0} MiB",
            summary.seconds,
            summary.mb_per_second,
            summary.mb_per_second / PYTHON_MB_S,
            summary.rows as f64 / summary.seconds,
            summary.rows,
            summary.tokens,
            summary.unk_fraction,
            on_disk as f64 / (summary.rows as f64 * summary.seq_length as f64),
            common::peak_rss_mib()
        );
        std::fs::remove_dir_all(&out).ok();
    }

    // Encoding alone (after the packing runs, so it does not raise their
    // peak RSS).
    // All documents in memory, no Parquet, no rows.
    let tokenizer = load_tokenizer(&tok_path).expect("load");
    let ids = special_ids(&tokenizer).expect("specials");
    let texts: Vec<String> = cram_data::documents::read_documents(&docs)
        .expect("read")
        .flat_map(|b| b.expect("batch"))
        .collect();
    let fast = FastWordPiece::new(&tokenizer).expect("default WordPiece has the fast path");
    let mut outputs = Vec::new();
    for (name, f) in [
        ("library encode_fast", None),
        ("hand-written fast path", Some(&fast)),
    ] {
        let t = Instant::now();
        let mut tokens = 0u64;
        let mut all = Vec::new();
        for chunk in texts.chunks(8192) {
            let (enc, _) = encode_documents(&tokenizer, f, chunk, ids.sep, ids.unk, u32::MAX, 0)
                .expect("encode");
            tokens += enc.iter().map(|d| d.len() as u64).sum::<u64>();
            all.extend(enc);
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "encode only ({name}, rayon): {:.2} MB/s, {:.0} tokens/s",
            mb / s,
            tokens as f64 / s
        );
        outputs.push(all);
    }
    // The fast path must give the library's ids on every document.
    let mismatches: Vec<usize> = (0..texts.len())
        .filter(|&i| outputs[0][i] != outputs[1][i])
        .collect();
    println!(
        "fast path check: {} of {} documents differ from the library{}",
        mismatches.len(),
        texts.len(),
        mismatches
            .first()
            .map_or(String::new(), |i| format!(" (first: document {i})"))
    );
    assert!(
        mismatches.is_empty(),
        "the fast WordPiece path differs from tokenizers"
    );
    drop(texts);
}
