//! tollgate: an API gateway on Pingora. See README.md and DESIGN.md for the contract.
//!
//! # Layout
//!
//! Dependencies point one way, from the leaves up:
//!
//! 1. **`config`** — the YAML contract as plain data: serde types, units, the checks a file
//!    can fail on its own, warnings. It imports nothing else from the crate.
//! 2. **Features**, each owning its runtime object, how it is built from `config` (reporting
//!    problems with their YAML paths) and its unit-testable per-request decision:
//!    `routing` (path normalisation and policy, the route table, rewrites), `auth`,
//!    `rate_limit`, `upstream` (pools, their members and DNS re-resolution, health, outlier
//!    ejection, circuit breaker, the attempts and retries of one request), `response_json`
//!    (stripping JSON fields), `forwarded` (client address, `X-Forwarded-*`), `header_ops`,
//!    `trace_context`, `request_id`;
//!    `listener` (connection cap, head deadline, byte-level framing checks below HTTP),
//!    `observability` (metrics, access log), `otel` (OpenTelemetry spans and their export), `reply` (every answer the gateway writes itself),
//!    `drain` (signals, `Connection: close`, exiting once drained).
//! 3. **`runtime`** — the composition root: `Runtime::build` builds every runtime object once;
//!    `check` builds and drops, `run` builds and serves.
//! 4. **`proxy`** — the `ProxyHttp` implementation: sequences the features per Pingora phase.
//! 5. **`server`** — Pingora services around a built runtime; `admin`, `demo`; `heap` (the
//!    process's page policy); `main.rs` is the command line.
//!
//! `fuzz_entry` holds the fuzz targets' invariants (replayed by `cargo test`).

pub mod admin;
pub mod auth;
pub mod config;
pub mod demo;
pub mod drain;
pub mod edge;
pub mod forwarded;
#[doc(hidden)]
pub mod fuzz_entry;
pub mod header_ops;
pub mod heap;
pub mod listener;
pub mod observability;
pub mod otel;
pub mod proxy;
pub mod rate_limit;
pub mod reply;
pub mod request_id;
pub mod response_json;
pub mod routing;
pub mod runtime;
pub mod server;
#[cfg(test)]
mod test_support;
pub mod tls;
pub mod trace_context;
pub mod upgrade;
pub mod upstream;
