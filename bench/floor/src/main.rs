//! The performance floor: the same stack as the webhook (tokio, rustls with ring, hyper-util,
//! axum), parsing the same AdmissionReview, answering a fixed "allowed". It is a crate of its
//! own, built with its dependencies' default features and the default release profile, so
//! nothing the webhook chooses (serde_json's `preserve_order`, LTO) moves the yardstick.
//! `bench/load.sh` measures the webhook against it.
//!
//!     cargo run --release --manifest-path bench/floor/Cargo.toml -- 127.0.0.1:18444 CERT.pem KEY.pem [value|raw]
//!
//! `value` (default) parses the review into a `serde_json::Value`, as a typical webhook does;
//! `raw` only scans it (the object stays raw JSON) and reads the uid: the cheapest parse there is.
//! `patch=FILE` parses as `value` does and answers every review with the same JSON Patch (the
//! base64 text in FILE): the e2e cost test's yardstick for what the apiserver pays to apply
//! and store an injected Pod, with no injection work on the webhook's side.

use axum::Router;
use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::sync::Arc;

#[derive(serde::Deserialize)]
struct RawReview<'a> {
    #[serde(borrow)]
    request: RawRequest<'a>,
}

#[derive(serde::Deserialize)]
struct RawRequest<'a> {
    #[serde(borrow)]
    uid: &'a str,
    /// Scanned (validated), never read.
    #[serde(borrow, default)]
    #[allow(dead_code)]
    object: Option<&'a RawValue>,
}

fn uid_of(body: &[u8], raw: bool) -> Option<Value> {
    if raw {
        let review: RawReview<'_> = serde_json::from_slice(body).ok()?;
        Some(Value::String(review.request.uid.to_owned()))
    } else {
        let review: Value = serde_json::from_slice(body).ok()?;
        review.pointer("/request/uid").cloned()
    }
}

fn mutate(raw: bool, patch: Option<&str>, body: &[u8]) -> Response {
    let Some(uid) = uid_of(body, raw) else {
        return (StatusCode::BAD_REQUEST, "not a review").into_response();
    };
    let mut response = json!({"uid": uid, "allowed": true});
    if let Some(patch) = patch {
        response["patchType"] = "JSONPatch".into();
        response["patch"] = patch.into();
    }
    let out = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response});
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(&out).unwrap_or_default(),
    )
        .into_response()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (listen, cert, key, mode) = match args.as_slice() {
        [_, l, c, k] => (l, c, k, "value"),
        [_, l, c, k, m] => (l, c, k, m.as_str()),
        _ => return Err("usage: floor ADDR:PORT CERT.pem KEY.pem [value|raw|patch=FILE]".into()),
    };
    let (raw, patch) = match mode {
        "value" => (false, None),
        "raw" => (true, None),
        m if m.starts_with("patch=") => {
            let text = std::fs::read_to_string(&m["patch=".len()..])?;
            (false, Some(text.trim().to_owned()))
        }
        other => return Err(format!("mode {other:?}: want value, raw or patch=FILE").into()),
    };
    let patch: Option<&'static str> = patch.map(|p| &*Box::leak(p.into_boxed_str()));
    let certs = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let app = Router::new().route(
        "/mutate",
        post(move |body: Bytes| async move { mutate(raw, patch, &body) }),
    );
    let listener = tokio::net::TcpListener::bind(listen.as_str()).await?;
    eprintln!("floor ({mode}) listening on {listen}");
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let (acceptor, service) = (acceptor.clone(), TowerToHyperService::new(app.clone()));
        tokio::spawn(async move {
            if let Ok(tls) = acceptor.accept(tcp).await {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            }
        });
    }
}
