//! `sidecar-injector images`: every image an install pulls, one per line, after
//! `imageRepository`: each template's ([`crate::engine::config::images`]) and the injector's
//! own (its Pods' with `--kubeconfig`, or `--injector-image`). `--mirror-to REPO` pairs each
//! with where a mirror under REPO keeps it, for `skopeo copy --all` (docs/install.md:
//! "Air-gapped and private registries").

use crate::cli::context;
use crate::cluster::installed;
use crate::engine::config::images::{self, Image};
use crate::engine::image;
use anyhow::{Result, bail};
use k8s_openapi::api::core::v1::Pod;
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct ImagesArgs {
    /// The configuration: a ConfigMap manifest, a directory holding its keys, or
    /// configmap:NAMESPACE/NAME. Default: with --kubeconfig, the ConfigMap the installed
    /// injector serves; else the embedded default.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The injector's own image (the chart's image.repository:image.tag). Default: with
    /// --kubeconfig, the image its Pods run.
    #[arg(long)]
    pub injector_image: Option<String>,
    /// Print SOURCE DESTINATION on each line: where to copy each image from, and the name
    /// the injector pulls once the configuration says `imageRepository: REPO`.
    #[arg(long, value_name = "REPO")]
    pub mirror_to: Option<String>,
    /// Read the installed injector (its ConfigMap, its Pods' image) from this cluster.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The injector's MutatingWebhookConfiguration, when the cluster has several installs.
    #[arg(long, requires = "kubeconfig")]
    pub webhook_configuration: Option<String>,
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    pub output: Output,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Output {
    /// One image per line (with --mirror-to: SOURCE DESTINATION).
    Text,
    /// Each image with its source, where it is used, and its mirror name.
    Json,
}

/// One line of `-o json`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Listed<'a> {
    #[serde(flatten)]
    image: &'a Image,
    #[serde(skip_serializing_if = "Option::is_none")]
    mirror: Option<String>,
}

pub async fn run(args: ImagesArgs, own_namespace: &str) -> Result<ExitCode> {
    if let Some(repo) = &args.mirror_to {
        image::validate_repository(repo)
            .map_err(|e| anyhow::anyhow!("--mirror-to: {e}: the registry and path the mirror keeps the images under, as imageRepository will say it"))?;
    }
    let client = match &args.kubeconfig {
        Some(path) => Some(crate::cluster::client(Some(path)).await?),
        None => None,
    };
    let chosen = context::choose(
        client.as_ref(),
        args.webhook_configuration.as_deref(),
        args.config.as_deref(),
        own_namespace,
    )
    .await?;
    eprintln!("{}", chosen.described);
    let mut list = images::injected(&chosen.config);
    match (&args.injector_image, &client) {
        (Some(given), _) => {
            if given.trim().is_empty() || given.contains(char::is_whitespace) {
                bail!(
                    "--injector-image {given:?}: want an image reference such as registry.example.com/sidecar-injector:0.1.0"
                );
            }
            list = images::with_injector(list, given, "--injector-image", "serve");
        }
        (None, Some(client)) => {
            let found = installed::find(client, args.webhook_configuration.as_deref()).await?;
            match injector_image(&found.pods) {
                Some((image, workload, container)) => {
                    list = images::with_injector(list, &image, &workload, &container);
                }
                None => eprintln!(
                    "warning: the injector's own image is not listed: no Pod of it runs in the cluster ({}); pass --injector-image",
                    found.found_how
                ),
            }
        }
        (None, None) => eprintln!(
            "note: the injector's own image is not listed: pass --injector-image IMAGE, or --kubeconfig to read it from the installed injector"
        ),
    }
    print!("{}", render(&list, args.mirror_to.as_deref(), args.output)?);
    Ok(ExitCode::SUCCESS)
}

/// What `run` prints.
fn render(list: &[Image], mirror_to: Option<&str>, output: Output) -> Result<String> {
    Ok(match output {
        Output::Text => list
            .iter()
            .map(|i| match mirror_to {
                Some(repo) => format!("{} {}\n", i.source, images::mirrored(&i.source, repo)),
                None => format!("{}\n", i.image),
            })
            .collect(),
        Output::Json => {
            let listed: Vec<Listed> = list
                .iter()
                .map(|image| Listed {
                    image,
                    mirror: mirror_to.map(|repo| images::mirrored(&image.source, repo)),
                })
                .collect();
            serde_json::to_string_pretty(&listed)? + "\n"
        }
    })
}

/// The injector's image, the workload and the container that run it: the container of its
/// Pods that runs `serve`, else their first.
fn injector_image(pods: &[Pod]) -> Option<(String, String, String)> {
    let pod = pods.first()?;
    let spec = pod.spec.as_ref()?;
    let serves = |c: &&k8s_openapi::api::core::v1::Container| {
        c.args
            .iter()
            .chain(c.command.iter())
            .flatten()
            .any(|a| a == "serve")
    };
    let c = spec
        .containers
        .iter()
        .find(serves)
        .or(spec.containers.first())?;
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    // A Deployment's Pod: its ReplicaSet is the Deployment's name and the template hash.
    let hash = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("pod-template-hash"));
    let deployment = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.kind == "ReplicaSet")
        .and_then(|o| o.name.strip_suffix(&format!("-{}", hash?)));
    let workload = match deployment {
        Some(d) => format!("deployment {ns}/{d}"),
        None => format!("pod {ns}/{name}"),
    };
    Some((c.image.clone()?, workload, c.name.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::config::Config;

    #[test]
    fn mirror_pairs_name_the_source_and_the_name_the_injector_will_pull() {
        let config = Config::embedded("platform").unwrap();
        let list = images::with_injector(
            images::injected(&config),
            "ghcr.io/acme/sidecar-injector:0.1.0",
            "--injector-image",
            "serve",
        );
        let text = render(
            &list,
            Some("registry.corp.example:5000/mirror"),
            Output::Text,
        )
        .unwrap();
        assert_eq!(
            text,
            "atlassian/bitbucket-pipelines-metrics-collector:2.1.0 registry.corp.example:5000/mirror/atlassian/bitbucket-pipelines-metrics-collector:2.1.0\n\
             ghcr.io/acme/sidecar-injector:0.1.0 registry.corp.example:5000/mirror/acme/sidecar-injector:0.1.0\n"
        );
        let json: serde_json::Value =
            serde_json::from_str(&render(&list, None, Output::Json).unwrap()).unwrap();
        assert_eq!(
            json[0]["usedBy"][0]["container"],
            "bitbucket-pipelines-metrics-collector"
        );
        assert!(json[0].get("mirror").is_none());
    }

    #[test]
    fn the_injector_is_found_as_its_deployment() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "inj-7d9f-abcde", "namespace": "platform",
                "labels": {"pod-template-hash": "7d9f"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "inj-7d9f", "uid": "u"}]},
            "spec": {"containers": [
                {"name": "proxy", "image": "envoy:1"},
                {"name": "webhook", "image": "reg.example/sidecar-injector:0.1.0", "args": ["serve", "--config=x"]}]}
        }))
        .unwrap();
        assert_eq!(
            injector_image(&[pod]),
            Some((
                "reg.example/sidecar-injector:0.1.0".to_owned(),
                "deployment platform/inj".to_owned(),
                "webhook".to_owned()
            ))
        );
    }
}
