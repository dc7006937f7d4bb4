//! The injector as installed: the MutatingWebhookConfiguration `sidecar-injector`, the
//! Service it calls, the Pods behind that Service, and the ConfigMap they serve. `check`,
//! `doctor` and `preview --kubeconfig` judge against what the cluster serves, not the
//! embedded default.

use crate::engine::config::{CONFIGMAP_PREFIX, DEFAULT_OWN_NAMESPACE};
use anyhow::Result;
use k8s_openapi::api::admissionregistration::v1::{MutatingWebhook, MutatingWebhookConfiguration};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, PodSpec, Service, Volume};
use kube::api::{Api, ListParams};

/// The name of the shipped MutatingWebhookConfiguration.
pub const WEBHOOK_CONFIGURATION: &str = "sidecar-injector";
/// The ConfigMap of the shipped install, in the injector's namespace.
pub const CONFIGMAP: &str = "sidecar-injector";

/// What the cluster says about the installed injector.
#[derive(Debug, Clone)]
pub struct Installed {
    /// The MutatingWebhookConfiguration, when it exists.
    pub configuration: Option<MutatingWebhookConfiguration>,
    /// The injector's namespace: its Service's, else the default.
    pub namespace: String,
    /// The ConfigMap its Pods serve (`--config configmap:NS/NAME`, or the one mounted where
    /// `--config` points), else `NAMESPACE/sidecar-injector`.
    pub configmap: (String, String),
    /// How `configmap` was found, for people.
    pub found_by: String,
    /// How the webhook configuration was found (`--webhook-configuration`, by label, ...).
    pub found_how: String,
    /// The injector's Pods behind the Service (none for a URL webhook).
    pub pods: Vec<Pod>,
    /// What could not be read, each with the API's answer and the permission it needs
    /// (what the rest is then guessed from).
    pub unread: Vec<String>,
}

impl Installed {
    /// The webhook configuration's name: the one found, else the shipped install's.
    pub fn configuration_name(&self) -> &str {
        self.configuration
            .as_ref()
            .and_then(|c| c.metadata.name.as_deref())
            .unwrap_or(WEBHOOK_CONFIGURATION)
    }

    /// Our webhook of the configuration.
    pub fn webhook(&self) -> Option<&MutatingWebhook> {
        self.configuration.as_ref()?.webhooks.as_ref()?.first()
    }

    /// What `--cert-secret` and `--webhook-configuration` say, when the Pods keep their
    /// certificate themselves.
    pub fn kept_certificates(&self) -> Option<crate::cluster::doctor::KeptCertificates> {
        self.pods.iter().find_map(|pod| {
            let namespace = pod.metadata.namespace.as_deref().unwrap_or(&self.namespace);
            pod.spec.as_ref()?.containers.iter().find_map(|c| {
                let secret = flag_value(c, "--cert-secret")?.replace("$(POD_NAMESPACE)", namespace);
                let (ns, name) = secret.split_once('/')?;
                Some(crate::cluster::doctor::KeptCertificates {
                    namespace: ns.to_owned(),
                    secret: name.to_owned(),
                    webhook_configuration: flag_value(c, "--webhook-configuration")?,
                })
            })
        })
    }

    /// The ConfigMap itself, when it exists.
    pub async fn read_configmap(&self, client: &kube::Client) -> Result<Option<ConfigMap>> {
        let (ns, name) = &self.configmap;
        Api::<ConfigMap>::namespaced(client.clone(), ns)
            .get_opt(name)
            .await
            .map_err(|e| crate::cluster::api_error(e, &format!("reading ConfigMap {ns}/{name}")))
    }
}

/// The label every object of an install carries, by kustomize (`manifests/`) or by the chart:
/// how an install is found whatever its release is called.
pub const NAME_LABEL: &str = "app.kubernetes.io/name=sidecar-injector";

/// The label that tells two installs apart: the Helm release, `sidecar-injector` for
/// kustomize.
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";

/// Which MutatingWebhookConfiguration is the injector's, of those labelled [`NAME_LABEL`]:
/// the one, none, or an error naming each when there are several.
pub fn pick(
    mut labelled: Vec<MutatingWebhookConfiguration>,
) -> Result<Option<MutatingWebhookConfiguration>, String> {
    if labelled.len() > 1 {
        let mut names: Vec<String> = labelled
            .iter()
            .map(|c| c.metadata.name.clone().unwrap_or_default())
            .collect();
        names.sort();
        return Err(format!(
            "{} MutatingWebhookConfigurations are labelled {NAME_LABEL} ({}): this cluster has several installs; say which with --webhook-configuration NAME",
            names.len(),
            names.join(", ")
        ));
    }
    Ok(labelled.pop())
}

/// The injector's MutatingWebhookConfiguration: the one named (`--webhook-configuration`),
/// else the one labelled [`NAME_LABEL`], else one named `sidecar-injector` without the label
/// (an install older than the label); and how it was found.
async fn configuration(
    client: &kube::Client,
    named: Option<&str>,
) -> Result<(Option<MutatingWebhookConfiguration>, String)> {
    let api = Api::<MutatingWebhookConfiguration>::all(client.clone());
    let get = |name: String| {
        let api = api.clone();
        async move {
            api.get_opt(&name).await.map_err(|e| {
                crate::cluster::api_error(
                    e,
                    &format!("reading MutatingWebhookConfiguration {name}"),
                )
            })
        }
    };
    if let Some(name) = named {
        return match get(name.to_owned()).await? {
            Some(c) => Ok((Some(c), format!("--webhook-configuration {name}"))),
            None => anyhow::bail!(
                "MutatingWebhookConfiguration {name} (--webhook-configuration) does not exist: kubectl get mutatingwebhookconfigurations -l {NAME_LABEL} lists the installs"
            ),
        };
    }
    let labelled = api
        .list(&ListParams::default().labels(NAME_LABEL))
        .await
        .map_err(|e| {
            crate::cluster::api_error(
                e,
                &format!("listing MutatingWebhookConfigurations labelled {NAME_LABEL}"),
            )
        })?;
    if let Some(found) = pick(labelled.items).map_err(anyhow::Error::msg)? {
        let name = found.metadata.name.clone().unwrap_or_default();
        return Ok((
            Some(found),
            format!("its label {NAME_LABEL} (MutatingWebhookConfiguration {name})"),
        ));
    }
    let by_name = get(WEBHOOK_CONFIGURATION.to_owned()).await?;
    let how = match by_name {
        Some(_) => format!(
            "its name {WEBHOOK_CONFIGURATION} (an install older than the label {NAME_LABEL})"
        ),
        None => format!(
            "no MutatingWebhookConfiguration labelled {NAME_LABEL} or named {WEBHOOK_CONFIGURATION}"
        ),
    };
    Ok((by_name, how))
}

/// The template hash the injector's Pods serve, read from their metrics through the API's
/// Pod proxy (`sidecar_injector_config_info{template_hash}`): the first Pod that answers.
/// `None` when none does (no Pods, no `get pods/proxy` right, a URL webhook).
pub async fn served_hash(client: &kube::Client, installed: &Installed) -> Option<String> {
    for pod in &installed.pods {
        let (Some(ns), Some(name)) = (&pod.metadata.namespace, &pod.metadata.name) else {
            continue;
        };
        let port = pod
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some("metrics"))
            .map_or(9090, |p| p.container_port);
        let Ok(request) = hyper::http::Request::get(format!(
            "/api/v1/namespaces/{ns}/pods/{name}:{port}/proxy/metrics"
        ))
        .body(Vec::new()) else {
            continue;
        };
        let Ok(text) = client.request_text(request).await else {
            continue;
        };
        if let Some(hash) = config_hash(&text) {
            return Some(hash);
        }
    }
    None
}

/// The template hash of a metrics page.
pub fn config_hash(metrics: &str) -> Option<String> {
    metrics.lines().find_map(|l| {
        let rest = l.strip_prefix("sidecar_injector_config_info{")?;
        let value = rest.split("template_hash=\"").nth(1)?;
        Some(value.split('"').next()?.to_owned())
    })
}

/// Finds the installed injector: its webhook configuration (`named`, or found by label),
/// then the Service, Pods and ConfigMap it leads to. Only the configuration's absence is not
/// an error: then the defaults of the shipped install are assumed.
pub async fn find(client: &kube::Client, named: Option<&str>) -> Result<Installed> {
    let (configuration, found_how) = configuration(client, named).await?;
    let configuration_name = configuration
        .as_ref()
        .and_then(|c| c.metadata.name.clone())
        .unwrap_or_else(|| WEBHOOK_CONFIGURATION.to_owned());
    let service = configuration
        .as_ref()
        .and_then(|c| c.webhooks.as_ref()?.first()?.client_config.service.clone());
    let default = |namespace: &str, why: String| Installed {
        configuration: configuration.clone(),
        namespace: namespace.to_owned(),
        configmap: (namespace.to_owned(), CONFIGMAP.to_owned()),
        found_by: why,
        found_how: found_how.clone(),
        pods: Vec::new(),
        unread: Vec::new(),
    };
    let Some(service) = service else {
        let why = match &configuration {
            None => format!(
                "no MutatingWebhookConfiguration labelled {NAME_LABEL} or named {WEBHOOK_CONFIGURATION}: the default install's ConfigMap"
            ),
            Some(c) => {
                // Called by URL: the install's ConfigMap is the one labelled as its webhook
                // configuration is (the chart renders it in the release's namespace).
                let instance = c
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(INSTANCE_LABEL));
                if let Some(instance) = instance {
                    let selector = format!("{NAME_LABEL},{INSTANCE_LABEL}={instance}");
                    match Api::<ConfigMap>::all(client.clone())
                        .list(&ListParams::default().labels(&selector))
                        .await
                    {
                        Ok(list) => {
                            if let [cm] = list.items.as_slice()
                                && let (Some(ns), Some(name)) =
                                    (&cm.metadata.namespace, &cm.metadata.name)
                            {
                                let mut found = default(
                                    ns,
                                    format!(
                                        "webhook {configuration_name} is called by URL: ConfigMap {ns}/{name}, labelled {selector}"
                                    ),
                                );
                                found.configmap = (ns.clone(), name.clone());
                                return Ok(found);
                            }
                        }
                        Err(e) => {
                            let mut found = default(
                                DEFAULT_OWN_NAMESPACE,
                                format!(
                                    "webhook {configuration_name} is called by URL, and the ConfigMaps labelled {selector} could not be listed: the default install's ConfigMap"
                                ),
                            );
                            found
                                .unread
                                .push(unread(e, "list configmaps --all-namespaces"));
                            return Ok(found);
                        }
                    }
                }
                format!(
                    "webhook {configuration_name} is called by URL, and no one ConfigMap is labelled as it is: the default install's ConfigMap"
                )
            }
        };
        return Ok(default(DEFAULT_OWN_NAMESPACE, why));
    };
    let ns = service.namespace.clone();
    let selector = match Api::<Service>::namespaced(client.clone(), &ns)
        .get_opt(&service.name)
        .await
    {
        Ok(found) => found
            .and_then(|s| s.spec?.selector)
            .filter(|s| !s.is_empty()),
        Err(e) => {
            let mut found = default(
                &ns,
                format!(
                    "Service {ns}/{} could not be read: the default ConfigMap of its namespace",
                    service.name
                ),
            );
            found
                .unread
                .push(unread(e, &format!("get services {} -n {ns}", service.name)));
            return Ok(found);
        }
    };
    let Some(selector) = selector else {
        return Ok(default(
            &ns,
            format!(
                "Service {ns}/{} not found or without a selector: the default ConfigMap of its namespace",
                service.name
            ),
        ));
    };
    let labels: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut unread_pods = Vec::new();
    let pods = match Api::<Pod>::namespaced(client.clone(), &ns)
        .list(&ListParams::default().labels(&labels.join(",")))
        .await
    {
        Ok(l) => l.items,
        Err(e) => {
            unread_pods.push(unread(e, &format!("list pods -n {ns}")));
            Vec::new()
        }
    };
    let served = pods.iter().find_map(|p| served_configmap(p, &ns));
    Ok(match served {
        Some((configmap, how)) => Installed {
            configuration,
            namespace: ns,
            configmap,
            found_by: how,
            found_how,
            pods,
            unread: unread_pods,
        },
        None => Installed {
            pods,
            unread: unread_pods,
            ..default(
                &ns,
                format!(
                    "the Pods of Service {ns}/{} do not name a ConfigMap: the default ConfigMap of its namespace",
                    service.name
                ),
            )
        },
    })
}

/// What a read that failed means here: the API's answer and the `kubectl auth can-i` line
/// for the permission it needs.
fn unread(e: kube::Error, permission: &str) -> String {
    format!(
        "{:#}: this identity needs `{permission}` (kubectl auth can-i {permission})",
        crate::cluster::api_error(e, "the injector's install could not be read")
    )
}

/// The ConfigMap a `serve` Pod reads: `--config configmap:NS/NAME`, or the ConfigMap volume
/// mounted where `--config PATH` points.
pub fn served_configmap(pod: &Pod, namespace: &str) -> Option<((String, String), String)> {
    let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
    let spec = pod.spec.as_ref()?;
    for c in &spec.containers {
        let Some(value) = flag_value(c, "--config") else {
            continue;
        };
        let value = value.replace("$(POD_NAMESPACE)", namespace);
        if let Some(rest) = value.strip_prefix(CONFIGMAP_PREFIX)
            && let Some((ns, name)) = rest.split_once('/')
        {
            return Some((
                (ns.to_owned(), name.to_owned()),
                format!("Pod {namespace}/{pod_name} serves --config {value}"),
            ));
        }
        // A path: the ConfigMap volume mounted at it (or above it).
        let (volume, _) = volume_at(spec, c, &value)?;
        let cm = volume.config_map.as_ref()?;
        return Some((
            (namespace.to_owned(), cm.name.clone()),
            format!(
                "Pod {namespace}/{pod_name} serves --config {value}, ConfigMap {} mounted there",
                cm.name
            ),
        ));
    }
    None
}

/// The value of `flag` in a container's command and arguments: `--flag=VALUE` or
/// `--flag VALUE`.
pub fn flag_value(c: &Container, flag: &str) -> Option<String> {
    let args: Vec<&String> = c
        .command
        .iter()
        .flatten()
        .chain(c.args.iter().flatten())
        .collect();
    let joined = format!("{flag}=");
    args.iter().enumerate().find_map(|(i, a)| {
        a.strip_prefix(&joined)
            .map(str::to_owned)
            .or_else(|| (a.as_str() == flag).then(|| args.get(i + 1).map(|s| s.to_string()))?)
    })
}

/// The volume of `spec` that container `c` mounts at `path` or above it, and `path` below
/// the mount point (empty when `path` is the mount point itself).
pub fn volume_at<'a>(spec: &'a PodSpec, c: &Container, path: &str) -> Option<(&'a Volume, String)> {
    let mount = c.volume_mounts.iter().flatten().find_map(|m| {
        let point = m.mount_path.trim_end_matches('/');
        match path.strip_prefix(point) {
            Some("") => Some((m, String::new())),
            Some(rest) => rest.strip_prefix('/').map(|rest| (m, rest.to_owned())),
            None => None,
        }
    })?;
    let volume = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.0.name)?;
    Some((volume, mount.1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// An apiserver that serves the shipped webhook configuration and Service, and answers
    /// 403 to listing Pods (an identity without `list pods`).
    fn forbidden_pods() -> kube::Client {
        let service = tower::service_fn(
            |req: axum::http::Request<kube::client::Body>| async move {
                let path = req.uri().path().to_owned();
                let (code, body) = if path.ends_with("/mutatingwebhookconfigurations") {
                    // An install older than the label: found by its name.
                    (
                        200,
                        json!({"apiVersion": "admissionregistration.k8s.io/v1",
                    "kind": "MutatingWebhookConfigurationList", "metadata": {}, "items": []}),
                    )
                } else if path.ends_with("/mutatingwebhookconfigurations/sidecar-injector") {
                    (
                        200,
                        json!({"apiVersion": "admissionregistration.k8s.io/v1",
                    "kind": "MutatingWebhookConfiguration", "metadata": {"name": "sidecar-injector"},
                    "webhooks": [{"name": "inject.sidecar-injector.io", "sideEffects": "None",
                        "admissionReviewVersions": ["v1"], "clientConfig": {"service":
                        {"namespace": "sidecar-injector", "name": "sidecar-injector"}}}]}),
                    )
                } else if path.ends_with("/services/sidecar-injector") {
                    (
                        200,
                        json!({"apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": "sidecar-injector", "namespace": "sidecar-injector"},
                    "spec": {"selector": {"app": "sidecar-injector"}}}),
                    )
                } else {
                    (
                        403,
                        json!({"apiVersion": "v1", "kind": "Status", "status": "Failure",
                    "reason": "Forbidden", "code": 403, "message": format!(
                    "pods is forbidden: User \"dev\" cannot list resource \"pods\" ({path})")}),
                    )
                };
                let resp = axum::http::Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(kube::client::Body::from(body.to_string().into_bytes()))
                    .unwrap();
                Ok::<_, std::convert::Infallible>(resp)
            },
        );
        kube::Client::new(service, "default")
    }

    /// A 403 listing the injector's Pods used to read as "no injector Pod takes its
    /// certificate from a Secret": it is now said, with the permission it needs.
    #[tokio::test]
    async fn a_refused_read_is_said_with_the_permission_it_needs() {
        let found = find(&forbidden_pods(), None).await.unwrap();
        assert!(found.pods.is_empty());
        let [said] = found.unread.as_slice() else {
            panic!("one unread: {:?}", found.unread);
        };
        assert!(said.contains("403"), "{said}");
        assert!(said.contains("cannot list resource"), "{said}");
        assert!(
            said.contains("kubectl auth can-i list pods -n sidecar-injector"),
            "{said}"
        );
    }

    /// Issue 33: `helm install inj` named the configuration `inj`, and doctor said that
    /// `sidecar-injector` did not exist. Found by label, any name is found; two are named.
    #[test]
    fn the_configuration_is_found_by_label_whatever_its_name() {
        let named = |name: &str| -> MutatingWebhookConfiguration {
            serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
        };
        assert_eq!(pick(vec![]).unwrap(), None);
        let one = pick(vec![named("inj")]).unwrap().unwrap();
        assert_eq!(one.metadata.name.as_deref(), Some("inj"));
        let two = pick(vec![named("team-b"), named("inj")]).unwrap_err();
        assert!(two.contains("2 MutatingWebhookConfigurations"), "{two}");
        assert!(two.contains("(inj, team-b)"), "{two}");
        assert!(two.contains("--webhook-configuration NAME"), "{two}");
    }

    #[test]
    fn the_served_hash_is_read_from_the_metrics_page() {
        let page = "# HELP sidecar_injector_config_info The configuration served.\n# TYPE sidecar_injector_config_info gauge\nsidecar_injector_config_info{template_hash=\"fb917b4fdc4cd404\"} 1\n";
        assert_eq!(config_hash(page).as_deref(), Some("fb917b4fdc4cd404"));
        assert_eq!(
            config_hash("sidecar_injector_pods{state=\"current\"} 1"),
            None
        );
    }

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "inj-1"}, "spec": spec})).unwrap()
    }

    #[test]
    fn the_configmap_a_pod_serves_is_read_from_its_arguments() {
        let shipped = pod(json!({"containers": [{"name": "s", "args": [
            "serve", "--config=configmap:$(POD_NAMESPACE)/sidecar-injector"]}]}));
        let (cm, how) = served_configmap(&shipped, "inj").unwrap();
        assert_eq!(cm, ("inj".to_owned(), "sidecar-injector".to_owned()));
        assert!(how.contains("inj/inj-1"), "{how}");

        let mounted = pod(json!({
            "containers": [{"name": "s", "args": ["serve", "--config", "/etc/si/config"],
                "volumeMounts": [{"name": "cfg", "mountPath": "/etc/si/config"}]}],
            "volumes": [{"name": "cfg", "configMap": {"name": "my-templates"}}]}));
        assert_eq!(
            served_configmap(&mounted, "inj").unwrap().0,
            ("inj".to_owned(), "my-templates".to_owned())
        );

        let embedded = pod(json!({"containers": [{"name": "s", "args": ["serve"]}]}));
        assert_eq!(served_configmap(&embedded, "inj"), None);
    }

    #[test]
    fn the_certificate_secret_a_pod_keeps_is_read_from_its_arguments() {
        let installed = |args: serde_json::Value| Installed {
            unread: Vec::new(),
            configuration: None,
            namespace: "inj".to_owned(),
            configmap: ("inj".to_owned(), "sidecar-injector".to_owned()),
            found_by: String::new(),
            found_how: String::new(),
            pods: vec![pod(json!({"containers": [{"name": "s", "args": args}]}))],
        };
        let kept = |ns: &str, secret: &str| {
            Some(crate::cluster::doctor::KeptCertificates {
                namespace: ns.to_owned(),
                secret: secret.to_owned(),
                webhook_configuration: "inj".to_owned(),
            })
        };
        let named = installed(json!([
            "serve",
            "--cert-secret=sys/inj-tls",
            "--webhook-configuration=inj"
        ]));
        assert_eq!(named.kept_certificates(), kept("sys", "inj-tls"));
        // kubelet expands $(POD_NAMESPACE); the Pod as stored keeps it.
        let shipped = installed(json!([
            "serve",
            "--cert-secret=$(POD_NAMESPACE)/inj-tls",
            "--webhook-configuration=inj"
        ]));
        assert_eq!(shipped.kept_certificates(), kept("inj", "inj-tls"));
        let files = installed(json!(["serve", "--tls-cert-file=/etc/tls/tls.crt"]));
        assert_eq!(files.kept_certificates(), None);
    }
}
