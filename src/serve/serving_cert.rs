//! The serving certificate: from files (`--tls-cert-file`, watched, so cert-manager's or
//! kubelet's renewals are served at once) or from a Secret the injector keeps itself
//! (`--cert-secret`, read through the API). Either way a refused pair never replaces the
//! one serving.

use crate::cluster::certificates::keeper;
use crate::serve::file_watch;
use crate::serve::metrics::Metrics;
use crate::serve::tls::{self, CertResolver, Pair};
use anyhow::{Result, bail};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use tracing::{info, warn};

/// Where the serving pair comes from.
#[derive(Debug, Clone)]
pub enum Certificates {
    Files { cert: PathBuf, key: PathBuf },
    Secret(keeper::Options),
}

/// Why the certificate served is not the current one (its source holds a pair that was
/// refused, so the previous one keeps serving): `/readyz` says it, and fails, so the
/// apiserver and the Lease holder's look at the replicas leave this replica aside.
#[derive(Debug, Default)]
pub struct Behind(std::sync::Mutex<Option<String>>);

impl Behind {
    fn set(&self, why: Option<String>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = why;
    }
    pub fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// How often certificate files are checked for changes.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// The first pair, and from then on each new one. `leader` is whether this replica holds the
/// Lease (it keeps the Secret); `--cert-secret` needs API access.
pub async fn start(
    certs: &Certificates,
    client: Option<&kube::Client>,
    leader: Option<Arc<AtomicBool>>,
    metrics: Arc<Metrics>,
    behind: Arc<Behind>,
) -> Result<Arc<CertResolver>> {
    match certs {
        Certificates::Files { cert, key } => {
            let pair = tls::load_pair(cert, key)?;
            metrics.certificate_expiry(pair.not_after);
            let resolver = Arc::new(CertResolver::new(pair.key));
            watch_files(cert.clone(), key.clone(), metrics, resolver.clone(), behind);
            Ok(resolver)
        }
        Certificates::Secret(opts) => {
            let (Some(client), Some(leader)) = (client, leader) else {
                bail!(
                    "--cert-secret {}/{}: needs API access (--kubeconfig, or run in a cluster); without it, pass --tls-cert-file and --tls-key-file",
                    opts.namespace,
                    opts.name
                );
            };
            let resolver: Arc<std::sync::OnceLock<Arc<CertResolver>>> = Arc::default();
            let first = resolver.clone();
            let source = opts.to_string();
            keeper::start(client.clone(), opts.clone(), leader, move |pair| {
                let cert_name = format!("{source} {}", crate::engine::certificates::rotation::TLS_CERT);
                let key_name = format!("{source} {}", crate::engine::certificates::rotation::TLS_KEY);
                let loaded = tls::pair_from_pem(&pair.cert_pem, &pair.key_pem, &cert_name, &key_name);
                match first.get() {
                    None => match loaded {
                        Ok(pair) => {
                            info!(secret = %source, serial = %pair.serial, not_after = %crate::engine::certificates::rfc3339(pair.not_after), "serving the certificate of the Secret");
                            metrics.certificate_expiry(pair.not_after);
                            let _ = first.set(Arc::new(CertResolver::new(pair.key)));
                            true
                        }
                        Err(e) => {
                            warn!(error = format!("{e:#}"), "the Secret's serving certificate is refused; waiting for a usable one");
                            false
                        }
                    },
                    Some(resolver) => {
                        swapped(loaded, &metrics, resolver, &behind, &source);
                        true
                    }
                }
            })
            .await?;
            match resolver.get() {
                Some(r) => Ok(r.clone()),
                None => bail!("{opts}: no serving certificate was taken"),
            }
        }
    }
}

/// A new pair, served if it loads; the previous one keeps serving otherwise.
fn swapped(
    loaded: Result<Pair>,
    metrics: &Metrics,
    resolver: &CertResolver,
    behind: &Behind,
    source: &str,
) {
    match loaded {
        Ok(pair) => {
            behind.set(None);
            info!(serial = %pair.serial, not_after = %crate::engine::certificates::rfc3339(pair.not_after), "serving certificate reloaded");
            metrics.certificate_reload(true);
            metrics.certificate_expiry(pair.not_after);
            resolver.swap(pair.key);
        }
        Err(e) => {
            warn!(
                error = format!("{e:#}"),
                "serving certificate refused; the previous one keeps serving"
            );
            metrics.certificate_reload(false);
            behind.set(Some(format!(
                "serving an earlier certificate: the current one in {source} is refused ({e:#}); replace it with a usable pair"
            )));
        }
    }
}

fn watch_files(
    cert: PathBuf,
    key: PathBuf,
    metrics: Arc<Metrics>,
    resolver: Arc<CertResolver>,
    behind: Arc<Behind>,
) {
    let source = format!("{} and {}", cert.display(), key.display());
    file_watch::spawn(
        "certificate",
        {
            let files = vec![cert.clone(), key.clone()];
            move || files.clone()
        },
        WATCH_INTERVAL,
        move || {
            swapped(
                tls::load_pair(&cert, &key),
                &metrics,
                &resolver,
                &behind,
                &source,
            )
        },
    );
}
