//! Active health checks.
//!
//! Pingora starts every backend as healthy and only flips it after `unhealthy_threshold`
//! failures, so a backend that is dead at start would take traffic for a few intervals. The
//! [`GatedCheck`] wrapper makes the *first* round decisive (one failure is enough), and
//! [`HealthService`] only reports ready — which gates the proxy listener — once that first
//! round is done.

use crate::config::{HealthCheckConfig, HealthCheckKind};
use crate::upstream::Pool;
use async_trait::async_trait;
use pingora::http::RequestHeader;
use pingora::lb::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora::lb::Backend;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::services::ServiceReadyNotifier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Wraps Pingora's HTTP/TCP check with our thresholds, first-round rule and transition logs.
pub struct GatedCheck {
    upstream: String,
    inner: Box<dyn HealthCheck + Send + Sync>,
    healthy_threshold: usize,
    unhealthy_threshold: usize,
    warmed_up: Arc<AtomicBool>,
}

pub fn build_check(
    upstream: &str,
    cfg: &HealthCheckConfig,
    warmed_up: Arc<AtomicBool>,
) -> Box<dyn HealthCheck + Send + Sync> {
    let inner: Box<dyn HealthCheck + Send + Sync> = match cfg.kind {
        HealthCheckKind::Http => {
            let mut hc = HttpHealthCheck::new("localhost", false);
            if let Ok(mut req) = RequestHeader::build("GET", cfg.path.as_bytes(), None) {
                // The Host of a health probe is informational; backends route on path.
                let _ = req.insert_header("Host", "localhost");
                let _ = req.insert_header("User-Agent", "tollgate-health-check");
                hc.req = req;
            }
            hc.peer_template.options.connection_timeout = Some(cfg.timeout.0);
            hc.peer_template.options.read_timeout = Some(cfg.timeout.0);
            hc.peer_template.options.total_connection_timeout = Some(cfg.timeout.0);
            Box::new(hc)
        }
        HealthCheckKind::Tcp => {
            let mut hc = TcpHealthCheck::new();
            hc.peer_template.options.connection_timeout = Some(cfg.timeout.0);
            hc.peer_template.options.total_connection_timeout = Some(cfg.timeout.0);
            hc
        }
    };
    Box::new(GatedCheck {
        upstream: upstream.to_string(),
        inner,
        healthy_threshold: cfg.healthy_threshold,
        unhealthy_threshold: cfg.unhealthy_threshold,
        warmed_up,
    })
}

#[async_trait]
impl HealthCheck for GatedCheck {
    async fn check(&self, target: &Backend) -> pingora::Result<()> {
        self.inner.check(target).await
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
        let mut first = tokio::task::JoinSet::new();
        for pool in &checked {
            let pool = pool.clone();
            first.spawn(async move {
                pool.lb.backends().run_health_check(true).await;
                pool.warmed_up.store(true, Ordering::Release);
            });
        }
        while first.join_next().await.is_some() {}
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
            loops.spawn(async move {
                let Some(interval) = pool.health_check.as_ref().map(|h| h.interval.0) else {
                    return;
                };
                let mut tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick.tick().await; // the first tick fires at once; that round already ran
                loop {
                    tick.tick().await;
                    pool.lb.backends().run_health_check(true).await;
                }
            });
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
