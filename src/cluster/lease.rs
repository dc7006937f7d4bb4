//! Leader election with a `coordination.k8s.io/v1` Lease, so only one replica of `serve`
//! repairs: the holder renews it; another replica takes it over only once it has expired.
//! Every write carries the Lease's resourceVersion, so two replicas racing for it cannot both
//! win.

use anyhow::{Context, Result};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};

/// The Lease the repairing replica of `serve` holds, in the injector's namespace.
pub const REPAIR_LEASE: &str = "sidecar-injector-repair";

/// One replica's claim on a Lease.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration_s: i32,
}

impl Elector {
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration_s: i32,
    ) -> Elector {
        Elector {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration_s,
        }
    }

    /// Takes or renews the Lease; true when this replica holds it afterwards.
    pub async fn hold(&self) -> Result<bool> {
        let now = Timestamp::now();
        let current = self
            .api
            .get_opt(&self.name)
            .await
            .with_context(|| format!("reading Lease {}", self.name))?;
        let Some(mut lease) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec(now, now, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e).context("creating the Lease"),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let mine = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let expired = match (spec.renew_time.as_ref(), spec.lease_duration_seconds) {
            (Some(MicroTime(renewed)), Some(d)) => {
                now > renewed
                    .saturating_add(SignedDuration::from_secs(d.into()))
                    .unwrap_or(now)
            }
            _ => true,
        };
        if !mine && !expired {
            return Ok(false);
        }
        let acquired = if mine {
            spec.acquire_time.map(|t| t.0).unwrap_or(now)
        } else {
            now
        };
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!mine);
        lease.spec = Some(self.spec(acquired, now, transitions));
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e).context("renewing the Lease"),
        }
    }

    fn spec(&self, acquired: Timestamp, renewed: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration_s),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(renewed)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }
}

/// How long this replica may act as the holder, on its own clock (issue 32, item 4: one
/// writer at a time). The renewal it sends is stamped `renewTime` before the call, and
/// another replica may take the Lease once `renewTime` + the duration has passed; so a
/// successful renewal sent at `sent` gives a tenure until `sent` + duration − [`MARGIN`],
/// and nothing else extends it. A renewal that hangs (kube's client has no read timeout) or
/// fails leaves the tenure to run out: the replica steps down then, without the API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tenure {
    until: Option<std::time::Instant>,
}

/// Taken off the Lease's duration: the other replicas' clocks and the time a write takes.
pub const MARGIN: std::time::Duration = std::time::Duration::from_secs(2);

impl Tenure {
    /// A renewal sent at `sent` succeeded, for `duration`.
    pub fn renewed(&mut self, sent: std::time::Instant, duration: std::time::Duration) {
        self.until = Some(sent + duration.saturating_sub(MARGIN));
    }

    /// Another replica holds the Lease.
    pub fn lost(&mut self) {
        self.until = None;
    }

    pub fn holds(&self, now: std::time::Instant) -> bool {
        self.left(now).is_some()
    }

    /// How long a renewal may take before the tenure runs out; `None` when nothing is held
    /// (never held, lost, or run out), so a renewal then has no tenure to outlive.
    pub fn left(&self, now: std::time::Instant) -> Option<std::time::Duration> {
        self.until
            .filter(|until| now < *until)
            .map(|until| until - now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    const LEASE: Duration = Duration::from_secs(15);

    /// Whatever the renewals do (succeed, fail, hang, lose), the replica never holds past
    /// its last successful renewal's send time + the duration − the margin, and holds until
    /// then unless it lost the Lease.
    #[test]
    fn a_tenure_never_outlives_its_last_renewal() {
        let t0 = Instant::now();
        let mut tenure = Tenure::default();
        let mut last_sent: Option<Instant> = None;
        // Each event: (seconds from t0, what the renewal sent then came back with).
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for i in 0..2_000u64 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let sent = t0 + Duration::from_millis(i * 1_700);
            match state % 4 {
                0 | 1 => {
                    tenure.renewed(sent, LEASE);
                    last_sent = Some(sent);
                }
                2 => {} // failed or hung: nothing changes
                _ => {
                    tenure.lost();
                    last_sent = None;
                }
            }
            for later in [0u64, 5, 12, 13, 14, 20] {
                let now = sent + Duration::from_secs(later);
                let bound = last_sent.map(|s| s + LEASE - MARGIN);
                assert_eq!(
                    tenure.holds(now),
                    bound.is_some_and(|b| now < b),
                    "event {i}, {later} s later"
                );
            }
        }
    }

    #[test]
    fn a_renewal_may_wait_only_what_is_left_of_the_tenure() {
        let t0 = Instant::now();
        let mut tenure = Tenure::default();
        assert_eq!(tenure.left(t0), None);
        tenure.renewed(t0, LEASE);
        assert_eq!(
            tenure.left(t0 + Duration::from_secs(3)),
            Some(Duration::from_secs(10))
        );
        // Run out: nothing is held, so the next renewal may take its full time. (A tenure
        // that ran out once left no time for any renewal, and the replica never held the
        // Lease again: the e2e test apiserver_restart_recovers caught it.)
        assert_eq!(tenure.left(t0 + Duration::from_secs(13)), None);
        assert_eq!(tenure.left(t0 + Duration::from_secs(30)), None);
    }
}
