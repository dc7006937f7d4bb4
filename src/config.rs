//! The injector's configuration: a ConfigMap (file or mounted directory) turned, once, into a
//! validated and immutable [`Config`]. Requests only read it; reloads replace it whole.

use crate::image;
use crate::patch::Shared;
use crate::template::{FieldPath, Problems, Template};
use k8s_openapi::api::core::v1::{Container, EnvVar, LocalObjectReference, Volume, VolumeMount};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};

/// The two keys of the ConfigMap.
pub const SETTINGS_KEY: &str = "config.yaml";
pub const TEMPLATE_KEY: &str = "mutate.yaml";

/// The embedded default: the Bitbucket Pipelines metrics collector. `manifests/` ships the
/// very same files as its ConfigMap.
pub const DEFAULT_SETTINGS: &str = include_str!("../manifests/base/config/config.yaml");
pub const DEFAULT_TEMPLATE: &str = include_str!("../manifests/base/config/mutate.yaml");

/// The namespace the injector runs in when `POD_NAMESPACE` does not say.
pub const DEFAULT_OWN_NAMESPACE: &str = "sidecar-injector";

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
    #[serde(default = "empty_map")]
    pub values: Value,
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
    template: Template,
    /// The fragment, when nothing in the template depends on the Pod.
    prerendered: Option<Fragment>,
    /// Identifies this configuration in the status annotation and `config_info`.
    pub template_hash: String,
    /// Things worth a look that do not stop the config from loading.
    pub warnings: Vec<String>,
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
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Embedded => f.write_str("the embedded default"),
            Source::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

/// The raw text of the two keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawConfig {
    pub settings: Option<String>,
    pub template: String,
}

impl Source {
    pub fn from_arg(arg: Option<&Path>) -> Source {
        arg.map_or(Source::Embedded, |p| Source::Path(p.to_owned()))
    }

    /// Reads the two keys. A directory is read through its symlinks, as kubelet lays them out.
    pub fn read(&self) -> Result<RawConfig, ConfigError> {
        match self {
            Source::Embedded => Ok(RawConfig {
                settings: Some(DEFAULT_SETTINGS.to_owned()),
                template: DEFAULT_TEMPLATE.to_owned(),
            }),
            Source::Path(p) if p.is_dir() => {
                let read = |key: &str| -> Result<Option<String>, ConfigError> {
                    let file = p.join(key);
                    match std::fs::read_to_string(&file) {
                        Ok(s) => Ok(Some(s)),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                        Err(e) => Err(ConfigError::one(format!("{}: {e}", file.display()))),
                    }
                };
                let template = read(TEMPLATE_KEY)?.ok_or_else(|| {
                    ConfigError::one(format!(
                        "{}: no {TEMPLATE_KEY} in this directory",
                        p.display()
                    ))
                })?;
                Ok(RawConfig {
                    settings: read(SETTINGS_KEY)?,
                    template,
                })
            }
            Source::Path(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| ConfigError::one(format!("{}: {e}", p.display())))?;
                parse_configmap(&text)
                    .map_err(|e| ConfigError::one(format!("{}: {e}", p.display())))
            }
        }
    }
}

/// Reads the two keys out of a ConfigMap manifest.
fn parse_configmap(text: &str) -> Result<RawConfig, String> {
    let doc: Value = crate::yaml::from_str(text)?;
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
    if kind != "ConfigMap" {
        return Err(format!("kind is {kind:?}, want a ConfigMap"));
    }
    let data = doc.get("data").and_then(Value::as_object);
    let key = |k: &str| -> Result<Option<String>, String> {
        match data.and_then(|d| d.get(k)) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(format!("data.{k} is not a string but {other}")),
        }
    };
    let template =
        key(TEMPLATE_KEY)?.ok_or_else(|| format!("the ConfigMap has no data.{TEMPLATE_KEY}"))?;
    Ok(RawConfig {
        settings: key(SETTINGS_KEY)?,
        template,
    })
}

impl Config {
    /// Loads a configuration from its source, as `serve`, `preview` and `validate` all do.
    pub fn load(source: &Source, own_namespace: &str) -> Result<Config, ConfigError> {
        Config::from_raw(&source.read()?, own_namespace)
    }

    /// Parses, validates and pre-renders. Collects every problem rather than stopping at one.
    pub fn from_raw(raw: &RawConfig, own_namespace: &str) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        let settings = parse_settings(raw.settings.as_deref().unwrap_or("{}"), &mut problems);
        let template_doc = match crate::yaml::from_str::<Value>(&raw.template) {
            Ok(Value::Null) => Value::Object(Default::default()),
            Ok(v @ Value::Object(_)) => v,
            Ok(other) => {
                problems.push(format!(
                    "{TEMPLATE_KEY}: want a mapping of Pod spec fields, got {other}"
                ));
                Value::Null
            }
            Err(e) => {
                problems.push(format!("{TEMPLATE_KEY}: {e}"));
                Value::Null
            }
        };
        let (Some(settings), Value::Object(_)) = (settings, &template_doc) else {
            return Err(ConfigError { problems });
        };
        check_template_keys(&template_doc, &mut problems);
        let hash = template_hash(&settings, &template_doc);
        let (template, mut template_problems) =
            Template::compile_partial(TEMPLATE_KEY, template_doc, &settings.values);
        problems.append(&mut template_problems);
        let mut config = Config {
            settings,
            own_namespace: own_namespace.to_owned(),
            template,
            prerendered: None,
            template_hash: hash,
            warnings: Vec::new(),
        };
        // Render now: the whole fragment when it is static, or against a sample Pod to find
        // the problems of the dynamic parts before a real Pod does.
        let rendered = match config.template.static_value() {
            Some(v) => Ok(v.clone()),
            None => config.template.render(&sample_pod(), "default"),
        };
        let fragment = rendered
            .map_err(|e| vec![e])
            .and_then(|v| Fragment::check(v, &config.settings, Some(&mut config.warnings)));
        match fragment {
            Ok(f) if problems.is_empty() => {
                if config.template.is_static() {
                    config.prerendered = Some(f);
                }
            }
            Ok(_) => return Err(ConfigError { problems }),
            Err(more) => {
                // A field already reported (say, a bad expression) is not reported again.
                let reported: Vec<String> = problems
                    .iter()
                    .map(|p| problem_field(p).to_owned())
                    .collect();
                let fresh = more.into_iter().filter(|p| {
                    let field = problem_field(p);
                    !reported
                        .iter()
                        .any(|r| field.starts_with(r.as_str()) || r.starts_with(field))
                });
                problems.extend(fresh);
                return Err(ConfigError { problems });
            }
        }
        Ok(config)
    }

    /// The fragment for one Pod: the pre-rendered one, or a fresh render when the template
    /// reads the Pod or its namespace.
    pub fn fragment(&self, pod: &RawValue, namespace: &str) -> Result<Cow<'_, Fragment>, String> {
        if let Some(f) = &self.prerendered {
            return Ok(Cow::Borrowed(f));
        }
        let rendered = self.template.render(pod, namespace)?;
        Fragment::check(rendered, &self.settings, None)
            .map(Cow::Owned)
            .map_err(|p| p.join("; "))
    }
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
    if settings.namespace_label.is_empty() {
        problems.push(format!("{SETTINGS_KEY}: namespaceLabel: must not be empty"));
    }
    Some(settings)
}

const TEMPLATE_SECTIONS: [&str; 5] = [
    "imagePullSecrets",
    "initContainers",
    "containers",
    "volumes",
    "appContainers",
];

fn check_template_keys(doc: &Value, problems: &mut Problems) {
    let Some(map) = doc.as_object() else { return };
    for (k, v) in map {
        if !TEMPLATE_SECTIONS.contains(&k.as_str()) {
            problems.push(format!(
                "{TEMPLATE_KEY}: {k}: unknown key (want one of {})",
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
                            "{TEMPLATE_KEY}: appContainers.{key}: unknown key (want env, volumeMounts)"
                        ));
                    }
                }
                None if v.is_null() => {}
                None => problems.push(format!("{TEMPLATE_KEY}: appContainers: want a mapping")),
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
    let digest = h.finalize();
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// A plain Pod to render dynamic templates against at load.
fn sample_pod() -> Box<RawValue> {
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
                    problems.push(format!("{TEMPLATE_KEY}: {key}: want a list, got {other}"));
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
            &secrets,
            &root.key("imagePullSecrets"),
            &mut problems,
            &mut w,
        );
        check_list::<Container>(&inits, &root.key("initContainers"), &mut problems, &mut w);
        check_list::<Container>(&containers, &root.key("containers"), &mut problems, &mut w);
        check_list::<Volume>(&volumes, &root.key("volumes"), &mut problems, &mut w);
        let app = root.key("appContainers");
        check_list::<EnvVar>(&env, &app.key("env"), &mut problems, &mut w);
        check_list::<VolumeMount>(&mounts, &app.key("volumeMounts"), &mut problems, &mut w);
        for (key, list) in [("initContainers", &inits), ("containers", &containers)] {
            for (i, c) in list.iter().enumerate() {
                check_container(c, &root.key(key).index(i), &mut problems);
            }
        }
        unique_names(
            inits.iter().chain(&containers),
            "initContainers + containers",
            &mut problems,
        );
        unique_names(volumes.iter(), "volumes", &mut problems);
        unique_names(secrets.iter(), "imagePullSecrets", &mut problems);
        unique_names(env.iter(), "appContainers.env", &mut problems);
        for (i, v) in volumes.iter().enumerate() {
            check_dns_label(v, &root.key("volumes").index(i), &mut problems);
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
    items: &[Value],
    at: &FieldPath,
    problems: &mut Problems,
    warnings: &mut Vec<String>,
) {
    for (i, item) in items.iter().enumerate() {
        let path = at.index(i);
        if !item.is_object() {
            problems.push(format!(
                "{TEMPLATE_KEY}: {path}: want a mapping, got {item}"
            ));
            continue;
        }
        match item.get("name") {
            Some(Value::String(n)) if !n.is_empty() => {}
            _ => problems.push(format!(
                "{TEMPLATE_KEY}: {path}.name: required, a non-empty string"
            )),
        }
        match deserialize_at::<T>(TEMPLATE_KEY, &path, item.clone()) {
            Ok(typed) => {
                // Fields the Kubernetes types do not know would be dropped by the apiserver.
                if let Ok(back) = serde_json::to_value(&typed) {
                    unknown_fields(item, &back, &path, warnings);
                }
            }
            Err(e) => problems.push(e),
        }
    }
}

fn unknown_fields(original: &Value, known: &Value, at: &FieldPath, warnings: &mut Vec<String>) {
    match (original, known) {
        (Value::Object(o), Value::Object(k)) => {
            for (key, v) in o {
                match k.get(key) {
                    None if !v.is_null() => warnings.push(format!(
                        "{TEMPLATE_KEY}: {}: unknown field for Kubernetes 1.33; the apiserver may drop it",
                        at.key(key)
                    )),
                    Some(kv) => unknown_fields(v, kv, &at.key(key), warnings),
                    None => {}
                }
            }
        }
        (Value::Array(o), Value::Array(k)) => {
            for (i, (ov, kv)) in o.iter().zip(k).enumerate() {
                unknown_fields(ov, kv, &at.index(i), warnings);
            }
        }
        _ => {}
    }
}

fn check_container(c: &Value, at: &FieldPath, problems: &mut Problems) {
    match c.get("image") {
        Some(Value::String(s)) if !s.trim().is_empty() => {}
        _ => problems.push(format!(
            "{TEMPLATE_KEY}: {at}.image: required, a non-empty string"
        )),
    }
    check_dns_label(c, at, problems);
    let enum_field = |field: &str, allowed: &[&str], problems: &mut Problems| {
        if let Some(v) = c.get(field).and_then(Value::as_str)
            && !allowed.contains(&v)
        {
            problems.push(format!(
                "{TEMPLATE_KEY}: {at}.{field}: {v:?} is not one of {}",
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
fn check_dns_label(item: &Value, at: &FieldPath, problems: &mut Problems) {
    let Some(name) = item.get("name").and_then(Value::as_str) else {
        return;
    };
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !ok {
        problems.push(format!(
            "{TEMPLATE_KEY}: {at}.name: {name:?} is not a DNS-1123 label (lower-case letters, digits, '-', at most 63)"
        ));
    }
}

fn unique_names<'a>(items: impl Iterator<Item = &'a Value>, what: &str, problems: &mut Problems) {
    let mut seen = std::collections::HashSet::new();
    for name in items.filter_map(|i| i.get("name").and_then(Value::as_str)) {
        if !seen.insert(name) {
            problems.push(format!(
                "{TEMPLATE_KEY}: {what}: the name {name:?} appears twice"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(settings: &str, template: &str) -> RawConfig {
        RawConfig {
            settings: Some(settings.to_owned()),
            template: template.to_owned(),
        }
    }

    #[test]
    fn the_embedded_default_loads_and_is_prerendered() {
        let c = Config::load(&Source::Embedded, DEFAULT_OWN_NAMESPACE).expect("default loads");
        let f = c.fragment(&sample_pod(), "x").unwrap();
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
        let f = c.fragment(&sample_pod(), "ns").unwrap();
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
        assert!(raw.template.contains("emptyDir"));
        assert!(
            parse_configmap("kind: Secret\n")
                .unwrap_err()
                .contains("want a ConfigMap")
        );
    }
}
