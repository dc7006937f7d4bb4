//! Issue "secret propagation": `serve`, running as the shipped ServiceAccount with the
//! shipped RBAC (the apiserver authorizes every call; not admin), keeps the Secrets of
//! `propagateSecrets` in every opted-in namespace: created, updated, recreated and removed
//! within 5 s each; a same-named Secret of someone else's left byte-identical and reported;
//! of two replicas, only the Lease holder writes.
//!
//! Each test has its own home namespace, ServiceAccount and copy of the shipped RBAC (the
//! same rules, bound to that account), so tests do not share a Lease.

#[path = "secrets_day_two.rs"]
mod day_two;

use super::day_one::Undo;
use super::*;
use k8s_openapi::ByteString;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use std::collections::BTreeMap;

/// The name the shipped config lists and the shipped RBAC grants.
pub(crate) const TOKEN: &str = "bitbucket-pipelines-metrics";
/// Within this long, each change reaches the copies (the figure).
const WITHIN: Duration = Duration::from_secs(5);

/// The shipped ServiceAccount and RBAC, with `home` for the injector's namespace and the
/// names of the cluster-wide objects, and the `more` replacements after; the cluster-wide
/// objects are removed by `undo`.
pub(crate) fn install_rbac(env: &Env, home: &str, more: &[(&str, &str)], undo: &mut Undo) {
    let text = rbac_for(home, more);
    for kind in ["clusterrole", "clusterrolebinding"] {
        for name in [
            home.to_owned(),
            format!("{home}-secrets"),
            format!("{home}-webhook"),
        ] {
            undo.kubectl(
                &format!("{kind} {name}"),
                &["delete", kind, &name, "--ignore-not-found"],
            );
        }
    }
    for kind in [
        "validatingadmissionpolicy",
        "validatingadmissionpolicybinding",
    ] {
        let name = format!("{home}-secrets");
        undo.kubectl(
            &format!("{kind} {name}"),
            &["delete", kind, &name, "--ignore-not-found"],
        );
    }
    ok(&kubectl(env, &["apply", "-f", "-"], Some(&text)));
}

/// The shipped ServiceAccount, RBAC and Secret policy as [`install_rbac`] applies them.
pub(crate) fn rbac_for(home: &str, more: &[(&str, &str)]) -> String {
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/base");
    let mut text = String::new();
    for file in ["serviceaccount.yaml", "rbac.yaml", "secret-policy.yaml"] {
        text.push_str(&std::fs::read_to_string(base.join(file)).unwrap());
        text.push_str("\n---\n");
    }
    let shipped = text.clone();
    let mut text = text
        .replace("namespace: sidecar-injector", &format!("namespace: {home}"))
        .replace("name: sidecar-injector", &format!("name: {home}"))
        // The policy: the account it binds, the namespace of the certificate Secret.
        .replace(
            "policyName: sidecar-injector",
            &format!("policyName: {home}"),
        )
        .replace(
            "'system:serviceaccount:sidecar-injector:sidecar-injector'",
            &format!("'system:serviceaccount:{home}:{home}'"),
        )
        .replace(
            "request.namespace == 'sidecar-injector'",
            &format!("request.namespace == '{home}'"),
        );
    for (from, to) in more {
        assert!(text.contains(from), "the shipped RBAC has no {from:?}");
        text = text.replace(from, to);
    }
    assert!(
        !text.contains("namespace: sidecar-injector")
            && shipped.contains(&format!("resourceNames: [{TOKEN}]")),
        "the shipped RBAC grants {TOKEN} by name, and every subject moved to {home}"
    );
    text
}

/// A kubeconfig that authenticates as `home`'s ServiceAccount `home` (a token from the
/// TokenRequest API), for the cluster of the suite's kubeconfig.
pub(crate) fn service_account_kubeconfig(env: &Env, home: &str, dir: &std::path::Path) -> PathBuf {
    account_kubeconfig(env, home, home, dir)
}

/// [`service_account_kubeconfig`] for the ServiceAccount `account` of namespace `ns`.
pub(crate) fn account_kubeconfig(
    env: &Env,
    ns: &str,
    account: &str,
    dir: &std::path::Path,
) -> PathBuf {
    let token = ok(&kubectl(
        env,
        &["create", "token", account, "-n", ns, "--duration=1h"],
        None,
    ));
    let admin = Kubeconfig::read_from(&env.kubeconfig).unwrap();
    let cluster = admin.clusters[0].cluster.clone().unwrap();
    let server = cluster.server.unwrap();
    let ca = cluster.certificate_authority_data.unwrap();
    let path = dir.join(format!("{ns}-{account}.kubeconfig"));
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: sa\n  user:\n    token: {}\ncontexts:\n- name: sa\n  context: {{cluster: e2e, user: sa}}\ncurrent-context: sa\n",
            token.trim()
        ),
    )
    .unwrap();
    path
}

/// The shipped config with its own namespace label.
pub(crate) fn config_dir(dir: &std::path::Path, label: &str) -> PathBuf {
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/base/config");
    let config = dir.join("config");
    std::fs::create_dir_all(&config).unwrap();
    let settings = std::fs::read_to_string(shipped.join("config.yaml"))
        .unwrap()
        .replace(
            "namespaceLabel: sidecar-injection",
            &format!("namespaceLabel: {label}"),
        );
    assert!(settings.contains(&format!("propagateSecrets: [{TOKEN}]")));
    std::fs::write(config.join("config.yaml"), settings).unwrap();
    std::fs::copy(shipped.join("mutate.yaml"), config.join("mutate.yaml")).unwrap();
    config
}

/// The ConfigMap `sidecar-injector` of namespace `home`, from a config directory, applied.
pub(crate) fn apply_configmap(env: &Env, home: &str, dir: &std::path::Path) {
    let yaml = ok(&kubectl(
        env,
        &[
            "create",
            "configmap",
            "sidecar-injector",
            "-n",
            home,
            &format!("--from-file={}", dir.display()),
            "--dry-run=client",
            "-o",
            "yaml",
        ],
        None,
    ));
    ok(&kubectl(env, &["apply", "-f", "-"], Some(&yaml)));
}

/// The token Secret (`bitbucket-pipelines-metrics`, key `api-token`) in `ns`.
pub(crate) fn token_secret(ns: &str, token: &str) -> Secret {
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(TOKEN.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "api-token".to_owned(),
            ByteString(token.as_bytes().to_vec()),
        )])),
        ..Default::default()
    }
}

fn token_of(s: &Secret) -> String {
    let data = s.data.as_ref().and_then(|d| d.get("api-token"));
    String::from_utf8_lossy(data.map(|b| b.0.as_slice()).unwrap_or_default()).into_owned()
}

/// Polls every 50 ms until `f` holds; the time since `start` it took. Fails after 20 s
/// (so a slow copy is reported with its figure, not as a timeout of unknown length), and
/// when it took over [`WITHIN`].
async fn took<F, Fut>(start: Instant, what: &str, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    while !f().await {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{what}: not within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let t = start.elapsed();
    println!("{what}: {} ms", t.as_millis());
    assert!(t < WITHIN, "{what} took {t:?}, over {WITHIN:?}");
    t
}

/// A home namespace with the source, its ServiceAccount and RBAC, and a config.
struct Home {
    name: String,
    kubeconfig: PathBuf,
    config: PathBuf,
    /// Deleted with the rest of the test's state.
    _ns: Ns,
}

async fn home(
    env: &Env,
    c: &Client,
    name: &str,
    label: &str,
    source_token: &str,
    dir: &std::path::Path,
    undo: &mut Undo,
) -> Home {
    let ns = namespace(c, name, json!({})).await;
    install_rbac(env, name, &[], undo);
    let secrets: Api<Secret> = Api::namespaced(c.clone(), name);
    secrets
        .create(&PostParams::default(), &token_secret(name, source_token))
        .await
        .unwrap();
    Home {
        name: name.to_owned(),
        kubeconfig: service_account_kubeconfig(env, name, dir),
        config: config_dir(dir, label),
        _ns: ns,
    }
}

fn replica(env: &Env, home: &Home, dir: &std::path::Path, name: &str) -> (Beside, u16, PathBuf) {
    let log = dir.join(format!("{name}.log"));
    let args = vec![
        "--config".to_owned(),
        home.config.display().to_string(),
        "--kubeconfig".into(),
        home.kubeconfig.display().to_string(),
    ];
    let (child, port, metrics) = serve_beside(
        env,
        &log,
        &args,
        &[("POD_NAMESPACE", home.name.as_str()), ("POD_NAME", name)],
    );
    assert!(
        port != 0,
        "{name} did not serve: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    (child, metrics, log)
}

/// The value of `secret_copies{state}` on a replica's metrics.
async fn copies_metric(port: u16, state: &str) -> f64 {
    metric(
        port,
        &format!("sidecar_injector_secret_copies{{state=\"{state}\"}}"),
    )
    .await
}

#[tokio::test]
#[ignore = "needs a cluster: tests/e2e/run"]
async fn secrets_propagate_sync_and_clean_up() {
    let env = env();
    let c = client(&env).await;
    let dir = tempfile::tempdir().unwrap();
    let mut undo = Undo::new();
    let label = "e2e-secrets-sync";
    let home = home(
        &env,
        &c,
        "e2e-secrets-sync-home",
        label,
        "e2e-token-one-5c1d",
        dir.path(),
        &mut undo,
    )
    .await;
    let mut replicas = Vec::new();
    for name in ["replica-a", "replica-b"] {
        replicas.push(replica(&env, &home, dir.path(), name));
    }
    // The Lease holder, once it has made its first pass (the metric appears).
    let leases: Api<Lease> = Api::namespaced(c.clone(), &home.name);
    let holder = eventually("a replica to hold the Lease", 30, || async {
        let lease = leases.get_opt("sidecar-injector-repair").await.ok()??;
        lease.spec?.holder_identity
    })
    .await;
    let (holder_metrics, holder_log, other_log) = match holder.as_str() {
        "replica-a" => (replicas[0].1, &replicas[0].2, &replicas[1].2),
        _ => (replicas[1].1, &replicas[1].2, &replicas[0].2),
    };
    eventually("the holder's first pass", 30, || async {
        let text = reqwest::get(format!("http://127.0.0.1:{holder_metrics}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.contains("sidecar_injector_secret_copies{")
            .then_some(())
    })
    .await;

    // Create: a namespace that opts in gets its copy.
    let ns = "e2e-secrets-sync";
    let _ns = namespace(&c, ns, json!({})).await;
    let copies: Api<Secret> = Api::namespaced(c.clone(), ns);
    let start = Instant::now();
    ok(&kubectl(
        &env,
        &["label", "namespace", ns, &format!("{label}=enabled")],
        None,
    ));
    took(start, "copy created after the label", || async {
        copies.get_opt(TOKEN).await.ok().flatten().is_some()
    })
    .await;
    let copy = copies.get(TOKEN).await.unwrap();
    assert_eq!(token_of(&copy), "e2e-token-one-5c1d");
    assert_eq!(copy.type_.as_deref(), Some("Opaque"));
    let meta = &copy.metadata;
    assert_eq!(
        meta.labels.as_ref().unwrap()["app.kubernetes.io/managed-by"],
        "sidecar-injector"
    );
    assert_eq!(
        meta.annotations.as_ref().unwrap()["sidecar-injector.io/copied-from"],
        format!("{}/{TOKEN}", home.name)
    );
    eventually(
        "secret_copies{state=in_sync} 1 on the holder",
        10,
        || async { (copies_metric(holder_metrics, "in_sync").await == 1.0).then_some(()) },
    )
    .await;

    // Update: a changed source reaches the copy.
    let sources: Api<Secret> = Api::namespaced(c.clone(), &home.name);
    let mut source = sources.get(TOKEN).await.unwrap();
    source.data = token_secret(&home.name, "e2e-token-two-9e4b").data;
    let start = Instant::now();
    sources
        .replace(TOKEN, &PostParams::default(), &source)
        .await
        .unwrap();
    took(start, "a changed source copied", || async {
        copies
            .get_opt(TOKEN)
            .await
            .ok()
            .flatten()
            .is_some_and(|s| token_of(&s) == "e2e-token-two-9e4b")
    })
    .await;

    // Recreate: a deleted copy comes back.
    let before = copies.get(TOKEN).await.unwrap().metadata.uid;
    let start = Instant::now();
    copies
        .delete(TOKEN, &DeleteParams::default())
        .await
        .unwrap();
    took(start, "a deleted copy recreated", || async {
        copies
            .get_opt(TOKEN)
            .await
            .ok()
            .flatten()
            .is_some_and(|s| s.metadata.uid != before && token_of(&s) == "e2e-token-two-9e4b")
    })
    .await;

    // Remove: the namespace opts out, the copy goes.
    let start = Instant::now();
    ok(&kubectl(
        &env,
        &["label", "namespace", ns, &format!("{label}-")],
        None,
    ));
    took(
        start,
        "the copy removed after the label is removed",
        || async { copies.get_opt(TOKEN).await.ok().flatten().is_none() },
    )
    .await;
    // The source stays.
    assert_eq!(
        token_of(&sources.get(TOKEN).await.unwrap()),
        "e2e-token-two-9e4b"
    );

    // Only the holder wrote, and no log line holds the data.
    let holder_text = std::fs::read_to_string(holder_log).unwrap();
    let other_text = std::fs::read_to_string(other_log).unwrap();
    for verb in ["created", "updated", "deleted"] {
        assert!(
            holder_text.contains(&format!("propagateSecrets: copy {verb}")),
            "the holder logs each write ({verb})"
        );
    }
    assert!(
        !other_text.contains("propagateSecrets: copy "),
        "the replica without the Lease wrote: {other_text}"
    );
    for text in [&holder_text, &other_text] {
        assert!(!text.contains("e2e-token-one-5c1d") && !text.contains("e2e-token-two-9e4b"));
        assert!(
            !text.contains("forbidden") && !text.contains("Forbidden"),
            "the shipped RBAC lacks a permission serve uses: {text}"
        );
    }
}

#[tokio::test]
#[ignore = "needs a cluster: tests/e2e/run"]
async fn secrets_foreign_left_alone() {
    let env = env();
    let c = client(&env).await;
    let dir = tempfile::tempdir().unwrap();
    let mut undo = Undo::new();
    let label = "e2e-secrets-foreign";
    let home = home(
        &env,
        &c,
        "e2e-secrets-foreign-home",
        label,
        "e2e-token-ours-77aa",
        dir.path(),
        &mut undo,
    )
    .await;
    let (_serve, metrics, log) = replica(&env, &home, dir.path(), "replica-only");

    // Someone else's Secret of that name, in a namespace not yet opted in.
    let ns = "e2e-secrets-foreign";
    let _ns = namespace(&c, ns, json!({})).await;
    let secrets: Api<Secret> = Api::namespaced(c.clone(), ns);
    let mut theirs = token_secret(ns, "their-own-token-3b3b");
    theirs.metadata.labels = Some(BTreeMap::from([("owner".to_owned(), "team-x".to_owned())]));
    let theirs = secrets
        .create(&PostParams::default(), &theirs)
        .await
        .unwrap();

    ok(&kubectl(
        &env,
        &["label", "namespace", ns, &format!("{label}=enabled")],
        None,
    ));
    // Reported: a Warning Event on that Secret, and the metric.
    let note = eventually("a Warning Event on the foreign Secret", 30, || async {
        events(&env, ns)
            .into_iter()
            .find(|(reason, kind, name, _)| {
                reason == "SecretNotOurs" && kind == "Secret" && name == TOKEN
            })
            .map(|(_, _, _, note)| note)
    })
    .await;
    assert!(
        note.contains("not made by sidecar-injector") && note.contains("delete this Secret"),
        "{note}"
    );
    eventually("secret_copies{state=foreign} 1", 30, || async {
        (copies_metric(metrics, "foreign").await == 1.0).then_some(())
    })
    .await;
    // Two more full comparisons later (a resync every 30 s, or a watch event, starts one)
    // it is still untouched, byte for byte.
    let passes = |text: &str| text.matches("propagateSecrets: pass done").count();
    let seen = passes(&std::fs::read_to_string(&log).unwrap());
    eventually("two more passes of the copies", 70, || async {
        (passes(&std::fs::read_to_string(&log).unwrap()) >= seen + 2).then_some(())
    })
    .await;
    let now = secrets.get(TOKEN).await.unwrap();
    assert_eq!(
        now.metadata.resource_version,
        theirs.metadata.resource_version
    );
    assert_eq!(now.data, theirs.data);
    assert_eq!(now.metadata.labels, theirs.metadata.labels);
    assert_eq!(now.metadata.annotations, theirs.metadata.annotations);
    assert_eq!(copies_metric(metrics, "foreign").await, 1.0);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("is someone else's; left as it is"), "{text}");
    assert!(!text.contains("their-own-token-3b3b"));

    // Once they delete theirs, the copy comes (the Secrets of the name are watched,
    // metadata only).
    let start = Instant::now();
    secrets
        .delete(TOKEN, &DeleteParams::default())
        .await
        .unwrap();
    took(start, "our copy once theirs is deleted", || async {
        secrets
            .get_opt(TOKEN)
            .await
            .ok()
            .flatten()
            .is_some_and(|s| token_of(&s) == "e2e-token-ours-77aa")
    })
    .await;
    eventually("secret_copies{state=foreign} back to 0", 10, || async {
        (copies_metric(metrics, "foreign").await == 0.0).then_some(())
    })
    .await;
}

/// The token Secret in the suite's install namespace, as the README's install step makes it
/// (once; already there is fine).
pub(crate) async fn token_source_once(env: &Env) {
    let out = kubectl(
        env,
        &[
            "create",
            "secret",
            "generic",
            TOKEN,
            "--from-literal=api-token=e2e",
            "-n",
            "sidecar-injector",
        ],
        None,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() || err.contains("already exists"),
        "{err}"
    );
}

/// The "Done when": with the default install, the token Secret created once in
/// `sidecar-injector`, a namespace labelled a moment ago gets its copy within seconds, and
/// its injected Pods name that Secret. Says whether the copy came before the first Pod.
#[tokio::test]
#[ignore = "needs a cluster: tests/e2e/run"]
async fn with_the_default_install_the_token_created_once_reaches_a_new_namespace() {
    let env = env();
    let c = client(&env).await;
    token_source_once(&env).await;
    let start = Instant::now();
    let ns = opted_in(&c, "e2e-secrets-default").await;
    let copies: Api<Secret> = Api::namespaced(c.clone(), &ns);
    // `opted_in` returns once the namespace's default ServiceAccount exists, the earliest a
    // Pod can be created there.
    let copy_before_pod = copies.get_opt(TOKEN).await.unwrap().is_some();
    let pod = create_pod(&c, &ns, pod_json("web", json!({})))
        .await
        .unwrap();
    let pod_at = start.elapsed();
    assert!(injected(&pod));
    let copy_at = took(
        start,
        "the token copied into a new opted-in namespace",
        || async { copies.get_opt(TOKEN).await.ok().flatten().is_some() },
    )
    .await;
    println!(
        "namespace created with the label at 0 ms, first Pod created at {} ms, copy {} (seen at {} ms)",
        pod_at.as_millis(),
        if copy_before_pod {
            "already there before the Pod"
        } else {
            "after the Pod"
        },
        copy_at.as_millis()
    );
    // The Pod's collector reads that very Secret and key.
    let env_from = |p: &Pod| -> Option<(String, String)> {
        let c = p
            .spec
            .as_ref()?
            .containers
            .iter()
            .find(|c| c.name == COLLECTOR)?;
        let r = c
            .env
            .iter()
            .flatten()
            .find_map(|e| e.value_from.as_ref()?.secret_key_ref.clone())?;
        Some((r.name, r.key))
    };
    assert_eq!(
        env_from(&pod),
        Some((TOKEN.to_owned(), "api-token".to_owned()))
    );
    let copy = copies.get(TOKEN).await.unwrap();
    assert!(copy.data.unwrap().contains_key("api-token"));
}

/// A Secret as the injector would write one: labelled managed-by, of `kind`.
fn labelled(ns: &str, name: &str, kind: &str, annotations: Value) -> Secret {
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": ns, "annotations": annotations,
            "labels": {"app.kubernetes.io/managed-by": "sidecar-injector"}},
        "type": kind, "data": {"api-token": "c3RvbGVu"}}))
    .unwrap()
}

/// The apiserver's answer to a create, as (code, message); `None` when it was created.
async fn create_as(api: &Api<Secret>, secret: &Secret) -> Option<(u16, String)> {
    match api.create(&PostParams::default(), secret).await {
        Ok(_) => None,
        Err(kube::Error::Api(e)) => Some((e.code, e.message)),
        Err(e) => panic!("create {:?}: {e}", secret.metadata.name),
    }
}

/// Issue 32, item 8: the shipped RBAC grants `create` on every Secret name (RBAC cannot
/// limit it), and `list` on the propagated name everywhere; with those alone, the injector's
/// token could create `kube-system/bitbucket-pipelines-metrics` as a service-account-token
/// Secret, let the token controller fill it in, and read it back. As that ServiceAccount,
/// with the shipped RBAC and the shipped ValidatingAdmissionPolicy: that create, an Opaque
/// Secret of an unlisted name there, and a write over someone else's Secret are refused,
/// each with a message naming the policy; propagation still works, a source recreated with
/// another type has its copy replaced (item 7), and a source of a service-account-token type
/// is never copied, with a Warning Event on it.
#[tokio::test]
#[ignore = "needs a cluster: tests/e2e/run"]
async fn injector_cannot_mint_tokens() {
    let env = env();
    let c = client(&env).await;
    let dir = tempfile::tempdir().unwrap();
    let mut undo = Undo::new();
    let label = "e2e-mint-inject";
    let home = home(
        &env,
        &c,
        "e2e-mint",
        label,
        "e2e-token-mint-77ab",
        dir.path(),
        &mut undo,
    )
    .await;
    let sa = client_at(&home.kubeconfig).await;
    let system: Api<Secret> = Api::namespaced(sa.clone(), "kube-system");
    let system_admin: Api<Secret> = Api::namespaced(c.clone(), "kube-system");
    let delete_admin = |name: &'static str| {
        let api = system_admin.clone();
        async move {
            let _ = api.delete(name, &Default::default()).await;
        }
    };
    // The policy is enforced a moment after it is created: until then RBAC alone decides,
    // and the create goes through (deleted, and tried again).
    let unlisted = labelled("kube-system", "e2e-mint-unlisted", "Opaque", json!({}));
    let start = Instant::now();
    let (code, message) = loop {
        match create_as(&system, &unlisted).await {
            Some(refused) => break refused,
            None => {
                delete_admin("e2e-mint-unlisted").await;
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "the policy never refused an unlisted Secret"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    println!("an Opaque Secret of an unlisted name: {code} {message}");
    assert_eq!(code, 403, "{message}");
    assert!(
        message.contains("kube-system/e2e-mint-unlisted")
            && message.contains("ValidatingAdmissionPolicy 'e2e-mint-secrets'"),
        "{message}"
    );

    // The escalation: a token Secret of the propagated name, for a ServiceAccount there.
    let mint = labelled(
        "kube-system",
        TOKEN,
        "kubernetes.io/service-account-token",
        json!({"kubernetes.io/service-account.name": "default"}),
    );
    let refused = create_as(&system, &mint).await;
    if refused.is_none() {
        delete_admin(TOKEN).await;
    }
    let (code, message) = refused.expect("a service-account-token Secret created by the injector");
    println!("a service-account-token Secret of the propagated name: {code} {message}");
    assert_eq!(code, 403, "{message}");
    assert!(
        message.contains("kubernetes.io/service-account-token")
            && message.contains("ValidatingAdmissionPolicy 'e2e-mint-secrets'"),
        "{message}"
    );

    // Someone else's Secret of the propagated name is not overwritten, even relabelled.
    let theirs = system_admin
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": TOKEN, "namespace": "kube-system"},
                "type": "Opaque", "data": {"api-token": "dGhlaXJz"}}))
            .unwrap(),
        )
        .await
        .unwrap();
    let mut over = labelled("kube-system", TOKEN, "Opaque", json!({}));
    over.metadata.resource_version = theirs.metadata.resource_version.clone();
    let replaced = system.replace(TOKEN, &PostParams::default(), &over).await;
    let deleted = system.delete(TOKEN, &Default::default()).await;
    delete_admin(TOKEN).await;
    for (what, result) in [
        ("replace", replaced.map(|_| ())),
        ("delete", deleted.map(|_| ())),
    ] {
        match result {
            Err(kube::Error::Api(e)) => {
                println!("{what} someone else's Secret: {} {}", e.code, e.message);
                assert_eq!(e.code, 403, "{what}: {}", e.message);
                assert!(e.message.contains("someone else made it"), "{}", e.message);
            }
            other => panic!("{what} of someone else's Secret was not refused: {other:?}"),
        }
    }

    // Propagation still works under the policy: a replica as this ServiceAccount copies
    // the source into an opted-in namespace.
    let (_replica, metrics, log) = replica(&env, &home, dir.path(), "replica-mint");
    let ns = "e2e-mint-team";
    let mut labels = serde_json::Map::new();
    labels.insert(label.into(), "enabled".into());
    let _ns = namespace(&c, ns, Value::Object(labels)).await;
    let copies: Api<Secret> = Api::namespaced(c.clone(), ns);
    let copy = eventually("the copy under the policy", 30, || async {
        copies.get_opt(TOKEN).await.ok().flatten()
    })
    .await;
    assert_eq!(token_of(&copy), "e2e-token-mint-77ab");

    // Item 7: the source recreated with another type; the copy follows (deleted, created).
    let sources: Api<Secret> = Api::namespaced(c.clone(), &home.name);
    sources.delete(TOKEN, &Default::default()).await.unwrap();
    let basic: Secret = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": TOKEN, "namespace": home.name},
        "type": "kubernetes.io/basic-auth",
        "stringData": {"username": "collector", "password": "e2e-basic-31f0"}}))
    .unwrap();
    sources
        .create(&PostParams::default(), &basic)
        .await
        .unwrap();
    let start = Instant::now();
    took(
        start,
        "copy replaced after the source's type changed",
        || async {
            copies
                .get_opt(TOKEN)
                .await
                .ok()
                .flatten()
                .is_some_and(|s| s.type_.as_deref() == Some("kubernetes.io/basic-auth"))
        },
    )
    .await;

    // A source of a type that means something to Kubernetes is never copied: the copy
    // stays as it was, and the source gets a Warning Event saying what to do.
    sources.delete(TOKEN, &Default::default()).await.unwrap();
    let token_type: Secret = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": TOKEN, "namespace": home.name,
            "annotations": {"kubernetes.io/service-account.name": home.name}},
        "type": "kubernetes.io/service-account-token"}))
    .unwrap();
    sources
        .create(&PostParams::default(), &token_type)
        .await
        .unwrap();
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(c.clone(), &home.name);
    let note = eventually("a SecretNotCopyable Event on the source", 30, || async {
        let list = events.list(&Default::default()).await.ok()?;
        list.items.into_iter().find_map(|e| {
            (e.reason.as_deref() == Some("SecretNotCopyable")
                && e.regarding.as_ref()?.name.as_deref() == Some(TOKEN))
            .then_some(e.note?)
        })
    })
    .await;
    println!("the Event: {note}");
    assert!(
        note.contains("kubernetes.io/service-account-token") && note.contains("propagateSecrets"),
        "{note}"
    );
    let still = copies.get(TOKEN).await.unwrap();
    assert_eq!(still.type_.as_deref(), Some("kubernetes.io/basic-auth"));
    assert!(copies_metric(metrics, "failing").await >= 1.0);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !text.contains("could not create the copy"),
        "a copy was refused:\n{text}"
    );
    drop(undo);
}
