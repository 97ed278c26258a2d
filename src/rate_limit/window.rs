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
    // Small epsilon: float weighting must not refuse the exact last request of a window.
    let allowed = used + 1.0 <= lim + 1e-9;
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

/// Smallest wait after which `used + 1 <= limit` holds if the client sends nothing meanwhile.
fn seconds_until_admitted(prev: f64, curr: f64, f: f64, lim: f64, w: f64) -> f64 {
    let to_window_end = w * (1.0 - f);
    let excess = prev * (1.0 - f) + curr + 1.0 - lim;
    if excess <= 0.0 {
        return 0.0;
    }
    // Still in this interval: the previous interval's weight decays linearly.
    if prev > 0.0 {
        let t = excess / prev * w;
        if t <= to_window_end {
            return t;
        }
    }
    // Next interval: this interval's count becomes "previous" and decays from there.
    if lim < 1.0 {
        return to_window_end + w; // a zero limit never admits; say "a full window"
    }
    let g = if curr + 1.0 <= lim {
        0.0
    } else {
        1.0 - (lim - 1.0) / curr
    };
    to_window_end + g.clamp(0.0, 1.0) * w
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
        // 10 requests at the very end of the previous interval, 1% into the current one.
        let d = decide(st(10.0, 0.0, 0.01), 10, MIN);
        assert!(!d.allowed, "9.9 used + 1 > 10");
        // Halfway through, half of the previous interval still counts.
        let d = decide(st(10.0, 4.0, 0.5), 10, MIN);
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
    }

    #[test]
    fn retry_after_is_when_a_request_would_succeed() {
        // prev=10 at f=0: used=10. Need prev weight to drop by 1 → 1/10 of the window = 6 s.
        let d = decide(st(10.0, 0.0, 0.0), 10, MIN);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_secs, 6);
        let later = decide(st(10.0, 0.0, 6.0 / 60.0), 10, MIN);
        assert!(later.allowed, "waiting Retry-After is enough");
        // All in the current interval, none before: must cross into the next one.
        // curr=10 at f=0.5: 30 s to the boundary, then curr decays: need 10(1-g)+1<=10 → g=0.1.
        let d = decide(st(0.0, 10.0, 0.5), 10, MIN);
        assert_eq!(d.retry_after_secs, 36);
    }

    #[test]
    fn retry_after_is_at_least_one_second() {
        let d = decide(st(100.0, 0.0, 0.0), 100, Duration::from_secs(1));
        assert!(!d.allowed);
        assert_eq!(d.retry_after_secs, 1);
        assert_eq!(d.reset_secs, 1);
    }
}
