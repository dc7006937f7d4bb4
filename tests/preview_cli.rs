//! The `preview` command over whole manifests.

mod common;

use serde_json::Value;
use sidecar_injector::yaml;
use std::path::Path;
use std::process::Output;

fn preview(args: &[&str], stdin: Option<&str>) -> Output {
    let mut all = vec!["preview"];
    all.extend_from_slice(args);
    common::run(common::BIN, &all, stdin)
}

fn manifest(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/manifests")
        .join(name)
        .display()
        .to_string()
}

fn names(spec: &Value, field: &str) -> Vec<String> {
    spec[field]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn mixed_manifest_injects_deployment_and_cronjob_only() {
    let input = std::fs::read_to_string(manifest("mixed.yaml")).unwrap();
    let out = preview(&["-f", &manifest("mixed.yaml")], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let docs: Vec<Value> = yaml::documents(&stdout).unwrap();
    assert_eq!(docs.len(), 4, "{stdout}");

    let deploy = &docs[0]["spec"]["template"]["spec"];
    assert_eq!(
        names(deploy, "containers"),
        ["web", "bitbucket-pipelines-metrics-collector"]
    );
    assert!(
        docs[0]["spec"]["template"]["metadata"]["annotations"]["sidecar-injector.io/status"]
            .is_string()
    );

    let cron = &docs[2]["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(
        names(cron, "containers"),
        ["report"],
        "the CronJob gets a native sidecar, not a container"
    );
    assert_eq!(
        names(cron, "initContainers"),
        ["bitbucket-pipelines-metrics-collector"]
    );
    assert_eq!(cron["initContainers"][0]["restartPolicy"], "Always");

    // The Service and the opted-out StatefulSet come out exactly as they went in.
    let chunks: Vec<&str> = input.split("---\n").collect();
    let out_chunks: Vec<&str> = stdout.split("---\n").collect();
    assert_eq!(out_chunks[1], chunks[1], "Service byte for byte");
    assert_eq!(out_chunks[3], chunks[3], "StatefulSet byte for byte");

    assert!(
        stderr.contains("Deployment/web: injected (injected)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("CronJob/nightly: injected (injected)")
            && stderr.contains("native sidecars"),
        "{stderr}"
    );
    assert!(
        stderr.contains("StatefulSet/db: skipped (opted_out)"),
        "{stderr}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out.yaml");
    std::fs::write(&file, &stdout).unwrap();
    common::schema_valid(&[file]);
}

#[test]
fn patch_output_applies_to_each_document_and_json_matches_it() {
    let input = std::fs::read_to_string(manifest("mixed.yaml")).unwrap();
    let originals: Vec<Value> = yaml::documents(&input).unwrap();
    let patches = preview(&["-f", &manifest("mixed.yaml"), "-o", "patch"], None);
    let results = preview(&["-f", &manifest("mixed.yaml"), "-o", "json"], None);
    assert!(patches.status.success() && results.status.success());
    let patches: Vec<json_patch::Patch> = String::from_utf8(patches.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one patch per line"))
        .collect();
    let results: Vec<Value> = serde_json::Deserializer::from_slice(&results.stdout)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(patches.len(), 4);
    assert_eq!(results.len(), 4);
    assert!(patches[1].0.is_empty() && patches[3].0.is_empty());
    for ((orig, patch), want) in originals.iter().zip(&patches).zip(&results) {
        let mut doc = orig.clone();
        json_patch::patch(&mut doc, patch).expect("the printed patch applies to its document");
        assert_eq!(&doc, want);
    }
}

#[test]
fn diff_shows_the_injected_lines() {
    let out = preview(&["-f", &manifest("mixed.yaml"), "-o", "diff"], None);
    let diff = String::from_utf8(out.stdout).unwrap();
    assert!(
        diff.contains("--- a/Deployment/web") && diff.contains("+++ b/Deployment/web"),
        "{diff}"
    );
    assert!(
        diff.contains("+      - name: bitbucket-pipelines-metrics-collector"),
        "{diff}"
    );
    assert!(
        !diff.contains("StatefulSet"),
        "unchanged documents have no diff"
    );
}

#[test]
fn namespace_labels_and_lists_and_json_on_stdin() {
    let pod = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "image": "a:1"}]}}"#;
    let out = preview(
        &["--namespace", "team-a", "--namespace-label", "team=a"],
        Some(pod),
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("skipped (namespace_not_enabled)"),
        "{stderr}"
    );

    let out = preview(
        &[
            "--namespace-label",
            "sidecar-injection=enabled",
            "-o",
            "json",
        ],
        Some(pod),
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        names(&doc["spec"], "containers"),
        ["a", "bitbucket-pipelines-metrics-collector"]
    );

    let list = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: a}\n  spec: {containers: [{name: a, image: 'a:1'}]}\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: c}\n";
    let out = preview(&["-o", "json", "--namespace", "kube-system"], Some(list));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("List/items[0]/Pod/a: skipped (never_inject_namespace)"),
        "{stderr}"
    );
    let out = preview(&["-o", "json"], Some(list));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        names(&doc["items"][0]["spec"], "containers"),
        ["a", "bitbucket-pipelines-metrics-collector"]
    );
    assert_eq!(doc["items"][1]["kind"], "ConfigMap");
}

#[test]
fn unreadable_input_is_an_error_with_the_file_name() {
    let out = preview(&["-f", "/nonexistent.yaml"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.yaml"));
    let out = preview(&[], Some("a: [unclosed\n"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("error:"));
}

#[test]
fn a_pod_security_level_that_forbids_host_paths_is_warned_about() {
    let pod = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "image": "a:1"}]}}"#;
    let labels = [
        "--namespace-label",
        "sidecar-injection=enabled",
        "--namespace-label",
    ];
    for (level, warned) in [
        ("baseline", true),
        ("restricted", true),
        ("privileged", false),
    ] {
        let label = format!("pod-security.kubernetes.io/enforce={level}");
        let mut args = labels.to_vec();
        args.push(&label);
        let out = preview(&args, Some(pod));
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(
            stderr.contains("rejects the injected hostPath volumes [\"docker-sock\", \"cgroup\"]"),
            warned,
            "{level}: {stderr}"
        );
    }
}

#[test]
fn an_untouched_last_document_is_printed_to_its_last_byte() {
    // A Deployment, then a ConfigMap ending in a `|` block scalar with no final newline: its
    // value is "echo ready" (no "\n"), and must stay so.
    let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: app\n        image: nginx:1.27\n";
    let configmap = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: scripts # kept as written\ndata:\n  check.sh: |\n    #!/bin/sh\n    echo ready";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in.yaml");
    std::fs::write(&file, format!("{deployment}---\n{configmap}")).unwrap();
    let out = preview(&["-f", file.to_str().unwrap()], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.ends_with(&format!("---\n{configmap}")),
        "the ConfigMap's bytes, and no newline added:\n{stdout:?}"
    );
    let docs: Vec<Value> = yaml::documents(&stdout).unwrap();
    assert_eq!(docs[1]["metadata"]["name"], "scripts");
    let containers = docs[0]["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert!(
        containers
            .iter()
            .any(|c| c["name"] == "bitbucket-pipelines-metrics-collector"),
        "the Deployment is injected"
    );
}
