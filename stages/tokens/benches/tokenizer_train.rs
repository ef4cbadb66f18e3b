//! Benchmark: training the 32,768-token WordPiece tokenizer on the mirror's
//! English Wikipedia sample (56.2 MB of non-empty articles).
//! Run: `cargo bench -p cram-tokens --bench tokenizer_train`.
//! Python `tokenizers` (reference way, same machine, 2 threads): 6.71 s.

mod common;

use cram_tokens::{TokenizerParams, run_tokenizer};

const PYTHON_SECONDS: f64 = 6.71;

fn main() {
    let Some(files) = common::enwiki_files() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("temp dir");
    let docs = tmp.path().join("docs");
    let (documents, bytes) = common::write_enwiki_documents(files, &docs);
    println!(
        "corpus: {documents} non-empty articles, {:.1} MB",
        bytes as f64 / 1e6
    );
    let out = tmp.path().join("tokenizer");
    std::fs::create_dir_all(&out).expect("out dir");
    let params = TokenizerParams::default();
    let summary =
        run_tokenizer(&params, &docs, 0, &out, &indicatif::ProgressBar::hidden()).expect("train");
    println!(
        "wordpiece {}: train {:.2} s (stage {:.2} s) on {} docs / {:.1} MB; python {PYTHON_SECONDS} s; ratio python/ours {:.2}x",
        summary.vocab_size,
        summary.train_seconds,
        summary.seconds,
        summary.training_documents,
        summary.training_bytes as f64 / 1e6,
        PYTHON_SECONDS / summary.train_seconds
    );
    println!(
        "held-back {} docs: unk rate {:.5}, tokens/word {:.3}; peak RSS {:.0} MiB",
        summary.eval_documents,
        summary.eval_unk_rate,
        summary.eval_tokens_per_word,
        common::peak_rss_mib()
    );
}
