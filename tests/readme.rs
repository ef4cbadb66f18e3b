//! README's parameter reference is generated from the code's own parameter
//! docs (`cram kinds --markdown`), so it cannot drift: this test fails when
//! they differ, and prints the fresh text to paste.

use std::process::Command;

#[test]
fn readme_parameter_reference_matches_the_code() {
    let out = Command::new(env!("CARGO_BIN_EXE_cram"))
        .args(["kinds", "--markdown"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let generated = String::from_utf8(out.stdout).unwrap();
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("<!-- kinds:start -->")
        .expect("README has a kinds:start marker");
    let end = readme
        .find("<!-- kinds:end -->")
        .expect("README has a kinds:end marker");
    let section = readme[start + "<!-- kinds:start -->".len()..end].trim();
    assert!(
        section == generated.trim(),
        "README's stage reference is out of date: replace the text between the kinds markers with the output of `cram kinds --markdown`"
    );
}
