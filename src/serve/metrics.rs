//! The Prometheus registry and its few instruments (prefix `sidecar_injector_`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::time::Duration;

/// The reason recorded for a body that is not a readable AdmissionReview (HTTP 400).
pub const BAD_REQUEST: &str = "bad_request";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AdmissionLabels {
    outcome: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShedLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HashLabels {
    template_hash: String,
}

/// A counter family labelled `reason`, registered with every reason at 0 from the start, so
/// rate() and alerts see them before they happen.
fn reason_counters<const N: usize>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    reasons: [&'static str; N],
) -> Family<ShedLabels, Counter> {
    let family = Family::<ShedLabels, Counter>::default();
    registry.register(name, help, family.clone());
    for reason in reasons {
        let _ = family.get_or_create(&ShedLabels { reason });
    }
    family
}

/// The instruments; cheap to share (each is an `Arc` inside).
pub struct Metrics {
    registry: Registry,
    admissions: Family<AdmissionLabels, Counter>,
    duration: Histogram,
    config_reloads: Family<ResultLabels, Counter>,
    config_info: Family<HashLabels, Gauge>,
    certificate_reloads: Family<ResultLabels, Counter>,
    certificate_expiry: Gauge,
    connections_shed: Family<ShedLabels, Counter>,
    connections: Counter,
    connections_recycled: Family<ShedLabels, Counter>,
    pods: Family<StateLabels, Gauge>,
    repairs: Counter,
    nodes_without_docker: Gauge,
    secret_copies: Family<StateLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("sidecar_injector");
        let admissions = Family::<AdmissionLabels, Counter>::default();
        registry.register(
            "admissions",
            "AdmissionReviews answered, by outcome and reason",
            admissions.clone(),
        );
        let buckets = [
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
        ];
        let duration = Histogram::new(buckets);
        registry.register_with_unit(
            "admission_duration",
            "Time to answer one AdmissionReview, from body read to answer encoded",
            Unit::Seconds,
            duration.clone(),
        );
        let config_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration loads after start, by result",
            config_reloads.clone(),
        );
        let config_info = Family::<HashLabels, Gauge>::default();
        registry.register(
            "config_info",
            "The configuration being served (1 for its template hash)",
            config_info.clone(),
        );
        let certificate_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "certificate_reloads",
            "Serving certificate loads after start, by result",
            certificate_reloads.clone(),
        );
        let certificate_expiry = Gauge::default();
        registry.register_with_unit(
            "certificate_expiry_timestamp",
            "When the serving certificate expires (Unix time)",
            Unit::Seconds,
            certificate_expiry.clone(),
        );
        let connections_shed = reason_counters(
            &mut registry,
            "connections_shed",
            "Connections closed by the server to keep its slots, by reason",
            crate::serve::connections::Shed::ALL.map(|r| r.as_str()),
        );
        let connections = Counter::default();
        registry.register(
            "connections",
            "Client connections whose TLS handshake completed (each one a handshake's work)",
            connections.clone(),
        );
        let connections_recycled = reason_counters(
            &mut registry,
            "connections_recycled",
            "Connections this server asked to end after an answer (Connection: close, or GOAWAY on HTTP/2), by reason: requests, age or draining",
            crate::serve::accept::Ending::ALL.map(|r| r.as_str()),
        );
        // Every reason from the start, at 0, so rate() and alerts see them before they happen.
        for reason in crate::engine::Reason::ALL {
            let _ = admissions.get_or_create(&AdmissionLabels {
                outcome: reason.outcome().as_str(),
                reason: reason.as_str(),
            });
        }
        let _ = admissions.get_or_create(&AdmissionLabels {
            outcome: "failed",
            reason: BAD_REQUEST,
        });
        for result in ["success", "failure"] {
            let _ = config_reloads.get_or_create(&ResultLabels { result });
            let _ = certificate_reloads.get_or_create(&ResultLabels { result });
        }
        let pods = Family::<StateLabels, Gauge>::default();
        registry.register(
            "pods",
            "Pods of the injected namespaces by state against the live templates (current, stale, missing, skipped), from the last survey",
            pods.clone(),
        );
        let repairs = Counter::default();
        registry.register(
            "repairs",
            "Workloads restarted by the repair loop",
            repairs.clone(),
        );
        let nodes_without_docker = Gauge::default();
        registry.register(
            "nodes_without_docker",
            "Nodes whose container runtime is not Docker while the template mounts the Docker socket",
            nodes_without_docker.clone(),
        );
        let secret_copies = Family::<StateLabels, Gauge>::default();
        registry.register(
            "secret_copies",
            "propagateSecrets: copies in sync, failing (not written, or no source) and foreign (a Secret of that name is someone else's), from the replica holding the Lease",
            secret_copies.clone(),
        );
        Metrics {
            registry,
            secret_copies,
            pods,
            repairs,
            nodes_without_docker,
            admissions,
            duration,
            config_reloads,
            config_info,
            certificate_reloads,
            certificate_expiry,
            connections_shed,
            connections,
            connections_recycled,
        }
    }

    pub fn admission(&self, outcome: &'static str, reason: &'static str, took: Duration) {
        self.admissions
            .get_or_create(&AdmissionLabels { outcome, reason })
            .inc();
        self.duration.observe(took.as_secs_f64());
    }

    pub fn pods(&self, state: &'static str, n: usize) {
        self.pods
            .get_or_create(&StateLabels { state })
            .set(n as i64);
    }

    /// The copies of `propagateSecrets` after the Lease holder's last pass; `None` (not the
    /// holder, or nothing to propagate) removes the series.
    pub fn secret_copies(&self, counts: Option<crate::cluster::secret_sync::Counts>) {
        let Some(c) = counts else {
            self.secret_copies.clear();
            return;
        };
        for (state, n) in [
            ("in_sync", c.in_sync),
            ("failing", c.failing),
            ("foreign", c.foreign),
            ("orphaned", c.orphaned),
        ] {
            self.secret_copies
                .get_or_create(&StateLabels { state })
                .set(n as i64);
        }
    }

    pub fn repaired(&self) {
        self.repairs.inc();
    }

    pub fn nodes_without_docker(&self, n: usize) {
        self.nodes_without_docker.set(n as i64);
    }

    pub fn config_reload(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.config_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn config_loaded(&self, template_hash: &str) {
        self.config_info.clear();
        self.config_info
            .get_or_create(&HashLabels {
                template_hash: template_hash.to_owned(),
            })
            .set(1);
    }

    pub fn certificate_reload(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.certificate_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn certificate_expiry(&self, unix_seconds: i64) {
        self.certificate_expiry.set(unix_seconds);
    }

    pub fn connection_shed(&self, reason: &'static str) {
        self.connections_shed
            .get_or_create(&ShedLabels { reason })
            .inc();
    }

    /// A TLS handshake completed: one more connection.
    pub fn connection_opened(&self) {
        self.connections.inc();
    }

    /// A connection was asked to end after an answer.
    pub fn connection_recycled(&self, reason: &'static str) {
        self.connections_recycled
            .get_or_create(&ShedLabels { reason })
            .inc();
    }

    /// The exposition text (OpenMetrics, which Prometheus reads).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}
