//! Property tests: for generated Pods, the patch applies, keeps every original field, keeps
//! names unique, and admitting the result again changes nothing. The config has two
//! templates injected together by default, and Pods may choose others and override values.

use kube::core::GroupVersionKind;
use kube::core::admission::Operation;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use sidecar_injector::engine::config::{Config, RawConfig};
use sidecar_injector::engine::{self, Decision, Outcome, Reason, Request, STATUS_KEY};
use std::collections::HashSet;
use std::sync::OnceLock;

const SETTINGS: &str = "templates: [default, agent]\noverridable: [interval, resources]\nvalues: {interval: '15', resources: {limits: {memory: 128Mi}}}\n";
const TEMPLATE: &str = r#"
imagePullSecrets: [{name: bitbucket-registry}]
containers:
- name: metrics-collector
  image: atlassian/bitbucket-pipelines-metrics-collector:2.1.0
  env:
  - {name: METRIC_COLLECTION_INTERVAL, value: "{{ values.interval }}"}
  - {name: APP, value: "{{ pod.metadata.labels.app | default('none') }}"}
  resources: "{{ values.resources }}"
  volumeMounts:
  - {name: docker-sock, mountPath: /var/run/docker.sock}
  - {name: cgroup, mountPath: /sys/fs/cgroup, readOnly: true}
volumes:
- {name: docker-sock, hostPath: {path: /var/run/docker.sock, type: Socket}}
- {name: cgroup, hostPath: {path: /sys/fs/cgroup, type: Directory}}
"#;
/// A second template: shares the pull secret (the same definition: added once) and adds an
/// init container, a volume and app container env and mounts.
const AGENT: &str = r#"
imagePullSecrets: [{name: bitbucket-registry}]
initContainers:
- name: agent-init
  image: busybox:1.36
  volumeMounts: [{name: metrics-agent, mountPath: /opt/agent}]
volumes:
- {name: metrics-agent, emptyDir: {}}
appContainers:
  env: [{name: METRICS_AGENT_HOME, value: /opt/agent}]
  volumeMounts: [{name: metrics-agent, mountPath: /opt/agent, readOnly: true}]
"#;

fn config() -> &'static Config {
    static C: OnceLock<Config> = OnceLock::new();
    C.get_or_init(|| {
        Config::from_raw(
            &RawConfig::new(Some(SETTINGS.into()), TEMPLATE).with_template("agent", AGENT),
            "sidecar-injector",
        )
        .expect("the test config loads")
    })
}

fn decide(pod: &Value) -> Decision {
    let gvk = GroupVersionKind::gvk("", "v1", "Pod");
    let raw = serde_json::value::to_raw_value(pod).unwrap();
    engine::decide(
        &Request {
            operation: Operation::Create,
            kind: &gvk,
            sub_resource: None,
            namespace: "team-a",
            namespace_labels: None,
            namespace_annotations: None,
            namespace_selected: false,
            object: Some(engine::Object::Raw(&raw)),
            workload_kind: None,
        },
        config(),
    )
}

// Names drawn from small pools so generated Pods often collide with what the template adds.
fn container_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("app".to_owned()),
        Just("metrics-collector".to_owned()),
        Just("agent-init".to_owned()),
        "[a-z]{1,6}"
    ]
}
fn volume_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("metrics-agent".to_owned()),
        Just("cgroup".to_owned()),
        Just("data".to_owned()),
        "[a-z]{1,6}"
    ]
}
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a/b".to_owned()),
        Just("x~y".to_owned()),
        Just("app".to_owned()),
        "[a-z./~]{1,10}"
    ]
}

fn container() -> impl Strategy<Value = Value> {
    (
        container_name(),
        proptest::option::of(proptest::collection::vec(
            ("[A-Z_]{1,6}", "[a-z]{0,4}"),
            0..3,
        )),
        proptest::option::of(proptest::collection::vec(
            (volume_name(), "/[a-z]{1,4}"),
            0..3,
        )),
        any::<bool>(),
    )
        .prop_map(|(name, env, mounts, extra)| {
            let mut c = json!({"name": name, "image": "example/app:1"});
            if let Some(env) = env {
                c["env"] = dedup(
                    env.into_iter()
                        .map(|(n, v)| json!({"name": n, "value": v}))
                        .collect(),
                    "name",
                );
            }
            if let Some(m) = mounts {
                let m = dedup(
                    m.into_iter()
                        .map(|(n, p)| json!({"name": n, "mountPath": p}))
                        .collect(),
                    "name",
                );
                c["volumeMounts"] = dedup(m.as_array().cloned().unwrap_or_default(), "mountPath");
            }
            if extra {
                c["aFieldFromTheFuture"] = json!({"nested": [1, 2]});
            }
            c
        })
}

fn dedup(items: Vec<Value>, field: &str) -> Value {
    let mut seen = HashSet::new();
    Value::Array(
        items
            .into_iter()
            .filter(|i| seen.insert(i[field].to_string()))
            .collect(),
    )
}

fn pod() -> impl Strategy<Value = Value> {
    (
        proptest::collection::vec(container(), 1..4),
        proptest::option::of(proptest::collection::vec(container(), 0..3)),
        proptest::option::of(proptest::collection::vec(volume_name(), 0..4)),
        proptest::option::of(proptest::collection::vec(
            prop_oneof![Just("bitbucket-registry".to_owned()), "[a-z]{1,5}"],
            0..3,
        )),
        proptest::option::of(proptest::collection::btree_map(key(), "[ -~]{0,12}", 0..4)),
        proptest::option::of(proptest::collection::btree_map(
            "[a-z]{1,5}",
            "[a-z0-9]{0,5}",
            0..3,
        )),
        prop_oneof![Just(None), Just(Some("Always")), Just(Some("Never"))],
        proptest::option::of(prop_oneof![
            Just("agent"),
            Just("default"),
            Just("agent, default"),
            Just("default,agent"),
        ]),
        proptest::option::of(prop_oneof![
            Just(r#"{"interval": "5"}"#),
            Just(r#"{"resources": {"limits": {"memory": "1Gi", "cpu": "1"}}}"#),
            Just("resources: {requests: {memory: 64Mi}}\ninterval: '60'"),
            Just(r#"{"interval": 5, "image": "evil:1"}"#),
            Just("{not yaml"),
        ]),
    )
        .prop_map(
            |(
                containers,
                inits,
                volumes,
                secrets,
                annotations,
                labels,
                restart,
                templates,
                values,
            )| {
                let mut spec = Map::new();
                let mut all = containers;
                let n = all.len();
                if let Some(i) = inits {
                    all.extend(i);
                }
                let all = dedup(all, "name");
                let all = all.as_array().cloned().unwrap_or_default();
                let (cs, is) = all.split_at(n.min(all.len()));
                spec.insert("containers".into(), Value::Array(cs.to_vec()));
                if !is.is_empty() {
                    spec.insert("initContainers".into(), Value::Array(is.to_vec()));
                }
                let mut vols: Vec<Value> = volumes
                    .unwrap_or_default()
                    .into_iter()
                    .map(|v| json!({"name": v, "emptyDir": {}}))
                    .collect();
                // every mount the Pod makes names a volume it has, as the apiserver requires
                for c in cs.iter().chain(is) {
                    for m in c
                        .get("volumeMounts")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        vols.push(json!({"name": m["name"], "emptyDir": {}}));
                    }
                }
                if !vols.is_empty() {
                    spec.insert("volumes".into(), dedup(vols, "name"));
                }
                if let Some(s) = secrets {
                    spec.insert(
                        "imagePullSecrets".into(),
                        dedup(s.into_iter().map(|n| json!({"name": n})).collect(), "name"),
                    );
                }
                if let Some(r) = restart {
                    spec.insert("restartPolicy".into(), json!(r));
                }
                spec.insert("futurePodField".into(), json!("kept"));
                let mut meta = json!({"name": "p"});
                let had_annotations = annotations.is_some();
                let mut annotations = annotations.unwrap_or_default();
                if let Some(t) = templates {
                    annotations.insert(engine::TEMPLATES_KEY.into(), t.into());
                }
                if let Some(v) = values {
                    annotations.insert(
                        sidecar_injector::engine::overrides::VALUES_KEY.into(),
                        v.into(),
                    );
                }
                if had_annotations || !annotations.is_empty() {
                    meta["annotations"] = json!(annotations);
                }
                if let Some(l) = labels {
                    meta["labels"] = json!(l);
                }
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})
            },
        )
}

/// An oracle written from the templates, not from the engine: the Pod conflicts when it
/// already has a container or volume of a name a chosen template adds, with another
/// definition. Generated containers always differ from the templates' (their image); a
/// generated volume is an emptyDir, so it differs from the hostPath `docker-sock` and
/// `cgroup` and equals the agent's emptyDir `metrics-agent`. Pull secrets are names only,
/// and app env and mounts a container already has are left to it: neither conflicts.
fn expected_conflict(pod: &Value) -> bool {
    let chosen: Vec<&str> = match pod["metadata"]["annotations"][engine::TEMPLATES_KEY].as_str() {
        Some(list) => list.split(',').map(str::trim).collect(),
        None => vec!["default", "agent"],
    };
    let (mut containers, mut volumes) = (Vec::new(), Vec::new());
    if chosen.contains(&"default") {
        containers.push("metrics-collector");
        volumes.extend(["docker-sock", "cgroup"]);
    }
    if chosen.contains(&"agent") {
        containers.push("agent-init");
    }
    let has = |field: &str, wanted: &[&str]| {
        pod["spec"][field]
            .as_array()
            .into_iter()
            .flatten()
            .any(|i| wanted.contains(&i["name"].as_str().unwrap_or_default()))
    };
    has("containers", &containers) || has("initContainers", &containers) || has("volumes", &volumes)
}

/// Every field of `orig` is in `result` with the same value; lists may only have grown at the end.
fn keeps(orig: &Value, result: &Value, at: &str) -> Result<(), String> {
    match (orig, result) {
        (Value::Object(o), Value::Object(r)) => {
            for (k, v) in o {
                let Some(rv) = r.get(k) else {
                    return Err(format!("{at}/{k} was removed"));
                };
                if v.is_null() {
                    continue; // a null may be filled in
                }
                keeps(v, rv, &format!("{at}/{k}"))?;
            }
            Ok(())
        }
        (Value::Array(o), Value::Array(r)) => {
            if r.len() < o.len() {
                return Err(format!("{at} shrank"));
            }
            for (i, (a, b)) in o.iter().zip(r).enumerate() {
                keeps(a, b, &format!("{at}/{i}"))?;
            }
            Ok(())
        }
        (a, b) if a == b => Ok(()),
        (a, b) => Err(format!("{at} changed from {a} to {b}")),
    }
}

fn names(pod: &Value, fields: &[&str]) -> Vec<String> {
    fields
        .iter()
        .flat_map(|f| pod["spec"][f].as_array().cloned().unwrap_or_default())
        .map(|i| i["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn unique(v: &[String]) -> bool {
    v.iter().collect::<HashSet<_>>().len() == v.len()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn injection_is_sound(pod in pod()) {
        let d = decide(&pod);
        let conflict = expected_conflict(&pod);
        match d.outcome() {
            Outcome::Failed => {
                prop_assert!(conflict, "failed where no conflict is expected: {:?} {}", d.reason, d.message);
                prop_assert_eq!(d.reason, Reason::Conflict, "{}", d.message);
                prop_assert!(d.patch.0.is_empty());
            }
            Outcome::Skipped => prop_assert!(false, "a plain Pod in team-a is never skipped: {}", d.message),
            Outcome::Injected => {
                prop_assert!(!conflict, "injected where a conflict is expected: {}", d.message);
                let mut result = pod.clone();
                d.patch.apply(&mut result).map_err(|e| TestCaseError::fail(format!("patch does not apply: {e}")))?;
                keeps(&pod, &result, "").map_err(TestCaseError::fail)?;
                prop_assert!(unique(&names(&result, &["containers", "initContainers"])), "container names repeat");
                prop_assert!(unique(&names(&result, &["volumes"])), "volume names repeat");
                prop_assert!(unique(&names(&result, &["imagePullSecrets"])), "pull secret names repeat");
                let vols: HashSet<String> = names(&result, &["volumes"]).into_iter().collect();
                for field in ["containers", "initContainers"] {
                    for c in result["spec"][field].as_array().into_iter().flatten() {
                        let env: Vec<String> = c["env"].as_array().into_iter().flatten().map(|e| e["name"].to_string()).collect();
                        prop_assert!(unique(&env), "env names repeat in {}", c["name"]);
                        let mounts = c["volumeMounts"].as_array().cloned().unwrap_or_default();
                        let paths: Vec<String> = mounts.iter().map(|m| m["mountPath"].to_string()).collect();
                        prop_assert!(unique(&paths), "mount paths repeat in {}", c["name"]);
                        for m in &mounts {
                            prop_assert!(vols.contains(m["name"].as_str().unwrap_or_default()), "{} mounts no volume", c["name"]);
                        }
                    }
                }
                // The apiserver's reinvocation: nothing more to do.
                let again = decide(&result);
                prop_assert_eq!(again.reason, Reason::AlreadyInjected);
                prop_assert!(again.patch.0.is_empty());
                // Even without the status annotation, nothing is added twice.
                let mut stripped = result.clone();
                stripped["metadata"]["annotations"].as_object_mut().map(|a| a.remove(STATUS_KEY));
                let third = decide(&stripped);
                prop_assert_eq!(third.reason, Reason::Injected, "{}", third.message);
                let paths: Vec<String> = third.patch.0.iter().map(|op| op.path.to_string()).collect();
                prop_assert_eq!(paths, vec!["/metadata/annotations/sidecar-injector.io~1status".to_owned()]);
            }
        }
    }
}
