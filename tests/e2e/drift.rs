//! Drift and the cluster: check and repair of Pods that missed the sidecar, the live
//! ConfigMap, failed injections as Events, and two replicas with one Lease. (Memory with
//! 10,000 Pods stays in tests/e2e.rs, whose own tests run after every module's.)

use super::*;

/// Issue "Cluster-aware": a Deployment created while the webhook is down (failurePolicy
/// Ignore) is `missing` in `check` (exit 1); `check --repair` restarts it, its new Pods are
/// `current`, exit 0, and the restart is an Event on the Deployment.
#[tokio::test]
#[ignore = "needs a cluster: tests/e2e/run"]
async fn pods_that_missed_the_sidecar_are_found_and_repaired() {
    let env = env();
    let c = client(&env).await;
    let live: u16 = std::env::var("E2E_WEBHOOK_PORT").unwrap().parse().unwrap();
    let ns = opted_in(&c, "e2e-check").await;
    token_copy_in(&env, &c, &ns).await;
    // The webhook goes down: Ignore admits Pods unchanged. It comes back even if an assertion
    // below fails.
    let _restore = RestoreUrl(live);
    webhook_url(&env, common::free_port());
    dry_run_until(&c, &ns, "the webhook to be down", |p| !injected(p)).await;
    web_deployment(&env, &ns);
    let bare = create_pod(&c, &ns, pod_json("bare", json!({})))
        .await
        .unwrap();
    assert!(!injected(&bare));
    // The webhook is back.
    webhook_url(&env, live);
    webhook_in_effect(&c, &ns).await;

    let (code, reports, stderr) = check(&env, &["-n", &ns]);
    assert_eq!(code, Some(1), "missing Pods: exit 1: {stderr}");
    // The kwok nodes run containerd: check decides `auto` as serve does, and says so.
    assert!(
        stderr.contains("values.mountDockerSocket: auto: 3 of 3 schedulable Linux nodes run no Docker (kwok-node-")
            && stderr.contains("containerd://")
            && stderr.contains("so /var/run/docker.sock is not mounted"),
        "{stderr}"
    );
    let states = |reports: &[Value], owner: &str| -> Vec<String> {
        reports
            .iter()
            .filter(|r| r["owner"] == owner)
            .map(|r| r["state"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        states(&reports, "Deployment/web"),
        ["missing", "missing"],
        "{reports:?}"
    );
    assert_eq!(states(&reports, "Pod/bare"), ["missing"]);
    for r in &reports {
        for key in ["namespace", "pod", "owner", "state", "reason"] {
            assert!(r.get(key).is_some(), "{key} in {r}");
        }
    }

    let (code, reports, stderr) = check(&env, &["-n", &ns, "--repair"]);
    assert!(
        stderr.contains("restarted e2e-check/Deployment/web"),
        "{stderr}"
    );
    assert!(stderr.contains("not repaired: e2e-check/bare"), "{stderr}");
    assert_eq!(
        states(&reports, "Deployment/web"),
        ["current", "current"],
        "{stderr}"
    );
    // The bare Pod is reported, never deleted: still missing, so still exit 1.
    assert_eq!(states(&reports, "Pod/bare"), ["missing"]);
    assert_eq!(code, Some(1));
    ok(&kubectl(
        &env,
        &["delete", "pod", "bare", "-n", &ns, "--wait=false"],
        None,
    ));
    let (code, reports, stderr) = check(&env, &["-n", &ns]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        reports.iter().all(|r| r["state"] == "current"),
        "{reports:?}"
    );

    let repair: Vec<_> = events(&env, &ns)
        .into_iter()
        .filter(|e| e.0 == "SidecarRepair" && e.2 == "web")
        .collect();
    assert_eq!(repair.len(), 1, "one Event for the one restart: {repair:?}");
}

fn configmap_manifest(ns: &str, name: &str, image: &str, pull_policy: &str) -> String {
    let settings = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/base/config/config.yaml"),
    )
    .unwrap()
    .replace(
        "atlassian/bitbucket-pipelines-metrics-collector:2.1.0",
        image,
    );
    let template = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/base/config/mutate.yaml"),
    )
    .unwrap()
    .replace(
        "imagePullPolicy: IfNotPresent",
        &format!("imagePullPolicy: {pull_policy}"),
    );
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns},
        "data": {"config.yaml": settings, "mutate.yaml": template}})
    .to_string()
}

fn collector_image(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers.iter().find(|c| c.name == COLLECTOR))
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

/// Issue "Cluster-aware": `serve --config configmap:NS/NAME` serves a `kubectl apply` of the
/// ConfigMap to a Pod created 2 s later; a broken one leaves the old template serving, a
/// Warning Event on the ConfigMap naming the problem, and the reload metric counting it.
#[tokio::test]
#[ignore = "needs a cluster: tests/e2e/run"]
async fn a_live_configmap_is_served_at_once_and_a_broken_one_is_refused_with_an_event() {
    let env = env();
    let c = client(&env).await;
    let home = namespace(&c, "e2e-live-config", json!({})).await;
    let apply = |manifest: String| ok(&kubectl(&env, &["apply", "-f", "-"], Some(&manifest)));
    apply(configmap_manifest(
        &home,
        "live",
        "collector:1.0",
        "IfNotPresent",
    ));
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("live.log");
    let (mut server, port, metrics_port) = serve_beside(
        &env,
        &log,
        &[
            "--config".into(),
            format!("configmap:{home}/live"),
            "--kubeconfig".into(),
            env.kubeconfig.display().to_string(),
        ],
        &[],
    );
    let _hook6 = register(
        &env,
        "e2e-live",
        "e2e-live",
        &format!("https://127.0.0.1:{port}/mutate"),
        &ca_bundle(&env),
        "Ignore",
    );
    let ns = namespace(&c, "e2e-live", json!({"e2e-live": "on"})).await;
    dry_run_until(&c, &ns, "the live-config webhook to be called", |p| {
        collector_image(p) == "collector:1.0"
    })
    .await;

    // A new version is served as soon as the watch delivers it.
    let applied = Instant::now();
    apply(configmap_manifest(
        &home,
        "live",
        "collector:2.0",
        "IfNotPresent",
    ));
    dry_run_until(&c, &ns, "the new template to be served", |p| {
        collector_image(p) == "collector:2.0"
    })
    .await;
    println!(
        "live ConfigMap: served {:?} after the apply",
        applied.elapsed()
    );
    let pod = create_pod(&c, &ns, pod_json("second", json!({})))
        .await
        .unwrap();
    assert_eq!(collector_image(&pod), "collector:2.0");

    // A broken version: once it has been refused (the metric says it was processed), the
    // last good one serves, and the ConfigMap says why.
    apply(configmap_manifest(
        &home,
        "live",
        "collector:3.0",
        "Sometimes",
    ));
    eventually("the broken ConfigMap to be refused", 30, || async {
        (metric(
            metrics_port,
            "sidecar_injector_config_reloads_total{result=\"failure\"}",
        )
        .await
            >= 1.0)
            .then_some(())
    })
    .await;
    let pod = create_pod(&c, &ns, pod_json("third", json!({})))
        .await
        .unwrap();
    assert_eq!(collector_image(&pod), "collector:2.0");
    let refused = eventually("the Warning Event on the ConfigMap", 30, || async {
        events(&env, &home)
            .into_iter()
            .find(|(reason, kind, name, _)| {
                reason == "ConfigRefused" && kind == "ConfigMap" && name == "live"
            })
    })
    .await;
    assert!(
        refused
            .3
            .contains("mutate.yaml: containers[0].imagePullPolicy: \"Sometimes\" is not one of"),
        "{refused:?}"
    );
    let metrics = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("sidecar_injector_config_reloads_total{result=\"failure\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("sidecar_injector_config_reloads_total{result=\"success\"} 1"));
    unregister(&env, "e2e-live");
    let _ = server.kill();
    let _ = server.wait();
}

/// Issue "Cluster-aware": a failed injection is a Warning Event on the Pod's owner (the
/// ReplicaSet), or on the namespace for a bare Pod; rate-limited (three failing Pods of one
/// ReplicaSet give one Event) and never for a dry run.
#[tokio::test]
#[ignore = "needs a cluster: tests/e2e/run"]
async fn failed_injections_are_events_on_the_owner_rate_limited_and_never_for_dry_runs() {
    let env = env();
    let c = client(&env).await;
    let ns = opted_in(&c, "e2e-events").await;
    webhook_in_effect(&c, &ns).await;
    // A dry run that conflicts: no Event.
    let own = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "own"},
        "spec": {"containers": [{"name": "app", "image": "app:1"},
            {"name": COLLECTOR, "image": "someone-else/collector:0.1"}]}});
    ok(&kubectl(
        &env,
        &["apply", "--dry-run=server", "-n", &ns, "-f", "-"],
        Some(&own.to_string()),
    ));
    // Three Pods of one ReplicaSet that conflict.
    let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "clash"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "clash"}},
            "template": {"metadata": {"labels": {"app": "clash"}}, "spec": own["spec"]}}});
    ok(&kubectl(
        &env,
        &["apply", "-n", &ns, "-f", "-"],
        Some(&deploy.to_string()),
    ));
    let pods: Api<Pod> = Api::namespaced(c.clone(), &ns);
    eventually("three Pods", 60, || async {
        let list = pods
            .list(&ListParams::default().labels("app=clash"))
            .await
            .ok()?;
        (list.items.len() == 3).then_some(())
    })
    .await;
    // A bare Pod that conflicts: the Event goes on the namespace.
    ok(&kubectl(
        &env,
        &["apply", "-n", &ns, "-f", "-"],
        Some(&own.to_string()),
    ));
    // Events about a Namespace (cluster-scoped) live in `default`, where `kubectl describe
    // namespace` finds them.
    let ours = || {
        events(&env, &ns)
            .into_iter()
            .chain(events(&env, "default").into_iter().filter(|e| e.2 == *ns))
            .filter(|e| e.0 == "SidecarInjectionFailed")
            .collect::<Vec<_>>()
    };
    let found = eventually("the Events", 30, || async {
        let ev = ours();
        (ev.len() >= 2).then_some(ev)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let found_later = ours();
    assert_eq!(found_later.len(), 2, "{found_later:?}");
    let on_rs: Vec<_> = found.iter().filter(|e| e.1 == "ReplicaSet").collect();
    assert_eq!(on_rs.len(), 1, "one Event for three failures: {found:?}");
    assert!(on_rs[0].2.starts_with("clash-"), "{on_rs:?}");
    assert!(on_rs[0].3.contains("(conflict)"), "{on_rs:?}");
    let on_ns: Vec<_> = found.iter().filter(|e| e.1 == "Namespace").collect();
    assert_eq!(on_ns.len(), 1, "{found:?}");
    assert!(on_ns[0].3.contains("Pod \"own\""), "{on_ns:?}");
}

/// Issue "Cluster-aware": a template change makes the running Pods `stale`; the in-server
/// repair loop of two `serve` replicas, one Lease between them, rolls the workload once.
#[tokio::test]
#[ignore = "needs a cluster: tests/e2e/run"]
async fn two_replicas_one_lease_roll_a_stale_workload_once() {
    let env = env();
    let c = client(&env).await;
    let home = namespace(&c, "e2e-repair-home", json!({})).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir(&config).unwrap();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/base/config");
    let settings = std::fs::read_to_string(shipped.join("config.yaml"))
        .unwrap()
        .replace(
            "namespaceLabel: sidecar-injection",
            "namespaceLabel: e2e-repair",
        )
        .replace("  enabled: false ", "  enabled: true  ")
        .replace("  intervalSeconds: 60", "  intervalSeconds: 2");
    assert!(settings.contains("enabled: true") && settings.contains("intervalSeconds: 2"));
    std::fs::write(config.join("config.yaml"), &settings).unwrap();
    std::fs::copy(shipped.join("mutate.yaml"), config.join("mutate.yaml")).unwrap();
    let args = vec![
        "--config".to_owned(),
        config.display().to_string(),
        "--kubeconfig".into(),
        env.kubeconfig.display().to_string(),
    ];
    let mut replicas = Vec::new();
    for name in ["replica-a", "replica-b"] {
        let log = dir.path().join(format!("{name}.log"));
        let (child, port, metrics) = serve_beside(
            &env,
            &log,
            &args,
            &[("POD_NAMESPACE", home.as_str()), ("POD_NAME", name)],
        );
        replicas.push((child, port, metrics, log));
    }
    let _hook7 = register_for(
        &env,
        "e2e-repair",
        ("e2e-repair", "enabled"),
        &format!("https://127.0.0.1:{}/mutate", replicas[0].1),
        &ca_bundle(&env),
        "Ignore",
    );
    let ns = namespace(&c, "e2e-repair", json!({"e2e-repair": "enabled"})).await;
    let api: Api<Pod> = Api::namespaced(c.clone(), &ns);
    dry_run_until(
        &c,
        &ns,
        "the repair replicas' webhook to be called",
        injected,
    )
    .await;
    web_deployment(&env, &ns);
    let hashes = || async {
        let pods = api
            .list(&ListParams::default().labels("app=web"))
            .await
            .unwrap();
        pods.items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| {
                p.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(STATUS))
                    .cloned()
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
    };
    let before = hashes().await;
    assert_eq!(before.len(), 2);
    assert!(
        before.iter().all(|s| !s.is_empty()),
        "injected at creation: {before:?}"
    );

    // One Lease, one holder.
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(c.clone(), &home);
    let holder = eventually("the Lease to be held", 30, || async {
        leases
            .get_opt("sidecar-injector-repair")
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec?.holder_identity)
    })
    .await;
    assert!(holder == "replica-a" || holder == "replica-b", "{holder}");

    // The template changes: both replicas reload it; the running Pods are stale.
    std::fs::write(
        config.join("config.yaml"),
        settings.replace("logLevel: INFO", "logLevel: DEBUG"),
    )
    .unwrap();
    let after = eventually("the workload to be repaired", 120, || async {
        let now = hashes().await;
        (now.len() == 2
            && now
                .iter()
                .all(|s| !before.contains(s) && s.contains("templateHash")))
        .then_some(now)
    })
    .await;
    rolled_out(&env, &ns, "deployment/web");
    // Three more survey rounds: nothing is rolled again.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(hashes().await, after, "the same Pods: not rolled twice");
    let rs: Api<k8s_openapi::api::apps::v1::ReplicaSet> = Api::namespaced(c.clone(), &ns);
    let sets = rs
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    assert_eq!(sets.items.len(), 2, "the first ReplicaSet and one restart");
    let mut restarts = 0.0;
    for (_, _, m, _) in &replicas {
        restarts += metric(*m, "sidecar_injector_repairs_total").await;
    }
    assert_eq!(restarts, 1.0, "one restart between both replicas");
    let pods_current = metric(replicas[0].2, "sidecar_injector_pods{state=\"current\"}").await;
    assert!(pods_current >= 2.0, "{pods_current}");
    // The kwok nodes run containerd: `auto` leaves the socket out, said once in the log
    // (before serving), not every survey; no node lacks a socket the templates mount.
    assert_eq!(
        metric(replicas[0].2, "sidecar_injector_nodes_without_docker").await,
        0.0
    );
    let log = std::fs::read_to_string(&replicas[0].3).unwrap_or_default();
    assert_eq!(
        log.matches("schedulable Linux nodes run no Docker").count(),
        1,
        "{log}"
    );
    let repair_events = events(&env, &ns)
        .into_iter()
        .filter(|e| e.0 == "SidecarRepair" && e.2 == "web")
        .count();
    assert_eq!(repair_events, 1);

    unregister(&env, "e2e-repair");
    for (mut child, _, _, _) in replicas {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A restarted workload whose rollout never finishes (a DaemonSet Pod on a Node no kubelet
/// runs) stopped `check --repair` there, so no workload after it was repaired, and the next
/// run restarted it again and waited on it again. Now the run goes on with the next workload,
/// and the next run does not restart it again.
#[tokio::test]
#[ignore = "needs a cluster: tests/e2e/run"]
async fn a_rollout_that_never_finishes_holds_back_no_other_and_is_not_restarted_again() {
    let env = env();
    let c = client(&env).await;
    let ns = namespace(&c, "e2e-stuck-rollout", json!({})).await;
    // Before the namespace opts in: a DaemonSet and a Deployment, their Pods without the
    // sidecar. The DaemonSet tolerates the dead Node's taint (which keeps every other test's
    // Pods off it) and not-ready, as node agents often do.
    let workloads = format!(
        r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: agent, namespace: {ns}}}
spec:
  selector: {{matchLabels: {{app: agent}}}}
  template:
    metadata: {{labels: {{app: agent}}}}
    spec:
      tolerations:
      - {{key: e2e-stuck, operator: Exists}}
      - {{key: node.kubernetes.io/not-ready, operator: Exists}}
      containers: [{{name: app, image: registry.k8s.io/pause:3.10}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {ns}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec: {{containers: [{{name: app, image: registry.k8s.io/pause:3.10}}]}}
"#,
        ns = *ns
    );
    ok(&kubectl(&env, &["apply", "-f", "-"], Some(&workloads)));
    rolled_out(&env, &ns, "daemonset/agent");
    rolled_out(&env, &ns, "deployment/web");
    // A Node no kubelet runs (no allocatable Pods either): the DaemonSet wants a Pod there
    // that never starts, so no rollout of it can finish.
    let node = "e2e-stuck-node";
    let mut undo = day_one::Undo::new();
    ok(&kubectl(
        &env,
        &["apply", "-f", "-"],
        Some(
            &json!({"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": node, "labels": {"kubernetes.io/os": "linux"}},
                "spec": {"unschedulable": true,
                    "taints": [{"key": "e2e-stuck", "effect": "NoSchedule"}]}})
            .to_string(),
        ),
    ));
    undo.kubectl("the Node", &["delete", "node", node, "--wait=false"]);
    let pods: Api<Pod> = Api::namespaced(c.clone(), &ns);
    eventually(
        "the DaemonSet's Pod for the dead Node, Pending",
        30,
        || async {
            let list = pods.list(&ListParams::default()).await.ok()?;
            list.items
                .iter()
                .any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending"))
                .then_some(())
        },
    )
    .await;

    ok(&kubectl(
        &env,
        &[
            "label",
            "namespace",
            &ns,
            "sidecar-injection=enabled",
            "--overwrite",
        ],
        None,
    ));
    token_copy_in(&env, &c, &ns).await;
    webhook_in_effect(&c, &ns).await;
    let repair = [
        "-n",
        &ns,
        "--repair",
        "--rollout-timeout-seconds",
        "20",
        "--max-per-minute",
        "60",
    ];
    let (_, reports, stderr) = check(&env, &repair);
    let at = |s: &str| {
        stderr
            .find(s)
            .unwrap_or_else(|| panic!("{s:?} in:\n{stderr}"))
    };
    let agent = at(&format!("restarted {}/DaemonSet/agent", *ns));
    let stuck = at("DaemonSet/agent in e2e-stuck-rollout did not finish rolling out within 20 s");
    let web = at(&format!("restarted {}/Deployment/web", *ns));
    assert!(agent < stuck && stuck < web, "{stderr}");
    let said = |stderr: &str| {
        for line in stderr.lines().filter(|l| l.contains("DaemonSet/agent")) {
            println!("{line}");
        }
    };
    said(&stderr);
    assert!(
        stderr.contains("repair: 1 workload(s) rolled out"),
        "{stderr}"
    );
    let web_states: Vec<&Value> = reports
        .iter()
        .filter(|r| r["owner"] == "Deployment/web")
        .map(|r| &r["state"])
        .collect();
    assert_eq!(web_states, [&json!("current")], "{stderr}");

    // The next run: the DaemonSet still has Pods without the sidecar, and is left alone.
    let (code, _, stderr) = check(&env, &repair);
    assert!(
        stderr.contains(&format!(
            "not restarted again: {}/DaemonSet/agent was restarted for this template",
            *ns
        )) && stderr.contains("`kubectl -n e2e-stuck-rollout rollout status daemonset/agent`"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("restarted e2e-stuck-rollout/DaemonSet"),
        "{stderr}"
    );
    said(&stderr);
    assert_eq!(code, Some(1), "its Pods are still missing: {stderr}");
    let restarts = events(&env, &ns)
        .into_iter()
        .filter(|e| e.0 == "SidecarRepair" && e.2 == "agent")
        .count();
    assert_eq!(restarts, 1, "one restart of the DaemonSet in two runs");
    // Its Pod on the dead Node waits for a kubelet that never confirms a deletion.
    ok(&kubectl(
        &env,
        &[
            "delete",
            "pods",
            "-n",
            &ns,
            "--all",
            "--grace-period=0",
            "--force",
        ],
        None,
    ));
    drop(undo);
}
