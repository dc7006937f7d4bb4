//! Building an RFC 6902 patch against the object as received.
//!
//! Lists and maps that are absent are added whole; present ones are appended to (`/-`) or
//! added to key by key. Nothing that is present is ever replaced wholesale, so fields this
//! program does not know survive untouched. Pointer tokens are escaped (`~0`, `~1`) by jsonptr.

use json_patch::jsonptr::{PointerBuf, Token};
use json_patch::{AddOperation, Patch, PatchOperation};
use serde_json::{Map, Value};

/// A patch under construction, against one document.
#[derive(Debug, Default)]
pub struct PatchBuilder {
    ops: Vec<PatchOperation>,
}

/// Where a field of the document was not what a Pod has there.
#[derive(Debug, Clone, PartialEq)]
pub struct ShapeError(pub String);

impl PatchBuilder {
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn into_patch(self) -> Patch {
        Patch(self.ops)
    }

    fn add(&mut self, path: PointerBuf, value: Value) {
        self.ops
            .push(PatchOperation::Add(AddOperation { path, value }));
    }

    /// Appends `items` to the list at `path` in `doc`: one `add` of the whole list when it is
    /// absent (or null), one `add .../-` per item when it is there.
    pub fn extend_list(
        &mut self,
        doc: &Value,
        path: &[&str],
        items: Vec<Value>,
    ) -> Result<(), ShapeError> {
        if items.is_empty() {
            return Ok(());
        }
        match lookup(doc, path) {
            None | Some(Value::Null) => self.add(pointer(path), Value::Array(items)),
            Some(Value::Array(_)) => {
                for item in items {
                    let mut p = pointer(path);
                    p.push_back(Token::new("-"));
                    self.add(p, item);
                }
            }
            Some(other) => return Err(shape(path, "a list", other)),
        }
        Ok(())
    }

    /// Sets `key` in the map at `path`: the map is added whole when absent, the key alone
    /// when the map is there (its other keys are kept).
    pub fn set_in_map(
        &mut self,
        doc: &Value,
        path: &[&str],
        key: &str,
        value: Value,
    ) -> Result<(), ShapeError> {
        match lookup(doc, path) {
            None | Some(Value::Null) => {
                let mut map = Map::new();
                map.insert(key.to_owned(), value);
                self.add(pointer(path), Value::Object(map));
            }
            Some(Value::Object(_)) => {
                let mut p = pointer(path);
                p.push_back(Token::new(key));
                self.add(p, value);
            }
            Some(other) => return Err(shape(path, "a map", other)),
        }
        Ok(())
    }
}

pub fn pointer(path: &[&str]) -> PointerBuf {
    PointerBuf::from_tokens(path.iter().copied())
}

/// The value at `path`, where every step is an object key or a list index.
pub fn lookup<'a>(doc: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(doc, |cur, step| match cur {
        Value::Object(m) => m.get(*step),
        Value::Array(a) => step.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

fn shape(path: &[&str], want: &str, got: &Value) -> ShapeError {
    let kind = match got {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    };
    ShapeError(format!("{} is {kind}, not {want}", path.join(".")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ops(b: PatchBuilder) -> Value {
        serde_json::to_value(b.into_patch()).unwrap()
    }

    #[test]
    fn absent_lists_are_added_whole_and_present_ones_appended() {
        let doc = json!({"spec": {"containers": [{"name": "a"}]}});
        let mut b = PatchBuilder::default();
        b.extend_list(&doc, &["spec", "containers"], vec![json!({"name": "b"})])
            .unwrap();
        b.extend_list(&doc, &["spec", "volumes"], vec![json!({"name": "v"})])
            .unwrap();
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
        let doc = json!({"metadata": {"annotations": {"keep": "me"}}});
        let mut b = PatchBuilder::default();
        b.set_in_map(&doc, &["metadata", "annotations"], "a.io/b~c", json!("v"))
            .unwrap();
        assert_eq!(
            ops(b),
            json!([{"op": "add", "path": "/metadata/annotations/a.io~1b~0c", "value": "v"}])
        );
        let mut b = PatchBuilder::default();
        b.set_in_map(
            &json!({"metadata": {}}),
            &["metadata", "annotations"],
            "k",
            json!("v"),
        )
        .unwrap();
        assert_eq!(
            ops(b),
            json!([{"op": "add", "path": "/metadata/annotations", "value": {"k": "v"}}])
        );
    }

    #[test]
    fn a_wrong_shape_is_an_error_not_a_replacement() {
        let doc = json!({"spec": {"volumes": "oops"}});
        let err = PatchBuilder::default()
            .extend_list(&doc, &["spec", "volumes"], vec![json!({})])
            .unwrap_err();
        assert_eq!(err.0, "spec.volumes is a string, not a list");
    }
}
