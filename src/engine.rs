//! The injection engine: pure and synchronous.
//!
//! (request, namespace, config) -> [`Decision`]: whether to inject, why, and the RFC 6902 patch
//! against the object exactly as received. `/mutate`, `/preview` and the `preview` command
//! are doors onto [`decide`]; no other code decides whether or what to inject.

use crate::config::{Config, Fragment, Item, NativeSidecars, Policy};
use crate::patch::{Patch, PatchBuilder, ShapeError, Shared, lookup};
use kube::core::GroupVersionKind;
use kube::core::admission::Operation;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};

/// Pod annotation or label: `"true"` opts in, `"false"` opts out.
pub const INJECT_KEY: &str = "sidecar-injector.io/inject";
/// Pod annotation written by the injector: what it injected; a Pod that has it is not injected again.
pub const STATUS_KEY: &str = "sidecar-injector.io/status";
/// Mirror Pods (static Pods seen through the apiserver) carry this annotation.
pub const MIRROR_KEY: &str = "kubernetes.io/config.mirror";
/// The Pod Security admission level of a namespace.
pub const PSA_ENFORCE_KEY: &str = "pod-security.kubernetes.io/enforce";

/// What the engine needs to know about one admission.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub operation: Operation,
    pub kind: &'a GroupVersionKind,
    pub sub_resource: Option<&'a str>,
    /// The request's namespace (for preview: `--namespace` or the document's own).
    pub namespace: &'a str,
    /// The namespace's labels, when known (preview). The webhook does not read namespaces:
    /// the apiserver's namespaceSelector has already matched them.
    pub namespace_labels: Option<&'a BTreeMap<String, String>>,
    /// The object as received.
    pub object: Option<&'a Value>,
    /// The kind of workload whose Pod template this is (preview), when not a bare Pod.
    pub workload_kind: Option<&'a str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Injected,
    Skipped,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Injected => "injected",
            Outcome::Skipped => "skipped",
            Outcome::Failed => "failed",
        }
    }
}

/// Why. Also the `reason` label of `admissions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Injected,
    OperationNotCreate,
    NotAPod,
    Subresource,
    NeverInjectNamespace,
    NamespaceNotEnabled,
    MirrorPod,
    OptedOut,
    NotOptedIn,
    AlreadyInjected,
    InvalidObject,
    TemplateError,
    Conflict,
}

impl Reason {
    pub const ALL: [Reason; 13] = [
        Reason::Injected,
        Reason::OperationNotCreate,
        Reason::NotAPod,
        Reason::Subresource,
        Reason::NeverInjectNamespace,
        Reason::NamespaceNotEnabled,
        Reason::MirrorPod,
        Reason::OptedOut,
        Reason::NotOptedIn,
        Reason::AlreadyInjected,
        Reason::InvalidObject,
        Reason::TemplateError,
        Reason::Conflict,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Injected => "injected",
            Reason::OperationNotCreate => "operation_not_create",
            Reason::NotAPod => "not_a_pod",
            Reason::Subresource => "subresource",
            Reason::NeverInjectNamespace => "never_inject_namespace",
            Reason::NamespaceNotEnabled => "namespace_not_enabled",
            Reason::MirrorPod => "mirror_pod",
            Reason::OptedOut => "opted_out",
            Reason::NotOptedIn => "not_opted_in",
            Reason::AlreadyInjected => "already_injected",
            Reason::InvalidObject => "invalid_object",
            Reason::TemplateError => "template_error",
            Reason::Conflict => "conflict",
        }
    }

    pub fn outcome(self) -> Outcome {
        match self {
            Reason::Injected => Outcome::Injected,
            Reason::InvalidObject | Reason::TemplateError | Reason::Conflict => Outcome::Failed,
            _ => Outcome::Skipped,
        }
    }
}

/// The engine's answer.
#[derive(Debug)]
pub struct Decision {
    pub reason: Reason,
    /// A sentence for people: logs, preview's stderr, warnings and denials.
    pub message: String,
    /// Empty unless injected.
    pub patch: Patch,
    /// For the user (AdmissionResponse.warnings): things worth knowing even when admitted.
    pub warnings: Vec<String>,
}

impl Decision {
    pub fn outcome(&self) -> Outcome {
        self.reason.outcome()
    }

    fn skip(reason: Reason, message: impl Into<String>) -> Decision {
        Decision {
            reason,
            message: message.into(),
            patch: Patch(Vec::new()),
            warnings: Vec::new(),
        }
    }
}

/// The value of the status annotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub template_hash: String,
    pub containers: Vec<String>,
    pub init_containers: Vec<String>,
    pub volumes: Vec<String>,
    pub image_pull_secrets: Vec<String>,
}

/// Decides, and builds the patch. Pure: the same request and config give the same answer.
pub fn decide(req: &Request<'_>, config: &Config) -> Decision {
    let mut warnings = Vec::new();
    match gate(req, config, &mut warnings) {
        Err(mut skip) => {
            skip.warnings.append(&mut warnings);
            skip
        }
        Ok(pod) => {
            let mut d = inject(pod, req, config);
            warnings.append(&mut d.warnings);
            d.warnings = warnings;
            d
        }
    }
}

/// Every rule that can say "not this one", in order. `Ok` is the Pod to inject.
fn gate<'a>(
    req: &Request<'a>,
    config: &Config,
    warnings: &mut Vec<String>,
) -> Result<&'a Value, Decision> {
    use Reason::*;
    if req.operation != Operation::Create {
        return Err(Decision::skip(
            OperationNotCreate,
            format!("operation {:?}: only CREATE is injected", req.operation),
        ));
    }
    if !req.kind.group.is_empty() || req.kind.kind != "Pod" {
        return Err(Decision::skip(
            NotAPod,
            format!("{} is not a Pod", gvk_string(req.kind)),
        ));
    }
    if let Some(sub) = req.sub_resource.filter(|s| !s.is_empty()) {
        return Err(Decision::skip(
            Subresource,
            format!("subresource {sub:?} is not injected"),
        ));
    }
    let pod = match req.object {
        Some(pod @ Value::Object(_)) => pod,
        Some(other) => {
            return Err(Decision::skip(
                InvalidObject,
                format!("the object is not a map but {}", short(other)),
            ));
        }
        None => {
            return Err(Decision::skip(
                InvalidObject,
                "the request carries no object",
            ));
        }
    };
    let ns = req.namespace;
    let settings = &config.settings;
    if ns == config.own_namespace {
        return Err(Decision::skip(
            NeverInjectNamespace,
            format!("namespace {ns:?} is the injector's own"),
        ));
    }
    if settings.never_inject_namespaces.iter().any(|n| n == ns) {
        return Err(Decision::skip(
            NeverInjectNamespace,
            format!("namespace {ns:?} is in neverInjectNamespaces"),
        ));
    }
    if let Some(labels) = req.namespace_labels {
        let key = &settings.namespace_label;
        if labels.get(key).map(String::as_str) != Some("enabled") {
            return Err(Decision::skip(
                NamespaceNotEnabled,
                format!("namespace {ns:?} is not labelled {key}=enabled"),
            ));
        }
    }
    let annotations = lookup(pod, &["metadata", "annotations"]);
    let labels = lookup(pod, &["metadata", "labels"]);
    if annotations.and_then(|a| a.get(MIRROR_KEY)).is_some() {
        return Err(Decision::skip(
            MirrorPod,
            "mirror Pods (static Pods) cannot be changed",
        ));
    }
    match opt_in(annotations, labels, warnings) {
        Some(false) => {
            return Err(Decision::skip(
                OptedOut,
                format!("the Pod opts out with {INJECT_KEY}=false"),
            ));
        }
        Some(true) => {}
        None if settings.policy == Policy::Disabled => {
            return Err(Decision::skip(
                NotOptedIn,
                format!("policy is disabled and the Pod does not opt in with {INJECT_KEY}=true"),
            ));
        }
        None => {}
    }
    if let Some(status) = annotations.and_then(|a| a.get(STATUS_KEY)) {
        return Err(Decision::skip(
            AlreadyInjected,
            format!("the Pod already has {STATUS_KEY} ({})", short(status)),
        ));
    }
    Ok(pod)
}

/// The Pod's own word: `Some(false)` when either the annotation or the label says "false".
fn opt_in(
    annotations: Option<&Value>,
    labels: Option<&Value>,
    warnings: &mut Vec<String>,
) -> Option<bool> {
    let mut said = None;
    for (where_, map) in [("annotation", annotations), ("label", labels)] {
        let Some(v) = map.and_then(|m| m.get(INJECT_KEY)) else {
            continue;
        };
        let text = v.as_str().map(str::trim).map(str::to_ascii_lowercase);
        match text.as_deref() {
            Some("false") => return Some(false),
            Some("true") => said = Some(true),
            _ => warnings.push(format!(
                "{where_} {INJECT_KEY}={} is neither \"true\" nor \"false\"; ignored",
                short(v)
            )),
        }
    }
    said
}

/// Native sidecars: an injected container becomes an init container with `restartPolicy: Always`.
fn native_sidecars(pod: &Value, req: &Request<'_>, config: &Config) -> bool {
    match config.settings.native_sidecars {
        NativeSidecars::Always => true,
        NativeSidecars::Never => false,
        NativeSidecars::Auto => runs_to_completion(pod, req.workload_kind),
    }
}

/// Job and CronJob Pods (owned by a Job, or from their templates), and any Pod whose
/// restartPolicy lets it finish: a plain sidecar would keep those running forever.
fn runs_to_completion(pod: &Value, workload_kind: Option<&str>) -> bool {
    if matches!(workload_kind, Some("Job" | "CronJob")) {
        return true;
    }
    let owned_by_job = lookup(pod, &["metadata", "ownerReferences"])
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter().any(|r| {
                r.get("kind").and_then(Value::as_str) == Some("Job")
                    && r.get("apiVersion")
                        .and_then(Value::as_str)
                        .is_some_and(|v| v.starts_with("batch/"))
            })
        });
    let restart = lookup(pod, &["spec", "restartPolicy"]).and_then(Value::as_str);
    owned_by_job || matches!(restart, Some("Never" | "OnFailure"))
}

fn inject(pod: &Value, req: &Request<'_>, config: &Config) -> Decision {
    let fragment = match config.fragment(pod, req.namespace) {
        Ok(f) => f,
        Err(e) => {
            return Decision::skip(
                Reason::TemplateError,
                format!("the template does not render for this Pod: {e}"),
            );
        }
    };
    let native = native_sidecars(pod, req, config);
    match plan(pod, &fragment, native, &config.template_hash) {
        Ok((patch, status, warnings)) => {
            let mut message = format!("injected containers {:?}", status.containers);
            if !status.init_containers.is_empty() {
                message.push_str(&format!(", init containers {:?}", status.init_containers));
            }
            if native {
                message.push_str(" (native sidecars)");
            }
            Decision {
                reason: Reason::Injected,
                message,
                patch,
                warnings,
            }
        }
        Err(f) => Decision::skip(f.reason, f.message),
    }
}

struct Failure {
    reason: Reason,
    message: String,
}

impl From<ShapeError> for Failure {
    fn from(e: ShapeError) -> Self {
        Failure {
            reason: Reason::InvalidObject,
            message: e.0,
        }
    }
}

fn conflict(message: String) -> Failure {
    Failure {
        reason: Reason::Conflict,
        message,
    }
}

/// Named entries of a list of the Pod spec, by name.
fn named<'a>(pod: &'a Value, field: &str) -> Result<HashMap<&'a str, &'a Value>, Failure> {
    match lookup(pod, &["spec", field]) {
        None | Some(Value::Null) => Ok(HashMap::new()),
        Some(Value::Array(items)) => Ok(items
            .iter()
            .filter_map(|i| Some((i.get("name")?.as_str()?, i)))
            .collect()),
        Some(_) => Err(Failure {
            reason: Reason::InvalidObject,
            message: format!("spec.{field} is not a list"),
        }),
    }
}

fn name_of(v: &Value) -> &str {
    v.get("name").and_then(Value::as_str).unwrap_or_default()
}

/// True when `existing` already holds everything `wanted` says. The apiserver defaults fields
/// before webhooks see a Pod, so an earlier injection comes back with more, never with less.
fn covers(existing: &Value, wanted: &Value) -> bool {
    match (existing, wanted) {
        (Value::Object(e), Value::Object(w)) => w.iter().all(|(k, wv)| match e.get(k) {
            Some(ev) => covers(ev, wv),
            None => wv.is_null(),
        }),
        (Value::Array(e), Value::Array(w)) => {
            e.len() == w.len() && e.iter().zip(w).all(|(a, b)| covers(a, b))
        }
        (e, w) => e == w,
    }
}

/// Keeps the entries of `wanted` the Pod does not have yet. One it has under the same name
/// with another definition is a conflict: injecting would break it or the Pod.
fn missing<'w>(
    existing: &HashMap<&str, &Value>,
    wanted: impl IntoIterator<Item = &'w Item>,
    what: &str,
) -> Result<Vec<&'w Item>, Failure> {
    let mut out = Vec::new();
    for w in wanted {
        match existing.get(w.name()) {
            None => out.push(w),
            Some(e) if covers(e, &w.value) => {}
            Some(_) => {
                return Err(conflict(format!(
                    "the Pod already has a {what} named {:?} that differs from the template's",
                    w.name()
                )));
            }
        }
    }
    Ok(out)
}

type Plan = (Patch, Status, Vec<String>);

fn shared(items: &[&Item]) -> Vec<Shared> {
    items.iter().map(|i| i.json.clone()).collect()
}

fn names(items: &[&Item]) -> Vec<String> {
    items.iter().map(|i| i.name().to_owned()).collect()
}

fn plan(pod: &Value, f: &Fragment, native: bool, template_hash: &str) -> Result<Plan, Failure> {
    if !matches!(pod.get("spec"), Some(Value::Object(_))) {
        return Err(Failure {
            reason: Reason::InvalidObject,
            message: "the Pod has no spec".into(),
        });
    }
    let mut warnings = Vec::new();
    let mut containers_by_name = named(pod, "containers")?;
    containers_by_name.extend(named(pod, "initContainers")?);
    containers_by_name.extend(named(pod, "ephemeralContainers")?);
    let volumes_by_name = named(pod, "volumes")?;
    let secrets = named(pod, "imagePullSecrets")?;

    // As native sidecars, the template's containers carry restartPolicy: Always.
    let sidecars: Vec<&Item> = f
        .containers
        .iter()
        .map(|c| {
            if native {
                c.native.as_deref().unwrap_or(c)
            } else {
                c
            }
        })
        .collect();
    let add_init = missing(&containers_by_name, f.init_containers.iter(), "container")?;
    let add_sidecars = missing(&containers_by_name, sidecars, "container")?;
    let add_volumes = missing(&volumes_by_name, f.volumes.iter(), "volume")?;
    let add_secrets: Vec<&Item> = f
        .image_pull_secrets
        .iter()
        .filter(|s| !secrets.contains_key(s.name()))
        .collect();

    // Every mount of what is injected must name a volume the Pod will have.
    let volume_names: HashSet<&str> = volumes_by_name
        .keys()
        .copied()
        .chain(f.volumes.iter().map(Item::name))
        .collect();
    let mounts = f
        .init_containers
        .iter()
        .chain(&f.containers)
        .flat_map(|c| {
            c.value
                .get("volumeMounts")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .chain(f.app_volume_mounts.iter().map(|m| &m.value));
    for m in mounts {
        if !volume_names.contains(name_of(m)) {
            return Err(Failure {
                reason: Reason::TemplateError,
                message: format!(
                    "the template mounts volume {:?}, which neither it nor the Pod defines",
                    name_of(m)
                ),
            });
        }
    }

    let mut b = PatchBuilder::default();
    b.extend_list(pod, &["spec", "imagePullSecrets"], shared(&add_secrets))?;
    b.extend_list(pod, &["spec", "volumes"], shared(&add_volumes))?;
    let mut init_items = shared(&add_init);
    if native {
        init_items.extend(shared(&add_sidecars));
    }
    b.extend_list(pod, &["spec", "initContainers"], init_items)?;
    merge_app_containers(&mut b, pod, f, &mut warnings)?;
    if !native {
        b.extend_list(pod, &["spec", "containers"], shared(&add_sidecars))?;
    }

    let status = Status {
        template_hash: template_hash.to_owned(),
        containers: names(&add_sidecars),
        init_containers: names(&add_init),
        volumes: names(&add_volumes),
        image_pull_secrets: names(&add_secrets),
    };
    let status_json = serde_json::to_string(&status).map_err(|e| Failure {
        reason: Reason::TemplateError,
        message: format!("cannot write the status annotation: {e}"),
    })?;
    match lookup(pod, &["metadata"]) {
        // A Pod template may come without metadata (a CronJob's often does).
        None | Some(Value::Null) => {
            let annotations = serde_json::json!({ STATUS_KEY: status_json });
            b.set_in_map(
                pod,
                &[],
                "metadata",
                serde_json::json!({ "annotations": annotations }),
            )?;
        }
        Some(_) => b.set_in_map(
            pod,
            &["metadata", "annotations"],
            STATUS_KEY,
            Value::String(status_json),
        )?,
    }
    Ok((b.into_patch(), status, warnings))
}

/// `appContainers`: env and volumeMounts for each of the Pod's own containers. What a
/// container already sets wins: an env var it names, a volume it mounts, a path it uses.
fn merge_app_containers(
    b: &mut PatchBuilder,
    pod: &Value,
    f: &Fragment,
    warnings: &mut Vec<String>,
) -> Result<(), Failure> {
    if f.app_env.is_empty() && f.app_volume_mounts.is_empty() {
        return Ok(());
    }
    let Some(Value::Array(containers)) = lookup(pod, &["spec", "containers"]) else {
        return Ok(());
    };
    let injected: HashSet<&str> = f
        .containers
        .iter()
        .chain(&f.init_containers)
        .map(Item::name)
        .collect();
    for (i, c) in containers.iter().enumerate() {
        if injected.contains(name_of(c)) {
            continue; // a container the template adds is no app container
        }
        let idx = i.to_string();
        let have_env: HashSet<&str> = list(c, "env").map(name_of).collect();
        let env: Vec<Shared> = f
            .app_env
            .iter()
            .filter(|e| !have_env.contains(e.name()))
            .map(|e| e.json.clone())
            .collect();
        b.extend_list(pod, &["spec", "containers", &idx, "env"], env)?;

        let have_mounts: HashSet<&str> = list(c, "volumeMounts").map(name_of).collect();
        let have_paths: HashMap<&str, &str> = list(c, "volumeMounts")
            .filter_map(|m| Some((m.get("mountPath")?.as_str()?, name_of(m))))
            .collect();
        let mut mounts = Vec::new();
        for m in f
            .app_volume_mounts
            .iter()
            .filter(|m| !have_mounts.contains(m.name()))
        {
            let path = m
                .value
                .get("mountPath")
                .and_then(Value::as_str)
                .unwrap_or_default();
            match have_paths.get(path) {
                Some(other) => warnings.push(format!(
                    "container {:?} already mounts {other:?} at {path}; {:?} not mounted there",
                    name_of(c),
                    m.name()
                )),
                None => mounts.push(m.json.clone()),
            }
        }
        b.extend_list(pod, &["spec", "containers", &idx, "volumeMounts"], mounts)?;
    }
    Ok(())
}

fn list<'a>(c: &'a Value, field: &str) -> impl Iterator<Item = &'a Value> {
    c.get(field).and_then(Value::as_array).into_iter().flatten()
}

fn gvk_string(k: &GroupVersionKind) -> String {
    if k.group.is_empty() {
        format!("{}/{}", k.version, k.kind)
    } else {
        format!("{}/{} {}", k.group, k.version, k.kind)
    }
}

/// A value for a message: at most 80 characters of its JSON.
fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() <= 80 {
        return s;
    }
    let mut end = 77;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}
