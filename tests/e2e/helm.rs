//! Issue "install in one command": the Helm chart `charts/sidecar-injector` renders what
//! `manifests/` renders, and installs, upgrades and uninstalls on the real apiserver with the
//! `helm` built from its Go module (tests/e2e/build). The webhook runs on this host
//! (`webhook.url`) as the chart's ServiceAccount, keeping its own certificate: no certificate
//! step at all.

use super::day_one::Undo;
use super::secrets::{TOKEN, account_kubeconfig, token_secret};
use super::*;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use std::collections::BTreeMap;
use std::path::Path;

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

/// A release whose webhook calls this host (`webhook.url`), as a platform team runs it beside
/// a cluster: release, namespace and opt-in label share one name; `failurePolicy: Fail`; the
/// hooks' Pods go to no kwok node (the test plays their kubelet). Uninstalled without its
/// hooks when dropped, unless the test uninstalled it.
struct UrlRelease {
    name: &'static str,
    port: u16,
    settings_arg: String,
    dir: tempfile::TempDir,
    uninstall: Uninstall,
    _undo: Undo,
}

impl UrlRelease {
    fn install(env: &Env, name: &'static str) -> UrlRelease {
        let dir = tempfile::tempdir().unwrap();
        let mut undo = Undo::new();
        for ns in [name.to_owned(), format!("{name}-test")] {
            undo.kubectl(
                &format!("namespace {ns}"),
                &[
                    "delete",
                    "namespace",
                    &ns,
                    "--wait=false",
                    "--ignore-not-found",
                ],
            );
        }
        // The release's namespaces opt in by their own label: the config says so, and so
        // does the webhook's namespaceSelector.
        let settings = std::fs::read_to_string(shipped().join("config.yaml"))
            .unwrap()
            .replace(
                "namespaceLabel: sidecar-injection",
                &format!("namespaceLabel: {name}"),
            );
        let settings_file = dir.path().join("config.yaml");
        std::fs::write(&settings_file, &settings).unwrap();
        let release = UrlRelease {
            name,
            port: common::free_port(),
            settings_arg: format!("config.settings={}", settings_file.display()),
            dir,
            uninstall: Uninstall(env.kubeconfig.clone(), name.to_owned(), true),
            _undo: undo,
        };
        release.helm(env, "install", &["--create-namespace".into()]);
        release
    }

    /// Its `config.settings` from now on: the current text, changed by `change`.
    fn change_settings(&self, change: impl FnOnce(String) -> String) {
        let file = self.settings_arg.trim_start_matches("config.settings=");
        let changed = change(std::fs::read_to_string(file).unwrap());
        std::fs::write(file, changed).unwrap();
    }

    /// `helm VERB` of this release with its values, and `extra`.
    fn helm(&self, env: &Env, verb: &str, extra: &[String]) -> String {
        let label = self.name;
        let chart = chart();
        let url = format!("webhook.url=https://127.0.0.1:{}/mutate", self.port);
        let selector = format!(
            "webhook.namespaceSelector.matchExpressions[0].key={label},webhook.namespaceSelector.matchExpressions[0].operator=In,webhook.namespaceSelector.matchExpressions[0].values[0]=enabled"
        );
        let test_label = format!("hooks.test.namespaceLabels.{label}=enabled");
        let mut args: Vec<&str> = vec![
            verb,
            self.name,
            chart.to_str().unwrap(),
            "--namespace",
            self.name,
            "--set",
            &url,
            "--set",
            &selector,
            "--set",
            "webhook.failurePolicy=Fail",
            // No kwok node runs the hooks' Pods: the test plays their kubelet.
            "--set",
            "hooks.nodeSelector.e2e-runs-hooks=on-the-host",
            "--set",
            &test_label,
            "--set-file",
            &self.settings_arg,
        ];
        args.extend(extra.iter().map(String::as_str));
        ok(&helm(env, &args))
    }

    /// The webhook on this host, as the chart's ServiceAccount, run as the release's notes
    /// print it (issue 33: URL mode said nothing of what to run). Returns it and its flags.
    fn serve_from_notes(&self, env: &Env, pod: &str, log: &Path) -> (Beside, Vec<String>) {
        let notes = ok(&helm(
            env,
            &["get", "notes", self.name, "--namespace", self.name],
        ));
        let account = account_kubeconfig(env, self.name, "sidecar-injector", self.dir.path());
        let (pod_namespace, args) = serve_command(&notes, account.to_str().unwrap());
        assert_eq!(pod_namespace, self.name, "{notes}");
        assert!(
            args.contains(&format!("0.0.0.0:{}", self.port)),
            "the port of webhook.url: {notes}"
        );
        let serve = self.serve(&args, pod, log);
        (serve, args)
    }

    /// `serve ARGS` as Pod `pod` of the release's namespace, on the URL's port.
    fn serve(&self, args: &[String], pod: &str, log: &Path) -> Beside {
        let (child, tls, _) = common::spawn_serve_with_env(
            args,
            &[("POD_NAMESPACE", self.name), ("POD_NAME", pod)],
            log,
        );
        let serve = Beside(child);
        assert_eq!(
            tls,
            self.port,
            "serve: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        serve
    }
}

pub(crate) fn shipped() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/base/config")
}

/// Issue 33, finding 4: with `webhook.url` the chart renders no Deployment, so the flags the
/// outside `serve` needs appeared nowhere. The notes print the command: run as printed (the
/// test's port, a kubeconfig of the chart's ServiceAccount), with the token Secret the notes
/// ask for, every check of doctor passes on the release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: tests/e2e/run"]
async fn url_mode_notes_give_the_serve_command() {
    let env = env();
    let c = client(&env).await;
    let release = UrlRelease::install(&env, "e2e-url");
    let ns = release.name;
    let log = release.dir.path().join("serve.log");
    let (_serve, args) = release.serve_from_notes(&env, "url-a", &log);
    println!("helm install printed: serve {}", args.join(" "));
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(c.clone(), ns);
    secrets
        .create(
            &PostParams::default(),
            &super::secrets::token_secret(ns, "e2e"),
        )
        .await
        .unwrap();
    let app = namespace(&c, "e2e-url-app", json!({ns: "enabled"})).await;
    let pod = first_admitted(&c, &app, "a Pod injected through the URL").await;
    assert!(injected(&pod), "{:?}", containers(&pod));

    let findings = super::day_one::doctor_passes(&env, &["--webhook-configuration", ns]).await;
    let message = |check: &str| super::day_one::message(&findings, check);
    assert!(
        message("config").contains(&format!("ConfigMap {ns}/sidecar-injector")),
        "{findings:#?}"
    );
    for check in ["webhook reachable", "caBundle"] {
        assert!(
            findings
                .iter()
                .any(|f| f["check"] == check && f["outcome"] == "pass"),
            "{check}: {findings:#?}"
        );
    }
    println!(
        "url_mode_notes_give_the_serve_command: doctor passes {} checks",
        findings.len()
    );
    drop(app);
}

#[tokio::test]
#[ignore = "needs a cluster: tests/e2e/run"]
async fn helm_install_upgrade_uninstall() {
    let env = env();
    let c = client(&env).await;
    let mut r = UrlRelease::install(&env, "e2e-helm");
    let (release, ns, label) = (r.name, r.name, r.name);
    let installed = Instant::now();
    let log = r.dir.path().join("serve.log");
    let (serve, args) = r.serve_from_notes(&env, "helm-a", &log);
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

    // helm upgrade with another template: the caBundle is kept (the chart never renders
    // one) and new Pods get the new template. The injector is stopped first: running, it
    // would put back a caBundle the upgrade blanked within milliseconds, and hide it.
    drop(serve);
    let template = std::fs::read_to_string(shipped().join("mutate.yaml"))
        .unwrap()
        .replace("value: \"{{ values.logLevel }}\"", "value: UPGRADED");
    assert!(
        template.contains("UPGRADED"),
        "the shipped template sets the log level"
    );
    let template_file = r.dir.path().join("mutate.yaml");
    std::fs::write(&template_file, template).unwrap();
    r.helm(
        &env,
        "upgrade",
        &[
            "--set-file".into(),
            format!("config.templates.default={}", template_file.display()),
        ],
    );
    assert_eq!(
        ca_bundle(&c, release).await,
        Some(bundle),
        "the caBundle is kept by the upgrade itself, with no injector running"
    );
    let _serve = r.serve(&args, "helm-a2", &log);
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
    let (pod, out) = run_hook_pod(&env, &c, ns, "e2e-helm-test", r.dir.path()).await;
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
    let (pod, out) = run_hook_pod(&env, &c, ns, "e2e-helm-unregister", r.dir.path()).await;
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
    r.uninstall.2 = false;
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

/// A name dropped from `propagateSecrets` by `helm upgrade`: its copies are deleted. The
/// upgrade that drops the name also took its grant (RBAC and the Secret policy), so the
/// injector's delete was refused and the copy stayed in every opted-in namespace, holding
/// the Secret the operator meant to take back. The chart now keeps delete alone (no list,
/// no create, no update) on the dropped name for one release; the next upgrade takes it.
#[tokio::test]
#[ignore = "needs a cluster: tests/e2e/run"]
async fn helm_upgrade_dropping_a_secret_deletes_its_copies() {
    let env = env();
    let c = client(&env).await;
    let r = UrlRelease::install(&env, "e2e-helm-drop");
    let ns = r.name;
    Api::<Secret>::namespaced(c.clone(), ns)
        .create(&PostParams::default(), &token_secret(ns, "to-be-dropped"))
        .await
        .unwrap();
    let log = r.dir.path().join("serve.log");
    let (_serve, _) = r.serve_from_notes(&env, "drop-a", &log);
    let app = namespace(&c, "e2e-helm-drop-app", json!({ns: "enabled"})).await;
    let copies: Api<Secret> = Api::namespaced(c.clone(), &app);
    token_copy_made(&c, &app).await;
    let account = format!("system:serviceaccount:{ns}:sidecar-injector");
    let can = |verb: &str| {
        let out = kubectl(
            &env,
            &[
                "auth",
                "can-i",
                verb,
                &format!("secrets/{TOKEN}"),
                "-n",
                &app,
                "--as",
                &account,
            ],
            None,
        );
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    };

    r.change_settings(|s| {
        let dropped = s.replace(
            &format!("propagateSecrets: [{TOKEN}]"),
            "propagateSecrets: []",
        );
        assert_ne!(dropped, s, "the shipped config.yaml propagates {TOKEN}");
        dropped
    });
    r.helm(&env, "upgrade", &[]);
    let upgraded = Instant::now();
    secret_gone(
        "the copy deleted after the upgrade dropped its name",
        30,
        &copies,
        TOKEN,
    )
    .await;
    println!(
        "helm upgrade dropping {TOKEN}: its copy went {} ms after the upgrade",
        upgraded.elapsed().as_millis()
    );
    assert!(
        can("delete") && !can("list") && !can("update") && !can("create"),
        "for one release, the dropped name may be deleted, not written"
    );
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(
        !said.contains("could not delete"),
        "no delete refused: {said}"
    );

    // The next upgrade takes the grant back: nothing is left to delete.
    r.helm(&env, "upgrade", &[]);
    assert!(!can("delete") && !can("list"), "the grant is gone");
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
