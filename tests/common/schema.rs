//! Strict schema checks in Rust: each document is read as its k8s-openapi type (a wrong type
//! fails there, with its path), written back, and compared with what was read: a field the
//! type does not know is dropped by the round trip, and is reported with its path.
//!
//! This stands in for Python's `kubernetes-validate --strict`, so `cargo test` needs nothing
//! but Rust. Kinds without a schema here are an error, never a silent pass; the caller says
//! which kinds are not Kubernetes' own (`skip`).

use k8s_openapi::api::{admissionregistration, apps, batch, coordination, core, policy, rbac};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

fn round_trip<T: DeserializeOwned + Serialize>(doc: &Value) -> Result<Value, String> {
    let typed: T = serde_path_to_error::deserialize(doc.clone())
        .map_err(|e| format!("{}: {}", e.path(), e.inner()))?;
    serde_json::to_value(&typed).map_err(|e| format!("cannot write it back: {e}"))
}

/// The document as its type sees it, or why it is not one.
fn typed(doc: &Value) -> Result<Value, String> {
    let api_version = doc["apiVersion"].as_str().unwrap_or_default();
    let kind = doc["kind"].as_str().unwrap_or_default();
    match (api_version, kind) {
        ("v1", "Pod") => round_trip::<core::v1::Pod>(doc),
        ("v1", "Service") => round_trip::<core::v1::Service>(doc),
        ("v1", "ConfigMap") => round_trip::<core::v1::ConfigMap>(doc),
        ("v1", "Secret") => round_trip::<core::v1::Secret>(doc),
        ("v1", "Namespace") => round_trip::<core::v1::Namespace>(doc),
        ("v1", "ServiceAccount") => round_trip::<core::v1::ServiceAccount>(doc),
        ("v1", "ReplicationController") => round_trip::<core::v1::ReplicationController>(doc),
        ("apps/v1", "Deployment") => round_trip::<apps::v1::Deployment>(doc),
        ("apps/v1", "StatefulSet") => round_trip::<apps::v1::StatefulSet>(doc),
        ("apps/v1", "DaemonSet") => round_trip::<apps::v1::DaemonSet>(doc),
        ("apps/v1", "ReplicaSet") => round_trip::<apps::v1::ReplicaSet>(doc),
        ("batch/v1", "Job") => round_trip::<batch::v1::Job>(doc),
        ("batch/v1", "CronJob") => round_trip::<batch::v1::CronJob>(doc),
        ("policy/v1", "PodDisruptionBudget") => round_trip::<policy::v1::PodDisruptionBudget>(doc),
        ("coordination.k8s.io/v1", "Lease") => round_trip::<coordination::v1::Lease>(doc),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => round_trip::<rbac::v1::ClusterRole>(doc),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            round_trip::<rbac::v1::ClusterRoleBinding>(doc)
        }
        ("rbac.authorization.k8s.io/v1", "Role") => round_trip::<rbac::v1::Role>(doc),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => round_trip::<rbac::v1::RoleBinding>(doc),
        ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration") => {
            round_trip::<admissionregistration::v1::MutatingWebhookConfiguration>(doc)
        }
        ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy") => {
            round_trip::<admissionregistration::v1::ValidatingAdmissionPolicy>(doc)
        }
        ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding") => {
            round_trip::<admissionregistration::v1::ValidatingAdmissionPolicyBinding>(doc)
        }
        _ => Err(format!("no schema here for {api_version} {kind}")),
    }
}

/// Every field of `read` that `written` lacks or holds differently, with its path. Nulls read
/// are absent fields, as the apiserver reads them.
fn differences(read: &Value, written: &Value, path: &str, out: &mut Vec<String>) {
    match (read, written) {
        (Value::Object(r), Value::Object(w)) => {
            for (k, v) in r {
                let at = format!("{path}.{k}");
                match w.get(k) {
                    None if v.is_null() => {}
                    None => out.push(format!("{at}: unknown field")),
                    Some(wv) => differences(v, wv, &at, out),
                }
            }
        }
        (Value::Array(r), Value::Array(w)) if r.len() == w.len() => {
            for (i, (rv, wv)) in r.iter().zip(w).enumerate() {
                differences(rv, wv, &format!("{path}[{i}]"), out);
            }
        }
        (Value::Number(r), Value::Number(w)) if r.as_f64() == w.as_f64() => {}
        _ if read == written => {}
        _ => out.push(format!("{path}: read {read}, the type holds {written}")),
    }
}

/// The problems of one document (a `List` is checked item by item); empty when it is valid.
pub fn problems(doc: &Value) -> Vec<String> {
    if doc["kind"] == "List" {
        let items = doc["items"].as_array().cloned().unwrap_or_default();
        return items
            .iter()
            .enumerate()
            .flat_map(|(i, item)| {
                problems(item)
                    .into_iter()
                    .map(move |p| format!("items[{i}]: {p}"))
            })
            .collect();
    }
    for field in ["apiVersion", "kind"] {
        if !doc[field].is_string() {
            return vec![format!("{field}: missing")];
        }
    }
    match typed(doc) {
        Err(e) => vec![e],
        Ok(written) => {
            let mut out = Vec::new();
            differences(doc, &written, "", &mut out);
            out
        }
    }
}

/// Asserts every document is valid, naming each problem with its document and path. Kinds in
/// `skip` (not Kubernetes' own, such as OpenShift's DeploymentConfig), also as `List` items,
/// are not checked; the number of objects checked is returned.
pub fn assert_valid(what: &str, docs: &[Value], skip: &[&str]) -> usize {
    let mut all = Vec::new();
    let mut checked = 0;
    for (i, doc) in docs.iter().enumerate() {
        let objects: Vec<(String, &Value)> = if doc["kind"] == "List" {
            let items = doc["items"].as_array().into_iter().flatten();
            items
                .enumerate()
                .map(|(j, item)| (format!("items[{j}] "), item))
                .collect()
        } else {
            vec![(String::new(), doc)]
        };
        for (at, object) in objects {
            if skip.contains(&object["kind"].as_str().unwrap_or_default()) {
                continue;
            }
            checked += 1;
            for p in problems(object) {
                all.push(format!(
                    "{what}: document {} {at}({}): {p}",
                    i + 1,
                    object["kind"]
                ));
            }
        }
    }
    assert!(all.is_empty(), "schema problems:\n{}", all.join("\n"));
    checked
}
