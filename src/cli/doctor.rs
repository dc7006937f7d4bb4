//! `sidecar-injector doctor`: the installed injector checked end to end, one line per check
//! (✔, ✖ with the fix, or - when it could not be checked). Exit 0 when nothing fails, 1 when
//! something does, 2 (an error) when doctor could not look.

use crate::cli::context;
use crate::cluster::doctor::{self, Finding, Outcome};
use crate::cluster::installed;
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct DoctorArgs {
    /// Default: as kubectl finds it (KUBECONFIG, ~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The injector's MutatingWebhookConfiguration, when the cluster has several installs.
    /// Default: the one labelled app.kubernetes.io/name=sidecar-injector, whatever its
    /// release is called.
    #[arg(long)]
    pub webhook_configuration: Option<String>,
    /// Skip "images pullable": for a cluster whose registry this machine cannot reach (the
    /// check then says -).
    #[arg(long)]
    pub offline: bool,
    /// A CA (PEM) that signs the registry's certificate, trusted besides the system's roots
    /// when asking for the injected images' manifests. Repeatable.
    #[arg(long, value_name = "FILE", conflicts_with = "offline")]
    pub registry_ca: Vec<PathBuf>,
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: crate::cli::check::Format,
}

pub async fn run(args: DoctorArgs) -> Result<ExitCode> {
    let registry = if args.offline {
        None
    } else {
        let mut roots = Vec::new();
        for path in &args.registry_ca {
            let pem = std::fs::read(path)
                .with_context(|| format!("--registry-ca {}: cannot read it", path.display()))?;
            if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                anyhow::bail!(
                    "--registry-ca {}: holds no PEM certificate (-----BEGIN CERTIFICATE-----); give the registry's CA certificate, e.g. the ca.crt its TLS certificate was signed with",
                    path.display()
                );
            }
            roots.push(pem);
        }
        Some(crate::cluster::registry::Registry::new(roots))
    };
    let client = crate::cluster::client(args.kubeconfig.as_deref()).await?;
    let found = installed::find(&client, args.webhook_configuration.as_deref()).await?;
    let loaded = match context::installed_config(&client, &found).await {
        Ok((config, described)) => context::decide_for_nodes(&client, config)
            .await
            .map(|(config, nodes)| (config, described, nodes)),
        Err(e) => Err(e),
    };
    let (config_finding, loaded) = match loaded {
        Ok((config, described, nodes)) => {
            let message = format!(
                "{} (template hash {})",
                described.trim_start_matches("config: "),
                config.template_hash
            );
            (Finding::pass("config", message), Some((config, nodes)))
        }
        Err(e) => (
            Finding::fail(
                "config",
                format!("{e:#}"),
                &format!(
                    "correct the ConfigMap (sidecar-injector validate --config configmap:{}/{} lists every problem); serve keeps its last good one meanwhile",
                    found.configmap.0, found.configmap.1
                ),
            ),
            None,
        ),
    };
    let loaded = loaded
        .as_ref()
        .map(|(c, n)| (c, n.as_ref().map_err(String::as_str)));
    let mut findings = doctor::run(&client, &found, loaded, registry.as_ref()).await?;
    // After the webhook's own checks, before the dry run's context.
    let at = findings
        .iter()
        .position(|f| f.check == "opted-in namespaces")
        .unwrap_or(findings.len());
    findings.insert(at, config_finding);
    match args.output {
        crate::cli::check::Format::Table => print!("{}", doctor::table(&findings)),
        crate::cli::check::Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&findings).context("writing JSON")?
        ),
    }
    let failed = findings
        .iter()
        .filter(|f| f.outcome == Outcome::Fail)
        .count();
    eprintln!(
        "{} checks: {} passed, {failed} failed, {} skipped",
        findings.len(),
        findings
            .iter()
            .filter(|f| f.outcome == Outcome::Pass)
            .count(),
        findings
            .iter()
            .filter(|f| f.outcome == Outcome::Skipped)
            .count()
    );
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
