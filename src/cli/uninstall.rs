//! `sidecar-injector uninstall`: after `helm uninstall` or `kubectl delete -k manifests/`,
//! what the injector made at run time and neither lists: the copies of `propagateSecrets`,
//! its certificate Secret, its Lease (and the webhook configuration, if still there). What
//! goes is the engine's ([`crate::engine::uninstall::plan`]); `--dry-run` only lists it.

use crate::cluster::{installed, lease::REPAIR_LEASE, live_config, secret_sync};
use crate::engine::config::{Config, DEFAULT_OWN_NAMESPACE};
use crate::engine::uninstall::{self, Removal, Seen};
use anyhow::{Result, bail};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams, Preconditions};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct UninstallArgs {
    /// List what would be removed, and what stays and why; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The install's namespace (of the token Secret, the certificate Secret and the Lease).
    /// Default: the install found by its label, else sidecar-injector.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// A name listed in propagateSecrets (repeatable). Default: the install's ConfigMap's,
    /// else the embedded default's.
    #[arg(long = "secret")]
    pub secrets: Vec<String>,
    /// The certificate Secret's name in that namespace. Default: the injector's
    /// --cert-secret, else sidecar-injector-tls.
    #[arg(long)]
    pub cert_secret: Option<String>,
    /// The webhook configuration, with several installs in the cluster. Default: the one
    /// labelled app.kubernetes.io/name=sidecar-injector.
    #[arg(long)]
    pub webhook_configuration: Option<String>,
    /// Default: as kubectl finds it (KUBECONFIG, ~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
}

/// Exit 0 when everything planned was removed (or listed, with --dry-run); an error when the
/// injector still runs, since it would make again what this removes.
pub async fn run(args: UninstallArgs) -> Result<ExitCode> {
    let client = crate::cluster::client(args.kubeconfig.as_deref()).await?;
    let found = installed::find(&client, args.webhook_configuration.as_deref()).await?;
    let namespace = args.namespace.clone().unwrap_or_else(|| {
        if found.configuration.is_some() {
            found.namespace.clone()
        } else {
            DEFAULT_OWN_NAMESPACE.to_owned()
        }
    });
    let names = match args.secrets.is_empty() {
        false => args.secrets.clone(),
        true => propagated(&client, &found, &namespace).await,
    };
    let cert_secret = args
        .cert_secret
        .clone()
        .or_else(|| found.kept_certificates().map(|k| k.secret))
        .unwrap_or_else(|| "sidecar-injector-tls".to_owned());

    let mut copies = Vec::new();
    for name in &names {
        let list = Api::<Secret>::all(client.clone())
            .list_metadata(&ListParams::default().fields(&format!("metadata.name={name}")))
            .await
            .map_err(|e| {
                crate::cluster::api_error(e, &format!("listing the Secrets named {name}"))
            })?;
        copies.extend(list.items.into_iter().map(|m| m.metadata));
    }
    let candidates: BTreeSet<(String, String)> = copies
        .iter()
        .filter_map(|m| Some((m.namespace.clone()?, m.name.clone()?)))
        .filter(|(ns, _)| *ns != namespace)
        .collect();
    let in_use = secret_sync::uses(&client, &candidates)
        .await
        .into_keys()
        .collect();
    let certificate = Api::<Secret>::namespaced(client.clone(), &namespace)
        .get_metadata_opt(&cert_secret)
        .await
        .map_err(|e| {
            crate::cluster::api_error(e, &format!("reading Secret {namespace}/{cert_secret}"))
        })?
        .map(|m| m.metadata);
    let lease = Api::<Lease>::namespaced(client.clone(), &namespace)
        .get_opt(REPAIR_LEASE)
        .await
        .map_err(|e| {
            crate::cluster::api_error(e, &format!("reading Lease {namespace}/{REPAIR_LEASE}"))
        })?
        .map(|_| REPAIR_LEASE.to_owned());
    let plan = uninstall::plan(&Seen {
        own_namespace: namespace.clone(),
        webhook_configuration: found
            .configuration
            .as_ref()
            .and_then(|c| c.metadata.name.clone()),
        copies,
        in_use,
        certificate,
        lease,
    });

    let running: Vec<String> = found
        .pods
        .iter()
        .filter_map(|p| {
            Some(format!(
                "{}/{}",
                p.metadata.namespace.as_deref()?,
                p.metadata.name.as_deref()?
            ))
        })
        .collect();
    if !running.is_empty() && !args.dry_run {
        bail!(
            "the injector still runs ({}): it would make again what this removes. Uninstall it first (helm uninstall RELEASE -n {namespace}, or kubectl delete -k manifests/), then run this again; --dry-run lists what it would remove",
            running.join(", ")
        );
    }
    let verb = if args.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    for removal in &plan.remove {
        if !args.dry_run {
            remove(&client, removal).await?;
        }
        println!("{verb} {}", removal.describe());
    }
    for (at, why) in &plan.kept {
        println!("kept secret {at}: {why}");
    }
    if plan.remove.is_empty() {
        println!("nothing of the injector's is left in namespace {namespace} or its copies");
    }
    if args.dry_run && !running.is_empty() {
        println!(
            "the injector still runs ({}): uninstall it first, or it makes these again",
            running.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `propagateSecrets` of the install's ConfigMap, else of the embedded default.
async fn propagated(
    client: &kube::Client,
    found: &installed::Installed,
    namespace: &str,
) -> Vec<String> {
    if let Ok(Some(cm)) = found.read_configmap(client).await
        && let Ok(config) = live_config::load(&cm, namespace)
    {
        return config.settings.propagate_secrets.clone();
    }
    Config::embedded(namespace)
        .map(|c| c.settings.propagate_secrets.clone())
        .unwrap_or_default()
}

/// One removal: gone already is not an error; a Secret is deleted only if it is still the
/// object that was judged (its uid).
async fn remove(client: &kube::Client, removal: &Removal) -> Result<()> {
    let exactly = |uid: &Option<String>| DeleteParams {
        preconditions: Some(Preconditions {
            uid: uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    let result = match removal {
        Removal::WebhookConfiguration(name) => {
            Api::<MutatingWebhookConfiguration>::all(client.clone())
                .delete(name, &DeleteParams::default())
                .await
                .map(|_| ())
        }
        Removal::Copy {
            namespace,
            name,
            uid,
        }
        | Removal::CertificateSecret {
            namespace,
            name,
            uid,
        } => Api::<Secret>::namespaced(client.clone(), namespace)
            .delete(name, &exactly(uid))
            .await
            .map(|_| ()),
        Removal::Lease { namespace, name } => Api::<Lease>::namespaced(client.clone(), namespace)
            .delete(name, &DeleteParams::default())
            .await
            .map(|_| ()),
    };
    match result {
        Ok(()) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(crate::cluster::api_error(
            e,
            &format!("deleting {}", removal.describe()),
        )),
    }
}
