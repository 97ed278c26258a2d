//! In-process, estimated rate limiting (a count-min sketch per limit; see `sliding`).
//!
//! One [`sliding::SlidingCounter`] (a count-min sketch of admitted requests per sub-interval of
//! the window, on fixed boundaries) per configured limit; the hot path is one hash, a few
//! atomic loads and one atomic add per sketch row.
//! Only admitted requests are counted, so a client hammering at 3× its limit is admitted at its
//! limit rather than locked out for ever.
//!
//! With `backend: redis` a limit's counts are shared by a fleet (see `redis_backend` and
//! `batched`); the in-process counter keeps counting alongside, so that a Redis outage falls
//! back to warm local estimates.

pub mod batched;
pub mod key;
pub mod redis_backend;
pub mod sliding;
pub mod window;

use crate::config::rate_limit::{Backend, RateLimitConfig, Stage, SyncMode};
use crate::config::Config;
use crate::observability::metrics::METRICS;
use crate::reply::{GatewayError, Refusal};
use batched::Batched;
use key::{KeyKind, KeyValue, RequestFacts};
use redis_backend::{Clock, RedisShared};
use sliding::SlidingCounter;
use std::sync::Arc;
use std::time::Duration;
use window::{decide, Decision};

/// Where a limit's decisions come from.
enum Shared {
    Local,
    /// One Redis script call per decision.
    Atomic(Arc<RedisShared>),
    /// Local decisions against a synced global count.
    Batched(Arc<RedisShared>, Arc<Batched>),
}

/// Rows of each sketch. Four rows make an all-rows collision of a quiet key vanishingly rare.
const HASHES: usize = 4;

pub struct Limit {
    pub name: String,
    pub kind: KeyKind,
    pub requests: u64,
    pub per: Duration,
    pub stage: Stage,
    counter: SlidingCounter,
    shared: Shared,
}

/// Sketch columns for an expected key count: twice the keys, at least 1024.
pub fn slots_for(expected_clients: usize) -> usize {
    (expected_clients.saturating_mul(2)).max(1024)
}

impl Limit {
    pub fn new(name: &str, cfg: &RateLimitConfig) -> Result<Limit, String> {
        Self::with_backend(name, cfg, None)
    }

    /// `redis`: the shared server, required when `cfg.backend` is `redis`.
    fn with_backend(
        name: &str,
        cfg: &RateLimitConfig,
        redis: Option<&Arc<RedisShared>>,
    ) -> Result<Limit, String> {
        let shared = match (cfg.backend, redis) {
            (Backend::Local, _) => Shared::Local,
            (Backend::Redis, None) => return Err("backend: redis needs a redis: section".into()),
            (Backend::Redis, Some(r)) => match cfg.sync {
                SyncMode::Atomic => Shared::Atomic(r.clone()),
                SyncMode::Batched => Shared::Batched(
                    r.clone(),
                    Arc::new(Batched::new(
                        name,
                        cfg.requests,
                        cfg.per.0,
                        cfg.expected_clients,
                    )),
                ),
            },
        };
        let kind = KeyKind::parse(&cfg.key)?;
        let stage = cfg.stage.unwrap_or(if kind.needs_identity() {
            Stage::AfterAuth
        } else {
            Stage::BeforeAuth
        });
        Ok(Limit {
            name: name.to_string(),
            stage,
            requests: cfg.requests,
            per: cfg.per.0,
            counter: SlidingCounter::new(cfg.per.0, HASHES, slots_for(cfg.expected_clients)),
            kind,
            shared,
        })
    }

    /// The decision for a limit that needs no I/O (local, or batched against the last sync);
    /// `None` for an atomic Redis limit, decided later by [`Limit::decide_atomic`].
    fn decide_now(&self, key: &KeyValue<'_>) -> Option<Decision> {
        match &self.shared {
            Shared::Local => Some(self.peek(key)),
            Shared::Atomic(_) => None,
            Shared::Batched(redis, batched) => Some(
                redis
                    .is_up()
                    .then(|| batched.peek(redis, &key.render(), Clock::now(self.per)))
                    .flatten()
                    .unwrap_or_else(|| self.peek(key)),
            ),
        }
    }

    /// An atomic Redis decision (counted there when admitted); the local estimate when Redis
    /// is down or slow.
    async fn decide_atomic(&self, key: &KeyValue<'_>) -> Decision {
        let Shared::Atomic(redis) = &self.shared else {
            return self.peek(key);
        };
        if !redis.usable() {
            return self.peek(key);
        }
        let clock = Clock::now(self.per);
        let text = key.render();
        let keys = clock
            .window_subs()
            .map(|sub| redis.key(&self.name, &text, sub));
        match redis
            .check_atomic(&keys, self.requests, clock, self.per)
            .await
        {
            Some((admitted, counts)) => {
                let d = decide(clock.window(counts), self.requests, self.per);
                agree_with(d, admitted)
            }
            None => self.peek(key),
        }
    }

    /// Count an admitted request everywhere it is counted by this gateway.
    fn record_admitted(&self, key: &KeyValue<'_>) {
        self.record(key);
        if let Shared::Batched(redis, batched) = &self.shared {
            if redis.is_up() {
                batched.record(&key.render(), Clock::now(self.per));
            }
        }
    }

    /// Decide without counting.
    pub fn peek(&self, key: &KeyValue<'_>) -> Decision {
        decide(self.counter.sample(key), self.requests, self.per)
    }

    /// Count one admitted request.
    pub fn record(&self, key: &KeyValue<'_>) {
        self.counter.observe(key);
    }

    /// Decide and, if admitted, count: the single-limit convenience used by tests and benches.
    pub fn check(&self, key: &KeyValue<'_>) -> Decision {
        let d = self.peek(key);
        if d.allowed {
            self.record(key);
        }
        d
    }
}

/// The script's verdict is what Redis counted; the decision recomputed from the same counts can
/// differ in the last bit of a float (the fraction crosses as decimal text), and a request
/// counted there must not be refused here, nor one refused there be admitted.
fn agree_with(d: Decision, admitted: bool) -> Decision {
    match (admitted, d.allowed) {
        (true, false) => Decision {
            allowed: true,
            retry_after_secs: 0,
            ..d
        },
        (false, true) => Decision {
            allowed: false,
            remaining: 0,
            retry_after_secs: 1,
            ..d
        },
        _ => d,
    }
}

/// The outcome of checking a route's limits at one stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitVerdict {
    /// The decision to report in headers: the refusing limit, else the tightest one.
    pub decision: Decision,
    /// Index of the limit that `decision` belongs to.
    pub limit: usize,
}

pub struct RateLimiter {
    /// Shared so that a reload can hand an unchanged limit, with its counts, to the next
    /// generation.
    limits: Vec<Arc<Limit>>,
    redis: Option<Arc<RedisShared>>,
}

impl RateLimiter {
    pub fn build(config: &Config) -> Result<RateLimiter, Vec<crate::config::Problem>> {
        let mut limits = Vec::new();
        let mut problems = Vec::new();
        let redis = match config.redis.as_ref().map(RedisShared::new).transpose() {
            Ok(r) => r.map(Arc::new),
            Err(m) => return Err(vec![crate::config::Problem::new("redis.url", m)]),
        };
        for (name, cfg) in &config.rate_limits {
            let needs_identity = KeyKind::parse(&cfg.key).is_ok_and(|k| k.needs_identity());
            if needs_identity && cfg.stage == Some(Stage::BeforeAuth) {
                problems.push(crate::config::Problem::new(
                    format!("rate_limits.{name}.stage"),
                    format!(
                        "key {:?} needs the verified identity; use after_auth",
                        cfg.key
                    ),
                ));
            }
            match Limit::with_backend(name, cfg, redis.as_ref()) {
                Ok(l) => limits.push(Arc::new(l)),
                Err(m) => problems.push(crate::config::Problem::new(
                    format!("rate_limits.{name}.key"),
                    m,
                )),
            }
        }
        if problems.is_empty() {
            Ok(RateLimiter { limits, redis })
        } else {
            Err(problems)
        }
    }

    /// In-place reload: every limit whose definition (and the Redis it shares through) did not
    /// change between `old_config` and `config` continues with `old`'s counts, so a client at
    /// its limit stays limited across the reload.
    pub fn keep_state_of(&mut self, old: &RateLimiter, old_config: &Config, config: &Config) {
        if old_config.redis != config.redis {
            return;
        }
        for limit in &mut self.limits {
            let unchanged =
                old_config.rate_limits.get(&limit.name) == config.rate_limits.get(&limit.name);
            if let (true, Some(i)) = (unchanged, old.index(&limit.name)) {
                *limit = old.limits[i].clone();
            }
        }
    }

    /// Check a route's limits of one stage, note the decision for `X-RateLimit-*`, and say no
    /// (429 with `Retry-After`, counted) when a limit is exceeded.
    pub async fn enforce(
        &self,
        route_limits: &[usize],
        stage: Stage,
        facts: &RequestFacts<'_>,
        route_name: &str,
        reported: &mut Reported,
    ) -> Result<(), Refusal> {
        let Some(verdict) = self.check(route_limits, stage, facts).await else {
            return Ok(());
        };
        reported.note(verdict);
        if verdict.decision.allowed {
            return Ok(());
        }
        let limit = self.limits[verdict.limit].name.as_str();
        METRICS
            .rate_limited
            .with_label_values(&[route_name, limit])
            .inc();
        Err(Refusal::of(GatewayError::RateLimited)
            .header("Retry-After", verdict.decision.retry_after_secs.to_string()))
    }

    pub fn index(&self, name: &str) -> Option<usize> {
        self.limits.iter().position(|l| l.name == name)
    }

    pub fn limit(&self, i: usize) -> &Limit {
        &self.limits[i]
    }

    /// Check the route's limits of one stage; all must pass, and only then is each counted.
    /// Returns `None` when the route has no limit at this stage. Limits that need no I/O are
    /// decided first; atomic Redis limits (which count as they admit) only if those passed.
    pub async fn check(
        &self,
        route_limits: &[usize],
        stage: Stage,
        facts: &RequestFacts<'_>,
    ) -> Option<LimitVerdict> {
        let mut verdict = Tally::default();
        let mut atomic = false;
        for &i in route_limits {
            let limit = &self.limits[i];
            if limit.stage != stage {
                continue;
            }
            match limit.decide_now(&key::value(&limit.kind, facts)) {
                Some(d) => verdict.add(d, i),
                None => atomic = true,
            }
        }
        if atomic && !verdict.refused {
            for &i in route_limits {
                let limit = &self.limits[i];
                if limit.stage == stage && matches!(limit.shared, Shared::Atomic(_)) {
                    let d = limit.decide_atomic(&key::value(&limit.kind, facts)).await;
                    verdict.add(d, i);
                }
            }
        }
        if !verdict.refused && verdict.best.is_some() {
            for &i in route_limits {
                let limit = &self.limits[i];
                if limit.stage == stage {
                    limit.record_admitted(&key::value(&limit.kind, facts));
                }
            }
        }
        verdict.best
    }

    /// The background work of `sync: batched` limits, if any: a Pingora background service.
    pub fn sync_task(&self) -> Option<BatchedSync> {
        let redis = self.redis.clone()?;
        let limits: Vec<(Arc<Batched>, Duration)> = self
            .limits
            .iter()
            .filter_map(|l| match &l.shared {
                Shared::Batched(_, b) => Some((b.clone(), l.per)),
                _ => None,
            })
            .collect();
        (!limits.is_empty()).then_some(BatchedSync { redis, limits })
    }
}

/// Folds a stage's decisions into the one to report.
#[derive(Default)]
struct Tally {
    best: Option<LimitVerdict>,
    refused: bool,
}

impl Tally {
    fn add(&mut self, d: Decision, limit: usize) {
        let replace = match &self.best {
            None => true,
            // Among refusals, report the one that keeps the client waiting longest.
            Some(v) if !d.allowed => {
                !self.refused || d.retry_after_secs > v.decision.retry_after_secs
            }
            Some(v) => !self.refused && tighter(&d, &v.decision),
        };
        if !d.allowed {
            self.refused = true;
        }
        if replace {
            self.best = Some(LimitVerdict { decision: d, limit });
        }
    }
}

/// Pushes and pulls the counts of `sync: batched` limits every `redis.sync_interval`.
pub struct BatchedSync {
    redis: Arc<RedisShared>,
    limits: Vec<(Arc<Batched>, Duration)>,
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for BatchedSync {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let mut tick = tokio::time::interval(self.redis.sync_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            for (batched, per) in &self.limits {
                batched.sync(&self.redis, Clock::now(*per)).await;
            }
        }
    }
}

/// Fewer requests left is tighter; on a tie, the smaller limit.
pub fn tighter(a: &Decision, b: &Decision) -> bool {
    (a.remaining, a.limit) < (b.remaining, b.limit)
}

/// The `X-RateLimit-*` names: spelled only here.
const LIMIT: &str = "X-RateLimit-Limit";
const REMAINING: &str = "X-RateLimit-Remaining";
const RESET: &str = "X-RateLimit-Reset";

/// `X-RateLimit-*` for one decision, as text.
pub fn limit_headers(d: &Decision) -> [(&'static str, String); 3] {
    [
        (LIMIT, d.limit.to_string()),
        (REMAINING, d.remaining.to_string()),
        (RESET, d.reset_secs.to_string()),
    ]
}

/// The decimal digits of a number, held inline.
struct Digits {
    buf: [u8; 20],
    start: usize,
}

impl AsRef<[u8]> for Digits {
    fn as_ref(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

/// `n` as a header value in one allocation (`HeaderValue::from(u64)` makes two: its buffer
/// has spare capacity, so freezing it allocates a shared header too).
fn number_value(mut n: u64) -> http::HeaderValue {
    let mut digits = Digits {
        buf: [b'0'; 20],
        start: 20,
    };
    loop {
        digits.start -= 1;
        digits.buf[digits.start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let bytes = bytes::Bytes::from_owner(digits);
    http::HeaderValue::from_maybe_shared(bytes).unwrap_or(http::HeaderValue::from_static("0"))
}

/// What a request reports in `X-RateLimit-*`: the refusing limit, else the tightest of those
/// checked so far. Every response of a limited route carries them, the gateway's own included.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reported(Option<LimitVerdict>);

impl Reported {
    pub fn note(&mut self, verdict: LimitVerdict) {
        let keep = match &self.0 {
            None => true,
            Some(prev) => !verdict.decision.allowed || tighter(&verdict.decision, &prev.decision),
        };
        if keep {
            self.0 = Some(verdict);
        }
    }

    /// For the gateway's own answers (refusals, errors), as text.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        self.0
            .as_ref()
            .map(|v| Vec::from(limit_headers(&v.decision)))
            .unwrap_or_default()
    }

    /// On a proxied response head: each number written straight into its header value (one
    /// allocation per header instead of a `String` copied again by the insert).
    pub fn apply(&self, resp: &mut pingora::http::ResponseHeader) -> pingora::Result<()> {
        if let Some(v) = &self.0 {
            let d = &v.decision;
            resp.insert_header(LIMIT, number_value(d.limit))?;
            resp.insert_header(REMAINING, number_value(d.remaining))?;
            resp.insert_header(RESET, number_value(d.reset_secs))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    #[test]
    fn the_redis_script_has_the_last_word() {
        let d = |allowed| Decision {
            allowed,
            limit: 30,
            remaining: if allowed { 3 } else { 0 },
            reset_secs: 1,
            retry_after_secs: if allowed { 0 } else { 2 },
        };
        assert_eq!(agree_with(d(true), true), d(true));
        assert_eq!(agree_with(d(false), false), d(false));
        let counted = agree_with(d(false), true);
        assert!(
            counted.allowed && counted.retry_after_secs == 0,
            "{counted:?}"
        );
        let refused = agree_with(d(true), false);
        assert!(!refused.allowed && refused.remaining == 0 && refused.retry_after_secs >= 1);
    }

    fn limit(requests: u64, per: &str, key: &str) -> Limit {
        let cfg: RateLimitConfig =
            serde_yaml::from_str(&format!("{{key: {key}, requests: {requests}, per: {per}}}"))
                .unwrap();
        Limit::new("t", &cfg).unwrap()
    }

    #[test]
    fn numbers_become_their_decimal_header_values() {
        for n in [0, 7, 10, 99_999, u64::MAX] {
            assert_eq!(number_value(n), n.to_string().as_str());
        }
    }

    #[test]
    fn a_key_is_admitted_up_to_its_limit_then_refused() {
        let l = limit(5, "1h", "client_ip");
        let k = KeyValue::Ip(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
        for i in 0..5 {
            assert!(l.check(&k).allowed, "request {i}");
        }
        let d = l.check(&k);
        assert!(!d.allowed);
        assert!(d.retry_after_secs >= 1);
        let other = KeyValue::Ip(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)));
        assert!(l.check(&other).allowed, "keys are independent");
    }

    #[test]
    fn hundred_thousand_quiet_clients_get_no_false_429() {
        // Each of 100k distinct clients sends 3 requests against a limit of 10 per hour,
        // with the default sketch size.
        let l = limit(10, "1h", "client_ip");
        let mut refused = 0;
        for round in 0..3 {
            for i in 0..100_000u32 {
                let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
                if !l.check(&KeyValue::Ip(ip)).allowed {
                    refused += 1;
                }
            }
            assert_eq!(refused, 0, "false 429s after round {round}");
        }
    }

    #[test]
    fn key_kinds_parse() {
        assert_eq!(KeyKind::parse("client_ip"), Ok(KeyKind::ClientIp));
        assert!(matches!(
            KeyKind::parse("header:X-Tenant"),
            Ok(KeyKind::Header(_))
        ));
        assert_eq!(
            KeyKind::parse("claim:tenant"),
            Ok(KeyKind::Claim("tenant".into()))
        );
        assert!(KeyKind::parse("cookie:x").is_err());
        assert!(KeyKind::parse("claim:").is_err());
    }
}
