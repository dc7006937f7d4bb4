//! The configuration a command judges against, and where it came from: `--config` when
//! given; else, with API access, the ConfigMap the installed injector serves
//! ([`cluster::installed`]); else the embedded default. With API access, the nodes decide
//! `values.mountDockerSocket: auto` as they do for `serve`.

use crate::cluster::{installed, live_config, nodes};
use crate::engine::config::docker_socket::Nodes;
use crate::engine::config::{Config, Source};
use crate::serve::config_files;
use anyhow::{Context, Result};
use std::path::Path;

/// A configuration, and a line saying which one it is.
pub struct Chosen {
    pub config: Config,
    /// `config: ConfigMap sidecar-injector/sidecar-injector (...)`.
    pub described: String,
    /// The cluster's nodes (`Ok`), or why they could not be read; `None` without a cluster.
    pub nodes: Option<Result<Nodes, String>>,
    /// When the install was looked for and no webhook configuration found: what was looked
    /// for. Then nothing injects, whatever the config says.
    pub no_webhook: Option<String>,
}

/// The configuration for `--config` (`explicit`), or the installed one, or the default.
pub async fn choose(
    client: Option<&kube::Client>,
    webhook_configuration: Option<&str>,
    explicit: Option<&Path>,
    own_namespace: &str,
) -> Result<Chosen> {
    let source = Source::from_arg(explicit).map_err(anyhow::Error::msg)?;
    let mut no_webhook = None;
    let (config, described) = match (explicit, &source, client) {
        (Some(_), Source::ConfigMap { namespace, name }, Some(client)) => (
            live_config::fetch(client, namespace, name, namespace).await?,
            format!("config: --config {source}"),
        ),
        (Some(_), Source::ConfigMap { .. }, None) => {
            anyhow::bail!("--config {source}: needs API access (--kubeconfig, or KUBECONFIG)")
        }
        (Some(_), _, _) | (None, _, None) => (
            config_files::load(&source, own_namespace)
                .with_context(|| format!("loading the configuration from {source}"))?,
            format!("config: {source}"),
        ),
        (None, _, Some(client)) => {
            let found = installed::find(client, webhook_configuration).await?;
            for what in &found.unread {
                eprintln!(
                    "warning: {what}; the configuration is then guessed ({})",
                    found.found_by
                );
            }
            if found.configuration.is_none() {
                no_webhook = Some(found.found_how.clone());
            }
            let (config, described) = installed_config(client, &found).await?;
            (config, format!("{described}; --config chooses another"))
        }
    };
    Ok(match client {
        Some(client) => {
            let (config, nodes) = decide_for_nodes(client, config).await?;
            Chosen {
                config,
                described,
                nodes: Some(nodes),
                no_webhook,
            }
        }
        None => Chosen {
            config,
            described,
            nodes: None,
            no_webhook,
        },
    })
}

/// The cluster's nodes, and `config` decided for them (`values.mountDockerSocket: auto`), as
/// `serve` decides it; when the nodes cannot be read, `config` as it is and why.
pub async fn decide_for_nodes(
    client: &kube::Client,
    config: Config,
) -> Result<(Config, Result<Nodes, String>)> {
    match nodes::list(client).await {
        Ok(nodes) => {
            let config = match config.for_nodes(&nodes) {
                Some(decided) => decided.map_err(anyhow::Error::msg)?,
                None => config,
            };
            Ok((config, Ok(nodes)))
        }
        Err(e) => Ok((config, Err(format!("{e:#}")))),
    }
}

/// The configuration the installed injector serves: its ConfigMap, or the embedded default
/// when that does not exist; and a line saying which.
pub async fn installed_config(
    client: &kube::Client,
    found: &installed::Installed,
) -> Result<(Config, String)> {
    let (ns, name) = &found.configmap;
    Ok(match found.read_configmap(client).await? {
        Some(cm) => match live_config::load(&cm, &found.namespace) {
            Ok(config) => (
                config,
                format!(
                    "config: ConfigMap {ns}/{name}, as installed ({})",
                    found.found_by
                ),
            ),
            Err(e) => {
                // Issue 33: "which the installed injector serves" was false: it refuses an
                // invalid ConfigMap and keeps serving the last good one, which is no longer in
                // the cluster to judge against.
                let served = match installed::served_hash(client, found).await {
                    Some(hash) => format!("its last good configuration, template hash {hash}"),
                    None => "its last good configuration (its Pods' metrics, which name its hash, could not be read)".to_owned(),
                };
                anyhow::bail!(
                    "ConfigMap {ns}/{name} is invalid, so the injector refused it and keeps serving {served}; nothing here can judge against that one. {} problem(s):\n{}\nCorrect the ConfigMap (sidecar-injector validate --config configmap:{ns}/{name} lists every problem), or pass --config with the configuration you mean",
                    e.problems.len(),
                    e.problems.join("\n")
                )
            }
        },
        None => (
            Config::embedded(&found.namespace).map_err(anyhow::Error::msg)?,
            format!(
                "config: the embedded default: ConfigMap {ns}/{name} does not exist ({})",
                found.found_by
            ),
        ),
    })
}

impl Chosen {
    /// What to say on stderr: which config, and how `auto` was decided.
    pub fn say(&self) {
        eprintln!("{}", self.described);
        if let Some(Err(e)) = &self.nodes {
            eprintln!(
                "warning: the nodes cannot be read ({e}): values.mountDockerSocket: auto is taken as mounted"
            );
        }
        if let Some(why) = self.config.docker_socket.explain() {
            eprintln!("{why}");
        }
    }
}
