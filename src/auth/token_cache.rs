//! Verified-token cache. RS/ES/EdDSA verification costs tens of microseconds; a repeat token
//! should cost one hash and a map lookup. Keys are SHA-256 of (provider, token) — a
//! collision-resistant hash, so a forged token can never alias a cached one — and entries
//! expire no later than the token's own `exp`. Size is bounded per shard.

use super::identity::Identity;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

const SHARDS: usize = 16;
/// Tokens without `exp` (only when `require_exp: false`) are cached this long at most.
const NO_EXP_TTL_SECS: u64 = 60;

struct Entry {
    identity: Arc<Identity>,
    valid_until: u64,
}

pub struct TokenCache {
    shards: Vec<Mutex<HashMap<[u8; 32], Entry>>>,
    per_shard: usize,
}

pub fn key(provider: usize, token: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((provider as u64).to_le_bytes());
    h.update(token.as_bytes());
    h.finalize().into()
}

impl TokenCache {
    pub fn new(capacity: usize) -> TokenCache {
        let per_shard = capacity.div_ceil(SHARDS);
        TokenCache {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard,
        }
    }

    pub fn enabled(&self) -> bool {
        self.per_shard > 0
    }

    fn shard(&self, key: &[u8; 32]) -> &Mutex<HashMap<[u8; 32], Entry>> {
        &self.shards[key[0] as usize % SHARDS]
    }

    pub fn get(&self, key: &[u8; 32], now: u64) -> Option<Arc<Identity>> {
        if !self.enabled() {
            return None;
        }
        let mut map = self.shard(key).lock().unwrap_or_else(|p| p.into_inner());
        match map.get(key) {
            Some(e) if now < e.valid_until => Some(e.identity.clone()),
            Some(_) => {
                map.remove(key);
                None
            }
            None => None,
        }
    }

    pub fn insert(&self, key: [u8; 32], identity: Arc<Identity>, now: u64) {
        if !self.enabled() {
            return;
        }
        let valid_until = identity
            .expires_at
            .unwrap_or(now + NO_EXP_TTL_SECS)
            .min(now + 24 * 3600);
        if valid_until <= now {
            return;
        }
        let mut map = self.shard(&key).lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= self.per_shard {
            map.retain(|_, e| e.valid_until > now);
            if map.len() >= self.per_shard {
                // Still full of live tokens: drop an arbitrary one. Bounded memory beats
                // perfect recency for a cache whose miss costs one signature check.
                if let Some(k) = map.keys().next().copied() {
                    map.remove(&k);
                }
            }
        }
        map.insert(
            key,
            Entry {
                identity,
                valid_until,
            },
        );
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|m| m.len()).unwrap_or(0))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(exp: Option<u64>) -> Arc<Identity> {
        Arc::new(Identity {
            provider: "jwt:t".into(),
            consumer: "alice".into(),
            roles: vec![],
            scopes: vec![],
            forward: vec![],
            expires_at: exp,
            claims: vec![],
        })
    }

    #[test]
    fn entries_expire_with_the_token() {
        let c = TokenCache::new(100);
        let k = key(0, "tok");
        c.insert(k, identity(Some(1_000)), 900);
        assert!(c.get(&k, 999).is_some());
        assert!(c.get(&k, 1_000).is_none());
        assert!(
            c.get(&key(1, "tok"), 900).is_none(),
            "providers do not share entries"
        );
    }

    #[test]
    fn size_is_bounded() {
        let c = TokenCache::new(32);
        for i in 0..1_000 {
            c.insert(key(0, &i.to_string()), identity(Some(10_000)), 1);
        }
        assert!(c.len() <= 32, "{}", c.len());
    }

    #[test]
    fn zero_capacity_disables_caching() {
        let c = TokenCache::new(0);
        let k = key(0, "t");
        c.insert(k, identity(Some(10)), 1);
        assert!(c.get(&k, 2).is_none());
    }
}
