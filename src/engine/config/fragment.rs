//! A template's rendered fragment (what it adds to a Pod), and joining several of them.

use super::*;
use crate::engine::TOKEN_MOUNT_PATH;
use std::sync::Arc;

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
    /// Containers and init containers that mount nothing at the ServiceAccount token path:
    /// their JSON with the token mount appended, split where the volume's name goes.
    pub token_mount: Option<Arc<TokenMount>>,
}

/// A container's JSON with the ServiceAccount token mount appended, around the volume's
/// name (a JSON string): the name differs per Pod, the rest is written once, at load.
#[derive(Debug)]
pub struct TokenMount {
    before: String,
    after: String,
}

impl TokenMount {
    /// The container mounting `volume` at the token path.
    pub fn with_volume(&self, volume: &str) -> Shared {
        let name = serde_json::to_string(volume).unwrap_or_else(|_| "\"\"".into());
        let mut json = String::with_capacity(self.before.len() + name.len() + self.after.len());
        json.push_str(&self.before);
        json.push_str(&name);
        json.push_str(&self.after);
        Shared::from_json(json)
    }

    /// `None` when the container already mounts something at the token path: the
    /// ServiceAccount plugin leaves such a container alone, and so do we.
    fn of(container: &Value) -> Option<Arc<TokenMount>> {
        let mounts = container.get("volumeMounts").and_then(Value::as_array);
        if mounts
            .into_iter()
            .flatten()
            .any(|m| m.get("mountPath").and_then(Value::as_str) == Some(TOKEN_MOUNT_PATH))
        {
            return None;
        }
        // A placeholder no template can hold (a control character), found again after
        // serializing: everything around it is the same for every Pod.
        const MARK: &str = "\u{1}token-volume\u{1}";
        let mut value = container.clone();
        let mount = json!({"name": MARK, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH});
        match value.get_mut("volumeMounts") {
            Some(Value::Array(list)) => list.push(mount),
            _ => {
                value
                    .as_object_mut()?
                    .insert("volumeMounts".into(), json!([mount]));
            }
        }
        let text = serde_json::to_string(&value).ok()?;
        let mark = serde_json::to_string(MARK).ok()?;
        let (before, after) = text.split_once(&mark)?;
        Some(Arc::new(TokenMount {
            before: before.to_owned(),
            after: after.to_owned(),
        }))
    }
}

impl Item {
    pub(super) fn new(value: Value) -> Item {
        Item {
            json: Shared::new(&value),
            value,
            native: None,
            token_mount: None,
        }
    }

    /// An init container: it may get the token mount.
    pub(super) fn init_container(value: Value) -> Item {
        Item {
            token_mount: TokenMount::of(&value),
            ..Item::new(value)
        }
    }

    pub(super) fn container(value: Value) -> Item {
        let mut native = value.clone();
        if let Value::Object(m) = &mut native {
            m.insert("restartPolicy".into(), Value::String("Always".into()));
        }
        Item {
            native: Some(Box::new(Item::init_container(native))),
            ..Item::init_container(value)
        }
    }

    pub fn name(&self) -> &str {
        self.value
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
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

/// Joins the fragments of several templates, in order. A name two templates add with the
/// same definition is added once; with two definitions it is a conflict.
pub(super) fn merge_fragments<'f>(
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
