//! The cluster's nodes, read for the engine: their container runtimes decide
//! `values.mountDockerSocket: auto`, and their architectures are those doctor asks each
//! injected image for.

use crate::engine::config::docker_socket::{Node, Nodes};
use anyhow::Result;
use k8s_openapi::api::core::v1::Node as ApiNode;
use kube::api::{Api, ListParams};

/// Every node: name, runtime, OS and whether it takes new Pods.
pub async fn list(client: &kube::Client) -> Result<Nodes> {
    let api: Api<ApiNode> = Api::all(client.clone());
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| crate::cluster::api_error(e, "listing nodes"))?;
    Ok(Nodes(list.items.into_iter().map(node).collect()))
}

fn node(n: ApiNode) -> Node {
    let os = n
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("kubernetes.io/os"))
        .map(String::as_str);
    let info = n.status.and_then(|s| s.node_info);
    Node {
        name: n.metadata.name.clone().unwrap_or_default(),
        runtime: info
            .as_ref()
            .map(|i| i.container_runtime_version.clone())
            .unwrap_or_default(),
        arch: info.map(|i| i.architecture).unwrap_or_default(),
        linux: os.is_none_or(|os| os == "linux"),
        schedulable: !n.spec.and_then(|s| s.unschedulable).unwrap_or(false),
    }
}
