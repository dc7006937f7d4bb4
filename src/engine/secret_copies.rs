//! `propagateSecrets`: the copy of each listed Secret that every injected namespace should
//! hold, and what to do to get there. Pure: `cluster::secret_sync` hands in what its
//! watches hold and does what [`plan`] says; `doctor` judges each namespace with [`judge`].
//!
//! A copy is the source's name, type and data, with the label
//! `app.kubernetes.io/managed-by: sidecar-injector` and the annotation
//! `sidecar-injector.io/copied-from: NAMESPACE/NAME`. Nothing else of the source is copied:
//! its labels and annotations may say things meant for its own namespace only (a
//! `kubectl.kubernetes.io/last-applied-configuration` annotation even holds the data). A
//! Secret of the same name without both marks is someone else's and is never written.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{EnvFromSource, EnvVar, PodSpec, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::{BTreeMap, BTreeSet};

/// The label every copy carries (its value is [`MANAGED_BY`]); the copies are watched by it.
pub const MANAGED_BY_KEY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "sidecar-injector";
/// The annotation naming a copy's source, `NAMESPACE/NAME`.
pub const COPIED_FROM_KEY: &str = "sidecar-injector.io/copied-from";

/// The types a copy may have (SECURITY.md: Secret rights). A Secret of another type means
/// something to Kubernetes itself: a `kubernetes.io/service-account-token` Secret is filled
/// in with a ServiceAccount's token by the token controller, a `bootstrap.kubernetes.io/token`
/// one lets a node join. Copying those would hand their power to every opted-in namespace,
/// so a source of such a type is refused (a Warning Event on it), and the policy of
/// `manifests/base/secret-policy.yaml` refuses the injector's writes of them too.
pub const COPYABLE_TYPES: [&str; 6] = [
    "Opaque",
    "kubernetes.io/dockerconfigjson",
    "kubernetes.io/dockercfg",
    "kubernetes.io/tls",
    "kubernetes.io/basic-auth",
    "kubernetes.io/ssh-auth",
];

/// A Secret of this type may be copied.
pub fn copyable(secret: &Secret) -> bool {
    COPYABLE_TYPES.contains(&type_of(secret))
}

/// The label selector of the copies.
pub fn selector() -> String {
    format!("{MANAGED_BY_KEY}={MANAGED_BY}")
}

/// `NAMESPACE/NAME` of a source.
pub fn source_ref(own_namespace: &str, name: &str) -> String {
    format!("{own_namespace}/{name}")
}

/// The copy of `source` that `namespace` should hold.
pub fn copy_of(source: &Secret, own_namespace: &str, namespace: &str) -> Secret {
    let name = source.metadata.name.clone().unwrap_or_default();
    Secret {
        metadata: ObjectMeta {
            annotations: Some(BTreeMap::from([(
                COPIED_FROM_KEY.to_owned(),
                source_ref(own_namespace, &name),
            )])),
            labels: Some(BTreeMap::from([(
                MANAGED_BY_KEY.to_owned(),
                MANAGED_BY.to_owned(),
            )])),
            name: Some(name),
            namespace: Some(namespace.to_owned()),
            ..Default::default()
        },
        type_: source.type_.clone(),
        data: Some(data(source).clone()),
        ..Default::default()
    }
}

/// A copy this injector made from its source `name`: the label and the annotation both say so.
/// A Secret labelled managed-by us but copied from elsewhere (another install of the
/// injector, in another namespace) is not ours. Judged on the metadata alone, so a
/// metadata-only read can be judged too.
pub fn is_ours(meta: &ObjectMeta, own_namespace: &str) -> bool {
    let labelled = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_KEY))
        .is_some_and(|v| v == MANAGED_BY);
    let from = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(COPIED_FROM_KEY));
    labelled
        && from.is_some_and(|f| {
            *f == source_ref(own_namespace, meta.name.as_deref().unwrap_or_default())
        })
}

/// Why a Secret of a listed name is not one of our copies: which of the label and the
/// annotation differs, and how.
pub fn not_ours_because(meta: &ObjectMeta, own_namespace: &str) -> String {
    let label = meta.labels.as_ref().and_then(|l| l.get(MANAGED_BY_KEY));
    let from = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(COPIED_FROM_KEY));
    let want = source_ref(own_namespace, meta.name.as_deref().unwrap_or_default());
    match (label, from) {
        (Some(v), _) if v != MANAGED_BY => {
            format!("labelled {MANAGED_BY_KEY}={v}, not {MANAGED_BY}")
        }
        (None, _) => format!("not labelled {MANAGED_BY_KEY}={MANAGED_BY}"),
        (Some(_), None) => format!(
            "labelled {MANAGED_BY_KEY}={MANAGED_BY}, without the annotation {COPIED_FROM_KEY}"
        ),
        (Some(_), Some(f)) => format!(
            "labelled {MANAGED_BY_KEY}={MANAGED_BY}, but its {COPIED_FROM_KEY} is {f}, not {want} (another install's copy)"
        ),
    }
}

/// The `keys` a Secret does not hold: a Secret we do not own serves the Pods as well as a
/// copy when this is empty.
pub fn lacks(secret: &Secret, keys: &BTreeSet<String>) -> Vec<String> {
    keys.iter()
        .filter(|k| !data(secret).contains_key(*k))
        .cloned()
        .collect()
}

/// A copy another install of the injector made (labelled ours, copied from `X/NAME` in
/// another namespace) whose source no longer exists: that install is gone (uninstalled, or
/// reinstalled here), and this one takes the copy over. While `X/NAME` exists it stays that
/// install's: two live installs never overwrite each other's copies in turn.
/// `existing` holds `NAMESPACE/NAME` of every Secret of the name.
pub fn adoptable(meta: &ObjectMeta, own_namespace: &str, existing: &BTreeSet<String>) -> bool {
    let labelled = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_KEY))
        .is_some_and(|v| v == MANAGED_BY);
    let Some(from) = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(COPIED_FROM_KEY))
    else {
        return false;
    };
    let name = meta.name.as_deref().unwrap_or_default();
    let same_name = from.split_once('/').is_some_and(|(_, n)| n == name);
    labelled && same_name && *from != source_ref(own_namespace, name) && !existing.contains(from)
}

static NO_DATA: BTreeMap<String, ByteString> = BTreeMap::new();

fn data(secret: &Secret) -> &BTreeMap<String, ByteString> {
    secret.data.as_ref().unwrap_or(&NO_DATA)
}

fn type_of(secret: &Secret) -> &str {
    secret.type_.as_deref().unwrap_or("Opaque")
}

/// The copy holds what the source holds: the same type and the same data.
pub fn in_sync(copy: &Secret, source: &Secret) -> bool {
    type_of(copy) == type_of(source) && data(copy) == data(source)
}

/// One write.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// A namespace without its copy.
    Create(Secret),
    /// A copy that differs from its source; `resource_version` is the copy's, so a write
    /// racing another fails rather than overwrites.
    Update(Secret),
    /// A copy whose source changed its `type`, which the API never lets an update change:
    /// the copy (`uid`, deleted only if it is still that object) is deleted, then the
    /// new one created. Pods already running keep the data they mounted.
    Replace { copy: Secret, uid: Option<String> },
    /// A copy no longer wanted: its namespace is no longer injected or its name no longer
    /// listed. The uid is the copy's (deleted only if it is still that object).
    Delete {
        namespace: String,
        name: String,
        uid: Option<String>,
    },
}

impl Action {
    /// The namespace and name of the copy it writes.
    pub fn namespace_name(&self) -> (&str, &str) {
        match self {
            Action::Create(s) | Action::Update(s) | Action::Replace { copy: s, .. } => (
                s.metadata.namespace.as_deref().unwrap_or_default(),
                s.metadata.name.as_deref().unwrap_or_default(),
            ),
            Action::Delete {
                namespace, name, ..
            } => (namespace, name),
        }
    }

    /// `NAMESPACE/NAME` of the copy it writes.
    pub fn target(&self) -> String {
        let (namespace, name) = self.namespace_name();
        format!("{namespace}/{name}")
    }

    pub fn verb(&self) -> &'static str {
        match self {
            Action::Create(_) => "create",
            Action::Update(_) => "update",
            Action::Replace { .. } => "replace",
            Action::Delete { .. } => "delete",
        }
    }
}

/// What the watches hold, handed to [`plan`].
pub struct Observed<'a> {
    /// `propagateSecrets`.
    pub names: &'a [String],
    pub own_namespace: &'a str,
    /// The listed Secrets of the injector's namespace that exist, by name.
    pub sources: &'a BTreeMap<String, Secret>,
    /// The namespaces the webhook injects (and that are not being deleted).
    pub namespaces: &'a BTreeSet<String>,
    /// Every Secret labelled managed-by sidecar-injector with a listed name, anywhere.
    pub copies: &'a [Secret],
    /// `(namespace, name)` where a Secret of that name exists that is not ours: creating it
    /// failed with AlreadyExists.
    pub foreign: &'a BTreeSet<(String, String)>,
    /// `(namespace, name)` of the Secrets some Pod of that namespace uses ([`used_by`]), for
    /// the namespaces of copies no longer wanted at least.
    pub in_use: &'a BTreeSet<(String, String)>,
    /// `NAMESPACE/NAME` of every Secret of a listed name that exists: whether another
    /// install's source is still there ([`adoptable`]).
    pub existing: &'a BTreeSet<String>,
}

/// The Secrets a Pod uses, by name: in env (`secretKeyRef`), `envFrom`, volumes (`secret`,
/// and `projected` sources), and `imagePullSecrets`, of every kind of container. A copy one
/// of them names is one its next restart needs.
pub fn used_by(spec: &PodSpec) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut from_env = |env: &Option<Vec<EnvVar>>, env_from: &Option<Vec<EnvFromSource>>| {
        for e in env.iter().flatten() {
            if let Some(r) = e
                .value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref())
            {
                out.insert(r.name.clone());
            }
        }
        for e in env_from.iter().flatten() {
            if let Some(r) = &e.secret_ref {
                out.insert(r.name.clone());
            }
        }
    };
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        from_env(&c.env, &c.env_from);
    }
    for c in spec.ephemeral_containers.iter().flatten() {
        from_env(&c.env, &c.env_from);
    }
    for v in spec.volumes.iter().flatten() {
        if let Some(name) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            out.insert(name);
        }
        for source in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(r) = &source.secret {
                out.insert(r.name.clone());
            }
        }
    }
    for r in spec.image_pull_secrets.iter().flatten() {
        out.insert(r.name.clone());
    }
    out
}

/// The writes that make the copies what they should be, and the counts behind the metric.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// Copies that exist and hold what their source holds.
    pub in_sync: usize,
    /// Copies wanted where a Secret of that name is someone else's.
    pub foreign: usize,
    /// Listed names whose source does not exist: no copy is made, and existing copies are
    /// left as they are (Pods already using them keep working).
    pub missing_sources: Vec<String>,
    /// Sources of a type no copy may have (not in [`COPYABLE_TYPES`]), as `(name, type)`:
    /// no copy is made or changed.
    pub uncopyable: Vec<(String, String)>,
    /// Copies no longer wanted (their namespace opted out, or their name no longer listed)
    /// that a Pod still uses, as `(namespace, name)`: kept until no Pod does, so the next
    /// restart of those Pods does not fail with CreateContainerConfigError.
    pub kept: Vec<(String, String)>,
    /// Copies of a gone install taken over (rewritten as this install's), `NAMESPACE/NAME`
    /// with the source they named.
    pub adopted: Vec<(String, String)>,
}

pub fn plan(o: &Observed<'_>) -> Plan {
    let mut out = Plan::default();
    let mut ours: BTreeMap<(&str, &str), &Secret> = BTreeMap::new();
    // A gone install's copies, wanted here: rewritten as ours (an update, not a delete and
    // create, so a Pod using it never sees it missing).
    let mut adopt: BTreeMap<(&str, &str), &Secret> = BTreeMap::new();
    for copy in o
        .copies
        .iter()
        .filter(|c| adoptable(&c.metadata, o.own_namespace, o.existing))
    {
        let (Some(ns), Some(name)) = (&copy.metadata.namespace, &copy.metadata.name) else {
            continue;
        };
        if o.names.contains(name) && o.namespaces.contains(ns) && ns != o.own_namespace {
            adopt.insert((ns.as_str(), name.as_str()), copy);
        }
    }
    for copy in o
        .copies
        .iter()
        .filter(|c| is_ours(&c.metadata, o.own_namespace))
    {
        let (Some(ns), Some(name)) = (&copy.metadata.namespace, &copy.metadata.name) else {
            continue;
        };
        if ns == o.own_namespace {
            continue;
        }
        if o.names.contains(name) && o.namespaces.contains(ns) {
            ours.insert((ns.as_str(), name.as_str()), copy);
        } else if o.in_use.contains(&(ns.clone(), name.clone())) {
            out.kept.push((ns.clone(), name.clone()));
        } else {
            out.actions.push(Action::Delete {
                namespace: ns.clone(),
                name: name.clone(),
                uid: copy.metadata.uid.clone(),
            });
        }
    }
    for name in o.names {
        let Some(source) = o.sources.get(name) else {
            out.missing_sources.push(name.clone());
            continue;
        };
        if !copyable(source) {
            out.uncopyable
                .push((name.clone(), type_of(source).to_owned()));
            continue;
        }
        for ns in o.namespaces.iter().filter(|ns| *ns != o.own_namespace) {
            if let Some(theirs) = adopt.get(&(ns.as_str(), name.as_str()))
                && !ours.contains_key(&(ns.as_str(), name.as_str()))
            {
                let from = theirs
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(COPIED_FROM_KEY))
                    .cloned()
                    .unwrap_or_default();
                out.adopted.push((format!("{ns}/{name}"), from));
                let mut want = copy_of(source, o.own_namespace, ns);
                want.metadata.resource_version = theirs.metadata.resource_version.clone();
                out.actions.push(if type_of(theirs) == type_of(source) {
                    Action::Update(want)
                } else {
                    Action::Replace {
                        copy: copy_of(source, o.own_namespace, ns),
                        uid: theirs.metadata.uid.clone(),
                    }
                });
                continue;
            }
            match ours.get(&(ns.as_str(), name.as_str())) {
                Some(copy) if in_sync(copy, source) => out.in_sync += 1,
                Some(copy) if type_of(copy) != type_of(source) => {
                    out.actions.push(Action::Replace {
                        copy: copy_of(source, o.own_namespace, ns),
                        uid: copy.metadata.uid.clone(),
                    })
                }
                Some(copy) => {
                    let mut want = copy_of(source, o.own_namespace, ns);
                    want.metadata.resource_version = copy.metadata.resource_version.clone();
                    out.actions.push(Action::Update(want));
                }
                None if o.foreign.contains(&(ns.clone(), name.clone())) => out.foreign += 1,
                None => out
                    .actions
                    .push(Action::Create(copy_of(source, o.own_namespace, ns))),
            }
        }
    }
    out
}

/// How one namespace's Secret of a listed name stands against its source, for `doctor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    InSync,
    Missing,
    /// Ours, but its type or data differ from the source.
    Stale,
    /// A Secret of that name that is not ours: never overwritten.
    Foreign,
}

impl Standing {
    pub fn as_str(self) -> &'static str {
        match self {
            Standing::InSync => "in sync",
            Standing::Missing => "missing",
            Standing::Stale => "stale",
            Standing::Foreign => "foreign",
        }
    }
}

/// The standing of `found` (the namespace's Secret of the source's name, if any).
pub fn judge(found: Option<&Secret>, source: &Secret, own_namespace: &str) -> Standing {
    match found {
        None => Standing::Missing,
        Some(s) if !is_ours(&s.metadata, own_namespace) => Standing::Foreign,
        Some(s) if in_sync(s, source) => Standing::InSync,
        Some(_) => Standing::Stale,
    }
}

#[cfg(test)]
#[path = "secret_copies_tests.rs"]
mod tests;
