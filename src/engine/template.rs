//! Structure-preserving templates.
//!
//! `mutate.yaml` is parsed as YAML first; `{{ expr }}` is then evaluated *inside* string
//! scalars only. No value — above all no value a Pod author controls — can add a key, a list
//! entry or a container: the shape of the output is the shape of the template.
//!
//! At load every scalar with an expression becomes a named minijinja template (the name is the
//! scalar's path, so errors point at it). Scalars and `when:` conditions that do not read `pod`
//! or `namespace` are evaluated once, at load; only the rest is evaluated per request.

use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value as JinjaValue};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::fmt;

/// Per-render limit on template instructions: generous for any real template, and a loop a
/// Pod's values could stretch stops long before it costs the apiserver a timeout.
const FUEL: u64 = 100_000;
/// Upper bound on one rendered string scalar.
const MAX_RENDERED_LEN: usize = 256 * 1024;

/// The variables a template sees; `pod` and `namespace` exist only per request.
pub const POD_DEPENDENT_VARS: [&str; 2] = ["pod", "namespace"];

/// A path inside a YAML document, printed as `containers[0].env[1].value`.
#[derive(Clone, Debug, Default)]
pub struct FieldPath(Vec<Segment>);

#[derive(Clone, Debug)]
enum Segment {
    Key(String),
    Index(usize),
}

impl FieldPath {
    pub fn key(&self, k: &str) -> FieldPath {
        let mut p = self.clone();
        p.0.push(Segment::Key(k.to_owned()));
        p
    }
    pub fn index(&self, i: usize) -> FieldPath {
        let mut p = self.clone();
        p.0.push(Segment::Index(i));
        p
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, seg) in self.0.iter().enumerate() {
            match seg {
                Segment::Key(k) if n == 0 => write!(f, "{k}")?,
                Segment::Key(k) => write!(f, ".{k}")?,
                Segment::Index(i) => write!(f, "[{i}]")?,
            }
        }
        Ok(())
    }
}

/// One compiled piece of a template.
#[derive(Debug)]
enum Node {
    /// No expression left: used as is.
    Static(Value),
    Map(Vec<(String, Node)>),
    List(Vec<Entry>),
    /// A scalar evaluated per request; `name` is the minijinja template holding it.
    Expr {
        name: String,
        typed: bool,
    },
}

#[derive(Debug)]
struct Entry {
    /// A per-request condition (conditions known at load are already applied).
    when: Option<Node>,
    node: Node,
}

/// A compiled template: a tree of static values and per-request expressions.
pub struct Template {
    env: Environment<'static>,
    root: Node,
    values: JinjaValue,
    /// What of the Pod the per-request expressions read.
    pod_reads: PodReads,
    pod_paths: Vec<Vec<String>>,
}

/// The parts of the Pod a template reads, so a request converts only those for minijinja.
#[derive(Debug, Default, Clone, PartialEq)]
enum PodReads {
    /// Only attribute paths (`pod.metadata.labels.app` is `["metadata", "labels", "app"]`).
    #[default]
    Paths,
    /// `pod` itself (`{{ pod }}`, `pod[expr]`): the whole object.
    Whole,
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Template")
            .field("root", &self.root)
            .finish()
    }
}

/// Everything wrong with a template, each with its path.
pub type Problems = Vec<String>;

impl Template {
    /// Compiles `doc` (already parsed YAML). `file` prefixes every problem (`mutate.yaml`).
    /// Pod-independent parts are evaluated against `values` here, once.
    pub fn compile(file: &str, doc: Value, values: &Value) -> Result<Template, Problems> {
        match Template::compile_partial(file, doc, values) {
            (t, p) if p.is_empty() => Ok(t),
            (_, p) => Err(p),
        }
    }

    /// Like [`Template::compile`], but also hands back the template when it has problems
    /// (each bad scalar is null), so later checks can report theirs too.
    pub fn compile_partial(file: &str, doc: Value, values: &Value) -> (Template, Problems) {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_fuel(Some(FUEL));
        env.set_recursion_limit(64);
        let mut compiler = Compiler {
            file,
            env,
            values: JinjaValue::from_serialize(values),
            problems: Vec::new(),
            pod_reads: PodReads::Paths,
            pod_paths: Vec::new(),
        };
        let root = compiler.compile(doc, &FieldPath::default());
        let template = Template {
            env: compiler.env,
            root,
            values: compiler.values,
            pod_reads: compiler.pod_reads,
            pod_paths: compiler.pod_paths,
        };
        (template, compiler.problems)
    }

    /// True when rendering needs nothing from the request.
    pub fn is_static(&self) -> bool {
        matches!(self.root, Node::Static(_))
    }

    /// The template with every per-request expression still in it, when it has none.
    pub fn static_value(&self) -> Option<&Value> {
        match &self.root {
            Node::Static(v) => Some(v),
            _ => None,
        }
    }

    /// Renders against one request. `pod` is the object as received.
    pub fn render(&self, pod: &RawValue, namespace: &str) -> Result<Value, String> {
        let pod = self.pod_value(pod)?;
        let ctx = minijinja::context! {
            pod => pod,
            namespace => namespace,
            values => self.values.clone(),
        };
        render_node(&self.env, &self.root, &ctx)
    }
}

impl Template {
    /// The Pod as the template sees it: the whole object when an expression uses `pod` itself,
    /// otherwise only the subtrees its attribute paths reach, read from the raw JSON.
    fn pod_value(&self, pod: &RawValue) -> Result<JinjaValue, String> {
        use serde::Deserialize as _;
        if self.pod_reads == PodReads::Whole {
            return JinjaValue::deserialize(&mut serde_json::Deserializer::from_str(pod.get()))
                .map_err(|e| format!("the object is not JSON: {e}"));
        }
        let mut tree = Value::Object(Map::new());
        for path in &self.pod_paths {
            if let Some((depth, v)) = extract(pod, path) {
                insert(&mut tree, &path[..depth], v);
            }
        }
        Ok(JinjaValue::from_serialize(&tree))
    }
}

/// The value at the longest prefix of `path` that exists in raw JSON, with that prefix's
/// length: a missing key or a value that is no map stops the walk and takes the whole value
/// reached (`pod.metadata.name.upper` takes the name, `pod.metadata.nope` all of metadata),
/// so nothing an expression can reach is left out. Only the maps on the way are parsed.
fn extract(raw: &RawValue, path: &[String]) -> Option<(usize, Value)> {
    let mut cur = raw;
    let mut depth = 0;
    for key in path {
        if !cur.get().trim_start().starts_with('{') {
            break;
        }
        let map: std::collections::HashMap<String, &RawValue> =
            serde_json::from_str(cur.get()).ok()?;
        match map.get(key.as_str()) {
            Some(next) => {
                cur = next;
                depth += 1;
            }
            None => break,
        }
    }
    if depth == 0 {
        return None;
    }
    serde_json::from_str(cur.get()).ok().map(|v| (depth, v))
}

/// Puts `v` at `path` in `tree`, making the maps on the way.
fn insert(tree: &mut Value, path: &[String], v: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = tree;
    for key in parents {
        let Value::Object(m) = cur else { return };
        cur = m
            .entry(key.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if let Value::Object(m) = cur {
        m.insert(last.clone(), v);
    }
}

struct Compiler<'a> {
    file: &'a str,
    env: Environment<'static>,
    values: JinjaValue,
    problems: Problems,
    pod_reads: PodReads,
    pod_paths: Vec<Vec<String>>,
}

impl Compiler<'_> {
    fn problem(&mut self, path: &FieldPath, msg: impl fmt::Display) {
        self.problems.push(format!("{}: {path}: {msg}", self.file));
    }

    fn compile(&mut self, v: Value, path: &FieldPath) -> Node {
        match v {
            Value::String(s) if has_expression(&s) => self.compile_scalar(s, path),
            Value::Object(map) => {
                let mut children = Vec::with_capacity(map.len());
                for (k, v) in map {
                    let child = self.compile(v, &path.key(&k));
                    children.push((k, child));
                }
                if children.iter().all(|(_, n)| matches!(n, Node::Static(_))) {
                    let map: Map<String, Value> = children
                        .into_iter()
                        .map(|(k, n)| (k, into_static(n)))
                        .collect();
                    Node::Static(Value::Object(map))
                } else {
                    Node::Map(children)
                }
            }
            Value::Array(items) => {
                let mut entries = Vec::with_capacity(items.len());
                for (i, item) in items.into_iter().enumerate() {
                    let item_path = path.index(i);
                    let (when, item) = split_when(item);
                    let when = match when {
                        None => None,
                        Some(w) => match self.compile(w, &item_path.key("when")) {
                            Node::Static(w) if truthy(&w) => None,
                            Node::Static(_) => continue, // dropped at load
                            dynamic => Some(dynamic),
                        },
                    };
                    let node = self.compile(item, &item_path);
                    entries.push(Entry { when, node });
                }
                if entries
                    .iter()
                    .all(|e| e.when.is_none() && matches!(e.node, Node::Static(_)))
                {
                    Node::Static(Value::Array(
                        entries.into_iter().map(|e| into_static(e.node)).collect(),
                    ))
                } else {
                    Node::List(entries)
                }
            }
            other => Node::Static(other),
        }
    }

    fn compile_scalar(&mut self, s: String, path: &FieldPath) -> Node {
        let name = format!("{}: {path}", self.file);
        let (source, typed) = match single_expression(&s) {
            Some(expr) => (format!("{{% set result = ({expr}) %}}"), true),
            None => (s, false),
        };
        if let Err(e) = self.env.add_template_owned(name.clone(), source) {
            self.problem(path, format_args!("template syntax: {}", jinja_error(&e)));
            return Node::Static(Value::Null);
        }
        let dynamic = match self.env.get_template(&name) {
            Ok(t) => {
                let mut dynamic = false;
                for var in t.undeclared_variables(true) {
                    let (root, rest) = var
                        .split_once('.')
                        .map_or((var.as_str(), None), |(r, p)| (r, Some(p)));
                    dynamic |= POD_DEPENDENT_VARS.contains(&root);
                    match (root, rest) {
                        ("pod", None) => self.pod_reads = PodReads::Whole,
                        ("pod", Some(path)) => self
                            .pod_paths
                            .push(path.split('.').map(str::to_owned).collect()),
                        _ => {}
                    }
                }
                dynamic
            }
            Err(e) => {
                self.problem(path, jinja_error(&e));
                return Node::Static(Value::Null);
            }
        };
        let node = Node::Expr { name, typed };
        if dynamic {
            return node;
        }
        let ctx = minijinja::context! { values => self.values.clone() };
        match render_node(&self.env, &node, &ctx) {
            Ok(v) => Node::Static(v),
            Err(e) => {
                // render_node's message already starts with the template name (file: path).
                self.problems.push(e);
                Node::Static(Value::Null)
            }
        }
    }
}

fn into_static(n: Node) -> Value {
    match n {
        Node::Static(v) => v,
        _ => Value::Null, // callers check every child is static first
    }
}

/// Separates a list entry's `when:` from the entry; `when` never reaches the Pod.
fn split_when(item: Value) -> (Option<Value>, Value) {
    match item {
        Value::Object(mut map) if map.contains_key("when") => {
            let when = map.shift_remove("when");
            (when, Value::Object(map))
        }
        other => (None, other),
    }
}

fn has_expression(s: &str) -> bool {
    s.contains("{{") || s.contains("{%")
}

/// `Some(expr)` when the whole scalar is exactly one `{{ expr }}`: its value keeps its type.
fn single_expression(s: &str) -> Option<&str> {
    let inner = s.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    if inner.contains("{{") || inner.contains("}}") || inner.contains("{%") {
        return None;
    }
    let inner = inner.trim_start_matches('-').trim_end_matches('-').trim();
    (!inner.is_empty()).then_some(inner)
}

/// The truth of a `when:` value: YAML booleans, and the strings an operator would write.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !matches!(
            s.trim().to_ascii_lowercase().as_str(),
            "" | "false" | "0" | "no" | "off" | "none" | "null"
        ),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

fn jinja_error(e: &minijinja::Error) -> String {
    let mut msg = e.kind().to_string();
    if let Some(detail) = e.detail() {
        msg.push_str(": ");
        msg.push_str(detail);
    }
    msg
}

fn render_node(env: &Environment<'static>, node: &Node, ctx: &JinjaValue) -> Result<Value, String> {
    match node {
        Node::Static(v) => Ok(v.clone()),
        Node::Map(children) => {
            let mut map = Map::with_capacity(children.len());
            for (k, child) in children {
                map.insert(k.clone(), render_node(env, child, ctx)?);
            }
            Ok(Value::Object(map))
        }
        Node::List(entries) => {
            let mut out = Vec::with_capacity(entries.len());
            for e in entries {
                if let Some(w) = &e.when
                    && !truthy(&render_node(env, w, ctx)?)
                {
                    continue;
                }
                out.push(render_node(env, &e.node, ctx)?);
            }
            Ok(Value::Array(out))
        }
        Node::Expr { name, typed } => {
            let fail = |e: minijinja::Error| format!("{name}: {}", jinja_error(&e));
            let tmpl = env.get_template(name).map_err(fail)?;
            if *typed {
                let captured = tmpl.render_captured(ctx).map_err(fail)?;
                let v = captured.state().lookup("result").unwrap_or_default();
                if v.is_undefined() {
                    let source = tmpl.source();
                    let expr = source
                        .strip_prefix("{% set result = (")
                        .and_then(|s| s.strip_suffix(") %}"))
                        .unwrap_or(source);
                    return Err(format!(
                        "{name}: `{{{{ {expr} }}}}` is undefined: something it reads is not set (define it in config.yaml's values, or use `| default(...)` for an optional field)"
                    ));
                }
                let json = serde_json::to_value(&v).map_err(|e| format!("{name}: {e}"))?;
                if json.as_str().is_some_and(|s| s.len() > MAX_RENDERED_LEN) {
                    return Err(format!(
                        "{name}: rendered value is over {MAX_RENDERED_LEN} bytes"
                    ));
                }
                Ok(json)
            } else {
                let s = tmpl.render(ctx).map_err(fail)?;
                if s.len() > MAX_RENDERED_LEN {
                    return Err(format!(
                        "{name}: rendered value is over {MAX_RENDERED_LEN} bytes"
                    ));
                }
                Ok(Value::String(s))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn raw(v: Value) -> Box<RawValue> {
        serde_json::value::to_raw_value(&v).unwrap()
    }

    fn compile(doc: Value, values: Value) -> Template {
        Template::compile("mutate.yaml", doc, &values).expect("template compiles")
    }

    #[test]
    fn values_only_template_is_rendered_at_load() {
        let t = compile(
            json!({"containers": [{"name": "c", "env": [{"name": "N", "value": "{{ values.n }}"}]}]}),
            json!({"n": "15"}),
        );
        assert!(t.is_static());
        assert_eq!(
            t.static_value().unwrap()["containers"][0]["env"][0]["value"],
            "15"
        );
    }

    #[test]
    fn single_expression_keeps_the_type_and_interpolation_makes_a_string() {
        let t = compile(
            json!({"a": "{{ values.n }}", "b": "n={{ values.n }}"}),
            json!({"n": 30}),
        );
        assert_eq!(t.static_value().unwrap(), &json!({"a": 30, "b": "n=30"}));
    }

    #[test]
    fn pod_values_cannot_change_the_structure() {
        let t = compile(
            json!({"containers": [{"name": "c", "env": [{"name": "I", "value": "{{ pod.metadata.annotations['interval'] }}"}]}]}),
            json!({}),
        );
        assert!(!t.is_static());
        let hostile = "10\"\n- name: evil\n  image: evil";
        let pod = json!({"metadata": {"annotations": {"interval": hostile}}});
        let out = t.render(&raw(pod), "ns").unwrap();
        assert_eq!(out["containers"].as_array().unwrap().len(), 1);
        assert_eq!(out["containers"][0]["env"][0]["value"], hostile);
    }

    #[test]
    fn template_syntax_inside_pod_values_is_data_never_evaluated() {
        let t = compile(
            json!({"a": "{{ pod.metadata.annotations.x }}", "b": "x={{ pod.metadata.annotations.x }}"}),
            json!({}),
        );
        let payload = "{{ values }}{% for i in range(999999999) %}{% endfor %}";
        let out = t
            .render(
                &raw(json!({"metadata": {"annotations": {"x": payload}}})),
                "ns",
            )
            .unwrap();
        assert_eq!(out, json!({"a": payload, "b": format!("x={payload}")}));
    }

    #[test]
    fn only_what_the_template_reads_is_taken_from_the_pod() {
        let pod = raw(json!({
            "metadata": {"name": "p", "labels": {"app": "a"}, "annotations": {"k/x": "v", "big": "x"}},
            "spec": {"containers": [{"name": "c1"}, {"name": "c2"}]}
        }));
        let t = compile(
            json!({"a": "{{ pod.metadata.labels.app }}", "b": "{{ pod.metadata.annotations['k/x'] }}",
                   "c": "{{ pod.spec.containers | map(attribute='name') | join(',') }}", "d": "{{ pod.metadata.nope | default('-') }}"}),
            json!({}),
        );
        assert_eq!(t.pod_reads, PodReads::Paths);
        assert_eq!(
            t.render(&pod, "ns").unwrap(),
            json!({"a": "a", "b": "v", "c": "c1,c2", "d": "-"})
        );
        // A path that runs past the data takes what it reached.
        let t = compile(
            json!({"u": "{{ pod.metadata.name.upper is defined }}", "m": "{{ pod.metadata.nope.deeper | default(pod.metadata.name) }}"}),
            json!({}),
        );
        assert_eq!(t.render(&pod, "ns").unwrap(), json!({"u": false, "m": "p"}));
        let whole = compile(json!({"n": "{{ pod['metadata']['name'] }}"}), json!({}));
        assert_eq!(whole.pod_reads, PodReads::Whole);
        assert_eq!(whole.render(&pod, "ns").unwrap(), json!({"n": "p"}));
    }

    #[test]
    fn when_drops_entries_and_never_reaches_the_output() {
        let t = compile(
            json!({"volumes": [
                {"name": "a", "when": "{{ values.on }}"},
                {"name": "b", "when": "{{ not values.on }}"},
                {"name": "c", "when": "{{ pod.metadata.name == 'x' }}"}
            ]}),
            json!({"on": true}),
        );
        let out = t
            .render(&raw(json!({"metadata": {"name": "x"}})), "ns")
            .unwrap();
        assert_eq!(out, json!({"volumes": [{"name": "a"}, {"name": "c"}]}));
        let out = t
            .render(&raw(json!({"metadata": {"name": "y"}})), "ns")
            .unwrap();
        assert_eq!(out, json!({"volumes": [{"name": "a"}]}));
    }

    #[test]
    fn problems_carry_the_path() {
        let err = Template::compile(
            "mutate.yaml",
            json!({"containers": [{"name": "{{ values.missing.deeper }}"}, {"image": "{{ oops( }}"}]}),
            &json!({}),
        )
        .unwrap_err();
        assert_eq!(err.len(), 2, "{err:?}");
        assert!(
            err[0].starts_with("mutate.yaml: containers[0].name:"),
            "{err:?}"
        );
        assert!(
            err[1].starts_with("mutate.yaml: containers[1].image: template syntax"),
            "{err:?}"
        );
    }

    #[test]
    fn a_runaway_loop_runs_out_of_fuel() {
        let t = compile(
            json!({"a": "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}{{ pod.x }}"}),
            json!({}),
        );
        let err = t.render(&raw(json!({"x": 1})), "ns").unwrap_err();
        assert!(err.contains("fuel"), "{err}");
    }
}
