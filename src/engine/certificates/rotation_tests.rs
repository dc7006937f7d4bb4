//! The steps of [`super::plan`] on real certificates, one state at a time.

use super::*;
use crate::engine::certificates::authority;
use time::OffsetDateTime;

const T: Timing = Timing {
    serving: Duration::from_secs(300),
};

fn at(unix: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix).unwrap()
}

fn names() -> Vec<String> {
    authority::service_names("sidecar-injector", "sidecar-injector")
}

fn set(cas: &[&Issued], signer: &Issued, now: i64, valid: i64) -> Stored {
    set_named(cas, signer, now, valid, &names())
}

/// [`set`] with a serving certificate for `names`.
fn set_named(cas: &[&Issued], signer: &Issued, now: i64, valid: i64, names: &[String]) -> Stored {
    let leaf = authority::issue(signer, names, at(now), at(now + valid)).unwrap();
    let data = [
        (
            CA_CERT,
            cas.iter().map(|c| c.cert_pem.clone()).collect::<String>(),
        ),
        (CA_KEY, cas.last().unwrap().key_pem.clone()),
        (TLS_CERT, leaf.cert_pem),
        (TLS_KEY, leaf.key_pem),
    ];
    Stored::parse(|k| {
        data.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.as_bytes().to_vec())
    })
    .unwrap()
}

fn ca(now: i64) -> Issued {
    authority::new_ca(at(now), T.ca_validity()).unwrap()
}

#[test]
fn names_are_compared_as_names_not_text() {
    let a = ca(1_000);
    let held = [
        "Sidecar-Injector.sidecar-injector.svc",
        "2001:db8:0::1",
        "10.0.0.1",
    ]
    .map(String::from)
    .to_vec();
    let s = set_named(&[&a], &a, 1_000, 300, &held);
    let seen = Seen {
        bundle: Some((s.bundle(), 1_000)),
        leaf: Some((s.leaf.serial.clone(), 1_000)),
        ..Seen::default()
    };
    let step = |asked: &[&str]| {
        let asked: Vec<String> = asked.iter().map(|n| n.to_string()).collect();
        plan(
            Some(&Ok(s.clone())),
            Some(&s.bundle()),
            &asked,
            &seen,
            1_010,
            T,
        )
    };
    // The same names, written otherwise: an upper-case IPv6 address, a URL host in
    // brackets, a DNS name in another case with a final dot.
    let same = step(&[
        "sidecar-injector.SIDECAR-INJECTOR.svc.",
        "[2001:DB8::1]",
        "10.0.0.1",
    ]);
    assert!(matches!(same, Step::Wait(_)), "{same:?}");
    // A name that is really another is still a change.
    let other = step(&[
        "sidecar-injector.sidecar-injector.svc",
        "2001:db8::2",
        "10.0.0.1",
    ]);
    assert!(
        matches!(other, Step::Issue(ref why) if why.contains("names changed")),
        "{other:?}"
    );
}

/// Issue 32, item 1: a lone CA with less than a serving certificate's renewal margin left
/// (a holder gap, a raised validity) is rolled over first; a leaf from it would be due at
/// birth (it is capped at the CA's end), and renewed as fast as the API answers.
#[test]
fn a_nearly_expired_ca_is_rolled_over_before_any_leaf_is_issued() {
    let a = ca(1_000);
    let ca_end = 1_000 + T.ca_validity().as_secs() as i64;
    // The leaf runs to the CA's end; now is 50 s before it (renew_before is 100 s).
    let now = ca_end - 50;
    let s = set(&[&a], &a, now - 250, 300);
    let seen = Seen {
        bundle: Some((s.bundle(), now - 1_000)),
        leaf: Some((s.leaf.serial.clone(), now - 250)),
        ..Seen::default()
    };
    let step = plan(
        Some(&Ok(s.clone())),
        Some(&s.bundle()),
        &names(),
        &seen,
        now,
        T,
    );
    assert_eq!(step, Step::AddCa);
}

/// The same after a holder gap in the middle of a rollover: two CAs, the newest near its
/// end too. Renewing from it gives a leaf due at birth, and each renewal restarts the
/// grace the older CA waits on, so nothing else would ever happen: a new CA joins at
/// once (the older ones stay trusted while the leaf still needs them), and nothing is
/// signed by the CA near its end, not even for new names.
#[test]
fn two_nearly_expired_cas_are_not_renewed_from_in_a_loop() {
    let (a, b) = (ca(900), ca(1_000));
    let b_end = 1_000 + T.ca_validity().as_secs() as i64;
    let now = b_end - 50;
    // A new holder: it has just seen this leaf.
    let seen_now = |s: &Stored| Seen {
        bundle: Some((s.bundle(), now - 1_000)),
        leaf: Some((s.leaf.serial.clone(), now)),
        ..Seen::default()
    };
    for (signer, wanted) in [
        (&b, names()),
        (&a, names()),
        (&b, vec!["new.example".to_owned()]),
    ] {
        let s = set(&[&a, &b], signer, now - 250, 300);
        let step = plan(
            Some(&Ok(s.clone())),
            Some(&s.bundle()),
            &wanted,
            &seen_now(&s),
            now,
            T,
        );
        assert_eq!(
            step,
            Step::AddCa,
            "leaf of {:?}, names {wanted:?}",
            signer.cert_pem.len()
        );
    }
}

/// Issue 32, item 3: a bundle without a CA the webhook trusts now needs a fresh read of
/// the Secret; adding one (a rollover's first publish) or the same CAs does not.
#[test]
fn only_a_bundle_that_drops_a_trusted_ca_needs_a_fresh_read() {
    let (a, b) = (ca(0), ca(10));
    let (a_pem, b_pem) = (
        bundle(&parse_certs(&a.cert_pem).unwrap()),
        bundle(&parse_certs(&b.cert_pem).unwrap()),
    );
    let both = format!("{a_pem}{b_pem}");
    assert!(!drops_a_ca(&[Some(a_pem.clone())], &both), "adds B");
    assert!(!drops_a_ca(&[None, Some(both.clone())], &both), "the same");
    assert!(!drops_a_ca(&[None], &a_pem), "nothing held");
    assert!(drops_a_ca(&[Some(both.clone())], &b_pem), "drops A");
    assert!(drops_a_ca(&[Some(a_pem.clone())], &b_pem), "replaces A");
    assert!(drops_a_ca(&[Some(a_pem)], "not PEM"));
}

#[test]
fn debug_output_holds_no_private_key() {
    let a = ca(1_000);
    let s = set(&[&a], &a, 1_000, 300);
    let shown = format!("{s:?}");
    assert!(!shown.contains("PRIVATE KEY"), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
    assert!(shown.contains(&s.leaf.serial), "the rest is shown: {shown}");
}

#[test]
fn no_secret_or_a_broken_one_makes_a_new_set() {
    assert!(matches!(
        plan(None, None, &names(), &Seen::default(), 0, T),
        Step::Create(_)
    ));
    let broken = Err("no ca.key".to_owned());
    assert!(matches!(
        plan(Some(&broken), None, &names(), &Seen::default(), 0, T),
        Step::Create(why) if why.contains("no ca.key")
    ));
}

#[test]
fn a_parse_refuses_a_key_of_another_ca_and_a_leaf_of_a_stranger() {
    let (a, b) = (ca(1_000), ca(1_001));
    let leaf = authority::issue(&b, &names(), at(1_000), at(1_300)).unwrap();
    let get = |ca_key: String| {
        let data = [
            (CA_CERT, a.cert_pem.clone()),
            (CA_KEY, ca_key),
            (TLS_CERT, leaf.cert_pem.clone()),
            (TLS_KEY, leaf.key_pem.clone()),
        ];
        Stored::parse(move |k| {
            data.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.as_bytes().to_vec())
        })
    };
    assert!(
        get(b.key_pem.clone())
            .unwrap_err()
            .contains("not the key of the last CA")
    );
    assert!(
        get(a.key_pem.clone())
            .unwrap_err()
            .contains("signed by no CA")
    );
}

#[test]
fn the_bundle_is_published_before_anything_else() {
    let a = ca(1_000);
    let s = set(&[&a], &a, 1_000, 300);
    let ok = Ok(s.clone());
    assert_eq!(
        plan(Some(&ok), None, &names(), &Seen::default(), 1_000, T),
        Step::Publish
    );
    assert_eq!(
        plan(
            Some(&ok),
            Some("stale"),
            &names(),
            &Seen::default(),
            1_000,
            T
        ),
        Step::Publish
    );
    let mut seen = Seen::default();
    seen.observe(Some(&s.bundle()), Some(&s), 1_000);
    assert!(matches!(
        plan(Some(&ok), Some(&s.bundle()), &names(), &seen, 1_000, T),
        Step::Wait(_)
    ));
}

#[test]
fn the_serving_certificate_is_renewed_with_a_third_left_and_when_names_change() {
    let a = ca(1_000);
    let s = set(&[&a], &a, 1_000, 300);
    let ok = Ok(s.clone());
    let mut seen = Seen::default();
    seen.observe(Some(&s.bundle()), Some(&s), 1_000);
    let b = s.bundle();
    assert!(matches!(
        plan(Some(&ok), Some(&b), &names(), &seen, 1_199, T),
        Step::Wait(_)
    ));
    assert!(matches!(
        plan(Some(&ok), Some(&b), &names(), &seen, 1_201, T),
        Step::Issue(why) if why.contains("expires")
    ));
    let mut more = names();
    more.push("10.0.0.1".to_owned());
    assert!(matches!(
        plan(Some(&ok), Some(&b), &more, &seen, 1_000, T),
        Step::Issue(why) if why.contains("names changed")
    ));
}

/// A whole CA rollover: at no step is a serving certificate in the Secret whose CA the
/// published bundle lacks, and the old CA leaves only after the grace.
#[test]
fn a_ca_rollover_never_serves_an_untrusted_certificate() {
    let a = ca(0);
    // Half the CA's life is gone: the newest CA has less than 2L left.
    let now = T.ca_validity().as_secs() as i64 - T.rollover_before().as_secs() as i64 + 1;
    let s = set(&[&a], &a, now, 300);
    let mut seen = Seen::default();
    seen.observe(Some(&s.bundle()), Some(&s), now - 100);
    assert_eq!(
        plan(
            Some(&Ok(s.clone())),
            Some(&s.bundle()),
            &names(),
            &seen,
            now,
            T
        ),
        Step::AddCa
    );
    // The holder adds B: the Secret has A+B and B's key; the leaf is still A's.
    let b = ca(now);
    let s2 = Stored::parse(|k| match k {
        CA_CERT => Some(format!("{}{}", a.cert_pem, b.cert_pem).into_bytes()),
        CA_KEY => Some(b.key_pem.clone().into_bytes()),
        TLS_CERT => Some(s.leaf.pem.clone().into_bytes()),
        TLS_KEY => Some(s.leaf_key_pem.clone().into_bytes()),
        _ => None,
    })
    .unwrap();
    let ok2 = Ok(s2.clone());
    // Until the webhook has A+B, publish; nothing is signed by B.
    assert_eq!(
        plan(Some(&ok2), Some(&s.bundle()), &names(), &seen, now, T),
        Step::Publish
    );
    seen.observe(Some(&s2.bundle()), Some(&s2), now + 1);
    // Published, but not for long enough: wait.
    assert!(matches!(
        plan(Some(&ok2), Some(&s2.bundle()), &names(), &seen, now + 2, T),
        Step::Wait(_)
    ));
    let p = T.propagation().as_secs() as i64;
    assert!(matches!(
        plan(
            Some(&ok2),
            Some(&s2.bundle()),
            &names(),
            &seen,
            now + 1 + p,
            T
        ),
        Step::Issue(_)
    ));
    // B signs the leaf; A stays for the grace, then goes.
    let s3 = set(&[&a, &b], &b, now + 1 + p, 300);
    let ok3 = Ok(s3.clone());
    seen.observe(Some(&s3.bundle()), Some(&s3), now + 1 + p);
    let g = T.grace().as_secs() as i64;
    assert!(matches!(
        plan(
            Some(&ok3),
            Some(&s3.bundle()),
            &names(),
            &seen,
            now + p + g,
            T
        ),
        Step::Wait(_)
    ));
    // The grace is over: the plan asks what the replicas serve before A may go.
    let at_grace = now + 1 + p + g;
    let step = |seen: &Seen, t: i64| plan(Some(&ok3), Some(&s3.bundle()), &names(), seen, t, T);
    assert_eq!(step(&seen, at_grace), Step::LookAtReplicas);
    let looked = |lagging: &[&str], at: i64| Seen {
        replicas: Some(ReplicaView {
            leaf: s3.leaf.serial.clone(),
            at,
            lagging: lagging.iter().map(|l| l.to_string()).collect(),
        }),
        ..seen.clone()
    };
    // Every replica serves B's leaf: A goes.
    assert_eq!(
        step(&looked(&[], at_grace), at_grace),
        Step::DropOld(vec![])
    );
    // One still serves A's: A stays, and the view is looked at again after a tick.
    let lagging = looked(&["10.0.0.7:8443"], at_grace);
    assert!(matches!(step(&lagging, at_grace), Step::Wait(_)));
    let tick = T.tick().as_secs() as i64;
    assert_eq!(step(&lagging, at_grace + tick), Step::LookAtReplicas);
    // A view of another leaf is no view of this one.
    let other = Seen {
        replicas: Some(ReplicaView {
            leaf: "other".into(),
            at: at_grace,
            lagging: vec![],
        }),
        ..seen.clone()
    };
    assert_eq!(step(&other, at_grace), Step::LookAtReplicas);
    // Patience has an end: the lagging replica is named and A goes anyway.
    let end = at_grace + T.patience().as_secs() as i64;
    assert!(matches!(
        step(&looked(&["10.0.0.7:8443"], end - 1), end - 1),
        Step::Wait(_)
    ));
    assert_eq!(
        step(&looked(&["10.0.0.7:8443"], end), end),
        Step::DropOld(vec!["10.0.0.7:8443".into()])
    );
}

#[test]
fn a_new_holder_waits_the_full_propagation_again() {
    let a = ca(0);
    let b = ca(400);
    let s = set(&[&a, &b], &a, 10, 300);
    let ok = Ok(s.clone());
    let mut seen = Seen::default();
    // This holder first sees the bundle at 500, though it was published long before.
    seen.observe(Some(&s.bundle()), Some(&s), 500);
    assert!(matches!(
        plan(Some(&ok), Some(&s.bundle()), &names(), &seen, 501, T),
        Step::Wait(_)
    ));
}

#[test]
fn timings_scale_with_the_validity_within_bounds() {
    let day = Timing {
        serving: Duration::from_secs(90 * 86_400),
    };
    assert_eq!(day.propagation(), Duration::from_secs(60));
    assert_eq!(day.grace(), Duration::from_secs(600));
    assert_eq!(day.tick(), Duration::from_secs(30));
    let short = Timing {
        serving: Timing::MIN_SERVING,
    };
    assert_eq!(short.propagation(), Duration::from_secs(2));
    assert_eq!(short.grace(), Duration::from_secs(5));
    assert_eq!(short.tick(), Duration::from_secs(1));
}
