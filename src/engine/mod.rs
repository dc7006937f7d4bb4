//! The injection engine: pure and synchronous.
//!
//! (request, namespace, config) -> [`Decision`]: whether to inject, why, and the RFC 6902 patch
//! against the object exactly as received. `/mutate`, `/preview` and the `preview` command
//! are doors onto [`decide`]; no other code decides whether or what to inject.

use crate::engine::config::{
    Config, Fragment, FragmentError, Item, NamedTemplate, NativeSidecars, PodSecurity, Policy,
    combined_hash,
};
use crate::engine::patch::{Patch, PatchBuilder, Shared};
use crate::engine::pod::{Entry, PodView, Spec, string_value};
use inject::{gvk_string, short};
use kube::core::GroupVersionKind;
use kube::core::admission::Operation;
use overrides::Layer;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};

pub mod certificates;
pub mod config;
pub mod image;
mod inject;
pub mod overrides;
pub mod patch;
pub mod pod;
pub mod preview;
pub mod secret_copies;
pub mod template;
pub mod uninstall;
pub mod yaml;

use inject::inject;
/// The ServiceAccount admission plugin's projected token volume is `kube-api-access-XXXXX`.
pub const TOKEN_VOLUME_PREFIX: &str = "kube-api-access-";
/// Where that plugin mounts it in every container.
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

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
    /// Why something the templates can add is not there (`values.mountDockerSocket: auto`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
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
    if config.never_injects(ns) {
        let why = if ns == config.own_namespace {
            "is the injector's own"
        } else {
            "is in neverInjectNamespaces"
        };
        return Err(Decision::unpatched(
            NeverInjectNamespace,
            format!("namespace {ns:?} {why}"),
        ));
    }
    if let Some(labels) = req.namespace_labels.filter(|_| !req.namespace_selected)
        && !settings.namespace_opted_in(labels)
    {
        let key = &settings.namespace_label;
        return Err(Decision::unpatched(
            NamespaceNotEnabled,
            format!("namespace {ns:?} is not labelled {key}=enabled"),
        ));
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
