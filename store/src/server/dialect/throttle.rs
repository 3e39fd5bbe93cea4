//! Failed password attempts cost time: a connection is closed after
//! [`MAX_FAILURES_PER_CONN`] wrong passwords, and every address that sent a
//! wrong one has its later attempts spaced out, doubling per failure, so
//! guessing in parallel over many connections is as slow as in series.
//!
//! Waiting happens on the attempting connection's own task (a timer, never
//! a blocked thread): other clients are not slowed down.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// Wrong passwords (AUTH or SELECT) after which a connection is closed.
pub const MAX_FAILURES_PER_CONN: u32 = 3;
/// Spacing after the first failure of an address; doubles per failure.
const BASE_DELAY: Duration = Duration::from_millis(250);
const MAX_DELAY: Duration = Duration::from_secs(16);
/// An address without failures for this long starts afresh.
const FORGET_AFTER: Duration = Duration::from_secs(600);
/// Addresses remembered at most (memory bound); when full, forgotten ones
/// are dropped first, then all.
const MAX_PEERS: usize = 4096;

#[derive(Debug)]
struct Peer {
    failures: u32,
    /// No attempt from this address is checked before this instant.
    next: Instant,
    last_failure: Instant,
}

/// Per-address record of failed password attempts.
#[derive(Debug, Default)]
pub struct AuthThrottle {
    peers: Mutex<HashMap<IpAddr, Peer>>,
}

/// Spacing between attempts after `failures` failures.
fn delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    (BASE_DELAY * 2u32.pow(doublings)).min(MAX_DELAY)
}

impl AuthThrottle {
    /// Wait until a password attempt from `peer` may be checked.
    pub async fn admit(&self, peer: Option<IpAddr>) {
        if let Some(slot) = peer.and_then(|ip| self.reserve(ip, Instant::now())) {
            tokio::time::sleep_until(slot).await;
        }
    }

    /// The instant an attempt from `ip` made at `now` may be checked, if
    /// it has to wait at all. Each attempt takes the next free slot, so
    /// concurrent attempts from one address are spaced out too.
    fn reserve(&self, ip: IpAddr, now: Instant) -> Option<Instant> {
        let mut peers = self.peers.lock();
        let p = peers.get_mut(&ip)?;
        if now.duration_since(p.last_failure) > FORGET_AFTER {
            peers.remove(&ip);
            return None;
        }
        let slot = p.next.max(now);
        p.next = slot + delay(p.failures);
        Some(slot)
    }

    /// Record a wrong password from `peer`.
    pub fn failed(&self, peer: Option<IpAddr>) {
        if let Some(ip) = peer {
            self.record_failure(ip, Instant::now());
        }
    }

    fn record_failure(&self, ip: IpAddr, now: Instant) {
        let mut peers = self.peers.lock();
        if peers.len() >= MAX_PEERS && !peers.contains_key(&ip) {
            peers.retain(|_, p| now.duration_since(p.last_failure) <= FORGET_AFTER);
            if peers.len() >= MAX_PEERS {
                tracing::warn!(
                    "AUTH throttle: {MAX_PEERS} addresses with failures; forgetting them"
                );
                peers.clear();
            }
        }
        let p = peers.entry(ip).or_insert(Peer { failures: 0, next: now, last_failure: now });
        p.failures = p.failures.saturating_add(1);
        p.last_failure = now;
        p.next = p.next.max(now + delay(p.failures));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_doubles_and_is_capped() {
        assert_eq!(delay(1), BASE_DELAY);
        assert_eq!(delay(2), BASE_DELAY * 2);
        assert_eq!(delay(3), BASE_DELAY * 4);
        assert_eq!(delay(100), MAX_DELAY);
    }

    #[test]
    fn attempts_after_failures_are_spaced_out() {
        let t = AuthThrottle::default();
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let now = Instant::now();
        assert_eq!(t.reserve(a, now), None, "no failure yet: no wait");
        t.record_failure(a, now);
        t.record_failure(a, now);
        // Two attempts at once: the second waits one more delay.
        let first = t.reserve(a, now).unwrap();
        assert_eq!(first, now + delay(2));
        assert_eq!(t.reserve(a, now).unwrap(), first + delay(2));
        assert_eq!(t.reserve(b, now), None, "another address is not affected");
        // Long after the last failure the address starts afresh.
        assert_eq!(t.reserve(a, now + FORGET_AFTER * 2), None);
        assert_eq!(t.reserve(a, now), None);
    }
}
