//! Issue "weak tests": the repair Lease on the real apiserver. A Lease whose holder stops
//! renewing is taken over once it expires (and the old holder then knows it lost it); and
//! repair, between two workloads, stops once its replica has lost the Lease.

use super::*;
use sidecar_injector::cluster::lease::Elector;
use sidecar_injector::cluster::repair::{self, Limiter, Progress, RepairOptions};
use std::sync::atomic::AtomicBool;

#[tokio::test]
#[ignore = "needs a cluster: tests/e2e/run"]
async fn a_lease_is_taken_over_only_after_its_holder_stops_renewing() {
    let env = env();
    let c = client(&env).await;
    let ns = namespace(&c, "e2e-lease", json!({})).await;
    let a = Elector::new(c.clone(), &ns, "takeover", "replica-a", 4);
    let b = Elector::new(c.clone(), &ns, "takeover", "replica-b", 4);
    assert!(a.hold().await.unwrap(), "the first to ask holds it");
    assert!(!b.hold().await.unwrap(), "held and fresh: not taken");
    // A renews within the duration: B still cannot take it.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(a.hold().await.unwrap());
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(c.clone(), &ns);
    // The renewal as written (renewTime): what the takeover is judged from, not the moment
    // hold() returned, which a loaded machine delays.
    let renewed = leases
        .get("takeover")
        .await
        .unwrap()
        .spec
        .unwrap()
        .renew_time
        .unwrap()
        .0;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        !b.hold().await.unwrap(),
        "renewed about 1 s ago, for 4 s: not expired"
    );
    // A stops. Once 4 s have passed since its last renewal, B takes it over.
    eventually("replica-b to take the Lease over", 15, || async {
        b.hold().await.unwrap().then_some(())
    })
    .await;
    let spec = leases.get("takeover").await.unwrap().spec.unwrap();
    let taken = spec.acquire_time.clone().unwrap().0;
    // Both times come from this process's clock (both electors run here).
    let after_ms = taken.as_millisecond() - renewed.as_millisecond();
    assert!(
        after_ms >= 4_000,
        "taken {after_ms} ms after the last renewal (renewTime {renewed}, acquireTime {taken}): before it expired"
    );
    assert!(
        !a.hold().await.unwrap(),
        "the old holder learns it lost the Lease"
    );
    let spec = leases.get("takeover").await.unwrap().spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("replica-b"));
    assert_eq!(spec.lease_transitions, Some(1));
}

// Multi-threaded: `keep_going` below blocks its thread while the renewals run on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: tests/e2e/run"]
async fn repair_stops_between_workloads_once_the_lease_is_lost() {
    let env = env();
    let c = client(&env).await;
    let ns = namespace(&c, "e2e-lease-repair", json!({})).await;
    for name in ["first", "second"] {
        ok(&kubectl(
            &env,
            &[
                "create",
                "deployment",
                name,
                "--image=nginx:1.27",
                "-n",
                &ns,
            ],
            None,
        ));
        rolled_out(&env, &ns, &format!("deployment/{name}"));
    }
    let elector = Arc::new(Elector::new(c.clone(), &ns, "repair", "replica-a", 15));
    assert!(elector.hold().await.unwrap());
    // As serve's Lease loop does: the flag follows each renewal.
    let leader = Arc::new(AtomicBool::new(true));
    let renewing = {
        let (elector, leader) = (elector.clone(), leader.clone());
        tokio::spawn(async move {
            loop {
                let held = elector.hold().await.unwrap_or(false);
                leader.store(held, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let workloads = vec![
        (ns.clone(), "Deployment/first".to_owned()),
        (ns.clone(), "Deployment/second".to_owned()),
    ];
    let opts = RepairOptions {
        max_per_minute: 10,
        rollout_timeout: Duration::from_secs(90),
        reporter: kube::runtime::events::Reporter {
            controller: "e2e".into(),
            instance: None,
        },
        template_hash: "e2e".into(),
    };
    let steal = {
        let c = c.clone();
        let ns = ns.clone();
        move || {
            // Another replica takes the Lease (as after a partition): held by it, renewed now.
            let c = c.clone();
            let ns = ns.clone();
            tokio::spawn(async move {
                let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
                    Api::namespaced(c, &ns);
                let patch = json!({"spec": {"holderIdentity": "replica-b",
                    "renewTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                        k8s_openapi::jiff::Timestamp::now()),
                    "leaseDurationSeconds": 60}});
                leases
                    .patch(
                        "repair",
                        &kube::api::PatchParams::default(),
                        &kube::api::Patch::Merge(&patch),
                    )
                    .await
                    .unwrap();
            })
        }
    };
    let mut stolen = None;
    // Between workloads: once the Lease is being taken, the renewals (every 200 ms) must see
    // it before the next restart; give them up to 10 s on a busy machine rather than race them.
    let steal_started = AtomicBool::new(false);
    let keep_going = || {
        if steal_started.load(Ordering::Relaxed) {
            let deadline = Instant::now() + Duration::from_secs(10);
            while leader.load(Ordering::Relaxed) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        leader.load(Ordering::Relaxed)
    };
    let done = repair::repair(
        &c,
        &workloads,
        &Default::default(),
        &opts,
        &mut Limiter::default(),
        &keep_going,
        |p| {
            if let Progress::Restarted { .. } = p {
                stolen.get_or_insert_with(&steal);
                steal_started.store(true, Ordering::Relaxed);
            }
        },
    )
    .await
    .unwrap();
    stolen.unwrap().await.unwrap();
    renewing.abort();
    assert_eq!(
        done.rolled_out,
        [format!("{ns}/Deployment/first")],
        "the first restarted, then the Lease was lost: the second not"
    );
    assert!(!leader.load(Ordering::Relaxed));
    let rs: Api<k8s_openapi::api::apps::v1::ReplicaSet> = Api::namespaced(c.clone(), &ns);
    let second = rs
        .list(&ListParams::default().labels("app=second"))
        .await
        .unwrap();
    assert_eq!(
        second.items.len(),
        1,
        "the second Deployment was not restarted"
    );
}
