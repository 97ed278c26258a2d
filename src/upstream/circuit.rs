//! Circuit breaker per upstream: when the error ratio over a rolling window passes a threshold
//! (with a minimum volume), the circuit opens and requests get a fast 503 without touching the
//! upstream; after `open_for`, one probe request is let through (half-open): success closes the
//! circuit, failure re-opens it. Transitions are logged and exported as
//! `tollgate_circuit_state{upstream}` (0 closed, 1 open, 2 half-open).

use crate::config::CircuitBreakerConfig;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { probe_started: Option<Instant> },
}

impl Phase {
    pub fn gauge(self) -> i64 {
        match self {
            Phase::Closed => 0,
            Phase::Open { .. } => 1,
            Phase::HalfOpen { .. } => 2,
        }
    }
}

struct State {
    phase: Phase,
    window_start: Instant,
    total: u32,
    errors: u32,
}

pub struct CircuitBreaker {
    upstream: String,
    error_ratio: f64,
    min_requests: u32,
    window: Duration,
    open_for: Duration,
    state: Mutex<State>,
}

/// What the breaker says about the next attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    /// Refused; retry after this many whole seconds (≥ 1).
    Refused {
        retry_after_secs: u64,
    },
}

impl CircuitBreaker {
    pub fn new(upstream: &str, cfg: &CircuitBreakerConfig) -> CircuitBreaker {
        CircuitBreaker {
            upstream: upstream.to_string(),
            error_ratio: cfg.error_ratio,
            min_requests: cfg.min_requests.max(1),
            window: cfg.window.0,
            open_for: cfg.open_for.0,
            state: Mutex::new(State {
                phase: Phase::Closed,
                window_start: Instant::now(),
                total: 0,
                errors: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn phase(&self) -> Phase {
        self.lock().phase
    }

    fn set(&self, s: &mut State, phase: Phase) {
        let name = |p: Phase| match p {
            Phase::Closed => "closed",
            Phase::Open { .. } => "open",
            Phase::HalfOpen { .. } => "half-open",
        };
        if name(s.phase) != name(phase) {
            tracing::warn!(
                "circuit of upstream {}: {} -> {}",
                self.upstream,
                name(s.phase),
                name(phase)
            );
        }
        s.phase = phase;
        crate::observability::metrics::METRICS
            .circuit_state
            .with_label_values(&[self.upstream.as_str()])
            .set(phase.gauge());
    }

    pub fn admit(&self, now: Instant) -> Admission {
        let mut s = self.lock();
        match s.phase {
            Phase::Closed => Admission::Allowed,
            Phase::Open { until } if now < until => Admission::Refused {
                retry_after_secs: (until - now).as_secs_f64().ceil().max(1.0) as u64,
            },
            Phase::Open { .. } => {
                self.set(
                    &mut s,
                    Phase::HalfOpen {
                        probe_started: Some(now),
                    },
                );
                Admission::Allowed
            }
            // One probe at a time; a probe whose outcome never came back expires.
            Phase::HalfOpen { probe_started } => match probe_started {
                Some(t) if now.duration_since(t) < self.open_for => Admission::Refused {
                    retry_after_secs: 1,
                },
                _ => {
                    s.phase = Phase::HalfOpen {
                        probe_started: Some(now),
                    };
                    Admission::Allowed
                }
            },
        }
    }

    pub fn record(&self, failed: bool, now: Instant) {
        let mut s = self.lock();
        match s.phase {
            Phase::Open { .. } => {}
            Phase::HalfOpen { .. } => {
                if failed {
                    self.set(
                        &mut s,
                        Phase::Open {
                            until: now + self.open_for,
                        },
                    );
                } else {
                    s.total = 0;
                    s.errors = 0;
                    s.window_start = now;
                    self.set(&mut s, Phase::Closed);
                }
            }
            Phase::Closed => {
                if now.duration_since(s.window_start) > self.window {
                    s.window_start = now;
                    s.total = 0;
                    s.errors = 0;
                }
                s.total += 1;
                s.errors += u32::from(failed);
                if s.total >= self.min_requests
                    && f64::from(s.errors) / f64::from(s.total) >= self.error_ratio
                {
                    self.set(
                        &mut s,
                        Phase::Open {
                            until: now + self.open_for,
                        },
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> CircuitBreaker {
        let cfg: CircuitBreakerConfig =
            serde_yaml::from_str("{error_ratio: 0.5, min_requests: 4, window: 10s, open_for: 5s}")
                .unwrap();
        CircuitBreaker::new("t", &cfg)
    }

    #[test]
    fn opens_on_error_ratio_with_minimum_volume_then_probes() {
        let b = breaker();
        let t0 = Instant::now();
        for failed in [true, true, true] {
            b.record(failed, t0);
        }
        assert_eq!(b.admit(t0), Admission::Allowed, "below min_requests");
        b.record(false, t0);
        // 3 errors of 4 → open
        assert!(matches!(
            b.admit(t0),
            Admission::Refused {
                retry_after_secs: 5
            }
        ));
        let later = t0 + Duration::from_secs(5);
        assert_eq!(b.admit(later), Admission::Allowed, "half-open probe");
        assert!(
            matches!(b.admit(later), Admission::Refused { .. }),
            "one probe at a time"
        );
        b.record(true, later);
        assert!(
            matches!(b.phase(), Phase::Open { .. }),
            "failed probe re-opens"
        );
        let again = later + Duration::from_secs(5);
        assert_eq!(b.admit(again), Admission::Allowed);
        b.record(false, again);
        assert_eq!(b.phase(), Phase::Closed, "successful probe closes");
    }

    #[test]
    fn the_window_rolls() {
        let b = breaker();
        let t0 = Instant::now();
        for _ in 0..3 {
            b.record(true, t0);
        }
        let t1 = t0 + Duration::from_secs(11);
        b.record(true, t1);
        assert_eq!(b.phase(), Phase::Closed, "old failures left the window");
    }
}
