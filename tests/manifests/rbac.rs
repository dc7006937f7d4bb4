//! The RBAC of manifests/: what doctor checks is exactly what it grants, the repair
//! component adds only the restart permission, and Secrets are granted by the names
//! propagateSecrets lists.

use super::*;

/// Every permission `doctor` checks the injector's ServiceAccount for is granted by the
/// shipped RBAC (base, and the repair component for `repair.enabled`), and every rule
/// granted is one of them: the two lists cannot drift apart. Restarting workloads is only
/// in the component.
#[test]
fn doctor_checks_exactly_the_permissions_the_rbac_grants() {
    use sidecar_injector::cluster::doctor::needed;
    let base = render(&root().join("manifests"));
    let component = render(&root().join("manifests/components/repair"));
    let rules_of =
        |docs: &[Value], namespaced: bool| -> Vec<k8s_openapi::api::rbac::v1::PolicyRule> {
            docs.iter()
                .filter(|d| d["kind"] == if namespaced { "Role" } else { "ClusterRole" })
                .flat_map(|d| {
                    serde_json::from_value::<Vec<k8s_openapi::api::rbac::v1::PolicyRule>>(
                        d["rules"].clone(),
                    )
                    .unwrap()
                })
                .collect()
        };
    let grants = |rules: &[k8s_openapi::api::rbac::v1::PolicyRule],
                  p: &sidecar_injector::cluster::doctor::Permission| {
        rules.iter().any(|r| {
            r.api_groups.iter().flatten().any(|g| g == p.group)
                && r.resources.iter().flatten().any(|x| x == p.resource)
                && r.verbs.iter().any(|v| v == p.verb)
                && r.resource_names.as_ref().is_none_or(|names| {
                    names.is_empty() || p.name.as_ref().is_some_and(|n| names.contains(n))
                })
        })
    };
    let (cluster, ns) = (rules_of(&base, false), rules_of(&base, true));
    let propagated = sidecar_injector::engine::config::Config::embedded("sidecar-injector")
        .unwrap()
        .settings
        .propagate_secrets;
    let granted = |p: &sidecar_injector::cluster::doctor::Permission, cluster: &[_]| {
        grants(cluster, p) || (p.namespace.as_deref() == Some("sidecar-injector") && grants(&ns, p))
    };
    // The shipped Deployment keeps its certificate (--cert-secret): doctor asks for those rights.
    let kept = sidecar_injector::cluster::doctor::KeptCertificates {
        namespace: "sidecar-injector".into(),
        secret: "sidecar-injector-tls".into(),
        webhook_configuration: "sidecar-injector".into(),
    };
    let kept = Some(&kept);
    for p in needed(
        "sidecar-injector",
        "sidecar-injector",
        false,
        &propagated,
        kept,
    ) {
        assert!(granted(&p, &cluster), "the base does not grant {p:?}");
    }
    let restarts: Vec<_> = needed(
        "sidecar-injector",
        "sidecar-injector",
        true,
        &propagated,
        kept,
    )
    .into_iter()
    .filter(|p| p.group == "apps" && p.verb == "patch")
    .collect();
    assert_eq!(restarts.len(), 3);
    for p in &restarts {
        assert!(
            !granted(p, &cluster),
            "the base grants {p:?}: only the component may"
        );
    }
    let mut with_component = cluster.clone();
    with_component.extend(rules_of(&component, false));
    for p in needed(
        "sidecar-injector",
        "sidecar-injector",
        true,
        &propagated,
        kept,
    ) {
        assert!(
            granted(&p, &with_component),
            "base + repair do not grant {p:?}"
        );
    }
    // And nothing more: each verb on each resource granted is one doctor checks.
    let all = needed(
        "sidecar-injector",
        "sidecar-injector",
        true,
        &propagated,
        kept,
    );
    for r in cluster
        .iter()
        .chain(&ns)
        .chain(&rules_of(&component, false))
    {
        for g in r.api_groups.iter().flatten() {
            for res in r.resources.iter().flatten() {
                for v in &r.verbs {
                    assert!(
                        all.iter()
                            .any(|p| p.group == g && p.resource == res && p.verb == v),
                        "granted but never used: {v} {res} ({g})"
                    );
                }
            }
        }
    }
    let binding = component
        .iter()
        .find(|d| d["kind"] == "ClusterRoleBinding")
        .unwrap();
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "sidecar-injector", "namespace": "sidecar-injector"}])
    );
}

/// The repair component, added as its documentation says (docs/install.md), renders with
/// kustomize: the install plus a ClusterRole that may restart workloads, bound to the
/// injector's ServiceAccount.
#[test]
#[ignore = "needs kubectl ($KUBECTL); .ci/run runs it with the one it builds"]
fn the_repair_component_adds_the_restart_permission_to_an_install() {
    let dir = root().join("target/kustomize-repair");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
         resources:\n- ../../manifests\ncomponents:\n- ../../manifests/components/repair\n",
    )
    .unwrap();
    let docs = kustomize("target/kustomize-repair");
    let base = kustomize("manifests");
    assert_eq!(
        docs.len(),
        base.len() + 2,
        "the install, and a role and its binding"
    );
    let role = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == "sidecar-injector-repair")
        .expect("the repair ClusterRole");
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": ["apps"], "resources": ["deployments", "statefulsets", "daemonsets"],
            "verbs": ["get", "patch"]}])
    );
    let binding = docs
        .iter()
        .find(|d| {
            d["kind"] == "ClusterRoleBinding" && d["metadata"]["name"] == "sidecar-injector-repair"
        })
        .expect("its binding");
    assert_eq!(binding["subjects"][0]["name"], "sidecar-injector");
    assert_eq!(binding["subjects"][0]["namespace"], "sidecar-injector");
}

/// Issue "secret propagation": the injector reads and writes Secrets of the names
/// config.yaml's propagateSecrets lists (and its own certificate's), and no other; only `create`, which RBAC cannot limit
/// by name, reaches every name, and it reads nothing.
#[test]
fn secrets_are_granted_by_the_names_propagate_secrets_lists_and_create_alone_is_unnamed() {
    let base = render(&root().join("manifests"));
    let propagated = sidecar_injector::engine::config::Config::embedded("sidecar-injector")
        .unwrap()
        .settings
        .propagate_secrets;
    assert_eq!(propagated, ["bitbucket-pipelines-metrics"]);
    let mut secret_rules = Vec::new();
    for doc in base
        .iter()
        .filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role")
    {
        for rule in doc["rules"].as_array().unwrap() {
            let secrets = rule["resources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r == "secrets" || r == "*");
            if secrets {
                secret_rules.push((doc["metadata"]["name"].clone(), rule.clone()));
            }
        }
    }
    assert_eq!(
        secret_rules,
        [
            (
                json!("sidecar-injector-secrets"),
                json!({"apiGroups": [""], "resources": ["secrets"], "resourceNames": propagated,
                       "verbs": ["list", "watch", "update", "delete"]})
            ),
            (
                json!("sidecar-injector-secrets"),
                json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]})
            ),
            // --cert-secret: the serving certificate's Secret, in the injector's namespace.
            (
                json!("sidecar-injector-certificates"),
                json!({"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["sidecar-injector-tls"],
                       "verbs": ["list", "watch", "update"]})
            ),
            (
                json!("sidecar-injector-certificates"),
                json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]})
            ),
        ]
    );
    let binding = base
        .iter()
        .find(|d| {
            d["kind"] == "ClusterRoleBinding" && d["metadata"]["name"] == "sidecar-injector-secrets"
        })
        .expect("the ClusterRole is bound");
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "sidecar-injector", "namespace": "sidecar-injector"}])
    );
    assert_eq!(binding["roleRef"]["name"], "sidecar-injector-secrets");
}

/// The chart's RBAC template with the values of the default install put in by hand (the
/// release and its namespace `sidecar-injector`, the default certificate Secret, the
/// propagated names of config.yaml, no name dropped by an upgrade), every other `if`/`with`
/// block kept (self-managed
/// certificates, propagation and repair all on). Any other template expression fails the
/// test: a new one must be added here, so the comparison below never skips a rule.
fn chart_rbac_by_hand(propagated: &[String]) -> Vec<Value> {
    let text = std::fs::read_to_string(root().join("charts/sidecar-injector/templates/rbac.yaml"))
        .unwrap();
    let subjects = "subjects:\n- kind: ServiceAccount\n  name: sidecar-injector\n  namespace: sidecar-injector";
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim();
        // The names an upgrade drops: none on a first install (the chart reads them from the
        // live release with helm's lookup). tests/e2e/run
        // helm_upgrade_dropping_a_secret_deletes_its_copies covers that block.
        if t == "{{- with $retiring }}" {
            for skipped in lines.by_ref() {
                if skipped.trim() == "{{- end }}" {
                    break;
                }
            }
            continue;
        }
        // Control lines: each block is kept.
        if t.starts_with("{{- $settings")
            || t.starts_with("{{- $retiring")
            || t.starts_with("{{- with")
            || t.starts_with("{{- if")
            || t == "{{- end }}"
        {
            continue;
        }
        // The labels block: `labels:` then the include.
        if t == "labels:"
            && lines
                .peek()
                .is_some_and(|n| n.contains("sidecar-injector.labels"))
        {
            lines.next();
            continue;
        }
        if t.starts_with("{{ include \"sidecar-injector.subject\"") {
            out.push_str(subjects);
            out.push('\n');
            continue;
        }
        let line = line
            .replace("{{ .Release.Name }}", "sidecar-injector")
            .replace("{{ $.Release.Name }}", "sidecar-injector")
            .replace("{{ .Release.Namespace }}", "sidecar-injector")
            .replace(
                "{{ .Values.certificates.secretName }}",
                "sidecar-injector-tls",
            )
            .replace(
                "{{ toJson . }}",
                &serde_json::to_string(propagated).unwrap(),
            );
        assert!(
            !line.contains("{{"),
            "a template expression this test does not know: {line}"
        );
        out.push_str(&line);
        out.push('\n');
    }
    sidecar_injector::engine::yaml::documents(&out).unwrap()
}

/// The chart and manifests/ grant the same rules to the same ServiceAccount, Role by Role
/// (issue 32: only e2e compared them, with helm). manifests/ is the base and the repair
/// component; the chart has every option on.
#[test]
fn the_chart_grants_exactly_the_rbac_of_manifests() {
    let mut manifests = render(&root().join("manifests"));
    manifests.extend(render(&root().join("manifests/components/repair")));
    let config: Value = sidecar_injector::engine::yaml::from_str(
        &std::fs::read_to_string(root().join("manifests/base/config/config.yaml")).unwrap(),
    )
    .unwrap();
    let propagated: Vec<String> =
        serde_json::from_value(config["propagateSecrets"].clone()).unwrap_or_default();
    assert!(
        !propagated.is_empty(),
        "config.yaml propagates the token Secret"
    );
    let chart = chart_rbac_by_hand(&propagated);
    let rbac = |docs: &[Value]| -> std::collections::BTreeMap<(String, String), Value> {
        docs.iter()
            .filter(|d| {
                ["Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"]
                    .contains(&d["kind"].as_str().unwrap_or_default())
            })
            .map(|d| {
                let key = (
                    d["kind"].as_str().unwrap().to_owned(),
                    d["metadata"]["name"].as_str().unwrap().to_owned(),
                );
                let body = json!({"namespace": d["metadata"]["namespace"], "rules": d["rules"],
                    "roleRef": d["roleRef"], "subjects": d["subjects"]});
                (key, body)
            })
            .collect()
    };
    let (from_chart, from_manifests) = (rbac(&chart), rbac(&manifests));
    assert_eq!(
        from_chart.keys().collect::<Vec<_>>(),
        from_manifests.keys().collect::<Vec<_>>(),
        "the same Roles and bindings"
    );
    for (key, rules) in &from_manifests {
        assert_eq!(
            &from_chart[key], rules,
            "{key:?}: the chart differs from manifests/"
        );
    }
}
