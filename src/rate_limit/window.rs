//! Sliding-window arithmetic, kept pure so every boundary case is unit-testable.
//!
//! A window of length `per` is covered by `B` consecutive sub-intervals on fixed boundaries,
//! each `per / (B − 1)` long: the oldest is the one sliding out of the window, the newest the
//! one the clock is in. The window's count is estimated by weighting the oldest by the part of
//! it still inside the window: `used = c₀ × (1 − f) + c₁ + … + c_{B−1}`, `f` = elapsed fraction
//! of the newest sub-interval. With `B = 2` this is the classic previous/current interpolation;
//! more, shorter sub-intervals bound the error of assuming that the oldest one's requests were
//! spread evenly over it (a client that spent its budget late in an interval would otherwise
//! get part of it back early). A fixed window would admit 2× the limit across a boundary;
//! neither does.

use super::sliding::{SLOTS, SUB_INTERVALS};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowState<const B: usize> {
    /// Admitted requests per sub-interval, oldest first.
    pub counts: [f64; B],
    /// Elapsed fraction of the newest sub-interval, in `[0, 1)`.
    pub fraction: f64,
    /// Elapsed fraction of the whole `per` interval (fixed boundaries), for
    /// `X-RateLimit-Reset`; equal to `fraction` when `B = 2`.
    pub interval_fraction: f64,
}

impl WindowState<SLOTS> {
    /// The window's quarter counts (oldest first) at elapsed `fraction` of quarter `sub`, the
    /// quarters being numbered from an origin on the `per` grid (the local sketch's start, or
    /// the Unix epoch for Redis).
    pub fn quarters(counts: [u64; SLOTS], sub: u64, fraction: f64) -> Self {
        let within = (sub % SUB_INTERVALS as u64) as f64;
        WindowState {
            counts: counts.map(|c| c as f64),
            fraction,
            interval_fraction: (within + fraction) / SUB_INTERVALS as f64,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u64,
    /// Requests left in the window after this one (0 when refused).
    pub remaining: u64,
    /// Seconds until the current interval ends, or until a request would be admitted again
    /// when that is later (`X-RateLimit-Reset`).
    pub reset_secs: u64,
    /// Seconds until a request would be admitted again, assuming the client waits
    /// (`Retry-After`, ≥ 1 when refused, 0 when allowed).
    pub retry_after_secs: u64,
}

pub fn decide<const B: usize>(s: WindowState<B>, limit: u64, window: Duration) -> Decision {
    let w = window.as_secs_f64();
    let f = s.fraction.clamp(0.0, 1.0);
    let lim = limit as f64;
    let used = s.counts[0] * (1.0 - f) + s.counts[1..].iter().sum::<f64>();
    // Admit while the window's estimate is below the limit. (`used + 1 <= limit` would settle a
    // saturating client at limit − 1 per window: the oldest part never weighs exactly 0.)
    let allowed = used < lim - 1e-9;
    let used_after = if allowed { used + 1.0 } else { used };
    let remaining = (lim - used_after + 1e-9).floor().max(0.0) as u64;
    let to_interval_end = w * (1.0 - s.interval_fraction.clamp(0.0, 1.0));
    let retry_after_secs = if allowed {
        0
    } else {
        let sub = w / (B.max(2) - 1) as f64;
        let t = sub_intervals_until_admitted(&s.counts, f, lim) * sub;
        (t.ceil() as u64).max(1)
    };
    // Budget comes back sub-interval by sub-interval, not all at the interval's end: a refused
    // client must not be told its quota resets before it may send again.
    let reset_secs = (to_interval_end.ceil() as u64).max(1).max(retry_after_secs);
    Decision {
        allowed,
        limit,
        remaining,
        reset_secs,
        retry_after_secs,
    }
}

/// Smallest wait, in sub-intervals, after which `used < limit` holds if the client sends
/// nothing meanwhile (plus a margin, so that waiting exactly that long is enough).
///
/// The sub-intervals slide out one after the other: first the oldest, over what is left of the
/// current sub-interval, then each next one over a whole sub-interval; while one slides out its
/// weight falls linearly and the younger ones count in full.
fn sub_intervals_until_admitted(counts: &[f64], f: f64, lim: f64) -> f64 {
    const MARGIN: f64 = 0.001;
    if lim <= 0.0 {
        // A zero limit never admits; say "a full window".
        return (counts.len() - 1) as f64 + (1.0 - f);
    }
    let mut start = 0.0;
    for (j, &sliding) in counts.iter().enumerate() {
        let weight = if j == 0 { 1.0 - f } else { 1.0 };
        let younger: f64 = counts[j + 1..].iter().sum();
        if younger < lim {
            let needed = if sliding > 0.0 {
                weight - (lim - younger) / sliding
            } else {
                0.0
            };
            return start + needed.max(0.0) + MARGIN;
        }
        start += weight;
    }
    start + MARGIN
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    /// The previous/current form (`B = 2`).
    fn st(prev: f64, curr: f64, fraction: f64) -> WindowState<2> {
        WindowState {
            counts: [prev, curr],
            fraction,
            interval_fraction: fraction,
        }
    }

    #[test]
    fn a_quarter_places_the_clock_in_its_interval() {
        let s = WindowState::quarters([1, 2, 3, 4, 5], 6, 0.5);
        assert_eq!(s.counts, [1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!((s.fraction, s.interval_fraction), (0.5, 0.625));
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

    /// A client sending 3× its limit for three windows, starting at every phase of a
    /// sub-interval grid, against the sub-interval counts the sketch keeps.
    fn admitted_over_three_windows<const B: usize>(limit: u64, phase: f64) -> u64 {
        let sub = 1.0 / (B - 1) as f64;
        let mut counts = std::collections::HashMap::<i64, f64>::new();
        let mut admitted = 0;
        for i in 0..3 * 3 * limit {
            let t = phase + i as f64 / (3 * limit) as f64;
            let epoch = (t / sub).floor() as i64;
            let state = WindowState::<B> {
                counts: std::array::from_fn(|j| {
                    *counts.get(&(epoch - (B - 1 - j) as i64)).unwrap_or(&0.0)
                }),
                fraction: t / sub - epoch as f64,
                interval_fraction: t.fract(),
            };
            if decide(state, limit, Duration::from_secs(1)).allowed {
                *counts.entry(epoch).or_default() += 1.0;
                admitted += 1;
            }
        }
        admitted
    }

    #[test]
    fn a_client_starting_late_in_an_interval_is_held_within_ten_percent() {
        for step in 0..40 {
            let phase = step as f64 / 40.0;
            let admitted = admitted_over_three_windows::<5>(20, phase);
            assert!((60..=66).contains(&admitted), "phase {phase}: {admitted}");
        }
        // Why sub-intervals: with previous/current only, a start at 0.65 gets 73.
        assert_eq!(admitted_over_three_windows::<2>(20, 0.65), 73);
    }

    /// Five quarter counts of a one-minute window at `fraction` of the newest quarter (and of
    /// the interval: enough for these tests).
    fn quarters(counts: [f64; 5], fraction: f64) -> WindowState<5> {
        WindowState {
            counts,
            fraction,
            interval_fraction: fraction,
        }
    }

    #[test]
    fn retry_after_waits_for_the_sub_intervals_to_slide_out() {
        // A minute in 15 s sub-intervals; 20 requests in the newest, limit 10: four boundaries
        // until they are the oldest, then half of that one more.
        let d = decide(quarters([0.0, 0.0, 0.0, 0.0, 20.0], 0.0), 10, MIN);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_secs, 68);
        let later = |fraction| quarters([20.0, 0.0, 0.0, 0.0, 0.0], fraction);
        assert!(decide(later(8.0 / 15.0), 10, MIN).allowed);
        assert!(!decide(later(7.0 / 15.0), 10, MIN).allowed);
        // Younger sub-intervals already over the limit: the oldest alone cannot free enough.
        let d = decide(quarters([5.0, 6.0, 6.0, 0.0, 0.0], 0.5), 10, MIN);
        // used = 2.5 + 12: wait 0.5 sub for the oldest, then 1 − (10 − 6)/6 of the next.
        assert_eq!(
            d.retry_after_secs,
            ((0.5 + 1.0 / 3.0 + 0.001) * 15.0f64).ceil() as u64
        );
        assert_eq!(d.reset_secs, 30);
    }
}
