//! Template checks: every field a template renders is checked as the apiserver would check
//! it, with the file and path of each problem.

use super::*;

impl NamedTemplate {
    /// Parses, compiles and checks one template; `None` (with its problems recorded) when it
    /// cannot be used.
    pub(super) fn load(
        name: &str,
        text: &str,
        settings: &Settings,
        problems: &mut Problems,
        warnings: &mut Vec<String>,
    ) -> Option<NamedTemplate> {
        let key = template_key(name);
        let mut doc = match crate::engine::yaml::from_str::<Value>(text) {
            Ok(Value::Null) => Value::Object(Default::default()),
            Ok(v @ Value::Object(_)) => v,
            Ok(other) => {
                problems.push(format!(
                    "{key}: want a mapping of Pod spec fields, got {other}"
                ));
                return None;
            }
            Err(e) => {
                problems.push(format!("{key}: {e}"));
                return None;
            }
        };
        check_template_keys(&key, &doc, problems);
        let windows = match doc.as_object_mut().and_then(|m| m.remove("os")) {
            None | Some(Value::Null) => false,
            Some(os) => parse_os(&key, &os, problems),
        };
        let hash = template_hash(settings, &doc);
        let before = problems.len();
        let (template, mut template_problems) =
            Template::compile_partial(&key, doc.clone(), &settings.values);
        problems.append(&mut template_problems);
        let mut t = NamedTemplate {
            name: name.to_owned(),
            key,
            doc,
            template,
            prerendered: None,
            hash,
            windows,
        };
        // Render now: the whole fragment when it is static, or against a sample Pod to find
        // the problems of the dynamic parts before a real Pod does.
        let rendered = match t.template.static_value() {
            Some(v) => Ok(v.clone()),
            None => t.template.render(&sample_pod(), "default"),
        };
        let fragment = rendered
            .map_err(|e| vec![e])
            .and_then(|v| Fragment::check(&t.key, v, settings, Some(warnings)));
        match fragment {
            Ok(f) if problems.len() == before => {
                if t.template.is_static() {
                    t.prerendered = Some(f);
                }
                Some(t)
            }
            Ok(_) => None,
            Err(more) => {
                // A field already reported (say, a bad expression) is not reported again.
                let reported: Vec<String> = problems[before..]
                    .iter()
                    .map(|p| problem_field(p).to_owned())
                    .collect();
                let fresh: Vec<String> = more
                    .into_iter()
                    .filter(|p| {
                        let field = problem_field(p);
                        !reported
                            .iter()
                            .any(|r| field.starts_with(r.as_str()) || r.starts_with(field))
                    })
                    .collect();
                problems.extend(fresh);
                None
            }
        }
    }

    /// Renders for one Pod; with `values`, compiled again against them first.
    pub(super) fn render(
        &self,
        pod: &RawValue,
        namespace: &str,
        settings: &Settings,
        values: Option<&Value>,
    ) -> Result<Fragment, String> {
        let rendered = match values {
            None => self.template.render(pod, namespace)?,
            Some(values) => Template::compile(&self.key, self.doc.clone(), values)
                .map_err(|p| p.join("; "))?
                .render(pod, namespace)?,
        };
        Fragment::check(&self.key, rendered, settings, None).map_err(|p| p.join("; "))
    }
}

/// `os: [linux, windows]`: true when windows is listed.
pub(super) fn parse_os(key: &str, os: &Value, problems: &mut Problems) -> bool {
    let Some(list) = os.as_array() else {
        problems.push(format!(
            "{key}: os: want a list of linux, windows; got {os}"
        ));
        return false;
    };
    let mut windows = false;
    for (i, v) in list.iter().enumerate() {
        match v.as_str() {
            Some("linux") => {}
            Some("windows") => windows = true,
            _ => problems.push(format!("{key}: os[{i}]: {v} is not linux or windows")),
        }
    }
    windows
}

pub(super) const TEMPLATE_SECTIONS: [&str; 6] = [
    "os",
    "imagePullSecrets",
    "initContainers",
    "containers",
    "volumes",
    "appContainers",
];

pub(super) fn check_template_keys(file: &str, doc: &Value, problems: &mut Problems) {
    let Some(map) = doc.as_object() else { return };
    for (k, v) in map {
        if !TEMPLATE_SECTIONS.contains(&k.as_str()) {
            problems.push(format!(
                "{file}: {k}: unknown key (want one of {})",
                TEMPLATE_SECTIONS.join(", ")
            ));
        } else if k == "appContainers" {
            match v.as_object() {
                Some(app) => {
                    for key in app
                        .keys()
                        .filter(|k| !matches!(k.as_str(), "env" | "volumeMounts"))
                    {
                        problems.push(format!(
                            "{file}: appContainers.{key}: unknown key (want env, volumeMounts)"
                        ));
                    }
                }
                None if v.is_null() => {}
                None => problems.push(format!("{file}: appContainers: want a mapping")),
            }
        }
    }
}

pub(super) fn deserialize_at<T: DeserializeOwned>(
    file: &str,
    at: &FieldPath,
    v: Value,
) -> Result<T, String> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let inner = e.path().to_string();
        let path = match (at.to_string(), inner.as_str()) {
            (a, ".") => a,
            (a, i) if a.is_empty() => i.to_owned(),
            (a, i) if i.starts_with('[') => format!("{a}{i}"),
            (a, i) => format!("{a}.{i}"),
        };
        if path.is_empty() {
            format!("{file}: {}", e.inner())
        } else {
            format!("{file}: {path}: {}", e.inner())
        }
    })
}

impl Fragment {
    /// Checks a rendered template as the apiserver would check the Pod fields it becomes, and
    /// moves every image under the repository. `warnings` collects what is only worth a look
    /// (load time); per request it is `None`.
    pub(super) fn check(
        file: &str,
        rendered: Value,
        settings: &Settings,
        warnings: Option<&mut Vec<String>>,
    ) -> Result<Fragment, Problems> {
        let mut problems = Vec::new();
        let section = |key: &str, v: Option<&Value>, problems: &mut Problems| -> Vec<Value> {
            match v {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(a)) => a.clone(),
                Some(other) => {
                    problems.push(format!("{file}: {key}: want a list, got {other}"));
                    Vec::new()
                }
            }
        };
        let app = rendered.get("appContainers");
        let secrets = section(
            "imagePullSecrets",
            rendered.get("imagePullSecrets"),
            &mut problems,
        );
        let mut inits = section(
            "initContainers",
            rendered.get("initContainers"),
            &mut problems,
        );
        let mut containers = section("containers", rendered.get("containers"), &mut problems);
        let volumes = section("volumes", rendered.get("volumes"), &mut problems);
        let env = section(
            "appContainers.env",
            app.and_then(|a| a.get("env")),
            &mut problems,
        );
        let mounts = section(
            "appContainers.volumeMounts",
            app.and_then(|a| a.get("volumeMounts")),
            &mut problems,
        );
        let mut w = Vec::new();
        let root = FieldPath::default();
        check_list::<LocalObjectReference>(
            file,
            &secrets,
            &root.key("imagePullSecrets"),
            &mut problems,
            &mut w,
        );
        check_list::<Container>(
            file,
            &inits,
            &root.key("initContainers"),
            &mut problems,
            &mut w,
        );
        check_list::<Container>(
            file,
            &containers,
            &root.key("containers"),
            &mut problems,
            &mut w,
        );
        check_list::<Volume>(file, &volumes, &root.key("volumes"), &mut problems, &mut w);
        let app = root.key("appContainers");
        check_list::<EnvVar>(file, &env, &app.key("env"), &mut problems, &mut w);
        check_list::<VolumeMount>(
            file,
            &mounts,
            &app.key("volumeMounts"),
            &mut problems,
            &mut w,
        );
        for (key, list) in [("initContainers", &inits), ("containers", &containers)] {
            for (i, c) in list.iter().enumerate() {
                check_container(file, c, &root.key(key).index(i), &mut problems);
            }
        }
        unique_names(
            file,
            inits.iter().chain(&containers),
            "initContainers + containers",
            &mut problems,
        );
        unique_names(file, volumes.iter(), "volumes", &mut problems);
        unique_names(file, secrets.iter(), "imagePullSecrets", &mut problems);
        unique_names(file, env.iter(), "appContainers.env", &mut problems);
        for (i, v) in volumes.iter().enumerate() {
            check_dns_label(file, v, &root.key("volumes").index(i), &mut problems);
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        if let Some(repo) = settings.image_repository() {
            for c in inits.iter_mut().chain(containers.iter_mut()) {
                if let Some(Value::String(img)) = c.get_mut("image") {
                    *img = image::rewrite(img, repo);
                }
            }
        }
        if let Some(out) = warnings {
            out.append(&mut w);
        }
        let items = |v: Vec<Value>| v.into_iter().map(Item::new).collect();
        Ok(Fragment {
            image_pull_secrets: items(secrets),
            init_containers: inits.into_iter().map(Item::init_container).collect(),
            containers: containers.into_iter().map(Item::container).collect(),
            volumes: items(volumes),
            app_env: items(env),
            app_volume_mounts: items(mounts),
        })
    }
}

pub(super) fn check_list<T: DeserializeOwned + serde::Serialize>(
    file: &str,
    items: &[Value],
    at: &FieldPath,
    problems: &mut Problems,
    warnings: &mut Vec<String>,
) {
    for (i, item) in items.iter().enumerate() {
        let path = at.index(i);
        if !item.is_object() {
            problems.push(format!("{file}: {path}: want a mapping, got {item}"));
            continue;
        }
        match item.get("name") {
            Some(Value::String(n)) if !n.is_empty() => {}
            _ => problems.push(format!("{file}: {path}.name: required, a non-empty string")),
        }
        match deserialize_at::<T>(file, &path, item.clone()) {
            Ok(typed) => {
                // Fields the Kubernetes types do not know would be dropped by the apiserver.
                if let Ok(back) = serde_json::to_value(&typed) {
                    unknown_fields(file, item, &back, &path, warnings);
                }
            }
            Err(e) => problems.push(e),
        }
    }
}

pub(super) fn unknown_fields(
    file: &str,
    original: &Value,
    known: &Value,
    at: &FieldPath,
    warnings: &mut Vec<String>,
) {
    match (original, known) {
        (Value::Object(o), Value::Object(k)) => {
            for (key, v) in o {
                match k.get(key) {
                    None if !v.is_null() => warnings.push(format!(
                        "{file}: {}: unknown field for Kubernetes 1.33; the apiserver may drop it",
                        at.key(key)
                    )),
                    Some(kv) => unknown_fields(file, v, kv, &at.key(key), warnings),
                    None => {}
                }
            }
        }
        (Value::Array(o), Value::Array(k)) => {
            for (i, (ov, kv)) in o.iter().zip(k).enumerate() {
                unknown_fields(file, ov, kv, &at.index(i), warnings);
            }
        }
        _ => {}
    }
}

pub(super) fn check_container(file: &str, c: &Value, at: &FieldPath, problems: &mut Problems) {
    match c.get("image") {
        Some(Value::String(s)) if !s.trim().is_empty() => {}
        _ => problems.push(format!("{file}: {at}.image: required, a non-empty string")),
    }
    check_dns_label(file, c, at, problems);
    let enum_field = |field: &str, allowed: &[&str], problems: &mut Problems| {
        if let Some(v) = c.get(field).and_then(Value::as_str)
            && !allowed.contains(&v)
        {
            problems.push(format!(
                "{file}: {at}.{field}: {v:?} is not one of {}",
                allowed.join(", ")
            ));
        }
    };
    enum_field(
        "imagePullPolicy",
        &["Always", "IfNotPresent", "Never"],
        problems,
    );
    enum_field("restartPolicy", &["Always"], problems);
}

/// Container and volume names are DNS-1123 labels.
pub(super) fn check_dns_label(file: &str, item: &Value, at: &FieldPath, problems: &mut Problems) {
    let Some(name) = item.get("name").and_then(Value::as_str) else {
        return;
    };
    if !is_dns_label(name) {
        problems.push(format!(
            "{file}: {at}.name: {name:?} is not a DNS-1123 label (lower-case letters, digits, '-', at most 63)"
        ));
    }
}

pub(super) fn unique_names<'a>(
    file: &str,
    items: impl Iterator<Item = &'a Value>,
    what: &str,
    problems: &mut Problems,
) {
    let mut seen = std::collections::HashSet::new();
    for name in items.filter_map(|i| i.get("name").and_then(Value::as_str)) {
        if !seen.insert(name) {
            problems.push(format!("{file}: {what}: the name {name:?} appears twice"));
        }
    }
}
