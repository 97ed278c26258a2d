//! The one bounded response store every route's `cache` shares (`server.cache`), and the fill
//! lock that makes concurrent misses of one key send one upstream request.
//!
//! The store is a `moka` cache (TinyLFU admission, LRU eviction) weighed in bytes: body, head
//! and key of every entry count against `max_size`. Each insert runs moka's pending
//! maintenance at once, so the store is back under `max_size` before the inserting request
//! ends; what a flood of distinct keys can add on top is the entries being inserted at that
//! instant. Each entry also expires in moka when its freshness runs out, so stale responses
//! leave memory without waiting for eviction. Freshness itself is decided on every hit from
//! the entry's own clock ([`Stored::age`]), not by moka.
//!
//! A response with a `Vary` is stored as two entries: under the request's primary key a
//! [`Entry::Vary`] rule naming the headers, and under the primary key plus those headers'
//! values the response itself (RFC 9111 §4.1).

use super::control::Freshness;
use crate::config::edge::CacheStoreConfig;
use crate::edge::compress::Coding;
use crate::observability::metrics::METRICS;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName};
use moka::notification::RemovalCause;
use moka::ops::compute::Op;
use moka::Expiry;
use pingora::http::ResponseHeader;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::futures::OwnedNotified;
use tokio::sync::Notify;

/// What selects a stored response.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    /// The route's name (purge and reload select by it).
    pub route: Arc<str>,
    /// The normalised request path, without the query (purge selects by it).
    pub path: Box<str>,
    /// Everything else that selects a response, each field length-prefixed so that no value
    /// can pose as another: host, query, `split` side, consumer, the route's `vary` values.
    pub rest: Box<str>,
    /// The values of the response's `Vary` headers; `None` for the primary key.
    pub variant: Option<Box<str>>,
}

impl Key {
    fn size(&self) -> usize {
        self.route.len()
            + self.path.len()
            + self.rest.len()
            + self.variant.as_ref().map_or(0, |v| v.len())
    }

    /// This key with the values of `names` in `request` (the key of one variant).
    fn variant(&self, names: &[HeaderName], request: &HeaderMap) -> Key {
        let mut v = String::new();
        for name in names {
            push_values(&mut v, request, name);
        }
        Key {
            variant: Some(v.into()),
            ..self.clone()
        }
    }
}

/// Append `len:value` to a key field.
pub fn push_field(out: &mut String, value: &str) {
    use std::fmt::Write;
    let _ = write!(out, "{}:{value}", value.len());
}

/// Append the values of header `name` (all lines, in order), or `!` when it is absent.
pub fn push_values(out: &mut String, headers: &HeaderMap, name: &HeaderName) {
    let mut values = headers.get_all(name).iter().peekable();
    if values.peek().is_none() {
        out.push('!');
        return;
    }
    let joined: Vec<&[u8]> = values.map(|v| v.as_bytes()).collect();
    push_field(out, &String::from_utf8_lossy(&joined.join(&b", "[..])));
}

/// A stored response: the head as the upstream sent it (after JSON stripping decided its
/// framing; without hop-by-hop fields, `Content-Length` or `Age`) and the whole body as the
/// client would have received it before compression; plus that body in each content coding
/// a hit has needed so far (weighed like the rest).
pub struct Stored {
    pub head: ResponseHeader,
    pub body: Bytes,
    pub stored_at: Instant,
    pub freshness: Freshness,
    encoded: Vec<(Coding, Bytes)>,
    weight: u32,
}

impl Stored {
    pub fn new(head: ResponseHeader, body: Bytes, freshness: Freshness) -> Stored {
        Self::with(head, body, Instant::now(), freshness, Vec::new())
    }

    fn with(
        head: ResponseHeader,
        body: Bytes,
        stored_at: Instant,
        freshness: Freshness,
        encoded: Vec<(Coding, Bytes)>,
    ) -> Stored {
        let head_size: usize = head
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 32)
            .sum();
        let encoded_size: usize = encoded.iter().map(|(_, b)| b.len() + 32).sum();
        let weight = (body.len() + encoded_size + head_size + 256)
            .try_into()
            .unwrap_or(u32::MAX);
        Stored {
            head,
            body,
            stored_at,
            freshness,
            encoded,
            weight,
        }
    }

    /// The body in `coding`, if a hit encoded it already.
    pub fn encoded(&self, coding: Coding) -> Option<Bytes> {
        self.encoded
            .iter()
            .find(|(c, _)| *c == coding)
            .map(|(_, b)| b.clone())
    }

    /// The same response, also holding its body in `coding`.
    pub fn with_encoding(&self, coding: Coding, bytes: Bytes) -> Stored {
        let mut encoded = self.encoded.clone();
        encoded.push((coding, bytes));
        Self::with(
            self.head.clone(),
            self.body.clone(),
            self.stored_at,
            self.freshness,
            encoded,
        )
    }

    /// RFC 9111 §4.2.3 `current_age`.
    pub fn age(&self, now: Instant) -> Duration {
        self.freshness.initial_age + now.saturating_duration_since(self.stored_at)
    }

    /// Time left before it goes stale (zero once stale).
    pub fn fresh_for(&self, now: Instant) -> Duration {
        self.freshness.lifetime.saturating_sub(self.age(now))
    }
}

/// The `Vary` rule stored under a primary key.
pub struct VaryRule {
    pub names: Vec<HeaderName>,
    /// Kept as long as the response it came with.
    stored_at: Instant,
    ttl: Duration,
}

#[derive(Clone)]
pub enum Entry {
    Object(Arc<Stored>),
    Vary(Arc<VaryRule>),
}

impl Entry {
    fn weight(&self, key: &Key) -> u32 {
        let own = match self {
            Entry::Object(s) => s.weight,
            Entry::Vary(r) => (r.names.iter().map(|n| n.as_str().len() + 24).sum::<usize>() + 64)
                .try_into()
                .unwrap_or(u32::MAX),
        };
        own.saturating_add((key.size() + 128).try_into().unwrap_or(u32::MAX))
    }

    fn time_left(&self, now: Instant) -> Duration {
        match self {
            Entry::Object(s) => s.fresh_for(now),
            Entry::Vary(r) => r
                .ttl
                .saturating_sub(now.saturating_duration_since(r.stored_at)),
        }
    }
}

/// Entries leave moka when their freshness runs out (a replaced entry gets the new one's).
struct Freshly;

impl Expiry<Key, Entry> for Freshly {
    fn expire_after_create(&self, _: &Key, value: &Entry, now: Instant) -> Option<Duration> {
        Some(value.time_left(now))
    }

    fn expire_after_update(
        &self,
        _: &Key,
        value: &Entry,
        now: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.time_left(now))
    }
}

/// The shared store (see the module docs).
pub struct Store {
    entries: moka::sync::Cache<Key, Entry>,
    /// Keys being fetched by one request, with the waiters to wake when it is done.
    fills: Mutex<HashMap<Key, Arc<Notify>>>,
    /// +1 per purge (or reload drop); a fill that began before one does not store. Inserts
    /// hold it shared, purges exclusively, so no insert lands in the middle of a purge.
    purges: RwLock<u64>,
    pub lock_timeout: Duration,
    pub max_size: u64,
}

/// The result of asking for a key's fill lock.
pub enum Fill {
    /// This request fetches the key; others wait until the guard is dropped.
    Leader(FillGuard),
    /// Another request is fetching it: wait for this (bounded by `lock_timeout`).
    Follower(OwnedNotified),
}

/// Held by the one request fetching a key; dropping it wakes the waiters.
pub struct FillGuard {
    store: Arc<Store>,
    key: Key,
}

impl Drop for FillGuard {
    fn drop(&mut self) {
        let mut fills = self.store.fills.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(waiters) = fills.remove(&self.key) {
            waiters.notify_waiters();
        }
    }
}

impl Store {
    pub fn new(cfg: &CacheStoreConfig) -> Arc<Store> {
        let entries = moka::sync::Cache::builder()
            .max_capacity(cfg.max_size.0)
            .weigher(|k: &Key, v: &Entry| v.weight(k))
            .expire_after(Freshly)
            .eviction_listener(|_, _, cause| {
                if cause == RemovalCause::Size {
                    METRICS.cache_evictions.inc();
                }
            })
            .build();
        Arc::new(Store {
            entries,
            fills: Mutex::new(HashMap::new()),
            purges: RwLock::new(0),
            lock_timeout: cfg.lock_timeout.0,
            max_size: cfg.max_size.0,
        })
    }

    /// The stored response for `key` and these request headers (following a `Vary` rule),
    /// with the key it is stored under; fresh or not.
    pub fn lookup(&self, key: &Key, request: &HeaderMap) -> Option<(Key, Arc<Stored>)> {
        match self.entries.get(key)? {
            Entry::Object(s) => Some((key.clone(), s)),
            Entry::Vary(rule) => {
                let variant = key.variant(&rule.names, request);
                match self.entries.get(&variant)? {
                    Entry::Object(s) => Some((variant, s)),
                    Entry::Vary(_) => None,
                }
            }
        }
    }

    /// The purge count a fill starts from (see [`Store::insert`]).
    pub fn purges(&self) -> u64 {
        *self.purges.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Store a response under `key`, or under its variant for `vary` (the response's `Vary`
    /// names that select it) and `request`; not if a purge happened since `since` (the
    /// response may be what was purged).
    pub fn insert(
        &self,
        since: u64,
        key: Key,
        vary: Vec<HeaderName>,
        request: &HeaderMap,
        stored: Stored,
    ) {
        let purges = self.purges.read().unwrap_or_else(|e| e.into_inner());
        if *purges != since {
            return;
        }
        if vary.is_empty() {
            self.entries.insert(key, Entry::Object(Arc::new(stored)));
        } else {
            let variant = key.variant(&vary, request);
            let rule = VaryRule {
                names: vary,
                stored_at: stored.stored_at,
                ttl: stored.fresh_for(stored.stored_at),
            };
            self.entries
                .insert(variant, Entry::Object(Arc::new(stored)));
            self.entries.insert(key, Entry::Vary(Arc::new(rule)));
        }
        drop(purges);
        self.publish();
    }

    /// Replace `old` under `key` by `new`, only if `old` is still what is stored there (a purge
    /// or a fresher response in between wins).
    pub fn replace(&self, key: Key, old: &Arc<Stored>, new: Stored) {
        self.entries
            .entry(key)
            .and_compute_with(|current| match current {
                Some(e) if matches!(e.value(), Entry::Object(s) if Arc::ptr_eq(s, old)) => {
                    Op::Put(Entry::Object(Arc::new(new)))
                }
                _ => Op::Nop,
            });
        self.publish();
    }

    /// Lead the fetch of `key`, or wait for the request that does.
    pub fn fill(self: &Arc<Self>, key: &Key) -> Fill {
        let mut fills = self.fills.lock().unwrap_or_else(|e| e.into_inner());
        match fills.get(key) {
            // Created under the lock: the leader's `notify_waiters` (also under it) reaches it.
            Some(waiters) => Fill::Follower(waiters.clone().notified_owned()),
            None => {
                fills.insert(key.clone(), Arc::new(Notify::new()));
                Fill::Leader(FillGuard {
                    store: self.clone(),
                    key: key.clone(),
                })
            }
        }
    }

    /// Remove the responses of `route` (of one `path` only, any query, when given); the
    /// number of responses removed.
    pub fn purge(&self, route: &str, path: Option<&str>) -> usize {
        self.remove_where(|k| &*k.route == route && path.is_none_or(|p| &*k.path == p))
    }

    /// Remove every entry of the routes `drop` names (a reload changed or removed them).
    pub fn forget_routes(&self, drop: impl Fn(&str) -> bool) -> usize {
        self.remove_where(|k| drop(&k.route))
    }

    fn remove_where(&self, select: impl Fn(&Key) -> bool) -> usize {
        let mut purges = self.purges.write().unwrap_or_else(|e| e.into_inner());
        *purges += 1;
        let keys: Vec<(Arc<Key>, bool)> = self
            .entries
            .iter()
            .filter(|(k, _)| select(k))
            .map(|(k, v)| (k, matches!(v, Entry::Object(_))))
            .collect();
        let mut removed = 0;
        for (key, object) in keys {
            if self.entries.remove(&*key).is_some() && object {
                removed += 1;
            }
        }
        drop(purges);
        self.publish();
        removed
    }

    /// Apply moka's pending maintenance (evictions included) and publish the store's size.
    pub fn publish(&self) {
        self.entries.run_pending_tasks();
        METRICS
            .cache_bytes
            .set(i64::try_from(self.entries.weighted_size()).unwrap_or(i64::MAX));
        METRICS
            .cache_entries
            .set(i64::try_from(self.entries.entry_count()).unwrap_or(i64::MAX));
    }

    /// Bytes stored, as weighed (after [`Store::publish`]).
    pub fn weighted_size(&self) -> u64 {
        self.entries.weighted_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ByteSize, HumanDuration};

    fn store(max: u64) -> Arc<Store> {
        Store::new(&CacheStoreConfig {
            max_size: ByteSize(max),
            lock_timeout: HumanDuration(Duration::from_secs(1)),
        })
    }

    fn key(route: &str, path: &str) -> Key {
        Key {
            route: route.into(),
            path: path.into(),
            rest: "".into(),
            variant: None,
        }
    }

    fn stored(body: usize) -> Stored {
        let head = ResponseHeader::build(200, None).unwrap();
        Stored::new(
            head,
            Bytes::from(vec![b'x'; body]),
            Freshness {
                lifetime: Duration::from_secs(60),
                initial_age: Duration::ZERO,
            },
        )
    }

    #[test]
    fn bounded_by_weight_under_many_distinct_keys() {
        let s = store(100_000);
        for i in 0..2_000 {
            s.insert(
                0,
                key("r", &format!("/{i}")),
                vec![],
                &HeaderMap::new(),
                stored(1_000),
            );
            assert!(s.weighted_size() <= 100_000, "{}", s.weighted_size());
        }
    }

    #[test]
    fn vary_rule_selects_the_variant() {
        let s = store(1_000_000);
        let mut fr = HeaderMap::new();
        fr.insert(http::header::ACCEPT_LANGUAGE, "fr".parse().unwrap());
        let mut de = HeaderMap::new();
        de.insert(http::header::ACCEPT_LANGUAGE, "de".parse().unwrap());
        let k = key("r", "/a");
        s.insert(
            0,
            k.clone(),
            vec![http::header::ACCEPT_LANGUAGE],
            &fr,
            stored(3),
        );
        assert!(s.lookup(&k, &fr).is_some());
        assert!(s.lookup(&k, &de).is_none());
        assert!(s.lookup(&k, &HeaderMap::new()).is_none());
    }

    #[test]
    fn purge_by_route_and_path() {
        let s = store(1_000_000);
        for (r, p) in [("a", "/x"), ("a", "/y"), ("b", "/x")] {
            s.insert(0, key(r, p), vec![], &HeaderMap::new(), stored(3));
        }
        assert_eq!(s.purge("a", Some("/x")), 1);
        assert_eq!(s.purge("a", Some("/x")), 0);
        assert_eq!(s.purge("b", None), 1);
        assert!(s.lookup(&key("a", "/y"), &HeaderMap::new()).is_some());
        // A fill that began before a purge does not store what it fetched.
        let since = s.purges();
        s.purge("b", None);
        s.insert(since, key("a", "/z"), vec![], &HeaderMap::new(), stored(3));
        assert!(s.lookup(&key("a", "/z"), &HeaderMap::new()).is_none());
        s.insert(
            s.purges(),
            key("a", "/z"),
            vec![],
            &HeaderMap::new(),
            stored(3),
        );
        assert!(s.lookup(&key("a", "/z"), &HeaderMap::new()).is_some());
    }

    #[tokio::test]
    async fn one_leader_per_key_and_waiters_wake_when_it_is_done() {
        let s = store(1_000);
        let Fill::Leader(guard) = s.fill(&key("r", "/a")) else {
            panic!("first is the leader");
        };
        let Fill::Follower(wait) = s.fill(&key("r", "/a")) else {
            panic!("second waits");
        };
        assert!(matches!(s.fill(&key("r", "/b")), Fill::Leader(_)));
        drop(guard);
        tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .expect("woken");
        assert!(matches!(s.fill(&key("r", "/a")), Fill::Leader(_)));
    }
}
