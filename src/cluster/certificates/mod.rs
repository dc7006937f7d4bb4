//! Certificates for the webhook port: the keeper, which reads and writes the Secret and the
//! webhook's caBundle. What to write is pure and lives in [`crate::engine::certificates`].

pub mod keeper;
