//! Active health checks.
//!
//! Pingora starts every backend as healthy and only flips it after `unhealthy_threshold`
//! failures, so a backend that is dead at start would take traffic for a few intervals. The
//! [`GatedCheck`] wrapper makes the *first* round decisive (one failure is enough), and
//! [`HealthService`] only reports ready — which gates the proxy listener — once that first
//! round is done.

use super::transport::Transport;
use crate::config::{HealthCheckConfig, HealthCheckKind};
use crate::upstream::Pool;
use async_trait::async_trait;
use pingora::connectors::TransportConnector;
use pingora::http::RequestHeader;
use pingora::lb::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora::lb::Backend;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::services::ServiceReadyNotifier;
use pingora::upstreams::peer::HttpPeer;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Wraps Pingora's HTTP/TCP check with our thresholds, first-round rule and transition logs.
pub struct GatedCheck {
    upstream: String,
    /// One probe per server name (TLS backends of a pool may be reached under different
    /// names); a single one without TLS.
    probes: Vec<Box<dyn HealthCheck + Send + Sync>>,
    /// Which probe checks the backends reached under a server name; absent: the first.
    probe_of: HashMap<String, usize>,
    /// Knows each current address's server name (addresses change with DNS).
    transport: Arc<Transport>,
    healthy_threshold: usize,
    unhealthy_threshold: usize,
    warmed_up: Arc<AtomicBool>,
}

/// The pool's check: the same TLS settings (server name, CA, client certificate) and HTTP
/// version as its requests, so a backend is only healthy if requests can reach it.
/// `hosts`: the host of every configured backend (a name or an IP).
pub fn build_check(
    upstream: &str,
    cfg: &HealthCheckConfig,
    transport: &Arc<Transport>,
    hosts: &[String],
    warmed_up: Arc<AtomicBool>,
) -> Arc<GatedCheck> {
    let mut names: Vec<String> = hosts.iter().map(|h| transport.sni_for_host(h)).collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        names.push(String::new());
    }
    let mut probes = Vec::with_capacity(names.len());
    let mut probe_of = HashMap::new();
    for (i, sni) in names.into_iter().enumerate() {
        probes.push(probe(cfg, transport, sni.clone()));
        probe_of.insert(sni, i);
    }
    Arc::new(GatedCheck {
        upstream: upstream.to_string(),
        probes,
        probe_of,
        transport: transport.clone(),
        healthy_threshold: cfg.healthy_threshold,
        unhealthy_threshold: cfg.unhealthy_threshold,
        warmed_up,
    })
}

impl GatedCheck {
    /// One probe of an address that is not in rotation yet, reached as `host` (its name).
    pub async fn probe_new(&self, addr: SocketAddr, host: &str) -> pingora::Result<()> {
        let i = self
            .probe_of
            .get(&self.transport.sni_for_host(host))
            .copied()
            .unwrap_or(0);
        let backend = Backend::new(&addr.to_string())?;
        match self.probes.get(i) {
            Some(probe) => probe.check(&backend).await,
            None => pingora::Error::e_explain(
                pingora::ErrorType::InternalError,
                "no health probe for this backend",
            ),
        }
    }
}

/// The pool's [`GatedCheck`] as Pingora's load balancer holds it, while the pool keeps its own
/// handle to probe a new address once before it joins rotation.
pub struct SharedCheck(pub Arc<GatedCheck>);

#[async_trait]
impl HealthCheck for SharedCheck {
    async fn check(&self, target: &Backend) -> pingora::Result<()> {
        self.0.check(target).await
    }

    async fn health_status_change(&self, target: &Backend, healthy: bool) {
        self.0.health_status_change(target, healthy).await
    }

    fn backend_summary(&self, target: &Backend) -> String {
        self.0.backend_summary(target)
    }

    fn health_threshold(&self, success: bool) -> usize {
        self.0.health_threshold(success)
    }
}

/// One Pingora check for the backends reached under `sni` (empty without TLS).
fn probe(
    cfg: &HealthCheckConfig,
    transport: &Transport,
    sni: String,
) -> Box<dyn HealthCheck + Send + Sync> {
    match cfg.kind {
        HealthCheckKind::Http => {
            let mut hc = HttpHealthCheck::new("localhost", transport.is_tls());
            // The Host of a health probe is informational; backends route on path. Over TLS
            // it is the server name, which name-based virtual hosts expect.
            let host = if sni.is_empty() { "localhost" } else { &sni };
            if let Ok(mut req) = RequestHeader::build("GET", cfg.path.as_bytes(), None) {
                let _ = req.insert_header("Host", host);
                let _ = req.insert_header("User-Agent", "tollgate-health-check");
                hc.req = req;
            }
            hc.peer_template.sni = sni;
            transport.apply(&mut hc.peer_template);
            hc.peer_template.options.connection_timeout = Some(cfg.timeout.0);
            hc.peer_template.options.read_timeout = Some(cfg.timeout.0);
            hc.peer_template.options.total_connection_timeout = Some(cfg.timeout.0);
            Box::new(hc)
        }
        HealthCheckKind::Tcp if transport.is_tls() => {
            // The address is a placeholder: each check sets the backend's.
            let mut peer = HttpPeer::new(SocketAddr::from(([0, 0, 0, 0], 1)), true, sni);
            transport.apply(&mut peer);
            peer.options.connection_timeout = Some(cfg.timeout.0);
            peer.options.total_connection_timeout = Some(cfg.timeout.0);
            Box::new(HandshakeCheck {
                peer_template: peer,
                connector: TransportConnector::new(None),
            })
        }
        HealthCheckKind::Tcp => {
            let mut hc = TcpHealthCheck::new();
            hc.peer_template.options.connection_timeout = Some(cfg.timeout.0);
            hc.peer_template.options.total_connection_timeout = Some(cfg.timeout.0);
            hc
        }
    }
}

/// `type: tcp` on a TLS upstream: the TCP connect *and* the TLS handshake, with the pool's CA
/// and client certificate. Pingora's `TcpHealthCheck::new_tls` takes a `BasicPeer`, which has
/// no client certificate and no per-peer CA (and, with an empty SNI, would skip TLS entirely).
struct HandshakeCheck {
    peer_template: HttpPeer,
    connector: TransportConnector,
}

#[async_trait]
impl HealthCheck for HandshakeCheck {
    async fn check(&self, target: &Backend) -> pingora::Result<()> {
        let mut peer = self.peer_template.clone();
        peer._address = target.addr.clone();
        self.connector.get_stream(&peer).await.map(drop)
    }

    fn health_threshold(&self, _success: bool) -> usize {
        1
    }
}

#[async_trait]
impl HealthCheck for GatedCheck {
    async fn check(&self, target: &Backend) -> pingora::Result<()> {
        let i = match (target.addr.as_inet(), self.probes.len()) {
            (Some(addr), 2..) => self
                .probe_of
                .get(&self.transport.sni(*addr))
                .copied()
                .unwrap_or(0),
            _ => 0,
        };
        match self.probes.get(i) {
            Some(probe) => probe.check(target).await,
            None => pingora::Error::e_explain(
                pingora::ErrorType::InternalError,
                "no health probe for this backend",
            ),
        }
    }

    async fn health_status_change(&self, target: &Backend, healthy: bool) {
        let (from, to) = if healthy {
            ("unhealthy", "healthy")
        } else {
            ("healthy", "unhealthy")
        };
        tracing::warn!(
            "backend {} of upstream {}: {from} -> {to}",
            target.addr,
            self.upstream
        );
        crate::observability::metrics::set_backend_health(
            &self.upstream,
            &target.addr.to_string(),
            healthy,
        );
    }

    fn backend_summary(&self, target: &Backend) -> String {
        format!("backend {} of upstream {}", target.addr, self.upstream)
    }

    fn health_threshold(&self, success: bool) -> usize {
        if success {
            self.healthy_threshold
        } else if self.warmed_up.load(Ordering::Acquire) {
            self.unhealthy_threshold
        } else {
            1
        }
    }
}

/// Runs every pool's checks: one decisive round, then `ready`, then each at its interval.
pub struct HealthService {
    pools: Vec<Arc<Pool>>,
}

impl HealthService {
    pub fn new(pools: Vec<Arc<Pool>>) -> Self {
        HealthService { pools }
    }
}

/// The first probe round of every pool with a health check, concurrently; each pool is marked
/// warmed up when its round is done. Run before a pool takes traffic: at start, and for the
/// new pools of an in-place reload.
pub async fn first_round(pools: &[Arc<Pool>]) {
    let mut first = tokio::task::JoinSet::new();
    for pool in pools.iter().filter(|p| p.health_check.is_some()) {
        let pool = pool.clone();
        first.spawn(async move {
            pool.lb.backends().run_health_check(true).await;
            pool.warmed_up.store(true, Ordering::Release);
        });
    }
    while first.join_next().await.is_some() {}
}

/// Probe a pool every `interval` until a reload retires it.
pub async fn probe_loop(pool: Arc<Pool>) {
    let Some(interval) = pool.health_check.as_ref().map(|h| h.interval.0) else {
        return;
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick fires at once; that round already ran
    loop {
        tick.tick().await;
        if pool.retired.load(Ordering::Acquire) {
            return;
        }
        pool.lb.backends().run_health_check(true).await;
    }
}

#[async_trait]
impl BackgroundService for HealthService {
    async fn start_with_ready_notifier(
        &self,
        mut shutdown: ShutdownWatch,
        ready: ServiceReadyNotifier,
    ) {
        let checked: Vec<Arc<Pool>> = self
            .pools
            .iter()
            .filter(|p| p.health_check.is_some())
            .cloned()
            .collect();
        super::dns::first_resolution(&self.pools).await;
        first_round(&checked).await;
        for pool in &self.pools {
            for (backend, healthy) in pool.publish_health_gauges() {
                if !healthy {
                    tracing::warn!(
                        "backend {backend} of upstream {} is unhealthy at start",
                        pool.name
                    );
                }
            }
        }
        tracing::info!("first health-check round done; accepting traffic");
        ready.notify_ready();

        let mut loops = tokio::task::JoinSet::new();
        for pool in checked {
            loops.spawn(probe_loop(pool));
        }
        for pool in self.pools.iter().filter(|p| p.has_names()) {
            loops.spawn(super::dns::refresh_loop(pool.clone()));
        }
        // Stop probing when the server shuts down; dropping the set aborts the loops.
        while shutdown.changed().await.is_ok() {
            if *shutdown.borrow() {
                break;
            }
        }
        loops.abort_all();
    }
}
