//! Prometheus metrics of DESIGN.md. Labels are bounded: route *names* from config (or
//! `_unmatched`), upstream and backend names from config, a fixed method set, status codes.

use once_cell::sync::Lazy;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Sub-millisecond to 10 s: a gateway's own latency lives at the low end, upstreams at the top.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub upstream_duration: HistogramVec,
    pub backend_healthy: IntGaugeVec,
    pub in_flight: IntGauge,
    pub build_info: IntGaugeVec,
    pub auth_failures: IntCounterVec,
    pub rate_limited: IntCounterVec,
    pub sanitize_failures: IntCounterVec,
    pub access_log_dropped: prometheus::IntCounter,
    pub circuit_state: IntGaugeVec,
    pub upstream_retries: IntCounterVec,
    /// Requests a `split` sent to another side because theirs had no healthy backend.
    pub split_fallbacks: IntCounterVec,
    /// Mirror copies by outcome: sent, error, dropped (overflow), too_large, no_backend.
    pub mirror_requests: IntCounterVec,
    pub retry_budget_exhausted: IntCounterVec,
    pub downstream_connections: IntGauge,
    pub connections_rejected: IntCounterVec,
    pub ratelimit_backend_errors: prometheus::IntCounter,
    pub tls_handshakes: IntCounterVec,
    pub tls_certificate_expiry: IntGaugeVec,
    pub config_reloads: IntCounterVec,
    pub config_generation: IntGauge,
    pub ip_denied: IntCounterVec,
    /// Spans not exported, by reason: queue_full (the exporter fell behind), export_failed.
    pub trace_spans_dropped: IntCounterVec,
    pub trace_spans_exported: prometheus::IntCounter,
    /// Backend hostname lookups by upstream and result (ok, error, empty).
    pub dns_resolutions: IntCounterVec,
    /// Requests of cached routes by result: hit, miss, bypass.
    pub cache_requests: IntCounterVec,
    /// Entries the store evicted to stay under `server.cache.max_size`.
    pub cache_evictions: prometheus::IntCounter,
    /// Concurrent misses that waited `lock_timeout` for another request's fill in vain.
    pub cache_lock_timeouts: prometheus::IntCounter,
    pub cache_bytes: IntGauge,
    pub cache_entries: IntGauge,
}

fn build() -> prometheus::Result<Metrics> {
    let registry = Registry::new();
    let requests = IntCounterVec::new(
        Opts::new(
            "tollgate_http_requests_total",
            "Requests answered, by route, method and status",
        ),
        &["route", "method", "status"],
    )?;
    let request_duration = HistogramVec::new(
        HistogramOpts::new(
            "tollgate_http_request_duration_seconds",
            "Time from request to end of response, by route",
        )
        .buckets(BUCKETS.to_vec()),
        &["route"],
    )?;
    let upstream_duration = HistogramVec::new(
        HistogramOpts::new(
            "tollgate_upstream_duration_seconds",
            "Time spent waiting on the upstream, by upstream",
        )
        .buckets(BUCKETS.to_vec()),
        &["upstream"],
    )?;
    let backend_healthy = IntGaugeVec::new(
        Opts::new(
            "tollgate_upstream_backend_healthy",
            "1 if the backend is in rotation",
        ),
        &["upstream", "backend"],
    )?;
    let in_flight = IntGauge::new("tollgate_http_requests_in_flight", "Requests being handled")?;
    let build_info = IntGaugeVec::new(
        Opts::new("tollgate_build_info", "Build information"),
        &["version"],
    )?;
    let auth_failures = IntCounterVec::new(
        Opts::new(
            "tollgate_auth_failures_total",
            "Requests refused by auth, by route and reason",
        ),
        &["route", "reason"],
    )?;
    registry.register(Box::new(auth_failures.clone()))?;
    let rate_limited = IntCounterVec::new(
        Opts::new(
            "tollgate_rate_limited_total",
            "Requests refused with 429, by route and limit",
        ),
        &["route", "limit"],
    )?;
    registry.register(Box::new(rate_limited.clone()))?;
    let sanitize_failures = IntCounterVec::new(
        Opts::new(
            "tollgate_response_sanitize_failures_total",
            "JSON responses refused because they could not be sanitised, by route and reason",
        ),
        &["route", "reason"],
    )?;
    registry.register(Box::new(sanitize_failures.clone()))?;
    let ip_denied = IntCounterVec::new(
        Opts::new(
            "tollgate_ip_denied_total",
            "Requests refused with 403 by a route's ip rules, by route",
        ),
        &["route"],
    )?;
    registry.register(Box::new(ip_denied.clone()))?;
    let access_log_dropped = prometheus::IntCounter::new(
        "tollgate_access_log_dropped_total",
        "Access log lines dropped because the writer fell behind",
    )?;
    registry.register(Box::new(access_log_dropped.clone()))?;
    let circuit_state = IntGaugeVec::new(
        Opts::new(
            "tollgate_circuit_state",
            "Circuit breaker state per upstream: 0 closed, 1 open, 2 half-open",
        ),
        &["upstream"],
    )?;
    registry.register(Box::new(circuit_state.clone()))?;
    let upstream_retries = IntCounterVec::new(
        Opts::new(
            "tollgate_upstream_retries_total",
            "Extra upstream attempts, by upstream and reason (connect, status, reset, timeout)",
        ),
        &["upstream", "reason"],
    )?;
    registry.register(Box::new(upstream_retries.clone()))?;
    let split_fallbacks = IntCounterVec::new(
        Opts::new(
            "tollgate_split_fallback_total",
            "Requests of a split route sent to another side because their side had no healthy backend",
        ),
        &["route"],
    )?;
    registry.register(Box::new(split_fallbacks.clone()))?;
    let mirror_requests = IntCounterVec::new(
        Opts::new(
            "tollgate_mirror_requests_total",
            "Mirror copies by route and result: sent, error, dropped (over max_concurrent), too_large, no_backend",
        ),
        &["route", "result"],
    )?;
    registry.register(Box::new(mirror_requests.clone()))?;
    let retry_budget_exhausted = IntCounterVec::new(
        Opts::new(
            "tollgate_retry_budget_exhausted_total",
            "Post-send retries not made because the upstream's retry budget was spent",
        ),
        &["upstream"],
    )?;
    registry.register(Box::new(retry_budget_exhausted.clone()))?;
    let downstream_connections = IntGauge::new(
        "tollgate_downstream_connections",
        "Client connections open on the public listeners",
    )?;
    registry.register(Box::new(downstream_connections.clone()))?;
    let connections_rejected = IntCounterVec::new(
        Opts::new(
            "tollgate_connections_rejected_total",
            "Client connections cut off, by reason (max_connections, header_timeout)",
        ),
        &["reason"],
    )?;
    registry.register(Box::new(connections_rejected.clone()))?;
    let ratelimit_backend_errors = prometheus::IntCounter::new(
        "tollgate_ratelimit_backend_errors_total",
        "Shared rate-limit backend (Redis) failures; each decision fell back to local estimates",
    )?;
    registry.register(Box::new(ratelimit_backend_errors.clone()))?;
    let tls_handshakes = IntCounterVec::new(
        Opts::new(
            "tollgate_tls_handshakes_total",
            "TLS handshakes on the public listeners, by result (ok, unknown_name, client_certificate_rejected)",
        ),
        &["result"],
    )?;
    registry.register(Box::new(tls_handshakes.clone()))?;
    let tls_certificate_expiry = IntGaugeVec::new(
        Opts::new(
            "tollgate_tls_certificate_expiry_seconds",
            "Unix time at which the served certificate for each name expires (notAfter)",
        ),
        &["name"],
    )?;
    registry.register(Box::new(tls_certificate_expiry.clone()))?;
    let config_reloads = IntCounterVec::new(
        Opts::new(
            "tollgate_config_reloads_total",
            "In-place config reloads (SIGHUP), by result (ok, refused)",
        ),
        &["result"],
    )?;
    registry.register(Box::new(config_reloads.clone()))?;
    let config_generation = IntGauge::new(
        "tollgate_config_generation",
        "Generation of the config being served: 1 at start, +1 per successful reload",
    )?;
    registry.register(Box::new(config_generation.clone()))?;
    let trace_spans_dropped = IntCounterVec::new(
        Opts::new(
            "tollgate_trace_spans_dropped_total",
            "Spans not exported, by reason: queue_full (the export queue was full), export_failed (the collector failed or did not answer in time)",
        ),
        &["reason"],
    )?;
    registry.register(Box::new(trace_spans_dropped.clone()))?;
    let trace_spans_exported = prometheus::IntCounter::new(
        "tollgate_trace_spans_exported_total",
        "Spans the OTLP collector accepted",
    )?;
    registry.register(Box::new(trace_spans_exported.clone()))?;
    let dns_resolutions = IntCounterVec::new(
        Opts::new(
            "tollgate_dns_resolutions_total",
            "Resolutions of backend hostnames, by upstream and result (ok, error, empty)",
        ),
        &["upstream", "result"],
    )?;
    registry.register(Box::new(dns_resolutions.clone()))?;
    let cache_requests = IntCounterVec::new(
        Opts::new(
            "tollgate_cache_requests_total",
            "Requests of routes with cache, by route and result (hit, miss, bypass)",
        ),
        &["route", "result"],
    )?;
    registry.register(Box::new(cache_requests.clone()))?;
    let cache_evictions = prometheus::IntCounter::new(
        "tollgate_cache_evictions_total",
        "Responses evicted from the cache store to stay under server.cache.max_size",
    )?;
    registry.register(Box::new(cache_evictions.clone()))?;
    let cache_lock_timeouts = prometheus::IntCounter::new(
        "tollgate_cache_lock_timeouts_total",
        "Cache misses that waited server.cache.lock_timeout for another request's fill in vain",
    )?;
    registry.register(Box::new(cache_lock_timeouts.clone()))?;
    let cache_bytes = IntGauge::new(
        "tollgate_cache_bytes",
        "Bytes held by the cache store (bodies, heads and keys, as weighed against max_size)",
    )?;
    registry.register(Box::new(cache_bytes.clone()))?;
    let cache_entries = IntGauge::new(
        "tollgate_cache_entries",
        "Entries in the cache store (responses and Vary rules)",
    )?;
    registry.register(Box::new(cache_entries.clone()))?;
    #[cfg(target_os = "linux")]
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    registry.register(Box::new(requests.clone()))?;
    registry.register(Box::new(request_duration.clone()))?;
    registry.register(Box::new(upstream_duration.clone()))?;
    registry.register(Box::new(backend_healthy.clone()))?;
    registry.register(Box::new(in_flight.clone()))?;
    registry.register(Box::new(build_info.clone()))?;
    build_info
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
    Ok(Metrics {
        registry,
        requests,
        request_duration,
        upstream_duration,
        backend_healthy,
        in_flight,
        build_info,
        auth_failures,
        rate_limited,
        sanitize_failures,
        access_log_dropped,
        circuit_state,
        upstream_retries,
        split_fallbacks,
        mirror_requests,
        retry_budget_exhausted,
        downstream_connections,
        connections_rejected,
        ratelimit_backend_errors,
        tls_handshakes,
        tls_certificate_expiry,
        config_reloads,
        config_generation,
        ip_denied,
        trace_spans_dropped,
        trace_spans_exported,
        dns_resolutions,
        cache_requests,
        cache_evictions,
        cache_lock_timeouts,
        cache_bytes,
        cache_entries,
    })
}

pub static METRICS: Lazy<Metrics> =
    Lazy::new(|| build().expect("metric definitions are static and valid"));

pub fn set_backend_health(upstream: &str, backend: &str, healthy: bool) {
    METRICS
        .backend_healthy
        .with_label_values(&[upstream, backend])
        .set(i64::from(healthy));
}

/// A backend left its pool (DNS no longer lists it): drop its gauge rather than report it
/// forever (the label set stays bounded by what DNS lists now).
pub fn forget_backend(upstream: &str, backend: &str) {
    let _ = METRICS
        .backend_healthy
        .remove_label_values(&[upstream, backend]);
}

/// A bounded method label: the known methods, else `OTHER`.
pub fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Prometheus text exposition of everything registered.
pub fn render() -> Vec<u8> {
    let mut out = Vec::with_capacity(8 * 1024);
    let encoder = TextEncoder::new();
    if let Err(e) = encoder.encode(&METRICS.registry.gather(), &mut out) {
        tracing::error!("failed to encode metrics: {e}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_contains_the_documented_metrics() {
        METRICS
            .requests
            .with_label_values(&["orders", "GET", "200"])
            .inc();
        set_backend_health("orders", "127.0.0.1:1", true);
        METRICS.in_flight.set(0);
        METRICS
            .request_duration
            .with_label_values(&["orders"])
            .observe(0.001);
        METRICS
            .upstream_duration
            .with_label_values(&["orders"])
            .observe(0.001);
        let text = String::from_utf8(render()).unwrap();
        for name in [
            "tollgate_http_requests_total{method=\"GET\",route=\"orders\",status=\"200\"} 1",
            "tollgate_upstream_backend_healthy{backend=\"127.0.0.1:1\",upstream=\"orders\"} 1",
            "tollgate_http_request_duration_seconds_bucket",
            "tollgate_upstream_duration_seconds_bucket",
            "tollgate_http_requests_in_flight 0",
            "tollgate_build_info{version=",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }
}
