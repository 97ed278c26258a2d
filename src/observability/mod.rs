//! Metrics and the access log, and [`request_finished`], which records one finished request in
//! both (DESIGN.md step 10).

pub mod access_log;
pub mod metrics;
pub mod route_metrics;

use access_log::{AccessLog, Entry};
use metrics::METRICS;
use pingora::http::RequestHeader;
use route_metrics::RouteMetrics;
use std::net::{IpAddr, SocketAddr};

/// Label used for requests that matched no route (bounded metric cardinality).
pub const UNMATCHED: &str = "_unmatched";

/// One request counted in `tollgate_http_requests_in_flight` for as long as this lives, however
/// the request ends.
#[derive(Debug)]
pub struct InFlight(());

impl InFlight {
    pub fn enter() -> InFlight {
        METRICS.in_flight.inc();
        InFlight(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        METRICS.in_flight.dec();
    }
}

/// Everything recorded about one finished request.
pub struct Finished<'a> {
    pub req: &'a RequestHeader,
    /// 0 when no response was written.
    pub status: u16,
    /// The route name, or [`UNMATCHED`].
    pub route: &'a str,
    /// The route's metric series ([`RouteMetrics::unmatched`] without a route).
    pub metrics: &'a RouteMetrics,
    pub upstream: Option<&'a str>,
    /// The `split` side the upstream was on (0 without `split`).
    pub side: usize,
    pub backend: Option<SocketAddr>,
    pub seconds: f64,
    pub upstream_seconds: Option<f64>,
    pub bytes_sent: usize,
    pub request_id: &'a str,
    pub trace_id: Option<&'a str>,
    pub client_ip: Option<IpAddr>,
    pub consumer: Option<&'a str>,
    pub error: Option<&'a str>,
}

/// Count the request in the metrics and write its access-log line.
pub fn request_finished(log: &AccessLog, f: &Finished<'_>) {
    f.metrics.record(&f.req.method, f.status, f.seconds);
    if let Some(up) = f.upstream_seconds {
        f.metrics.upstream(f.side, up);
    }
    if !log.enabled() {
        return;
    }
    let header = |name: &str| f.req.headers.get(name).and_then(|v| v.to_str().ok());
    log.write(&Entry {
        ts: access_log::now_rfc3339(),
        request_id: f.request_id,
        trace_id: f.trace_id,
        client_ip: f.client_ip,
        method: f.req.method.as_str(),
        protocol: match f.req.version {
            http::Version::HTTP_2 => "HTTP/2",
            http::Version::HTTP_10 => "HTTP/1.0",
            http::Version::HTTP_09 => "HTTP/0.9",
            _ => "HTTP/1.1",
        },
        host: crate::routing::request_host(f.req),
        path: f.req.uri.path(),
        route: f.route,
        upstream: f.upstream,
        backend: f.backend,
        status: f.status,
        latency_ms: f.seconds * 1000.0,
        upstream_latency_ms: f.upstream_seconds.map(|s| s * 1000.0),
        bytes_sent: f.bytes_sent,
        user_agent: header("user-agent").unwrap_or(""),
        consumer: f.consumer.filter(|c| !c.is_empty()),
        error: f.error,
    });
}
