//! The observability suites' fixture (`tests/observability_metrics.rs`,
//! `tests/observability_access_log.rs`): three backends (one dead from the start), a config with
//! an API key route, a rate-limited route and a dead upstream, and when a scrape has settled.

use crate::common::metrics::Exposition;
use crate::common::tokens::sha256_hex;
use crate::common::{upstream_yaml, Backend, FAST_HEALTH};

/// The API key of consumer [`KEY_ID`]; the config only holds its SHA-256.
pub const API_KEY: &str = "obs-live-key-7f3e91c0d2aa";
pub const BAD_KEY: &str = "obs-wrong-key-55aa11bb";
pub const KEY_ID: &str = "consumer-acme-5150";

/// A request to drive: (method or request id, path, headers, expected status).
pub type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, u16);

/// A backend that is dead before the gateway starts (its port refuses connections).
pub async fn dead_backend() -> Backend {
    let b = Backend::start("dead").await;
    b.kill().await;
    b
}

/// Routes: `ok` (/ok → echo), `two` (/two → second), `keyed` (/keyed → echo, API key always
/// required), `limited` (/limited → echo, limit `tiny` = `limit` requests per minute per client
/// IP), `down` (/down → dead, whose only backend is dead at start).
pub fn config(echo: &Backend, second: &Backend, dead: &Backend, limit: u32) -> String {
    format!(
        "upstreams:\n{}{}{}
auth:
  api_keys:
    p:
      header: X-API-Key
      keys:
        - {{id: {KEY_ID}, sha256: \"{}\"}}

rate_limits:
  tiny: {{key: client_ip, requests: {limit}, per: 1m}}

routes:
  - name: ok
    match: {{path_prefix: /ok}}
    upstream: echo
  - name: two
    match: {{path_prefix: /two}}
    upstream: second
  - name: keyed
    match: {{path_prefix: /keyed}}
    upstream: echo
    auth: {{api_key: p, required: always}}
  - name: limited
    match: {{path_prefix: /limited}}
    upstream: echo
    rate_limit: tiny
  - name: down
    match: {{path_prefix: /down}}
    upstream: dead
",
        upstream_yaml("echo", &[echo], &[FAST_HEALTH, "retries: 0"]),
        upstream_yaml("second", &[second], &[FAST_HEALTH, "retries: 0"]),
        upstream_yaml("dead", &[dead], &[FAST_HEALTH, "retries: 0"]),
        sha256_hex(API_KEY)
    )
}

/// Three backends (`echo`, `second`, and a dead one) and the [`config`] over them.
pub struct Fixture {
    pub echo: Backend,
    pub second: Backend,
    pub dead: Backend,
}

impl Fixture {
    pub async fn new() -> Fixture {
        Fixture {
            echo: Backend::start("echo").await,
            second: Backend::start("second").await,
            dead: dead_backend().await,
        }
    }

    pub fn config(&self, limit: u32) -> String {
        config(&self.echo, &self.second, &self.dead, limit)
    }
}

/// Every one of `requests` requests (`upstream` of them answered by an upstream) went through
/// the whole `logging` phase. A scrape may run concurrently with `logging`, which updates the
/// families one after the other: wait for all of them, not just the first.
pub fn settled(m: &Exposition, requests: usize, upstream: usize) -> bool {
    in_flight(m) == Some(0.0)
        && m.sum("tollgate_http_requests_total") >= requests as f64
        && m.sum("tollgate_http_request_duration_seconds_count") >= requests as f64
        && m.sum("tollgate_upstream_duration_seconds_count") >= upstream as f64
}

pub fn in_flight(exp: &Exposition) -> Option<f64> {
    exp.value("tollgate_http_requests_in_flight", &[])
}
