//! Issue "Day one on a real cluster": `mountDockerSocket: auto` on containerd nodes, `check`
//! judging against the installed ConfigMap, the `failing` state, `doctor` on a good install
//! and on four broken ones, and `--repair` refusing to roll into a webhook that is down.
//!
//! Every change a test makes to what the suite shares (the webhook configuration, the
//! ClusterRole, the installed ConfigMap) is undone by a guard that also runs on a panic.

use super::*;

/// Runs its command when dropped: after the test, and after a failed assertion too.
pub(crate) struct Undo(Vec<(String, Vec<String>)>);

impl Undo {
    pub(crate) fn new() -> Undo {
        Undo(Vec::new())
    }
    /// Runs `kubectl args` at the end (last registered, first run).
    pub(crate) fn kubectl(&mut self, what: &str, args: &[&str]) {
        self.0.push((
            what.to_owned(),
            args.iter().map(|a| a.to_string()).collect(),
        ));
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        let env = env();
        for (what, args) in self.0.drain(..).rev() {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = kubectl(&env, &args, None);
            if !out.status.success() {
                eprintln!("undo {what}: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
    }
}

pub(crate) fn patch_json(kind: &str, name: &str, ns: Option<&str>, patch: Value) -> Vec<String> {
    let mut args = vec![
        "patch".to_owned(),
        kind.to_owned(),
        name.to_owned(),
        "--type=json".to_owned(),
        "-p".to_owned(),
        patch.to_string(),
    ];
    if let Some(ns) = ns {
        args.extend(["-n".to_owned(), ns.to_owned()]);
    }
    args
}

pub(crate) fn run_ok(env: &Env, args: &[String]) -> String {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&kubectl(env, &args, None))
}

fn has_volume(pod: &Pod, name: &str) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .is_some_and(|v| v.iter().any(|v| v.name == name))
}

/// On the kwok nodes (containerd), the default `auto` leaves the Docker socket out (the
/// suite's serve: `e2e.rs` checks the status note); `true` mounts it.
#[tokio::test]
#[ignore = "needs a cluster: tests/e2e/run"]
async fn docker_socket_auto_leaves_it_out_on_containerd_nodes_and_true_mounts_it() {
    let env = env();
    let c = client(&env).await;
    let ns = opted_in(&c, "e2e-socket-auto").await;
    let pod = dry_run_until(&c, &ns, "the suite's webhook", injected).await;
    assert!(!has_volume(&pod, "docker-sock"), "auto on containerd nodes");
    assert!(has_volume(&pod, "cgroup"));

    let dir = tempfile::tempdir().unwrap();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/base/config");
    let settings = std::fs::read_to_string(shipped.join("config.yaml"))
        .unwrap()
        .replace("mountDockerSocket: auto", "mountDockerSocket: true");
    assert!(settings.contains("mountDockerSocket: true"));
    std::fs::write(dir.path().join("config.yaml"), settings).unwrap();
    std::fs::copy(shipped.join("mutate.yaml"), dir.path().join("mutate.yaml")).unwrap();
    let log = dir.path().join("serve.log");
    let args = vec![
        "--config".to_owned(),
        dir.path().display().to_string(),
        "--kubeconfig".to_owned(),
        env.kubeconfig.display().to_string(),
    ];
    let (_server, port, _) = serve_beside(&env, &log, &args, &[]);
    let _hook = register_for(
        &env,
        "e2e-socket-true",
        ("e2e-socket-true", "on"),
        &format!("https://127.0.0.1:{port}/mutate"),
        &ca_bundle(&env),
        "Fail",
    );
    let fixed = namespace(&c, "e2e-socket-true", json!({"e2e-socket-true": "on"})).await;
    let pod = dry_run_until(&c, &fixed, "the mountDockerSocket: true webhook", injected).await;
    assert!(has_volume(&pod, "docker-sock"), "true mounts it anyway");
    // ...and serve warns, naming the nodes and the setting.
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        said.contains("3 of 3 schedulable Linux nodes run no Docker: kwok-node-")
            && said.contains("Set values.mountDockerSocket: auto (or false)"),
        "{said}"
    );
}

/// Installed with a changed template (the ConfigMap `sidecar-injector/sidecar-injector`,
/// served live), `check -A` with no `--config` judges against it: the Pods it just injected
/// are `current`. With the shipped template named instead, the same Pods are `stale`.
#[tokio::test]
#[ignore = "needs a cluster: tests/e2e/run"]
async fn check_without_config_judges_against_the_installed_configmap() {
    let env = env();
    let c = client(&env).await;
    let mut undo = Undo::new();
    let cm = run_ok(
        &env,
        &[
            "get".into(),
            "configmap".into(),
            "sidecar-injector".into(),
            "-n".into(),
            "sidecar-injector".into(),
            "-o".into(),
            "json".into(),
        ],
    );
    let cm: Value = serde_json::from_str(&cm).unwrap();
    let settings = cm["data"]["config.yaml"].as_str().unwrap().to_owned();
    let changed = settings.replace("logLevel: INFO", "logLevel: DEBUG");
    assert_ne!(settings, changed);
    run_ok(
        &env,
        &patch_json(
            "configmap",
            "sidecar-injector",
            Some("sidecar-injector"),
            json!([{"op": "replace", "path": "/data/config.yaml", "value": changed}]),
        ),
    );
    let restore = patch_json(
        "configmap",
        "sidecar-injector",
        Some("sidecar-injector"),
        json!([{"op": "replace", "path": "/data/config.yaml", "value": settings}]),
    );
    let restore: Vec<&str> = restore.iter().map(String::as_str).collect();
    undo.kubectl("the installed ConfigMap", &restore);

    // An injector serving the installed ConfigMap, for a namespace of this test's own.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let args = vec![
        "--config".to_owned(),
        "configmap:sidecar-injector/sidecar-injector".to_owned(),
        "--kubeconfig".to_owned(),
        env.kubeconfig.display().to_string(),
    ];
    let (mut server, port, _) = serve_beside(&env, &log, &args, &[]);
    let _hook = register_for(
        &env,
        "e2e-installed",
        ("e2e-installed", "on"),
        &format!("https://127.0.0.1:{port}/mutate"),
        &ca_bundle(&env),
        "Fail",
    );
    // Opted in as users do, so `check -A` looks at it; this test's webhook is called first
    // (by name), and the suite's then finds the Pod injected and adds nothing.
    let ns = namespace(
        &c,
        "e2e-installed",
        json!({"e2e-installed": "on", "sidecar-injection": "enabled"}),
    )
    .await;
    dry_run_until(&c, &ns, "the installed-config webhook", |p| {
        env_value(p, COLLECTOR, "LOG_LEVEL").as_deref() == Some("DEBUG")
    })
    .await;
    web_deployment(&env, &ns);
    token_copy_in(&env, &c, &ns).await;

    let out = common::run(
        common::bin(),
        &[
            "check",
            "--kubeconfig",
            env.kubeconfig.to_str().unwrap(),
            "-A",
            "-o",
            "json",
        ],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let all: Vec<Value> = serde_json::from_slice(&out.stdout).expect(&stderr);
    assert!(
        stderr.contains("config: ConfigMap sidecar-injector/sidecar-injector, as installed"),
        "{stderr}"
    );
    // Other tests' namespaces are there too (injected by the suite's serve, with the shipped
    // template: stale against the installed one); this test's Pods are current.
    let reports: Vec<&Value> = all
        .iter()
        .filter(|r| r["namespace"] == ns.as_str())
        .collect();
    assert_eq!(reports.len(), 2, "{all:?}");
    assert!(
        reports.iter().all(|r| r["state"] == "current"),
        "{reports:?} {stderr}"
    );
    // The embedded default is another template: there the same Pods are stale.
    let (_, reports, _) = check(&env, &["-n", &ns]);
    assert!(reports.iter().all(|r| r["state"] == "stale"), "{reports:?}");

    drop(undo);
    let _ = server.kill();
    let _ = server.wait();
}

/// A Pod whose collector kubelet cannot create (status written as kubelet would, through the
/// status subresource) is `failing` with the container and kubelet's reason; `check` exits 1.
#[tokio::test]
#[ignore = "needs a cluster: tests/e2e/run"]
async fn a_pod_whose_collector_cannot_start_is_failing_and_check_exits_1() {
    let env = env();
    let c = client(&env).await;
    let ns = opted_in(&c, "e2e-failing").await;
    webhook_in_effect(&c, &ns).await;
    // On a node no kwok kubelet manages, so nothing but this test writes its status (a
    // Node that exists, or the Pod garbage collector removes the Pod; cordoned, so it does
    // not count for `mountDockerSocket: auto`; tainted, so that no other test's DaemonSet
    // puts a Pod there that never starts).
    let mut undo = Undo::new();
    ok(&kubectl(
        &env,
        &["apply", "-f", "-"],
        Some(
            &json!({"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": "e2e-no-kubelet", "labels": {"kubernetes.io/os": "linux"}},
                "spec": {"unschedulable": true,
                    "taints": [{"key": "e2e-no-kubelet", "effect": "NoSchedule"}]}})
            .to_string(),
        ),
    ));
    undo.kubectl(
        "the Node",
        &["delete", "node", "e2e-no-kubelet", "--wait=false"],
    );
    let mut pod = pod_json("web", json!({}));
    pod["spec"]["nodeName"] = json!("e2e-no-kubelet");
    let created = create_pod(&c, &ns, pod).await.unwrap();
    assert!(injected(&created));
    let message = "secret \"bitbucket-pipelines-metrics\" not found";
    let waiting = |name: &str, reason: &str, message: &str| {
        json!({"name": name, "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": reason, "message": message}}})
    };
    let status = json!({"status": {"phase": "Pending", "containerStatuses": [
        waiting("app", "ContainerCreating", ""),
        waiting(COLLECTOR, "CreateContainerConfigError", message),
    ]}});
    let api: Api<Pod> = Api::namespaced(c.clone(), &ns);
    api.patch_status(
        "web",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&status),
    )
    .await
    .unwrap();

    let (code, reports, stderr) = check(&env, &["-n", &ns]);
    let web = reports.iter().find(|r| r["pod"] == "web").expect(&stderr);
    assert_eq!(web["state"], "failing", "{reports:?}");
    assert_eq!(
        web["reason"],
        format!("{COLLECTOR}: CreateContainerConfigError: {message}")
    );
    assert_eq!(code, Some(1), "failing: exit 1: {stderr}");
    assert!(stderr.contains("1 failing"), "{stderr}");
    ok(&kubectl(
        &env,
        &[
            "delete",
            "pod",
            "web",
            "-n",
            &ns,
            "--grace-period=0",
            "--force",
        ],
        None,
    ));
    drop(undo);
}

/// `sidecar-injector doctor --offline -o json`: exit code and findings. Offline: the
/// suite's templates name docker.io images this machine cannot reach (doctor_images.rs
/// asks a registry of its own).
pub(crate) fn doctor(env: &Env) -> (Option<i32>, Vec<Value>, String) {
    doctor_with(env, &[])
}

/// `doctor` as [`doctor`] runs it, with `extra` flags.
pub(crate) fn doctor_with(env: &Env, extra: &[&str]) -> (Option<i32>, Vec<Value>, String) {
    let mut args = vec![
        "doctor",
        "--offline",
        "--kubeconfig",
        env.kubeconfig.to_str().unwrap(),
        "-o",
        "json",
    ];
    args.extend_from_slice(extra);
    let out = common::run(common::bin(), &args, None);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let findings: Vec<Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor's JSON: {e}: {stderr}"));
    (out.status.code(), findings, stderr)
}

/// `doctor` with `extra` flags, run until it passes every check (60 s at most): its
/// findings. For tests on the multi-threaded runtime (it blocks in place).
pub(crate) async fn doctor_passes(env: &Env, extra: &[&str]) -> Vec<Value> {
    eventually("doctor to pass every check", 60, || async {
        let (code, findings, _) = tokio::task::block_in_place(|| doctor_with(env, extra));
        (code == Some(0) && failed(&findings).is_empty()).then_some(findings)
    })
    .await
}

/// The message of doctor's finding `check` ("" when there is none).
pub(crate) fn message(findings: &[Value], check: &str) -> String {
    findings
        .iter()
        .find(|f| f["check"] == check)
        .and_then(|f| f["message"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// The failed findings as (check, message, fix).
pub(crate) fn failed(findings: &[Value]) -> Vec<(String, String, String)> {
    findings
        .iter()
        .filter(|f| f["outcome"] == "fail")
        .map(|f| {
            (
                f["check"].as_str().unwrap_or_default().to_owned(),
                f["message"].as_str().unwrap_or_default().to_owned(),
                f["fix"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// `doctor` passes on the suite's install once the token Secret exists in the injector's
/// namespace (copied into each opted-in one), and fails with the right check and fix when
/// the caBundle is removed, the webhook is stopped, that Secret is missing, and the
/// ServiceAccount cannot list Pods.
#[tokio::test]
#[ignore = "needs a cluster: tests/e2e/run"]
async fn doctor_passes_on_a_good_install_and_names_each_fault_with_its_fix() {
    let env = env();
    let c = client(&env).await;
    let live: u16 = std::env::var("E2E_WEBHOOK_PORT").unwrap().parse().unwrap();
    let ns = opted_in(&c, "e2e-doctor").await;
    webhook_in_effect(&c, &ns).await;
    // The token Secret once, in the injector's namespace (what the install step asks of
    // users): propagateSecrets copies it into every opted-in namespace.
    super::secrets::token_source_once(&env).await;
    let copies: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(c.clone(), &ns);
    eventually("the token Secret copied into the namespace", 10, || async {
        copies
            .get_opt("bitbucket-pipelines-metrics")
            .await
            .ok()
            .flatten()
    })
    .await;
    // And into every other opted-in namespace (doctor looks at all of them).
    eventually("doctor to find every copy", 30, || async {
        let (_, findings, _) = doctor(&env);
        failed(&findings).is_empty().then_some(())
    })
    .await;
    let (code, findings, stderr) = doctor(&env);
    assert_eq!(failed(&findings), [], "{findings:#?}");
    assert_eq!(code, Some(0), "{stderr}");
    let checks: Vec<&str> = findings
        .iter()
        .map(|f| f["check"].as_str().unwrap())
        .collect();
    for want in [
        "webhook configuration",
        "settings",
        "webhook reachable",
        "caBundle",
        "certificate expiry",
        "config",
        "opted-in namespaces",
        "dry run",
        "secrets",
        "secret copies",
        "node runtimes",
        "images pullable",
        "permissions",
        "secret policy",
    ] {
        assert!(checks.contains(&want), "{want} in {checks:?}");
    }
    let table = common::run(
        common::bin(),
        &[
            "doctor",
            "--offline",
            "--kubeconfig",
            env.kubeconfig.to_str().unwrap(),
        ],
        None,
    );
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.lines()
            .all(|l| l.starts_with("✔ ") || l == "- images pullable: skipped: --offline"),
        "{text}"
    );

    let has = |findings: &[Value], check: &str, message: &str, fix: &str| {
        failed(findings)
            .iter()
            .any(|(c, m, f)| c == check && m.contains(message) && f.contains(fix))
    };

    // The caBundle removed.
    {
        let mut undo = Undo::new();
        let ca = ca_bundle(&env);
        run_ok(
            &env,
            &patch_json(
                "mutatingwebhookconfiguration",
                "sidecar-injector",
                None,
                json!([{"op": "remove", "path": "/webhooks/0/clientConfig/caBundle"}]),
            ),
        );
        let restore = patch_json(
            "mutatingwebhookconfiguration",
            "sidecar-injector",
            None,
            json!([{"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": ca}]),
        );
        undo.kubectl(
            "the caBundle",
            &restore.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        let (code, findings, _) = doctor(&env);
        assert_eq!(code, Some(1));
        assert!(
            has(
                &findings,
                "caBundle",
                "the webhook has no caBundle",
                "set the caBundle to the CA"
            ),
            "{findings:#?}"
        );
        assert!(
            has(
                &findings,
                "dry run",
                "came back without sidecar-injector.io/status",
                ""
            ),
            "{findings:#?}"
        );
    }
    webhook_in_effect(&c, &ns).await;

    // The webhook stopped: nothing listens where the URL points.
    {
        let _undo = RestoreUrl(live);
        webhook_url(&env, common::free_port());
        let (code, findings, _) = doctor(&env);
        assert_eq!(code, Some(1));
        assert!(
            has(
                &findings,
                "webhook reachable",
                "cannot connect",
                "start the injector"
            ),
            "{findings:#?}"
        );
    }
    webhook_in_effect(&c, &ns).await;

    // The source of the copies missing: doctor names it and the command that creates it.
    {
        let mut undo = Undo::new();
        ok(&kubectl(
            &env,
            &[
                "delete",
                "secret",
                "bitbucket-pipelines-metrics",
                "-n",
                "sidecar-injector",
            ],
            None,
        ));
        undo.kubectl(
            "the token Secret",
            &[
                "create",
                "secret",
                "generic",
                "bitbucket-pipelines-metrics",
                "--from-literal=api-token=e2e",
                "-n",
                "sidecar-injector",
            ],
        );
        let (code, findings, _) = doctor(&env);
        assert_eq!(code, Some(1));
        assert!(
            has(
                &findings,
                "secret copies",
                "propagateSecrets lists bitbucket-pipelines-metrics, absent from sidecar-injector",
                "kubectl -n sidecar-injector create secret generic bitbucket-pipelines-metrics --from-literal=api-token=VALUE"
            ),
            "{findings:#?}"
        );
        assert_eq!(failed(&findings).len(), 1, "{findings:#?}");
    }

    // A ServiceAccount without list pods.
    {
        let mut undo = Undo::new();
        let rules = run_ok(
            &env,
            &[
                "get".into(),
                "clusterrole".into(),
                "sidecar-injector".into(),
                "-o".into(),
                "json".into(),
            ],
        );
        let rules: Value = serde_json::from_str(&rules).unwrap();
        let i = rules["rules"]
            .as_array()
            .unwrap()
            .iter()
            .position(|r| r["resources"].as_array().unwrap().contains(&json!("pods")))
            .unwrap();
        let resources = rules["rules"][i]["resources"].clone();
        let without: Vec<&Value> = resources
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| *r != "pods")
            .collect();
        let path = format!("/rules/{i}/resources");
        run_ok(
            &env,
            &patch_json(
                "clusterrole",
                "sidecar-injector",
                None,
                json!([{"op": "replace", "path": path, "value": without}]),
            ),
        );
        let restore = patch_json(
            "clusterrole",
            "sidecar-injector",
            None,
            json!([{"op": "replace", "path": path, "value": resources}]),
        );
        undo.kubectl(
            "the ClusterRole",
            &restore.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        let (code, findings, _) = doctor(&env);
        assert_eq!(code, Some(1));
        assert!(
            has(
                &findings,
                "permissions",
                "system:serviceaccount:sidecar-injector:sidecar-injector cannot: list pods",
                "with kustomize, kubectl apply -k manifests/"
            ) && has(
                &findings,
                "permissions",
                "cannot: list pods",
                "helm upgrade RELEASE"
            ),
            "{findings:#?}"
        );
    }
}

/// With the webhook stopped, `check --repair` restarts nothing, says why, and exits 2: no
/// new ReplicaSet appears.
#[tokio::test]
#[ignore = "needs a cluster: tests/e2e/run"]
async fn repair_restarts_nothing_while_the_webhook_is_down() {
    let env = env();
    let c = client(&env).await;
    let live: u16 = std::env::var("E2E_WEBHOOK_PORT").unwrap().parse().unwrap();
    let ns = opted_in(&c, "e2e-repair-down").await;
    let restore = RestoreUrl(live);
    webhook_url(&env, common::free_port());
    dry_run_until(&c, &ns, "the webhook to be down", |p| !injected(p)).await;
    web_deployment(&env, &ns);

    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/base/config");
    let out = common::run(
        common::bin(),
        &[
            "check",
            "--config",
            config.to_str().unwrap(),
            "--kubeconfig",
            env.kubeconfig.to_str().unwrap(),
            "-n",
            &ns,
            "--repair",
        ],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--repair restarts nothing until the webhook injects")
            && stderr.contains("came back without sidecar-injector.io/status"),
        "{stderr}"
    );
    assert!(!stderr.contains("restarted "), "{stderr}");
    let rs: Api<k8s_openapi::api::apps::v1::ReplicaSet> = Api::namespaced(c.clone(), &ns);
    let sets = rs
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    assert_eq!(
        sets.items.len(),
        1,
        "no restart: still the first ReplicaSet"
    );
    drop(restore);
    webhook_in_effect(&c, &ns).await;
}
