//! `mirror` on a route: a shadow copy of live traffic (DESIGN.md "Routing by headers, traffic
//! split and mirroring"). Plain data; the runtime is `upstream::mirror`.

use super::ByteSize;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    /// The shadow upstream (plain HTTP/1.1).
    pub upstream: String,
    /// Share of the route's proxied requests copied, 0-100.
    #[serde(default = "default_percent")]
    pub percent: f64,
    /// Requests with larger bodies are not mirrored (the copy must be held in memory).
    #[serde(default = "default_max_body")]
    pub max_body: ByteSize,
    /// Copies in flight at once for this route; more are dropped and counted, never queued.
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: usize,
}

fn default_percent() -> f64 {
    100.0
}

fn default_max_body() -> ByteSize {
    ByteSize(64 * 1024)
}

fn default_max_concurrent() -> usize {
    64
}
