//! `sidecar-injector check`: the Pods' states against the configuration the cluster serves,
//! and, with `--repair`, rolling the workloads that missed the sidecar, once the webhook is
//! seen to work end to end.

use crate::cli::context;
use crate::cluster::check::{self, Scope, State};
use crate::cluster::{self, repair};
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct CheckArgs {
    /// The configuration to judge against: a ConfigMap manifest or directory, or
    /// configmap:NAMESPACE/NAME. Default: the ConfigMap the installed injector serves.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Default: as kubectl finds it (KUBECONFIG, ~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The injector's MutatingWebhookConfiguration, when the cluster has several installs.
    /// Default: the one labelled app.kubernetes.io/name=sidecar-injector, whatever its
    /// release is called.
    #[arg(long)]
    pub webhook_configuration: Option<String>,
    /// The namespace to check (default: the kubeconfig's).
    #[arg(short = 'n', long, conflicts_with = "all_namespaces")]
    pub namespace: Option<String>,
    /// Every namespace the webhook injects (labelled, not in neverInjectNamespaces).
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: Format,
    /// Restart each Deployment, StatefulSet and DaemonSet owning a missing or stale Pod, one
    /// at a time, waiting for each rollout. Bare Pods and Job Pods are only reported. First,
    /// a server-side dry run must come back injected; otherwise nothing is restarted (exit 2).
    #[arg(long)]
    pub repair: bool,
    /// With --repair: at most this many workloads restarted a minute.
    #[arg(long, default_value_t = 1)]
    pub max_per_minute: u32,
    /// With --repair: how long one rollout may take before repair goes on with the next
    /// workload (that one is not restarted again for this template).
    #[arg(long, default_value_t = 300)]
    pub rollout_timeout_seconds: u64,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// Exit 0 all well, 1 a Pod `missing` or `failing`, 2 (an error) when it could not look.
pub async fn run(args: CheckArgs, own_namespace: &str) -> Result<ExitCode> {
    let client = cluster::client(args.kubeconfig.as_deref()).await?;
    let chosen = context::choose(
        Some(&client),
        args.webhook_configuration.as_deref(),
        args.config.as_deref(),
        own_namespace,
    )
    .await?;
    chosen.say();
    let config = &chosen.config;
    let scope = match (args.all_namespaces, args.namespace.clone()) {
        (true, _) => Scope::AllInjected,
        (false, Some(ns)) => Scope::Namespace(ns),
        (false, None) => Scope::Namespace(client.default_namespace().to_owned()),
    };
    if let Some(Ok(nodes)) = &chosen.nodes
        && let Some(volume) = crate::engine::config::docker_socket::socket_volume(config)
        && let Some(advice) = crate::engine::config::docker_socket::advice(&volume, nodes)
    {
        eprintln!("warning: {advice}");
    }
    let mut reports = check::survey(&client, config, &scope, check::CHECK_PAGE).await?;
    // Before the restart that would fail: an injected Pod using a Secret that is gone.
    match crate::cluster::absent_secrets::mark(&client, config, &mut reports).await {
        Ok(true) => {}
        Ok(false) => eprintln!(
            "note: this identity may not list Secrets, so a Pod whose injected Secret is gone shows as current until it restarts"
        ),
        Err(e) => eprintln!(
            "warning: the Secrets the injected Pods use could not be looked at ({e:#}): a Pod whose Secret is gone shows as current until it restarts"
        ),
    }
    if let Some(looked) = &chosen.no_webhook {
        // "The webhook would inject it now" is false with no webhook: say what is true.
        eprintln!(
            "warning: no injector is installed ({looked}): the Pods below called missing get the sidecar only once it is ({})",
            crate::cluster::doctor::INSTALL
        );
        for r in reports.iter_mut().filter(|r| r.state == State::Missing) {
            r.reason =
                "no webhook is installed: the config would inject it, nothing calls it".into();
        }
    }
    if args.repair {
        let plan = repair::to_repair(&reports, &config.template_hash);
        for (namespace, owner, pod) in &plan.given_up {
            eprintln!("{}", repair::given_up_note(namespace, owner, pod));
        }
        let workloads = plan.workloads;
        for r in plan.untouched {
            eprintln!(
                "not repaired: {}/{} ({}, {}): bare Pods and Job Pods are never deleted; recreate them",
                r.namespace,
                r.pod,
                r.owner,
                r.state.as_str()
            );
        }
        if let Some((namespace, _)) = workloads.first() {
            // A restart into a webhook that is not called would only make more Pods without
            // the sidecar.
            crate::cluster::probe::injected_dry_run(&client, namespace)
                .await
                .context("--repair restarts nothing until the webhook injects: fix it first (sidecar-injector doctor says how)")?;
        }
        let done = restart(&client, &workloads, &reports, &args, &config.template_hash).await?;
        eprintln!("repair: {} workload(s) rolled out", done.rolled_out.len());
        if !done.not_rolled_out.is_empty() {
            eprintln!(
                "repair: {} workload(s) restarted did not finish rolling out (above)",
                done.not_rolled_out.len()
            );
        }
        if !done.rolled_out.is_empty() || !done.not_rolled_out.is_empty() {
            reports = check::survey(&client, config, &scope, check::CHECK_PAGE).await?;
        }
    }
    match args.output {
        Format::Table => print!("{}", check::table(&reports)),
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&reports).context("writing JSON")?
        ),
    }
    let counts = check::counts(&reports);
    let summary: Vec<String> = counts
        .iter()
        .map(|(s, n)| format!("{n} {}", s.as_str()))
        .collect();
    eprintln!("{} Pods: {}", reports.len(), summary.join(", "));
    Ok(exit_code(&counts))
}

/// 1 when a Pod is `missing` or `failing`, else 0.
pub fn exit_code(counts: &std::collections::BTreeMap<State, usize>) -> ExitCode {
    let found = |s| counts.get(&s).copied().unwrap_or(0) > 0;
    if found(State::Missing) || found(State::Failing) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

async fn restart(
    client: &kube::Client,
    workloads: &[(String, String)],
    reports: &[check::PodReport],
    args: &CheckArgs,
    template_hash: &str,
) -> Result<repair::Outcome> {
    let why = repair::repair_notes(reports);
    let opts = repair::RepairOptions {
        max_per_minute: args.max_per_minute,
        rollout_timeout: Duration::from_secs(args.rollout_timeout_seconds),
        reporter: kube::runtime::events::Reporter {
            controller: "sidecar-injector".into(),
            instance: std::env::var("HOSTNAME").ok(),
        },
        template_hash: template_hash.to_owned(),
    };
    let mut limiter = repair::Limiter::default();
    repair::repair(
        client,
        workloads,
        &why,
        &opts,
        &mut limiter,
        &|| true,
        |progress| match progress {
            repair::Progress::Waiting {
                wait,
                next,
                per_minute,
            } => {
                let until = time::OffsetDateTime::now_utc() + wait;
                eprintln!(
                    "repair: at most {per_minute} restart(s) a minute (--max-per-minute): \
                     waiting {} s, until {:02}:{:02}:{:02} UTC, before restarting {next}",
                    wait.as_secs(),
                    until.hour(),
                    until.minute(),
                    until.second()
                );
            }
            repair::Progress::Restarted { namespace, owner } => {
                eprintln!("restarted {namespace}/{owner}; waiting for its rollout");
            }
            repair::Progress::NotAgain { namespace, owner } => {
                eprintln!(
                    "{}",
                    repair::not_again_note(namespace, owner, template_hash)
                );
            }
            repair::Progress::NotRolledOut { error, .. } => eprintln!("repair: {error}"),
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn check_exits_1_on_missing_or_failing_and_0_otherwise() {
        let code = |state| {
            let mut counts: BTreeMap<State, usize> = State::ALL.iter().map(|s| (*s, 0)).collect();
            counts.insert(State::Current, 3);
            counts.insert(state, 1);
            exit_code(&counts)
        };
        assert_eq!(code(State::Missing), std::process::ExitCode::from(1));
        assert_eq!(code(State::Failing), std::process::ExitCode::from(1));
        assert_eq!(code(State::Stale), std::process::ExitCode::SUCCESS);
        assert_eq!(code(State::Skipped), std::process::ExitCode::SUCCESS);
    }
}
