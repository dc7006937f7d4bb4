//! Events for failed injections, where `kubectl describe` users look: a Warning on the Pod's
//! owner (the object of its controller reference, e.g. the ReplicaSet), or on the namespace
//! for a bare Pod (which does not exist yet when it is admitted).
//!
//! Never for dry runs; recorded in the background (admission never waits for it); at most
//! one per owner and reason a minute, so a ReplicaSet failing 1,000 times gives a handful of
//! Events, and kube's recorder folds repeats of the same Event into a series.

use crate::engine::Reason;
use crate::engine::pod::PodView;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most one Event per owner and reason this often.
const EVERY: Duration = Duration::from_secs(60);
/// Past this many remembered owners, the old ones are forgotten.
const REMEMBERED: usize = 10_000;

/// Which Events go out: at most one per key every [`EVERY`].
#[derive(Default)]
pub struct Throttle {
    last: Mutex<HashMap<(String, String, String, Reason), Instant>>,
}

impl Throttle {
    /// True when no Event for `key` went out in the minute before `now` (and remembers it).
    pub fn allow(&self, key: (String, String, String, Reason), now: Instant) -> bool {
        let Ok(mut last) = self.last.lock() else {
            return false;
        };
        if last
            .get(&key)
            .is_some_and(|t| now.saturating_duration_since(*t) < EVERY)
        {
            return false;
        }
        if last.len() >= REMEMBERED {
            last.retain(|_, t| now.saturating_duration_since(*t) < EVERY);
        }
        last.insert(key, now);
        true
    }
}

/// Records Warning Events for injections that failed (or were skipped by Pod Security).
pub struct InjectionEvents {
    recorder: Recorder,
    throttle: Throttle,
}

impl InjectionEvents {
    pub fn new(client: kube::Client, reporter: Reporter) -> InjectionEvents {
        InjectionEvents {
            recorder: Recorder::new(client, reporter),
            throttle: Throttle::default(),
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
        if !self.throttle.allow(key, Instant::now()) {
            return false;
        }
        let pod_name = pod.name();
        let note = clip(format!(
            "Pod {pod_name:?} not injected ({}): {message}",
            reason.as_str()
        ));
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

/// An Event's note cut to fit the API's 1 KiB limit, on a character boundary.
pub fn clip(mut note: String) -> String {
    if note.len() > 1000 {
        let mut end = 997;
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
        note.push_str("...");
    }
    note
}

/// Who the Events this process records say they come from: the controller, and the Pod's
/// name as its instance.
pub fn reporter() -> kube::runtime::events::Reporter {
    kube::runtime::events::Reporter {
        controller: "sidecar-injector".into(),
        instance: std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(owner: &str, reason: Reason) -> (String, String, String, Reason) {
        ("ns".into(), "ReplicaSet".into(), owner.into(), reason)
    }

    #[test]
    fn one_event_per_owner_and_reason_a_minute() {
        let t = Throttle::default();
        let start = Instant::now();
        let sent = (0..1000)
            .filter(|i| {
                t.allow(
                    key("web-1", Reason::Conflict),
                    start + Duration::from_millis(*i * 10),
                )
            })
            .count();
        assert_eq!(sent, 1, "1,000 failures within 10 s: one Event");
        assert!(
            t.allow(key("web-2", Reason::Conflict), start),
            "another owner"
        );
        assert!(
            t.allow(key("web-1", Reason::TemplateError), start),
            "another reason"
        );
        assert!(!t.allow(
            key("web-1", Reason::Conflict),
            start + Duration::from_secs(59)
        ));
        assert!(t.allow(
            key("web-1", Reason::Conflict),
            start + Duration::from_secs(61)
        ));
        // A ReplicaSet failing for an hour: one a minute.
        let t = Throttle::default();
        let hour = (0..3600)
            .filter(|s| {
                t.allow(
                    key("web-1", Reason::Conflict),
                    start + Duration::from_secs(*s),
                )
            })
            .count();
        assert_eq!(hour, 60);
    }

    #[test]
    fn the_event_goes_on_the_controller_owner_or_the_namespace() {
        let raw = serde_json::value::to_raw_value(&serde_json::json!({"metadata": {"name": "p",
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Thing", "name": "not-controller", "uid": "0"},
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": "u1", "controller": true}]}}))
        .unwrap();
        let pod = PodView::parse(&raw).unwrap();
        let r = InjectionEvents::regarding("shop", &pod);
        assert_eq!(
            (
                r.kind.as_deref(),
                r.name.as_deref(),
                r.namespace.as_deref(),
                r.uid.as_deref()
            ),
            (Some("ReplicaSet"), Some("web-1"), Some("shop"), Some("u1"))
        );
        let raw = serde_json::value::to_raw_value(&serde_json::json!({"metadata": {"name": "p"}}))
            .unwrap();
        let r = InjectionEvents::regarding("shop", &PodView::parse(&raw).unwrap());
        assert_eq!(
            (r.kind.as_deref(), r.name.as_deref(), r.namespace.as_deref()),
            (Some("Namespace"), Some("shop"), None)
        );
    }
}
