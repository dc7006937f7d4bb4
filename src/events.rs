//! Events for failed injections, where `kubectl describe` users look: a Warning on the Pod's
//! owner (the object of its controller reference, e.g. the ReplicaSet), or on the namespace
//! for a bare Pod (which does not exist yet when it is admitted).
//!
//! Never for dry runs; recorded in the background (admission never waits for it); at most
//! one per owner and reason a minute, so a ReplicaSet failing 1,000 times gives a handful of
//! Events, and kube's recorder folds repeats of the same Event into a series.

use crate::engine::Reason;
use crate::pod::PodView;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most one Event per owner and reason this often.
const EVERY: Duration = Duration::from_secs(60);
/// Past this many remembered owners, the old ones are forgotten.
const REMEMBERED: usize = 10_000;

/// Records Warning Events for injections that failed (or were skipped by Pod Security).
pub struct InjectionEvents {
    recorder: Recorder,
    last: Mutex<HashMap<(String, String, String, Reason), Instant>>,
}

impl InjectionEvents {
    pub fn new(client: kube::Client, reporter: Reporter) -> InjectionEvents {
        InjectionEvents {
            recorder: Recorder::new(client, reporter),
            last: Mutex::new(HashMap::new()),
        }
    }

    /// The object an Event about this Pod goes on.
    pub fn regarding(namespace: &str, pod: &PodView<'_>) -> ObjectReference {
        let owner = pod
            .meta
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true) && o.name.is_some() && o.kind.is_some());
        match owner {
            Some(o) => ObjectReference {
                api_version: o.api_version.as_deref().map(str::to_owned),
                kind: o.kind.as_deref().map(str::to_owned),
                name: o.name.as_deref().map(str::to_owned),
                uid: o.uid.as_deref().map(str::to_owned),
                namespace: Some(namespace.to_owned()),
                ..Default::default()
            },
            None => ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Namespace".into()),
                name: Some(namespace.to_owned()),
                ..Default::default()
            },
        }
    }

    /// Records the Event unless one for the same owner and reason went out within a minute.
    /// Returns whether it was sent (to the background).
    pub fn injection_failed(
        &self,
        namespace: &str,
        pod: &PodView<'_>,
        reason: Reason,
        message: &str,
    ) -> bool {
        let regarding = Self::regarding(namespace, pod);
        let key = (
            namespace.to_owned(),
            regarding.kind.clone().unwrap_or_default(),
            regarding.name.clone().unwrap_or_default(),
            reason,
        );
        {
            let Ok(mut last) = self.last.lock() else {
                return false;
            };
            let now = Instant::now();
            if last
                .get(&key)
                .is_some_and(|t| now.duration_since(*t) < EVERY)
            {
                return false;
            }
            if last.len() >= REMEMBERED {
                last.retain(|_, t| now.duration_since(*t) < EVERY);
            }
            last.insert(key, now);
        }
        let pod_name = pod.name();
        let mut note = format!(
            "Pod {pod_name:?} not injected ({}): {message}",
            reason.as_str()
        );
        if note.len() > 1000 {
            let mut end = 997;
            while !note.is_char_boundary(end) {
                end -= 1;
            }
            note.truncate(end);
            note.push_str("...");
        }
        let event = Event {
            type_: EventType::Warning,
            reason: "SidecarInjectionFailed".into(),
            note: Some(note),
            action: "Inject".into(),
            secondary: None,
        };
        let recorder = self.recorder.clone();
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&event, &regarding).await {
                tracing::debug!(error = %e, "could not record the injection Event");
            }
        });
        true
    }
}
