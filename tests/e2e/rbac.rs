//! Issue "the product as deployed": `serve` and `check` as the shipped ServiceAccount, with the
//! shipped RBAC and the repair component's, every call judged by the apiserver's RBAC
//! authorizer and written to its audit log (the cluster logs the calls of the group
//! `system:serviceaccounts:e2e-rbac`, tests/e2e/cluster). The test drives every path that
//! calls the API, then reads the log: no call was refused (a rule missing fails), and every
//! verb of every rule was used (a rule not needed fails).

use super::certificates::{WEBHOOK_RULE, call_port, home, shipped_args, webhook_rule};
use super::day_one::Undo;
use super::secrets::{apply_configmap, config_dir, rbac_for, service_account_kubeconfig};
use super::*;
use k8s_openapi::api::core::v1::Secret;
use std::collections::BTreeSet;

const HOME: &str = "e2e-rbac";

/// The audit log's events for `user`, as (verb, apiGroup, resource, namespace, name, code).
fn audited(env: &Env, user: &str) -> Vec<(String, String, String, String, String, u16)> {
    let text = std::fs::read_to_string(env.work.join("cluster/audit.log"))
        .expect("the cluster's audit log (tests/e2e/cluster writes it)");
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["user"]["username"] == user && e["stage"] != "RequestReceived")
        .map(|e| {
            let o = &e["objectRef"];
            let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            let mut resource = s(&o["resource"]);
            if let Some(sub) = o["subresource"].as_str() {
                resource = format!("{resource}/{sub}");
            }
            (
                s(&e["verb"]),
                s(&o["apiGroup"]),
                resource,
                s(&o["namespace"]),
                s(&o["name"]),
                e["responseStatus"]["code"].as_u64().unwrap_or(0) as u16,
            )
        })
        .collect()
}

/// Every (verb, apiGroup, resource, namespace or "" for a ClusterRole, name or "") the roles
/// of `text` grant.
fn granted(text: &str, home: &str) -> BTreeSet<(String, String, String, String, String)> {
    let docs: Vec<Value> = sidecar_injector::engine::yaml::documents(text).unwrap();
    let mut out = BTreeSet::new();
    for d in docs {
        let ns = match d["kind"].as_str() {
            Some("ClusterRole") => String::new(),
            Some("Role") => d["metadata"]["namespace"]
                .as_str()
                .unwrap_or(home)
                .to_owned(),
            _ => continue,
        };
        for rule in d["rules"].as_array().unwrap() {
            let list = |k: &str| -> Vec<String> {
                rule[k]
                    .as_array()
                    .map(|a| a.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
                    .unwrap_or_default()
            };
            let names = match list("resourceNames") {
                n if n.is_empty() => vec![String::new()],
                n => n,
            };
            for verb in list("verbs") {
                for group in list("apiGroups") {
                    for resource in list("resources") {
                        for name in &names {
                            out.insert((
                                verb.clone(),
                                group.clone(),
                                resource.clone(),
                                ns.clone(),
                                name.clone(),
                            ));
                        }
                    }
                }
            }
        }
    }
    out
}

/// Runs its closure on a failed assertion (when dropped while panicking), so that CI's output
/// says what the processes and the cluster were doing.
struct OnPanic<F: Fn()>(F);

impl<F: Fn()> Drop for OnPanic<F> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            (self.0)();
        }
    }
}

#[tokio::test]
#[ignore = "needs a cluster: tests/e2e/run"]
async fn rbac_as_service_account() {
    let env = env();
    let c = client(&env).await;
    let dir = tempfile::tempdir().unwrap();
    let mut undo = Undo::new();
    let _home = home(&env, &c, HOME, &mut undo).await;
    let user = format!("system:serviceaccount:{HOME}:{HOME}");
    // The repair component's RBAC, moved to this home.
    let repair = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("manifests/components/repair/rbac.yaml"),
    )
    .unwrap()
    .replace(
        "name: sidecar-injector-repair",
        &format!("name: {HOME}-repair"),
    )
    .replace("name: sidecar-injector", &format!("name: {HOME}"))
    .replace("namespace: sidecar-injector", &format!("namespace: {HOME}"));
    for kind in ["clusterrole", "clusterrolebinding"] {
        let name = format!("{HOME}-repair");
        undo.kubectl(
            &format!("{kind} {name}"),
            &["delete", kind, &name, "--ignore-not-found"],
        );
    }
    ok(&kubectl(&env, &["apply", "-f", "-"], Some(&repair)));
    let applied = rbac_for(HOME, &[(WEBHOOK_RULE, &webhook_rule(HOME))]);
    let rules = granted(&format!("{applied}\n---\n{repair}"), HOME);

    // The live ConfigMap: the shipped config, opting in by this test's label, repairing.
    // The webhook is called for namespaces labelled `{HOME}: on` (certificates::home); the
    // config opts them in by `{HOME}-inject=enabled`.
    let label = format!("{HOME}-inject");
    let config = config_dir(dir.path(), &label);
    let settings = std::fs::read_to_string(config.join("config.yaml"))
        .unwrap()
        .replace("  enabled: false", "  enabled: true")
        .replace("  maxPerMinute: 1", "  maxPerMinute: 60")
        .replace("  intervalSeconds: 60", "  intervalSeconds: 2");
    assert!(settings.contains("maxPerMinute: 60") && settings.contains("intervalSeconds: 2"));
    std::fs::write(config.join("config.yaml"), &settings).unwrap();
    apply_configmap(&env, HOME, &config);
    let secrets: Api<Secret> = Api::namespaced(c.clone(), HOME);
    let token = |value: &str| -> Secret {
        serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "bitbucket-pipelines-metrics", "namespace": HOME},
            "stringData": {"api-token": value}}))
        .unwrap()
    };
    secrets
        .create(&PostParams::default(), &token("first"))
        .await
        .unwrap();

    // An application namespace with workloads of every kind repair restarts, and a Job,
    // running before the namespace opts in: their Pods lack the sidecar.
    let app = namespace(&c, "e2e-rbac-app", json!({})).await;
    let workloads = format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {app}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec: {{containers: [{{name: app, image: registry.k8s.io/pause:3.10}}]}}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: db, namespace: {app}}}
spec:
  replicas: 1
  serviceName: db
  selector: {{matchLabels: {{app: db}}}}
  template:
    metadata: {{labels: {{app: db}}}}
    spec: {{containers: [{{name: app, image: registry.k8s.io/pause:3.10}}]}}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: agent, namespace: {app}}}
spec:
  selector: {{matchLabels: {{app: agent}}}}
  template:
    metadata: {{labels: {{app: agent}}}}
    # On the kwok nodes alone: a Node another test adds without a kubelet (cordoned
    # does not keep a DaemonSet off) would hold the rollout, and repair waits for it.
    spec:
      nodeSelector: {{type: kwok}}
      containers: [{{name: app, image: registry.k8s.io/pause:3.10}}]
---
apiVersion: batch/v1
kind: Job
metadata: {{name: batch, namespace: {app}}}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{{name: app, image: registry.k8s.io/pause:3.10}}]
"#,
        app = *app
    );
    ok(&kubectl(&env, &["apply", "-f", "-"], Some(&workloads)));
    let pods: Api<Pod> = Api::namespaced(c.clone(), &app);
    eventually("the workloads' Pods running", 60, || async {
        let list = pods.list(&ListParams::default()).await.ok()?;
        let running = list
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count();
        (running >= 5).then_some(())
    })
    .await;

    // serve as the ServiceAccount: the live ConfigMap, its own certificate (short-lived, so
    // it renews), the Lease, repair and the Secret copies.
    let log = dir.path().join("serve.log");
    let kubeconfig = service_account_kubeconfig(&env, HOME, dir.path());
    let mut args = shipped_args(HOME, &kubeconfig);
    args.extend(["--cert-validity".into(), "30s".into()]);
    let (child, port, _) = common::spawn_serve_with_env(
        &args,
        &[("POD_NAMESPACE", HOME), ("POD_NAME", "rbac-a")],
        &log,
    );
    let _serve = Beside(child);
    let _show = OnPanic(|| {
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains("repair")).collect();
        eprintln!(
            "--- serve's log, the last 40 of its {} lines on repair:",
            lines.len()
        );
        for line in &lines[lines.len().saturating_sub(40)..] {
            eprintln!("{line}");
        }
        for what in [
            vec!["get", "ds,deploy,sts,pods", "-o", "wide", "-n", &app],
            vec!["get", "events", "-n", &app],
            vec!["get", "nodes"],
        ] {
            let out = kubectl(&env, &what, None);
            eprintln!(
                "--- kubectl {}:\n{}{}",
                what.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    });
    let said = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(port != 0, "serve: {}", said());
    call_port(&env, HOME, port);

    // Opt in, by both labels.
    ok(&kubectl(
        &env,
        &[
            "label",
            "namespace",
            &app,
            &format!("{label}=enabled"),
            &format!("{HOME}=on"),
            "--overwrite",
        ],
        None,
    ));
    let copies: Api<Secret> = Api::namespaced(c.clone(), &app);
    eventually(
        "the token copied into the opted-in namespace",
        30,
        || async { copies.get_opt("bitbucket-pipelines-metrics").await.ok()? },
    )
    .await;
    let pod = first_admitted(&c, &app, "a Pod injected").await;
    assert!(injected(&pod), "{:?}", containers(&pod));
    // An injected Pod stuck in ContainerCreating, on a Node no kubelet manages (cordoned, and
    // tainted so that the DaemonSet leaves it alone): after a minute, check reads the
    // namespace's FailedMount Events for it.
    let node = format!("{HOME}-no-kubelet");
    ok(&kubectl(
        &env,
        &["apply", "-f", "-"],
        Some(
            &json!({"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": node, "labels": {"kubernetes.io/os": "linux"}},
                "spec": {"unschedulable": true,
                    "taints": [{"key": "e2e-no-kubelet", "effect": "NoSchedule"}]}})
            .to_string(),
        ),
    ));
    undo.kubectl("the Node", &["delete", "node", &node, "--wait=false"]);
    let mut stuck = pod_json("stuck", json!({}));
    stuck["spec"]["nodeName"] = json!(node);
    let stuck_at = Instant::now();
    assert!(injected(&create_pod(&c, &app, stuck).await.unwrap()));
    let waiting = |name: &str| {
        json!({"name": name, "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ContainerCreating"}}})
    };
    pods.patch_status(
        "stuck",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({"status": {"phase": "Pending",
            "containerStatuses": [waiting("app"), waiting(COLLECTOR)]}})),
    )
    .await
    .unwrap();
    // Repair rolls the Deployment, the StatefulSet and the DaemonSet.
    eventually("repair to restart the three workloads", 60, || async {
        let mut restarted = 0;
        for (kind, name) in [
            ("deployment", "web"),
            ("statefulset", "db"),
            ("daemonset", "agent"),
        ] {
            let out = kubectl(
                &env,
                &[
                    "get",
                    kind,
                    name,
                    "-n",
                    &app,
                    "-o",
                    "jsonpath={.spec.template.metadata.annotations}",
                ],
                None,
            );
            if String::from_utf8_lossy(&out.stdout).contains("restartedAt") {
                restarted += 1;
            }
        }
        (restarted == 3).then_some(())
    })
    .await;

    // The source changes: the copy follows.
    secrets
        .replace(
            "bitbucket-pipelines-metrics",
            &PostParams::default(),
            &token("second"),
        )
        .await
        .unwrap();
    eventually("the copy updated", 30, || async {
        let s = copies.get_opt("bitbucket-pipelines-metrics").await.ok()??;
        (s.data?.get("api-token")?.0 == b"second").then_some(())
    })
    .await;

    // A bad config, twice: refused, with a Warning Event on the ConfigMap.
    let bad = dir.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("config.yaml"), "policy: sometimes\n").unwrap();
    std::fs::copy(config.join("mutate.yaml"), bad.join("mutate.yaml")).unwrap();
    apply_configmap(&env, HOME, &bad);
    std::fs::write(bad.join("config.yaml"), "policy: rarely\n").unwrap();
    apply_configmap(&env, HOME, &bad);
    eventually("a ConfigRefused Event", 30, || async {
        let out = kubectl(
            &env,
            &["get", "events.events.k8s.io", "-n", HOME, "-o", "json"],
            None,
        );
        String::from_utf8_lossy(&out.stdout)
            .contains("ConfigRefused")
            .then_some(())
    })
    .await;
    apply_configmap(&env, HOME, &config);

    // check, as the ServiceAccount: every namespace, then the application's once its stuck
    // Pod is a minute old.
    let check = |scope: &[&str]| {
        let mut args = vec!["check", "--config", config.to_str().unwrap()];
        args.extend_from_slice(&["--kubeconfig", kubeconfig.to_str().unwrap()]);
        args.extend_from_slice(scope);
        let out = common::run(common::bin(), &args, None);
        let said = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.code() != Some(2),
            "check {scope:?} could not run as the ServiceAccount: {said}"
        );
        said
    };
    check(&["-A"]);

    // The 30 s certificate is renewed with 10 s left: the Secret is updated.
    let tls = secrets.get("sidecar-injector-tls").await.unwrap();
    let first = tls.metadata.resource_version.clone();
    eventually("the serving certificate renewed", 40, || async {
        let now = secrets.get("sidecar-injector-tls").await.ok()?;
        (now.metadata.resource_version != first).then_some(())
    })
    .await;

    tokio::time::sleep(
        (sidecar_injector::cluster::check::MOUNT_GRACE + Duration::from_secs(2))
            .saturating_sub(stuck_at.elapsed()),
    )
    .await;
    let said_check = check(&["-n", &app]);
    assert!(
        said_check.contains("stuck") && said_check.contains("failing"),
        "check names the stuck Pod failing: {said_check}"
    );

    // Opt out: the copy stays while the app's Pods use it (issue 33), then goes with them
    // (their workloads too, or those make new Pods that use it).
    ok(&kubectl(
        &env,
        &["label", "namespace", &app, &format!("{label}-")],
        None,
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        copies
            .get_opt("bitbucket-pipelines-metrics")
            .await
            .unwrap()
            .is_some(),
        "kept while the app's Pods use it"
    );
    ok(&kubectl(
        &env,
        &[
            "delete",
            "deployments,statefulsets,daemonsets,replicasets,pods",
            "--all",
            "-n",
            &app,
            "--grace-period=0",
            "--force",
        ],
        None,
    ));
    eventually(
        "the copy deleted when the namespace opts out",
        30,
        || async {
            copies
                .get_opt("bitbucket-pipelines-metrics")
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
    )
    .await;
    // The audit log: nothing refused, and every granted verb used.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let calls = audited(&env, &user);
    assert!(!calls.is_empty(), "the audit log has no call of {user}");
    let refused: BTreeSet<_> = calls.iter().filter(|c| c.5 == 403).collect();
    assert!(
        refused.is_empty(),
        "calls of {user} the shipped RBAC refused (a rule is missing): {refused:#?}\nserve: {}",
        said()
    );
    let mut unused = Vec::new();
    let mut table = Vec::new();
    for (verb, group, resource, ns, name) in &rules {
        let uses = calls
            .iter()
            .filter(|(v, g, r, n, o, code)| {
                v == verb
                    && g == group
                    && r == resource
                    && (ns.is_empty() || n == ns)
                    && (name.is_empty() || o == name)
                    && *code != 401
            })
            .count();
        table.push(format!(
            "{uses:>5}  {verb} {group}/{resource}{}{}",
            if ns.is_empty() {
                String::new()
            } else {
                format!(" in {ns}")
            },
            if name.is_empty() {
                String::new()
            } else {
                format!(" named {name}")
            }
        ));
        // Read only for a webhook called through its Service, before an old CA leaves the
        // caBundle; this phase's webhook is called by URL, whose look at the replicas is a
        // handshake with the URL. The grant itself is checked on the shipped install by
        // doctor's permission check (in_cluster::doctor_on_the_default_install), and the
        // reading by cluster::served's tests.
        let service_path_only =
            (group.as_str(), resource.as_str()) == ("discovery.k8s.io", "endpointslices");
        if uses == 0 && !service_path_only {
            unused.push((verb, group, resource, ns, name));
        }
    }
    println!("calls of {user} per granted verb:\n{}", table.join("\n"));
    assert!(
        unused.is_empty(),
        "granted but never used (a rule not needed, or a path this test does not drive): {unused:#?}"
    );
}
