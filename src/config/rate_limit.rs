//! The `rate_limits` section: named limits that routes refer to.

use super::HumanDuration;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// `client_ip | consumer | route | header:<Name> | claim:<name>`
    pub key: String,
    pub requests: u64,
    pub per: HumanDuration,
    /// Distinct keys expected per window; sizes the count-min sketch so quiet clients do not
    /// collide into false 429s. Memory ≈ 128 bytes × this value per limit (two 4-row sketches of 8-byte counters).
    #[serde(default = "default_expected_clients")]
    pub expected_clients: usize,
    /// When the limit is checked; defaults to before auth for keys that need no identity
    /// (cheap rejection of floods) and after auth for `consumer` / `claim:`.
    #[serde(default)]
    pub stage: Option<Stage>,
}

fn default_expected_clients() -> usize {
    100_000
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    BeforeAuth,
    AfterAuth,
}
