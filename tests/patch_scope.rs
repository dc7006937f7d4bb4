//! What our patch leaves alone, and what the apiserver would still change after it.
//!
//! After a webhook's patch the apiserver re-runs its in-tree admission plugins; when one of
//! them changes the Pod, it calls the webhooks again (`reinvocationPolicy: IfNeeded`). The
//! ServiceAccount plugin mounts the token into every container that lacks it, so a sidecar
//! added without that mount costs a second webhook call per Pod. These tests play that
//! plugin after our patch and require it to find nothing to do. They also pin what a
//! diff-based webhook gets wrong: a patch built against the object as received touches no
//! field it does not inject (an unknown field, `hostNetwork: false`, a quantity written
//! `"0.5"`).

mod common;

use common::{Server, apply, patch_of, review};
use serde_json::{Value, json};

const TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
const COLLECTOR: &str = "bitbucket-pipelines-metrics-collector";

/// A Pod as the ServiceAccount plugin leaves it before the webhooks: the projected token
/// volume, and its mount in every container.
fn pod_with_token(name: &str, restart_policy: Option<&str>) -> Value {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "team-a"},
        "spec": {
            "serviceAccountName": "default",
            "containers": [{
                "name": "app", "image": "nginx:1.27",
                "volumeMounts": [{"name": "kube-api-access-x7k2p", "readOnly": true, "mountPath": TOKEN_PATH}]
            }],
            "volumes": [{"name": "kube-api-access-x7k2p", "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}
            ]}}]
        }
    });
    if let Some(p) = restart_policy {
        pod["spec"]["restartPolicy"] = json!(p);
    }
    pod
}

/// The ServiceAccount admission plugin's token mounting, as Kubernetes 1.34 does it
/// (plugin/pkg/admission/serviceaccount): the volume is the first one named
/// `kube-api-access-*`; every init container and container with nothing mounted at the
/// token path gets the mount appended. Returns the Pod and whether anything changed.
fn service_account_plugin(pod: &Value) -> (Value, bool) {
    let mut out = pod.clone();
    if out["spec"]["automountServiceAccountToken"] == json!(false) {
        return (out, false);
    }
    let Some(volume) = out["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .find(|n| n.starts_with("kube-api-access-"))
        .map(str::to_owned)
    else {
        return (out, false);
    };
    let mut changed = false;
    for list in ["initContainers", "containers"] {
        for c in out["spec"][list].as_array_mut().into_iter().flatten() {
            let mounted = c["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|m| m["mountPath"] == TOKEN_PATH);
            if !mounted {
                let mount = json!({"name": volume, "readOnly": true, "mountPath": TOKEN_PATH});
                match c["volumeMounts"].as_array_mut() {
                    Some(list) => list.push(mount),
                    None => c["volumeMounts"] = json!([mount]),
                }
                changed = true;
            }
        }
    }
    (out, changed)
}

fn container<'v>(pod: &'v Value, list: &str, name: &str) -> &'v Value {
    pod["spec"][list]
        .as_array()
        .and_then(|l| l.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("{list} has {name}: {pod}"))
}

fn token_mounts(c: &Value) -> Vec<&Value> {
    c["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["mountPath"] == TOKEN_PATH)
        .collect()
}

#[test]
fn after_our_patch_the_service_account_plugin_has_nothing_left_to_mount() {
    let server = Server::start(&[]);
    // A long-running Pod (the collector as a container) and one that runs to completion
    // (the collector as a native sidecar, an init container).
    for (name, restart, list) in [
        ("web", None, "containers"),
        ("batch", Some("Never"), "initContainers"),
    ] {
        let pod = pod_with_token(name, restart);
        let (as_received, changed) = service_account_plugin(&pod);
        assert!(!changed, "the plugin's first pass is already done: {pod}");
        let answer = server.mutate(&review(&format!("u-{name}"), "team-a", &as_received));
        let patch = patch_of(&answer).expect("injected");
        let injected = apply(&as_received, &patch);
        let collector = container(&injected, list, COLLECTOR);
        assert_eq!(
            token_mounts(collector),
            [&json!({"name": "kube-api-access-x7k2p", "readOnly": true, "mountPath": TOKEN_PATH})],
            "{name}: the collector mounts the Pod's token as the plugin would"
        );
        let (again, changed) = service_account_plugin(&injected);
        assert!(
            !changed,
            "{name}: the plugin's second pass changed the Pod, so the apiserver would call us again:\n{again}"
        );
        // The app container's own mount is untouched, and nothing else mounts the token twice.
        assert_eq!(
            token_mounts(container(&injected, "containers", "app")).len(),
            1
        );
    }
}

#[test]
fn without_a_token_volume_or_with_automount_off_no_token_is_mounted() {
    let server = Server::start(&[]);
    let mut off = pod_with_token("off", None);
    off["spec"]["automountServiceAccountToken"] = json!(false);
    off["spec"]["containers"][0]["volumeMounts"] = json!([]);
    let plain = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "plain"},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}});
    for pod in [off, plain] {
        let answer = server.mutate(&review("u", "team-a", &pod));
        let injected = apply(&pod, &patch_of(&answer).expect("injected"));
        let collector = container(&injected, "containers", COLLECTOR);
        assert!(token_mounts(collector).is_empty(), "{collector}");
        assert!(!service_account_plugin(&injected).1);
    }
}

#[test]
fn a_second_call_for_an_injected_pod_writes_no_audit_annotation() {
    // The apiserver keeps the first value of an audit annotation and logs every attempt to
    // overwrite it; the first call said `injected`, so the second says nothing.
    let server = Server::start(&[]);
    let pod = pod_with_token("web", None);
    let first = server.mutate(&review("u-1", "team-a", &pod));
    assert_eq!(first["response"]["auditAnnotations"]["reason"], "injected");
    let injected = apply(&pod, &patch_of(&first).expect("injected"));
    let second = server.mutate(&review("u-2", "team-a", &injected));
    let r = second["response"].as_object().expect("a response");
    assert!(patch_of(&second).is_none(), "nothing added twice");
    assert!(!r.contains_key("auditAnnotations"), "{second}");
}

#[test]
fn the_patch_touches_no_unknown_field_no_false_boolean_and_no_quantity_it_does_not_inject() {
    let server = Server::start(&[]);
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "team-a"},
        "spec": {
            "hostNetwork": false,
            "someFutureField": {"enabled": true, "mode": "x"},
            "containers": [{
                "name": "app", "image": "nginx:1.27",
                "resources": {"requests": {"cpu": "0.5", "memory": "1Gi"}},
                "futureContainerField": [1, 2]
            }]
        }
    });
    let answer = server.mutate(&review("u", "team-a", &pod));
    let patch = patch_of(&answer).expect("injected");
    for op in patch.as_array().expect("a list of operations") {
        let path = op["path"].as_str().expect("a path");
        assert_eq!(op["op"], "add", "only adds: {op}");
        assert!(
            !path.starts_with("/spec/hostNetwork")
                && !path.starts_with("/spec/someFutureField")
                && !path.starts_with("/spec/containers/0"),
            "the patch touches {path}"
        );
    }
    let injected = apply(&pod, &patch);
    assert_eq!(injected["spec"]["hostNetwork"], json!(false));
    assert_eq!(
        injected["spec"]["someFutureField"],
        pod["spec"]["someFutureField"]
    );
    assert_eq!(
        injected["spec"]["containers"][0],
        pod["spec"]["containers"][0]
    );
    assert_eq!(
        injected["spec"]["containers"][0]["resources"]["requests"]["cpu"],
        "0.5"
    );
}

#[test]
fn a_token_volume_name_that_needs_escaping_stays_one_json_string() {
    // Admission runs before validation: a hostile Pod may name its volume anything.
    let server = Server::start(&[]);
    let name = "kube-api-access-\"},{\"name\":\"evil\\";
    let mut pod = pod_with_token("odd", None);
    pod["spec"]["volumes"][0]["name"] = json!(name);
    pod["spec"]["containers"][0]["volumeMounts"][0]["name"] = json!(name);
    let answer = server.mutate(&review("u", "team-a", &pod));
    let injected = apply(&pod, &patch_of(&answer).expect("injected"));
    let collector = container(&injected, "containers", COLLECTOR);
    assert_eq!(
        token_mounts(collector),
        [&json!({"name": name, "readOnly": true, "mountPath": TOKEN_PATH})]
    );
    assert!(
        token_mounts(collector).len() == 1
            && !collector["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["name"] == "evil"),
        "{collector}"
    );
}
