//! Where a configuration comes from, and the raw text of its ConfigMap keys.

use super::*;

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
    /// The embedded default: `manifests/base/config/`.
    pub fn embedded() -> RawConfig {
        RawConfig::new(Some(DEFAULT_SETTINGS.to_owned()), DEFAULT_TEMPLATE)
    }

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
    pub fn add_key(&mut self, key: &str, text: String) {
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
}

/// Reads the keys out of a ConfigMap manifest.
pub fn parse_configmap(text: &str) -> Result<RawConfig, String> {
    let doc: Value = crate::engine::yaml::from_str(text)?;
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
