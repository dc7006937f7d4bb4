//! Pods that run (issue 34): a real kubelet and containerd, and the injector as a real Pod.
//!
//! `tests/e2e/real-node test` runs these, inside namespaces of their own, against a cluster
//! whose only node is `real-node`: kubelet v1.34.4 built from k8s.io/kubernetes, Debian's
//! containerd 1.6 and runc, the CNI bridge. Its images (tests/e2e/images/build) are imported,
//! never pulled: the collector's stand-in under the default template's exact name reports
//! what it found (token, cgroup files, docker.sock, Pod name) on its log, and the app reports
//! the agent its JAVA_TOOL_OPTIONS names.
//!
//! The injector is the image `tests/image/build` makes, installed with `helm upgrade
//! --install`: default values except the image and a nodeSelector (and, where a test says so,
//! its config), so the kubelet runs its probes, sends its SIGTERMs, and the apiserver calls it
//! through its Service. Every assertion is what `kubectl get pods` or `kubectl logs` shows.

use super::day_one::{doctor_with, failed};
use super::secrets::token_secret;
use super::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStatus, Secret};
use std::collections::BTreeMap;

const NODE: &str = "real-node";
const APP: &str = "localhost/sidecar-e2e/app:1";
/// The release, its namespace, and the webhook configuration's name.
const RELEASE: &str = "sidecar-injector";
/// An opted-in namespace whose dry-run Pods show which config the injector serves.
const PROBE_NS: &str = "rn-probe";

#[path = "real_node/injector.rs"]
mod injector;

/// The shipped config.yaml with `from` replaced by `to` (which must change it), and
/// `values.logLevel` set to `marker`: a dry-run Pod shows when the injector serves it.
fn settings_with(from: &str, to: &str, marker: &str) -> String {
    let shipped = std::fs::read_to_string(helm::shipped().join("config.yaml")).unwrap();
    let changed = shipped
        .replace(from, to)
        .replace("logLevel: INFO", &format!("logLevel: {marker}"));
    assert!(
        changed.contains(to) && changed.contains(marker),
        "{from} -> {to}"
    );
    changed
}

/// The injector as the chart installs it, on the real node: `helm upgrade --install` with
/// default values except the image and a nodeSelector, then `settings` (config.yaml) and
/// `templates` (name, text) when given, and `extra` values. Waits for the Deployment (helm
/// --wait: the kubelet's readiness probes), the token Secret in the release's namespace,
/// and a dry-run Pod in an opted-in namespace that satisfies `served`.
async fn install(
    env: &Env,
    c: &Client,
    settings: Option<&str>,
    templates: &[(&str, &str)],
    extra: &[&str],
    served: impl Fn(&Pod) -> bool,
) {
    let dir = tempfile::tempdir().unwrap();
    let chart = helm::chart();
    let mut args: Vec<String> = [
        "upgrade",
        "--install",
        RELEASE,
        chart.to_str().unwrap(),
        "--namespace",
        RELEASE,
        "--create-namespace",
        "--wait",
        "--timeout",
        "3m",
        "--set",
        "image.repository=localhost/sidecar-injector",
        "--set",
        "image.tag=test-amd64",
        "--set",
        "nodeSelector.sidecar-e2e/node=real",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(settings) = settings {
        let file = dir.path().join("config.yaml");
        std::fs::write(&file, settings).unwrap();
        args.extend([
            "--set-file".into(),
            format!("config.settings={}", file.display()),
        ]);
    }
    for (name, text) in templates {
        let file = dir.path().join(format!("{name}.mutate.yaml"));
        std::fs::write(&file, text).unwrap();
        args.extend([
            "--set-file".into(),
            format!("config.templates.{name}={}", file.display()),
        ]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&helm::helm(env, &args));
    let secrets: Api<Secret> = Api::namespaced(c.clone(), RELEASE);
    if secrets.get_opt(secrets::TOKEN).await.unwrap().is_none() {
        secrets
            .create(
                &PostParams::default(),
                &token_secret(RELEASE, "real-node-token"),
            )
            .await
            .unwrap();
    }
    let namespaces: Api<Namespace> = Api::all(c.clone());
    if namespaces.get_opt(PROBE_NS).await.unwrap().is_none() {
        std::mem::forget(opted_in(c, PROBE_NS).await); // kept for the phase's later tests
    }
    dry_run_until(c, PROBE_NS, "the injector to serve its new config", served).await;
}

/// The injector with the shipped config changed by [`settings_with`]`(from, to, marker)`.
async fn install_changed(env: &Env, c: &Client, (from, to, marker): (&str, &str, &str)) {
    let settings = settings_with(from, to, marker);
    install(env, c, Some(&settings), &[], &[], |p| {
        env_value(p, COLLECTOR, "LOG_LEVEL").as_deref() == Some(marker)
    })
    .await;
}

/// The injector with its defaults (the image and nodeSelector aside).
async fn install_defaults(env: &Env, c: &Client) {
    install_defaults_with(env, c, &[]).await;
}

/// [`install_defaults`], with `extra` chart values.
async fn install_defaults_with(env: &Env, c: &Client, extra: &[&str]) {
    install(env, c, None, &[], extra, |p| {
        injected(p) && env_value(p, COLLECTOR, "LOG_LEVEL").as_deref() == Some("INFO")
    })
    .await;
}

/// A Deployment of the app on the real node.
fn app_deployment(env: &Env, ns: &str, name: &str, replicas: u32) {
    let d = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"terminationGracePeriodSeconds": 5, "containers": [
                    {"name": "app", "image": APP, "imagePullPolicy": "IfNotPresent"}]}}}});
    ok(&kubectl(env, &["apply", "-f", "-"], Some(&d.to_string())));
}

/// The status of container `name` of `pod`, native sidecars (init containers) included.
fn status<'a>(pod: &'a Pod, name: &str) -> Option<&'a ContainerStatus> {
    let s = pod.status.as_ref()?;
    s.container_statuses
        .iter()
        .flatten()
        .chain(s.init_container_statuses.iter().flatten())
        .find(|c| c.name == name)
}

fn ready(pod: &Pod, name: &str) -> bool {
    status(pod, name).is_some_and(|s| s.ready)
}

fn waiting_reason(pod: &Pod, name: &str) -> Option<String> {
    status(pod, name)?
        .state
        .as_ref()?
        .waiting
        .as_ref()?
        .reason
        .clone()
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

/// Polls (every 100 ms, `secs` at most) until `n` Pods with `selector` in `ns` are Running
/// with every container Ready; returns them, and for each the time from when it was first
/// seen to when its collector was first seen Ready.
async fn running(
    c: &Client,
    ns: &str,
    selector: &str,
    n: usize,
    secs: u64,
) -> (Vec<Pod>, Vec<Duration>) {
    running_with(c, ns, selector, n, secs, COLLECTOR).await
}

/// [`running`], timing container `tracked` (which must be Ready too) in place of the collector.
async fn running_with(
    c: &Client,
    ns: &str,
    selector: &str,
    n: usize,
    secs: u64,
    tracked: &str,
) -> (Vec<Pod>, Vec<Duration>) {
    let api: Api<Pod> = Api::namespaced(c.clone(), ns);
    let lp = ListParams::default().labels(selector);
    let mut seen: BTreeMap<String, Instant> = BTreeMap::new();
    let mut sidecar_ready: BTreeMap<String, Duration> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let pods = api.list(&lp).await.unwrap().items;
        for p in &pods {
            let name = p.metadata.name.clone().unwrap_or_default();
            let first = *seen.entry(name.clone()).or_insert_with(Instant::now);
            if ready(p, tracked) {
                sidecar_ready.entry(name).or_insert_with(|| first.elapsed());
            }
        }
        let all_ready = |p: &&Pod| {
            phase(p) == "Running"
                && p.status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .is_some_and(|cs| cs.iter().all(|c| c.ready))
                && ready(p, tracked)
        };
        let done: Vec<Pod> = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(all_ready)
            .cloned()
            .collect();
        if done.len() >= n {
            let times = done
                .iter()
                .filter_map(|p| sidecar_ready.get(p.metadata.name.as_deref().unwrap_or_default()))
                .copied()
                .collect();
            return (done, times);
        }
        if Instant::now() > deadline {
            let states: Vec<String> = pods
                .iter()
                .map(|p| {
                    format!(
                        "{} {}: {:?}",
                        p.metadata.name.as_deref().unwrap_or_default(),
                        phase(p),
                        p.status.as_ref().map(|s| (
                            &s.conditions,
                            &s.init_container_statuses,
                            &s.container_statuses
                        ))
                    )
                })
                .collect();
            panic!(
                "{n} Pods of {selector} in {ns} not Running and Ready within {secs} s: {states:#?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `kubectl logs` of one container.
fn logs(env: &Env, ns: &str, pod: &str, container: &str) -> String {
    ok(&kubectl(
        env,
        &["logs", "-n", ns, pod, "-c", container],
        None,
    ))
}

/// The collector's report on its log, once it has written all of it (30 s at most).
async fn collector_report(env: &Env, ns: &str, pod: &str) -> String {
    eventually("the collector's report", 30, || async {
        let l = logs(env, ns, pod, COLLECTOR);
        l.contains("collector: pod ").then_some(l)
    })
    .await
}

/// The p-th percentile (0..=100) of `times`, nearest rank.
fn percentile(times: &[Duration], p: usize) -> Duration {
    let mut t = times.to_vec();
    t.sort();
    t[((t.len() * p).div_ceil(100)).clamp(1, t.len()) - 1]
}

fn pod_name(p: &Pod) -> &str {
    p.metadata.name.as_deref().unwrap_or_default()
}

/// The acceptance test of the mission on a real node: a Deployment in an opted-in namespace,
/// every Pod Running with the collector Ready beside the app; the collector saw its token
/// (the Secret the injector propagated), read cgroup files through its mount, its Pod's name
/// and namespace; on this containerd node the Docker socket is not mounted and the status
/// annotation says why. The injector keeps its self-managed certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real node: tests/e2e/real-node test"]
async fn real_node_collector_runs_beside_the_app() {
    let env = env();
    let c = client(&env).await;
    install_defaults(&env, &c).await;
    let ns = opted_in(&c, "rn-collector").await;
    token_copy_made(&c, &ns).await;
    let replicas = 6;
    app_deployment(&env, &ns, "web", replicas);
    let (pods, times) = running(&c, &ns, "app=web", replicas as usize, 180).await;
    for pod in &pods {
        let name = pod_name(pod);
        assert_eq!(
            pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
            Some(NODE)
        );
        assert!(injected(pod), "{name}");
        let said = collector_report(&env, &ns, name).await;
        assert!(said.contains("collector: token set ("), "{name}: {said}");
        let cgroup_files: usize = said
            .lines()
            .find_map(|l| l.strip_prefix("collector: cgroup files read: "))
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{name}: no cgroup line: {said}"));
        assert!(cgroup_files >= 1, "{name}: {said}");
        assert!(
            said.contains("collector: docker.sock absent"),
            "{name}: {said}"
        );
        assert!(
            said.contains(&format!("collector: pod {ns}/{name}")),
            "{name}: {said}"
        );
        let note = &pod.metadata.annotations.as_ref().unwrap()[STATUS];
        assert!(
            note.contains("/var/run/docker.sock not mounted")
                && note.contains("1 of 1 schedulable Linux nodes run no Docker"),
            "{name}: {note}"
        );
        assert!(logs(&env, &ns, name, "app").contains("app: running"));
    }
    // The injector's own Pods: Ready on the real node, with the certificate they made.
    let injectors: Api<Pod> = Api::namespaced(c.clone(), RELEASE);
    let own = injectors
        .list(&ListParams::default().labels("app.kubernetes.io/name=sidecar-injector"))
        .await
        .unwrap()
        .items;
    let own: Vec<&Pod> = own
        .iter()
        .filter(|p| ready(p, "sidecar-injector"))
        .collect();
    assert_eq!(own.len(), 2, "the chart's 2 replicas, Ready");
    let tls: Api<Secret> = Api::namespaced(c.clone(), RELEASE);
    let tls = tls.get("sidecar-injector-tls").await.unwrap();
    assert!(tls.data.as_ref().is_some_and(|d| d.contains_key("tls.crt")));
    println!(
        "RESULT real_node pods={} sidecar_ready_p50_ms={} sidecar_ready_p95_ms={}",
        times.len(),
        percentile(&times, 50).as_millis(),
        percentile(&times, 95).as_millis()
    );
}

/// The node's /var/run/docker.sock is a unix socket and `mountDockerSocket: true`: the
/// collector finds a socket at the path it reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real node: tests/e2e/real-node test"]
async fn real_node_docker_socket_when_docker() {
    let env = env();
    let c = client(&env).await;
    // The sandbox's /run is its own (tests/e2e/real-node): this socket is the node's only.
    let path = std::path::Path::new("/var/run/docker.sock");
    let _ = std::fs::remove_file(path);
    let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
    struct Gone(&'static std::path::Path);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(self.0);
        }
    }
    let _gone = Gone(path);
    install_changed(
        &env,
        &c,
        ("mountDockerSocket: auto", "mountDockerSocket: true", "WARN"),
    )
    .await;
    let ns = opted_in(&c, "rn-docker").await;
    token_copy_made(&c, &ns).await;
    app_deployment(&env, &ns, "web", 1);
    let (pods, _) = running(&c, &ns, "app=web", 1, 120).await;
    let name = pod_name(&pods[0]);
    let said = collector_report(&env, &ns, name).await;
    assert!(
        said.contains("collector: docker.sock is a socket"),
        "{said}"
    );
    drop(listener);
    install_defaults(&env, &c).await;
}

/// A Job's Pod: the collector is a native sidecar (an init container that restarts Always).
/// The app ends, the kubelet stops the sidecar, and the Job is Complete (seed 003).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real node: tests/e2e/real-node test"]
async fn real_node_job_completes_with_native_sidecar() {
    let env = env();
    let c = client(&env).await;
    install_defaults(&env, &c).await;
    let ns = opted_in(&c, "rn-job").await;
    token_copy_made(&c, &ns).await;
    let job = json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "batch", "namespace": *ns},
        "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never",
            "terminationGracePeriodSeconds": 5,
            "containers": [{"name": "app", "image": APP, "imagePullPolicy": "IfNotPresent",
                "env": [{"name": "APP_SECONDS", "value": "3"}]}]}}}});
    ok(&kubectl(
        &env,
        &["apply", "-f", "-"],
        Some(&job.to_string()),
    ));
    let jobs: Api<Job> = Api::namespaced(c.clone(), &ns);
    eventually("the Job to be Complete", 120, || async {
        let j = jobs.get("batch").await.ok()?;
        let conditions = j.status?.conditions?;
        if let Some(f) = conditions
            .iter()
            .find(|c| c.type_ == "Failed" && c.status == "True")
        {
            panic!("the Job failed: {f:?}");
        }
        conditions
            .iter()
            .any(|c| c.type_ == "Complete" && c.status == "True")
            .then_some(())
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), &ns);
    let pod = pods
        .list(&ListParams::default().labels("job-name=batch"))
        .await
        .unwrap()
        .items
        .remove(0);
    let sidecar = pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .and_then(|i| i.iter().find(|c| c.name == COLLECTOR))
        .expect("the collector as an init container");
    assert_eq!(sidecar.restart_policy.as_deref(), Some("Always"));
    assert_eq!(phase(&pod), "Succeeded");
    let ended = |name: &str| {
        status(&pod, name)
            .and_then(|s| s.state.as_ref())
            .and_then(|s| s.terminated.clone())
            .unwrap_or_else(|| panic!("{name} did not terminate: {pod:?}"))
    };
    let (app, collector) = (ended("app"), ended(COLLECTOR));
    assert_eq!(app.exit_code, 0);
    assert!(
        collector.finished_at.as_ref().map(|t| t.0) >= app.finished_at.as_ref().map(|t| t.0),
        "the sidecar stopped after the app: {collector:?} / {app:?}"
    );
    let said = logs(&env, &ns, pod_name(&pod), COLLECTOR);
    assert!(
        said.contains("collector: token set (") && said.contains("collector: SIGTERM, stopping"),
        "{said}"
    );
}

/// examples/configmaps/apm-agent.yaml as shipped: its init container copies the agent (the
/// image under the example's imageRepository, with its pull Secret propagated) into the
/// shared volume, and the app finds it where JAVA_TOOL_OPTIONS says (seed 004).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real node: tests/e2e/real-node test"]
async fn real_node_apm_agent_copied_by_init_container() {
    let env = env();
    let c = client(&env).await;
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/configmaps/apm-agent.yaml"),
    )
    .unwrap();
    let cm: Value = serde_saphyr::from_str(&example).unwrap();
    let settings = cm["data"]["config.yaml"].as_str().unwrap();
    let template = cm["data"]["apm.mutate.yaml"].as_str().unwrap();
    // The registry's pull Secret the example propagates, in the injector's namespace.
    let auth = json!({"auths": {"registry.corp.example": {"auth": "dXNlcjpwYXNz"}}});
    let pull: Secret = serde_json::from_value(json!({
        "metadata": {"name": "corp-registry"}, "type": "kubernetes.io/dockerconfigjson",
        "stringData": {".dockerconfigjson": auth.to_string()}}))
    .unwrap();
    let namespaces: Api<Namespace> = Api::all(c.clone());
    if namespaces.get_opt(RELEASE).await.unwrap().is_none() {
        install_defaults(&env, &c).await;
    }
    let secrets: Api<Secret> = Api::namespaced(c.clone(), RELEASE);
    if secrets.get_opt("corp-registry").await.unwrap().is_none() {
        secrets.create(&PostParams::default(), &pull).await.unwrap();
    }
    install(&env, &c, Some(settings), &[("apm", template)], &[], |p| {
        init_containers(p).iter().any(|c| c == "apm-agent-init")
    })
    .await;
    let ns = opted_in(&c, "rn-apm").await;
    let copies: Api<Secret> = Api::namespaced(c.clone(), &ns);
    // Right after the upgrade that grants it, the apiserver's ValidatingAdmissionPolicy may
    // still refuse the new name: the injector tries again at its next resync (30 s).
    eventually("the pull Secret's copy", 90, || async {
        copies.get_opt("corp-registry").await.ok().flatten()
    })
    .await;
    app_deployment(&env, &ns, "shop", 1);
    let (mut pods, _) = running_with(&c, &ns, "app=shop", 1, 120, "app").await;
    let pod = pods.remove(0);
    let init = pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .and_then(|i| i.iter().find(|c| c.name == "apm-agent-init"))
        .unwrap();
    assert_eq!(
        init.image.as_deref(),
        Some("registry.corp.example/mirror/agents/java-agent:1.52.0")
    );
    let copied = logs(&env, &ns, pod_name(&pod), "apm-agent-init");
    assert!(
        copied.contains("cp: /agent/. -> /opt/apm/: done"),
        "{copied}"
    );
    let found = logs(&env, &ns, pod_name(&pod), "app");
    assert!(
        found.contains("app: agent /opt/apm/agent.jar found (4096 bytes)"),
        "{found}"
    );
    install_defaults(&env, &c).await;
}

/// `check -n ns` with the installed config: exit code and records.
fn check_installed(env: &Env, ns: &str, extra: &[&str]) -> (Option<i32>, Vec<Value>, String) {
    let mut args = vec!["-n", ns];
    args.extend_from_slice(extra);
    check_with(env, &args)
}

/// Waits until container `name` of the one Pod of `selector` waits with one of `reasons`.
async fn waiting_with(c: &Client, ns: &str, selector: &str, name: &str, reasons: &[&str]) -> Pod {
    let pods: Api<Pod> = Api::namespaced(c.clone(), ns);
    eventually(&format!("{name} waiting with {reasons:?}"), 120, || async {
        let list = pods
            .list(&ListParams::default().labels(selector))
            .await
            .ok()?;
        list.items
            .into_iter()
            .find(|p| waiting_reason(p, name).is_some_and(|r| reasons.contains(&r.as_str())))
    })
    .await
}

/// The injector with the shipped config changed (`from` -> `to`, `marker` the log level),
/// then an app Deployment in the opted-in namespace `ns` (after its token copy, when
/// `token`): its collector waits with one of `reasons`, and `check -n ns` exits 1 calling the
/// Pod `failing` with that reason. Returns the namespace and the Pod.
async fn failing_with(
    env: &Env,
    c: &Client,
    (from, to, marker): (&str, &str, &str),
    ns: &str,
    token: bool,
    reasons: &[&str],
) -> (Ns, Pod) {
    install_changed(env, c, (from, to, marker)).await;
    let ns = opted_in(c, ns).await;
    if token {
        token_copy_made(c, &ns).await;
    }
    app_deployment(env, &ns, "web", 1);
    let pod = waiting_with(c, &ns, "app=web", COLLECTOR, reasons).await;
    let (code, records, stderr) = check_installed(env, &ns, &[]);
    assert_eq!(code, Some(1), "{records:?} {stderr}");
    let record = records
        .iter()
        .find(|r| r["pod"] == pod_name(&pod))
        .unwrap_or_else(|| panic!("{records:?}"));
    assert_eq!(record["state"], "failing", "{record}");
    let reason = record["reason"].as_str().unwrap();
    assert!(
        reason.contains(COLLECTOR) && reasons.iter().any(|r| reason.contains(r)),
        "{reason}"
    );
    (ns, pod)
}

/// No token Secret and propagation off: the real kubelet gives CreateContainerConfigError;
/// `check` says `failing` with that reason and exits 1, doctor says ✖ with a fix. Once the
/// Secret is created, the kubelet starts the same Pod: nothing of ours restarts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real node: tests/e2e/real-node test"]
async fn real_node_missing_secret_is_failing() {
    let env = env();
    let c = client(&env).await;
    let (ns, pod) = failing_with(
        &env,
        &c,
        (
            "propagateSecrets: [bitbucket-pipelines-metrics]",
            "propagateSecrets: []",
            "DEBUG",
        ),
        "rn-no-secret",
        false,
        &["CreateContainerConfigError"],
    )
    .await;
    let (code, findings, stderr) = doctor_with(&env, &[]);
    assert_eq!(code, Some(1), "{findings:?} {stderr}");
    let problems = failed(&findings);
    assert!(
        problems.iter().any(|(_, message, fix)| {
            message.contains(ns.as_str())
                && message.contains("bitbucket-pipelines-metrics")
                && !fix.is_empty()
        }),
        "doctor's ✖: {problems:#?}"
    );
    let secrets: Api<Secret> = Api::namespaced(c.clone(), &ns);
    secrets
        .create(&PostParams::default(), &token_secret(&ns, "created-late"))
        .await
        .unwrap();
    let (pods, _) = running(&c, &ns, "app=web", 1, 120).await;
    assert_eq!(
        pods[0].metadata.uid, pod.metadata.uid,
        "the same Pod started"
    );
    install_defaults(&env, &c).await;
}

/// A template image that no registry has: the real kubelet gives ErrImagePull or
/// ImagePullBackOff, and `check` says `failing`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real node: tests/e2e/real-node test"]
async fn real_node_missing_image_is_failing() {
    let env = env();
    let c = client(&env).await;
    let _failing = failing_with(
        &env,
        &c,
        (
            "image: atlassian/bitbucket-pipelines-metrics-collector:2.1.0",
            "image: localhost/sidecar-e2e/not-there:1",
            "ERROR",
        ),
        "rn-no-image",
        true,
        &["ErrImagePull", "ImagePullBackOff"],
    )
    .await;
    install_defaults(&env, &c).await;
}

/// A Deployment created before its namespace opted in is `missing`; `check --repair` rolls
/// it, and its new Pods run injected, the collector Ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real node: tests/e2e/real-node test"]
async fn real_node_repair_restarts_into_injected_pods() {
    let env = env();
    let c = client(&env).await;
    install_defaults(&env, &c).await;
    let ns = namespace(&c, "rn-repair", json!({})).await;
    app_deployment(&env, &ns, "web", 2);
    rolled_out(&env, &ns, "deployment/web");
    ok(&kubectl(
        &env,
        &["label", "namespace", &ns, "sidecar-injection=enabled"],
        None,
    ));
    token_copy_made(&c, &ns).await;
    let (code, records, stderr) = check_installed(&env, &ns, &[]);
    assert_eq!(code, Some(1), "{records:?} {stderr}");
    assert_eq!(records.len(), 2, "{records:?}");
    assert!(
        records.iter().all(|r| r["state"] == "missing"),
        "{records:?}"
    );
    let (_, _, said) = check_installed(&env, &ns, &["--repair"]);
    let deployments: Api<Deployment> = Api::namespaced(c.clone(), &ns);
    let template = deployments.get("web").await.unwrap().spec.unwrap().template;
    assert!(
        template
            .metadata
            .and_then(|m| m.annotations)
            .is_some_and(|a| a.contains_key("sidecar-injector.io/restartedAt")),
        "check --repair restarted the Deployment: {said}"
    );
    rolled_out(&env, &ns, "deployment/web");
    let (pods, _) = running(&c, &ns, "app=web", 2, 120).await;
    assert!(pods.iter().all(injected), "{said}");
    let (code, records, _) = check_installed(&env, &ns, &[]);
    assert_eq!(code, Some(0), "{records:?}");
    assert!(
        records.iter().all(|r| r["state"] == "current"),
        "{records:?}"
    );
}
