//! manifests/: rendered, read as the Kubernetes types, checked field by field for what a
//! webhook install needs, validated strictly against the types; the shipped ConfigMap is the
//! embedded default and passes `validate`; `certs` output verifies with openssl.
//!
//! `cargo test` renders the base with [`render`], a small reading of the kustomization that
//! refuses every field it does not implement. The ignored tests need a `kubectl` (`$KUBECTL`,
//! else on `PATH`): `.ci/run` runs them with the one it builds, checks that kustomize renders
//! exactly what [`render`] does, and renders the cert-manager overlay.

mod common;
#[path = "manifests/rbac.rs"]
mod rbac;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, Role};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};
use sidecar_injector::engine::config::{DEFAULT_SETTINGS, DEFAULT_TEMPLATE};
use sidecar_injector::engine::yaml;
use std::path::Path;
use std::process::Command;

/// An RBAC rule as (apiGroups, resources, resourceNames, verbs).
type Rule = (Vec<String>, Vec<String>, Vec<String>, Vec<String>);

/// The kinds kustomize's schema knows as cluster-scoped: it sets the base's namespace on
/// every other kind, ValidatingAdmissionPolicy(Binding) included (the apiserver drops it).
const CLUSTER_SCOPED: [&str; 5] = [
    "Namespace",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
    "ClusterRole",
    "ClusterRoleBinding",
];

/// Renders a kustomization directory as kustomize does, for the fields the base uses:
/// `resources` (files and directories), `namespace`, `labels` (metadata only),
/// `configMapGenerator` with `files` and no name hash. Any other field fails the test.
fn render(dir: &Path) -> Vec<Value> {
    let file = dir.join("kustomization.yaml");
    let k: Value = yaml::from_str(&std::fs::read_to_string(&file).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let known = [
        "apiVersion",
        "kind",
        "namespace",
        "labels",
        "resources",
        "configMapGenerator",
        "generatorOptions",
    ];
    for key in k.as_object().unwrap().keys() {
        assert!(
            known.contains(&key.as_str()),
            "{}: `{key}` is not implemented by this test's renderer; check it with kustomize",
            file.display()
        );
    }
    let mut docs = Vec::new();
    for r in k["resources"].as_array().into_iter().flatten() {
        let path = dir.join(r.as_str().unwrap());
        if path.is_dir() {
            docs.extend(render(&path));
        } else {
            let text = std::fs::read_to_string(&path).unwrap();
            docs.extend(
                yaml::documents::<Value>(&text)
                    .unwrap()
                    .into_iter()
                    .filter(|d| !d.is_null()),
            );
        }
    }
    if let Some(gens) = k["configMapGenerator"].as_array() {
        assert_eq!(
            k["generatorOptions"]["disableNameSuffixHash"],
            true,
            "{}: name hashes are not implemented here",
            file.display()
        );
        for g in gens {
            let mut data = serde_json::Map::new();
            for f in g["files"].as_array().unwrap() {
                let f = f.as_str().unwrap();
                let name = Path::new(f).file_name().unwrap().to_string_lossy();
                data.insert(
                    name.into(),
                    std::fs::read_to_string(dir.join(f)).unwrap().into(),
                );
            }
            docs.push(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": g["name"]}, "data": data}));
        }
    }
    for doc in &mut docs {
        let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
        if let Some(ns) = k["namespace"].as_str() {
            if !CLUSTER_SCOPED.contains(&kind.as_str()) {
                doc["metadata"]["namespace"] = ns.into();
            }
            let hooks = doc.get_mut("webhooks").and_then(Value::as_array_mut);
            for hook in hooks.into_iter().flatten() {
                if hook["clientConfig"]["service"].is_object() {
                    hook["clientConfig"]["service"]["namespace"] = ns.into();
                }
            }
        }
        for set in k["labels"].as_array().into_iter().flatten() {
            assert_ne!(
                set["includeSelectors"], true,
                "selector labels: use kustomize"
            );
            assert_ne!(
                set["includeTemplates"], true,
                "template labels: use kustomize"
            );
            for (key, value) in set["pairs"].as_object().unwrap() {
                doc["metadata"]["labels"][key] = value.clone();
            }
        }
    }
    docs
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `kubectl kustomize DIR`, with `$KUBECTL` or the kubectl on `PATH`.
fn kustomize(dir: &str) -> Vec<Value> {
    let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let out = Command::new(&kubectl)
        .arg("kustomize")
        .arg(root().join(dir))
        .output()
        .unwrap_or_else(|e| panic!("{kubectl} (set $KUBECTL): {e}"));
    assert!(
        out.status.success(),
        "kubectl kustomize {dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    yaml::documents(&String::from_utf8(out.stdout).unwrap()).unwrap()
}

/// Documents in a stable order, to compare renderings.
fn sorted(mut docs: Vec<Value>) -> Vec<Value> {
    docs.sort_by_key(|d| format!("{}/{}", d["kind"], d["metadata"]["name"]));
    docs
}

fn one<T: serde::de::DeserializeOwned>(docs: &[Value], kind: &str) -> T {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind}");
    serde_json::from_value(found[0].clone())
        .unwrap_or_else(|e| panic!("{kind} does not parse as the Kubernetes type: {e}"))
}

fn named<T: serde::de::DeserializeOwned>(docs: &[Value], kind: &str, name: &str) -> T {
    let found = docs
        .iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"));
    serde_json::from_value(found.clone())
        .unwrap_or_else(|e| panic!("{kind} {name} does not parse as the Kubernetes type: {e}"))
}

fn arg_seconds(args: &[String], flag: &str) -> f64 {
    args.iter()
        .find_map(|a| a.strip_prefix(&format!("{flag}=")))
        .unwrap_or_else(|| panic!("{flag} in args"))
        .parse()
        .unwrap()
}

#[test]
fn the_base_renders_to_a_complete_hardened_install() {
    let docs = render(&root().join("manifests"));
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    for k in [
        "Namespace",
        "ServiceAccount",
        "ConfigMap",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "MutatingWebhookConfiguration",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ] {
        assert!(kinds.contains(&k), "{k} missing: {kinds:?}");
    }
    // Least privilege: read namespaces' metadata, record Events, read its own ConfigMap.
    let rules = |docs: &[Value], kind: &str| -> Vec<Rule> {
        let rules: Vec<k8s_openapi::api::rbac::v1::PolicyRule> = match kind {
            "ClusterRole" => named::<ClusterRole>(docs, kind, "sidecar-injector")
                .rules
                .unwrap_or_default(),
            _ => named::<Role>(docs, kind, "sidecar-injector")
                .rules
                .unwrap_or_default(),
        };
        rules
            .into_iter()
            .map(|r| {
                (
                    r.api_groups.unwrap_or_default(),
                    r.resources.unwrap_or_default(),
                    r.resource_names.unwrap_or_default(),
                    r.verbs,
                )
            })
            .collect()
    };
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        rules(&docs, "ClusterRole"),
        [
            (
                s(&[""]),
                s(&["namespaces"]),
                s(&[]),
                s(&["get", "list", "watch"])
            ),
            (
                s(&["events.k8s.io"]),
                s(&["events"]),
                s(&[]),
                s(&["create", "patch"])
            ),
            (
                s(&[""]),
                s(&["pods", "nodes", "events"]),
                s(&[]),
                s(&["list"])
            ),
            (s(&["apps"]), s(&["replicasets"]), s(&[]), s(&["get"])),
            (s(&["batch"]), s(&["jobs"]), s(&[]), s(&["get"])),
        ]
    );
    assert_eq!(
        rules(&docs, "Role"),
        [
            (
                s(&[""]),
                s(&["configmaps"]),
                s(&["sidecar-injector"]),
                s(&["get", "list", "watch"])
            ),
            (
                s(&["coordination.k8s.io"]),
                s(&["leases"]),
                s(&[]),
                s(&["create"])
            ),
            (
                s(&["coordination.k8s.io"]),
                s(&["leases"]),
                s(&["sidecar-injector-repair"]),
                s(&["get", "update"])
            ),
        ]
    );
    let role: ClusterRole = named(&docs, "ClusterRole", "sidecar-injector");
    for kind in ["ClusterRoleBinding", "RoleBinding"] {
        let binding: Value = named(&docs, kind, "sidecar-injector");
        assert_eq!(
            binding["roleRef"]["name"],
            role.metadata.name.clone().unwrap()
        );
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": "sidecar-injector", "namespace": "sidecar-injector"}])
        );
    }
    let deploy: Deployment = one(&docs, "Deployment");
    let ns = deploy.metadata.namespace.clone().unwrap();
    assert_eq!(ns, "sidecar-injector");
    let spec = deploy.spec.unwrap();
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.unwrap();
    assert!(
        pod.affinity.unwrap().pod_anti_affinity.is_some(),
        "replicas spread across nodes"
    );
    assert!(pod.priority_class_name.is_some());
    let psc = pod.security_context.unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
    let c = &pod.containers[0];
    let sc = c.security_context.clone().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".to_owned()]));
    let res = c.resources.clone().unwrap();
    assert!(res.requests.is_some() && res.limits.is_some());
    for (probe, path) in [
        (c.readiness_probe.clone(), "/readyz"),
        (c.liveness_probe.clone(), "/healthz"),
    ] {
        let get = probe.unwrap().http_get.unwrap();
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(get.scheme.as_deref(), Some("HTTPS"));
    }
    let args = c.args.clone().unwrap();
    let drain =
        arg_seconds(&args, "--drain-grace-seconds") + arg_seconds(&args, "--drain-timeout-seconds");
    assert!(
        (pod.termination_grace_period_seconds.unwrap() as f64) > drain,
        "terminationGracePeriod outlasts the drain"
    );
    // The certificate is the injector's own: kept in a Secret of its namespace, read through
    // the API (no volume), with the caBundle of the shipped webhook configuration kept.
    let mwc_name = one::<MutatingWebhookConfiguration>(&docs, "MutatingWebhookConfiguration")
        .metadata
        .name
        .unwrap();
    assert!(
        args.contains(&"--cert-secret=$(POD_NAMESPACE)/sidecar-injector-tls".to_owned())
            && args.contains(&format!("--webhook-configuration={mwc_name}")),
        "{args:?}"
    );
    assert!(
        !args.iter().any(|a| a.starts_with("--tls-")),
        "no certificate files: {args:?}"
    );
    assert!(pod.volumes.is_none() && c.volume_mounts.is_none());
    // Its rights: that Secret and that webhook configuration, by name; `create` unnamed;
    // the EndpointSlices of its own namespace, read.
    let certs: Role = named(&docs, "Role", "sidecar-injector-certificates");
    assert_eq!(
        serde_json::to_value(certs.rules).unwrap(),
        json!([
            {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["sidecar-injector-tls"],
             "verbs": ["list", "watch", "update"]},
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
            // What each replica serves, before an old CA leaves the caBundle.
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list"]}
        ])
    );
    let webhook: ClusterRole = named(&docs, "ClusterRole", "sidecar-injector-webhook");
    assert_eq!(
        serde_json::to_value(webhook.rules).unwrap(),
        json!([{"apiGroups": ["admissionregistration.k8s.io"],
                "resources": ["mutatingwebhookconfigurations"], "resourceNames": [mwc_name],
                "verbs": ["list", "watch", "patch"]}])
    );
    for (kind, name) in [
        ("RoleBinding", "sidecar-injector-certificates"),
        ("ClusterRoleBinding", "sidecar-injector-webhook"),
    ] {
        let binding: Value = named(&docs, kind, name);
        assert_eq!(binding["roleRef"]["name"], name);
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": "sidecar-injector", "namespace": "sidecar-injector"}])
        );
    }
    // The ConfigMap is watched through the API: the one the install ships, in the
    // namespace the Pod runs in (POD_NAMESPACE, from the downward API).
    let cm: ConfigMap = one(&docs, "ConfigMap");
    assert!(
        args.contains(&format!(
            "--config=configmap:$(POD_NAMESPACE)/{}",
            cm.metadata.name.unwrap()
        )),
        "{args:?}"
    );
    let env = c.env.clone().unwrap_or_default();
    assert!(env.iter().any(|e| {
        e.name == "POD_NAMESPACE"
            && e.value_from
                .as_ref()
                .and_then(|v| v.field_ref.as_ref())
                .map(|f| f.field_path.as_str())
                == Some("metadata.namespace")
    }));
    let https = c
        .ports
        .clone()
        .unwrap()
        .into_iter()
        .find(|p| p.name.as_deref() == Some("https"))
        .unwrap();
    assert_eq!(https.container_port, 8443);

    let svc: Service = one(&docs, "Service");
    let port = svc
        .spec
        .unwrap()
        .ports
        .unwrap()
        .into_iter()
        .find(|p| p.port == 443)
        .expect("port 443");
    assert_eq!(port.target_port, Some(IntOrString::String("https".into())));

    let pdb: PodDisruptionBudget = one(&docs, "PodDisruptionBudget");
    // One Pod at a time may go, and a single replica never blocks a node drain (a
    // minAvailable of 1 would, at replicas: 1).
    let pdb = pdb.spec.unwrap();
    assert_eq!(pdb.max_unavailable, Some(IntOrString::Int(1)));
    assert_eq!(pdb.min_available, None);

    let mwc: MutatingWebhookConfiguration = one(&docs, "MutatingWebhookConfiguration");
    let hook = &mwc.webhooks.unwrap()[0];
    assert_eq!(hook.admission_review_versions, vec!["v1".to_owned()]);
    // Events are recorded, never for a dry run.
    assert_eq!(hook.side_effects, "NoneOnDryRun");
    assert_eq!(hook.failure_policy.as_deref(), Some("Ignore"));
    assert_eq!(hook.reinvocation_policy.as_deref(), Some("IfNeeded"));
    assert!(hook.timeout_seconds.unwrap() <= 10);
    let rules = hook.rules.clone().unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].operations, Some(vec!["CREATE".to_owned()]));
    assert_eq!(rules[0].resources, Some(vec!["pods".to_owned()]));
    let svc_ref = hook.client_config.service.clone().unwrap();
    assert_eq!(
        (
            svc_ref.name.as_str(),
            svc_ref.namespace.as_str(),
            svc_ref.path.as_deref()
        ),
        ("sidecar-injector", ns.as_str(), Some("/mutate"))
    );
    let sel = hook
        .namespace_selector
        .clone()
        .unwrap()
        .match_expressions
        .unwrap();
    assert!(sel.iter().any(|e| e.key == "sidecar-injection"
        && e.operator == "In"
        && e.values == Some(vec!["enabled".into()])));
    assert!(
        sel.iter().any(|e| e.key == "kubernetes.io/metadata.name"
            && e.operator == "NotIn"
            && e.values.as_ref().unwrap().contains(&ns)),
        "the injector's own namespace can never match"
    );
    let obj = hook
        .object_selector
        .clone()
        .unwrap()
        .match_expressions
        .unwrap();
    assert!(
        obj.iter()
            .any(|e| e.key == "sidecar-injector.io/inject" && e.operator == "NotIn")
    );
    assert!(hook.match_conditions.as_ref().is_some_and(|m| {
        m.iter()
            .any(|c| c.expression.contains("sidecar-injector.io/inject"))
    }));

    // The shipped ConfigMap is the embedded default, and passes validate.
    let cm: ConfigMap = one(&docs, "ConfigMap");
    let data = cm.data.unwrap();
    assert_eq!(data["config.yaml"], DEFAULT_SETTINGS);
    assert_eq!(data["mutate.yaml"], DEFAULT_TEMPLATE);
    let dir = tempfile::tempdir().unwrap();
    let cm_file = dir.path().join("configmap.yaml");
    let cm_doc = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    std::fs::write(&cm_file, yaml::to_string(cm_doc).unwrap()).unwrap();
    let out = Command::new(common::bin())
        .args(["validate", "--config"])
        .arg(&cm_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    assert_eq!(common::schema::assert_valid("manifests/", &docs, &[]), 19);
}

#[test]
#[ignore = "needs kubectl ($KUBECTL); .ci/run runs it with the one it builds"]
fn kustomize_renders_exactly_what_the_test_renderer_does() {
    let real = sorted(kustomize("manifests"));
    let ours = sorted(render(&root().join("manifests")));
    assert_eq!(real.len(), ours.len());
    for (k, r) in real.iter().zip(&ours) {
        assert!(
            k == r,
            "{} differs:\nkustomize: {}\nrendered:  {}",
            k["kind"],
            serde_json::to_string_pretty(k).unwrap(),
            serde_json::to_string_pretty(r).unwrap()
        );
    }
    assert_eq!(
        common::schema::assert_valid("kustomize manifests/", &real, &[]),
        19
    );
}

#[test]
#[ignore = "needs kubectl ($KUBECTL); .ci/run runs it with the one it builds"]
fn the_cert_manager_overlay_adds_issuer_certificate_and_ca_injection() {
    let docs = kustomize("manifests/overlays/cert-manager");
    let cert = docs
        .iter()
        .find(|d| d["kind"] == "Certificate" && d["metadata"]["name"] == "sidecar-injector")
        .expect("the serving Certificate");
    assert_eq!(cert["spec"]["secretName"], "sidecar-injector-tls");
    let names: Vec<&str> = cert["spec"]["dnsNames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert!(names.contains(&"sidecar-injector.sidecar-injector.svc"));
    assert!(docs.iter().any(|d| d["kind"] == "Issuer"));
    let mwc = docs
        .iter()
        .find(|d| d["kind"] == "MutatingWebhookConfiguration")
        .unwrap();
    assert_eq!(
        mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        "sidecar-injector/sidecar-injector"
    );
    // The injector serves cert-manager's Secret from files, mounted as a directory (no
    // subPath, so kubelet's ..data swaps reach it), and has no right to keep one itself.
    let deploy: Deployment = one(&docs, "Deployment");
    let pod = deploy.spec.unwrap().template.spec.unwrap();
    let c = &pod.containers[0];
    let args = c.args.clone().unwrap();
    assert!(
        !args.iter().any(|a| a.starts_with("--cert-secret")),
        "{args:?}"
    );
    let mount = c.volume_mounts.clone().unwrap().into_iter().next().unwrap();
    assert!(mount.sub_path.is_none());
    let volume = pod
        .volumes
        .unwrap()
        .into_iter()
        .find(|v| v.name == mount.name)
        .unwrap();
    assert_eq!(
        volume.secret.unwrap().secret_name,
        cert["spec"]["secretName"].as_str().map(str::to_owned)
    );
    for flag in ["--tls-cert-file=", "--tls-key-file="] {
        assert!(
            args.iter().any(|a| a
                .strip_prefix(flag)
                .is_some_and(|f| f.starts_with(&mount.mount_path))),
            "{flag} points into {}: {args:?}",
            mount.mount_path
        );
    }
    for name in ["sidecar-injector-certificates", "sidecar-injector-webhook"] {
        assert!(
            !docs.iter().any(|d| d["metadata"]["name"] == name),
            "{name} is left in the cert-manager install"
        );
    }
    // Everything else of the base Deployment's args is kept.
    let base: Deployment = one(&render(&root().join("manifests")), "Deployment");
    let base_args = base.spec.unwrap().template.spec.unwrap().containers[0]
        .args
        .clone()
        .unwrap();
    for a in base_args
        .iter()
        .filter(|a| !a.starts_with("--cert-secret") && !a.starts_with("--webhook-configuration"))
    {
        assert!(
            args.contains(a),
            "{a} is lost in the cert-manager overlay: {args:?}"
        );
    }
}

#[test]
fn a_broken_template_fails_validate_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cm.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata:\n  mutate.yaml: |\n    containers:\n    - name: c\n      image: c:1\n      imagePullPolicy: Sometimes\n    - name: d\n      image: '{{ values.nope }}'\n",
    )
    .unwrap();
    let out = Command::new(common::bin())
        .args(["validate", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("mutate.yaml: containers[0].imagePullPolicy: \"Sometimes\" is not one of"),
        "{err}"
    );
    assert!(err.contains("mutate.yaml: containers[1].image"), "{err}");
}

#[test]
fn certs_verify_with_openssl_for_the_service_name() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(common::bin())
        .args([
            "certs",
            "--service",
            "sidecar-injector",
            "--namespace",
            "sidecar-injector",
            "--out",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    for name in [
        "sidecar-injector.sidecar-injector.svc",
        "sidecar-injector.sidecar-injector.svc.cluster.local",
    ] {
        let v = openssl_verify(dir.path(), "-verify_hostname", name);
        assert!(
            v.status.success(),
            "{name}: {}{}",
            String::from_utf8_lossy(&v.stdout),
            String::from_utf8_lossy(&v.stderr)
        );
    }
    let wrong = openssl_verify(dir.path(), "-verify_hostname", "other.default.svc");
    assert!(
        !wrong.status.success(),
        "a name the certificate does not hold fails"
    );
}

/// `openssl verify` of `dir`'s tls.crt against its ca.crt, as a server certificate for `name`
/// (`flag` is `-verify_hostname` or `-verify_ip`).
fn openssl_verify(dir: &Path, flag: &str, name: &str) -> std::process::Output {
    Command::new("openssl")
        .args(["verify", "-purpose", "sslserver", flag, name, "-CAfile"])
        .arg(dir.join("ca.crt"))
        .arg(dir.join("tls.crt"))
        .output()
        .expect("openssl")
}

#[test]
fn certs_san_adds_an_ip_address_for_a_webhook_registered_by_url() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(common::bin())
        .args([
            "certs",
            "--san",
            "127.0.0.1",
            "--san",
            "webhook.local",
            "--out",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verify = |flag: &str, name: &str| openssl_verify(dir.path(), flag, name).status.success();
    assert!(
        verify("-verify_ip", "127.0.0.1"),
        "an IP SAN, not a DNS name"
    );
    assert!(verify("-verify_hostname", "webhook.local"));
    assert!(verify(
        "-verify_hostname",
        "sidecar-injector.sidecar-injector.svc"
    ));
    assert!(!verify("-verify_ip", "127.0.0.2"));
}

/// The Helm chart ships the same config.yaml and mutate.yaml as `manifests/` (Helm reads
/// files inside the chart only, so they are copies): a change to one without the other fails
/// here. `tests/e2e/run kustomize_and_helm_render_the_same` compares the whole renders.
#[test]
fn the_chart_ships_the_config_files_of_manifests() {
    for file in ["config.yaml", "mutate.yaml"] {
        let shipped =
            std::fs::read_to_string(root().join("manifests/base/config").join(file)).unwrap();
        let chart =
            std::fs::read_to_string(root().join("charts/sidecar-injector/files").join(file))
                .unwrap();
        assert!(
            shipped == chart,
            "charts/sidecar-injector/files/{file} differs from manifests/base/config/{file}: copy it"
        );
    }
}
