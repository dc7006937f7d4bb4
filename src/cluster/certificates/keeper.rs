//! `serve --cert-secret`: the serving certificate kept in a Secret by the injector itself.
//! Every replica watches the Secret and serves its current pair (through the API: no volume,
//! no kubelet delay). The Lease holder creates the CA and the pair when the Secret is absent,
//! renews and rolls them over as [`rotation`] decides, and keeps the caBundle of the webhook
//! configuration equal to the Secret's `ca.crt`: the only field of it that it ever edits.

use crate::engine::certificates::authority::{self, Issued};
use crate::engine::certificates::rotation::{
    self, CA_CERT, CA_KEY, Seen, Step, Stored, TLS_CERT, TLS_KEY, Timing,
};
use crate::engine::secret_copies::{MANAGED_BY, MANAGED_BY_KEY};
use anyhow::{Context, Result, bail};
use base64::Engine as _;
use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::watch;

/// What `--cert-secret`, `--webhook-configuration`, `--cert-san` and `--cert-validity` say.
#[derive(Debug, Clone)]
pub struct Options {
    pub namespace: String,
    pub name: String,
    pub webhook_configuration: String,
    /// Names the serving certificate holds besides those of the webhook configuration.
    pub extra_names: Vec<String>,
    pub timing: Timing,
}

impl std::fmt::Display for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret {}/{}", self.namespace, self.name)
    }
}

/// How long a replica waits for the first pair before it gives up (and is restarted).
const FIRST_PAIR_WITHIN: Duration = Duration::from_secs(120);
/// How often a replica without the Lease checks whether it has it now.
const LEADER_CHECK_EVERY: Duration = Duration::from_secs(1);
/// While it waits, it says so this often.
const WAITING_SAID_EVERY: Duration = Duration::from_secs(5);

/// The latest state of one named object, as its watch last saw it.
#[derive(Debug, Clone)]
enum Latest<K> {
    Unknown,
    Absent,
    Present(Box<K>),
}

/// Watches one named object; the receiver always holds what the watch saw last.
fn watch_named<K>(api: Api<K>, name: &str) -> watch::Receiver<Latest<K>>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let (tx, rx) = watch::channel(Latest::Unknown);
    let name = name.to_owned();
    tokio::spawn(async move {
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let stream = watcher(api, config).backoff(crate::cluster::watch_backoff());
        futures::pin_mut!(stream);
        let mut listing: Option<K> = None;
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Init) => listing = None,
                Ok(watcher::Event::InitApply(o)) => listing = Some(o),
                Ok(watcher::Event::InitDone) => {
                    let _ = tx.send(match listing.take() {
                        Some(o) => Latest::Present(Box::new(o)),
                        None => Latest::Absent,
                    });
                }
                Ok(watcher::Event::Apply(o)) => {
                    let _ = tx.send(Latest::Present(Box::new(o)));
                }
                Ok(watcher::Event::Delete(_)) => {
                    let _ = tx.send(Latest::Absent);
                }
                Err(e) => tracing::warn!(name = %name, error = %e, "watch failing (retrying)"),
            }
        }
    });
    rx
}

/// The serving pair a replica takes from the Secret.
pub struct ServingPair {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

fn serving_pair(secret: &Secret) -> Option<ServingPair> {
    let data = secret.data.as_ref()?;
    Some(ServingPair {
        cert_pem: data.get(TLS_CERT)?.0.clone(),
        key_pem: data.get(TLS_KEY)?.0.clone(),
    })
}

/// Starts the watches and the holder's loop. Returns once the Secret holds a pair that
/// `use_pair` accepts (it returns false for one it refuses), within [`FIRST_PAIR_WITHIN`];
/// afterwards `use_pair` gets each new one.
pub async fn start<F>(
    client: kube::Client,
    opts: Options,
    leader: Arc<AtomicBool>,
    mut use_pair: F,
) -> Result<()>
where
    F: FnMut(ServingPair) -> bool + Send + 'static,
{
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &opts.namespace);
    let webhooks: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let mut secret_rx = watch_named(secrets.clone(), &opts.name);
    let webhook_rx = watch_named(webhooks.clone(), &opts.webhook_configuration);
    tokio::spawn(hold(
        secrets,
        webhooks,
        opts.clone(),
        leader,
        secret_rx.clone(),
        webhook_rx,
    ));

    // The first pair, before the listener opens.
    let deadline = tokio::time::Instant::now() + FIRST_PAIR_WITHIN;
    let mut served: Option<String>;
    loop {
        let latest = secret_rx.borrow_and_update().clone();
        if let Latest::Present(secret) = &latest
            && let Some(pair) = serving_pair(secret)
        {
            let version = secret.resource_version();
            if use_pair(pair) {
                served = version;
                break;
            }
        }
        // Said every few seconds, so a Pod killed by its liveness probe first still says why.
        let next_word = (tokio::time::Instant::now() + WAITING_SAID_EVERY).min(deadline);
        let waited = tokio::time::timeout_at(next_word, secret_rx.changed()).await;
        match waited {
            Ok(Ok(())) => {}
            Ok(Err(_)) => bail!("the watch of {opts} stopped"),
            Err(_) if tokio::time::Instant::now() < deadline => {
                let what = match &latest {
                    Latest::Unknown => {
                        "its watch has not listed it yet (is the API reachable, and may the ServiceAccount list and watch it?)"
                    }
                    Latest::Absent => {
                        "it does not exist yet (the replica holding the Lease creates it)"
                    }
                    Latest::Present(_) => "it holds no usable tls.crt and tls.key yet",
                };
                tracing::warn!(secret = %opts, "waiting for the serving certificate before listening: {what}");
            }
            Err(_) => bail!(
                "{opts} held no usable serving certificate within {} s. The replica holding the Lease creates it: its log says why it has not. Check that the MutatingWebhookConfiguration {} exists and that the ServiceAccount may read and write that Secret (manifests/base/rbac.yaml)",
                FIRST_PAIR_WITHIN.as_secs(),
                opts.webhook_configuration
            ),
        }
    }
    // Then every new version.
    tokio::spawn(async move {
        while secret_rx.changed().await.is_ok() {
            let latest = secret_rx.borrow_and_update().clone();
            if let Latest::Present(secret) = latest
                && secret.resource_version() != served
                && let Some(pair) = serving_pair(&secret)
            {
                served = secret.resource_version();
                use_pair(pair);
            }
        }
    });
    Ok(())
}

/// The Lease holder's loop: looks at the Secret and the webhook configuration whenever
/// either changes, or at the latest every [`Timing::tick`], and takes the next step.
async fn hold(
    secrets: Api<Secret>,
    webhooks: Api<MutatingWebhookConfiguration>,
    opts: Options,
    leader: Arc<AtomicBool>,
    mut secret_rx: watch::Receiver<Latest<Secret>>,
    mut webhook_rx: watch::Receiver<Latest<MutatingWebhookConfiguration>>,
) {
    let mut seen = Seen::default();
    let mut said = String::new();
    let mut say = |level: tracing::Level, what: String| {
        if what != said {
            match level {
                tracing::Level::ERROR => tracing::error!("{what}"),
                tracing::Level::WARN => tracing::warn!("{what}"),
                _ => tracing::info!("{what}"),
            }
            said = what;
        }
    };
    loop {
        let mut wait = opts.timing.tick();
        if !leader.load(Ordering::Relaxed) {
            seen = Seen::default();
            // Leadership is a flag, not an event: look at it again soon (no API call).
            wait = LEADER_CHECK_EVERY;
        } else {
            let secret = secret_rx.borrow_and_update().clone();
            let webhook = webhook_rx.borrow_and_update().clone();
            match look(
                &secrets, &webhooks, &opts, &leader, &mut seen, secret, webhook,
            )
            .await
            {
                Ok(Some(next)) => wait = wait.min(next),
                Ok(None) => wait = Duration::from_millis(200),
                Err(e) => say(tracing::Level::WARN, format!("{opts}: {e:#}")),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = secret_rx.changed() => {}
            _ = webhook_rx.changed() => {}
        }
    }
}

/// One look: `Some(wait)` when nothing is to be done before then, `None` after a write (look
/// again at once, the watch brings the result).
async fn look(
    secrets: &Api<Secret>,
    webhooks: &Api<MutatingWebhookConfiguration>,
    opts: &Options,
    leader: &AtomicBool,
    seen: &mut Seen,
    secret: Latest<Secret>,
    webhook: Latest<MutatingWebhookConfiguration>,
) -> Result<Option<Duration>> {
    let (secret, webhook) = match (secret, webhook) {
        (Latest::Unknown, _) | (_, Latest::Unknown) => return Ok(Some(Duration::from_secs(1))),
        (_, Latest::Absent) => bail!(
            "the MutatingWebhookConfiguration {} does not exist: apply it (manifests/), or name the right one with --webhook-configuration",
            opts.webhook_configuration
        ),
        (s, Latest::Present(w)) => (s, w),
    };
    if let Latest::Present(s) = &secret
        && s.labels().get(MANAGED_BY_KEY).map(String::as_str) != Some(MANAGED_BY)
    {
        bail!(
            "it exists and sidecar-injector did not make it (no label {MANAGED_BY_KEY}={MANAGED_BY}), so it is left alone: delete it to have one made, or name another with --cert-secret"
        );
    }
    let names = names(&webhook, &opts.extra_names)?;
    let stored = match &secret {
        Latest::Present(s) => Some(Stored::parse(|k| {
            s.data.as_ref().and_then(|d| d.get(k)).map(|b| b.0.clone())
        })),
        _ => None,
    };
    let bundles = bundles(&webhook);
    let current = common_bundle(&bundles);
    let now = OffsetDateTime::now_utc();
    seen.observe(
        current.as_deref(),
        stored.as_ref().and_then(|s| s.as_ref().ok()),
        now.unix_timestamp(),
    );
    let plan = |seen: &Seen| {
        rotation::plan(
            stored.as_ref(),
            current.as_deref(),
            &names,
            seen,
            now.unix_timestamp(),
            opts.timing,
        )
    };
    let mut step = plan(seen);
    if step == Step::LookAtReplicas
        && let Some(Ok(s)) = &stored
    {
        // Before an older CA leaves: what each Ready endpoint serves, verified against the
        // newest CA alone (issue 32, item 5).
        let newest = rotation::bundle(&s.cas[s.cas.len().saturating_sub(1)..]);
        let client = secrets.clone().into_client();
        let lagging = crate::cluster::served::lagging(&client, &webhook, &newest).await;
        // The handshakes take up to seconds: a replica that lost the Lease meanwhile writes
        // nothing (one writer at a time, issue 32, item 4).
        if !leader.load(Ordering::Relaxed) {
            return Ok(Some(Duration::from_secs(1)));
        }
        if !lagging.is_empty() {
            tracing::info!(secret = %opts, lagging = %lagging.join("; "), "certificates: the previous CA stays while a replica serves a certificate of it");
        }
        seen.replicas = Some(rotation::ReplicaView {
            leaf: s.leaf.serial.clone(),
            at: now.unix_timestamp(),
            lagging,
        });
        step = plan(seen);
    }
    let timing = opts.timing;
    let existing = match &secret {
        Latest::Present(s) => Some(s.as_ref()),
        _ => None,
    };
    let ok = stored.and_then(Result::ok);
    match step {
        Step::Wait(d) => return Ok(Some(d)),
        Step::Create(why) => {
            let ca = authority::new_ca(now, timing.ca_validity())?;
            let leaf = authority::issue(&ca, &names, now, now + timing.serving)?;
            tracing::info!(secret = %opts, reason = %why, "certificates: a new CA and serving certificate");
            // ca.crt in the one PEM form the caBundle is compared in.
            let cas = rotation::parse_certs(&ca.cert_pem).map_err(anyhow::Error::msg)?;
            write(
                secrets,
                opts,
                existing,
                &rotation::bundle(&cas),
                &ca.key_pem,
                &leaf,
            )
            .await?;
        }
        Step::Publish => {
            let bundle = ok.as_ref().map(Stored::bundle).unwrap_or_default();
            // A bundle that would take away a CA the apiserver trusts now is published only
            // from a Secret just read, never from the watch's view alone (issue 32, item 3):
            // a watch behind the Secret could otherwise untrust what every replica serves.
            if rotation::drops_a_ca(&bundles, &bundle) {
                let fresh = read_now(secrets, opts).await?;
                if fresh.as_deref() != Some(bundle.as_str()) {
                    tracing::info!(secret = %opts, "certificates: the Secret's watch is behind; the caBundle waits for it");
                    return Ok(Some(Duration::from_secs(1)));
                }
            }
            publish(webhooks, opts, &webhook, &bundles, &bundle).await?;
            tracing::info!(webhook = %opts.webhook_configuration, cas = bundle.matches("BEGIN CERTIFICATE").count(), "certificates: caBundle set");
        }
        Step::Issue(why) => {
            let stored = ok.context("no usable Secret to issue from")?;
            let ca = stored.newest_ca();
            let ca_end = stored.cas.last().map(|c| c.not_after).unwrap_or(0);
            let end = (now + timing.serving)
                .min(OffsetDateTime::from_unix_timestamp(ca_end).unwrap_or(now));
            let leaf = authority::issue(&ca, &names, now, end)?;
            tracing::info!(secret = %opts, reason = %why, "certificates: a new serving certificate");
            write(
                secrets,
                opts,
                existing,
                &stored.bundle(),
                &ca.key_pem,
                &leaf,
            )
            .await?;
        }
        Step::AddCa => {
            let stored = ok.context("no usable Secret to roll over")?;
            let ca = authority::new_ca(now, timing.ca_validity())?;
            let mut cas = stored.cas.clone();
            cas.extend(rotation::parse_certs(&ca.cert_pem).map_err(anyhow::Error::msg)?);
            let leaf = stored.leaf_pair();
            tracing::info!(secret = %opts, "certificates: CA rollover: a new CA joins the caBundle; it signs once the apiserver has it");
            write(
                secrets,
                opts,
                existing,
                &rotation::bundle(&cas),
                &ca.key_pem,
                &leaf,
            )
            .await?;
        }
        Step::LookAtReplicas => return Ok(Some(Duration::from_secs(1))),
        Step::DropOld(lagging) => {
            let stored = ok.context("no usable Secret")?;
            let newest = stored.cas.last().cloned().into_iter().collect::<Vec<_>>();
            let leaf = stored.leaf_pair();
            if lagging.is_empty() {
                tracing::info!(secret = %opts, dropped = stored.cas.len() - 1, "certificates: CA rollover done: every replica serves the new CA's certificate; the previous CA leaves the caBundle");
            } else {
                let waited = opts.timing.grace() + opts.timing.patience();
                let note = format!(
                    "the previous CA leaves the caBundle although these endpoints do not serve the new CA's certificate after {} s: {}. The apiserver refuses their certificate from now on: restart them, and read their log for why they did not take the Secret {opts}",
                    waited.as_secs(),
                    lagging.join("; ")
                );
                tracing::warn!(secret = %opts, "certificates: {note}");
                warn_lagging(secrets, opts, existing, note).await;
            }
            write(
                secrets,
                opts,
                existing,
                &rotation::bundle(&newest),
                &stored.ca_key_pem,
                &leaf,
            )
            .await?;
        }
    }
    Ok(None)
}

/// A Warning Event on the certificate Secret: replicas left behind by a CA rollover.
async fn warn_lagging(
    secrets: &Api<Secret>,
    opts: &Options,
    secret: Option<&Secret>,
    note: String,
) {
    let Some(secret) = secret else { return };
    let recorder = kube::runtime::events::Recorder::new(
        secrets.clone().into_client(),
        crate::cluster::events::reporter(),
    );
    let event = kube::runtime::events::Event {
        type_: kube::runtime::events::EventType::Warning,
        reason: "ReplicaLagsCaRollover".into(),
        note: Some(crate::cluster::events::clip(note)),
        action: "RotateCertificates".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &secret.object_ref(&())).await {
        tracing::warn!(secret = %opts, error = %e, "could not record the Warning Event");
    }
}

/// The names the serving certificate holds: those the apiserver dials for each webhook of the
/// configuration (a Service's DNS names, or a URL's host), and the extra ones, each once, in
/// the form the certificate gives back (`rotation::canonical_name`).
fn names(webhook: &MutatingWebhookConfiguration, extra: &[String]) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for w in webhook.webhooks.iter().flatten() {
        if let Some(service) = &w.client_config.service {
            names.extend(authority::service_names(&service.name, &service.namespace));
        } else if let Some(url) = &w.client_config.url {
            let (host, _) = authority::host_port(url).with_context(|| {
                format!(
                    "webhook {}: clientConfig.url {url:?} is not https://HOST[:PORT]/PATH",
                    w.name
                )
            })?;
            names.push(host);
        }
    }
    names.extend(extra.iter().cloned());
    let mut unique = Vec::new();
    for n in names.iter().map(|n| rotation::canonical_name(n)) {
        if !unique.contains(&n) {
            unique.push(n);
        }
    }
    if unique.is_empty() {
        bail!("the webhook configuration names no Service or URL, and --cert-san gives no name");
    }
    Ok(unique)
}

/// Each webhook's caBundle, decoded.
fn bundles(webhook: &MutatingWebhookConfiguration) -> Vec<Option<String>> {
    webhook
        .webhooks
        .iter()
        .flatten()
        .map(|w| {
            w.client_config
                .ca_bundle
                .as_ref()
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        })
        .collect()
}

/// The caBundle every webhook holds, or `None` when they differ (or none does).
fn common_bundle(bundles: &[Option<String>]) -> Option<String> {
    let first = bundles.first()?.clone()?;
    bundles
        .iter()
        .all(|b| b.as_deref() == Some(first.as_str()))
        .then_some(first)
}

/// The Secret's `ca.crt` as the API holds it now (a list by name: `get` is not granted),
/// `None` when it has none.
async fn read_now(secrets: &Api<Secret>, opts: &Options) -> Result<Option<String>> {
    let params = kube::api::ListParams::default().fields(&format!("metadata.name={}", opts.name));
    let list = secrets
        .list(&params)
        .await
        .map_err(|e| crate::cluster::api_error(e, &format!("reading the Secret {opts}")))?;
    Ok(list.items.into_iter().next().and_then(|s| {
        let ca = s.data?.get(rotation::CA_CERT)?.0.clone();
        String::from_utf8(ca).ok()
    }))
}

/// Sets the caBundle of each webhook that lacks it: a JSON Patch that first tests each
/// webhook's name at its index and the caBundle it holds, so a configuration changed
/// meanwhile is refused, not edited.
async fn publish(
    webhooks: &Api<MutatingWebhookConfiguration>,
    opts: &Options,
    webhook: &MutatingWebhookConfiguration,
    current: &[Option<String>],
    bundle: &str,
) -> Result<()> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(bundle);
    let mut ops = Vec::new();
    for (i, w) in webhook.webhooks.iter().flatten().enumerate() {
        if current.get(i).and_then(Option::as_deref) == Some(bundle) {
            continue;
        }
        ops.push(serde_json::json!({"op": "test", "path": format!("/webhooks/{i}/name"), "value": w.name}));
        // The caBundle as this view has it: changed meanwhile, the patch is refused whole.
        if let Some(held) = current.get(i).and_then(Option::as_deref) {
            let held = base64::engine::general_purpose::STANDARD.encode(held);
            ops.push(serde_json::json!({"op": "test", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": held}));
        }
        ops.push(serde_json::json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": encoded}));
    }
    let patch: json_patch::Patch = serde_json::from_value(serde_json::Value::Array(ops))
        .context("building the caBundle patch")?;
    webhooks
        .patch(
            &opts.webhook_configuration,
            &PatchParams::default(),
            &Patch::Json::<()>(patch),
        )
        .await
        .map_err(|e| {
            crate::cluster::api_error(
                e,
                &format!(
                    "setting the caBundle of the MutatingWebhookConfiguration {}",
                    opts.webhook_configuration
                ),
            )
        })?;
    Ok(())
}

/// Creates the Secret, or replaces its data at the version read (a conflict is retried on the
/// next look).
async fn write(
    secrets: &Api<Secret>,
    opts: &Options,
    existing: Option<&Secret>,
    bundle: &str,
    ca_key: &str,
    leaf: &Issued,
) -> Result<()> {
    let data: BTreeMap<String, ByteString> = [
        (CA_CERT, bundle),
        (CA_KEY, ca_key),
        (TLS_CERT, leaf.cert_pem.as_str()),
        (TLS_KEY, leaf.key_pem.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
    .collect();
    let pp = PostParams::default();
    let result = match existing {
        None => {
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(opts.name.clone()),
                    namespace: Some(opts.namespace.clone()),
                    labels: Some(BTreeMap::from([(
                        MANAGED_BY_KEY.to_owned(),
                        MANAGED_BY.to_owned(),
                    )])),
                    ..Default::default()
                },
                type_: Some("kubernetes.io/tls".to_owned()),
                data: Some(data),
                ..Default::default()
            };
            secrets.create(&pp, &secret).await
        }
        Some(current) => {
            let mut secret = current.clone();
            secret.data = Some(data);
            secret.string_data = None;
            secrets.replace(&opts.name, &pp, &secret).await
        }
    };
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            tracing::debug!(secret = %opts, "certificates: the Secret changed meanwhile; looking again");
            Ok(())
        }
        Err(e) => Err(crate::cluster::api_error(e, &format!("writing {opts}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::admissionregistration::v1::{
        MutatingWebhook, ServiceReference, WebhookClientConfig,
    };

    fn config(clients: Vec<WebhookClientConfig>) -> MutatingWebhookConfiguration {
        MutatingWebhookConfiguration {
            webhooks: Some(
                clients
                    .into_iter()
                    .enumerate()
                    .map(|(i, client_config)| MutatingWebhook {
                        name: format!("w{i}.example.com"),
                        client_config,
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn names_come_from_the_service_or_the_url_and_the_extras() {
        let c = config(vec![
            WebhookClientConfig {
                service: Some(ServiceReference {
                    name: "inj".into(),
                    namespace: "sys".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            WebhookClientConfig {
                url: Some("https://127.0.0.1:8443/mutate".into()),
                ..Default::default()
            },
            WebhookClientConfig {
                url: Some("https://[::1]:9443/mutate".into()),
                ..Default::default()
            },
        ]);
        assert_eq!(
            names(&c, &["inj.example.com".to_owned(), "inj".to_owned()]).unwrap(),
            [
                "inj",
                "inj.sys",
                "inj.sys.svc",
                "inj.sys.svc.cluster.local",
                "127.0.0.1",
                "::1",
                "inj.example.com"
            ]
        );
        let plain = config(vec![WebhookClientConfig {
            url: Some("http://host/mutate".into()),
            ..Default::default()
        }]);
        let e = names(&plain, &[]).unwrap_err().to_string();
        assert!(
            e.contains("w0.example.com") && e.contains("http://host/mutate"),
            "{e}"
        );
    }

    #[test]
    fn the_bundle_is_common_only_when_every_webhook_has_it() {
        let a = Some("A".to_owned());
        assert_eq!(common_bundle(&[a.clone(), a.clone()]), a);
        assert_eq!(common_bundle(&[a.clone(), None]), None);
        assert_eq!(common_bundle(&[]), None);
    }
}
