//! Per-route edge policies (DESIGN.md "Edge policies (per route)"), one module per policy,
//! each a decision that needs no session so it can be unit-tested and benchmarked:
//! [`ip_rules`] (allow/deny on the client address), [`cors`] (the Fetch standard's CORS
//! protocol), [`compress`] (content-coding negotiation and the streaming encoder), [`cache`]
//! (RFC 9111 response caching over one bounded store).
//! `hide_credentials` lives with the credentials it hides (`auth::credential`); the per-route
//! body limit is one number on `RouteRuntime`. `runtime::routes` builds these once per route;
//! `proxy` calls them in DESIGN.md's order.

pub mod cache;
pub mod compress;
pub mod cors;
pub mod ip_rules;
