//! A count-min sketch of admitted requests per key, in [`SUB_INTERVALS`] sub-intervals of the
//! window on fixed boundaries (plus the one sliding out).
//!
//! Why not `pingora_limits::rate::Rate`: it restarts its interval at the first event after a
//! boundary, so after a pause of one to two intervals the old count comes back at almost full
//! weight and a quiet client is refused. Here sub-interval `n` always spans
//! `[start + n·sub, start + (n+1)·sub)`: old counts decay with the clock, not with traffic.
//!
//! Why not two `pingora_limits` estimators (previous and current interval), as before: the
//! interpolation assumes the previous interval's requests were spread evenly over it. A client
//! that started 0.65 s into a 1 s interval at 3× its limit spent its whole budget in the last
//! third, and got it back over the next interval as if spent evenly: 73 admitted in 3 s for a
//! limit of 20/s (+22%). Four sub-intervals cut that error to ≤ ~7% (see `window`).
//!
//! Layout: each sketch cell holds the [`SLOTS`] sub-interval counters of one column next to
//! each other, so a decision hashes the key once and reads one short run of memory per row.
//! Each 64-bit counter carries its sub-interval's number (32 bits) next to its count (32
//! bits): a counter written in an older sub-interval reads as 0, so nothing is ever swept on
//! the request path (the two estimators had to zero a whole sketch at every boundary). The
//! number wraps after 2³² sub-intervals (34 years of 1 s windows); a narrower tag (8 bits were
//! tried) brings an idle key's old counts back whenever it returns a multiple of the tag's
//! period later. A count saturates at [`MAX_COUNT`], which config validation keeps at or above
//! every limit, so a saturated counter always refuses.

use super::window::WindowState;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Sub-intervals per window: the estimate's worst error for a client at 3× its limit over
/// three windows is ~1/(2·4) of the limit (+22% with one interval, +12% with two).
pub const SUB_INTERVALS: usize = 4;
/// Counters per cell: the sub-intervals inside the window plus the one sliding out.
pub const SLOTS: usize = SUB_INTERVALS + 1;

const COUNT_BITS: u32 = 32;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

/// The largest limit a sketch can enforce: counts saturate here.
pub const MAX_COUNT: u64 = COUNT_MASK;

pub struct SlidingCounter {
    /// `rows × columns × SLOTS` counters, each `sub-interval << 32 | count`.
    cells: Box<[AtomicU64]>,
    rows: usize,
    columns: usize,
    hasher: ahash::RandomState,
    start: Instant,
    sub_micros: u64,
}

impl SlidingCounter {
    pub fn new(window: Duration, rows: usize, columns: usize) -> SlidingCounter {
        let (rows, columns) = (rows.max(1), columns.max(1));
        SlidingCounter {
            cells: zeroed_counters(rows * columns * SLOTS),
            rows,
            columns,
            hasher: ahash::RandomState::new(),
            start: Instant::now(),
            sub_micros: (window.as_micros() as u64 / SUB_INTERVALS as u64).max(1),
        }
    }

    /// Sub-interval number and its elapsed fraction.
    fn now(&self) -> (u64, f64) {
        let us = self.start.elapsed().as_micros() as u64;
        (
            us / self.sub_micros,
            (us % self.sub_micros) as f64 / self.sub_micros as f64,
        )
    }

    /// The key's cell in each row: one hash, rows derived by double hashing.
    fn cells_of<K: Hash>(&self, key: &K) -> impl Iterator<Item = &[AtomicU64]> + '_ {
        let h = self.hasher.hash_one(key);
        let (h1, h2) = (h & 0xffff_ffff, (h >> 32) | 1);
        (0..self.rows as u64).map(move |r| {
            let column = (h1.wrapping_add(r.wrapping_mul(h2)) % self.columns as u64) as usize;
            let at = (r as usize * self.columns + column) * SLOTS;
            &self.cells[at..at + SLOTS]
        })
    }

    /// The key's window now, for [`super::window::decide`].
    pub fn sample<K: Hash>(&self, key: &K) -> WindowState<SLOTS> {
        let (epoch, fraction) = self.now();
        WindowState::quarters(self.counts_at(key, epoch), epoch, fraction)
    }

    /// The key's count in each sub-interval of the window ending with `epoch`, oldest first.
    fn counts_at<K: Hash>(&self, key: &K, epoch: u64) -> [u64; SLOTS] {
        let mut counts = [u64::MAX; SLOTS];
        for cell in self.cells_of(key) {
            for (i, count) in counts.iter_mut().enumerate() {
                // Oldest first: slot i holds sub-interval `epoch − (SLOTS − 1 − i)`.
                let sub = epoch.checked_sub((SLOTS - 1 - i) as u64);
                let seen = sub.map_or(0, |sub| read(&cell[slot(sub)], sub));
                *count = (*count).min(seen);
            }
        }
        counts
    }

    pub fn observe<K: Hash>(&self, key: &K) {
        self.observe_at(key, self.now().0);
    }

    fn observe_at<K: Hash>(&self, key: &K, epoch: u64) {
        for cell in self.cells_of(key) {
            let counter = &cell[slot(epoch)];
            let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(if v >> COUNT_BITS == tag(epoch) {
                    (v & !COUNT_MASK) | ((v & COUNT_MASK) + 1).min(COUNT_MASK)
                } else {
                    tag(epoch) << COUNT_BITS | 1
                })
            });
        }
    }
}

/// `n` zero counters from zeroed memory, so that the allocator can hand out fresh pages that
/// become resident only when a key first hashes to them: a sketch sized for 100,000 clients
/// costs RSS in proportion to the clients actually seen, not 32 MB at start.
fn zeroed_counters(n: usize) -> Box<[AtomicU64]> {
    let memory = Box::<[AtomicU64]>::new_zeroed_slice(n);
    // SAFETY: `AtomicU64` has the same in-memory representation as `u64`, for which all-zero
    // bytes are a valid value (0).
    unsafe { memory.assume_init() }
}

fn slot(sub: u64) -> usize {
    (sub % SLOTS as u64) as usize
}

fn tag(sub: u64) -> u64 {
    sub & COUNT_MASK
}

/// The counter's count if it was written in sub-interval `sub`, else 0.
fn read(counter: &AtomicU64, sub: u64) -> u64 {
    let v = counter.load(Ordering::Relaxed);
    if v >> COUNT_BITS == tag(sub) {
        v & COUNT_MASK
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_slide_out_one_sub_interval_after_the_other() {
        // 400 ms window: 100 ms sub-intervals.
        let c = SlidingCounter::new(Duration::from_millis(400), 4, 1024);
        for _ in 0..5 {
            c.observe(&"k");
        }
        let s = c.sample(&"k");
        // The events sit in the newest sub-interval, or the one before if a boundary passed.
        assert_eq!(s.counts.iter().sum::<f64>(), 5.0);
        assert!(
            s.counts[SLOTS - 1] == 5.0 || s.counts[SLOTS - 2] == 5.0,
            "{s:?}"
        );
        assert_eq!(c.sample(&"other").counts, [0.0; SLOTS]);
        std::thread::sleep(Duration::from_millis(520));
        assert_eq!(
            c.sample(&"k").counts,
            [0.0; SLOTS],
            "a window and a sub-interval later nothing remains"
        );
    }

    #[test]
    fn old_counts_read_as_zero_when_their_slot_comes_round_again() {
        let c = SlidingCounter::new(Duration::from_secs(1), 1, 1);
        for _ in 0..3 {
            c.observe_at(&"k", 2);
        }
        c.observe_at(&"k", 4);
        assert_eq!(c.counts_at(&"k", 4), [0, 0, 3, 0, 1]);
        assert_eq!(c.counts_at(&"k", 6), [3, 0, 1, 0, 0]);
        // Sub-interval 7 writes the slot of sub-interval 2: it starts again at 1.
        c.observe_at(&"k", 7);
        assert_eq!(c.counts_at(&"k", 7), [0, 1, 0, 0, 1]);
        // Far later, nothing is left, whatever the slots held: also not when the slots come
        // round at a multiple of 256 (an 8-bit tag brought the 3 back at 1,282).
        for sub in [1000, 1282, 1287, 5 * 65_536 + 2, 10_000_007] {
            assert_eq!(c.counts_at(&"k", sub), [0; SLOTS], "{sub}");
        }
    }

    #[test]
    fn a_key_reads_the_smallest_of_its_rows() {
        let count_with_200_others = |columns| {
            let c = SlidingCounter::new(Duration::from_secs(1), 4, columns);
            for _ in 0..3 {
                c.observe_at(&"k", 9);
            }
            for i in 0..200 {
                c.observe_at(&i, 9);
            }
            c.counts_at(&"k", 9)[SLOTS - 1]
        };
        // One column: every key shares it. Many: some row of "k" is its own.
        assert_eq!(count_with_200_others(1), 203);
        assert_eq!(count_with_200_others(4096), 3);
    }

    #[test]
    fn counts_saturate_instead_of_wrapping() {
        let c = SlidingCounter::new(Duration::from_secs(1), 1, 1);
        c.cells[slot(7)].store(tag(7) << COUNT_BITS | (COUNT_MASK - 1), Ordering::Relaxed);
        c.observe_at(&"k", 7);
        c.observe_at(&"k", 7);
        assert_eq!(c.counts_at(&"k", 7)[SLOTS - 1], MAX_COUNT);
        assert_eq!(
            read(&c.cells[slot(7)], 7 + 256 * 5),
            0,
            "the tag is the whole number"
        );
        assert_eq!(read(&c.cells[slot(7)], 8), 0);
    }
}
