//! Sliding-window arithmetic, kept pure so every boundary case is unit-testable.
//!
//! The window's count is estimated by weighting the previous interval by the part of it still
//! inside the window: `used = prev × (1 − f) + curr`, `f` = elapsed fraction of the current
//! interval. A fixed window would admit 2× the limit across a boundary; this does not.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowState {
    pub prev: f64,
    pub curr: f64,
    /// Elapsed fraction of the current interval, in `[0, 1)`.
    pub fraction: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u64,
    /// Requests left in the window after this one (0 when refused).
    pub remaining: u64,
    /// Seconds until the current interval ends (`X-RateLimit-Reset`).
    pub reset_secs: u64,
    /// Seconds until a request would be admitted again, assuming the client waits
    /// (`Retry-After`, ≥ 1 when refused, 0 when allowed).
    pub retry_after_secs: u64,
}

pub fn decide(s: WindowState, limit: u64, window: Duration) -> Decision {
    let w = window.as_secs_f64();
    let f = s.fraction.clamp(0.0, 1.0);
    let lim = limit as f64;
    let used = s.prev * (1.0 - f) + s.curr;
    // Admit while the window's estimate is below the limit. (`used + 1 <= limit` would settle a
    // saturating client at limit − 1 per window: the previous interval never weighs exactly 0.)
    let allowed = used < lim - 1e-9;
    let used_after = if allowed { used + 1.0 } else { used };
    let remaining = (lim - used_after + 1e-9).floor().max(0.0) as u64;
    let to_window_end = w * (1.0 - f);
    let reset_secs = (to_window_end.ceil() as u64).max(1);
    let retry_after_secs = if allowed {
        0
    } else {
        let t = seconds_until_admitted(s.prev, s.curr, f, lim, w);
        (t.ceil() as u64).max(1)
    };
    Decision {
        allowed,
        limit,
        remaining,
        reset_secs,
        retry_after_secs,
    }
}

/// Smallest wait after which `used < limit` holds if the client sends nothing meanwhile
/// (plus a millisecond, so that waiting exactly that long is enough).
fn seconds_until_admitted(prev: f64, curr: f64, f: f64, lim: f64, w: f64) -> f64 {
    const MARGIN: f64 = 0.001;
    let to_window_end = w * (1.0 - f);
    let excess = prev * (1.0 - f) + curr - lim;
    if excess < 0.0 {
        return 0.0;
    }
    // Still in this interval: the previous interval's weight decays linearly.
    if prev > 0.0 {
        let t = excess / prev * w + MARGIN;
        if t < to_window_end {
            return t;
        }
    }
    // Next interval: this interval's count becomes "previous" and decays from there.
    if lim <= 0.0 {
        return to_window_end + w; // a zero limit never admits; say "a full window"
    }
    let g = if curr < lim { 0.0 } else { 1.0 - lim / curr };
    to_window_end + g.clamp(0.0, 1.0) * w + MARGIN
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn st(prev: f64, curr: f64, fraction: f64) -> WindowState {
        WindowState {
            prev,
            curr,
            fraction,
        }
    }

    #[test]
    fn fresh_window_admits_up_to_the_limit() {
        let d = decide(st(0.0, 0.0, 0.0), 10, MIN);
        assert!(d.allowed);
        assert_eq!(d.remaining, 9);
        assert_eq!(d.reset_secs, 60);
        let d = decide(st(0.0, 9.0, 0.5), 10, MIN);
        assert!(d.allowed, "the 10th request is admitted");
        assert_eq!(d.remaining, 0);
        assert_eq!(d.reset_secs, 30);
        let d = decide(st(0.0, 10.0, 0.5), 10, MIN);
        assert!(!d.allowed);
        assert_eq!(d.remaining, 0);
    }

    #[test]
    fn the_previous_interval_weighs_in_so_a_boundary_does_not_double_the_limit() {
        // 10 requests at the very end of the previous interval, 1% into the current one:
        // 9.9 of them still count, so one more fits and then the window is full.
        let d = decide(st(10.0, 0.0, 0.01), 10, MIN);
        assert!(d.allowed);
        assert!(!decide(st(10.0, 1.0, 0.01), 10, MIN).allowed);
        // Halfway through, half of the previous interval still counts.
        let d = decide(st(10.0, 4.0, 0.5), 10, MIN);
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
        assert!(!decide(st(10.0, 5.0, 0.5), 10, MIN).allowed);
    }

    #[test]
    fn a_saturating_client_is_admitted_at_the_limit_not_below() {
        // Steady state: the previous interval was full; by the end of this one the client
        // must have been able to send `limit` again.
        let (mut prev, limit) = (2.0, 2u64);
        for _ in 0..5 {
            let mut curr = 0.0;
            for step in 0..1000 {
                let f = step as f64 / 1000.0;
                if decide(st(prev, curr, f), limit, MIN).allowed {
                    curr += 1.0;
                }
            }
            assert_eq!(curr, 2.0);
            prev = curr;
        }
    }

    #[test]
    fn retry_after_is_when_a_request_would_succeed() {
        // prev=20 at f=0, limit 10: the previous weight must fall below 10: half the window.
        let d = decide(st(20.0, 0.0, 0.0), 10, MIN);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_secs, 31);
        assert!(
            decide(st(20.0, 0.0, 31.0 / 60.0), 10, MIN).allowed,
            "waiting Retry-After is enough"
        );
        assert!(
            !decide(st(20.0, 0.0, 29.0 / 60.0), 10, MIN).allowed,
            "and it is not much too long"
        );
        // All in the current interval: cross the boundary, then this interval's count decays.
        // curr=20 at f=0.5: 30 s to the boundary, then 20(1-g) < 10 → g > 0.5 → 30 more.
        let d = decide(st(0.0, 20.0, 0.5), 10, MIN);
        assert_eq!(d.retry_after_secs, 61);
    }

    #[test]
    fn retry_after_is_at_least_one_second() {
        let d = decide(st(100.0, 0.0, 0.0), 100, Duration::from_secs(1));
        assert!(!d.allowed);
        assert_eq!(d.retry_after_secs, 1);
        assert_eq!(d.reset_secs, 1);
    }
}
