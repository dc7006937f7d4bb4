//! The Rust schema check used by the other tests catches what a strict validator does: an
//! unknown field and a wrong type, each named by its path, and passes what the apiserver takes.

mod common;

use common::schema::problems;
use serde_json::json;

#[test]
fn a_valid_deployment_with_nulls_and_quantities_passes() {
    let doc = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "creationTimestamp": null},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": "nginx",
                    "ports": [{"containerPort": 80}],
                    "resources": {"limits": {"memory": "64Mi", "cpu": "100m"}}}],
                    "volumes": [{"name": "v", "emptyDir": {}}]}}}});
    assert_eq!(problems(&doc), Vec::<String>::new());
}

#[test]
fn an_unknown_field_is_named_with_its_path() {
    let doc = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "a", "image": "x", "imagePullPolcy": "Always"}]}});
    assert_eq!(
        problems(&doc),
        vec![".spec.containers[0].imagePullPolcy: unknown field"]
    );
}

#[test]
fn a_wrong_type_is_named_with_its_path() {
    let doc = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "a", "image": "x", "ports": [{"containerPort": "80"}]}]}});
    let p = problems(&doc);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("spec.containers[0].ports[0].containerPort: invalid type"),
        "{p:?}"
    );
}

#[test]
fn list_items_are_checked_one_by_one_and_unknown_kinds_are_errors() {
    let doc = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "b"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "d"}, "dta": {}}]});
    assert_eq!(problems(&doc), vec!["items[1]: .dta: unknown field"]);
    let odd = json!({"apiVersion": "apps.openshift.io/v1", "kind": "DeploymentConfig"});
    assert_eq!(
        problems(&odd),
        vec!["no schema here for apps.openshift.io/v1 DeploymentConfig"]
    );
}
