//! Issue 35: doctor's "images pullable" against a real private registry (Debian's
//! docker-registry, the CNCF distribution registry, on loopback with TLS and htpasswd),
//! holding the collector's image with the platforms each test pushes (skopeo copy --all of
//! an OCI layout written here). The installed ConfigMap points imageRepository at it and
//! names the pull secret, which each opted-in namespace holds; a tainted Node declares arm64.
//! Everything a test changes is undone, also on a panic.

use super::day_one::{Undo, patch_json, run_ok};
use super::*;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const USER: &str = "e2e";
const PASSWORD: &str = "e2e-pull-password";
const SECRET: &str = "e2e-regcred";
const COLLECTOR: &str = "atlassian/bitbucket-pipelines-metrics-collector:2.1.0";

/// A distribution registry with TLS (a CA made here) and one htpasswd user.
struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    host: String,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    fn start() -> Registry {
        for tool in ["docker-registry", "skopeo", "htpasswd"] {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success());
            assert!(
                found,
                "{tool} is missing: apt-get install docker-registry skopeo apache2-utils"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let p = |name: &str| dir.path().join(name);
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "e2e registry CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        std::fs::create_dir_all(p("certs")).unwrap();
        std::fs::write(p("certs/ca.crt"), ca.pem()).unwrap();
        std::fs::write(p("tls.crt"), cert.pem()).unwrap();
        std::fs::write(p("tls.key"), key.serialize_pem()).unwrap();
        ok(&common::run(
            "htpasswd",
            &["-Bbc", p("htpasswd").to_str().unwrap(), USER, PASSWORD],
            None,
        ));
        let host = format!("127.0.0.1:{}", common::free_port());
        let config = format!(
            "version: 0.1\nlog: {{level: warn}}\nstorage:\n  filesystem: {{rootdirectory: {data}}}\nhttp:\n  addr: {host}\n  tls: {{certificate: {crt}, key: {key}}}\nauth:\n  htpasswd: {{realm: e2e, path: {pw}}}\n",
            data = p("data").display(),
            crt = p("tls.crt").display(),
            key = p("tls.key").display(),
            pw = p("htpasswd").display(),
        );
        std::fs::write(p("config.yml"), config).unwrap();
        let child = Command::new("docker-registry")
            .args(["serve", p("config.yml").to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(p("registry.log")).unwrap())
            .spawn()
            .unwrap();
        let registry = Registry { child, dir, host };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(&registry.host).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the registry did not listen: {}",
                tail(&registry.path("registry.log"), 10)
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        registry
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn ca(&self) -> PathBuf {
        self.path("certs/ca.crt")
    }

    /// Pushes `repo_tag` (under this registry) offering `arches`: an index when there are
    /// several, a single image manifest otherwise (as a tool without manifest lists pushes).
    fn push(&self, repo_tag: &str, arches: &[&str]) {
        let layout = self.path(&format!("layout-{}", arches.join("-")));
        oci_layout(&layout, arches);
        let out = common::run(
            "skopeo",
            &[
                "copy",
                "--all",
                "--dest-cert-dir",
                self.path("certs").to_str().unwrap(),
                "--dest-creds",
                &format!("{USER}:{PASSWORD}"),
                &format!("oci:{}:e2e", layout.display()),
                &format!("docker://{}/{repo_tag}", self.host),
            ],
            None,
        );
        assert!(
            out.status.success(),
            "skopeo copy: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Writes a blob into an OCI layout; its descriptor.
fn blob(layout: &Path, media_type: &str, bytes: &[u8]) -> Value {
    let digest = format!("{:x}", Sha256::digest(bytes));
    std::fs::write(layout.join("blobs/sha256").join(&digest), bytes).unwrap();
    json!({"mediaType": media_type, "digest": format!("sha256:{digest}"), "size": bytes.len()})
}

/// An OCI layout whose tag `e2e` is an image for each of `arches` (a few bytes each).
fn oci_layout(layout: &Path, arches: &[&str]) {
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let manifests: Vec<Value> = arches
        .iter()
        .map(|arch| {
            let layer = blob(
                layout,
                "application/vnd.oci.image.layer.v1.tar",
                format!("a layer for {arch}").as_bytes(),
            );
            let config = json!({"architecture": arch, "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]}});
            let config = blob(
                layout,
                "application/vnd.oci.image.config.v1+json",
                config.to_string().as_bytes(),
            );
            let manifest = json!({"schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": config, "layers": [layer]});
            let mut d = blob(
                layout,
                "application/vnd.oci.image.manifest.v1+json",
                manifest.to_string().as_bytes(),
            );
            d["platform"] = json!({"os": "linux", "architecture": arch});
            d
        })
        .collect();
    let mut top = if manifests.len() == 1 {
        let mut m = manifests[0].clone();
        m.as_object_mut().unwrap().remove("platform");
        m
    } else {
        let index = json!({"schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests});
        blob(
            layout,
            "application/vnd.oci.image.index.v1+json",
            index.to_string().as_bytes(),
        )
    };
    top["annotations"] = json!({"org.opencontainers.image.ref.name": "e2e"});
    let index = json!({"schemaVersion": 2, "manifests": [top]});
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
}

/// The installed ConfigMap's key `key`, as it is now.
fn installed(env: &Env, key: &str) -> String {
    let cm = ok(&kubectl(
        env,
        &[
            "get",
            "configmap",
            "sidecar-injector",
            "-n",
            "sidecar-injector",
            "-o",
            "json",
        ],
        None,
    ));
    let cm: Value = serde_json::from_str(&cm).unwrap();
    cm["data"][key].as_str().unwrap().to_owned()
}

/// `kubectl patch` setting the installed ConfigMap's `key` to `value`.
fn patch_installed(key: &str, value: &str) -> Vec<String> {
    patch_json(
        "configmap",
        "sidecar-injector",
        Some("sidecar-injector"),
        json!([{"op": "replace", "path": format!("/data/{key}"), "value": value}]),
    )
}

/// Who names the pull secret in each opted-in namespace.
#[derive(Clone, Copy, PartialEq)]
enum NamedBy {
    /// The template's `imagePullSecrets`.
    Template,
    /// The namespace's `default` ServiceAccount (the template names none).
    ServiceAccount,
}

/// The suite's install pulls from `registry` under `mirror`, with the pull secret holding
/// `password`, in every opted-in namespace, named as `by` says, and an arm64 node joins the
/// amd64 ones. Undone when the guard drops.
async fn point_the_install_at(
    env: &Env,
    c: &Client,
    registry: &Registry,
    password: &str,
    by: NamedBy,
    ns: &str,
) -> (Undo, Ns) {
    let mut undo = Undo::new();
    let keys: &[&str] = match by {
        NamedBy::Template => &["config.yaml", "mutate.yaml"],
        NamedBy::ServiceAccount => &["config.yaml"],
    };
    for &key in keys {
        let before = installed(env, key);
        let restore = patch_installed(key, &before);
        let restore: Vec<&str> = restore.iter().map(String::as_str).collect();
        undo.kubectl("the installed ConfigMap", &restore);
        let after = match key {
            "config.yaml" => before.replace(
                "imageRepository: \"\"",
                &format!("imageRepository: \"{}/mirror\"", registry.host),
            ),
            _ => format!("imagePullSecrets:\n- name: {SECRET}\n{before}"),
        };
        assert_ne!(before, after, "{key} has the line this test changes");
        run_ok(env, &patch_installed(key, &after));
    }
    let own = opted_in(c, ns).await;
    let namespaces = ok(&kubectl(
        env,
        &[
            "get",
            "namespaces",
            "-l",
            "sidecar-injection=enabled",
            "-o",
            "jsonpath={range .items[?(@.status.phase==\"Active\")]}{.metadata.name}{\"\\n\"}{end}",
        ],
        None,
    ));
    let config =
        json!({"auths": {registry.host.clone(): {"username": USER, "password": password}}});
    for ns in namespaces.lines().filter(|l| !l.is_empty()) {
        let manifest = json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
            "metadata": {"name": SECRET, "namespace": ns},
            "stringData": {".dockerconfigjson": config.to_string()}});
        ok(&kubectl(
            env,
            &["apply", "-f", "-"],
            Some(&manifest.to_string()),
        ));
        undo.kubectl(
            "the pull secret",
            &["delete", "secret", SECRET, "-n", ns, "--ignore-not-found"],
        );
        if by == NamedBy::ServiceAccount {
            let name =
                json!([{"op": "add", "path": "/imagePullSecrets", "value": [{"name": SECRET}]}]);
            run_ok(
                env,
                &patch_json("serviceaccount", "default", Some(ns), name),
            );
            let remove = json!([{"op": "remove", "path": "/imagePullSecrets"}]);
            undo.kubectl(
                "the ServiceAccount's pull secret",
                &patch_json("serviceaccount", "default", Some(ns), remove)
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>(),
            );
        }
    }
    let node = json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "e2e-arm64", "labels": {"kubernetes.io/os": "linux", "kubernetes.io/arch": "arm64"}},
        "spec": {"taints": [{"key": "e2e/arm64-only", "effect": "NoSchedule"}]},
        "status": {"nodeInfo": {"architecture": "arm64", "operatingSystem": "linux",
            "containerRuntimeVersion": "containerd://2.1.0", "kubeletVersion": "v1.34.4",
            "osImage": "e2e", "kernelVersion": "e2e", "kubeProxyVersion": "", "machineID": "",
            "systemUUID": "", "bootID": ""}}});
    ok(&kubectl(
        env,
        &["apply", "-f", "-"],
        Some(&node.to_string()),
    ));
    undo.kubectl(
        "the arm64 node",
        &["delete", "node", "e2e-arm64", "--ignore-not-found"],
    );
    // The status as a kubelet reports it: through the status subresource.
    let status = json!({"status": node["status"]});
    ok(&kubectl(
        env,
        &[
            "patch",
            "node",
            "e2e-arm64",
            "--subresource=status",
            "--type=merge",
            "-p",
            &status.to_string(),
        ],
        None,
    ));
    (undo, own)
}

/// doctor's "images pullable" finding, asking `registry` with its CA.
fn images_finding(env: &Env, registry: &Registry) -> Value {
    let out = common::run(
        common::bin(),
        &[
            "doctor",
            "--kubeconfig",
            env.kubeconfig.to_str().unwrap(),
            "--registry-ca",
            registry.ca().to_str().unwrap(),
            "-o",
            "json",
        ],
        None,
    );
    let findings: Vec<Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    let found = findings
        .into_iter()
        .find(|f| f["check"] == "images pullable")
        .expect("an images pullable finding");
    println!("doctor: {found}");
    found
}

/// What doctor's "images pullable" says of the suite's install pulling from a registry that
/// holds the collector for `pushed` architectures (none: not pushed), with the pull secret's
/// password `password`, from the opted-in namespace `ns` (and the others).
struct Said {
    host: String,
    /// The collector, as the nodes would pull it.
    image: String,
    outcome: String,
    message: String,
    fix: String,
}

async fn doctor_says(pushed: &[&str], password: &str, ns: &str) -> Said {
    let env = env();
    let c = client(&env).await;
    let registry = Registry::start();
    if !pushed.is_empty() {
        registry.push(&format!("mirror/{COLLECTOR}"), pushed);
    }
    let by = NamedBy::Template;
    let _changed = point_the_install_at(&env, &c, &registry, password, by, ns).await;
    let f = images_finding(&env, &registry);
    let text = |k: &str| f[k].as_str().unwrap_or_default().to_owned();
    Said {
        image: format!("{}/mirror/{COLLECTOR}", registry.host),
        host: registry.host.clone(),
        outcome: text("outcome"),
        message: text("message"),
        fix: text("fix"),
    }
}

#[tokio::test]
#[ignore = "needs a cluster: tests/e2e/run"]
async fn doctor_images_all_pullable() {
    let said = doctor_says(&["amd64", "arm64"], PASSWORD, "e2e-img-pullable").await;
    assert_eq!(said.outcome, "pass", "{}", said.message);
    assert!(
        said.message.contains("1 image(s) for amd64, arm64"),
        "every node architecture asked for: {}",
        said.message
    );
    // One question per image, however many namespaces hold the same login.
    assert!(
        said.message.contains(" 1 registry request(s)"),
        "{}",
        said.message
    );
}

#[tokio::test]
#[ignore = "needs a cluster: tests/e2e/run"]
async fn doctor_image_missing_an_architecture() {
    let said = doctor_says(&["amd64"], PASSWORD, "e2e-img-arch").await;
    assert_eq!(said.outcome, "fail", "{}", said.message);
    let missing = format!("{} has no linux/arm64 (it offers linux/amd64)", said.image);
    assert!(
        said.message.contains(&missing) && said.message.contains("exec format error"),
        "{}",
        said.message
    );
    let copy = format!(
        "skopeo copy --all docker://{COLLECTOR} docker://{}",
        said.image
    );
    assert!(said.fix.contains(&copy), "{}", said.fix);
}

#[tokio::test]
#[ignore = "needs a cluster: tests/e2e/run"]
async fn doctor_image_pull_secret_refused() {
    let said = doctor_says(&["amd64", "arm64"], "not-the-password", "e2e-img-refused").await;
    assert_eq!(said.outcome, "fail", "{}", said.message);
    // Every opted-in namespace holds the same wrong login: the first few are named.
    let refused = format!("/{SECRET} is refused (401 Unauthorized");
    assert!(said.message.contains(&refused), "{}", said.message);
    let create = format!(
        "create secret docker-registry {SECRET} --docker-server={}",
        said.host
    );
    assert!(said.fix.contains(&create), "{}", said.fix);
}

#[tokio::test]
#[ignore = "needs a cluster: tests/e2e/run"]
async fn doctor_image_not_mirrored() {
    let said = doctor_says(&[], PASSWORD, "e2e-img-unmirrored").await;
    assert_eq!(said.outcome, "fail", "{}", said.message);
    let absent = format!("{} is not in its registry", said.image);
    assert!(said.message.contains(&absent), "{}", said.message);
    let mirror = format!("docker://{COLLECTOR} docker://{}", said.image);
    assert!(
        said.fix.contains("sidecar-injector images --mirror-to") && said.fix.contains(&mirror),
        "{}",
        said.fix
    );
}

/// The template names no pull secret; each opted-in namespace's `default` ServiceAccount
/// does, so the ServiceAccount admission plugin gives it to every Pod that names none, and
/// the kubelet pulls with it. doctor asks with that login, as the kubelet would.
#[tokio::test]
#[ignore = "needs a cluster: tests/e2e/run"]
async fn doctor_image_login_from_the_default_service_account() {
    let env = env();
    let c = client(&env).await;
    let registry = Registry::start();
    registry.push(&format!("mirror/{COLLECTOR}"), &["amd64", "arm64"]);
    let by = NamedBy::ServiceAccount;
    let (_changed, ns) =
        point_the_install_at(&env, &c, &registry, PASSWORD, by, "e2e-img-account").await;
    let pod = dry_run_until(&c, &ns, "an injected Pod", injected).await;
    let named: Vec<String> = pod
        .spec
        .and_then(|s| s.image_pull_secrets)
        .into_iter()
        .flatten()
        .map(|r| r.name)
        .collect();
    assert_eq!(named, [SECRET], "the injected Pod's pull secrets");
    let f = images_finding(&env, &registry);
    assert_eq!(f["outcome"], "pass", "{f}");
    assert!(
        f["message"]
            .as_str()
            .is_some_and(|m| m.contains("1 image(s) for amd64, arm64")),
        "{f}"
    );
}
