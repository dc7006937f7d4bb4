//! A Pod as received, read without materializing it.
//!
//! The object stays the raw JSON the apiserver sent ([`RawValue`]); this borrows from it only
//! the fields injection reads: names, a few annotations and labels, owner kinds, and which
//! lists of the spec exist. Everything else is skipped by the parser, never copied: a 200 KB
//! annotation or a field this program has never heard of costs a scan, and survives untouched
//! because the patch only ever adds.

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::HashMap;

#[derive(Deserialize)]
struct Top<'a> {
    #[serde(borrow, default)]
    metadata: Option<Meta<'a>>,
    #[serde(borrow, default)]
    spec: Option<&'a RawValue>,
}

/// The slow path's view, to say what is wrong with the metadata.
#[derive(Deserialize)]
struct TopRaw<'a> {
    #[serde(borrow, default)]
    metadata: Option<&'a RawValue>,
}

/// The metadata injection reads.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta<'a> {
    #[serde(borrow, default)]
    pub name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub generate_name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub namespace: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub annotations: Option<HashMap<String, &'a RawValue>>,
    #[serde(borrow, default)]
    pub labels: Option<HashMap<String, &'a RawValue>>,
    #[serde(borrow, default)]
    pub owner_references: Option<Vec<OwnerRef<'a>>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerRef<'a> {
    #[serde(borrow, default)]
    pub api_version: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub uid: Option<Cow<'a, str>>,
    #[serde(default)]
    pub controller: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecRaw<'a> {
    #[serde(borrow, default)]
    containers: Option<&'a RawValue>,
    #[serde(borrow, default)]
    init_containers: Option<&'a RawValue>,
    #[serde(borrow, default)]
    ephemeral_containers: Option<&'a RawValue>,
    #[serde(borrow, default)]
    volumes: Option<&'a RawValue>,
    #[serde(borrow, default)]
    image_pull_secrets: Option<&'a RawValue>,
    #[serde(borrow, default)]
    restart_policy: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    node_selector: Option<&'a RawValue>,
    #[serde(borrow, default)]
    os: Option<&'a RawValue>,
    #[serde(borrow, default)]
    affinity: Option<&'a RawValue>,
}

/// An entry of a named list (`containers`, `volumes`, ...): its name and its raw JSON.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    pub name: Cow<'a, str>,
    pub raw: &'a RawValue,
}

impl Entry<'_> {
    /// The entry as a value, to compare it with the template's.
    pub fn value(&self) -> Value {
        serde_json::from_str(self.raw.get()).unwrap_or(Value::Null)
    }
}

#[derive(Deserialize)]
struct Named<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerRaw<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    env: Option<&'a RawValue>,
    #[serde(borrow, default)]
    volume_mounts: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MountRaw<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    mount_path: Option<Cow<'a, str>>,
}

/// One of the Pod's own containers, as `appContainers` merging needs it.
#[derive(Debug)]
pub struct AppContainer<'a> {
    pub name: Cow<'a, str>,
    /// `None` when the container has no env list (absent or null).
    pub env: Option<Vec<Cow<'a, str>>>,
    /// `(name, mountPath)`; `None` when there is no volumeMounts list.
    pub mounts: Option<Vec<(Cow<'a, str>, Cow<'a, str>)>>,
}

/// The spec's lists: `None` when absent or null.
#[derive(Debug, Default)]
pub struct Spec<'a> {
    pub containers: Option<Vec<Entry<'a>>>,
    pub init_containers: Option<Vec<Entry<'a>>>,
    pub ephemeral_containers: Option<Vec<Entry<'a>>>,
    pub volumes: Option<Vec<Entry<'a>>>,
    pub image_pull_secrets: Option<Vec<Entry<'a>>>,
    pub restart_policy: Option<Cow<'a, str>>,
    /// When the Pod will run on Windows: what says so (`spec.os.name: windows`...).
    pub windows: Option<String>,
}

/// The Pod, borrowed from its raw JSON.
#[derive(Debug)]
pub struct PodView<'a> {
    pub raw: &'a RawValue,
    /// False when the object has no metadata (a Pod template may not).
    pub has_metadata: bool,
    pub meta: Meta<'a>,
    spec: Option<&'a RawValue>,
}

/// What a field was, for messages: "a string", "a list"...
fn kind_of(raw: &RawValue) -> &'static str {
    match raw.get().trim_start().as_bytes().first() {
        Some(b'{') => "a map",
        Some(b'[') => "a list",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

impl<'a> PodView<'a> {
    /// Reads the object's top level and metadata. The error says which field is not what a
    /// Pod has there.
    pub fn parse(raw: &'a RawValue) -> Result<PodView<'a>, String> {
        // (serde's derived structs would also take a JSON array: check the kind first.)
        let not_a_map = || format!("the object is {}, not a map", kind_of(raw));
        if kind_of(raw) != "a map" {
            return Err(not_a_map());
        }
        match serde_json::from_str::<Top<'a>>(raw.get()) {
            Ok(top) => Ok(PodView {
                raw,
                has_metadata: top.metadata.is_some(),
                meta: top.metadata.unwrap_or_default(),
                spec: top.spec,
            }),
            Err(e) => {
                // Only the metadata can fail to read here: say how.
                let top: TopRaw<'_> = serde_json::from_str(raw.get()).map_err(|_| not_a_map())?;
                match top.metadata {
                    Some(m) if kind_of(m) != "a map" => {
                        Err(format!("metadata is {}, not a map", kind_of(m)))
                    }
                    Some(m) => Err(match serde_json::from_str::<Meta<'_>>(m.get()) {
                        Err(inner) => format!("metadata: {inner}"),
                        Ok(_) => format!("metadata: {e}"),
                    }),
                    None => Err(format!("the object: {e}")),
                }
            }
        }
    }

    /// The name, or the generateName of a Pod the apiserver has not named yet.
    pub fn name(&self) -> &str {
        self.meta
            .name
            .as_deref()
            .or(self.meta.generate_name.as_deref())
            .unwrap_or_default()
    }

    pub fn annotations_present(&self) -> bool {
        self.meta.annotations.is_some()
    }

    pub fn annotation(&self, key: &str) -> Option<&'a RawValue> {
        self.meta.annotations.as_ref()?.get(key).copied()
    }

    pub fn label(&self, key: &str) -> Option<&'a RawValue> {
        self.meta.labels.as_ref()?.get(key).copied()
    }

    /// Reads the spec's lists. The error names the field that is not a list of maps.
    pub fn spec(&self) -> Result<Spec<'a>, String> {
        let Some(raw) = self.spec else {
            return Err("the Pod has no spec".into());
        };
        if kind_of(raw) != "a map" {
            return Err(format!("spec is {}, not a map", kind_of(raw)));
        }
        let s: SpecRaw<'a> = serde_json::from_str(raw.get()).map_err(|e| format!("spec: {e}"))?;
        Ok(Spec {
            containers: entries(s.containers, "spec.containers")?,
            init_containers: entries(s.init_containers, "spec.initContainers")?,
            ephemeral_containers: entries(s.ephemeral_containers, "spec.ephemeralContainers")?,
            volumes: entries(s.volumes, "spec.volumes")?,
            image_pull_secrets: entries(s.image_pull_secrets, "spec.imagePullSecrets")?,
            windows: runs_on_windows(s.os, s.node_selector, s.affinity),
            restart_policy: s.restart_policy,
        })
    }
}

fn list<'a>(raw: Option<&'a RawValue>, field: &str) -> Result<Option<Vec<&'a RawValue>>, String> {
    match raw {
        None => Ok(None),
        Some(r) => serde_json::from_str::<Vec<&'a RawValue>>(r.get())
            .map(Some)
            .map_err(|_| format!("{field} is {}, not a list", kind_of(r))),
    }
}

/// A list of maps read as `T` each; `None` when the list is absent or null.
fn items<'a, T: Deserialize<'a>>(
    raw: Option<&'a RawValue>,
    field: &str,
) -> Result<Option<Vec<T>>, String> {
    let Some(list) = list(raw, field)? else {
        return Ok(None);
    };
    list.into_iter()
        .enumerate()
        .map(|(i, r)| serde_json::from_str::<T>(r.get()).map_err(|e| format!("{field}[{i}]: {e}")))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn entries<'a>(raw: Option<&'a RawValue>, field: &str) -> Result<Option<Vec<Entry<'a>>>, String> {
    let Some(items) = list(raw, field)? else {
        return Ok(None);
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, raw)| {
            if kind_of(raw) != "a map" {
                return Err(format!("{field}[{i}] is {}, not a map", kind_of(raw)));
            }
            let named: Named<'a> =
                serde_json::from_str(raw.get()).map_err(|e| format!("{field}[{i}]: {e}"))?;
            Ok(Entry {
                name: named.name.unwrap_or_default(),
                raw,
            })
        })
        .collect::<Result<Vec<_>, String>>()
        .map(Some)
}

impl<'a> Entry<'a> {
    /// Reads a container's env names and mounts.
    pub fn app_container(&self, at: &str) -> Result<AppContainer<'a>, String> {
        let c: ContainerRaw<'a> =
            serde_json::from_str(self.raw.get()).map_err(|e| format!("{at}: {e}"))?;
        let env = items::<Named<'a>>(c.env, &format!("{at}.env"))?
            .map(|v| v.into_iter().map(|n| n.name.unwrap_or_default()).collect());
        let mounts =
            items::<MountRaw<'a>>(c.volume_mounts, &format!("{at}.volumeMounts"))?.map(|v| {
                v.into_iter()
                    .map(|m| (m.name.unwrap_or_default(), m.mount_path.unwrap_or_default()))
                    .collect()
            });
        Ok(AppContainer {
            name: c.name.unwrap_or_default(),
            env,
            mounts,
        })
    }
}

/// The node label that names a node's operating system.
const OS_LABEL: &str = "kubernetes.io/os";

/// Why the Pod can only run on Windows nodes, if it can only: `spec.os.name`, the
/// `kubernetes.io/os` node selector, or a required node affinity every term of which asks
/// for Windows. Fields of an unexpected shape say nothing (the apiserver judges them).
fn runs_on_windows(
    os: Option<&RawValue>,
    node_selector: Option<&RawValue>,
    affinity: Option<&RawValue>,
) -> Option<String> {
    let read = |raw: Option<&RawValue>| -> Value {
        raw.and_then(|r| serde_json::from_str(r.get()).ok())
            .unwrap_or(Value::Null)
    };
    if read(os).get("name").and_then(Value::as_str) == Some("windows") {
        return Some("spec.os.name: windows".into());
    }
    if read(node_selector).get(OS_LABEL).and_then(Value::as_str) == Some("windows") {
        return Some(format!("spec.nodeSelector {OS_LABEL}: windows"));
    }
    let affinity = read(affinity);
    let terms = affinity
        .pointer("/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
        .and_then(Value::as_array)?;
    let windows_only = |term: &Value| {
        term.get("matchExpressions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|e| {
                let values: Vec<&str> = e
                    .get("values")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                e.get("key").and_then(Value::as_str) == Some(OS_LABEL)
                    && e.get("operator").and_then(Value::as_str) == Some("In")
                    && !values.is_empty()
                    && values.iter().all(|v| *v == "windows")
            })
    };
    (!terms.is_empty() && terms.iter().all(windows_only))
        .then(|| format!("a required node affinity on {OS_LABEL} In [windows]"))
}

/// A string annotation or label value; `None` when it is not a string.
pub fn string_value(raw: &RawValue) -> Option<String> {
    serde_json::from_str(raw.get()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    #[test]
    fn reads_only_what_it_needs_and_borrows_names() {
        let r = raw(
            r#"{"metadata":{"name":"p","annotations":{"a/b":"x","big":"yyyyyyyy"},"futureField":[1]},
                "spec":{"containers":[{"name":"app","env":[{"name":"E"}],"volumeMounts":[{"name":"v","mountPath":"/v"}],"zzz":{}}],"volumes":null}}"#,
        );
        let pod = PodView::parse(&r).unwrap();
        assert_eq!(pod.name(), "p");
        assert_eq!(
            string_value(pod.annotation("a/b").unwrap()).as_deref(),
            Some("x")
        );
        let spec = pod.spec().unwrap();
        assert!(spec.volumes.is_none(), "null is absent");
        let c = &spec.containers.as_ref().unwrap()[0];
        assert_eq!(c.name, "app");
        let app = c.app_container("spec.containers[0]").unwrap();
        assert_eq!(app.env.unwrap(), vec!["E"]);
        assert_eq!(app.mounts.unwrap(), vec![(Cow::from("v"), Cow::from("/v"))]);
    }

    #[test]
    fn wrong_shapes_are_named() {
        let r = raw(r#"{"spec":{"volumes":"oops"}}"#);
        assert_eq!(
            PodView::parse(&r).unwrap().spec().unwrap_err(),
            "spec.volumes is a string, not a list"
        );
        let r = raw(r#"{"spec":{"containers":[3]}}"#);
        assert_eq!(
            PodView::parse(&r).unwrap().spec().unwrap_err(),
            "spec.containers[0] is a number, not a map"
        );
        let r = raw(r#"{"spec":"x"}"#);
        assert_eq!(
            PodView::parse(&r).unwrap().spec().unwrap_err(),
            "spec is a string, not a map"
        );
        assert_eq!(
            PodView::parse(&raw("[1]")).unwrap_err(),
            "the object is a list, not a map"
        );
    }
}
