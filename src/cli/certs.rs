//! Certificates with rcgen: a CA and a serving certificate for the webhook's Service, the
//! caBundle for the MutatingWebhookConfiguration, and the dev pair `serve` makes when it is
//! given none.

use anyhow::{Context, Result};
use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const TLS_CERT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";

/// The DNS names of a Service, as the apiserver dials it.
pub fn service_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_owned(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// Paths of a written set.
#[derive(Debug, Clone)]
pub struct Written {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Writes `ca.crt`, `tls.crt`, `tls.key` (and `ca.key`) to `dir` for these names. A CA already
/// in `dir` (both `ca.crt` and `ca.key`) signs the new pair, so the caBundle stays the same.
pub fn write(dir: &Path, names: &[String]) -> Result<Written> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (ca_pem, ca_key) = match (read(dir, CA_CERT), read(dir, CA_KEY)) {
        (Some(cert), Some(key)) => {
            let key = KeyPair::from_pem(&key)
                .with_context(|| format!("{}: not a private key", dir.join(CA_KEY).display()))?;
            (cert, key)
        }
        _ => {
            let key = KeyPair::generate().context("generating the CA key")?;
            let cert = ca_params().self_signed(&key).context("signing the CA")?;
            write_file(&dir.join(CA_CERT), cert.pem().as_bytes(), false)?;
            write_file(&dir.join(CA_KEY), key.serialize_pem().as_bytes(), true)?;
            (cert.pem(), key)
        }
    };
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)
        .with_context(|| format!("{}: not a CA certificate", dir.join(CA_CERT).display()))?;
    let key = KeyPair::generate().context("generating the serving key")?;
    let mut params = CertificateParams::new(names.to_vec()).context("the certificate names")?;
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
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::minutes(5);
    params.not_after = now + Duration::days(365);
    let cert = params
        .signed_by(&key, &issuer)
        .context("signing the serving certificate")?;
    let written = Written {
        ca: dir.join(CA_CERT),
        cert: dir.join(TLS_CERT),
        key: dir.join(TLS_KEY),
    };
    write_file(&written.cert, cert.pem().as_bytes(), false)?;
    write_file(&written.key, key.serialize_pem().as_bytes(), true)?;
    Ok(written)
}

/// The dev set `serve` uses without `--tls-*` flags: reused when all three files exist.
pub fn ensure_dev(dir: &Path) -> Result<Written> {
    let existing = Written {
        ca: dir.join(CA_CERT),
        cert: dir.join(TLS_CERT),
        key: dir.join(TLS_KEY),
    };
    if existing.ca.is_file() && existing.cert.is_file() && existing.key.is_file() {
        return Ok(existing);
    }
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    names.extend(service_names("sidecar-injector", "sidecar-injector"));
    write(dir, &names)
}

/// The caBundle field's value: the CA certificate's PEM, base64-encoded.
pub fn ca_bundle(ca_path: &Path) -> Result<String> {
    let pem = std::fs::read(ca_path).with_context(|| format!("reading {}", ca_path.display()))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(pem))
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "sidecar-injector CA");
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::minutes(5);
    params.not_after = now + Duration::days(3650);
    params
}

fn read(dir: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(name)).ok()
}

fn write_file(path: &Path, data: &[u8], private: bool) -> Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(data)
        .with_context(|| format!("writing {}", path.display()))
}
