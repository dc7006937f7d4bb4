//! `doctor`'s check of `propagateSecrets`: each listed Secret exists in the injector's
//! namespace, and every opted-in namespace holds a copy equal to it. The judging is the
//! engine's ([`secret_copies::judge`]), the same the injector's own sync goes by.

use super::{Finding, Outcome};
use crate::engine::config::{Config, secrets};
use crate::engine::secret_copies::{self, Standing};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;

const CHECK: &str = "secret copies";

pub async fn check(client: &kube::Client, config: &Config, opted: &[String]) -> Finding {
    let names = &config.settings.propagate_secrets;
    if names.is_empty() {
        return Finding::pass(CHECK, "propagateSecrets lists no Secret".into());
    }
    let own = &config.own_namespace;
    let referenced = secrets::referenced(config, &config.settings.templates);
    let mut sources = Vec::new();
    let mut absent = Vec::new();
    for name in names {
        match Api::<Secret>::namespaced(client.clone(), own)
            .get_opt(name)
            .await
        {
            Ok(Some(s)) => sources.push(s),
            Ok(None) => absent.push(name.clone()),
            Err(e) => {
                return Finding::skip(CHECK, format!("Secret {own}/{name} cannot be read: {e}"));
            }
        }
    }
    if !absent.is_empty() {
        let fix: Vec<String> = absent
            .iter()
            .map(|n| {
                referenced
                    .get(n)
                    .cloned()
                    .unwrap_or_default()
                    .create_command(own, n)
            })
            .collect();
        return Finding {
            check: CHECK.into(),
            outcome: Outcome::Fail,
            message: format!(
                "propagateSecrets lists {}, absent from {own}: no namespace gets a copy",
                absent.join(", ")
            ),
            fix: Some(fix.join("; ")),
        };
    }
    let uncopyable: Vec<String> = sources
        .iter()
        .filter(|s| !secret_copies::copyable(s))
        .map(|s| {
            format!(
                "{own}/{} is of type {}",
                s.metadata.name.as_deref().unwrap_or_default(),
                s.type_.as_deref().unwrap_or("Opaque")
            )
        })
        .collect();
    if !uncopyable.is_empty() {
        return Finding {
            check: CHECK.into(),
            outcome: Outcome::Fail,
            message: format!(
                "{}, which is never copied: a copy would hand what it grants to every opted-in namespace",
                uncopyable.join(", ")
            ),
            fix: Some(format!(
                "recreate the source as one of {} (kubectl -n {own} create secret generic NAME --from-literal=KEY=VALUE), or remove it from propagateSecrets",
                secret_copies::COPYABLE_TYPES.join(", ")
            )),
        };
    }
    let mut wrong: Vec<(String, String, Standing)> = Vec::new();
    for ns in opted {
        let api: Api<Secret> = Api::namespaced(client.clone(), ns);
        for source in &sources {
            let name = source.metadata.name.clone().unwrap_or_default();
            let found = match api.get_opt(&name).await {
                Ok(found) => found,
                Err(e) => {
                    return Finding::skip(CHECK, format!("Secret {ns}/{name} cannot be read: {e}"));
                }
            };
            let standing = secret_copies::judge(found.as_ref(), source, own);
            if standing != Standing::InSync {
                wrong.push((ns.clone(), name, standing));
            }
        }
    }
    if wrong.is_empty() {
        return Finding::pass(
            CHECK,
            format!(
                "{} copied from {own} into each of the {} opted-in namespace(s), in sync",
                names.join(", "),
                opted.len()
            ),
        );
    }
    let listed: Vec<String> = wrong
        .iter()
        .map(|(ns, n, s)| format!("{ns}/{n} {}", s.as_str()))
        .collect();
    let mut fix = Vec::new();
    if wrong.iter().any(|(_, _, s)| *s != Standing::Foreign) {
        fix.push(format!(
            "the injector's Lease holder writes missing and stale copies within seconds: if they stay, read its log (kubectl -n {own} logs deploy/sidecar-injector) and see the permissions check below"
        ));
    }
    if let Some((ns, n, _)) = wrong.iter().find(|(_, _, s)| *s == Standing::Foreign) {
        fix.push(format!(
            "a foreign Secret (not labelled {}={}) is never replaced: kubectl -n {ns} delete secret {n} to get the copy, or keep it",
            secret_copies::MANAGED_BY_KEY,
            secret_copies::MANAGED_BY
        ));
    }
    Finding {
        check: CHECK.into(),
        outcome: Outcome::Fail,
        message: listed.join(", "),
        fix: Some(fix.join("; ")),
    }
}
