//! `check` and repair: which running Pods missed the sidecar or run an old template, and
//! rolling the workloads that own them.
//!
//! The engine is the only judge: a Pod without the status annotation is put to
//! [`engine::decide`] as the Pod it would be if created now, in its namespace as the cluster
//! has it; one with the annotation is compared, template by template, with the live hashes.
//! This module only fetches, groups, prints and rolls.

use crate::cluster::namespaces;
use crate::engine::config::Config;
use crate::engine::{self, NamespaceContext, Outcome, STATUS_KEY, Status};
use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams, PartialObjectMeta, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::core::admission::Operation;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use serde::Serialize;
use serde_json::value::RawValue;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// The annotation repair sets on a workload's Pod template, as `kubectl rollout restart`
/// sets `kubectl.kubernetes.io/restartedAt`.
pub const RESTARTED_AT_KEY: &str = "sidecar-injector.io/restartedAt";

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
}

impl State {
    pub const ALL: [State; 4] = [State::Current, State::Stale, State::Missing, State::Skipped];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Current => "current",
            State::Stale => "stale",
            State::Missing => "missing",
            State::Skipped => "skipped",
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
                .filter(|ns| {
                    let name = ns.metadata.name.as_deref().unwrap_or_default();
                    name != config.own_namespace
                        && !config
                            .settings
                            .never_inject_namespaces
                            .iter()
                            .any(|n| n == name)
                })
                .collect()
        }
    };
    let mut reports = Vec::new();
    for ns in &namespaces {
        let name = ns.metadata.name.clone().unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(client.clone(), &name);
        let mut owners = Owners::new(client.clone(), &name);
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
                let (state, reason) = judge(&raw, &name, Some(namespaces::context(ns)), config);
                reports.push(PodReport {
                    namespace: name.clone(),
                    pod: pod.metadata.name.clone().unwrap_or_default(),
                    owner: owners.of(&pod).await,
                    state,
                    reason,
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

/// The host path of the Docker socket.
pub const DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// The volume of the default templates that mounts the Docker socket from the host, if any
/// (rendered for a sample Pod when the templates read the Pod).
pub fn docker_socket_volume(config: &Config) -> Option<String> {
    let sample = crate::engine::config::sample_pod();
    let pod = crate::engine::pod::PodView::parse(&sample).ok()?;
    let fragment = config
        .fragment(&config.default_templates(), &pod, "default", None)
        .ok()?;
    fragment
        .volumes
        .iter()
        .find(|v| {
            v.value
                .pointer("/hostPath/path")
                .and_then(serde_json::Value::as_str)
                == Some(DOCKER_SOCKET)
        })
        .map(|v| v.name().to_owned())
}

/// Nodes whose container runtime is not Docker (`status.nodeInfo.containerRuntimeVersion`
/// not `docker://...`): `(name, runtime)`, and how many nodes there are.
pub async fn nodes_without_docker(client: &kube::Client) -> Result<(Vec<(String, String)>, usize)> {
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let list = nodes
        .list(&ListParams::default())
        .await
        .context("listing nodes")?;
    let total = list.items.len();
    let without = list
        .items
        .into_iter()
        .filter_map(|n| {
            let runtime = n.status?.node_info?.container_runtime_version;
            (!runtime.starts_with("docker://"))
                .then(|| (n.metadata.name.unwrap_or_default(), runtime))
        })
        .collect();
    Ok((without, total))
}

/// What to say when the template mounts the Docker socket and some nodes have no Docker.
pub fn docker_socket_advice(
    volume: &str,
    without: &[(String, String)],
    total: usize,
) -> Option<String> {
    if without.is_empty() {
        return None;
    }
    let names: Vec<String> = without
        .iter()
        .take(10)
        .map(|(n, r)| format!("{n} ({r})"))
        .collect();
    let more = if without.len() > 10 {
        format!(" and {} more", without.len() - 10)
    } else {
        String::new()
    };
    Some(format!(
        "{} of {total} nodes run no Docker: {}{more}. The template mounts {DOCKER_SOCKET} (volume {volume:?}, a hostPath of type Socket), which does not exist there: injected Pods scheduled on them stay in ContainerCreating (FailedMount). Set values.mountDockerSocket: false in config.yaml.",
        without.len(),
        names.join(", ")
    ))
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

/// The workloads repair can roll: Deployments, StatefulSets and DaemonSets owning a Pod that
/// is missing the sidecar or runs an old template, as `(namespace, Kind/name)`, and the
/// Pods no repair touches (bare Pods, Job Pods, ...), reported only.
pub fn to_repair(reports: &[PodReport]) -> (Vec<(String, String)>, Vec<&PodReport>) {
    let mut workloads = Vec::new();
    let mut untouched = Vec::new();
    for r in reports
        .iter()
        .filter(|r| matches!(r.state, State::Missing | State::Stale))
    {
        let kind = r.owner.split('/').next().unwrap_or_default();
        if matches!(kind, "Deployment" | "StatefulSet" | "DaemonSet") {
            let w = (r.namespace.clone(), r.owner.clone());
            if !workloads.contains(&w) {
                workloads.push(w);
            }
        } else {
            untouched.push(r);
        }
    }
    (workloads, untouched)
}

/// For each workload to repair, its Pods that need it (`web-1 missing, web-2 stale`): the
/// note of its restart Event.
pub fn repair_notes(reports: &[PodReport]) -> BTreeMap<(String, String), String> {
    let mut why: BTreeMap<(String, String), String> = BTreeMap::new();
    for r in reports
        .iter()
        .filter(|r| matches!(r.state, State::Missing | State::Stale))
    {
        let e = why
            .entry((r.namespace.clone(), r.owner.clone()))
            .or_default();
        if !e.is_empty() {
            e.push_str(", ");
        }
        e.push_str(&format!("{} {}", r.pod, r.state.as_str()));
    }
    why
}

/// How repair goes.
#[derive(Debug, Clone)]
pub struct RepairOptions {
    /// At most this many workloads restarted in any minute.
    pub max_per_minute: u32,
    /// How long one rollout may take before repair stops.
    pub rollout_timeout: Duration,
    /// Who the Events say did it.
    pub reporter: Reporter,
}

/// At most so many restarts in any minute; kept across repair rounds.
#[derive(Debug, Default)]
pub struct Limiter {
    started: Vec<Instant>,
}

impl Limiter {
    /// How long to wait before the next restart may start, at `now`.
    pub fn wait(&mut self, per_minute: u32, now: Instant) -> Duration {
        let minute = Duration::from_secs(60);
        self.started
            .retain(|t| now.saturating_duration_since(*t) < minute);
        match self.started.first() {
            Some(first) if self.started.len() >= per_minute.max(1) as usize => {
                minute.saturating_sub(now.saturating_duration_since(*first))
            }
            _ => Duration::ZERO,
        }
    }

    pub fn started(&mut self, at: Instant) {
        self.started.push(at);
    }
}

/// What repair is doing, for the command line to print and serve to log.
pub enum Progress<'a> {
    /// The rate limit holds the next restart back for `wait`.
    Waiting {
        wait: Duration,
        next: &'a str,
        per_minute: u32,
    },
    /// `owner` was restarted; its rollout is being waited for.
    Restarted { namespace: &'a str, owner: &'a str },
}

/// Restarts each workload the way `kubectl rollout restart` does, one at a time, waiting
/// for its rollout to finish before the next, at most `max_per_minute` a minute (counted by
/// `limiter`), while `keep_going` says so. Each restart is an Event on the workload. Returns
/// the workloads restarted.
pub async fn repair(
    client: &kube::Client,
    workloads: &[(String, String)],
    why: &BTreeMap<(String, String), String>,
    opts: &RepairOptions,
    limiter: &mut Limiter,
    keep_going: &(dyn Fn() -> bool + Sync),
    mut progress: impl FnMut(Progress<'_>),
) -> Result<Vec<String>> {
    let recorder = Recorder::new(client.clone(), opts.reporter.clone());
    let mut done = Vec::new();
    for (namespace, owner) in workloads {
        let wait = limiter.wait(opts.max_per_minute, Instant::now());
        if !wait.is_zero() {
            progress(Progress::Waiting {
                wait,
                next: owner,
                per_minute: opts.max_per_minute,
            });
            tokio::time::sleep(wait).await;
        }
        if !keep_going() {
            break;
        }
        let (kind, name) = owner.split_once('/').unwrap_or_default();
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let patch = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT_KEY: now}}}}});
        let params = PatchParams::default();
        let reference = match kind {
            "Deployment" => restart::<Deployment>(client, namespace, name, &patch, &params).await?,
            "StatefulSet" => {
                restart::<StatefulSet>(client, namespace, name, &patch, &params).await?
            }
            "DaemonSet" => restart::<DaemonSet>(client, namespace, name, &patch, &params).await?,
            other => bail!("{owner}: {other} is not a workload repair restarts"),
        };
        limiter.started(Instant::now());
        progress(Progress::Restarted { namespace, owner });
        let note = why
            .get(&(namespace.clone(), owner.clone()))
            .cloned()
            .unwrap_or_default();
        let event = Event {
            type_: EventType::Normal,
            reason: "SidecarRepair".into(),
            note: Some(format!("restarted by sidecar-injector: {note}")),
            action: "Restart".into(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&event, &reference).await {
            tracing::warn!(workload = %owner, namespace = %namespace, error = %e, "could not record the repair Event");
        }
        tracing::info!(workload = %owner, namespace = %namespace, "repair: restarted; waiting for the rollout");
        wait_rolled_out(client, namespace, kind, name, opts.rollout_timeout).await?;
        done.push(format!("{namespace}/{owner}"));
    }
    Ok(done)
}

async fn restart<K>(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    patch: &serde_json::Value,
    params: &PatchParams,
) -> Result<k8s_openapi::api::core::v1::ObjectReference>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let obj = api
        .patch(name, params, &Patch::Merge(patch))
        .await
        .with_context(|| format!("restarting {}/{name} in {namespace}", K::kind(&())))?;
    Ok(obj.object_ref(&()))
}

/// Waits until the workload's new Pods are all updated and available, as `kubectl rollout
/// status` does.
async fn wait_rolled_out(
    client: &kube::Client,
    namespace: &str,
    kind: &str,
    name: &str,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let done = match kind {
            "Deployment" => {
                let d = Api::<Deployment>::namespaced(client.clone(), namespace)
                    .get(name)
                    .await?;
                let (generation, want) = (
                    d.metadata.generation.unwrap_or_default(),
                    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                );
                d.status.is_some_and(|s| {
                    s.observed_generation.unwrap_or_default() >= generation
                        && s.updated_replicas.unwrap_or_default() >= want
                        && s.replicas.unwrap_or_default() == s.updated_replicas.unwrap_or_default()
                        && s.available_replicas.unwrap_or_default() >= want
                })
            }
            "StatefulSet" => {
                let s = Api::<StatefulSet>::namespaced(client.clone(), namespace)
                    .get(name)
                    .await?;
                let (generation, want) = (
                    s.metadata.generation.unwrap_or_default(),
                    s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                );
                s.status.is_some_and(|st| {
                    st.observed_generation.unwrap_or_default() >= generation
                        && st.updated_replicas.unwrap_or_default() >= want
                        && st.ready_replicas.unwrap_or_default() >= want
                        && st.update_revision.is_some()
                        && st.current_revision == st.update_revision
                })
            }
            "DaemonSet" => {
                let d = Api::<DaemonSet>::namespaced(client.clone(), namespace)
                    .get(name)
                    .await?;
                let generation = d.metadata.generation.unwrap_or_default();
                d.status.is_some_and(|s| {
                    s.observed_generation.unwrap_or_default() >= generation
                        && s.updated_number_scheduled.unwrap_or_default()
                            >= s.desired_number_scheduled
                        && s.number_available.unwrap_or_default() >= s.desired_number_scheduled
                })
            }
            _ => true,
        };
        if done {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{kind}/{name} in {namespace} did not finish rolling out within {} s",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
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

    #[test]
    fn repair_takes_workloads_and_leaves_bare_and_job_pods() {
        let r = |owner: &str, state| PodReport {
            namespace: "ns".into(),
            pod: "p".into(),
            owner: owner.into(),
            state,
            reason: String::new(),
        };
        let reports = [
            r("Deployment/web", State::Missing),
            r("Deployment/web", State::Stale),
            r("StatefulSet/db", State::Current),
            r("Job/once", State::Missing),
            r("Pod/bare", State::Stale),
            r("DaemonSet/agent", State::Skipped),
        ];
        let (workloads, untouched) = to_repair(&reports);
        assert_eq!(workloads, [("ns".to_owned(), "Deployment/web".to_owned())]);
        let left: Vec<&str> = untouched.iter().map(|r| r.owner.as_str()).collect();
        assert_eq!(left, ["Job/once", "Pod/bare"]);
        let t = table(&reports);
        assert!(t.starts_with("NAMESPACE  OWNER"), "{t}");
        assert_eq!(t.lines().count(), 7);
        assert_eq!(counts(&reports)[&State::Missing], 2);
    }

    #[test]
    fn the_limiter_allows_so_many_restarts_a_minute() {
        let mut l = Limiter::default();
        let t0 = Instant::now();
        assert_eq!(l.wait(2, t0), Duration::ZERO);
        l.started(t0);
        assert_eq!(l.wait(2, t0 + Duration::from_secs(1)), Duration::ZERO);
        l.started(t0 + Duration::from_secs(1));
        assert_eq!(
            l.wait(2, t0 + Duration::from_secs(10)),
            Duration::from_secs(50)
        );
        assert_eq!(l.wait(2, t0 + Duration::from_secs(60)), Duration::ZERO);
        assert_eq!(
            l.wait(1, t0 + Duration::from_secs(60)),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn the_docker_socket_is_found_and_the_advice_names_nodes_and_setting() {
        let shipped = Config::embedded("injector").unwrap();
        assert_eq!(
            docker_socket_volume(&shipped).as_deref(),
            Some("docker-sock")
        );
        assert_eq!(docker_socket_volume(&config()), None);
        let nodes = [("kwok-node-1".to_owned(), "containerd://2.1.0".to_owned())];
        let advice = docker_socket_advice("docker-sock", &nodes, 3).unwrap();
        assert!(
            advice.starts_with("1 of 3 nodes run no Docker: kwok-node-1 (containerd://2.1.0)"),
            "{advice}"
        );
        assert!(
            advice.contains("values.mountDockerSocket: false"),
            "{advice}"
        );
        assert_eq!(docker_socket_advice("docker-sock", &[], 3), None);
    }
}
