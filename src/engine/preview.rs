//! Manifests in, manifests out: the `preview` door onto the engine.
//!
//! Each document is a Pod, a workload with a Pod template, a `List` of those, or anything
//! else (passed through unchanged). Every Pod or Pod template found goes through the same
//! [`engine::decide`] as `/mutate`; the patch is rebased onto the document, so `-o patch`
//! prints patches that apply to the documents as given.

use crate::engine::config::Config;
use crate::engine::patch::Patch;
use crate::engine::{self, Decision, Outcome};
use kube::core::GroupVersionKind;
use kube::core::admission::Operation;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Where the Pod template of each workload kind lives.
fn template_path(kind: &str) -> Option<&'static [&'static str]> {
    match kind {
        "Pod" => Some(&[]),
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "ReplicationController"
        | "Job" => Some(&["spec", "template"]),
        "CronJob" => Some(&["spec", "jobTemplate", "spec", "template"]),
        _ => None,
    }
}

/// How the namespace of each document is chosen.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--namespace`: overrides every document's own.
    pub namespace: Option<String>,
    /// `--namespace-label`: the namespace's labels, when the user states them.
    pub namespace_labels: Option<BTreeMap<String, String>>,
    /// `--namespace-annotation`: the namespace's annotations (templates, value overrides).
    pub namespace_annotations: Option<BTreeMap<String, String>>,
    /// Namespaces read from the cluster (`--kubeconfig`), by name: used for the labels or
    /// annotations the command line does not give.
    pub cluster_namespaces: BTreeMap<String, KnownNamespace>,
}

/// A namespace's labels and annotations, as the cluster has them.
#[derive(Debug, Clone, Default)]
pub struct KnownNamespace {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// The namespace each Pod or Pod template of `doc` would be created in (for `--kubeconfig`
/// to read them before the preview).
pub fn namespaces_of(doc: &Value, opts: &Options, out: &mut std::collections::BTreeSet<String>) {
    if doc.get("kind").and_then(Value::as_str) == Some("List") {
        for item in doc
            .get("items")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            namespaces_of(item, opts, out);
        }
        return;
    }
    out.insert(namespace_of(doc, opts).to_owned());
}

fn namespace_of<'a>(doc: &'a Value, opts: &'a Options) -> &'a str {
    opts.namespace
        .as_deref()
        .or_else(|| lookup(doc, &["metadata", "namespace"]).and_then(Value::as_str))
        .unwrap_or("default")
}

/// One Pod (or Pod template) found in a document, and what the engine decided for it.
#[derive(Debug)]
pub struct Found {
    /// `Deployment/web`, `List/items[1]/Pod/x`: for people.
    pub what: String,
    pub decision: Decision,
}

/// A document after preview.
#[derive(Debug)]
pub struct Previewed {
    pub original: Value,
    pub result: Value,
    /// The patch that turns `original` into `result`.
    pub patch: Patch,
    pub found: Vec<Found>,
}

impl Previewed {
    pub fn changed(&self) -> bool {
        !self.patch.is_empty()
    }
}

/// The value at `path`, where every step is an object key or a list index.
pub fn lookup<'a>(doc: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(doc, |cur, step| match cur {
        Value::Object(m) => m.get(*step),
        Value::Array(a) => step.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

/// Runs one document through the engine.
pub fn document(doc: Value, opts: &Options, config: &Config) -> Result<Previewed, String> {
    let mut ops = Vec::new();
    let mut found = Vec::new();
    walk(&doc, &[], opts, config, &mut ops, &mut found, "");
    let patch = Patch(ops);
    let mut result = doc.clone();
    patch
        .apply(&mut result)
        .map_err(|e| format!("the patch does not apply to the document: {e}"))?;
    Ok(Previewed {
        original: doc,
        result,
        patch,
        found,
    })
}

fn walk(
    doc: &Value,
    at: &[String],
    opts: &Options,
    config: &Config,
    ops: &mut Vec<crate::engine::patch::Op>,
    found: &mut Vec<Found>,
    label_prefix: &str,
) {
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
    let name = lookup(doc, &["metadata", "name"])
        .or_else(|| lookup(doc, &["metadata", "generateName"]))
        .and_then(Value::as_str)
        .unwrap_or("(unnamed)");
    if kind == "List" {
        for (i, item) in doc
            .get("items")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let mut path = at.to_vec();
            path.extend(["items".to_owned(), i.to_string()]);
            walk(
                item,
                &path,
                opts,
                config,
                ops,
                found,
                &format!("{label_prefix}List/items[{i}]/"),
            );
        }
        return;
    }
    let Some(tpath) = template_path(kind) else {
        return;
    };
    let Some(template) = lookup(doc, tpath) else {
        return;
    };
    let namespace = namespace_of(doc, opts);
    let known = opts.cluster_namespaces.get(namespace);
    // A Pod template seen as the Pod it will make.
    let pod_view;
    let pod = if kind == "Pod" {
        doc
    } else {
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod"});
        for key in ["metadata", "spec"] {
            if let Some(v) = template.get(key) {
                pod[key] = v.clone();
            }
        }
        pod_view = pod;
        &pod_view
    };
    let gvk = GroupVersionKind::gvk("", "v1", "Pod");
    let raw = match serde_json::value::to_raw_value(pod) {
        Ok(r) => r,
        Err(_) => return, // a Value always serializes
    };
    let decision = engine::decide(
        &engine::Request {
            operation: Operation::Create,
            kind: &gvk,
            sub_resource: None,
            namespace,
            namespace_labels: opts.namespace_labels.as_ref().or(known.map(|k| &k.labels)),
            namespace_annotations: opts
                .namespace_annotations
                .as_ref()
                .or(known.map(|k| &k.annotations)),
            namespace_selected: false,
            object: Some(engine::Object::Raw(&raw)),
            workload_kind: (kind != "Pod").then_some(kind),
        },
        config,
    );
    let mut prefix: Vec<&str> = at.iter().map(String::as_str).collect();
    prefix.extend_from_slice(tpath);
    ops.extend(decision.patch.rebased(&prefix).0);
    found.push(Found {
        what: format!("{label_prefix}{kind}/{name}"),
        decision,
    });
}

/// The body of `POST /preview`.
#[derive(Serialize)]
pub struct HttpAnswer<'a> {
    /// For a Pod: its decision; for a workload: that of its template.
    pub decision: &'static str,
    pub reason: &'static str,
    pub message: &'a str,
    pub warnings: &'a [String],
    pub patch: &'a Patch,
    pub object: &'a Value,
}

impl Previewed {
    /// The answer of `POST /preview` for a document holding one Pod or Pod template.
    pub fn http_answer(&self) -> HttpAnswer<'_> {
        const NONE: &[String] = &[];
        match self.found.first() {
            Some(f) => HttpAnswer {
                decision: f.decision.outcome().as_str(),
                reason: f.decision.reason.as_str(),
                message: &f.decision.message,
                warnings: &f.decision.warnings,
                patch: &self.patch,
                object: &self.result,
            },
            None => HttpAnswer {
                decision: Outcome::Skipped.as_str(),
                reason: engine::Reason::NotAPod.as_str(),
                message: "the document holds no Pod or Pod template",
                warnings: NONE,
                patch: &self.patch,
                object: &self.result,
            },
        }
    }
}

/// Splits a manifest stream into documents, each with its own text when the input is YAML
/// (so unchanged documents can be printed exactly as they came).
pub fn read_documents(input: &str) -> Result<Vec<(Value, Option<String>)>, String> {
    let trimmed = input.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let mut docs = Vec::new();
        for (i, doc) in serde_json::Deserializer::from_str(input)
            .into_iter::<Value>()
            .enumerate()
        {
            docs.push((
                doc.map_err(|e| format!("JSON document {}: {e}", i + 1))?,
                None,
            ));
        }
        return Ok(docs);
    }
    let mut docs = Vec::new();
    for chunk in split_yaml(input) {
        match crate::engine::yaml::from_str::<Value>(&chunk) {
            Ok(Value::Null) => {}
            Ok(doc) => docs.push((doc, Some(chunk))),
            Err(_) => {
                // The split was too naive for this stream; parse it whole, without raw texts.
                return crate::engine::yaml::documents::<Value>(input)
                    .map(|all| {
                        all.into_iter()
                            .filter(|d| !d.is_null())
                            .map(|d| (d, None))
                            .collect()
                    })
                    .map_err(|e| format!("YAML: {e}"));
            }
        }
    }
    Ok(docs)
}

/// Splits on `---` document markers at the start of a line.
fn split_yaml(input: &str) -> Vec<String> {
    let mut chunks = vec![String::new()];
    for line in input.split_inclusive('\n') {
        let is_marker =
            line.starts_with("---") && line[3..].chars().next().is_none_or(char::is_whitespace);
        if is_marker {
            chunks.push(String::new());
            let rest = line[3..].trim();
            if !rest.is_empty() && !rest.starts_with('#') {
                // content on the marker line (`--- {a: 1}`) belongs to the new document
                if let Some(last) = chunks.last_mut() {
                    last.push_str(rest);
                    last.push('\n');
                }
            }
        } else if let Some(last) = chunks.last_mut() {
            last.push_str(line);
        }
    }
    chunks
}

/// `-o` of the `preview` command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
    Patch,
    Diff,
}

/// Prints the previewed documents: as many, and in the same order, as came in. An unchanged
/// YAML document is printed exactly as it was read, to its last byte.
pub fn format(docs: &[(Previewed, Option<String>)], format: Format) -> Result<String, String> {
    let mut out = String::new();
    for (i, (p, raw)) in docs.iter().enumerate() {
        match format {
            Format::Yaml => {
                if i > 0 {
                    out.push_str("---\n");
                }
                match raw {
                    Some(text) if !p.changed() => out.push_str(text),
                    _ => out.push_str(&crate::engine::yaml::to_string(&p.result)?),
                }
                // Only a separator needs a line of its own: an untouched last document keeps
                // its last byte (a `|` block scalar ending the file has no final newline, and
                // adding one would change its value).
                if !out.ends_with('\n') && i + 1 < docs.len() {
                    out.push('\n');
                }
            }
            Format::Json => {
                out.push_str(&serde_json::to_string_pretty(&p.result).map_err(|e| e.to_string())?);
                out.push('\n');
            }
            Format::Patch => {
                out.push_str(&serde_json::to_string(&p.patch).map_err(|e| e.to_string())?);
                out.push('\n');
            }
            Format::Diff => {
                if !p.changed() {
                    continue;
                }
                let before = crate::engine::yaml::to_string(&p.original)?;
                let after = crate::engine::yaml::to_string(&p.result)?;
                let label = p
                    .found
                    .first()
                    .map_or_else(|| format!("document {}", i + 1), |f| f.what.clone());
                let diff = similar::TextDiff::from_lines(&before, &after);
                out.push_str(
                    &diff
                        .unified_diff()
                        .context_radius(3)
                        .header(&format!("a/{label}"), &format!("b/{label}"))
                        .to_string(),
                );
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_streams_split_into_documents_with_their_text() {
        let docs = read_documents("# head\n---\na: 1\n---\n\n--- # c\nb: [x]\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].0, json!({"a": 1}));
        assert_eq!(docs[0].1.as_deref(), Some("a: 1\n"));
        assert_eq!(docs[1].0, json!({"b": ["x"]}));
    }

    #[test]
    fn an_untouched_last_document_keeps_its_last_byte() {
        let input = "a: 1\n---\nkind: ConfigMap\ndata:\n  run.sh: |\n    echo hi";
        let docs = read_documents(input).unwrap();
        assert_eq!(
            docs[1].1.as_deref(),
            Some("kind: ConfigMap\ndata:\n  run.sh: |\n    echo hi")
        );
        let config = Config::from_raw(
            &crate::engine::config::RawConfig::new(None, "containers: [{name: c, image: 'c:1'}]\n"),
            "injector",
        )
        .unwrap();
        let previewed: Vec<_> = docs
            .into_iter()
            .map(|(d, raw)| (document(d, &Options::default(), &config).unwrap(), raw))
            .collect();
        assert_eq!(format(&previewed, Format::Yaml).unwrap(), input);
    }

    #[test]
    fn json_streams_are_read_too() {
        let docs = read_documents("{\"a\": 1}\n{\"b\": 2}").unwrap();
        assert_eq!(docs.len(), 2);
        assert!(docs[0].1.is_none());
    }
}
