//! Fixtures shared by the test files of one suite, split by theme to keep each file readable:
//!
//! * [`auth`]: `tests/auth_jwt.rs`, `tests/auth_access.rs`.
//! * [`observability`]: `tests/observability_metrics.rs`, `tests/observability_access_log.rs`.
//! * [`path_confusion`]: `tests/path_confusion.rs`, `tests/framing_identity.rs`.
//! * [`response_json`]: `tests/response_json.rs`, `tests/response_json_framing.rs`.

pub mod auth;
pub mod observability;
pub mod path_confusion;
pub mod response_json;
