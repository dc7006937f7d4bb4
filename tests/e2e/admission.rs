//! The apiserver and the webhook together: failurePolicy with the webhook down, a conflict
//! under Fail and Ignore, reinvocation after a later webhook, certificate rotation under
//! creations, and the apiserver's own view of what each call costs.

use super::*;

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
pub(crate) fn apiserver_webhook_count(env: &Env, metric: &str, webhook: &str) -> f64 {
    let metrics = ok(&kubectl(env, &["get", "--raw", "/metrics"], None));
    metrics
        .lines()
        .filter(|l| {
            l.starts_with(&format!("{metric}{{")) && l.contains(&format!("name=\"{webhook}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
