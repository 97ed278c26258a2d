//! The admin listener: `/health`, `/ready`, `/upstreams`, `/metrics`. It binds its own address and is never
//! mounted on the public port.

use crate::observability::metrics;
use crate::runtime::live::Live;
use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde::Serialize;
use std::sync::Arc;

pub struct Admin {
    /// The serving generation: `/ready` answers for the upstreams being served now.
    live: Arc<Live>,
}

#[derive(Serialize)]
struct UpstreamReadiness<'a> {
    name: &'a str,
    healthy: usize,
    total: usize,
}

#[derive(Serialize)]
struct Readiness<'a> {
    ready: bool,
    /// Which process answered: lets operators (and the upgrade tests) see a hand-off happen.
    pid: u32,
    /// Which config is served: 1 at start, +1 per in-place reload, and the file's SHA-256.
    config_generation: u64,
    config_sha256: &'a str,
    upstreams: Vec<UpstreamReadiness<'a>>,
}

impl Admin {
    pub fn new(live: Arc<Live>) -> Admin {
        Admin { live }
    }

    /// Ready = the first health round ran and every upstream has a healthy backend.
    pub fn readiness(&self) -> (bool, Vec<u8>) {
        let generation = self.live.current();
        let pools = &generation.pools;
        let upstreams: Vec<UpstreamReadiness<'_>> = pools
            .iter()
            .map(|p| {
                let h = p.health();
                UpstreamReadiness {
                    name: &p.name,
                    healthy: h.healthy,
                    total: h.total,
                }
            })
            .collect();
        let ready = pools.warmed_up() && upstreams.iter().all(|u| u.healthy > 0);
        let body = serde_json::to_vec(&Readiness {
            ready,
            pid: std::process::id(),
            config_generation: generation.number,
            config_sha256: &generation.hash,
            upstreams,
        })
        .unwrap_or_default();
        (ready, body)
    }

    fn refresh_backend_gauges(&self) {
        for pool in self.live.current().pools.iter() {
            pool.publish_health_gauges();
        }
    }
}

fn reply(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("Content-Type", content_type)
        .header("Content-Length", body.len())
        .header("Cache-Control", "no-store")
        .body(body)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path();
        match path {
            "/health" => reply(200, "application/json", br#"{"status":"ok"}"#.to_vec()),
            "/ready" => {
                let (ready, body) = self.readiness();
                reply(if ready { 200 } else { 503 }, "application/json", body)
            }
            "/upstreams" => {
                let generation = self.live.current();
                let body = serde_json::json!({
                    "config_generation": generation.number,
                    "upstreams": generation.pools.iter().map(|p| p.status()).collect::<Vec<_>>(),
                });
                reply(200, "application/json", serde_json::to_vec(&body).unwrap_or_default())
            }
            "/metrics" => {
                self.refresh_backend_gauges();
                reply(200, "text/plain; version=0.0.4", metrics::render())
            }
            _ => reply(
                404,
                "application/json",
                br#"{"error":"not_found","message":"admin endpoints: /health /ready /upstreams /metrics"}"#
                    .to_vec(),
            ),
        }
    }
}
