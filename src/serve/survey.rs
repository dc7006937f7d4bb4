//! Inside `serve`: the Pods' states against the live templates, surveyed every
//! `repair.intervalSeconds` (metric `pods{state}`), the nodes that cannot run the Docker
//! socket mount (logged once, metric `nodes_without_docker`), and, with `repair.enabled`, the
//! repair loop: one replica, elected by the Lease `sidecar-injector-repair` in the injector's
//! namespace, rolls the workloads `check --repair` would. Judging is `check`'s, which asks
//! the engine.

use crate::cluster::check::{self, Scope};
use crate::cluster::lease::Elector;
use crate::engine::config::Config;
use crate::serve::metrics::Metrics;
use arc_swap::ArcSwap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The Lease the repairing replica holds.
pub const LEASE_NAME: &str = "sidecar-injector-repair";
/// How long a Lease lasts unless renewed, and how often the holder renews it.
const LEASE_SECONDS: i32 = 15;
const RENEW_EVERY: Duration = Duration::from_secs(5);

/// What the survey reads and writes of the webhook process: the live config and the metrics.
/// Handed in by `serve`, so this module needs nothing else of it.
pub struct Handles {
    pub config: Arc<ArcSwap<Config>>,
    pub metrics: Arc<Metrics>,
}

/// Starts the survey (and repair) loop and the Lease keeper on the current runtime.
pub fn spawn(client: kube::Client, state: Handles, own_namespace: String, identity: String) {
    let state = Arc::new(state);
    let leader = Arc::new(AtomicBool::new(false));
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
            loop {
                if state.config.load().settings.repair.enabled {
                    let held = match elector.hold().await {
                        Ok(held) => held,
                        Err(e) => {
                            tracing::warn!(
                                error = format!("{e:#}"),
                                "repair: the Lease cannot be held"
                            );
                            false
                        }
                    };
                    if held != leader.swap(held, Ordering::Relaxed) {
                        tracing::info!(lease = LEASE_NAME, identity = %id, leader = held, "repair: leadership changed");
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
        let mut limiter = check::Limiter::default();
        loop {
            let config = state.config.load_full();
            nodes(&client, &state, &mut advice_said).await;
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
                            &config.settings.repair,
                            &identity,
                            &leader,
                            &mut limiter,
                        )
                        .await;
                    }
                }
                Err(e) => tracing::warn!(error = format!("{e:#}"), "survey of the Pods failed"),
            }
            tokio::time::sleep(Duration::from_secs(config.settings.repair.interval_seconds)).await;
        }
    });
}

/// Every survey: the nodes that lack the Docker socket the template mounts, as a metric
/// that follows node and config changes; the advice is logged when it changes, not every round.
async fn nodes(client: &kube::Client, state: &Handles, said: &mut Option<String>) {
    let config = state.config.load();
    let Some(volume) = check::docker_socket_volume(&config) else {
        state.metrics.nodes_without_docker(0);
        *said = None;
        return;
    };
    match check::nodes_without_docker(client).await {
        Ok((without, total)) => {
            state.metrics.nodes_without_docker(without.len());
            let advice = check::docker_socket_advice(&volume, &without, total);
            if advice.is_some() && advice != *said {
                tracing::warn!(
                    nodes = without.len(),
                    "{}",
                    advice.as_deref().unwrap_or_default()
                );
            }
            *said = advice;
        }
        Err(e) => tracing::debug!(error = format!("{e:#}"), "nodes cannot be listed"),
    }
}

async fn repair(
    client: &kube::Client,
    state: &Handles,
    reports: &[check::PodReport],
    settings: &crate::engine::config::Repair,
    identity: &str,
    leader: &AtomicBool,
    limiter: &mut check::Limiter,
) {
    let (workloads, _) = check::to_repair(reports);
    if workloads.is_empty() {
        return;
    }
    let why = check::repair_notes(reports);
    let opts = check::RepairOptions {
        max_per_minute: settings.max_per_minute,
        rollout_timeout: Duration::from_secs(300),
        reporter: crate::cluster::events::reporter(),
    };
    // One workload at a time, and only while this replica still holds the Lease.
    let keep_going = || leader.load(Ordering::Relaxed);
    let result = check::repair(
        client,
        &workloads,
        &why,
        &opts,
        limiter,
        &keep_going,
        |progress| match progress {
            check::Progress::Waiting {
                wait,
                next,
                per_minute,
            } => tracing::info!(
                wait_s = wait.as_secs(),
                next,
                "repair: at most {per_minute} restarts a minute; waiting"
            ),
            check::Progress::Restarted { namespace, owner } => {
                state.metrics.repaired();
                tracing::info!(namespace, workload = owner, identity, "repair: restarted");
            }
        },
    )
    .await;
    if let Err(e) = result {
        tracing::warn!(error = format!("{e:#}"), "repair stopped");
    }
}
