//! `doctor`'s check of the ValidatingAdmissionPolicy that bounds the injector's Secret
//! writes (manifests/base/secret-policy.yaml; SECURITY.md: Secret rights). RBAC cannot limit
//! `create` by name, so without the policy a stolen injector token could mint a
//! ServiceAccount token: the check fails when the policy is absent, unbound, not enforcing,
//! aimed at another account, or does not list a name the injector writes (the injector's own
//! writes of that name would then be refused).

use super::Finding;
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use kube::api::Api;

const CHECK: &str = "secret policy";

/// The policy's name for the webhook configuration `webhook` (manifests/ and the chart name
/// both after it).
pub fn policy_name(webhook: &str) -> String {
    format!("{webhook}-secrets")
}

/// What the policy must cover.
pub struct Wanted<'a> {
    /// `system:serviceaccount:NS:NAME` of the injector's Pods.
    pub user: &'a str,
    /// `propagateSecrets`.
    pub propagated: &'a [String],
    /// `NAMESPACE/NAME` of the certificate Secret the Pods keep (`--cert-secret`).
    pub certificate: Option<(&'a str, &'a str)>,
}

pub async fn check(client: &kube::Client, name: &str, wanted: &Wanted<'_>) -> Finding {
    if wanted.propagated.is_empty() && wanted.certificate.is_none() {
        return Finding::pass(
            CHECK,
            "the injector writes no Secret (no propagateSecrets, no --cert-secret)".into(),
        );
    }
    let policy = Api::<ValidatingAdmissionPolicy>::all(client.clone())
        .get_opt(name)
        .await;
    let binding = Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
        .get_opt(name)
        .await;
    match (policy, binding) {
        (Ok(policy), Ok(binding)) => judge(name, policy.as_ref(), binding.as_ref(), wanted),
        (Err(kube::Error::Api(e)), _) | (_, Err(kube::Error::Api(e))) if e.code == 404 => {
            Finding::fail(
                CHECK,
                "this cluster serves no ValidatingAdmissionPolicy (Kubernetes 1.30 or newer has it): nothing bounds which Secrets the injector's token may create".into(),
                "upgrade the cluster to Kubernetes 1.30 or newer; until then, know that RBAC's create on Secrets reaches every name (SECURITY.md: Secret rights)",
            )
        }
        (Err(e), _) | (_, Err(e)) => Finding::skip(
            CHECK,
            format!(
                "ValidatingAdmissionPolicy {name} cannot be read: {e} (doctor needs get on validatingadmissionpolicies and their bindings)"
            ),
        ),
    }
}

/// The finding for what the API holds. Pure.
pub fn judge(
    name: &str,
    policy: Option<&ValidatingAdmissionPolicy>,
    binding: Option<&ValidatingAdmissionPolicyBinding>,
    wanted: &Wanted<'_>,
) -> Finding {
    const FIX: &str = "apply the policy and its binding as shipped: kubectl apply -k manifests/ (manifests/base/secret-policy.yaml), or helm upgrade; with propagateSecrets changed, list the same names in the policy's variable `propagated`";
    let mut wrong = Vec::new();
    match policy.and_then(|p| p.spec.as_ref()) {
        None => wrong.push(format!("ValidatingAdmissionPolicy {name} does not exist")),
        Some(spec) => {
            if spec.failure_policy.as_deref() == Some("Ignore") {
                wrong.push("its failurePolicy is Ignore, so an error lets a write through".into());
            }
            let quoted = |s: &str| format!("'{s}'");
            let conditions: String = spec
                .match_conditions
                .iter()
                .flatten()
                .map(|c| c.expression.as_str())
                .collect();
            if !conditions.contains(&quoted(wanted.user)) {
                wrong.push(format!(
                    "it is aimed at another account than {} (matchConditions)",
                    wanted.user
                ));
            }
            let variable = |n: &str| {
                spec.variables
                    .iter()
                    .flatten()
                    .find(|v| v.name == n)
                    .map(|v| v.expression.clone())
                    .unwrap_or_default()
            };
            let propagated = variable("propagated");
            let unlisted: Vec<&str> = wanted
                .propagated
                .iter()
                .map(String::as_str)
                .filter(|n| !propagated.contains(&quoted(n)))
                .collect();
            if !unlisted.is_empty() {
                wrong.push(format!(
                    "it does not list {} (propagateSecrets), so the injector's copies of it are refused",
                    unlisted.join(", ")
                ));
            }
            if let Some((ns, secret)) = wanted.certificate {
                let certificate = variable("certificate");
                if !(certificate.contains(&quoted(ns)) && certificate.contains(&quoted(secret))) {
                    wrong.push(format!(
                        "it does not allow the certificate Secret {ns}/{secret} (--cert-secret), so the injector cannot renew it"
                    ));
                }
            }
        }
    }
    match binding.and_then(|b| b.spec.as_ref()) {
        None => wrong.push(format!(
            "ValidatingAdmissionPolicyBinding {name} does not exist, so the policy is not enforced"
        )),
        Some(spec) => {
            if spec.policy_name.as_deref() != Some(name) {
                wrong.push(format!(
                    "its binding binds {:?}, not {name}",
                    spec.policy_name.as_deref().unwrap_or_default()
                ));
            }
            if !spec
                .validation_actions
                .iter()
                .flatten()
                .any(|a| a == "Deny")
            {
                wrong.push("its binding does not Deny (validationActions)".into());
            }
            if spec.match_resources.is_some() {
                wrong.push(
                    "its binding narrows the policy (matchResources): every namespace must be covered"
                        .into(),
                );
            }
        }
    }
    if wrong.is_empty() {
        Finding::pass(
            CHECK,
            format!(
                "ValidatingAdmissionPolicy {name} is bound and denies {}'s writes of any other Secret",
                wanted.user
            ),
        )
    } else {
        Finding::fail(CHECK, wrong.join("; "), FIX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::doctor::Outcome;

    /// The policy and binding as shipped in manifests/base.
    fn shipped() -> (ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding) {
        let text = include_str!("../../../manifests/base/secret-policy.yaml");
        let docs: Vec<serde_json::Value> = crate::engine::yaml::documents(text).unwrap();
        (
            serde_json::from_value(docs[0].clone()).unwrap(),
            serde_json::from_value(docs[1].clone()).unwrap(),
        )
    }

    const USER: &str = "system:serviceaccount:sidecar-injector:sidecar-injector";

    fn wanted<'a>(propagated: &'a [String]) -> Wanted<'a> {
        Wanted {
            user: USER,
            propagated,
            certificate: Some(("sidecar-injector", "sidecar-injector-tls")),
        }
    }

    #[test]
    fn the_shipped_policy_covers_the_shipped_install() {
        let (policy, binding) = shipped();
        let names = crate::engine::config::Config::embedded("sidecar-injector")
            .unwrap()
            .settings
            .propagate_secrets
            .clone();
        assert!(!names.is_empty());
        let f = judge(
            "sidecar-injector-secrets",
            Some(&policy),
            Some(&binding),
            &wanted(&names),
        );
        assert_eq!(f.outcome, Outcome::Pass, "{f:?}");
    }

    #[test]
    fn a_missing_unbound_or_mis_aimed_policy_fails_with_what_is_wrong() {
        let (policy, binding) = shipped();
        let names = vec!["bitbucket-pipelines-metrics".to_owned()];
        let name = "sidecar-injector-secrets";
        let f = judge(name, None, Some(&binding), &wanted(&names));
        assert_eq!(f.outcome, Outcome::Fail);
        assert!(f.message.contains("does not exist"), "{}", f.message);
        assert!(f.fix.unwrap().contains("kubectl apply -k manifests/"));

        let f = judge(name, Some(&policy), None, &wanted(&names));
        assert!(f.message.contains("not enforced"), "{}", f.message);

        let mut warn_only = binding.clone();
        warn_only.spec.as_mut().unwrap().validation_actions = Some(vec!["Warn".into()]);
        let f = judge(name, Some(&policy), Some(&warn_only), &wanted(&names));
        assert!(f.message.contains("does not Deny"), "{}", f.message);

        let other = Wanted {
            user: "system:serviceaccount:platform:sidecar-injector",
            ..wanted(&names)
        };
        let f = judge(name, Some(&policy), Some(&binding), &other);
        assert!(
            f.message.contains("aimed at another account"),
            "{}",
            f.message
        );

        let more = vec![
            "bitbucket-pipelines-metrics".to_owned(),
            "registry-pull".to_owned(),
        ];
        let f = judge(name, Some(&policy), Some(&binding), &wanted(&more));
        assert!(
            f.message.contains("does not list registry-pull"),
            "{}",
            f.message
        );

        let moved = Wanted {
            certificate: Some(("platform", "sidecar-injector-tls")),
            ..wanted(&names)
        };
        let f = judge(name, Some(&policy), Some(&binding), &moved);
        assert!(
            f.message.contains("platform/sidecar-injector-tls"),
            "{}",
            f.message
        );
    }

    /// The types the policy lets the injector write are the types the engine copies
    /// (`secret_copies::COPYABLE_TYPES`), in manifests/ and in the chart alike: one list,
    /// written three times, checked here so the three cannot drift apart.
    #[test]
    fn the_policy_allows_exactly_the_types_the_engine_copies() {
        let (policy, _) = shipped();
        let expression = policy
            .spec
            .unwrap()
            .variables
            .unwrap()
            .into_iter()
            .find(|v| v.name == "copyableTypes")
            .unwrap()
            .expression;
        let quoted: Vec<String> = crate::engine::secret_copies::COPYABLE_TYPES
            .iter()
            .map(|t| format!("'{t}'"))
            .collect();
        assert_eq!(expression, format!("[{}]", quoted.join(", ")));
        let chart = include_str!("../../../charts/sidecar-injector/templates/secretpolicy.yaml");
        assert!(
            chart.contains(&format!("expression: \"{expression}\"")),
            "the chart's copyableTypes differ from manifests/: {expression}"
        );
    }

    #[test]
    fn no_secret_written_needs_no_policy() {
        let w = Wanted {
            user: USER,
            propagated: &[],
            certificate: None,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // Judged before any call: a client that cannot connect is never used.
        let f = rt.block_on(async {
            let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
            let client = kube::Client::try_from(config).unwrap();
            check(&client, "x", &w).await
        });
        assert_eq!(f.outcome, Outcome::Pass, "{f:?}");
    }
}
