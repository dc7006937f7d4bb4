//! The injector's configuration: a ConfigMap (file or mounted directory) turned, once, into a
//! validated and immutable [`Config`]. Requests only read it; reloads replace it whole.
//!
//! A ConfigMap holds `config.yaml` (settings and values) and one or more templates:
//! `mutate.yaml` is the template named `default`, and each `NAME.mutate.yaml` the template
//! named `NAME`.

pub mod docker_socket;
mod fragment;
pub mod images;
pub mod secrets;
mod settings;
mod source;
#[cfg(test)]
mod tests;
mod validate;

use docker_socket::{DockerSocket, Nodes};
use fragment::merge_fragments;
pub use fragment::{Fragment, FragmentError, Item};
use settings::parse_settings;
pub use settings::{FailurePolicy, NativeSidecars, PodSecurity, Policy, Repair, Settings};
pub use source::{CONFIGMAP_PREFIX, RawConfig, Source, parse_configmap};
use validate::deserialize_at;

use crate::engine::image;
use crate::engine::patch::Shared;
use crate::engine::pod::PodView;
use crate::engine::template::{FieldPath, Problems, Template};
use k8s_openapi::api::core::v1::{Container, EnvVar, LocalObjectReference, Volume, VolumeMount};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// The settings key of the ConfigMap.
pub const SETTINGS_KEY: &str = "config.yaml";
/// The key of the template named `default`.
pub const TEMPLATE_KEY: &str = "mutate.yaml";
/// Every other template is the key `NAME` + this.
pub const TEMPLATE_SUFFIX: &str = ".mutate.yaml";
/// The name of the template in `mutate.yaml`.
pub const DEFAULT_TEMPLATE_NAME: &str = "default";

/// The embedded default: the Bitbucket Pipelines metrics collector. `manifests/` ships the
/// very same files as its ConfigMap.
pub const DEFAULT_SETTINGS: &str = include_str!("../../../manifests/base/config/config.yaml");
pub const DEFAULT_TEMPLATE: &str = include_str!("../../../manifests/base/config/mutate.yaml");

/// The namespace the injector runs in when `POD_NAMESPACE` does not say.
pub const DEFAULT_OWN_NAMESPACE: &str = "sidecar-injector";

/// The ConfigMap key of a template.
pub fn template_key(name: &str) -> String {
    if name == DEFAULT_TEMPLATE_NAME {
        TEMPLATE_KEY.to_owned()
    } else {
        format!("{name}{TEMPLATE_SUFFIX}")
    }
}

/// The template a ConfigMap key holds: `Some(Ok(name))`, `Some(Err(why))` for a key that looks
/// like a template but cannot be one, `None` for any other key.
pub fn template_name(key: &str) -> Option<Result<String, String>> {
    if key == TEMPLATE_KEY {
        return Some(Ok(DEFAULT_TEMPLATE_NAME.to_owned()));
    }
    let name = key.strip_suffix(TEMPLATE_SUFFIX)?;
    Some(if name == DEFAULT_TEMPLATE_NAME {
        Err(format!(
            "{key}: the default template is the key {TEMPLATE_KEY}"
        ))
    } else if is_dns_label(name) {
        Ok(name.to_owned())
    } else {
        Err(format!(
            "{key}: {name:?} is not a template name (lower-case letters, digits, '-', at most 63)"
        ))
    })
}

fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// A Kubernetes object name such as a Secret's: dot-separated DNS labels, at most 253.
fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns_label)
}

/// A loaded, validated configuration.
#[derive(Debug)]
pub struct Config {
    pub settings: Settings,
    /// The injector's own namespace: never injected.
    pub own_namespace: String,
    /// Every template of the ConfigMap, by name.
    pub templates: BTreeMap<String, NamedTemplate>,
    /// The fragment of `settings.templates`, when nothing in them depends on the Pod.
    prerendered: Option<Fragment>,
    /// Identifies what `settings.templates` inject: the status annotation and `config_info`.
    pub template_hash: String,
    /// Things worth a look that do not stop the config from loading.
    pub warnings: Vec<String>,
    /// How `values.mountDockerSocket` was decided (`auto`: from `nodes`).
    pub docker_socket: DockerSocket,
    /// What it was built from, to build it again when the nodes change.
    raw: RawConfig,
    nodes: Option<Nodes>,
}

/// One template of the ConfigMap, compiled.
#[derive(Debug)]
pub struct NamedTemplate {
    pub name: String,
    /// Its ConfigMap key, which prefixes its problems: `mutate.yaml`, `apm.mutate.yaml`.
    pub key: String,
    /// The parsed document, kept to compile again for a Pod whose values are overridden.
    doc: Value,
    template: Template,
    /// The fragment, when nothing in the template depends on the Pod.
    prerendered: Option<Fragment>,
    /// Identifies this template (with the settings it renders with) in the status annotation.
    pub hash: String,
    /// `os: [linux, windows]`: the template can run beside a Windows Pod.
    pub windows: bool,
}

/// Every problem found while loading, each with its file and path.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub problems: Problems,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.problems.join("\n"))
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    pub fn one(msg: impl Into<String>) -> Self {
        ConfigError {
            problems: vec![msg.into()],
        }
    }
}

impl Config {
    /// Never injected, whatever its labels: the injector's own namespace and those of
    /// `neverInjectNamespaces`.
    pub fn never_injects(&self, namespace: &str) -> bool {
        namespace == self.own_namespace
            || self
                .settings
                .never_inject_namespaces
                .iter()
                .any(|n| n == namespace)
    }

    /// A namespace the webhook injects: labelled `namespaceLabel=enabled` and not
    /// [`never_injects`](Self::never_injects). `decide` applies the same two rules to a
    /// request; `check`, `doctor` and the Secret copies choose namespaces with this.
    pub fn injects_namespace(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        !self.never_injects(namespace) && self.settings.namespace_opted_in(labels)
    }

    /// The embedded default configuration (`manifests/base/config/`). Reading a file or a
    /// mounted directory is `serve::config_files::load`; a ConfigMap through the API,
    /// `cluster::live_config`.
    pub fn embedded(own_namespace: &str) -> Result<Config, ConfigError> {
        Config::from_raw(&RawConfig::embedded(), own_namespace)
    }

    /// Parses, validates and pre-renders every template. Collects every problem rather than
    /// stopping at one.
    pub fn from_raw(raw: &RawConfig, own_namespace: &str) -> Result<Config, ConfigError> {
        Config::with_cluster(raw, own_namespace, None)
    }

    /// The same, with the cluster's nodes when they are known (`values.mountDockerSocket:
    /// auto` is decided by them).
    pub fn with_cluster(
        raw: &RawConfig,
        own_namespace: &str,
        nodes: Option<&Nodes>,
    ) -> Result<Config, ConfigError> {
        let mut problems = raw.key_problems.clone();
        let settings = parse_settings(raw.settings.as_deref().unwrap_or("{}"), &mut problems);
        let Some(mut settings) = settings else {
            return Err(ConfigError { problems });
        };
        let docker_socket = DockerSocket::decide(&settings.values, nodes);
        docker_socket.apply(&mut settings.values);
        let mut warnings = Vec::new();
        let mut templates = BTreeMap::new();
        for (name, text) in &raw.templates {
            if let Some(t) =
                NamedTemplate::load(name, text, &settings, &mut problems, &mut warnings)
            {
                templates.insert(name.clone(), t);
            }
        }
        if settings.templates.is_empty() {
            problems.push(format!(
                "{SETTINGS_KEY}: templates: want at least one template name"
            ));
        }
        for (i, name) in settings.templates.iter().enumerate() {
            if !raw.templates.contains_key(name) {
                problems.push(format!(
                    "{SETTINGS_KEY}: templates[{i}]: no template {name:?} (want a key {})",
                    template_key(name)
                ));
            }
        }
        for (i, path) in settings.overridable.iter().enumerate() {
            if path.is_empty() || path.split('.').any(str::is_empty) {
                problems.push(format!(
                    "{SETTINGS_KEY}: overridable[{i}]: {path:?} is not a dotted path of values"
                ));
            }
        }
        if !problems.is_empty() {
            return Err(ConfigError { problems });
        }
        let mut config = Config {
            settings,
            own_namespace: own_namespace.to_owned(),
            templates,
            prerendered: None,
            template_hash: String::new(),
            warnings,
            docker_socket,
            raw: raw.clone(),
            nodes: nodes.cloned(),
        };
        let defaults = config.default_templates();
        let template_hash = combined_hash(&defaults);
        // The default list must inject as one: no name added twice with two definitions.
        let sample = sample_pod();
        let parts = defaults
            .iter()
            .map(|t| match &t.prerendered {
                Some(f) => Ok((t.name.as_str(), Cow::Borrowed(f))),
                None => t
                    .render(&sample, "default", &config.settings, None)
                    .map(|f| (t.name.as_str(), Cow::Owned(f))),
            })
            .collect::<Result<Vec<_>, String>>();
        let merged = match parts {
            Ok(parts) => merge_fragments(parts),
            Err(e) => Err(FragmentError::Template(e)),
        };
        let prerendered = match merged {
            Ok(f) if defaults.iter().all(|t| t.prerendered.is_some()) => Some(f.into_owned()),
            Ok(_) => None,
            Err(FragmentError::Conflict(e)) => {
                return Err(ConfigError::one(format!("{SETTINGS_KEY}: templates: {e}")));
            }
            Err(FragmentError::Template(e)) => return Err(ConfigError::one(e)),
        };
        config.template_hash = template_hash;
        config.prerendered = prerendered;
        Ok(config)
    }

    /// This configuration built again for `nodes`, when they change how it decides
    /// (`mountDockerSocket: auto`); `None` when it stays as it is.
    pub fn for_nodes(&self, nodes: &Nodes) -> Option<Result<Config, ConfigError>> {
        // Only `auto` is decided by the nodes; anything else is `Fixed`.
        if self.docker_socket == DockerSocket::Fixed
            || self.nodes.as_ref() == Some(nodes)
            || DockerSocket::auto(Some(nodes)) == self.docker_socket
        {
            return None;
        }
        Some(Config::with_cluster(
            &self.raw,
            &self.own_namespace,
            Some(nodes),
        ))
    }

    /// The templates of `config.yaml`'s `templates`, in order.
    pub fn default_templates(&self) -> Vec<&NamedTemplate> {
        self.settings
            .templates
            .iter()
            .filter_map(|n| self.templates.get(n))
            .collect()
    }

    /// The templates of `names`, in order; the error names the first unknown one.
    pub fn resolve<'c>(&'c self, names: &[String]) -> Result<Vec<&'c NamedTemplate>, String> {
        names
            .iter()
            .map(|n| {
                self.templates.get(n).ok_or_else(|| {
                    format!(
                        "no template {n:?} (the configuration has {})",
                        self.templates
                            .keys()
                            .map(|k| format!("{k:?}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
            })
            .collect()
    }

    /// The fragment `templates` add to one Pod, merged in order: the pre-rendered one when
    /// that is possible, else each rendered for this Pod (and with `values` in place of the
    /// configured values, when a namespace or the Pod overrides some).
    pub fn fragment<'c>(
        &'c self,
        templates: &[&'c NamedTemplate],
        pod: &PodView<'_>,
        namespace: &str,
        values: Option<&Value>,
    ) -> Result<Cow<'c, Fragment>, FragmentError> {
        let is_default = templates.len() == self.settings.templates.len()
            && templates
                .iter()
                .zip(&self.settings.templates)
                .all(|(t, n)| &t.name == n);
        if let (true, None, Some(f)) = (is_default, values, &self.prerendered) {
            return Ok(Cow::Borrowed(f));
        }
        // An override may say `auto` too: it is decided as the configuration's was.
        let decided;
        let values = match values {
            Some(v)
                if v.get(docker_socket::KEY).and_then(Value::as_str)
                    == Some(docker_socket::AUTO) =>
            {
                let mut v = v.clone();
                DockerSocket::decide(&v, self.nodes.as_ref()).apply(&mut v);
                decided = v;
                Some(&decided)
            }
            other => other,
        };
        let mut parts = Vec::with_capacity(templates.len());
        for t in templates {
            let f = match (&t.prerendered, values) {
                (Some(f), None) => Cow::Borrowed(f),
                _ => {
                    let raw = pod.raw().ok_or_else(|| {
                        FragmentError::Template("the object is no longer in the request".into())
                    })?;
                    Cow::Owned(
                        t.render(raw, namespace, &self.settings, values)
                            .map_err(FragmentError::Template)?,
                    )
                }
            };
            parts.push((t.name.as_str(), f));
        }
        merge_fragments(parts)
    }
}

/// The one hash of several templates: the template's own when there is one.
pub fn combined_hash(templates: &[&NamedTemplate]) -> String {
    match templates {
        [one] => one.hash.clone(),
        many => {
            let mut h = Sha256::new();
            for t in many {
                h.update(t.name.as_bytes());
                h.update([b'=']);
                h.update(t.hash.as_bytes());
                h.update([0]);
            }
            short_digest(h)
        }
    }
}

fn short_digest(h: Sha256) -> String {
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `mutate.yaml: containers[0].image` of `mutate.yaml: containers[0].image: message`.
fn problem_field(problem: &str) -> &str {
    match problem.match_indices(": ").nth(1) {
        Some((i, _)) => &problem[..i],
        None => problem,
    }
}

/// A short, stable identifier of what the configuration injects.
fn template_hash(settings: &Settings, template: &Value) -> String {
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(template).unwrap_or_default());
    h.update([0]);
    h.update(serde_json::to_vec(&settings.values).unwrap_or_default());
    h.update([0]);
    h.update(settings.image_repository.as_bytes());
    h.update([0]);
    h.update(format!("{:?}", settings.native_sidecars).as_bytes());
    short_digest(h)
}

/// A plain Pod to render dynamic templates against (at load, and to see what the default
/// templates mount).
pub fn sample_pod() -> Box<RawValue> {
    let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"sample","namespace":"default","labels":{"app":"sample"},"annotations":{}},"spec":{"containers":[{"name":"app","image":"nginx:1.27"}]}}"#;
    RawValue::from_string(pod.to_owned()).unwrap_or_else(|_| RawValue::NULL.to_owned())
}
