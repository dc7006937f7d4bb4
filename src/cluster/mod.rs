//! The optional API context. Everything here talks to the Kubernetes API and hands the engine
//! data; none of it decides what to inject. Used by `serve` and the command line; it imports
//! only [`crate::engine`].

pub mod absent_secrets;
pub mod certificates;
pub mod check;
mod client;
pub mod doctor;
pub mod events;
pub mod installed;
pub mod lease;
pub mod live_config;
pub mod namespaces;
pub mod nodes;
pub mod probe;
pub mod registry;
pub mod repair;
pub mod secret_sync;
pub mod served;

pub use client::{api_error, client, watch_backoff};
