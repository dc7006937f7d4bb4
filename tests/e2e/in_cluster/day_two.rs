//! Issue 33, day two: the chart installed under a release name and namespace of its own, as
//! a platform team does (`helm install inj -n platform`), and the CLI finding it by its
//! labels; a repair that restarts a workload at most once for a config.

use super::*;
use crate::day_one::{doctor_passes, message};
use crate::helm::{chart, helm};

const RELEASE: &str = "inj";
const PLATFORM: &str = "platform";

/// The chart as release `inj` in a namespace of its own, its Pods run by the test's kubelet.
struct Release {
    namespace: &'static str,
    kubelet: Option<Kubelet>,
    _dir: tempfile::TempDir,
}

impl Release {
    /// Release `inj` in `platform`.
    async fn install(env: &Env, c: &Client) -> Release {
        Release::install_in(env, c, PLATFORM).await
    }

    /// Release `inj` in `namespace`, with the token Secret created there as the README says.
    async fn install_in(env: &Env, c: &Client, namespace: &'static str) -> Release {
        let dir = tempfile::tempdir().unwrap();
        let node = format!("nodeSelector.{NODE}=true");
        ok(&helm(
            env,
            &[
                "install",
                RELEASE,
                chart().to_str().unwrap(),
                "--namespace",
                namespace,
                "--create-namespace",
                "--set-string",
                &node,
                "--set",
                "webhook.failurePolicy=Fail",
                // No one plays kubelet for the hook's Pod here: uninstall deletes the webhook
                // configuration itself.
                "--set",
                "hooks.unregisterOnDelete=false",
            ],
        ));
        let secrets: Api<Secret> = Api::namespaced(c.clone(), namespace);
        secrets
            .create(
                &PostParams::default(),
                &crate::secrets::token_secret(namespace, "e2e"),
            )
            .await
            .unwrap();
        let logs = dir.path().join("pods");
        std::fs::create_dir_all(&logs).unwrap();
        let kubelet = Kubelet::start(env, c, namespace, logs).await;
        two_ready_endpoints(c, namespace).await;
        Release {
            namespace,
            kubelet: Some(kubelet),
            _dir: dir,
        }
    }

    async fn uninstall(mut self, env: &Env) {
        let out = tokio::task::block_in_place(|| {
            helm(
                env,
                &[
                    "uninstall",
                    RELEASE,
                    "--namespace",
                    self.namespace,
                    "--wait",
                    "--timeout",
                    "120s",
                ],
            )
        });
        ok(&out);
        if let Some(k) = self.kubelet.take() {
            k.stop().await;
        }
    }
}

/// A test that failed midway leaves no Fail webhook behind for the next one.
impl Drop for Release {
    fn drop(&mut self) {
        if self.kubelet.is_none() {
            return;
        }
        let env = env();
        let _ = kubectl(
            &env,
            &[
                "delete",
                "mutatingwebhookconfiguration",
                RELEASE,
                "--ignore-not-found",
            ],
            None,
        );
        let _ = helm(
            &env,
            &[
                "uninstall",
                RELEASE,
                "--namespace",
                self.namespace,
                "--no-hooks",
            ],
        );
        let _ = kubectl(
            &env,
            &["delete", "namespace", self.namespace, "--wait=false"],
            None,
        );
    }
}

/// `sidecar-injector uninstall ARGS --kubeconfig`: exit code and stdout.
fn uninstall(env: &Env, args: &[&str]) -> (Option<i32>, String) {
    let mut all = vec![
        "uninstall",
        "--kubeconfig",
        env.kubeconfig.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let out = tokio::task::block_in_place(|| common::run(common::bin(), &all, None));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// `sidecar-injector check ARGS -o json`: exit code, reports, stderr.
fn check(env: &Env, args: &[&str]) -> (Option<i32>, Vec<Value>, String) {
    let mut all = vec![
        "check",
        "--kubeconfig",
        env.kubeconfig.to_str().unwrap(),
        "-o",
        "json",
    ];
    all.extend_from_slice(args);
    let out = tokio::task::block_in_place(|| common::run(common::bin(), &all, None));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let reports: Vec<Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("check's JSON: {e}: {stderr}"));
    (out.status.code(), reports, stderr)
}

/// The states `check` gave the Pods of `owner` in `ns`.
fn states(reports: &[Value], ns: &str, owner: &str) -> Vec<String> {
    reports
        .iter()
        .filter(|r| r["namespace"] == ns && r["owner"] == owner)
        .map(|r| r["state"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn generation(c: &Client, ns: &str, name: &str) -> i64 {
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(c.clone(), ns);
    let d = deployments.get(name).await.unwrap();
    d.metadata.generation.unwrap_or_default()
}

fn web(env: &Env, ns: &str) {
    tokio::task::block_in_place(|| {
        ok(&kubectl(
            env,
            &[
                "create",
                "deployment",
                "web",
                "--image=nginx:1.27",
                "-n",
                ns,
            ],
            None,
        ));
        rolled_out(env, ns, "deployment/web");
    });
}

/// The shipped config with the collector's log level changed: another template hash.
fn shipped_with_log_level(dir: &std::path::Path, level: &str) -> PathBuf {
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/base/config");
    let template = std::fs::read_to_string(shipped.join("mutate.yaml"))
        .unwrap()
        .replace(
            "value: \"{{ values.logLevel }}\"",
            &format!("value: {level}"),
        );
    assert!(
        template.contains(level),
        "the shipped template sets the log level"
    );
    let out = dir.join(level);
    std::fs::create_dir_all(&out).unwrap();
    std::fs::copy(shipped.join("config.yaml"), out.join("config.yaml")).unwrap();
    std::fs::write(out.join("mutate.yaml"), template).unwrap();
    out
}

/// Issue 33, finding 1: the release `inj` in `platform`. doctor found no webhook
/// configuration (it looked for `sidecar-injector`), check judged with the embedded default,
/// and repair restarted current Pods on every run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the in-cluster phase: tests/e2e/run"]
async fn helm_release_named_other_than_the_default() {
    let env = env();
    let c = client(&env).await;
    let release = Release::install(&env, &c).await;
    let app = opted_in(&c, "e2e-inj-app").await;
    webhook_in_effect(&c, &app).await;
    token_copy_made(&c, &app).await;

    // doctor, with no flag: every check passes, about the release's own objects.
    let findings = doctor_passes(&env, &[]).await;
    let message = |check: &str| message(&findings, check);
    assert!(
        message("webhook configuration").contains("MutatingWebhookConfiguration inj,"),
        "{findings:#?}"
    );
    assert!(
        message("config").contains(&format!("ConfigMap {PLATFORM}/sidecar-injector")),
        "{findings:#?}"
    );
    assert!(
        message("permissions").contains(&format!(
            "system:serviceaccount:{PLATFORM}:sidecar-injector"
        )),
        "{findings:#?}"
    );
    println!(
        "doctor on release {RELEASE}: {} checks pass",
        findings.len()
    );

    // images reads the release's ConfigMap and the image its Pods run.
    let out = common::run(
        common::bin(),
        &[
            "images",
            "--kubeconfig",
            env.kubeconfig.to_str().unwrap(),
            "-o",
            "json",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let used_by = |image: &str| {
        listed
            .iter()
            .find(|i| i["image"] == image)
            .map(|i| i["usedBy"][0].clone())
            .unwrap_or_else(|| panic!("{image} is not listed: {listed:#?}"))
    };
    assert_eq!(used_by("sidecar-injector:0.1.0")["template"], "injector");
    assert_eq!(
        used_by("sidecar-injector:0.1.0")["list"],
        format!("deployment {PLATFORM}/sidecar-injector")
    );
    assert_eq!(
        used_by("atlassian/bitbucket-pipelines-metrics-collector:2.1.0")["template"],
        "default"
    );
    println!("images on release {RELEASE}: {} images", listed.len());

    // check reads the release's ConfigMap.
    web(&env, &app);
    let (code, reports, stderr) = check(&env, &["-A"]);
    assert!(
        stderr.contains(&format!(
            "config: ConfigMap {PLATFORM}/sidecar-injector, as installed"
        )),
        "{stderr}"
    );
    assert_eq!(
        states(&reports, &app, "Deployment/web"),
        ["current"],
        "{stderr}"
    );
    assert_eq!(code, Some(0), "{stderr}");

    // helm upgrade with another template: the old Pod is stale, a new one current.
    let dir = tempfile::tempdir().unwrap();
    let upgraded = shipped_with_log_level(dir.path(), "UPGRADED");
    let template = format!(
        "config.templates.default={}",
        upgraded.join("mutate.yaml").display()
    );
    tokio::task::block_in_place(|| {
        ok(&helm(
            &env,
            &[
                "upgrade",
                RELEASE,
                chart().to_str().unwrap(),
                "--namespace",
                PLATFORM,
                "--reuse-values",
                "--set-file",
                &template,
            ],
        ))
    });
    let fresh = eventually("a Pod injected with the upgraded template", 30, || async {
        let p = create_pod(
            &c,
            &app,
            pod_json(&format!("fresh-{}", common::free_port()), json!({})),
        )
        .await
        .ok()?;
        serde_json::to_string(&p)
            .unwrap()
            .contains("UPGRADED")
            .then_some(p)
    })
    .await;
    let fresh = fresh.metadata.name.unwrap();
    let (_, reports, stderr) = check(&env, &["-A"]);
    assert_eq!(
        states(&reports, &app, "Deployment/web"),
        ["stale"],
        "{stderr}"
    );
    assert_eq!(
        states(&reports, &app, &format!("Pod/{fresh}")),
        ["current"],
        "{stderr}"
    );

    // check --repair twice: web restarted once, then left alone.
    let before = generation(&c, &app, "web").await;
    let (code, reports, stderr) = check(&env, &["-A", "--repair", "--max-per-minute", "10"]);
    assert!(
        stderr.contains("repair: 1 workload(s) rolled out"),
        "{stderr}"
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        states(&reports, &app, "Deployment/web"),
        ["current"],
        "{stderr}"
    );
    let once = generation(&c, &app, "web").await;
    assert_eq!(once, before + 1, "restarted once");
    let (code, _, stderr) = check(&env, &["-A", "--repair", "--max-per-minute", "10"]);
    assert!(
        stderr.contains("repair: 0 workload(s) rolled out"),
        "{stderr}"
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        generation(&c, &app, "web").await,
        once,
        "not restarted again"
    );
    drop(app);

    // Issue 33, finding 3: helm uninstall left the certificate Secret, the Lease and the
    // copies. `uninstall` refuses while the injector runs, lists with --dry-run, then removes
    // what the injector made, and keeps the token Secret the user made.
    let (code, said) = uninstall(&env, &["-n", PLATFORM]);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("the injector still runs"), "{said}");
    let (code, said) = uninstall(&env, &["-n", PLATFORM, "--dry-run"]);
    assert_eq!(code, Some(0), "{said}");
    assert!(
        said.contains(&format!(
            "would delete mutatingwebhookconfiguration {RELEASE}"
        )),
        "{said}"
    );
    release.uninstall(&env).await;
    let (code, said) = uninstall(&env, &["-n", PLATFORM]);
    assert_eq!(code, Some(0), "{said}");
    for line in [
        format!(
            "deleted secret {PLATFORM}/sidecar-injector-tls (the injector's CA and serving certificate)"
        ),
        format!("deleted lease {PLATFORM}/sidecar-injector-repair"),
        format!("kept secret {PLATFORM}/bitbucket-pipelines-metrics: the source you created"),
    ] {
        assert!(said.contains(&line), "{line:?} in {said}");
    }
    println!("uninstall after helm uninstall:\n{said}");
    let secrets: Api<Secret> = Api::namespaced(c.clone(), PLATFORM);
    assert!(
        secrets
            .get_opt("sidecar-injector-tls")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        secrets
            .get_opt("bitbucket-pipelines-metrics")
            .await
            .unwrap()
            .is_some()
    );
    let (_, said) = uninstall(&env, &["-n", PLATFORM]);
    assert!(
        !said.contains(&format!("deleted secret {PLATFORM}/")) && !said.contains("deleted lease"),
        "a second run finds nothing of the install's left: {said}"
    );
    let _ = tokio::task::block_in_place(|| {
        kubectl(
            &env,
            &["delete", "namespace", PLATFORM, "--wait=false"],
            None,
        )
    });
}

/// Issue 33: a workload whose Pods a restart cannot make current (here: judged against a
/// config the webhook does not serve) is restarted once for that config, then reported and
/// never restarted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the in-cluster phase: tests/e2e/run"]
async fn repair_never_loops() {
    let env = env();
    let c = client(&env).await;
    let install = Install::new(&env, &c, "e2e-repair-loop").await;
    let app = install.app.as_ref().unwrap().to_string();
    web(&env, &app);
    let dir = tempfile::tempdir().unwrap();
    let other = shipped_with_log_level(dir.path(), "NOT-SERVED");
    let other = other.to_str().unwrap();
    let args = [
        "-n",
        &app,
        "--repair",
        "--max-per-minute",
        "10",
        "--config",
        other,
    ];
    let before = generation(&c, &app, "web").await;
    let (_, reports, stderr) = check(&env, &args);
    assert!(
        stderr.contains("repair: 1 workload(s) rolled out"),
        "{stderr}"
    );
    assert_eq!(generation(&c, &app, "web").await, before + 1, "{stderr}");
    // The new Pod is what the webhook serves, so still stale against the other config.
    assert_eq!(
        states(&reports, &app, "Deployment/web"),
        ["stale"],
        "{stderr}"
    );
    let (_, _, stderr) = check(&env, &args);
    assert!(
        stderr.contains(&format!("not repaired again: {app}/Deployment/web")),
        "{stderr}"
    );
    assert!(
        stderr.contains("repair: 0 workload(s) rolled out"),
        "{stderr}"
    );
    assert_eq!(
        generation(&c, &app, "web").await,
        before + 1,
        "a second run restarts nothing"
    );
    println!(
        "repair_never_loops: {}",
        stderr
            .lines()
            .find(|l| l.starts_with("not repaired again"))
            .unwrap_or_default()
    );
    install.uninstall(&env).await;
}

/// Issue 33, finding 6: with the live ConfigMap invalid, check and preview said "…, which
/// the installed injector serves", which was false: the injector refuses it and keeps its
/// last good config. They now say so, with that config's hash read from the injector, and
/// how to see every problem; `validate --config configmap:NS/NAME` lists them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the in-cluster phase: tests/e2e/run"]
async fn check_with_an_invalid_live_configmap() {
    let env = env();
    let c = client(&env).await;
    let install = Install::new(&env, &c, "e2e-invalid-live").await;
    let app = install.app.as_ref().unwrap().to_string();
    // The hash the injector serves, decided for the nodes as doctor decides it.
    let (_, findings, _) = tokio::task::block_in_place(|| super::super::day_one::doctor(&env));
    let config = findings
        .iter()
        .find(|f| f["check"] == "config")
        .and_then(|f| f["message"].as_str())
        .unwrap_or_default()
        .to_owned();
    let served = config
        .rsplit("template hash ")
        .next()
        .unwrap_or_default()
        .trim_end_matches(')')
        .to_owned();
    assert_eq!(served.len(), 16, "doctor's config finding: {config}");
    let cm = format!("configmap:{NS}/sidecar-injector");
    tokio::task::block_in_place(|| {
        ok(&kubectl(
            &env,
            &[
                "patch",
                "configmap",
                "sidecar-injector",
                "-n",
                NS,
                "--type=merge",
                "-p",
                r#"{"data": {"mutate.yaml": "containers: ["}}"#,
            ],
            None,
        ))
    });
    let (code, _, stderr) = {
        let out = tokio::task::block_in_place(|| {
            common::run(
                common::bin(),
                &[
                    "check",
                    "--kubeconfig",
                    env.kubeconfig.to_str().unwrap(),
                    "-n",
                    &app,
                ],
                None,
            )
        });
        (
            out.status.code(),
            (),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(code, Some(2), "{stderr}");
    for said in [
        &format!("ConfigMap {NS}/sidecar-injector is invalid"),
        &format!("keeps serving its last good configuration, template hash {served}"),
        &format!("sidecar-injector validate --config {cm}"),
    ] {
        assert!(stderr.contains(said.as_str()), "{said:?} in {stderr}");
    }
    assert!(
        !stderr.contains("which the installed injector serves"),
        "{stderr}"
    );
    println!(
        "check with an invalid live ConfigMap: {}",
        stderr.lines().last().unwrap_or_default()
    );
    let out = tokio::task::block_in_place(|| {
        common::run(
            common::bin(),
            &[
                "validate",
                "--config",
                &cm,
                "--kubeconfig",
                env.kubeconfig.to_str().unwrap(),
            ],
            None,
        )
    });
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains(&format!("{cm}: 1 problem(s)")), "{said}");
    install.uninstall(&env).await;
}

/// Every Secret in the cluster labelled as made by the injector, as `namespace/name`.
async fn our_secrets(c: &Client) -> Vec<String> {
    let all: Api<Secret> = Api::all(c.clone());
    let lp =
        kube::api::ListParams::default().labels("app.kubernetes.io/managed-by=sidecar-injector");
    all.list_metadata(&lp)
        .await
        .unwrap()
        .items
        .iter()
        .map(|s| {
            format!(
                "{}/{}",
                s.metadata.namespace.as_deref().unwrap_or_default(),
                s.metadata.name.as_deref().unwrap_or_default()
            )
        })
        .collect()
}

/// Issue 33, finding 3: after `helm uninstall`, the certificate Secret, the Lease and every
/// copy stayed; a reinstall in another namespace then called its own copies "foreign". Now:
/// installed in `platform-a` with two namespaces opted in, uninstalled (helm, then
/// `sidecar-injector uninstall`), nothing of the install is left but the token Secret the
/// user made; installed again in `platform-b`, doctor passes every check and says nothing
/// foreign, and both namespaces get copies from the new source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the in-cluster phase: tests/e2e/run"]
async fn uninstall_and_reinstall_elsewhere() {
    let env = env();
    let c = client(&env).await;
    let (a, b) = ("platform-a", "platform-b");
    let release = Release::install_in(&env, &c, a).await;
    let one = opted_in(&c, "e2e-reinstall-one").await;
    let two = opted_in(&c, "e2e-reinstall-two").await;
    webhook_in_effect(&c, &one).await;
    token_copy_made(&c, &one).await;
    token_copy_made(&c, &two).await;
    let made = our_secrets(&c).await;
    for copy in [&*one, &*two].map(|ns| format!("{ns}/bitbucket-pipelines-metrics")) {
        assert!(made.contains(&copy), "{copy} in {made:?}");
    }
    assert!(
        made.contains(&format!("{a}/sidecar-injector-tls")),
        "{made:?}"
    );

    release.uninstall(&env).await;
    let (code, said) = uninstall(&env, &["-n", a]);
    assert_eq!(code, Some(0), "{said}");
    println!("uninstall in {a}:\n{said}");
    // Nothing of the install is left: no Secret it made (copies, certificate), no Lease, no
    // webhook configuration, no object of the release; the user's token Secret stays. (Only
    // this test's namespaces: an earlier test's may still be terminating.)
    let ours: Vec<String> = our_secrets(&c)
        .await
        .into_iter()
        .filter(|s| {
            [&*one, &*two, a]
                .iter()
                .any(|ns| s.starts_with(&format!("{ns}/")))
        })
        .collect();
    assert_eq!(ours, Vec::<String>::new(), "{said}");
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(c.clone(), a);
    let left: Vec<String> = leases
        .list_metadata(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|l| l.metadata.name)
        .collect();
    assert_eq!(left, Vec::<String>::new(), "Leases left in {a}");
    let release_objects = tokio::task::block_in_place(|| {
        ok(&kubectl(
            &env,
            &[
                "get",
                "mutatingwebhookconfigurations,validatingadmissionpolicies,clusterroles,clusterrolebindings,all,configmaps,serviceaccounts,roles,rolebindings",
                "-A",
                "-l",
                &format!("app.kubernetes.io/instance={RELEASE}"),
                "-o",
                "name",
            ],
            None,
        ))
    });
    assert_eq!(release_objects.trim(), "", "the release's objects left");
    let sources: Api<Secret> = Api::namespaced(c.clone(), a);
    assert!(
        sources
            .get_opt("bitbucket-pipelines-metrics")
            .await
            .unwrap()
            .is_some(),
        "the token Secret the user made stays"
    );

    // Installed again elsewhere: doctor passes, nothing is foreign, the copies come back from
    // the new source.
    let release = Release::install_in(&env, &c, b).await;
    webhook_in_effect(&c, &one).await;
    token_copy_made(&c, &one).await;
    token_copy_made(&c, &two).await;
    let findings = doctor_passes(&env, &[]).await;
    let said = serde_json::to_string(&findings).unwrap();
    assert!(!said.contains("foreign"), "{findings:#?}");
    let copies: Api<Secret> = Api::namespaced(c.clone(), &two);
    let copy = copies.get("bitbucket-pipelines-metrics").await.unwrap();
    assert_eq!(
        copy.metadata.annotations.unwrap_or_default()["sidecar-injector.io/copied-from"],
        format!("{b}/bitbucket-pipelines-metrics")
    );
    println!(
        "reinstall in {b}: doctor passes {} checks, none foreign",
        findings.len()
    );
    drop((one, two));
    release.uninstall(&env).await;
    tokio::task::block_in_place(|| {
        for ns in [a, b] {
            let _ = kubectl(&env, &["delete", "namespace", ns, "--wait=false"], None);
        }
    });
}
