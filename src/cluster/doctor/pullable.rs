//! doctor's "images pullable": every image the templates inject, asked of its registry for
//! every architecture of the schedulable Linux nodes, with the login each opted-in
//! namespace's pull secrets give (as the kubelet picks it), or anonymously. A problem here is
//! a Pod at `ImagePullBackOff` or `exec format error` later; doctor says it before.

use super::Finding;
use crate::cluster::registry::docker_config::{self, Login};
use crate::cluster::registry::{Platforms, Refusal, Registry};
use crate::engine::config::images::Image;
use crate::engine::config::secrets;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::Api;
use std::collections::{BTreeMap, BTreeSet, HashMap};

pub const CHECK: &str = "images pullable";

/// Problems shown in the finding's line; the count of the others follows.
const SHOWN: usize = 5;

/// A registry's answers: the real one, or a test's.
pub trait Manifests {
    fn platforms(
        &self,
        image: &str,
        login: Option<&Login>,
    ) -> impl Future<Output = Result<Platforms, Refusal>>;
}

impl Manifests for Registry {
    async fn platforms(&self, image: &str, login: Option<&Login>) -> Result<Platforms, Refusal> {
        Registry::platforms(self, image, login).await
    }
}

/// Each question asked once per run: the same image with the same login (or none) has one
/// answer, however many namespaces hold that login.
pub struct Cached<'a, M> {
    registry: &'a M,
    answers: HashMap<(String, Option<Login>), Result<Platforms, Refusal>>,
    /// Questions that reached the registry.
    pub requests: usize,
}

impl<'a, M: Manifests> Cached<'a, M> {
    pub fn new(registry: &'a M) -> Self {
        Cached {
            registry,
            answers: HashMap::new(),
            requests: 0,
        }
    }

    async fn platforms(
        &mut self,
        image: &str,
        login: Option<&Login>,
    ) -> Result<Platforms, Refusal> {
        let key = (image.to_owned(), login.cloned());
        if let Some(answer) = self.answers.get(&key) {
            return answer.clone();
        }
        self.requests += 1;
        let answer = self.registry.platforms(image, login).await;
        self.answers.insert(key, answer.clone());
        answer
    }
}

/// One opted-in namespace's pull secrets, by name: their logins, or why the kubelet cannot
/// read them. A Secret the namespace lacks is not listed (the kubelet pulls without it).
pub struct Namespace {
    pub name: String,
    /// The pull secrets its `default` ServiceAccount names. The ServiceAccount admission
    /// plugin, which runs before the webhooks, gives them to a Pod that names none of its
    /// own; the injector then adds the template's.
    pub account: Vec<String>,
    pub secrets: BTreeMap<String, Result<BTreeMap<String, Login>, String>>,
}

impl Namespace {
    /// The pull secrets an injected Pod of this namespace carries, in its order: the
    /// ServiceAccount's, then the template's `image` names, each once.
    fn pull_secrets<'n>(&'n self, image: &'n Image) -> Vec<&'n str> {
        let mut names: Vec<&str> = Vec::new();
        for name in self.account.iter().chain(&image.pull_secrets) {
            if !names.contains(&name.as_str()) {
                names.push(name);
            }
        }
        names
    }
}

/// A problem found, as its line and its fix.
type Problem = (String, String);

/// The problems of `images` for nodes of `architectures`, each said once.
pub async fn examine<M: Manifests>(
    images: &[Image],
    namespaces: &[Namespace],
    architectures: &[String],
    cache: &mut Cached<'_, M>,
) -> Vec<Problem> {
    let mut found: Vec<Problem> = Vec::new();
    let mut say = |p: Problem| {
        if !found.contains(&p) {
            found.push(p);
        }
    };
    for image in images {
        let (registry, repository) = match image.image.parse::<oci_client::Reference>() {
            Ok(r) => (r.registry().to_owned(), r.repository().to_owned()),
            Err(e) => {
                say((
                    format!("{} is not an image reference ({e})", image.image),
                    "correct the image in the template (sidecar-injector validate)".into(),
                ));
                continue;
            }
        };
        for ns in namespaces {
            // The logins the kubelet would try, in the Pod's order; none: anonymous.
            let mut logins: Vec<(&str, &Login)> = Vec::new();
            for name in ns.pull_secrets(image) {
                match ns.secrets.get(name) {
                    None => {}
                    Some(Err(e)) => say((
                        format!(
                            "Secret {}/{name}: {e}; the kubelet pulls without it",
                            ns.name
                        ),
                        replace_pull_secret(&ns.name, name, &registry),
                    )),
                    Some(Ok(entries)) => {
                        if let Some(l) = docker_config::login_for(entries, &registry, &repository) {
                            logins.push((name, l));
                        }
                    }
                }
            }
            let (used, answer) = ask(cache, &image.image, &logins).await;
            match answer {
                Ok(platforms) => {
                    for arch in architectures {
                        if !platforms.contains(&format!("linux/{arch}")) {
                            say(missing_platform(image, arch, &platforms));
                        }
                    }
                }
                Err(refusal) => say(refused(image, &registry, &ns.name, used, refusal)),
            }
        }
    }
    found
}

/// Asks for `image` as the kubelet pulls it: with each login in turn until one is let in
/// (the Secret of the last one tried, and its answer), or anonymously when there is none.
async fn ask<'l, M: Manifests>(
    cache: &mut Cached<'_, M>,
    image: &str,
    logins: &[(&'l str, &Login)],
) -> (Option<&'l str>, Result<Platforms, Refusal>) {
    let Some(((last, last_login), before)) = logins.split_last() else {
        return (None, cache.platforms(image, None).await);
    };
    for (name, login) in before {
        if let Ok(platforms) = cache.platforms(image, Some(login)).await {
            return (Some(name), Ok(platforms));
        }
    }
    (Some(last), cache.platforms(image, Some(last_login)).await)
}

/// The command that replaces (or makes) pull secret `name` in `ns` with a login for
/// `registry`.
fn replace_pull_secret(ns: &str, name: &str, registry: &str) -> String {
    format!(
        "{} --dry-run=client -o yaml | kubectl apply -f -",
        secrets::pull_secret_command(ns, name, registry)
    )
}

fn missing_platform(image: &Image, arch: &str, platforms: &Platforms) -> Problem {
    let offered: Vec<&str> = platforms.iter().map(String::as_str).collect();
    (
        format!(
            "{} has no linux/{arch} (it offers {}): Pods on {arch} nodes would fail with exec format error",
            image.image,
            if offered.is_empty() {
                "none".to_owned()
            } else {
                offered.join(", ")
            }
        ),
        format!(
            "push it with every architecture under one index: skopeo copy --all docker://{} docker://{}",
            image.source, image.image
        ),
    )
}

fn refused(image: &Image, registry: &str, ns: &str, secret: Option<&str>, r: Refusal) -> Problem {
    match (r, secret) {
        (Refusal::Unauthorized(text), Some(secret)) => (
            format!(
                "{}: the login of Secret {ns}/{secret} is refused ({text}): Pods there would stop at ImagePullBackOff",
                image.image
            ),
            format!(
                "give Secret {ns}/{secret} a login {registry} accepts: {} (with propagateSecrets, fix the source in the injector's namespace: the copies follow)",
                replace_pull_secret(ns, secret, registry)
            ),
        ),
        (Refusal::Unauthorized(text), None) => (
            format!(
                "{}: {registry} refuses an anonymous pull ({text}), and no pull secret in {ns} holds a login for it (neither the templates' nor those of ServiceAccount {ns}/default)",
                image.image
            ),
            format!(
                "create a docker-registry Secret with a login for {registry}, name it in the template's imagePullSecrets, and list it in propagateSecrets to keep it in every opted-in namespace (or add it to the imagePullSecrets of each namespace's default ServiceAccount)"
            ),
        ),
        (Refusal::NotFound(text), _) => (
            format!(
                "{} is not in its registry ({text}): Pods would stop at ImagePullBackOff",
                image.image
            ),
            format!(
                "mirror it: sidecar-injector images --mirror-to REPO lists each image to copy; skopeo copy --all docker://{} docker://{} (docs/install.md: Air-gapped and private registries)",
                image.source, image.image
            ),
        ),
        (Refusal::Unreachable(text), _) => (
            format!("{}: {registry} cannot be reached: {text}", image.image),
            "if the nodes reach a registry this machine cannot, run doctor --offline; if the registry's certificate is signed by a private CA, give it with --registry-ca FILE".into(),
        ),
        (Refusal::Other(text), _) => (
            format!("{}: {registry} answered: {text}", image.image),
            "read the registry's answer; a node's pull would fail the same way".into(),
        ),
    }
}

/// The finding for what `examine` found.
pub fn finding(
    problems: &[Problem],
    images: usize,
    namespaces: usize,
    architectures: &[String],
    requests: usize,
) -> Finding {
    if problems.is_empty() {
        return Finding::pass(
            CHECK,
            format!(
                "{images} image(s) for {} in {namespaces} opted-in namespace(s), {requests} registry request(s)",
                if architectures.is_empty() {
                    "nodes that report no architecture".to_owned()
                } else {
                    architectures.join(", ")
                }
            ),
        );
    }
    // The first few, each with its fix: 50 namespaces with one stale Secret are one story.
    let shown = &problems[..problems.len().min(SHOWN)];
    let mut lines: Vec<String> = shown.iter().map(|(m, _)| m.clone()).collect();
    let mut fixes: Vec<&str> = Vec::new();
    for (_, fix) in shown {
        if !fixes.contains(&fix.as_str()) {
            fixes.push(fix);
        }
    }
    if problems.len() > SHOWN {
        lines.push(format!("and {} more", problems.len() - SHOWN));
        fixes.push("the same for the others");
    }
    Finding::fail(CHECK, lines.join("; "), &fixes.join("; "))
}

/// The pull secrets `images` and each of `opted`'s `default` ServiceAccount name, read in
/// that namespace.
async fn read_namespaces(
    client: &kube::Client,
    images: &[Image],
    opted: &[String],
) -> Result<Vec<Namespace>, String> {
    let templates: BTreeSet<&String> = images.iter().flat_map(|i| &i.pull_secrets).collect();
    let mut out = Vec::new();
    for ns in opted {
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
        let account: Vec<String> = match accounts.get_opt("default").await {
            Ok(sa) => sa
                .and_then(|sa| sa.image_pull_secrets)
                .into_iter()
                .flatten()
                .map(|r| r.name)
                .filter(|n| !n.is_empty())
                .collect(),
            Err(e) => return Err(format!("ServiceAccount {ns}/default cannot be read: {e}")),
        };
        let api: Api<Secret> = Api::namespaced(client.clone(), ns);
        let mut secrets = BTreeMap::new();
        for name in templates.iter().copied().chain(&account) {
            if secrets.contains_key(name) {
                continue;
            }
            match api.get_opt(name).await {
                Ok(Some(s)) => {
                    secrets.insert(name.clone(), logins(&s));
                }
                Ok(None) => {}
                Err(e) => return Err(format!("Secret {ns}/{name} cannot be read: {e}")),
            }
        }
        out.push(Namespace {
            name: ns.clone(),
            account,
            secrets,
        });
    }
    Ok(out)
}

/// A pull secret's logins, as the kubelet reads them: by its type.
fn logins(s: &Secret) -> Result<BTreeMap<String, Login>, String> {
    let key = match s.type_.as_deref() {
        Some("kubernetes.io/dockerconfigjson") => ".dockerconfigjson",
        Some("kubernetes.io/dockercfg") => ".dockercfg",
        other => {
            return Err(format!(
                "is of type {}, not kubernetes.io/dockerconfigjson",
                other.unwrap_or("Opaque")
            ));
        }
    };
    let raw = s
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .ok_or_else(|| format!("has no {key}"))?;
    docker_config::parse(&raw.0).map_err(|e| format!("its {key} {e}"))
}

/// The check. `registry` None: `--offline`.
pub async fn check(
    client: &kube::Client,
    images: &[Image],
    opted: &[String],
    architectures: &[String],
    registry: Option<&Registry>,
) -> Finding {
    let Some(registry) = registry else {
        return Finding::skip(CHECK, "skipped: --offline".into());
    };
    if images.is_empty() {
        return Finding::pass(CHECK, "the templates inject no image".into());
    }
    if opted.is_empty() {
        return Finding::skip(CHECK, "no opted-in namespace pulls them".into());
    }
    let namespaces = match read_namespaces(client, images, opted).await {
        Ok(n) => n,
        Err(e) => return Finding::skip(CHECK, e),
    };
    let mut cache = Cached::new(registry);
    let problems = examine(images, &namespaces, architectures, &mut cache).await;
    finding(
        &problems,
        images.len(),
        namespaces.len(),
        architectures,
        cache.requests,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::config::images::Use;
    use std::cell::Cell;

    /// A registry holding `held` images with their platforms, letting in only `password`
    /// when it is set.
    struct Fake {
        held: BTreeMap<&'static str, &'static [&'static str]>,
        password: Option<&'static str>,
        asked: Cell<usize>,
    }

    impl Manifests for Fake {
        async fn platforms(
            &self,
            image: &str,
            login: Option<&Login>,
        ) -> Result<Platforms, Refusal> {
            self.asked.set(self.asked.get() + 1);
            if let Some(p) = self.password
                && login.is_none_or(|l| l.password != p)
            {
                return Err(Refusal::Unauthorized("401 Unauthorized".into()));
            }
            match self.held.get(image) {
                Some(platforms) => Ok(platforms.iter().map(|p| (*p).to_owned()).collect()),
                None => Err(Refusal::NotFound("MANIFEST_UNKNOWN".into())),
            }
        }
    }

    fn image(name: &str, secrets: &[&str]) -> Image {
        Image {
            image: name.into(),
            source: format!("docker.io/{}", name.rsplit('/').next().unwrap_or(name)),
            used_by: vec![Use {
                template: "default".into(),
                list: "containers".into(),
                container: "c".into(),
            }],
            pull_secrets: secrets.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn namespace(name: &str, secret: &str, password: &str) -> Namespace {
        let login = Login {
            username: "robot".into(),
            password: password.into(),
        };
        Namespace {
            name: name.into(),
            account: Vec::new(),
            secrets: BTreeMap::from([(
                secret.to_owned(),
                Ok(BTreeMap::from([("reg.example:5000".to_owned(), login)])),
            )]),
        }
    }

    const BOTH: &[&str] = &["linux/amd64", "linux/arm64"];
    const COLLECTOR: &str = "reg.example:5000/mirror/collector:2.1";
    const AGENT: &str = "reg.example:5000/mirror/agent:1.0";

    fn archs() -> Vec<String> {
        vec!["amd64".into(), "arm64".into()]
    }

    #[tokio::test]
    async fn fifty_namespaces_with_the_same_login_cost_one_request_per_image() {
        let fake = Fake {
            held: BTreeMap::from([(COLLECTOR, BOTH), (AGENT, BOTH)]),
            password: Some("right"),
            asked: Cell::new(0),
        };
        let images = [image(COLLECTOR, &["regcred"]), image(AGENT, &["regcred"])];
        let namespaces: Vec<Namespace> = (0..50)
            .map(|i| namespace(&format!("team-{i}"), "regcred", "right"))
            .collect();
        let mut cache = Cached::new(&fake);
        let problems = examine(&images, &namespaces, &archs(), &mut cache).await;
        assert_eq!(problems, Vec::<Problem>::new());
        assert_eq!((cache.requests, fake.asked.get()), (2, 2));
        let f = finding(&problems, 2, 50, &archs(), cache.requests);
        assert_eq!(f.outcome, super::super::Outcome::Pass);
        assert!(
            f.message.contains("amd64, arm64") && f.message.contains("2 registry request(s)"),
            "{}",
            f.message
        );
    }

    #[tokio::test]
    async fn an_index_without_arm64_is_named_with_the_architecture_and_the_fix() {
        let fake = Fake {
            held: BTreeMap::from([(COLLECTOR, &["linux/amd64"][..])]),
            password: None,
            asked: Cell::new(0),
        };
        let mut cache = Cached::new(&fake);
        let problems = examine(
            &[image(COLLECTOR, &[])],
            &[namespace("a", "unused", "x"), namespace("b", "unused", "x")],
            &archs(),
            &mut cache,
        )
        .await;
        assert_eq!(
            problems.len(),
            1,
            "said once for both namespaces: {problems:?}"
        );
        let f = finding(&problems, 1, 2, &archs(), cache.requests);
        assert!(
            f.message.contains(COLLECTOR) && f.message.contains("no linux/arm64"),
            "{}",
            f.message
        );
        assert!(f.message.contains("exec format error"), "{}", f.message);
        let fix = f.fix.unwrap_or_default();
        assert!(
            fix.contains(&format!(
                "skopeo copy --all docker://docker.io/collector:2.1 docker://{COLLECTOR}"
            )),
            "{fix}"
        );
        // Only amd64 nodes: nothing is missing.
        let only_amd = vec!["amd64".to_owned()];
        assert!(
            examine(
                &[image(COLLECTOR, &[])],
                &[namespace("a", "s", "x")],
                &only_amd,
                &mut cache
            )
            .await
            .is_empty()
        );
    }

    #[tokio::test]
    async fn a_refused_secret_an_anonymous_pull_and_a_missing_image_each_name_their_fix() {
        let fake = Fake {
            held: BTreeMap::from([(COLLECTOR, BOTH)]),
            password: Some("right"),
            asked: Cell::new(0),
        };
        let mut cache = Cached::new(&fake);
        let images = [
            image(COLLECTOR, &["regcred"]),
            image(AGENT, &["regcred"]),
            image("quay.io/other/thing:1", &["regcred"]),
        ];
        let namespaces = [
            namespace("good", "regcred", "right"),
            namespace("stale", "regcred", "wrong"),
        ];
        let problems = examine(&images, &namespaces, &archs(), &mut cache).await;
        let text = format!("{problems:#?}");
        assert!(
            problems.iter().any(|(m, fix)| m.contains("Secret stale/regcred is refused (401")
                && fix.contains("kubectl -n stale create secret docker-registry regcred --docker-server=reg.example:5000")),
            "{text}"
        );
        assert!(!text.contains("good/regcred is refused"), "{text}");
        assert!(
            problems.iter().any(|(m, fix)| m.contains(AGENT)
                && m.contains("not in its registry")
                && fix.contains("sidecar-injector images --mirror-to")),
            "{text}"
        );
        // No login in regcred for quay.io: asked anonymously, and refused.
        assert!(
            problems
                .iter()
                .any(|(m, _)| m.contains("quay.io refuses an anonymous pull")),
            "{text}"
        );
        // 3 images × 2 logins, less the anonymous one asked once for both namespaces.
        assert_eq!(cache.requests, 5);
        let f = finding(&problems, 3, 2, &archs(), cache.requests);
        assert_eq!(f.outcome, super::super::Outcome::Fail);
    }

    #[tokio::test]
    async fn many_namespaces_refused_show_the_first_few_with_their_fixes_and_count_the_rest() {
        let fake = Fake {
            held: BTreeMap::from([(COLLECTOR, BOTH)]),
            password: Some("right"),
            asked: Cell::new(0),
        };
        let namespaces: Vec<Namespace> = (0..7)
            .map(|i| namespace(&format!("team-{i}"), "regcred", "stale"))
            .collect();
        let mut cache = Cached::new(&fake);
        let problems = examine(
            &[image(COLLECTOR, &["regcred"])],
            &namespaces,
            &archs(),
            &mut cache,
        )
        .await;
        assert_eq!(
            problems.len(),
            7,
            "one per namespace: each names its Secret"
        );
        assert_eq!(cache.requests, 1, "the same login asked once");
        let f = finding(&problems, 1, 7, &archs(), cache.requests);
        assert!(
            f.message.contains("team-4/regcred") && !f.message.contains("team-5/"),
            "{}",
            f.message
        );
        assert!(f.message.ends_with("; and 2 more"), "{}", f.message);
        let fix = f.fix.unwrap_or_default();
        assert_eq!(
            fix.matches("create secret docker-registry").count(),
            5,
            "{fix}"
        );
        assert!(fix.ends_with("the same for the others"), "{fix}");
    }

    #[tokio::test]
    async fn a_login_the_default_service_account_names_counts_as_the_pods_own() {
        let fake = Fake {
            held: BTreeMap::from([(COLLECTOR, BOTH)]),
            password: Some("right"),
            asked: Cell::new(0),
        };
        // The template names no pull secret: a Pod gets the ServiceAccount's.
        let with_account = |name: &str, password: &str| Namespace {
            account: vec!["sa-cred".into()],
            ..namespace(name, "sa-cred", password)
        };
        let images = [image(COLLECTOR, &[])];
        let mut cache = Cached::new(&fake);
        let problems = examine(
            &images,
            &[
                with_account("team-a", "right"),
                with_account("team-b", "right"),
            ],
            &archs(),
            &mut cache,
        )
        .await;
        assert_eq!(problems, Vec::<Problem>::new());
        // A namespace whose ServiceAccount names none has nothing but an anonymous pull.
        let problems = examine(
            &images,
            &[namespace("bare", "sa-cred", "right")],
            &archs(),
            &mut cache,
        )
        .await;
        assert!(
            problems.len() == 1
                && problems[0].0.contains("refuses an anonymous pull")
                && problems[0].0.contains("ServiceAccount bare/default")
                && problems[0]
                    .1
                    .contains("each namespace's default ServiceAccount"),
            "{problems:#?}"
        );
        // Both named: the kubelet tries the ServiceAccount's stale login, then the
        // template's, and pulls with the second.
        let mut both = with_account("both", "stale");
        both.secrets.insert(
            "regcred".into(),
            Ok(BTreeMap::from([(
                "reg.example:5000".to_owned(),
                Login {
                    username: "robot".into(),
                    password: "right".into(),
                },
            )])),
        );
        let problems = examine(
            &[image(COLLECTOR, &["regcred", "sa-cred"])],
            &[both],
            &archs(),
            &mut cache,
        )
        .await;
        assert_eq!(problems, Vec::<Problem>::new());
    }

    #[test]
    fn a_secret_the_kubelet_cannot_use_says_why() {
        let mut s = Secret {
            type_: Some("Opaque".into()),
            ..Default::default()
        };
        assert!(
            logins(&s)
                .unwrap_err()
                .contains("not kubernetes.io/dockerconfigjson")
        );
        s.type_ = Some("kubernetes.io/dockerconfigjson".into());
        assert!(logins(&s).unwrap_err().contains("has no .dockerconfigjson"));
        s.data = Some(BTreeMap::from([(
            ".dockerconfigjson".to_owned(),
            k8s_openapi::ByteString(
                br#"{"auths":{"r.example":{"username":"u","password":"p"}}}"#.to_vec(),
            ),
        )]));
        assert_eq!(logins(&s).unwrap()["r.example"].username, "u");
    }
}
