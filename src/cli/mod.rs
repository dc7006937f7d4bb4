//! What only the command line needs, beside `src/main.rs`: reading manifests for `preview`,
//! writing a CA and serving certificate for `certs`, `check`, `doctor`, and the Helm hooks'
//! `probe` and `unregister`.

pub mod certs;
pub mod check;
pub mod context;
pub mod doctor;
pub mod hooks;
pub mod images;
pub mod input;
pub mod uninstall;
