//! `sync: batched`: decisions against a local copy of the fleet-wide count, synced in the
//! background, so the request path never waits for Redis.
//!
//! Each active key keeps the global counts last read from Redis (`prev`, `curr`) plus the
//! requests this gateway admitted since (`pending`). Every `sync_interval` a background task
//! pushes `pending` with `INCRBY` and reads back the global counts in one pipeline. Between
//! syncs a gateway does not see the others' admissions, so a fleet of `N` gateways can admit up
//! to about `(N − 1) × rate × sync_interval` beyond the limit; `sync: atomic` is exact at the
//! price of one round trip per request.
//!
//! Memory is bounded: at most `max_keys` keys per limit are tracked (others are decided by the
//! local estimator alone), and keys idle for a whole interval are dropped at the next sync.

use super::redis_backend::{Clock, RedisShared};
use super::window::{decide, Decision, WindowState};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::Duration;

const SHARDS: usize = 16;

#[derive(Debug)]
struct Entry {
    /// The Redis key without its interval suffix.
    base: String,
    interval: u64,
    /// Global counts from the last sync (our own flushed admissions included).
    prev: u64,
    curr: u64,
    /// Admitted here since the last sync.
    pending: u64,
    /// Admissions of an interval that ended before they were flushed.
    spill: Option<(u64, u64)>,
    /// Last interval in which a request used this key.
    used: u64,
}

impl Entry {
    /// Move to `interval`: what was current becomes previous (our unflushed part included).
    fn roll(&mut self, interval: u64) {
        if interval <= self.interval {
            return;
        }
        if self.pending > 0 {
            self.spill = Some((self.interval, self.pending));
        }
        self.prev = if interval == self.interval + 1 {
            self.curr + self.pending
        } else {
            0
        };
        self.curr = 0;
        self.pending = 0;
        self.interval = interval;
    }
}

pub struct Batched {
    name: String,
    limit: u64,
    per: Duration,
    max_keys_per_shard: usize,
    shards: Vec<Mutex<HashMap<u64, Entry>>>,
}

/// One key's work in a sync round.
struct SyncItem {
    shard: usize,
    hash: u64,
    curr_key: String,
    prev_key: String,
    delta: u64,
    spill: Option<(String, u64)>,
}

fn hash_key(key: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

impl Batched {
    pub fn new(name: &str, limit: u64, per: Duration, max_keys: usize) -> Batched {
        Batched {
            name: name.to_string(),
            limit,
            per,
            max_keys_per_shard: (max_keys / SHARDS).max(16),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn shard(&self, hash: u64) -> usize {
        (hash % SHARDS as u64) as usize
    }

    /// Decide for `key` (its rendered text) without counting. `None` when the key is not
    /// tracked (table full): the caller uses the local estimator.
    pub fn peek(&self, shared: &RedisShared, key: &str, clock: Clock) -> Option<Decision> {
        let hash = hash_key(key);
        let shard = self.shard(hash);
        let mut map = self.shards[shard].lock().ok()?;
        if !map.contains_key(&hash) && map.len() >= self.max_keys_per_shard {
            return None;
        }
        let entry = map.entry(hash).or_insert_with(|| Entry {
            base: shared.base_key(&self.name, key),
            interval: clock.interval,
            prev: 0,
            curr: 0,
            pending: 0,
            spill: None,
            used: clock.interval,
        });
        entry.roll(clock.interval);
        entry.used = clock.interval;
        Some(decide(
            WindowState {
                prev: entry.prev as f64,
                curr: (entry.curr + entry.pending) as f64,
                fraction: clock.fraction,
            },
            self.limit,
            self.per,
        ))
    }

    /// Count one admitted request for `key`.
    pub fn record(&self, key: &str, clock: Clock) {
        let hash = hash_key(key);
        let shard = self.shard(hash);
        let Ok(mut map) = self.shards[shard].lock() else {
            return;
        };
        if let Some(entry) = map.get_mut(&hash) {
            entry.roll(clock.interval);
            entry.pending += 1;
        }
    }

    /// Keys currently tracked (for tests and bounds).
    pub fn tracked(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |m| m.len()))
            .sum()
    }

    /// Take this round's work: every tracked key's unflushed admissions, and drop keys idle
    /// for a whole interval.
    fn take_work(&self, interval: u64) -> Vec<SyncItem> {
        let mut work = Vec::new();
        for (shard, lock) in self.shards.iter().enumerate() {
            let Ok(mut map) = lock.lock() else {
                continue;
            };
            map.retain(|_, e| e.used + 1 >= interval || e.pending > 0 || e.spill.is_some());
            for (hash, e) in map.iter_mut() {
                e.roll(interval);
                work.push(SyncItem {
                    shard,
                    hash: *hash,
                    curr_key: format!("{}:{}", e.base, interval),
                    prev_key: format!("{}:{}", e.base, interval.saturating_sub(1)),
                    delta: std::mem::take(&mut e.pending),
                    spill: e.spill.take().map(|(i, n)| (format!("{}:{i}", e.base), n)),
                });
            }
        }
        work
    }

    /// One sync round: push admissions, pull global counts. On failure the unflushed counts
    /// are dropped (the fallback is local anyway) and the backend is marked down.
    pub async fn sync(&self, shared: &RedisShared, clock: Clock) {
        let work = self.take_work(clock.interval);
        if work.is_empty() {
            return;
        }
        let ttl_ms = (self.per.as_millis() as u64).saturating_mul(2).max(1);
        let mut pipe = redis::pipe();
        for item in &work {
            if let Some((key, n)) = &item.spill {
                pipe.cmd("INCRBY").arg(key).arg(*n).ignore();
                pipe.cmd("PEXPIRE").arg(key).arg(ttl_ms).ignore();
            }
            if item.delta > 0 {
                pipe.cmd("INCRBY").arg(&item.curr_key).arg(item.delta);
                pipe.cmd("PEXPIRE").arg(&item.curr_key).arg(ttl_ms).ignore();
            } else {
                pipe.cmd("GET").arg(&item.curr_key);
            }
            pipe.cmd("GET").arg(&item.prev_key);
        }
        let Some(values) = shared.pipeline(&pipe).await else {
            return;
        };
        if values.len() != work.len() * 2 {
            shared.failed("unexpected pipeline reply");
            return;
        }
        for (item, pair) in work.iter().zip(values.chunks(2)) {
            let Ok(mut map) = self.shards[item.shard].lock() else {
                continue;
            };
            if let Some(e) = map.get_mut(&item.hash) {
                if e.interval == clock.interval {
                    e.curr = pair[0].unwrap_or(0);
                    e.prev = pair[1].unwrap_or(0);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> RedisShared {
        super::super::redis_backend::unreachable()
    }

    fn at(interval: u64, fraction: f64) -> Clock {
        Clock { interval, fraction }
    }

    #[test]
    fn local_admissions_count_until_the_next_sync() {
        let s = shared();
        let b = Batched::new("l", 3, Duration::from_secs(60), 1000);
        for i in 0..3 {
            assert!(
                b.peek(&s, "k", at(10, 0.5)).expect("tracked").allowed,
                "{i}"
            );
            b.record("k", at(10, 0.5));
        }
        assert!(!b.peek(&s, "k", at(10, 0.5)).expect("tracked").allowed);
        assert!(b.peek(&s, "other", at(10, 0.5)).expect("tracked").allowed);
    }

    #[test]
    fn the_previous_interval_weighs_in_after_a_boundary() {
        let s = shared();
        let b = Batched::new("l", 4, Duration::from_secs(60), 1000);
        for _ in 0..4 {
            b.peek(&s, "k", at(10, 0.9));
            b.record("k", at(10, 0.9));
        }
        // Just after the boundary 3.96 of the 4 still count: one more fits, not two.
        assert!(b.peek(&s, "k", at(11, 0.01)).expect("tracked").allowed);
        b.record("k", at(11, 0.01));
        assert!(!b.peek(&s, "k", at(11, 0.01)).expect("tracked").allowed);
        // Two intervals later nothing does.
        assert!(b.peek(&s, "k", at(13, 0.0)).expect("tracked").allowed);
    }

    #[test]
    fn sync_work_carries_deltas_and_spills_and_drops_idle_keys() {
        let s = shared();
        let b = Batched::new("l", 100, Duration::from_secs(60), 1000);
        b.peek(&s, "busy", at(5, 0.5));
        b.record("busy", at(5, 0.5));
        b.record("busy", at(5, 0.6));
        b.peek(&s, "idle", at(3, 0.5));
        let work = b.take_work(6);
        let busy = work
            .iter()
            .find(|w| w.curr_key == "tg:l:busy:6")
            .expect("busy key");
        assert_eq!(
            busy.delta, 0,
            "interval 5's admissions spill, not count in 6"
        );
        assert_eq!(busy.spill, Some(("tg:l:busy:5".to_string(), 2)));
        assert_eq!(busy.prev_key, "tg:l:busy:5");
        assert!(
            work.iter().all(|w| !w.curr_key.contains("idle")),
            "a key unused for a whole interval is dropped"
        );
        assert_eq!(b.tracked(), 1);
    }

    #[test]
    fn tracking_is_bounded() {
        let s = shared();
        let b = Batched::new("l", 100, Duration::from_secs(60), 16 * 16);
        let tracked = (0..10_000)
            .filter(|i| b.peek(&s, &format!("k{i}"), at(1, 0.1)).is_some())
            .count();
        assert!(tracked <= 16 * 16, "{tracked}");
        assert_eq!(b.tracked(), tracked);
    }
}
