//! Content hashing: canonical JSON for parameters, blake3 for files and
//! directory trees.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Writes `value` as JSON with object keys sorted at every level and no
/// whitespace, so that equal values always give equal bytes whatever order
/// their maps were built in.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*key).clone()).to_string());
                out.push(':');
                write_canonical(&map[key.as_str()], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// blake3 of a canonical JSON value, as hex.
pub fn hash_json(value: &Value) -> String {
    blake3::hash(canonical_json(value).as_bytes())
        .to_hex()
        .to_string()
}

/// blake3 of a file's bytes, as hex, streamed.
pub fn hash_file(path: &Path) -> io::Result<String> {
    let mut hasher = blake3::Hasher::new();
    let mut file = File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().to_hex().to_string())
}

/// One file of a stage output, as recorded in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Path relative to the output directory, with `/` separators.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// blake3 of the bytes, hex.
    pub blake3: String,
}

/// Lists every regular file under `dir` (recursively), sorted by relative
/// path, with size and blake3.
pub fn hash_tree(dir: &Path) -> io::Result<Vec<FileRecord>> {
    list_files(dir)?
        .into_iter()
        .map(|(rel, path)| {
            let size = std::fs::metadata(&path)?.len();
            Ok(FileRecord {
                path: rel,
                size,
                blake3: hash_file(&path)?,
            })
        })
        .collect()
}

/// Every regular file under `dir` (recursively), sorted, as (path relative
/// to `dir` with `/` separators, full path).
pub fn list_files(dir: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    let mut files = Vec::new();
    collect_files(dir, dir, &mut files)?;
    files.sort();
    Ok(files)
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            collect_files(root, &path, out)?;
        } else if kind.is_file() {
            let rel = path
                .strip_prefix(root)
                .expect("walked path lies under its root")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            out.push((rel, path));
        }
    }
    Ok(())
}

/// The content hash of an output: blake3 over the sorted list of
/// (path, size, file hash). Two outputs with the same files and bytes have
/// the same hash whatever their timestamps.
pub fn output_hash(files: &[FileRecord]) -> String {
    let mut hasher = blake3::Hasher::new();
    for f in files {
        hasher.update(f.path.as_bytes());
        hasher.update(&[0]);
        hasher.update(f.size.to_le_bytes().as_slice());
        hasher.update(f.blake3.as_bytes());
        hasher.update(&[0]);
    }
    hasher.finalize().to_hex().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let a = json!({"b": 1, "a": {"y": [1, {"d": 2, "c": 3}], "x": null}});
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"x":null,"y":[1,{"c":3,"d":2}]},"b":1}"#
        );
    }

    #[test]
    fn output_hash_ignores_nothing_but_order_of_listing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/b.txt"), b"bee").unwrap();
        std::fs::write(dir.path().join("a.txt"), b"ay").unwrap();
        let files = hash_tree(dir.path()).unwrap();
        assert_eq!(
            files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
            ["a.txt", "sub/b.txt"]
        );
        let before = output_hash(&files);
        std::fs::write(dir.path().join("a.txt"), b"az").unwrap();
        assert_ne!(before, output_hash(&hash_tree(dir.path()).unwrap()));
    }
}
