//! What a namespace says, as the cluster has it: templates, value overrides and skips
//! followed live, and Pod Security's refusal shown by kubectl with our warning.

use super::*;

/// The status annotation's `templates`: each template injected, by name.
fn status_templates(pod: &Pod) -> Vec<String> {
    let status = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(STATUS))
        .map(|s| serde_json::from_str::<Value>(s).expect("the status is JSON"));
    status
        .and_then(|s| {
            s["templates"]
                .as_object()
                .map(|m| m.keys().cloned().collect())
        })
        .unwrap_or_default()
}

/// Creates a Pod with kubectl (which prints the admission warnings) and reads it back.
async fn apply_pod(env: &Env, client: &Client, ns: &str, pod: &Value) -> (Pod, String) {
    let out = kubectl(env, &["apply", "-n", ns, "-f", "-"], Some(&pod.to_string()));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ok(&out);
    let name = pod["metadata"]["name"].as_str().unwrap();
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    (api.get(name).await.expect("the Pod was stored"), stderr)
}

/// Issue "Several templates": a webhook holding two templates (examples/configmaps/
/// collector-and-apm.yaml, with `podSecurity: skip`) reads each namespace's annotations and
/// labels from the cluster through its namespace cache.
#[tokio::test]
#[ignore = "needs a cluster: tests/e2e/run"]
async fn templates_overrides_and_skips_follow_the_namespace_as_the_cluster_has_it() {
    let env = env();
    let c = client(&env).await;
    let dir = tempfile::tempdir().unwrap();
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/configmaps/collector-and-apm.yaml");
    let text = std::fs::read_to_string(example).unwrap();
    assert!(text.contains("    templates: [default]\n"));
    let config = dir.path().join("configmap.yaml");
    std::fs::write(
        &config,
        text.replace(
            "    templates: [default]\n",
            "    templates: [default]\n    podSecurity: skip\n",
        ),
    )
    .unwrap();
    let log = dir.path().join("templates.log");
    let (mut server, port, _) = serve_beside(
        &env,
        &log,
        &[
            "--config".into(),
            config.display().to_string(),
            "--kubeconfig".into(),
            env.kubeconfig.display().to_string(),
        ],
        &[],
    );
    let url = format!("https://127.0.0.1:{port}/mutate");
    let _hook5 = register(
        &env,
        "e2e-templates",
        "e2e-templates",
        &url,
        &ca_bundle(&env),
        "Ignore",
    );
    let on = json!({"e2e-templates": "on"});

    // The namespace chooses the APM agent alone.
    let apm = annotated_namespace(
        &c,
        "e2e-tpl-apm",
        on.clone(),
        json!({"sidecar-injector.io/templates": "apm"}),
    )
    .await;
    dry_run_until(&c, &apm, "the templates webhook to be called", |p| {
        !init_containers(p).is_empty()
    })
    .await;
    let pod = create_pod(
        &c,
        &apm,
        pod_json("plain", json!({"labels": {"app": "shop"}})),
    )
    .await
    .unwrap();
    assert_eq!(containers(&pod), ["app"]);
    assert_eq!(init_containers(&pod), ["apm-agent-init"]);
    assert_eq!(status_templates(&pod), ["apm"]);
    assert_eq!(
        env_value(&pod, "app", "APM_SERVICE_NAME").as_deref(),
        Some("shop")
    );

    // preview --kubeconfig reads the same namespace from the cluster: the agent alone.
    let out = common::run(
        common::bin(),
        &[
            "preview",
            "--config",
            config.to_str().unwrap(),
            "--kubeconfig",
            env.kubeconfig.to_str().unwrap(),
            "--namespace",
            &apm,
            // This test's webhook selects its own label; the config's opt-in label is given
            // here, the annotations come from the cluster.
            "--namespace-label",
            "sidecar-injection=enabled",
            "-o",
            "json",
        ],
        Some(&pod_json("previewed", json!({})).to_string()),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let previewed: Pod = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(containers(&previewed), ["app"], "{stderr}");
    assert_eq!(init_containers(&previewed), ["apm-agent-init"], "{stderr}");

    // The namespace overrides the interval; the Pod asks for both templates and overrides a
    // resource (allowed) and the image (not allowed: kubectl shows why).
    let shop = annotated_namespace(
        &c,
        "e2e-tpl-shop",
        on.clone(),
        json!({"sidecar-injector.io/values": "{\"collectionInterval\": \"15\"}"}),
    )
    .await;
    let both = pod_json(
        "both",
        json!({"annotations": {
            "sidecar-injector.io/templates": "default,apm",
            "sidecar-injector.io/values":
                "{\"resources\":{\"limits\":{\"memory\":\"256Mi\"}},\"image\":\"evil/miner:1\"}"}}),
    );
    let (pod, stderr) = apply_pod(&env, &c, &shop, &both).await;
    assert_eq!(containers(&pod), ["app", COLLECTOR], "{stderr}");
    assert_eq!(init_containers(&pod), ["apm-agent-init"]);
    let spec = pod.spec.as_ref().unwrap();
    let secrets: Vec<&str> = spec
        .image_pull_secrets
        .iter()
        .flatten()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(secrets, ["corp-registry"]);
    let mut templates = status_templates(&pod);
    templates.sort();
    assert_eq!(templates, ["apm", "default"]);
    assert_eq!(
        env_value(&pod, COLLECTOR, "METRIC_COLLECTION_INTERVAL").as_deref(),
        Some("15")
    );
    let collector = spec
        .containers
        .iter()
        .find(|c| c.name == COLLECTOR)
        .unwrap();
    let resources = serde_json::to_value(collector.resources.as_ref().unwrap()).unwrap();
    assert_eq!(
        resources,
        json!({"limits": {"cpu": "200m", "memory": "256Mi"}, "requests": {"cpu": "50m", "memory": "64Mi"}})
    );
    assert!(
        collector
            .image
            .as_deref()
            .unwrap()
            .starts_with("registry.corp.example/mirror/atlassian/"),
        "{:?}",
        collector.image
    );
    assert!(
        stderr.contains("Warning: sidecar-injector: the Pod's annotation sidecar-injector.io/values: values.image: not overridable"),
        "{stderr}"
    );

    // An unknown template: admitted unchanged under Ignore, and kubectl says so.
    let typo = pod_json(
        "typo",
        json!({"annotations": {"sidecar-injector.io/templates": "nope"}}),
    );
    let (pod, stderr) = apply_pod(&env, &c, &shop, &typo).await;
    assert_eq!(containers(&pod), ["app"]);
    assert!(
        stderr.contains("not injected (unknown_template)"),
        "{stderr}"
    );

    // A Windows Pod is left alone.
    let mut windows = pod_json("windows", json!({}));
    windows["spec"]["nodeSelector"] = json!({"kubernetes.io/os": "windows"});
    let pod = create_pod(&c, &shop, windows).await.unwrap();
    assert_eq!(containers(&pod), ["app"]);
    assert!(init_containers(&pod).is_empty());

    // Pod Security baseline rejects hostPath: under podSecurity: skip the Pod is created
    // without them, and kubectl says why.
    let baseline = namespace(
        &c,
        "e2e-tpl-baseline",
        json!({"e2e-templates": "on", "pod-security.kubernetes.io/enforce": "baseline"}),
    )
    .await;
    let (pod, stderr) = apply_pod(&env, &c, &baseline, &pod_json("web", json!({}))).await;
    assert_eq!(containers(&pod), ["app"], "{stderr}");
    assert!(
        stderr.contains(
            "not injected: namespace \"e2e-tpl-baseline\" enforces Pod Security \"baseline\""
        ),
        "{stderr}"
    );

    // The cache follows the cluster: the APM namespace switches to the collector.
    ok(&kubectl(
        &env,
        &[
            "annotate",
            "--overwrite",
            "namespace",
            &apm,
            "sidecar-injector.io/templates=default",
        ],
        None,
    ));
    let pod = dry_run_until(&c, &apm, "the new namespace annotation to be used", |p| {
        containers(p).iter().any(|c| c == COLLECTOR)
    })
    .await;
    assert!(init_containers(&pod).is_empty());

    let served = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(served.contains("namespace cache synced"), "{served}");
    unregister(&env, "e2e-templates");
    let _ = server.kill();
    let _ = server.wait();
}

/// Under the shipped `podSecurity: warn`, a Pod in a namespace enforcing baseline is
/// injected; Pod Security then refuses it, and kubectl shows our warning saying why.
#[tokio::test]
#[ignore = "needs a cluster: tests/e2e/run"]
async fn under_pod_security_warn_kubectl_shows_why_the_injected_pod_is_refused() {
    let env = env();
    let c = client(&env).await;
    let ns = namespace(
        &c,
        "e2e-psa-warn",
        json!({"sidecar-injection": "enabled", "pod-security.kubernetes.io/enforce": "baseline"}),
    )
    .await;
    let out = kubectl(
        &env,
        &["apply", "-n", &ns, "-f", "-"],
        Some(&pod_json("web", json!({})).to_string()),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "Pod Security refuses the hostPath volumes"
    );
    assert!(
        stderr.contains("Warning: sidecar-injector: namespace \"e2e-psa-warn\" enforces Pod Security \"baseline\", which rejects the injected hostPath volumes"),
        "{stderr}"
    );
    assert!(stderr.contains("hostPath"), "{stderr}");
}
