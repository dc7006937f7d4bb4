//! rustls for the webhook port: TLS 1.2 and 1.3 with the ring provider's modern suites only,
//! a certificate resolver whose pair can be swapped while serving, and optional client
//! certificate verification.

use anyhow::{Context, Result, anyhow, bail};
use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use std::path::Path;
use std::sync::Arc;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A loaded certificate chain and key.
pub struct Pair {
    pub key: Arc<CertifiedKey>,
    /// `notAfter` of the leaf, as Unix time.
    pub not_after: i64,
    /// The leaf's serial number, hex.
    pub serial: String,
}

/// Loads and checks a pair: both parse, and the key is the certificate's. A half-written or
/// mismatched pair is an error, never served.
pub fn load_pair(cert_path: &Path, key_path: &Path) -> Result<Pair> {
    let cert =
        std::fs::read(cert_path).with_context(|| format!("reading {}", cert_path.display()))?;
    let key = std::fs::read(key_path).with_context(|| format!("reading {}", key_path.display()))?;
    pair_from_pem(
        &cert,
        &key,
        &cert_path.display().to_string(),
        &key_path.display().to_string(),
    )
}

/// [`load_pair`] for PEM held in memory; `cert_name` and `key_name` say where it came from.
pub fn pair_from_pem(cert: &[u8], key: &[u8], cert_name: &str, key_name: &str) -> Result<Pair> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<_, _>>()
        .with_context(|| format!("{cert_name}: not a PEM certificate chain"))?;
    let Some(leaf) = certs.first() else {
        bail!("{cert_name}: holds no certificate");
    };
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| anyhow!("{cert_name}: not an X.509 certificate: {e}"))?;
    let not_after = parsed.validity().not_after.timestamp();
    let serial = parsed.raw_serial_as_string();
    let key = PrivateKeyDer::from_pem_slice(key)
        .with_context(|| format!("{key_name}: not a PEM private key"))?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .with_context(|| format!("{key_name}: unsupported private key"))?;
    let certified = CertifiedKey::new(certs, signing);
    certified
        .keys_match()
        .with_context(|| format!("{cert_name} and {key_name} do not belong together"))?;
    Ok(Pair {
        key: Arc::new(certified),
        not_after,
        serial,
    })
}

/// Hands every new handshake the current pair; [`CertResolver::swap`] replaces it.
#[derive(Debug)]
pub struct CertResolver {
    current: ArcSwap<CertifiedKey>,
}

impl CertResolver {
    pub fn new(key: Arc<CertifiedKey>) -> Self {
        CertResolver {
            current: ArcSwap::new(key),
        }
    }

    pub fn swap(&self, key: Arc<CertifiedKey>) {
        self.current.store(key);
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The server's rustls configuration. With `client_ca`, clients must present a certificate
/// that CA signed (the apiserver can be configured to).
pub fn server_config(
    resolver: Arc<CertResolver>,
    client_ca: Option<&Path>,
) -> Result<ServerConfig> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS versions")?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path)
                .with_context(|| format!("reading {}", path.display()))?
            {
                let cert =
                    cert.with_context(|| format!("{}: not a PEM certificate", path.display()))?;
                roots
                    .add(cert)
                    .with_context(|| format!("{}: unusable CA certificate", path.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .with_context(|| format!("{}: client CA", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
