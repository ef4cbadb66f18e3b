//! The patched dependencies under `vendor/` (vendor/README.md) are the crates.io releases plus
//! the recorded patch and nothing else: every file hashes to the release's file (the list in
//! `vendor/<crate>.release.sha256`, taken from the published `.crate`), except the patched files,
//! which hash to the patched text recorded here. An edit to a vendored file, a file added or
//! lost, or a new release copied in without updating the list fails this test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// A patched file of a vendored crate: its path in the crate and the sha256 of the patched text.
type Patched = (&'static str, &'static str);

/// `(crate directory, release hash list, patched files)`.
const VENDORED: &[(&str, &str, &[Patched])] = &[(
    "vendor/cubecl-spirv",
    "vendor/cubecl-spirv.release.sha256",
    &[(
        "src/ops/memory.rs",
        "8f3d0d81274726d5b16fd076da5d7ac9f8b94f74516f57c248f54107db048e09",
    )],
)];

fn sha256(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn vendored_crates_are_the_release_plus_the_recorded_patch() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (dir, list, patched) in VENDORED {
        let dir = root.join(dir);
        let release: BTreeMap<String, String> = std::fs::read_to_string(root.join(list))
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let (hash, file) = l.split_once("  ").expect("`HASH  FILE` lines");
                (file.to_string(), hash.to_string())
            })
            .collect();
        let present: Vec<String> = files_under(&dir)
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            present,
            release.keys().cloned().collect::<Vec<_>>(),
            "{}: the files differ from the release's",
            dir.display()
        );
        for (file, release_hash) in &release {
            let got = sha256(&dir.join(file));
            match patched.iter().find(|(f, _)| f == file) {
                Some((_, want)) => {
                    assert_ne!(&got, release_hash, "{file}: the patch is missing");
                    assert_eq!(&got, want, "{file}: differs from the recorded patch");
                }
                None => assert_eq!(&got, release_hash, "{file}: differs from the release"),
            }
        }
    }
}
