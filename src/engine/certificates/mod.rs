//! The webhook's certificates as pure computation: issuing a CA and a serving certificate
//! ([`authority`]), and the plan of what the keeper writes next from what the Secret holds
//! and the clock says ([`rotation`]). No I/O: `cluster::certificates::keeper` reads and
//! writes the Secret and the caBundle, and does what [`rotation::plan`] says.

pub mod authority;
pub mod rotation;
#[cfg(test)]
mod rotation_props;
