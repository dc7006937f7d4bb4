//! Properties of [`rotation::plan`] over every state the certificate Secret can be found in
//! (issue 32): any CA age, any leaf age, any number of CAs, a leaf from any of them, a
//! caBundle published or stale, a validity changed either way since the set was made, and
//! holder gaps of up to 5 `L` (a new holder remembers nothing). A model of the Secret and
//! the webhook configuration does what the keeper does for each step; its certificates are
//! symbolic (the plan reads only their issuers, ends, serials and names), so thousands of
//! rotations run in a second.
//!
//! What must hold:
//! - **bounded writes**: from every state a `Wait` within 6 steps; once steady, at most 4
//!   Secret writes in any window of `L`; over the whole run, with its recoveries from the
//!   start and from gaps, at most 4 per `L` on average and 6 in any window of `L` (a
//!   recovery's writes can meet the next rollover's);
//! - **never untrusted**: a leaf is only ever signed by a CA the published caBundle has held
//!   for [`Timing::propagation`], and the Secret never holds a leaf whose CA that caBundle
//!   lacks;
//! - **replaced before the end**: once steady, with the holder there, the leaf served and its
//!   CA are valid at every look, across the 5 or so rollovers 8 `L` hold;
//! - **no CA leaves while a replica needs it** (issue 32, item 5): the replicas serve the
//!   Secret's leaf some time after it is written (at once, after half the grace, after twice
//!   the grace) or never follow at all. An older CA is dropped with no replica named only
//!   when every replica serves a leaf of the newest CA; replicas that follow are never left
//!   serving a leaf the published caBundle does not trust; one that never follows is named,
//!   and the rotation goes on without it.

use super::rotation::{Cert, ReplicaView, Seen, Step, Stored, Timing, plan};
use proptest::prelude::*;
use std::time::Duration;

fn ca(id: u64, not_after: i64) -> Cert {
    Cert {
        pem: format!("CA {id}\n"),
        subject: format!("ca-{id}").into_bytes(),
        issuer: format!("ca-{id}").into_bytes(),
        not_after,
        serial: format!("ca-{id}"),
        names: vec![],
        public_key: vec![],
    }
}

fn leaf(id: u64, signer: &Cert, not_after: i64, names: &[String]) -> Cert {
    Cert {
        pem: format!("LEAF {id}\n"),
        subject: format!("leaf-{id}").into_bytes(),
        issuer: signer.subject.clone(),
        not_after,
        serial: format!("leaf-{id}"),
        names: names.to_vec(),
        public_key: vec![],
    }
}

fn stored(cas: Vec<Cert>, leaf: Cert) -> Stored {
    Stored {
        cas,
        ca_key_pem: String::new(),
        leaf,
        leaf_key_pem: String::new(),
    }
}

/// The Secret, the webhook configuration and the holder's memory, as the keeper keeps them.
struct World {
    /// Always `Ok`: kept as the plan takes it, so a look clones nothing.
    held: Result<Stored, String>,
    published: Option<String>,
    /// When `published` last changed.
    published_at: i64,
    seen: Seen,
    now: i64,
    ids: u64,
    timing: Timing,
    names: Vec<String>,
    /// Times of the Secret writes.
    writes: Vec<i64>,
    /// Each serving certificate the Secret held, from when.
    leaves: Vec<(i64, Cert)>,
    /// How long the replicas take to serve a new leaf; `None`: never (one replica stuck on
    /// the first).
    lag: Option<i64>,
}

impl World {
    fn secret(&self) -> &Stored {
        self.held.as_ref().expect("the model holds a set")
    }

    fn secret_mut(&mut self) -> &mut Stored {
        self.held.as_mut().expect("the model holds a set")
    }

    fn id(&mut self) -> u64 {
        self.ids += 1;
        self.ids
    }

    fn secs(d: Duration) -> i64 {
        d.as_secs() as i64
    }

    /// The leaf the replicas serve now.
    fn served(&self) -> &Cert {
        let first = &self.leaves[0].1;
        match self.lag {
            None => first,
            Some(lag) => self
                .leaves
                .iter()
                .rev()
                .find(|(t, _)| *t <= self.now - lag)
                .map_or(first, |(_, c)| c),
        }
    }

    fn set_leaf(&mut self, leaf: Cert) {
        self.leaves.push((self.now, leaf.clone()));
        self.secret_mut().leaf = leaf;
    }

    fn plan(&self) -> Step {
        plan(
            Some(&self.held),
            self.published.as_deref(),
            &self.names,
            &self.seen,
            self.now,
            self.timing,
        )
    }

    /// One look of the holder: the step the plan gives, done as the keeper does it (a look
    /// at the replicas is part of the same look: the keeper plans again with it).
    fn look(&mut self) -> Step {
        self.seen
            .observe(self.published.as_deref(), self.held.as_ref().ok(), self.now);
        let mut step = self.plan();
        if step == Step::LookAtReplicas {
            let newest = self.secret().cas.last().expect("a CA").subject.clone();
            let lagging = if self.served().issuer == newest {
                vec![]
            } else {
                vec!["replica-b".to_owned()]
            };
            self.seen.replicas = Some(ReplicaView {
                leaf: self.secret().leaf.serial.clone(),
                at: self.now,
                lagging,
            });
            step = self.plan();
            assert_ne!(step, Step::LookAtReplicas, "a look at the replicas is used");
        }
        let l = Self::secs(self.timing.serving);
        match &step {
            Step::Wait(d) => self.now += Self::secs(*d).max(1),
            Step::Create(_) => {
                let id = self.id();
                let c = ca(id, self.now + 4 * l);
                let id = self.id();
                let lf = leaf(id, &c, self.now + l, &self.names);
                self.held = Ok(stored(vec![c], lf.clone()));
                self.leaves.push((self.now, lf));
                self.writes.push(self.now);
            }
            Step::Publish => {
                self.published = Some(self.secret().bundle());
                self.published_at = self.now;
            }
            Step::Issue(_) => {
                let newest = self.secret().cas.last().cloned().expect("a CA");
                // Never signed by a CA the apiserver may not have yet.
                assert!(
                    self.published
                        .as_deref()
                        .is_some_and(|b| b.contains(&newest.pem)),
                    "a leaf signed by {} while the caBundle lacks it",
                    newest.serial
                );
                if self.secret().leaf.issuer != newest.subject {
                    assert!(
                        self.now - self.published_at >= Self::secs(self.timing.propagation()),
                        "signed by the new CA {} s after its caBundle was published",
                        self.now - self.published_at
                    );
                }
                let end = (self.now + l).min(newest.not_after);
                let id = self.id();
                let names = self.names.clone();
                self.set_leaf(leaf(id, &newest, end, &names));
                self.writes.push(self.now);
            }
            Step::AddCa => {
                let id = self.id();
                let now = self.now;
                self.secret_mut().cas.push(ca(id, now + 4 * l));
                self.writes.push(self.now);
            }
            Step::LookAtReplicas => unreachable!("planned again above"),
            Step::DropOld(lagging) => {
                let newest = &self.secret().cas.last().expect("a CA").subject;
                if lagging.is_empty() {
                    assert_eq!(
                        &self.served().issuer,
                        newest,
                        "an older CA dropped while a replica serves its leaf"
                    );
                } else {
                    assert!(
                        self.lag.is_none(),
                        "replicas that follow named as lagging: {lagging:?}"
                    );
                }
                let cas = &mut self.secret_mut().cas;
                let newest = cas.pop().expect("a CA");
                *cas = vec![newest];
                self.writes.push(self.now);
            }
        }
        // The Secret never holds a leaf whose CA the published caBundle lacks, but while a
        // new set waits for its first publish.
        if !matches!(step, Step::Create(_)) && self.published.is_some() {
            let secret = self.secret();
            let signer = secret.cas.iter().find(|c| c.subject == secret.leaf.issuer);
            if let (Some(signer), Some(bundle)) = (signer, &self.published)
                && secret.bundle() == *bundle
            {
                assert!(bundle.contains(&signer.pem));
            }
        }
        step
    }

    /// The holder goes away for `gap` s; the next one remembers nothing.
    fn gap(&mut self, gap: i64) {
        self.now += gap;
        self.seen = Seen::default();
    }

    /// Whether `leaf` and its CA are valid now, and the published caBundle has that CA.
    fn trusted(&self, leaf: &Cert) -> bool {
        let signer = self.secret().cas.iter().find(|c| c.subject == leaf.issuer);
        signer.is_some_and(|c| {
            c.not_after > self.now
                && leaf.not_after > self.now
                && self
                    .published
                    .as_deref()
                    .is_some_and(|b| b.contains(&c.pem))
        })
    }

    /// Served and trusted now: the Secret's leaf is [`World::trusted`].
    fn healthy(&self) -> bool {
        self.trusted(&self.secret().leaf)
    }

    /// Replicas that follow the Secret serve a leaf whose CA the published caBundle has,
    /// once they serve a leaf the holder wrote (the first may be anything: the starting
    /// state is arbitrary). Its validity is the lag's business, not the plan's: a replica
    /// that follows late serves a leaf past its end after a holder gap whatever is planned.
    fn replicas_trusted(&self) -> bool {
        let served = self.served();
        // The symbolic CA `ca-N` has the PEM text `CA N`.
        let ca_pem = String::from_utf8_lossy(&served.issuer).replacen("ca-", "CA ", 1) + "\n";
        self.lag.is_none()
            || served.serial == self.leaves[0].1.serial
            || self
                .published
                .as_deref()
                .is_some_and(|b| b.contains(&ca_pem))
    }

    /// Healthy with nothing due: one CA (no rollover under way), the leaf has more than its
    /// renewal margin left and the CA more than its rollover margin.
    fn settled(&self) -> bool {
        let secret = self.secret();
        let newest = secret.cas.last().map_or(0, |c| c.not_after);
        secret.cas.len() == 1
            && self.healthy()
            && secret.leaf.not_after - self.now >= Self::secs(self.timing.renew_before())
            && newest - self.now >= Self::secs(self.timing.rollover_before())
    }

    /// The most Secret writes in any window of `window` s, of those at `from` or later.
    fn most_writes_within(&self, window: i64, from: i64) -> usize {
        let writes: Vec<i64> = self.writes.iter().copied().filter(|t| *t >= from).collect();
        writes
            .iter()
            .map(|t| {
                writes
                    .iter()
                    .filter(|u| **u >= *t && **u < t + window)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }
}

/// A state the Secret can be found in: made with validity `made` (not `timing`'s), with
/// `cas` CAs of the given remaining lives (fractions of their 4 `made`), a leaf from one of
/// them with the given remaining life (a fraction of `made`, capped at its CA's end), the
/// names right or not, and the caBundle published, stale or absent.
#[derive(Debug, Clone)]
struct Start {
    made: u64,
    timing: u64,
    cas: Vec<f64>,
    signer: usize,
    leaf_left: f64,
    names_right: bool,
    published: u8,
    gaps: Vec<(u16, f64)>,
    /// The replicas serve a new leaf at once (0), after half the grace (1), after twice the
    /// grace (at most `L/6`) (2), or never (3).
    lag: u8,
}

fn start() -> impl Strategy<Value = Start> {
    // From the shortest validity to a day: past a day the timings' clamps are all reached
    // (tick 30 s, propagation 60 s, grace 600 s), and longer ones would only cost looks.
    let validity = prop_oneof![Just(30u64), Just(300), Just(3_600), Just(86_400)];
    (
        validity.clone(),
        validity,
        prop::collection::vec(-0.3f64..1.0, 1..=3),
        any::<prop::sample::Index>(),
        -0.3f64..1.0,
        any::<bool>(),
        0u8..3,
        prop::collection::vec((0u16..400, 0.0f64..5.0), 0..3),
        0u8..4,
    )
        .prop_map(
            |(made, timing, cas, signer, leaf_left, names_right, published, gaps, lag)| Start {
                lag,
                signer: signer.index(cas.len()),
                made,
                timing,
                cas,
                leaf_left,
                names_right,
                published,
                gaps,
            },
        )
}

fn world(s: &Start) -> World {
    const NOW: i64 = 2_000_000_000;
    let made = s.made as i64;
    let names = vec!["sidecar-injector.sidecar-injector.svc".to_owned()];
    let cas: Vec<Cert> = s
        .cas
        .iter()
        .enumerate()
        .map(|(i, left)| ca(i as u64 + 1, NOW + (left * 4.0 * made as f64) as i64))
        .collect();
    let signer = &cas[s.signer];
    let leaf_end = (NOW + (s.leaf_left * made as f64) as i64).min(signer.not_after);
    let held = if s.names_right {
        names.clone()
    } else {
        vec!["old.example".to_owned()]
    };
    let first = leaf(100, signer, leaf_end, &held);
    let secret = stored(cas.clone(), first.clone());
    let timing = Timing {
        serving: Duration::from_secs(s.timing),
    };
    let grace = timing.grace().as_secs() as i64;
    let published = match s.published {
        0 => None,
        1 => Some(super::rotation::bundle(&cas[..1])),
        _ => Some(secret.bundle()),
    };
    World {
        held: Ok(secret),
        published,
        published_at: NOW - made,
        seen: Seen::default(),
        now: NOW,
        ids: 1000,
        timing,
        names,
        writes: Vec::new(),
        leaves: vec![(i64::MIN / 2, first)],
        lag: match s.lag {
            0 => Some(0),
            1 => Some(grace / 2),
            // Past a third of `L` a lagging replica serves an expired leaf whatever the plan
            // does: the longest lag modelled stays within the renewal margin.
            2 => Some((2 * grace).min(s.timing as i64 / 6)),
            _ => None,
        },
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn from_every_state_the_holder_settles_within_bounded_writes_and_never_serves_untrusted(s in start()) {
        let mut w = world(&s);
        let l = World::secs(w.timing.serving);
        let horizon = w.now + 8 * l;
        let (mut steps_since_wait, mut looks) = (0, 0u16);
        let mut steady = false;
        let mut steady_from: Option<i64> = None;
        while w.now < horizon {
            if let Some((_, g)) = s.gaps.iter().find(|(at, _)| *at == looks) {
                w.gap((g * l as f64) as i64);
                steady = false;
                steady_from = None;
            }
            looks = looks.saturating_add(1);
            let step = w.look();
            if matches!(step, Step::Wait(_)) {
                steps_since_wait = 0;
                if w.settled() && !steady {
                    steady = true;
                    // Writes counted from the first steady point after the last gap.
                    steady_from = Some(w.now);
                }
            } else {
                steps_since_wait += 1;
                prop_assert!(steps_since_wait <= 6, "{steps_since_wait} steps without a Wait, at {step:?}: {s:?}");
            }
            if steady {
                prop_assert!(w.healthy(), "expired or untrusted while steady at {} ({step:?}): {s:?}", w.now);
                prop_assert!(w.replicas_trusted(), "a replica serves an untrusted leaf at {} ({step:?}): {s:?}", w.now);
            }
        }
        let most = w.most_writes_within(l, i64::MIN);
        prop_assert!(most <= 6, "{most} Secret writes within one L: {:?} {s:?}", w.writes);
        prop_assert!(w.writes.len() <= 4 * 8, "{} Secret writes in 8 L: {s:?}", w.writes.len());
        if let Some(from) = steady_from {
            let most = w.most_writes_within(l, from);
            prop_assert!(most <= 4, "{most} Secret writes within one L once steady (from {from}): {:?} {s:?}", w.writes);
        }
        prop_assert!(steady || !s.gaps.is_empty(), "never steady: {s:?}");
    }
}
