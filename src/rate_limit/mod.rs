//! In-process, estimated rate limiting on `pingora-limits`.
//!
//! One [`sliding::SlidingCounter`] (two pingora-limits count-min sketches: previous and current
//! interval, on fixed boundaries) per configured limit; the hot path is a few atomic loads and
//! one atomic add per sketch row.
//! Only admitted requests are counted, so a client hammering at 3× its limit is admitted at its
//! limit rather than locked out for ever.

pub mod key;
pub mod sliding;
pub mod window;

use crate::config::rate_limit::{RateLimitConfig, Stage};
use crate::config::Config;
use key::{KeyKind, KeyValue, RequestFacts};
use sliding::SlidingCounter;
use std::time::Duration;
use window::{decide, Decision, WindowState};

/// Rows of each sketch. Four rows make an all-rows collision of a quiet key vanishingly rare.
const HASHES: usize = 4;

pub struct Limit {
    pub name: String,
    pub kind: KeyKind,
    pub requests: u64,
    pub per: Duration,
    pub stage: Stage,
    counter: SlidingCounter,
}

/// Sketch columns for an expected key count: twice the keys, at least 1024.
pub fn slots_for(expected_clients: usize) -> usize {
    (expected_clients.saturating_mul(2)).max(1024)
}

impl Limit {
    pub fn new(name: &str, cfg: &RateLimitConfig) -> Result<Limit, String> {
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
        })
    }

    /// Decide without counting.
    pub fn peek(&self, key: &KeyValue<'_>) -> Decision {
        let s = self.counter.sample(key);
        decide(
            WindowState {
                prev: s.prev.max(0) as f64,
                curr: s.curr.max(0) as f64,
                fraction: s.fraction,
            },
            self.requests,
            self.per,
        )
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

/// The outcome of checking a route's limits at one stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// The decision to report in headers: the refusing limit, else the tightest one.
    pub decision: Decision,
    /// Index of the limit that `decision` belongs to.
    pub limit: usize,
}

pub struct RateLimiter {
    limits: Vec<Limit>,
}

impl RateLimiter {
    pub fn build(config: &Config) -> Result<RateLimiter, Vec<crate::config::Problem>> {
        let mut limits = Vec::new();
        let mut problems = Vec::new();
        for (name, cfg) in &config.rate_limits {
            match Limit::new(name, cfg) {
                Ok(l) => limits.push(l),
                Err(m) => problems.push(crate::config::Problem::new(
                    format!("rate_limits.{name}.key"),
                    m,
                )),
            }
        }
        if problems.is_empty() {
            Ok(RateLimiter { limits })
        } else {
            Err(problems)
        }
    }

    pub fn index(&self, name: &str) -> Option<usize> {
        self.limits.iter().position(|l| l.name == name)
    }

    pub fn limit(&self, i: usize) -> &Limit {
        &self.limits[i]
    }

    /// Check the route's limits of one stage; all must pass, and only then is each counted.
    /// Returns `None` when the route has no limit at this stage.
    pub fn check(
        &self,
        route_limits: &[usize],
        stage: Stage,
        facts: &RequestFacts<'_>,
    ) -> Option<Verdict> {
        let mut verdict: Option<Verdict> = None;
        let mut refused = false;
        for &i in route_limits {
            let limit = &self.limits[i];
            if limit.stage != stage {
                continue;
            }
            let d = limit.peek(&key::value(&limit.kind, facts));
            let replace = match &verdict {
                None => true,
                Some(v) if !d.allowed => {
                    // Among refusals, report the one that keeps the client waiting longest.
                    !refused || d.retry_after_secs > v.decision.retry_after_secs
                }
                Some(v) => !refused && tighter(&d, &v.decision),
            };
            if !d.allowed {
                refused = true;
            }
            if replace {
                verdict = Some(Verdict {
                    decision: d,
                    limit: i,
                });
            }
        }
        if !refused && verdict.is_some() {
            for &i in route_limits {
                let limit = &self.limits[i];
                if limit.stage == stage {
                    limit.record(&key::value(&limit.kind, facts));
                }
            }
        }
        verdict
    }
}

/// Fewer requests left is tighter; on a tie, the smaller limit.
pub fn tighter(a: &Decision, b: &Decision) -> bool {
    (a.remaining, a.limit) < (b.remaining, b.limit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn limit(requests: u64, per: &str, key: &str) -> Limit {
        let cfg: RateLimitConfig =
            serde_yaml::from_str(&format!("{{key: {key}, requests: {requests}, per: {per}}}"))
                .unwrap();
        Limit::new("t", &cfg).unwrap()
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
