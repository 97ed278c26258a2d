//! From a request line to a route: path normalisation, the compiled route table, prefix rewrites.

pub mod methods;
pub mod normalize;
pub mod path_policy;
pub mod rewrite;
pub mod router;

pub use router::{Match, Router};
