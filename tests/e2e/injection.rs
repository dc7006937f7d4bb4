//! Injection as the apiserver sees it: Pods of opted-in namespaces injected and the rest
//! stored untouched, Deployment, Job and CronJob Pods, and server-side dry runs.

use super::*;

#[tokio::test]
#[ignore = "needs a cluster: tests/e2e/run"]
async fn pods_in_opted_in_namespaces_are_injected_and_the_rest_are_stored_untouched() {
    let env = env();
    let c = client(&env).await;
    let ns = opted_in(&c, "e2e-basic").await;
    webhook_in_effect(&c, &ns).await;

    ok(&kubectl(
        &env,
        &["run", "web", "-n", &ns, "--image=nginx:1.27"],
        None,
    ));
    let pods: Api<Pod> = Api::namespaced(c.clone(), &ns);
    let pod = pods.get("web").await.unwrap();
    assert!(injected(&pod), "kubectl run: {:?}", containers(&pod));
    let spec = pod.spec.clone().unwrap();
    let volumes: Vec<_> = spec.volumes.clone().unwrap_or_default();
    let host_paths: Vec<String> = volumes
        .iter()
        .filter_map(|v| v.host_path.as_ref().map(|h| h.path.clone()))
        .collect();
    // The kwok nodes run containerd: `mountDockerSocket: auto` leaves the socket out, and
    // the status annotation says why (day_one.rs has `true` mounting it).
    assert_eq!(host_paths, ["/sys/fs/cgroup"]);
    let status = pod.metadata.annotations.as_ref().unwrap()[STATUS].clone();
    assert!(
        status.contains("/var/run/docker.sock not mounted: values.mountDockerSocket is auto and 3 of 3 schedulable Linux nodes run no Docker"),
        "{status}"
    );
    // The ServiceAccount plugin ran before us: its token volume is still there, ours beside it.
    assert!(
        volumes
            .iter()
            .any(|v| v.name.starts_with("kube-api-access-")),
        "the token volume: {:?}",
        volumes.iter().map(|v| &v.name).collect::<Vec<_>>()
    );
    let app = &spec.containers[0];
    assert!(
        app.volume_mounts
            .iter()
            .flatten()
            .any(|m| m.mount_path == "/var/run/secrets/kubernetes.io/serviceaccount")
    );

    // Not opted in: an unlabelled namespace, a Pod opting out by label and by annotation,
    // kube-system.
    let plain = namespace(&c, "e2e-plain", json!({})).await;
    let opt_out = json!({"sidecar-injector.io/inject": "false"});
    for (ns, name, meta, what) in [
        (plain.as_str(), "plain", json!({}), "unlabelled namespace"),
        (
            &ns,
            "out-label",
            json!({"labels": opt_out}),
            "opted out by label",
        ),
        (
            &ns,
            "out-annotation",
            json!({"annotations": opt_out}),
            "opted out by annotation",
        ),
        ("kube-system", "e2e-sys", json!({}), "kube-system"),
    ] {
        let p = create_pod(&c, ns, pod_json(name, meta)).await.unwrap();
        assert_eq!(containers(&p), ["app"], "{what}");
    }
    let _ = Api::<Pod>::namespaced(c.clone(), "kube-system")
        .delete("e2e-sys", &DeleteParams::default())
        .await;
}

#[tokio::test]
#[ignore = "needs a cluster: tests/e2e/run"]
async fn deployment_pods_are_injected_run_ready_and_roll_out() {
    let env = env();
    let c = client(&env).await;
    let ns = opted_in(&c, "e2e-deploy").await;
    webhook_in_effect(&c, &ns).await;
    ok(&kubectl(
        &env,
        &[
            "create",
            "deployment",
            "web",
            "-n",
            &ns,
            "--image=nginx:1.27",
            "--replicas=2",
        ],
        None,
    ));
    rolled_out(&env, &ns, "deployment/web");
    let pods: Api<Pod> = Api::namespaced(c.clone(), &ns);
    let ready = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    let list = pods.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 2);
    for p in &list.items {
        assert!(injected(p), "{:?}", containers(p));
        assert!(ready(p), "Ready on a kwok node");
        let node = p.spec.as_ref().and_then(|s| s.node_name.clone());
        assert!(node.is_some_and(|n| n.starts_with("kwok-node-")));
    }
    let before: Vec<String> = list
        .items
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();

    ok(&kubectl(
        &env,
        &["rollout", "restart", "deployment/web", "-n", &ns],
        None,
    ));
    rolled_out(&env, &ns, "deployment/web");
    let after = eventually("the old Pods to go", 60, || async {
        let l = pods.list(&ListParams::default()).await.ok()?;
        let live: Vec<Pod> = l
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        (live.len() == 2
            && live
                .iter()
                .all(|p| !before.contains(p.metadata.name.as_ref().unwrap())))
        .then_some(live)
    })
    .await;
    assert!(after.iter().all(|p| injected(p) && ready(p)));
}

#[tokio::test]
#[ignore = "needs a cluster: tests/e2e/run"]
async fn job_and_cronjob_pods_get_the_collector_as_a_native_sidecar() {
    let env = env();
    let c = client(&env).await;
    let ns = opted_in(&c, "e2e-jobs").await;
    webhook_in_effect(&c, &ns).await;
    ok(&kubectl(
        &env,
        &[
            "create",
            "job",
            "once",
            "-n",
            &ns,
            "--image=busybox:1.36",
            "--",
            "true",
        ],
        None,
    ));
    ok(&kubectl(
        &env,
        &[
            "create",
            "cronjob",
            "nightly",
            "-n",
            &ns,
            "--image=busybox:1.36",
            "--schedule=0 3 * * *",
            "--",
            "true",
        ],
        None,
    ));
    ok(&kubectl(
        &env,
        &[
            "create",
            "job",
            "nightly-now",
            "--from=cronjob/nightly",
            "-n",
            &ns,
        ],
        None,
    ));
    let pods: Api<Pod> = Api::namespaced(c.clone(), &ns);
    for job in ["once", "nightly-now"] {
        let lp = ListParams::default().labels(&format!("job-name={job}"));
        let pod = eventually(&format!("a Pod of Job {job}"), 60, || async {
            pods.list(&lp).await.ok()?.items.into_iter().next()
        })
        .await;
        let spec = pod.spec.clone().unwrap();
        let sidecar = spec
            .init_containers
            .iter()
            .flatten()
            .find(|c| c.name == COLLECTOR)
            .unwrap_or_else(|| panic!("{job}: no native sidecar: {:?}", containers(&pod)));
        assert_eq!(sidecar.restart_policy.as_deref(), Some("Always"), "{job}");
        assert!(!containers(&pod).contains(&COLLECTOR.to_owned()));
    }
}

#[tokio::test]
#[ignore = "needs a cluster: tests/e2e/run"]
async fn server_side_dry_run_shows_the_injection_and_stores_nothing() {
    let env = env();
    let c = client(&env).await;
    let ns = opted_in(&c, "e2e-dry").await;
    webhook_in_effect(&c, &ns).await;
    let pod = serde_json::to_string(&pod_json("dry", json!({}))).unwrap();
    let out = ok(&kubectl(
        &env,
        &[
            "apply",
            "--dry-run=server",
            "-o",
            "json",
            "-n",
            &ns,
            "-f",
            "-",
        ],
        Some(&pod),
    ));
    let shown: Pod = serde_json::from_str(&out).unwrap();
    assert!(injected(&shown), "{:?}", containers(&shown));
    let stored = Api::<Pod>::namespaced(c.clone(), &ns)
        .get_opt("dry")
        .await
        .unwrap();
    assert!(stored.is_none(), "nothing is stored");
}
