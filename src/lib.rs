//! sidecar-injector: a Kubernetes mutating admission webhook that injects sidecars, init
//! containers, volumes and pull secrets from one `mutate.yaml` template.
//!
//! One pure engine ([`engine::decide`]) behind three doors: `/mutate` ([`admission`]),
//! `/preview` and the `preview` command ([`preview`]).

pub mod admission;
pub mod certs;
pub mod check;
pub mod cluster;
pub mod config;
pub mod connections;
pub mod drift;
pub mod engine;
pub mod events;
pub mod image;
pub mod input;
pub mod lease;
pub mod live_config;
pub mod metrics;
pub mod namespaces;
pub mod overrides;
pub mod patch;
pub mod pod;
pub mod preview;
pub mod server;
pub mod template;
pub mod tls;
pub mod watch;
pub mod yaml;
