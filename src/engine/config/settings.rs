//! `config.yaml`: the settings and the template values, with their defaults.

use super::*;

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
    /// Secrets of the injector's namespace that `serve` keeps a copy of in every namespace it
    /// injects (`propagateSecrets`); absent: none.
    #[serde(default)]
    pub propagate_secrets: Vec<String>,
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

pub(super) fn one() -> u32 {
    1
}
pub(super) fn sixty() -> u64 {
    60
}

impl Settings {
    /// The repository every injected image moves under, when one is set.
    pub fn image_repository(&self) -> Option<&str> {
        Some(self.image_repository.as_str()).filter(|r| !r.is_empty())
    }

    /// Namespaces opt in with `namespaceLabel=enabled`.
    pub fn namespace_opted_in(&self, labels: &BTreeMap<String, String>) -> bool {
        labels.get(&self.namespace_label).map(String::as_str) == Some("enabled")
    }
}

pub(super) fn default_namespace_label() -> String {
    "sidecar-injection".to_owned()
}
pub(super) fn default_never_inject() -> Vec<String> {
    ["kube-system", "kube-public", "kube-node-lease"]
        .map(String::from)
        .to_vec()
}
pub(super) fn default_templates() -> Vec<String> {
    vec![DEFAULT_TEMPLATE_NAME.to_owned()]
}
pub(super) fn empty_map() -> Value {
    json!({})
}

pub(super) fn parse_settings(text: &str, problems: &mut Problems) -> Option<Settings> {
    let doc = match crate::engine::yaml::from_str::<Value>(text) {
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
    for (i, name) in settings.propagate_secrets.iter().enumerate() {
        if !is_dns_subdomain(name) {
            problems.push(format!(
                "{SETTINGS_KEY}: propagateSecrets[{i}]: {name:?} is not a Secret name (lowercase letters, digits, '-' and '.', at most 253)"
            ));
        } else if settings.propagate_secrets[..i].contains(name) {
            problems.push(format!(
                "{SETTINGS_KEY}: propagateSecrets[{i}]: {name:?} is listed twice"
            ));
        }
    }
    if settings.namespace_label.is_empty() {
        problems.push(format!("{SETTINGS_KEY}: namespaceLabel: must not be empty"));
    }
    Some(settings)
}
