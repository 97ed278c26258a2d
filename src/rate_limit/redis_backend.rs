//! The Redis side of `backend: redis`: connections, the atomic sliding-window script, and the
//! fail-open switch.
//!
//! Keys are `<prefix>:<limit>:<key>:<sub>`, `sub` being wall-clock time divided by a quarter of
//! the limit's `per` (gateways of a fleet must agree on time; NTP is enough: a skew of `s`
//! seconds shifts a boundary by `s`). Each holds the count admitted in that sub-interval and
//! expires after two windows. The window estimate is the same as the local one (`window`): the
//! four newest sub-intervals in full, the one sliding out weighted by what is left of it.
//!
//! A missing limiter must not take the API down (DESIGN.md): when Redis errors or is slower
//! than `timeout`, decisions fall back to the in-process estimator, the failure is counted in
//! `tollgate_ratelimit_backend_errors_total`, the transition is logged once, and Redis is tried
//! again at most once a second until it answers.

use super::sliding::{SLOTS, SUB_INTERVALS};
use super::window::WindowState;
use crate::config::rate_limit::RedisConfig;
use crate::observability::metrics::METRICS;
use once_cell::sync::Lazy;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Check and count in one step, so that gateways racing on one key cannot both take the last
/// slot. `KEYS`: the window's sub-intervals, oldest first; `ARGV`: limit, elapsed fraction of
/// the newest, expiry in ms. Returns `{admitted, count of each sub-interval before}`.
const SLIDING_WINDOW_LUA: &str = r"
local counts = redis.call('MGET', unpack(KEYS))
local used = 0
for i = 1, #KEYS do
  counts[i] = tonumber(counts[i]) or 0
  if i == 1 then
    used = used + counts[i] * (1 - tonumber(ARGV[2]))
  else
    used = used + counts[i]
  end
end
local admitted = 0
if used < tonumber(ARGV[1]) then
  redis.call('INCR', KEYS[#KEYS])
  redis.call('PEXPIRE', KEYS[#KEYS], ARGV[3])
  admitted = 1
end
table.insert(counts, 1, admitted)
return counts
";

static SLIDING_WINDOW: Lazy<redis::Script> = Lazy::new(|| redis::Script::new(SLIDING_WINDOW_LUA));

/// A client for `url` (`redis://`, or `rediss://` for TLS verified against the system's trust
/// store). The message never repeats the URL (it may hold a password).
pub fn client_for(url: &str) -> Result<redis::Client, String> {
    // rustls needs a process-wide crypto provider; installing it twice is harmless.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    redis::Client::open(url).map_err(|e| format!("invalid Redis URL ({:?})", e.kind()))
}

/// Where in time a decision is made, on the wall clock that every gateway of the fleet shares:
/// the sub-interval (a quarter of `per`) since the Unix epoch and its elapsed fraction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Clock {
    pub sub: u64,
    pub fraction: f64,
}

impl Clock {
    pub fn now(per: Duration) -> Clock {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Clock::at(ms, per)
    }

    pub fn at(unix_ms: u64, per: Duration) -> Clock {
        let sub_ms = (per.as_millis() as u64 / SUB_INTERVALS as u64).max(1);
        Clock {
            sub: unix_ms / sub_ms,
            fraction: (unix_ms % sub_ms) as f64 / sub_ms as f64,
        }
    }

    /// The sub-intervals of the window, oldest (sliding out) first.
    pub fn window_subs(&self) -> [u64; SLOTS] {
        std::array::from_fn(|i| self.sub.saturating_sub((SLOTS - 1 - i) as u64))
    }

    /// The window estimate's input for counts of [`Clock::window_subs`].
    pub fn window(&self, counts: [u64; SLOTS]) -> WindowState<SLOTS> {
        WindowState::quarters(counts, self.sub, self.fraction)
    }
}

/// Connections and health of one Redis server, shared by every limit that uses it.
pub struct RedisShared {
    client: redis::Client,
    pool_size: usize,
    pub timeout: Duration,
    pub sync_interval: Duration,
    prefix: String,
    /// Created on first use: the connection manager must be made inside a Tokio runtime.
    conns: OnceLock<Result<Vec<ConnectionManager>, String>>,
    next: AtomicUsize,
    /// Shared with the recovery probe, which sets it when every connection answers again.
    up: Arc<AtomicBool>,
    /// A recovery probe is running (at most one).
    probing: Arc<AtomicBool>,
    /// Dropped with this backend: tells a running probe to stop.
    alive: Arc<()>,
    started: Instant,
    /// While down: milliseconds since `started` before which Redis is not tried again.
    retry_at_ms: AtomicU64,
}

/// How long a failed Redis stays bypassed before one request tries it again (only when no
/// background probe can run: outside a Tokio runtime).
const RETRY_EVERY_MS: u64 = 1000;

/// How often the background probe pings every connection while Redis is down.
const PROBE_EVERY: Duration = Duration::from_millis(200);

impl RedisShared {
    pub fn new(cfg: &RedisConfig) -> Result<RedisShared, String> {
        Ok(RedisShared {
            client: client_for(&cfg.url)?,
            pool_size: cfg.pool_size.max(1),
            timeout: cfg.timeout.0,
            sync_interval: cfg.sync_interval.0,
            prefix: cfg.key_prefix.clone(),
            conns: OnceLock::new(),
            next: AtomicUsize::new(0),
            up: Arc::new(AtomicBool::new(true)),
            probing: Arc::new(AtomicBool::new(false)),
            alive: Arc::new(()),
            started: Instant::now(),
            retry_at_ms: AtomicU64::new(0),
        })
    }

    /// The Redis key of `limit`'s counters for `key`, without the interval suffix.
    pub fn base_key(&self, limit: &str, key: &str) -> String {
        format!("{}:{limit}:{key}", self.prefix)
    }

    /// The Redis key of `limit`'s counter for `key` in sub-interval `sub`.
    pub fn key(&self, limit: &str, key: &str, sub: u64) -> String {
        format!("{}:{sub}", self.base_key(limit, key))
    }

    fn conn(&self) -> Result<ConnectionManager, String> {
        let conns = self.conns.get_or_init(|| {
            let cfg = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(self.timeout))
                .set_response_timeout(Some(self.timeout))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_secs(1));
            (0..self.pool_size)
                .map(|_| {
                    ConnectionManager::new_lazy_with_config(self.client.clone(), cfg.clone())
                        .map_err(|e| e.to_string())
                })
                .collect()
        });
        match conns {
            Ok(list) => {
                let i = self.next.fetch_add(1, Ordering::Relaxed) % list.len();
                Ok(list[i].clone())
            }
            Err(e) => Err(e.clone()),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Whether a request should ask Redis now: always while it is up; while it is down, one
    /// caller per second gets to probe it.
    pub fn usable(&self) -> bool {
        if self.up.load(Ordering::Relaxed) {
            return true;
        }
        if self.probing.load(Ordering::Acquire) {
            // The probe decides when Redis is back; no request waits on a reconnect.
            return false;
        }
        let now = self.now_ms();
        let at = self.retry_at_ms.load(Ordering::Relaxed);
        now >= at
            && self
                .retry_at_ms
                .compare_exchange(
                    at,
                    now + RETRY_EVERY_MS,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub fn failed(&self, what: &str) {
        METRICS.ratelimit_backend_errors.inc();
        self.retry_at_ms
            .store(self.now_ms() + RETRY_EVERY_MS, Ordering::Relaxed);
        if self.up.swap(false, Ordering::AcqRel) {
            tracing::warn!(
                "redis rate-limit backend unavailable ({what}); limits fall back to local estimates"
            );
        }
        self.start_probe();
    }

    /// While Redis is down, ping every pooled connection every [`PROBE_EVERY`] off the request
    /// path; when all answer, shared enforcement resumes. Every connection is pinged, not one:
    /// a `ConnectionManager` whose reconnect failed while Redis was down starts a fresh one only
    /// when it is used, so a probe of one connection at a time would take a round per
    /// connection (the ~4 s of pool_size 4 the issue measured) before requests stop failing.
    fn start_probe(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Some(Ok(conns)) = self.conns.get().cloned() else {
            return;
        };
        if self.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let (up, probing) = (self.up.clone(), self.probing.clone());
        let alive = Arc::downgrade(&self.alive);
        let timeout = self.timeout;
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(PROBE_EVERY).await;
                if alive.upgrade().is_none() {
                    break;
                }
                let mut answered = true;
                for mut conn in conns.iter().cloned() {
                    let cmd = redis::cmd("PING");
                    let ping = cmd.query_async::<String>(&mut conn);
                    if !matches!(tokio::time::timeout(timeout, ping).await, Ok(Ok(_))) {
                        answered = false;
                    }
                }
                if answered {
                    up.store(true, Ordering::Release);
                    tracing::info!(
                        "redis rate-limit backend reachable again; shared limits enforced"
                    );
                    break;
                }
            }
            probing.store(false, Ordering::Release);
        });
    }

    pub fn succeeded(&self) {
        if !self.up.swap(true, Ordering::AcqRel) {
            tracing::info!("redis rate-limit backend reachable again; shared limits enforced");
        }
    }

    /// One atomic check-and-count. `None` when Redis failed (the caller falls back to local).
    /// `keys`: the window's sub-intervals, oldest first. Returns whether the script admitted
    /// (and counted) the request, and the counts before it.
    pub async fn check_atomic(
        &self,
        keys: &[String; SLOTS],
        limit: u64,
        clock: Clock,
        per: Duration,
    ) -> Option<(bool, [u64; SLOTS])> {
        let mut conn = self.connection()?;
        let mut invocation = SLIDING_WINDOW.prepare_invoke();
        for key in keys {
            invocation.key(key);
        }
        invocation
            .arg(limit)
            .arg(clock.fraction)
            .arg(expiry_ms(per));
        let call = invocation.invoke_async::<Vec<u64>>(&mut conn);
        let reply = self.settle(self.timeout, call).await?;
        match reply.split_first() {
            Some((&admitted, counts)) if counts.len() == SLOTS => {
                Some((admitted == 1, counts.try_into().ok()?))
            }
            _ => {
                self.failed("unexpected script reply");
                None
            }
        }
    }

    /// Run a pipeline (batched sync) under the timeout; `None` on failure.
    pub async fn pipeline(&self, pipe: &redis::Pipeline) -> Option<Vec<Option<u64>>> {
        let mut conn = self.connection()?;
        let call = pipe.query_async::<Vec<Option<u64>>>(&mut conn);
        // A sync carries many keys: allow it the interval, not just one command's timeout.
        self.settle(self.timeout.max(self.sync_interval), call)
            .await
    }

    fn connection(&self) -> Option<ConnectionManager> {
        self.conn().map_err(|e| self.failed(&e)).ok()
    }

    /// Await a Redis call under `limit`, recording success or failure for the fail-open switch.
    async fn settle<T>(
        &self,
        limit: Duration,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Option<T> {
        match tokio::time::timeout(limit, call).await {
            Ok(Ok(v)) => {
                self.succeeded();
                Some(v)
            }
            Ok(Err(e)) => {
                self.failed(&format!("{:?}", e.kind()));
                None
            }
            Err(_) => {
                self.failed("timeout");
                None
            }
        }
    }
}

/// How long a sub-interval's counter lives: until it has slid out of the window, with margin.
pub fn expiry_ms(per: Duration) -> u64 {
    (per.as_millis() as u64).saturating_mul(2).max(1)
}

/// A server nobody listens on (port 1), key prefix `tg`: for unit tests that must not touch
/// the network.
#[cfg(test)]
pub(crate) fn unreachable() -> RedisShared {
    RedisShared::new(&RedisConfig {
        url: "redis://127.0.0.1:1".into(),
        pool_size: 1,
        timeout: crate::config::HumanDuration(Duration::from_millis(50)),
        sync_interval: crate::config::HumanDuration(Duration::from_millis(100)),
        key_prefix: "tg".into(),
    })
    .expect("a valid test config")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_splits_wall_time_into_quarters_of_the_window() {
        let c = Clock::at(125_500, Duration::from_secs(60));
        assert_eq!(c.sub, 8);
        assert!((c.fraction - 5.5 / 15.0).abs() < 1e-9);
        assert_eq!(c.window_subs(), [4, 5, 6, 7, 8]);
        let w = c.window([1, 2, 3, 4, 5]);
        assert_eq!(w.counts, [1.0, 2.0, 3.0, 4.0, 5.0]);
        assert!((w.interval_fraction - 5.5 / 60.0).abs() < 1e-9);
        assert_eq!(Clock::at(0, Duration::from_secs(1)).fraction, 0.0);
        assert_eq!(
            Clock::at(500, Duration::from_secs(1)).window_subs(),
            [0, 0, 0, 1, 2]
        );
    }

    #[test]
    fn urls_are_checked_without_echoing_secrets() {
        assert!(client_for("redis://127.0.0.1:6379/0").is_ok());
        assert!(client_for("redis://:pw@127.0.0.1:6379").is_ok());
        assert!(client_for("rediss://:hunter2@cache:6380").is_ok());
        let e = client_for("http://:hunter2@cache").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn keys_name_the_prefix_limit_key_and_interval() {
        let shared = unreachable();
        assert_eq!(
            shared.key("per_ip", "10.0.0.1", 42),
            "tg:per_ip:10.0.0.1:42"
        );
    }

    /// Without a reachable server: one failure flips to local, and Redis is probed again only
    /// after the back-off.
    #[test]
    fn failures_switch_to_local_and_probe_sparingly() {
        let shared = unreachable();
        assert!(shared.usable());
        shared.failed("test");
        assert!(!shared.is_up());
        assert!(!shared.usable(), "no probe during the back-off");
        shared.succeeded();
        assert!(shared.usable());
    }
}
