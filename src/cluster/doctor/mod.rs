//! `sidecar-injector doctor`: is the installed injector working, and if not, what to do. In
//! the spirit of `linkerd check`: one finding per check, each passing, failing (with its
//! fix), or skipped (with why). The checks only read, except the server-side dry run, which
//! stores nothing.

mod access;
mod copies;
mod expiry;
mod pullable;
mod secret_policy;
mod tls;

use crate::cluster::installed::Installed;
use crate::cluster::probe;
use crate::engine::config::docker_socket::{self, DockerSocket, Nodes};
use crate::engine::config::{Config, secrets};
use anyhow::Result;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, PartialObjectMeta};
use serde::Serialize;

pub use access::{KeptCertificates, Permission, needed};
pub use tls::host_port;

/// The fix for a caBundle that does not verify the serving certificate.
pub const INSTALL_CA: &str = "set the caBundle to the CA that signed the serving certificate: with --cert-secret (the default install) the injector does it itself, and its log says why it has not (kubectl -n NAMESPACE logs deploy/sidecar-injector); otherwise base64 -w0 cluster-certs/ca.crt, patched into /webhooks/0/clientConfig/caBundle, or cert-manager's overlay sets it (docs/install.md: Certificates, three ways)";

/// The fix when no injector is installed: either way of installing.
pub const INSTALL: &str = "install it: helm install sidecar-injector charts/sidecar-injector -n sidecar-injector --create-namespace, or kubectl apply -k manifests/ (README: Install)";
/// The fix for an install that lost part of itself: the way it was installed, again.
pub const REINSTALL: &str = "install it again the way it was installed: helm upgrade --install RELEASE charts/sidecar-injector -n NAMESPACE, or kubectl apply -k manifests/";

/// The checks after the webhook's own, in order.
const AFTER_THE_WEBHOOK: [&str; 9] = [
    "certificate expiry",
    "opted-in namespaces",
    "dry run",
    "secrets",
    "secret copies",
    "node runtimes",
    pullable::CHECK,
    "permissions",
    "secret policy",
];

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    Fail,
    /// Could not be checked; says why.
    Skipped,
}

/// One line of `doctor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub check: String,
    pub outcome: Outcome,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Finding {
    pub fn pass(check: &str, message: String) -> Finding {
        Finding {
            check: check.to_owned(),
            outcome: Outcome::Pass,
            message,
            fix: None,
        }
    }
    pub fn fail(check: &str, message: String, fix: &str) -> Finding {
        Finding {
            check: check.to_owned(),
            outcome: Outcome::Fail,
            message,
            fix: Some(fix.to_owned()),
        }
    }
    pub fn skip(check: &str, message: String) -> Finding {
        Finding {
            check: check.to_owned(),
            outcome: Outcome::Skipped,
            message,
            fix: None,
        }
    }
}

/// Every check, in order. `loaded` is the configuration the injector serves, when it loads
/// (its own finding is the caller's), decided for the nodes, with the nodes or why they could
/// not be read. `registry` asks for the injected images' manifests; None skips that check
/// (`--offline`). An error means doctor could not look at all.
pub async fn run(
    client: &kube::Client,
    installed: &Installed,
    loaded: Option<(&Config, Result<&Nodes, &str>)>,
    registry: Option<&crate::cluster::registry::Registry>,
) -> Result<Vec<Finding>> {
    let config = loaded.as_ref().map(|(c, _)| *c);
    let mut out = Vec::new();
    // What could not be read is said first: the checks after it guess without it.
    out.push(if installed.unread.is_empty() {
        Finding::pass(
            "install readable",
            match &installed.configuration {
                Some(_) => format!("found by {}; {}", installed.found_how, installed.found_by),
                None => format!("{}; {}", installed.found_how, installed.found_by),
            },
        )
    } else {
        Finding::fail(
            "install readable",
            installed.unread.join("; "),
            "run doctor as an identity that can read the injector's Service and Pods (a cluster admin, or grant the permission named), else the certificate, config and permission checks below guess",
        )
    });
    let webhook = installed.webhook();
    let name = installed.configuration_name();
    // Every check has its line, run or not: the count never changes with what is found.
    match (&installed.configuration, webhook) {
        (None, _) => out.push(Finding::fail(
            "webhook configuration",
            format!(
                "no MutatingWebhookConfiguration labelled {} (or named {name}): the apiserver calls no injector",
                crate::cluster::installed::NAME_LABEL
            ),
            INSTALL,
        )),
        (Some(_), None) => out.push(Finding::fail(
            "webhook configuration",
            format!("MutatingWebhookConfiguration {name} has no webhook"),
            REINSTALL,
        )),
        (Some(_), Some(w)) => out.push(Finding::pass(
            "webhook configuration",
            format!("MutatingWebhookConfiguration {name}, webhook {}", w.name),
        )),
    }
    out.push(match webhook {
        Some(w) => Finding::pass("settings", settings(w)),
        None => Finding::skip("settings", "no webhook to read".into()),
    });
    let mut served = None;
    if let Some(w) = webhook {
        let ca = w
            .client_config
            .ca_bundle
            .as_ref()
            .map(|b| b.0.as_slice())
            .filter(|b| !b.is_empty());
        match (&w.client_config.url, &w.client_config.service) {
            (Some(url), _) => {
                let (reach, ca_finding, s) = tls::by_url(url, ca).await;
                out.push(reach);
                out.push(ca_finding.unwrap_or_else(|| {
                    Finding::skip("caBundle", "the webhook cannot be reached".into())
                }));
                served = s;
            }
            (None, Some(service)) => {
                out.push(endpoints(client, &service.namespace, &service.name).await);
                let (ca_finding, s) = tls::by_service(client, installed, w, ca).await;
                out.push(ca_finding);
                served = s;
            }
            (None, None) => {
                out.push(Finding::fail(
                    "webhook reachable",
                    "the webhook names neither a Service nor a URL".into(),
                    REINSTALL,
                ));
                out.push(Finding::skip("caBundle", "no webhook to reach".into()));
            }
        }
    } else {
        for check in ["webhook reachable", "caBundle"] {
            out.push(Finding::skip(check, "no webhook to reach".into()));
        }
    }
    if installed.configuration.is_none() {
        // Nothing is installed: what follows would judge leftovers, and a ✔ on them would
        // say an injector works. Each line stays, as `-`.
        for check in AFTER_THE_WEBHOOK {
            out.push(Finding::skip(check, "no injector is installed".into()));
        }
        return Ok(out);
    }
    // What --cert-secret says, read once for the expiry, permissions and policy checks.
    let kept = installed.kept_certificates();
    out.push(expiry::check(
        served.as_ref(),
        kept.as_ref(),
        time::OffsetDateTime::now_utc().unix_timestamp(),
    ));

    let label = config.map_or("sidecar-injection", |c| c.settings.namespace_label.as_str());
    let opted = opted_in(client, label, config).await?;
    out.push(if opted.is_empty() {
        Finding::fail(
            "opted-in namespaces",
            format!("no namespace carries {label}=enabled: nothing is injected"),
            &format!("kubectl label namespace NAME {label}=enabled"),
        )
    } else {
        let mut shown = opted
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if opted.len() > 10 {
            shown.push_str(&format!(" and {} more", opted.len() - 10));
        }
        Finding::pass("opted-in namespaces", format!("{}: {shown}", opted.len()))
    });
    out.push(match opted.first() {
        None => Finding::skip("dry run", "no opted-in namespace to try a Pod in".into()),
        Some(ns) => match probe::injected_dry_run(client, ns).await {
            Ok(containers) => Finding::pass(
                "dry run",
                format!("a server-side dry-run Pod in {ns} comes back injected (containers {containers:?})"),
            ),
            Err(e) => Finding::fail(
                "dry run",
                format!("{e:#}"),
                "fix the checks above that fail; else read the injector's log and the apiserver's",
            ),
        },
    });
    match loaded {
        Some((config, nodes)) => {
            out.push(secrets_present(client, config, &opted).await);
            out.push(copies::check(client, config, &opted).await);
            out.push(node_runtimes(config, nodes));
            let images = crate::engine::config::images::injected(config);
            out.push(match nodes {
                Ok(nodes) => {
                    pullable::check(client, &images, &opted, &nodes.architectures(), registry).await
                }
                Err(e) => Finding::skip(pullable::CHECK, e.to_owned()),
            });
        }
        None => {
            for check in ["secrets", "secret copies"] {
                out.push(Finding::skip(
                    check,
                    "the configuration does not load".into(),
                ));
            }
            for check in ["node runtimes", pullable::CHECK] {
                out.push(Finding::skip(
                    check,
                    "the configuration does not load".into(),
                ));
            }
        }
    }
    let account = installed
        .pods
        .iter()
        .find_map(|p| p.spec.as_ref()?.service_account_name.clone())
        .unwrap_or_else(|| "sidecar-injector".to_owned());
    let user = format!("system:serviceaccount:{}:{account}", installed.namespace);
    let repair = config.is_some_and(|c| c.settings.repair.enabled);
    let propagated = config.map_or(&[][..], |c| &c.settings.propagate_secrets[..]);
    let want = needed(
        &installed.namespace,
        &installed.configmap.1,
        repair,
        propagated,
        kept.as_ref(),
    );
    out.push(access::review(client, &user, &want).await?);
    let webhook = installed.configuration_name().to_owned();
    let wanted = secret_policy::Wanted {
        user: &user,
        propagated,
        certificate: kept
            .as_ref()
            .map(|k| (k.namespace.as_str(), k.secret.as_str())),
    };
    out.push(secret_policy::check(client, &secret_policy::policy_name(&webhook), &wanted).await);
    Ok(out)
}

/// failurePolicy, timeout and the namespaces never sent: information.
fn settings(w: &k8s_openapi::api::admissionregistration::v1::MutatingWebhook) -> String {
    let excluded: Vec<String> = w
        .namespace_selector
        .iter()
        .flat_map(|s| s.match_expressions.iter().flatten())
        .filter(|e| e.key == "kubernetes.io/metadata.name" && e.operator == "NotIn")
        .flat_map(|e| e.values.iter().flatten().cloned())
        .collect();
    format!(
        "failurePolicy {}, timeoutSeconds {}, namespaces never sent: {}",
        w.failure_policy.as_deref().unwrap_or("Fail"),
        w.timeout_seconds.unwrap_or(10),
        if excluded.is_empty() {
            "none".to_owned()
        } else {
            excluded.join(", ")
        }
    )
}

/// The Service has ready endpoints.
async fn endpoints(client: &kube::Client, ns: &str, name: &str) -> Finding {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let params = ListParams::default().labels(&format!("kubernetes.io/service-name={name}"));
    match api.list(&params).await {
        Ok(list) => {
            let ready = list
                .items
                .iter()
                .flat_map(|s| s.endpoints.iter())
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
                .count();
            if ready > 0 {
                Finding::pass(
                    "webhook reachable",
                    format!("Service {ns}/{name} has {ready} ready endpoint(s)"),
                )
            } else {
                Finding::fail(
                    "webhook reachable",
                    format!(
                        "Service {ns}/{name} has no ready endpoint: the apiserver cannot call the injector"
                    ),
                    &format!(
                        "look at the injector's Pods: kubectl -n {ns} get pods; kubectl -n {ns} logs deploy/{name}"
                    ),
                )
            }
        }
        Err(e) => Finding::skip(
            "webhook reachable",
            format!("the EndpointSlices of {ns}/{name} cannot be read: {e}"),
        ),
    }
}

/// The namespaces the webhook injects (labelled, not never-inject, not the injector's, not
/// being deleted), by name; those enforcing Pod Security baseline or restricted last (a
/// dry-run Pod there may be refused for what the templates add, which says nothing about
/// the webhook).
async fn opted_in(
    client: &kube::Client,
    label: &str,
    config: Option<&Config>,
) -> Result<Vec<String>> {
    let api: Api<Namespace> = Api::all(client.clone());
    let list = api
        .list(&ListParams::default().labels(&format!("{label}=enabled")))
        .await
        .map_err(|e| crate::cluster::api_error(e, "listing namespaces"))?;
    let mut found: Vec<(bool, String)> = list
        .items
        .into_iter()
        .filter(|n| !crate::cluster::namespaces::being_deleted(&n.metadata))
        .filter_map(|n| {
            let enforcing = n
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(crate::engine::PSA_ENFORCE_KEY))
                .is_some_and(|level| level != "privileged");
            Some((enforcing, n.metadata.name?))
        })
        .filter(|(_, n)| config.is_none_or(|c| !c.never_injects(n)))
        .collect();
    found.sort();
    Ok(found.into_iter().map(|(_, n)| n).collect())
}

/// Every Secret the default templates reference exists in every opted-in namespace.
async fn secrets_present(client: &kube::Client, config: &Config, opted: &[String]) -> Finding {
    let mut wanted = secrets::referenced(config, &config.settings.templates);
    if wanted.is_empty() {
        return Finding::pass("secrets", "the templates reference no Secret".into());
    }
    // Those propagateSecrets keeps are the next check's.
    let propagated = &config.settings.propagate_secrets;
    wanted.retain(|name, _| !propagated.contains(name));
    if wanted.is_empty() {
        return Finding::pass(
            "secrets",
            format!(
                "the templates read {}, all kept by propagateSecrets",
                propagated.join(", ")
            ),
        );
    }
    if opted.is_empty() {
        return Finding::skip("secrets", "no opted-in namespace to look in".into());
    }
    let mut missing: Vec<(String, String)> = Vec::new();
    for ns in opted {
        let api: Api<PartialObjectMeta<Secret>> = Api::namespaced(client.clone(), ns);
        for name in wanted.keys() {
            match api.get_metadata_opt(name).await {
                Ok(Some(_)) => {}
                Ok(None) => missing.push((ns.clone(), name.clone())),
                Err(e) => {
                    return Finding::skip(
                        "secrets",
                        format!("Secrets of {ns} cannot be read: {e}"),
                    );
                }
            }
        }
    }
    let names: Vec<&str> = wanted.keys().map(String::as_str).collect();
    if missing.is_empty() {
        return Finding::pass(
            "secrets",
            format!(
                "{} in each of the {} opted-in namespace(s)",
                names.join(", "),
                opted.len()
            ),
        );
    }
    let places: Vec<String> = wanted
        .iter()
        .map(|(n, r)| format!("{n} ({})", r.places.join(", ")))
        .collect();
    let listed: Vec<String> = missing.iter().map(|(ns, n)| format!("{ns}/{n}")).collect();
    let mut fix: Vec<String> = missing
        .iter()
        .take(3)
        .map(|(ns, n)| wanted[n].create_command(ns, n))
        .collect();
    if missing.len() > 3 {
        fix.push(format!("and so on for the {} others", missing.len() - 3));
    }
    fix.push(format!(
        "or create it once in {} and list it in config.yaml's propagateSecrets: the injector then keeps a copy in every opted-in namespace",
        config.own_namespace
    ));
    Finding {
        check: "secrets".into(),
        outcome: Outcome::Fail,
        message: format!(
            "missing: {}; injected Pods there stop at CreateContainerConfigError. The templates read {}",
            listed.join(", "),
            places.join("; ")
        ),
        fix: Some(fix.join("; ")),
    }
}

/// The node runtimes agree with the Docker socket setting.
/// `config` is already decided for `nodes`.
fn node_runtimes(config: &Config, nodes: Result<&Nodes, &str>) -> Finding {
    let nodes = match nodes {
        Ok(n) => n,
        Err(e) => return Finding::skip("node runtimes", e.to_owned()),
    };
    if let DockerSocket::Auto { .. } = config.docker_socket {
        return Finding::pass(
            "node runtimes",
            config.docker_socket.explain().unwrap_or_default(),
        );
    }
    match docker_socket::socket_volume(config).and_then(|v| docker_socket::advice(&v, nodes)) {
        Some(advice) => Finding::fail(
            "node runtimes",
            advice,
            "set values.mountDockerSocket: auto (or false) in the ConfigMap's config.yaml",
        ),
        None => Finding::pass(
            "node runtimes",
            format!(
                "{} schedulable Linux node(s); the templates mount no socket they lack",
                nodes.considered().count()
            ),
        ),
    }
}

/// The table: `✔ check: message`, and for a failure, `  fix: ...` under it.
pub fn table(findings: &[Finding]) -> String {
    let mut out = String::new();
    for f in findings {
        let mark = match f.outcome {
            Outcome::Pass => "✔",
            Outcome::Fail => "✖",
            Outcome::Skipped => "-",
        };
        out.push_str(&format!("{mark} {}: {}\n", f.check, f.message));
        if let Some(fix) = &f.fix {
            out.push_str(&format!("    fix: {fix}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_marks_each_finding_and_gives_the_fix_under_a_failure() {
        let t = table(&[
            Finding::pass("caBundle", "verifies".into()),
            Finding::fail("secrets", "missing: a/b".into(), "create it"),
            Finding::skip("dry run", "no namespace".into()),
        ]);
        assert_eq!(
            t,
            "✔ caBundle: verifies\n✖ secrets: missing: a/b\n    fix: create it\n- dry run: no namespace\n"
        );
    }

    /// Issue 33, finding 7: after `helm uninstall`, doctor said "✔ secret copies … in
    /// sync", and its number of checks changed with what it found. Now every check has its
    /// line, and none passes about an injector that is not there.
    #[tokio::test]
    async fn with_nothing_installed_every_check_has_its_line_and_none_passes() {
        // Nothing to read: doctor must not ask the API once it knows nothing is installed.
        let never = tower::service_fn(|_: axum::http::Request<kube::client::Body>| async {
            Err::<axum::http::Response<kube::client::Body>, _>(std::io::Error::other(
                "doctor asked the API about an install that is not there",
            ))
        });
        let client = kube::Client::new(never, "default");
        let installed = Installed {
            configuration: None,
            namespace: "sidecar-injector".into(),
            configmap: ("sidecar-injector".into(), "sidecar-injector".into()),
            found_by: "the default install's ConfigMap".into(),
            found_how: "no MutatingWebhookConfiguration labelled app.kubernetes.io/name=sidecar-injector or named sidecar-injector".into(),
            pods: Vec::new(),
            unread: Vec::new(),
        };
        let findings = run(&client, &installed, None, None).await.unwrap();
        let checks: Vec<&str> = findings.iter().map(|f| f.check.as_str()).collect();
        let mut all = vec![
            "install readable",
            "webhook configuration",
            "settings",
            "webhook reachable",
            "caBundle",
        ];
        all.extend(AFTER_THE_WEBHOOK);
        assert_eq!(checks, all);
        let webhook = &findings[1];
        assert_eq!(webhook.outcome, Outcome::Fail);
        let fix = webhook.fix.as_deref().unwrap_or_default();
        assert!(
            fix.contains("helm install") && fix.contains("kubectl apply -k"),
            "{fix}"
        );
        assert!(
            findings[2..].iter().all(|f| f.outcome == Outcome::Skipped),
            "{findings:#?}"
        );
    }

    #[test]
    fn the_permissions_are_those_of_the_shipped_rbac_and_repair_adds_restarts() {
        let base = needed("inj", "cm", false, &[], None);
        assert!(
            base.iter()
                .any(|p| p.verb == "list" && p.resource == "pods")
        );
        assert!(!base.iter().any(|p| p.verb == "patch" && p.group == "apps"));
        let with_repair = needed("inj", "cm", true, &[], None);
        assert_eq!(with_repair.len(), base.len() + 6);
        let copying = needed("inj", "cm", false, &["token".to_owned()], None);
        let secrets: Vec<String> = copying
            .iter()
            .filter(|p| p.resource == "secrets")
            .map(|p| format!("{} {:?}", p.verb, p.name))
            .collect();
        assert_eq!(
            secrets,
            [
                "create None",
                "list Some(\"token\")",
                "watch Some(\"token\")",
                "update Some(\"token\")",
                "delete Some(\"token\")"
            ],
            "by name, except create, which RBAC cannot limit by name"
        );
    }
}
