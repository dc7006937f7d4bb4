//! Does the webhook configuration's caBundle verify the certificate the injector serves, and
//! for how long is that certificate good? For a URL webhook: a TLS handshake with the
//! caBundle as the only root. For a Service: the serving certificate the injector's Pods
//! mount (the Secret behind `--tls-cert-file`), verified for `SERVICE.NAMESPACE.svc`.

use super::{Finding, INSTALL_CA};
use crate::cluster::installed::{Installed, flag_value, volume_at};
use crate::engine::certificates::rotation::TLS_CERT;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhook;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use rustls::ClientConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::sync::Arc;
use std::time::Duration;

/// How long a connection attempt to a URL webhook may take.
const CONNECT_WITHIN: Duration = Duration::from_secs(5);

/// The certificate the injector serves, as found.
pub struct Served {
    /// The chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// Where it came from, for people.
    pub from: String,
}

pub use crate::engine::certificates::authority::host_port;

use crate::cluster::served::{self, provider, roots};

/// A URL webhook: reachable (`Err` is the reachability finding) and then the handshake with
/// the caBundle as root: the caBundle finding.
pub async fn by_url(
    url: &str,
    ca_bundle: Option<&[u8]>,
) -> (Finding, Option<Finding>, Option<Served>) {
    let reach = "webhook reachable";
    let Some((host, port)) = host_port(url) else {
        return (
            Finding::fail(
                reach,
                format!("clientConfig.url {url:?} is not https://HOST[:PORT]/PATH"),
                "correct the MutatingWebhookConfiguration's clientConfig.url",
            ),
            None,
            None,
        );
    };
    let tcp = match tokio::time::timeout(
        CONNECT_WITHIN,
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => {
            return (
                Finding::fail(
                    reach,
                    format!("{url}: cannot connect: {e}"),
                    "start the injector (sidecar-injector serve) where clientConfig.url points, or correct the URL",
                ),
                None,
                None,
            );
        }
        Err(_) => {
            return (
                Finding::fail(
                    reach,
                    format!("{url}: no connection within {} s", CONNECT_WITHIN.as_secs()),
                    "start the injector where clientConfig.url points; check firewalls between the apiserver and it",
                ),
                None,
                None,
            );
        }
    };
    let reached = Finding::pass(reach, format!("{url} accepts connections"));
    let Some(ca) = ca_bundle else {
        return (reached, Some(no_ca_bundle()), None);
    };
    let roots = match roots(ca) {
        Ok(r) => r,
        Err(e) => {
            return (
                reached,
                Some(Finding::fail("caBundle", e, INSTALL_CA)),
                None,
            );
        }
    };
    let config = match ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
    {
        Ok(b) => b.with_root_certificates(roots).with_no_client_auth(),
        Err(e) => {
            return (
                reached,
                Some(Finding::fail("caBundle", format!("TLS: {e}"), INSTALL_CA)),
                None,
            );
        }
    };
    let Ok(name) = ServerName::try_from(host.clone()) else {
        return (
            reached,
            Some(Finding::fail(
                "caBundle",
                format!("{host:?} is not a server name"),
                "correct clientConfig.url",
            )),
            None,
        );
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    match tokio::time::timeout(CONNECT_WITHIN, connector.connect(name, tcp)).await {
        Ok(Ok(tls)) => {
            let chain: Vec<CertificateDer<'static>> = tls
                .get_ref()
                .1
                .peer_certificates()
                .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
                .unwrap_or_default();
            (
                reached,
                Some(Finding::pass(
                    "caBundle",
                    format!("verifies the certificate {url} serves"),
                )),
                Some(Served {
                    chain,
                    from: url.to_owned(),
                }),
            )
        }
        Ok(Err(e)) => (
            reached,
            Some(Finding::fail(
                "caBundle",
                format!("does not verify the certificate {url} serves: {e}"),
                INSTALL_CA,
            )),
            None,
        ),
        Err(_) => (
            reached,
            Some(Finding::fail(
                "caBundle",
                format!(
                    "{url}: no TLS handshake within {} s",
                    CONNECT_WITHIN.as_secs()
                ),
                "check the injector's log",
            )),
            None,
        ),
    }
}

pub fn no_ca_bundle() -> Finding {
    Finding::fail(
        "caBundle",
        "the webhook has no caBundle: the apiserver cannot verify the injector's certificate, so every call fails (and failurePolicy decides)".into(),
        INSTALL_CA,
    )
}

/// A Service webhook: the serving certificate the injector's Pods mount, verified for the
/// Service's DNS name with the caBundle as root.
pub async fn by_service(
    client: &kube::Client,
    installed: &Installed,
    webhook: &MutatingWebhook,
    ca_bundle: Option<&[u8]>,
) -> (Finding, Option<Served>) {
    let Some(service) = &webhook.client_config.service else {
        return (
            Finding::skip("caBundle", "the webhook names no Service".into()),
            None,
        );
    };
    let Some(ca) = ca_bundle else {
        return (no_ca_bundle(), None);
    };
    let host = format!("{}.{}.svc", service.name, service.namespace);
    // What the Ready endpoints serve, read as the apiserver reads it (issue 32, item 11).
    let why_not = match served::endpoints(client, webhook).await {
        Ok(eps) if !eps.is_empty() => {
            let (mut reached, mut unreachable) = (Vec::new(), Vec::new());
            for ep in &eps {
                match served::served_by(ep).await {
                    Ok(chain) => reached.push((ep, chain)),
                    Err(e) => unreachable.push(format!("{ep}: {e}")),
                }
            }
            if let Some((first, chain)) = reached.first() {
                let refused: Vec<String> = reached
                    .iter()
                    .filter_map(|(ep, chain)| {
                        served::verify(chain, ca, &host)
                            .err()
                            .map(|e| format!("{ep}: {e}"))
                    })
                    .collect();
                let also = if unreachable.is_empty() {
                    String::new()
                } else {
                    format!("; not reached: {}", unreachable.join("; "))
                };
                let finding = if refused.is_empty() {
                    Finding::pass(
                        "caBundle",
                        format!(
                            "verifies the certificate each of {} Ready endpoint(s) serves for {host}{also}",
                            reached.len()
                        ),
                    )
                } else {
                    Finding::fail(
                        "caBundle",
                        format!(
                            "does not verify the certificate served for {host} by {}{also}",
                            refused.join("; ")
                        ),
                        INSTALL_CA,
                    )
                };
                let served = Served {
                    chain: chain.clone(),
                    from: format!("endpoint {first}"),
                };
                return (finding, Some(served));
            }
            format!(
                "no Ready endpoint could be reached from here ({})",
                unreachable.join("; ")
            )
        }
        Ok(_) => format!(
            "Service {}/{} has no Ready endpoint",
            service.namespace, service.name
        ),
        Err(e) => e,
    };
    // The Secret the Pods keep (--cert-secret), or the one mounted where --tls-cert-file points.
    let found = match installed.kept_certificates() {
        Some(kept) => Some((kept.namespace, kept.secret, TLS_CERT.to_owned())),
        None => installed
            .pods
            .iter()
            .find_map(serving_secret)
            .map(|(secret, key)| (installed.namespace.clone(), secret, key)),
    };
    let Some((namespace, secret, key)) = found else {
        let why = if installed.unread.is_empty() {
            "no injector Pod takes its serving certificate from a Secret (--cert-secret, or one mounted at --tls-cert-file): not verified".to_owned()
        } else {
            format!(
                "the injector's Pods could not be read ({}), so the Secret their certificate comes from is unknown: not verified",
                installed.unread.join("; ")
            )
        };
        return (Finding::skip("caBundle", why), None);
    };
    let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let pem = match api.get_opt(&secret).await {
        Ok(Some(s)) => s.data.and_then(|d| d.get(&key).map(|b| b.0.clone())),
        Ok(None) => {
            return (
                Finding::fail(
                    "caBundle",
                    format!("the serving certificate's Secret {namespace}/{secret} does not exist"),
                    "with --cert-secret the injector makes it: its log says why it has not; otherwise create it (docs/install.md: Certificates, three ways) or install cert-manager's overlay",
                ),
                None,
            );
        }
        Err(e) => {
            return (
                Finding::skip(
                    "caBundle",
                    format!(
                        "the serving certificate's Secret {namespace}/{secret} cannot be read ({e}): not verified"
                    ),
                ),
                None,
            );
        }
    };
    let chain: Vec<CertificateDer<'static>> = pem
        .map(|p| {
            CertificateDer::pem_slice_iter(&p)
                .filter_map(Result::ok)
                .collect()
        })
        .unwrap_or_default();
    let from = format!("Secret {namespace}/{secret} key {key}");
    if chain.is_empty() {
        return (
            Finding::fail(
                "caBundle",
                format!("{from} holds no PEM certificate"),
                "with --cert-secret, delete the Secret and the injector makes a new one; otherwise create it again (docs/install.md: Certificates, three ways)",
            ),
            None,
        );
    }
    let finding = match served::verify(&chain, ca, &host) {
        Ok(()) => Finding::pass(
            "caBundle",
            format!(
                "verifies the serving certificate ({from}) for {host} (what the endpoints serve was not checked: {why_not})"
            ),
        ),
        Err(e) => Finding::fail(
            "caBundle",
            format!("does not verify the serving certificate ({from}) for {host}: {e}"),
            INSTALL_CA,
        ),
    };
    (finding, Some(Served { chain, from }))
}

/// The Secret and key behind a Pod's `--tls-cert-file`.
fn serving_secret(pod: &k8s_openapi::api::core::v1::Pod) -> Option<(String, String)> {
    let spec = pod.spec.as_ref()?;
    for c in &spec.containers {
        let Some(path) = flag_value(c, "--tls-cert-file") else {
            continue;
        };
        // A file inside the mounted Secret: its key.
        let (volume, key) = volume_at(spec, c, &path).filter(|(_, key)| !key.is_empty())?;
        let secret = volume.secret.as_ref()?.secret_name.clone()?;
        return Some((secret, key));
    }
    None
}

/// The served leaf's validity, as Unix seconds (not before, not after).
pub fn validity(served: &Served) -> Option<(i64, i64)> {
    let leaf = served.chain.first()?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf).ok()?;
    let v = parsed.validity();
    Some((v.not_before.timestamp(), v.not_after.timestamp()))
}

#[cfg(test)]
mod tests {
    use super::{host_port, serving_secret};
    use serde_json::json;

    #[test]
    fn the_serving_secret_is_the_one_mounted_where_tls_cert_file_points() {
        let pod = |args: serde_json::Value| {
            serde_json::from_value(json!({"spec": {
                "containers": [{"name": "s", "args": args,
                    "volumeMounts": [{"name": "tls", "mountPath": "/etc/sidecar-injector/tls"}]}],
                "volumes": [{"name": "tls", "secret": {"secretName": "sidecar-injector-tls"}}]}}))
            .unwrap()
        };
        let want = Some(("sidecar-injector-tls".to_owned(), "tls.crt".to_owned()));
        let shipped = pod(json!([
            "serve",
            "--tls-cert-file=/etc/sidecar-injector/tls/tls.crt"
        ]));
        assert_eq!(serving_secret(&shipped), want);
        let spaced = pod(json!([
            "serve",
            "--tls-cert-file",
            "/etc/sidecar-injector/tls/tls.crt"
        ]));
        assert_eq!(serving_secret(&spaced), want);
        let elsewhere = pod(json!([
            "serve",
            "--tls-cert-file=/etc/sidecar-injector/tlsx/tls.crt"
        ]));
        assert_eq!(serving_secret(&elsewhere), None);
    }

    #[test]
    fn urls_give_host_and_port() {
        assert_eq!(
            host_port("https://127.0.0.1:8443/mutate"),
            Some(("127.0.0.1".into(), 8443))
        );
        assert_eq!(
            host_port("https://inj.example/mutate"),
            Some(("inj.example".into(), 443))
        );
        assert_eq!(
            host_port("https://[::1]:9443/mutate"),
            Some(("::1".into(), 9443))
        );
        assert_eq!(host_port("http://x/mutate"), None);
    }
}
