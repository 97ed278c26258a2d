//! A named pool: Pingora's weighted round robin over backends resolved at config load.

use crate::config::{Config, HealthCheckConfig, UpstreamConfig};
use pingora::lb::discovery::Static;
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, Backends, LoadBalancer};
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::health;
use super::transport::{TlsMaterial, Transport};

/// Everything the proxy needs to send a request to one upstream.
pub struct Pool {
    pub name: String,
    pub lb: LoadBalancer<RoundRobin>,
    pub backends: Vec<SocketAddr>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// Extra attempts on other backends after a connect failure.
    pub retries: usize,
    pub preserve_host: bool,
    pub health_check: Option<HealthCheckConfig>,
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
    /// Each backend's `Host` header value (its address), made once instead of per request.
    host_headers: Vec<(SocketAddr, http::HeaderValue)>,
    /// Set when an in-place reload dropped this upstream: its probe loop stops.
    pub retired: AtomicBool,
}

/// How many backends a pool has and how many are in rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolHealth {
    pub healthy: usize,
    pub total: usize,
}

impl Pool {
    fn build(name: &str, cfg: &UpstreamConfig, tls: Option<TlsMaterial>) -> Result<Pool, String> {
        let mut set = BTreeSet::new();
        let mut addrs = Vec::with_capacity(cfg.backends.len());
        let mut configured = Vec::with_capacity(cfg.backends.len());
        for b in &cfg.backends {
            let addr = crate::config::resolve_backend(b.addr())?;
            let backend = Backend::new_with_weight(&addr.to_string(), b.weight())
                .map_err(|e| format!("backend {addr}: {e}"))?;
            set.insert(backend);
            addrs.push(addr);
            configured.push((addr, b.addr()));
        }
        let transport = Arc::new(Transport::new(cfg.protocol, tls, &configured));
        let mut lb = LoadBalancer::<RoundRobin>::from_backends(Backends::new(Static::new(set)));
        // Static discovery completes immediately; this only builds the selector.
        futures_now(lb.update())?;
        let warmed_up = Arc::new(AtomicBool::new(cfg.health_check.is_none()));
        if let Some(hc) = &cfg.health_check {
            lb.set_health_check(health::build_check(
                name,
                hc,
                &transport,
                &addrs,
                warmed_up.clone(),
            ));
            lb.health_check_frequency = Some(hc.interval.0);
        }
        let outlier = cfg
            .passive_health
            .as_ref()
            .map(|p| super::outlier::Outlier::new(p, &addrs));
        let host_headers = addrs
            .iter()
            .filter_map(|a| Some((*a, http::HeaderValue::from_str(&a.to_string()).ok()?)))
            .collect();
        Ok(Pool {
            host_headers,
            retired: AtomicBool::new(false),
            name: name.to_string(),
            lb,
            backends: addrs,
            connect_timeout: cfg.connect_timeout.0,
            read_timeout: cfg.read_timeout.0,
            retries: cfg.retries,
            preserve_host: cfg.preserve_host,
            health_check: cfg.health_check.clone(),
            outlier,
            breaker: cfg
                .circuit_breaker
                .as_ref()
                .map(|c| super::circuit::CircuitBreaker::new(name, c)),
            retry_on: cfg.retry_on.as_ref().map(super::retry::RetryPolicy::new),
            retry_budget: super::retry::RetryBudget::new(&cfg.retry_budget),
            warmed_up,
            transport,
        })
    }

    /// The `Host` an upstream request to `addr` carries when the client's is not preserved.
    pub fn host_header(&self, addr: SocketAddr) -> http::HeaderValue {
        self.host_headers
            .iter()
            .find(|(a, _)| *a == addr)
            .map(|(_, h)| h.clone())
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
        let backends: Vec<serde_json::Value> = set
            .iter()
            .map(|b| {
                let ejected = b
                    .addr
                    .as_inet()
                    .and_then(|a| self.outlier.as_ref()?.ejected_for(a));
                serde_json::json!({
                    "address": b.addr.to_string(),
                    "weight": b.weight,
                    "healthy": self.lb.backends().ready(b),
                    "ejected_for_ms": ejected.map(|d| d.as_millis() as u64),
                })
            })
            .collect();
        serde_json::json!({
            "name": self.name,
            "health_check": self.health_check.is_some(),
            "circuit": circuit,
            "backends": backends,
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

fn futures_now<F: std::future::Future<Output = pingora::Result<()>>>(f: F) -> Result<(), String> {
    use std::task::{Context, Poll, Waker};
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(r) => r.map_err(|e| e.to_string()),
        Poll::Pending => Err("static backend discovery unexpectedly blocked".to_string()),
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
                (old_config.upstreams.get(name) == Some(cfg))
                    .then(|| old.get(name).cloned())
                    .flatten()
            });
            let pool = match kept {
                Some(pool) => pool,
                None => Arc::new(
                    Pool::build(name, cfg, tls.get(name).cloned())
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
