//! The webhook's certificates as pure computation: issuing a CA and a serving certificate
//! ([`authority`]), and the plan of what the keeper writes next from what the Secret holds
//! and the clock says ([`rotation`]). No I/O: `cluster::certificates::keeper` reads and
//! writes the Secret and the caBundle, and does what [`rotation::plan`] says.

pub mod authority;
pub mod rotation;
#[cfg(test)]
mod rotation_props;

/// A Unix time as RFC 3339 (`2026-12-03T21:04:05Z`), as logs and `doctor` say times; the
/// seconds themselves when out of range.
pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{unix} (Unix seconds)"))
}

#[cfg(test)]
mod time_tests {
    #[test]
    fn times_are_said_in_rfc3339() {
        assert_eq!(super::rfc3339(1_796_331_845), "2026-12-03T21:04:05Z");
        assert_eq!(
            super::rfc3339(i64::MAX),
            format!("{} (Unix seconds)", i64::MAX)
        );
    }
}
