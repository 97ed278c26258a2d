//! Choosing a route's upstream when it has several (`split`): by weight, optionally sticky.
//!
//! A request maps to a point in `[0, 2^64)` (random, or a stable hash of its consumer, client
//! address or a header) and the point to the side whose cumulative share covers it. The same
//! key therefore lands on the same side while the weight table is unchanged, and changing the
//! weights moves only the points between the old and new boundaries: raising a canary at the
//! end of the list from 10% to 20% moves exactly the keys in that 10% band, nobody else.
//! A side whose pool has no healthy backend is left out and the point is laid over the
//! remaining sides' weights, so its share goes to the others instead of failing requests.

use super::pool::Pool;
use crate::config::split::SplitBy;
use http::{HeaderMap, HeaderName};
use std::net::IpAddr;
use std::sync::Arc;

/// Where a sticky key comes from, compiled from [`SplitBy`].
#[derive(Debug)]
pub enum KeySource {
    Random,
    Consumer,
    ClientIp,
    Header(HeaderName),
}

impl KeySource {
    fn compile(by: &SplitBy) -> KeySource {
        match by {
            SplitBy::Random => KeySource::Random,
            SplitBy::Consumer => KeySource::Consumer,
            SplitBy::ClientIp => KeySource::ClientIp,
            SplitBy::Header(name) => {
                HeaderName::from_bytes(name.as_bytes()).map_or(KeySource::Random, KeySource::Header)
            }
        }
    }
}

/// What the proxy knows about a request when it picks a side.
pub struct SplitInput<'a> {
    pub consumer: Option<&'a str>,
    pub client_ip: Option<IpAddr>,
    pub headers: &'a HeaderMap,
}

pub struct Split {
    sides: Vec<(Arc<Pool>, u64)>,
    key: KeySource,
}

/// The side a request goes to, and whether its own side had to be skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    pub side: usize,
    /// The side the weights chose had no healthy backend; `side` is another one.
    pub fell_back: bool,
}

impl Split {
    pub fn new(sides: Vec<(Arc<Pool>, u32)>, by: &SplitBy) -> Split {
        Split {
            sides: sides.into_iter().map(|(p, w)| (p, u64::from(w))).collect(),
            key: KeySource::compile(by),
        }
    }

    pub fn pool(&self, side: usize) -> &Arc<Pool> {
        &self.sides[side].0
    }

    pub fn pools(&self) -> impl Iterator<Item = &Arc<Pool>> {
        self.sides.iter().map(|(p, _)| p)
    }

    /// The point of a request: a stable hash of its key, or random when the key is random or
    /// the request has none (an anonymous request on a `consumer` split, a missing header).
    pub fn point(&self, input: &SplitInput) -> u64 {
        let hashed = match &self.key {
            KeySource::Random => None,
            KeySource::Consumer => input.consumer.map(|c| stable_hash(c.as_bytes())),
            KeySource::ClientIp => input.client_ip.map(|ip| match ip {
                IpAddr::V4(v4) => stable_hash(&v4.octets()),
                IpAddr::V6(v6) => stable_hash(&v6.octets()),
            }),
            KeySource::Header(name) => input.headers.get(name).map(|v| stable_hash(v.as_bytes())),
        };
        hashed.unwrap_or_else(|| fastrand::u64(..))
    }

    /// The side for `point`, among sides for which `healthy` holds (all of them if none does:
    /// the chosen side then answers 503 as a single upstream would).
    pub fn choose(&self, point: u64, healthy: impl Fn(&Pool) -> bool) -> Choice {
        let weights = self.sides.iter().map(|(_, w)| *w);
        choose(point, weights, |i| healthy(&self.sides[i].0))
    }
}

/// [`Split::choose`] over plain weights; `healthy(i)` says whether side `i` can take traffic.
/// Keys of healthy sides never move; the keys of an unhealthy side are spread over the healthy
/// ones by their position inside the unhealthy side's band, so each survivor takes a share in
/// proportion to its weight, and a given key always falls back to the same side.
fn choose(
    point: u64,
    weights: impl Iterator<Item = u64> + Clone,
    healthy: impl Fn(usize) -> bool,
) -> Choice {
    let Some((first, within)) = band(point, weights.clone()) else {
        return Choice {
            side: 0,
            fell_back: false,
        };
    };
    if healthy(first) {
        return Choice {
            side: first,
            fell_back: false,
        };
    }
    let remaining = weights
        .enumerate()
        .map(|(i, w)| if healthy(i) { w } else { 0 });
    match pick(within, remaining) {
        Some(side) => Choice {
            side,
            fell_back: true,
        },
        None => Choice {
            side: first,
            fell_back: false,
        },
    }
}

/// The index whose cumulative weight band covers `point` scaled to the total; `None` when
/// every weight is zero.
fn pick(point: u64, weights: impl Iterator<Item = u64> + Clone) -> Option<usize> {
    band(point, weights).map(|(i, _)| i)
}

/// [`pick`], plus where in its band the point fell, rescaled to `[0, 2^64)`.
fn band(point: u64, weights: impl Iterator<Item = u64> + Clone) -> Option<(usize, u64)> {
    let total: u64 = weights.clone().sum();
    if total == 0 {
        return None;
    }
    // `scaled >> 64` is the point's position in [0, total); the low bits keep the fraction.
    let scaled = u128::from(point) * u128::from(total);
    let mut start: u128 = 0;
    for (i, w) in weights.enumerate() {
        let end = start + (u128::from(w) << 64);
        if scaled < end {
            let within = (scaled - start) / u128::from(w);
            return Some((i, within as u64));
        }
        start = end;
    }
    None
}

/// FNV-1a then a SplitMix64 finaliser: stable across processes, restarts and Rust releases
/// (unlike `DefaultHasher`), and well spread even for short, similar keys.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side_of(point: u64, weights: &[u64]) -> usize {
        pick(point, weights.iter().copied()).expect("some weight")
    }

    #[test]
    fn weights_share_the_points() {
        let mut counts = [0usize; 2];
        for i in 0..10_000u32 {
            counts[side_of(stable_hash(format!("consumer-{i}").as_bytes()), &[90, 10])] += 1;
        }
        // 10% ± 1% of 10,000 hashed keys
        assert!((900..=1100).contains(&counts[1]), "{counts:?}");
    }

    #[test]
    fn raising_the_canary_moves_only_the_keys_that_must_move() {
        let keys: Vec<u64> = (0..10_000u32)
            .map(|i| stable_hash(format!("user-{i}").as_bytes()))
            .collect();
        let before: Vec<usize> = keys.iter().map(|&k| side_of(k, &[90, 10])).collect();
        let after: Vec<usize> = keys.iter().map(|&k| side_of(k, &[80, 20])).collect();
        let mut moved = 0;
        for (b, a) in before.iter().zip(&after) {
            assert!(
                !(*b == 1 && *a == 0),
                "a canary key went back to the main side"
            );
            moved += usize::from(b != a);
        }
        // exactly the 80-90% band moves: 10% ± 1%
        assert!((900..=1100).contains(&moved), "moved {moved}");
        // same table, same answer
        let again: Vec<usize> = keys.iter().map(|&k| side_of(k, &[90, 10])).collect();
        assert_eq!(before, again);
    }

    #[test]
    fn zero_weights_take_nothing_and_all_zero_picks_nothing() {
        for p in [0, u64::MAX / 3, u64::MAX] {
            assert_eq!(side_of(p, &[0, 5, 0]), 1);
        }
        assert_eq!(pick(7, [0u64, 0].into_iter()), None);
        assert_eq!(side_of(u64::MAX, &[1, 1]), 1);
        assert_eq!(side_of(0, &[1, 1]), 0);
    }

    #[test]
    fn an_unhealthy_side_gives_its_share_to_the_healthy_ones() {
        let weights = [50, 30, 20];
        let mut counts = [0usize; 3];
        for i in 0..10_000u32 {
            let c = choose(stable_hash(&i.to_be_bytes()), weights.into_iter(), |s| {
                s != 0
            });
            assert_eq!(
                c.fell_back,
                side_of(stable_hash(&i.to_be_bytes()), &weights) == 0
            );
            counts[c.side] += 1;
        }
        assert_eq!(counts[0], 0);
        // the survivors keep their ratio 30:20 → 60% / 40% ± 2%
        assert!((5800..=6200).contains(&counts[1]), "{counts:?}");
        // a healthy side's own keys never move
        for i in 0..10_000u32 {
            let p = stable_hash(&i.to_be_bytes());
            if side_of(p, &weights) != 0 {
                assert_eq!(
                    choose(p, weights.into_iter(), |s| s != 0).side,
                    side_of(p, &weights)
                );
            }
        }
        // nothing healthy: the weights' own choice (it answers 503 as a lone upstream would)
        let c = choose(0, weights.into_iter(), |_| false);
        assert_eq!((c.side, c.fell_back), (0, false));
    }

    #[test]
    fn the_hash_is_stable() {
        // Pinned: changing it would reshuffle every sticky split on upgrade.
        assert_eq!(stable_hash(b"acme"), stable_hash(b"acme"));
        assert_ne!(stable_hash(b"acme"), stable_hash(b"acmf"));
        assert_eq!(stable_hash(b"acme"), 0x130a76222d4427ef);
    }
}
