//! Connection slots: how many connections the webhook holds at once, and which one it lets go
//! when it is full, so an idle client can never lock out the apiserver.
//!
//! Memory stays bounded by two caps, and neither turns idle connections into a denial of
//! service (the way nginx reuses idle keep-alive connections and Envoy's overload manager
//! sheds them):
//! - every connection is accepted; at the connection cap the longest-idle connection (no
//!   request in flight) of the peer address holding the most connections is closed for it,
//!   so one client cannot push out the apiserver's few connections. Only when every
//!   connection has a request in flight is the new one refused;
//! - connections still in their TLS handshake have a cap of their own: past it, the oldest
//!   handshake of the peer holding the most connections is dropped;
//! - at either cap, a new connection from a peer that already holds more than a quarter of
//!   it is closed at once instead, before any TLS work: a flooding client then costs an
//!   accept and a close per attempt, not a handshake, and cannot turn the eviction above
//!   into a CPU-bound handshake storm;
//! - the connection task closes a connection that sends no request soon after its
//!   handshake (see `server.rs`).
//!
//! What was shed is reported as a [`Shed`] reason, exported as
//! `sidecar_injector_connections_shed_total{reason}`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use tokio::sync::{Notify, watch};

/// The caps.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections held at once, handshakes included.
    pub max_connections: usize,
    /// Connections in their TLS handshake at once.
    pub max_handshakes: usize,
}

/// Why a connection was closed by this server rather than by its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shed {
    /// At the connection cap: an idle keep-alive connection was closed for a new one.
    IdleAtCapacity,
    /// At the handshake cap: the oldest handshake was dropped for a new connection.
    HandshakeAtCapacity,
    /// The TLS handshake did not finish in time.
    HandshakeTimeout,
    /// The handshake finished but no request came in time.
    NoFirstRequest,
    /// At the connection cap with a request in flight on every connection: the new
    /// connection was refused.
    AllBusy,
    /// At a cap, from a peer already holding more than a quarter of it: the new connection
    /// was refused.
    PeerOverShare,
}

impl Shed {
    pub const ALL: [Shed; 6] = [
        Shed::IdleAtCapacity,
        Shed::HandshakeAtCapacity,
        Shed::HandshakeTimeout,
        Shed::NoFirstRequest,
        Shed::AllBusy,
        Shed::PeerOverShare,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Shed::IdleAtCapacity => "idle_at_capacity",
            Shed::HandshakeAtCapacity => "handshake_at_capacity",
            Shed::HandshakeTimeout => "handshake_timeout",
            Shed::NoFirstRequest => "no_first_request",
            Shed::AllBusy => "all_busy",
            Shed::PeerOverShare => "peer_over_share",
        }
    }
}

/// What a connection's requests report; the registry reads it to find idle connections.
#[derive(Debug)]
pub struct Activity {
    epoch: Instant,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    /// Milliseconds after `epoch` when the connection last became idle.
    idle_since_ms: AtomicU64,
}

impl Activity {
    fn new(epoch: Instant) -> Activity {
        let a = Activity {
            epoch,
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(0),
        };
        a.touch();
        a
    }

    fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.idle_since_ms.store(ms, Ordering::Relaxed);
    }

    /// A request has started; it is in flight until the guard is dropped.
    pub fn start(self: &Arc<Self>) -> RequestGuard {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        RequestGuard(self.clone())
    }

    /// Requests started on this connection so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn idle(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
    }
}

/// Marks a request in flight for as long as it lives.
pub struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Entry {
    peer: IpAddr,
    accepted: Instant,
    handshaking: bool,
    /// Told to close; no longer counted against the caps.
    closing: bool,
    activity: Arc<Activity>,
    close: Arc<Notify>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    conns: HashMap<u64, Entry>,
    /// Connections per peer address, closing ones included.
    per_peer: HashMap<IpAddr, usize>,
    /// Live (not closing) connections, and those of them still handshaking.
    live: usize,
    handshaking: usize,
}

impl Inner {
    /// Tells the chosen connection to close and stops counting it.
    fn close(&mut self, id: u64) {
        if let Some(e) = self.conns.get_mut(&id)
            && !e.closing
        {
            e.closing = true;
            self.live -= 1;
            if e.handshaking {
                self.handshaking -= 1;
            }
            e.close.notify_one();
        }
    }

    /// Among the live connections `eligible` accepts, the one to let go: from the peer
    /// holding the most connections, the one that ranks first by `order` (smallest key).
    fn victim(
        &self,
        eligible: impl Fn(&Entry) -> bool,
        order: impl Fn(&Entry) -> u64,
    ) -> Option<u64> {
        self.conns
            .iter()
            .filter(|(_, e)| !e.closing && eligible(e))
            .max_by_key(|(_, e)| {
                let held = self.per_peer.get(&e.peer).copied().unwrap_or(0);
                (held, std::cmp::Reverse(order(e)))
            })
            .map(|(id, _)| *id)
    }
}

/// Every connection the server holds.
pub struct Registry {
    limits: Limits,
    epoch: Instant,
    inner: Mutex<Inner>,
    emptied: Notify,
    drain: watch::Sender<bool>,
}

/// A connection's place in the registry; dropping it frees the place.
pub struct Slot {
    id: u64,
    registry: Arc<Registry>,
    pub activity: Arc<Activity>,
    /// Notified when the registry wants this connection closed (gracefully).
    pub close: Arc<Notify>,
    /// Becomes true when the server drains: close gracefully.
    pub drain: watch::Receiver<bool>,
}

impl Slot {
    /// The TLS handshake is done: the connection now counts as open (and idle).
    pub fn handshake_done(&self) {
        let mut inner = self.registry.lock();
        if let Some(e) = inner.conns.get_mut(&self.id)
            && e.handshaking
        {
            e.handshaking = false;
            if !e.closing {
                inner.handshaking -= 1;
            }
        }
        self.activity.touch();
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut inner = self.registry.lock();
        if let Some(e) = inner.conns.remove(&self.id) {
            if !e.closing {
                inner.live -= 1;
                if e.handshaking {
                    inner.handshaking -= 1;
                }
            }
            if let Some(n) = inner.per_peer.get_mut(&e.peer) {
                *n -= 1;
                if *n == 0 {
                    inner.per_peer.remove(&e.peer);
                }
            }
        }
        if inner.conns.is_empty() {
            self.registry.emptied.notify_waiters();
        }
    }
}

impl Registry {
    pub fn new(limits: Limits) -> Arc<Registry> {
        let (drain, _) = watch::channel(false);
        Arc::new(Registry {
            limits,
            epoch: Instant::now(),
            inner: Mutex::new(Inner::default()),
            emptied: Notify::new(),
            drain,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The lock guards plain counters; a panic elsewhere cannot leave them half-written.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes room for a new connection from `peer`, closing others per the policy above.
    /// Returns its slot (none when every connection is busy) and what was shed for it.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> (Option<Slot>, Vec<Shed>) {
        let mut shed = Vec::new();
        let mut inner = self.lock();
        let over_share = |held: usize, cap: usize| held > cap / 4;
        if inner.handshaking >= self.limits.max_handshakes {
            let handshakes = inner
                .conns
                .values()
                .filter(|e| e.peer == peer && e.handshaking && !e.closing)
                .count();
            if over_share(handshakes, self.limits.max_handshakes) {
                return (None, vec![Shed::PeerOverShare]);
            }
            if let Some(id) = inner.victim(|e| e.handshaking, |e| self.age_key(e)) {
                inner.close(id);
                shed.push(Shed::HandshakeAtCapacity);
            }
        }
        if inner.live >= self.limits.max_connections {
            let held = inner.per_peer.get(&peer).copied().unwrap_or(0);
            if over_share(held, self.limits.max_connections) {
                return (None, vec![Shed::PeerOverShare]);
            }
            let idle = inner.victim(
                |e| !e.handshaking && e.activity.idle(),
                |e| e.activity.idle_since_ms.load(Ordering::Relaxed),
            );
            let handshake = || inner.victim(|e| e.handshaking, |e| self.age_key(e));
            match idle
                .map(|id| (id, Shed::IdleAtCapacity))
                .or_else(|| handshake().map(|id| (id, Shed::HandshakeAtCapacity)))
            {
                Some((id, why)) => {
                    inner.close(id);
                    shed.push(why);
                }
                None => {
                    shed.push(Shed::AllBusy);
                    return (None, shed);
                }
            }
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let activity = Arc::new(Activity::new(self.epoch));
        let close = Arc::new(Notify::new());
        inner.conns.insert(
            id,
            Entry {
                peer,
                accepted: Instant::now(),
                handshaking: true,
                closing: false,
                activity: activity.clone(),
                close: close.clone(),
            },
        );
        *inner.per_peer.entry(peer).or_insert(0) += 1;
        inner.live += 1;
        inner.handshaking += 1;
        drop(inner);
        let slot = Slot {
            id,
            registry: self.clone(),
            activity,
            close,
            drain: self.drain.subscribe(),
        };
        (Some(slot), shed)
    }

    fn age_key(&self, e: &Entry) -> u64 {
        e.accepted.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// Connections held now (closing ones included).
    pub fn len(&self) -> usize {
        self.lock().conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Asks every connection to close gracefully (requests in flight are answered).
    pub fn drain(&self) {
        self.drain.send_replace(true);
    }

    /// Resolves once no connection is left.
    pub async fn wait_empty(&self) {
        loop {
            let emptied = self.emptied.notified();
            if self.is_empty() {
                return;
            }
            emptied.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn open(r: &Arc<Registry>, peer: &str) -> Slot {
        let (slot, shed) = r.admit(ip(peer));
        assert!(shed.is_empty(), "{shed:?}");
        let slot = slot.unwrap();
        slot.handshake_done();
        slot
    }

    #[test]
    fn at_the_cap_the_longest_idle_of_the_heaviest_peer_goes_and_busy_ones_stay() {
        let r = Registry::new(Limits {
            max_connections: 4,
            max_handshakes: 4,
        });
        let apiserver = open(&r, "10.0.0.1");
        std::thread::sleep(std::time::Duration::from_millis(5));
        let a1 = open(&r, "10.0.0.9");
        std::thread::sleep(std::time::Duration::from_millis(5));
        let a2 = open(&r, "10.0.0.9");
        std::thread::sleep(std::time::Duration::from_millis(5));
        let a3 = open(&r, "10.0.0.9");
        let _busy = a1.activity.start();
        // The apiserver's connection is the longest idle, but its peer holds one connection:
        // the attacker's longest idle (a2; a1 is busy) goes.
        let (new, shed) = r.admit(ip("10.0.0.1"));
        assert!(new.is_some());
        assert_eq!(shed, [Shed::IdleAtCapacity]);
        let notified = |s: &Slot| {
            let n = s.close.notified();
            futures_poll(n)
        };
        assert!(notified(&a2), "a2 is told to close");
        assert!(!notified(&a1) && !notified(&a3) && !notified(&apiserver));
        drop((a2, new));
        assert_eq!(r.len(), 3);
    }

    #[test]
    fn when_every_connection_is_busy_the_new_one_is_refused() {
        let r = Registry::new(Limits {
            max_connections: 2,
            max_handshakes: 2,
        });
        let (a, b) = (open(&r, "10.0.0.1"), open(&r, "10.0.0.2"));
        let _g = (a.activity.start(), b.activity.start());
        let (slot, shed) = r.admit(ip("10.0.0.3"));
        assert!(slot.is_none());
        assert_eq!(shed, [Shed::AllBusy]);
    }

    #[test]
    fn handshakes_have_their_own_cap_and_the_heaviest_peer_loses_its_oldest() {
        let r = Registry::new(Limits {
            max_connections: 100,
            max_handshakes: 8,
        });
        let (h1, _) = r.admit(ip("10.0.0.9"));
        std::thread::sleep(std::time::Duration::from_millis(5));
        let (good, _) = r.admit(ip("10.0.0.1"));
        let rest: Vec<_> = (0..6).map(|_| r.admit(ip("10.0.0.9")).0).collect();
        let (new, shed) = r.admit(ip("10.0.0.1"));
        assert!(new.is_some());
        assert_eq!(shed, [Shed::HandshakeAtCapacity]);
        assert!(
            futures_poll(h1.unwrap().close.notified()),
            "the oldest of the heaviest"
        );
        assert!(!futures_poll(good.unwrap().close.notified()));
        assert!(
            rest.into_iter()
                .all(|s| !futures_poll(s.unwrap().close.notified()))
        );
    }

    #[test]
    fn at_the_cap_a_peer_holding_more_than_a_quarter_is_refused_before_any_tls() {
        let r = Registry::new(Limits {
            max_connections: 8,
            max_handshakes: 8,
        });
        let flood: Vec<Slot> = (0..7).map(|_| open(&r, "10.0.0.9")).collect();
        let apiserver = open(&r, "10.0.0.1");
        let (slot, shed) = r.admit(ip("10.0.0.9"));
        assert!(
            slot.is_none(),
            "the flooding peer's new connection is refused"
        );
        assert_eq!(shed, [Shed::PeerOverShare]);
        assert!(flood.iter().all(|s| !futures_poll(s.close.notified())));
        let (slot, shed) = r.admit(ip("10.0.0.1"));
        assert!(slot.is_some(), "another peer still gets in");
        assert_eq!(shed, [Shed::IdleAtCapacity]);
        assert!(!futures_poll(apiserver.close.notified()));
    }

    /// Whether a `Notified` is ready at once (a permit was stored by `notify_one`).
    fn futures_poll(n: tokio::sync::futures::Notified<'_>) -> bool {
        let mut n = std::pin::pin!(n);
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        n.as_mut().poll(&mut cx).is_ready()
    }
}
