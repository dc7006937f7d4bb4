//! What the webhook's replicas serve, read as the apiserver reads it: a TLS handshake with
//! each Ready endpoint of the webhook's Service (from its EndpointSlices), or with its URL.
//! The Lease holder drops an older CA only once every endpoint serves a certificate of the
//! newest (issue 32, item 5); `doctor` verifies the caBundle against what is served.

use k8s_openapi::api::admissionregistration::v1::{MutatingWebhook, MutatingWebhookConfiguration};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::Arc;
use std::time::Duration;

/// How long one connection and handshake may take.
pub const HANDSHAKE_WITHIN: Duration = Duration::from_secs(3);

/// One place the apiserver may call the webhook at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// For people: the Pod (from the EndpointSlice's targetRef) or the URL.
    pub name: String,
    pub host: String,
    /// The ports to try, in order: the one named `https` first.
    pub ports: Vec<u16>,
    /// The name the apiserver verifies: `SERVICE.NAMESPACE.svc`, or the URL's host.
    pub server_name: String,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.name == self.host {
            write!(f, "{}", self.host)
        } else {
            write!(f, "{} ({})", self.name, self.host)
        }
    }
}

/// The CA certificates of a PEM text, as roots.
pub fn roots(pem: &[u8]) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| format!("the caBundle is not PEM: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("the caBundle holds a certificate rustls refuses: {e}"))?;
    }
    if roots.is_empty() {
        return Err("the caBundle holds no certificate".into());
    }
    Ok(roots)
}

/// rustls with ring, as everything here speaks TLS.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Whether `roots_pem` verifies `chain` (leaf first) for `server_name` now, as the apiserver
/// would.
pub fn verify(
    chain: &[CertificateDer<'static>],
    roots_pem: &[u8],
    server_name: &str,
) -> Result<(), String> {
    let (leaf, rest) = chain
        .split_first()
        .ok_or_else(|| "no certificate was served".to_owned())?;
    let verifier =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots(roots_pem)?), provider())
            .build()
            .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(server_name.to_owned()).map_err(|e| e.to_string())?;
    verifier
        .verify_server_cert(leaf, rest, &name, &[], UnixTime::now())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Takes whatever certificate is served, to be judged by [`verify`] afterwards: a handshake
/// that refused it would not say what it was.
#[derive(Debug)]
struct Capture(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Capture {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The chain (leaf first) served at `host:port` to a client asking for `server_name`.
pub async fn served_chain(
    host: &str,
    port: u16,
    server_name: &str,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let provider = provider();
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Capture(provider)))
        .with_no_client_auth();
    let name = ServerName::try_from(server_name.to_owned())
        .map_err(|e| format!("{server_name:?} is not a server name: {e}"))?;
    let connect = async {
        let tcp = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        Ok(tls
            .get_ref()
            .1
            .peer_certificates()
            .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
            .unwrap_or_default())
    };
    tokio::time::timeout(HANDSHAKE_WITHIN, connect)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no TLS handshake within {} s",
                HANDSHAKE_WITHIN.as_secs()
            ))
        })
}

/// [`served_chain`] on the endpoint's first port that completes a handshake.
pub async fn served_by(ep: &Endpoint) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut last = "no port".to_owned();
    for port in &ep.ports {
        match served_chain(&ep.host, *port, &ep.server_name).await {
            Ok(chain) => return Ok(chain),
            Err(e) => last = format!("port {port}: {e}"),
        }
    }
    Err(last)
}

/// Where the apiserver may call `webhook`: its URL, or each Ready endpoint of its Service.
pub async fn endpoints(
    client: &kube::Client,
    webhook: &MutatingWebhook,
) -> Result<Vec<Endpoint>, String> {
    let config = &webhook.client_config;
    if let Some(url) = &config.url {
        let (host, port) = crate::engine::certificates::authority::host_port(url)
            .ok_or_else(|| format!("clientConfig.url {url:?} is not https://HOST[:PORT]/PATH"))?;
        return Ok(vec![Endpoint {
            name: url.clone(),
            server_name: host.clone(),
            host,
            ports: vec![port],
        }]);
    }
    let Some(service) = &config.service else {
        return Ok(Vec::new());
    };
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), &service.namespace);
    let params =
        ListParams::default().labels(&format!("kubernetes.io/service-name={}", service.name));
    let what = format!(
        "listing the EndpointSlices of Service {}/{}",
        service.namespace, service.name
    );
    let slices = api
        .list(&params)
        .await
        .map_err(|e| format!("{:#}", crate::cluster::api_error(e, &what)))?;
    Ok(from_slices(
        &slices.items,
        &format!("{}.{}.svc", service.name, service.namespace),
    ))
}

/// The Ready endpoints of a Service's slices, each with its ports (`https` first).
pub fn from_slices(slices: &[EndpointSlice], server_name: &str) -> Vec<Endpoint> {
    let mut out: Vec<Endpoint> = Vec::new();
    for slice in slices {
        let mut ports: Vec<(bool, u16)> = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                let port = u16::try_from(p.port?).ok()?;
                Some((p.name.as_deref() != Some("https"), port))
            })
            .collect();
        ports.sort();
        let ports: Vec<u16> = ports.into_iter().map(|(_, p)| p).collect();
        for ep in &slice.endpoints {
            let ready = ep.conditions.as_ref().and_then(|c| c.ready) != Some(false);
            if !ready {
                continue;
            }
            for address in &ep.addresses {
                let name = ep
                    .target_ref
                    .as_ref()
                    .and_then(|r| r.name.clone())
                    .unwrap_or_else(|| address.clone());
                let endpoint = Endpoint {
                    name,
                    host: address.clone(),
                    ports: ports.clone(),
                    server_name: server_name.to_owned(),
                };
                if !out.contains(&endpoint) {
                    out.push(endpoint);
                }
            }
        }
    }
    out
}

/// The endpoints of every webhook of `configuration` that do not serve a certificate the
/// CAs of `trusted_pem` verify, each with why: empty when every one does. An endpoint that
/// cannot be read or reached counts as lagging.
pub async fn lagging(
    client: &kube::Client,
    configuration: &MutatingWebhookConfiguration,
    trusted_pem: &str,
) -> Vec<String> {
    let mut seen: Vec<Endpoint> = Vec::new();
    let mut lagging = Vec::new();
    for webhook in configuration.webhooks.iter().flatten() {
        match endpoints(client, webhook).await {
            Ok(eps) => seen.extend(
                eps.into_iter()
                    .filter(|e| !seen.contains(e))
                    .collect::<Vec<_>>(),
            ),
            Err(e) => lagging.push(e),
        }
    }
    // All at once: the look takes one handshake's time, not one per replica.
    let verdicts = futures::future::join_all(seen.iter().map(|ep| async move {
        served_by(ep)
            .await
            .and_then(|chain| verify(&chain, trusted_pem.as_bytes(), &ep.server_name))
            .map_err(|why| format!("{ep}: {why}"))
    }))
    .await;
    lagging.extend(verdicts.into_iter().filter_map(Result::err));
    lagging
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ready_endpoints_of_every_slice_with_the_https_port_first() {
        let slices: Vec<EndpointSlice> = serde_json::from_value(json!([
            {"metadata": {"name": "a"}, "addressType": "IPv4",
             "ports": [{"name": "metrics", "port": 9090}, {"name": "https", "port": 8443}],
             "endpoints": [
                {"addresses": ["10.0.0.1"], "conditions": {"ready": true},
                 "targetRef": {"kind": "Pod", "name": "inj-1"}},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": false},
                 "targetRef": {"kind": "Pod", "name": "inj-2"}},
                {"addresses": ["10.0.0.3"]}]},
            {"metadata": {"name": "b"}, "addressType": "IPv6",
             "ports": [{"port": 8443}],
             "endpoints": [{"addresses": ["fd00::1"], "conditions": {"ready": true}}]}
        ]))
        .unwrap();
        let eps = from_slices(&slices, "inj.ns.svc");
        let shown: Vec<(String, Vec<u16>)> = eps
            .iter()
            .map(|e| (e.to_string(), e.ports.clone()))
            .collect();
        assert_eq!(
            shown,
            vec![
                ("inj-1 (10.0.0.1)".to_owned(), vec![8443, 9090]),
                // No ready condition: Ready, as the EndpointSlice API says.
                ("10.0.0.3".to_owned(), vec![8443, 9090]),
                ("fd00::1".to_owned(), vec![8443]),
            ]
        );
        assert!(eps.iter().all(|e| e.server_name == "inj.ns.svc"));
    }

    /// A TLS server on loopback serving a leaf of `ca` for `name`, for one connection at a
    /// time, until the test ends.
    async fn serving(ca: &crate::engine::certificates::authority::Issued, name: &str) -> u16 {
        use crate::engine::certificates::authority;
        use rustls::pki_types::PrivateKeyDer;
        let now = time::OffsetDateTime::now_utc();
        let leaf =
            authority::issue(ca, &[name.to_owned()], now, now + Duration::from_secs(600)).unwrap();
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
                .map(Result::unwrap)
                .collect();
        let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let _ = acceptor.accept(tcp).await;
            }
        });
        port
    }

    /// What the holder's look at the replicas rests on: the certificate really served is
    /// read, and judged against the newest CA alone.
    #[tokio::test]
    async fn a_replica_is_judged_by_the_certificate_it_serves() {
        use crate::engine::certificates::authority;
        let now = time::OffsetDateTime::now_utc();
        let (old, new) = (
            authority::new_ca(now, Duration::from_secs(3600)).unwrap(),
            authority::new_ca(now, Duration::from_secs(3600)).unwrap(),
        );
        let name = "inj.ns.svc";
        let port = serving(&old, name).await;
        // A metrics-like port first: plain TCP that closes; the next port is tried.
        let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let plain_port = plain.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = plain.accept().await {
                drop(tcp);
            }
        });
        let ep = Endpoint {
            name: "inj-1".into(),
            host: "127.0.0.1".into(),
            ports: vec![plain_port, port],
            server_name: name.into(),
        };
        let chain = served_by(&ep).await.unwrap();
        assert!(verify(&chain, old.cert_pem.as_bytes(), name).is_ok());
        // The CAs share a subject: the new one is found as the issuer and its signature fails.
        let lag = verify(&chain, new.cert_pem.as_bytes(), name).unwrap_err();
        assert!(lag.contains("BadSignature"), "{lag}");
        // Both CAs in the bundle: trusted.
        let both = format!("{}{}", old.cert_pem, new.cert_pem);
        assert!(verify(&chain, both.as_bytes(), name).is_ok());
        // Another name than the one served for: refused, as the apiserver would.
        assert!(verify(&chain, old.cert_pem.as_bytes(), "other.ns.svc").is_err());
        // Nothing listening: said, not hung.
        let gone = Endpoint {
            ports: vec![1],
            ..ep.clone()
        };
        let err = served_by(&gone).await.unwrap_err();
        assert!(err.contains("port 1: cannot connect"), "{err}");
    }
}
