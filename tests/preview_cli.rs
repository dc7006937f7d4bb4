//! The `preview` command over whole manifests.

mod common;

use serde_json::Value;
use sidecar_injector::engine::yaml;
use std::path::Path;
use std::process::Output;

fn preview(args: &[&str], stdin: Option<&str>) -> Output {
    let mut all = vec!["preview"];
    all.extend_from_slice(args);
    common::run(common::bin(), &all, stdin)
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

    assert!(stderr.contains("Deployment/web: injected"), "{stderr}");
    assert!(
        stderr.contains("CronJob/nightly: injected") && stderr.contains("native sidecars"),
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

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/configmaps")
        .join(name)
        .display()
        .to_string()
}

const PLAIN_POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: web, labels: {app: web}}\nspec:\n  containers: [{name: web, image: 'nginx:1.27'}]\n";

#[test]
fn templates_are_chosen_by_the_pod_then_the_namespace() {
    let config = example("collector-and-apm.yaml");
    // The Pod asks for both.
    let both = PLAIN_POD.replace(
        "metadata: {name: web,",
        "metadata: {annotations: {sidecar-injector.io/templates: 'default,apm'}, name: web,",
    );
    let out = preview(&["--config", &config, "-o", "json"], Some(&both));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let pod: Value = serde_json::from_slice(&out.stdout).unwrap();
    let spec = &pod["spec"];
    assert_eq!(
        names(spec, "containers"),
        ["web", "bitbucket-pipelines-metrics-collector"]
    );
    assert_eq!(names(spec, "initContainers"), ["apm-agent-init"]);
    assert_eq!(names(spec, "imagePullSecrets"), ["corp-registry"]);
    assert_eq!(
        spec["initContainers"][0]["image"], "registry.corp.example/mirror/agents/java-agent:1.52.0",
        "the APM image obeys imageRepository"
    );
    let status: Value = serde_json::from_str(
        pod["metadata"]["annotations"]["sidecar-injector.io/status"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let templates = status["templates"].as_object().unwrap();
    assert_eq!(templates.len(), 2, "{status}");
    for name in ["default", "apm"] {
        assert_eq!(templates[name].as_str().map(str::len), Some(16), "{status}");
    }
    assert_ne!(templates["default"], templates["apm"]);

    // No annotation on the Pod; the namespace asks for the agent alone.
    let out = preview(
        &[
            "--config",
            &config,
            "-o",
            "json",
            "--namespace-annotation",
            "sidecar-injector.io/templates=apm",
        ],
        Some(PLAIN_POD),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pod: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(names(&pod["spec"], "containers"), ["web"]);
    assert_eq!(names(&pod["spec"], "initContainers"), ["apm-agent-init"]);

    // An unknown name fails, under failurePolicy: exit 2 and the reason.
    let out = preview(
        &[
            "--config",
            &config,
            "--namespace-annotation",
            "sidecar-injector.io/templates=nope",
        ],
        Some(PLAIN_POD),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("failed (unknown_template)") && stderr.contains("\"nope\""),
        "{stderr}"
    );
}

#[test]
fn overrides_merge_field_by_field_and_image_is_refused() {
    let pod = PLAIN_POD.replace(
        "metadata: {name: web,",
        r#"metadata: {annotations: {sidecar-injector.io/values: '{"resources":{"limits":{"memory":"256Mi"}},"image":"evil/miner:1"}'}, name: web,"#,
    );
    let out = preview(
        &[
            "--config",
            &example("collector-and-apm.yaml"),
            "-o",
            "json",
            "--namespace-annotation",
            r#"sidecar-injector.io/values={"collectionInterval": "15"}"#,
        ],
        Some(&pod),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let pod: Value = serde_json::from_slice(&out.stdout).unwrap();
    let collector = &pod["spec"]["containers"][1];
    let env = |name: &str| {
        collector["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| e["value"].clone())
    };
    assert_eq!(env("METRIC_COLLECTION_INTERVAL"), Some("15".into()));
    assert_eq!(
        collector["resources"],
        serde_json::json!({"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "200m", "memory": "256Mi"}})
    );
    assert_eq!(
        collector["image"],
        "registry.corp.example/mirror/atlassian/bitbucket-pipelines-metrics-collector:2.1.0"
    );
    assert!(
        stderr.contains("warning: the Pod's annotation sidecar-injector.io/values: values.image: not overridable"),
        "{stderr}"
    );
}

#[test]
fn windows_pods_are_skipped() {
    for spec in [
        "  nodeSelector: {kubernetes.io/os: windows}\n",
        "  os: {name: windows}\n",
    ] {
        let pod = format!("{PLAIN_POD}{spec}");
        let out = preview(&["-o", "patch"], Some(&pod));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(
            stderr.contains("Pod/web: skipped (windows_pod)"),
            "{stderr}"
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    }
}

#[test]
fn several_files_and_directories_are_read_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pod = |name: &str| PLAIN_POD.replace("name: web,", &format!("name: {name},"));
    std::fs::write(d.join("a.yaml"), pod("first")).unwrap();
    std::fs::create_dir_all(d.join("dir/sub")).unwrap();
    std::fs::write(
        d.join("dir/b.yaml"),
        format!("{}---\n{}", pod("second"), pod("third")),
    )
    .unwrap();
    std::fs::write(
        d.join("dir/c.json"),
        serde_json::to_string(&yaml::from_str::<Value>(&pod("fourth")).unwrap()).unwrap(),
    )
    .unwrap();
    std::fs::write(d.join("dir/notes.txt"), "not a manifest").unwrap();
    std::fs::write(d.join("dir/sub/d.yml"), pod("fifth")).unwrap();
    let (a, dirarg) = (
        d.join("a.yaml").display().to_string(),
        d.join("dir").display().to_string(),
    );

    let out = preview(&["-f", &a, "-f", &dirarg, "-R"], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let docs: Vec<Value> = yaml::documents(&String::from_utf8_lossy(&out.stdout)).unwrap();
    let got: Vec<&str> = docs
        .iter()
        .map(|d| d["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        got,
        ["first", "second", "third", "fourth", "fifth"],
        "{stderr}"
    );
    assert!(
        docs.iter()
            .all(|d| d["spec"]["containers"].as_array().unwrap().len() == 2)
    );

    // Without -R the subdirectory is not read; an empty directory is an error, not nothing.
    let out = preview(&["-f", &a, "-f", &dirarg], None);
    let docs: Vec<Value> = yaml::documents(&String::from_utf8_lossy(&out.stdout)).unwrap();
    assert_eq!(docs.len(), 4);
    let empty = d.join("dir/sub/empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = preview(&["-f", &empty.display().to_string()], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no .yaml, .yml or .json file"));
}

#[test]
fn every_example_configmap_validates_and_the_collector_is_the_default() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/configmaps");
    let docs = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md"),
    )
    .unwrap();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    for f in &files {
        let out = common::run(
            common::bin(),
            &["validate", "--config", &f.display().to_string()],
            None,
        );
        assert!(
            out.status.success(),
            "{}: {}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let name = f.file_name().unwrap().to_string_lossy();
        assert!(
            docs.contains(&format!("examples/configmaps/{name}")),
            "docs/configuration.md shows {name}"
        );
    }
    let hash = |args: &[&str]| {
        let out = common::run(common::bin(), args, None);
        String::from_utf8_lossy(&out.stdout)
            .rsplit("template hash ")
            .next()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        hash(&["validate", "--config", &example("metrics-collector.yaml")]),
        hash(&["validate"]),
        "metrics-collector.yaml is the embedded default"
    );
    let raw = sidecar_injector::engine::config::parse_configmap(
        &std::fs::read_to_string(example("metrics-collector.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        raw.settings.as_deref(),
        Some(sidecar_injector::engine::config::DEFAULT_SETTINGS)
    );
    assert_eq!(
        raw.templates["default"],
        sidecar_injector::engine::config::DEFAULT_TEMPLATE
    );
}

#[test]
fn an_override_is_a_value_and_cannot_add_structure_or_run_template_code() {
    let hostile = r#"{"logLevel": "{{ 7 * 7 }}\"\n- name: evil\n  image: evil:1"}"#;
    let pod = PLAIN_POD.replace(
        "metadata: {name: web,",
        &format!(
            "metadata: {{annotations: {{sidecar-injector.io/values: {}}}, name: web,",
            serde_json::to_string(hostile).unwrap()
        ),
    );
    let out = preview(
        &["--config", &example("collector-and-apm.yaml"), "-o", "json"],
        Some(&pod),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let pod: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        names(&pod["spec"], "containers"),
        ["web", "bitbucket-pipelines-metrics-collector"]
    );
    let level = pod["spec"]["containers"][1]["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "LOG_LEVEL")
        .unwrap()["value"]
        .clone();
    assert_eq!(level, "{{ 7 * 7 }}\"\n- name: evil\n  image: evil:1");
}

#[test]
fn check_that_cannot_reach_a_cluster_exits_2_not_the_1_of_a_missing_sidecar() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("no-such-kubeconfig");
    let out = common::run(
        common::bin(),
        &[
            "check",
            "-A",
            "--kubeconfig",
            &kubeconfig.display().to_string(),
        ],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no-such-kubeconfig"), "{stderr}");
}

#[test]
fn a_port_in_use_names_the_flag_that_moves_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs").display().to_string();
    let out = common::run(
        common::bin(),
        &[
            "serve",
            "--listen",
            &addr,
            "--metrics-listen",
            "127.0.0.1:0",
            "--dev-certs-dir",
            &certs,
        ],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("listening on {addr}")) && stderr.contains("with --listen"),
        "{stderr}"
    );
}

/// Issue 33, finding 8: `validate` read only files; `--config -` (a ConfigMap manifest on
/// standard input, as `kubectl get configmap -o yaml` prints it) was refused.
#[test]
fn validate_reads_a_configmap_on_standard_input() {
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/configmaps/metrics-collector.yaml");
    let manifest = std::fs::read_to_string(&example).unwrap();
    let out = common::run(
        common::bin(),
        &["validate", "--config", "-"],
        Some(&manifest),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = common::run(
        common::bin(),
        &["validate", "--config", example.to_str().unwrap()],
        None,
    );
    let hash = |s: &str| s.rsplit("template hash ").next().unwrap().to_owned();
    assert!(stdout.starts_with("standard input: valid"), "{stdout}");
    assert_eq!(hash(&stdout), hash(&String::from_utf8_lossy(&file.stdout)));

    let broken = manifest.replace("containers:", "containers: [");
    let out = common::run(common::bin(), &["validate", "--config", "-"], Some(&broken));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("standard input: 1 problem(s)"), "{stderr}");
}
