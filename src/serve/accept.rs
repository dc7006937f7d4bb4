//! The TLS listener's loop and each connection's task: handshake, HTTP/1.1 or HTTP/2 until
//! the client closes, and the ways this server ends a connection on purpose.
//!
//! **Recycling** (issue "Every replica carries load"): a client keeps a connection for as
//! long as the server allows, and kube-apiserver picks a webhook Service's endpoint only when
//! it dials. So a connection is asked to end after [`Recycle::max_requests`] requests or
//! [`Recycle::max_age`], whichever comes first, and the client dials again, to any replica.
//! The ask rides on an answer, never on an idle connection, so no request is ever cut:
//! - HTTP/1.1: the answer carries `Connection: close`; hyper closes the connection once that
//!   answer is written, and the client knows not to send another request on it. An idle
//!   connection past its age is left alone: a close from the server there could race a
//!   request the client is sending, and Go does not retry a POST lost that way.
//! - HTTP/2: a graceful GOAWAY after the answer (hyper sends the two-step GOAWAY with a PING
//!   in between): streams already open finish, and the client opens new ones elsewhere.
//!
//! The same ask is made while the server drains after SIGTERM (`server.rs`).

use crate::serve::connections::{self, Registry, Shed, Slot};
use crate::serve::linger;
use crate::serve::server::AppState;
use axum::Router;
use axum::http::{HeaderValue, header};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tracing::{Instrument, debug, debug_span, warn};

/// A client that has not finished its TLS handshake by then is dropped (the apiserver's takes
/// milliseconds).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// A connection that sends no request this long after its handshake is closed: the apiserver
/// sends its request at once on a new connection.
const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// hyper applies this both to a request's headers and to an idle keep-alive connection
/// waiting for its next request. It is longer than the apiserver's idle-connection timeout
/// (90 s), so the client, not this server, closes idle connections: a server-side close can
/// race a request the apiserver is sending, and Go does not retry a POST lost that way.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(120);
/// Connection slots (SECURITY.md: Connection slots): at the cap an idle connection of the
/// peer holding the most is closed for a new one, never the new one refused while any is idle.
const LIMITS: connections::Limits = connections::Limits {
    max_connections: 1024,
    max_handshakes: 256,
};

/// When a connection is asked to end: after this many requests or this age, whichever comes
/// first (`None`: no limit). Flags `--max-connection-requests`, `--max-connection-age-seconds`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Recycle {
    pub max_requests: Option<u64>,
    pub max_age: Option<Duration>,
}

impl Recycle {
    /// The defaults (docs/operations.md, "Connections that end on purpose": what they cost,
    /// and when to change them).
    pub const DEFAULT_MAX_REQUESTS: u64 = 1000;
    pub const DEFAULT_MAX_AGE_SECONDS: f64 = 30.0;

    /// Why a connection that has served `requests` requests and is `age` old ends after this
    /// answer, if it does.
    pub fn ending(&self, requests: u64, age: Duration, draining: bool) -> Option<Ending> {
        if draining {
            Some(Ending::Draining)
        } else if self.max_requests.is_some_and(|max| requests >= max) {
            Some(Ending::Requests)
        } else if self.max_age.is_some_and(|max| age >= max) {
            Some(Ending::Age)
        } else {
            None
        }
    }
}

/// Why this server asked a connection to end after an answer; the label of
/// `sidecar_injector_connections_recycled_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// It served `--max-connection-requests` requests.
    Requests,
    /// It was older than `--max-connection-age-seconds` when a request came.
    Age,
    /// The server is draining after SIGTERM.
    Draining,
}

impl Ending {
    pub const ALL: [Ending; 3] = [Ending::Requests, Ending::Age, Ending::Draining];

    pub fn as_str(self) -> &'static str {
        match self {
            Ending::Requests => "requests",
            Ending::Age => "age",
            Ending::Draining => "draining",
        }
    }
}

/// Accepts TLS connections until `stop`, then hands back the registry of those still open.
/// Every connection is accepted; the registry makes room for it (module `connections`).
pub async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: Router,
    state: Arc<AppState>,
    recycle: Recycle,
    stop: watch::Receiver<bool>,
) -> Arc<Registry> {
    let mut stopped = std::pin::pin!(stopped(stop));
    let registry = Registry::new(LIMITS);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256);
    let builder = Arc::new(builder);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (slot, shed) = registry.admit(peer.ip());
        for reason in shed {
            state.metrics.connection_shed(reason.as_str());
        }
        let Some(slot) = slot else {
            debug!(%peer, "every connection is busy: refused");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let conn = Connection {
            acceptor: acceptor.clone(),
            app: app.clone(),
            builder: builder.clone(),
            state: state.clone(),
            recycle,
        };
        tokio::spawn(conn.serve(tcp, slot).instrument(debug_span!("conn", %peer)));
    }
    registry
}

/// Resolves once the stop flag is raised (or its sender is gone).
pub async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// What one connection's task needs.
struct Connection {
    acceptor: TlsAcceptor,
    app: Router,
    builder: Arc<auto::Builder<TokioExecutor>>,
    state: Arc<AppState>,
    recycle: Recycle,
}

/// One connection's ask to end: made once, by the first answer that finds a reason.
#[derive(Default)]
struct Asked {
    asked: AtomicBool,
    /// Wakes the connection's task, which sends an HTTP/2 connection its GOAWAY.
    wake: Notify,
}

impl Asked {
    /// True the first time only.
    fn ask(&self) -> bool {
        let first = !self.asked.swap(true, Ordering::AcqRel);
        if first {
            self.wake.notify_one();
        }
        first
    }
}

impl Connection {
    /// Handshake, then HTTP until the client closes, the registry asks for the slot back, no
    /// first request comes, an answer ends it (recycling, draining), or the server stops.
    async fn serve(self, tcp: tokio::net::TcpStream, slot: Slot) {
        let accepted = Instant::now();
        let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(tcp));
        let tls = tokio::select! {
            r = handshake => match r {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    debug!(error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    debug!("TLS handshake timed out");
                    self.state.metrics.connection_shed(Shed::HandshakeTimeout.as_str());
                    return;
                }
            },
            _ = slot.close.notified() => return,
        };
        slot.handshake_done();
        self.state.metrics.connection_opened();
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
        let asked = Arc::new(Asked::default());
        let activity = slot.activity.clone();
        let (app, state, recycle) = (self.app, self.state.clone(), self.recycle);
        let ask = asked.clone();
        let service =
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let guard = activity.start();
                let requests = activity.requests();
                let (app, state, ask) = (app.clone(), state.clone(), ask.clone());
                async move {
                    let mut resp = app.oneshot(req).await;
                    // Judged when the answer is ready: a drain that began while it was
                    // being made still moves the client on.
                    let ending = recycle.ending(requests, accepted.elapsed(), state.draining());
                    if let (Some(why), Ok(resp)) = (ending, resp.as_mut()) {
                        // On HTTP/2 hyper drops this header; the task sends GOAWAY instead.
                        resp.headers_mut()
                            .insert(header::CONNECTION, HeaderValue::from_static("close"));
                        if ask.ask() {
                            state.metrics.connection_recycled(why.as_str());
                        }
                    }
                    drop(guard);
                    resp
                }
            });
        let (lent, lender) = linger::lend(tls);
        let conn = self.builder.serve_connection(TokioIo::new(lent), service);
        let mut conn = std::pin::pin!(conn);
        let first_request = tokio::time::sleep(FIRST_REQUEST_TIMEOUT);
        let mut first_request = std::pin::pin!(first_request);
        let mut drain = slot.drain.clone();
        let (mut closing, mut first_checked) = (false, false);
        loop {
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        debug!(error = %e, "connection ended with an error");
                    }
                    break;
                }
                // HTTP/1.1 ends by itself after the answer that carries Connection: close;
                // HTTP/2 needs its GOAWAY.
                _ = asked.wake.notified(), if h2 && !closing => {
                    debug!("HTTP/2 connection asked to end: GOAWAY");
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                _ = slot.close.notified(), if !closing => {
                    debug!("closed for a new connection (at the connection cap)");
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                _ = drain.wait_for(|d| *d), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                _ = &mut first_request, if !first_checked && !closing => {
                    first_checked = true;
                    if slot.activity.requests() == 0 {
                        debug!("no request after the handshake: closed");
                        self.state.metrics.connection_shed(Shed::NoFirstRequest.as_str());
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
            }
        }
        // hyper is done: what it wrote last (an answer with Connection: close, the final
        // GOAWAY) must reach the client, not be lost to a reset (module `linger`).
        if let Some(tls) = lender.take_back() {
            tokio::select! {
                _ = linger::close_gently(tls, |t| t.get_mut().0, linger::LINGER) => {}
                _ = slot.close.notified() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn a_connection_ends_at_whichever_limit_comes_first() {
        let r = Recycle {
            max_requests: Some(3),
            max_age: Some(SECOND * 30),
        };
        assert_eq!(r.ending(1, SECOND, false), None);
        assert_eq!(r.ending(2, SECOND * 29, false), None);
        assert_eq!(r.ending(3, SECOND, false), Some(Ending::Requests));
        assert_eq!(r.ending(1, SECOND * 30, false), Some(Ending::Age));
        assert_eq!(r.ending(1, SECOND, true), Some(Ending::Draining));
    }

    #[test]
    fn no_limit_never_ends_a_connection_but_a_drain_does() {
        let r = Recycle {
            max_requests: None,
            max_age: None,
        };
        assert_eq!(r.ending(u64::MAX, SECOND * 86_400, false), None);
        assert_eq!(r.ending(1, Duration::ZERO, true), Some(Ending::Draining));
    }

    #[test]
    fn a_connection_is_asked_to_end_once() {
        let asked = Asked::default();
        assert!(asked.ask());
        assert!(!asked.ask());
        assert!(!asked.ask());
    }
}
