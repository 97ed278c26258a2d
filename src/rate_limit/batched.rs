//! `sync: batched`: decisions against a local copy of the fleet-wide count, synced in the
//! background, so the request path never waits for Redis.
//!
//! Each active key keeps the global counts of the window's sub-intervals last read from Redis
//! plus the requests this gateway admitted since (`pending`). Every `sync_interval` a background task
//! pushes `pending` with `INCRBY` and reads back the global counts in one pipeline. Between
//! syncs a gateway does not see the others' admissions, so a fleet of `N` gateways can admit up
//! to about `(N − 1) × rate × sync_interval` beyond the limit; `sync: atomic` is exact at the
//! price of one round trip per request.
//!
//! Memory is bounded: at most `max_keys` keys per limit are tracked (others are decided by the
//! local estimator alone), and keys idle for a whole window are dropped at the next sync.

use super::redis_backend::{expiry_ms, Clock, RedisShared};
use super::sliding::SLOTS;
use super::window::{decide, Decision};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::Duration;

const SHARDS: usize = 16;

#[derive(Debug)]
struct Entry {
    /// The Redis key without its sub-interval suffix.
    base: String,
    /// The sub-interval `counts` end with.
    sub: u64,
    /// Global counts of the window's sub-intervals from the last sync (our own flushed
    /// admissions included), oldest first.
    counts: [u64; SLOTS],
    /// Admitted here in `sub` since the last sync.
    pending: u64,
    /// Admissions of sub-intervals that ended before they were flushed: `(sub, count)`.
    spill: Vec<(u64, u64)>,
    /// Last sub-interval in which a request used this key.
    used: u64,
}

impl Entry {
    /// Move to `sub`: the window slides by the sub-intervals that passed (our unflushed part
    /// stays counted where it happened, and is flushed to Redis as a spill).
    fn roll(&mut self, sub: u64) {
        if sub <= self.sub {
            return;
        }
        let unflushed = self.take_pending();
        if unflushed > 0 {
            self.spill.push((self.sub, unflushed));
        }
        let passed = (sub - self.sub).min(SLOTS as u64) as usize;
        self.counts.rotate_left(passed);
        self.counts[SLOTS - passed..].fill(0);
        self.sub = sub;
    }

    /// Hand over this gateway's admissions since the last sync for flushing. They stay counted
    /// in `sub` until a sync reply (which includes them) replaces the counts, so a decision
    /// meanwhile does not forget them.
    fn take_pending(&mut self) -> u64 {
        let n = std::mem::take(&mut self.pending);
        self.counts[SLOTS - 1] += n;
        n
    }

    /// The counts to decide on: the last sync's plus this gateway's since.
    fn window_counts(&self) -> [u64; SLOTS] {
        let mut counts = self.counts;
        counts[SLOTS - 1] += self.pending;
        counts
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
    /// The window's sub-intervals, oldest first; the last is the current one.
    keys: [String; SLOTS],
    delta: u64,
    spill: Vec<(String, u64)>,
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
            sub: clock.sub,
            counts: [0; SLOTS],
            pending: 0,
            spill: Vec::new(),
            used: clock.sub,
        });
        entry.roll(clock.sub);
        entry.used = clock.sub;
        Some(decide(
            clock.window(entry.window_counts()),
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
            entry.roll(clock.sub);
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
    /// for a whole window.
    fn take_work(&self, clock: Clock) -> Vec<SyncItem> {
        let mut work = Vec::new();
        for (shard, lock) in self.shards.iter().enumerate() {
            let Ok(mut map) = lock.lock() else {
                continue;
            };
            map.retain(|_, e| {
                e.used + SLOTS as u64 > clock.sub || e.pending > 0 || !e.spill.is_empty()
            });
            for (hash, e) in map.iter_mut() {
                e.roll(clock.sub);
                let delta = e.take_pending();
                work.push(SyncItem {
                    shard,
                    hash: *hash,
                    keys: clock.window_subs().map(|sub| format!("{}:{sub}", e.base)),
                    delta,
                    spill: std::mem::take(&mut e.spill)
                        .into_iter()
                        .map(|(sub, n)| (format!("{}:{sub}", e.base), n))
                        .collect(),
                });
            }
        }
        work
    }

    /// One sync round: push admissions, pull global counts. On failure the unflushed counts
    /// are dropped (the fallback is local anyway) and the backend is marked down.
    pub async fn sync(&self, shared: &RedisShared, clock: Clock) {
        let work = self.take_work(clock);
        if work.is_empty() {
            return;
        }
        let ttl_ms = expiry_ms(self.per);
        let mut pipe = redis::pipe();
        for item in &work {
            for (key, n) in &item.spill {
                pipe.cmd("INCRBY").arg(key).arg(*n).ignore();
                pipe.cmd("PEXPIRE").arg(key).arg(ttl_ms).ignore();
            }
            let [older @ .., current] = &item.keys;
            for key in older {
                pipe.cmd("GET").arg(key);
            }
            if item.delta > 0 {
                pipe.cmd("INCRBY").arg(current).arg(item.delta);
                pipe.cmd("PEXPIRE").arg(current).arg(ttl_ms).ignore();
            } else {
                pipe.cmd("GET").arg(current);
            }
        }
        let Some(values) = shared.pipeline(&pipe).await else {
            return;
        };
        if values.len() != work.len() * SLOTS {
            shared.failed("unexpected pipeline reply");
            return;
        }
        for (item, counts) in work.iter().zip(values.chunks(SLOTS)) {
            let Ok(mut map) = self.shards[item.shard].lock() else {
                continue;
            };
            if let Some(e) = map.get_mut(&item.hash) {
                if e.sub == clock.sub {
                    for (mine, theirs) in e.counts.iter_mut().zip(counts) {
                        *mine = theirs.unwrap_or(0);
                    }
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

    fn at(sub: u64, fraction: f64) -> Clock {
        Clock { sub, fraction }
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
    fn a_sub_interval_counts_in_full_until_it_slides_out() {
        let s = shared();
        let b = Batched::new("l", 4, Duration::from_secs(60), 1000);
        for _ in 0..4 {
            b.peek(&s, "k", at(10, 0.9));
            b.record("k", at(10, 0.9));
        }
        // Three sub-intervals later all 4 are still inside the window.
        assert!(!b.peek(&s, "k", at(13, 0.99)).expect("tracked").allowed);
        // Sliding out: just after the boundary 3.96 of them count, so one more fits, not two.
        assert!(b.peek(&s, "k", at(14, 0.01)).expect("tracked").allowed);
        b.record("k", at(14, 0.01));
        assert!(!b.peek(&s, "k", at(14, 0.01)).expect("tracked").allowed);
        // Once sub-interval 10 has left, only the one of 14 remains.
        let d = b.peek(&s, "k", at(15, 0.0)).expect("tracked");
        assert_eq!((d.allowed, d.remaining), (true, 2));
    }

    #[test]
    fn sync_work_carries_deltas_and_spills_and_drops_idle_keys() {
        let s = shared();
        let b = Batched::new("l", 100, Duration::from_secs(60), 1000);
        b.peek(&s, "busy", at(5, 0.5));
        b.record("busy", at(5, 0.5));
        b.record("busy", at(5, 0.6));
        b.peek(&s, "idle", at(1, 0.5));
        let work = b.take_work(at(6, 0.0));
        let busy = work
            .iter()
            .find(|w| w.keys[SLOTS - 1] == "tg:l:busy:6")
            .expect("busy key");
        assert_eq!(
            busy.delta, 0,
            "sub-interval 5's admissions spill, not count in 6"
        );
        assert_eq!(busy.spill, vec![("tg:l:busy:5".to_string(), 2)]);
        assert_eq!(busy.keys[0], "tg:l:busy:2");
        assert!(
            work.iter().all(|w| !w.keys[0].contains("idle")),
            "a key unused for a whole window is dropped"
        );
        assert_eq!(b.tracked(), 1);
        // The spilled admissions still count locally until the next sync reads them back.
        let d = b.peek(&s, "busy", at(6, 0.0)).expect("tracked");
        assert_eq!(d.remaining, 97);
    }

    #[test]
    fn admissions_being_flushed_still_count_until_the_reply() {
        let s = shared();
        let b = Batched::new("l", 20, Duration::from_secs(1), 1000);
        for _ in 0..20 {
            assert!(b.peek(&s, "k", at(100, 0.5)).expect("tracked").allowed);
            b.record("k", at(100, 0.5));
        }
        let work = b.take_work(at(100, 0.9));
        assert_eq!(work[0].delta, 20, "pushed to Redis");
        // The round trip is under way: the 20 are still this gateway's to count.
        assert!(!b.peek(&s, "k", at(100, 0.91)).expect("tracked").allowed);
        // And the next quarter, if the reply is late.
        assert!(!b.peek(&s, "k", at(101, 0.1)).expect("tracked").allowed);
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
