//! Making certificates with rcgen, in memory: a CA, and a serving certificate it signs. Used
//! by `certs` (which writes them to files) and by `serve --cert-secret` (which keeps them in
//! a Secret). No I/O.

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

/// A certificate and its private key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// How far back `notBefore` is set, so a clock a little behind ours still accepts it.
pub const BACKDATE: Duration = Duration::minutes(5);

/// The DNS names of a Service, as the apiserver dials it.
pub fn service_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_owned(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// `https://host:port/path` as host and port.
pub fn host_port(url: &str) -> Option<(String, u16)> {
    let rest = url.strip_prefix("https://")?;
    let authority = rest.split(['/', '?']).next()?;
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = after
            .strip_prefix(':')
            .map_or(Some(443), |p| p.parse().ok())?;
        return Some((host.to_owned(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host.to_owned(), port.parse().ok()?)),
        None => Some((authority.to_owned(), 443)),
    }
}

/// A new self-signed CA valid for `validity` from `now`. Its common name carries `now` (to
/// the nanosecond), so the CAs of successive rollovers have distinct subjects and a serving
/// certificate's issuer names exactly one of them.
pub fn new_ca(now: OffsetDateTime, validity: std::time::Duration) -> Result<Issued> {
    let key = KeyPair::generate().context("generating the CA key")?;
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        format!("sidecar-injector CA {}", now.unix_timestamp_nanos()),
    );
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - BACKDATE;
    params.not_after = now + validity;
    let cert = params.self_signed(&key).context("signing the CA")?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A serving certificate for `names` (DNS names or IP addresses), signed by the CA, valid
/// until `not_after`.
pub fn issue(
    ca: &Issued,
    names: &[String],
    now: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<Issued> {
    let ca_key = KeyPair::from_pem(&ca.key_pem).context("the CA key is not a private key")?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)
        .context("the CA certificate is not a CA certificate")?;
    let key = KeyPair::generate().context("generating the serving key")?;
    let mut params = CertificateParams::new(names.to_vec())
        .with_context(|| format!("the certificate names {names:?}"))?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        names.first().cloned().unwrap_or_default(),
    );
    params.distinguished_name = dn;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.not_before = now - BACKDATE;
    params.not_after = not_after;
    let cert = params
        .signed_by(&key, &issuer)
        .context("signing the serving certificate")?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}
