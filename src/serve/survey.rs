//! Inside `serve`: the Pods' states against the live templates, surveyed every
//! `repair.intervalSeconds` (metric `pods{state}`), the nodes (which decide
//! `values.mountDockerSocket: auto`; with the socket mounted anyway, those that cannot run it
//! are logged once and counted in `nodes_without_docker`), and, with `repair.enabled`, the
//! repair loop: one replica, elected by the Lease `sidecar-injector-repair` in the injector's
//! namespace, rolls the workloads `check --repair` would. Judging is `check`'s, which asks
//! the engine.

use crate::cluster::check::{self, Scope};
use crate::cluster::lease::Elector;
use crate::cluster::{nodes, repair};
use crate::engine::config::docker_socket::{self, Nodes};
use crate::serve::metrics::Metrics;
use crate::serve::serving_config::ServingConfig;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The Lease the repairing replica holds.
pub use crate::cluster::lease::REPAIR_LEASE as LEASE_NAME;
use crate::cluster::lease::Tenure;
/// How long a Lease lasts unless renewed, and how often the holder renews it.
const LEASE_SECONDS: i32 = 15;
const RENEW_EVERY: Duration = Duration::from_secs(5);
/// The longest a renewal may take: with [`RENEW_EVERY`] it fits in the Lease, less the
/// tenure's margin, so the next renewal is tried before the tenure runs out.
const RENEW_TIMEOUT: Duration = Duration::from_secs(4);

/// What the survey reads and writes of the webhook process: the live config and the metrics.
/// Handed in by `serve`, so this module needs nothing else of it.
pub struct Handles {
    pub config: Arc<ServingConfig>,
    pub metrics: Arc<Metrics>,
    /// `--cert-secret`: the Lease holder keeps the certificate Secret, so it is always held.
    pub keeps_certificates: bool,
}

/// Starts the survey (and repair) loop and the Lease keeper on the current runtime. Returns
/// whether this replica holds the Lease: it repairs, and it writes the Secret copies.
pub fn spawn(
    client: kube::Client,
    state: Handles,
    own_namespace: String,
    identity: String,
) -> Arc<AtomicBool> {
    let state = Arc::new(state);
    let leader = Arc::new(AtomicBool::new(false));
    let holder = leader.clone();
    {
        let (client, leader, ns, id) = (
            client.clone(),
            leader.clone(),
            own_namespace.clone(),
            identity.clone(),
        );
        let state = state.clone();
        tokio::spawn(async move {
            let elector = Elector::new(client, &ns, LEASE_NAME, &id, LEASE_SECONDS);
            let lease = Duration::from_secs(LEASE_SECONDS as u64);
            let mut tenure = Tenure::default();
            loop {
                let config = state.config.load();
                let settings = &config.settings;
                if state.keeps_certificates
                    || settings.repair.enabled
                    || !settings.propagate_secrets.is_empty()
                {
                    // A renewal waits at most what is left of the tenure (kube's client has
                    // no read timeout): a hung call must not keep this replica writing after
                    // another has taken the Lease.
                    let sent = std::time::Instant::now();
                    let wait = tenure
                        .left(sent)
                        .unwrap_or(RENEW_TIMEOUT)
                        .min(RENEW_TIMEOUT);
                    match tokio::time::timeout(wait, elector.hold()).await {
                        Ok(Ok(true)) => tenure.renewed(sent, lease),
                        Ok(Ok(false)) => tenure.lost(),
                        Ok(Err(e)) => tracing::warn!(
                            error = format!("{e:#}"),
                            "the Lease cannot be held (repair, propagateSecrets and --cert-secret wait for it)"
                        ),
                        Err(_) => tracing::warn!(
                            timeout_s = wait.as_secs_f64(),
                            "the Lease's renewal did not answer in time: this replica steps down when its tenure runs out"
                        ),
                    }
                    let held = tenure.holds(std::time::Instant::now());
                    if held != leader.swap(held, Ordering::Relaxed) {
                        tracing::info!(lease = LEASE_NAME, identity = %id, leader = held, "leadership changed: the holder repairs, writes the Secret copies and keeps the certificate Secret");
                    }
                } else {
                    leader.store(false, Ordering::Relaxed);
                }
                tokio::time::sleep(RENEW_EVERY).await;
            }
        });
    }
    tokio::spawn(async move {
        let mut advice_said: Option<String> = None;
        let mut limiter = repair::Limiter::default();
        // The workloads repair gave up on, said once each.
        let mut given_up_said = std::collections::BTreeSet::new();
        loop {
            // The nodes first: the round judges with the configuration they decide.
            survey_nodes(&client, &state, &mut advice_said).await;
            let config = state.config.load_full();
            match check::survey(&client, &config, &Scope::AllInjected, check::SERVE_PAGE).await {
                Ok(reports) => {
                    for (s, n) in check::counts(&reports) {
                        state.metrics.pods(s.as_str(), n);
                    }
                    if config.settings.repair.enabled && leader.load(Ordering::Relaxed) {
                        repair(
                            &client,
                            &state,
                            &reports,
                            &config,
                            &identity,
                            &leader,
                            (&mut limiter, &mut given_up_said),
                        )
                        .await;
                    }
                }
                Err(e) => tracing::warn!(error = format!("{e:#}"), "survey of the Pods failed"),
            }
            tokio::time::sleep(Duration::from_secs(config.settings.repair.interval_seconds)).await;
        }
    });
    holder
}

/// Before serving: the nodes decide `values.mountDockerSocket: auto`. When they cannot be
/// read, `auto` mounts the socket (as without API access) and the log says what to grant.
pub async fn first_nodes(client: &kube::Client, config: &ServingConfig, metrics: &Metrics) {
    match tokio::time::timeout(FIRST_NODES_WITHIN, nodes::list(client)).await {
        Ok(Ok(nodes)) => seen(config, metrics, nodes, &mut None),
        Ok(Err(e)) => tracing::warn!(
            error = format!("{e:#}"),
            "the nodes cannot be read: values.mountDockerSocket: auto mounts the Docker socket until they can; grant list on nodes (manifests/ does)"
        ),
        Err(_) => tracing::warn!(
            within_s = FIRST_NODES_WITHIN.as_secs(),
            "the nodes were not read in time: values.mountDockerSocket: auto mounts the Docker socket until the survey reads them"
        ),
    }
}

/// How long `serve` waits for the nodes before it serves anyway.
const FIRST_NODES_WITHIN: Duration = Duration::from_secs(10);

/// Every survey: the nodes decide `auto` again (a new configuration is served when that
/// changes what it injects, and the log says why, once), and, when the templates mount the
/// socket anyway, the nodes without Docker are a metric and a warning logged when it changes.
async fn survey_nodes(client: &kube::Client, state: &Handles, said: &mut Option<String>) {
    match nodes::list(client).await {
        Ok(nodes) => seen(&state.config, &state.metrics, nodes, said),
        Err(e) => tracing::debug!(error = format!("{e:#}"), "nodes cannot be listed"),
    }
}

fn seen(config: &ServingConfig, metrics: &Metrics, nodes: Nodes, said: &mut Option<String>) {
    match config.nodes_seen(nodes.clone()) {
        Some(Ok(c)) => {
            tracing::info!(
                template_hash = %c.template_hash,
                "{}",
                c.docker_socket.explain().unwrap_or_default()
            );
            metrics.config_loaded(&c.template_hash);
        }
        Some(Err(e)) => {
            for problem in &e.problems {
                tracing::error!(problem = %problem, "the configuration decided for the nodes does not load; the last good one keeps serving");
            }
        }
        None => {}
    }
    let advice = docker_socket::socket_volume(&config.load())
        .and_then(|volume| docker_socket::advice(&volume, &nodes));
    metrics.nodes_without_docker(match advice {
        Some(_) => nodes.without_docker().len(),
        None => 0,
    });
    if advice.is_some() && advice != *said {
        tracing::warn!(
            nodes = nodes.without_docker().len(),
            "{}",
            advice.as_deref().unwrap_or_default()
        );
    }
    *said = advice;
}

async fn repair(
    client: &kube::Client,
    state: &Handles,
    reports: &[check::PodReport],
    config: &crate::engine::config::Config,
    identity: &str,
    leader: &AtomicBool,
    (limiter, given_up_said): (
        &mut repair::Limiter,
        &mut std::collections::BTreeSet<String>,
    ),
) {
    let settings = &config.settings.repair;
    let plan = repair::to_repair(reports, &config.template_hash);
    for (namespace, owner, pod) in &plan.given_up {
        let note = repair::given_up_note(namespace, owner, pod);
        if given_up_said.insert(note.clone()) {
            tracing::warn!(namespace = %namespace, workload = %owner, "{note}");
        }
    }
    let workloads = plan.workloads;
    if workloads.is_empty() {
        return;
    }
    let why = repair::repair_notes(reports);
    let opts = repair::RepairOptions {
        max_per_minute: settings.max_per_minute,
        rollout_timeout: Duration::from_secs(300),
        reporter: crate::cluster::events::reporter(),
        template_hash: config.template_hash.clone(),
    };
    // One workload at a time, and only while this replica still holds the Lease.
    let keep_going = || leader.load(Ordering::Relaxed);
    let result = repair::repair(
        client,
        &workloads,
        &why,
        &opts,
        limiter,
        &keep_going,
        |progress| match progress {
            repair::Progress::Waiting {
                wait,
                next,
                per_minute,
            } => tracing::info!(
                wait_s = wait.as_secs(),
                next,
                "repair: at most {per_minute} restarts a minute; waiting"
            ),
            repair::Progress::Restarted { namespace, owner } => {
                state.metrics.repaired();
                tracing::info!(namespace, workload = owner, identity, "repair: restarted");
            }
            repair::Progress::NotAgain { namespace, owner } => {
                let note = repair::not_again_note(namespace, owner, &config.template_hash);
                if given_up_said.insert(note.clone()) {
                    tracing::warn!(namespace, workload = owner, "{note}");
                }
            }
            repair::Progress::NotRolledOut {
                namespace,
                owner,
                error,
            } => tracing::warn!(namespace, workload = owner, "repair: {error}"),
        },
    )
    .await;
    if let Err(e) = result {
        tracing::warn!(error = format!("{e:#}"), "repair stopped");
    }
}
