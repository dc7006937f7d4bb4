//! The two commands the Helm chart's hooks run in the cluster, each with the least privilege
//! it needs: `probe` (the `helm test` hook: a dry-run Pod in one namespace comes back
//! injected) and `unregister` (the pre-delete hook: the webhook configuration goes before the
//! Deployment, so no `failurePolicy: Fail` webhook is left without a server).

use anyhow::{Result, bail};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::api::{Api, DeleteParams};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct ProbeArgs {
    /// The opted-in namespace to try the dry-run Pod in (it needs `create` on Pods there).
    #[arg(short = 'n', long)]
    pub namespace: String,
    /// Default: as kubectl finds it (KUBECONFIG, ~/.kube/config, in a cluster its service account).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct UnregisterArgs {
    /// The MutatingWebhookConfiguration to delete.
    #[arg(long)]
    pub webhook_configuration: String,
    /// Default: as kubectl finds it (KUBECONFIG, ~/.kube/config, in a cluster its service account).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
}

/// Exit 0 when the dry-run Pod comes back injected, 1 (an error) with what the apiserver did.
pub async fn probe(args: ProbeArgs) -> Result<ExitCode> {
    if args.namespace.trim().is_empty() {
        bail!("--namespace must name an opted-in namespace");
    }
    let client = crate::cluster::client(args.kubeconfig.as_deref()).await?;
    let containers = crate::cluster::probe::injected_dry_run(&client, &args.namespace).await?;
    println!(
        "injected: a server-side dry-run Pod in namespace {} comes back with containers {containers:?}",
        args.namespace
    );
    Ok(ExitCode::SUCCESS)
}

/// Deletes the webhook configuration; one already gone is not an error (a retried hook).
pub async fn unregister(args: UnregisterArgs) -> Result<ExitCode> {
    let name = args.webhook_configuration.trim();
    if name.is_empty() {
        bail!("--webhook-configuration must name a MutatingWebhookConfiguration");
    }
    let client = crate::cluster::client(args.kubeconfig.as_deref()).await?;
    let api: Api<MutatingWebhookConfiguration> = Api::all(client);
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => println!(
            "deleted mutatingwebhookconfiguration {name}: the apiserver no longer calls the injector, and Pods are created without it"
        ),
        Err(kube::Error::Api(s)) if s.code == 404 => {
            println!("mutatingwebhookconfiguration {name} is already gone: nothing to do")
        }
        Err(e) => {
            return Err(crate::cluster::api_error(
                e,
                &format!("deleting mutatingwebhookconfiguration {name}"),
            ));
        }
    }
    Ok(ExitCode::SUCCESS)
}
