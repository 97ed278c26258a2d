//! Passive health (outlier ejection): a backend that fails `consecutive_failures` requests in a
//! row (connect failures, resets, timeouts, 5xx) leaves rotation for a back-off that doubles
//! with each ejection up to `max_ejection`, independently of the active health check. Selection
//! ignores ejections when they would leave nothing to pick (Envoy's panic threshold): a pool is
//! never emptied by passive health alone.

use crate::config::PassiveHealthConfig;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Default)]
struct BackendState {
    consecutive: AtomicU32,
    ejections: AtomicU32,
    /// Milliseconds since `start` until which the backend is out of rotation.
    ejected_until: AtomicU64,
}

pub struct Outlier {
    consecutive_failures: u32,
    base: Duration,
    max: Duration,
    start: Instant,
    /// Swapped when DNS changes the pool's addresses ([`Outlier::track`]).
    backends: ArcSwap<HashMap<SocketAddr, Arc<BackendState>>>,
}

impl Outlier {
    pub fn new(cfg: &PassiveHealthConfig, backends: &[SocketAddr]) -> Outlier {
        Outlier {
            consecutive_failures: cfg.consecutive_failures.max(1),
            base: cfg.base_ejection.0,
            max: cfg.max_ejection.0.max(cfg.base_ejection.0),
            start: Instant::now(),
            backends: ArcSwap::from_pointee(
                backends
                    .iter()
                    .map(|a| (*a, Arc::new(BackendState::default())))
                    .collect(),
            ),
        }
    }

    /// Follow the pool's current addresses: known ones keep their state (an ejection survives
    /// a DNS refresh that still lists the address), new ones start clean.
    pub fn track(&self, addrs: impl Iterator<Item = SocketAddr>) {
        let old = self.backends.load();
        let next = addrs
            .map(|a| (a, old.get(&a).cloned().unwrap_or_default()))
            .collect();
        self.backends.store(Arc::new(next));
    }

    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// How much longer `addr` stays out of rotation, if it is ejected (admin `/upstreams`).
    pub fn ejected_for(&self, addr: &SocketAddr) -> Option<Duration> {
        let now = self.now_ms();
        let until = self
            .backends
            .load()
            .get(addr)?
            .ejected_until
            .load(Ordering::Relaxed);
        (now < until).then(|| Duration::from_millis(until - now))
    }

    pub fn is_ejected(&self, addr: &SocketAddr, now_ms: u64) -> bool {
        self.backends
            .load()
            .get(addr)
            .is_some_and(|b| now_ms < b.ejected_until.load(Ordering::Relaxed))
    }

    pub fn record_success(&self, addr: &SocketAddr) {
        if let Some(b) = self.backends.load().get(addr) {
            b.consecutive.store(0, Ordering::Relaxed);
        }
    }

    /// Count a failure; returns the ejection time when this failure ejects the backend.
    pub fn record_failure(&self, addr: &SocketAddr, now_ms: u64) -> Option<Duration> {
        let backends = self.backends.load();
        let b = backends.get(addr)?;
        let n = b.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        if n < self.consecutive_failures || now_ms < b.ejected_until.load(Ordering::Relaxed) {
            return None;
        }
        b.consecutive.store(0, Ordering::Relaxed);
        let k = b.ejections.fetch_add(1, Ordering::Relaxed).min(16);
        let duration = self.base.saturating_mul(1u32 << k).min(self.max);
        b.ejected_until
            .store(now_ms + duration.as_millis() as u64, Ordering::Relaxed);
        Some(duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outlier() -> (Outlier, SocketAddr) {
        let cfg: PassiveHealthConfig = serde_yaml::from_str(
            "{consecutive_failures: 3, base_ejection: 10s, max_ejection: 30s}",
        )
        .unwrap();
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        (Outlier::new(&cfg, &[a]), a)
    }

    #[test]
    fn consecutive_failures_eject_with_exponential_capped_backoff() {
        let (o, a) = outlier();
        assert_eq!(o.record_failure(&a, 0), None);
        o.record_success(&a);
        assert_eq!(o.record_failure(&a, 0), None);
        assert_eq!(o.record_failure(&a, 0), None);
        assert_eq!(o.record_failure(&a, 0), Some(Duration::from_secs(10)));
        assert!(o.is_ejected(&a, 9_999));
        assert!(!o.is_ejected(&a, 10_000));
        for _ in 0..2 {
            o.record_failure(&a, 10_000);
        }
        assert_eq!(o.record_failure(&a, 10_000), Some(Duration::from_secs(20)));
        for _ in 0..2 {
            o.record_failure(&a, 40_000);
        }
        assert_eq!(
            o.record_failure(&a, 40_000),
            Some(Duration::from_secs(30)),
            "capped"
        );
    }

    #[test]
    fn tracking_new_addresses_keeps_the_state_of_known_ones() {
        let (o, a) = outlier();
        for _ in 0..3 {
            o.record_failure(&a, 0);
        }
        assert!(o.is_ejected(&a, 1));
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        o.track([a, b].into_iter());
        assert!(o.is_ejected(&a, 1), "still listed: still ejected");
        assert_eq!(o.record_failure(&b, 0), None, "new addresses are counted");
        o.track([b].into_iter());
        assert!(!o.is_ejected(&a, 1), "gone addresses are forgotten");
    }

    #[test]
    fn unknown_backends_are_ignored() {
        let (o, _) = outlier();
        let other: SocketAddr = "127.0.0.1:2".parse().unwrap();
        assert_eq!(o.record_failure(&other, 0), None);
        assert!(!o.is_ejected(&other, 0));
    }
}
