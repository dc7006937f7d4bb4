//! `serve --config configmap:NAMESPACE/NAME`: the ConfigMap read and watched through the API.
//!
//! A valid change is served as soon as the watch delivers it; an invalid one is refused (the
//! last good config keeps serving), counted in `config_reloads_total{result="failure"}`, and
//! said where `kubectl describe configmap` shows it: a Warning Event on the ConfigMap naming
//! each problem with its path.

use crate::engine::config::{CONFIGMAP_PREFIX, Config, ConfigError, RawConfig};
use anyhow::{Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};

/// Reads the ConfigMap once and loads it.
pub async fn fetch(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    own_namespace: &str,
) -> Result<Config> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let cm = api.get(name).await.map_err(|e| {
        crate::cluster::api_error(
            e,
            &format!("reading ConfigMap {namespace}/{name} (--config {CONFIGMAP_PREFIX}{namespace}/{name})"),
        )
    })?;
    load(&cm, own_namespace).with_context(|| format!("loading ConfigMap {namespace}/{name}"))
}

/// The configuration a ConfigMap object holds.
pub fn load(cm: &ConfigMap, own_namespace: &str) -> Result<Config, ConfigError> {
    let raw = RawConfig::from_data(cm.data.iter().flatten());
    raw.require_template()
        .map_err(|e| ConfigError { problems: vec![e] })?;
    Config::from_raw(&raw, own_namespace)
}

/// The Event that says why a ConfigMap was refused: each problem on its line, within the
/// 1 kB an Event note may hold.
pub fn refusal_note(e: &ConfigError) -> String {
    let mut note = format!(
        "refused; the last good configuration keeps serving. {} problem(s):",
        e.problems.len()
    );
    for p in &e.problems {
        let line = format!("\n{p}");
        if note.len() + line.len() > 1000 {
            note.push_str("\n...");
            break;
        }
        note.push_str(&line);
    }
    note
}

/// Watches the ConfigMap; calls `on_config` with each valid version (the first one too, if
/// it differs from what was loaded at start) and records a Warning Event for each refused
/// one. Runs until the runtime stops.
pub fn watch<F, G>(
    client: kube::Client,
    namespace: String,
    name: String,
    own_namespace: String,
    reporter: Reporter,
    mut on_config: F,
    mut on_refused: G,
) where
    F: FnMut(Config) + Send + 'static,
    G: FnMut(&ConfigError) + Send + 'static,
{
    tokio::spawn(async move {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
        let recorder = Recorder::new(client, reporter);
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let stream = watcher(api, config)
            .backoff(crate::cluster::watch_backoff())
            .applied_objects();
        futures::pin_mut!(stream);
        let mut last_version = None;
        while let Some(item) = stream.next().await {
            let cm = match item {
                Ok(cm) => cm,
                Err(e) => {
                    tracing::warn!(configmap = %name, error = %e, "ConfigMap watch failing (retrying); the current configuration keeps serving");
                    continue;
                }
            };
            // A relist delivers the same version again: nothing changed.
            if cm.resource_version().is_some() && cm.resource_version() == last_version {
                continue;
            }
            last_version = cm.resource_version();
            match load(&cm, &own_namespace) {
                Ok(config) => on_config(config),
                Err(e) => {
                    on_refused(&e);
                    let event = Event {
                        type_: EventType::Warning,
                        reason: "ConfigRefused".into(),
                        note: Some(refusal_note(&e)),
                        action: "Reload".into(),
                        secondary: None,
                    };
                    let reference = cm.object_ref(&());
                    if let Err(err) = recorder.publish(&event, &reference).await {
                        tracing::warn!(configmap = %name, error = %err, "could not record the Event on the ConfigMap");
                    }
                }
            }
        }
    });
}
