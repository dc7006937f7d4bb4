//! Starting the real binary and talking to it as kube-apiserver does: HTTPS verified against
//! the CA, AdmissionReviews in and out.
#![allow(dead_code)]

pub mod schema;

use base64::Engine as _;
use serde_json::{Value, json};
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The binary under test: the one cargo built beside this test, unless `SIDECAR_INJECTOR_BIN`
/// names another. tests/e2e/run points it at the release build, so the suite's own code can
/// be the debug build `cargo test` already made while every `serve` it starts is the binary
/// users run.
pub fn bin() -> String {
    std::env::var("SIDECAR_INJECTOR_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_sidecar-injector").to_owned())
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Starts `serve` on free loopback ports with `args`, logging (at debug) to `log`; returns
/// the process and its TLS and metrics ports. Readiness is the caller's to wait for.
pub fn spawn_serve(args: &[String], log: &Path) -> (Child, u16, u16) {
    spawn_serve_with_env(args, &[], log)
}

/// [`spawn_serve`] with these environment variables set. The server binds port 0 and its
/// "serving" log line says which ports it got: no port is picked here and then raced for.
/// When the server exits before serving, the ports are 0 and the caller sees the exit.
pub fn spawn_serve_with_env(
    args: &[String],
    env: &[(&str, &str)],
    log: &Path,
) -> (Child, u16, u16) {
    let log_file = std::fs::File::create(log).expect("log file");
    let mut child = Command::new(bin())
        .arg("serve")
        .args(default_ports(args))
        .args(args)
        .env("LOG_LEVEL", "debug")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .expect("start the server");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(ports) = text.lines().find_map(serving_ports) {
            return (child, ports.0, ports.1);
        }
        if let Ok(Some(_)) = child.try_wait() {
            return (child, 0, 0);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!(
        "serve logged no \"serving\" line within 60 s:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// Port 0 on loopback for `--listen` and `--metrics-listen`, unless `args` give them.
fn default_ports(args: &[String]) -> Vec<&'static str> {
    let mut out = Vec::new();
    for flag in ["--listen", "--metrics-listen"] {
        if !args
            .iter()
            .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
        {
            out.extend([flag, "127.0.0.1:0"]);
        }
    }
    out
}

/// The TLS and metrics ports of serve's "serving" line, in its text or JSON log format.
fn serving_ports(line: &str) -> Option<(u16, u16)> {
    if !line.contains("serving") {
        return None;
    }
    // The text format colours its fields: drop the escape sequences (ESC [ ... m).
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    let line = plain.as_str();
    let port_of = |key: &str| -> Option<u16> {
        let at = line
            .find(&format!("{key}="))
            .map(|i| i + key.len() + 1)
            .or_else(|| {
                line.find(&format!("\"{key}\":\""))
                    .map(|i| i + key.len() + 4)
            })?;
        let addr: String = line[at..]
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
            .collect();
        addr.rsplit(':').next()?.parse().ok()
    };
    Some((port_of("listen")?, port_of("metrics")?))
}

/// Validates every document of YAML files against the Kubernetes types, strictly
/// ([`schema`]); kinds in `skip` are not Kubernetes' own. Returns the number checked.
pub fn schema_valid_skipping(files: &[PathBuf], skip: &[&str]) -> usize {
    files
        .iter()
        .map(|file| {
            let text =
                std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let docs: Vec<Value> = sidecar_injector::engine::yaml::documents(&text)
                .unwrap_or_else(|e| panic!("{}: not YAML: {e}", file.display()));
            let docs: Vec<Value> = docs.into_iter().filter(|d| !d.is_null()).collect();
            schema::assert_valid(&file.display().to_string(), &docs, skip)
        })
        .sum()
}

/// Validates every document of YAML files against the Kubernetes types, strictly.
pub fn schema_valid(files: &[PathBuf]) -> usize {
    schema_valid_skipping(files, &[])
}

pub struct Server {
    pub child: Child,
    pub port: u16,
    pub metrics_port: u16,
    pub ca: PathBuf,
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
}

impl Server {
    /// Starts `serve` with dev certificates in a temporary directory, plus `extra` flags.
    pub fn start(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = dir.path().join("certs");
        let mut args: Vec<String> = vec!["--dev-certs-dir".into(), certs.display().to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        Server::start_in(dir, &args, certs.join("ca.crt"))
    }

    pub fn start_in(dir: tempfile::TempDir, args: &[String], ca: PathBuf) -> Server {
        let log = dir.path().join("server.log");
        let (child, port, metrics_port) = spawn_serve(args, &log);
        let mut s = Server {
            child,
            port,
            metrics_port,
            ca,
            dir,
            log,
        };
        s.wait_ready();
        s
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("server exited with {status}:\n{}", self.log_text());
            }
            if self.ca.exists()
                && let Ok(r) = self.blocking_client().get(self.url("/readyz")).send()
                && r.status() == 200
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("server never became ready:\n{}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    pub fn metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.metrics_port)
    }

    fn ca_cert(&self) -> reqwest::Certificate {
        reqwest::Certificate::from_pem(&std::fs::read(&self.ca).expect("ca.crt"))
            .expect("ca.crt is PEM")
    }

    /// A client that trusts only the server's CA, as the apiserver does with caBundle.
    pub fn blocking_client(&self) -> reqwest::blocking::Client {
        reqwest::blocking::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(self.ca_cert())
            .timeout(Duration::from_secs(20))
            .build()
            .expect("client")
    }

    /// POSTs an AdmissionReview to /mutate, as the apiserver does; the answer must be a 200
    /// with a JSON body.
    pub fn mutate(&self, review: &Value) -> Value {
        let resp = self
            .blocking_client()
            .post(self.url("/mutate"))
            .json(review)
            .send()
            .expect("POST /mutate");
        assert_eq!(resp.status(), 200);
        resp.json().expect("a JSON answer")
    }

    pub fn metrics(&self) -> String {
        reqwest::blocking::get(self.metrics_url())
            .and_then(|r| r.text())
            .expect("metrics")
    }

    /// Sends SIGTERM (as kubelet does) without waiting.
    pub fn sigterm(&self) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid");
        // SAFETY: kill(2) on our own child's pid, which we have not waited on yet.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(
            rc,
            0,
            "kill -TERM {pid}: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.sigterm();
        self.child.wait().expect("wait")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An AdmissionReview for a Pod CREATE.
pub fn review(uid: &str, namespace: &str, pod: &Value) -> Value {
    let gvk = json!({"group": "", "version": "v1", "kind": "Pod"});
    let gvr = json!({"group": "", "version": "v1", "resource": "pods"});
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid, "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
            "namespace": namespace, "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod, "oldObject": null, "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    })
}

pub fn simple_pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}})
}

/// The decoded JSON Patch of a response, checking its canonical form on the way.
pub fn patch_of(response: &Value) -> Option<Value> {
    let resp = &response["response"];
    let patch = resp.get("patch")?;
    let text = patch
        .as_str()
        .expect("patch is a base64 string, never a byte array");
    assert_eq!(resp["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64");
    Some(serde_json::from_slice(&bytes).expect("the patch is JSON"))
}

pub fn apply(pod: &Value, patch: &Value) -> Value {
    let patch: json_patch::Patch =
        serde_json::from_value(patch.clone()).expect("an RFC 6902 patch");
    let mut out = pod.clone();
    json_patch::patch(&mut out, &patch).expect("the patch applies");
    out
}

/// Runs a program with `args`, `stdin` written to it (then closed), and collects its output.
pub fn run(program: impl AsRef<std::ffi::OsStr>, args: &[&str], stdin: Option<&str>) -> Output {
    let program = program.as_ref();
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", program.to_string_lossy()));
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        use std::io::Write;
        pipe.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("the program's output")
}

pub fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// A rustls client trusting only `ca`, with a client certificate when `identity` is given.
pub fn client_tls_config(ca: &Path, identity: Option<(&Path, &Path)>) -> rustls::ClientConfig {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .unwrap()
                .map(Result::unwrap)
                .collect();
            builder
                .with_client_auth_cert(chain, PrivateKeyDer::from_pem_file(key).unwrap())
                .unwrap()
        }
    }
}

/// A raw HTTPS connection, to hold a request half-sent.
/// A raw TLS stream to `server` (HTTP/1.1 by hand).
pub fn tls_stream(server: &Server) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let config = client_tls_config(&server.ca, None);
    let conn =
        rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap()).unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// Reads one HTTP/1.1 answer (head and a Content-Length body) as text.
pub fn read_response(stream: &mut impl Read) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf);
                if let Some(head_end) = text.find("\r\n\r\n") {
                    let len = text[..head_end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length: ")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if buf.len() >= head_end + 4 + len {
                        break;
                    }
                }
            }
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}
