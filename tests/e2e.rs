//! End to end, against a real control plane built from upstream code (tests/e2e/): etcd,
//! kube-apiserver, kube-controller-manager, kube-scheduler and kwok nodes. The apiserver runs
//! its own defaulting and ServiceAccount plugin before us, compiles our matchConditions,
//! matches our selectors, calls us (also for server-side dry runs and reinvocations), applies
//! our patch and validates the result.
//!
//! Every test is ignored by plain `cargo test`: `tests/e2e/run` brings a cluster and the
//! webhook up and runs them with `--ignored --test-threads=1` (they share the cluster's
//! webhook configurations), giving them:
//! `E2E_KUBECONFIG`, `E2E_KUBECTL` (kubectl with that kubeconfig), `E2E_WORK` (the run's
//! directory: `certs/` of the webhook), `E2E_WEBHOOK_PORT`, `E2E_METRICS_PORT`,
//! `E2E_WEBHOOK_PID`.

#[path = "e2e/certificates.rs"]
mod certificates;
mod common;
#[path = "e2e/day_one.rs"]
mod day_one;
#[path = "e2e/helm.rs"]
mod helm;
#[path = "e2e/in_cluster.rs"]
mod in_cluster;
#[path = "e2e/kubelet.rs"]
mod kubelet;
#[path = "e2e/lease.rs"]
mod lease;
#[path = "e2e/rbac.rs"]
mod rbac;
#[path = "e2e/restart.rs"]
mod restart;
#[path = "e2e/secrets.rs"]
mod secrets;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const COLLECTOR: &str = "bitbucket-pipelines-metrics-collector";
const STATUS: &str = "sidecar-injector.io/status";

struct Env {
    kubeconfig: PathBuf,
    kubectl: PathBuf,
    work: PathBuf,
}

fn env() -> Env {
    let var = |k: &str| {
        std::env::var(k).unwrap_or_else(|_| {
            panic!("{k} is not set: run the e2e tests with tests/e2e/run, which sets up a cluster")
        })
    };
    Env {
        kubeconfig: var("E2E_KUBECONFIG").into(),
        kubectl: var("E2E_KUBECTL").into(),
        work: var("E2E_WORK").into(),
    }
}

async fn client(env: &Env) -> Client {
    let kc = Kubeconfig::read_from(&env.kubeconfig).expect("the kubeconfig");
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("a client config");
    Client::try_from(config).expect("a client")
}

/// Runs kubectl with `args`, `stdin` piped in.
fn kubectl(env: &Env, args: &[&str], stdin: Option<&str>) -> Output {
    common::run(&env.kubectl, args, stdin)
}

/// Waits until `kubectl rollout status` says the workload rolled out (90 s at most).
fn rolled_out(env: &Env, ns: &str, workload: &str) {
    ok(&kubectl(
        env,
        &["rollout", "status", workload, "-n", ns, "--timeout=90s"],
        None,
    ));
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "kubectl failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `f` every 250 ms until it returns `Some`, at most `secs`.
async fn eventually<T, F, Fut>(what: &str, secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A namespace a test made: deleted (without waiting for it to go) when dropped, on a failed
/// assertion too, so no test leaves its namespaces to the next.
#[must_use = "the namespace is deleted when this guard is dropped"]
struct Ns(String);

impl std::ops::Deref for Ns {
    type Target = String;
    fn deref(&self) -> &String {
        &self.0
    }
}

impl std::fmt::Display for Ns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let out = kubectl(
            &env(),
            &[
                "delete",
                "namespace",
                &self.0,
                "--wait=false",
                "--ignore-not-found",
            ],
            None,
        );
        if !out.status.success() {
            eprintln!(
                "deleting namespace {}: {}",
                self.0,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// A fresh namespace with these labels, once its `default` ServiceAccount exists (the
/// ServiceAccount plugin refuses Pods before that).
async fn namespace(client: &Client, name: &str, labels: Value) -> Ns {
    annotated_namespace(client, name, labels, json!({})).await
}

/// [`namespace`], with annotations too.
async fn annotated_namespace(client: &Client, name: &str, labels: Value, annotations: Value) -> Ns {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(
        json!({"metadata": {"name": name, "labels": labels, "annotations": annotations}}),
    )
    .unwrap();
    api.create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("namespace {name}: {e}"));
    let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), name);
    eventually("the default ServiceAccount", 30, || async {
        sa.get_opt("default").await.ok().flatten()
    })
    .await;
    Ns(name.to_owned())
}

async fn opted_in(client: &Client, name: &str) -> Ns {
    namespace(client, name, json!({"sidecar-injection": "enabled"})).await
}

fn names(list: Option<&Vec<k8s_openapi::api::core::v1::Container>>) -> Vec<String> {
    list.into_iter().flatten().map(|c| c.name.clone()).collect()
}

fn containers(pod: &Pod) -> Vec<String> {
    names(pod.spec.as_ref().map(|s| &s.containers))
}

fn init_containers(pod: &Pod) -> Vec<String> {
    names(pod.spec.as_ref().and_then(|s| s.init_containers.as_ref()))
}

fn injected(pod: &Pod) -> bool {
    let has_status = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(STATUS));
    (containers(pod).iter().any(|c| c == COLLECTOR)
        || init_containers(pod).iter().any(|c| c == COLLECTOR))
        && has_status
}

fn pod_json(name: &str, extra_meta: Value) -> Value {
    let mut meta = json!({"name": name});
    if let (Some(m), Some(extra)) = (meta.as_object_mut(), extra_meta.as_object()) {
        m.extend(extra.clone());
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta,
        "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}})
}

async fn create_pod(client: &Client, ns: &str, pod: Value) -> Result<Pod, kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    api.create(
        &PostParams::default(),
        &serde_json::from_value(pod).unwrap(),
    )
    .await
}

/// Server-side dry runs of a Pod in `ns` until what comes back satisfies `done` (60 s at
/// most); returns that Pod.
async fn dry_run_until(client: &Client, ns: &str, what: &str, done: impl Fn(&Pod) -> bool) -> Pod {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pp = PostParams {
        dry_run: true,
        ..Default::default()
    };
    eventually(what, 60, || async {
        let pod: Pod = serde_json::from_value(pod_json("marker", json!({}))).unwrap();
        api.create(&pp, &pod).await.ok().filter(|p| done(p))
    })
    .await
}

/// Waits until a new webhook configuration is in effect: a server-side dry run of a Pod in
/// an opted-in namespace comes back injected.
async fn webhook_in_effect(client: &Client, ns: &str) {
    dry_run_until(client, ns, "the webhook to be called", injected).await;
}

/// A `serve` process a test started: killed when dropped, so a failed assertion leaves no
/// server behind.
struct Beside(std::process::Child);

impl std::ops::Deref for Beside {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for Beside {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for Beside {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Another `serve` beside the suite's, with the suite's certificate and `args`; returns the
/// process and its TLS and metrics ports.
fn serve_beside(
    env: &Env,
    log: &std::path::Path,
    args: &[String],
    vars: &[(&str, &str)],
) -> (Beside, u16, u16) {
    let certs = env.work.join("certs");
    let mut all = args.to_vec();
    all.extend([
        "--tls-cert-file".to_owned(),
        certs.join("tls.crt").display().to_string(),
        "--tls-key-file".to_owned(),
        certs.join("tls.key").display().to_string(),
    ]);
    let (child, port, metrics) = common::spawn_serve_with_env(&all, vars, log);
    (Beside(child), port, metrics)
}

/// A Deployment `web` of two nginx Pods in `ns`, rolled out.
fn web_deployment(env: &Env, ns: &str) {
    ok(&kubectl(
        env,
        &[
            "create",
            "deployment",
            "web",
            "--image=nginx:1.27",
            "--replicas=2",
            "-n",
            ns,
        ],
        None,
    ));
    rolled_out(env, ns, "deployment/web");
}

/// Removes a webhook configuration a test registered.
fn unregister(env: &Env, name: &str) {
    ok(&kubectl(
        env,
        &["delete", "mutatingwebhookconfiguration", name],
        None,
    ));
}

/// A webhook configuration a test registered: deleted when dropped (after the test, or
/// after a failed assertion), unless [`unregister`] already did.
#[must_use = "dropping it unregisters the webhook at once"]
struct Registered(String);

impl Drop for Registered {
    fn drop(&mut self) {
        let _ = kubectl(
            &env(),
            &[
                "delete",
                "mutatingwebhookconfiguration",
                &self.0,
                "--ignore-not-found",
            ],
            None,
        );
    }
}

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

/// A second webhook configuration for namespaces labelled `label=on`, calling `url`.
fn register(env: &Env, name: &str, label: &str, url: &str, ca: &str, failure: &str) -> Registered {
    register_for(env, name, (label, "on"), url, ca, failure)
}

/// A second webhook configuration for namespaces labelled `label.0=label.1`, calling `url`.
fn register_for(
    env: &Env,
    name: &str,
    label: (&str, &str),
    url: &str,
    ca: &str,
    failure: &str,
) -> Registered {
    let (label, value) = label;
    let hook = json!({"apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration", "metadata": {"name": name},
        "webhooks": [{"name": format!("{name}.e2e.test"), "admissionReviewVersions": ["v1"],
            "sideEffects": "NoneOnDryRun", "failurePolicy": failure, "timeoutSeconds": 5,
            "reinvocationPolicy": "IfNeeded",
            "clientConfig": {"url": url, "caBundle": ca},
            "namespaceSelector": {"matchLabels": {label: value}},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                "resources": ["pods"]}]}]});
    ok(&kubectl(
        env,
        &["apply", "-f", "-"],
        Some(&hook.to_string()),
    ));
    Registered(name.to_owned())
}

fn ca_bundle(env: &Env) -> String {
    use base64::Engine as _;
    let pem = std::fs::read(env.work.join("certs/ca.crt")).expect("the webhook's CA");
    base64::engine::general_purpose::STANDARD.encode(pem)
}

#[tokio::test]
#[ignore = "needs a cluster: tests/e2e/run"]
async fn with_the_webhook_down_ignore_admits_unchanged_and_fail_refuses() {
    let env = env();
    let c = client(&env).await;
    let ns = namespace(&c, "e2e-down", json!({"e2e-down": "on"})).await;
    // Nothing listens there: the webhook is down.
    let dead = format!("https://127.0.0.1:{}/mutate", common::free_port());
    let ca = ca_bundle(&env);
    let _hook = register(&env, "e2e-down", "e2e-down", &dead, &ca, "Ignore");
    // A create before the configuration takes effect would pass too: the apiserver's own
    // count of calls that failed open under Ignore proves this Pod went to the dead webhook.
    let failed_open = || {
        apiserver_webhook_count(
            &env,
            "apiserver_admission_webhook_fail_open_count",
            "e2e-down.e2e.test",
        )
    };
    let before = failed_open();
    let pod = eventually(
        "Ignore to admit a Pod after trying the dead webhook",
        30,
        || async {
            let name = format!("ignored-{}", common::free_port());
            let p = create_pod(&c, &ns, pod_json(&name, json!({}))).await.ok()?;
            (failed_open() > before).then_some(p)
        },
    )
    .await;
    assert_eq!(containers(&pod), ["app"], "admitted without the sidecar");

    let _hook2 = register(&env, "e2e-down", "e2e-down", &dead, &ca, "Fail");
    let err = eventually("Fail to refuse the Pod", 30, || async {
        let name = format!("refused-{}", common::free_port());
        match create_pod(&c, &ns, pod_json(&name, json!({}))).await {
            Err(e) => Some(e.to_string()),
            Ok(_) => None,
        }
    })
    .await;
    assert!(err.contains("failed calling webhook"), "{err}");
    unregister(&env, "e2e-down");
}

#[tokio::test]
#[ignore = "needs a cluster: tests/e2e/run"]
async fn a_conflict_is_refused_under_fail_with_our_message_and_warned_under_ignore() {
    let env = env();
    let c = client(&env).await;
    // Under the shipped config (failurePolicy: Ignore): admitted, and kubectl shows why.
    let ns = opted_in(&c, "e2e-conflict").await;
    webhook_in_effect(&c, &ns).await;
    let own = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "own"},
        "spec": {"containers": [{"name": "app", "image": "app:1"},
            {"name": COLLECTOR, "image": "someone-else/collector:0.1"}]}});
    let out = kubectl(
        &env,
        &["apply", "-n", &ns, "-f", "-"],
        Some(&own.to_string()),
    );
    ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Warning: sidecar-injector: not injected (conflict)"),
        "{stderr}"
    );

    // A second webhook whose config says failurePolicy: Fail refuses it with our message.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir(&config).unwrap();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/base/config");
    let settings = std::fs::read_to_string(shipped.join("config.yaml"))
        .unwrap()
        .replace("failurePolicy: Ignore", "failurePolicy: Fail")
        .replace(
            "namespaceLabel: sidecar-injection",
            "namespaceLabel: e2e-strict",
        );
    std::fs::write(config.join("config.yaml"), settings).unwrap();
    std::fs::copy(shipped.join("mutate.yaml"), config.join("mutate.yaml")).unwrap();
    let log = dir.path().join("strict.log");
    let (mut strict, port, _) = serve_beside(
        &env,
        &log,
        &["--config".into(), config.display().to_string()],
        &[],
    );
    let url = format!("https://127.0.0.1:{port}/mutate");
    let _hook3 = register(
        &env,
        "e2e-strict",
        "e2e-strict",
        &url,
        &ca_bundle(&env),
        "Fail",
    );
    let strict_ns = namespace(&c, "e2e-strict", json!({"e2e-strict": "on"})).await;
    let err = eventually("the strict webhook to refuse the conflict", 60, || async {
        let name = format!("own-{}", common::free_port());
        let mut pod = own.clone();
        pod["metadata"]["name"] = name.into();
        match create_pod(&c, &strict_ns, pod).await {
            Err(e) if e.to_string().contains("sidecar-injector") => Some(e.to_string()),
            _ => None,
        }
    })
    .await;
    assert!(
        err.contains(COLLECTOR),
        "our message names the container: {err}"
    );
    unregister(&env, "e2e-strict");
    let _ = strict.kill();
    let _ = strict.wait();
}

/// A minimal mutating webhook that is not us: it adds a container named `second` to every
/// Pod it is asked about, over TLS with the webhook's certificate. Returns its port.
async fn second_webhook(env: &Env) -> u16 {
    use axum::routing::post;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::service::TowerToHyperService;
    let certs = env.work.join("certs");
    let pem = |f: &str| std::fs::read(certs.join(f)).expect("the webhook's certificate");
    let chain = rustls_pki_certs(&pem("tls.crt"));
    let key = {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::PrivateKeyDer::from_pem_slice(&pem("tls.key")).expect("a key")
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("a TLS config");
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(tls));
    let app = axum::Router::new().route(
        "/mutate",
        post(|body: axum::Json<Value>| async move {
            use base64::Engine as _;
            let patch = json!([{"op": "add", "path": "/spec/containers/-",
                "value": {"name": "second", "image": "busybox:1.36"}}]);
            let has = body.0["request"]["object"]["spec"]["containers"]
                .as_array()
                .is_some_and(|cs| cs.iter().any(|c| c["name"] == "second"));
            let mut response = json!({"uid": body.0["request"]["uid"], "allowed": true});
            if !has {
                response["patchType"] = "JSONPatch".into();
                response["patch"] = base64::engine::general_purpose::STANDARD
                    .encode(patch.to_string())
                    .into();
            }
            axum::Json(json!({"apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview", "response": response}))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), TowerToHyperService::new(app))
                        .await;
                }
            });
        }
    });
    port
}

fn rustls_pki_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .expect("PEM certificates")
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a cluster: tests/e2e/run"]
async fn a_later_webhook_changing_the_pod_reinvokes_us_and_nothing_is_added_twice() {
    let env = env();
    let c = client(&env).await;
    // Configurations are called in name order: this one after ours.
    let port = second_webhook(&env).await;
    let url = format!("https://127.0.0.1:{port}/mutate");
    let _hook4 = register(
        &env,
        "zz-e2e-second",
        "e2e-second",
        &url,
        &ca_bundle(&env),
        "Fail",
    );
    let ns = namespace(
        &c,
        "e2e-reinvoke",
        json!({"sidecar-injection": "enabled", "e2e-second": "on"}),
    )
    .await;
    let (pod, calls) = eventually("both webhooks to mutate", 60, || async {
        let name = format!("twice-{}", common::free_port());
        let before = our_webhook_calls(&env);
        let p = create_pod(&c, &ns, pod_json(&name, json!({}))).await.ok()?;
        let calls = our_webhook_calls(&env) - before;
        containers(&p)
            .contains(&"second".to_owned())
            .then_some((p, calls))
    })
    .await;
    // The apiserver's own count: called again because the later webhook changed the Pod
    // (the ServiceAccount plugin alone no longer makes it call us twice: the cost test).
    assert_eq!(
        calls, 2.0,
        "the apiserver called us {calls} times for this Pod"
    );
    let all = containers(&pod);
    assert!(injected(&pod), "{all:?}");
    assert_eq!(
        all.iter().filter(|n| *n == COLLECTOR).count(),
        1,
        "the collector once: {all:?}"
    );
    let spec = pod.spec.clone().unwrap();
    let vols: Vec<String> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.clone())
        .collect();
    let mut unique = vols.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), vols.len(), "no volume twice: {vols:?}");
    // We were called again after the second webhook changed the Pod, and added nothing.
    let name = pod.metadata.name.clone().unwrap();
    let log = std::fs::read_to_string(env.work.join("webhook.log")).unwrap_or_default();
    let ours: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("\"pod\":\"{name}\"")))
        .collect();
    assert_eq!(
        ours.len(),
        2,
        "called twice for {name}:\n{}",
        ours.join("\n")
    );
    assert!(
        ours[0].contains("\"reason\":\"injected\"")
            && ours[1].contains("\"reason\":\"already_injected\""),
        "{ours:?}"
    );
    unregister(&env, "zz-e2e-second");
}

#[tokio::test]
#[ignore = "needs a cluster: tests/e2e/run"]
async fn certificate_rotation_while_200_pods_are_created_loses_none() {
    let env = env();
    let c = client(&env).await;
    let ns = opted_in(&c, "e2e-rotate").await;
    webhook_in_effect(&c, &ns).await;
    let certs = env.work.join("certs");
    let port: u16 = std::env::var("E2E_WEBHOOK_PORT")
        .expect("E2E_WEBHOOK_PORT")
        .parse()
        .expect("a port");
    // The serial of the certificate the webhook serves now, as a client sees it.
    let served = move || -> String {
        let hello = Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
            .args(["-servername", "127.0.0.1"])
            .stdin(std::process::Stdio::null())
            .output()
            .map(|o| o.stdout)
            .unwrap_or_default();
        let mut x509 = Command::new("openssl")
            .args(["x509", "-noout", "-serial"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("openssl");
        if let Some(mut stdin) = x509.stdin.take() {
            use std::io::Write as _;
            let _ = stdin.write_all(&hello);
        }
        x509.wait_with_output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    let first = served();
    assert!(
        first.starts_with("serial="),
        "the served certificate: {first:?}"
    );
    // Three rotations while Pods are created: each starts 40 creations after the last one
    // was served (the first after 40), writes a
    // new pair from the same CA beside the old one and renames it over it (what a Secret
    // volume's ..data swap amounts to), then waits until the webhook serves it. The phase
    // counter tells each creation whether it came before, during or after each rotation.
    let created = Arc::new(AtomicUsize::new(0));
    let phase = Arc::new(AtomicUsize::new(0)); // 2r+1 while rotation r is under way, 2r+2 after
    let rotator = {
        let (created, phase, dir) = (created.clone(), phase.clone(), certs.clone());
        std::thread::spawn(move || {
            let mut serials = vec![first];
            let mut next = 40;
            for r in 0..3 {
                while created.load(Ordering::SeqCst) < next {
                    std::thread::sleep(Duration::from_millis(20));
                }
                phase.store(2 * r + 1, Ordering::SeqCst);
                let tmp = dir.join("next");
                let _ = std::fs::remove_dir_all(&tmp);
                std::fs::create_dir_all(&tmp).unwrap();
                for f in ["ca.crt", "ca.key"] {
                    std::fs::copy(dir.join(f), tmp.join(f)).unwrap();
                }
                let out = Command::new(common::bin())
                    .args(["certs", "--san", "127.0.0.1", "--out"])
                    .arg(&tmp)
                    .output()
                    .unwrap();
                assert!(out.status.success());
                std::fs::rename(tmp.join("tls.key"), dir.join("tls.key.next")).unwrap();
                std::fs::rename(tmp.join("tls.crt"), dir.join("tls.crt")).unwrap();
                std::fs::rename(dir.join("tls.key.next"), dir.join("tls.key")).unwrap();
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let now = served();
                    if now.starts_with("serial=") && Some(&now) != serials.last() {
                        serials.push(now);
                        break;
                    }
                    assert!(Instant::now() < deadline, "rotation {r} was never served");
                    std::thread::sleep(Duration::from_millis(50));
                }
                phase.store(2 * r + 2, Ordering::SeqCst);
                next = created.load(Ordering::SeqCst) + 40;
            }
            serials
        })
    };
    let (mut failed, mut uninjected) = (Vec::new(), 0);
    let mut by_phase = [0usize; 7];
    let mut i = 0;
    // 200 creations at least, and on until the last rotation is served and followed by some.
    while i < 200 || phase.load(Ordering::SeqCst) < 6 || by_phase[6] < 20 {
        assert!(i < 2000, "the rotations never finished");
        let at_start = phase.load(Ordering::SeqCst);
        // Admission is what is tested: the Pods stay Pending (no node has this label), so
        // kwok is not kept busy for the tests after this one.
        let mut pod = pod_json(&format!("p{i}"), json!({}));
        pod["spec"]["nodeSelector"] = json!({"e2e-pending": "true"});
        match create_pod(&c, &ns, pod).await {
            Ok(p) if injected(&p) => {}
            Ok(_) => uninjected += 1,
            Err(e) => failed.push(e.to_string()),
        }
        // A creation that started in a phase and ended in another overlapped a rotation.
        let at_end = phase.load(Ordering::SeqCst);
        by_phase[if at_start == at_end {
            at_start
        } else {
            at_start | 1
        }] += 1;
        i += 1;
        created.fetch_add(1, Ordering::SeqCst);
    }
    let serials = rotator.join().expect("the rotations");
    println!(
        "rotation: {i} created, {} failed, {uninjected} not injected; creations by phase \
         (before, during 1, between, during 2, between, during 3, after): {by_phase:?}; served serials {serials:?}",
        failed.len()
    );
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(uninjected, 0, "every Pod injected through the rotations");
    assert_eq!(
        serials.len(),
        4,
        "three new certificates served: {serials:?}"
    );
    for (p, n) in by_phase.iter().enumerate() {
        assert!(
            *n > 0,
            "no creation in phase {p}: creations must come before, during and after each rotation {by_phase:?}"
        );
    }
}

/// The apiserver's view of our cost: 500 Pods created where the webhook is called and 500
/// where it is not (a namespace its selector does not match), in one run. Prints the client's
/// latency per creation and the apiserver's own histogram for our webhook (BENCHMARKS.md).
#[tokio::test]
#[ignore = "needs a cluster: tests/e2e/run"]
async fn the_apiserver_s_view_of_our_cost_over_500_pod_creations() {
    let env = env();
    let c = client(&env).await;
    let with = opted_in(&c, "e2e-cost-with").await;
    let without = namespace(&c, "e2e-cost-without", json!({})).await;
    webhook_in_effect(&c, &with).await;
    let pending = |name: String| {
        let mut pod = pod_json(&name, json!({}));
        pod["spec"]["nodeSelector"] = json!({"e2e-pending": "true"});
        pod
    };
    let calls_before = our_webhook_calls(&env);
    let mut times: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    // Interleaved, so the machine's noise falls on both.
    for i in 0..500 {
        for (k, ns) in [&with, &without].into_iter().enumerate() {
            let t = Instant::now();
            let pod = create_pod(&c, ns, pending(format!("c{i}")))
                .await
                .expect("created");
            times[k].push(t.elapsed());
            assert_eq!(injected(&pod), k == 0, "{ns}");
        }
    }
    let stat = |v: &mut Vec<Duration>| {
        v.sort();
        let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
        (at(0.5), at(0.99))
    };
    // The apiserver's own count of its calls to us: one per Pod. A sidecar without the
    // ServiceAccount token mount made the apiserver's ServiceAccount plugin change the Pod
    // after our patch, and so call us a second time.
    let calls = our_webhook_calls(&env) - calls_before;
    let per_pod = calls / times[0].len() as f64;
    println!(
        "cost: {calls} webhook calls for {} injected Pod creations: {per_pod:.2} per Pod",
        times[0].len()
    );
    assert!(
        per_pod < 1.01,
        "the apiserver called us {per_pod:.2} times per Pod, want 1"
    );
    // A second call must not try to overwrite the first one's audit annotations either.
    let apiserver_log =
        std::fs::read_to_string(env.work.join("cluster/controlplane.log")).unwrap_or_default();
    let overwrites: Vec<&str> = apiserver_log
        .lines()
        .filter(|l| {
            l.contains("not allowed to be overwritten") && l.contains("sidecar-injector.io")
        })
        .collect();
    assert!(
        overwrites.is_empty(),
        "the apiserver refused {} audit annotation overwrites, e.g. {}",
        overwrites.len(),
        overwrites.first().unwrap_or(&"")
    );
    let (w50, w99) = stat(&mut times[0]);
    let (o50, o99) = stat(&mut times[1]);
    println!(
        "cost: Pod creation with the webhook p50 {w50:?} p99 {w99:?}; without p50 {o50:?} \
         p99 {o99:?}; added p50 {:?} p99 {:?}",
        w50.saturating_sub(o50),
        w99.saturating_sub(o99)
    );
    let metrics = ok(&kubectl(&env, &["get", "--raw", "/metrics"], None));
    let ours: Vec<&str> = metrics
        .lines()
        .filter(|l| {
            l.starts_with("apiserver_admission_webhook_admission_duration_seconds")
                && l.contains("name=\"inject.sidecar-injector.io\"")
                && (l.contains("_sum")
                    || l.contains("_count")
                    || l.contains("le=\"0.005\"")
                    || l.contains("le=\"0.025\""))
        })
        .collect();
    println!(
        "apiserver's histogram for our webhook:\n{}",
        ours.join("\n")
    );
    assert!(!ours.is_empty(), "the apiserver measured our webhook");
}

/// How many times the apiserver has called our webhook so far, by its own counter
/// (`apiserver_admission_webhook_admission_duration_seconds_count`, summed over its labels).
fn our_webhook_calls(env: &Env) -> f64 {
    apiserver_webhook_count(
        env,
        "apiserver_admission_webhook_admission_duration_seconds_count",
        "inject.sidecar-injector.io",
    )
}

/// An apiserver counter about one webhook, summed over its other labels.
fn apiserver_webhook_count(env: &Env, metric: &str, webhook: &str) -> f64 {
    let metrics = ok(&kubectl(env, &["get", "--raw", "/metrics"], None));
    metrics
        .lines()
        .filter(|l| {
            l.starts_with(&format!("{metric}{{")) && l.contains(&format!("name=\"{webhook}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

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

fn env_value(pod: &Pod, container: &str, var: &str) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let c = spec.containers.iter().find(|c| c.name == container)?;
    c.env
        .as_ref()?
        .iter()
        .find(|e| e.name == var)?
        .value
        .clone()
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

/// Points the shipped webhook back at the suite's serve when dropped.
struct RestoreUrl(u16);

impl Drop for RestoreUrl {
    fn drop(&mut self) {
        let out = patch_url(&env(), self.0);
        if !out.status.success() {
            eprintln!(
                "restoring the webhook URL: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Points the shipped webhook configuration at `port` (the live webhook, or nothing).
fn webhook_url(env: &Env, port: u16) {
    ok(&patch_url(env, port));
}

fn patch_url(env: &Env, port: u16) -> Output {
    let patch = json!([{"op": "replace", "path": "/webhooks/0/clientConfig/url",
        "value": format!("https://127.0.0.1:{port}/mutate")}]);
    kubectl(
        env,
        &[
            "patch",
            "mutatingwebhookconfiguration",
            "sidecar-injector",
            "--type=json",
            "-p",
            &patch.to_string(),
        ],
        None,
    )
}

/// `sidecar-injector check` with the served config, against the e2e cluster.
fn check(env: &Env, args: &[&str]) -> (Option<i32>, Vec<Value>, String) {
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/base/config");
    let mut all = vec![
        "check",
        "--config",
        config.to_str().unwrap(),
        "--kubeconfig",
        env.kubeconfig.to_str().unwrap(),
        "-o",
        "json",
    ];
    all.extend_from_slice(args);
    let out = common::run(common::bin(), &all, None);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let reports: Vec<Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("check's JSON: {e}: {stderr}"));
    (out.status.code(), reports, stderr)
}

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

    let events = ok(&kubectl(
        &env,
        &["get", "events", "-n", &ns, "-o", "json"],
        None,
    ));
    let events: Value = serde_json::from_str(&events).unwrap();
    let repair: Vec<&Value> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["reason"] == "SidecarRepair" && e["involvedObject"]["name"] == "web")
        .collect();
    assert_eq!(repair.len(), 1, "one Event for the one restart: {repair:?}");
}

/// The Events of a namespace as (reason, regarding kind, regarding name, note).
fn events(env: &Env, ns: &str) -> Vec<(String, String, String, String)> {
    let out = ok(&kubectl(
        env,
        &["get", "events.events.k8s.io", "-n", ns, "-o", "json"],
        None,
    ));
    let list: Value = serde_json::from_str(&out).unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            (
                s(&e["reason"]),
                s(&e["regarding"]["kind"]),
                s(&e["regarding"]["name"]),
                s(&e["note"]),
            )
        })
        .collect()
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

async fn metric(port: u16, name: &str) -> f64 {
    let text = match reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
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

/// Peak and current RSS of a process, in KiB (`VmHWM`, `VmRSS`).
fn rss_kib(pid: &str) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Issue "Cluster-aware": 10,000 Pods (created through the apiserver, injected, left
/// Pending): the webhook's RSS with its namespace watch and Pod surveys running, and how long
/// `check -A` takes (BENCHMARKS.md). Memory is asserted; time is only printed.
#[tokio::test]
#[ignore = "needs a cluster: tests/e2e/run"]
async fn with_ten_thousand_pods_the_webhook_stays_small_and_check_answers() {
    use futures::StreamExt;
    let env = env();
    let c = client(&env).await;
    let pid = std::env::var("E2E_WEBHOOK_PID").expect("E2E_WEBHOOK_PID");
    let metrics_port: u16 = std::env::var("E2E_METRICS_PORT").unwrap().parse().unwrap();
    let ns = opted_in(&c, "e2e-10k").await;
    webhook_in_effect(&c, &ns).await;
    println!(
        "10k: webhook RSS (peak, now) before: {:?} KiB",
        rss_kib(&pid)
    );
    let started = Instant::now();
    let created = futures::stream::iter(0..10_000)
        .map(|i| {
            let c = c.clone();
            let ns = ns.clone();
            async move {
                let mut pod = pod_json(&format!("p{i:05}"), json!({}));
                pod["spec"]["nodeSelector"] = json!({"e2e-pending": "true"});
                create_pod(&c, &ns, pod).await.is_ok()
            }
        })
        .buffer_unordered(32)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await;
    println!(
        "10k: {created} Pods created in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(created, 10_000);
    println!(
        "10k: webhook RSS (peak, now) after the creations: {:?} KiB",
        rss_kib(&pid)
    );
    // Wait for a survey that saw them all (the webhook surveys every 60 s).
    eventually("a survey of the 10,000 Pods", 150, || async {
        (metric(metrics_port, "sidecar_injector_pods{state=\"current\"}").await >= 10_000.0)
            .then_some(())
    })
    .await;
    let (peak, now) = rss_kib(&pid);
    println!(
        "10k: webhook RSS peak {} KiB ({:.1} MiB), now {} KiB",
        peak,
        peak as f64 / 1024.0,
        now
    );
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/base/config");
    let mut times = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let out = common::run(
            common::bin(),
            &[
                "check",
                "-A",
                "-o",
                "json",
                "--config",
                config.to_str().unwrap(),
                "--kubeconfig",
                env.kubeconfig.to_str().unwrap(),
            ],
            None,
        );
        times.push(t.elapsed().as_secs_f64());
        let reports: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        assert!(reports.len() >= 10_000, "{}", reports.len());
    }
    println!("10k: check -A took {times:.2?} s");
    assert!(
        peak < 64 * 1024,
        "the webhook's peak RSS {peak} KiB is over 64 MiB"
    );
    let api: Api<Namespace> = Api::all(c.clone());
    let _ = api.delete(&ns, &DeleteParams::default()).await;
}
