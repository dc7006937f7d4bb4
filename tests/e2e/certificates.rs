//! Issue "install in one command": `serve --cert-secret NS/NAME --webhook-configuration NAME`
//! makes its CA and serving certificate itself, keeps the webhook's caBundle, and rotates
//! both with no failed call. `serve` runs as the shipped ServiceAccount with the shipped RBAC
//! (moved to the test's own namespace and webhook configuration), so the apiserver's
//! authorizer judges every call it makes; the webhook is called by URL on this host with
//! `failurePolicy: Fail`, so a caBundle that does not verify the served certificate refuses
//! the Pod.

use super::day_one::Undo;
use super::secrets::{config_dir, install_rbac, service_account_kubeconfig};
use super::*;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use std::collections::BTreeSet;

/// The Secret name the shipped Deployment and RBAC use.
const SECRET: &str = "sidecar-injector-tls";

/// The shipped RBAC's rule on the webhook configuration, by name.
pub(crate) const WEBHOOK_RULE: &str =
    "resourceNames: [sidecar-injector]\n  verbs: [list, watch, patch]";

/// [`WEBHOOK_RULE`] for the webhook configuration `home`.
pub(crate) fn webhook_rule(home: &str) -> String {
    format!("resourceNames: [{home}]\n  verbs: [list, watch, patch]")
}

/// The test's home namespace with the shipped RBAC (the webhook configuration it may edit
/// renamed to `home`), and a webhook configuration `home` for namespaces labelled
/// `home=on`, by URL to a port nothing listens on yet and with no caBundle: what a fresh
/// install has before `serve` first runs.
pub(crate) async fn home(env: &Env, c: &Client, home: &str, undo: &mut Undo) -> Ns {
    let ns = namespace(c, home, json!({})).await;
    install_rbac(env, home, &[(WEBHOOK_RULE, &webhook_rule(home))], undo);
    let hook = json!({"apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration", "metadata": {"name": home},
        "webhooks": [{"name": format!("{home}.e2e.test"), "admissionReviewVersions": ["v1"],
            "sideEffects": "NoneOnDryRun", "failurePolicy": "Fail", "timeoutSeconds": 5,
            "reinvocationPolicy": "IfNeeded",
            "clientConfig": {"url": "https://127.0.0.1:1/mutate"},
            "namespaceSelector": {"matchLabels": {home: "on"}},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                "resources": ["pods"]}]}]});
    undo.kubectl(
        &format!("mutatingwebhookconfiguration {home}"),
        &[
            "delete",
            "mutatingwebhookconfiguration",
            home,
            "--ignore-not-found",
        ],
    );
    ok(&kubectl(
        env,
        &["apply", "-f", "-"],
        Some(&hook.to_string()),
    ));
    ns
}

/// `serve`'s arguments as the shipped Deployment gives them, for `home`: the live ConfigMap
/// `sidecar-injector`, and the certificate kept in the Secret for the webhook configuration
/// `home`, as the ServiceAccount of `kubeconfig`.
pub(crate) fn shipped_args(home: &str, kubeconfig: &std::path::Path) -> Vec<String> {
    vec![
        "--config".into(),
        format!("configmap:{home}/sidecar-injector"),
        "--kubeconfig".into(),
        kubeconfig.display().to_string(),
        "--cert-secret".into(),
        format!("{home}/{SECRET}"),
        "--webhook-configuration".into(),
        home.into(),
    ]
}

/// A replica of `serve` keeping its certificate in `home`'s Secret, as the ServiceAccount.
fn replica(
    env: &Env,
    home: &str,
    dir: &std::path::Path,
    name: &str,
    extra: &[&str],
) -> (Beside, u16, u16, PathBuf) {
    let log = dir.join(format!("{name}.log"));
    let mut args = vec![
        "--config".to_owned(),
        config_dir(dir, home).display().to_string(),
        "--kubeconfig".into(),
        service_account_kubeconfig(env, home, dir)
            .display()
            .to_string(),
        "--cert-secret".into(),
        format!("{home}/{SECRET}"),
        "--webhook-configuration".into(),
        home.to_owned(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    let (child, port, metrics) =
        common::spawn_serve_with_env(&args, &[("POD_NAMESPACE", home), ("POD_NAME", name)], &log);
    assert!(
        port != 0,
        "{name} did not serve: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    (Beside(child), port, metrics, log)
}

/// Points the webhook configuration at this port.
pub(crate) fn call_port(env: &Env, home: &str, port: u16) {
    ok(&kubectl(
        env,
        &[
            "patch",
            "mutatingwebhookconfiguration",
            home,
            "--type=json",
            "-p",
            &json!([{"op": "replace", "path": "/webhooks/0/clientConfig/url",
                "value": format!("https://127.0.0.1:{port}/mutate")}])
            .to_string(),
        ],
        None,
    ));
}

fn data(secret: &Secret, key: &str) -> String {
    let bytes = secret.data.as_ref().and_then(|d| d.get(key));
    String::from_utf8_lossy(bytes.map(|b| b.0.as_slice()).unwrap_or_default()).into_owned()
}

async fn ca_bundle_of(c: &Client, home: &str) -> Option<String> {
    let hook = Api::<MutatingWebhookConfiguration>::all(c.clone())
        .get(home)
        .await
        .unwrap();
    let bundle = hook.webhooks?.first()?.client_config.ca_bundle.clone()?;
    Some(String::from_utf8_lossy(&bundle.0).into_owned())
}

/// The serial numbers of a PEM text's certificates.
fn serials(pem: &str) -> Vec<String> {
    rustls_pki_certs(pem.as_bytes())
        .iter()
        .map(|der| {
            let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
            cert.raw_serial_as_string()
        })
        .collect()
}

#[tokio::test]
#[ignore = "needs a cluster: tests/e2e/run"]
async fn self_managed_certificates() {
    let env = env();
    let c = client(&env).await;
    let dir = tempfile::tempdir().unwrap();
    let mut undo = Undo::new();
    let h = "e2e-certs";
    let _home = home(&env, &c, h, &mut undo).await;

    // The first replica finds no Secret: it makes the CA and the certificate, sets the
    // caBundle, and serves; no certificate step at all.
    let started = Instant::now();
    let (a, port_a, metrics_a, log_a) = replica(&env, h, dir.path(), "certs-a", &[]);
    println!(
        "first replica serving in {} ms",
        started.elapsed().as_millis()
    );
    let secrets: Api<Secret> = Api::namespaced(c.clone(), h);
    let secret = secrets.get(SECRET).await.unwrap();
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    assert_eq!(
        secret.metadata.labels.as_ref().unwrap()["app.kubernetes.io/managed-by"],
        "sidecar-injector"
    );
    let bundle = eventually("the caBundle set to the Secret's CA", 10, || async {
        ca_bundle_of(&c, h)
            .await
            .filter(|b| *b == data(&secret, "ca.crt"))
    })
    .await;
    assert_eq!(serials(&bundle).len(), 1);
    let leaf = serials(&data(&secret, "tls.crt"));

    // The apiserver verifies the served certificate with that caBundle (Fail: a Pod is
    // refused if it does not) and the Pod comes back injected.
    call_port(&env, h, port_a);
    let app = namespace(&c, "e2e-certs-app", json!({h: "on"})).await;
    let pod = first_admitted(&c, &app, "a Pod injected through the new caBundle").await;
    assert!(injected(&pod), "{:?}", containers(&pod));

    // A second replica serves the same certificate, read from the Secret (its expiry
    // metric is that certificate's), and makes nothing new.
    let (_b, _port_b, metrics_b, log_b) = replica(&env, h, dir.path(), "certs-b", &[]);
    let expiry = "sidecar_injector_certificate_expiry_timestamp_seconds";
    let (expiry_a, expiry_b) = (
        metric(metrics_a, expiry).await,
        metric(metrics_b, expiry).await,
    );
    assert!(
        expiry_a > 1.7e9,
        "a real expiry time, not an unset gauge: {expiry_a}"
    );
    assert_eq!(expiry_a, expiry_b);
    // Restarted, the first replica keeps the same CA and certificate.
    drop(a);
    let (_a2, port_a2, _, _) = replica(&env, h, dir.path(), "certs-a2", &[]);
    call_port(&env, h, port_a2);
    let after = secrets.get(SECRET).await.unwrap();
    assert_eq!(
        serials(&data(&after, "tls.crt")),
        leaf,
        "the certificate is kept"
    );
    assert_eq!(ca_bundle_of(&c, h).await.as_deref(), Some(bundle.as_str()));
    let pod = eventually("a Pod injected by the restarted replica", 30, || async {
        create_pod(
            &c,
            &app,
            pod_json(&format!("q-{}", common::free_port()), json!({})),
        )
        .await
        .ok()
    })
    .await;
    assert!(injected(&pod));
    for log in [&log_a, &log_b] {
        let text = std::fs::read_to_string(log).unwrap();
        assert!(!text.contains("ERROR"), "{text}");
    }
    // The caBundle blanked (a `helm upgrade` or an ArgoCD sync would) comes back at once,
    // from a live Lease holder (the killed one's Lease expires first: 15 s).
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(c.clone(), h);
    eventually("a live replica to hold the Lease", 40, || async {
        let lease = leases.get_opt("sidecar-injector-repair").await.ok()??;
        let holder = lease.spec?.holder_identity?;
        ["certs-b", "certs-a2"]
            .contains(&holder.as_str())
            .then_some(())
    })
    .await;
    ok(&kubectl(
        &env,
        &[
            "patch",
            "mutatingwebhookconfiguration",
            h,
            "--type=json",
            "-p",
            r#"[{"op": "remove", "path": "/webhooks/0/clientConfig/caBundle"}]"#,
        ],
        None,
    ));
    let blanked = Instant::now();
    eventually("the blanked caBundle set again", 10, || async {
        ca_bundle_of(&c, h).await.filter(|b| *b == bundle)
    })
    .await;
    println!(
        "blanked caBundle set again in {} ms",
        blanked.elapsed().as_millis()
    );
}

/// 100 s of Pod creations, about 3 a second, while `--cert-validity 30s` renews the serving
/// certificate every 20 s and rolls the CA over once (a CA lasts 120 s and is rolled over
/// with 60 s left). Two replicas keep the certificate, and the webhook's URL moves from one
/// to the other every 5 s, so each serves the apiserver across every renewal and the
/// rollover, whichever holds the Lease. Every creation must succeed and come back injected:
/// `Fail` refuses a Pod whenever the apiserver cannot verify the certificate served.
#[tokio::test]
#[ignore = "needs a cluster: tests/e2e/run"]
async fn rotation_with_two_replicas_under_load() {
    let env = env();
    let c = client(&env).await;
    let dir = tempfile::tempdir().unwrap();
    let mut undo = Undo::new();
    let h = "e2e-ca-rollover";
    let _home = home(&env, &c, h, &mut undo).await;
    let (_a, port, _, log) = replica(
        &env,
        h,
        dir.path(),
        "rollover-a",
        &["--cert-validity", "30s"],
    );
    let (_b, port_b, _, log_b) = replica(
        &env,
        h,
        dir.path(),
        "rollover-b",
        &["--cert-validity", "30s"],
    );
    call_port(&env, h, port);
    let app = namespace(&c, "e2e-ca-rollover-app", json!({h: "on"})).await;
    eventually("the webhook in effect", 30, || async {
        create_pod(
            &c,
            &app,
            pod_json(&format!("w-{}", common::free_port()), json!({})),
        )
        .await
        .ok()
        .filter(injected)
    })
    .await;

    // The Secret watched beside the creations: every serving certificate and CA seen.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (c, stop) = (c.clone(), stop.clone());
        tokio::spawn(async move {
            let secrets: Api<Secret> = Api::namespaced(c, h);
            let (mut leaves, mut cas, mut most_cas) = (BTreeSet::new(), BTreeSet::new(), 0);
            while !stop.load(Ordering::Relaxed) {
                if let Ok(s) = secrets.get(SECRET).await {
                    leaves.extend(serials(&data(&s, "tls.crt")));
                    let now = serials(&data(&s, "ca.crt"));
                    most_cas = most_cas.max(now.len());
                    cas.extend(now);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            (leaves, cas, most_cas)
        })
    };
    let (mut created, mut refused, mut uninjected) = (0, Vec::new(), 0);
    let start = Instant::now();
    let mut i = 0;
    let mut moved = Instant::now();
    let mut called = [0usize; 2];
    while start.elapsed() < Duration::from_secs(100) {
        i += 1;
        if moved.elapsed() >= Duration::from_secs(5) {
            moved = Instant::now();
            let next = (moved.duration_since(start).as_secs() / 5) % 2;
            call_port(&env, h, [port, port_b][next as usize]);
        }
        called[((start.elapsed().as_secs() / 5) % 2) as usize] += 1;
        match create_pod(&c, &app, pod_json(&format!("r-{i}"), json!({}))).await {
            Ok(p) if injected(&p) => created += 1,
            Ok(_) => uninjected += 1,
            Err(e) => refused.push(format!("{:.1}s: {e}", start.elapsed().as_secs_f64())),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (leaves, cas, most_cas) = watcher.await.unwrap();
    println!(
        "{created} created and injected, {} refused, {uninjected} uninjected; {} serving certificates and {} CAs seen, at most {most_cas} CAs at once",
        refused.len(),
        leaves.len(),
        cas.len()
    );
    println!("creations while each replica was called: {called:?}");
    let text = std::fs::read_to_string(&log).unwrap()
        + "\n--- rollover-b\n"
        + &std::fs::read_to_string(&log_b).unwrap();
    assert!(created >= 100, "{created} creations");
    assert!(
        called.iter().all(|n| *n >= 30),
        "both replicas called: {called:?}"
    );
    assert!(refused.is_empty(), "refused: {refused:#?}\n{text}");
    assert_eq!(uninjected, 0);
    assert!(leaves.len() >= 4, "renewals: {leaves:?}\n{text}");
    assert!(
        cas.len() >= 2 && most_cas == 2,
        "a CA rollover: {cas:?} (at most {most_cas} at once)\n{text}"
    );
    let bundle = ca_bundle_of(&c, h).await.unwrap();
    assert_eq!(serials(&bundle).len(), 1, "the old CA left the caBundle");
}

/// The holder's only Secret writes between `from` and `to` of `h`'s certificate Secret, as
/// the distinct resourceVersions a poll every 100 ms sees (a loop writing as fast as the API
/// answers shows dozens).
async fn secret_versions(c: &Client, h: &str, secs: u64) -> (BTreeSet<String>, Secret) {
    let secrets: Api<Secret> = Api::namespaced(c.clone(), h);
    let mut versions = BTreeSet::new();
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < Duration::from_secs(secs) {
        if let Ok(s) = secrets.get(SECRET).await {
            versions.insert(s.metadata.resource_version.clone().unwrap_or_default());
            last = Some(s);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (versions, last.expect("the Secret"))
}

/// Issue 32, item 1: a Secret whose lone CA has 8 s left (a holder gap, or a validity
/// raised since it was made) is rolled over, not renewed from in a loop: a new CA joins,
/// signs once published, and the old one leaves; a handful of writes, then quiet, and the
/// apiserver verifies what is served all along.
#[tokio::test]
#[ignore = "needs a cluster: tests/e2e/run"]
async fn certificate_rollover_from_a_nearly_expired_ca() {
    use sidecar_injector::engine::certificates::authority;
    let env = env();
    let c = client(&env).await;
    let dir = tempfile::tempdir().unwrap();
    let mut undo = Undo::new();
    let h = "e2e-near-end";
    let _home = home(&env, &c, h, &mut undo).await;
    // A CA made 112 s ago for 120 s, and a serving certificate for the URL's host to its end.
    let now = time::OffsetDateTime::now_utc();
    let old = authority::new_ca(now - Duration::from_secs(112), Duration::from_secs(120)).unwrap();
    let ca_end = now + Duration::from_secs(8);
    let leaf = authority::issue(&old, &["127.0.0.1".to_owned()], now, ca_end).unwrap();
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": SECRET,
            "labels": {"app.kubernetes.io/managed-by": "sidecar-injector"}},
        "type": "kubernetes.io/tls",
        "stringData": {"ca.crt": old.cert_pem, "ca.key": old.key_pem,
            "tls.crt": leaf.cert_pem, "tls.key": leaf.key_pem}}))
    .unwrap();
    let secrets: Api<Secret> = Api::namespaced(c.clone(), h);
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let old_serial = serials(&old.cert_pem);

    let (_a, port, _, log) = replica(&env, h, dir.path(), "near-end", &["--cert-validity", "30s"]);
    call_port(&env, h, port);
    // One validity (30 s): the rollover (a new CA, published, a new leaf after the 2 s
    // propagation, the old CA gone after the 5 s grace and a look at what is served), then
    // the new leaf's first renewal (with 10 s of its 30 left).
    let (versions, settled) = secret_versions(&c, h, 30).await;
    let text = std::fs::read_to_string(&log).unwrap();
    println!("{} Secret versions in 30 s", versions.len());
    // The test's own create, the new CA, the new leaf, the old CA dropped, one renewal: 5.
    // A loop gives one per API round trip.
    assert!(
        versions.len() <= 5,
        "{} writes: a renewal loop?\n{text}",
        versions.len()
    );
    let cas = serials(&data(&settled, "ca.crt"));
    assert_eq!(cas.len(), 1, "one CA once settled: {cas:?}\n{text}");
    assert_ne!(cas, old_serial, "the CA near its end was replaced\n{text}");
    assert_eq!(
        ca_bundle_of(&c, h).await.as_deref(),
        Some(data(&settled, "ca.crt").as_str()),
        "the caBundle follows"
    );
    // The old CA has expired by now; the apiserver verifies the new certificate.
    let app = namespace(&c, "e2e-near-end-app", json!({h: "on"})).await;
    let pod = first_admitted(&c, &app, "a Pod injected after the rollover").await;
    assert!(injected(&pod), "{:?}", containers(&pod));
}

/// Issue 32, item 2: extra names written otherwise than the certificate gives them back
/// (an upper-case IPv6 address, a DNS name in capitals with a final dot) are the same
/// names: the certificate is made once and never renewed for them.
#[tokio::test]
#[ignore = "needs a cluster: tests/e2e/run"]
async fn ipv6_san_settles() {
    let env = env();
    let c = client(&env).await;
    let dir = tempfile::tempdir().unwrap();
    let mut undo = Undo::new();
    let h = "e2e-ipv6-san";
    let _home = home(&env, &c, h, &mut undo).await;
    let (_a, port, _, log) = replica(
        &env,
        h,
        dir.path(),
        "ipv6-san",
        &[
            "--cert-san",
            "2001:DB8:0::1",
            "--cert-san",
            "Injector.Example.",
        ],
    );
    call_port(&env, h, port);
    let (versions, secret) = secret_versions(&c, h, 10).await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        versions.len(),
        1,
        "written once, not renewed in a loop: {versions:?}\n{text}"
    );
    let pem = data(&secret, "tls.crt");
    let sans = sans_of(pem.as_bytes());
    // x509-parser shows an address as its bytes.
    assert!(
        sans.contains(&"IPAddress(20:01:0d:b8:00:00:00:00:00:00:00:00:00:00:00:01)".to_owned())
            && sans.contains(&"DNSName(injector.example)".to_owned()),
        "{sans:?}"
    );
    let app = namespace(&c, "e2e-ipv6-san-app", json!({h: "on"})).await;
    let pod = first_admitted(&c, &app, "a Pod injected").await;
    assert!(injected(&pod));
}

/// A Secret of the certificate's name that the injector did not make (no managed-by label)
/// is never written: a replica serves its pair if it is one, the holder says why it leaves
/// it alone, and neither the Secret nor the caBundle changes.
#[tokio::test]
#[ignore = "needs a cluster: tests/e2e/run"]
async fn a_foreign_certificate_secret_is_never_overwritten() {
    use sidecar_injector::engine::certificates::authority;
    let env = env();
    let c = client(&env).await;
    let dir = tempfile::tempdir().unwrap();
    let mut undo = Undo::new();
    let h = "e2e-foreign-cert";
    let _home = home(&env, &c, h, &mut undo).await;
    let now = time::OffsetDateTime::now_utc();
    let ca = authority::new_ca(now, Duration::from_secs(3600)).unwrap();
    let leaf = authority::issue(
        &ca,
        &["127.0.0.1".to_owned()],
        now,
        now + Duration::from_secs(600),
    )
    .unwrap();
    // Theirs: cert-manager's, or made by hand; it even lacks ca.key.
    let theirs: Secret = serde_json::from_value(json!({
        "metadata": {"name": SECRET, "labels": {"owner": "team-x"}},
        "type": "kubernetes.io/tls",
        "stringData": {"ca.crt": ca.cert_pem, "tls.crt": leaf.cert_pem, "tls.key": leaf.key_pem}}))
    .unwrap();
    let secrets: Api<Secret> = Api::namespaced(c.clone(), h);
    let theirs = secrets
        .create(&PostParams::default(), &theirs)
        .await
        .unwrap();
    let (_a, _port, _, log) = replica(&env, h, dir.path(), "foreign-cert", &[]);
    let said = eventually(
        "the holder to say why it leaves the Secret alone",
        30,
        || async {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.contains("sidecar-injector did not make it")
                .then_some(text)
        },
    )
    .await;
    assert!(said.contains("delete it to have one made"), "{said}");
    // Some looks later, nothing was written.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let now = secrets.get(SECRET).await.unwrap();
    assert_eq!(
        now.metadata.resource_version,
        theirs.metadata.resource_version
    );
    assert_eq!(now.data, theirs.data);
    assert_eq!(
        ca_bundle_of(&c, h).await,
        None,
        "no caBundle published from it"
    );
}
