//! Real manifests nobody here wrote: Istio's injection-test inputs (Apache-2.0), read from the
//! directory `$CORPUS_DIR` names (the shared corpus beside the repository; never copied into
//! it). Plain `cargo test` lists it as ignored; `.ci/run` runs it as its own step:
//! `CORPUS_DIR=... cargo test --test corpus -- --ignored`.

mod common;

use serde_json::Value;
use sidecar_injector::engine::yaml;
use std::path::PathBuf;
use std::process::Command;

const COLLECTOR: &str = "bitbucket-pipelines-metrics-collector";
/// Kinds with a Pod template that the interface lists; other kinds pass through unchanged.
const POD_KINDS: [&str; 8] = [
    "Pod",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "ReplicationController",
    "Job",
    "CronJob",
];

fn pod_spec(doc: &Value) -> Option<&Value> {
    match doc["kind"].as_str()? {
        "Pod" => doc.get("spec"),
        "CronJob" => doc.pointer("/spec/jobTemplate/spec/template/spec"),
        _ => doc.pointer("/spec/template/spec"),
    }
}

#[test]
#[ignore = "needs the shared corpus in $CORPUS_DIR; .ci/run runs it"]
fn every_istio_corpus_manifest_previews_to_valid_injected_kubernetes() {
    let corpus = PathBuf::from(
        std::env::var("CORPUS_DIR")
            .expect("CORPUS_DIR: the shared corpus's istio-inject directory"),
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(&corpus)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (the corpus lives in shared/, beside the repository)",
                corpus.display()
            )
        })
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 100);
    let out_dir = tempfile::tempdir().unwrap();
    let mut outputs = Vec::new();
    let mut injected = 0;
    for file in &files {
        let out = Command::new(common::bin())
            .arg("preview")
            .arg("-f")
            .arg(file)
            .output()
            .unwrap();
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let docs: Vec<Value> =
            yaml::documents(&text).unwrap_or_else(|e| panic!("{name}: output is not YAML: {e}"));
        let inputs: Vec<Value> = yaml::documents(&std::fs::read_to_string(file).unwrap()).unwrap();
        assert_eq!(
            docs.len(),
            inputs.len(),
            "{name}: as many documents out as in"
        );
        let items = docs.iter().flat_map(|d| {
            if d["kind"] == "List" {
                d["items"].as_array().cloned().unwrap_or_default()
            } else {
                vec![d.clone()]
            }
        });
        for doc in items {
            if !POD_KINDS.contains(&doc["kind"].as_str().unwrap_or_default()) {
                continue;
            }
            let spec = pod_spec(&doc).unwrap_or_else(|| panic!("{name}: no Pod spec"));
            let all: Vec<&str> = ["containers", "initContainers"]
                .iter()
                .flat_map(|f| spec[f].as_array().into_iter().flatten())
                .filter_map(|c| c["name"].as_str())
                .collect();
            assert!(
                all.contains(&COLLECTOR),
                "{name}: {} {} has no collector",
                doc["kind"],
                doc["metadata"]["name"]
            );
            injected += 1;
        }
        let path = out_dir.path().join(&name);
        std::fs::write(&path, text).unwrap();
        outputs.push(path);
    }
    assert!(
        injected >= 98,
        "only {injected} Pods and templates injected"
    );
    // OpenShift's DeploymentConfig has no Kubernetes schema; it passes through unchanged.
    let checked = common::schema_valid_skipping(&outputs, &["DeploymentConfig"]);
    println!(
        "{} files, {injected} Pods and templates injected, {checked} documents schema-valid",
        files.len()
    );
}
