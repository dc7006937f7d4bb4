//! The webhook process: the router and its handlers, admission decoding, TLS, the accept
//! loop and each connection's task (recycling), closing a connection gently, connection slots, the serving certificate (files or the Secret), file watches, metrics, and the survey loop. It imports
//! [`crate::engine`] and [`crate::cluster`], never the command line.

pub mod accept;
pub mod admission;
pub mod config_files;
pub mod connections;
pub mod file_watch;
pub mod linger;
pub mod metrics;
pub mod server;
pub mod serving_cert;
pub mod serving_config;
pub mod survey;
pub mod tls;
