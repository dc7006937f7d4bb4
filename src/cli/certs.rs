//! Certificates with rcgen: a CA and a serving certificate for the webhook's Service, the
//! caBundle for the MutatingWebhookConfiguration, and the dev pair `serve` makes when it is
//! given none.

use crate::cluster::certificates::keeper;
use crate::engine::certificates::authority::{self, Issued};
use crate::engine::certificates::rotation::Timing;
use anyhow::{Context, Result};
use base64::Engine as _;
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

pub use authority::service_names;

/// The file names: those of the keys of the Secret `serve --cert-secret` keeps.
pub use crate::engine::certificates::rotation::{CA_CERT, CA_KEY, TLS_CERT, TLS_KEY};

/// How long the CA and the serving certificate made by `certs` are valid.
const CA_VALIDITY: std::time::Duration = std::time::Duration::from_secs(3650 * 86_400);
const SERVING_VALIDITY: Duration = Duration::days(365);

/// `serve --cert-secret NAMESPACE/NAME --webhook-configuration NAME [--cert-san N]...
/// [--cert-validity D]`, checked.
pub fn secret_options(
    secret: &str,
    webhook_configuration: String,
    extra_names: Vec<String>,
    validity: &str,
) -> Result<keeper::Options> {
    let Some((namespace, name)) = secret
        .split_once('/')
        .filter(|(ns, n)| !ns.is_empty() && !n.is_empty() && !n.contains('/'))
    else {
        anyhow::bail!(
            "--cert-secret {secret:?}: give it as NAMESPACE/NAME, for example sidecar-injector/sidecar-injector-tls"
        );
    };
    let serving = duration(validity).with_context(|| format!("--cert-validity {validity:?}"))?;
    if serving < Timing::MIN_SERVING {
        anyhow::bail!(
            "--cert-validity {validity}: at least {} s, so a renewal and a CA rollover fit in it",
            Timing::MIN_SERVING.as_secs()
        );
    }
    Ok(keeper::Options {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        webhook_configuration,
        extra_names,
        timing: Timing { serving },
    })
}

/// `90d`, `12h`, `30m`, `45s`.
fn duration(text: &str) -> Result<std::time::Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| anyhow::anyhow!("not a number followed by s, m, h or d"))?;
    let unit_s = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => anyhow::bail!("the unit {unit:?} is not s, m, h or d"),
    };
    n.checked_mul(unit_s)
        .map(std::time::Duration::from_secs)
        .context("too long")
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
    let now = OffsetDateTime::now_utc();
    let ca = match (read(dir, CA_CERT), read(dir, CA_KEY)) {
        (Some(cert_pem), Some(key_pem)) => Issued { cert_pem, key_pem },
        _ => {
            let ca = authority::new_ca(now, CA_VALIDITY)?;
            write_file(&dir.join(CA_CERT), ca.cert_pem.as_bytes(), false)?;
            write_file(&dir.join(CA_KEY), ca.key_pem.as_bytes(), true)?;
            ca
        }
    };
    let cert = authority::issue(&ca, names, now, now + SERVING_VALIDITY)
        .with_context(|| format!("signing with the CA in {}", dir.display()))?;
    let written = Written {
        ca: dir.join(CA_CERT),
        cert: dir.join(TLS_CERT),
        key: dir.join(TLS_KEY),
    };
    write_file(&written.cert, cert.cert_pem.as_bytes(), false)?;
    write_file(&written.key, cert.key_pem.as_bytes(), true)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cert_secret_flags_are_checked_with_a_way_out() {
        let ok = secret_options("sys/tls", "wh".into(), vec![], "90d").unwrap();
        assert_eq!((ok.namespace.as_str(), ok.name.as_str()), ("sys", "tls"));
        assert_eq!(ok.timing.serving.as_secs(), 90 * 86_400);
        let e = secret_options("tls", "wh".into(), vec![], "90d").unwrap_err();
        assert!(format!("{e:#}").contains("NAMESPACE/NAME"), "{e:#}");
        let e = secret_options("sys/tls", "wh".into(), vec![], "10s").unwrap_err();
        assert!(format!("{e:#}").contains("at least 30 s"), "{e:#}");
        let e = secret_options("sys/tls", "wh".into(), vec![], "3w").unwrap_err();
        assert!(format!("{e:#}").contains("--cert-validity \"3w\""), "{e:#}");
    }
}
