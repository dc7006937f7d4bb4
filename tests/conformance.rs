//! Runs ../shared/conformance/check.py (it plays kube-apiserver: verified TLS, python-jsonpatch,
//! the official schema, idempotence) against the binary, on the shared cases and on ours in
//! tests/conformance/<set>/ (each set with its own configmap.yaml).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn check(cases: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("../shared/conformance/check.py");
    let out = Command::new("python3")
        .arg(&script)
        .args(["--bin", common::BIN, "--cases"])
        .arg(cases)
        .output()
        .unwrap_or_else(|e| panic!("python3 {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{}:\n{stdout}", cases.display());
    assert!(
        out.status.success(),
        "{}: conformance failed (needs openssl and `pip install pyyaml jsonpatch kubernetes-validate`):\n{stdout}{}",
        cases.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}

#[test]
fn shared_conformance_cases() {
    check(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance/cases"));
}

#[test]
fn our_conformance_cases() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance");
    let mut sets: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    sets.sort();
    assert!(!sets.is_empty());
    for set in sets {
        check(&set);
    }
}
