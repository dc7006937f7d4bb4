//! Acts as kube-apiserver against the real binary: verified TLS, AdmissionReviews in and out.

mod common;

use common::{Server, apply, patch_of, review, simple_pod, write};
use serde_json::{Value, json};

#[test]
fn injects_with_a_canonical_answer_and_a_second_admission_changes_nothing() {
    let server = Server::start(&[]);
    let pod = simple_pod("web");
    let answer = server.mutate(&review("uid-1", "team-a", &pod));
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(answer["response"]["uid"], "uid-1");
    assert_eq!(answer["response"]["allowed"], true);
    let patch = patch_of(&answer).expect("a patch");
    let injected = apply(&pod, &patch);
    let containers: Vec<&str> = injected["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(containers, ["app", "bitbucket-pipelines-metrics-collector"]);
    let collector = &injected["spec"]["containers"][1];
    let env: Vec<&str> = collector["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        env,
        [
            "BITBUCKET_PIPELINES_BACKEND_URL",
            "BITBUCKET_API_TOKEN",
            "METRIC_COLLECTION_INTERVAL",
            "LOG_LEVEL",
            "POD_NAMESPACE",
            "POD_NAME"
        ]
    );
    assert!(
        collector["env"][1]["valueFrom"]["secretKeyRef"].is_object(),
        "the token comes from a Secret"
    );
    assert!(collector["env"][1].get("value").is_none(), "never inline");
    let cgroup = collector["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "cgroup")
        .unwrap();
    assert_eq!(cgroup["readOnly"], true);

    let again = server.mutate(&review("uid-2", "team-a", &injected));
    assert_eq!(again["response"]["uid"], "uid-2");
    assert_eq!(again["response"]["allowed"], true);
    let r = again["response"].as_object().unwrap();
    assert!(
        !r.contains_key("patch") && !r.contains_key("patchType"),
        "no patch fields when nothing changes: {again}"
    );
}

#[test]
fn skips_answer_without_patch_fields_and_echo_v1beta1() {
    let server = Server::start(&[]);
    let answer = server.mutate(&review("u-ks", "kube-system", &simple_pod("dns")));
    let r = answer["response"].as_object().unwrap();
    assert_eq!(r["allowed"], true);
    assert!(!r.contains_key("patch") && !r.contains_key("patchType"));
    assert_eq!(r["auditAnnotations"]["reason"], "never_inject_namespace");

    let mut old = review("u-beta", "team-a", &simple_pod("x"));
    old["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let answer = server.mutate(&old);
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1beta1");
    assert_eq!(answer["response"]["uid"], "u-beta");
    assert!(patch_of(&answer).is_some());
}

#[test]
fn bad_bodies_get_400_and_413_and_the_server_keeps_serving() {
    let server = Server::start(&[]);
    let client = server.blocking_client();
    for body in [&b"{\"apiVersion\": \"admission.k8s.io/v1\", \"kind\": \"AdmissionReview\", \"request\": {\"uid\": "[..], b"[]", b"{}", b"\xff\xfe"] {
        let resp = client.post(server.url("/mutate")).body(body.to_vec()).send().unwrap();
        assert_eq!(resp.status(), 400);
        let text = resp.text().unwrap();
        assert_eq!(text.trim_end().lines().count(), 1, "one-line reason: {text:?}");
    }
    // 9 MiB sent whole: the server answers 413 from the headers and closes, so a client
    // still writing may see that answer or a reset, never a timeout or a 2xx/5xx. (The 413
    // itself, with no body sent at all, is tests/tls.rs's.)
    let big = vec![b' '; 9 * 1024 * 1024];
    match client.post(server.url("/mutate")).body(big).send() {
        Ok(resp) => assert_eq!(resp.status(), 413),
        Err(e) => assert!(!e.is_timeout(), "a reset, not a wait: {e:?}"),
    }
    let resp = client.get(server.url("/readyz")).send().unwrap();
    assert_eq!(resp.status(), 200);
    // A review with a uid but an unreadable request is answered as a review.
    let mut odd = review("u-odd", "team-a", &simple_pod("x"));
    odd["request"]["operation"] = json!("TELEPORT");
    let answer = server.mutate(&odd);
    assert_eq!(answer["response"]["uid"], "u-odd");
    assert_eq!(answer["response"]["allowed"], true);
    assert!(
        answer["response"]["warnings"][0]
            .as_str()
            .unwrap()
            .contains("operation"),
        "{answer}"
    );
}

fn config_file(dir: &std::path::Path, failure_policy: &str) -> String {
    let path = dir.join("configmap.yaml");
    write(
        &path,
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: sidecar-injector}}\ndata:\n  config.yaml: |\n    failurePolicy: {failure_policy}\n  mutate.yaml: |\n    containers:\n    - {{name: collector, image: 'collector:1'}}\n"
        ),
    );
    path.display().to_string()
}

fn conflicting_pod() -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "c"},
           "spec": {"containers": [{"name": "app", "image": "a:1"}, {"name": "collector", "image": "other:2"}]}})
}

#[test]
fn a_conflict_follows_the_failure_policy() {
    let dir = tempfile::tempdir().unwrap();
    let ignore = Server::start(&["--config", &config_file(dir.path(), "Ignore")]);
    let answer = ignore.mutate(&review("u-i", "team-a", &conflicting_pod()));
    assert_eq!(answer["response"]["allowed"], true);
    assert!(patch_of(&answer).is_none());
    let warning = answer["response"]["warnings"][0].as_str().unwrap();
    assert!(
        warning.contains("conflict") && warning.contains("\"collector\""),
        "{warning}"
    );
    drop(ignore);

    let dir = tempfile::tempdir().unwrap();
    let fail = Server::start(&["--config", &config_file(dir.path(), "Fail")]);
    let answer = fail.mutate(&review("u-f", "team-a", &conflicting_pod()));
    assert_eq!(answer["response"]["allowed"], false);
    assert_eq!(answer["response"]["status"]["code"], 403);
    assert!(
        answer["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("\"collector\"")
    );
}

#[test]
fn preview_over_http_and_metrics_with_reasons() {
    let server = Server::start(&[]);
    let client = server.blocking_client();
    let yaml = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: web, image: 'nginx:1.27'}]\n";
    let resp = client
        .post(server.url("/preview?namespace=team-a"))
        .header("content-type", "application/yaml")
        .body(yaml)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().unwrap();
    assert_eq!(body["decision"], "injected");
    assert_eq!(body["reason"], "injected");
    assert_eq!(body["patch"][0]["path"], "/spec/template/spec/volumes");
    assert_eq!(
        body["object"]["spec"]["template"]["spec"]["containers"][1]["name"],
        "bitbucket-pipelines-metrics-collector"
    );

    let resp = client
        .post(server.url("/preview"))
        .body("kind: [")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 400);

    server.mutate(&review("m1", "kube-system", &simple_pod("a")));
    server.mutate(&review("m2", "team-a", &simple_pod("b")));
    let metrics = server.metrics();
    assert!(
        metrics.contains(
            "sidecar_injector_admissions_total{outcome=\"injected\",reason=\"injected\"} 1"
        ),
        "{metrics}"
    );
    assert!(metrics.contains(
        "sidecar_injector_admissions_total{outcome=\"skipped\",reason=\"never_inject_namespace\"} 1"
    ));
    assert!(metrics.contains("sidecar_injector_admission_duration_seconds_count 2"));
    assert!(metrics.contains("sidecar_injector_config_info{template_hash=\""));
    assert!(metrics.contains("sidecar_injector_certificate_expiry_timestamp_seconds "));
}

#[test]
fn certs_command_output_verifies_for_the_service_name() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("svc-certs");
    let output = std::process::Command::new(common::bin())
        .args([
            "certs",
            "--service",
            "hook",
            "--namespace",
            "infra",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let bundle = String::from_utf8(output.stdout).unwrap();
    use base64::Engine as _;
    let pem = base64::engine::general_purpose::STANDARD
        .decode(bundle.trim())
        .unwrap();
    assert_eq!(
        pem,
        std::fs::read(out.join("ca.crt")).unwrap(),
        "the printed caBundle is ca.crt"
    );

    let args: Vec<String> = vec![
        "--tls-cert-file".into(),
        out.join("tls.crt").display().to_string(),
        "--tls-key-file".into(),
        out.join("tls.key").display().to_string(),
    ];
    let server_dir = tempfile::tempdir().unwrap();
    // Readiness is polled via "localhost", which this certificate does not name; probe by hand.
    let (mut child, port, _) = common::spawn_serve(&args, &server_dir.path().join("log"));
    let ca = reqwest::Certificate::from_pem(&std::fs::read(out.join("ca.crt")).unwrap()).unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let client = reqwest::blocking::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .resolve("hook.infra.svc", addr)
        .build()
        .unwrap();
    let mut ok = false;
    for _ in 0..100 {
        if let Ok(r) = client
            .get(format!("https://hook.infra.svc:{port}/readyz"))
            .send()
        {
            ok = r.status() == 200;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        ok,
        "the certificate verifies for hook.infra.svc against the printed CA"
    );
}

#[test]
fn every_decision_reason_is_exported_from_the_start() {
    let server = Server::start(&[]);
    let metrics = server.metrics();
    for reason in sidecar_injector::engine::Reason::ALL {
        let line = format!(
            "sidecar_injector_admissions_total{{outcome=\"{}\",reason=\"{}\"}} 0",
            reason.outcome().as_str(),
            reason.as_str()
        );
        assert!(metrics.contains(&line), "{line} missing:\n{metrics}");
    }
    assert!(metrics.contains("sidecar_injector_config_reloads_total{result=\"failure\"} 0"));
}

#[test]
fn a_minimal_review_is_answered_as_the_full_one_and_only_a_uid_is_required() {
    let server = Server::start(&[]);
    let pod = simple_pod("web");
    let full = server.mutate(&review("uid-full", "team-a", &pod));
    // What a Go client leaves out reads as zero values: no userInfo, requestKind, dryRun...
    let minimal = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "uid-min", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": "CREATE", "namespace": "team-a", "object": pod}});
    let answer = server.mutate(&minimal);
    assert_eq!(answer["response"]["uid"], "uid-min");
    assert_eq!(answer["response"]["allowed"], true);
    assert!(answer["response"].get("warnings").is_none(), "{answer}");
    assert_eq!(
        patch_of(&answer).expect("injected"),
        patch_of(&full).unwrap()
    );
    assert_eq!(
        answer["response"]["auditAnnotations"],
        full["response"]["auditAnnotations"]
    );

    // Without a uid there is nothing to answer to: 400.
    let mut no_uid = minimal.clone();
    no_uid["request"].as_object_mut().unwrap().remove("uid");
    let resp = server
        .blocking_client()
        .post(server.url("/mutate"))
        .json(&no_uid)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().unwrap().contains("uid"));
}

#[test]
fn requests_do_not_wait_for_an_api_that_never_answers() {
    // An "apiserver" that accepts connections and never says a word: every API call of the
    // namespace cache and the survey hangs. Admission must not wait for them.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    write(
        &kubeconfig,
        &format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: silent\n  cluster: {{server: \"https://{}\", insecure-skip-tls-verify: true}}\ncontexts:\n- name: silent\n  context: {{cluster: silent, user: u}}\ncurrent-context: silent\nusers:\n- name: u\n  user: {{token: x}}\n",
            silent.local_addr().unwrap()
        ),
    );
    let server = Server::start(&["--kubeconfig", &kubeconfig.display().to_string()]);
    let client = server.blocking_client();
    for i in 0..5 {
        let started = std::time::Instant::now();
        let resp = client
            .post(server.url("/mutate"))
            .json(&review(
                &format!("u-{i}"),
                &format!("ns-{i}"),
                &simple_pod("p"),
            ))
            .timeout(std::time::Duration::from_secs(10))
            .send()
            .expect("answered while the API hangs");
        assert_eq!(resp.status(), 200);
        let answer: Value = resp.json().unwrap();
        assert!(
            patch_of(&answer).is_some(),
            "injected by the request alone: {answer}"
        );
        // Generous: a namespace lookup may take its 1 s limit, never the API's silence.
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "answer {i} took {:?}",
            started.elapsed()
        );
    }
    drop(silent);
}
