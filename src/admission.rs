//! AdmissionReview in, AdmissionReview out: the `/mutate` door onto the engine.
//!
//! Requests are read with kube's `kube::core::admission` types, except the object, which is
//! kept as raw JSON so the patch is built against exactly what the apiserver sent. Responses
//! are written canonically: `patch` as the base64 string the API requires (kube-core's own
//! `AdmissionResponse` would write a byte array, kube-rs/kube#1781).

use crate::config::{Config, FailurePolicy};
use crate::engine::{self, Decision, Outcome, Reason};
use base64::Engine as _;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;

const REVIEW_KIND: &str = "AdmissionReview";
const API_VERSIONS: [&str; 2] = ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"];

/// A request the webhook can answer.
pub struct Review {
    pub request: AdmissionRequest<DynamicObject>,
    /// `request.object`, untouched.
    pub object: Option<Value>,
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

/// Reads a body. `Err` when there is nothing to answer as a review (no uid to echo).
pub fn decode(body: &[u8]) -> Result<Decoded, BadRequest> {
    let mut doc: Value = serde_json::from_slice(body)
        .map_err(|e| BadRequest(format!("the body is not JSON: {e}")))?;
    let api_version = doc
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
    if kind != REVIEW_KIND || !API_VERSIONS.contains(&api_version.as_str()) {
        return Err(BadRequest(format!(
            "want an admission.k8s.io/v1 AdmissionReview, got apiVersion {api_version:?} kind {kind:?}"
        )));
    }
    let Some(request) = doc.get_mut("request").and_then(Value::as_object_mut) else {
        return Err(BadRequest("the AdmissionReview has no request".into()));
    };
    let object = request.remove("object");
    request.remove("oldObject");
    let uid = request
        .get("uid")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let review: Result<AdmissionReview<DynamicObject>, _> = serde_path_to_error::deserialize(doc);
    match (review, uid) {
        (Ok(review), _) => {
            let request = review
                .try_into()
                .map_err(|_| BadRequest("the AdmissionReview has no request".into()))?;
            Ok(Decoded::Review(Box::new(Review {
                request,
                object: object.filter(|o| !o.is_null()),
            })))
        }
        (Err(e), Some(uid)) if !uid.is_empty() => Ok(Decoded::Unreadable(Unreadable {
            api_version,
            uid,
            problem: format!("request.{}: {}", e.path(), e.inner()),
        })),
        (Err(e), _) => Err(BadRequest(format!("request.{}: {}", e.path(), e.inner()))),
    }
}

impl Review {
    /// Runs the engine on this request.
    pub fn decide(&self, config: &Config) -> Decision {
        let req = &self.request;
        let namespace = req
            .namespace
            .as_deref()
            .or_else(|| {
                self.object
                    .as_ref()?
                    .pointer("/metadata/namespace")?
                    .as_str()
            })
            .unwrap_or("default");
        engine::decide(
            &engine::Request {
                operation: req.operation.clone(),
                kind: &req.kind,
                sub_resource: req.sub_resource.as_deref(),
                namespace,
                namespace_labels: None,
                object: self.object.as_ref(),
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
