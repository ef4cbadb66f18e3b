//! Tests of the `download` kind against a local hub-like server serving the
//! shared mirror (real GLUE and Wikipedia files) and generated fixtures.

mod common;

use std::io::Write;
use std::path::Path;

use common::{COMMIT, Fault, HubServer, mirror};
use cram_data::documents::{StringColumnBatches, count_documents, read_documents};
use cram_data::download::{
    DownloadError, DownloadMode, DownloadParams, HubConfig, Layout, Origin, resolve_source_with,
    run_download_with,
};

fn bar() -> indicatif::ProgressBar {
    indicatif::ProgressBar::hidden()
}

fn params(source: &str) -> DownloadParams {
    DownloadParams {
        source: source.to_string(),
        retry_base_ms: 1,
        ..DownloadParams::default()
    }
}

fn hub(server: &HubServer) -> HubConfig {
    HubConfig::new(&server.url, None)
}

fn read_all(dir: &Path) -> Vec<String> {
    read_documents(dir)
        .unwrap()
        .flat_map(|b| b.unwrap())
        .collect()
}

fn column(path: &Path, name: &str, n: usize) -> Vec<String> {
    StringColumnBatches::new(vec![path.to_path_buf()], name, 4096)
        .flat_map(|b| b.unwrap())
        .take(n)
        .collect()
}

const GLUE: &str = "datasets/nyu-mll/glue/resolve/main";
const ENWIKI: &str = "datasets/cramming-mirror/enwiki-sample/resolve/main";

#[test]
fn glue_cola_files_mode_with_pagination_and_cache() {
    let Some(root) = mirror() else { return };
    let server = HubServer::start(&root);
    server.page_size(2);
    let hub = hub(&server);
    let mut p = params("hf://datasets/nyu-mll/glue/cola/*.parquet");
    p.mode = DownloadMode::Files;
    let identity = resolve_source_with(&p, &hub).unwrap();
    assert_eq!(identity.origin, Origin::Hub);
    assert_eq!(identity.commit.as_deref(), Some(COMMIT));
    let names: Vec<&str> = identity.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        names,
        [
            "cola/test-00000-of-00001.parquet",
            "cola/train-00000-of-00001.parquet",
            "cola/validation-00000-of-00001.parquet"
        ]
    );
    assert!(
        identity
            .files
            .iter()
            .all(|f| f.sha256.as_ref().is_some_and(|s| s.len() == 64))
    );
    // The listing was paginated.
    assert!(
        server
            .seen()
            .iter()
            .filter(|s| s.path.contains("/tree/"))
            .count()
            >= 2
    );

    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    server.clear_seen();
    let summary = run_download_with(&p, &identity, cache.path(), out.path(), &bar(), &hub).unwrap();
    assert_eq!(summary.files.len(), 3);
    let local = std::fs::read(root.join(GLUE).join("cola/train-00000-of-00001.parquet")).unwrap();
    let stored = std::fs::read(out.path().join("cola/train-00000-of-00001.parquet")).unwrap();
    assert_eq!(local, stored);
    assert_eq!(
        summary.fetched_bytes,
        identity.files.iter().map(|f| f.size.unwrap()).sum::<u64>()
    );
    assert!(
        summary
            .files
            .iter()
            .all(|f| !f.cached && f.revision.as_deref() == Some(COMMIT))
    );
    assert!(out.path().join("summary.json").is_file());
    // Downloads went to the pinned commit, not the branch.
    assert!(
        server
            .seen()
            .iter()
            .any(|s| s.path.contains(&format!("/resolve/{COMMIT}/cola/")))
    );

    // Same identity again: served from the download cache, no network.
    server.clear_seen();
    let out2 = tempfile::tempdir().unwrap();
    let again = run_download_with(&p, &identity, cache.path(), out2.path(), &bar(), &hub).unwrap();
    assert!(server.seen().is_empty(), "{:?}", server.seen());
    assert_eq!(again.fetched_bytes, 0);
    assert!(again.files.iter().all(|f| f.cached));
    assert_eq!(again.files[1].sha256, summary.files[1].sha256);
}

#[test]
fn enwiki_articles_documents_with_max_documents() {
    let Some(root) = mirror() else { return };
    let server = HubServer::start(&root);
    let hub = hub(&server);
    let mut p = params("hf://datasets/cramming-mirror/enwiki-sample/articles/train-*.parquet");
    p.max_documents = Some(500);
    let identity = resolve_source_with(&p, &hub).unwrap();
    assert_eq!(identity.files.len(), 4);
    assert_eq!(
        identity.files[0].sha256.as_deref(),
        Some("647c60e76c25d46033c562abd0c4afb93dc4494dc9a0624cb97840c3a79f572f")
    );
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let summary = run_download_with(&p, &identity, cache.path(), out.path(), &bar(), &hub).unwrap();
    assert_eq!(summary.documents, 500);
    assert!(summary.truncated);
    assert_eq!(summary.layout, Some(Layout::Rows));
    // Only the first file was needed.
    assert_eq!(summary.files.len(), 1);
    assert_eq!(
        summary.files[0].sha256,
        identity.files[0].sha256.clone().unwrap()
    );
    assert_eq!(count_documents(out.path()).unwrap(), 500);
    let expected: Vec<String> = column(
        &root
            .join(ENWIKI)
            .join("articles/train-00000-of-00004.parquet"),
        "text",
        3000,
    )
    .into_iter()
    .filter(|t| !t.trim().is_empty())
    .take(500)
    .collect();
    let got = read_all(out.path());
    assert_eq!(got.len(), expected.len());
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert!(
            g == e,
            "document {i} differs: {:?} vs {:?}",
            &g[..g.len().min(80)],
            &e[..e.len().min(80)]
        );
    }
}

#[test]
fn enwiki_raw_titled_layout_matches_articles() {
    let Some(root) = mirror() else { return };
    let server = HubServer::start(&root);
    let hub = hub(&server);
    let mut p =
        params("hf://datasets/cramming-mirror/enwiki-sample/raw/train-00000-of-00004.parquet");
    p.layout = Layout::Titled;
    p.max_documents = Some(300);
    let identity = resolve_source_with(&p, &hub).unwrap();
    assert_eq!(identity.files.len(), 1);
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let summary = run_download_with(&p, &identity, cache.path(), out.path(), &bar(), &hub).unwrap();
    assert_eq!(summary.documents, 300);
    // Every document is `title\nbody` and equals the `articles` config's row
    // of that title.
    let articles = root
        .join(ENWIKI)
        .join("articles/train-00000-of-00004.parquet");
    let titles = column(&articles, "title", 2000);
    let texts = column(&articles, "text", 2000);
    let by_title: std::collections::HashMap<&str, &str> = titles
        .iter()
        .map(String::as_str)
        .zip(texts.iter().map(String::as_str))
        .collect();
    let docs = read_all(out.path());
    let mut matched = 0;
    for doc in &docs {
        let (title, body) = doc.split_once('\n').expect("title line");
        // Bodies with blank lines inside are ambiguous in this layout (see
        // the `titled` docs): compare the others exactly.
        if let Some(text) = by_title.get(title).filter(|t| !t.contains("\n\n")) {
            assert_eq!(*text, body, "article {title:?}");
            matched += 1;
        }
    }
    assert!(
        matched >= 250,
        "only {matched} of 300 documents matched the articles config"
    );
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn local_jsonl_gz_zst_and_text() {
    let dir = tempfile::tempdir().unwrap();
    let a = b"{\"text\": \"first doc\", \"id\": 1}\n{\"text\": \"second \\u00e9\"}\n\n{\"text\": \"   \"}\n";
    std::fs::write(dir.path().join("a.jsonl.gz"), gz(a)).unwrap();
    let mut b = b"{\"text\": \"zst doc\"}\n{\"text\": \"bad ".to_vec();
    b.extend_from_slice(b"\xff\xfe bytes\"}\n");
    std::fs::write(
        dir.path().join("b.jsonl.zst"),
        zstd::encode_all(&b[..], 3).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("c.txt"),
        b"Para one line one.\nline two.\n\nPara two \xe9.\n",
    )
    .unwrap();

    let cache = tempfile::tempdir().unwrap();
    let hub = HubConfig::new("http://127.0.0.1:9", None);
    let src = format!("{}/*.jsonl.*", dir.path().display());
    let p = params(&src);
    let identity = resolve_source_with(&p, &hub).unwrap();
    assert_eq!(identity.origin, Origin::Local);
    assert_eq!(identity.files.len(), 2);
    assert_eq!(identity.files[0].path, "a.jsonl.gz");
    let out = tempfile::tempdir().unwrap();
    let s = run_download_with(&p, &identity, cache.path(), out.path(), &bar(), &hub).unwrap();
    assert_eq!(
        read_all(out.path()),
        vec![
            "first doc",
            "second é",
            "zst doc",
            "bad \u{FFFD}\u{FFFD} bytes"
        ]
    );
    assert_eq!(s.replaced_characters, 2);
    assert_eq!(s.skipped_empty, 1);
    assert_eq!(s.fetched_bytes, 0);
    assert!(s.files.iter().all(|f| f.cached));

    let src = dir.path().join("c.txt").display().to_string();
    let p = params(&src);
    let identity = resolve_source_with(&p, &hub).unwrap();
    let out = tempfile::tempdir().unwrap();
    let s = run_download_with(&p, &identity, cache.path(), out.path(), &bar(), &hub).unwrap();
    assert_eq!(s.layout, Some(Layout::Paragraphs));
    assert_eq!(
        read_all(out.path()),
        vec!["Para one line one.\nline two.", "Para two \u{FFFD}."]
    );
    assert_eq!(s.replaced_characters, 1);

    // A JSON line without the field names the file and line.
    std::fs::write(
        dir.path().join("d.jsonl"),
        b"{\"text\": \"ok\"}\n{\"body\": \"x\"}\n",
    )
    .unwrap();
    let p = params(&dir.path().join("d.jsonl").display().to_string());
    let identity = resolve_source_with(&p, &hub).unwrap();
    let out = tempfile::tempdir().unwrap();
    let err = run_download_with(&p, &identity, cache.path(), out.path(), &bar(), &hub).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("d.jsonl") && msg.contains("line 2") && msg.contains("text_field"),
        "{msg}"
    );

    // A glob that matches nothing.
    let p = params(&format!("{}/*.nothing", dir.path().display()));
    let err = resolve_source_with(&p, &hub).unwrap_err();
    assert!(matches!(err, DownloadError::NoMatch { .. }), "{err}");
}

#[test]
fn a_folder_of_books_with_layout_file_gives_one_document_per_book() {
    let dir = tempfile::tempdir().unwrap();
    let books = dir.path().join("books");
    std::fs::create_dir_all(books.join("more")).unwrap();
    std::fs::write(
        books.join("a.txt"),
        "THE FIRST BOOK\r\n\r\nChapter I.\r\nIt began.\r\n\r\nChapter II.\r\nIt ended.\r\n",
    )
    .unwrap();
    std::fs::write(
        books.join("more/b.txt.gz"),
        gz(b"The second book, in one paragraph.\n\n\nAnd a last line"),
    )
    .unwrap();
    std::fs::write(books.join("c.txt"), "  \n\n").unwrap();
    let cache = tempfile::tempdir().unwrap();
    let hub = HubConfig::new("http://127.0.0.1:9", None);
    let mut p = params(&books.display().to_string());
    let by_paragraph = {
        let identity = resolve_source_with(&p, &hub).unwrap();
        let out = tempfile::tempdir().unwrap();
        run_download_with(&p, &identity, cache.path(), out.path(), &bar(), &hub).unwrap();
        read_all(out.path())
    };
    assert_eq!(by_paragraph.len(), 5, "{by_paragraph:?}");
    p.layout = Layout::File;
    let identity = resolve_source_with(&p, &hub).unwrap();
    let out = tempfile::tempdir().unwrap();
    let s = run_download_with(&p, &identity, cache.path(), out.path(), &bar(), &hub).unwrap();
    assert_eq!(s.layout, Some(Layout::File));
    assert_eq!(s.skipped_empty, 1, "the blank book is dropped");
    assert_eq!(
        read_all(out.path()),
        vec![
            "THE FIRST BOOK\n\nChapter I.\nIt began.\n\nChapter II.\nIt ended.",
            "The second book, in one paragraph.\n\n\nAnd a last line",
        ]
    );
}

/// A small generated repository served by the test server.
fn fixture_repo() -> (tempfile::TempDir, Vec<u8>) {
    let root = tempfile::tempdir().unwrap();
    let dir = root
        .path()
        .join("datasets/test-org/corpus/resolve/main/data");
    std::fs::create_dir_all(&dir).unwrap();
    let mut text = String::new();
    for i in 0..20_000 {
        text.push_str(&format!("Line {i} of the fixture corpus.\n"));
        if i % 7 == 6 {
            text.push('\n');
        }
    }
    let packed = zstd::encode_all(text.as_bytes(), 3).unwrap();
    std::fs::write(dir.join("part-0.txt.zst"), &packed).unwrap();
    std::fs::write(
        dir.join("notes.txt"),
        b"Plain file outside LFS.\n\nSecond paragraph.\n",
    )
    .unwrap();
    (root, packed)
}

#[test]
fn an_lfs_oid_that_is_not_a_sha256_is_refused_before_it_names_a_file() {
    // The oid names the downloaded file under the cache's `downloads/`: a listing whose oid
    // climbs out of that folder must stop at the listing, naming the file and the value.
    let (root, _) = fixture_repo();
    let server = HubServer::start(root.path());
    server.forge_lfs_oid("../../../outside");
    let err = resolve_source_with(
        &params("hf://datasets/test-org/corpus/data/*"),
        &hub(&server),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("not a sha256") && err.contains("data/part-0.txt.zst"),
        "{err}"
    );
    assert!(err.contains("../../../outside"), "{err}");
}

#[test]
fn resume_after_truncation_and_retry_after_500() {
    let (root, packed) = fixture_repo();
    let server = HubServer::start(root.path());
    let hub = hub(&server);
    let p = params("hf://datasets/test-org/corpus/data/*");
    let identity = resolve_source_with(&p, &hub).unwrap();
    assert_eq!(identity.files.len(), 2);
    let notes = identity
        .files
        .iter()
        .find(|f| f.path == "data/notes.txt")
        .unwrap();
    assert!(notes.sha256.is_none() && notes.git_oid.as_ref().is_some_and(|g| g.len() == 40));

    server.fault("part-0", Fault::Truncate(10_000), 1);
    server.fault("part-0", Fault::Status(500), 1);
    server.fault("notes", Fault::Status(503), 2);
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let s = run_download_with(&p, &identity, cache.path(), out.path(), &bar(), &hub).unwrap();
    let gets: Vec<_> = server
        .seen()
        .into_iter()
        .filter(|r| r.path.contains("part-0"))
        .collect();
    assert_eq!(gets.len(), 3, "{gets:?}");
    assert_eq!(gets[0].range, None);
    // Second attempt: 500; third: resumed from the received bytes.
    assert_eq!(gets[2].range.as_deref(), Some("bytes=10000-"));
    // The LFS file came through the CDN redirect, Range included.
    assert!(
        server
            .seen()
            .iter()
            .any(|r| r.path.starts_with("/cdn/") && r.range.as_deref() == Some("bytes=10000-")),
        "{:?}",
        server.seen()
    );
    assert_eq!(s.fetched_bytes, packed.len() as u64 + notes.size.unwrap());
    assert_eq!(s.documents, 2 + 20_000 / 7 + 1);
    let docs = read_all(out.path());
    assert_eq!(docs[..2], ["Plain file outside LFS.", "Second paragraph."]);
    assert!(docs[2].starts_with("Line 0 of the fixture corpus.\nLine 1"));
    let cached = std::fs::read_dir(cache.path()).unwrap().count();
    assert_eq!(cached, 2, "no partial file left behind");
}

#[test]
fn corrupt_body_fails_after_retries_naming_the_file() {
    let (root, _) = fixture_repo();
    let server = HubServer::start(root.path());
    let hub = hub(&server);
    let mut p = params("hf://datasets/test-org/corpus/data/part-0.txt.zst");
    p.retries = 2;
    let identity = resolve_source_with(&p, &hub).unwrap();
    server.fault("part-0", Fault::Corrupt, 10);
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let err = run_download_with(&p, &identity, cache.path(), out.path(), &bar(), &hub).unwrap_err();
    assert!(
        matches!(err, DownloadError::Corrupt { attempts: 3, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("data/part-0.txt.zst"), "{err}");
    assert!(err.to_string().contains("sha256"), "{err}");

    // One corrupt answer only: the retry fixes it.
    let server = HubServer::start(root.path());
    let hub = HubConfig::new(&server.url, None);
    server.fault("part-0", Fault::Corrupt, 1);
    let identity = resolve_source_with(&p, &hub).unwrap();
    let out = tempfile::tempdir().unwrap();
    run_download_with(&p, &identity, cache.path(), out.path(), &bar(), &hub).unwrap();
}

#[test]
fn errors_404_401_and_identity_changes() {
    let (root, _) = fixture_repo();
    let server = HubServer::start(root.path());
    let hub = hub(&server);

    let err =
        resolve_source_with(&params("hf://datasets/test-org/missing/*.txt"), &hub).unwrap_err();
    assert!(matches!(err, DownloadError::NotFound { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("404") && msg.contains("test-org/missing") && msg.contains(&server.url),
        "{msg}"
    );

    let err = resolve_source_with(
        &params("hf://datasets/test-org/corpus/data/*.parquet"),
        &hub,
    )
    .unwrap_err();
    assert!(matches!(err, DownloadError::NoMatch { .. }), "{err}");

    let url_source = format!(
        "{}/datasets/test-org/corpus/resolve/main/data/nothing.txt",
        server.url
    );
    let err = resolve_source_with(&params(&url_source), &hub).unwrap_err();
    assert!(matches!(err, DownloadError::NotFound { .. }), "{err}");

    // A plain URL: identity from the headers (X-Linked-Etag is a sha256).
    let url_source = format!(
        "{}/datasets/test-org/corpus/resolve/main/data/part-0.txt.zst",
        server.url
    );
    let id = resolve_source_with(&params(&url_source), &hub).unwrap();
    assert_eq!(id.origin, Origin::Url);
    assert_eq!(id.commit.as_deref(), Some(COMMIT));
    assert!(id.files[0].sha256.is_some());
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let s = run_download_with(
        &params(&url_source),
        &id,
        cache.path(),
        out.path(),
        &bar(),
        &hub,
    )
    .unwrap();
    assert_eq!(s.documents, 20_000 / 7 + 1);

    // The identity follows the content: a changed file changes it.
    let p = params("hf://datasets/test-org/corpus/data/*.txt");
    let before = resolve_source_with(&p, &hub).unwrap();
    let server2 = HubServer::start(root.path());
    std::fs::write(
        root.path()
            .join("datasets/test-org/corpus/resolve/main/data/notes.txt"),
        b"changed\n",
    )
    .unwrap();
    let after = resolve_source_with(&p, &HubConfig::new(&server2.url, None)).unwrap();
    assert_ne!(before.files, after.files);

    // A token is required: without it the error says to set HF_TOKEN; with it
    // the request succeeds and carries the bearer token.
    server2.require_token("secret");
    let err = resolve_source_with(&p, &HubConfig::new(&server2.url, None)).unwrap_err();
    assert!(
        matches!(err, DownloadError::Unauthorized { status: 401, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("HF_TOKEN"), "{err}");
    let authed = HubConfig::new(&server2.url, Some("secret".to_string()));
    resolve_source_with(&p, &authed).unwrap();
    assert!(
        server2
            .seen()
            .iter()
            .any(|s| s.authorization.as_deref() == Some("Bearer secret"))
    );
}
