//! sidecar-injector: a Kubernetes mutating admission webhook that injects sidecars, init
//! containers, volumes and pull secrets from one `mutate.yaml` template.
//!
//! The crate is in layers, and imports only go down:
//!
//! | folder | what lives there | may import |
//! |---|---|---|
//! | [`engine`] | the pure injection engine: [`engine::decide`], the config and its checks, templates, overrides, the Pod view, patches, preview rendering; and the other pure plans: the Secret copies ([`engine::secret_copies`]), the certificates and their rotation ([`engine::certificates`]) | nothing of this crate outside `engine`; no tokio, axum, hyper, kube client, file or network I/O |
//! | [`cluster`] | the optional API context: the client, namespaces, Events, the Lease, the live ConfigMap, the Pod survey, `check` and repair, the Secret copies' sync, the certificate keeper, `doctor`; each does what a plan of `engine` says | `engine` |
//! | [`serve`] | the webhook process: router and handlers, admission decoding, TLS, connections, file watches, metrics, the survey loop | `engine`, `cluster` |
//! | [`cli`] | what only the command line needs: reading manifests for `preview`, writing certificates | `engine`, `cluster`, `serve` |
//!
//! `src/main.rs` is the command line itself (clap), on top of all four. One engine, several
//! doors: `/mutate` ([`serve::admission`]), `/preview` and the `preview` command
//! ([`engine::preview`]), and `check` ([`cluster::check`]) only translate in and out of
//! [`engine::decide`].

pub mod cli;
pub mod cluster;
pub mod engine;
pub mod serve;
