//! Connections that end on purpose, and the lame duck after SIGTERM (issue "Every replica
//! carries load"): the real binary, driven over HTTP/1.1 and HTTP/2 as kube-apiserver drives
//! it. Nothing here times the server; the counts are what a user would see in its metrics.

mod common;

use common::{Server, patch_of, read_response, review, simple_pod, tls_stream};
use serde_json::Value;
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The value of one series of the metrics text (`name` with its labels, as exposed).
fn series(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no series {name} in the metrics:\n{text}"))
}

/// An answer to `uid` with the collector's patch, or what was wrong with it.
fn injected_answer(body: &str, uid: &str) -> Result<(), String> {
    let v: Value = serde_json::from_str(body).map_err(|e| format!("{e}: {body}"))?;
    if v["response"]["uid"] != uid {
        return Err(format!("answer for another uid: {body}"));
    }
    patch_of(&v)
        .map(|_| ())
        .ok_or_else(|| format!("no patch: {body}"))
}

/// 16 clients at once, each on a keep-alive connection, against a cap of 5 requests per
/// connection: every request is answered, and the server opened a connection for about
/// every fifth one.
#[test]
fn connection_recycling_loses_nothing() {
    let server = Arc::new(Server::start(&[
        "--max-connection-requests",
        "5",
        "--max-connection-age-seconds",
        "0",
    ]));
    let (clients, each) = (16, 40);
    let closes = Arc::new(AtomicUsize::new(0));
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let threads: Vec<_> = (0..clients)
        .map(|t| {
            let (server, closes, failures) = (server.clone(), closes.clone(), failures.clone());
            std::thread::spawn(move || {
                let client = server.blocking_client();
                for i in 0..each {
                    let uid = format!("c{t}-{i}");
                    let body = review(&uid, "team-a", &simple_pod("p")).to_string();
                    let outcome = client
                        .post(server.url("/mutate"))
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .map_err(|e| format!("{e:?}"))
                        .and_then(|r| {
                            if r.headers()
                                .get("connection")
                                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"))
                            {
                                closes.fetch_add(1, Ordering::Relaxed);
                            }
                            let status = r.status();
                            let text = r.text().map_err(|e| e.to_string())?;
                            if status != 200 {
                                return Err(format!("{status}: {text}"));
                            }
                            injected_answer(&text, &uid)
                        });
                    if let Err(e) = outcome {
                        failures.lock().unwrap().push(format!("{uid}: {e}"));
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let failures: Vec<String> = std::mem::take(&mut failures.lock().unwrap());
    assert!(
        failures.is_empty(),
        "{} of {} requests not answered with a patch, e.g. {:?}",
        failures.len(),
        clients * each,
        &failures[..failures.len().min(3)]
    );
    let total = clients * each;
    let closes = closes.load(Ordering::Relaxed);
    let metrics = server.metrics();
    let opened = series(&metrics, "sidecar_injector_connections_total");
    let recycled = series(
        &metrics,
        "sidecar_injector_connections_recycled_total{reason=\"requests\"}",
    );
    eprintln!(
        "{total} requests answered on {opened} connections; {closes} answers carried Connection: close, {recycled} recycled for requests"
    );
    // Every fifth answer of each client's connection ends it: 8 per client.
    assert_eq!(closes, total / 5, "answers that ended their connection");
    assert_eq!(recycled as usize, total / 5, "connections recycled");
    assert!(
        opened as usize >= total / 5,
        "only {opened} connections for {total} requests at 5 a connection: nothing was recycled"
    );
}

/// HTTP/2 (what kube-apiserver speaks to a webhook at a loopback URL): the connection is
/// ended with a graceful GOAWAY, every stream the server took is answered, and the client
/// goes on, on a new connection; a request the GOAWAY left unprocessed is sent again, as Go
/// sends it.
#[test]
fn connection_recycling_over_http2_ends_with_goaway() {
    let server = Server::start(&[
        "--max-connection-requests",
        "5",
        "--max-connection-age-seconds",
        "0",
    ]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (streams, each) = (4, 50);
    let (answered, connections, unsent, failures) =
        runtime.block_on(h2_load(&server, streams, each));
    let metrics = server.metrics();
    let recycled = series(
        &metrics,
        "sidecar_injector_connections_recycled_total{reason=\"requests\"}",
    );
    eprintln!(
        "HTTP/2: {answered} answered on {connections} client connections, {recycled} recycled; {unsent} sent again (never written before their connection closed); failures {failures:?}"
    );
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(answered, streams * each);
    // Each connection carries at least 5 requests, and the few streams sent while its GOAWAY
    // was on the wire; 200 requests need about 40.
    assert!(
        connections >= 20,
        "{connections} connections for {answered} requests at 5 a connection: no GOAWAY"
    );
    assert!(
        recycled >= 20.0,
        "the server counted {recycled} recycled connections"
    );
}

type H2Sender = hyper::client::conn::http2::SendRequest<http_body_util::Full<axum::body::Bytes>>;

/// `streams` concurrent streams on one HTTP/2 connection at a time, `each` requests per
/// stream; a closed connection is replaced. Returns the answers, the connections opened, the
/// requests sent again because their connection closed before they were written, and the
/// failures.
async fn h2_load(
    server: &Server,
    streams: usize,
    each: usize,
) -> (usize, usize, usize, Vec<String>) {
    let connect = || async {
        let mut config = common::client_tls_config(&server.ca, None);
        config.alpn_protocols = vec![b"h2".to_vec()];
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
            .await
            .unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect("localhost".try_into().unwrap(), tcp)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(b"h2".as_slice()));
        let (send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tls),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        send
    };
    let sender: Arc<tokio::sync::Mutex<(H2Sender, usize)>> =
        Arc::new(tokio::sync::Mutex::new((connect().await, 1)));
    let mut tasks = Vec::new();
    for s in 0..streams {
        let (sender, url) = (sender.clone(), server.url("/mutate"));
        let connect = &connect;
        // Each task shares the current connection; the first to see it closed replaces it.
        tasks.push(async move {
            let (mut ok, mut unsent, mut failures) = (0, 0, Vec::new());
            for i in 0..each {
                let uid = format!("h2-{s}-{i}");
                let body = review(&uid, "team-a", &simple_pod("p")).to_string();
                // A request the client never wrote (hyper's `Canceled`: its connection closed
                // while it was queued), or one on a stream the server's GOAWAY says it never
                // processed, is sent again on a new connection, as Go's client (kube-
                // apiserver's) does. Anything else is a failure.
                let mut tries = 0;
                loop {
                    tries += 1;
                    let mut send = {
                        let mut held = sender.lock().await;
                        if held.0.ready().await.is_err() {
                            held.0 = connect().await;
                            held.1 += 1;
                        }
                        held.0.clone()
                    };
                    let req = hyper::Request::post(url.as_str())
                        .header("content-type", "application/json")
                        .body(http_body_util::Full::new(axum::body::Bytes::from(
                            body.clone(),
                        )))
                        .unwrap();
                    match send.send_request(req).await {
                        Ok(resp) => {
                            use http_body_util::BodyExt;
                            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
                            match injected_answer(&String::from_utf8_lossy(&bytes), &uid) {
                                Ok(()) => ok += 1,
                                Err(e) => failures.push(e),
                            }
                        }
                        Err(e) if (e.is_canceled() || above_goaway(&e)) && tries < 3 => {
                            unsent += 1;
                            continue;
                        }
                        Err(e) => failures.push(format!("{uid}: {e:?}")),
                    }
                    break;
                }
            }
            (ok, unsent, failures)
        });
    }
    let results = futures::future::join_all(tasks).await;
    let connections = sender.lock().await.1;
    let answered = results.iter().map(|r| r.0).sum();
    let unsent = results.iter().map(|r| r.1).sum();
    let failures = results.into_iter().flat_map(|r| r.2).collect();
    (answered, connections, unsent, failures)
}

/// A stream refused by a graceful GOAWAY: its id is above the GOAWAY's last-stream-id, so the
/// server never processed it (RFC 9113 6.8).
fn above_goaway(e: &hyper::Error) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<h2::Error>())
        .is_some_and(|h| h.is_go_away() && h.reason() == Some(h2::Reason::NO_ERROR))
}

/// SIGTERM: `/readyz` fails at once, while connections already open keep being answered
/// (each answer asking its client to go elsewhere) until the grace period ends; then the
/// listener closes and the process exits 0.
#[test]
fn lame_duck_on_sigterm() {
    let mut server = Server::start(&["--drain-grace-seconds", "3"]);
    // Three keep-alive connections, open and used before the signal.
    let mut open: Vec<_> = (0..3).map(|_| tls_stream(&server)).collect();
    for s in &mut open {
        write!(s, "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        let answer = read_response(s);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(!answer.to_ascii_lowercase().contains("connection: close"));
    }
    let mut probe = tls_stream(&server);
    server.sigterm();
    let signalled = Instant::now();
    // /readyz, asked again and again on fresh connections, until it fails.
    loop {
        write!(probe, "GET /readyz HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        let answer = read_response(&mut probe);
        if answer.starts_with("HTTP/1.1 503") {
            break;
        }
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            signalled.elapsed() < Duration::from_secs(5),
            "/readyz still passes 5 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let unready_after = signalled.elapsed();
    eprintln!("/readyz failed {unready_after:?} after SIGTERM");
    assert!(
        unready_after < Duration::from_millis(100),
        "/readyz took {unready_after:?} to fail after SIGTERM"
    );
    // Through the grace period, each open connection is still answered, once each, spread
    // over it: a POST /mutate as the apiserver sends it, with a patch and Connection: close.
    for (i, s) in open.iter_mut().enumerate() {
        std::thread::sleep(Duration::from_millis(600));
        let uid = format!("lame-duck-{i}");
        let body = review(&uid, "team-a", &simple_pod("p")).to_string();
        write!(
            s,
            "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let answer = read_response(s);
        let at = signalled.elapsed();
        assert!(answer.starts_with("HTTP/1.1 200"), "{at:?}: {answer}");
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{at:?}: {answer}"
        );
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
        injected_answer(body, &uid).unwrap();
        // New connections too are still taken during the grace period.
        assert!(
            TcpStream::connect(("127.0.0.1", server.port)).is_ok() || at >= Duration::from_secs(3),
            "new connections refused {at:?} after SIGTERM, within the 3 s grace"
        );
    }
    // After the delay, the listener closes and the process exits 0.
    let status = server.child.wait().unwrap();
    assert!(status.success(), "exit {status}:\n{}", server.log_text());
    assert!(signalled.elapsed() >= Duration::from_secs(3));
    assert!(TcpStream::connect(("127.0.0.1", server.port)).is_err());
    let log = server.log_text();
    assert!(log.contains("draining"), "{log}");
}
