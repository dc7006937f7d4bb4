//! Running it like production: certificate and config hot reload through kubelet-style
//! `..data` symlink swaps, the graceful drain on SIGTERM, client certificates, zero-flag start.

mod common;

use common::{
    Server, client_tls_config, patch_of, read_response, review, simple_pod, tls_stream, write,
};
use serde_json::Value;
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A directory laid out as kubelet mounts a Secret or ConfigMap: `KEY -> ..data/KEY`,
/// `..data -> ..<version>`; an update writes a new version and renames a new `..data` over it.
struct KubeletDir {
    root: PathBuf,
    version: usize,
}

impl KubeletDir {
    fn new(root: &Path, files: &[(&str, Vec<u8>)]) -> KubeletDir {
        std::fs::create_dir_all(root).unwrap();
        let mut d = KubeletDir {
            root: root.to_owned(),
            version: 0,
        };
        d.update(files);
        for (name, _) in files {
            std::os::unix::fs::symlink(format!("..data/{name}"), root.join(name)).unwrap();
        }
        d
    }

    fn update(&mut self, files: &[(&str, Vec<u8>)]) {
        self.version += 1;
        let version = format!("..2026_11_23_v{}", self.version);
        let dir = self.root.join(&version);
        std::fs::create_dir(&dir).unwrap();
        for (name, data) in files {
            std::fs::write(dir.join(name), data).unwrap();
        }
        let tmp = self.root.join("..data_tmp");
        std::os::unix::fs::symlink(&version, &tmp).unwrap();
        std::fs::rename(&tmp, self.root.join("..data")).unwrap();
    }

    fn path(&self, name: &str) -> String {
        self.root.join(name).display().to_string()
    }
}

fn serial_of(resp: &reqwest::blocking::Response) -> String {
    let info = resp
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .expect("tls info");
    let der = info.peer_certificate().expect("a peer certificate");
    let (_, cert) = x509_parser::parse_x509_certificate(der).expect("X.509");
    cert.raw_serial_as_string()
}

fn pem_pair(dir: &Path) -> (Vec<u8>, Vec<u8>, String) {
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let w = sidecar_injector::cli::certs::write(dir, &names).unwrap();
    let pair = sidecar_injector::serve::tls::load_pair(&w.cert, &w.key).unwrap();
    (
        std::fs::read(&w.cert).unwrap(),
        std::fs::read(&w.key).unwrap(),
        pair.serial,
    )
}

/// A separate client posting AdmissionReviews in a loop until stopped, counting answers.
/// `on_ok` sees every 200 (to look at the certificate served, say).
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    /// Requests sent and not answered 200.
    failed: Arc<AtomicUsize>,
    /// Connections refused before a request was sent (a server that stopped listening).
    refused: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(
        client: reqwest::blocking::Client,
        url: String,
        on_ok: impl Fn(&reqwest::blocking::Response) + Send + 'static,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed, refused) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let thread = {
            let (stop, ok, failed, refused) =
                (stop.clone(), ok.clone(), failed.clone(), refused.clone());
            std::thread::spawn(move || {
                let body = review("load", "team-a", &simple_pod("p")).to_string();
                let deadline = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match client.post(&url).body(body.clone()).send() {
                        Ok(r) if r.status() == 200 => {
                            on_ok(&r);
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) if e.is_connect() => {
                            refused.fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        };
        Load {
            stop,
            ok,
            failed,
            refused,
            thread: Some(thread),
        }
    }

    /// Waits until `more` further requests have been answered 200 (the load is running
    /// against the server as it is now), at most 15 s.
    fn answered(&self, more: usize) {
        let target = self.ok.load(Ordering::Relaxed) + more;
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.ok.load(Ordering::Relaxed) < target {
            assert!(
                Instant::now() < deadline,
                "the load got {} answers, waiting for {target}",
                self.ok.load(Ordering::Relaxed)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the client; returns (ok, failed, refused).
    fn finish(mut self) -> (usize, usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
        )
    }
}

#[test]
fn certificate_rotation_under_load_fails_no_request() {
    let tmp = tempfile::tempdir().unwrap();
    let ca_dir = tmp.path().join("ca");
    let (cert_a, key_a, serial_a) = pem_pair(&ca_dir);
    let (cert_b, key_b, serial_b) = pem_pair(&ca_dir); // same CA, new pair
    assert_ne!(serial_a, serial_b);
    let mut secret = KubeletDir::new(
        &tmp.path().join("tls"),
        &[("tls.crt", cert_a.clone()), ("tls.key", key_a.clone())],
    );
    let args = vec![
        "--tls-cert-file".into(),
        secret.path("tls.crt"),
        "--tls-key-file".into(),
        secret.path("tls.key"),
    ];
    let server_dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(server_dir, &args, ca_dir.join("ca.crt"));

    // A client that opens a new connection (a new handshake) for every request.
    // Full handshakes only: a resumed TLS session reports the certificate it began with.
    let mut tls = client_tls_config(&ca_dir.join("ca.crt"), None);
    tls.resumption = rustls::client::Resumption::disabled();
    let client = reqwest::blocking::Client::builder()
        .use_preconfigured_tls(tls)
        .pool_max_idle_per_host(0)
        .tls_info(true)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let seen_b = Arc::new(AtomicBool::new(false));
    let load = {
        let (seen_b, serial_b) = (seen_b.clone(), serial_b.clone());
        Load::start(client.clone(), server.url("/mutate"), move |r| {
            if serial_of(r) == serial_b {
                seen_b.store(true, Ordering::Relaxed);
            }
        })
    };
    load.answered(5);
    secret.update(&[("tls.crt", cert_b.clone()), ("tls.key", key_b.clone())]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !seen_b.load(Ordering::Relaxed) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        seen_b.load(Ordering::Relaxed),
        "new handshakes never got the new certificate:\n{}",
        server.log_text()
    );

    // A mismatched pair (B's certificate, A's key) is refused; B keeps serving.
    secret.update(&[("tls.crt", cert_b.clone()), ("tls.key", key_a.clone())]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !server
        .metrics()
        .contains("sidecar_injector_certificate_reloads_total{result=\"failure\"} 1")
    {
        assert!(
            Instant::now() < deadline,
            "the bad pair was never refused:\n{}",
            server.metrics()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Served after the refusal too, before the load stops.
    load.answered(5);
    let (ok, failed, refused) = load.finish();
    eprintln!("certificate rotation under load: {ok} answered, {failed} failed, {refused} refused");
    let r = client.get(server.url("/readyz")).send().unwrap();
    assert_eq!(
        serial_of(&r),
        serial_b,
        "after a refused pair the last good one serves"
    );
    assert_eq!(
        (failed, refused),
        (0, 0),
        "requests failed during rotation ({ok} ok)"
    );
    assert!(ok > 10);
    assert!(
        server.log_text().contains("do not belong together"),
        "the refusal is logged with its reason"
    );
    // The replica says it is behind its source: /readyz fails with why (issue 32, item 5),
    // so the Service stops sending it calls until its source is usable again.
    let ready = client.get(server.url("/readyz")).send().unwrap();
    assert_eq!(ready.status(), 503);
    let why = ready.text().unwrap();
    assert!(
        why.contains("serving an earlier certificate") && why.contains("refused"),
        "{why}"
    );
    secret.update(&[("tls.crt", cert_b.clone()), ("tls.key", key_b.clone())]);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = client.get(server.url("/readyz")).send().unwrap();
        if r.status() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never Ready again: {}",
            r.text().unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn template_with(container: &str) -> Vec<u8> {
    format!("containers:\n- name: {container}\n  image: example/{container}:1\n").into_bytes()
}

fn injected_name(server: &Server) -> String {
    let answer: Value = server
        .blocking_client()
        .post(server.url("/mutate"))
        .json(&review("cfg", "team-a", &simple_pod("p")))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let patch = patch_of(&answer).expect("a patch");
    let op = patch
        .as_array()
        .unwrap()
        .iter()
        .find(|op| op["path"] == "/spec/containers/-")
        .expect("a container added")
        .clone();
    op["value"]["name"].as_str().unwrap().to_owned()
}

fn wait_for(what: &str, server: &Server, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "{what} never happened:\n{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn config_swaps_are_served_and_a_broken_one_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let settings = b"failurePolicy: Ignore\n".to_vec();
    let mut cm = KubeletDir::new(
        &tmp.path().join("config"),
        &[
            ("config.yaml", settings.clone()),
            ("mutate.yaml", template_with("collector-a")),
        ],
    );
    let server = Server::start(&["--config", &cm.root.display().to_string()]);
    assert_eq!(injected_name(&server), "collector-a");
    let load = Load::start(server.blocking_client(), server.url("/mutate"), |_| {});

    cm.update(&[
        ("config.yaml", settings.clone()),
        ("mutate.yaml", template_with("collector-b")),
    ]);
    wait_for("the new config", &server, || {
        injected_name(&server) == "collector-b"
    });
    assert!(
        server
            .metrics()
            .contains("sidecar_injector_config_reloads_total{result=\"success\"} 1")
    );

    let broken =
        b"containers:\n- name: collector-c\n  image: x\n  imagePullPolicy: Sometimes\n".to_vec();
    cm.update(&[("config.yaml", settings), ("mutate.yaml", broken)]);
    wait_for("the refusal", &server, || {
        server
            .metrics()
            .contains("sidecar_injector_config_reloads_total{result=\"failure\"} 1")
    });
    assert_eq!(
        injected_name(&server),
        "collector-b",
        "the last good config keeps serving"
    );
    assert_eq!(
        server
            .blocking_client()
            .get(server.url("/readyz"))
            .send()
            .unwrap()
            .status(),
        200
    );
    let (ok, failed, refused) = load.finish();
    eprintln!("config swaps under load: {ok} answered, {failed} failed, {refused} refused");
    assert_eq!(
        (failed, refused),
        (0, 0),
        "requests failed during the swaps ({ok} ok)"
    );
    assert!(ok > 10);
    let log = server.log_text();
    assert!(
        log.contains("mutate.yaml: containers[0].imagePullPolicy"),
        "the log names the problem's path:\n{log}"
    );
}

/// A rustls client trusting `ca`, presenting `identity` (certificate, key) when given.
#[test]
fn sigterm_drains_requests_in_flight_and_exits_zero() {
    let mut server = Server::start(&[
        "--drain-grace-seconds",
        "1.5",
        "--drain-timeout-seconds",
        "20",
    ]);
    let body = review("in-flight", "team-a", &simple_pod("slow")).to_string();
    let (head, tail) = body.as_bytes().split_at(body.len() / 2);

    // A request whose body is still arriving when SIGTERM comes.
    let mut slow = tls_stream(&server);
    write!(slow, "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len()).unwrap();
    slow.write_all(head).unwrap();
    slow.flush().unwrap();
    // A keep-alive connection in use before SIGTERM.
    let mut keep = tls_stream(&server);
    write!(keep, "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    assert!(read_response(&mut keep).starts_with("HTTP/1.1 200"));
    std::thread::sleep(Duration::from_millis(200));

    // A separate client keeps posting, opening a new connection each time.
    let fresh = reqwest::blocking::Client::builder()
        .use_preconfigured_tls(client_tls_config(&server.ca, None))
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let load = Load::start(fresh, server.url("/mutate"), |_| {});
    load.answered(5);

    server.sigterm();
    // The signal is taken when /readyz turns 503: the grace period (1.5 s) has begun.
    let probe = server.blocking_client();
    let deadline = Instant::now() + Duration::from_secs(10);
    while probe
        .get(server.url("/readyz"))
        .send()
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(
            Instant::now() < deadline,
            "SIGTERM never turned /readyz to 503"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    // During the grace period: still answering, asking clients to reconnect elsewhere.
    write!(keep, "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let during = read_response(&mut keep);
    assert!(during.starts_with("HTTP/1.1 200"), "{during}");
    assert!(
        during.to_ascii_lowercase().contains("connection: close"),
        "{during}"
    );
    let ready = server
        .blocking_client()
        .get(server.url("/readyz"))
        .send()
        .unwrap();
    assert_eq!(ready.status(), 503, "not ready while draining");

    // After the grace period (the listener closed: new connections refused) the in-flight
    // request still completes.
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", server.port)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the listener never closed after the grace period"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    slow.write_all(tail).unwrap();
    slow.flush().unwrap();
    let answer = read_response(&mut slow);
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "the in-flight request was dropped: {answer:?}\n{}",
        server.log_text()
    );
    assert!(answer.contains("\"uid\":\"in-flight\""), "{answer}");

    let status = server.child.wait().unwrap();
    let (ok, failed, refused) = load.finish();
    eprintln!(
        "SIGTERM under load: {ok} answered, {failed} failed, {refused} refused after the listener closed"
    );
    assert_eq!(
        failed, 0,
        "a request the server had received was not answered ({ok} ok, {refused} refused after it stopped listening)"
    );
    assert!(
        ok > 10,
        "the load was served through the grace period ({ok} ok)"
    );
    assert!(
        status.success(),
        "exit status {status}:\n{}",
        server.log_text()
    );
    // nothing listens any more
    assert!(TcpStream::connect(("127.0.0.1", server.port)).is_err());
}

struct ClientCert {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// A client CA and a certificate it signs for clientAuth, as a cluster gives the apiserver.
fn client_certificate(dir: &Path) -> ClientCert {
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    std::fs::create_dir_all(dir).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["kube-apiserver".to_owned()]).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer).unwrap();
    let out = ClientCert {
        ca: dir.join("ca.crt"),
        cert: dir.join("client.crt"),
        key: dir.join("client.key"),
    };
    std::fs::write(&out.ca, ca_cert.pem()).unwrap();
    std::fs::write(&out.cert, cert.pem()).unwrap();
    std::fs::write(&out.key, key.serialize_pem()).unwrap();
    out
}

#[test]
fn client_certificates_are_required_with_client_ca_file() {
    let tmp = tempfile::tempdir().unwrap();
    let client = client_certificate(&tmp.path().join("client"));
    let server_certs =
        sidecar_injector::cli::certs::write(&tmp.path().join("server"), &["localhost".to_owned()])
            .unwrap();
    let log = tmp.path().join("log");
    let path = |p: &Path| p.display().to_string();
    let args = [
        "--tls-cert-file".to_owned(),
        path(&server_certs.cert),
        "--tls-key-file".to_owned(),
        path(&server_certs.key),
        "--client-ca-file".to_owned(),
        path(&client.ca),
    ];
    let (mut child, port, _) = common::spawn_serve(&args, &log);
    let url = format!("https://localhost:{port}/healthz");
    let with_cert = reqwest::blocking::Client::builder()
        .use_preconfigured_tls(client_tls_config(
            &server_certs.ca,
            Some((&client.cert, &client.key)),
        ))
        .build()
        .unwrap();
    let without = reqwest::blocking::Client::builder()
        .use_preconfigured_tls(client_tls_config(&server_certs.ca, None))
        .build()
        .unwrap();
    let mut served = false;
    for _ in 0..100 {
        if with_cert.get(&url).send().is_ok_and(|r| r.status() == 200) {
            served = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let refused = without.get(&url).send().is_err();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        served,
        "a client with a certificate from the client CA is served:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(refused, "a client without a certificate is refused");
}

#[test]
fn zero_flag_start_serves_the_default_collector_verified_against_certs_ca() {
    // With no flags, serve takes 0.0.0.0:8443 and 0.0.0.0:9090 by design. When another
    // program holds either, this cannot be checked here: say so, and do not count it failed.
    for port in [8443, 9090] {
        if let Err(e) = std::net::TcpListener::bind(("0.0.0.0", port)) {
            eprintln!("SKIPPED zero_flag_start: port {port} is taken on this machine ({e})");
            return;
        }
    }
    let cwd = tempfile::tempdir().unwrap();
    let log = cwd.path().join("log");
    let started = Instant::now();
    let mut child = std::process::Command::new(common::bin())
        .arg("serve")
        .current_dir(cwd.path())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let ca_path = cwd.path().join("certs/ca.crt");
    let mut answer = None;
    for _ in 0..200 {
        if ca_path.exists() {
            let ca = reqwest::Certificate::from_pem(&std::fs::read(&ca_path).unwrap()).unwrap();
            let client = reqwest::blocking::Client::builder()
                .tls_built_in_root_certs(false)
                .add_root_certificate(ca)
                .build()
                .unwrap();
            if client
                .get("https://localhost:8443/readyz")
                .send()
                .is_ok_and(|r| r.status() == 200)
            {
                eprintln!(
                    "ready after {:?} (first start, certificates generated)",
                    started.elapsed()
                );
                let r: Value = client
                    .post("https://localhost:8443/mutate")
                    .json(&review("zero", "team-a", &simple_pod("p")))
                    .send()
                    .unwrap()
                    .json()
                    .unwrap();
                answer = Some(r);
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    let answer =
        answer.unwrap_or_else(|| panic!("never ready on 8443 (is the port taken?):\n{log}"));
    let patch = patch_of(&answer).expect("a patch");
    assert!(
        patch
            .to_string()
            .contains("bitbucket-pipelines-metrics-collector")
    );
    assert!(
        log.contains("certs/ca.crt"),
        "the log says where the CA is:\n{log}"
    );
    for f in ["ca.crt", "tls.crt", "tls.key"] {
        assert!(cwd.path().join("certs").join(f).exists(), "certs/{f}");
    }
}

#[test]
fn json_logs_carry_the_request_span_and_no_secret_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cm.yaml");
    write(
        &path,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata:\n  config.yaml: |\n    values: {token: s3cr3t-value}\n  mutate.yaml: |\n    containers:\n    - name: c\n      image: c:1\n      env: [{name: TOKEN, value: '{{ values.token }}'}]\n",
    );
    let server = Server::start(&[
        "--config",
        &path.display().to_string(),
        "--log-format",
        "json",
    ]);
    let mut pod = simple_pod("logged");
    pod["spec"]["containers"][0]["env"] =
        serde_json::json!([{"name": "PASSWORD", "value": "hunter2"}]);
    let answer: Value = server
        .blocking_client()
        .post(server.url("/mutate"))
        .json(&review("log-uid", "team-a", &pod))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(patch_of(&answer).is_some());
    // The request's log line is written as it is answered; wait for it, not for a time.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (log, line) = loop {
        let log = server.log_text();
        if let Some(line) = log.lines().find(|l| l.contains("log-uid")) {
            let line = line.to_owned();
            break (log, line);
        }
        assert!(
            Instant::now() < deadline,
            "no log line for the request:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let line = line.as_str();
    let entry: Value = serde_json::from_str(line).expect("a JSON log line");
    let text = entry.to_string();
    for field in ["log-uid", "team-a", "logged", "injected"] {
        assert!(text.contains(field), "{field} missing from {text}");
    }
    assert!(
        !log.contains("hunter2") && !log.contains("s3cr3t-value"),
        "a secret value reached the log:\n{log}"
    );
}

/// The image runs with a read-only root: a `--dev-certs-dir` that cannot be written (here a
/// file stands where it would be) moves the dev certificates under the temporary directory,
/// and they are served; when that cannot be written either, serve exits saying what to pass.
#[test]
fn dev_certificates_move_to_the_temporary_directory_when_theirs_cannot_be_written() {
    let dir = tempfile::tempdir().unwrap();
    let blocked = dir.path().join("blocked");
    std::fs::write(&blocked, "a file, not a directory").unwrap();
    let certs = blocked.join("certs").display().to_string();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let log = dir.path().join("server.log");
    let (mut child, port, _) = common::spawn_serve_with_env(
        &["--dev-certs-dir".into(), certs.clone()],
        &[("TMPDIR", tmp.to_str().unwrap())],
        &log,
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    assert!(port != 0, "serve did not start: {text}");
    let ca = tmp.join("sidecar-injector-dev-certs/ca.crt");
    assert!(ca.is_file(), "{text}");
    assert!(
        text.contains("--dev-certs-dir cannot be written"),
        "the log says where the certificates went: {text}"
    );

    let (mut child, port, _) = common::spawn_serve_with_env(
        &["--dev-certs-dir".into(), certs],
        &[("TMPDIR", blocked.to_str().unwrap())],
        &log,
    );
    let status = child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(port, 0, "{text}");
    assert!(!status.success());
    assert!(
        text.contains("pass --tls-cert-file and --tls-key-file (the Deployment does), or a writable --dev-certs-dir"),
        "{text}"
    );
}
