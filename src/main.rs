//! The `sidecar-injector` command line: clap subcommands, each a thin call into the library.

use anyhow::{Context, Result, bail};

/// mimalloc, not glibc's malloc: an admission makes many small allocations that live for one
/// request (BENCHMARKS.md, "The allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand, ValueEnum};
use sidecar_injector::cli::check::{self, CheckArgs};
use sidecar_injector::cli::doctor::{self, DoctorArgs};
use sidecar_injector::cli::hooks::{self, ProbeArgs, UnregisterArgs};
use sidecar_injector::cli::{certs, context, images, input, uninstall};
use sidecar_injector::cluster;
use sidecar_injector::cluster::live_config;
use sidecar_injector::engine::Outcome;
use sidecar_injector::engine::config::{Config, DEFAULT_OWN_NAMESPACE, Source};
use sidecar_injector::engine::preview;
use sidecar_injector::serve::accept::Recycle;
use sidecar_injector::serve::serving_cert::Certificates;
use sidecar_injector::serve::{config_files, server};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "sidecar-injector",
    version,
    about = "Kubernetes mutating admission webhook: inject sidecars, init containers, volumes and pull secrets from one template"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve /mutate, /preview, /healthz and /readyz over TLS, and /metrics over plain HTTP.
    Serve(ServeArgs),
    /// Show what would be injected into the Pods of manifests (offline).
    Preview(PreviewArgs),
    /// Load a configuration as serve would, render it, and report every problem.
    Validate {
        /// A ConfigMap manifest, a directory holding config.yaml and mutate.yaml, - for a
        /// ConfigMap manifest on standard input, or configmap:NAMESPACE/NAME (read through
        /// the API, as serve reads it). Default: the embedded default.
        #[arg(long)]
        config: Option<PathBuf>,
        /// For --config configmap:NAMESPACE/NAME. Default: as kubectl finds it (KUBECONFIG,
        /// ~/.kube/config).
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
    },
    /// Find running Pods that missed the sidecar, run an old template, or cannot run what was
    /// injected; --repair rolls their workloads. Exit code 0 all well, 1 when a Pod is
    /// missing or failing, 2 when the check could not run.
    Check(CheckArgs),
    /// Check the installed injector end to end, one line per check (✔, or ✖ with the fix).
    /// Exit code 0 all pass, 1 a problem, 2 when doctor could not run.
    Doctor(DoctorArgs),
    /// Create a server-side dry-run Pod in an opted-in namespace and check that it comes back
    /// injected (the Helm chart's `helm test`). Exit 0 injected, 1 not.
    Probe(ProbeArgs),
    /// Delete the webhook configuration, so Pods are created without the injector (the Helm
    /// chart's pre-delete hook: it goes before the Deployment does).
    Unregister(UnregisterArgs),
    /// After helm uninstall or kubectl delete -k: remove what the injector made at run time
    /// (the copies of propagateSecrets no Pod uses, its certificate Secret, its Lease). The
    /// token Secret you created stays. --dry-run lists it all.
    Uninstall(uninstall::UninstallArgs),
    /// Every image the install pulls (each template's after imageRepository, and the
    /// injector's own), one per line; --mirror-to REPO pairs each with its name in a mirror.
    Images(images::ImagesArgs),
    /// Write a CA and a serving certificate for the webhook's Service, and print the caBundle.
    Certs {
        #[arg(long, default_value = "sidecar-injector")]
        service: String,
        #[arg(long, default_value = "sidecar-injector")]
        namespace: String,
        #[arg(long, default_value = "certs")]
        out: PathBuf,
        /// Another DNS name or IP address for the serving certificate (repeatable): e.g.
        /// 127.0.0.1 for a webhook registered by URL (the apiserver needs an IP SAN there).
        #[arg(long = "san")]
        sans: Vec<String>,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// A ConfigMap manifest, a directory holding its keys (a mounted ConfigMap), or
    /// configmap:NAMESPACE/NAME (watched through the API: changes served at once, a bad one
    /// refused with a Warning Event on it). Default: the embedded default.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long, default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    #[arg(long, default_value = "0.0.0.0:9090")]
    metrics_listen: SocketAddr,
    /// Serving certificate (PEM). Without it and --tls-key-file, a dev CA and pair are made under --dev-certs-dir.
    #[arg(long, requires = "tls_key_file")]
    tls_cert_file: Option<PathBuf>,
    #[arg(long, requires = "tls_cert_file")]
    tls_key_file: Option<PathBuf>,
    /// Keep the serving certificate in this Secret (NAMESPACE/NAME): the replica holding the
    /// Lease makes a CA and the certificate when it is absent, renews and rolls them over, and
    /// keeps --webhook-configuration's caBundle equal to the CA. Every replica serves the
    /// Secret's current pair, read through the API.
    #[arg(long, conflicts_with_all = ["tls_cert_file", "tls_key_file"], requires = "webhook_configuration")]
    cert_secret: Option<String>,
    /// The MutatingWebhookConfiguration whose caBundle --cert-secret keeps; its Service (or
    /// URL host) names the certificate.
    #[arg(long, requires = "cert_secret")]
    webhook_configuration: Option<String>,
    /// Another DNS name or IP address for the --cert-secret certificate (repeatable).
    #[arg(long = "cert-san", requires = "cert_secret")]
    cert_sans: Vec<String>,
    /// How long a --cert-secret serving certificate is valid (s, m, h or d): renewed with a
    /// third left; its CA lasts four times as long and is rolled over with half left.
    #[arg(long, default_value = "90d", requires = "cert_secret")]
    cert_validity: String,
    /// Require client certificates signed by this CA (PEM).
    #[arg(long)]
    client_ca_file: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Where the dev certificates live when no --tls-* files are given.
    #[arg(long, default_value = "certs")]
    dev_certs_dir: PathBuf,
    /// After SIGTERM, keep answering (with Connection: close) for this many seconds.
    #[arg(long, default_value_t = 5.0)]
    drain_grace_seconds: f64,
    /// Then wait at most this many seconds for the requests in flight.
    #[arg(long, default_value_t = 15.0)]
    drain_timeout_seconds: f64,
    /// Ask a client connection to end (Connection: close, or GOAWAY on HTTP/2) with its
    /// answer to this many requests, so the apiserver dials again, to any replica. 0: never.
    #[arg(long, default_value_t = Recycle::DEFAULT_MAX_REQUESTS)]
    max_connection_requests: u64,
    /// The same, for the first answer after a connection is this many seconds old. 0: never.
    #[arg(long, default_value_t = Recycle::DEFAULT_MAX_AGE_SECONDS)]
    max_connection_age_seconds: f64,
    /// API access, to read namespaces' labels and annotations. Default: as kubectl finds it
    /// (KUBECONFIG, ~/.kube/config, in a cluster its service account); without any, serve
    /// goes by the request alone.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args)]
struct PreviewArgs {
    /// The configuration to render: a ConfigMap manifest, a directory holding config.yaml
    /// and mutate.yaml, or configmap:NAMESPACE/NAME. Default: with --kubeconfig, the
    /// ConfigMap the installed injector serves; else the embedded default.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Manifests to read (YAML or JSON, many documents): a file, a directory (its .yaml, .yml
    /// and .json files, sorted) or - for standard input. Repeatable; read in order.
    #[arg(short = 'f', long = "filename", default_value = "-")]
    files: Vec<String>,
    /// Read the directories given with -f recursively.
    #[arg(short = 'R', long)]
    recursive: bool,
    /// The namespace of every document (default: each document's own, else "default").
    #[arg(long)]
    namespace: Option<String>,
    /// A label of that namespace, KEY=VALUE (repeatable). When given, the namespace must carry the opt-in label.
    #[arg(long = "namespace-label", value_parser = parse_label)]
    namespace_labels: Vec<(String, String)>,
    /// An annotation of that namespace, KEY=VALUE (repeatable): sidecar-injector.io/templates,
    /// sidecar-injector.io/values.
    #[arg(long = "namespace-annotation", value_parser = parse_label)]
    namespace_annotations: Vec<(String, String)>,
    /// Read each document's namespace (labels and annotations) from this cluster; what
    /// --namespace-label and --namespace-annotation give takes precedence.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The injector's MutatingWebhookConfiguration, when the cluster has several installs.
    /// Default: the one labelled app.kubernetes.io/name=sidecar-injector, whatever its
    /// release is called.
    #[arg(long, requires = "kubeconfig")]
    webhook_configuration: Option<String>,
    #[arg(short = 'o', long = "output", value_enum, default_value = "yaml")]
    output: OutputFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum OutputFormat {
    Yaml,
    Json,
    Patch,
    Diff,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

fn own_namespace() -> String {
    std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_OWN_NAMESPACE.to_owned())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `check` and `doctor` tell a monitor apart: 1 is what they found (a Pod missing the
    // sidecar or failing, a check failing), 2 is that they could not look (no API access, no
    // permission, no config).
    let could_not_run = match cli.command {
        Command::Check(_) | Command::Doctor(_) => ExitCode::from(2),
        _ => ExitCode::FAILURE,
    };
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Preview(args) => run_preview(args),
        Command::Validate { config, kubeconfig } => validate(config, kubeconfig),
        Command::Check(args) => run_check(args),
        Command::Doctor(args) => run_doctor(args),
        Command::Probe(args) => block_on(hooks::probe(args)),
        Command::Unregister(args) => block_on(hooks::unregister(args)),
        Command::Uninstall(args) => block_on(uninstall::run(args)),
        Command::Images(args) => block_on(images::run(args, &own_namespace())),
        Command::Certs {
            service,
            namespace,
            out,
            sans,
        } => run_certs(&service, &namespace, &out, &sans),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            could_not_run
        }
    }
}

/// `LOG_LEVEL=debug` means this program's debug events; libraries (hyper, h2, rustls) stay at
/// warn. A full filter (`LOG_LEVEL=info,h2=debug`) is taken as given.
fn log_filter(level: Option<&str>) -> tracing_subscriber::EnvFilter {
    let directive = match level.map(str::trim).filter(|l| !l.is_empty()) {
        None => "warn,sidecar_injector=info".to_owned(),
        Some(l) if l.contains('=') || l.contains(',') => l.to_owned(),
        Some(l) => format!("warn,sidecar_injector={l}"),
    };
    tracing_subscriber::EnvFilter::try_new(&directive).unwrap_or_else(|e| {
        eprintln!("LOG_LEVEL={directive:?} is not a level or filter ({e}); using info");
        tracing_subscriber::EnvFilter::new("warn,sidecar_injector=info")
    })
}

fn init_logging(format: LogFormat) {
    let filter = log_filter(std::env::var("LOG_LEVEL").ok().as_deref());
    // Colours only on a terminal: a redirected log (a file, kubectl logs) gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
    }
}

/// The dev certificates, under `dir`; when it cannot be written (a read-only root, as the
/// image runs), under the temporary directory instead; else an error that says what to pass.
fn dev_certificates(dir: &std::path::Path) -> Result<certs::Written> {
    let first = match certs::ensure_dev(dir) {
        Ok(dev) => return Ok(dev),
        Err(e) => e,
    };
    let tmp = std::env::temp_dir().join("sidecar-injector-dev-certs");
    match certs::ensure_dev(&tmp) {
        Ok(dev) => {
            tracing::info!(
                dir = %dir.display(),
                error = format!("{first:#}"),
                "--dev-certs-dir cannot be written: the dev certificates are under {}",
                tmp.display()
            );
            Ok(dev)
        }
        Err(second) => Err(anyhow::anyhow!(
            "making the dev certificates: in {} ({first:#}) and in {} ({second:#}); pass --tls-cert-file and --tls-key-file (the Deployment does), or a writable --dev-certs-dir",
            dir.display(),
            tmp.display()
        )),
    }
}

fn serve(args: ServeArgs) -> Result<ExitCode> {
    init_logging(args.log_format);
    let certificates = match (args.tls_cert_file, args.tls_key_file, args.cert_secret) {
        (Some(cert), Some(key), _) => Certificates::Files { cert, key },
        (_, _, Some(secret)) => Certificates::Secret(certs::secret_options(
            &secret,
            args.webhook_configuration.unwrap_or_default(),
            args.cert_sans,
            &args.cert_validity,
        )?),
        _ => {
            let dev = dev_certificates(&args.dev_certs_dir)?;
            tracing::info!(ca = %dev.ca.display(), "no --tls-cert-file: serving a dev certificate; clients verify with this CA");
            Certificates::Files {
                cert: dev.cert,
                key: dev.key,
            }
        }
    };
    let seconds = |s: f64, what: &str| -> Result<Duration> {
        Duration::try_from_secs_f64(s)
            .with_context(|| format!("{what}: {s} is not a duration in seconds"))
    };
    let opts = server::ServeOptions {
        source: Source::from_arg(args.config.as_deref()).map_err(anyhow::Error::msg)?,
        own_namespace: own_namespace(),
        listen: args.listen,
        metrics_listen: args.metrics_listen,
        certificates,
        client_ca_file: args.client_ca_file,
        drain_grace: seconds(args.drain_grace_seconds, "--drain-grace-seconds")?,
        drain_timeout: seconds(args.drain_timeout_seconds, "--drain-timeout-seconds")?,
        recycle: Recycle {
            max_requests: (args.max_connection_requests > 0)
                .then_some(args.max_connection_requests),
            max_age: Some(seconds(
                args.max_connection_age_seconds,
                "--max-connection-age-seconds",
            )?)
            .filter(|age| !age.is_zero()),
        },
        kubeconfig: args.kubeconfig,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting tokio")?;
    runtime.block_on(server::run(opts))?;
    Ok(ExitCode::SUCCESS)
}

fn run_preview(args: PreviewArgs) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting tokio")?;
    // With a cluster: the config it serves (unless --config), decided for its nodes.
    let client = match &args.kubeconfig {
        Some(kubeconfig) => Some(runtime.block_on(cluster::client(Some(kubeconfig)))?),
        None => None,
    };
    let chosen = runtime.block_on(context::choose(
        client.as_ref(),
        args.webhook_configuration.as_deref(),
        args.config.as_deref(),
        &own_namespace(),
    ))?;
    if client.is_some() {
        chosen.say();
    } else if let Some(why) = chosen.config.docker_socket.explain() {
        eprintln!("{why}");
    }
    let config = chosen.config;
    let inputs = input::expand(&args.files, args.recursive).map_err(anyhow::Error::msg)?;
    let map = |pairs: Vec<(String, String)>| {
        (!pairs.is_empty()).then(|| pairs.into_iter().collect::<BTreeMap<_, _>>())
    };
    let opts = preview::Options {
        namespace: args.namespace,
        namespace_labels: map(args.namespace_labels),
        namespace_annotations: map(args.namespace_annotations),
        ..Default::default()
    };
    let mut opts = opts;
    let mut documents = Vec::new();
    for input in &inputs {
        let text = input.read().map_err(anyhow::Error::msg)?;
        let docs = preview::read_documents(&text)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("reading {input}"))?;
        documents.extend(
            docs.into_iter()
                .enumerate()
                .map(|(i, (doc, raw))| (input, i, doc, raw)),
        );
    }
    if let Some(client) = &client {
        let mut names = std::collections::BTreeSet::new();
        for (_, _, doc, _) in &documents {
            preview::namespaces_of(doc, &opts, &mut names);
        }
        opts.cluster_namespaces = runtime.block_on(read_namespaces(client, names))?;
    }
    let mut previewed = Vec::new();
    let mut failed = false;
    for (input, i, doc, raw) in documents {
        let p = preview::document(doc, &opts, &config)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("{input}: document {}", i + 1))?;
        for f in &p.found {
            let d = &f.decision;
            let (outcome, reason) = (d.outcome().as_str(), d.reason.as_str());
            // `injected (injected)` says it twice: the reason only when it adds something.
            if reason == outcome {
                eprintln!("{}: {outcome}: {}", f.what, d.message);
            } else {
                eprintln!("{}: {outcome} ({reason}): {}", f.what, d.message);
            }
            for w in &d.warnings {
                eprintln!("{}: warning: {w}", f.what);
            }
            failed |= d.outcome() == Outcome::Failed;
        }
        previewed.push((p, raw));
    }
    let format = match args.output {
        OutputFormat::Yaml => preview::Format::Yaml,
        OutputFormat::Json => preview::Format::Json,
        OutputFormat::Patch => preview::Format::Patch,
        OutputFormat::Diff => preview::Format::Diff,
    };
    print!(
        "{}",
        preview::format(&previewed, format).map_err(anyhow::Error::msg)?
    );
    Ok(if failed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// Each namespace's labels and annotations, from the cluster; one that does not exist is said
/// on stderr and left out (its Pods are previewed without namespace context).
async fn read_namespaces(
    client: &kube::Client,
    names: std::collections::BTreeSet<String>,
) -> Result<BTreeMap<String, preview::KnownNamespace>> {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::{Api, PartialObjectMeta};
    let api: Api<PartialObjectMeta<Namespace>> = Api::all(client.clone());
    let mut out = BTreeMap::new();
    for name in names {
        match api
            .get_opt(&name)
            .await
            .with_context(|| format!("reading namespace {name:?}"))?
        {
            Some(ns) => {
                out.insert(
                    name,
                    preview::KnownNamespace {
                        labels: ns.metadata.labels.unwrap_or_default(),
                        annotations: ns.metadata.annotations.unwrap_or_default(),
                    },
                );
            }
            None => eprintln!("warning: namespace {name:?} does not exist in the cluster"),
        }
    }
    Ok(out)
}

fn run_check(args: CheckArgs) -> Result<ExitCode> {
    block_on(check::run(args, &own_namespace()))
}

fn run_doctor(args: DoctorArgs) -> Result<ExitCode> {
    block_on(doctor::run(args))
}

fn block_on(f: impl std::future::Future<Output = Result<ExitCode>>) -> Result<ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting tokio")?
        .block_on(f)
}

fn validate(config: Option<PathBuf>, kubeconfig: Option<PathBuf>) -> Result<ExitCode> {
    let stdin = config.as_deref() == Some(std::path::Path::new("-"));
    let source = Source::from_arg(config.as_deref()).map_err(anyhow::Error::msg)?;
    let (loaded, said) = match &source {
        _ if stdin => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .context("reading a ConfigMap manifest from standard input")?;
            let loaded = sidecar_injector::engine::config::parse_configmap(&text)
                .map_err(sidecar_injector::engine::config::ConfigError::one)
                .and_then(|raw| Config::from_raw(&raw, &own_namespace()));
            (loaded, "standard input".to_owned())
        }
        Source::ConfigMap { namespace, name } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting tokio")?;
            let cm = runtime.block_on(async {
                let client = cluster::client(kubeconfig.as_deref()).await?;
                kube::Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client, namespace)
                    .get_opt(name)
                    .await
                    .map_err(|e| {
                        cluster::api_error(e, &format!("reading ConfigMap {namespace}/{name}"))
                    })
            })?;
            let Some(cm) = cm else {
                bail!(
                    "--config {source}: ConfigMap {namespace}/{name} does not exist (kubectl get configmaps -n {namespace} lists them)"
                );
            };
            // As serve loads it: its own namespace is the ConfigMap's.
            (live_config::load(&cm, namespace), source.to_string())
        }
        _ => (
            config_files::load(&source, &own_namespace()),
            source.to_string(),
        ),
    };
    match loaded {
        Ok(c) => {
            for w in &c.warnings {
                eprintln!("warning: {w}");
            }
            println!("{said}: valid (template hash {})", c.template_hash);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            for p in &e.problems {
                eprintln!("{p}");
            }
            eprintln!("{said}: {} problem(s)", e.problems.len());
            Ok(ExitCode::FAILURE)
        }
    }
}

fn run_certs(
    service: &str,
    namespace: &str,
    out: &std::path::Path,
    sans: &[String],
) -> Result<ExitCode> {
    if service.is_empty() || namespace.is_empty() {
        bail!("--service and --namespace must not be empty");
    }
    if let Some(bad) = sans.iter().find(|s| s.trim().is_empty()) {
        bail!("--san {bad:?}: want a DNS name or an IP address");
    }
    let mut names = certs::service_names(service, namespace);
    names.extend(sans.iter().cloned());
    let written = certs::write(out, &names)?;
    eprintln!(
        "wrote {}, {} and {} for {service}.{namespace}.svc",
        written.ca.display(),
        written.cert.display(),
        written.key.display()
    );
    eprintln!("caBundle for the MutatingWebhookConfiguration:");
    println!("{}", certs::ca_bundle(&written.ca)?);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::log_filter;

    #[test]
    fn a_bare_level_is_this_programs_and_a_filter_is_taken_as_given() {
        let same = |level: Option<&str>, want: &str| {
            assert_eq!(
                log_filter(level).to_string(),
                tracing_subscriber::EnvFilter::new(want).to_string(),
                "{level:?}"
            );
        };
        same(Some("debug"), "warn,sidecar_injector=debug");
        same(None, "warn,sidecar_injector=info");
        same(Some("info,h2=trace"), "info,h2=trace");
        same(Some("not a level!"), "warn,sidecar_injector=info");
    }
}
