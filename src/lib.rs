//! tollgate: an API gateway on Pingora. See README.md and DESIGN.md for the contract.

pub mod admin;
pub mod auth;
pub mod config;
pub mod demo;
pub mod drain;
pub mod error_response;
pub mod forwarded;
#[doc(hidden)]
pub mod fuzz_entry;
pub mod header_ops;
pub mod listener;
pub mod observability;
pub mod proxy;
pub mod rate_limit;
pub mod request_id;
pub mod routing;
pub mod server;
pub mod trace_context;
pub mod transform;
pub mod upstream;
