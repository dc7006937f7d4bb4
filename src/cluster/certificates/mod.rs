//! Certificates for the webhook port.

pub mod authority;
pub mod keeper;
pub mod rotation;
