//! The `rate_limits` section: named limits that routes refer to.

use super::HumanDuration;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// `client_ip | consumer | route | header:<Name> | claim:<name>`
    pub key: String,
    pub requests: u64,
    pub per: HumanDuration,
    /// Distinct keys expected per window; sizes the count-min sketch so quiet clients do not
    /// collide into false 429s. Memory ≈ 320 bytes × this value per limit (4 rows × 2 columns per
    /// client × 5 quarter counters of 8 bytes), resident as keys arrive.
    #[serde(default = "default_expected_clients")]
    pub expected_clients: usize,
    /// When the limit is checked; defaults to before auth for keys that need no identity
    /// (cheap rejection of floods) and after auth for `consumer` / `claim:`.
    #[serde(default)]
    pub stage: Option<Stage>,
    /// Where the counts live: this process (default) or a Redis server shared by a fleet.
    #[serde(default)]
    pub backend: Backend,
    /// With `backend: redis`: one Redis round trip per decision (`atomic`, exact), or local
    /// decisions against a global count synced every `redis.sync_interval` (`batched`).
    #[serde(default)]
    pub sync: SyncMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    #[default]
    Local,
    Redis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    #[default]
    Atomic,
    Batched,
}

/// The top-level `redis:` section, shared by every limit with `backend: redis`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[:password@]host:port[/db]`; user names work too (`redis://user:pw@...`).
    pub url: String,
    /// Multiplexed connections to spread commands over.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// A command slower than this counts as a failure: the decision falls back to local.
    #[serde(default = "default_redis_timeout")]
    pub timeout: HumanDuration,
    /// How often `sync: batched` limits push their counts and pull the global ones.
    #[serde(default = "default_sync_interval")]
    pub sync_interval: HumanDuration,
    /// Prefix of every key tollgate writes, so several fleets can share one server.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
}

fn default_pool_size() -> usize {
    4
}
fn default_redis_timeout() -> HumanDuration {
    HumanDuration(std::time::Duration::from_millis(50))
}
fn default_sync_interval() -> HumanDuration {
    HumanDuration(std::time::Duration::from_millis(100))
}
fn default_key_prefix() -> String {
    "tollgate".to_string()
}

fn default_expected_clients() -> usize {
    100_000
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    BeforeAuth,
    AfterAuth,
}
