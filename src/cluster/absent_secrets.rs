//! `check`'s look ahead at the next restart: an injected Pod that runs now but names a
//! Secret its namespace no longer holds (a copy deleted, a token never created there) fails
//! with CreateContainerConfigError when it restarts. `check` calls it `failing` today, with
//! the Secret named, not after the restart.
//!
//! Only the Secrets the templates name are looked at (the app's own are its owner's
//! business), and only by `check` with the caller's identity: serve's survey does not read
//! Secrets.

use crate::cluster::check::{PodReport, State};
use crate::engine::config::{Config, secrets};
use crate::engine::secret_copies::used_by;
use anyhow::{Context, Result};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams, PostParams};
use std::collections::{BTreeMap, BTreeSet};

/// The Secrets of `referenced` that a Pod `uses` and its namespace lacks (`present`).
pub fn absent(
    uses: &BTreeSet<String>,
    referenced: &BTreeSet<String>,
    present: &BTreeSet<String>,
) -> Vec<String> {
    uses.iter()
        .filter(|n| referenced.contains(*n) && !present.contains(*n))
        .cloned()
        .collect()
}

/// Marks `failing` each injected Pod (current or stale) that uses a Secret the templates
/// name and its namespace lacks. One list of Pods and one of Secrets (metadata) per
/// namespace holding such a Pod. Only when this identity may list Secrets (asked first, so
/// an identity that may not, such as the injector's own, makes no refused call): else
/// `Ok(false)`.
pub async fn mark(
    client: &kube::Client,
    config: &Config,
    reports: &mut [PodReport],
) -> Result<bool> {
    let referenced: BTreeSet<String> = secrets::referenced(config, &config.settings.templates)
        .into_keys()
        .collect();
    if referenced.is_empty() {
        return Ok(true);
    }
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some("list".into()),
                resource: Some("secrets".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let allowed = Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .context("asking whether this identity may list Secrets (SelfSubjectAccessReview)")?
        .status
        .is_some_and(|s| s.allowed);
    if !allowed {
        return Ok(false);
    }
    let mut namespaces: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, r) in reports.iter().enumerate() {
        if matches!(r.state, State::Current | State::Stale) {
            namespaces.entry(r.namespace.clone()).or_default().push(i);
        }
    }
    for (ns, indexes) in namespaces {
        let present: BTreeSet<String> = Api::<Secret>::namespaced(client.clone(), &ns)
            .list_metadata(&ListParams::default())
            .await
            .with_context(|| format!("listing the Secrets of {ns:?} (metadata only)"))?
            .items
            .into_iter()
            .filter_map(|s| s.metadata.name)
            .collect();
        let pods: BTreeMap<String, Pod> = Api::<Pod>::namespaced(client.clone(), &ns)
            .list(&ListParams::default())
            .await
            .with_context(|| format!("listing the Pods of {ns:?}"))?
            .items
            .into_iter()
            .filter_map(|p| Some((p.metadata.name.clone()?, p)))
            .collect();
        for i in indexes {
            let r = &mut reports[i];
            let Some(spec) = pods.get(&r.pod).and_then(|p| p.spec.as_ref()) else {
                continue;
            };
            let missing = absent(&used_by(spec), &referenced, &present);
            if !missing.is_empty() {
                r.state = State::Failing;
                r.reason = format!(
                    "it uses Secret {} that {ns} does not hold: its next restart fails with CreateContainerConfigError (create it, or opt the namespace in so propagateSecrets copies it; sidecar-injector doctor says which)",
                    missing
                        .iter()
                        .map(|n| format!("{ns}/{n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_a_template_s_secret_the_namespace_lacks_is_absent() {
        let uses = set(&["token", "app-db", "pull"]);
        let referenced = set(&["token", "pull"]);
        assert_eq!(absent(&uses, &referenced, &set(&["pull"])), ["token"]);
        assert!(absent(&uses, &referenced, &set(&["token", "pull"])).is_empty());
        // The app's own Secret, absent or not, is not the injector's to judge.
        assert!(absent(&set(&["app-db"]), &referenced, &set(&[])).is_empty());
    }
}
