//! Building an RFC 6902 patch against the object as received.
//!
//! Lists and maps that are absent are added whole; present ones are appended to (`/-`) or
//! added to key by key. Nothing that is present is ever replaced wholesale, so fields this
//! program does not know survive untouched. Pointer tokens are escaped (`~0`, `~1`) by jsonptr.
//!
//! What the template adds is serialized once, when the config loads ([`Shared`]); a patch
//! refers to those bytes instead of copying values, and writing it out is a copy of bytes.

use json_patch::jsonptr::{PointerBuf, Token};
use json_patch::{AddOperation, PatchOperation};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::sync::Arc;

/// A value serialized once and shared by every patch that adds it.
#[derive(Debug, Clone)]
pub struct Shared(Arc<RawValue>);

impl Shared {
    pub fn new(v: &Value) -> Shared {
        // A Value always serializes; the fallback (null) is never taken.
        let raw = serde_json::value::to_raw_value(v).unwrap_or_else(|_| RawValue::NULL.to_owned());
        Shared(Arc::from(raw))
    }

    /// JSON text already known to be valid (null if it is not, which a caller never gives).
    pub fn from_json(json: String) -> Shared {
        let raw = RawValue::from_string(json).unwrap_or_else(|_| RawValue::NULL.to_owned());
        Shared(Arc::from(raw))
    }

    pub fn to_value(&self) -> Value {
        serde_json::from_str(self.0.get()).unwrap_or(Value::Null)
    }
}

/// The value of one `add`.
#[derive(Debug, Clone)]
pub enum OpValue {
    Shared(Shared),
    List(Vec<Shared>),
    Json(Value),
    Object(Map<String, Value>),
}

impl Serialize for OpValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            OpValue::Shared(v) => v.0.serialize(s),
            OpValue::List(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for i in items {
                    seq.serialize_element(&*i.0)?;
                }
                seq.end()
            }
            OpValue::Json(v) => v.serialize(s),
            OpValue::Object(m) => m.serialize(s),
        }
    }
}

/// One `add` operation.
#[derive(Debug, Clone)]
pub struct Op {
    pub path: PointerBuf,
    pub value: OpValue,
}

impl Serialize for Op {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("op", "add")?;
        m.serialize_entry("path", self.path.as_str())?;
        m.serialize_entry("value", &self.value)?;
        m.end()
    }
}

/// An RFC 6902 patch made of `add` operations; serializes as the JSON array the API wants.
#[derive(Debug, Clone, Default)]
pub struct Patch(pub Vec<Op>);

impl Serialize for Patch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl Patch {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The same patch as json-patch's types, to apply it.
    pub fn to_json_patch(&self) -> json_patch::Patch {
        json_patch::Patch(
            self.0
                .iter()
                .map(|op| {
                    let value = match &op.value {
                        OpValue::Shared(v) => v.to_value(),
                        OpValue::List(items) => {
                            Value::Array(items.iter().map(Shared::to_value).collect())
                        }
                        OpValue::Json(v) => v.clone(),
                        OpValue::Object(m) => Value::Object(m.clone()),
                    };
                    PatchOperation::Add(AddOperation {
                        path: op.path.clone(),
                        value,
                    })
                })
                .collect(),
        )
    }

    /// Applies the patch to `doc`.
    pub fn apply(&self, doc: &mut Value) -> Result<(), json_patch::PatchError> {
        json_patch::patch(doc, &self.to_json_patch())
    }

    /// The same operations with every path under `prefix` (a Pod template inside a workload).
    pub fn rebased(&self, prefix: &[&str]) -> Patch {
        Patch(
            self.0
                .iter()
                .map(|op| {
                    let mut path = pointer(prefix);
                    for token in op.path.tokens() {
                        path.push_back(token);
                    }
                    Op {
                        path,
                        value: op.value.clone(),
                    }
                })
                .collect(),
        )
    }
}

/// A patch under construction, against one document. The caller says what the document
/// has at each path (it read the document; this only writes).
#[derive(Debug, Default)]
pub struct PatchBuilder {
    ops: Vec<Op>,
}

impl PatchBuilder {
    pub fn into_patch(self) -> Patch {
        Patch(self.ops)
    }

    fn add(&mut self, path: PointerBuf, value: OpValue) {
        self.ops.push(Op { path, value });
    }

    /// Appends `items` to the list at `path`: one `add` of the whole list when the document
    /// has none there (absent or null), one `add .../-` per item when it has one.
    pub fn extend_list(&mut self, path: &[&str], present: bool, items: Vec<Shared>) {
        if items.is_empty() {
            return;
        }
        if present {
            for item in items {
                let mut p = pointer(path);
                p.push_back(Token::new("-"));
                self.add(p, OpValue::Shared(item));
            }
        } else {
            self.add(pointer(path), OpValue::List(items));
        }
    }

    /// Sets `key` in the map at `path`: the map is added whole when the document has none
    /// there, the key alone when it has one (its other keys are kept).
    pub fn set_in_map(&mut self, path: &[&str], present: bool, key: &str, value: Value) {
        if present {
            let mut p = pointer(path);
            p.push_back(Token::new(key));
            self.add(p, OpValue::Json(value));
        } else {
            let mut map = Map::new();
            map.insert(key.to_owned(), value);
            self.add(pointer(path), OpValue::Object(map));
        }
    }
}

pub fn pointer(path: &[&str]) -> PointerBuf {
    PointerBuf::from_tokens(path.iter().copied())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ops(b: PatchBuilder) -> Value {
        serde_json::to_value(b.into_patch()).unwrap()
    }

    fn shared(v: Value) -> Shared {
        Shared::new(&v)
    }

    #[test]
    fn absent_lists_are_added_whole_and_present_ones_appended() {
        let mut b = PatchBuilder::default();
        b.extend_list(
            &["spec", "containers"],
            true,
            vec![shared(json!({"name": "b"}))],
        );
        b.extend_list(
            &["spec", "volumes"],
            false,
            vec![shared(json!({"name": "v"}))],
        );
        assert_eq!(
            ops(b),
            json!([
                {"op": "add", "path": "/spec/containers/-", "value": {"name": "b"}},
                {"op": "add", "path": "/spec/volumes", "value": [{"name": "v"}]}
            ])
        );
    }

    #[test]
    fn map_keys_are_escaped_and_maps_never_replaced() {
        let mut b = PatchBuilder::default();
        b.set_in_map(&["metadata", "annotations"], true, "a.io/b~c", json!("v"));
        assert_eq!(
            ops(b),
            json!([{"op": "add", "path": "/metadata/annotations/a.io~1b~0c", "value": "v"}])
        );
        let mut b = PatchBuilder::default();
        b.set_in_map(&["metadata", "annotations"], false, "k", json!("v"));
        assert_eq!(
            ops(b),
            json!([{"op": "add", "path": "/metadata/annotations", "value": {"k": "v"}}])
        );
    }

    #[test]
    fn a_rebased_patch_applies_to_the_workload_and_equals_json_patch() {
        let mut b = PatchBuilder::default();
        let pod = json!({"spec": {"containers": [{"name": "a"}]}});
        b.extend_list(
            &["spec", "containers"],
            true,
            vec![shared(json!({"name": "b"}))],
        );
        let patch = b.into_patch().rebased(&["spec", "template"]);
        let mut deploy = json!({"spec": {"template": pod}});
        patch.apply(&mut deploy).unwrap();
        assert_eq!(
            deploy["spec"]["template"]["spec"]["containers"][1]["name"],
            "b"
        );
        assert_eq!(
            serde_json::to_value(&patch).unwrap(),
            serde_json::to_value(patch.to_json_patch()).unwrap()
        );
    }
}
