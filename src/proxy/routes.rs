//! The runtime view of each configured route: its pool, rewrite and header edits, indexed like
//! the router's matches.

use crate::auth::{Auth, RoutePolicy};
use crate::config::path_policy::PathPolicyOverride;
use crate::config::Config;
use crate::header_ops::CompiledHeaderOps;
use crate::rate_limit::RateLimiter;
use crate::routing::rewrite::PrefixRewrite;
use crate::routing::Router;
use crate::transform::response_json::Policy;
use crate::upstream::{Pool, Pools};
use std::sync::Arc;

pub struct RouteRuntime {
    pub name: String,
    pub pool: Arc<Pool>,
    pub prefix: String,
    pub rewrite: PrefixRewrite,
    pub request_headers: CompiledHeaderOps,
    pub response_headers: CompiledHeaderOps,
    pub auth: Option<RoutePolicy>,
    /// Indices into the gateway's [`RateLimiter`].
    pub limits: Vec<usize>,
    pub response_json: Option<Policy>,
    /// Laid over `server.path_policy` for requests this route matches.
    pub path_policy: Option<PathPolicyOverride>,
}

pub fn build(
    config: &Config,
    router: &Router,
    pools: &Pools,
    auth: &Auth,
    limiter: &RateLimiter,
) -> Result<Vec<RouteRuntime>, String> {
    config
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let pool = pools
                .get(&r.upstream)
                .ok_or_else(|| format!("routes[{i}].upstream: no upstream named {:?}", r.upstream))?
                .clone();
            Ok(RouteRuntime {
                name: r.name.clone(),
                pool,
                prefix: router.prefix(i).to_string(),
                rewrite: PrefixRewrite::from_config(r.strip_prefix, r.rewrite_prefix.as_deref()),
                request_headers: CompiledHeaderOps::compile(&r.request_headers),
                response_headers: CompiledHeaderOps::compile(&r.response_headers),
                auth: auth.policy(r.auth.as_ref()),
                path_policy: r.path_policy,
                response_json: r
                    .response_json
                    .as_ref()
                    .map(|rj| {
                        Policy::compile(rj)
                            .map_err(|errs| format!("routes[{i}].response_json: {}", errs[0].1))
                    })
                    .transpose()?,
                limits: r
                    .rate_limit
                    .as_ref()
                    .map(|l| l.to_vec())
                    .unwrap_or_default()
                    .iter()
                    .map(|n| {
                        limiter.index(n).ok_or_else(|| {
                            format!("routes[{i}].rate_limit: no rate limit named {n:?}")
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            })
        })
        .collect()
}
