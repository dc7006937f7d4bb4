//! Issue "the product as deployed": the apiserver restarted under `serve`. An HA control plane
//! has several apiservers on one etcd; `serve` here talks to a second one the test starts from
//! the cluster's own flags (`cluster/apiserver.cmd`), while the suite's apiserver calls the
//! webhook and makes the changes. The test stops that second apiserver, changes the ConfigMap
//! and a namespace while it is down, starts it again, and measures how long `serve` takes to
//! serve what changed: its watches reconnect through a fresh watch cache (a resume from an
//! old resourceVersion may be refused with 410 Gone and must relist).

use super::certificates::{call_port, home, shipped_args};
use super::day_one::Undo;
use super::secrets::{apply_configmap, config_dir, service_account_kubeconfig};
use super::*;
use k8s_openapi::api::coordination::v1::Lease;

const HOME: &str = "e2e-restart";
/// Within this long after the apiserver is back, serve serves what changed (the issue's figure).
const RECOVERED_WITHIN: Duration = Duration::from_secs(10);

/// A second kube-apiserver on the suite's etcd, listening on `port`.
struct Apiserver {
    child: Option<std::process::Child>,
    port: u16,
    log: PathBuf,
}

impl Apiserver {
    fn start(env: &Env, port: u16, log: PathBuf) -> Apiserver {
        let cmd = std::fs::read_to_string(env.work.join("cluster/apiserver.cmd"))
            .expect("cluster/apiserver.cmd (tests/e2e/cluster writes it)");
        let mut lines = cmd.lines();
        let program = lines.next().unwrap().to_owned();
        let args: Vec<String> = lines
            .filter(|a| !a.starts_with("--audit-"))
            .map(|a| {
                if a.starts_with("--secure-port=") {
                    format!("--secure-port={port}")
                } else {
                    a.to_owned()
                }
            })
            // The suite's apiserver keeps the `kubernetes` Service's endpoints.
            .chain(["--endpoint-reconciler-type=none".to_owned()])
            .collect();
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(program)
            .args(&args)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("starting a second kube-apiserver");
        Apiserver {
            child: Some(child),
            port,
            log,
        }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Waits until it answers /readyz.
    fn ready(&self, env: &Env) -> Instant {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = kubectl(
                env,
                &["--server", &self.url(), "get", "--raw", "/readyz"],
                None,
            );
            if out.status.success() {
                return Instant::now();
            }
            assert!(
                Instant::now() < deadline,
                "the second apiserver was not ready in 60 s; its log ends: {}",
                tail(&self.log, 20)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, as a restart does, and waits for it to exit.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Drop for Apiserver {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A server-side dry-run Pod in `ns`, through the suite's apiserver (which calls the webhook).
async fn dry_run(c: &Client, ns: &str) -> Option<Pod> {
    let api: Api<Pod> = Api::namespaced(c.clone(), ns);
    let pod: Pod = serde_json::from_value(pod_json("restart-probe", json!({}))).unwrap();
    let pp = PostParams {
        dry_run: true,
        ..Default::default()
    };
    api.create(&pp, &pod).await.ok()
}

fn log_level(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let all = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    all.filter(|c| c.name == COLLECTOR)
        .flat_map(|c| c.env.iter().flatten())
        .find(|e| e.name == "LOG_LEVEL")
        .and_then(|e| e.value.clone())
}

async fn renewed(leases: &Api<Lease>) -> Option<(String, k8s_openapi::jiff::Timestamp)> {
    let spec = leases
        .get_opt("sidecar-injector-repair")
        .await
        .ok()??
        .spec?;
    Some((spec.holder_identity?, spec.renew_time?.0))
}

#[tokio::test]
#[ignore = "needs a cluster: tests/e2e/run"]
async fn apiserver_restart_recovers() {
    let env = env();
    let c = client(&env).await;
    let dir = tempfile::tempdir().unwrap();
    let mut undo = Undo::new();
    let _home = home(&env, &c, HOME, &mut undo).await;

    // The second apiserver, and serve talking to it alone, as the shipped ServiceAccount.
    let port = common::free_port();
    let mut second = Apiserver::start(&env, port, dir.path().join("apiserver.log"));
    second.ready(&env);
    let kubeconfig = service_account_kubeconfig(&env, HOME, dir.path());
    let text = std::fs::read_to_string(&kubeconfig).unwrap();
    let server = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .unwrap()
        .to_owned();
    std::fs::write(&kubeconfig, text.replace(&server, &second.url())).unwrap();

    // The webhook is called for namespaces labelled `{HOME}: on` (certificates::home); the
    // config opts them in by `{HOME}-inject=enabled`.
    let config = config_dir(dir.path(), &format!("{HOME}-inject"));
    // A namespace may override the log level (sidecar-injector.io/values): serve reads that
    // from its namespace cache.
    let settings = std::fs::read_to_string(config.join("config.yaml"))
        .unwrap()
        .replace("overridable: []", "overridable: [logLevel]");
    assert!(settings.contains("overridable: [logLevel]"));
    std::fs::write(config.join("config.yaml"), settings).unwrap();
    apply_configmap(&env, HOME, &config);
    let app = namespace(
        &c,
        "e2e-restart-app",
        json!({HOME: "on", format!("{HOME}-inject"): "enabled"}),
    )
    .await;

    let log = dir.path().join("serve.log");
    let args = shipped_args(HOME, &kubeconfig);
    let (child, tls, _) = common::spawn_serve_with_env(
        &args,
        &[("POD_NAMESPACE", HOME), ("POD_NAME", "restart-a")],
        &log,
    );
    let _serve = Beside(child);
    let said = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(tls != 0, "serve: {}", said());
    call_port(&env, HOME, tls);
    let before = eventually(
        "a Pod injected through the second apiserver's view",
        30,
        || async { dry_run(&c, &app).await.filter(injected) },
    )
    .await;
    assert_eq!(log_level(&before).as_deref(), Some("INFO"));
    let leases: Api<Lease> = Api::namespaced(c.clone(), HOME);
    eventually("serve to hold the Lease", 30, || async {
        let (holder, _) = renewed(&leases).await?;
        (holder == "restart-a").then_some(())
    })
    .await;

    // The apiserver goes down. While it is, the suite's apiserver changes the ConfigMap (a
    // new log level), gives the namespace a log level of its own, and makes a new opted-in
    // namespace.
    let down = Instant::now();
    second.stop();
    println!(
        "the second apiserver stopped {:.1} s after SIGTERM",
        down.elapsed().as_secs_f64()
    );
    let restarted_config = std::fs::read_to_string(config.join("config.yaml"))
        .unwrap()
        .replace("logLevel: INFO", "logLevel: RESTARTED");
    assert!(restarted_config.contains("RESTARTED"));
    std::fs::write(config.join("config.yaml"), &restarted_config).unwrap();
    apply_configmap(&env, HOME, &config);
    ok(&kubectl(
        &env,
        &[
            "annotate",
            "namespace",
            &app,
            r#"sidecar-injector.io/values={"logLevel": "FROM-NAMESPACE"}"#,
        ],
        None,
    ));
    let fresh = namespace(
        &c,
        "e2e-restart-new",
        json!({HOME: "on", format!("{HOME}-inject"): "enabled"}),
    )
    .await;
    // Down long enough for every watch to have failed and backed off (SIGTERM to exit is
    // counted in: the apiserver drains first).
    let outage = Duration::from_secs(8);
    tokio::time::sleep(outage.saturating_sub(down.elapsed())).await;
    let mut second = Apiserver::start(&env, port, dir.path().join("apiserver.log"));
    let back = second.ready(&env);
    println!(
        "the second apiserver was down {:.1} s",
        (back - down).as_secs_f64()
    );

    // What changed is served within 10 s of the apiserver being back.
    let mut config_at = None;
    let mut namespace_at = None;
    let mut lease_at = None;
    let back_wall = k8s_openapi::jiff::Timestamp::now();
    let deadline = back + Duration::from_secs(30);
    while (config_at.is_none() || namespace_at.is_none() || lease_at.is_none())
        && Instant::now() < deadline
    {
        if config_at.is_none()
            && let Some(p) = dry_run(&c, &fresh).await
            && injected(&p)
            && log_level(&p).as_deref() == Some("RESTARTED")
        {
            config_at = Some(back.elapsed());
        }
        if namespace_at.is_none()
            && let Some(p) = dry_run(&c, &app).await
            && log_level(&p).as_deref() == Some("FROM-NAMESPACE")
        {
            namespace_at = Some(back.elapsed());
        }
        if lease_at.is_none()
            && let Some((holder, at)) = renewed(&leases).await
            && holder == "restart-a"
            && at > back_wall
        {
            lease_at = Some(back.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "after the apiserver was back: the new config served in {config_at:?}, the namespace's new annotation in {namespace_at:?}, the Lease renewed in {lease_at:?}"
    );
    for (what, at) in [
        (
            "the ConfigMap changed while the apiserver was down",
            config_at,
        ),
        (
            "the namespace annotation set while it was down",
            namespace_at,
        ),
        ("the Lease renewal", lease_at),
    ] {
        assert!(
            at.is_some_and(|t| t <= RECOVERED_WITHIN),
            "{what}: not served within {RECOVERED_WITHIN:?} of the apiserver's return ({at:?}); serve: {}",
            said()
        );
    }
    // And nothing stale afterwards: the old config is never served again.
    for _ in 0..5 {
        let p = dry_run(&c, &fresh).await.unwrap();
        assert_eq!(log_level(&p).as_deref(), Some("RESTARTED"));
        let p = dry_run(&c, &app).await.unwrap();
        assert_eq!(log_level(&p).as_deref(), Some("FROM-NAMESPACE"));
    }
    second.stop();
    drop(fresh);
    drop(app);
}
