//! Upstream pools: one Pingora round-robin load balancer per configured upstream, with active
//! health checks that run before traffic is accepted.

pub mod attempt;
pub mod circuit;
pub mod dns;
pub mod health;
pub mod members;
pub mod mirror;
pub mod outlier;
pub mod pool;
pub mod retry;
pub mod split;
pub mod transport;

pub use attempt::Attempts;
pub use health::HealthService;
pub use pool::{Pool, Pools};
