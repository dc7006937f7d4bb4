//! The namespace cache: each namespace's labels and annotations, from a metadata-only watch
//! (no namespace bodies are kept), handed to the engine as data.
//!
//! A namespace the cache has not seen yet (created a moment ago) is read from the API once,
//! with a short timeout; if that fails too, the request goes on without namespace context,
//! as it would with no API access at all.

use crate::engine::NamespaceContext;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long a request may wait for a namespace the cache does not hold.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(1);

static EMPTY: BTreeMap<String, String> = BTreeMap::new();

/// One namespace's metadata, as the cache holds it.
pub type NamespaceMeta = Arc<PartialObjectMeta<Namespace>>;

/// The one rule for a namespace being deleted, for every door (the copies, doctor): its
/// `deletionTimestamp` is set. Its status phase `Terminating` follows from that, and a
/// metadata-only read (the copies' watch) has no status to look at.
pub fn being_deleted(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> bool {
    meta.deletion_timestamp.is_some()
}

/// The engine's view of a namespace's metadata.
pub fn context(ns: &PartialObjectMeta<Namespace>) -> NamespaceContext<'_> {
    NamespaceContext {
        labels: ns.metadata.labels.as_ref().unwrap_or(&EMPTY),
        annotations: ns.metadata.annotations.as_ref().unwrap_or(&EMPTY),
    }
}

/// Every namespace's labels and annotations, kept current by a watch.
#[derive(Clone)]
pub struct Namespaces {
    store: Store<PartialObjectMeta<Namespace>>,
    /// Metadata-only requests: kube asks for `PartialObjectMetadata`.
    api: Api<PartialObjectMeta<Namespace>>,
    /// The watch is synced and not failing: only then is a miss worth an API call (with the
    /// API unreachable, a request must not wait for it).
    healthy: Arc<AtomicBool>,
}

impl Namespaces {
    /// Starts the watch (on the current tokio runtime); it retries with backoff forever, and
    /// logs when it fails and when it recovers.
    pub fn watch(client: kube::Client) -> Namespaces {
        let api: Api<PartialObjectMeta<Namespace>> = Api::all(client);
        let (store, writer) = reflector::store();
        let stream = reflector::reflector(writer, watcher(api.clone(), watcher::Config::default()))
            .backoff(crate::cluster::watch_backoff());
        let healthy = Arc::new(AtomicBool::new(false));
        let health = healthy.clone();
        tokio::spawn(async move {
            let mut failing = false;
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Err(e) if !failing => {
                        failing = true;
                        health.store(false, Ordering::Relaxed);
                        tracing::warn!(error = %e, "namespace watch failing (retrying); requests go on without namespace context where the cache has none");
                    }
                    Err(e) => tracing::debug!(error = %e, "namespace watch still failing"),
                    Ok(watcher::Event::InitDone) => {
                        failing = false;
                        health.store(true, Ordering::Relaxed);
                        tracing::info!("namespace cache synced");
                    }
                    // The watcher says Init as it *starts* a relist, before any call to
                    // the API: no sign of health yet (it was logged as a recovery, and let
                    // requests wait on lookups of an API still down).
                    Ok(watcher::Event::Init) => {}
                    Ok(_) if failing => {
                        failing = false;
                        health.store(true, Ordering::Relaxed);
                        tracing::info!("namespace watch recovered");
                    }
                    Ok(_) => {}
                }
            }
        });
        Namespaces {
            store,
            api,
            healthy,
        }
    }

    /// The namespace's metadata: from the cache, else from the API; `None` when neither
    /// knows it in time.
    pub async fn get(&self, name: &str) -> Option<NamespaceMeta> {
        if name.is_empty() {
            return None;
        }
        if let Some(ns) = self.store.get(&ObjectRef::new(name)) {
            return Some(ns);
        }
        if !self.healthy.load(Ordering::Relaxed) {
            return None;
        }
        match tokio::time::timeout(LOOKUP_TIMEOUT, self.api.get_opt(name)).await {
            Ok(Ok(Some(ns))) => Some(Arc::new(ns)),
            Ok(Ok(None)) => None,
            Ok(Err(e)) => {
                tracing::debug!(namespace = name, error = %e, "namespace lookup failed");
                None
            }
            Err(_) => {
                tracing::debug!(namespace = name, "namespace lookup timed out");
                None
            }
        }
    }

    /// How many namespaces the cache holds.
    pub fn len(&self) -> usize {
        self.store.state().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
