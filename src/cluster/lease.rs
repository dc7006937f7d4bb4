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
