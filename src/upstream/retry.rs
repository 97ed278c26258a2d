//! When a request may be sent again, and how long to wait first.
//!
//! Two kinds of retry, with different safety:
//! - a **connect failure** never reached the backend's application, so it is always retried on
//!   another backend (bounded by `retries`);
//! - a failure **after the request was sent** (an answer listed in `retry_on.statuses`, a reset,
//!   a read timeout) may have had effects, so it is retried only for idempotent methods, only
//!   when `retry_on` lists it, only while the request body is still replayable, only before
//!   anything was sent to the client, after a jittered backoff, and only while the upstream's
//!   retry budget has room — so retries cannot multiply the load of an upstream in trouble.

use crate::config::{RetryBudgetConfig, RetryError, RetryOnConfig};
use pingora::{Error, ErrorSource, ErrorType};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Why an attempt failed after the request was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Status(u16),
    Reset,
    Timeout,
}

impl Failure {
    /// Classify a proxy error raised after connecting; `None` for errors that are not the
    /// upstream's (the client went away, an internal error) or not retryable at all.
    pub fn of_error(e: &Error) -> Option<Failure> {
        if *e.esource() != ErrorSource::Upstream {
            return None;
        }
        match e.etype() {
            ErrorType::ReadTimedout | ErrorType::WriteTimedout => Some(Failure::Timeout),
            ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError => {
                Some(Failure::Reset)
            }
            _ => None,
        }
    }

    /// Metric label.
    pub fn reason(self) -> &'static str {
        match self {
            Failure::Status(_) => "status",
            Failure::Reset => "reset",
            Failure::Timeout => "timeout",
        }
    }
}

/// `retry_on` of one upstream, compiled.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    statuses: Vec<u16>,
    reset: bool,
    timeout: bool,
    backoff: Duration,
    max_backoff: Duration,
}

impl RetryPolicy {
    pub fn new(cfg: &RetryOnConfig) -> RetryPolicy {
        RetryPolicy {
            statuses: cfg.statuses.clone(),
            reset: cfg.errors.contains(&RetryError::Reset),
            timeout: cfg.errors.contains(&RetryError::Timeout),
            backoff: cfg.backoff.0,
            max_backoff: cfg.max_backoff.0,
        }
    }

    pub fn covers(&self, failure: Failure) -> bool {
        match failure {
            Failure::Status(s) => self.statuses.contains(&s),
            Failure::Reset => self.reset,
            Failure::Timeout => self.timeout,
        }
    }

    /// "Full jitter" exponential backoff before post-send retry number `retry` (1-based):
    /// uniformly random in `[0, min(max, base·2^(retry-1))]`, so clients that failed together
    /// do not come back together.
    pub fn backoff(&self, retry: u32, unit_random: f64) -> Duration {
        let exp = retry.saturating_sub(1).min(16);
        let cap = self
            .backoff
            .saturating_mul(1u32 << exp)
            .min(self.max_backoff);
        cap.mul_f64(unit_random.clamp(0.0, 1.0))
    }
}

/// Methods whose repetition has no additional effect (RFC 9110 §9.2.2), minus the unsafe-free
/// rest (TRACE, CONNECT) that a gateway never needs to repeat.
pub fn idempotent(method: &http::Method) -> bool {
    use http::Method;
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    )
}

/// Whether sending this request again is safe at all: an idempotent method, a body still held
/// whole in Pingora's retry buffer, and nothing of an answer sent to the client yet.
pub fn replayable(session: &pingora::proxy::Session) -> bool {
    idempotent(&session.req_header().method)
        && !session.as_ref().retry_buffer_truncated()
        && session.response_written().is_none()
}

/// Fixed-point tokens: 1 retry = `SCALE`.
const SCALE: i64 = 1000;

/// Retries may add at most `ratio` of the requests sent to an upstream, plus a floor of
/// `min_per_second` so that a quiet upstream can still retry at all. Lock-free: every request
/// deposits `ratio` of a token (capped, so a long healthy period does not bank an avalanche);
/// a retry spends a whole token or, failing that, a slot of this second's floor.
pub struct RetryBudget {
    deposit: i64,
    cap: i64,
    tokens: AtomicI64,
    min_per_second: u64,
    /// Second (since the epoch) and count of floor retries used in it, packed: `sec << 20 | n`.
    floor: AtomicU64,
}

impl RetryBudget {
    pub fn new(cfg: &RetryBudgetConfig) -> RetryBudget {
        let deposit = (cfg.ratio * SCALE as f64).round() as i64;
        RetryBudget {
            deposit,
            // Ten seconds of floor, or 100 retries' worth, whichever is larger.
            cap: (i64::from(cfg.min_per_second) * 10).max(100) * SCALE,
            tokens: AtomicI64::new(0),
            min_per_second: u64::from(cfg.min_per_second).min((1 << 20) - 1),
            floor: AtomicU64::new(0),
        }
    }

    /// Called once per request sent to the upstream (not per attempt).
    pub fn deposit(&self) {
        if self.deposit == 0 {
            return;
        }
        let now = self.tokens.fetch_add(self.deposit, Ordering::Relaxed) + self.deposit;
        if now > self.cap {
            // Racing deposits may overshoot the cap a little; it is a bound, not an invariant.
            self.tokens.fetch_min(self.cap, Ordering::Relaxed);
        }
    }

    /// Take one retry from the budget; false when the budget is exhausted.
    pub fn try_withdraw(&self) -> bool {
        self.try_withdraw_at(unix_secs())
    }

    fn try_withdraw_at(&self, sec: u64) -> bool {
        let took = self
            .tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                (t >= SCALE).then_some(t - SCALE)
            });
        if took.is_ok() {
            return true;
        }
        self.floor
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |packed| {
                let (s, n) = (packed >> 20, packed & ((1 << 20) - 1));
                let n = if s == sec { n } else { 0 };
                (n < self.min_per_second).then_some((sec << 20) | (n + 1))
            })
            .is_ok()
    }
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HumanDuration;

    fn policy() -> RetryPolicy {
        RetryPolicy::new(&RetryOnConfig {
            statuses: vec![502, 503],
            errors: vec![RetryError::Reset],
            backoff: HumanDuration(Duration::from_millis(20)),
            max_backoff: HumanDuration(Duration::from_millis(100)),
        })
    }

    #[test]
    fn only_listed_failures_are_covered() {
        let p = policy();
        assert!(p.covers(Failure::Status(503)));
        assert!(!p.covers(Failure::Status(500)));
        assert!(p.covers(Failure::Reset));
        assert!(!p.covers(Failure::Timeout));
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let p = policy();
        assert_eq!(p.backoff(1, 1.0), Duration::from_millis(20));
        assert_eq!(p.backoff(2, 1.0), Duration::from_millis(40));
        assert_eq!(p.backoff(3, 1.0), Duration::from_millis(80));
        assert_eq!(p.backoff(4, 1.0), Duration::from_millis(100));
        assert_eq!(p.backoff(40, 1.0), Duration::from_millis(100));
        assert_eq!(p.backoff(3, 0.0), Duration::ZERO);
        assert_eq!(p.backoff(3, 0.5), Duration::from_millis(40));
    }

    #[test]
    fn errors_are_classified_by_source_and_kind() {
        let mut e = Error::new(ErrorType::ConnectionClosed);
        e.as_up();
        assert_eq!(Failure::of_error(&e), Some(Failure::Reset));
        let mut e = Error::new(ErrorType::ReadTimedout);
        e.as_up();
        assert_eq!(Failure::of_error(&e), Some(Failure::Timeout));
        // The client hanging up is no reason to hit the upstream again.
        let mut e = Error::new(ErrorType::ConnectionClosed);
        e.as_down();
        assert_eq!(Failure::of_error(&e), None);
        let mut e = Error::new(ErrorType::InvalidHTTPHeader);
        e.as_up();
        assert_eq!(Failure::of_error(&e), None);
    }

    #[test]
    fn only_idempotent_methods() {
        for m in ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"] {
            assert!(idempotent(&m.parse().unwrap()), "{m}");
        }
        for m in ["POST", "PATCH", "CONNECT"] {
            assert!(!idempotent(&m.parse().unwrap()), "{m}");
        }
    }

    #[test]
    fn budget_allows_ratio_of_requests_plus_floor() {
        let budget = RetryBudget::new(&RetryBudgetConfig {
            ratio: 0.2,
            min_per_second: 3,
        });
        for _ in 0..100 {
            budget.deposit();
        }
        let sec = 1_000;
        let allowed = (0..100).filter(|_| budget.try_withdraw_at(sec)).count();
        // 20 from the ratio, 3 from this second's floor.
        assert_eq!(allowed, 23);
        // The floor renews each second; the ratio part does not without new requests.
        let next = (0..100).filter(|_| budget.try_withdraw_at(sec + 1)).count();
        assert_eq!(next, 3);
    }

    #[test]
    fn budget_is_capped_so_quiet_times_do_not_bank_an_avalanche() {
        let budget = RetryBudget::new(&RetryBudgetConfig {
            ratio: 1.0,
            min_per_second: 0,
        });
        for _ in 0..1_000_000 {
            budget.deposit();
        }
        let allowed = (0..10_000).filter(|_| budget.try_withdraw_at(5)).count();
        assert_eq!(allowed, 100);
    }

    #[test]
    fn zero_ratio_leaves_only_the_floor() {
        let budget = RetryBudget::new(&RetryBudgetConfig {
            ratio: 0.0,
            min_per_second: 2,
        });
        for _ in 0..100 {
            budget.deposit();
        }
        assert_eq!((0..10).filter(|_| budget.try_withdraw_at(7)).count(), 2);
    }
}
