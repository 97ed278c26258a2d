//! The runtime view of each configured route: its pool, rewrite and header edits, indexed like
//! the router's matches.

use crate::auth::{Auth, RoutePolicy};
use crate::config::path_policy::PathPolicyOverride;
use crate::config::split::SplitBy;
use crate::config::{Config, Problem};
use crate::edge::cache::{store::Store, RouteCache};
use crate::edge::{compress::Compress, cors::Cors, ip_rules::IpRules};
use crate::header_ops::CompiledHeaderOps;
use crate::observability::route_metrics::RouteMetrics;
use crate::rate_limit::RateLimiter;
use crate::response_json::Policy;
use crate::routing::request::RouteFacts;
use crate::routing::rewrite::PrefixRewrite;
use crate::routing::Router;
use crate::upstream::mirror::Mirror;
use crate::upstream::split::Split;
use crate::upstream::{Pool, Pools};
use std::sync::Arc;

pub struct RouteRuntime {
    pub name: String,
    /// The route's upstream; with `split`, its first side.
    pub pool: Arc<Pool>,
    /// `split`: several upstreams by weight; `Ctx.side` indexes them.
    pub split: Option<Split>,
    /// `mirror`: shadow copies of a share of the traffic.
    pub mirror: Option<Mirror>,
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
    /// `ip`: checked on the client address right after routing.
    pub ip: Option<IpRules>,
    /// `cors`: preflights answered by the gateway, headers on actual responses.
    pub cors: Option<Cors>,
    /// The route's `max_request_body`, else the server's.
    pub max_request_body: u64,
    /// Remove the credential that authenticated before forwarding.
    pub hide_credentials: bool,
    pub compress: Option<Compress>,
    /// The route's metric series, resolved once.
    pub metrics: RouteMetrics,
    /// `cache`: responses kept in the shared store.
    pub cache: Option<RouteCache>,
}

impl RouteRuntime {
    /// The pool of the side a request was sent to (always `pool` without `split`).
    pub fn pool_for(&self, side: usize) -> &Arc<Pool> {
        match &self.split {
            Some(split) => split.pool(side),
            None => &self.pool,
        }
    }
}

impl RouteFacts for [RouteRuntime] {
    fn path_policy(&self, route: usize) -> Option<PathPolicyOverride> {
        self[route].path_policy
    }

    fn rewrites_prefix(&self, route: usize) -> bool {
        self[route].rewrite != PrefixRewrite::Keep
    }
}

/// Every route's runtime, or every problem with its YAML path (`routes[i]....`).
pub fn build(
    config: &Config,
    router: &Router,
    pools: &Pools,
    auth: &Auth,
    limiter: &RateLimiter,
    store: Option<&Arc<Store>>,
) -> Result<Vec<RouteRuntime>, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut routes = Vec::with_capacity(config.routes.len());
    for (i, r) in config.routes.iter().enumerate() {
        let at = format!("routes[{i}]");
        let mut found = Vec::new();
        for (path, name) in r.upstream_refs() {
            match pools.get(name) {
                Some(p) => found.push(p.clone()),
                None => problems.push(Problem::new(
                    format!("{at}.{path}"),
                    format!("no upstream named {name:?}"),
                )),
            }
        }
        let split = match (&r.split, SplitBy::parse(r.split_by.as_deref())) {
            (Some(sides), Ok(by)) if found.len() == sides.len() => Some(Split::new(
                found
                    .iter()
                    .cloned()
                    .zip(sides.iter().map(|s| s.weight))
                    .collect(),
                &by,
            )),
            _ => None,
        };
        let pool = found.into_iter().next();
        let mirror = r
            .mirror
            .as_ref()
            .and_then(|m| match pools.get(&m.upstream) {
                Some(p) => Some(Mirror::new(&r.name, p.clone(), m)),
                None => {
                    problems.push(Problem::new(
                        format!("{at}.mirror.upstream"),
                        format!("no upstream named {:?}", m.upstream),
                    ));
                    None
                }
            });
        let at_json = format!("{at}.response_json");
        let response_json = r
            .response_json
            .as_ref()
            .map(|cfg| Policy::compile(cfg, &at_json))
            .transpose()
            .unwrap_or_else(|errs| {
                problems.extend(errs);
                None
            });
        let mut limits = Vec::new();
        for name in r
            .rate_limit
            .as_ref()
            .map(|l| l.to_vec())
            .unwrap_or_default()
        {
            match limiter.index(&name) {
                Some(l) => limits.push(l),
                None => problems.push(Problem::new(
                    format!("{at}.rate_limit"),
                    format!("no rate limit named {name:?}"),
                )),
            }
        }
        let ip =
            r.ip.as_ref()
                .map(|cfg| IpRules::build(cfg, &format!("{at}.ip")))
                .transpose()
                .unwrap_or_else(|errs| {
                    problems.extend(errs);
                    None
                });
        let Some(pool) = pool else { continue };
        let metrics = match &split {
            Some(split) => RouteMetrics::new(&r.name, split.pools().map(|p| p.name.as_str())),
            None => RouteMetrics::new(&r.name, [pool.name.as_str()]),
        };
        routes.push(RouteRuntime {
            metrics,
            name: r.name.clone(),
            pool,
            split,
            mirror,
            prefix: router.prefix(i).to_string(),
            rewrite: PrefixRewrite::from_config(r.strip_prefix, r.rewrite_prefix.as_deref()),
            request_headers: CompiledHeaderOps::compile(&r.request_headers),
            response_headers: CompiledHeaderOps::compile(&r.response_headers),
            auth: auth.policy(r.auth.as_ref()),
            path_policy: r.path_policy,
            response_json,
            limits,
            ip,
            cors: r.cors.as_ref().map(Cors::new),
            max_request_body: r
                .max_request_body
                .map_or(config.server.max_request_body.0, |b| b.0),
            hide_credentials: r.hide_credentials,
            compress: r.compress.as_ref().map(Compress::new),
            cache: r.cache.as_ref().zip(store).map(|(cfg, store)| {
                let identity = r.compress.is_some() || r.response_json.is_some();
                RouteCache::new(&r.name, cfg, store.clone(), identity)
            }),
        });
    }
    if problems.is_empty() {
        Ok(routes)
    } else {
        Err(problems)
    }
}
