//! What only the command line needs, beside `src/main.rs`: reading manifests for `preview`,
//! and writing a CA and serving certificate for `certs`.

pub mod certs;
pub mod check;
pub mod context;
pub mod doctor;
pub mod input;
