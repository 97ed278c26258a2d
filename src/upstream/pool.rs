//! A named pool: Pingora's weighted round robin over the pool's current members — its IP
//! literals, and the addresses its hostnames resolve to now (`upstream::dns`).

use crate::config::{BackendTarget, Config, HealthCheckConfig, ResolverConfig, UpstreamConfig};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::lb::discovery::ServiceDiscovery;
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, Backends, LoadBalancer};
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::health::{self, GatedCheck};
use super::members::{Member, MemberTable};
use super::transport::{host_of, TlsMaterial, Transport};

/// One configured backend: an address, or a name whose addresses change.
#[derive(Debug, Clone)]
pub struct Target {
    /// As written in the config (`api.internal:8080`).
    pub configured: String,
    pub weight: usize,
    pub kind: BackendTarget,
}

/// Service discovery that returns what the pool last published ([`Pool::publish`]): the
/// resolving itself happens in `upstream::dns`, off Pingora's update path.
struct Published(Arc<ArcSwap<BTreeSet<Backend>>>);

#[async_trait]
impl ServiceDiscovery for Published {
    async fn discover(&self) -> pingora::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        Ok(((**self.0.load()).clone(), HashMap::new()))
    }
}

/// Everything the proxy needs to send a request to one upstream.
pub struct Pool {
    pub name: String,
    pub lb: LoadBalancer<RoundRobin>,
    /// The configured backends, in config order.
    pub targets: Vec<Target>,
    /// The addresses in rotation, with their server name, `Host` and in-flight count.
    pub members: Arc<MemberTable>,
    published: Arc<ArcSwap<BTreeSet<Backend>>>,
    /// Per target, the addresses of its last good resolution (a literal: its own address).
    /// Only `upstream::dns` changes it, one refresh at a time.
    pub(crate) resolved: Mutex<Vec<Vec<SocketAddr>>>,
    /// How often hostnames are resolved again.
    pub dns_refresh: Duration,
    /// `server.resolver`, or the system's configuration when absent.
    pub resolver: Option<ResolverConfig>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// Extra attempts on other backends after a connect failure.
    pub retries: usize,
    pub preserve_host: bool,
    pub health_check: Option<HealthCheckConfig>,
    /// The pool's active check, also used to probe a new address before it joins.
    pub(crate) check: Option<Arc<GatedCheck>>,
    /// False until the first round of health checks finished: the gateway does not accept
    /// traffic before that, so a backend dead at start never sees a request.
    pub warmed_up: Arc<AtomicBool>,
    /// Passive health, when configured.
    pub outlier: Option<super::outlier::Outlier>,
    pub breaker: Option<super::circuit::CircuitBreaker>,
    /// `retry_on`: which post-send failures are retried (none when absent).
    pub retry_on: Option<super::retry::RetryPolicy>,
    pub retry_budget: super::retry::RetryBudget,
    /// TLS and HTTP version towards the backends, shared by attempts and health checks.
    pub transport: Arc<Transport>,
    /// Set when an in-place reload dropped this upstream: its probe and DNS loops stop.
    pub retired: AtomicBool,
}

/// How many backends a pool has and how many are in rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolHealth {
    pub healthy: usize,
    pub total: usize,
}

impl Pool {
    fn build(
        name: &str,
        cfg: &UpstreamConfig,
        tls: Option<TlsMaterial>,
        resolver: Option<&ResolverConfig>,
    ) -> Result<Pool, String> {
        let mut targets = Vec::with_capacity(cfg.backends.len());
        for b in &cfg.backends {
            targets.push(Target {
                configured: b.addr().to_string(),
                weight: b.weight(),
                kind: BackendTarget::parse(b.addr())?,
            });
        }
        // Literals are in rotation from the start; names join at their first resolution
        // (`dns::first_resolution`, before the first health round).
        let resolved: Vec<Vec<SocketAddr>> = targets
            .iter()
            .map(|t| match t.kind {
                BackendTarget::Literal(a) => vec![a],
                BackendTarget::Named { .. } => Vec::new(),
            })
            .collect();
        let members = Arc::new(MemberTable::default());
        let transport = Arc::new(Transport::new(cfg.protocol, tls, members.clone()));
        let published = Arc::new(ArcSwap::from_pointee(BTreeSet::new()));
        let mut lb = LoadBalancer::<RoundRobin>::from_backends(Backends::new(Box::new(Published(
            published.clone(),
        ))));
        let warmed_up = Arc::new(AtomicBool::new(cfg.health_check.is_none()));
        let check = cfg.health_check.as_ref().map(|hc| {
            let hosts: Vec<String> = targets.iter().map(|t| host_of(&t.configured)).collect();
            let check = health::build_check(name, hc, &transport, &hosts, warmed_up.clone());
            lb.set_health_check(Box::new(health::SharedCheck(check.clone())));
            lb.health_check_frequency = Some(hc.interval.0);
            check
        });
        let outlier = cfg
            .passive_health
            .as_ref()
            .map(|p| super::outlier::Outlier::new(p, &[]));
        let pool = Pool {
            retired: AtomicBool::new(false),
            name: name.to_string(),
            lb,
            targets,
            members,
            published,
            resolved: Mutex::new(resolved.clone()),
            dns_refresh: cfg.dns_refresh.0,
            resolver: resolver.cloned(),
            connect_timeout: cfg.connect_timeout.0,
            read_timeout: cfg.read_timeout.0,
            retries: cfg.retries,
            preserve_host: cfg.preserve_host,
            health_check: cfg.health_check.clone(),
            check,
            outlier,
            breaker: cfg
                .circuit_breaker
                .as_ref()
                .map(|c| super::circuit::CircuitBreaker::new(name, c)),
            retry_on: cfg.retry_on.as_ref().map(super::retry::RetryPolicy::new),
            retry_budget: super::retry::RetryBudget::new(&cfg.retry_budget),
            warmed_up,
            transport,
        };
        let wanted = pool.wanted(&resolved);
        // The discovery above completes immediately; this only builds the selector.
        futures_now(pool.publish(&wanted))?;
        Ok(pool)
    }

    /// Whether any backend is given by name (the pool then has a DNS refresh loop).
    pub fn has_names(&self) -> bool {
        self.targets
            .iter()
            .any(|t| matches!(t.kind, BackendTarget::Named { .. }))
    }

    /// The members `resolved` (per target, its addresses) stands for: each address once, the
    /// first target listing it decides its weight and name.
    pub(crate) fn wanted(&self, resolved: &[Vec<SocketAddr>]) -> Vec<(SocketAddr, usize)> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for (i, addrs) in resolved.iter().enumerate() {
            for a in addrs {
                if seen.insert(*a) {
                    out.push((*a, i));
                }
            }
        }
        out
    }

    /// Make `wanted` (address, index of its target) the rotation: members that stay keep
    /// their state (in-flight count, ejection, health), new ones start fresh, gone ones stop
    /// getting new requests at once; their requests in flight finish, and their idle
    /// connections are never picked again (see [`Member::group_key`]).
    pub(crate) async fn publish(&self, wanted: &[(SocketAddr, usize)]) -> Result<(), String> {
        let old = self.members.snapshot();
        let mut next = HashMap::with_capacity(wanted.len());
        let mut set = BTreeSet::new();
        for (addr, i) in wanted {
            let t = &self.targets[*i];
            let member = old.get(addr).cloned().unwrap_or_else(|| {
                let named = matches!(t.kind, BackendTarget::Named { .. });
                Arc::new(Member::new(
                    *addr,
                    &host_of(&t.configured),
                    &t.configured,
                    named,
                    t.weight,
                ))
            });
            let backend = Backend::new_with_weight(&addr.to_string(), t.weight)
                .map_err(|e| format!("backend {addr}: {e}"))?;
            set.insert(backend);
            next.insert(*addr, member);
        }
        if let Some(outlier) = &self.outlier {
            outlier.track(next.keys().copied());
        }
        // Requests that picked a leaving member just before the swap still find it.
        let mut both = (*old).clone();
        both.extend(next.iter().map(|(a, m)| (*a, m.clone())));
        self.members.store(both);
        self.published.store(Arc::new(set));
        self.lb.update().await.map_err(|e| e.to_string())?;
        for gone in old.keys().filter(|a| !next.contains_key(a)) {
            crate::observability::metrics::forget_backend(&self.name, &gone.to_string());
        }
        self.members.store(next);
        Ok(())
    }

    /// The `Host` an upstream request to `addr` carries when the client's is not preserved.
    pub fn host_header(&self, addr: SocketAddr) -> http::HeaderValue {
        self.members
            .get(&addr)
            .map(|m| m.host_header.clone())
            .unwrap_or_else(|| {
                http::HeaderValue::from_str(&addr.to_string())
                    .unwrap_or(http::HeaderValue::from_static("localhost"))
            })
    }

    /// Next healthy backend in round-robin order that `skip` does not exclude.
    /// Passive health ejections are honoured unless they would leave nothing to pick.
    pub fn select(&self, skip: &[SocketAddr]) -> Option<Backend> {
        let candidate = |b: &Backend, healthy: bool| {
            healthy
                && !skip
                    .iter()
                    .any(|s| *s == b.addr.as_inet().copied().unwrap_or(*s))
        };
        if let Some(outlier) = &self.outlier {
            let now = outlier.now_ms();
            let picked = self.lb.select_with(b"", 256, |b, healthy| {
                candidate(b, healthy)
                    && !b.addr.as_inet().is_some_and(|a| outlier.is_ejected(a, now))
            });
            if picked.is_some() {
                return picked;
            }
        }
        self.lb.select_with(b"", 256, candidate)
    }

    /// Feed passive health with the outcome of one attempt on `addr`.
    pub fn record_outcome(&self, addr: &SocketAddr, failed: bool) {
        if let Some(breaker) = &self.breaker {
            breaker.record(failed, std::time::Instant::now());
        }
        let Some(outlier) = &self.outlier else {
            return;
        };
        if !failed {
            outlier.record_success(addr);
        } else if let Some(d) = outlier.record_failure(addr, outlier.now_ms()) {
            tracing::warn!(
                "backend {addr} of upstream {}: ejected for {}s after consecutive failures",
                self.name,
                d.as_secs()
            );
        }
    }

    pub fn health(&self) -> PoolHealth {
        let set = self.lb.backends().get_backend();
        let healthy = set.iter().filter(|b| self.lb.backends().ready(b)).count();
        PoolHealth {
            healthy,
            total: set.len(),
        }
    }

    /// Export per-backend readiness to `tollgate_upstream_backend_healthy`; returns what was
    /// published.
    pub fn publish_health_gauges(&self) -> Vec<(String, bool)> {
        let health = self.backend_health();
        for (backend, healthy) in &health {
            crate::observability::metrics::set_backend_health(&self.name, backend, *healthy);
        }
        health
    }

    /// What admin `/upstreams` shows of this pool: circuit state and, per backend, active
    /// health and passive ejection.
    pub fn status(&self) -> serde_json::Value {
        use super::circuit::Phase;
        let circuit = self.breaker.as_ref().map(|b| match b.phase() {
            Phase::Closed => serde_json::json!({"state": "closed"}),
            Phase::Open { until } => serde_json::json!({
                "state": "open",
                "open_for_ms": until.saturating_duration_since(std::time::Instant::now()).as_millis() as u64,
            }),
            Phase::HalfOpen { .. } => serde_json::json!({"state": "half_open"}),
        });
        let set = self.lb.backends().get_backend();
        let members = self.members.snapshot();
        let member_json = |b: &Backend| {
            let addr = b.addr.as_inet().copied();
            let ejected = addr
                .as_ref()
                .and_then(|a| self.outlier.as_ref()?.ejected_for(a));
            let member = addr.and_then(|a| members.get(&a));
            serde_json::json!({
                "address": b.addr.to_string(),
                "weight": b.weight,
                "healthy": self.lb.backends().ready(b),
                "ejected_for_ms": ejected.map(|d| d.as_millis() as u64),
                "in_flight": member.map_or(0, |m| m.in_flight()),
            })
        };
        let resolved = self.resolved.lock().map(|r| r.clone()).unwrap_or_default();
        // Per configured backend, its addresses now (a name: those of its last answer that
        // are in rotation; an address that failed its first health check is listed as pending).
        let mut listed = std::collections::HashSet::new();
        let backends: Vec<serde_json::Value> = self
            .targets
            .iter()
            .enumerate()
            .flat_map(|(i, t)| {
                let addrs = resolved.get(i).cloned().unwrap_or_default();
                let mut out = Vec::new();
                for a in addrs {
                    if !listed.insert(a) {
                        continue;
                    }
                    let mut v = match set.iter().find(|b| b.addr.as_inet() == Some(&a)) {
                        Some(b) => member_json(b),
                        None => serde_json::json!({
                            "address": a.to_string(),
                            "weight": t.weight,
                            "healthy": false,
                            "pending": true,
                            "in_flight": 0,
                        }),
                    };
                    if let (BackendTarget::Named { .. }, Some(obj)) = (&t.kind, v.as_object_mut()) {
                        obj.insert("hostname".into(), t.configured.clone().into());
                    }
                    out.push(v);
                }
                out
            })
            .collect();
        let names: Vec<serde_json::Value> = self
            .targets
            .iter()
            .enumerate()
            .filter(|(_, t)| matches!(t.kind, BackendTarget::Named { .. }))
            .map(|(i, t)| {
                let addrs: Vec<String> = resolved
                    .get(i)
                    .map(|a| a.iter().map(ToString::to_string).collect())
                    .unwrap_or_default();
                serde_json::json!({"hostname": t.configured, "addresses": addrs})
            })
            .collect();
        serde_json::json!({
            "name": self.name,
            "health_check": self.health_check.is_some(),
            "circuit": circuit,
            "backends": backends,
            "hostnames": names,
            "dns_refresh_ms": self.has_names().then_some(self.dns_refresh.as_millis() as u64),
        })
    }

    /// Per-backend readiness, for metrics and `/ready`.
    pub fn backend_health(&self) -> Vec<(String, bool)> {
        let set = self.lb.backends().get_backend();
        set.iter()
            .map(|b| (b.addr.to_string(), self.lb.backends().ready(b)))
            .collect()
    }
}

fn futures_now<F: std::future::Future<Output = Result<(), String>>>(f: F) -> Result<(), String> {
    use std::task::{Context, Poll, Waker};
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(r) => r,
        Poll::Pending => Err("backend discovery unexpectedly blocked".to_string()),
    }
}

/// All pools by name, shared by the proxy, the health service and the admin endpoints.
pub struct Pools {
    by_name: HashMap<String, Arc<Pool>>,
    ordered: Vec<Arc<Pool>>,
}

impl Pools {
    /// `tls`: each upstream's TLS material, read by [`super::transport::load_all`].
    /// `previous`: on an in-place reload, the serving config and pools; an upstream whose
    /// definition did not change keeps its pool (health state, ejections, breaker, idle
    /// connections) instead of starting cold.
    pub fn build(
        config: &Config,
        tls: &HashMap<String, TlsMaterial>,
        previous: Option<(&Config, &Pools)>,
    ) -> Result<Pools, crate::config::Problem> {
        let mut by_name = HashMap::new();
        let mut ordered = Vec::new();
        for (name, cfg) in &config.upstreams {
            let kept = previous.and_then(|(old_config, old)| {
                let same_resolver = old_config.server.resolver == config.server.resolver;
                let pool = old.get(name)?;
                (old_config.upstreams.get(name) == Some(cfg)
                    && (same_resolver || !pool.has_names()))
                .then(|| pool.clone())
            });
            let pool = match kept {
                Some(pool) => pool,
                None => Arc::new(
                    Pool::build(
                        name,
                        cfg,
                        tls.get(name).cloned(),
                        config.server.resolver.as_ref(),
                    )
                    .map_err(|e| crate::config::Problem::new(format!("upstreams.{name}"), e))?,
                ),
            };
            by_name.insert(name.clone(), pool.clone());
            ordered.push(pool);
        }
        Ok(Pools { by_name, ordered })
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Pool>> {
        self.by_name.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Pool>> {
        self.ordered.iter()
    }

    /// True once every pool finished its first health round.
    pub fn warmed_up(&self) -> bool {
        self.ordered
            .iter()
            .all(|p| p.warmed_up.load(Ordering::Acquire))
    }
}
