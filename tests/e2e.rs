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
//!
//! The tests are in modules by theme (tests/e2e/*.rs); this file holds the helpers they
//! share, and the 10,000-Pod test, which runs last (tests run in name order, and a name with
//! no module sorts after `secrets::`).

#[path = "e2e/admission.rs"]
mod admission;
#[path = "e2e/certificates.rs"]
mod certificates;
mod common;
#[path = "e2e/cost.rs"]
mod cost;
#[path = "e2e/day_one.rs"]
mod day_one;
#[path = "e2e/doctor_images.rs"]
mod doctor_images;
#[path = "e2e/drift.rs"]
mod drift;
#[path = "e2e/helm.rs"]
mod helm;
#[path = "e2e/images.rs"]
mod images;
#[path = "e2e/in_cluster.rs"]
mod in_cluster;
#[path = "e2e/injection.rs"]
mod injection;
#[path = "e2e/kubelet.rs"]
mod kubelet;
#[path = "e2e/lease.rs"]
mod lease;
#[path = "e2e/namespaces.rs"]
mod namespaces;
#[path = "e2e/rbac.rs"]
mod rbac;
#[path = "e2e/real_node.rs"]
mod real_node;
#[path = "e2e/restart.rs"]
mod restart;
#[path = "e2e/secrets.rs"]
mod secrets;

use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
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
    client_at(&env.kubeconfig).await
}

/// A client as the kubeconfig at `path` authenticates.
async fn client_at(path: &std::path::Path) -> Client {
    let kc = Kubeconfig::read_from(path).expect("the kubeconfig");
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

/// Waits at most `secs` for the Secret `name` to be gone from `api` (a copy deleted).
async fn secret_gone(what: &str, secs: u64, api: &Api<Secret>, name: &str) {
    eventually(what, secs, || async {
        api.get_opt(name).await.ok()?.is_none().then_some(())
    })
    .await
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

/// Creates Pods in `ns` (30 s at most) until one is admitted, and returns it: for a webhook
/// that is still starting or whose caBundle is still being set.
async fn first_admitted(client: &Client, ns: &str, what: &str) -> Pod {
    eventually(what, 30, || async {
        create_pod(
            client,
            ns,
            pod_json(&format!("p-{}", common::free_port()), json!({})),
        )
        .await
        .ok()
    })
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

/// The token Secret's copy in `ns`, as the suite's injector keeps it (its source created
/// once): `check` calls an injected Pod whose Secret is gone `failing`.
async fn token_copy_in(env: &Env, c: &Client, ns: &str) {
    secrets::token_source_once(env).await;
    token_copy_made(c, ns).await;
}

/// Waits for the copy of the token Secret in `ns`.
async fn token_copy_made(c: &Client, ns: &str) {
    let copies: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(c.clone(), ns);
    eventually("the token Secret's copy", 30, || async {
        copies
            .get_opt("bitbucket-pipelines-metrics")
            .await
            .ok()
            .flatten()
    })
    .await;
}

/// `sidecar-injector check` with the shipped config, against the e2e cluster.
fn check(env: &Env, args: &[&str]) -> (Option<i32>, Vec<Value>, String) {
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/base/config");
    let mut all = vec!["--config", config.to_str().unwrap()];
    all.extend_from_slice(args);
    check_with(env, &all)
}

/// `sidecar-injector check -o json` with `args`, against the e2e cluster (with no
/// `--config` among them: the installed ConfigMap): exit code, records, stderr.
fn check_with(env: &Env, args: &[&str]) -> (Option<i32>, Vec<Value>, String) {
    let mut all = vec![
        "check",
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

async fn metric(port: u16, name: &str) -> f64 {
    let found = metric_opt(port, name).await;
    found.unwrap_or_else(|| panic!("no series {name} on 127.0.0.1:{port}/metrics"))
}

/// [`metric`], `None` while the series is absent (or `/metrics` does not answer): for
/// waiting until it appears. A test that asserts a value uses [`metric`], which fails when
/// the series is absent instead of reading it as 0.
async fn metric_opt(port: u16, name: &str) -> Option<f64> {
    metrics_text(&format!("127.0.0.1:{port}"))
        .await
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The text of `/metrics` at `addr` (HOST:PORT); empty when it does not answer.
async fn metrics_text(addr: &str) -> String {
    match reqwest::get(format!("http://{addr}/metrics")).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// The subjectAltName entries of the first certificate of a PEM text, as x509-parser shows
/// them (`DNSName(…)`, `IPAddress(…)` with the address as its bytes).
fn sans_of(pem: &[u8]) -> Vec<String> {
    let chain = rustls_pki_certs(pem);
    let (_, cert) =
        x509_parser::parse_x509_certificate(chain.first().expect("a certificate in the PEM"))
            .unwrap();
    cert.subject_alternative_name()
        .unwrap()
        .map(|s| {
            s.value
                .general_names
                .iter()
                .map(|n| n.to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The certificates of a PEM text.
fn rustls_pki_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .expect("PEM certificates")
}

/// Now, as RFC 3339 to the second, for the times a status carries.
fn rfc3339_now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .unwrap()
        .to_string()
}

/// The last `n` lines of a log file.
fn tail(path: &std::path::Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
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
        (metric_opt(metrics_port, "sidecar_injector_pods{state=\"current\"}").await? >= 10_000.0)
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
