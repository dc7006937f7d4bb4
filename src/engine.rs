//! The injection engine: pure and synchronous.
//!
//! (request, namespace, config) -> [`Decision`]: whether to inject, why, and the RFC 6902 patch
//! against the object exactly as received. `/mutate`, `/preview` and the `preview` command
//! are doors onto [`decide`]; no other code decides whether or what to inject.

use crate::config::{
    Config, Fragment, FragmentError, Item, NamedTemplate, NativeSidecars, PodSecurity, Policy,
    combined_hash,
};
use crate::overrides::{self, Layer};
use crate::patch::{Patch, PatchBuilder, Shared};
use crate::pod::{Entry, PodView, Spec, string_value};
use kube::core::GroupVersionKind;
use kube::core::admission::Operation;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};

/// Pod annotation or label: `"true"` opts in, `"false"` opts out.
pub const INJECT_KEY: &str = "sidecar-injector.io/inject";
/// Pod annotation written by the injector: what it injected; a Pod that has it is not injected again.
pub const STATUS_KEY: &str = "sidecar-injector.io/status";
/// Mirror Pods (static Pods seen through the apiserver) carry this annotation.
pub const MIRROR_KEY: &str = "kubernetes.io/config.mirror";
/// The Pod Security admission level of a namespace.
pub const PSA_ENFORCE_KEY: &str = "pod-security.kubernetes.io/enforce";
/// Namespace or Pod annotation: the templates to inject, `"a,b"` (Pod over namespace over
/// `config.yaml`'s `templates`).
pub const TEMPLATES_KEY: &str = "sidecar-injector.io/templates";

/// What the cluster says about a namespace: plain data the engine reads, borrowed from
/// whoever holds it (the namespace cache).
#[derive(Debug, Clone, Copy)]
pub struct NamespaceContext<'a> {
    pub labels: &'a BTreeMap<String, String>,
    pub annotations: &'a BTreeMap<String, String>,
}

/// What the engine needs to know about one admission.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub operation: Operation,
    pub kind: &'a GroupVersionKind,
    pub sub_resource: Option<&'a str>,
    /// The request's namespace (for preview: `--namespace` or the document's own).
    pub namespace: &'a str,
    /// The namespace's labels, when known: from the namespace cache, or given to preview.
    pub namespace_labels: Option<&'a BTreeMap<String, String>>,
    /// The namespace's annotations, when known.
    pub namespace_annotations: Option<&'a BTreeMap<String, String>>,
    /// True when the apiserver has already matched the namespace against the webhook's
    /// namespaceSelector (`/mutate`): the opt-in label is then not checked again here, so a
    /// namespace cache a moment behind cannot skip a Pod the apiserver sent.
    pub namespace_selected: bool,
    /// The object as received.
    pub object: Option<Object<'a>>,
    /// The kind of workload whose Pod template this is (preview), when not a bare Pod.
    pub workload_kind: Option<&'a str>,
}

/// The object of a request: raw JSON, or a Pod already read in the same pass as its request
/// (`/mutate`).
#[derive(Debug, Clone, Copy)]
pub enum Object<'a> {
    Raw(&'a RawValue),
    Read(&'a PodView<'a>),
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
    PodSecurity,
    UnknownTemplate,
    WindowsPod,
}

impl Reason {
    pub const ALL: [Reason; 16] = [
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
        Reason::PodSecurity,
        Reason::UnknownTemplate,
        Reason::WindowsPod,
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
            Reason::PodSecurity => "pod_security",
            Reason::UnknownTemplate => "unknown_template",
            Reason::WindowsPod => "windows_pod",
        }
    }

    pub fn outcome(self) -> Outcome {
        match self {
            Reason::Injected => Outcome::Injected,
            Reason::InvalidObject
            | Reason::TemplateError
            | Reason::Conflict
            | Reason::UnknownTemplate => Outcome::Failed,
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

    fn with_warnings(mut self, mut warnings: Vec<String>) -> Decision {
        warnings.append(&mut self.warnings);
        self.warnings = warnings;
        self
    }

    /// A decision with no patch: a skip, or a failure.
    fn unpatched(reason: Reason, message: impl Into<String>) -> Decision {
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
#[serde(rename_all = "camelCase", default)]
pub struct Status {
    /// One hash for all the templates injected (the template's own when there is one).
    pub template_hash: String,
    /// Each template injected, with its own hash.
    pub templates: BTreeMap<String, String>,
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
            let mut d = inject(&pod, req, config);
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
) -> Result<Cow<'a, PodView<'a>>, Decision> {
    use Reason::*;
    if req.operation != Operation::Create {
        return Err(Decision::unpatched(
            OperationNotCreate,
            format!("operation {:?}: only CREATE is injected", req.operation),
        ));
    }
    if !req.kind.group.is_empty() || req.kind.kind != "Pod" {
        return Err(Decision::unpatched(
            NotAPod,
            format!("{} is not a Pod", gvk_string(req.kind)),
        ));
    }
    if let Some(sub) = req.sub_resource.filter(|s| !s.is_empty()) {
        return Err(Decision::unpatched(
            Subresource,
            format!("subresource {sub:?} is not injected"),
        ));
    }
    let pod = match req.object {
        None => {
            return Err(Decision::unpatched(
                InvalidObject,
                "the request carries no object",
            ));
        }
        Some(Object::Read(pod)) => Cow::Borrowed(pod),
        Some(Object::Raw(raw)) => {
            Cow::Owned(PodView::parse(raw).map_err(|e| Decision::unpatched(InvalidObject, e))?)
        }
    };
    let ns = req.namespace;
    let settings = &config.settings;
    if ns == config.own_namespace {
        return Err(Decision::unpatched(
            NeverInjectNamespace,
            format!("namespace {ns:?} is the injector's own"),
        ));
    }
    if settings.never_inject_namespaces.iter().any(|n| n == ns) {
        return Err(Decision::unpatched(
            NeverInjectNamespace,
            format!("namespace {ns:?} is in neverInjectNamespaces"),
        ));
    }
    if let Some(labels) = req.namespace_labels.filter(|_| !req.namespace_selected) {
        let key = &settings.namespace_label;
        if labels.get(key).map(String::as_str) != Some("enabled") {
            return Err(Decision::unpatched(
                NamespaceNotEnabled,
                format!("namespace {ns:?} is not labelled {key}=enabled"),
            ));
        }
    }
    if pod.annotation(MIRROR_KEY).is_some() {
        return Err(Decision::unpatched(
            MirrorPod,
            "mirror Pods (static Pods) cannot be changed",
        ));
    }
    match opt_in(&pod, warnings) {
        Some(false) => {
            return Err(Decision::unpatched(
                OptedOut,
                format!("the Pod opts out with {INJECT_KEY}=false"),
            ));
        }
        Some(true) => {}
        None if settings.policy == Policy::Disabled => {
            return Err(Decision::unpatched(
                NotOptedIn,
                format!("policy is disabled and the Pod does not opt in with {INJECT_KEY}=true"),
            ));
        }
        None => {}
    }
    if let Some(status) = pod.annotation(STATUS_KEY) {
        return Err(Decision::unpatched(
            AlreadyInjected,
            format!("the Pod already has {STATUS_KEY} ({})", short(status.get())),
        ));
    }
    Ok(pod)
}

/// The Pod's own word: `Some(false)` when either the annotation or the label says "false".
fn opt_in(pod: &PodView<'_>, warnings: &mut Vec<String>) -> Option<bool> {
    let mut said = None;
    for (where_, raw) in [
        ("annotation", pod.annotation(INJECT_KEY)),
        ("label", pod.label(INJECT_KEY)),
    ] {
        let Some(raw) = raw else { continue };
        let text = string_value(raw).map(|s| s.trim().to_ascii_lowercase());
        match text.as_deref() {
            Some("false") => return Some(false),
            Some("true") => said = Some(true),
            _ => warnings.push(format!(
                "{where_} {INJECT_KEY}={} is neither \"true\" nor \"false\"; ignored",
                short(raw.get())
            )),
        }
    }
    said
}

/// Native sidecars: an injected container becomes an init container with `restartPolicy: Always`.
fn native_sidecars(
    pod: &PodView<'_>,
    restart_policy: Option<&str>,
    req: &Request<'_>,
    config: &Config,
) -> bool {
    match config.settings.native_sidecars {
        NativeSidecars::Always => true,
        NativeSidecars::Never => false,
        NativeSidecars::Auto => runs_to_completion(pod, restart_policy, req.workload_kind),
    }
}

/// Job and CronJob Pods (owned by a Job, or from their templates), and any Pod whose
/// restartPolicy lets it finish: a plain sidecar would keep those running forever.
fn runs_to_completion(
    pod: &PodView<'_>,
    restart_policy: Option<&str>,
    workload_kind: Option<&str>,
) -> bool {
    if matches!(workload_kind, Some("Job" | "CronJob")) {
        return true;
    }
    let owned_by_job = pod.meta.owner_references.iter().flatten().any(|r| {
        r.kind.as_deref() == Some("Job")
            && r.api_version
                .as_deref()
                .is_some_and(|v| v.starts_with("batch/"))
    });
    owned_by_job || matches!(restart_policy, Some("Never" | "OnFailure"))
}

/// The templates for this Pod, and who chose them: the Pod's annotation, else its
/// namespace's, else `config.yaml`.
fn template_names<'c>(
    pod: &PodView<'_>,
    req: &Request<'_>,
    config: &'c Config,
    warnings: &mut Vec<String>,
) -> (Cow<'c, [String]>, String) {
    let parse = |text: &str| -> Vec<String> {
        text.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let mut choose = |from: String, text: Option<String>| -> Option<(Cow<'c, [String]>, String)> {
        let text = text?;
        let names = parse(&text);
        if names.is_empty() {
            warnings.push(format!(
                "{from} annotation {TEMPLATES_KEY}={text:?} names no template; ignored"
            ));
            return None;
        }
        Some((
            Cow::Owned(names),
            format!("{from} annotation {TEMPLATES_KEY}"),
        ))
    };
    let on_pod = pod
        .annotation(TEMPLATES_KEY)
        .map(|raw| string_value(raw).unwrap_or_else(|| raw.get().to_owned()));
    choose("the Pod's".to_owned(), on_pod)
        .or_else(|| {
            let ns = req.namespace_annotations?.get(TEMPLATES_KEY)?.clone();
            choose(format!("namespace {:?}", req.namespace), Some(ns))
        })
        // The common case: config.yaml's list, borrowed; who chose it is said only on failure.
        .unwrap_or((Cow::Borrowed(&config.settings.templates[..]), String::new()))
}

/// The values for this Pod: the configured ones with the namespace's and the Pod's overrides
/// merged over them, or `None` when nothing is overridden.
fn overridden_values(
    pod: &PodView<'_>,
    req: &Request<'_>,
    config: &Config,
    warnings: &mut Vec<String>,
) -> Option<Value> {
    let ns_text = req
        .namespace_annotations
        .and_then(|a| a.get(overrides::VALUES_KEY))
        .map(String::as_str);
    let pod_text = pod
        .annotation(overrides::VALUES_KEY)
        .map(|raw| string_value(raw).unwrap_or_else(|| raw.get().to_owned()));
    if ns_text.is_none() && pod_text.is_none() {
        return None;
    }
    let ns_from = format!("namespace {:?}", req.namespace);
    let mut layers = Vec::with_capacity(2);
    if let Some(text) = ns_text {
        layers.push(Layer {
            from: &ns_from,
            text,
        });
    }
    if let Some(text) = pod_text.as_deref() {
        layers.push(Layer {
            from: "the Pod's",
            text,
        });
    }
    overrides::merge(
        &config.settings.values,
        &config.settings.overridable,
        &layers,
        warnings,
    )
}

fn inject(pod: &PodView<'_>, req: &Request<'_>, config: &Config) -> Decision {
    let mut warnings = Vec::new();
    let (names, chosen_by) = template_names(pod, req, config, &mut warnings);
    let templates = match config.resolve(&names) {
        Ok(t) => t,
        Err(e) => {
            let chosen_by = if chosen_by.is_empty() {
                format!("{}'s templates", crate::config::SETTINGS_KEY)
            } else {
                chosen_by
            };
            return Decision::unpatched(Reason::UnknownTemplate, format!("{chosen_by}: {e}"))
                .with_warnings(warnings);
        }
    };
    let spec = match pod.spec() {
        Ok(s) => s,
        Err(e) => return Decision::unpatched(Reason::InvalidObject, e).with_warnings(warnings),
    };
    let templates: Vec<&NamedTemplate> = match spec.windows.as_deref() {
        None => templates,
        Some(why) => {
            let (fit, linux_only): (Vec<_>, Vec<_>) =
                templates.into_iter().partition(|t| t.windows);
            let linux_only: Vec<&str> = linux_only.iter().map(|t| t.name.as_str()).collect();
            if fit.is_empty() {
                return Decision::unpatched(
                    Reason::WindowsPod,
                    format!(
                        "the Pod runs on Windows ({why}) and no template of {names:?} declares os: [linux, windows]"
                    ),
                )
                .with_warnings(warnings);
            }
            if !linux_only.is_empty() {
                warnings.push(format!(
                    "the Pod runs on Windows ({why}): templates {linux_only:?} are Linux-only and not injected"
                ));
            }
            fit
        }
    };
    let values = overridden_values(pod, req, config, &mut warnings);
    let fragment = match config.fragment(&templates, pod, req.namespace, values.as_ref()) {
        Ok(f) => f,
        Err(FragmentError::Template(e)) if values.is_some() => {
            // Overrides are the namespace's or the Pod's: they never break injection.
            match config.fragment(&templates, pod, req.namespace, None) {
                Ok(f) => {
                    warnings.push(format!(
                        "the overridden values do not render ({e}); injected with the configured values"
                    ));
                    f
                }
                Err(e) => return fragment_failure(e).with_warnings(warnings),
            }
        }
        Err(e) => return fragment_failure(e).with_warnings(warnings),
    };
    let native = native_sidecars(pod, spec.restart_policy.as_deref(), req, config);
    match plan(pod, &spec, &fragment, native, &templates) {
        Ok((patch, status, mut plan_warnings)) => {
            warnings.append(&mut plan_warnings);
            if let Some(w) = pod_security_problem(req, &fragment, &status) {
                match config.settings.pod_security {
                    PodSecurity::Warn => warnings.push(w),
                    PodSecurity::Ignore => {}
                    PodSecurity::Skip => {
                        warnings.push(format!("not injected: {w}"));
                        return Decision::unpatched(Reason::PodSecurity, w).with_warnings(warnings);
                    }
                }
            }
            let mut message = format!("injected containers {:?}", status.containers);
            if !status.init_containers.is_empty() {
                message.push_str(&format!(", init containers {:?}", status.init_containers));
            }
            if native {
                message.push_str(" (native sidecars)");
            }
            let default_list = templates.len() == config.settings.templates.len()
                && templates
                    .iter()
                    .zip(&config.settings.templates)
                    .all(|(t, n)| &t.name == n);
            if !default_list {
                let used: Vec<&str> = templates.iter().map(|t| t.name.as_str()).collect();
                message.push_str(&format!(" from templates {used:?}"));
            }
            Decision {
                reason: Reason::Injected,
                message,
                patch,
                warnings,
            }
        }
        Err(f) => Decision::unpatched(f.reason, f.message).with_warnings(warnings),
    }
}

fn fragment_failure(e: FragmentError) -> Decision {
    match e {
        FragmentError::Template(e) => Decision::unpatched(
            Reason::TemplateError,
            format!("the template does not render for this Pod: {e}"),
        ),
        FragmentError::Conflict(e) => Decision::unpatched(Reason::Conflict, e),
    }
}

/// When the namespace's Pod Security level is known (its labels were given) and forbids
/// hostPath volumes (baseline and restricted do), the Pod will be rejected after injection:
/// say so, naming the volumes.
fn pod_security_problem(req: &Request<'_>, f: &Fragment, status: &Status) -> Option<String> {
    let level = req.namespace_labels?.get(PSA_ENFORCE_KEY)?;
    if !matches!(level.as_str(), "baseline" | "restricted") {
        return None;
    }
    let host_paths: Vec<&str> = f
        .volumes
        .iter()
        .filter(|v| {
            v.value.get("hostPath").is_some() && status.volumes.iter().any(|n| n == v.name())
        })
        .map(Item::name)
        .collect();
    (!host_paths.is_empty()).then(|| {
        format!(
            "namespace {:?} enforces Pod Security {level:?}, which rejects the injected hostPath volumes {host_paths:?}: \
             opt it out of the socket/cgroup mounts (a `when:` on them) or use the privileged level",
            req.namespace
        )
    })
}

struct Failure {
    reason: Reason,
    message: String,
}

fn conflict(message: String) -> Failure {
    Failure {
        reason: Reason::Conflict,
        message,
    }
}

fn invalid(message: String) -> Failure {
    Failure {
        reason: Reason::InvalidObject,
        message,
    }
}

/// The entries of some lists of the spec, by name.
fn by_name<'s, 'a>(lists: &[&'s Option<Vec<Entry<'a>>>]) -> HashMap<&'s str, &'s Entry<'a>> {
    lists
        .iter()
        .copied()
        .flatten()
        .flatten()
        .map(|e| (e.name.as_ref(), e))
        .collect()
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
fn missing<'w, 'a>(
    pod: &PodView<'a>,
    existing: &HashMap<&str, &Entry<'a>>,
    wanted: impl IntoIterator<Item = &'w Item>,
    what: &str,
) -> Result<Vec<&'w Item>, Failure> {
    let mut out = Vec::new();
    for w in wanted {
        match existing.get(w.name()) {
            None => out.push(w),
            Some(e) if covers(&pod.entry_value(e), &w.value) => {}
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

fn plan<'a>(
    pod: &PodView<'a>,
    spec: &Spec<'a>,
    f: &Fragment,
    native: bool,
    templates: &[&NamedTemplate],
) -> Result<Plan, Failure> {
    let mut warnings = Vec::new();
    let containers_by_name = by_name(&[
        &spec.containers,
        &spec.init_containers,
        &spec.ephemeral_containers,
    ]);
    let volumes_by_name = by_name(&[&spec.volumes]);
    let secrets = by_name(&[&spec.image_pull_secrets]);

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
    let add_init = missing(
        pod,
        &containers_by_name,
        f.init_containers.iter(),
        "container",
    )?;
    let add_sidecars = missing(pod, &containers_by_name, sidecars, "container")?;
    let add_volumes = missing(pod, &volumes_by_name, f.volumes.iter(), "volume")?;
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
    b.extend_list(
        &["spec", "imagePullSecrets"],
        spec.image_pull_secrets.is_some(),
        shared(&add_secrets),
    );
    b.extend_list(
        &["spec", "volumes"],
        spec.volumes.is_some(),
        shared(&add_volumes),
    );
    let mut init_items = shared(&add_init);
    if native {
        init_items.extend(shared(&add_sidecars));
    }
    b.extend_list(
        &["spec", "initContainers"],
        spec.init_containers.is_some(),
        init_items,
    );
    merge_app_containers(&mut b, spec, f, &mut warnings)?;
    if !native {
        b.extend_list(
            &["spec", "containers"],
            spec.containers.is_some(),
            shared(&add_sidecars),
        );
    }

    let status = Status {
        template_hash: combined_hash(templates),
        templates: templates
            .iter()
            .map(|t| (t.name.clone(), t.hash.clone()))
            .collect(),
        containers: names(&add_sidecars),
        init_containers: names(&add_init),
        volumes: names(&add_volumes),
        image_pull_secrets: names(&add_secrets),
    };
    let status_json = serde_json::to_string(&status).map_err(|e| Failure {
        reason: Reason::TemplateError,
        message: format!("cannot write the status annotation: {e}"),
    })?;
    if pod.has_metadata {
        b.set_in_map(
            &["metadata", "annotations"],
            pod.annotations_present(),
            STATUS_KEY,
            Value::String(status_json),
        );
    } else {
        // A Pod template may come without metadata (a CronJob's often does).
        let annotations = serde_json::json!({ STATUS_KEY: status_json });
        b.set_in_map(
            &[],
            true,
            "metadata",
            serde_json::json!({ "annotations": annotations }),
        );
    }
    Ok((b.into_patch(), status, warnings))
}

/// `appContainers`: env and volumeMounts for each of the Pod's own containers. What a
/// container already sets wins: an env var it names, a volume it mounts, a path it uses.
fn merge_app_containers(
    b: &mut PatchBuilder,
    spec: &Spec<'_>,
    f: &Fragment,
    warnings: &mut Vec<String>,
) -> Result<(), Failure> {
    if f.app_env.is_empty() && f.app_volume_mounts.is_empty() {
        return Ok(());
    }
    let injected: HashSet<&str> = f
        .containers
        .iter()
        .chain(&f.init_containers)
        .map(Item::name)
        .collect();
    for (i, entry) in spec.containers.iter().flatten().enumerate() {
        if injected.contains(entry.name.as_ref()) {
            continue; // a container the template adds is no app container
        }
        let idx = i.to_string();
        let c = entry
            .app_container(&format!("spec.containers[{i}]"))
            .map_err(invalid)?;
        let have_env: HashSet<&str> = c.env.iter().flatten().map(AsRef::as_ref).collect();
        let env: Vec<Shared> = f
            .app_env
            .iter()
            .filter(|e| !have_env.contains(e.name()))
            .map(|e| e.json.clone())
            .collect();
        b.extend_list(&["spec", "containers", &idx, "env"], c.env.is_some(), env);

        let have_mounts: HashSet<&str> =
            c.mounts.iter().flatten().map(|(n, _)| n.as_ref()).collect();
        let have_paths: HashMap<&str, &str> = c
            .mounts
            .iter()
            .flatten()
            .map(|(n, p)| (p.as_ref(), n.as_ref()))
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
                    c.name,
                    m.name()
                )),
                None => mounts.push(m.json.clone()),
            }
        }
        b.extend_list(
            &["spec", "containers", &idx, "volumeMounts"],
            c.mounts.is_some(),
            mounts,
        );
    }
    Ok(())
}

fn gvk_string(k: &GroupVersionKind) -> String {
    if k.group.is_empty() {
        format!("{}/{}", k.version, k.kind)
    } else {
        format!("{}/{} {}", k.group, k.version, k.kind)
    }
}

/// A value for a message: at most 80 characters of its JSON.
fn short(json: &str) -> String {
    if json.len() <= 80 {
        return json.to_owned();
    }
    let mut end = 77;
    while !json.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &json[..end])
}
