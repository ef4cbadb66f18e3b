//! Moving single files between the local disk and an object store, in
//! bounded memory: files stream in chunks both ways, and large uploads go
//! in parts.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, WriteMultipart};

/// Files up to this size go in one request; larger ones in parts of it (S3
/// wants at least 5 MiB per part).
const PART_BYTES: usize = 16 << 20;

/// How many parts of one file may be in flight at once.
const PARTS_IN_FLIGHT: usize = 4;

/// The whole object at `path`, or `None` if there is none.
pub async fn get_bytes(store: &dyn ObjectStore, path: &ObjectPath) -> Result<Option<Vec<u8>>> {
    match store.get(path).await {
        Ok(got) => Ok(Some(got.bytes().await?.to_vec())),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {path}")),
    }
}

/// Uploads the local file `src` to `dest`.
pub async fn upload(
    store: &Arc<dyn ObjectStore>,
    dest: &ObjectPath,
    src: &Path,
    bar: &indicatif::ProgressBar,
) -> Result<()> {
    let mut file = std::fs::File::open(src)?;
    let len = file.metadata()?.len();
    if len <= PART_BYTES as u64 {
        let mut data = Vec::with_capacity(len as usize);
        file.read_to_end(&mut data)?;
        store.put(dest, data.into()).await?;
        bar.inc(len);
        return Ok(());
    }
    let mut writer =
        WriteMultipart::new_with_chunk_size(store.put_multipart(dest).await?, PART_BYTES);
    let mut buf = vec![0u8; 1 << 20];
    let result: Result<()> = async {
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
            writer.write(&buf[..n]);
            bar.inc(n as u64);
        }
    }
    .await;
    match result {
        Ok(()) => {
            writer.finish().await?;
            Ok(())
        }
        Err(e) => {
            let _ = writer.abort().await;
            Err(e)
        }
    }
}

/// Downloads `src` into the local file `dest` (creating its directory),
/// returning its size and blake3 (hex), or `None` if there is no such
/// object.
pub async fn download(
    store: &dyn ObjectStore,
    src: &ObjectPath,
    dest: &Path,
    bar: &indicatif::ProgressBar,
) -> Result<Option<(u64, String)>> {
    let got = match store.get(src).await {
        Ok(got) => got,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {src}")),
    };
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(dest).with_context(|| format!("cannot create {}", dest.display()))?,
    );
    let mut hasher = blake3::Hasher::new();
    let mut size = 0u64;
    let mut stream = got.into_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.with_context(|| format!("reading {src} was cut short"))?;
        hasher.update(&chunk);
        file.write_all(&chunk)?;
        size += chunk.len() as u64;
        bar.inc(chunk.len() as u64);
    }
    file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(Some((size, hasher.finalize().to_hex().to_string())))
}

/// Every object under `prefix`, as (path relative to it, full path).
pub async fn list(
    store: &dyn ObjectStore,
    prefix: &ObjectPath,
) -> Result<Vec<(PathBuf, ObjectPath)>> {
    let mut out = Vec::new();
    let mut items = store.list(Some(prefix));
    while let Some(item) = items.next().await {
        let meta = match item {
            Ok(meta) => meta,
            Err(object_store::Error::NotFound { .. }) => break,
            Err(e) => return Err(e).with_context(|| format!("cannot list {prefix}")),
        };
        let Some(parts) = meta.location.prefix_match(prefix) else {
            continue;
        };
        let rel: PathBuf = parts.map(|p| p.as_ref().to_string()).collect();
        if rel
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
        {
            out.push((rel, meta.location));
        }
    }
    out.sort();
    Ok(out)
}
