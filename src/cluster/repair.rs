//! Repair: rolling the workloads whose Pods `check` found missing the sidecar or running an
//! old template, one at a time, at a bounded rate, each with an Event.

use crate::cluster::check::{PodReport, State};
use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The annotation repair sets on a workload's Pod template, as `kubectl rollout restart`
/// sets `kubectl.kubernetes.io/restartedAt`.
pub const RESTARTED_AT_KEY: &str = "sidecar-injector.io/restartedAt";

pub use crate::cluster::check::REPAIRED_FOR_KEY;

/// What repair does with the Pods `check` found.
#[derive(Debug, Default)]
pub struct Plan<'a> {
    /// Deployments, StatefulSets and DaemonSets owning a Pod missing the sidecar or running
    /// an old template, as `(namespace, Kind/name)`: restarted.
    pub workloads: Vec<(String, String)>,
    /// Pods no repair touches (bare Pods, Job Pods, ...): reported only.
    pub untouched: Vec<&'a PodReport>,
    /// Workloads already restarted for this template whose new Pods are still missing or
    /// stale, each with one such Pod: reported, never restarted again.
    pub given_up: Vec<(String, String, &'a PodReport)>,
}

/// What repair does for the reports of a survey against the config of `template_hash`.
pub fn to_repair<'a>(reports: &'a [PodReport], template_hash: &str) -> Plan<'a> {
    let mut plan = Plan::default();
    let needs = |r: &&PodReport| matches!(r.state, State::Missing | State::Stale);
    // A workload one of whose Pods a restart for this template made, and did not fix.
    for r in reports.iter().filter(needs) {
        if r.repaired_for.as_deref() == Some(template_hash)
            && !plan
                .given_up
                .iter()
                .any(|(ns, owner, _)| *ns == r.namespace && *owner == r.owner)
        {
            plan.given_up
                .push((r.namespace.clone(), r.owner.clone(), r));
        }
    }
    for r in reports.iter().filter(needs) {
        let kind = r.owner.split('/').next().unwrap_or_default();
        if matches!(kind, "Deployment" | "StatefulSet" | "DaemonSet") {
            let w = (r.namespace.clone(), r.owner.clone());
            let given_up = plan
                .given_up
                .iter()
                .any(|(ns, owner, _)| *ns == w.0 && *owner == w.1);
            if !given_up && !plan.workloads.contains(&w) {
                plan.workloads.push(w);
            }
        } else {
            plan.untouched.push(r);
        }
    }
    plan
}

/// What to say of a workload repair gave up on.
pub fn given_up_note(namespace: &str, owner: &str, pod: &PodReport) -> String {
    format!(
        "not repaired again: {namespace}/{owner} was restarted for this template ({}={}), and its new Pod {} is still {} ({}): a restart cannot fix it; see why with sidecar-injector preview, or opt it out",
        REPAIRED_FOR_KEY,
        pod.repaired_for.as_deref().unwrap_or_default(),
        pod.pod,
        pod.state.as_str(),
        pod.reason
    )
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
    /// How long one rollout may take before repair leaves it and goes on with the next.
    pub rollout_timeout: Duration,
    /// Who the Events say did it.
    pub reporter: Reporter,
    /// The template hash of the config the restarts are for ([`REPAIRED_FOR_KEY`]).
    pub template_hash: String,
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

/// Whether repair already restarted `workload` (a Deployment, StatefulSet or DaemonSet as
/// the API returns it) for the config of `template_hash`: the stamp on its Pod template. A
/// workload is restarted at most once per config, also when that rollout never finishes (a
/// Pod on a Node that is not Ready): restarting it again would wait on the same rollout.
pub fn restarted_for(workload: &serde_json::Value, template_hash: &str) -> bool {
    workload
        .pointer("/spec/template/metadata/annotations")
        .and_then(|a| a.get(REPAIRED_FOR_KEY))
        .and_then(serde_json::Value::as_str)
        == Some(template_hash)
}

/// What to say of a workload [`restarted_for`] this config whose Pods still need the sidecar.
pub fn not_again_note(namespace: &str, owner: &str, template_hash: &str) -> String {
    format!(
        "not restarted again: {namespace}/{owner} was restarted for this template \
         ({REPAIRED_FOR_KEY}={template_hash}) and some of its Pods still lack it: its rollout \
         has not finished; `kubectl -n {namespace} rollout status {}` says what it waits for",
        owner.to_lowercase()
    )
}

/// What a round of repair did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Restarted and rolled out, as `namespace/Kind/name`.
    pub rolled_out: Vec<String>,
    /// Restarted, but the rollout did not finish within the timeout: why, for each.
    pub not_rolled_out: Vec<String>,
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
    /// `owner` was already restarted for this config ([`restarted_for`]): not again.
    NotAgain { namespace: &'a str, owner: &'a str },
    /// `owner`'s rollout did not finish in time: repair goes on with the next workload.
    NotRolledOut {
        namespace: &'a str,
        owner: &'a str,
        error: &'a str,
    },
}

/// Restarts each workload the way `kubectl rollout restart` does, one at a time, waiting
/// for its rollout to finish before the next, at most `max_per_minute` a minute (counted by
/// `limiter`), while `keep_going` says so. Each restart is an Event on the workload. A
/// workload already restarted for this config is not restarted again, and one whose rollout
/// does not finish within `rollout_timeout` holds back no other. An API call that fails
/// stops the round.
pub async fn repair(
    client: &kube::Client,
    workloads: &[(String, String)],
    why: &BTreeMap<(String, String), String>,
    opts: &RepairOptions,
    limiter: &mut Limiter,
    keep_going: &(dyn Fn() -> bool + Sync),
    mut progress: impl FnMut(Progress<'_>),
) -> Result<Outcome> {
    let recorder = Recorder::new(client.clone(), opts.reporter.clone());
    let mut outcome = Outcome::default();
    for (namespace, owner) in workloads {
        let (kind, name) = owner.split_once('/').unwrap_or_default();
        let live = match kind {
            "Deployment" => fetch::<Deployment>(client, namespace, name).await?,
            "StatefulSet" => fetch::<StatefulSet>(client, namespace, name).await?,
            "DaemonSet" => fetch::<DaemonSet>(client, namespace, name).await?,
            other => bail!("{owner}: {other} is not a workload repair restarts"),
        };
        if restarted_for(&live, &opts.template_hash) {
            progress(Progress::NotAgain { namespace, owner });
            continue;
        }
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
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let patch = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {
            RESTARTED_AT_KEY: now,
            REPAIRED_FOR_KEY: opts.template_hash,
        }}}}});
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
        match wait_rolled_out(client, namespace, kind, name, opts.rollout_timeout).await {
            Ok(()) => outcome.rolled_out.push(format!("{namespace}/{owner}")),
            Err(e) => {
                let error = format!("{e:#}");
                progress(Progress::NotRolledOut {
                    namespace,
                    owner,
                    error: &error,
                });
                outcome.not_rolled_out.push(error);
            }
        }
    }
    Ok(outcome)
}

/// The workload as the API has it, as JSON.
async fn fetch<K>(client: &kube::Client, namespace: &str, name: &str) -> Result<serde_json::Value>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let obj = Api::<K>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .with_context(|| format!("reading {}/{name} in {namespace}", K::kind(&())))?;
    serde_json::to_value(&obj).with_context(|| format!("{}/{name} as JSON", K::kind(&())))
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
                "{kind}/{name} in {namespace} did not finish rolling out within {} s; \
                 `kubectl -n {namespace} rollout status {}/{name}` and its Pods' events say \
                 what it waits for (a Pod on a Node that is not Ready, an image that does not \
                 pull). Repair goes on with the next workload, and does not restart this one \
                 again for this template",
                timeout.as_secs(),
                kind.to_lowercase()
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::check::{counts, table};

    #[test]
    fn repair_takes_workloads_and_leaves_bare_and_job_pods() {
        let r = |owner: &str, state| PodReport {
            namespace: "ns".into(),
            pod: "p".into(),
            owner: owner.into(),
            state,
            reason: String::new(),
            repaired_for: None,
        };
        let reports = [
            r("Deployment/web", State::Missing),
            r("Deployment/web", State::Stale),
            r("StatefulSet/db", State::Current),
            r("Job/once", State::Missing),
            r("Pod/bare", State::Stale),
            r("DaemonSet/agent", State::Skipped),
        ];
        let plan = to_repair(&reports, "h1");
        assert_eq!(
            plan.workloads,
            [("ns".to_owned(), "Deployment/web".to_owned())]
        );
        assert!(plan.given_up.is_empty());
        let left: Vec<&str> = plan.untouched.iter().map(|r| r.owner.as_str()).collect();
        assert_eq!(left, ["Job/once", "Pod/bare"]);
        let t = table(&reports);
        assert!(t.starts_with("NAMESPACE  OWNER"), "{t}");
        assert_eq!(t.lines().count(), 7);
        assert_eq!(counts(&reports)[&State::Missing], 2);
    }

    /// Issue 33: a workload whose Pods a restart cannot make current (its template opts out,
    /// the config that judges it is not the one served, ...) was restarted on every run.
    #[test]
    fn a_workload_restarted_for_this_template_is_never_restarted_again() {
        let r = |pod: &str, owner: &str, state, repaired_for: Option<&str>| PodReport {
            namespace: "ns".into(),
            pod: pod.into(),
            owner: owner.into(),
            state,
            reason: "the webhook would inject it now".into(),
            repaired_for: repaired_for.map(str::to_owned),
        };
        // Restarted for h1; its new Pods still missing: given up, both of them one line.
        let after = [
            r("web-new-1", "Deployment/web", State::Missing, Some("h1")),
            r("web-new-2", "Deployment/web", State::Missing, Some("h1")),
            r("db-0", "StatefulSet/db", State::Stale, None),
        ];
        let plan = to_repair(&after, "h1");
        assert_eq!(
            plan.workloads,
            [("ns".to_owned(), "StatefulSet/db".to_owned())]
        );
        let [(ns, owner, pod)] = plan.given_up.as_slice() else {
            panic!("one given up: {:?}", plan.given_up);
        };
        assert_eq!((ns.as_str(), owner.as_str()), ("ns", "Deployment/web"));
        let note = given_up_note(ns, owner, pod);
        assert!(
            note.contains("not repaired again: ns/Deployment/web"),
            "{note}"
        );
        assert!(note.contains("web-new-1 is still missing"), "{note}");
        // A Pod of the old rollout, not yet gone, does not bring the restart back.
        let mixed = [
            r("web-old", "Deployment/web", State::Missing, None),
            r("web-new", "Deployment/web", State::Missing, Some("h1")),
        ];
        assert!(to_repair(&mixed, "h1").workloads.is_empty());
        // A new config (h2) is a new reason: one more restart, for it.
        let plan = to_repair(&after, "h2");
        assert_eq!(plan.workloads.len(), 2);
        assert!(plan.given_up.is_empty());
        // Current Pods restarted for h1 are done, not given up.
        let done = [r("web-new", "Deployment/web", State::Current, Some("h1"))];
        let plan = to_repair(&done, "h1");
        assert!(plan.workloads.is_empty() && plan.given_up.is_empty());
    }

    /// A restart whose rollout never finished (a DaemonSet Pod on a Node that is not Ready)
    /// was restarted again at every round, and each time repair waited on it for the whole
    /// rollout timeout before any other workload. The stamp on the workload's own template
    /// says it was restarted for this config, whatever its Pods say.
    #[test]
    fn a_workload_stamped_for_this_template_is_not_restarted_again() {
        let workload = |annotations: serde_json::Value| {
            serde_json::json!({"kind": "DaemonSet", "metadata": {"name": "agent"},
                "spec": {"template": {"metadata": {"annotations": annotations}}}})
        };
        let stamped = workload(serde_json::json!({
            REPAIRED_FOR_KEY: "h1",
            RESTARTED_AT_KEY: "2026-12-05T06:00:00Z",
        }));
        assert!(restarted_for(&stamped, "h1"));
        // A new config is a new reason for one restart.
        assert!(!restarted_for(&stamped, "h2"));
        // Restarted by kubectl, or never: no stamp of ours.
        let by_kubectl =
            workload(serde_json::json!({"kubectl.kubernetes.io/restartedAt": "2026-12-05"}));
        assert!(!restarted_for(&by_kubectl, "h1"));
        assert!(!restarted_for(
            &serde_json::json!({"spec": {"template": {}}}),
            "h1"
        ));
        assert!(!restarted_for(&serde_json::json!({}), "h1"));
        let note = not_again_note("ns", "DaemonSet/agent", "h1");
        assert!(
            note.starts_with("not restarted again: ns/DaemonSet/agent")
                && note.contains("sidecar-injector.io/repairedFor=h1")
                && note.contains("`kubectl -n ns rollout status daemonset/agent`"),
            "{note}"
        );
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
}
