//! Round-trip tests of the documents format.

use cram_data::documents::{
    DocumentWriter, DocumentsError, count_documents, list_shards, read_documents,
};

fn read_all(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for batch in read_documents(dir).unwrap() {
        out.extend(batch.unwrap());
    }
    out
}

#[test]
fn round_trip_many_documents_across_shards() {
    let tmp = tempfile::tempdir().unwrap();
    let docs: Vec<String> = (0..20_000)
        .map(|i| format!("document number {i} with some words {}", "x".repeat(i % 50)))
        .collect();
    let mut w = DocumentWriter::create(tmp.path())
        .unwrap()
        .with_shard_bytes(200_000);
    for d in &docs {
        w.push(d).unwrap();
    }
    let written = w.finish().unwrap();
    assert_eq!(written.documents, 20_000);
    assert_eq!(
        written.bytes,
        docs.iter().map(|d| d.len() as u64).sum::<u64>()
    );
    assert!(
        written.shards.len() > 3,
        "expected several shards: {:?}",
        written.shards
    );
    assert_eq!(written.shards[0], "part-00000.parquet");
    assert_eq!(written.shards[1], "part-00001.parquet");
    let shards = list_shards(tmp.path()).unwrap();
    assert_eq!(shards.len(), written.shards.len());
    assert_eq!(count_documents(tmp.path()).unwrap(), 20_000);
    let batches: Vec<Vec<String>> = read_documents(tmp.path())
        .unwrap()
        .map(|b| b.unwrap())
        .collect();
    assert!(batches.iter().all(|b| b.len() <= 8192 && !b.is_empty()));
    assert_eq!(read_all(tmp.path()), docs);
}

#[test]
fn empty_input_gives_one_empty_shard() {
    let tmp = tempfile::tempdir().unwrap();
    let written = DocumentWriter::create(tmp.path())
        .unwrap()
        .finish()
        .unwrap();
    assert_eq!(written.documents, 0);
    assert_eq!(written.bytes, 0);
    assert_eq!(written.shards, vec!["part-00000.parquet".to_string()]);
    assert_eq!(count_documents(tmp.path()).unwrap(), 0);
    assert!(read_all(tmp.path()).is_empty());
}

#[test]
fn unicode_and_empty_strings_survive() {
    let tmp = tempfile::tempdir().unwrap();
    let docs = [
        "Ünïcödé “quotes” — and ‘more’",
        "",
        "日本語のテキスト。",
        "emoji 🦀🚀 and combining e\u{301}",
        "line one\nline two\r\nline three",
    ];
    let mut w = DocumentWriter::create(tmp.path()).unwrap();
    for d in docs {
        w.push(d).unwrap();
    }
    w.finish().unwrap();
    assert_eq!(read_all(tmp.path()), docs);
}

#[test]
fn one_document_larger_than_a_shard() {
    let tmp = tempfile::tempdir().unwrap();
    let big = "word ".repeat(100_000);
    let mut w = DocumentWriter::create(tmp.path())
        .unwrap()
        .with_shard_bytes(1000);
    w.push("small").unwrap();
    w.push(&big).unwrap();
    w.push("after").unwrap();
    let written = w.finish().unwrap();
    // "small" + big go into the first shard (closed once over 1000 bytes).
    assert_eq!(written.shards.len(), 2);
    assert_eq!(
        read_all(tmp.path()),
        vec!["small".to_string(), big, "after".to_string()]
    );
}

#[test]
fn missing_shards_name_the_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let err = list_shards(tmp.path()).unwrap_err();
    assert!(matches!(err, DocumentsError::NoShards { .. }));
    assert!(err.to_string().contains(&tmp.path().display().to_string()));
    assert!(read_documents(&tmp.path().join("nope")).is_err());
}

#[test]
fn corrupt_shard_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("part-00000.parquet"), b"not parquet at all").unwrap();
    let err = count_documents(tmp.path()).unwrap_err();
    assert!(err.to_string().contains("part-00000.parquet"), "{err}");
    let err = read_documents(tmp.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap_err();
    assert!(err.to_string().contains("part-00000.parquet"), "{err}");
}

#[test]
fn pyarrow_reads_the_shards() {
    let have = std::process::Command::new("python3")
        .args(["-c", "import pyarrow"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !have {
        if std::env::var("CRAM_REQUIRE_PYTHON").as_deref() == Ok("1") {
            panic!("CRAM_REQUIRE_PYTHON=1 but `python3 -c 'import pyarrow'` fails");
        }
        eprintln!("SKIP pyarrow_reads_the_shards: python3 with pyarrow not available");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut w = DocumentWriter::create(tmp.path()).unwrap();
    for d in ["héllo “world”", "", "third"] {
        w.push(d).unwrap();
    }
    w.finish().unwrap();
    let script = "import sys, json, pyarrow.parquet as pq\n\
t = pq.read_table(sys.argv[1])\n\
f = t.schema.field('text')\n\
assert t.num_columns == 1 and str(f.type) == 'string' and not f.nullable, t.schema\n\
print(json.dumps(t.column('text').to_pylist()))";
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(tmp.path().join("part-00000.parquet"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got, vec!["héllo “world”", "", "third"]);
}
