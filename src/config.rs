//! The injector's configuration: a ConfigMap (file or mounted directory) turned, once, into a
//! validated and immutable [`Config`]. Requests only read it; reloads replace it whole.
//!
//! A ConfigMap holds `config.yaml` (settings and values) and one or more templates:
//! `mutate.yaml` is the template named `default`, and each `NAME.mutate.yaml` the template
//! named `NAME`.

use crate::image;
use crate::patch::Shared;
use crate::pod::PodView;
use crate::template::{FieldPath, Problems, Template};
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
pub const DEFAULT_SETTINGS: &str = include_str!("../manifests/base/config/config.yaml");
pub const DEFAULT_TEMPLATE: &str = include_str!("../manifests/base/config/mutate.yaml");

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Inject unless the Pod opts out.
    #[default]
    Enabled,
    /// Inject only Pods that opt in.
    Disabled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum FailurePolicy {
    /// Admit the Pod unchanged, with a warning the user sees.
    #[default]
    Ignore,
    /// Deny the Pod with the reason.
    Fail,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NativeSidecars {
    /// Pods that run to completion (Job and CronJob Pods) get native sidecars.
    #[default]
    Auto,
    Always,
    Never,
}

/// What to do when the namespace enforces a Pod Security level the injection would break
/// (hostPath volumes under `baseline` or `restricted`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PodSecurity {
    /// Inject, and warn that the Pod will be rejected.
    #[default]
    Warn,
    /// Do not inject (reason `pod_security`), and warn why.
    Skip,
    /// Inject, and say nothing.
    Ignore,
}

/// `config.yaml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub policy: Policy,
    #[serde(default = "default_namespace_label")]
    pub namespace_label: String,
    #[serde(default)]
    pub image_repository: String,
    #[serde(default)]
    pub failure_policy: FailurePolicy,
    #[serde(default)]
    pub native_sidecars: NativeSidecars,
    #[serde(default = "default_never_inject")]
    pub never_inject_namespaces: Vec<String>,
    #[serde(default)]
    pub pod_security: PodSecurity,
    /// The templates injected when neither the Pod nor its namespace names others.
    #[serde(default = "default_templates")]
    pub templates: Vec<String>,
    /// The dotted `values` paths a namespace or Pod may override.
    #[serde(default)]
    pub overridable: Vec<String>,
    /// The repair loop inside `serve`.
    #[serde(default)]
    pub repair: Repair,
    #[serde(default = "empty_map")]
    pub values: Value,
}

/// `repair:` in config.yaml: the in-server repair loop (one replica, elected by a Lease).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Repair {
    #[serde(default)]
    pub enabled: bool,
    /// At most this many workloads restarted a minute.
    #[serde(default = "one")]
    pub max_per_minute: u32,
    /// How often the Pods are surveyed (and, when enabled, repaired).
    #[serde(default = "sixty")]
    pub interval_seconds: u64,
}

impl Default for Repair {
    fn default() -> Self {
        Repair {
            enabled: false,
            max_per_minute: one(),
            interval_seconds: sixty(),
        }
    }
}

fn one() -> u32 {
    1
}
fn sixty() -> u64 {
    60
}

impl Settings {
    /// The repository every injected image moves under, when one is set.
    pub fn image_repository(&self) -> Option<&str> {
        Some(self.image_repository.as_str()).filter(|r| !r.is_empty())
    }
}

fn default_namespace_label() -> String {
    "sidecar-injection".to_owned()
}
fn default_never_inject() -> Vec<String> {
    ["kube-system", "kube-public", "kube-node-lease"]
        .map(String::from)
        .to_vec()
}
fn default_templates() -> Vec<String> {
    vec![DEFAULT_TEMPLATE_NAME.to_owned()]
}
fn empty_map() -> Value {
    json!({})
}

/// What the template adds to a Pod, rendered, checked, and with images under the repository.
#[derive(Debug, Clone, Default)]
pub struct Fragment {
    pub image_pull_secrets: Vec<Item>,
    pub init_containers: Vec<Item>,
    pub containers: Vec<Item>,
    pub volumes: Vec<Item>,
    pub app_env: Vec<Item>,
    pub app_volume_mounts: Vec<Item>,
}

/// One entry of the fragment, with its JSON serialized once for every patch that adds it.
#[derive(Debug, Clone)]
pub struct Item {
    pub value: Value,
    pub json: Shared,
    /// Containers only: the same container as a native sidecar (`restartPolicy: Always`).
    pub native: Option<Box<Item>>,
}

impl Item {
    fn new(value: Value) -> Item {
        Item {
            json: Shared::new(&value),
            value,
            native: None,
        }
    }

    fn container(value: Value) -> Item {
        let mut native = value.clone();
        if let Value::Object(m) = &mut native {
            m.insert("restartPolicy".into(), Value::String("Always".into()));
        }
        Item {
            native: Some(Box::new(Item::new(native))),
            ..Item::new(value)
        }
    }

    pub fn name(&self) -> &str {
        self.value
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
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
    fn one(msg: impl Into<String>) -> Self {
        ConfigError {
            problems: vec![msg.into()],
        }
    }
}

/// Where a configuration comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Embedded,
    /// A ConfigMap manifest, or a directory holding its keys as files.
    Path(PathBuf),
    /// `configmap:NAMESPACE/NAME`: the ConfigMap itself, read and watched through the API.
    ConfigMap {
        namespace: String,
        name: String,
    },
}

/// The prefix of a `--config` that names a ConfigMap in the cluster.
pub const CONFIGMAP_PREFIX: &str = "configmap:";

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Embedded => f.write_str("the embedded default"),
            Source::Path(p) => write!(f, "{}", p.display()),
            Source::ConfigMap { namespace, name } => {
                write!(f, "{CONFIGMAP_PREFIX}{namespace}/{name}")
            }
        }
    }
}

/// The raw text of the ConfigMap's keys.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RawConfig {
    pub settings: Option<String>,
    /// Template name -> its text.
    pub templates: BTreeMap<String, String>,
    /// Problems with the keys themselves (a key that cannot name a template).
    pub key_problems: Vec<String>,
}

impl RawConfig {
    /// Settings and the one template named `default`.
    pub fn new(settings: Option<String>, template: impl Into<String>) -> RawConfig {
        RawConfig {
            settings,
            templates: BTreeMap::from([(DEFAULT_TEMPLATE_NAME.to_owned(), template.into())]),
            key_problems: Vec::new(),
        }
    }

    /// Adds the template `name`.
    pub fn with_template(mut self, name: &str, text: impl Into<String>) -> RawConfig {
        self.templates.insert(name.to_owned(), text.into());
        self
    }

    /// The keys of a ConfigMap's `data`.
    pub fn from_data<'k>(data: impl IntoIterator<Item = (&'k String, &'k String)>) -> RawConfig {
        let mut raw = RawConfig::default();
        for (key, text) in data {
            raw.add_key(key, text.clone());
        }
        raw
    }

    /// Sorts one ConfigMap key into settings, templates or neither.
    fn add_key(&mut self, key: &str, text: String) {
        if key == SETTINGS_KEY {
            self.settings = Some(text);
            return;
        }
        match template_name(key) {
            Some(Ok(name)) => {
                self.templates.insert(name, text);
            }
            Some(Err(problem)) => self.key_problems.push(problem),
            None => {}
        }
    }
}

impl Source {
    /// `--config`: a path, or `configmap:NAMESPACE/NAME`.
    pub fn from_arg(arg: Option<&Path>) -> Result<Source, String> {
        let Some(arg) = arg else {
            return Ok(Source::Embedded);
        };
        let Some(rest) = arg.to_str().and_then(|s| s.strip_prefix(CONFIGMAP_PREFIX)) else {
            return Ok(Source::Path(arg.to_owned()));
        };
        match rest.split_once('/') {
            Some((namespace, name))
                if is_dns_label(namespace) && !name.is_empty() && !name.contains('/') =>
            {
                Ok(Source::ConfigMap {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                })
            }
            _ => Err(format!(
                "--config {}: want {CONFIGMAP_PREFIX}NAMESPACE/NAME",
                arg.display()
            )),
        }
    }

    /// The files a directory source is read from, sorted: `config.yaml` and every template.
    /// A ConfigMap mounted by kubelet has each key as a symlink into `..data`; the `..`
    /// entries themselves are skipped.
    pub fn files(&self) -> Vec<PathBuf> {
        match self {
            Source::Embedded | Source::ConfigMap { .. } => Vec::new(),
            Source::Path(p) if p.is_dir() => {
                let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter_map(|e| {
                        let name = e.file_name().to_str()?.to_owned();
                        let wanted = name == SETTINGS_KEY
                            || (template_name(&name).is_some() && !name.starts_with('.'));
                        wanted.then(|| p.join(name))
                    })
                    .collect();
                files.sort();
                files
            }
            Source::Path(p) => vec![p.clone()],
        }
    }

    /// Reads the keys. A directory is read through its symlinks, as kubelet lays them out.
    pub fn read(&self) -> Result<RawConfig, ConfigError> {
        match self {
            Source::Embedded => Ok(RawConfig::new(
                Some(DEFAULT_SETTINGS.to_owned()),
                DEFAULT_TEMPLATE,
            )),
            Source::Path(p) if p.is_dir() => {
                let mut raw = RawConfig::default();
                for file in self.files() {
                    let text = std::fs::read_to_string(&file)
                        .map_err(|e| ConfigError::one(format!("{}: {e}", file.display())))?;
                    let key = file
                        .file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or_default();
                    raw.add_key(key, text);
                }
                if raw.templates.is_empty() {
                    return Err(ConfigError::one(format!(
                        "{}: no {TEMPLATE_KEY} or NAME{TEMPLATE_SUFFIX} in this directory",
                        p.display()
                    )));
                }
                Ok(raw)
            }
            Source::Path(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| ConfigError::one(format!("{}: {e}", p.display())))?;
                parse_configmap(&text)
                    .map_err(|e| ConfigError::one(format!("{}: {e}", p.display())))
            }
            Source::ConfigMap { .. } => Err(ConfigError::one(format!(
                "{self}: a ConfigMap in the cluster is read through the API (serve, check)"
            ))),
        }
    }
}

/// Reads the keys out of a ConfigMap manifest.
pub fn parse_configmap(text: &str) -> Result<RawConfig, String> {
    let doc: Value = crate::yaml::from_str(text)?;
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
    if kind != "ConfigMap" {
        return Err(format!("kind is {kind:?}, want a ConfigMap"));
    }
    let mut data = BTreeMap::new();
    for (key, value) in doc
        .get("data")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        match value {
            Value::Null => {}
            Value::String(s) => {
                data.insert(key.clone(), s.clone());
            }
            other => return Err(format!("data.{key} is not a string but {other}")),
        }
    }
    let raw = RawConfig::from_data(&data);
    raw.require_template()?;
    Ok(raw)
}

impl RawConfig {
    /// A ConfigMap with no template at all is refused as a whole.
    pub fn require_template(&self) -> Result<(), String> {
        if self.templates.is_empty() {
            return Err(format!(
                "the ConfigMap has no data.{TEMPLATE_KEY} or data.NAME{TEMPLATE_SUFFIX}"
            ));
        }
        Ok(())
    }
}

/// Why a Pod gets no fragment.
#[derive(Debug, Clone, PartialEq)]
pub enum FragmentError {
    /// A template does not render, or renders into something the apiserver would refuse.
    Template(String),
    /// Two templates add the same name with different definitions.
    Conflict(String),
}

impl fmt::Display for FragmentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FragmentError::Template(e) | FragmentError::Conflict(e) => f.write_str(e),
        }
    }
}

impl Config {
    /// Loads a configuration from its source, as `serve`, `preview` and `validate` all do.
    pub fn load(source: &Source, own_namespace: &str) -> Result<Config, ConfigError> {
        Config::from_raw(&source.read()?, own_namespace)
    }

    /// Parses, validates and pre-renders every template. Collects every problem rather than
    /// stopping at one.
    pub fn from_raw(raw: &RawConfig, own_namespace: &str) -> Result<Config, ConfigError> {
        let mut problems = raw.key_problems.clone();
        let settings = parse_settings(raw.settings.as_deref().unwrap_or("{}"), &mut problems);
        let Some(settings) = settings else {
            return Err(ConfigError { problems });
        };
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

impl NamedTemplate {
    /// Parses, compiles and checks one template; `None` (with its problems recorded) when it
    /// cannot be used.
    fn load(
        name: &str,
        text: &str,
        settings: &Settings,
        problems: &mut Problems,
        warnings: &mut Vec<String>,
    ) -> Option<NamedTemplate> {
        let key = template_key(name);
        let mut doc = match crate::yaml::from_str::<Value>(text) {
            Ok(Value::Null) => Value::Object(Default::default()),
            Ok(v @ Value::Object(_)) => v,
            Ok(other) => {
                problems.push(format!(
                    "{key}: want a mapping of Pod spec fields, got {other}"
                ));
                return None;
            }
            Err(e) => {
                problems.push(format!("{key}: {e}"));
                return None;
            }
        };
        check_template_keys(&key, &doc, problems);
        let windows = match doc.as_object_mut().and_then(|m| m.remove("os")) {
            None | Some(Value::Null) => false,
            Some(os) => parse_os(&key, &os, problems),
        };
        let hash = template_hash(settings, &doc);
        let before = problems.len();
        let (template, mut template_problems) =
            Template::compile_partial(&key, doc.clone(), &settings.values);
        problems.append(&mut template_problems);
        let mut t = NamedTemplate {
            name: name.to_owned(),
            key,
            doc,
            template,
            prerendered: None,
            hash,
            windows,
        };
        // Render now: the whole fragment when it is static, or against a sample Pod to find
        // the problems of the dynamic parts before a real Pod does.
        let rendered = match t.template.static_value() {
            Some(v) => Ok(v.clone()),
            None => t.template.render(&sample_pod(), "default"),
        };
        let fragment = rendered
            .map_err(|e| vec![e])
            .and_then(|v| Fragment::check(&t.key, v, settings, Some(warnings)));
        match fragment {
            Ok(f) if problems.len() == before => {
                if t.template.is_static() {
                    t.prerendered = Some(f);
                }
                Some(t)
            }
            Ok(_) => None,
            Err(more) => {
                // A field already reported (say, a bad expression) is not reported again.
                let reported: Vec<String> = problems[before..]
                    .iter()
                    .map(|p| problem_field(p).to_owned())
                    .collect();
                let fresh: Vec<String> = more
                    .into_iter()
                    .filter(|p| {
                        let field = problem_field(p);
                        !reported
                            .iter()
                            .any(|r| field.starts_with(r.as_str()) || r.starts_with(field))
                    })
                    .collect();
                problems.extend(fresh);
                None
            }
        }
    }

    /// Renders for one Pod; with `values`, compiled again against them first.
    fn render(
        &self,
        pod: &RawValue,
        namespace: &str,
        settings: &Settings,
        values: Option<&Value>,
    ) -> Result<Fragment, String> {
        let rendered = match values {
            None => self.template.render(pod, namespace)?,
            Some(values) => Template::compile(&self.key, self.doc.clone(), values)
                .map_err(|p| p.join("; "))?
                .render(pod, namespace)?,
        };
        Fragment::check(&self.key, rendered, settings, None).map_err(|p| p.join("; "))
    }
}

/// `os: [linux, windows]`: true when windows is listed.
fn parse_os(key: &str, os: &Value, problems: &mut Problems) -> bool {
    let Some(list) = os.as_array() else {
        problems.push(format!(
            "{key}: os: want a list of linux, windows; got {os}"
        ));
        return false;
    };
    let mut windows = false;
    for (i, v) in list.iter().enumerate() {
        match v.as_str() {
            Some("linux") => {}
            Some("windows") => windows = true,
            _ => problems.push(format!("{key}: os[{i}]: {v} is not linux or windows")),
        }
    }
    windows
}

/// Joins the fragments of several templates, in order. A name two templates add with the
/// same definition is added once; with two definitions it is a conflict.
fn merge_fragments<'f>(
    parts: Vec<(&str, Cow<'f, Fragment>)>,
) -> Result<Cow<'f, Fragment>, FragmentError> {
    if parts.len() <= 1 {
        return Ok(parts
            .into_iter()
            .next()
            .map(|(_, f)| f)
            .unwrap_or_else(|| Cow::Owned(Fragment::default())));
    }
    let mut out = Fragment::default();
    // name -> (template, definition), per kind of name
    let mut containers: BTreeMap<String, (&str, Value)> = BTreeMap::new();
    let mut others: BTreeMap<(&str, String), (&str, Value)> = BTreeMap::new();
    for (template, f) in &parts {
        for (what, list, into) in [
            (
                "init container",
                &f.init_containers,
                &mut out.init_containers,
            ),
            ("container", &f.containers, &mut out.containers),
        ] {
            for item in list {
                match containers.get(item.name()) {
                    None => {
                        containers.insert(item.name().to_owned(), (template, item.value.clone()));
                        into.push(item.clone());
                    }
                    Some((_, v)) if *v == item.value => {}
                    Some((first, _)) => {
                        return Err(FragmentError::Conflict(format!(
                            "templates {first:?} and {template:?} both add a container named {:?}, with different definitions (as {what} in {template:?})",
                            item.name()
                        )));
                    }
                }
            }
        }
        for (what, list, into) in [
            ("volume", &f.volumes, &mut out.volumes),
            (
                "image pull secret",
                &f.image_pull_secrets,
                &mut out.image_pull_secrets,
            ),
            ("app env var", &f.app_env, &mut out.app_env),
            (
                "app volume mount",
                &f.app_volume_mounts,
                &mut out.app_volume_mounts,
            ),
        ] {
            for item in list {
                match others.get(&(what, item.name().to_owned())) {
                    None => {
                        others.insert(
                            (what, item.name().to_owned()),
                            (template, item.value.clone()),
                        );
                        into.push(item.clone());
                    }
                    Some((_, v)) if *v == item.value => {}
                    Some((first, _)) => {
                        return Err(FragmentError::Conflict(format!(
                            "templates {first:?} and {template:?} both add a {what} named {:?}, with different definitions",
                            item.name()
                        )));
                    }
                }
            }
        }
    }
    Ok(Cow::Owned(out))
}

/// `mutate.yaml: containers[0].image` of `mutate.yaml: containers[0].image: message`.
fn problem_field(problem: &str) -> &str {
    match problem.match_indices(": ").nth(1) {
        Some((i, _)) => &problem[..i],
        None => problem,
    }
}

fn parse_settings(text: &str, problems: &mut Problems) -> Option<Settings> {
    let doc = match crate::yaml::from_str::<Value>(text) {
        Ok(Value::Null) => json!({}),
        Ok(v) => v,
        Err(e) => {
            problems.push(format!("{SETTINGS_KEY}: {e}"));
            return None;
        }
    };
    let settings: Settings = match deserialize_at(SETTINGS_KEY, &FieldPath::default(), doc) {
        Ok(s) => s,
        Err(e) => {
            problems.push(e);
            return None;
        }
    };
    if !settings.values.is_object() {
        problems.push(format!(
            "{SETTINGS_KEY}: values: want a mapping, got {}",
            settings.values
        ));
    }
    if let Some(repo) = settings.image_repository()
        && let Err(e) = image::validate_repository(repo)
    {
        problems.push(format!("{SETTINGS_KEY}: imageRepository: {e}"));
    }
    if settings.repair.max_per_minute == 0 {
        problems.push(format!(
            "{SETTINGS_KEY}: repair.maxPerMinute: must be at least 1"
        ));
    }
    if settings.repair.interval_seconds == 0 {
        problems.push(format!(
            "{SETTINGS_KEY}: repair.intervalSeconds: must be at least 1"
        ));
    }
    for (i, name) in settings.templates.iter().enumerate() {
        if !is_dns_label(name) {
            problems.push(format!(
                "{SETTINGS_KEY}: templates[{i}]: {name:?} is not a template name"
            ));
        }
    }
    if settings.namespace_label.is_empty() {
        problems.push(format!("{SETTINGS_KEY}: namespaceLabel: must not be empty"));
    }
    Some(settings)
}

const TEMPLATE_SECTIONS: [&str; 6] = [
    "os",
    "imagePullSecrets",
    "initContainers",
    "containers",
    "volumes",
    "appContainers",
];

fn check_template_keys(file: &str, doc: &Value, problems: &mut Problems) {
    let Some(map) = doc.as_object() else { return };
    for (k, v) in map {
        if !TEMPLATE_SECTIONS.contains(&k.as_str()) {
            problems.push(format!(
                "{file}: {k}: unknown key (want one of {})",
                TEMPLATE_SECTIONS.join(", ")
            ));
        } else if k == "appContainers" {
            match v.as_object() {
                Some(app) => {
                    for key in app
                        .keys()
                        .filter(|k| !matches!(k.as_str(), "env" | "volumeMounts"))
                    {
                        problems.push(format!(
                            "{file}: appContainers.{key}: unknown key (want env, volumeMounts)"
                        ));
                    }
                }
                None if v.is_null() => {}
                None => problems.push(format!("{file}: appContainers: want a mapping")),
            }
        }
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

fn deserialize_at<T: DeserializeOwned>(file: &str, at: &FieldPath, v: Value) -> Result<T, String> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let inner = e.path().to_string();
        let path = match (at.to_string(), inner.as_str()) {
            (a, ".") => a,
            (a, i) if a.is_empty() => i.to_owned(),
            (a, i) if i.starts_with('[') => format!("{a}{i}"),
            (a, i) => format!("{a}.{i}"),
        };
        if path.is_empty() {
            format!("{file}: {}", e.inner())
        } else {
            format!("{file}: {path}: {}", e.inner())
        }
    })
}

impl Fragment {
    /// Checks a rendered template as the apiserver would check the Pod fields it becomes, and
    /// moves every image under the repository. `warnings` collects what is only worth a look
    /// (load time); per request it is `None`.
    fn check(
        file: &str,
        rendered: Value,
        settings: &Settings,
        warnings: Option<&mut Vec<String>>,
    ) -> Result<Fragment, Problems> {
        let mut problems = Vec::new();
        let section = |key: &str, v: Option<&Value>, problems: &mut Problems| -> Vec<Value> {
            match v {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(a)) => a.clone(),
                Some(other) => {
                    problems.push(format!("{file}: {key}: want a list, got {other}"));
                    Vec::new()
                }
            }
        };
        let app = rendered.get("appContainers");
        let secrets = section(
            "imagePullSecrets",
            rendered.get("imagePullSecrets"),
            &mut problems,
        );
        let mut inits = section(
            "initContainers",
            rendered.get("initContainers"),
            &mut problems,
        );
        let mut containers = section("containers", rendered.get("containers"), &mut problems);
        let volumes = section("volumes", rendered.get("volumes"), &mut problems);
        let env = section(
            "appContainers.env",
            app.and_then(|a| a.get("env")),
            &mut problems,
        );
        let mounts = section(
            "appContainers.volumeMounts",
            app.and_then(|a| a.get("volumeMounts")),
            &mut problems,
        );
        let mut w = Vec::new();
        let root = FieldPath::default();
        check_list::<LocalObjectReference>(
            file,
            &secrets,
            &root.key("imagePullSecrets"),
            &mut problems,
            &mut w,
        );
        check_list::<Container>(
            file,
            &inits,
            &root.key("initContainers"),
            &mut problems,
            &mut w,
        );
        check_list::<Container>(
            file,
            &containers,
            &root.key("containers"),
            &mut problems,
            &mut w,
        );
        check_list::<Volume>(file, &volumes, &root.key("volumes"), &mut problems, &mut w);
        let app = root.key("appContainers");
        check_list::<EnvVar>(file, &env, &app.key("env"), &mut problems, &mut w);
        check_list::<VolumeMount>(
            file,
            &mounts,
            &app.key("volumeMounts"),
            &mut problems,
            &mut w,
        );
        for (key, list) in [("initContainers", &inits), ("containers", &containers)] {
            for (i, c) in list.iter().enumerate() {
                check_container(file, c, &root.key(key).index(i), &mut problems);
            }
        }
        unique_names(
            file,
            inits.iter().chain(&containers),
            "initContainers + containers",
            &mut problems,
        );
        unique_names(file, volumes.iter(), "volumes", &mut problems);
        unique_names(file, secrets.iter(), "imagePullSecrets", &mut problems);
        unique_names(file, env.iter(), "appContainers.env", &mut problems);
        for (i, v) in volumes.iter().enumerate() {
            check_dns_label(file, v, &root.key("volumes").index(i), &mut problems);
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        if let Some(repo) = settings.image_repository() {
            for c in inits.iter_mut().chain(containers.iter_mut()) {
                if let Some(Value::String(img)) = c.get_mut("image") {
                    *img = image::rewrite(img, repo);
                }
            }
        }
        if let Some(out) = warnings {
            out.append(&mut w);
        }
        let items = |v: Vec<Value>| v.into_iter().map(Item::new).collect();
        Ok(Fragment {
            image_pull_secrets: items(secrets),
            init_containers: items(inits),
            containers: containers.into_iter().map(Item::container).collect(),
            volumes: items(volumes),
            app_env: items(env),
            app_volume_mounts: items(mounts),
        })
    }
}

fn check_list<T: DeserializeOwned + serde::Serialize>(
    file: &str,
    items: &[Value],
    at: &FieldPath,
    problems: &mut Problems,
    warnings: &mut Vec<String>,
) {
    for (i, item) in items.iter().enumerate() {
        let path = at.index(i);
        if !item.is_object() {
            problems.push(format!("{file}: {path}: want a mapping, got {item}"));
            continue;
        }
        match item.get("name") {
            Some(Value::String(n)) if !n.is_empty() => {}
            _ => problems.push(format!("{file}: {path}.name: required, a non-empty string")),
        }
        match deserialize_at::<T>(file, &path, item.clone()) {
            Ok(typed) => {
                // Fields the Kubernetes types do not know would be dropped by the apiserver.
                if let Ok(back) = serde_json::to_value(&typed) {
                    unknown_fields(file, item, &back, &path, warnings);
                }
            }
            Err(e) => problems.push(e),
        }
    }
}

fn unknown_fields(
    file: &str,
    original: &Value,
    known: &Value,
    at: &FieldPath,
    warnings: &mut Vec<String>,
) {
    match (original, known) {
        (Value::Object(o), Value::Object(k)) => {
            for (key, v) in o {
                match k.get(key) {
                    None if !v.is_null() => warnings.push(format!(
                        "{file}: {}: unknown field for Kubernetes 1.33; the apiserver may drop it",
                        at.key(key)
                    )),
                    Some(kv) => unknown_fields(file, v, kv, &at.key(key), warnings),
                    None => {}
                }
            }
        }
        (Value::Array(o), Value::Array(k)) => {
            for (i, (ov, kv)) in o.iter().zip(k).enumerate() {
                unknown_fields(file, ov, kv, &at.index(i), warnings);
            }
        }
        _ => {}
    }
}

fn check_container(file: &str, c: &Value, at: &FieldPath, problems: &mut Problems) {
    match c.get("image") {
        Some(Value::String(s)) if !s.trim().is_empty() => {}
        _ => problems.push(format!("{file}: {at}.image: required, a non-empty string")),
    }
    check_dns_label(file, c, at, problems);
    let enum_field = |field: &str, allowed: &[&str], problems: &mut Problems| {
        if let Some(v) = c.get(field).and_then(Value::as_str)
            && !allowed.contains(&v)
        {
            problems.push(format!(
                "{file}: {at}.{field}: {v:?} is not one of {}",
                allowed.join(", ")
            ));
        }
    };
    enum_field(
        "imagePullPolicy",
        &["Always", "IfNotPresent", "Never"],
        problems,
    );
    enum_field("restartPolicy", &["Always"], problems);
}

/// Container and volume names are DNS-1123 labels.
fn check_dns_label(file: &str, item: &Value, at: &FieldPath, problems: &mut Problems) {
    let Some(name) = item.get("name").and_then(Value::as_str) else {
        return;
    };
    if !is_dns_label(name) {
        problems.push(format!(
            "{file}: {at}.name: {name:?} is not a DNS-1123 label (lower-case letters, digits, '-', at most 63)"
        ));
    }
}

fn unique_names<'a>(
    file: &str,
    items: impl Iterator<Item = &'a Value>,
    what: &str,
    problems: &mut Problems,
) {
    let mut seen = std::collections::HashSet::new();
    for name in items.filter_map(|i| i.get("name").and_then(Value::as_str)) {
        if !seen.insert(name) {
            problems.push(format!("{file}: {what}: the name {name:?} appears twice"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(settings: &str, template: &str) -> RawConfig {
        RawConfig::new(Some(settings.to_owned()), template)
    }

    #[test]
    fn the_embedded_default_loads_and_is_prerendered() {
        let c = Config::load(&Source::Embedded, DEFAULT_OWN_NAMESPACE).expect("default loads");
        let f = c
            .fragment(
                &c.default_templates(),
                &PodView::parse(&sample_pod()).unwrap(),
                "x",
                None,
            )
            .unwrap();
        assert!(
            matches!(f, Cow::Borrowed(_)),
            "a values-only template renders once, at load"
        );
        let names: Vec<_> = f.containers.iter().map(|c| c.name()).collect();
        assert_eq!(names, ["bitbucket-pipelines-metrics-collector"]);
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let err = Config::from_raw(
            &raw(
                "policy: sometimes\n",
                "containers:\n- name: c\n  image: x\n  imagePullPolicy: Sometimes\n",
            ),
            "ns",
        )
        .unwrap_err();
        assert_eq!(err.problems.len(), 1, "{err}");
        assert!(
            err.problems[0].starts_with("config.yaml: policy: unknown variant `sometimes`"),
            "{err}"
        );

        let err = Config::from_raw(
            &raw(
                "values: {n: 30}\n",
                "containers:\n- name: c\n  image: x\n  imagePullPolicy: Sometimes\n  env:\n  - name: N\n    value: '{{ values.n }}'\nvolume:\n- name: v\n",
            ),
            "ns",
        )
        .unwrap_err();
        let all = err.to_string();
        assert!(all.contains("mutate.yaml: volume: unknown key"), "{all}");
        // typed checks run once the keys are right
        let err = Config::from_raw(
            &raw(
                "values: {n: 30}\n",
                "containers:\n- name: c\n  image: x\n  imagePullPolicy: Sometimes\n  env:\n  - name: N\n    value: '{{ values.n }}'\n",
            ),
            "ns",
        )
        .unwrap_err();
        let all = err.to_string();
        assert!(
            all.contains("mutate.yaml: containers[0].env[0].value: invalid type: integer `30`"),
            "{all}"
        );
    }

    #[test]
    fn enum_and_name_checks() {
        let err = Config::from_raw(
            &raw(
                "",
                "containers:\n- name: Bad_Name\n  image: x\n  imagePullPolicy: Sometimes\n",
            ),
            "ns",
        )
        .unwrap_err();
        let all = err.to_string();
        assert!(
            all.contains("containers[0].imagePullPolicy: \"Sometimes\" is not one of"),
            "{all}"
        );
        assert!(
            all.contains("containers[0].name: \"Bad_Name\" is not a DNS-1123 label"),
            "{all}"
        );
    }

    #[test]
    fn images_move_under_the_repository_at_load() {
        let c = Config::from_raw(
            &raw(
                "imageRepository: registry.corp/mirror\n",
                "initContainers:\n- {name: i, image: 'busybox:1.36'}\ncontainers:\n- {name: c, image: 'quay.io/a/b:1'}\n",
            ),
            "ns",
        )
        .unwrap();
        let f = c
            .fragment(
                &c.default_templates(),
                &PodView::parse(&sample_pod()).unwrap(),
                "ns",
                None,
            )
            .unwrap();
        assert_eq!(
            f.init_containers[0].value["image"],
            "registry.corp/mirror/library/busybox:1.36"
        );
        assert_eq!(f.containers[0].value["image"], "registry.corp/mirror/a/b:1");
    }

    #[test]
    fn unknown_container_fields_are_warned_about() {
        let c = Config::from_raw(
            &raw(
                "",
                "containers:\n- {name: c, image: x, imagePullPolicyy: Always}\n",
            ),
            "ns",
        )
        .unwrap();
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(c.warnings[0].contains("containers[0].imagePullPolicyy"));
    }

    #[test]
    fn a_configmap_manifest_is_read() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata:\n  mutate.yaml: |\n    volumes:\n    - {name: v, emptyDir: {}}\n";
        let raw = parse_configmap(text).unwrap();
        assert_eq!(raw.settings, None);
        assert!(raw.templates["default"].contains("emptyDir"));
        assert!(
            parse_configmap("kind: Secret\n")
                .unwrap_err()
                .contains("want a ConfigMap")
        );
    }

    #[test]
    fn named_templates_load_and_their_problems_name_their_key() {
        let ok = RawConfig::new(
            Some("templates: [default, apm]\n".into()),
            "containers: [{name: c, image: 'c:1'}]\n",
        )
        .with_template(
            "apm",
            "os: [linux, windows]\ninitContainers: [{name: a, image: 'a:1'}]\n",
        );
        let c = Config::from_raw(&ok, "ns").unwrap();
        assert_eq!(c.templates.keys().collect::<Vec<_>>(), ["apm", "default"]);
        assert!(c.templates["apm"].windows && !c.templates["default"].windows);
        assert_ne!(
            c.template_hash, c.templates["default"].hash,
            "two templates, one combined hash"
        );
        let f = c
            .fragment(
                &c.default_templates(),
                &PodView::parse(&sample_pod()).unwrap(),
                "ns",
                None,
            )
            .unwrap();
        assert!(
            matches!(f, Cow::Borrowed(_)),
            "static templates merge once, at load"
        );
        assert_eq!(f.containers.len() + f.init_containers.len(), 2);

        let bad = RawConfig::new(
            Some("templates: [default, nope, Bad]\n".into()),
            "containers: [{name: c, image: 'c:1'}]\n",
        )
        .with_template("apm", "os: [linux, mac]\ninitContainers: [{name: a}]\n");
        let all = Config::from_raw(&bad, "ns").unwrap_err().to_string();
        for want in [
            "apm.mutate.yaml: os[1]: \"mac\" is not linux or windows",
            "apm.mutate.yaml: initContainers[0].image: required",
            "config.yaml: templates[1]: no template \"nope\" (want a key nope.mutate.yaml)",
            "config.yaml: templates[2]: \"Bad\" is not a template name",
        ] {
            assert!(all.contains(want), "{want} in:\n{all}");
        }
    }

    #[test]
    fn templates_listed_together_must_not_disagree() {
        let raw = RawConfig::new(
            Some("templates: [default, b]\n".into()),
            "volumes: [{name: v, emptyDir: {}}]\n",
        )
        .with_template("b", "volumes: [{name: v, emptyDir: {medium: Memory}}]\n");
        let err = Config::from_raw(&raw, "ns").unwrap_err().to_string();
        assert!(
            err.contains("config.yaml: templates: templates \"default\" and \"b\" both add a volume named \"v\", with different definitions"),
            "{err}"
        );
        // Not listed together by default: loads; the same definition twice is fine.
        let apart = RawConfig::new(None, "volumes: [{name: v, emptyDir: {}}]\n")
            .with_template("b", "volumes: [{name: v, emptyDir: {medium: Memory}}]\n")
            .with_template("c", "volumes: [{name: v, emptyDir: {}}]\n");
        let c = Config::from_raw(&apart, "ns").unwrap();
        let pick = |names: &[&str]| {
            let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
            let t = c.resolve(&names).unwrap();
            c.fragment(&t, &PodView::parse(&sample_pod()).unwrap(), "ns", None)
                .map(|f| f.volumes.len())
        };
        assert_eq!(pick(&["default", "c"]), Ok(1));
        assert!(matches!(
            pick(&["default", "b"]),
            Err(FragmentError::Conflict(_))
        ));
        assert!(
            c.resolve(&["nope".to_owned()])
                .unwrap_err()
                .contains("no template \"nope\"")
        );
    }

    #[test]
    fn a_configmap_with_named_templates_and_a_bad_key() {
        let text = "kind: ConfigMap\ndata:\n  apm.mutate.yaml: 'volumes: []'\n  default.mutate.yaml: 'volumes: []'\n  Bad_Name.mutate.yaml: 'volumes: []'\n  README: hello\n";
        let raw = parse_configmap(text).unwrap();
        assert_eq!(raw.templates.keys().collect::<Vec<_>>(), ["apm"]);
        assert_eq!(raw.key_problems.len(), 2, "{:?}", raw.key_problems);
        let err = Config::from_raw(&raw, "ns").unwrap_err().to_string();
        assert!(
            err.contains("default.mutate.yaml: the default template is the key mutate.yaml"),
            "{err}"
        );
        assert!(
            err.contains("config.yaml: templates[0]: no template \"default\""),
            "{err}"
        );
    }

    #[test]
    fn a_directory_source_reads_every_template_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("mutate.yaml"),
            "volumes: [{name: a, emptyDir: {}}]\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("apm.mutate.yaml"),
            "volumes: [{name: b, emptyDir: {}}]\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
        let source = Source::Path(dir.path().to_owned());
        assert_eq!(source.files().len(), 2);
        let c = Config::load(&source, "ns").unwrap();
        assert_eq!(c.templates.keys().collect::<Vec<_>>(), ["apm", "default"]);
    }
}
