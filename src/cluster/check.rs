//! `check`: which running Pods missed the sidecar, run an old template, or cannot run what
//! was injected. Rolling their workloads is [`crate::cluster::repair`].
//!
//! The engine is the only judge: a Pod without the status annotation is put to
//! [`engine::decide`] as the Pod it would be if created now, in its namespace as the cluster
//! has it; one with the annotation is compared, template by template, with the live hashes.
//! This module only fetches, groups, prints and rolls.

use crate::cluster::namespaces;
use crate::engine::config::Config;
use crate::engine::{self, NamespaceContext, Outcome, STATUS_KEY, Status};
use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Namespace, Pod};
use kube::api::{Api, ListParams, PartialObjectMeta};
use kube::core::GroupVersionKind;
use kube::core::admission::Operation;
use serde::Serialize;
use serde_json::value::RawValue;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// The annotation repair sets on a workload's Pod template beside `restartedAt`: the
/// template hash it restarted for. The Pods of that rollout carry it, so a Pod still missing
/// or stale with it is one a restart did not fix, and no restart will: repair never loops.
pub const REPAIRED_FOR_KEY: &str = "sidecar-injector.io/repairedFor";

/// A Pod's state against the live configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Injected with the live template(s).
    Current,
    /// Injected with an older template.
    Stale,
    /// Not injected, and the webhook would inject it now.
    Missing,
    /// Not injected, and the webhook would not inject it (with the engine's reason).
    Skipped,
    /// Injected, but an injected container cannot run (the reason names it and kubelet's
    /// reason).
    Failing,
}

impl State {
    pub const ALL: [State; 5] = [
        State::Current,
        State::Stale,
        State::Missing,
        State::Skipped,
        State::Failing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Current => "current",
            State::Stale => "stale",
            State::Missing => "missing",
            State::Skipped => "skipped",
            State::Failing => "failing",
        }
    }
}

/// What `check` says about one Pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodReport {
    pub namespace: String,
    pub pod: String,
    /// `Kind/name` of the workload that owns it (`Pod/name` for a bare Pod).
    pub owner: String,
    pub state: State,
    pub reason: String,
    /// The template hash a repair restarted its workload for ([`REPAIRED_FOR_KEY`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repaired_for: Option<String>,
}

/// Judges one Pod (its JSON as read from the API) in its namespace, for the live config.
pub fn judge(
    pod: &RawValue,
    namespace: &str,
    ns: Option<NamespaceContext<'_>>,
    config: &Config,
) -> (State, String) {
    let view = match crate::engine::pod::PodView::parse(pod) {
        Ok(v) => v,
        Err(e) => return (State::Skipped, format!("invalid_object: {e}")),
    };
    if let Some(raw) = view.annotation(STATUS_KEY) {
        let status = crate::engine::pod::string_value(raw)
            .and_then(|s| serde_json::from_str::<Status>(&s).ok())
            .unwrap_or_default();
        return staleness(&status, config);
    }
    let gvk = GroupVersionKind::gvk("", "v1", "Pod");
    let d = engine::decide(
        &engine::Request {
            operation: Operation::Create,
            kind: &gvk,
            sub_resource: None,
            namespace,
            namespace_labels: ns.map(|n| n.labels),
            namespace_annotations: ns.map(|n| n.annotations),
            namespace_selected: false,
            object: Some(engine::Object::Read(&view)),
            workload_kind: None,
        },
        config,
    );
    match d.outcome() {
        Outcome::Injected => (State::Missing, "the webhook would inject it now".into()),
        _ => (State::Skipped, d.reason.as_str().into()),
    }
}

/// Kubelet's reasons for a container that cannot run.
pub const CANNOT_RUN: [&str; 5] = [
    "CreateContainerConfigError",
    "CreateContainerError",
    "ErrImagePull",
    "ImagePullBackOff",
    "CrashLoopBackOff",
];
/// How long a Pod may wait in ContainerCreating on a failed mount of an injected volume.
pub const MOUNT_GRACE: Duration = Duration::from_secs(60);

/// Why an injected Pod cannot run what was injected, if it cannot: an injected container
/// waiting for one of [`CANNOT_RUN`], or the Pod kept in ContainerCreating for over
/// [`MOUNT_GRACE`] by a failed mount of an injected volume. `failed_mounts` are the messages
/// of the Pod's FailedMount Events; `age`, how long the Pod has existed.
pub fn failing(pod: &Pod, failed_mounts: &[String], age: Duration) -> Option<String> {
    let status = pod
        .metadata
        .annotations
        .as_ref()?
        .get(STATUS_KEY)
        .and_then(|s| serde_json::from_str::<Status>(s).ok())?;
    let pod_status = pod.status.as_ref()?;
    let statuses = pod_status
        .init_container_statuses
        .iter()
        .chain(pod_status.container_statuses.iter())
        .flatten();
    for c in statuses {
        if !status.containers.contains(&c.name) && !status.init_containers.contains(&c.name) {
            continue;
        }
        let Some(waiting) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
            continue;
        };
        let reason = waiting.reason.as_deref().unwrap_or_default();
        if CANNOT_RUN.contains(&reason) {
            // A crash loop says only "back-off": the last exit says why (an init container's
            // `exec format error` is there).
            let last = c
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .and_then(|t| {
                    let m = t.message.as_deref().filter(|m| !m.trim().is_empty())?;
                    Some(format!(
                        "last exit {}: {m}",
                        t.reason.as_deref().unwrap_or("?")
                    ))
                });
            let message = waiting.message.as_deref().filter(|m| !m.trim().is_empty());
            let said = match (message, last) {
                (Some(m), Some(l)) if reason == "CrashLoopBackOff" => Some(l + "; " + m),
                (Some(m), _) => Some(m.to_owned()),
                (None, l) => l,
            };
            let mut why = match said {
                Some(m) => format!("{}: {reason}: {}", c.name, one_line(&m)),
                None => format!("{}: {reason}", c.name),
            };
            if let Some(fix) = kubelet_hint(reason, &why) {
                why.push_str(" (");
                why.push_str(fix);
                why.push(')');
            }
            return Some(why);
        }
    }
    if !stuck_creating(pod, age) {
        return None;
    }
    failed_mounts.iter().find_map(|m| {
        status
            .volumes
            .iter()
            .find(|v| m.contains(&format!("volume \"{v}\"")))
            .map(|v| {
                format!(
                    "volume {v}: FailedMount for over {} s: {m}",
                    MOUNT_GRACE.as_secs()
                )
            })
    })
}

/// The first line of a kubelet message, at most 240 characters: a reason, not a page.
fn one_line(message: &str) -> String {
    let line = message
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default()
        .trim();
    match line.char_indices().nth(240) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line.to_owned(),
    }
}

/// What to do about what kubelet said, for the causes of a failed injected image (the
/// Tingyun seed's FAQ): a binary for another architecture, a refused login, an image the
/// registry lacks, a registry out of reach.
fn kubelet_hint(reason: &str, said: &str) -> Option<&'static str> {
    let text = said.to_ascii_lowercase();
    if text.contains("exec format error") {
        return Some(
            "the image has no build for this node's architecture: push it with every architecture, e.g. skopeo copy --all",
        );
    }
    if !matches!(reason, "ErrImagePull" | "ImagePullBackOff") {
        return None;
    }
    if [
        "401",
        "403",
        "unauthorized",
        "denied",
        "authentication required",
    ]
    .iter()
    .any(|w| text.contains(w))
    {
        Some(
            "the registry refused the pull: check the imagePullSecrets the template names in this namespace",
        )
    } else if ["not found", "manifest unknown", "404"]
        .iter()
        .any(|w| text.contains(w))
    {
        Some(
            "the registry has no such image: mirror it; sidecar-injector images --mirror-to lists every image",
        )
    } else if [
        "timeout",
        "timed out",
        "deadline exceeded",
        "no such host",
        "connection refused",
    ]
    .iter()
    .any(|w| text.contains(w))
    {
        Some("the node could not reach the registry")
    } else {
        None
    }
}

/// The Pod has been in ContainerCreating for over [`MOUNT_GRACE`]: only then can a failed
/// mount make it `failing`, and only then are its FailedMount Events worth reading.
pub fn stuck_creating(pod: &Pod, age: Duration) -> bool {
    age >= MOUNT_GRACE
        && pod
            .status
            .iter()
            .flat_map(|s| s.container_statuses.iter().flatten())
            .any(|c| {
                c.state
                    .as_ref()
                    .and_then(|s| s.waiting.as_ref())
                    .and_then(|w| w.reason.as_deref())
                    == Some("ContainerCreating")
            })
}

/// Current when every template the status names has the live hash.
fn staleness(status: &Status, config: &Config) -> (State, String) {
    let mut old = Vec::new();
    if status.templates.is_empty() {
        // An annotation from before named templates: one hash for the default list.
        if status.template_hash != config.template_hash {
            old.push(format!(
                "template hash {} (live {})",
                status.template_hash, config.template_hash
            ));
        }
    }
    for (name, hash) in &status.templates {
        match config.templates.get(name) {
            Some(t) if &t.hash == hash => {}
            Some(t) => old.push(format!("template {name} {hash} (live {})", t.hash)),
            None => old.push(format!("template {name} is no longer configured")),
        }
    }
    if old.is_empty() {
        (State::Current, String::new())
    } else {
        (State::Stale, old.join("; "))
    }
}

/// Pods read per API call by `check` (a one-shot command: fewer round trips).
pub const CHECK_PAGE: u32 = 500;
/// Pods read per API call by `serve`'s survey: an injected Pod's JSON with its managedFields
/// is several KiB, so a small page keeps a long-running server's memory low.
pub const SERVE_PAGE: u32 = 100;

/// Which namespaces to look at.
#[derive(Debug, Clone)]
pub enum Scope {
    /// One namespace, whatever its labels.
    Namespace(String),
    /// Every namespace the webhook would inject (opted in, not never-inject).
    AllInjected,
}

/// Reads the Pods of `scope`, `page` at a time, and judges each; sorted by namespace, owner
/// and name.
pub async fn survey(
    client: &kube::Client,
    config: &Config,
    scope: &Scope,
    page: u32,
) -> Result<Vec<PodReport>> {
    let ns_api: Api<PartialObjectMeta<Namespace>> = Api::all(client.clone());
    let namespaces: Vec<PartialObjectMeta<Namespace>> = match scope {
        Scope::Namespace(name) => vec![
            ns_api
                .get(name)
                .await
                .with_context(|| format!("reading namespace {name:?}"))?,
        ],
        Scope::AllInjected => {
            let label = &config.settings.namespace_label;
            ns_api
                .list(&ListParams::default().labels(&format!("{label}=enabled")))
                .await
                .context("listing namespaces")?
                .items
                .into_iter()
                .filter(|ns| !config.never_injects(ns.metadata.name.as_deref().unwrap_or_default()))
                .collect()
        }
    };
    let mut reports = Vec::new();
    for ns in &namespaces {
        let name = ns.metadata.name.clone().unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(client.clone(), &name);
        let mut owners = Owners::new(client.clone(), &name);
        // Read once a Pod is stuck in ContainerCreating, not every survey.
        let mut mounts: Option<HashMap<String, Vec<String>>> = None;
        // Page by page: memory stays flat however many Pods there are.
        let mut params = ListParams::default().limit(page);
        loop {
            let page = pods
                .list(&params)
                .await
                .with_context(|| format!("listing the Pods of {name:?}"))?;
            for pod in page.items {
                if pod.metadata.deletion_timestamp.is_some() {
                    continue; // on its way out: a rollout's old Pod
                }
                let raw = serde_json::value::to_raw_value(&pod).context("a Pod as JSON")?;
                let (mut state, mut reason) =
                    judge(&raw, &name, Some(namespaces::context(ns)), config);
                if matches!(state, State::Current | State::Stale) {
                    let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
                    let age = age(&pod);
                    if stuck_creating(&pod, age) && mounts.is_none() {
                        mounts = Some(failed_mounts(client, &name).await);
                    }
                    let found = mounts
                        .as_ref()
                        .and_then(|m| m.get(pod_name))
                        .map(Vec::as_slice)
                        .unwrap_or_default();
                    if let Some(why) = failing(&pod, found, age) {
                        (state, reason) = (State::Failing, why);
                    }
                }
                reports.push(PodReport {
                    namespace: name.clone(),
                    pod: pod.metadata.name.clone().unwrap_or_default(),
                    owner: owners.of(&pod).await,
                    state,
                    reason,
                    repaired_for: pod
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(REPAIRED_FOR_KEY))
                        .cloned(),
                });
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(next) => params = params.continue_token(&next),
                None => break,
            }
        }
    }
    reports.sort_by(|a, b| (&a.namespace, &a.owner, &a.pod).cmp(&(&b.namespace, &b.owner, &b.pod)));
    Ok(reports)
}

/// The messages of kubelet's FailedMount Events in a namespace, by Pod. Without the
/// permission to list Events, none: a Pod is then only `failing` by its own status.
async fn failed_mounts(client: &kube::Client, namespace: &str) -> HashMap<String, Vec<String>> {
    let api: Api<CoreEvent> = Api::namespaced(client.clone(), namespace);
    let params = ListParams::default().fields("reason=FailedMount,involvedObject.kind=Pod");
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    match api.list(&params).await {
        Ok(list) => {
            for e in list.items {
                if let (Some(pod), Some(message)) = (e.involved_object.name, e.message) {
                    out.entry(pod).or_default().push(message);
                }
            }
        }
        Err(e) => tracing::debug!(namespace, error = %e, "FailedMount Events cannot be listed"),
    }
    out
}

/// How long the Pod has existed.
fn age(pod: &Pod) -> Duration {
    pod.metadata
        .creation_timestamp
        .as_ref()
        .and_then(|t| {
            let elapsed = k8s_openapi::jiff::Timestamp::now().duration_since(t.0);
            Duration::try_from(elapsed).ok()
        })
        .unwrap_or_default()
}

/// The workload that owns a Pod, followed through its ReplicaSet or Job.
struct Owners {
    replica_sets: Api<PartialObjectMeta<ReplicaSet>>,
    jobs: Api<PartialObjectMeta<Job>>,
    seen: HashMap<(String, String), String>,
}

impl Owners {
    fn new(client: kube::Client, namespace: &str) -> Owners {
        Owners {
            replica_sets: Api::namespaced(client.clone(), namespace),
            jobs: Api::namespaced(client, namespace),
            seen: HashMap::new(),
        }
    }

    async fn of(&mut self, pod: &Pod) -> String {
        let Some(owner) = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
        else {
            return format!("Pod/{}", pod.metadata.name.as_deref().unwrap_or_default());
        };
        let key = (owner.kind.clone(), owner.name.clone());
        if let Some(known) = self.seen.get(&key) {
            return known.clone();
        }
        let parent = match owner.kind.as_str() {
            "ReplicaSet" => self
                .replica_sets
                .get_opt(&owner.name)
                .await
                .ok()
                .flatten()
                .and_then(|rs| controller_of(&rs.metadata)),
            "Job" => self
                .jobs
                .get_opt(&owner.name)
                .await
                .ok()
                .flatten()
                .and_then(|job| controller_of(&job.metadata)),
            _ => None,
        };
        let found = parent.unwrap_or_else(|| format!("{}/{}", owner.kind, owner.name));
        self.seen.insert(key, found.clone());
        found
    }
}

fn controller_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<String> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| format!("{}/{}", o.kind, o.name))
}

/// Counts by state, in [`State::ALL`] order.
pub fn counts(reports: &[PodReport]) -> BTreeMap<State, usize> {
    let mut out: BTreeMap<State, usize> = State::ALL.iter().map(|s| (*s, 0)).collect();
    for r in reports {
        *out.entry(r.state).or_default() += 1;
    }
    out
}

/// `-o table`: one line per Pod, grouped by namespace and owner.
pub fn table(reports: &[PodReport]) -> String {
    let head = ["NAMESPACE", "OWNER", "POD", "STATE", "REASON"];
    let rows: Vec<[&str; 5]> = reports
        .iter()
        .map(|r| {
            [
                r.namespace.as_str(),
                &r.owner,
                &r.pod,
                r.state.as_str(),
                &r.reason,
            ]
        })
        .collect();
    let mut widths = head.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(head).chain(rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (cell, w))| {
                if i == 4 {
                    cell.to_string()
                } else {
                    format!("{cell:<w$}")
                }
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::config::RawConfig;

    fn config() -> Config {
        Config::from_raw(
            &RawConfig::new(None, "containers: [{name: c, image: 'c:1'}]\n")
                .with_template("apm", "initContainers: [{name: a, image: 'a:1'}]\n"),
            "injector",
        )
        .unwrap()
    }

    fn raw(v: serde_json::Value) -> Box<RawValue> {
        serde_json::value::to_raw_value(&v).unwrap()
    }

    #[test]
    fn the_engine_judges_pods_without_the_annotation_and_hashes_judge_the_rest() {
        let c = config();
        let labels = BTreeMap::from([("sidecar-injection".to_owned(), "enabled".to_owned())]);
        let none = BTreeMap::new();
        let ns = NamespaceContext {
            labels: &labels,
            annotations: &none,
        };
        let plain = raw(
            serde_json::json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "app", "image": "x"}]}}),
        );
        assert_eq!(judge(&plain, "team", Some(ns), &c).0, State::Missing);
        let off = NamespaceContext {
            labels: &none,
            annotations: &none,
        };
        assert_eq!(
            judge(&plain, "team", Some(off), &c),
            (State::Skipped, "namespace_not_enabled".to_owned())
        );
        assert_eq!(
            judge(&plain, "kube-system", Some(ns), &c),
            (State::Skipped, "never_inject_namespace".to_owned())
        );

        let status = |templates: serde_json::Value| {
            raw(
                serde_json::json!({"metadata": {"name": "p", "annotations": {STATUS_KEY:
                serde_json::json!({"templateHash": "x", "templates": templates}).to_string()}},
                "spec": {"containers": [{"name": "app", "image": "x"}, {"name": "c", "image": "c:1"}]}}),
            )
        };
        let live = &c.templates["default"].hash;
        assert_eq!(
            judge(
                &status(serde_json::json!({"default": live})),
                "team",
                Some(ns),
                &c
            )
            .0,
            State::Current
        );
        let (state, reason) = judge(
            &status(serde_json::json!({"default": "0000"})),
            "team",
            Some(ns),
            &c,
        );
        assert_eq!(state, State::Stale);
        assert!(reason.contains("template default 0000"), "{reason}");
        let (state, reason) = judge(
            &status(serde_json::json!({"gone": "1"})),
            "team",
            Some(ns),
            &c,
        );
        assert_eq!(state, State::Stale);
        assert!(reason.contains("gone is no longer configured"), "{reason}");
    }

    fn injected_pod(statuses: serde_json::Value) -> Pod {
        let status = serde_json::json!({"templateHash": "h", "containers": ["collector"],
            "initContainers": ["agent-init"], "volumes": ["docker-sock", "cgroup"]});
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-1", "annotations": {STATUS_KEY: status.to_string()}},
            "spec": {"containers": [{"name": "app"}, {"name": "collector"}]},
            "status": statuses,
        }))
        .unwrap()
    }

    fn waiting(name: &str, reason: &str, message: &str) -> serde_json::Value {
        serde_json::json!({"name": name, "image": "x", "imageID": "", "ready": false,
            "restartCount": 0, "state": {"waiting": {"reason": reason, "message": message}}})
    }

    #[test]
    fn an_injected_container_kubelet_cannot_run_makes_the_pod_failing_with_its_reason() {
        let secret = injected_pod(serde_json::json!({"containerStatuses": [
            waiting("app", "ContainerCreating", ""),
            waiting("collector", "CreateContainerConfigError",
                "secret \"bitbucket-pipelines-metrics\" not found"),
        ]}));
        assert_eq!(
            failing(&secret, &[], Duration::ZERO).as_deref(),
            Some(
                "collector: CreateContainerConfigError: secret \"bitbucket-pipelines-metrics\" not found"
            )
        );
        for reason in CANNOT_RUN {
            let pod = injected_pod(serde_json::json!({"initContainerStatuses": [
                waiting("agent-init", reason, "")]}));
            assert_eq!(
                failing(&pod, &[], Duration::ZERO),
                Some(format!("agent-init: {reason}")),
                "{reason}"
            );
        }
        // The Pod's own container failing is not the injector's doing.
        let own = injected_pod(serde_json::json!({"containerStatuses": [
            waiting("app", "ImagePullBackOff", "no such image")]}));
        assert_eq!(failing(&own, &[], Duration::ZERO), None);
        // Nor is a Pod without the status annotation.
        let mut plain = own.clone();
        plain.metadata.annotations = None;
        assert_eq!(failing(&plain, &[], Duration::ZERO), None);
    }

    #[test]
    fn failing_names_the_cause_kubelet_gave_and_what_to_do() {
        // An init container built for another architecture: a crash loop whose last exit
        // says exec format error.
        let mut crash = waiting(
            "agent-init",
            "CrashLoopBackOff",
            "back-off 20s restarting failed container=agent-init",
        );
        crash["lastState"] = serde_json::json!({"terminated": {"exitCode": 128, "reason": "StartError",
            "message": "failed to create containerd task: exec: \"/bin/sh\": exec format error: unknown\nmore"}});
        let pod = injected_pod(serde_json::json!({"initContainerStatuses": [crash]}));
        let why = failing(&pod, &[], Duration::ZERO).unwrap();
        assert_eq!(
            why,
            "agent-init: CrashLoopBackOff: last exit StartError: failed to create containerd task: exec: \"/bin/sh\": exec format error: unknown (the image has no build for this node's architecture: push it with every architecture, e.g. skopeo copy --all)"
        );
        let pull = |message: &str| {
            let pod = injected_pod(serde_json::json!({"containerStatuses": [
                waiting("collector", "ImagePullBackOff", message)]}));
            failing(&pod, &[], Duration::ZERO).unwrap()
        };
        let refused = pull(
            "Back-off pulling image \"registry.corp.example/mirror/c:1\": ErrImagePull: failed to authorize: 401 Unauthorized",
        );
        assert!(
            refused.starts_with("collector: ImagePullBackOff: Back-off pulling image"),
            "{refused}"
        );
        assert!(refused.ends_with("(the registry refused the pull: check the imagePullSecrets the template names in this namespace)"), "{refused}");
        assert!(
            pull("rpc error: registry.corp.example/mirror/c:1: not found")
                .contains("mirror it; sidecar-injector images")
        );
        assert!(
            pull("dial tcp 10.0.0.1:443: i/o timeout")
                .ends_with("(the node could not reach the registry)")
        );
        assert!(!pull("something else").contains('('));
        // A missing Secret's "not found" is not an image's.
        let secret = injected_pod(serde_json::json!({"containerStatuses": [
            waiting("collector", "CreateContainerConfigError", "secret \"t\" not found")]}));
        assert_eq!(
            failing(&secret, &[], Duration::ZERO).as_deref(),
            Some("collector: CreateContainerConfigError: secret \"t\" not found")
        );
        // A page of text is cut to its first line.
        let long = pull(&format!("{}\nsecond line", "x".repeat(500)));
        assert!(long.len() < 300 && !long.contains("second"), "{long}");
    }

    #[test]
    fn a_failed_mount_of_an_injected_volume_is_failing_after_a_minute_in_container_creating() {
        let creating = injected_pod(serde_json::json!({"containerStatuses": [
            waiting("app", "ContainerCreating", ""),
            waiting("collector", "ContainerCreating", "")]}));
        let socket = "MountVolume.SetUp failed for volume \"docker-sock\" : hostPath type check failed: /var/run/docker.sock is not a socket file".to_owned();
        let other = "MountVolume.SetUp failed for volume \"data\" : not found".to_owned();
        let long = MOUNT_GRACE + Duration::from_secs(1);
        let why = failing(&creating, std::slice::from_ref(&socket), long).unwrap();
        assert!(
            why.starts_with("volume docker-sock: FailedMount for over 60 s: MountVolume"),
            "{why}"
        );
        assert_eq!(
            failing(
                &creating,
                std::slice::from_ref(&socket),
                Duration::from_secs(30)
            ),
            None,
            "within the minute"
        );
        assert_eq!(
            failing(&creating, &[other], long),
            None,
            "not an injected volume"
        );
        let running = injected_pod(serde_json::json!({"containerStatuses": []}));
        assert_eq!(
            failing(&running, &[socket], long),
            None,
            "no longer creating"
        );
    }
}
