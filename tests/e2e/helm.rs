//! Issue "install in one command": the Helm chart `charts/sidecar-injector` renders what
//! `manifests/` renders, and installs, upgrades and uninstalls on the real apiserver with the
//! `helm` built from its Go module (tests/e2e/build). The webhook runs on this host
//! (`webhook.url`) as the chart's ServiceAccount, keeping its own certificate: no certificate
//! step at all.

use super::day_one::Undo;
use super::secrets::account_kubeconfig;
use super::*;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use std::collections::BTreeMap;

pub(crate) fn helm_bin() -> PathBuf {
    std::env::var("E2E_HELM")
        .expect("E2E_HELM is not set: run the e2e tests with tests/e2e/run")
        .into()
}

pub(crate) fn chart() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/sidecar-injector")
}

/// Runs helm against the suite's cluster.
pub(crate) fn helm(env: &Env, args: &[&str]) -> Output {
    let mut all = vec!["--kubeconfig", env.kubeconfig.to_str().unwrap()];
    all.extend_from_slice(args);
    common::run(helm_bin(), &all, None)
}

/// A document's Helm hook annotation, if it is a hook.
fn hook(d: &Value) -> Option<&str> {
    d["metadata"]["annotations"]["helm.sh/hook"].as_str()
}

/// Documents by kind and name, the Namespace left out (Helm does not create it) and the
/// chart's hooks too (kustomize has none).
fn by_name(text: &str) -> BTreeMap<(String, String), Value> {
    let docs: Vec<Value> = sidecar_injector::engine::yaml::documents(text).unwrap();
    docs.into_iter()
        .filter(|d| d["kind"] != "Namespace" && hook(d).is_none())
        .map(|mut d| {
            let kind = d["kind"].as_str().unwrap().to_owned();
            // kustomize's schema does not know these kinds as cluster-scoped and gives them
            // the base's namespace; the apiserver drops it (they are cluster-scoped).
            if kind.starts_with("ValidatingAdmissionPolicy")
                && let Some(m) = d["metadata"].as_object_mut()
            {
                m.remove("namespace");
            }
            let name = d["metadata"]["name"].as_str().unwrap().to_owned();
            ((kind, name), d)
        })
        .collect()
}

#[tokio::test]
#[ignore = "needs a cluster: tests/e2e/run"]
async fn kustomize_and_helm_render_the_same() {
    let env = env();
    let lint = helm(&env, &["lint", "--strict", chart().to_str().unwrap()]);
    ok(&lint);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let chart = chart();
    for (kustomization, values) in [
        ("manifests", vec![]),
        (
            "manifests/overlays/cert-manager",
            vec!["--set", "certificates.mode=certManager"],
        ),
        (
            "manifests/overlays/local",
            vec!["--set", "webhook.url=https://127.0.0.1:8443/mutate"],
        ),
    ] {
        let kustomized = by_name(&ok(&kubectl(
            &env,
            &["kustomize", root.join(kustomization).to_str().unwrap()],
            None,
        )));
        let mut args = vec![
            "template",
            "sidecar-injector",
            chart.to_str().unwrap(),
            "--namespace",
            "sidecar-injector",
        ];
        args.extend(values.iter().copied());
        let rendered = by_name(&ok(&helm(&env, &args)));
        assert_eq!(
            kustomized.keys().collect::<Vec<_>>(),
            rendered.keys().collect::<Vec<_>>(),
            "{kustomization}: the same objects"
        );
        for (key, k) in &kustomized {
            assert!(
                *k == rendered[key],
                "{kustomization} {key:?} differs:\nkustomize: {}\nhelm: {}",
                serde_json::to_string_pretty(k).unwrap(),
                serde_json::to_string_pretty(&rendered[key]).unwrap()
            );
        }
        println!("{kustomization}: {} objects, the same", kustomized.len());
    }
    // The hooks, each with its own ServiceAccount and only the rights its command needs.
    let hooks = |extra: &[&str]| {
        let mut args = vec!["template", "sidecar-injector", chart.to_str().unwrap()];
        args.extend_from_slice(&["--namespace", "sidecar-injector"]);
        args.extend_from_slice(extra);
        let docs: Vec<Value> =
            sidecar_injector::engine::yaml::documents(&ok(&helm(&env, &args))).unwrap();
        docs.into_iter()
            .filter_map(|d| {
                let hook = hook(&d)?.to_owned();
                Some(((hook, d["kind"].as_str()?.to_owned()), d))
            })
            .collect::<BTreeMap<_, _>>()
    };
    let all = hooks(&[]);
    let names: Vec<String> = all
        .iter()
        .map(|((h, k), d)| format!("{h} {k}/{}", d["metadata"]["name"].as_str().unwrap()))
        .collect();
    assert_eq!(
        names,
        [
            "pre-delete ClusterRole/sidecar-injector-unregister",
            "pre-delete ClusterRoleBinding/sidecar-injector-unregister",
            "pre-delete Job/sidecar-injector-unregister",
            "pre-delete ServiceAccount/sidecar-injector-unregister",
            "test Namespace/sidecar-injector-test",
            "test Pod/sidecar-injector-test",
            "test Role/sidecar-injector-test",
            "test RoleBinding/sidecar-injector-test",
            "test ServiceAccount/sidecar-injector-test",
        ]
    );
    let key = |h: &str, k: &str| (h.to_owned(), k.to_owned());
    assert_eq!(
        all[&key("pre-delete", "ClusterRole")]["rules"],
        json!([{"apiGroups": ["admissionregistration.k8s.io"], "resources": ["mutatingwebhookconfigurations"],
                "resourceNames": ["sidecar-injector"], "verbs": ["delete"]}])
    );
    assert_eq!(
        all[&key("test", "Role")]["rules"],
        json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]}])
    );
    assert_eq!(
        all[&key("test", "Namespace")]["metadata"]["labels"]["sidecar-injection"],
        "enabled",
        "the test's namespace opts in as the default config and selector want"
    );
    assert!(
        hooks(&["--set", "hooks.unregisterOnDelete=false"])
            .keys()
            .all(|(h, _)| h == "test"),
        "hooks.unregisterOnDelete=false: no pre-delete hook"
    );
    println!("hooks: {}", names.join(", "));
    // A private registry: every Pod of the chart (the Deployment's and each hook's) pulls the
    // index pinned by its digest, with the pull secret.
    let digest = format!("sha256:{}", "0123456789abcdef".repeat(4));
    let private = ok(&helm(
        &env,
        &[
            "template",
            "sidecar-injector",
            chart.to_str().unwrap(),
            "--namespace",
            "sidecar-injector",
            "--set",
            "image.repository=registry.corp.example/platform/sidecar-injector",
            "--set",
            &format!("image.digest={digest}"),
            "--set",
            "image.pullSecrets[0]=corp-registry",
        ],
    ));
    let docs: Vec<Value> = sidecar_injector::engine::yaml::documents(&private).unwrap();
    let pod_specs: Vec<(&str, &Value)> = docs
        .iter()
        .filter_map(|d| {
            let spec = match d["kind"].as_str()? {
                "Pod" => &d["spec"],
                "Deployment" | "Job" => &d["spec"]["template"]["spec"],
                _ => return None,
            };
            Some((d["metadata"]["name"].as_str()?, spec))
        })
        .collect();
    assert_eq!(
        pod_specs.len(),
        3,
        "the Deployment, the test Pod, the unregister Job"
    );
    for (name, spec) in &pod_specs {
        assert_eq!(
            spec["imagePullSecrets"],
            json!([{"name": "corp-registry"}]),
            "{name}"
        );
        assert_eq!(
            spec["containers"][0]["image"],
            format!("registry.corp.example/platform/sidecar-injector:0.1.0@{digest}"),
            "{name}"
        );
    }
    println!(
        "image.pullSecrets and image.digest: on {} Pod specs",
        pod_specs.len()
    );
    let bad_digest = helm(
        &env,
        &[
            "template",
            "x",
            chart.to_str().unwrap(),
            "--set",
            "image.digest=latest",
        ],
    );
    assert!(!bad_digest.status.success());
    let said = String::from_utf8_lossy(&bad_digest.stderr);
    assert!(said.contains("/image/digest"), "{said}");
    // A wrong value is refused with a message that names it.
    let wrong = helm(
        &env,
        &[
            "template",
            "x",
            chart.to_str().unwrap(),
            "--set",
            "certificates.mode=selfmanaged",
        ],
    );
    assert!(!wrong.status.success());
    let said = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        said.contains("/certificates/mode") && said.contains("selfManaged"),
        "{said}"
    );
}

async fn ca_bundle(c: &Client, name: &str) -> Option<Vec<u8>> {
    let hook = Api::<MutatingWebhookConfiguration>::all(c.clone())
        .get_opt(name)
        .await
        .unwrap()?;
    Some(hook.webhooks?.first()?.client_config.ca_bundle.clone()?.0)
}

#[tokio::test]
#[ignore = "needs a cluster: tests/e2e/run"]
async fn helm_install_upgrade_uninstall() {
    let env = env();
    let c = client(&env).await;
    let dir = tempfile::tempdir().unwrap();
    let mut undo = Undo::new();
    let (release, ns, label) = ("e2e-helm", "e2e-helm", "e2e-helm");
    undo.kubectl(
        "namespace e2e-helm",
        &[
            "delete",
            "namespace",
            ns,
            "--wait=false",
            "--ignore-not-found",
        ],
    );
    undo.kubectl(
        "namespace e2e-helm-test",
        &[
            "delete",
            "namespace",
            "e2e-helm-test",
            "--wait=false",
            "--ignore-not-found",
        ],
    );
    let mut uninstall = Uninstall(env.kubeconfig.clone(), release.to_owned(), true);
    // This test's namespaces opt in by their own label: the config says so, and so does the
    // webhook's namespaceSelector.
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/base/config");
    let settings = std::fs::read_to_string(shipped.join("config.yaml"))
        .unwrap()
        .replace(
            "namespaceLabel: sidecar-injection",
            &format!("namespaceLabel: {label}"),
        );
    let settings_file = dir.path().join("config.yaml");
    std::fs::write(&settings_file, &settings).unwrap();
    let port = common::free_port();
    let url = format!("webhook.url=https://127.0.0.1:{port}/mutate");
    let selector = format!(
        "webhook.namespaceSelector.matchExpressions[0].key={label},webhook.namespaceSelector.matchExpressions[0].operator=In,webhook.namespaceSelector.matchExpressions[0].values[0]=enabled"
    );
    let settings_arg = format!("config.settings={}", settings_file.display());
    let test_label = format!("hooks.test.namespaceLabels.{label}=enabled");
    let chart = chart();
    let install = |verb: &'static str, extra: Vec<String>| {
        let mut args: Vec<String> = [
            verb,
            release,
            chart.to_str().unwrap(),
            "--namespace",
            ns,
            "--set",
            &url,
            "--set",
            &selector,
            "--set",
            "webhook.failurePolicy=Fail",
            // No kwok node runs the hooks' Pods: this test plays their kubelet.
            "--set",
            "hooks.nodeSelector.e2e-runs-hooks=on-the-host",
            "--set",
            &test_label,
            "--set-file",
            &settings_arg,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if verb == "install" {
            args.push("--create-namespace".into());
        }
        args.extend(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ok(&helm(&env, &args))
    };
    install("install", vec![]);
    let installed = Instant::now();

    // The webhook on this host, as the chart's ServiceAccount, run as the release's notes
    // print it (issue 33: URL mode said nothing of what to run): it makes its certificate and
    // sets the caBundle of the release's webhook configuration.
    let log = dir.path().join("serve.log");
    let notes = ok(&helm(&env, &["get", "notes", release, "--namespace", ns]));
    let account = account_kubeconfig(&env, ns, "sidecar-injector", dir.path());
    let (pod_namespace, args) = serve_command(&notes, account.to_str().unwrap());
    assert_eq!(pod_namespace, ns, "{notes}");
    assert!(
        args.contains(&format!("0.0.0.0:{port}")),
        "the port of webhook.url: {notes}"
    );
    println!("helm install printed: serve {}", args.join(" "));
    let (child, tls, _) = common::spawn_serve_with_env(
        &args,
        &[("POD_NAMESPACE", &pod_namespace), ("POD_NAME", "helm-a")],
        &log,
    );
    let serve = Beside(child);
    assert_eq!(
        tls,
        port,
        "serve: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let app = namespace(&c, "e2e-helm-app", json!({label: "enabled"})).await;
    let pod = eventually("a Pod injected after helm install", 30, || async {
        create_pod(
            &c,
            &app,
            pod_json(&format!("a-{}", common::free_port()), json!({})),
        )
        .await
        .ok()
    })
    .await;
    assert!(injected(&pod), "{:?}", containers(&pod));
    println!(
        "helm install to the first injected Pod: {} ms, no certificate step",
        installed.elapsed().as_millis()
    );
    let bundle = ca_bundle(&c, release).await.expect("the caBundle is set");
    // doctor finds the release among the cluster's installs by the name it is given, and
    // checks the serve the notes printed: reached, with the caBundle and the release's config.
    let out = common::run(
        common::bin(),
        &[
            "doctor",
            "--offline",
            "--kubeconfig",
            env.kubeconfig.to_str().unwrap(),
            "--webhook-configuration",
            release,
            "-o",
            "json",
        ],
        None,
    );
    let findings: Vec<Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    for check in [
        "webhook configuration",
        "webhook reachable",
        "caBundle",
        "config",
    ] {
        let f = findings.iter().find(|f| f["check"] == check);
        assert!(
            f.is_some_and(|f| f["outcome"] == "pass"),
            "{check}: {findings:#?}"
        );
    }
    let config = findings.iter().find(|f| f["check"] == "config").unwrap();
    assert!(
        config["message"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("ConfigMap {ns}/sidecar-injector")),
        "{config}"
    );

    // helm upgrade with another template: the caBundle is kept (the chart never renders
    // one) and new Pods get the new template. The injector is stopped first: running, it
    // would put back a caBundle the upgrade blanked within milliseconds, and hide it.
    drop(serve);
    let template = std::fs::read_to_string(shipped.join("mutate.yaml"))
        .unwrap()
        .replace("value: \"{{ values.logLevel }}\"", "value: UPGRADED");
    assert!(
        template.contains("UPGRADED"),
        "the shipped template sets the log level"
    );
    let template_file = dir.path().join("mutate.yaml");
    std::fs::write(&template_file, template).unwrap();
    install(
        "upgrade",
        vec![
            "--set-file".into(),
            format!("config.templates.default={}", template_file.display()),
        ],
    );
    assert_eq!(
        ca_bundle(&c, release).await,
        Some(bundle),
        "the caBundle is kept by the upgrade itself, with no injector running"
    );
    let (child, tls, _) = common::spawn_serve_with_env(
        &args,
        &[("POD_NAMESPACE", ns), ("POD_NAME", "helm-a2")],
        &log,
    );
    let _serve = Beside(child);
    assert_eq!(
        tls,
        port,
        "serve again: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let upgraded = eventually("a Pod with the new template", 30, || async {
        let p = create_pod(
            &c,
            &app,
            pod_json(&format!("b-{}", common::free_port()), json!({})),
        )
        .await
        .ok()?;
        serde_json::to_string(&p)
            .unwrap()
            .contains("UPGRADED")
            .then_some(p)
    })
    .await;
    assert!(injected(&upgraded));

    // helm test: its Pod, as its own ServiceAccount, makes a dry-run Pod in the namespace the
    // test made with the opt-in label, and it comes back injected.
    let testing = std::thread::spawn(move || {
        helm(
            &super::env(),
            &["test", release, "--namespace", ns, "--timeout", "90s"],
        )
    });
    let (pod, out) = run_hook_pod(&env, &c, ns, "e2e-helm-test", dir.path()).await;
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success()
            && said.contains("injected: a server-side dry-run Pod in namespace e2e-helm-test"),
        "probe: {said}"
    );
    report_hook_pod(&c, ns, &pod, &out).await;
    let tested = ok(&testing.join().unwrap());
    assert!(
        tested
            .lines()
            .any(|l| l.starts_with("Phase:") && l.ends_with("Succeeded")),
        "{tested}"
    );
    println!("helm test: {}", said.trim());

    // helm uninstall: its pre-delete hook deletes the webhook configuration while every
    // object of the release is still there (Helm alone deletes it last), so no Fail webhook
    // is ever left without its server; then Pods are created without it.
    let uninstalling = std::thread::spawn(move || {
        helm(
            &super::env(),
            &[
                "uninstall",
                release,
                "--namespace",
                ns,
                "--wait",
                "--timeout",
                "90s",
            ],
        )
    });
    let (pod, out) = run_hook_pod(&env, &c, ns, "e2e-helm-unregister", dir.path()).await;
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && said.contains("deleted mutatingwebhookconfiguration e2e-helm"),
        "unregister: {said}"
    );
    let hooks = Api::<MutatingWebhookConfiguration>::all(c.clone());
    assert!(hooks.get_opt(release).await.unwrap().is_none());
    let configmaps: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(c.clone(), ns);
    assert!(
        configmaps
            .get_opt("sidecar-injector")
            .await
            .unwrap()
            .is_some(),
        "Helm waits for the hook: the release's ConfigMap is still there"
    );
    report_hook_pod(&c, ns, &pod, &out).await;
    ok(&uninstalling.join().unwrap());
    uninstall.2 = false;
    assert!(
        configmaps
            .get_opt("sidecar-injector")
            .await
            .unwrap()
            .is_none(),
        "helm uninstall deleted the release's objects after the hook"
    );
    println!("helm uninstall: {}", said.trim());
    let plain = create_pod(&c, &app, pod_json("after-uninstall", json!({})))
        .await
        .unwrap();
    assert_eq!(containers(&plain), ["app"]);
}

/// The `serve` command of a release's notes, as a user copies it: its POD_NAMESPACE and its
/// flags, with `kubeconfig` for the placeholder KUBECONFIG.
fn serve_command(notes: &str, kubeconfig: &str) -> (String, Vec<String>) {
    let mut lines = notes
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with("POD_NAMESPACE="));
    let mut words = Vec::new();
    for line in lines.by_ref() {
        words.extend(
            line.trim_end_matches('\\')
                .split_whitespace()
                .map(str::to_owned),
        );
        if !line.ends_with('\\') {
            break;
        }
    }
    let Some((first, rest)) = words.split_first() else {
        panic!("no serve command in the notes: {notes}");
    };
    let pod_namespace = first.trim_start_matches("POD_NAMESPACE=").to_owned();
    assert_eq!(&rest[..2], ["sidecar-injector", "serve"], "{notes}");
    let args = rest[2..]
        .iter()
        .map(|w| {
            if w == "KUBECONFIG" {
                kubeconfig.to_owned()
            } else {
                w.clone()
            }
        })
        .collect();
    (pod_namespace, args)
}

/// Plays kubelet for a hook Pod the chart's nodeSelector keeps off every kwok node: runs its
/// command on this host as its ServiceAccount (a TokenRequest token), as the Pod would.
async fn run_hook_pod(
    env: &Env,
    c: &Client,
    ns: &str,
    name: &str,
    dir: &std::path::Path,
) -> (Pod, Output) {
    let pods: Api<Pod> = Api::namespaced(c.clone(), ns);
    let selector = format!("app.kubernetes.io/name={name}");
    let pod = eventually(&format!("the hook Pod {name}"), 60, || async {
        pods.list(&ListParams::default().labels(&selector))
            .await
            .ok()?
            .items
            .into_iter()
            .find(|p| p.metadata.deletion_timestamp.is_none())
    })
    .await;
    let spec = pod.spec.clone().unwrap();
    let account = spec.service_account_name.clone().unwrap();
    let kubeconfig = account_kubeconfig(env, ns, &account, dir);
    let mut args = spec.containers[0].args.clone().unwrap();
    args.push(format!("--kubeconfig={}", kubeconfig.display()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = common::run(common::bin(), &args, None);
    (pod, out)
}

/// What kubelet reports when the hook's container has ended: the Pod's phase and exit code.
async fn report_hook_pod(c: &Client, ns: &str, pod: &Pod, out: &Output) {
    let code = out.status.code().unwrap_or(1);
    let container = &pod.spec.as_ref().unwrap().containers[0];
    let now = rfc3339_now();
    let status = json!({"status": {
        "phase": if code == 0 { "Succeeded" } else { "Failed" },
        "containerStatuses": [{
            "name": container.name, "image": container.image, "imageID": "", "ready": false,
            "restartCount": 0,
            "state": {"terminated": {"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" },
                                     "startedAt": now, "finishedAt": now}}
        }]
    }});
    Api::<Pod>::namespaced(c.clone(), ns)
        .patch_status(
            pod.metadata.name.as_deref().unwrap(),
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(status),
        )
        .await
        .unwrap();
}

/// `helm uninstall` of the release, when dropped while armed (a failed assertion): without
/// hooks, for no kwok node runs them.
struct Uninstall(PathBuf, String, bool);

impl Drop for Uninstall {
    fn drop(&mut self) {
        if !self.2 {
            return;
        }
        let out = common::run(
            helm_bin(),
            &[
                "--kubeconfig",
                self.0.to_str().unwrap(),
                "uninstall",
                &self.1,
                "--namespace",
                &self.1,
                "--no-hooks",
                "--wait",
            ],
            None,
        );
        if !out.status.success() {
            eprintln!("helm uninstall: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}
