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
    // Someone else's Secret that holds every key the templates read: the Pods work with it.
    let mut lived_with: Vec<String> = Vec::new();
    // Someone else's Secret without some key: (where, why not ours, the missing keys).
    let mut lacking: Vec<(String, String, Vec<String>)> = Vec::new();
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
            if let (Standing::Foreign, Some(theirs)) = (standing, &found) {
                let keys = referenced
                    .get(&name)
                    .map(|r| r.keys.clone())
                    .unwrap_or_default();
                let missing = secret_copies::lacks(theirs, &keys);
                if missing.is_empty() {
                    lived_with.push(format!("{ns}/{name}"));
                } else {
                    lacking.push((
                        format!("{ns}/{name}"),
                        secret_copies::not_ours_because(&theirs.metadata, own),
                        missing,
                    ));
                }
                continue;
            }
            if standing != Standing::InSync {
                wrong.push((ns.clone(), name, standing));
            }
        }
    }
    let note = if lived_with.is_empty() {
        String::new()
    } else {
        format!(
            "; not ours, left as they are, and holding every key the templates read: {}",
            lived_with.join(", ")
        )
    };
    if wrong.is_empty() && lacking.is_empty() {
        return Finding::pass(
            CHECK,
            format!(
                "{} copied from {own} into each of the {} opted-in namespace(s), in sync{note}",
                names.join(", "),
                opted.len()
            ),
        );
    }
    let listed: Vec<String> = wrong
        .iter()
        .map(|(ns, n, s)| format!("{ns}/{n} {}", s.as_str()))
        .chain(lacking.iter().map(|(at, why, missing)| {
            format!(
                "{at} is not ours ({why}) and lacks the key(s) {} the templates read",
                missing.join(", ")
            )
        }))
        .collect();
    let mut fix = Vec::new();
    if wrong.iter().any(|(_, _, s)| *s != Standing::Foreign) {
        fix.push(format!(
            "the injector's Lease holder writes missing and stale copies within seconds: if they stay, read its log (kubectl -n {own} logs deploy/sidecar-injector) and see the permissions check below"
        ));
    }
    if let Some((at, _, missing)) = lacking.first() {
        let (ns, n) = at.split_once('/').unwrap_or_default();
        fix.push(format!(
            "a Secret that is not ours is never replaced: add the key(s) {} to {at}, or kubectl -n {ns} delete secret {n} and the injector writes its copy within seconds",
            missing.join(", ")
        ));
    }
    Finding {
        check: CHECK.into(),
        outcome: Outcome::Fail,
        message: format!("{}{note}", listed.join(", ")),
        fix: Some(fix.join("; ")),
    }
}
