//! Issue "Every replica carries load": the cost of injection, measured in one run on one
//! cluster against two yardsticks we do not control:
//! - Pod creations that call no webhook;
//! - creations through `../shared/perf/floor` (the independent floor: a TLS webhook that
//!   parses the review and allows everything), registered with a copy of the installed
//!   webhook configuration: the same TLS (certificate and caBundle), `failurePolicy`,
//!   timeout, rules, objectSelector and matchConditions; only its URL and namespace label
//!   differ;
//! - creations through the injector as installed, with the default template;
//! - and, to tell the injector's work from the apiserver's: creations through this
//!   repository's `bench/floor` answering every review with the injector's own patch for
//!   that Pod (the difference of a dry run with and without the injector), registered the
//!   same way. Against it the injector's added cost is its own; the rest is what applying
//!   the patch and storing the larger Pod costs the apiserver, which any injector pays.
//!
//! The same client, the same Pod and the same namespace shape for all four. It asserts what
//! each creation must be (injected or not, none refused) and prints the figures on `RESULT`
//! lines for BENCHMARKS.md: it asserts nothing about time.

use super::admission::apiserver_webhook_count;
use super::*;
use k8s_openapi::api::core::v1::Namespace;

/// The floor's process, killed when dropped.
struct Floor(std::process::Child);

impl Drop for Floor {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a floor (the binary named by the environment variable `var`, built by
/// tests/e2e/run) with the suite's certificate on a free loopback port (given to it as
/// `listen` writes it: the shared floor takes a port, bench/floor an address), with `extra`
/// arguments; returns it and the port once it accepts connections.
fn start_floor(env: &Env, var: &str, listen: fn(u16) -> String, extra: &[String]) -> (Floor, u16) {
    let bin = std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: tests/e2e/run builds ../shared/perf/floor (the independent floor) and bench/floor and sets it; run the suite with ../shared beside the repository"
        )
    });
    let port = common::free_port();
    let certs = env.work.join("certs");
    let child = Command::new(&bin)
        .arg(listen(port))
        .arg(certs.join("tls.crt"))
        .arg(certs.join("tls.key"))
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting the floor {bin}: {e}"));
    let floor = Floor(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the floor never listened on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (floor, port)
}

/// The labels, annotations and spec of a Pod: what the injector's patch changes.
fn patched_part(pod: &Value) -> Value {
    let mut meta = serde_json::Map::new();
    for k in ["labels", "annotations"] {
        if let Some(v) = pod["metadata"].get(k) {
            meta.insert(k.into(), v.clone());
        }
    }
    json!({"metadata": meta, "spec": pod["spec"]})
}

/// The injector's patch for [`pending`], as the apiserver holds the Pod when it calls the
/// webhook: the difference between a dry run in `plain` and one in `injected`, over the
/// labels, annotations and spec (names and uids differ from Pod to Pod), base64.
async fn injectors_patch(c: &Client, plain: &str, injected: &str) -> String {
    use base64::Engine as _;
    let dry = |ns: &str| {
        let api: Api<Pod> = Api::namespaced(c.clone(), ns);
        async move {
            let pod: Pod = serde_json::from_value(pending("patch-probe")).unwrap();
            let made = api
                .create(
                    &PostParams {
                        dry_run: true,
                        ..Default::default()
                    },
                    &pod,
                )
                .await
                .unwrap();
            serde_json::to_value(made).unwrap()
        }
    };
    let (before, after) = (dry(plain).await, dry(injected).await);
    assert!(!injected_value(&before) && injected_value(&after));
    let patch = json_patch::diff(&patched_part(&before), &patched_part(&after));
    base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&patch).unwrap())
}

/// [`injected`] on a Pod as JSON.
fn injected_value(pod: &Value) -> bool {
    serde_json::from_value::<Pod>(pod.clone()).is_ok_and(|p| injected(&p))
}

/// A copy of the installed webhook configuration named `name`, calling `url` for the
/// namespaces labelled `e2e-yardstick=NAME`, and nothing else changed.
fn register_copy(env: &Env, name: &str, url: &str) -> Registered {
    let installed = ok(&kubectl(
        env,
        &[
            "get",
            "mutatingwebhookconfiguration",
            "sidecar-injector",
            "-o",
            "json",
        ],
        None,
    ));
    let mut hook: Value = serde_json::from_str(&installed).unwrap();
    hook["metadata"] = json!({"name": name});
    let w = &mut hook["webhooks"][0];
    w["name"] = format!("{name}.e2e.test").into();
    w["clientConfig"]["url"] = url.into();
    w["namespaceSelector"] = json!({"matchLabels": {"e2e-yardstick": name}});
    ok(&kubectl(
        env,
        &["apply", "-f", "-"],
        Some(&hook.to_string()),
    ));
    Registered(name.to_owned())
}

/// A Pod that stays Pending (no node has its label), so only admission and storage count.
fn pending(name: &str) -> Value {
    let mut pod = pod_json(name, json!({}));
    pod["spec"]["nodeSelector"] = json!({"e2e-pending": "true"});
    pod
}

/// The apiserver's `apiserver_admission_webhook_admission_duration_seconds` for one webhook:
/// (sum in seconds, count), over its other labels.
fn apiserver_webhook_seconds(env: &Env, webhook: &str) -> (f64, f64) {
    let metric = "apiserver_admission_webhook_admission_duration_seconds";
    (
        apiserver_webhook_count(env, &format!("{metric}_sum"), webhook),
        apiserver_webhook_count(env, &format!("{metric}_count"), webhook),
    )
}

/// CPU seconds (user and system) used so far by each process whose command name is one of
/// `names` (or starts with one ending in `-`), summed by name, and by the process `webhook_pid` under the name "injector".
fn cpu_seconds(names: &[&str], webhook_pid: u32) -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // comm is in parentheses and may hold spaces: the fields after it are split.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // utime and stime are fields 14 and 15 of stat, 11 and 12 after the comm.
        let secs = (ticks(11) + ticks(12)) / 100.0;
        let name = if pid == webhook_pid {
            "injector".to_owned()
        } else if let Some(n) = names
            .iter()
            .find(|n| comm == **n || (n.ends_with('-') && comm.starts_with(**n)))
        {
            (*n).to_owned()
        } else {
            continue;
        };
        *out.entry(name).or_default() += secs;
    }
    out
}

fn quantile(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0
}

/// Creations for `secs` from `clients` tasks at once, each as fast as the apiserver answers;
/// returns how many were created, and the failures.
async fn flat_out(c: &Client, ns: &str, clients: usize, secs: u64, want_injected: bool) -> usize {
    let end = Instant::now() + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..clients)
        .map(|k| {
            let (c, ns) = (c.clone(), ns.to_owned());
            tokio::spawn(async move {
                let mut done = 0usize;
                while Instant::now() < end {
                    let pod = create_pod(&c, &ns, pending(&format!("t{k}-{done}")))
                        .await
                        .unwrap_or_else(|e| panic!("creation {done} of client {k} in {ns}: {e}"));
                    assert_eq!(injected(&pod), want_injected, "{ns}");
                    done += 1;
                }
                done
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: tests/e2e/run"]
async fn added_latency_vs_a_noop_webhook() {
    let env = env();
    let c = client(&env).await;
    let (_floor, floor_port) = start_floor(&env, "E2E_FLOOR_BIN", |port| port.to_string(), &[]);
    let _registered = register_copy(
        &env,
        "floor",
        &format!("https://127.0.0.1:{floor_port}/mutate"),
    );
    let none = namespace(&c, "e2e-yard-none", json!({})).await;
    let floor = namespace(&c, "e2e-yard-floor", json!({"e2e-yardstick": "floor"})).await;
    let injector = opted_in(&c, "e2e-yard-injector").await;
    webhook_in_effect(&c, &injector).await;
    // The floor answers: a dry run there comes back (allowed, not injected).
    dry_run_until(&c, &floor, "the floor to be called", |p| !injected(p)).await;
    // The floor that answers with the injector's patch.
    let patch_file = env.work.join("injectors-patch.b64");
    std::fs::write(&patch_file, injectors_patch(&c, &none, &injector).await).unwrap();
    let (_patched_floor, patched_port) = start_floor(
        &env,
        "E2E_PATCH_FLOOR_BIN",
        |port| format!("127.0.0.1:{port}"),
        &[format!("patch={}", patch_file.display())],
    );
    let _registered_patched = register_copy(
        &env,
        "patched",
        &format!("https://127.0.0.1:{patched_port}/mutate"),
    );
    let patched = namespace(&c, "e2e-yard-patched", json!({"e2e-yardstick": "patched"})).await;
    dry_run_until(&c, &patched, "the patching floor to be called", injected).await;
    let yardsticks = [
        (&none, false),
        (&floor, false),
        (&patched, true),
        (&injector, true),
    ];
    let names = ["none", "floor", "patched", "injector"];

    // Latency: one client, one creation at a time, the three interleaved so the machine's
    // noise falls on all of them; 30 rounds of warm-up first.
    let webhooks = [
        "floor.e2e.test",
        "patched.e2e.test",
        "inject.sidecar-injector.io",
    ];
    let mut times: [Vec<Duration>; 4] = Default::default();
    let mut seconds_before = Vec::new();
    for i in 0..530 {
        if i == 30 {
            seconds_before = webhooks
                .iter()
                .map(|w| apiserver_webhook_seconds(&env, w))
                .collect();
        }
        for (k, (ns, want)) in yardsticks.iter().enumerate() {
            let t = Instant::now();
            let pod = create_pod(&c, ns, pending(&format!("l{i}")))
                .await
                .unwrap_or_else(|e| panic!("creation {i} in {}: {e}", ns.as_str()));
            let took = t.elapsed();
            assert_eq!(injected(&pod), *want, "{}", ns.as_str());
            if i >= 30 {
                times[k].push(took);
            }
        }
    }
    let at_server: Vec<(f64, f64)> = webhooks
        .iter()
        .zip(&seconds_before)
        .map(|(w, before)| {
            let now = apiserver_webhook_seconds(&env, w);
            (now.0 - before.0, now.1 - before.1)
        })
        .collect();
    let p: Vec<(f64, f64)> = times
        .iter_mut()
        .map(|v| (quantile(v, 0.5), quantile(v, 0.99)))
        .collect();
    let added = |k: usize| (p[k].0 - p[0].0, p[k].1 - p[0].1);
    let (floor_added, patched_added, injector_added) = (added(1), added(2), added(3));
    println!(
        "RESULT latency creations_each={} none_p50_ms={:.3} none_p99_ms={:.3} floor_p50_ms={:.3} floor_p99_ms={:.3} patched_p50_ms={:.3} patched_p99_ms={:.3} injector_p50_ms={:.3} injector_p99_ms={:.3} floor_added_p50_ms={:.3} patched_added_p50_ms={:.3} injector_added_p50_ms={:.3} floor_added_p99_ms={:.3} patched_added_p99_ms={:.3} injector_added_p99_ms={:.3} added_p50_ratio={:.3} added_p50_ratio_vs_patched={:.3}",
        times[0].len(),
        p[0].0,
        p[0].1,
        p[1].0,
        p[1].1,
        p[2].0,
        p[2].1,
        p[3].0,
        p[3].1,
        floor_added.0,
        patched_added.0,
        injector_added.0,
        floor_added.1,
        patched_added.1,
        injector_added.1,
        injector_added.0 / floor_added.0,
        injector_added.0 / patched_added.0
    );
    for ((w, (sum, count)), name) in webhooks
        .iter()
        .zip(&at_server)
        .zip(["floor", "patched", "injector"])
    {
        assert_eq!(
            *count as usize,
            times[0].len(),
            "the apiserver's calls to {w}"
        );
        println!(
            "RESULT apiserver_webhook {name} calls={count} mean_ms={:.3}",
            sum / count * 1000.0
        );
    }

    // Throughput: 8 clients at once for 30 s against each.
    // Where the CPU goes in each (2 cores shared by all): the control plane (etcd, the
    // apiserver and the controllers: one process), kwok, the webhook called, and the client
    // (this test), in milliseconds per creation.
    let webhook_pid: u32 = std::env::var("E2E_WEBHOOK_PID")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let watched = ["controlplane", "kwok", "floor", "e2e-"];
    let mut rates = Vec::new();
    for (k, (ns, want)) in yardsticks.iter().enumerate() {
        let before = cpu_seconds(&watched, webhook_pid);
        let created = flat_out(&c, ns, 8, 30, *want).await;
        let after = cpu_seconds(&watched, webhook_pid);
        let rate = created as f64 / 30.0;
        let per: Vec<String> = after
            .iter()
            .map(|(n, s)| {
                let used = s - before.get(n).copied().unwrap_or(0.0);
                format!("{n}={:.3}", used * 1000.0 / created as f64)
            })
            .collect();
        println!("RESULT cpu_ms_per_creation {} {}", names[k], per.join(" "));
        println!("throughput {}: {created} Pods in 30 s", names[k]);
        rates.push(rate);
    }
    println!(
        "RESULT throughput clients=8 seconds=30 none_per_s={:.1} floor_per_s={:.1} patched_per_s={:.1} injector_per_s={:.1} injector_vs_none={:.3} injector_vs_floor={:.3} injector_vs_patched={:.3} floor_vs_none={:.3} patched_vs_floor={:.3}",
        rates[0],
        rates[1],
        rates[2],
        rates[3],
        rates[3] / rates[0],
        rates[3] / rates[1],
        rates[3] / rates[2],
        rates[1] / rates[0],
        rates[2] / rates[1]
    );

    // Thousands of Pods: the namespaces (deleted by their guards, the Pods with them by the
    // namespace controller) are gone before the next test, so they load neither its
    // apiserver nor the injector's survey.
    drop((none, floor, patched, injector));
    let namespaces: Api<Namespace> = Api::all(c.clone());
    let deadline = Instant::now() + Duration::from_secs(240);
    for name in [
        "e2e-yard-none",
        "e2e-yard-floor",
        "e2e-yard-patched",
        "e2e-yard-injector",
    ] {
        while namespaces.get_opt(name).await.ok().flatten().is_some() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}
