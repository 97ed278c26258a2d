//! `response_json`: stripping fields from JSON responses (DESIGN.md "Response sanitising").
//!
//! [`paths`] compiles the configured field paths, [`strip`] removes them from a JSON stream
//! without building a document, [`body`] decodes the upstream's content coding and bounds the
//! body ([`BodyFilter`]), and [`gate`] decides from the response head whether a body is
//! stripped, passed, or refused (fail closed, 502) before any byte reaches the client.

pub mod body;
pub mod gate;
pub mod paths;
pub mod strip;

#[cfg(test)]
mod strip_tests;

pub use body::{BodyFilter, BodyFilterError, Policy};
