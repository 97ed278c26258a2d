//! Two count-min sketches (previous and current interval) rotated on fixed interval
//! boundaries.
//!
//! `pingora_limits::rate::Rate` restarts its interval at the first event after a boundary, so
//! after a pause of one to two intervals the old interval's count comes back at almost full
//! weight and a quiet client is refused. Here interval `n` always spans
//! `[start + n·per, start + (n+1)·per)`: the weight of the previous interval decays with the
//! clock, not with traffic. The sketches themselves are pingora-limits' lock-free
//! [`Estimator`].

use pingora_limits::estimator::Estimator;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct SlidingCounter {
    slots: [Estimator; 2],
    start: Instant,
    interval_ms: u64,
    /// The interval number the slots currently describe.
    epoch: AtomicU64,
}

/// Counts seen for one key: previous interval, current interval, elapsed fraction of current.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub prev: isize,
    pub curr: isize,
    pub fraction: f64,
}

impl SlidingCounter {
    pub fn new(interval: Duration, hashes: usize, slots: usize) -> SlidingCounter {
        SlidingCounter {
            slots: [Estimator::new(hashes, slots), Estimator::new(hashes, slots)],
            start: Instant::now(),
            interval_ms: (interval.as_millis() as u64).max(1),
            epoch: AtomicU64::new(0),
        }
    }

    fn now(&self) -> (u64, f64) {
        let ms = self.start.elapsed().as_millis() as u64;
        (
            ms / self.interval_ms,
            (ms % self.interval_ms) as f64 / self.interval_ms as f64,
        )
    }

    /// Move to interval `epoch`: its slot held interval `epoch − 2` and is cleared; if a whole
    /// interval passed without traffic, the previous slot is stale too.
    fn rotate(&self, epoch: u64) {
        let seen = self.epoch.load(Ordering::Acquire);
        if epoch <= seen {
            return;
        }
        if self
            .epoch
            .compare_exchange(seen, epoch, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.slots[(epoch % 2) as usize].reset();
            if epoch - seen >= 2 {
                self.slots[((epoch + 1) % 2) as usize].reset();
            }
        }
    }

    pub fn sample<K: Hash>(&self, key: &K) -> Sample {
        let (epoch, fraction) = self.now();
        self.rotate(epoch);
        let curr = self.slots[(epoch % 2) as usize].get(key);
        let prev = if epoch == 0 {
            0
        } else {
            self.slots[((epoch + 1) % 2) as usize].get(key)
        };
        Sample {
            prev,
            curr,
            fraction,
        }
    }

    pub fn observe<K: Hash>(&self, key: &K) {
        let (epoch, _) = self.now();
        self.rotate(epoch);
        self.slots[(epoch % 2) as usize].incr(key, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_move_to_previous_then_vanish_with_the_clock() {
        let c = SlidingCounter::new(Duration::from_millis(200), 4, 1024);
        for _ in 0..5 {
            c.observe(&"k");
        }
        let s = c.sample(&"k");
        // The events sit in the current interval, or the previous one if a boundary passed.
        assert_eq!(s.prev + s.curr, 5);
        assert_eq!(c.sample(&"other").curr, 0);
        std::thread::sleep(Duration::from_millis(450));
        let s = c.sample(&"k");
        assert_eq!(
            (s.prev, s.curr),
            (0, 0),
            "two intervals later nothing remains"
        );
    }
}
