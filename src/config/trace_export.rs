//! `tracing:` — OpenTelemetry span export (DESIGN.md "Tracing export").

use super::{HumanDuration, Problem};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// The whole `tracing` section; absent means no spans at all (nothing on the request path).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    pub otlp: OtlpConfig,
}

/// Where and how spans are exported, and which requests are sampled.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// `http://host:4318` (http/protobuf: `/v1/traces` is appended when the URL has no path)
    /// or `http://host:4317` (grpc).
    pub endpoint: String,
    #[serde(default)]
    pub protocol: OtlpProtocol,
    /// Share of new traces (no sampled/unsampled `traceparent` came in) that are recorded;
    /// an incoming `traceparent` decides for its own trace (parent-based sampling).
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: f64,
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Extra headers (gRPC metadata) on every export, e.g. a collector's API key. Shown
    /// redacted by the admin `/config`; prefer `headers_env` for secrets.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Header name → environment variable holding its value (read at start and on reload).
    #[serde(default)]
    pub headers_env: BTreeMap<String, String>,
    /// Bound on one export request; a batch that takes longer is dropped and counted.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    #[serde(default)]
    pub batch: BatchConfig,
}

/// The bounded queue between the request path and the exporter.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Finished spans waiting for export; when it is full, new spans are dropped and counted.
    #[serde(default = "default_max_queue")]
    pub max_queue: usize,
    /// Spans per export request.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// A batch is sent when it is full or this long after its first span.
    #[serde(default = "default_delay")]
    pub delay: HumanDuration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_queue: default_max_queue(),
            max_batch: default_max_batch(),
            delay: default_delay(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum OtlpProtocol {
    #[default]
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    #[serde(rename = "grpc")]
    Grpc,
}

fn default_sample_ratio() -> f64 {
    1.0
}
fn default_service_name() -> String {
    "tollgate".to_string()
}
fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
fn default_max_queue() -> usize {
    2048
}
fn default_max_batch() -> usize {
    512
}
fn default_delay() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}

impl OtlpConfig {
    /// The URL spans are sent to: the endpoint as written, plus `/v1/traces` for
    /// http/protobuf when it names no path (as `OTEL_EXPORTER_OTLP_ENDPOINT` is treated).
    pub fn export_url(&self) -> String {
        let base = self.endpoint.trim_end_matches('/');
        match self.protocol {
            OtlpProtocol::HttpProtobuf => match base.parse::<http::Uri>() {
                Ok(uri) if uri.path() == "/" || uri.path().is_empty() => {
                    format!("{base}/v1/traces")
                }
                _ => self.endpoint.clone(),
            },
            OtlpProtocol::Grpc => self.endpoint.clone(),
        }
    }
}

/// The section's own checks, with YAML paths.
pub(super) fn check(tracing: &TracingConfig, out: &mut Vec<Problem>) {
    let o = &tracing.otlp;
    let at = "tracing.otlp";
    match o.endpoint.parse::<http::Uri>() {
        Err(e) => out.push(Problem::new(
            format!("{at}.endpoint"),
            format!(
                "invalid URL {:?} ({e}); write http://HOST:PORT such as http://127.0.0.1:4318",
                o.endpoint
            ),
        )),
        Ok(uri) => {
            if !matches!(uri.scheme_str(), Some("http")) {
                let scheme = uri.scheme_str().unwrap_or("none");
                let why = if scheme == "https" {
                    "https is not supported yet: export to a collector on this host or network over http://"
                } else {
                    "the scheme must be http://"
                };
                out.push(Problem::new(
                    format!("{at}.endpoint"),
                    format!("{:?} (scheme {scheme}): {why}", o.endpoint),
                ));
            } else if uri.host().is_none_or(str::is_empty) {
                out.push(Problem::new(
                    format!("{at}.endpoint"),
                    format!("{:?} names no host", o.endpoint),
                ));
            } else if uri.query().is_some() {
                out.push(Problem::new(
                    format!("{at}.endpoint"),
                    "must not have a query string",
                ));
            } else if o.protocol == OtlpProtocol::Grpc && !matches!(uri.path(), "" | "/") {
                out.push(Problem::new(
                    format!("{at}.endpoint"),
                    "a grpc endpoint is http://HOST:PORT, without a path",
                ));
            }
        }
    }
    if !(0.0..=1.0).contains(&o.sample_ratio) {
        out.push(Problem::new(
            format!("{at}.sample_ratio"),
            format!(
                "must be between 0 and 1 (0.1 = one new trace in ten), not {}",
                o.sample_ratio
            ),
        ));
    }
    if o.service_name.trim().is_empty() {
        out.push(Problem::new(
            format!("{at}.service_name"),
            "must not be empty",
        ));
    }
    for (name, value) in &o.headers {
        check_header(&format!("{at}.headers.{name}"), name, Some(value), out);
    }
    for (name, var) in &o.headers_env {
        check_header(&format!("{at}.headers_env.{name}"), name, None, out);
        if o.headers.keys().any(|h| h.eq_ignore_ascii_case(name)) {
            out.push(Problem::new(
                format!("{at}.headers_env.{name}"),
                "is also in headers; give each header once",
            ));
        }
        if var.is_empty() {
            out.push(Problem::new(
                format!("{at}.headers_env.{name}"),
                "names no environment variable",
            ));
        }
    }
    if o.timeout.0.is_zero() {
        out.push(Problem::new(format!("{at}.timeout"), "must be > 0"));
    }
    let b = &o.batch;
    if b.max_queue == 0 || b.max_queue > 1_000_000 {
        out.push(Problem::new(
            format!("{at}.batch.max_queue"),
            "must be between 1 and 1000000",
        ));
    }
    if b.max_batch == 0 || b.max_batch > b.max_queue.max(1) {
        out.push(Problem::new(
            format!("{at}.batch.max_batch"),
            "must be at least 1 and at most max_queue",
        ));
    }
    if b.delay.0 < Duration::from_millis(1) {
        out.push(Problem::new(
            format!("{at}.batch.delay"),
            "must be at least 1ms",
        ));
    }
}

/// Header names as HTTP and gRPC metadata accept them (lower-cased on the wire).
fn check_header(at: &str, name: &str, value: Option<&str>, out: &mut Vec<Problem>) {
    let valid_name = http::HeaderName::from_bytes(name.as_bytes()).is_ok()
        && !name.to_ascii_lowercase().starts_with("grpc-")
        && !name.ends_with("-bin");
    if !valid_name {
        out.push(Problem::new(
            at.to_string(),
            "invalid header name (gRPC reserves grpc-* and *-bin)",
        ));
    }
    if value.is_some_and(|v| http::HeaderValue::from_str(v).is_err()) {
        out.push(Problem::new(at.to_string(), "invalid header value"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn otlp(endpoint: &str, protocol: OtlpProtocol) -> OtlpConfig {
        OtlpConfig {
            endpoint: endpoint.to_string(),
            protocol,
            sample_ratio: 1.0,
            service_name: default_service_name(),
            headers: BTreeMap::new(),
            headers_env: BTreeMap::new(),
            timeout: default_timeout(),
            batch: BatchConfig::default(),
        }
    }

    #[test]
    fn http_endpoints_get_the_traces_path_when_they_name_none() {
        let http = OtlpProtocol::HttpProtobuf;
        for (endpoint, url) in [
            ("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces"),
            ("http://127.0.0.1:4318/", "http://127.0.0.1:4318/v1/traces"),
            (
                "http://c:4318/otlp/v1/traces",
                "http://c:4318/otlp/v1/traces",
            ),
        ] {
            assert_eq!(otlp(endpoint, http).export_url(), url);
        }
        let grpc = otlp("http://127.0.0.1:4317", OtlpProtocol::Grpc);
        assert_eq!(grpc.export_url(), "http://127.0.0.1:4317");
    }
}
