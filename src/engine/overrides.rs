//! Per-namespace and per-Pod overrides of `values`: allow-listed, merged field by field.
//!
//! `config.yaml` lists the dotted paths a namespace or Pod may override (`overridable`). The
//! annotation `sidecar-injector.io/values` (a JSON or YAML object) on the namespace, then on
//! the Pod, is merged over the configured values one field at a time: an object merges into an
//! object, anything else replaces the value of the same type. A path not allowed, or a value
//! of another type than the configured one, is not applied and comes back as a warning. An
//! override is only ever a value: the templates read it like any other, and cannot gain
//! structure from it.

use serde_json::{Map, Value};

/// Namespace or Pod annotation: overrides of `values`.
pub const VALUES_KEY: &str = "sidecar-injector.io/values";

/// One layer of overrides: where it comes from (for warnings) and its annotation's text.
pub struct Layer<'a> {
    pub from: &'a str,
    pub text: &'a str,
}

/// `base` with every allowed override of `layers` merged over it, in order, or `None` when
/// no override applies. Whatever is not applied is said in `warnings`.
pub fn merge(
    base: &Value,
    allowed: &[String],
    layers: &[Layer<'_>],
    warnings: &mut Vec<String>,
) -> Option<Value> {
    let mut out = base.clone();
    let mut applied = false;
    for layer in layers {
        let doc = match crate::engine::yaml::from_str::<Value>(layer.text) {
            Ok(Value::Object(m)) => m,
            Ok(Value::Null) => continue,
            Ok(other) => {
                warnings.push(format!(
                    "{} annotation {VALUES_KEY}: want an object of values, got {}; not applied",
                    layer.from,
                    kind(&other)
                ));
                continue;
            }
            Err(e) => {
                warnings.push(format!(
                    "{} annotation {VALUES_KEY}: not JSON or YAML ({e}); not applied",
                    layer.from
                ));
                continue;
            }
        };
        let Value::Object(target) = &mut out else {
            return None;
        };
        let mut ctx = Ctx {
            allowed,
            from: layer.from,
            warnings,
            applied: false,
        };
        ctx.merge_map(target, doc, "", false);
        applied |= ctx.applied;
    }
    applied.then_some(out)
}

struct Ctx<'a, 'w> {
    allowed: &'a [String],
    from: &'a str,
    warnings: &'w mut Vec<String>,
    applied: bool,
}

impl Ctx<'_, '_> {
    /// Merges `over` into `target`; `open` when the path of `target` itself is allowed.
    fn merge_map(
        &mut self,
        target: &mut Map<String, Value>,
        over: Map<String, Value>,
        at: &str,
        open: bool,
    ) {
        for (key, value) in over {
            let path = if at.is_empty() {
                key.clone()
            } else {
                format!("{at}.{key}")
            };
            let allowed = open || self.allowed.contains(&path);
            let deeper = self.allowed.iter().any(|a| {
                a.len() > path.len() && a.starts_with(&path) && a.as_bytes()[path.len()] == b'.'
            });
            match (target.get_mut(&key), value) {
                (_, Value::Null) => self.refuse(&path, "null is not a value".to_owned()),
                (Some(Value::Object(t)), Value::Object(o)) if allowed || deeper => {
                    self.merge_map(t, o, &path, allowed)
                }
                (None, Value::Object(o)) if !allowed && deeper => {
                    let mut t = Map::new();
                    self.merge_map(&mut t, o, &path, false);
                    if !t.is_empty() {
                        target.insert(key, Value::Object(t));
                    }
                }
                (_, _) if !allowed => self.refuse(
                    &path,
                    format!(
                        "not overridable (config.yaml overridable: [{}])",
                        self.allowed.join(", ")
                    ),
                ),
                (Some(current), value) if kind(current) != kind(&value) => {
                    let want = kind(current);
                    self.refuse(
                        &path,
                        format!(
                            "want {want} like the configured {}, got {}",
                            short(current),
                            short(&value)
                        ),
                    )
                }
                (_, value) => {
                    target.insert(key, value);
                    self.applied = true;
                }
            }
        }
    }

    fn refuse(&mut self, path: &str, why: String) {
        self.warnings.push(format!(
            "{} annotation {VALUES_KEY}: values.{path}: {why}; not applied",
            self.from
        ));
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() <= 60 {
        return s;
    }
    let mut end = 57;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({
            "image": "collector:1",
            "collectionInterval": "30",
            "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "200m", "memory": "128Mi"}},
            "nested": {"open": "a", "closed": "b"}
        })
    }

    fn allowed(paths: &[&str]) -> Vec<String> {
        paths.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn namespace_then_pod_merge_field_by_field() {
        let mut w = Vec::new();
        let out = merge(
            &base(),
            &allowed(&["collectionInterval", "resources"]),
            &[
                Layer {
                    from: "namespace \"team\"",
                    text: "collectionInterval: \"15\"",
                },
                Layer {
                    from: "Pod",
                    text: r#"{"resources":{"limits":{"memory":"256Mi"}}}"#,
                },
            ],
            &mut w,
        )
        .expect("applied");
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(out["collectionInterval"], "15");
        assert_eq!(out["resources"]["limits"]["memory"], "256Mi");
        assert_eq!(out["resources"]["limits"]["cpu"], "200m");
        assert_eq!(
            out["resources"]["requests"],
            json!({"cpu": "50m", "memory": "64Mi"})
        );
        assert_eq!(out["image"], "collector:1");
    }

    #[test]
    fn a_path_not_allowed_or_of_another_type_is_a_warning_not_a_change() {
        let mut w = Vec::new();
        let out = merge(
            &base(),
            &allowed(&["collectionInterval", "nested.open"]),
            &[Layer {
                from: "Pod",
                text: r#"{"image":"evil:latest","collectionInterval":15,"nested":{"open":"x","closed":"y"}}"#,
            }],
            &mut w,
        )
        .expect("nested.open applies");
        assert_eq!(out["image"], "collector:1");
        assert_eq!(out["collectionInterval"], "30");
        assert_eq!(out["nested"], json!({"open": "x", "closed": "b"}));
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(w[0].contains("values.image: not overridable"), "{}", w[0]);
        assert!(
            w[1].contains(
                "values.collectionInterval: want a string like the configured \"30\", got 15"
            ),
            "{}",
            w[1]
        );
        assert!(
            w[2].contains("values.nested.closed: not overridable"),
            "{}",
            w[2]
        );
    }

    #[test]
    fn nothing_applied_is_none_and_bad_text_is_said() {
        let mut w = Vec::new();
        assert_eq!(
            merge(
                &base(),
                &allowed(&["image"]),
                &[Layer {
                    from: "Pod",
                    text: "[1, 2]"
                }],
                &mut w
            ),
            None
        );
        assert_eq!(
            merge(
                &base(),
                &allowed(&["image"]),
                &[Layer {
                    from: "Pod",
                    text: "{a: ["
                }],
                &mut w
            ),
            None
        );
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("want an object of values, got a list"));
        assert!(w[1].contains("not JSON or YAML"));
    }
}
