//! AdmissionReview in, AdmissionReview out: the `/mutate` door onto the engine.
//!
//! A request is read in one pass over the body into borrowed fields, as the apiserver's Go
//! code reads it: every field but `uid`, `kind` and `operation` may be absent and reads as its
//! zero value (a review without `userInfo` is injected like any other). The object is kept as
//! raw JSON so the patch is built against exactly what the apiserver sent. Responses are
//! written canonically: `patch` as the base64 string the API requires (kube-core's own
//! `AdmissionResponse` would write a byte array, kube-rs/kube#1781). kube's
//! `kube::core::admission` types stay the reference: the tests read the same reviews with them.

use crate::engine::config::{Config, FailurePolicy};
use crate::engine::pod::{PodRead, PodView};
use crate::engine::{self, Decision, Outcome, Reason};
use base64::Engine as _;
use kube::core::GroupVersionKind;
use kube::core::admission::Operation;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use std::borrow::Cow;

const REVIEW_KIND: &str = "AdmissionReview";
const API_VERSIONS: [&str; 2] = ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"];

/// `request.kind`: the group is empty for core kinds, and Go writes it so; absent reads as "".
#[derive(Deserialize)]
struct KindIn<'a> {
    #[serde(borrow, default)]
    group: Cow<'a, str>,
    #[serde(borrow, default)]
    version: Cow<'a, str>,
    #[serde(borrow)]
    kind: Cow<'a, str>,
}

/// The fields of `request` the webhook reads; the others (`userInfo`, `resource`,
/// `requestKind`, `options`, `oldObject`, ...) are skipped unread. `O` is how the object is
/// read: as a Pod, in this same pass, or (when it does not read as one) as raw JSON.
#[derive(Deserialize)]
#[serde(
    rename_all = "camelCase",
    bound(deserialize = "O: Deserialize<'de> + Default")
)]
struct RequestIn<'a, O> {
    #[serde(borrow)]
    uid: Cow<'a, str>,
    #[serde(borrow)]
    kind: KindIn<'a>,
    #[serde(borrow, default)]
    sub_resource: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    namespace: Option<Cow<'a, str>>,
    operation: Operation,
    #[serde(default)]
    object: O,
    #[serde(default)]
    dry_run: Option<bool>,
}

/// The envelope with its request read.
#[derive(Deserialize)]
#[serde(
    rename_all = "camelCase",
    bound(deserialize = "O: Deserialize<'de> + Default")
)]
struct ReviewIn<'a, O> {
    #[serde(borrow, default)]
    api_version: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    request: Option<RequestIn<'a, O>>,
}

/// The object of a review, found again (a second pass, for the rare uses of its raw JSON).
fn object_in(body: &[u8]) -> Option<&RawValue> {
    #[derive(Deserialize)]
    struct Request<'a> {
        #[serde(borrow)]
        object: Option<&'a RawValue>,
    }
    #[derive(Deserialize)]
    struct Review<'a> {
        #[serde(borrow)]
        request: Request<'a>,
    }
    serde_json::from_slice::<Review<'_>>(body)
        .ok()?
        .request
        .object
}

/// The object as the review's pass read it. (The Pod is not boxed: the review holding it is.)
#[allow(clippy::large_enum_variant)]
enum ObjectIn<'a> {
    Raw(&'a RawValue),
    Read(PodView<'a>),
}

/// The envelope alone, for bodies whose request does not read.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<'a> {
    #[serde(borrow, default)]
    api_version: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    request: Option<&'a RawValue>,
}

/// A request the webhook can answer, borrowing from the body.
pub struct Review<'a> {
    api_version: Cow<'a, str>,
    uid: Cow<'a, str>,
    kind: GroupVersionKind,
    operation: Operation,
    sub_resource: Option<Cow<'a, str>>,
    namespace: Option<Cow<'a, str>>,
    object: Option<ObjectIn<'a>>,
    dry_run: bool,
}

/// A body that cannot be answered as a review: HTTP 400 with this one-line reason.
#[derive(Debug)]
pub struct BadRequest(pub String);

/// A review whose request could only partly be read: answered as a review, never run
/// through the engine.
pub struct Unreadable {
    pub api_version: String,
    pub uid: String,
    pub problem: String,
}

pub enum Decoded<'a> {
    Review(Box<Review<'a>>),
    Unreadable(Unreadable),
}

fn check_envelope(api_version: &str, kind: &str) -> Result<(), BadRequest> {
    if kind != REVIEW_KIND || !API_VERSIONS.contains(&api_version) {
        return Err(BadRequest(format!(
            "want an admission.k8s.io/v1 AdmissionReview, got apiVersion {api_version:?} kind {kind:?}"
        )));
    }
    Ok(())
}

/// Reads a body in one pass, the Pod with it. A body whose object does not read as a Pod
/// is read again with the object left raw, for the engine to say what is wrong with it.
/// `Err` when there is nothing to answer as a review (no uid to echo).
pub fn decode(body: &[u8]) -> Result<Decoded<'_>, BadRequest> {
    if let Ok(review) = serde_json::from_slice::<ReviewIn<'_, Option<PodRead<'_>>>>(body) {
        return accept(review, |pod| {
            ObjectIn::Read(PodView::within(pod, body, object_in))
        });
    }
    match serde_json::from_slice::<ReviewIn<'_, Option<&RawValue>>>(body) {
        Ok(review) => accept(review, ObjectIn::Raw),
        Err(_) => unreadable(body),
    }
}

fn accept<'a, O>(
    review: ReviewIn<'a, Option<O>>,
    object: impl FnOnce(O) -> ObjectIn<'a>,
) -> Result<Decoded<'a>, BadRequest> {
    let api_version = review.api_version.unwrap_or_default();
    check_envelope(&api_version, review.kind.as_deref().unwrap_or_default())?;
    let Some(req) = review.request else {
        return Err(BadRequest("the AdmissionReview has no request".into()));
    };
    if req.uid.is_empty() {
        return Err(BadRequest("request.uid: empty".into()));
    }
    Ok(Decoded::Review(Box::new(Review {
        api_version,
        uid: req.uid,
        kind: GroupVersionKind {
            group: req.kind.group.into_owned(),
            version: req.kind.version.into_owned(),
            kind: req.kind.kind.into_owned(),
        },
        operation: req.operation,
        sub_resource: req.sub_resource,
        namespace: req.namespace,
        object: req.object.map(object).filter(|o| match o {
            ObjectIn::Raw(raw) => raw.get() != "null",
            ObjectIn::Read(_) => true,
        }),
        dry_run: req.dry_run.unwrap_or(false),
    })))
}

/// The slow path, for bodies that do not read: find the field at fault, and whether there is
/// a uid to answer to.
fn unreadable(body: &[u8]) -> Result<Decoded<'_>, BadRequest> {
    let envelope: Envelope<'_> = serde_json::from_slice(body)
        .map_err(|e| BadRequest(format!("the body is not a JSON object: {e}")))?;
    let api_version = envelope.api_version.as_deref().unwrap_or_default();
    check_envelope(api_version, envelope.kind.as_deref().unwrap_or_default())?;
    let Some(raw) = envelope.request.filter(|r| r.get() != "null") else {
        return Err(BadRequest("the AdmissionReview has no request".into()));
    };
    let uid = serde_json::from_str::<Value>(raw.get())
        .ok()
        .and_then(|doc| doc.get("uid").and_then(Value::as_str).map(str::to_owned));
    let mut de = serde_json::Deserializer::from_str(raw.get());
    let problem =
        match serde_path_to_error::deserialize::<_, RequestIn<'_, Option<&RawValue>>>(&mut de) {
            Err(e) => format!("request.{}: {}", e.path(), e.inner()),
            Ok(_) => "request: unreadable".to_owned(),
        };
    match uid {
        Some(uid) if !uid.is_empty() => Ok(Decoded::Unreadable(Unreadable {
            api_version: api_version.to_owned(),
            uid,
            problem,
        })),
        _ => Err(BadRequest(problem)),
    }
}

impl Review<'_> {
    pub fn uid(&self) -> &str {
        &self.uid
    }

    /// The request's namespace; absent reads as "".
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or_default()
    }

    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    /// The object's raw JSON, as received (found again in the body when it was read as a
    /// Pod: a second pass).
    pub fn object(&self) -> Option<&RawValue> {
        match self.object.as_ref()? {
            ObjectIn::Raw(raw) => Some(raw),
            ObjectIn::Read(pod) => pod.raw(),
        }
    }

    /// The object read as a Pod, when it reads as one.
    pub fn pod(&self) -> Option<Cow<'_, PodView<'_>>> {
        match self.object.as_ref()? {
            ObjectIn::Read(pod) => Some(Cow::Borrowed(pod)),
            ObjectIn::Raw(raw) => PodView::parse(raw).ok().map(Cow::Owned),
        }
    }

    /// Runs the engine on this request; `namespace` is what the namespace cache knows of the
    /// request's namespace, when it knows.
    pub fn decide(
        &self,
        config: &Config,
        namespace: Option<engine::NamespaceContext<'_>>,
    ) -> Decision {
        engine::decide(
            &engine::Request {
                operation: self.operation.clone(),
                kind: &self.kind,
                sub_resource: self.sub_resource.as_deref(),
                namespace: self.namespace.as_deref().unwrap_or("default"),
                namespace_labels: namespace.map(|n| n.labels),
                namespace_annotations: namespace.map(|n| n.annotations),
                namespace_selected: true,
                object: self.object.as_ref().map(|o| match o {
                    ObjectIn::Raw(raw) => engine::Object::Raw(raw),
                    ObjectIn::Read(pod) => engine::Object::Read(pod),
                }),
                workload_kind: None,
            },
            config,
        )
    }

    /// The answer to send back, per the config's failurePolicy.
    pub fn respond(
        &self,
        decision: &Decision,
        failure_policy: FailurePolicy,
    ) -> Result<Vec<u8>, String> {
        let mut out = ResponseOut::allowed(&self.uid);
        let mut denial = None;
        let mut extra = None;
        match decision.outcome() {
            Outcome::Injected => {
                let patch = serde_json::to_vec(&decision.patch)
                    .map_err(|e| format!("cannot serialize the patch: {e}"))?;
                out.patch = Some(patch);
            }
            Outcome::Skipped => {}
            Outcome::Failed => match failure_policy {
                FailurePolicy::Ignore => {
                    extra = Some(format!(
                        "sidecar-injector: not injected ({}): {}",
                        decision.reason.as_str(),
                        decision.message
                    ))
                }
                FailurePolicy::Fail => {
                    denial = Some(format!("sidecar-injector: {}", decision.message));
                }
            },
        }
        // kubectl prints each as `Warning: ...`: say whose it is.
        let prefixed: Vec<String> = decision
            .warnings
            .iter()
            .map(|w| format!("sidecar-injector: {w}"))
            .collect();
        let warnings: Vec<&str> = prefixed
            .iter()
            .map(String::as_str)
            .chain(extra.as_deref())
            .collect();
        if let Some(message) = &denial {
            out.deny(message);
        }
        out.warnings = warnings;
        // The apiserver keeps the first value written under a key and logs every attempt to
        // change it: a second call for a Pod we already injected (a reinvocation) says nothing,
        // so the first call's `injected` stands.
        if decision.reason != Reason::AlreadyInjected {
            out.audit_annotations = Some(AuditOut {
                decision: decision.outcome().as_str(),
                reason: decision.reason.as_str(),
            });
        }
        encode(&self.api_version, out)
    }
}

impl Unreadable {
    /// A review whose request could not be read is admitted unchanged (Ignore) or denied (Fail).
    pub fn respond(&self, failure_policy: FailurePolicy) -> Result<Vec<u8>, String> {
        let message = format!(
            "sidecar-injector: the AdmissionReview could not be read: {}",
            self.problem
        );
        let mut out = ResponseOut::allowed(&self.uid);
        match failure_policy {
            FailurePolicy::Ignore => out.warnings = vec![&message],
            FailurePolicy::Fail => out.deny(&message),
        }
        encode(&self.api_version, out)
    }
}

/// The reason recorded for a review that could not be read.
pub const UNREADABLE_REASON: Reason = Reason::InvalidObject;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'a str,
    kind: &'static str,
    response: ResponseOut<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<StatusOut<'a>>,
    /// The JSON Patch, written by [`encode`] as `patchType` and base64 `patch`.
    #[serde(skip)]
    patch: Option<Vec<u8>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    audit_annotations: Option<AuditOut>,
}

#[derive(Serialize)]
struct AuditOut {
    decision: &'static str,
    reason: &'static str,
}

#[derive(Serialize)]
struct StatusOut<'a> {
    status: &'static str,
    code: u16,
    reason: &'static str,
    message: &'a str,
}

impl<'a> ResponseOut<'a> {
    fn allowed(uid: &'a str) -> Self {
        ResponseOut {
            uid,
            allowed: true,
            status: None,
            patch: None,
            warnings: Vec::new(),
            audit_annotations: None,
        }
    }

    /// Refuses the object: no patch, a 403 status with `message`.
    fn deny(&mut self, message: &'a str) {
        self.allowed = false;
        self.patch = None;
        self.status = Some(StatusOut {
            status: "Failure",
            code: 403,
            reason: "Forbidden",
            message,
        });
    }
}

/// Writes a response the way the API documents it. The patch goes in last, base64-encoded
/// straight into the answer: base64 never needs JSON escaping, so it skips serde's per-byte
/// string escaping (a few KB per injected Pod).
fn encode(api_version: &str, mut response: ResponseOut<'_>) -> Result<Vec<u8>, String> {
    let patch = response.patch.take();
    let out = ReviewOut {
        api_version: if api_version.is_empty() {
            API_VERSIONS[0]
        } else {
            api_version
        },
        kind: REVIEW_KIND,
        response,
    };
    let mut buf = Vec::with_capacity(256 + patch.as_ref().map_or(0, |p| p.len() * 4 / 3 + 4));
    serde_json::to_writer(&mut buf, &out)
        .map_err(|e| format!("cannot serialize the review: {e}"))?;
    if let Some(patch) = patch {
        // `{..."response":{...}}`: the response object, never empty (uid, allowed), closes
        // just before the review's own closing brace.
        if !buf.ends_with(b"}}") {
            return Err("the review does not end its response object".into());
        }
        let tail = buf.split_off(buf.len() - 2);
        buf.extend_from_slice(br#","patchType":"JSONPatch","patch":""#);
        let start = buf.len();
        buf.resize(
            start + base64::encoded_len(patch.len(), true).unwrap_or(0),
            0,
        );
        let written = base64::engine::general_purpose::STANDARD
            .encode_slice(&patch, &mut buf[start..])
            .map_err(|e| format!("cannot encode the patch: {e}"))?;
        buf.truncate(start + written);
        buf.push(b'"');
        buf.extend_from_slice(&tail);
    }
    Ok(buf)
}
