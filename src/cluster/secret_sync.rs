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
use k8s_openapi::api::core::v1::{Namespace, ObjectReference, Secret};
use kube::api::{Api, DeleteParams, PartialObjectMeta, PostParams, Preconditions};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often everything is compared again even when no watch says a thing changed: failed
/// writes are retried.
const RESYNC: Duration = Duration::from_secs(30);
/// Per listed name: the source, our copies, and every Secret of the name (metadata).
const WATCHES_PER_NAME: usize = 3;
/// How often the live configuration is looked at (in memory) for a change of names or label.
const CONFIG_EVERY: Duration = Duration::from_secs(1);

/// The copies' standing after a pass of the Lease holder, for `secret_copies{state}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub in_sync: usize,
    /// Copies that could not be written, or are wanted from a source that does not exist.
    pub failing: usize,
    /// Namespaces where a Secret of a listed name is someone else's.
    pub foreign: usize,
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
        loop {
            if scope.names.is_empty() {
                (h.report)(None);
                tokio::time::sleep(CONFIG_EVERY).await;
                scope = Scope::of(&(h.config)());
                continue;
            }
            tracing::info!(
                secrets = scope.names.join(","),
                from = %scope.own_namespace,
                "propagateSecrets: keeping a copy in every namespace labelled {}=enabled",
                scope.label
            );
            scope = Copier::new(client.clone(), scope).run(&h).await;
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
    async fn run(mut self, h: &Handles) -> Scope {
        let mut events = futures::stream::select_all(std::mem::take(&mut self.streams));
        let mut ready = vec![false; 1 + WATCHES_PER_NAME * self.scope.names.len()];
        let mut failing = vec![false; ready.len()];
        let mut resync = tokio::time::interval(RESYNC);
        let mut look = tokio::time::interval(CONFIG_EVERY);
        let mut dirty = true;
        let mut was_leader = false;
        let mut passes: u64 = 0;
        loop {
            tokio::select! {
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
                let counts = self.pass(&config).await;
                passes += 1;
                // The e2e tests wait on this count, not on the resync's clock.
                tracing::debug!(passes, "propagateSecrets: pass done");
                (h.report)(Some(counts));
            }
        }
    }

    /// One comparison of every copy with its source, and the writes it calls for.
    async fn pass(&mut self, config: &Config) -> Counts {
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
        let theirs: BTreeSet<(String, String)> = self
            .named
            .iter()
            .flat_map(|s| s.state())
            .filter(|m| !secret_copies::is_ours(&m.metadata, &self.scope.own_namespace))
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
        let plan = secret_copies::plan(&Observed {
            names: &self.scope.names,
            own_namespace: &self.scope.own_namespace,
            sources: &sources,
            namespaces: &namespaces,
            copies: &copies,
            foreign: &foreign,
        });
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
        Counts {
            in_sync: plan.in_sync,
            failing: failed
                + (plan.missing_sources.len() + plan.uncopyable.len()) * namespaces.len(),
            foreign: foreign.len(),
        }
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
                let action = Action::Delete {
                    namespace: copy.metadata.namespace.clone().unwrap_or_default(),
                    name: name.clone(),
                    uid: copy.metadata.uid.clone(),
                };
                self.write(&action).await;
            }
        }
    }
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
