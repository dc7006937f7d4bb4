//! The connection to the Kubernetes API. Optional: without one, `serve` and `preview` work
//! as before from what the request and the command line carry.

use anyhow::{Context, Result};
use kube::config::{KubeConfigOptions, Kubeconfig};
use std::path::Path;

/// A client from `kubeconfig`, or, without one, as kubectl finds it: `KUBECONFIG`,
/// `~/.kube/config`, then the in-cluster service account.
pub async fn client(kubeconfig: Option<&Path>) -> Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("using the kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer().await.map_err(|e| {
            let named = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty());
            let home = std::env::var_os("HOME")
                .map(|h| Path::new(&h).join(".kube/config"))
                .filter(|p| p.exists());
            match (named, home) {
                // A kubeconfig is there and does not work: its error is the one to read.
                (Some(_), _) | (None, Some(_)) => {
                    anyhow::Error::new(e).context("the kubeconfig (KUBECONFIG, ~/.kube/config) does not work")
                }
                (None, None) => anyhow::anyhow!(
                    "no kubeconfig (KUBECONFIG is not set, ~/.kube/config does not exist) and not in a cluster: give one with --kubeconfig FILE or KUBECONFIG"
                ),
            }
        })?,
    };
    kube::Client::try_from(config).context("making the API client")
}

/// An API error as a user reads it: the apiserver's own message and reason, and what to do,
/// instead of the client's debug dump of the Status.
pub fn api_error(e: kube::Error, what: &str) -> anyhow::Error {
    match e {
        kube::Error::Api(status) => {
            let hint = match status.code {
                404 => " (it does not exist: check the name and namespace, or install it)",
                401 => " (the credentials were refused: renew the kubeconfig's token)",
                403 => " (this identity lacks the permission: kubectl auth can-i shows which)",
                _ => "",
            };
            anyhow::anyhow!(
                "{what}: {} ({} {}){hint}",
                status.message,
                status.code,
                status.reason
            )
        }
        other => anyhow::Error::new(other).context(what.to_owned()),
    }
}

/// The backoff of every watch `serve` keeps: from 0.4 s, doubling, at most 3 s (plus jitter
/// of up to as much again), and back to 0.4 s on the first success. After an apiserver comes
/// back (a restart, an upgrade, a network cut), every watch has relisted within about 6 s.
/// kube's default grows to 30 s and stays there for 2 minutes: measured on the real
/// apiserver (tests/e2e/restart.rs), the cache and the live config then lagged up to 30 s
/// behind changes made while the apiserver was down.
pub fn watch_backoff() -> kube::runtime::watcher::ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_millis(400))
        .with_max_delay(std::time::Duration::from_secs(3))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .into()
}
