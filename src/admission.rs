//! AdmissionReview in, AdmissionReview out: the `/mutate` door onto the engine.
//!
//! Requests are read with kube's `kube::core::admission` types, except the object, which is
//! kept as raw JSON so the patch is built against exactly what the apiserver sent. Responses
//! are written canonically: `patch` as the base64 string the API requires (kube-core's own
//! `AdmissionResponse` would write a byte array, kube-rs/kube#1781).

use crate::config::{Config, FailurePolicy};
use crate::engine::{self, Decision, Outcome, Reason};
use base64::Engine as _;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::admission::{AdmissionRequest, AdmissionResponse};
use kube::core::{NamespaceResourceScope, Resource, TypeMeta};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::HashMap;

const REVIEW_KIND: &str = "AdmissionReview";
const API_VERSIONS: [&str; 2] = ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"];

/// An object kept as the JSON the apiserver sent, so kube's `AdmissionRequest<T>` can carry it
/// unparsed. It has no typed metadata (`meta()` is empty): nothing reads the object through
/// kube's types; the engine reads the raw JSON.
#[derive(Debug, Clone)]
pub struct RawObject {
    raw: Box<RawValue>,
    meta: ObjectMeta,
}

impl RawObject {
    pub fn raw(&self) -> &RawValue {
        &self.raw
    }
}

impl<'de> Deserialize<'de> for RawObject {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(RawObject {
            raw: Box::<RawValue>::deserialize(d)?,
            meta: ObjectMeta::default(),
        })
    }
}

impl Serialize for RawObject {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.raw.serialize(s)
    }
}

impl Resource for RawObject {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;
    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("Object")
    }
    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("")
    }
    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("v1")
    }
    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("objects")
    }
    fn meta(&self) -> &ObjectMeta {
        &self.meta
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.meta
    }
}

/// A request the webhook can answer.
pub struct Review {
    pub request: AdmissionRequest<RawObject>,
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

pub enum Decoded {
    Review(Box<Review>),
    Unreadable(Unreadable),
}

/// The envelope, borrowed: kube's `AdmissionReview` flattens its `TypeMeta`, which would
/// buffer the whole body, object included.
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

/// Reads a body in one pass: the request with kube's types, the object left as raw JSON.
/// `Err` when there is nothing to answer as a review (no uid to echo).
pub fn decode(body: &[u8]) -> Result<Decoded, BadRequest> {
    let envelope: Envelope<'_> = serde_json::from_slice(body)
        .map_err(|e| BadRequest(format!("the body is not a JSON object: {e}")))?;
    let api_version = envelope.api_version.as_deref().unwrap_or_default();
    let kind = envelope.kind.as_deref().unwrap_or_default();
    if kind != REVIEW_KIND || !API_VERSIONS.contains(&api_version) {
        return Err(BadRequest(format!(
            "want an admission.k8s.io/v1 AdmissionReview, got apiVersion {api_version:?} kind {kind:?}"
        )));
    }
    let Some(raw) = envelope.request.filter(|r| r.get() != "null") else {
        return Err(BadRequest("the AdmissionReview has no request".into()));
    };
    match serde_json::from_str::<AdmissionRequest<RawObject>>(raw.get()) {
        Ok(mut request) => {
            request.types = TypeMeta {
                api_version: api_version.to_owned(),
                kind: kind.to_owned(),
            };
            Ok(Decoded::Review(Box::new(Review { request })))
        }
        Err(_) => unreadable(api_version, raw),
    }
}

/// The slow path, for requests that do not read: find the field at fault, and whether there
/// is a uid to answer to.
fn unreadable(api_version: &str, raw: &RawValue) -> Result<Decoded, BadRequest> {
    let doc: Value =
        serde_json::from_str(raw.get()).map_err(|e| BadRequest(format!("request: {e}")))?;
    let uid = doc.get("uid").and_then(Value::as_str).map(str::to_owned);
    let problem = match serde_path_to_error::deserialize::<_, AdmissionRequest<RawObject>>(doc) {
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

impl Review {
    /// The object as received.
    pub fn object(&self) -> Option<&RawValue> {
        self.request.object.as_ref().map(RawObject::raw)
    }

    /// Runs the engine on this request.
    pub fn decide(&self, config: &Config) -> Decision {
        let req = &self.request;
        engine::decide(
            &engine::Request {
                operation: req.operation.clone(),
                kind: &req.kind,
                sub_resource: req.sub_resource.as_deref(),
                namespace: req.namespace.as_deref().unwrap_or("default"),
                namespace_labels: None,
                object: self.object(),
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
        let mut resp = AdmissionResponse::from(&self.request);
        let mut warnings = decision.warnings.clone();
        match decision.outcome() {
            Outcome::Injected => {
                let patch = serde_json::to_vec(&decision.patch)
                    .map_err(|e| format!("cannot serialize the patch: {e}"))?;
                resp.patch = Some(patch);
            }
            Outcome::Skipped => {}
            Outcome::Failed => match failure_policy {
                FailurePolicy::Ignore => warnings.push(format!(
                    "sidecar-injector: not injected ({}): {}",
                    decision.reason.as_str(),
                    decision.message
                )),
                FailurePolicy::Fail => {
                    resp = resp.deny(format!("sidecar-injector: {}", decision.message));
                }
            },
        }
        if !warnings.is_empty() {
            resp.warnings = Some(warnings);
        }
        resp.audit_annotations = HashMap::from([
            (
                "decision".to_owned(),
                decision.outcome().as_str().to_owned(),
            ),
            ("reason".to_owned(), decision.reason.as_str().to_owned()),
        ]);
        encode(&self.request.types.api_version, &resp)
    }
}

impl Unreadable {
    /// A review whose request could not be read is admitted unchanged (Ignore) or denied (Fail).
    pub fn respond(&self, failure_policy: FailurePolicy) -> Result<Vec<u8>, String> {
        let message = format!(
            "sidecar-injector: the AdmissionReview could not be read: {}",
            self.problem
        );
        let mut resp = AdmissionResponse::invalid(&message);
        resp.uid = self.uid.clone();
        match failure_policy {
            FailurePolicy::Ignore => {
                resp.allowed = true;
                resp.warnings = Some(vec![message]);
            }
            FailurePolicy::Fail => resp = resp.deny(message),
        }
        encode(&self.api_version, &resp)
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
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    warnings: Option<&'a Vec<String>>,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    audit_annotations: &'a HashMap<String, String>,
}

#[derive(Serialize)]
struct StatusOut<'a> {
    status: &'static str,
    code: u16,
    reason: &'static str,
    message: &'a str,
}

/// Writes a response the way the API documents it.
fn encode(api_version: &str, resp: &AdmissionResponse) -> Result<Vec<u8>, String> {
    let patch = resp
        .patch
        .as_deref()
        .filter(|p| !p.is_empty())
        .map(|p| base64::engine::general_purpose::STANDARD.encode(p));
    let out = ReviewOut {
        api_version: if api_version.is_empty() {
            API_VERSIONS[0]
        } else {
            api_version
        },
        kind: REVIEW_KIND,
        response: ResponseOut {
            uid: &resp.uid,
            allowed: resp.allowed,
            status: (!resp.allowed).then_some(StatusOut {
                status: "Failure",
                code: 403,
                reason: "Forbidden",
                message: &resp.result.message,
            }),
            patch_type: patch.as_ref().map(|_| "JSONPatch"),
            patch,
            warnings: resp.warnings.as_ref(),
            audit_annotations: &resp.audit_annotations,
        },
    };
    serde_json::to_vec(&out).map_err(|e| format!("cannot serialize the review: {e}"))
}
