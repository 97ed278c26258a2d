//! The labelled metric handles one route records into, resolved once instead of per request.
//!
//! `with_label_values` hashes its labels, takes a read lock and looks the series up in a map on
//! every call; a finished request records three series. A route's series are known when the
//! route is built (its duration histogram, the upstream histogram of each `split` side) or
//! take few values (method × common status), so they are resolved at most once per route and
//! then kept. Rare statuses still go through the labelled lookup.

use super::metrics::{method_label, METRICS};
use once_cell::sync::Lazy;
use prometheus::{Histogram, IntCounter};
use std::sync::OnceLock;

/// Methods with their own series (`method_label`'s set, `OTHER` last).
const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "OTHER",
];

/// Statuses whose counters are kept per route; others are looked up per request.
const STATUSES: [u16; 26] = [
    200, 201, 202, 204, 206, 301, 302, 304, 307, 308, 400, 401, 403, 404, 405, 408, 409, 413, 415,
    422, 429, 431, 500, 502, 503, 504,
];

pub struct RouteMetrics {
    route: String,
    duration: Histogram,
    /// `tollgate_upstream_duration_seconds` of each side's upstream (one without `split`).
    upstreams: Vec<Histogram>,
    /// `tollgate_http_requests_total{route, method, status}`, by method and status slot,
    /// filled on first use.
    requests: Box<[OnceLock<IntCounter>]>,
}

impl RouteMetrics {
    /// `upstreams` are the route's upstream names, in `split` side order.
    pub fn new<'a>(route: &str, upstreams: impl IntoIterator<Item = &'a str>) -> RouteMetrics {
        RouteMetrics {
            route: route.to_string(),
            duration: METRICS.request_duration.with_label_values(&[route]),
            upstreams: upstreams
                .into_iter()
                .map(|u| METRICS.upstream_duration.with_label_values(&[u]))
                .collect(),
            requests: (0..METHODS.len() * STATUSES.len())
                .map(|_| OnceLock::new())
                .collect(),
        }
    }

    /// The series of requests that matched no route.
    pub fn unmatched() -> &'static RouteMetrics {
        static UNMATCHED: Lazy<RouteMetrics> =
            Lazy::new(|| RouteMetrics::new(super::UNMATCHED, []));
        &UNMATCHED
    }

    /// Count one finished request (`status` 0: no response was written) and its duration.
    pub fn record(&self, method: &http::Method, status: u16, seconds: f64) {
        self.duration.observe(seconds);
        let method = method_label(method);
        let slot = METHODS
            .iter()
            .position(|m| *m == method)
            .zip(STATUSES.iter().position(|s| *s == status))
            .map(|(m, s)| m * STATUSES.len() + s);
        match slot {
            Some(i) => self.requests[i]
                .get_or_init(|| self.counter(method, status))
                .inc(),
            None => self.counter(method, status).inc(),
        }
    }

    /// Time spent on the upstream of `side`.
    pub fn upstream(&self, side: usize, seconds: f64) {
        if let Some(h) = self.upstreams.get(side) {
            h.observe(seconds);
        }
    }

    fn counter(&self, method: &str, status: u16) -> IntCounter {
        let code = http::StatusCode::from_u16(status).ok();
        let status = code.as_ref().map_or("0", http::StatusCode::as_str);
        METRICS
            .requests
            .with_label_values(&[self.route.as_str(), method, status])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(route: &str, method: &str, status: &str) -> u64 {
        METRICS
            .requests
            .with_label_values(&[route, method, status])
            .get()
    }

    #[test]
    fn kept_and_looked_up_series_count_into_the_same_labels() {
        let m = RouteMetrics::new("route-metrics-test", ["u1", "u2"]);
        for _ in 0..3 {
            m.record(&http::Method::GET, 200, 0.001);
        }
        m.record(&http::Method::from_bytes(b"PURGE").unwrap(), 418, 0.001);
        m.record(&http::Method::POST, 0, 0.001);
        assert_eq!(count("route-metrics-test", "GET", "200"), 3);
        assert_eq!(count("route-metrics-test", "OTHER", "418"), 1);
        assert_eq!(count("route-metrics-test", "POST", "0"), 1);
        m.upstream(1, 0.5);
        m.upstream(7, 0.5);
        let h = METRICS.upstream_duration.with_label_values(&["u2"]);
        assert_eq!(h.get_sample_count(), 1);
    }
}
