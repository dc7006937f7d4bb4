//! The injector's own Pods on the real node: restarted under load by the kubelet, and
//! installed with `kubectl apply -k` in place of the chart.

use super::*;

/// The injector's Deployment restarted (`kubectl rollout restart`) while Pods are created at a
/// steady rate in an opted-in namespace, with `failurePolicy: Fail`: the kubelet stops the
/// old replicas (SIGTERM, the drain) and probes the new ones. No creation is refused and none
/// is admitted without the sidecar.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real node: tests/e2e/real-node test"]
async fn real_node_injector_rolling_update() {
    let env = env();
    let c = client(&env).await;
    install_defaults_with(&env, &c, &["--set", "webhook.failurePolicy=Fail"]).await;
    let ns = opted_in(&c, "rn-rolling").await;
    token_copy_made(&c, &ns).await;
    let injectors: Api<Pod> = Api::namespaced(c.clone(), RELEASE);
    let own = ListParams::default().labels("app.kubernetes.io/name=sidecar-injector");
    let before: Vec<String> = injectors
        .list(&own)
        .await
        .unwrap()
        .items
        .iter()
        .map(|p| pod_name(p).to_owned())
        .collect();

    // The load: 10 creations a second, each its own task (a slow answer delays no other).
    // The Pods ask for a node label no node has: they stay Pending, the node runs none.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (c, ns, stop) = (c.clone(), ns.to_string(), stop.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut calls = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                i += 1;
                let mut pod = pod_json(&format!("load-{i}"), json!({}));
                pod["spec"]["nodeSelector"] = json!({"sidecar-e2e/none": "none"});
                let (c, ns) = (c.clone(), ns.clone());
                calls.push(tokio::spawn(async move { create_pod(&c, &ns, pod).await }));
            }
            let mut outcomes = Vec::new();
            for call in calls {
                outcomes.push(call.await.unwrap());
            }
            outcomes
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let restarted = Instant::now();
    ok(&kubectl(
        &env,
        &[
            "rollout",
            "restart",
            "deployment/sidecar-injector",
            "-n",
            RELEASE,
        ],
        None,
    ));
    tokio::task::block_in_place(|| rolled_out(&env, RELEASE, "deployment/sidecar-injector"));
    let rollout = restarted.elapsed();
    // The old replicas' drain ends after the rollout: keep creating through it.
    tokio::time::sleep(Duration::from_secs(10)).await;
    stop.store(true, Ordering::Relaxed);
    let outcomes = load.await.unwrap();
    let created = outcomes.len();
    let (mut injected_n, mut uninjected, mut refused) = (0, Vec::new(), Vec::new());
    for o in outcomes {
        match o {
            Ok(p) if injected(&p) => injected_n += 1,
            Ok(p) => uninjected.push(pod_name(&p).to_owned()),
            Err(e) => refused.push(e.to_string()),
        }
    }
    let after: Vec<Pod> = injectors.list(&own).await.unwrap().items;
    println!(
        "RESULT real_node_rolling_update creations={created} injected={injected_n} refused={} uninjected={} rollout_ms={}",
        refused.len(),
        uninjected.len(),
        rollout.as_millis()
    );
    assert!(
        after
            .iter()
            .all(|p| !before.contains(&pod_name(p).to_owned())),
        "new replicas: {before:?} -> {:?}",
        after.iter().map(pod_name).collect::<Vec<_>>()
    );
    assert!(created >= 100, "{created} creations");
    assert!(refused.is_empty(), "refused: {refused:#?}");
    assert!(
        uninjected.is_empty(),
        "admitted without the sidecar: {uninjected:?}"
    );
    install_defaults(&env, &c).await;
}

/// The same product installed with `kubectl apply -k` (manifests/base, the image and a
/// nodeSelector set by an overlay) in place of the chart: its Pods run on the real node, it
/// makes its certificate, propagates the token, and the Pods it injects run the collector.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real node: tests/e2e/real-node test"]
async fn real_node_kustomize_install_runs_the_same() {
    let env = env();
    let c = client(&env).await;
    let namespaces: Api<Namespace> = Api::all(c.clone());
    if namespaces.get_opt(RELEASE).await.unwrap().is_some() {
        // helm's pre-delete hook (a Job of the injector's image) runs on the real node too.
        ok(&helm::helm(
            &env,
            &[
                "uninstall",
                RELEASE,
                "--namespace",
                RELEASE,
                "--wait",
                "--ignore-not-found",
            ],
        ));
        ok(&kubectl(
            &env,
            &["delete", "namespace", RELEASE, "--timeout=120s"],
            None,
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/base");
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- {}\nimages:\n- {{name: sidecar-injector, newName: localhost/sidecar-injector, newTag: test-amd64}}\npatches:\n- target: {{kind: Deployment, name: sidecar-injector}}\n  patch: |-\n    - op: add\n      path: /spec/template/spec/nodeSelector\n      value: {{sidecar-e2e/node: real}}\n",
            crate::in_cluster::relative_to(dir.path(), &base)
        ),
    )
    .unwrap();
    let overlay = dir.path().to_str().unwrap();
    let mut undo = crate::day_one::Undo::new();
    ok(&kubectl(&env, &["apply", "-k", overlay], None));
    // Waits for the namespace to go: the next test installs the chart into it.
    undo.kubectl(
        "the kustomize install",
        &[
            "delete",
            "-k",
            overlay,
            "--ignore-not-found",
            "--timeout=120s",
        ],
    );
    let secrets: Api<Secret> = Api::namespaced(c.clone(), RELEASE);
    secrets
        .create(
            &PostParams::default(),
            &token_secret(RELEASE, "kustomize-token"),
        )
        .await
        .unwrap();
    tokio::task::block_in_place(|| rolled_out(&env, RELEASE, "deployment/sidecar-injector"));
    let ns = opted_in(&c, "rn-kustomize").await;
    webhook_in_effect(&c, &ns).await;
    token_copy_made(&c, &ns).await;
    app_deployment(&env, &ns, "web", 2);
    let (pods, _) = running(&c, &ns, "app=web", 2, 120).await;
    for pod in &pods {
        let said = collector_report(&env, &ns, pod_name(pod)).await;
        assert!(said.contains("collector: token set ("), "{said}");
    }
    let tls: Api<Secret> = Api::namespaced(c.clone(), RELEASE);
    assert!(tls.get_opt("sidecar-injector-tls").await.unwrap().is_some());
}
