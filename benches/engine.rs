//! Criterion benchmarks of the engine alone (no HTTP, no TLS): `cargo bench --bench engine`.
//!
//! - `decide/*`: the engine on an already-parsed Pod;
//! - `review/*`: the whole `/mutate` body path: parse the AdmissionReview, decide, encode the answer;
//! - `config/*`: loading a ConfigMap (parse, validate, pre-render).

use criterion::{Criterion, criterion_group, criterion_main};
use kube::core::GroupVersionKind;
use kube::core::admission::Operation;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use sidecar_injector::engine::config::{Config, RawConfig};
use sidecar_injector::engine::{self, Request};
use sidecar_injector::serve::admission::{self, Decoded};
use std::hint::black_box;

const REVIEW: &str = include_str!("fixtures/replicaset-review.json");

/// A Pod with 40 containers and a 200 KB annotation (a big last-applied-configuration).
fn big_review() -> Value {
    let mut review: Value = serde_json::from_str(REVIEW).unwrap();
    let pod = &mut review["request"]["object"];
    let template = pod["spec"]["containers"][0].clone();
    let containers: Vec<Value> = (0..40)
        .map(|i| {
            let mut c = template.clone();
            c["name"] = json!(format!("worker-{i}"));
            c
        })
        .collect();
    pod["spec"]["containers"] = Value::Array(containers);
    pod["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] =
        json!("x".repeat(200 * 1024));
    review
}

fn decide(config: &Config, raw: &RawValue) -> engine::Decision {
    let gvk = GroupVersionKind::gvk("", "v1", "Pod");
    engine::decide(
        &Request {
            operation: Operation::Create,
            kind: &gvk,
            sub_resource: None,
            namespace: "shop",
            namespace_labels: None,
            namespace_annotations: None,
            namespace_selected: false,
            object: Some(engine::Object::Raw(raw)),
            workload_kind: None,
        },
        config,
    )
}

fn answer(config: &Config, body: &[u8]) -> Vec<u8> {
    match admission::decode(body) {
        Ok(Decoded::Review(r)) => {
            let d = r.decide(config, None);
            r.respond(&d, config.settings.failure_policy).unwrap()
        }
        _ => panic!("the fixture is a readable review"),
    }
}

fn dynamic_config() -> RawConfig {
    RawConfig::new(
        Some("values: {interval: '30'}\n".into()),
        r#"
containers:
- name: collector
  image: atlassian/bitbucket-pipelines-metrics-collector:2.1.0
  env:
  - {name: APP, value: "{{ pod.metadata.labels.app | default('none') }}"}
  - {name: INTERVAL, value: "{{ pod.metadata.annotations['metrics/interval'] | default(values.interval) }}"}
  - {name: NS, value: "{{ namespace }}"}
volumes:
- {name: cgroup, hostPath: {path: /sys/fs/cgroup, type: Directory}}
"#,
    )
}

fn benches(c: &mut Criterion) {
    let config = Config::embedded("sidecar-injector").unwrap();
    let dynamic = Config::from_raw(&dynamic_config(), "sidecar-injector").unwrap();
    let small: Value = serde_json::from_str(REVIEW).unwrap();
    let small_pod = serde_json::value::to_raw_value(&small["request"]["object"]).unwrap();
    let big = big_review();
    let big_pod = serde_json::value::to_raw_value(&big["request"]["object"]).unwrap();
    let big_body = serde_json::to_vec(&big).unwrap();

    c.bench_function("decide/small", |b| {
        b.iter(|| decide(&config, black_box(&small_pod)))
    });
    c.bench_function("decide/40-containers-200k-annotation", |b| {
        b.iter(|| decide(&config, black_box(&big_pod)))
    });
    c.bench_function("decide/small-pod-dependent-template", |b| {
        b.iter(|| decide(&dynamic, black_box(&small_pod)))
    });
    c.bench_function("decide/40c-200k-pod-dependent-template", |b| {
        b.iter(|| decide(&dynamic, black_box(&big_pod)))
    });
    c.bench_function("review/small", |b| {
        b.iter(|| answer(&config, black_box(REVIEW.as_bytes())))
    });
    c.bench_function("review/40-containers-200k-annotation", |b| {
        b.iter(|| answer(&config, black_box(&big_body)))
    });
    c.bench_function("config/load-default", |b| {
        b.iter(|| Config::embedded(black_box("ns")).unwrap())
    });
    c.bench_function("config/load-pod-dependent", |b| {
        b.iter(|| Config::from_raw(black_box(&dynamic_config()), "ns").unwrap())
    });
}

criterion_group! {
    name = engine;
    config = Criterion::default().sample_size(50).measurement_time(std::time::Duration::from_secs(3));
    targets = benches
}
criterion_main!(engine);
