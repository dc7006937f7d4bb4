//! A kubelet for one Node, played by the test, for the injector's own Pods: kwok's nodes run
//! no containers, and the Service path needs a real server behind each endpoint.
//!
//! Each Pod scheduled to [`NODE`] runs as a `serve` process (the release binary) with the
//! Pod's own arguments and environment, listening on an address of its own in
//! 10.245.0.0/24. That range is local only inside the network namespace `tests/e2e/run`
//! makes for the in-cluster phase: no address outside it is ever used. Like kubelet, it
//! - reports the Pod Running with that IP, and Ready only once the readiness probe of the
//!   Pod's spec (its period and failure threshold) passes, so the endpoints controller adds
//!   the endpoint then and removes it when the probe fails;
//! - notices a container that exited within a second (the PLEG relist period), reports the
//!   Pod not Ready at once, and restarts it;
//! - sends SIGTERM when the Pod is deleted, and deletes it for good once the process exits;
//! - keeps the Node Ready with a heartbeat.

use super::secrets::account_kubeconfig;
use super::*;
use k8s_openapi::api::core::v1::Node;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;

pub(crate) const NODE: &str = "e2e-host";
/// The Pod addresses: local to the in-cluster phase's network namespace (tests/e2e/run).
const POD_NET: &str = "10.245.0";

struct Container {
    child: std::process::Child,
    ip: String,
    started: Instant,
    ready: bool,
    failures: u32,
    last_probe: Option<Instant>,
    last_seen_running: Instant,
    restarts: i32,
    terminating: bool,
}

#[derive(Default)]
struct State {
    pods: BTreeMap<String, Container>,
    next_ip: u8,
}

pub(crate) struct Kubelet {
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// `$(NAME)` in an argument, from the Pod's environment, as kubelet expands it.
fn expand(arg: &str, env: &[(String, String)]) -> String {
    env.iter()
        .fold(arg.to_owned(), |a, (k, v)| a.replace(&format!("$({k})"), v))
}

impl Kubelet {
    /// Registers the Node and starts serving the Pods of namespace `ns` bound to it.
    pub(crate) async fn start(env: &Env, c: &Client, ns: &str, dir: PathBuf) -> Kubelet {
        let nodes: Api<Node> = Api::all(c.clone());
        let node: Node = serde_json::from_value(json!({"metadata": {"name": NODE,
            "labels": {"kubernetes.io/os": "linux", "kubernetes.io/hostname": NODE, NODE: "true"}}}))
        .unwrap();
        if nodes.get_opt(NODE).await.unwrap().is_none() {
            nodes.create(&PostParams::default(), &node).await.unwrap();
        }
        heartbeat(&nodes).await;
        let kubeconfig = account_kubeconfig(env, ns, "sidecar-injector", &dir);
        let state = Arc::new(Mutex::new(State {
            next_ip: 10,
            ..Default::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(run(
            c.clone(),
            ns.to_owned(),
            dir,
            kubeconfig,
            state.clone(),
            stop.clone(),
        ));
        Kubelet {
            state,
            stop,
            task: Some(task),
        }
    }

    /// The Pods it runs, by name, with their addresses and whether they are Ready.
    pub(crate) fn pods(&self) -> Vec<(String, String, bool)> {
        let state = self.state.lock().unwrap();
        state
            .pods
            .iter()
            .map(|(n, c)| (n.clone(), c.ip.clone(), c.ready))
            .collect()
    }

    /// What can SIGKILL its containers, from another task.
    pub(crate) fn killer(&self) -> Killer {
        Killer(self.state.clone())
    }

    /// Stops every container and the loop.
    pub(crate) async fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

pub(crate) struct Killer(Arc<Mutex<State>>);

impl Killer {
    /// SIGKILL to the container of `pod`, as an OOM kill or a crash would.
    pub(crate) fn kill(&self, pod: &str) {
        let mut state = self.0.lock().unwrap();
        let c = state.pods.get_mut(pod).expect("a Pod this kubelet runs");
        let _ = c.child.kill();
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Ok(mut state) = self.state.lock() {
            for c in state.pods.values_mut() {
                let _ = c.child.kill();
                let _ = c.child.wait();
            }
        }
    }
}

async fn heartbeat(nodes: &Api<Node>) {
    let t = rfc3339_now();
    let status = json!({"status": {
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "the e2e test plays this kubelet", "lastHeartbeatTime": t, "lastTransitionTime": t}],
        "addresses": [{"type": "InternalIP", "address": format!("{POD_NET}.1")}],
        "allocatable": {"cpu": "8", "memory": "16Gi", "pods": "110"},
        "capacity": {"cpu": "8", "memory": "16Gi", "pods": "110"},
        "nodeInfo": {"containerRuntimeVersion": "containerd://2.1.0", "kubeletVersion": "v1.33.0",
            "operatingSystem": "linux", "architecture": "amd64", "osImage": "e2e", "kernelVersion": "e2e",
            "kubeProxyVersion": "", "machineID": "", "systemUUID": "", "bootID": ""}
    }});
    let _ = nodes
        .patch_status(
            NODE,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(status),
        )
        .await;
}

/// The Pod's status as kubelet reports it.
fn status(c: &Container, pod: &Pod) -> Value {
    let spec = pod.spec.as_ref().unwrap();
    let container = &spec.containers[0];
    let ready = if c.ready { "True" } else { "False" };
    let t = rfc3339_now();
    json!({"status": {
        "phase": "Running", "hostIP": format!("{POD_NET}.1"), "podIP": c.ip, "podIPs": [{"ip": c.ip}],
        "startTime": t,
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Initialized", "status": "True"},
            {"type": "ContainersReady", "status": ready, "lastTransitionTime": t},
            {"type": "Ready", "status": ready, "lastTransitionTime": t}],
        "containerStatuses": [{"name": container.name, "image": container.image, "imageID": "",
            "ready": c.ready, "restartCount": c.restarts, "started": true,
            "state": {"running": {"startedAt": t}}}]
    }})
}

fn spawn(
    pod: &Pod,
    ip: &str,
    dir: &std::path::Path,
    kubeconfig: &std::path::Path,
) -> std::process::Child {
    let name = pod.metadata.name.clone().unwrap();
    let ns = pod.metadata.namespace.clone().unwrap();
    let container = &pod.spec.as_ref().unwrap().containers[0];
    let mut env: Vec<(String, String)> = vec![
        ("POD_NAMESPACE".into(), ns.clone()),
        ("POD_NAME".into(), name.clone()),
    ];
    for e in container.env.iter().flatten() {
        if let Some(v) = &e.value {
            env.push((e.name.clone(), v.clone()));
        }
    }
    let mut args: Vec<String> = container
        .args
        .iter()
        .flatten()
        .map(|a| expand(a, &env))
        .collect();
    args.extend([
        format!("--listen={ip}:8443"),
        format!("--metrics-listen={ip}:9090"),
        format!("--kubeconfig={}", kubeconfig.display()),
    ]);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))
        .unwrap();
    Command::new(common::bin())
        .args(&args)
        .envs(env)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("starting serve for a Pod")
}

/// The readiness probe of the Pod's spec: (period, failure threshold).
fn probe_of(pod: &Pod) -> (Duration, u32) {
    let probe = pod.spec.as_ref().unwrap().containers[0]
        .readiness_probe
        .clone()
        .unwrap_or_default();
    (
        Duration::from_secs(probe.period_seconds.unwrap_or(10) as u64),
        probe.failure_threshold.unwrap_or(3) as u32,
    )
}

async fn run(
    c: Client,
    ns: String,
    dir: PathBuf,
    kubeconfig: PathBuf,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
) {
    let pods: Api<Pod> = Api::namespaced(c.clone(), &ns);
    let nodes: Api<Node> = Api::all(c.clone());
    let probes = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let mut last_heartbeat = Instant::now();
    let on_node = ListParams::default().fields(&format!("spec.nodeName={NODE}"));
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if last_heartbeat.elapsed() > Duration::from_secs(5) {
            heartbeat(&nodes).await;
            last_heartbeat = Instant::now();
        }
        let Ok(list) = pods.list(&on_node).await else {
            continue;
        };
        let listed: BTreeMap<String, Pod> = list
            .items
            .into_iter()
            .map(|p| (p.metadata.name.clone().unwrap(), p))
            .collect();
        // Changes to report, made outside the lock.
        let mut report: Vec<(String, Value)> = Vec::new();
        let mut remove: Vec<String> = Vec::new();
        let mut probe: Vec<(String, String)> = Vec::new();
        {
            let mut st = state.lock().unwrap();
            st.pods.retain(|name, c| {
                let keep = listed.contains_key(name);
                if !keep {
                    let _ = c.child.kill();
                    let _ = c.child.wait();
                }
                keep
            });
            for (name, pod) in &listed {
                let deleting = pod.metadata.deletion_timestamp.is_some();
                if !st.pods.contains_key(name) {
                    if deleting {
                        remove.push(name.clone());
                        continue;
                    }
                    let ip = format!("{POD_NET}.{}", st.next_ip);
                    st.next_ip += 1;
                    let child = spawn(pod, &ip, &dir, &kubeconfig);
                    let container = Container {
                        child,
                        ip,
                        started: Instant::now(),
                        ready: false,
                        failures: 0,
                        last_probe: None,
                        last_seen_running: Instant::now(),
                        restarts: 0,
                        terminating: false,
                    };
                    report.push((name.clone(), status(&container, pod)));
                    st.pods.insert(name.clone(), container);
                    continue;
                }
                let c = st.pods.get_mut(name).unwrap();
                let exited = c.child.try_wait().ok().flatten().is_some();
                if deleting {
                    if !c.terminating {
                        c.terminating = true;
                        let _ = Command::new("kill")
                            .args(["-TERM", &c.child.id().to_string()])
                            .status();
                    } else if exited {
                        remove.push(name.clone());
                    }
                    continue;
                }
                if exited {
                    // The PLEG relists once a second: an exit is seen within that.
                    if c.last_seen_running.elapsed() >= Duration::from_secs(1) {
                        c.ready = false;
                        c.failures = 0;
                        c.last_probe = None;
                        c.restarts += 1;
                        c.child = spawn(pod, &c.ip, &dir, &kubeconfig);
                        c.started = Instant::now();
                        c.last_seen_running = Instant::now();
                        report.push((name.clone(), status(c, pod)));
                    }
                    continue;
                }
                c.last_seen_running = Instant::now();
                let (period, _) = probe_of(pod);
                let due = match c.last_probe {
                    None => c.started.elapsed() >= Duration::from_millis(200),
                    Some(at) => at.elapsed() >= period,
                };
                if due {
                    c.last_probe = Some(Instant::now());
                    probe.push((name.clone(), c.ip.clone()));
                }
            }
        }
        for (name, ip) in probe {
            let ok = probes
                .get(format!("https://{ip}:8443/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            let mut st = state.lock().unwrap();
            let Some(c) = st.pods.get_mut(&name) else {
                continue;
            };
            let pod = &listed[&name];
            let (_, threshold) = probe_of(pod);
            if ok {
                c.failures = 0;
                if !c.ready {
                    c.ready = true;
                    report.push((name.clone(), status(c, pod)));
                }
            } else {
                c.failures += 1;
                if c.ready && c.failures >= threshold {
                    c.ready = false;
                    report.push((name.clone(), status(c, pod)));
                }
            }
        }
        for (name, s) in report {
            let _ = pods
                .patch_status(
                    &name,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(s),
                )
                .await;
        }
        for name in remove {
            state.lock().unwrap().pods.remove(&name);
            let _ = pods
                .delete(
                    &name,
                    &DeleteParams {
                        grace_period_seconds: Some(0),
                        ..Default::default()
                    },
                )
                .await;
        }
    }
    let mut st = state.lock().unwrap();
    for c in st.pods.values_mut() {
        let _ = c.child.kill();
        let _ = c.child.wait();
    }
}
