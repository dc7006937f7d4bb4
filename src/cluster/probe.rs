//! Is the webhook really called? A server-side dry-run Pod in an opted-in namespace: the
//! apiserver runs admission as for a real Pod (and so calls the webhook, whose side effects
//! are `NoneOnDryRun`), stores nothing, and answers with the Pod as it would be.

use crate::engine::STATUS_KEY;
use anyhow::{Result, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};

/// The probe Pod's name prefix.
pub const PROBE_PREFIX: &str = "sidecar-injector-probe-";

/// Ok with the injected containers when a dry-run Pod in `namespace` comes back injected;
/// an error that says what the apiserver did otherwise.
pub async fn injected_dry_run(client: &kube::Client, namespace: &str) -> Result<Vec<String>> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": PROBE_PREFIX},
        "spec": {"containers": [{"name": "probe", "image": "registry.k8s.io/pause:3.10"}]}
    }))?;
    let params = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let created = api.create(&params, &pod).await.map_err(|e| {
        crate::cluster::api_error(
            e,
            &format!("a server-side dry-run Pod in namespace {namespace} was refused"),
        )
    })?;
    let status = created
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(STATUS_KEY));
    if status.is_none() {
        bail!(
            "a server-side dry-run Pod in namespace {namespace} came back without {STATUS_KEY}: the apiserver did not call the webhook, or the call failed and failurePolicy Ignore let the Pod through uninjected (the apiserver's log names the error)"
        );
    }
    Ok(created
        .spec
        .map(|s| s.containers.into_iter().map(|c| c.name).collect())
        .unwrap_or_default())
}
