//! `propagateSecrets` inside `serve`: every listed Secret of the injector's namespace is kept
//! in every namespace the webhook injects. What to write is the engine's
//! ([`crate::engine::secret_copies::plan`]); this module watches, and writes what it says.
//!
//! Watches, not polling, each restarted with backoff when it fails:
//! - the opted-in namespaces (metadata only, by the namespace label);
//! - each source, in the injector's namespace, by name;
//! - each name's copies in every namespace, by name *and* the managed-by label: the injector
//!   lists no Secret but those names, and receives the data of its own copies only;
//! - each name's Secrets in every namespace, by name, metadata only (no data): which are
//!   someone else's, and when they go.
//!
//! Every replica watches; only the Lease holder writes. A Secret of a listed name that is not
//! ours is never written: it is reported (a Warning Event, the log,
//! `secret_copies{state="foreign"}`), and once it is deleted the copy follows.

use crate::cluster::events::reporter;
use crate::engine::config::Config;
use crate::engine::secret_copies::{self, Action, Observed};
use futures::stream::{BoxStream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, ObjectReference, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, PartialObjectMeta, PostParams, Preconditions};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often everything is compared again even when no watch says a thing changed.
const RESYNC: Duration = Duration::from_secs(30);
/// After a pass with a failed write, the next comes this soon, then twice as late each time
/// up to `RESYNC`. A grant that has just changed (a name added by `helm upgrade`) reaches the
/// apiserver's admission policy a moment after the RBAC: its first writes may be refused.
const RETRY_FIRST: Duration = Duration::from_secs(1);
/// Per listed name: the source, our copies, and every Secret of the name (metadata).
const WATCHES_PER_NAME: usize = 3;
/// How often the live configuration is looked at (in memory) for a change of names or label.
const CONFIG_EVERY: Duration = Duration::from_secs(1);
/// How often copies kept for the Pods that still use them are looked at again: one list of
/// Pods per namespace holding one, so a copy goes within seconds of its last Pod.
const KEPT_EVERY: Duration = Duration::from_secs(3);

/// A copy of a name the configuration no longer lists, kept while a Pod of its namespace
/// uses it (the watches of the new configuration no longer see it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lingering {
    namespace: String,
    name: String,
    uid: Option<String>,
}

/// The copies' standing after a pass of the Lease holder, for `secret_copies{state}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub in_sync: usize,
    /// Copies that could not be written, or are wanted from a source that does not exist.
    pub failing: usize,
    /// Namespaces where a Secret of a listed name is someone else's.
    pub foreign: usize,
    /// Copies no longer wanted that a Pod still uses: kept until none does.
    pub orphaned: usize,
}

/// What the sync reads and reports of the webhook process.
pub struct Handles {
    /// The configuration being served.
    pub config: Box<dyn Fn() -> Arc<Config> + Send + Sync>,
    /// Whether this replica holds the Lease.
    pub leader: Arc<AtomicBool>,
    /// The counts after each pass; `None` when this replica does not write.
    pub report: Box<dyn Fn(Option<Counts>) + Send + Sync>,
}

/// What a watch set depends on: when the configuration changes any of it, the watches start
/// again.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Scope {
    names: Vec<String>,
    label: String,
    own_namespace: String,
}

impl Scope {
    fn of(config: &Config) -> Scope {
        Scope {
            names: config.settings.propagate_secrets.clone(),
            label: config.settings.namespace_label.clone(),
            own_namespace: config.own_namespace.clone(),
        }
    }
}

/// Starts the sync on the current runtime; it runs as long as the process.
pub fn spawn(client: kube::Client, h: Handles) {
    tokio::spawn(async move {
        let mut scope = Scope::of(&(h.config)());
        let mut lingering: Vec<Lingering> = Vec::new();
        loop {
            if scope.names.is_empty() {
                (h.report)(None);
                tokio::time::sleep(CONFIG_EVERY).await;
                if h.leader.load(Ordering::Relaxed) {
                    lingering = let_go(&client, lingering).await;
                }
                scope = Scope::of(&(h.config)());
                continue;
            }
            tracing::info!(
                secrets = scope.names.join(","),
                from = %scope.own_namespace,
                "propagateSecrets: keeping a copy in every namespace labelled {}=enabled",
                scope.label
            );
            let mut copier = Copier::new(client.clone(), scope);
            copier.lingering = lingering;
            scope = copier.run(&h).await;
            lingering = std::mem::take(&mut copier.lingering);
        }
    });
}

/// One watch set and what it has learnt.
struct Copier {
    client: kube::Client,
    scope: Scope,
    namespaces: Store<PartialObjectMeta<Namespace>>,
    sources: Vec<Store<Secret>>,
    copies: Vec<Store<Secret>>,
    /// Every Secret of each name, metadata only.
    named: Vec<Store<PartialObjectMeta<Secret>>>,
    streams: Vec<BoxStream<'static, (usize, Result<bool, String>)>>,
    /// Those a Warning Event went out for (again only once they were gone and came back).
    warned: BTreeSet<(String, String)>,
    missing_said: BTreeSet<String>,
    /// Sources of a type no copy may have that were reported, with that type.
    uncopyable_said: BTreeSet<(String, String)>,
    /// Copies no longer wanted that a Pod still used at the last pass.
    kept: BTreeSet<(String, String)>,
    /// Copies of names no longer listed, kept while a Pod uses them.
    lingering: Vec<Lingering>,
    recorder: Recorder,
}

impl Copier {
    fn new(client: kube::Client, scope: Scope) -> Copier {
        let mut streams = Vec::new();
        let (namespaces, writer) = reflector::store();
        let api: Api<PartialObjectMeta<Namespace>> = Api::all(client.clone());
        let config = watcher::Config::default().labels(&format!("{}=enabled", scope.label));
        streams.push(tagged(
            0,
            reflector::reflector(writer, watcher(api, config))
                .backoff(crate::cluster::watch_backoff()),
        ));
        let mut sources = Vec::new();
        let mut copies = Vec::new();
        let mut named = Vec::new();
        for name in &scope.names {
            let by_name = watcher::Config::default().fields(&format!("metadata.name={name}"));
            let (store, writer) = reflector::store();
            let api: Api<Secret> = Api::namespaced(client.clone(), &scope.own_namespace);
            streams.push(tagged(
                streams.len(),
                reflector::reflector(writer, watcher(api, by_name.clone()))
                    .backoff(crate::cluster::watch_backoff()),
            ));
            sources.push(store);
            let (store, writer) = reflector::store();
            let api: Api<Secret> = Api::all(client.clone());
            let ours = by_name.clone().labels(&secret_copies::selector());
            streams.push(tagged(
                streams.len(),
                reflector::reflector(writer, watcher(api, ours))
                    .backoff(crate::cluster::watch_backoff()),
            ));
            copies.push(store);
            let (store, writer) = reflector::store();
            let api: Api<PartialObjectMeta<Secret>> = Api::all(client.clone());
            streams.push(tagged(
                streams.len(),
                reflector::reflector(writer, watcher(api, by_name))
                    .backoff(crate::cluster::watch_backoff()),
            ));
            named.push(store);
        }
        Copier {
            recorder: Recorder::new(client.clone(), reporter()),
            client,
            scope,
            namespaces,
            sources,
            copies,
            named,
            streams,
            warned: BTreeSet::new(),
            missing_said: BTreeSet::new(),
            uncopyable_said: BTreeSet::new(),
            kept: BTreeSet::new(),
            lingering: Vec::new(),
        }
    }

    /// What watch `i` is, for the log.
    fn describe(&self, i: usize) -> String {
        match i {
            0 => format!("namespaces labelled {}=enabled", self.scope.label),
            i => {
                let name = &self.scope.names[(i - 1) / WATCHES_PER_NAME];
                match (i - 1) % WATCHES_PER_NAME {
                    0 => format!("Secret {}/{name} (the source)", self.scope.own_namespace),
                    1 => format!(
                        "the copies of Secret {name} in every namespace (list, watch on secrets {name})"
                    ),
                    _ => format!(
                        "the Secrets named {name} in every namespace, metadata only (list, watch on secrets {name})"
                    ),
                }
            }
        }
    }

    /// Runs until the configuration changes the scope; returns the new one.
    async fn run(&mut self, h: &Handles) -> Scope {
        let mut events = futures::stream::select_all(std::mem::take(&mut self.streams));
        let mut ready = vec![false; 1 + WATCHES_PER_NAME * self.scope.names.len()];
        let mut failing = vec![false; ready.len()];
        let mut resync = tokio::time::interval(RESYNC);
        let mut look = tokio::time::interval(CONFIG_EVERY);
        let mut kept_tick = tokio::time::interval(KEPT_EVERY);
        let mut dirty = true;
        let mut was_leader = false;
        let mut passes: u64 = 0;
        let mut retry = Retry::default();
        loop {
            tokio::select! {
                _ = retry.due(), if retry.pending() => dirty = true,
                Some((i, event)) = events.next() => {
                    match event {
                        Ok(synced) => {
                            if failing[i] {
                                tracing::info!(watch = self.describe(i), "propagateSecrets: watch recovered");
                                failing[i] = false;
                            }
                            ready[i] |= synced;
                        }
                        Err(e) if !failing[i] => {
                            failing[i] = true;
                            tracing::warn!(watch = self.describe(i), error = %e, "propagateSecrets: watch failing (retrying); check the injector's RBAC (manifests/base/rbac.yaml) or run sidecar-injector doctor");
                        }
                        Err(_) => {}
                    }
                    dirty = true;
                }
                _ = resync.tick() => dirty = true,
                _ = kept_tick.tick(), if !self.kept.is_empty() || !self.lingering.is_empty() => {
                    if h.leader.load(Ordering::Relaxed) {
                        self.lingering = let_go(&self.client, std::mem::take(&mut self.lingering)).await;
                    }
                    dirty = !self.kept.is_empty();
                }
                _ = look.tick() => {
                    let now = Scope::of(&(h.config)());
                    if now != self.scope {
                        self.remove_unlisted(&now, h).await;
                        return now;
                    }
                }
            }
            let leader = h.leader.load(Ordering::Relaxed);
            if !leader {
                if was_leader {
                    (h.report)(None);
                }
                was_leader = false;
                continue;
            }
            if !was_leader {
                dirty = true;
                was_leader = true;
            }
            if dirty && ready.iter().all(|r| *r) {
                dirty = false;
                let config = (h.config)();
                let (counts, failed_writes) = self.pass(&config).await;
                retry.after_pass(failed_writes > 0);
                passes += 1;
                // The e2e tests wait on this count, not on the resync's clock.
                tracing::debug!(passes, "propagateSecrets: pass done");
                (h.report)(Some(counts));
            }
        }
    }

    /// One comparison of every copy with its source, and the writes it calls for; with the
    /// number of writes that failed.
    async fn pass(&mut self, config: &Config) -> (Counts, usize) {
        let namespaces: BTreeSet<String> = self
            .namespaces
            .state()
            .iter()
            .filter(|n| !crate::cluster::namespaces::being_deleted(&n.metadata))
            .filter_map(|n| {
                let name = n.metadata.name.as_deref()?;
                config
                    .injects_namespace(name, crate::cluster::namespaces::context(n).labels)
                    .then(|| name.to_owned())
            })
            .collect();
        let sources: BTreeMap<String, Secret> = self
            .sources
            .iter()
            .flat_map(|s| s.state())
            .filter_map(|s| Some((s.metadata.name.clone()?, (*s).clone())))
            .collect();
        // Someone else's, where a copy is wanted, as the metadata watch has them. A create
        // that meets one the watch has not shown yet fails with 409 and changes nothing; the
        // watch then brings it, and the next pass reports it (no `get` needed, so none granted).
        let existing: BTreeSet<String> = self
            .named
            .iter()
            .flat_map(|s| s.state())
            .filter_map(|m| {
                Some(format!(
                    "{}/{}",
                    m.metadata.namespace.as_deref()?,
                    m.metadata.name.as_deref()?
                ))
            })
            .collect();
        let own = &self.scope.own_namespace.clone();
        let theirs: BTreeSet<(String, String)> = self
            .named
            .iter()
            .flat_map(|s| s.state())
            .filter(|m| !secret_copies::is_ours(&m.metadata, own))
            .filter(|m| !secret_copies::adoptable(&m.metadata, own, &existing))
            .filter_map(|m| Some((m.metadata.namespace.clone()?, m.metadata.name.clone()?)))
            .filter(|(ns, _)| namespaces.contains(ns))
            .collect();
        let foreign = theirs;
        for (ns, name) in &foreign {
            self.report_foreign(ns, name).await;
        }
        let copies: Vec<Secret> = self
            .copies
            .iter()
            .flat_map(|s| s.state())
            .map(|s| (*s).clone())
            .collect();
        let observed = |in_use| Observed {
            names: &self.scope.names,
            own_namespace: &self.scope.own_namespace,
            sources: &sources,
            namespaces: &namespaces,
            copies: &copies,
            foreign: &foreign,
            in_use,
            existing: &existing,
        };
        // The copies the plan would delete: kept instead while a Pod of theirs uses them.
        let none = BTreeSet::new();
        let first = secret_copies::plan(&observed(&none));
        let doomed: BTreeSet<(String, String)> = first
            .actions
            .iter()
            .filter(|a| a.verb() == "delete")
            .map(|a| {
                let (ns, name) = a.namespace_name();
                (ns.to_owned(), name.to_owned())
            })
            .collect();
        let uses = uses(&self.client, &doomed).await;
        let in_use: BTreeSet<(String, String)> = uses.keys().cloned().collect();
        let plan = if in_use.is_empty() {
            first
        } else {
            secret_copies::plan(&observed(&in_use))
        };
        for kept in &plan.kept {
            if !self.kept.contains(kept) {
                let (ns, name) = kept;
                tracing::info!(
                    secret = %format!("{ns}/{name}"),
                    pods = uses.get(kept).copied().unwrap_or_default(),
                    "propagateSecrets: copy kept: Pods of {ns} still use it (their next restart needs it); deleted once none does"
                );
            }
        }
        self.kept = plan.kept.iter().cloned().collect();
        for (at, from) in &plan.adopted {
            tracing::info!(
                secret = %at,
                was_copied_from = %from,
                "propagateSecrets: taking over a copy made by an install that is gone (its source {from} no longer exists): rewritten as a copy of {}",
                secret_copies::source_ref(own, at.rsplit('/').next().unwrap_or_default())
            );
        }
        for name in &plan.missing_sources {
            if self.missing_said.insert(name.clone()) {
                tracing::warn!(
                    source = %secret_copies::source_ref(&self.scope.own_namespace, name),
                    "propagateSecrets: the source Secret does not exist, so no copy of it is made; create it once in {} (sidecar-injector doctor prints the command)",
                    self.scope.own_namespace
                );
            }
        }
        self.missing_said
            .retain(|n| plan.missing_sources.contains(n));
        for (name, kind) in &plan.uncopyable {
            self.report_uncopyable(name, kind).await;
        }
        self.uncopyable_said.retain(|k| plan.uncopyable.contains(k));
        let mut failed = 0;
        for action in plan.actions {
            if !self.write(&action).await {
                failed += 1;
            }
        }
        self.warned.retain(|k| foreign.contains(k));
        let counts = Counts {
            in_sync: plan.in_sync,
            failing: failed
                + (plan.missing_sources.len() + plan.uncopyable.len()) * namespaces.len(),
            foreign: foreign.len(),
            orphaned: plan.kept.len() + self.lingering.len(),
        };
        (counts, failed)
    }

    /// Does one write; false when it failed (a conflict, or a Secret that is not ours, is
    /// not a failure).
    async fn write(&mut self, action: &Action) -> bool {
        let target = action.target();
        let (namespace, name) = action.namespace_name();
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let source = secret_copies::source_ref(&self.scope.own_namespace, name);
        let result = match action {
            Action::Create(secret) => api.create(&PostParams::default(), secret).await.map(|_| ()),
            Action::Update(secret) => api
                .replace(name, &PostParams::default(), secret)
                .await
                .map(|_| ()),
            Action::Delete { uid, .. } => delete_exactly(&api, name, uid).await,
            // Delete, then create: if the create fails, the next pass creates.
            Action::Replace { copy, uid } => match delete_exactly(&api, name, uid).await {
                Ok(()) => api.create(&PostParams::default(), copy).await.map(|_| ()),
                Err(e) => Err(e),
            },
        };
        match result {
            Ok(()) => {
                tracing::info!(secret = %target, %source, "propagateSecrets: copy {}d", action.verb());
                true
            }
            // Changed since the watch saw it (or, for a create, a Secret of that name it has
            // not shown yet: ours, or someone else's): the watch brings it, then a new pass.
            Err(kube::Error::Api(e)) if e.code == 409 => true,
            Err(e) => {
                tracing::warn!(secret = %target, %source, error = %e, "propagateSecrets: could not {} the copy; tried again at the next change or resync", action.verb());
                false
            }
        }
    }

    /// Reports someone else's Secret where a copy is wanted: logged and a Warning Event on
    /// it, once for as long as it stays.
    async fn report_foreign(&mut self, namespace: &str, name: &str) {
        if !self.warned.insert((namespace.to_owned(), name.to_owned())) {
            return;
        }
        let source = secret_copies::source_ref(&self.scope.own_namespace, name);
        tracing::warn!(secret = %format!("{namespace}/{name}"), %source, "propagateSecrets: a Secret of that name is someone else's; left as it is");
        let note = format!(
            "Secret {namespace}/{name} was not made by sidecar-injector, so it is not replaced by a copy of {source}; injected Pods here read this one. To have the copy, delete this Secret; to keep it, nothing to do."
        );
        self.warn_on_secret(namespace, name, "SecretNotOurs", note)
            .await;
    }

    /// Reports a source of a type no copy may have: logged and a Warning Event on the
    /// source, once for as long as it stays so.
    async fn report_uncopyable(&mut self, name: &str, kind: &str) {
        if !self
            .uncopyable_said
            .insert((name.to_owned(), kind.to_owned()))
        {
            return;
        }
        let own = self.scope.own_namespace.clone();
        let source = secret_copies::source_ref(&own, name);
        tracing::warn!(%source, r#type = kind, "propagateSecrets: a source of this type is never copied");
        let note = format!(
            "Secret {source} is of type {kind}, which sidecar-injector never copies: a copy would hand what it grants to every opted-in namespace (SECURITY.md: Secret rights). Copies are made of the types {}; recreate {source} with one of them (kubectl -n {own} create secret generic {name} --from-literal=...), or remove {name} from propagateSecrets.",
            secret_copies::COPYABLE_TYPES.join(", ")
        );
        self.warn_on_secret(&own, name, "SecretNotCopyable", note)
            .await;
    }

    async fn warn_on_secret(&mut self, namespace: &str, name: &str, reason: &str, note: String) {
        let regarding = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Secret".into()),
            namespace: Some(namespace.to_owned()),
            name: Some(name.to_owned()),
            ..Default::default()
        };
        let event = Event {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(note),
            action: "CopySecret".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &regarding).await {
            tracing::debug!(error = %e, reason, "could not record the Event about a Secret");
        }
    }

    /// The names the new configuration no longer lists: their copies are deleted (while
    /// their watch still holds them). Only the Lease holder deletes.
    async fn remove_unlisted(&mut self, now: &Scope, h: &Handles) {
        if !h.leader.load(Ordering::Relaxed) || now.own_namespace != self.scope.own_namespace {
            return;
        }
        let stores = std::mem::take(&mut self.copies);
        for (name, store) in self.scope.names.clone().iter().zip(stores) {
            if now.names.contains(name) {
                continue;
            }
            for copy in store.state() {
                if !secret_copies::is_ours(&copy.metadata, &self.scope.own_namespace) {
                    continue;
                }
                let namespace = copy.metadata.namespace.clone().unwrap_or_default();
                let key = (namespace.clone(), name.clone());
                if uses(&self.client, &BTreeSet::from([key.clone()]))
                    .await
                    .contains_key(&key)
                {
                    tracing::info!(
                        secret = %format!("{namespace}/{name}"),
                        "propagateSecrets: {name} is no longer listed, but Pods of {namespace} still use its copy: kept until none does"
                    );
                    self.lingering.push(Lingering {
                        namespace,
                        name: name.clone(),
                        uid: copy.metadata.uid.clone(),
                    });
                    continue;
                }
                // Not retried: the new watches no longer see this name.
                let api: Api<Secret> = Api::namespaced(self.client.clone(), &namespace);
                let secret = format!("{namespace}/{name}");
                match delete_exactly(&api, name, &copy.metadata.uid).await {
                    Ok(()) => {
                        tracing::info!(%secret, "propagateSecrets: copy deleted: {name} is no longer listed")
                    }
                    Err(e) => {
                        tracing::warn!(%secret, error = %e, "propagateSecrets: could not delete the copy of {name}, which is no longer listed: its grant went with it (the chart keeps it for one release; with manifests/, keep {name} in the delete-only rule a while: docs/configuration.md, dropping a name). Delete it by hand: kubectl -n {namespace} delete secret {name}")
                    }
                }
            }
        }
    }
}

/// When to pass again after failed writes: `RETRY_FIRST`, doubling up to `RESYNC`, until a
/// pass writes everything.
#[derive(Debug, Default)]
struct Retry {
    wait: Option<Duration>,
    at: Option<tokio::time::Instant>,
}

impl Retry {
    fn pending(&self) -> bool {
        self.at.is_some()
    }

    /// Resolves when the retry is due (never when none is pending).
    async fn due(&mut self) {
        match self.at {
            Some(at) => {
                tokio::time::sleep_until(at).await;
                self.at = None;
            }
            None => std::future::pending().await,
        }
    }

    fn after_pass(&mut self, failed: bool) {
        if !failed {
            *self = Retry::default();
            return;
        }
        let wait = self.wait.map_or(RETRY_FIRST, |w| (w * 2).min(RESYNC));
        self.wait = Some(wait);
        self.at = Some(tokio::time::Instant::now() + wait);
    }
}

/// How many Pods use each of `copies` (`(namespace, name)`), of those some Pod uses. One
/// list of Pods per namespace. A namespace whose Pods cannot be listed counts as using all
/// of its copies: a copy is never deleted on a guess.
pub async fn uses(
    client: &kube::Client,
    copies: &BTreeSet<(String, String)>,
) -> BTreeMap<(String, String), usize> {
    let mut by_namespace: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (ns, name) in copies {
        by_namespace.entry(ns).or_default().push(name);
    }
    let mut out = BTreeMap::new();
    for (ns, names) in by_namespace {
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        match pods.list(&ListParams::default()).await {
            Ok(list) => {
                for pod in &list.items {
                    let Some(spec) = &pod.spec else { continue };
                    let used = secret_copies::used_by(spec);
                    for name in names.iter().filter(|n| used.contains(**n)) {
                        *out.entry((ns.to_owned(), (*name).to_owned())).or_default() += 1;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(namespace = ns, error = %e, "propagateSecrets: the Pods cannot be listed, so their copies are kept; check the injector's RBAC (list pods)");
                for name in names {
                    out.insert((ns.to_owned(), (*name).to_owned()), 1);
                }
            }
        }
    }
    out
}

/// Deletes each lingering copy no Pod uses any more; returns those still used.
async fn let_go(client: &kube::Client, lingering: Vec<Lingering>) -> Vec<Lingering> {
    if lingering.is_empty() {
        return lingering;
    }
    let keys: BTreeSet<(String, String)> = lingering
        .iter()
        .map(|l| (l.namespace.clone(), l.name.clone()))
        .collect();
    let used = uses(client, &keys).await;
    let mut still = Vec::new();
    for l in lingering {
        if used.contains_key(&(l.namespace.clone(), l.name.clone())) {
            still.push(l);
            continue;
        }
        let api: Api<Secret> = Api::namespaced(client.clone(), &l.namespace);
        match delete_exactly(&api, &l.name, &l.uid).await {
            Ok(()) => {
                tracing::info!(secret = %format!("{}/{}", l.namespace, l.name), "propagateSecrets: copy deleted: no Pod uses it any more")
            }
            Err(e) => {
                tracing::warn!(secret = %format!("{}/{}", l.namespace, l.name), error = %e, "propagateSecrets: could not delete the copy no Pod uses any more (its name is no longer listed, so its RBAC grant may be gone): delete it by hand")
            }
        }
    }
    still
}

/// Deletes `name` if it is still the object `uid` (a 404 is success: it is gone).
async fn delete_exactly(api: &Api<Secret>, name: &str, uid: &Option<String>) -> kube::Result<()> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(name, &params).await {
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        other => other.map(|_| ()),
    }
}

/// A watch's events as `(i, Ok(synced))`: `synced` once its first listing is complete.
fn tagged<K: Send + 'static>(
    i: usize,
    stream: impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
) -> BoxStream<'static, (usize, Result<bool, String>)> {
    stream
        .map(move |event| {
            (
                i,
                event
                    .map(|e| matches!(e, watcher::Event::InitDone))
                    .map_err(|e| e.to_string()),
            )
        })
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waits(outcomes: &[bool]) -> Vec<Option<Duration>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let _in = rt.enter();
        let mut retry = Retry::default();
        outcomes
            .iter()
            .map(|failed| {
                retry.after_pass(*failed);
                assert_eq!(retry.pending(), *failed);
                retry.wait
            })
            .collect()
    }

    /// A refused write is tried again in a second, not at the 30 s resync; a grant that stays
    /// missing costs a pass every 30 s at most; one pass that writes everything starts over.
    #[test]
    fn failed_writes_are_retried_soon_then_less_often() {
        let s = |n| Some(Duration::from_secs(n));
        assert_eq!(
            waits(&[true, true, true, true, true, true, true]),
            [s(1), s(2), s(4), s(8), s(16), s(30), s(30)]
        );
        assert_eq!(waits(&[true, true, false, true]), [s(1), s(2), None, s(1)]);
        assert_eq!(waits(&[false]), [None]);
    }
}
