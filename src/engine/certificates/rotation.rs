//! What the Lease holder does next with the certificate Secret and the webhook's caBundle,
//! decided from what it sees and the time: pure, so every step of a rotation is tested here.
//!
//! The Secret holds `ca.crt` (the CAs to trust, oldest first: the caBundle), `ca.key` (the
//! newest CA's key), and `tls.crt`/`tls.key` (the serving pair, signed by one of the CAs).
//! With `L` the serving certificate's validity:
//! - the serving certificate is renewed when less than `L/3` of it is left;
//! - a CA is valid `4L`. When less than `2L` of the newest is left, or at the last renewal
//!   before that (so a renewal and a rollover never fall in one `L`), a new CA is added to the
//!   bundle (the old one stays) and published in the caBundle; only once the apiserver has
//!   had it for [`Timing::propagation`] is a serving certificate signed by it; the old CA
//!   leaves the bundle once that certificate has been in the Secret for [`Timing::grace`]
//!   and a TLS handshake with every Ready endpoint of the webhook finds a certificate of the
//!   newest CA served there ([`Step::LookAtReplicas`]). A replica that lags is waited for
//!   [`Timing::patience`] more, then named in a Warning and the CA dropped anyway: a replica
//!   that never follows the Secret cannot keep a CA trusted for ever. No call fails during a
//!   rotation while every replica follows.

use crate::engine::certificates::authority::Issued;
use std::time::Duration;
use x509_parser::pem::Pem;

pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const TLS_CERT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";

/// The durations of a rotation, all from the serving certificate's validity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub serving: Duration,
}

impl Timing {
    pub fn ca_validity(&self) -> Duration {
        self.serving * 4
    }
    /// Renew the serving certificate when less than this is left of it.
    pub fn renew_before(&self) -> Duration {
        self.serving / 3
    }
    /// Add a new CA when less than this is left of the newest.
    pub fn rollover_before(&self) -> Duration {
        self.serving * 2
    }
    /// How long the apiserver has had a caBundle before a certificate signed by its newest CA
    /// is served: its webhook configuration informer must have seen the bundle.
    pub fn propagation(&self) -> Duration {
        (self.serving / 20).clamp(Duration::from_secs(2), Duration::from_secs(60))
    }
    /// How long after a serving certificate was first seen the CAs it does not need stay
    /// trusted: every replica watches the Secret and serves it within seconds.
    pub fn grace(&self) -> Duration {
        (self.serving / 10).clamp(Duration::from_secs(5), Duration::from_secs(600))
    }
    /// How long past the grace the old CA waits for a replica that still serves a
    /// certificate of an older CA, before it is dropped anyway with a Warning.
    pub fn patience(&self) -> Duration {
        self.grace() * 3
    }
    /// How often the holder looks again with nothing changed.
    pub fn tick(&self) -> Duration {
        (self.serving / 30).clamp(Duration::from_secs(1), Duration::from_secs(30))
    }
    /// The shortest validity the steps fit in.
    pub const MIN_SERVING: Duration = Duration::from_secs(30);
}

/// A certificate as the plan needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cert {
    pub pem: String,
    pub subject: Vec<u8>,
    pub issuer: Vec<u8>,
    pub not_after: i64,
    pub serial: String,
    /// DNS names and IP addresses (as text) of the subjectAltName.
    pub names: Vec<String>,
    pub public_key: Vec<u8>,
}

/// The Secret's contents, parsed. Its `Debug` leaves the keys out, as [`Issued`]'s does.
#[derive(Clone)]
pub struct Stored {
    /// Oldest first; the last is the one `ca.key` belongs to.
    pub cas: Vec<Cert>,
    pub ca_key_pem: String,
    pub leaf: Cert,
    pub leaf_key_pem: String,
}

impl std::fmt::Debug for Stored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stored")
            .field("cas", &self.cas)
            .field("ca_key_pem", &"<redacted>")
            .field("leaf", &self.leaf)
            .field("leaf_key_pem", &"<redacted>")
            .finish()
    }
}

impl Stored {
    /// Reads the Secret's data. An error says what is wrong, for the log; the holder then
    /// makes a new set.
    pub fn parse(get: impl Fn(&str) -> Option<Vec<u8>>) -> Result<Stored, String> {
        let text = |key: &str| -> Result<String, String> {
            let bytes = get(key).ok_or_else(|| format!("no {key}"))?;
            String::from_utf8(bytes).map_err(|_| format!("{key} is not PEM text"))
        };
        let cas = parse_certs(&text(CA_CERT)?).map_err(|e| format!("{CA_CERT}: {e}"))?;
        let ca_key_pem = text(CA_KEY)?;
        let leaf = parse_certs(&text(TLS_CERT)?)
            .map_err(|e| format!("{TLS_CERT}: {e}"))?
            .into_iter()
            .next()
            .ok_or_else(|| format!("{TLS_CERT} holds no certificate"))?;
        let leaf_key_pem = text(TLS_KEY)?;
        let newest = cas
            .last()
            .ok_or_else(|| format!("{CA_CERT} holds no certificate"))?;
        let key = rcgen::KeyPair::from_pem(&ca_key_pem)
            .map_err(|e| format!("{CA_KEY} is not a private key: {e}"))?;
        if rcgen::PublicKeyData::subject_public_key_info(&key) != newest.public_key {
            return Err(format!(
                "{CA_KEY} is not the key of the last CA in {CA_CERT}"
            ));
        }
        if !cas.iter().any(|ca| ca.subject == leaf.issuer) {
            return Err(format!("{TLS_CERT} is signed by no CA in {CA_CERT}"));
        }
        Ok(Stored {
            cas,
            ca_key_pem,
            leaf,
            leaf_key_pem,
        })
    }

    pub fn newest_ca(&self) -> Issued {
        Issued {
            cert_pem: self.cas.last().map(|c| c.pem.clone()).unwrap_or_default(),
            key_pem: self.ca_key_pem.clone(),
        }
    }

    /// The serving pair as stored, to write back unchanged.
    pub fn leaf_pair(&self) -> Issued {
        Issued {
            cert_pem: self.leaf.pem.clone(),
            key_pem: self.leaf_key_pem.clone(),
        }
    }

    /// The caBundle: the PEM of every CA, oldest first.
    pub fn bundle(&self) -> String {
        bundle(&self.cas)
    }

    fn signed_by_newest(&self) -> bool {
        self.cas.last().map(|c| &c.subject) == Some(&self.leaf.issuer)
    }
}

pub fn bundle(cas: &[Cert]) -> String {
    cas.iter().map(|c| c.pem.as_str()).collect()
}

/// Whether publishing `bundle` would take away a CA some webhook's caBundle holds now
/// (compared as parsed certificates; a bundle that does not parse is judged as dropping).
pub fn drops_a_ca(current: &[Option<String>], bundle: &str) -> bool {
    let Ok(new) = parse_certs(bundle) else {
        return true;
    };
    current
        .iter()
        .flatten()
        .any(|held| match parse_certs(held) {
            Ok(held) => held.iter().any(|c| !new.iter().any(|n| n.pem == c.pem)),
            Err(_) => false,
        })
}

/// Every certificate of a PEM text.
pub fn parse_certs(pem_text: &str) -> Result<Vec<Cert>, String> {
    let mut certs = Vec::new();
    for pem in Pem::iter_from_buffer(pem_text.as_bytes()) {
        let pem = pem.map_err(|e| format!("not PEM: {e}"))?;
        let (_, x509) = x509_parser::parse_x509_certificate(&pem.contents)
            .map_err(|e| format!("not an X.509 certificate: {e}"))?;
        let names = x509
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_owned()),
                        x509_parser::extensions::GeneralName::IPAddress(ip) => ip_text(ip),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        certs.push(Cert {
            pem: pem_of(&pem.contents),
            subject: x509.subject().as_raw().to_vec(),
            issuer: x509.issuer().as_raw().to_vec(),
            not_after: x509.validity().not_after.timestamp(),
            serial: x509.raw_serial_as_string(),
            names,
            public_key: x509.public_key().raw.to_vec(),
        });
    }
    if certs.is_empty() {
        return Err("holds no certificate".to_owned());
    }
    Ok(certs)
}

fn ip_text(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes)
            .ok()
            .map(|b| std::net::Ipv4Addr::from(b).to_string()),
        16 => <[u8; 16]>::try_from(bytes)
            .ok()
            .map(|b| std::net::Ipv6Addr::from(b).to_string()),
        _ => None,
    }
}

fn pem_of(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Names as the certificate holds them, to compare by meaning: an IP address in its
/// canonical form (`2001:DB8:0::1` is `2001:db8::1`, as it is read back from the
/// certificate), a DNS name in lower case without a final dot.
fn name_set(names: &[String]) -> std::collections::BTreeSet<String> {
    names.iter().map(|n| canonical_name(n)).collect()
}

/// One name in the form a certificate holds and gives back (see [`name_set`]); the names a
/// certificate is issued for are written so.
pub fn canonical_name(name: &str) -> String {
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => name.trim_end_matches('.').to_ascii_lowercase(),
    }
}

/// What the holder remembers between looks (and forgets when it loses the Lease, so a new
/// holder waits the full time again).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    /// The caBundle the webhook configuration holds, and since when (Unix seconds).
    pub bundle: Option<(String, i64)>,
    /// The serving certificate's serial, and since when it is in the Secret.
    pub leaf: Option<(String, i64)>,
    /// What the webhook's Ready endpoints served at the last look ([`Step::LookAtReplicas`]).
    pub replicas: Option<ReplicaView>,
}

/// What a TLS handshake with each Ready endpoint of the webhook found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaView {
    /// The serial of the serving certificate the Secret held when they were looked at.
    pub leaf: String,
    /// When (Unix seconds). A view is good for one [`Timing::tick`].
    pub at: i64,
    /// The endpoints that do not serve a certificate of the newest CA (unreachable ones
    /// too), each with why, for the log and the Warning. Empty: every one does.
    pub lagging: Vec<String>,
}

impl Seen {
    /// Records what is there now; times only move when the thing changes.
    pub fn observe(&mut self, webhook_bundle: Option<&str>, stored: Option<&Stored>, now: i64) {
        match webhook_bundle {
            Some(b) if self.bundle.as_ref().map(|(s, _)| s.as_str()) != Some(b) => {
                self.bundle = Some((b.to_owned(), now))
            }
            None => self.bundle = None,
            _ => {}
        }
        match stored {
            Some(s) if self.leaf.as_ref().map(|(l, _)| l) != Some(&s.leaf.serial) => {
                self.leaf = Some((s.leaf.serial.clone(), now))
            }
            None => self.leaf = None,
            _ => {}
        }
    }
}

/// The next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// No usable set: a new CA and serving certificate (the reason, for the log).
    Create(String),
    /// The webhook configuration's caBundle is not the Secret's `ca.crt`: set it.
    Publish,
    /// A new serving certificate from the newest CA (the reason).
    Issue(String),
    /// A new CA joins the bundle, and its key replaces `ca.key`.
    AddCa,
    /// Before the CAs before the newest may leave: look at what each Ready endpoint of the
    /// webhook serves (a TLS handshake), record it in [`Seen::replicas`] and plan again.
    LookAtReplicas,
    /// The CAs before the newest leave the bundle. Not empty: these endpoints still served a
    /// certificate of an older CA when [`Timing::patience`] ran out (a Warning names them).
    DropOld(Vec<String>),
    /// Nothing to do; look again in this long at the latest.
    Wait(Duration),
}

/// The next step, from the Secret (`None`: absent; `Some(Err)`: unusable), the caBundle of
/// the webhook configuration (`None` when any of its webhooks has another), the names the
/// serving certificate must hold, what the holder has seen and the time (Unix seconds).
pub fn plan(
    stored: Option<&Result<Stored, String>>,
    webhook_bundle: Option<&str>,
    names: &[String],
    seen: &Seen,
    now: i64,
    timing: Timing,
) -> Step {
    let stored = match stored {
        None => return Step::Create("the Secret does not exist".to_owned()),
        Some(Err(why)) => return Step::Create(format!("the Secret is unusable: {why}")),
        Some(Ok(s)) => s,
    };
    let bundle = stored.bundle();
    if webhook_bundle != Some(bundle.as_str()) {
        return Step::Publish;
    }
    let secs = |d: Duration| d.as_secs() as i64;
    let since = |t: Option<i64>| now - t.unwrap_or(now);
    let trusted_for = since(
        seen.bundle
            .as_ref()
            .filter(|(b, _)| *b == bundle)
            .map(|(_, t)| *t),
    );
    let leaf_for = since(
        seen.leaf
            .as_ref()
            .filter(|(s, _)| *s == stored.leaf.serial)
            .map(|(_, t)| *t),
    );
    let left = |c: &Cert| c.not_after - now;
    let mut wait = secs(timing.tick());
    // A newest CA near its end never signs: a leaf is capped at its CA's end, so one from a
    // CA with less than the renewal margin left would be due at birth, and renewed again as
    // fast as the API answers (issue 32, item 1). Whatever else the Secret holds (names to
    // change, a leaf of an older CA, older CAs beside it after a holder gap), a new CA joins
    // first; the CAs before it stay trusted until its leaf has been served for the grace.
    // Found by the property test of `rotation_props`: issuing first, or dropping the older
    // CAs first, spent 5 or 6 Secret writes in one `L`.
    let newest = stored.cas.last().map(left).unwrap_or(0);
    if newest < secs(timing.rollover_before()) {
        return Step::AddCa;
    }
    // A leaf is due (new names, a third of it left, or one from an older CA). If the newest
    // CA reaches its rollover point before a leaf issued now is due again, the rollover
    // starts now instead: its new CA signs the next leaf once published, so one write is
    // saved, and the writes of a rollover never meet a renewal in one `L` (at most 4 in any
    // `L`; `rotation_props`).
    let rollover_soon =
        newest < secs(timing.rollover_before()) + secs(timing.serving - timing.renew_before());
    if !stored.signed_by_newest() {
        if rollover_soon {
            return Step::AddCa;
        }
        let needed = secs(timing.propagation());
        if trusted_for >= needed {
            return Step::Issue("the newest CA is in the caBundle: it signs now".to_owned());
        }
        return Step::Wait(Duration::from_secs(
            (needed - trusted_for).clamp(1, wait) as u64
        ));
    }
    let (wanted, held) = (name_set(names), name_set(&stored.leaf.names));
    let due = if wanted != held {
        Some(format!(
            "the names changed: {held:?} held, {wanted:?} wanted"
        ))
    } else if left(&stored.leaf) < secs(timing.renew_before()) {
        Some(format!(
            "the serving certificate expires in {} s",
            left(&stored.leaf)
        ))
    } else {
        None
    };
    if let Some(why) = due {
        return if rollover_soon {
            Step::AddCa
        } else {
            Step::Issue(why)
        };
    }
    if stored.cas.len() > 1 {
        let needed = secs(timing.grace());
        if leaf_for < needed {
            wait = wait.min(needed - leaf_for);
        } else {
            // Every replica must serve the newest CA's certificate before an older CA leaves
            // (issue 32, item 5): the time alone does not say that a replica has moved.
            let view = seen
                .replicas
                .as_ref()
                .filter(|v| v.leaf == stored.leaf.serial && now - v.at < secs(timing.tick()));
            match view {
                None => return Step::LookAtReplicas,
                Some(v) if v.lagging.is_empty() => return Step::DropOld(Vec::new()),
                Some(v) if leaf_for >= needed + secs(timing.patience()) => {
                    return Step::DropOld(v.lagging.clone());
                }
                // Look again after a tick (the view is stale by then).
                Some(_) => {}
            }
        }
    }
    Step::Wait(Duration::from_secs(wait.max(1) as u64))
}

#[cfg(test)]
#[path = "rotation_tests.rs"]
mod tests;
