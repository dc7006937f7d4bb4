//! A Pod as received, read without materializing it.
//!
//! The object stays the raw JSON the apiserver sent ([`RawValue`]); this borrows from it only
//! the fields injection reads: names, a few annotations and labels, owner kinds, and which
//! lists of the spec exist. Everything else is skipped by the parser, never copied: a 200 KB
//! annotation or a field this program has never heard of costs a scan, and survives untouched
//! because the patch only ever adds.

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;

/// The whole object in one pass: what a well-formed Pod reads as. When it does not read so
/// (a field of the wrong shape), [`PodView::parse`] falls back to reading field by field, to
/// say which field is wrong, and reads exactly what this would have where both succeed.
/// Read inside an AdmissionReview as [`PodRead`], in the review's own pass.
#[derive(Deserialize)]
pub struct PodIn<'a> {
    #[serde(borrow, default)]
    metadata: Option<Meta<'a>>,
    #[serde(borrow, default)]
    spec: Option<MapOf<SpecIn<'a>>>,
}

/// The spec's fields injection reads. Its lists are read as `C` (containers) and `L` (the
/// others): typed, in one pass ([`SpecIn`]), or left raw for the field-by-field reader
/// ([`SpecRaw`]); both read the same fields.
#[derive(Deserialize)]
#[serde(
    rename_all = "camelCase",
    bound(deserialize = "C: Deserialize<'de>, L: Deserialize<'de>")
)]
struct SpecOf<'a, C, L> {
    #[serde(default)]
    containers: Option<C>,
    #[serde(default)]
    init_containers: Option<L>,
    #[serde(default)]
    ephemeral_containers: Option<L>,
    #[serde(default)]
    volumes: Option<L>,
    #[serde(default)]
    image_pull_secrets: Option<L>,
    #[serde(borrow, default)]
    restart_policy: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    automount_service_account_token: Option<&'a RawValue>,
    #[serde(borrow, default)]
    node_selector: Option<&'a RawValue>,
    #[serde(borrow, default)]
    os: Option<&'a RawValue>,
    #[serde(borrow, default)]
    affinity: Option<&'a RawValue>,
}

type SpecIn<'a> = SpecOf<'a, Vec<MapOf<ContainerIn<'a>>>, Vec<MapOf<Named<'a>>>>;
type SpecRaw<'a> = SpecOf<'a, &'a RawValue, &'a RawValue>;

/// `T` read from a JSON map only (serde's derived structs would also take a list).
pub struct MapOf<T>(pub T);

/// A Pod read in one pass inside a larger document.
pub type PodRead<'a> = MapOf<PodIn<'a>>;

impl<'de, T: Deserialize<'de>> Deserialize<'de> for MapOf<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Only<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Only<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(Only(PhantomData)).map(MapOf)
    }
}

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
#[derive(Debug, Default, Clone, Deserialize)]
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

#[derive(Debug, Clone, Deserialize)]
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

/// An entry of a named list (`containers`, `volumes`, ...): its name, and where to find its
/// raw JSON when it is needed (rarely: [`PodView::entry_value`]).
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    pub name: Cow<'a, str>,
    /// The spec's field holding the list (`containers`...), and the entry's place in it.
    list: &'static str,
    index: usize,
    /// Set when the list was read field by field (the slow path).
    raw: Option<&'a RawValue>,
    /// What `appContainers` merging reads, when read with the list (`containers` only).
    app: Option<AppContainer<'a>>,
}

#[derive(Deserialize)]
struct Named<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
}

/// What `appContainers` merging reads of a container: its lists typed, in one pass
/// ([`ContainerIn`]), or raw, for the field-by-field reader ([`ContainerRaw`]).
#[derive(Deserialize)]
#[serde(
    rename_all = "camelCase",
    bound(deserialize = "E: Deserialize<'de>, M: Deserialize<'de>")
)]
struct ContainerOf<'a, E, M> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(default)]
    env: Option<E>,
    #[serde(default)]
    volume_mounts: Option<M>,
}

type ContainerRaw<'a> = ContainerOf<'a, &'a RawValue, &'a RawValue>;

type ContainerIn<'a> = ContainerOf<'a, Vec<MapOf<Named<'a>>>, Vec<MapOf<MountRaw<'a>>>>;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MountRaw<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    mount_path: Option<Cow<'a, str>>,
}

/// One of the Pod's own containers, as `appContainers` merging needs it.
#[derive(Debug, Clone)]
pub struct AppContainer<'a> {
    pub name: Cow<'a, str>,
    /// `None` when the container has no env list (absent or null).
    pub env: Option<Vec<Cow<'a, str>>>,
    /// `(name, mountPath)`; `None` when there is no volumeMounts list.
    pub mounts: Option<Vec<(Cow<'a, str>, Cow<'a, str>)>>,
}

/// The spec's lists: `None` when absent or null.
#[derive(Debug, Default, Clone)]
pub struct Spec<'a> {
    pub containers: Option<Vec<Entry<'a>>>,
    pub init_containers: Option<Vec<Entry<'a>>>,
    pub ephemeral_containers: Option<Vec<Entry<'a>>>,
    pub volumes: Option<Vec<Entry<'a>>>,
    pub image_pull_secrets: Option<Vec<Entry<'a>>>,
    pub restart_policy: Option<Cow<'a, str>>,
    /// `spec.automountServiceAccountToken: false`: the ServiceAccount plugin mounts no token.
    pub automount_token_off: bool,
    /// When the Pod will run on Windows: what says so (`spec.os.name: windows`...).
    pub windows: Option<String>,
}

/// The Pod, borrowed from its raw JSON.
#[derive(Debug, Clone)]
pub struct PodView<'a> {
    origin: Origin<'a>,
    /// False when the object has no metadata (a Pod template may not).
    pub has_metadata: bool,
    pub meta: Meta<'a>,
    spec: SpecState<'a>,
}

/// Where the Pod's raw JSON is.
#[derive(Debug, Clone, Copy)]
enum Origin<'a> {
    /// Given as raw JSON.
    Raw(&'a RawValue),
    /// Read inside a larger document (an AdmissionReview) in the same pass; `find` finds it
    /// there again when its raw JSON is needed (rarely: a template that reads the Pod, an
    /// entry to compare).
    Within {
        doc: &'a [u8],
        find: for<'x> fn(&'x [u8]) -> Option<&'x RawValue>,
    },
}

/// The spec as far as it has been read.
#[derive(Debug, Clone)]
enum SpecState<'a> {
    /// Read with the rest of the Pod, in one pass; `None`: the Pod has no spec.
    Read(Option<Spec<'a>>),
    /// Not read yet (the Pod did not read in one pass): [`PodView::spec`] reads it field by
    /// field and names what is wrong.
    Raw(Option<&'a RawValue>),
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

/// Entries read with their list, numbered.
fn numbered<'a, T>(
    list: Option<Vec<MapOf<T>>>,
    key: &'static str,
    read: impl Fn(T) -> (Cow<'a, str>, Option<AppContainer<'a>>),
) -> Option<Vec<Entry<'a>>> {
    list.map(|items| {
        items
            .into_iter()
            .enumerate()
            .map(|(index, MapOf(item))| {
                let (name, app) = read(item);
                Entry {
                    name,
                    list: key,
                    index,
                    raw: None,
                    app,
                }
            })
            .collect()
    })
}

fn named(n: Named<'_>) -> (Cow<'_, str>, Option<AppContainer<'_>>) {
    (n.name.unwrap_or_default(), None)
}

impl<'a> SpecIn<'a> {
    fn into_spec(self) -> Spec<'a> {
        Spec {
            containers: numbered(self.containers, "containers", |c: ContainerIn<'a>| {
                let app = AppContainer {
                    name: c.name.clone().unwrap_or_default(),
                    env: c.env.map(|list| {
                        list.into_iter()
                            .map(|MapOf(n)| n.name.unwrap_or_default())
                            .collect()
                    }),
                    mounts: c.volume_mounts.map(|list| {
                        list.into_iter()
                            .map(|MapOf(m)| {
                                (m.name.unwrap_or_default(), m.mount_path.unwrap_or_default())
                            })
                            .collect()
                    }),
                };
                (c.name.unwrap_or_default(), Some(app))
            }),
            init_containers: numbered(self.init_containers, "initContainers", named),
            ephemeral_containers: numbered(self.ephemeral_containers, "ephemeralContainers", named),
            volumes: numbered(self.volumes, "volumes", named),
            image_pull_secrets: numbered(self.image_pull_secrets, "imagePullSecrets", named),
            windows: runs_on_windows(self.os, self.node_selector, self.affinity),
            automount_token_off: is_false(self.automount_service_account_token),
            restart_policy: self.restart_policy,
        }
    }
}

/// A field that is the JSON `false` (anything else, or nothing, is not).
fn is_false(raw: Option<&RawValue>) -> bool {
    raw.is_some_and(|r| r.get().trim() == "false")
}

impl<'a> PodView<'a> {
    /// Reads the object: in one pass when it is a well-formed Pod, else its top level and
    /// metadata, leaving the spec to [`PodView::spec`]. The error says which field is not what
    /// a Pod has there.
    pub fn parse(raw: &'a RawValue) -> Result<PodView<'a>, String> {
        if let Ok(pod) = serde_json::from_str::<PodRead<'a>>(raw.get()) {
            return Ok(PodView::read(pod, Origin::Raw(raw)));
        }
        Self::parse_by_field(raw)
    }

    /// A Pod read in one pass inside `doc`, where `find` finds its raw JSON again.
    pub fn within(
        pod: PodRead<'a>,
        doc: &'a [u8],
        find: for<'x> fn(&'x [u8]) -> Option<&'x RawValue>,
    ) -> PodView<'a> {
        PodView::read(pod, Origin::Within { doc, find })
    }

    fn read(MapOf(pod): PodRead<'a>, origin: Origin<'a>) -> PodView<'a> {
        PodView {
            origin,
            has_metadata: pod.metadata.is_some(),
            meta: pod.metadata.unwrap_or_default(),
            spec: SpecState::Read(pod.spec.map(|MapOf(s)| s.into_spec())),
        }
    }

    /// The object's raw JSON; `None` only if a document it was read in no longer holds it.
    pub fn raw(&self) -> Option<&'a RawValue> {
        match self.origin {
            Origin::Raw(raw) => Some(raw),
            Origin::Within { doc, find } => find(doc),
        }
    }

    /// The slow path: the top level and metadata, the spec left raw.
    fn parse_by_field(raw: &'a RawValue) -> Result<PodView<'a>, String> {
        // (serde's derived structs would also take a JSON array: check the kind first.)
        let not_a_map = || format!("the object is {}, not a map", kind_of(raw));
        if kind_of(raw) != "a map" {
            return Err(not_a_map());
        }
        match serde_json::from_str::<Top<'a>>(raw.get()) {
            Ok(top) => Ok(PodView {
                origin: Origin::Raw(raw),
                has_metadata: top.metadata.is_some(),
                meta: top.metadata.unwrap_or_default(),
                spec: SpecState::Raw(top.spec),
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

    /// The spec's lists. The error names the field that is not a list of maps.
    pub fn spec(&self) -> Result<Cow<'_, Spec<'a>>, String> {
        let raw = match &self.spec {
            SpecState::Read(Some(spec)) => return Ok(Cow::Borrowed(spec)),
            SpecState::Read(None) | SpecState::Raw(None) => {
                return Err("the Pod has no spec".into());
            }
            SpecState::Raw(Some(raw)) => raw,
        };
        if kind_of(raw) != "a map" {
            return Err(format!("spec is {}, not a map", kind_of(raw)));
        }
        let s: SpecRaw<'a> = serde_json::from_str(raw.get()).map_err(|e| format!("spec: {e}"))?;
        Ok(Cow::Owned(Spec {
            containers: entries(s.containers, "containers")?,
            init_containers: entries(s.init_containers, "initContainers")?,
            ephemeral_containers: entries(s.ephemeral_containers, "ephemeralContainers")?,
            volumes: entries(s.volumes, "volumes")?,
            image_pull_secrets: entries(s.image_pull_secrets, "imagePullSecrets")?,
            windows: runs_on_windows(s.os, s.node_selector, s.affinity),
            automount_token_off: is_false(s.automount_service_account_token),
            restart_policy: s.restart_policy,
        }))
    }

    /// An entry as a value, to compare it with the template's (`null` if it cannot be read).
    pub fn entry_value(&self, entry: &Entry<'a>) -> Value {
        let raw = entry.raw.or_else(|| self.find(entry));
        raw.and_then(|r| serde_json::from_str(r.get()).ok())
            .unwrap_or(Value::Null)
    }

    /// Finds an entry read in one pass again in the raw object.
    fn find(&self, entry: &Entry<'a>) -> Option<&'a RawValue> {
        #[derive(Deserialize)]
        struct TopSpec<'a> {
            /// (Keys as `Cow`: a key written with escapes cannot be borrowed.)
            #[serde(borrow)]
            spec: HashMap<Cow<'a, str>, &'a RawValue>,
        }
        let top: TopSpec<'a> = serde_json::from_str(self.raw()?.get()).ok()?;
        let list = top.spec.get(entry.list)?;
        let items: Vec<&'a RawValue> = serde_json::from_str(list.get()).ok()?;
        items.get(entry.index).copied()
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

/// The spec's list `key` read field by field, each entry keeping its raw JSON.
fn entries<'a>(
    raw: Option<&'a RawValue>,
    key: &'static str,
) -> Result<Option<Vec<Entry<'a>>>, String> {
    let field = format!("spec.{key}");
    let Some(items) = list(raw, &field)? else {
        return Ok(None);
    };
    items
        .into_iter()
        .enumerate()
        .map(|(index, raw)| {
            if kind_of(raw) != "a map" {
                return Err(format!("{field}[{index}] is {}, not a map", kind_of(raw)));
            }
            let named: Named<'a> =
                serde_json::from_str(raw.get()).map_err(|e| format!("{field}[{index}]: {e}"))?;
            Ok(Entry {
                name: named.name.unwrap_or_default(),
                list: key,
                index,
                raw: Some(raw),
                app: None,
            })
        })
        .collect::<Result<Vec<_>, String>>()
        .map(Some)
}

impl<'a> Entry<'a> {
    /// A container's env names and mounts: as read with the list, or read now from its raw
    /// JSON (the slow path, which names what is wrong).
    pub fn app_container(&self, at: &str) -> Result<Cow<'_, AppContainer<'a>>, String> {
        if let Some(app) = &self.app {
            return Ok(Cow::Borrowed(app));
        }
        let Some(raw) = self.raw else {
            return Err(format!("{at}: not read"));
        };
        let c: ContainerRaw<'a> =
            serde_json::from_str(raw.get()).map_err(|e| format!("{at}: {e}"))?;
        let env = items::<Named<'a>>(c.env, &format!("{at}.env"))?
            .map(|v| v.into_iter().map(|n| n.name.unwrap_or_default()).collect());
        let mounts =
            items::<MountRaw<'a>>(c.volume_mounts, &format!("{at}.volumeMounts"))?.map(|v| {
                v.into_iter()
                    .map(|m| (m.name.unwrap_or_default(), m.mount_path.unwrap_or_default()))
                    .collect()
            });
        Ok(Cow::Owned(AppContainer {
            name: c.name.unwrap_or_default(),
            env,
            mounts,
        }))
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
        assert_eq!(app.env.as_deref().unwrap(), ["E"]);
        assert_eq!(
            app.mounts.as_deref().unwrap(),
            [(Cow::from("v"), Cow::from("/v"))]
        );
        assert!(matches!(pod.spec, SpecState::Read(_)), "read in one pass");
        assert_eq!(
            pod.entry_value(c),
            serde_json::json!({"name":"app","env":[{"name":"E"}],"volumeMounts":[{"name":"v","mountPath":"/v"}],"zzz":{}}),
            "an entry read in one pass is found again in the raw object"
        );
    }

    /// What the engine reads of a Pod, to compare the two ways of reading it.
    fn summary(pod: &PodView<'_>) -> String {
        let sorted = |m: &Option<HashMap<String, &RawValue>>| {
            m.as_ref().map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.get().to_owned()))
                    .collect::<std::collections::BTreeMap<_, _>>()
            })
        };
        let m = &pod.meta;
        let mut out = format!(
            "{:?} {:?} {:?} {:?} {:?} {:?} {} {:?}\n",
            m.name,
            m.generate_name,
            m.namespace,
            sorted(&m.annotations),
            sorted(&m.labels),
            m.owner_references,
            pod.has_metadata,
            pod.name()
        );
        match pod.spec() {
            Err(e) => out.push_str(&format!("spec error: {e}\n")),
            Ok(spec) => {
                out.push_str(&format!("{:?} {:?}\n", spec.restart_policy, spec.windows));
                for (list, entries) in [
                    ("containers", &spec.containers),
                    ("initContainers", &spec.init_containers),
                    ("ephemeralContainers", &spec.ephemeral_containers),
                    ("volumes", &spec.volumes),
                    ("imagePullSecrets", &spec.image_pull_secrets),
                ] {
                    out.push_str(&format!("{list}: {}\n", entries.is_some()));
                    for (i, e) in entries.iter().flatten().enumerate() {
                        let app = (list == "containers")
                            .then(|| format!("{:?}", e.app_container(&format!("[{i}]"))));
                        out.push_str(&format!("  {:?} {} {app:?}\n", e.name, pod.entry_value(e)));
                    }
                }
            }
        }
        out
    }

    /// Every Pod the golden cases hold, read in one pass and field by field: the same.
    #[test]
    fn one_pass_reads_what_field_by_field_reads() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
        let mut pods = 0;
        for case in std::fs::read_dir(&dir).unwrap() {
            let case = case.unwrap().path();
            for file in ["pod.yaml", "pod.injected.yaml"] {
                let Ok(text) = std::fs::read_to_string(case.join(file)) else {
                    continue;
                };
                let value: Value = crate::engine::yaml::from_str(&text).unwrap();
                let r = raw(&value.to_string());
                let fast = PodView::parse(&r).unwrap();
                assert!(
                    matches!(fast.spec, SpecState::Read(_)),
                    "{}/{file}: read in one pass",
                    case.display()
                );
                let slow = PodView::parse_by_field(&r).unwrap();
                assert!(matches!(slow.spec, SpecState::Raw(_)));
                assert_eq!(summary(&fast), summary(&slow), "{}/{file}", case.display());
                pods += 1;
            }
        }
        assert!(pods >= 20, "only {pods} Pods in {}", dir.display());
    }

    #[test]
    fn an_entry_is_found_again_whatever_the_spec_s_keys_are_written_with() {
        // `\u0063ontainers` is `containers`; another key needs unescaping too.
        let r = raw(
            r#"{"metadata":{"name":"p"},"spec":{"x\"y":1,"\u0063ontainers":[{"name":"a"},{"name":"b","image":"i"}]}}"#,
        );
        let pod = PodView::parse(&r).unwrap();
        assert!(matches!(pod.spec, SpecState::Read(_)));
        let spec = pod.spec().unwrap();
        let b = &spec.containers.as_ref().unwrap()[1];
        assert_eq!(b.name, "b");
        assert_eq!(
            pod.entry_value(b),
            serde_json::json!({"name": "b", "image": "i"})
        );
    }

    #[test]
    fn a_pod_that_does_not_read_in_one_pass_is_read_field_by_field() {
        // An env list of the wrong shape: the Pod is still read, and only `appContainers`
        // merging, which reads env, says what is wrong.
        let r =
            raw(r#"{"metadata":{"name":"p"},"spec":{"containers":[{"name":"app","env":"oops"}]}}"#);
        let pod = PodView::parse(&r).unwrap();
        assert!(matches!(pod.spec, SpecState::Raw(_)));
        let spec = pod.spec().unwrap();
        let c = &spec.containers.as_ref().unwrap()[0];
        assert_eq!(c.name, "app");
        assert_eq!(
            c.app_container("spec.containers[0]").unwrap_err(),
            "spec.containers[0].env is a string, not a list"
        );
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
