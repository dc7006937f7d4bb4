//! `doctor`'s certificate expiry check. It follows the certificate's own validity, not a
//! fixed number of days: a certificate is due for renewal two thirds into its validity (the
//! point the injector's keeper renews at, `Validity::renew_before`; cert-manager's default
//! too), so it fails only when one is past that point (with a few ticks of slack) and has not
//! been renewed, or has expired. A healthy install with `--cert-validity 7d` passes all week.

use super::{Finding, KeptCertificates, tls};

const CHECK: &str = "certificate expiry";

pub fn check(served: Option<&tls::Served>, kept: Option<&KeptCertificates>, now: i64) -> Finding {
    let Some(served) = served else {
        return Finding::skip(CHECK, "the serving certificate was not found".into());
    };
    match tls::validity(served) {
        Some((not_before, not_after)) => judge(&served.from, not_before, not_after, now, kept),
        None => Finding::skip(
            CHECK,
            format!("{}: the certificate does not parse", served.from),
        ),
    }
}

use crate::engine::certificates::rfc3339;

/// How long, as people say it.
fn span(seconds: i64) -> String {
    match seconds.abs() {
        s if s >= 2 * 86_400 => format!("{} days", s / 86_400),
        s if s >= 2 * 3_600 => format!("{} hours", s / 3_600),
        s if s >= 120 => format!("{} minutes", s / 60),
        s => format!("{s} seconds"),
    }
}

/// The finding for a leaf valid from `not_before` to `not_after`, at `now`. Pure.
pub fn judge(
    from: &str,
    not_before: i64,
    not_after: i64,
    now: i64,
    kept: Option<&KeptCertificates>,
) -> Finding {
    let lifetime = (not_after - not_before).max(1);
    let renew_at = not_after - lifetime / 3;
    // The keeper looks every validity/30 (1 s to 30 s); give it a few looks and the write.
    let slack = (lifetime / 30).clamp(1, 30) * 4 + 60;
    let fix = match kept {
        Some(k) => format!(
            "the injector renews it itself (--cert-secret {}/{}): its log says why it has not (kubectl -n {} logs deploy/sidecar-injector | grep -i certificate); see this doctor's permissions and secret policy lines",
            k.namespace, k.secret, k.namespace
        ),
        None => "renew it: with cert-manager, kubectl describe certificate says why it has not; with files, sidecar-injector certs writes new ones; serve picks up new files without a restart".to_owned(),
    };
    if now >= not_after {
        return Finding::fail(
            CHECK,
            format!(
                "the serving certificate ({from}) expired at {}, {} ago: the apiserver refuses it",
                rfc3339(not_after),
                span(now - not_after)
            ),
            &fix,
        );
    }
    if now > renew_at + slack {
        return Finding::fail(
            CHECK,
            format!(
                "the serving certificate ({from}) was due for renewal at {} (two thirds into its validity) and was not renewed; it expires at {}, in {}",
                rfc3339(renew_at),
                rfc3339(not_after),
                span(not_after - now)
            ),
            &fix,
        );
    }
    Finding::pass(
        CHECK,
        format!(
            "the serving certificate ({from}) is good until {}, {}; renewal is due at {}",
            rfc3339(not_after),
            span(not_after - now),
            rfc3339(renew_at)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::doctor::Outcome;

    const DAY: i64 = 86_400;
    const T0: i64 = 1_800_000_000;

    fn kept() -> KeptCertificates {
        KeptCertificates {
            namespace: "sidecar-injector".into(),
            secret: "sidecar-injector-tls".into(),
            webhook_configuration: "sidecar-injector".into(),
        }
    }

    /// A healthy 7-day certificate passes every hour of its life until its renewal point
    /// (the fixed 14 days it was judged by before failed it from its first second).
    #[test]
    fn a_short_validity_passes_until_its_renewal_point() {
        let (nb, na) = (T0, T0 + 7 * DAY);
        for hour in 0..(7 * 24 * 2 / 3) {
            let f = judge("Secret", nb, na, nb + hour * 3_600, Some(&kept()));
            assert_eq!(f.outcome, Outcome::Pass, "hour {hour}: {f:?}");
        }
        let late = judge("Secret", nb, na, na - 2 * DAY, Some(&kept()));
        assert_eq!(late.outcome, Outcome::Fail, "{late:?}");
        assert!(
            late.message.contains("was due for renewal"),
            "{}",
            late.message
        );
        assert!(
            late.fix
                .unwrap()
                .contains("--cert-secret sidecar-injector/sidecar-injector-tls"),
            "the self-managed path is named"
        );
    }

    #[test]
    fn a_year_long_certificate_passes_for_months_and_an_expired_one_fails() {
        let (nb, na) = (T0, T0 + 365 * DAY);
        assert_eq!(
            judge("f", nb, na, nb + 200 * DAY, None).outcome,
            Outcome::Pass
        );
        let due = judge("f", nb, na, na - 30 * DAY, None);
        assert_eq!(due.outcome, Outcome::Fail);
        assert!(due.fix.unwrap().contains("cert-manager"));
        let gone = judge("f", nb, na, na + 3_600, None);
        assert!(gone.message.contains("expired at"), "{}", gone.message);
        assert!(gone.message.contains("60 minutes ago"), "{}", gone.message);
    }

    #[test]
    fn dates_are_rfc3339() {
        let f = judge("f", T0, T0 + 7 * DAY, T0, None);
        assert!(f.message.contains("2027-01-22T"), "{}", f.message);
    }
}
