//! Has the injector's ServiceAccount each permission `serve` uses? Asked of the apiserver's
//! authorizer with SubjectAccessReviews, so every way of granting counts (RBAC, webhooks).

use super::Finding;
use anyhow::Result;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

/// `serve --cert-secret NAMESPACE/NAME --webhook-configuration NAME`, as the Pods run it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptCertificates {
    pub namespace: String,
    pub secret: String,
    pub webhook_configuration: String,
}

/// One permission: verb, API group, resource, and, when it is limited to them, the
/// namespace and the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permission {
    pub verb: &'static str,
    pub group: &'static str,
    pub resource: &'static str,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// What it is for.
    pub why: &'static str,
}

impl Permission {
    fn new(
        verb: &'static str,
        group: &'static str,
        resource: &'static str,
        why: &'static str,
    ) -> Self {
        Permission {
            verb,
            group,
            resource,
            namespace: None,
            name: None,
            why,
        }
    }

    fn describe(&self) -> String {
        let resource = match self.group {
            "" => self.resource.to_owned(),
            g => format!("{}.{g}", self.resource),
        };
        let mut s = format!("{} {resource}", self.verb);
        if let Some(name) = &self.name {
            s.push_str(&format!(" {name}"));
        }
        if let Some(ns) = &self.namespace {
            s.push_str(&format!(" in {ns}"));
        }
        s
    }
}

/// What `serve` uses: `manifests/base/rbac.yaml`, and with `repair.enabled` the
/// `manifests/components/repair` component. `propagate` is `propagateSecrets`: the Secrets
/// of those names, in every namespace.
pub fn needed(
    namespace: &str,
    configmap: &str,
    repair: bool,
    propagate: &[String],
    certificates: Option<&KeptCertificates>,
) -> Vec<Permission> {
    let mut all = vec![
        Permission::new("get", "", "namespaces", "namespace labels and annotations"),
        Permission::new("list", "", "namespaces", "namespace labels and annotations"),
        Permission::new(
            "watch",
            "",
            "namespaces",
            "namespace labels and annotations",
        ),
        Permission::new(
            "create",
            "events.k8s.io",
            "events",
            "Events on failed injections",
        ),
        Permission::new(
            "patch",
            "events.k8s.io",
            "events",
            "Events on failed injections",
        ),
        Permission::new("list", "", "pods", "the survey behind pods{state}"),
        Permission::new("list", "", "nodes", "values.mountDockerSocket: auto"),
        Permission::new("list", "", "events", "the failing state (FailedMount)"),
        Permission::new("get", "apps", "replicasets", "the owners of Pods"),
        Permission::new("get", "batch", "jobs", "the owners of Pods"),
    ];
    for verb in ["get", "list", "watch"] {
        all.push(Permission {
            namespace: Some(namespace.to_owned()),
            name: Some(configmap.to_owned()),
            ..Permission::new(verb, "", "configmaps", "the live ConfigMap")
        });
    }
    all.push(Permission {
        namespace: Some(namespace.to_owned()),
        ..Permission::new(
            "create",
            "coordination.k8s.io",
            "leases",
            "the repair Lease",
        )
    });
    for verb in ["get", "update"] {
        all.push(Permission {
            namespace: Some(namespace.to_owned()),
            name: Some(crate::cluster::lease::REPAIR_LEASE.to_owned()),
            ..Permission::new(verb, "coordination.k8s.io", "leases", "the repair Lease")
        });
    }
    if !propagate.is_empty() {
        all.push(Permission::new(
            "create",
            "",
            "secrets",
            "propagateSecrets: the copies",
        ));
    }
    for name in propagate {
        for verb in ["list", "watch", "update", "delete"] {
            all.push(Permission {
                name: Some(name.clone()),
                ..Permission::new(verb, "", "secrets", "propagateSecrets: sources and copies")
            });
        }
    }
    if let Some(kept) = certificates {
        for verb in ["list", "watch", "update"] {
            all.push(Permission {
                namespace: Some(kept.namespace.clone()),
                name: Some(kept.secret.clone()),
                ..Permission::new(
                    verb,
                    "",
                    "secrets",
                    "--cert-secret: the serving certificate",
                )
            });
        }
        all.push(Permission {
            namespace: Some(kept.namespace.clone()),
            ..Permission::new(
                "create",
                "",
                "secrets",
                "--cert-secret: the serving certificate",
            )
        });
        all.push(Permission {
            namespace: Some(kept.namespace.clone()),
            ..Permission::new(
                "list",
                "discovery.k8s.io",
                "endpointslices",
                "--cert-secret: what each replica serves, before an old CA leaves",
            )
        });
        for verb in ["list", "watch", "patch"] {
            all.push(Permission {
                name: Some(kept.webhook_configuration.clone()),
                ..Permission::new(
                    verb,
                    "admissionregistration.k8s.io",
                    "mutatingwebhookconfigurations",
                    "--webhook-configuration: its caBundle",
                )
            });
        }
    }
    if repair {
        for resource in ["deployments", "statefulsets", "daemonsets"] {
            for verb in ["get", "patch"] {
                all.push(Permission::new(
                    verb,
                    "apps",
                    resource,
                    "repair.enabled: restarts",
                ));
            }
        }
    }
    all
}

/// One finding: every permission `user` has, or the ones it lacks.
pub async fn review(client: &kube::Client, user: &str, needed: &[Permission]) -> Result<Finding> {
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let mut missing = Vec::new();
    for p in needed {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.to_owned()),
                groups: Some(vec![
                    "system:serviceaccounts".to_owned(),
                    format!(
                        "system:serviceaccounts:{}",
                        user.split(':').nth(2).unwrap_or_default()
                    ),
                    "system:authenticated".to_owned(),
                ]),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(p.verb.to_owned()),
                    group: Some(p.group.to_owned()),
                    resource: Some(p.resource.to_owned()),
                    namespace: p.namespace.clone(),
                    name: p.name.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| {
                crate::cluster::api_error(e, "asking the authorizer (SubjectAccessReview)")
            })?;
        if !answer.status.is_some_and(|s| s.allowed) {
            missing.push(format!("{} ({})", p.describe(), p.why));
        }
    }
    Ok(if missing.is_empty() {
        Finding::pass(
            "permissions",
            format!("{user} has the {} permissions serve uses", needed.len()),
        )
    } else {
        Finding::fail(
            "permissions",
            format!("{user} cannot: {}", missing.join("; ")),
            "install the RBAC as shipped: with Helm, helm upgrade RELEASE charts/sidecar-injector (it grants what the values enable); with kustomize, kubectl apply -k manifests/ (with repair.enabled, add the component manifests/components/repair; for each name of propagateSecrets, its resourceNames in the ClusterRole sidecar-injector-secrets)",
        )
    })
}
