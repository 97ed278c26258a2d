//! From a request line to a route: path normalisation, the compiled route table, prefix rewrites.

pub mod conditions;
pub mod methods;
pub mod normalize;
pub mod path_policy;
pub mod request;
pub mod rewrite;
pub mod router;
pub mod target;

pub use router::{Match, Router};

/// The host a client addressed: `Host`, else the absolute-form URI's authority.
pub fn request_host(req: &pingora::http::RequestHeader) -> &str {
    req.headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
        .unwrap_or("")
}
