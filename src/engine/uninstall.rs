//! What `sidecar-injector uninstall` removes once the install itself is gone (`helm
//! uninstall`, `kubectl delete -k manifests/`): what the injector made at run time and no
//! chart or kustomization lists. Pure: the command hands in what it found, and does what
//! [`plan`] says, in its order.
//!
//! Only what the injector made is ever removed: a copy it made from this install's namespace
//! (its label and annotation, [`secret_copies::is_ours`]), a certificate Secret labelled as
//! its own, its Lease. The token Secret the user created stays, and so does any Secret
//! someone else made. A copy a Pod still uses is kept, and said: deleting it would make that
//! Pod's next restart fail.

use crate::engine::secret_copies::{self, MANAGED_BY, MANAGED_BY_KEY};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeSet;

/// What the command found.
#[derive(Debug, Default)]
pub struct Seen {
    /// The install's namespace: the copies' source namespace.
    pub own_namespace: String,
    /// The webhook configuration, when it still exists.
    pub webhook_configuration: Option<String>,
    /// Every Secret named in `propagateSecrets`, in every namespace (metadata only).
    pub copies: Vec<ObjectMeta>,
    /// `(namespace, name)` of the Secrets some Pod of that namespace uses.
    pub in_use: BTreeSet<(String, String)>,
    /// The certificate Secret (`--cert-secret`), when it exists.
    pub certificate: Option<ObjectMeta>,
    /// The Lease's name, when it exists (in the install's namespace).
    pub lease: Option<String>,
}

/// One removal, in the order they are done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    /// First: the apiserver stops calling the injector.
    WebhookConfiguration(String),
    Copy {
        namespace: String,
        name: String,
        uid: Option<String>,
    },
    CertificateSecret {
        namespace: String,
        name: String,
        uid: Option<String>,
    },
    Lease {
        namespace: String,
        name: String,
    },
}

impl Removal {
    /// `kind namespace/name`, as `kubectl delete` would name it.
    pub fn describe(&self) -> String {
        match self {
            Removal::WebhookConfiguration(name) => format!("mutatingwebhookconfiguration {name}"),
            Removal::Copy {
                namespace, name, ..
            } => format!("secret {namespace}/{name} (a copy of propagateSecrets)"),
            Removal::CertificateSecret {
                namespace, name, ..
            } => format!("secret {namespace}/{name} (the injector's CA and serving certificate)"),
            Removal::Lease { namespace, name } => format!("lease {namespace}/{name}"),
        }
    }
}

/// What is removed, and what stays with why.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub remove: Vec<Removal>,
    /// `(namespace/name, why)` of what stays.
    pub kept: Vec<(String, String)>,
}

pub fn plan(seen: &Seen) -> Plan {
    let mut out = Plan::default();
    let own = &seen.own_namespace;
    if let Some(name) = &seen.webhook_configuration {
        out.remove.push(Removal::WebhookConfiguration(name.clone()));
    }
    for meta in &seen.copies {
        let (Some(ns), Some(name)) = (&meta.namespace, &meta.name) else {
            continue;
        };
        let at = format!("{ns}/{name}");
        if ns == own {
            out.kept
                .push((at, "the source you created: yours to delete".into()));
        } else if !secret_copies::is_ours(meta, own) {
            out.kept.push((
                at,
                format!(
                    "not a copy of this install: {}",
                    secret_copies::not_ours_because(meta, own)
                ),
            ));
        } else if seen.in_use.contains(&(ns.clone(), name.clone())) {
            out.kept.push((
                at,
                format!("Pods of {ns} still use it (their next restart needs it): delete it once they are gone"),
            ));
        } else {
            out.remove.push(Removal::Copy {
                namespace: ns.clone(),
                name: name.clone(),
                uid: meta.uid.clone(),
            });
        }
    }
    if let Some(meta) = &seen.certificate {
        let (ns, name) = (
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        );
        let made_by_us = meta
            .labels
            .as_ref()
            .and_then(|l| l.get(MANAGED_BY_KEY))
            .is_some_and(|v| v == MANAGED_BY);
        if made_by_us {
            out.remove.push(Removal::CertificateSecret {
                namespace: ns,
                name,
                uid: meta.uid.clone(),
            });
        } else {
            out.kept.push((
                format!("{ns}/{name}"),
                format!("not labelled {MANAGED_BY_KEY}={MANAGED_BY}: your certificate (cert-manager's, or one you made)"),
            ));
        }
    }
    if let Some(name) = &seen.lease {
        out.remove.push(Removal::Lease {
            namespace: own.clone(),
            name: name.clone(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::secret_copies::COPIED_FROM_KEY;
    use std::collections::BTreeMap;

    fn meta(
        ns: &str,
        name: &str,
        labels: &[(&str, &str)],
        annotations: &[(&str, &str)],
    ) -> ObjectMeta {
        let map = |kv: &[(&str, &str)]| {
            Some(
                kv.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            )
        };
        ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            uid: Some(format!("uid-{ns}")),
            labels: map(labels),
            annotations: map(annotations),
            ..Default::default()
        }
    }

    const OURS: (&str, &str) = (MANAGED_BY_KEY, MANAGED_BY);

    /// Issue 33, finding 3: helm uninstall left the certificate Secret, the Lease and every
    /// copy behind. Every state of each object: only what this install made goes, the
    /// webhook configuration first, and what stays says why.
    #[test]
    fn only_what_this_install_made_is_removed_and_the_webhook_first() {
        let from = |ns: &str| (COPIED_FROM_KEY, format!("{ns}/token"));
        let ours_from = from("platform");
        let other_from = from("elsewhere");
        let seen = Seen {
            own_namespace: "platform".into(),
            webhook_configuration: Some("inj".into()),
            copies: vec![
                meta("platform", "token", &[], &[]),
                meta("team-a", "token", &[OURS], &[(ours_from.0, &ours_from.1)]),
                meta("team-b", "token", &[OURS], &[(ours_from.0, &ours_from.1)]),
                meta("team-c", "token", &[OURS], &[(other_from.0, &other_from.1)]),
                meta("team-d", "token", &[("owner", "team-d")], &[]),
            ],
            in_use: BTreeSet::from([("team-b".to_owned(), "token".to_owned())]),
            certificate: Some(meta("platform", "sidecar-injector-tls", &[OURS], &[])),
            lease: Some("sidecar-injector-repair".into()),
        };
        let p = plan(&seen);
        let removed: Vec<String> = p.remove.iter().map(Removal::describe).collect();
        assert_eq!(
            removed,
            [
                "mutatingwebhookconfiguration inj",
                "secret team-a/token (a copy of propagateSecrets)",
                "secret platform/sidecar-injector-tls (the injector's CA and serving certificate)",
                "lease platform/sidecar-injector-repair",
            ]
        );
        let kept: Vec<&str> = p.kept.iter().map(|(at, _)| at.as_str()).collect();
        assert_eq!(
            kept,
            [
                "platform/token",
                "team-b/token",
                "team-c/token",
                "team-d/token"
            ]
        );
        assert!(
            p.kept[1].1.contains("Pods of team-b still use it"),
            "{:?}",
            p.kept
        );
        assert!(
            p.kept[2].1.contains("another install's copy"),
            "{:?}",
            p.kept
        );

        // A certificate Secret someone else made (cert-manager's) stays; nothing found,
        // nothing removed.
        let theirs = Seen {
            own_namespace: "platform".into(),
            certificate: Some(meta("platform", "sidecar-injector-tls", &[], &[])),
            ..Default::default()
        };
        let p = plan(&theirs);
        assert!(p.remove.is_empty());
        assert_eq!(p.kept.len(), 1);
        assert_eq!(plan(&Seen::default()), Plan::default());
    }
}
