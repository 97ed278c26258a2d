//! The composition root: every runtime object is built here, once, from a config, and every
//! problem found on the way is collected with its YAML path. `check` builds and drops, `run`
//! builds and serves; a reload will build and swap. Modules own how they are built (`Auth`,
//! `RateLimiter`, `Pools`, `TrustedProxies`, the route table): this file only calls them in
//! order and gathers what they report.

pub mod live;
pub mod reload;
pub mod routes;

use routes::RouteRuntime;

use crate::auth::Auth;
use crate::config::path_policy::PathPolicyConfig;
use crate::config::{Config, Problem, Problems};
use crate::drain::Draining;
use crate::edge::cache::store::Store;
use crate::forwarded::TrustedProxies;
use crate::observability::access_log::{AccessLog, Destination};
use crate::rate_limit::RateLimiter;
use crate::routing::Router;
use crate::tls::Tls;
use crate::upstream::Pools;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

/// The request path's runtime: what the `ProxyHttp` implementation in `proxy` serves with.
pub struct Gateway {
    pub(crate) router: Router,
    pub(crate) auth: Auth,
    pub(crate) limiter: RateLimiter,
    pub(crate) routes: Vec<RouteRuntime>,
    pub(crate) trusted: TrustedProxies,
    pub(crate) path_policy: PathPolicyConfig,
    pub(crate) max_request_body: u64,
    pub(crate) max_header_bytes: usize,
    pub(crate) max_headers: usize,
    pub(crate) idle_timeout_secs: u64,
    /// Shared so that a reload that keeps the destination keeps the writer.
    pub(crate) access_log: Arc<AccessLog>,
    pub(crate) draining: Draining,
    /// `redirect_https`: the TLS port cleartext requests are sent to.
    pub(crate) redirect_https: Option<u16>,
    /// `tracing.otlp`: the tracer, kept across reloads that leave the section unchanged.
    pub(crate) tracing: Option<Arc<crate::otel::Tracing>>,
    /// `server.cache`: the response store of every route's `cache` (admin purges it).
    pub(crate) cache: Option<Arc<Store>>,
}

impl Gateway {
    /// The background sync of `sync: batched` Redis limits, if the config has any.
    pub fn rate_limit_sync(&self) -> Option<crate::rate_limit::BatchedSync> {
        self.limiter.sync_task()
    }

    /// The span export loop of a tracer built for this generation, not started yet (a
    /// tracer kept from the previous generation has its loop running already).
    pub fn trace_export(&self) -> Option<crate::otel::ExportLoop> {
        self.tracing.as_ref().and_then(|t| t.take_export())
    }
}

/// Everything a running gateway serves with.
pub struct Runtime {
    pub pools: Arc<Pools>,
    pub gateway: Gateway,
    /// Certificates of the TLS listeners (`server.tls`).
    pub tls: Option<Tls>,
}

impl Runtime {
    /// Valid but risky findings of the build (certificates about to expire), for `check`.
    pub fn warnings(&self) -> &[Problem] {
        self.tls.as_ref().map_or(&[], |t| t.warnings.as_slice())
    }
}

/// The parts built on their own before the whole is assembled.
struct Parts {
    auth: Auth,
    limiter: RateLimiter,
    trusted: TrustedProxies,
    tracing: Option<Arc<crate::otel::Tracing>>,
}

/// Each upstream's TLS material, by upstream name.
type UpstreamTls = HashMap<String, crate::upstream::transport::TlsMaterial>;

/// Keep the value, or keep its problems for the report.
fn collect<T>(result: Result<T, Vec<Problem>>, problems: &mut Vec<Problem>) -> Option<T> {
    result.map_err(|p| problems.extend(p)).ok()
}

impl Runtime {
    /// Read a config file and build its runtime, reporting every problem of both at once.
    /// Also returns the file's text as parsed: the first generation is identified by its hash,
    /// so it must be these bytes, not a second read of a file that may have changed since.
    pub fn load(path: &Path, draining: Draining) -> Result<(Config, Runtime, String), Problems> {
        let (config, text) = Config::read_with_text(path)?;
        let problems = config.problems();
        let runtime = Self::build_reporting(&config, problems, draining, None)?;
        Ok((config, runtime, text))
    }

    /// Build the runtime of a config whose own checks passed (`Config::load*`).
    pub fn build(config: &Config, draining: Draining) -> Result<Runtime, Problems> {
        Self::build_reporting(config, Vec::new(), draining, None)
    }

    /// Build the next generation for an in-place reload: like [`Runtime::build`], then every
    /// part whose definition did not change is taken over from `previous` with its state
    /// (pools with their health, limits with their counts, the access log writer).
    pub fn rebuild(
        config: &Config,
        draining: Draining,
        previous: &live::Generation,
    ) -> Result<Runtime, Problems> {
        let problems = config.problems();
        Self::build_reporting(config, problems, draining, Some(previous))
    }

    /// Parts that stand alone are built even when the file has other problems, so that one
    /// `check` lists everything; the whole is assembled only when nothing is wrong.
    fn build_reporting(
        config: &Config,
        mut problems: Vec<Problem>,
        draining: Draining,
        previous: Option<&live::Generation>,
    ) -> Result<Runtime, Problems> {
        let auth = collect(Auth::build(config), &mut problems);
        let mut limiter = collect(RateLimiter::build(config), &mut problems);
        if let (Some(limiter), Some(old)) = (limiter.as_mut(), previous) {
            limiter.keep_state_of(&old.gateway.limiter, &old.config, config);
        }
        let trusted = collect(
            TrustedProxies::build(&config.server.trusted_proxies),
            &mut problems,
        );
        let tls = match &config.server.tls {
            Some(t) => collect(crate::tls::build(t, SystemTime::now()), &mut problems).map(Some),
            None => Some(None),
        };
        let upstream_tls = collect(crate::upstream::transport::load_all(config), &mut problems);
        let old_tracing = previous.and_then(|p| p.gateway.tracing.as_ref());
        let otlp = config.tracing.as_ref().map(|t| &t.otlp);
        let tracing = collect(crate::otel::keep_or_build(otlp, old_tracing), &mut problems);
        match (auth, limiter, trusted, tls, upstream_tls, tracing) {
            (
                Some(auth),
                Some(limiter),
                Some(trusted),
                Some(tls),
                Some(upstream_tls),
                Some(tracing),
            ) if problems.is_empty() => {
                let parts = Parts {
                    auth,
                    limiter,
                    trusted,
                    tracing,
                };
                let mut runtime = Self::assemble(config, parts, &upstream_tls, draining, previous)?;
                runtime.tls = tls;
                Ok(runtime)
            }
            _ => Err(Problems(problems)),
        }
    }

    fn assemble(
        config: &Config,
        parts: Parts,
        upstream_tls: &UpstreamTls,
        draining: Draining,
        previous: Option<&live::Generation>,
    ) -> Result<Runtime, Problems> {
        let Parts {
            auth,
            limiter,
            trusted,
            tracing,
        } = parts;
        let old_pools = previous.map(|p| (&p.config, p.pools.as_ref()));
        let pools = Pools::build(config, upstream_tls, old_pools).map_err(|e| Problems(vec![e]))?;
        let pools = Arc::new(pools);
        let s = &config.server;
        let access_log = match previous {
            Some(p) if p.config.server.access_log == s.access_log => p.gateway.access_log.clone(),
            _ => Arc::new(AccessLog::new(Destination::from_config(&s.access_log))),
        };
        let router = Router::new(&config.routes);
        let cache = cache_store(config, previous);
        let routes = routes::build(config, &router, &pools, &auth, &limiter, cache.as_ref())
            .map_err(Problems)?;
        let gateway = Gateway {
            router,
            auth,
            limiter,
            routes,
            trusted,
            path_policy: s.path_policy,
            max_request_body: s.max_request_body.0,
            max_header_bytes: usize::try_from(s.max_header_bytes.0).unwrap_or(usize::MAX),
            max_headers: s.max_headers,
            idle_timeout_secs: s.idle_timeout.0.as_secs().max(1),
            access_log,
            draining,
            redirect_https: s
                .redirect_https
                .then(|| s.tls_listen.first())
                .flatten()
                .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
                .map(|a| a.port()),
            tracing,
            cache,
        };
        Ok(Runtime {
            pools,
            gateway,
            tls: None,
        })
    }
}

/// The response store: the previous generation's, with what it holds, when `server.cache` is
/// unchanged (entries of routes whose definition changed or that are gone are dropped: they
/// may no longer be what the route would answer); else a new, empty one.
fn cache_store(config: &Config, previous: Option<&live::Generation>) -> Option<Arc<Store>> {
    let wanted = config.server.cache.as_ref()?;
    let kept = previous.filter(|p| p.config.server.cache.as_ref() == Some(wanted));
    let Some((old, store)) = kept.and_then(|p| Some((p, p.gateway.cache.clone()?))) else {
        return Some(Store::new(wanted));
    };
    let changed = |name: &str| {
        let before = old.config.routes.iter().find(|r| r.name == name);
        let now = config.routes.iter().find(|r| r.name == name);
        before != now || now.is_none_or(|r| r.cache.is_none())
    };
    let dropped = store.forget_routes(changed);
    if dropped > 0 {
        tracing::info!("reload: {dropped} cached response(s) of changed routes dropped");
    }
    Some(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(dir: &Path, yaml: &str) -> Result<(Config, Runtime), Vec<String>> {
        let file = dir.join("tollgate.yaml");
        std::fs::write(&file, yaml).expect("write config");
        Runtime::load(&file, Draining::default())
            .map(|(config, runtime, _)| (config, runtime))
            .map_err(|p| p.0.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn key_files_are_read_next_to_the_config_and_missing_ones_are_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let yaml = "upstreams:\n  u: {backends: [\"127.0.0.1:1\"]}\nauth:\n  jwt:\n    j: {algorithms: [HS256], secret_file: secret.txt}\nroutes:\n  - {name: r, upstream: u, auth: {jwt: j}}\n";
        let missing = load(dir.path(), yaml).err().expect("no secret yet");
        assert!(
            missing[0].starts_with("auth.jwt.j.secret_file: cannot read"),
            "{missing:?}"
        );
        std::fs::write(
            dir.path().join("secret.txt"),
            "0123456789abcdef0123456789abcdef",
        )
        .expect("write secret");
        assert!(load(dir.path(), yaml).is_ok());
    }

    #[test]
    fn problems_of_the_file_and_of_building_come_in_one_report() {
        let dir = tempfile::tempdir().expect("tempdir");
        let yaml = "server:\n  listen: [\"nope\"]\n  trusted_proxies: [\"10.0.0.0/33\"]\nupstreams:\n  u: {backends: [\"127.0.0.1:1\"]}\nrate_limits:\n  l: {key: \"header:\", requests: 1, per: 1s}\nroutes:\n  - {name: r, upstream: u}\n";
        let p = load(dir.path(), yaml).err().expect("problems");
        for expected in [
            "server.listen[0]: invalid socket address",
            "server.trusted_proxies[0]: invalid CIDR",
            "rate_limits.l.key",
        ] {
            assert!(
                p.iter().any(|l| l.starts_with(expected)),
                "{expected}: {p:?}"
            );
        }
    }
}
