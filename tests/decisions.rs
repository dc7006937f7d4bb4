//! Decisions the documentation promises that no golden case shows: `podSecurity: ignore`,
//! `hostNetwork` Pods, an override that breaks rendering, and the `template_error` reason.
//! Each goes through `engine::decide`, the one function every door calls.

use kube::core::GroupVersionKind;
use kube::core::admission::Operation;
use serde_json::{Value, json};
use sidecar_injector::engine::config::{Config, RawConfig};
use sidecar_injector::engine::{self, Decision, Object, Request};
use std::collections::BTreeMap;

fn config(settings: &str, template: &str) -> Config {
    Config::from_raw(
        &RawConfig::new(Some(settings.to_owned()), template),
        "sidecar-injector",
    )
    .unwrap_or_else(|e| panic!("the config loads: {e}"))
}

fn decide(config: &Config, pod: &Value, labels: Option<&BTreeMap<String, String>>) -> Decision {
    let gvk = GroupVersionKind::gvk("", "v1", "Pod");
    let raw = serde_json::value::to_raw_value(pod).expect("a Pod");
    engine::decide(
        &Request {
            operation: Operation::Create,
            kind: &gvk,
            sub_resource: None,
            namespace: "team-a",
            namespace_labels: labels,
            namespace_annotations: None,
            namespace_selected: true,
            object: Some(Object::Raw(&raw)),
            workload_kind: None,
        },
        config,
    )
}

fn pod(spec_extra: Value, labels: Value) -> Value {
    let mut spec = json!({"containers": [{"name": "app", "image": "nginx:1.27"}]});
    if let (Value::Object(s), Value::Object(extra)) = (&mut spec, spec_extra) {
        s.extend(extra);
    }
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "p", "labels": labels}, "spec": spec})
}

const HOST_PATH_TEMPLATE: &str = "containers:\n- name: agent\n  image: busybox:1.36\n  volumeMounts: [{name: host, mountPath: /host}]\nvolumes:\n- name: host\n  hostPath: {path: /var/log}\n";

#[test]
fn pod_security_ignore_injects_silently_where_warn_warns_and_skip_skips() {
    let baseline = BTreeMap::from([(
        "pod-security.kubernetes.io/enforce".to_owned(),
        "baseline".to_owned(),
    )]);
    let p = pod(json!({}), json!({}));
    let ignore = decide(
        &config("podSecurity: ignore\n", HOST_PATH_TEMPLATE),
        &p,
        Some(&baseline),
    );
    assert_eq!(ignore.reason.as_str(), "injected", "{ignore:?}");
    assert!(
        ignore.warnings.is_empty(),
        "ignore says nothing: {ignore:?}"
    );
    let warn = decide(
        &config("podSecurity: warn\n", HOST_PATH_TEMPLATE),
        &p,
        Some(&baseline),
    );
    assert_eq!(warn.reason.as_str(), "injected");
    assert!(
        warn.warnings
            .iter()
            .any(|w| w.contains("Pod Security") && w.contains("host")),
        "{warn:?}"
    );
    let skip = decide(
        &config("podSecurity: skip\n", HOST_PATH_TEMPLATE),
        &p,
        Some(&baseline),
    );
    assert_eq!(skip.reason.as_str(), "pod_security", "{skip:?}");
}

#[test]
fn a_host_network_pod_stays_injectable() {
    let c = config("{}", HOST_PATH_TEMPLATE);
    let d = decide(&c, &pod(json!({"hostNetwork": true}), json!({})), None);
    assert_eq!(d.reason.as_str(), "injected", "{d:?}");
    assert!(!d.patch.is_empty());
}

#[test]
fn an_override_that_does_not_render_falls_back_to_the_configured_values_with_a_warning() {
    // The container's name comes from a value a Pod may override; a name that is not a DNS
    // label fails the template's checks, so the Pod gets the configured name, and a warning.
    let c = config(
        "overridable: [sidecarName]\nvalues: {sidecarName: agent}\n",
        "containers:\n- name: \"{{ values.sidecarName }}\"\n  image: busybox:1.36\n",
    );
    let mut p = pod(json!({}), json!({}));
    p["metadata"]["annotations"] =
        json!({"sidecar-injector.io/values": "{\"sidecarName\": \"Not_A_Name\"}"});
    let d = decide(&c, &p, None);
    assert_eq!(d.reason.as_str(), "injected", "{d:?}");
    assert!(
        d.warnings
            .iter()
            .any(|w| w.contains("overridden values do not render")
                && w.contains("configured values")),
        "{d:?}"
    );
    let mut injected = p.clone();
    json_patch::patch(&mut injected, &d.patch.to_json_patch()).expect("the patch applies");
    let names: Vec<&str> = injected["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["app", "agent"], "the configured name");
}

#[test]
fn a_template_that_does_not_render_for_this_pod_is_a_template_error_under_the_failure_policy() {
    // The sample Pod the config is checked against has the label `app`: this Pod does not.
    let template = "containers:\n- name: agent\n  image: busybox:1.36\n  env:\n  - {name: APP, value: \"{{ pod.metadata.labels.app }}\"}\n";
    let c = config("failurePolicy: Ignore\n", template);
    let d = decide(&c, &pod(json!({}), json!({"team": "a"})), None);
    assert_eq!(d.reason.as_str(), "template_error", "{d:?}");
    assert!(d.patch.is_empty(), "admitted unchanged under Ignore");
    assert!(
        d.message.contains("pod.metadata.labels.app"),
        "the message names what is missing: {}",
        d.message
    );
    // With the label the same config injects.
    let ok = decide(&c, &pod(json!({}), json!({"app": "web"})), None);
    assert_eq!(ok.reason.as_str(), "injected", "{ok:?}");
}
