//! Golden cases: input Pod + config -> expected decision, patch and Pod (see tests/golden/README.md).

use kube::core::GroupVersionKind;
use kube::core::admission::Operation;
use serde_json::Value;
use sidecar_injector::engine::config::{DEFAULT_OWN_NAMESPACE, Source};
use sidecar_injector::engine::yaml;
use sidecar_injector::engine::{self, Request};
use sidecar_injector::serve::admission::{self, Decoded};
use sidecar_injector::serve::config_files;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn read_yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

struct Outcome {
    decision: String,
    patch: String,
    injected: String,
}

fn run_case(dir: &Path) -> Outcome {
    let case = read_yaml(&dir.join("case.yaml"));
    // The config: the case's `config` (a path from the case's directory), its own
    // config.yaml, or the embedded default.
    let config_file = match case["config"].as_str() {
        Some(path) => dir.join(path),
        None => dir.join("config.yaml"),
    };
    let source = if config_file.exists() {
        Source::Path(config_file)
    } else {
        Source::Embedded
    };
    let config = config_files::load(&source, DEFAULT_OWN_NAMESPACE)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let map = |key: &str| -> Option<BTreeMap<String, String>> {
        case.get(key).map(|v| {
            serde_json::from_value(v.clone())
                .unwrap_or_else(|e| panic!("{}: {key}: {e}", dir.display()))
        })
    };
    let (labels, annotations) = (map("namespaceLabels"), map("namespaceAnnotations"));
    let pod = read_yaml(&dir.join("pod.yaml"));
    let namespace = case["namespace"].as_str().unwrap_or("default");
    let gvk = GroupVersionKind::gvk("", "v1", "Pod");
    let raw = serde_json::value::to_raw_value(&pod).unwrap();
    let decide = |object| {
        engine::decide(
            &Request {
                operation: Operation::Create,
                kind: &gvk,
                sub_resource: None,
                namespace,
                namespace_labels: labels.as_ref(),
                namespace_annotations: annotations.as_ref(),
                namespace_selected: false,
                object: Some(object),
                workload_kind: None,
            },
            &config,
        )
    };
    let decision = decide(engine::Object::Raw(&raw));
    let summary = |d: &engine::Decision| {
        let mut text = format!(
            "{} {}\nmessage: {}\n",
            d.outcome().as_str(),
            d.reason.as_str(),
            d.message
        );
        for w in &d.warnings {
            text.push_str(&format!("warning: {w}\n"));
        }
        text
    };
    let text = summary(&decision);

    // `/mutate` reads the Pod in the same pass as its AdmissionReview: the same decision.
    let body = serde_json::to_vec(&serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "operation": "CREATE", "namespace": namespace, "object": pod}
    }))
    .unwrap();
    let Ok(Decoded::Review(review)) = admission::decode(&body) else {
        panic!("{}: the review does not decode", dir.display());
    };
    let view = review.pod().unwrap();
    assert!(
        matches!(view, Cow::Borrowed(_)),
        "{}: the Pod is read with its review",
        dir.display()
    );
    let read = decide(engine::Object::Read(&view));
    assert_eq!(
        summary(&read),
        text,
        "{}: read with the review",
        dir.display()
    );
    assert_eq!(
        serde_json::to_value(&read.patch).unwrap(),
        serde_json::to_value(&decision.patch).unwrap(),
        "{}: read with the review",
        dir.display()
    );
    let mut injected = pod.clone();
    decision
        .patch
        .apply(&mut injected)
        .unwrap_or_else(|e| panic!("{}: patch does not apply: {e}", dir.display()));
    // The status annotation carries the live hashes; checked here, then kept out of the
    // expected files, so a template change does not rewrite every case.
    let status = injected
        .pointer("/metadata/annotations/sidecar-injector.io~1status")
        .and_then(Value::as_str)
        .map(|s| serde_json::from_str::<Value>(s).unwrap());
    if let Some(status) = status
        .as_ref()
        .filter(|_| decision.outcome() == engine::Outcome::Injected)
    {
        let templates = status["templates"].as_object().unwrap();
        let named: Vec<&str> = templates.keys().map(String::as_str).collect();
        // The status names the templates sorted; the combined hash is over the order they
        // were injected in: one of the orders.
        let mut orders = vec![named.clone()];
        if named.len() == 2 {
            orders.push(vec![named[1], named[0]]);
        }
        assert!(
            orders.iter().any(|order| {
                let chosen: Vec<_> = order.iter().map(|n| &config.templates[*n]).collect();
                status["templateHash"] == sidecar_injector::engine::config::combined_hash(&chosen)
            }),
            "{}: templateHash {} is not the hash of {named:?}",
            dir.display(),
            status["templateHash"]
        );
        assert!(
            named.len() <= 2,
            "{}: a case of more templates: extend this check",
            dir.display()
        );
        for (name, hash) in templates {
            assert_eq!(
                hash,
                &config.templates[name].hash,
                "{}: {name}",
                dir.display()
            );
        }
    }
    let placeholders = |text: String| -> String {
        let mut text = text;
        for (name, t) in &config.templates {
            text = text.replace(&t.hash, &format!("<hash of {name}>"));
        }
        text.replace(&config.template_hash, "<hash of the templates>")
    };
    Outcome {
        decision: placeholders(text),
        patch: placeholders(
            serde_json::to_string_pretty(&serde_json::to_value(&decision.patch).unwrap()).unwrap()
                + "\n",
        ),
        injected: placeholders(yaml::to_string(&injected).unwrap()),
    }
}

/// The expected Pod is the expected patch applied to the Pod by json-patch (an RFC 6902
/// implementation of its own, reading the patch as text): the two expected files agree.
fn expected_files_agree(dir: &Path) -> Result<(), String> {
    let pod = read_yaml(&dir.join("pod.yaml"));
    let patch: json_patch::Patch = serde_json::from_str(
        &std::fs::read_to_string(dir.join("patch.json")).map_err(|e| e.to_string())?,
    )
    .map_err(|e| format!("patch.json: {e}"))?;
    let mut applied = pod;
    json_patch::patch(&mut applied, &patch)
        .map_err(|e| format!("patch.json does not apply: {e}"))?;
    let want = read_yaml(&dir.join("pod.injected.yaml"));
    if applied == want {
        Ok(())
    } else {
        Err(format!(
            "pod.injected.yaml is not patch.json applied to pod.yaml:\n{}",
            yaml::to_string(&applied).unwrap()
        ))
    }
}

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn golden_cases() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let dirs = cases();
    assert!(dirs.len() >= 8, "golden cases missing: {dirs:?}");
    let mut failures = Vec::new();
    for dir in &dirs {
        let got = run_case(dir);
        for (file, text) in [
            ("decision.txt", &got.decision),
            ("patch.json", &got.patch),
            ("pod.injected.yaml", &got.injected),
        ] {
            let path = dir.join(file);
            if update {
                std::fs::write(&path, text).unwrap();
                continue;
            }
            let want = std::fs::read_to_string(&path).unwrap_or_default();
            let same = if file == "decision.txt" {
                want == *text
            } else {
                // compare meaning, not formatting
                let parse = |s: &str| yaml::from_str::<Value>(s).ok();
                parse(&want).is_some() && parse(&want) == parse(text)
            };
            if !same {
                failures.push(format!(
                    "{}:\n--- want\n{want}\n--- got\n{text}",
                    path.display()
                ));
            }
        }
        if !update && let Err(e) = expected_files_agree(dir) {
            failures.push(format!("{}: {e}", dir.display()));
        }
    }
    // A rewrite is never a green run: the files are the engine's own output until a person
    // has read the diff (git diff tests/golden) and committed it.
    assert!(
        !update,
        "UPDATE_GOLDEN: {} cases rewritten; review `git diff tests/golden`, then run without it",
        dirs.len()
    );
    assert!(
        failures.is_empty(),
        "{} golden mismatches (UPDATE_GOLDEN=1 to rewrite, then review):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
