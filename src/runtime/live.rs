//! The serving generation and its atomic swap (DESIGN.md "Live operations").
//!
//! Every request takes the generation current when it arrives ([`Live::current`], one atomic
//! load) and keeps it in its context until it is logged, so an in-place reload never changes
//! the routes, keys or limits under a request that already started; the old generation is
//! dropped when its last request finishes.

use super::Gateway;
use crate::config::Config;
use crate::upstream::Pools;
use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// One built config, as served.
pub struct Generation {
    pub gateway: Gateway,
    pub pools: Arc<Pools>,
    /// The config it was built from: the next reload compares against it to keep state.
    pub config: Config,
    /// 1 at start, +1 per successful reload.
    pub number: u64,
    /// SHA-256 of the config file's bytes (first 16 hex digits), to tell which file is live.
    pub hash: String,
}

impl Generation {
    pub fn new(
        gateway: Gateway,
        pools: Arc<Pools>,
        config: Config,
        number: u64,
        text: &[u8],
    ) -> Self {
        Generation {
            gateway,
            pools,
            config,
            number,
            hash: hash_of(text),
        }
    }
}

/// SHA-256 of a config file, shortened for display.
pub fn hash_of(text: &[u8]) -> String {
    let digest = Sha256::digest(text);
    hex::encode(&digest[..8])
}

/// The generation being served, swappable.
pub struct Live {
    current: ArcSwap<Generation>,
}

impl Live {
    pub fn new(generation: Generation) -> Arc<Live> {
        Arc::new(Live {
            current: ArcSwap::from_pointee(generation),
        })
    }

    pub fn current(&self) -> Arc<Generation> {
        self.current.load_full()
    }

    /// Serve `next` from now on; returns the generation it replaced.
    pub fn swap(&self, next: Generation) -> Arc<Generation> {
        self.current.swap(Arc::new(next))
    }
}
