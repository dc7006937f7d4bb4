//! `serve`: the axum router on a rustls listener, the plain metrics listener, hot reload of
//! certificate and config, and the graceful drain on SIGTERM.

use crate::cluster::namespaces::{self, Namespaces};
use crate::engine::config::{Config, Source};
use crate::engine::preview;
use crate::serve::accept::{Recycle, accept_loop, stopped};
use crate::serve::admission::{self, Decoded};
use crate::serve::metrics::Metrics;
use crate::serve::serving_cert::{self, Certificates};
use crate::serve::serving_config::ServingConfig;
use crate::serve::tls;
use crate::serve::{config_files, file_watch};
use anyhow::{Context, Result};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch as signal_watch;
use tokio_rustls::TlsAcceptor;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tracing::{debug, error, info, warn};

/// Largest body accepted: the apiserver's own limit for an object is 3 MiB; an
/// AdmissionReview wraps one (two for UPDATE), so this leaves room and refuses far beyond.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// A request (body included) not read and answered by then gets 408: a client trickling
/// its body cannot hold a worker. The apiserver's own webhook timeout is at most 30 s.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// After the listener closes: how long open connections may still send a first request.
const LINGER: Duration = Duration::from_secs(1);
/// How often certificate and config files are checked for changes.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// What `serve` needs to start.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub source: Source,
    pub own_namespace: String,
    pub listen: SocketAddr,
    pub metrics_listen: SocketAddr,
    pub certificates: Certificates,
    pub client_ca_file: Option<PathBuf>,
    /// After SIGTERM: keep answering (with `Connection: close`) this long.
    pub drain_grace: Duration,
    /// After the grace period: wait at most this long for requests in flight.
    pub drain_timeout: Duration,
    /// When a client connection is asked to end (so the client dials again, to any replica).
    pub recycle: Recycle,
    /// The API access to use; `None`: as kubectl finds it (KUBECONFIG, ~/.kube/config, the
    /// in-cluster service account), and none at all when there is none.
    pub kubeconfig: Option<PathBuf>,
}

/// Shared by every request.
pub struct AppState {
    pub config: Arc<ServingConfig>,
    pub metrics: Arc<Metrics>,
    /// Each namespace's labels and annotations, when the API can be read.
    pub namespaces: Option<Namespaces>,
    /// Warning Events for failed injections, when the API can be written.
    pub events: Option<crate::cluster::events::InjectionEvents>,
    ready: AtomicBool,
    draining: AtomicBool,
    /// Set while the certificate served is not its source's current one.
    pub certificate_behind: Arc<serving_cert::Behind>,
}

impl AppState {
    pub fn new(
        config: Config,
        namespaces: Option<Namespaces>,
        events: Option<crate::cluster::events::InjectionEvents>,
    ) -> Arc<AppState> {
        let metrics = Metrics::new();
        metrics.config_loaded(&config.template_hash);
        Arc::new(AppState {
            config: Arc::new(ServingConfig::new(config)),
            metrics: Arc::new(metrics),
            namespaces,
            events,
            ready: AtomicBool::new(true),
            draining: AtomicBool::new(false),
            certificate_behind: Arc::default(),
        })
    }

    /// After SIGTERM: every answer asks its client to reconnect, to another replica.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// The webhook's routes (served over TLS).
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .route("/preview", post(preview_one))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .with_state(state)
}

/// The metrics port's routes (plain HTTP).
pub fn metrics_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state)
}

async fn readyz(State(app): State<Arc<AppState>>) -> Response {
    if !app.ready.load(Ordering::Relaxed) || app.draining.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response()
    } else if let Some(why) = app.certificate_behind.get() {
        (StatusCode::SERVICE_UNAVAILABLE, why).into_response()
    } else {
        "ok".into_response()
    }
}

async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.encode(),
    )
        .into_response()
}

fn bad_request(msg: &str) -> Response {
    let line = msg.lines().next().unwrap_or(msg);
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{line}\n"),
    )
        .into_response()
}

fn json_response(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn mutate(State(app): State<Arc<AppState>>, body: Bytes) -> Response {
    let start = Instant::now();
    let config = app.config.load();
    let policy = config.settings.failure_policy;
    let decoded = match admission::decode(&body) {
        Ok(d) => d,
        Err(admission::BadRequest(msg)) => {
            app.metrics
                .admission("failed", "bad_request", start.elapsed());
            debug!(reason = %msg, "unreadable AdmissionReview");
            return bad_request(&msg);
        }
    };
    let review = match decoded {
        Decoded::Review(r) => r,
        Decoded::Unreadable(u) => {
            warn!(uid = %u.uid, problem = %u.problem, "AdmissionReview request could not be read");
            let reason = admission::UNREADABLE_REASON;
            app.metrics
                .admission("failed", reason.as_str(), start.elapsed());
            return match u.respond(policy) {
                Ok(body) => json_response(body),
                Err(e) => bad_request(&e),
            };
        }
    };
    let namespace = match &app.namespaces {
        Some(cache) => cache.get(review.namespace()).await,
        None => None,
    };
    let decision = review.decide(&config, namespace.as_deref().map(namespaces::context));
    let answer = review.respond(&decision, policy);
    let took = start.elapsed();
    let (outcome, reason) = (decision.outcome().as_str(), decision.reason.as_str());
    app.metrics.admission(outcome, reason, took);
    // One event per admission: debug when it went as configured, warn when injection failed.
    // Only names and reasons: never env values or object bodies.
    let failed = decision.outcome() == crate::engine::Outcome::Failed;
    if (failed || decision.reason == crate::engine::Reason::PodSecurity)
        && !review.dry_run()
        && let Some(events) = &app.events
        && let Some(view) = review.pod()
    {
        events.injection_failed(
            review.namespace(),
            &view,
            decision.reason,
            &decision.message,
        );
    }
    if !failed && !tracing::enabled!(tracing::Level::DEBUG) {
        return json_or_error(answer);
    }
    let view = review.pod();
    let pod = view.as_ref().map(|v| v.name()).unwrap_or_default();
    let (uid, namespace, dry_run) = (review.uid(), review.namespace(), review.dry_run());
    let duration_us = took.as_micros() as u64;
    if failed {
        warn!(uid, namespace, pod, outcome, reason, duration_us, failure_policy = ?policy, dry_run, detail = %decision.message, "injection failed");
    } else {
        debug!(uid, namespace, pod, outcome, reason, duration_us, dry_run, detail = %decision.message, "admitted");
    }
    json_or_error(answer)
}

fn json_or_error(answer: Result<Vec<u8>, String>) -> Response {
    match answer {
        Ok(body) => json_response(body),
        Err(e) => {
            error!(error = %e, "cannot encode the answer");
            (StatusCode::INTERNAL_SERVER_ERROR, e).into_response()
        }
    }
}

#[derive(serde::Deserialize)]
struct PreviewQuery {
    namespace: Option<String>,
}

async fn preview_one(
    State(app): State<Arc<AppState>>,
    Query(q): Query<PreviewQuery>,
    body: Bytes,
) -> Response {
    let config = app.config.load();
    let Ok(text) = std::str::from_utf8(&body) else {
        return bad_request("the body is not UTF-8 text");
    };
    let doc = match crate::engine::yaml::from_str::<serde_json::Value>(text) {
        Ok(d) if d.is_object() => d,
        Ok(_) => return bad_request("want one object (a Pod or a workload), in JSON or YAML"),
        Err(e) => return bad_request(&format!("the body is neither JSON nor YAML: {e}")),
    };
    // The namespace as the webhook would see it, when the cache knows it.
    let name = q
        .namespace
        .clone()
        .or_else(|| {
            preview::lookup(&doc, &["metadata", "namespace"])
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "default".to_owned());
    let known = match &app.namespaces {
        Some(cache) => cache.get(&name).await,
        None => None,
    };
    let context = known.as_deref().map(namespaces::context);
    let opts = preview::Options {
        namespace: q.namespace,
        namespace_labels: context.map(|c| c.labels.clone()),
        namespace_annotations: context.map(|c| c.annotations.clone()),
        ..Default::default()
    };
    match preview::document(doc, &opts, &config) {
        Ok(p) => match serde_json::to_vec(&p.http_answer()) {
            Ok(body) => json_response(body),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        },
        Err(e) => bad_request(&e),
    }
}

/// Runs until SIGTERM or SIGINT, then drains.
pub async fn run(opts: ServeOptions) -> Result<()> {
    let started = Instant::now();
    let client = match crate::cluster::client(opts.kubeconfig.as_deref()).await {
        Ok(client) => Some(client),
        Err(e) if opts.kubeconfig.is_some() => return Err(e),
        Err(e) => {
            info!(
                reason = format!("{e:#}"),
                "no API access: namespace annotations and Pod Security levels are not read; injection goes by the request alone"
            );
            None
        }
    };
    let config = match (&opts.source, &client) {
        (Source::ConfigMap { namespace, name }, Some(client)) => {
            crate::cluster::live_config::fetch(client, namespace, name, &opts.own_namespace).await?
        }
        (Source::ConfigMap { .. }, None) => {
            anyhow::bail!(
                "--config {}: needs API access (--kubeconfig, or run in a cluster)",
                opts.source
            )
        }
        _ => config_files::load(&opts.source, &opts.own_namespace)
            .with_context(|| format!("loading the configuration from {}", opts.source))?,
    };
    for w in &config.warnings {
        warn!(warning = %w, "configuration");
    }
    info!(source = %opts.source, template_hash = %config.template_hash, "configuration loaded");
    let namespaces = client.clone().map(|client| {
        info!(
            "API access: watching namespaces (labels and annotations) for the templates, overrides and Pod Security"
        );
        Namespaces::watch(client)
    });
    let events = client.clone().map(|client| {
        crate::cluster::events::InjectionEvents::new(client, crate::cluster::events::reporter())
    });
    // The configuration as its source gives it, before the nodes decide: the live
    // ConfigMap's first delivery is this one.
    let loaded_hash = config.template_hash.clone();
    let state = AppState::new(config, namespaces, events);
    match &client {
        // Before the listener opens: no Pod is injected on a guess about the nodes.
        Some(client) => {
            crate::serve::survey::first_nodes(client, &state.config, &state.metrics).await
        }
        None => {
            if let Some(why) = state.config.load().docker_socket.explain() {
                info!("{why}");
            }
        }
    }
    let mut leader = None;
    if let Some(client) = &client {
        let identity = std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| format!("sidecar-injector-{}", std::process::id()));
        let holder = crate::serve::survey::spawn(
            client.clone(),
            crate::serve::survey::Handles {
                config: state.config.clone(),
                metrics: state.metrics.clone(),
                keeps_certificates: matches!(opts.certificates, Certificates::Secret(_)),
            },
            opts.own_namespace.clone(),
            identity,
        );
        let (config, metrics) = (state.config.clone(), state.metrics.clone());
        crate::cluster::secret_sync::spawn(
            client.clone(),
            crate::cluster::secret_sync::Handles {
                config: Box::new(move || config.load_full()),
                leader: holder.clone(),
                report: Box::new(move |counts| metrics.secret_copies(counts)),
            },
        );
        leader = Some(holder);
    }

    let resolver = serving_cert::start(
        &opts.certificates,
        client.as_ref(),
        leader,
        state.metrics.clone(),
        state.certificate_behind.clone(),
    )
    .await?;
    let tls_config = tls::server_config(resolver.clone(), opts.client_ca_file.as_deref())?;
    let acceptor = TlsAcceptor::from(Arc::new(tls_config));

    watch_config(&opts, &state, client.as_ref(), loaded_hash);

    let listener = bind(opts.listen, "--listen").await?;
    let metrics_listener = bind(opts.metrics_listen, "--metrics-listen").await?;
    // The bound addresses: with port 0 the system picked them, and this line says which.
    let bound = |l: &TcpListener, asked: SocketAddr| l.local_addr().unwrap_or(asked);
    info!(
        listen = %bound(&listener, opts.listen),
        metrics = %bound(&metrics_listener, opts.metrics_listen),
        ready_in_ms = started.elapsed().as_millis() as u64,
        "serving"
    );

    let (stop_tx, stop_rx) = signal_watch::channel(false);
    let metrics_app = metrics_router(state.clone());
    let metrics_stop = stop_rx.clone();
    let metrics_task = tokio::spawn(async move {
        let shutdown = stopped(metrics_stop);
        if let Err(e) = axum::serve(metrics_listener, metrics_app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            error!(error = %e, "metrics server");
        }
    });

    let app = router(state.clone());
    let serving = tokio::spawn(accept_loop(
        listener,
        acceptor,
        app,
        state.clone(),
        opts.recycle,
        stop_rx,
    ));

    let grace = wait_for_signal(opts.drain_grace).await;
    info!(
        grace_s = grace.as_secs_f64(),
        "shutdown signal: draining; every answer now asks its client to reconnect (Connection: close, or GOAWAY on HTTP/2)"
    );
    state.draining.store(true, Ordering::Relaxed);
    tokio::time::sleep(grace).await;
    let _ = stop_tx.send(true);
    let open = serving.await.context("the accept loop")?;
    // Connections accepted just before the listener closed may have their first request on
    // the wire; a graceful shutdown would close them as idle before reading it. Give them a
    // moment (their answers carry Connection: close), then close what is still idle.
    let linger = LINGER.min(opts.drain_timeout / 2);
    tokio::time::sleep(linger).await;
    open.drain();
    match tokio::time::timeout(opts.drain_timeout - linger, open.wait_empty()).await {
        Ok(()) => info!("every request in flight answered; bye"),
        Err(_) => warn!(
            timeout_s = opts.drain_timeout.as_secs_f64(),
            "drain timeout: closing the connections left"
        ),
    }
    let _ = metrics_task.await;
    Ok(())
}

/// SIGTERM (kubelet): the full grace period. SIGINT (Ctrl-C at a terminal): none.
async fn wait_for_signal(grace: Duration) -> Duration {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = term.recv() => grace,
                _ = tokio::signal::ctrl_c() => Duration::ZERO,
            },
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGTERM");
                let _ = tokio::signal::ctrl_c().await;
                Duration::ZERO
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        let _ = grace;
        Duration::ZERO
    }
}

/// A new configuration passed its checks: serve it (decided for the nodes last seen).
fn use_config(state: &AppState, config: Config) {
    for w in &config.warnings {
        warn!(warning = %w, "configuration");
    }
    match state.config.store(config) {
        Ok(config) => {
            info!(template_hash = %config.template_hash, "configuration reloaded");
            state.metrics.config_reload(true);
            state.metrics.config_loaded(&config.template_hash);
        }
        Err(e) => refuse_config(state, &e),
    }
}

/// A new configuration failed its checks: keep the last good one.
fn refuse_config(state: &AppState, e: &crate::engine::config::ConfigError) {
    for problem in &e.problems {
        error!(problem = %problem, "configuration refused; the last good one keeps serving");
    }
    state.metrics.config_reload(false);
}

fn watch_config(
    opts: &ServeOptions,
    state: &Arc<AppState>,
    client: Option<&kube::Client>,
    loaded: String,
) {
    match (&opts.source, client) {
        (Source::Embedded, _) => {}
        (Source::ConfigMap { namespace, name }, Some(client)) => {
            let (ok, refused) = (state.clone(), state.clone());
            let mut first = true;
            crate::cluster::live_config::watch(
                client.clone(),
                namespace.clone(),
                name.clone(),
                opts.own_namespace.clone(),
                crate::cluster::events::reporter(),
                move |config| {
                    // The watch's first delivery is what was just loaded.
                    if std::mem::take(&mut first) && config.template_hash == loaded {
                        return;
                    }
                    use_config(&ok, config)
                },
                move |e| refuse_config(&refused, e),
            );
        }
        (Source::ConfigMap { .. }, None) => {}
        (Source::Path(_), _) => {
            // A directory's file list is read again on every look: a template added to the
            // ConfigMap is a new file.
            let listed = opts.source.clone();
            let files = move || config_files::files(&listed);
            let (source, own_ns, state) = (
                opts.source.clone(),
                opts.own_namespace.clone(),
                state.clone(),
            );
            file_watch::spawn(
                "config",
                files,
                WATCH_INTERVAL,
                move || match config_files::load(&source, &own_ns) {
                    Ok(config) => use_config(&state, config),
                    Err(e) => refuse_config(&state, &e),
                },
            );
        }
    }
}

/// Binds `addr`; an error names the flag that sets it and what to do.
async fn bind(addr: SocketAddr, flag: &str) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::AddrInUse => format!(
                "another process listens on {addr}: stop it, or give this one another address with {flag} (e.g. {flag} 127.0.0.1:{})",
                addr.port().saturating_add(1)
            ),
            std::io::ErrorKind::PermissionDenied => format!(
                "ports below 1024 need privileges: choose a higher port with {flag}"
            ),
            std::io::ErrorKind::AddrNotAvailable => format!(
                "{} is not an address of this machine: choose one with {flag} (0.0.0.0 for all)",
                addr.ip()
            ),
            _ => format!("choose another address with {flag}"),
        };
        anyhow::anyhow!("listening on {addr}: {e}; {hint}")
    })
}
