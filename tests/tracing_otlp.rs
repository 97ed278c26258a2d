//! OpenTelemetry export (issue 20): the real binary sends its spans to an OTLP collector inside
//! the test (HTTP/protobuf on hyper, or gRPC with opentelemetry-proto's generated service),
//! decoded with opentelemetry-proto's types, while real echo backends report the `traceparent`
//! they received. Every wait is a bounded poll; nothing asserts on wall time.

mod common;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::metrics;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::net::TcpListener;

// ---------------------------------------------------------------------------------------------
// The collector
// ---------------------------------------------------------------------------------------------

/// One exported span with its resource's attributes.
#[derive(Debug, Clone)]
struct Got {
    resource: Vec<KeyValue>,
    span: Span,
}

impl Got {
    fn trace_id(&self) -> String {
        hex::encode(&self.span.trace_id)
    }
    fn span_id(&self) -> String {
        hex::encode(&self.span.span_id)
    }
    fn parent_id(&self) -> String {
        hex::encode(&self.span.parent_span_id)
    }
    fn kind(&self) -> SpanKind {
        SpanKind::try_from(self.span.kind).unwrap_or(SpanKind::Unspecified)
    }
    fn status(&self) -> StatusCode {
        self.span
            .status
            .as_ref()
            .and_then(|s| StatusCode::try_from(s.code).ok())
            .unwrap_or(StatusCode::Unset)
    }
    fn attr(&self, key: &str) -> Option<AnyValue> {
        find(&self.span.attributes, key)
    }
    fn str(&self, key: &str) -> Option<String> {
        match self.attr(key)? {
            AnyValue::StringValue(s) => Some(s),
            other => panic!("{key} is not a string: {other:?}"),
        }
    }
    fn int(&self, key: &str) -> Option<i64> {
        match self.attr(key)? {
            AnyValue::IntValue(i) => Some(i),
            other => panic!("{key} is not an int: {other:?}"),
        }
    }
    fn bool(&self, key: &str) -> Option<bool> {
        match self.attr(key)? {
            AnyValue::BoolValue(b) => Some(b),
            other => panic!("{key} is not a bool: {other:?}"),
        }
    }
}

fn find(attrs: &[KeyValue], key: &str) -> Option<AnyValue> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.clone())
}

type Spans = Arc<Mutex<Vec<Got>>>;

fn record(spans: &Spans, req: ExportTraceServiceRequest) {
    let mut all = spans.lock().unwrap();
    for rs in req.resource_spans {
        let resource = rs.resource.map(|r| r.attributes).unwrap_or_default();
        for ss in rs.scope_spans {
            for span in ss.spans {
                all.push(Got {
                    resource: resource.clone(),
                    span,
                });
            }
        }
    }
}

/// An OTLP collector on 127.0.0.1 that records every span it is sent.
struct Collector {
    port: u16,
    spans: Spans,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Collector {
    /// OTLP/HTTP: `POST /v1/traces` with a protobuf `ExportTraceServiceRequest`.
    async fn http() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().unwrap().port();
        let spans: Spans = Arc::default();
        let state = spans.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(http_export(req, &state).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Collector { port, spans, task }
    }

    /// OTLP/gRPC: opentelemetry-proto's `TraceService` served by hyper's HTTP/2 (h2c).
    async fn grpc() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().unwrap().port();
        let spans: Spans = Arc::default();
        let service = TraceServiceServer::new(GrpcCollector(spans.clone()));
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let svc = hyper_util::service::TowerToHyperService::new(service.clone());
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Collector { port, spans, task }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn spans(&self) -> Vec<Got> {
        self.spans.lock().unwrap().clone()
    }

    /// Every span of the request of `trace_id`, once its server span arrived (≤ 15 s). Its
    /// client spans ended before it, and the gateway exports in order, one batch at a time:
    /// they are here by then.
    async fn request(&self, trace_id: &str) -> Vec<Got> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let got: Vec<Got> = self
                .spans()
                .into_iter()
                .filter(|g| g.trace_id() == trace_id)
                .collect();
            if got.iter().any(|g| g.kind() == SpanKind::Server) {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "trace {trace_id}: no server span within 15 s; all spans: {:#?}",
                self.spans()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn http_export(req: hyper::Request<Incoming>, spans: &Spans) -> hyper::Response<Full<Bytes>> {
    let ok = req.method() == hyper::Method::POST
        && req.uri().path() == "/v1/traces"
        && req
            .headers()
            .get("content-type")
            .is_some_and(|v| v == "application/x-protobuf");
    let body = req.into_body().collect().await.map(|b| b.to_bytes());
    let decoded = body
        .ok()
        .filter(|_| ok)
        .and_then(|b| ExportTraceServiceRequest::decode(b).ok());
    match decoded {
        Some(export) => {
            record(spans, export);
            let answer = ExportTraceServiceResponse::default().encode_to_vec();
            hyper::Response::builder()
                .header("content-type", "application/x-protobuf")
                .body(Full::new(Bytes::from(answer)))
                .unwrap()
        }
        None => hyper::Response::builder()
            .status(400)
            .body(Full::new(Bytes::new()))
            .unwrap(),
    }
}

struct GrpcCollector(Spans);

#[tonic::async_trait]
impl TraceService for GrpcCollector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        record(&self.0, request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// A collector that accepts connections and never answers (nor reads past its buffers).
async fn silent_collector() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    (port, task)
}

// ---------------------------------------------------------------------------------------------
// Configs and requests
// ---------------------------------------------------------------------------------------------

/// The `tracing:` section: a short batch delay so spans arrive soon.
fn tracing_yaml(endpoint: &str, protocol: &str, ratio: f64) -> String {
    format!(
        "tracing:\n  otlp:\n    endpoint: \"{endpoint}\"\n    protocol: {protocol}\n    sample_ratio: {ratio}\n    service_name: tollgate-test\n    timeout: 2s\n    batch: {{delay: 20ms}}\n"
    )
}

/// Route `orders` (`/orders`) to the backend.
fn orders(backend: &Backend, tracing: &str) -> String {
    format!(
        "upstreams:\n{}\nroutes:\n  - name: orders\n    match: {{path_prefix: /orders}}\n    upstream: orders\n\n{tracing}",
        upstream_yaml("orders", &[backend], &[])
    )
}

/// A fresh random trace id (lower-case hex).
fn trace_id() -> String {
    format!("{:032x}", fastrand::u128(1..))
}

fn span_id() -> String {
    format!("{:016x}", fastrand::u64(1..))
}

/// The server span and the client spans of one trace.
fn split(spans: &[Got]) -> (Got, Vec<Got>) {
    let servers: Vec<&Got> = spans
        .iter()
        .filter(|g| g.kind() == SpanKind::Server)
        .collect();
    assert_eq!(servers.len(), 1, "one server span per request: {spans:#?}");
    let clients = spans
        .iter()
        .filter(|g| g.kind() == SpanKind::Client)
        .cloned()
        .collect();
    (servers[0].clone(), clients)
}

// ---------------------------------------------------------------------------------------------
// Spans, ids and attributes
// ---------------------------------------------------------------------------------------------

/// A sampled incoming parent is followed even at `sample_ratio: 0`; the backend's parent is
/// the client span; `tracestate` travels on; attributes and the resource are as documented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampled_parent_is_followed_and_the_backend_sees_the_client_span() {
    let collector = Collector::http().await;
    let backend = Backend::start("orders").await;
    let tracing = tracing_yaml(&collector.endpoint(), "http/protobuf", 0.0);
    let gw = Gateway::start(&orders(&backend, &tracing)).await;

    let (trace, parent) = (trace_id(), span_id());
    let traceparent = format!("00-{trace}-{parent}-01");
    let r = gw
        .get_with(
            "/orders/7?secret=1",
            &[("traceparent", &traceparent), ("tracestate", "vendor=abc")],
        )
        .await;
    let echo = r.echo();
    let spans = collector.request(&trace).await;
    let (server, clients) = split(&spans);
    assert_eq!(clients.len(), 1, "{spans:#?}");
    let client = &clients[0];

    // Ids: client → server → the caller's span; the backend's parent is the client span.
    assert_eq!(server.parent_id(), parent);
    assert_eq!(client.parent_id(), server.span_id());
    assert_eq!(
        echo.header("traceparent"),
        Some(format!("00-{trace}-{}-01", client.span_id()).as_str())
    );
    assert_eq!(echo.header("tracestate"), Some("vendor=abc"));

    assert_eq!(server.span.name, "GET orders");
    assert_eq!(server.str("http.request.method").as_deref(), Some("GET"));
    assert_eq!(server.str("http.route").as_deref(), Some("orders"));
    assert_eq!(server.str("url.path").as_deref(), Some("/orders/7"));
    assert_eq!(server.str("url.scheme").as_deref(), Some("http"));
    assert_eq!(server.int("http.response.status_code"), Some(200));
    assert_eq!(server.str("server.address").as_deref(), Some("127.0.0.1"));
    assert_eq!(server.int("server.port"), Some(i64::from(gw.port)));
    assert_eq!(server.str("client.address").as_deref(), Some("127.0.0.1"));
    assert_eq!(
        server.str("network.protocol.version").as_deref(),
        Some("1.1")
    );
    assert_eq!(server.attr("error.type"), None);
    assert_eq!(server.attr("tollgate.rate_limited"), None, "no limits here");
    assert_eq!(server.status(), StatusCode::Unset);

    assert_eq!(client.span.name, "GET");
    assert_eq!(client.str("http.request.method").as_deref(), Some("GET"));
    assert_eq!(client.str("server.address").as_deref(), Some("127.0.0.1"));
    assert_eq!(client.int("server.port"), Some(i64::from(backend.port())));
    assert_eq!(
        client.str("url.full"),
        Some(format!("http://127.0.0.1:{}/orders/7", backend.port())),
        "no query string in traces"
    );
    assert_eq!(client.int("http.response.status_code"), Some(200));
    assert_eq!(client.str("tollgate.upstream").as_deref(), Some("orders"));
    assert_eq!(client.attr("http.request.resend_count"), None);
    assert_eq!(client.status(), StatusCode::Unset);
    assert!(server.span.start_time_unix_nano <= client.span.start_time_unix_nano);
    assert!(client.span.end_time_unix_nano <= server.span.end_time_unix_nano);

    let resource = &server.resource;
    let rs = |k: &str| match find(resource, k) {
        Some(AnyValue::StringValue(s)) => s,
        other => panic!("resource {k}: {other:?}"),
    };
    assert_eq!(rs("service.name"), "tollgate-test");
    assert_eq!(rs("service.version"), env!("CARGO_PKG_VERSION"));
    assert!(!rs("host.name").is_empty());

    // At ratio 0, a request that starts its own trace is not exported: the next sampled
    // trace arrives alone.
    let unsampled = gw.get("/orders/8").await.echo();
    let own = unsampled
        .header("traceparent")
        .expect("a traceparent upstream");
    assert!(own.ends_with("-00"), "not sampled: {own}");
    let marker = trace_id();
    let tp = format!("00-{marker}-{}-01", span_id());
    gw.get_with("/orders/9", &[("traceparent", &tp)])
        .await
        .echo();
    collector.request(&marker).await;
    let own_trace = &own[3..35];
    assert!(
        collector.spans().iter().all(|g| g.trace_id() != own_trace),
        "an unsampled root was exported"
    );
    assert_eq!(collector.spans().len(), 4, "{:#?}", collector.spans());
}

/// An unsampled parent is not exported (even at ratio 1), and its flag reaches the backend;
/// a request without `traceparent` starts a sampled root whose trace id is the one the
/// backend and the access log see.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsampled_parent_is_not_exported_and_roots_match_the_access_log() {
    let collector = Collector::http().await;
    let backend = Backend::start("orders").await;
    let tracing = tracing_yaml(&collector.endpoint(), "http/protobuf", 1.0);
    let gw = LoggedGateway::start("@DIR@/access.log", &[], &[], &orders(&backend, &tracing)).await;

    let dropped = trace_id();
    let tp = format!("00-{dropped}-{}-00", span_id());
    let echo = gw.get("/orders/1", &[("traceparent", &tp)]).await.echo();
    let seen = echo.header("traceparent").expect("traceparent upstream");
    assert!(seen.starts_with(&format!("00-{dropped}-")), "{seen}");
    assert!(
        seen.ends_with("-00"),
        "the unsampled flag travels on: {seen}"
    );

    let echo = gw
        .get("/orders/2", &[("x-request-id", "root-request-1")])
        .await
        .echo();
    let seen = echo.header("traceparent").expect("traceparent upstream");
    let root = seen[3..35].to_string();
    let spans = collector.request(&root).await;
    let (server, clients) = split(&spans);
    assert!(server.span.parent_span_id.is_empty(), "a root: {server:?}");
    assert_eq!(seen, format!("00-{root}-{}-01", clients[0].span_id()));
    let line = gw.log_line("access.log", "root-request-1").await;
    assert_eq!(line["trace_id"], root.as_str(), "{line}");
    assert!(
        collector.spans().iter().all(|g| g.trace_id() != dropped),
        "the unsampled parent's trace was exported"
    );
}

/// Retries are sibling client spans: a retried 503 and a refused connection each show up as
/// a failed attempt next to the one that succeeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_sibling_client_spans() {
    let collector = Collector::http().await;
    let failing = Backend::start("failing").await;
    let ok = Backend::start("ok").await;
    let dead = Backend::start("dead").await;
    dead.kill().await;
    failing.set_fail_status(Some(503));
    let tracing = tracing_yaml(&collector.endpoint(), "http/protobuf", 1.0);
    let no_active = "health_check: {type: tcp, interval: 1h, timeout: 1s}";
    let body = format!(
        "upstreams:\n{}{}\nroutes:\n  - {{name: status, match: {{path_prefix: /status}}, upstream: status}}\n  - {{name: connect, match: {{path_prefix: /connect}}, upstream: connect}}\n\n{tracing}",
        upstream_yaml(
            "status",
            &[&failing, &ok],
            &[
                no_active,
                "retries: 1",
                "retry_on: {statuses: [503], backoff: 1ms, max_backoff: 5ms}",
                "retry_budget: {ratio: 1, min_per_second: 100}",
            ]
        ),
        upstream_yaml("connect", &[&dead, &ok], &["retries: 1"]),
    );
    let gw = Gateway::start(&body).await;

    for (path, failed_attempt) in [("/status", "503"), ("/connect", "ConnectRefused")] {
        // Round robin over two backends: one of a few requests tries the bad one first.
        let mut found = None;
        for _ in 0..6 {
            let trace = trace_id();
            let tp = format!("00-{trace}-{}-01", span_id());
            let r = gw.get_with(path, &[("traceparent", &tp)]).await;
            assert_eq!(r.status, 200, "{path}: {r}");
            let spans = collector.request(&trace).await;
            if split(&spans).1.len() == 2 {
                found = Some(spans);
                break;
            }
        }
        let spans = found.unwrap_or_else(|| panic!("{path}: no request was retried"));
        let (server, mut clients) = split(&spans);
        clients.sort_by_key(|c| c.span.start_time_unix_nano);
        let (failed, retried) = (&clients[0], &clients[1]);
        assert_eq!(failed.parent_id(), server.span_id(), "siblings");
        assert_eq!(retried.parent_id(), server.span_id(), "siblings");
        assert_eq!(failed.str("error.type").as_deref(), Some(failed_attempt));
        assert_eq!(failed.status(), StatusCode::Error);
        assert_eq!(failed.attr("http.request.resend_count"), None);
        assert_eq!(retried.int("http.response.status_code"), Some(200));
        assert_eq!(retried.int("http.request.resend_count"), Some(1));
        assert_eq!(retried.status(), StatusCode::Unset);
        assert_eq!(retried.int("server.port"), Some(i64::from(ok.port())));
        assert_eq!(server.int("http.response.status_code"), Some(200));
        assert_eq!(server.status(), StatusCode::Unset);
        if path == "/status" {
            assert_eq!(failed.int("http.response.status_code"), Some(503));
        }
    }
}

/// Refusals are server spans without client spans: 401 and 429 (and 404 as `_unmatched`) are
/// not errors of the gateway; a 502 is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_server_spans_with_their_status() {
    let collector = Collector::http().await;
    let backend = Backend::start("b").await;
    let dead = Backend::start("dead").await;
    dead.kill().await;
    let tracing = tracing_yaml(&collector.endpoint(), "http/protobuf", 1.0);
    let key_digest = tokens::sha256_hex("key-acme");
    let body = format!(
        "upstreams:\n{}{}
auth:
  api_keys:
    partners:
      header: X-API-Key
      keys: [{{id: acme, sha256: \"{key_digest}\"}}]
rate_limits:
  one: {{key: client_ip, requests: 1, per: 1m}}
routes:
  - {{name: secure, match: {{path_prefix: /secure}}, upstream: b, auth: {{api_key: partners}}}}
  - {{name: limited, match: {{path_prefix: /limited}}, upstream: b, rate_limit: one}}
  - {{name: broken, match: {{path_prefix: /broken}}, upstream: dead}}

{tracing}",
        upstream_yaml("b", &[&backend], &[]),
        upstream_yaml("dead", &[&dead], &["retries: 0"]),
    );
    let gw = Gateway::start(&body).await;

    let send = |path: &'static str, extra: Option<(&'static str, &'static str)>| {
        let gw = &gw;
        async move {
            let trace = trace_id();
            let tp = format!("00-{trace}-{}-01", span_id());
            let mut headers = vec![("traceparent", tp.as_str())];
            headers.extend(extra);
            let r = gw.get_with(path, &headers).await;
            (r.status, trace)
        }
    };
    let (status, unauthorized) = send("/secure/x", None).await;
    assert_eq!(status, 401);
    let (status, authorized) = send("/secure/x", Some(("x-api-key", "key-acme"))).await;
    assert_eq!(status, 200);
    let (status, admitted) = send("/limited", None).await;
    assert_eq!(status, 200);
    let (status, limited) = send("/limited", None).await;
    assert_eq!(status, 429);
    let (status, unmatched) = send("/nowhere", None).await;
    assert_eq!(status, 404);
    let (status, broken) = send("/broken", None).await;
    assert_eq!(status, 502);

    let only_server = |spans: Vec<Got>| {
        let (server, clients) = split(&spans);
        assert!(clients.is_empty(), "a refusal has no attempt: {spans:#?}");
        server
    };
    let s = only_server(collector.request(&unauthorized).await);
    assert_eq!(s.span.name, "GET secure");
    assert_eq!(s.int("http.response.status_code"), Some(401));
    assert_eq!(s.str("tollgate.error").as_deref(), Some("unauthorized"));
    assert_eq!(s.status(), StatusCode::Unset, "4xx is not a server error");
    assert_eq!(s.attr("error.type"), None);

    let (s, _) = split(&collector.request(&authorized).await);
    assert_eq!(s.str("tollgate.consumer").as_deref(), Some("acme"));

    let (s, _) = split(&collector.request(&admitted).await);
    assert_eq!(s.bool("tollgate.rate_limited"), Some(false));
    let s = only_server(collector.request(&limited).await);
    assert_eq!(s.span.name, "GET limited");
    assert_eq!(s.int("http.response.status_code"), Some(429));
    assert_eq!(s.bool("tollgate.rate_limited"), Some(true));
    assert_eq!(s.status(), StatusCode::Unset);

    let s = only_server(collector.request(&unmatched).await);
    assert_eq!(s.span.name, "GET _unmatched");
    assert_eq!(s.int("http.response.status_code"), Some(404));
    assert_eq!(s.attr("http.route"), None, "no route matched");

    let spans = collector.request(&broken).await;
    let (s, clients) = split(&spans);
    assert_eq!(s.int("http.response.status_code"), Some(502));
    assert_eq!(s.str("error.type").as_deref(), Some("502"));
    assert_eq!(s.status(), StatusCode::Error);
    assert_eq!(clients.len(), 1, "{spans:#?}");
    assert_eq!(
        clients[0].str("error.type").as_deref(),
        Some("ConnectRefused")
    );
    assert_eq!(clients[0].status(), StatusCode::Error);
}

// ---------------------------------------------------------------------------------------------
// Transport: gRPC, a collector that never answers, reload
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_arrive_over_grpc() {
    let collector = Collector::grpc().await;
    let backend = Backend::start("orders").await;
    let tracing = tracing_yaml(&collector.endpoint(), "grpc", 1.0);
    let gw = Gateway::start(&orders(&backend, &tracing)).await;
    let trace = trace_id();
    let tp = format!("00-{trace}-{}-01", span_id());
    let echo = gw
        .get_with("/orders/1", &[("traceparent", &tp)])
        .await
        .echo();
    let spans = collector.request(&trace).await;
    let (server, clients) = split(&spans);
    assert_eq!(server.span.name, "GET orders");
    assert_eq!(
        echo.header("traceparent"),
        Some(format!("00-{trace}-{}-01", clients[0].span_id()).as_str())
    );
    assert_eq!(
        find(&server.resource, "service.name"),
        Some(AnyValue::StringValue("tollgate-test".into()))
    );
}

/// On a `cache` route the server span says whether the response came from the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_routes_mark_their_spans_hit_or_miss() {
    let collector = Collector::http().await;
    let backend = Backend::start("orders").await;
    let tracing = tracing_yaml(&collector.endpoint(), "http/protobuf", 0.0);
    let yaml = orders(&backend, &tracing).replace(
        "    upstream: orders\n",
        "    upstream: orders\n    cache: {ttl: 1m}\n",
    );
    let gw = Gateway::start_with(&["cache: {max_size: 1MiB}"], &yaml).await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        let trace = trace_id();
        let tp = format!("00-{trace}-{}-01", span_id());
        let r = gw.get_with("/orders/cached", &[("traceparent", &tp)]).await;
        assert_eq!(r.status, 200, "{r}");
        let spans = collector.request(&trace).await;
        let server = spans
            .iter()
            .find(|g| g.kind() == SpanKind::Server)
            .cloned()
            .expect("a server span");
        seen.push(server.attr("tollgate.cache"));
    }
    assert_eq!(
        seen,
        vec![
            Some(AnyValue::StringValue("MISS".into())),
            Some(AnyValue::StringValue("HIT".into()))
        ]
    );
}

/// A collector that accepts and never answers: every request still succeeds, and the spans
/// that cannot be sent are dropped and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_never_answers_costs_spans_not_requests() {
    let (port, _collector) = silent_collector().await;
    let backend = Backend::start("orders").await;
    let tracing = format!(
        "tracing:\n  otlp:\n    endpoint: \"http://127.0.0.1:{port}\"\n    timeout: 300ms\n    batch: {{max_queue: 4, max_batch: 2, delay: 5ms}}\n"
    );
    let gw = Gateway::start(&orders(&backend, &tracing)).await;
    for i in 0..40 {
        let r = gw.get(&format!("/orders/{i}")).await;
        assert_eq!(r.status, 200, "request {i}: {r}");
    }
    let (_, exp) = metrics::scrape_until(&gw.client, gw.admin_port, "dropped spans", |exp| {
        exp.sum("tollgate_trace_spans_dropped_total") > 0.0
    })
    .await;
    assert_eq!(exp.sum("tollgate_trace_spans_exported_total"), 0.0);
    let r = gw.get("/orders/last").await;
    assert_eq!(r.status, 200, "{r}");
}

/// A changed `tracing` section takes effect on SIGHUP: spans go to the new collector.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_switches_the_collector() {
    let first = Collector::http().await;
    let second = Collector::grpc().await;
    let backend = Backend::start("orders").await;
    let gw = Gateway::start(&orders(
        &backend,
        &tracing_yaml(&first.endpoint(), "http/protobuf", 1.0),
    ))
    .await;
    let trace = trace_id();
    let tp = format!("00-{trace}-{}-01", span_id());
    gw.get_with("/orders/1", &[("traceparent", &tp)])
        .await
        .echo();
    first.request(&trace).await;

    gw.rewrite_config(
        &[],
        &orders(&backend, &tracing_yaml(&second.endpoint(), "grpc", 1.0)),
    );
    signal(gw.pid(), "HUP");
    metrics::scrape_until(&gw.client, gw.admin_port, "generation 2", |exp| {
        exp.value("tollgate_config_generation", &[]) == Some(2.0)
    })
    .await;
    let trace = trace_id();
    let tp = format!("00-{trace}-{}-01", span_id());
    gw.get_with("/orders/2", &[("traceparent", &tp)])
        .await
        .echo();
    second.request(&trace).await;
    assert!(first.spans().iter().all(|g| g.trace_id() != trace));

    // Removing the section stops tracing; the upstream still gets a traceparent.
    gw.rewrite_config(&[], &orders(&backend, ""));
    signal(gw.pid(), "HUP");
    metrics::scrape_until(&gw.client, gw.admin_port, "generation 3", |exp| {
        exp.value("tollgate_config_generation", &[]) == Some(3.0)
    })
    .await;
    let off = trace_id();
    let tp = format!("00-{off}-{}-01", span_id());
    let echo = gw
        .get_with("/orders/3", &[("traceparent", &tp)])
        .await
        .echo();
    assert_eq!(
        echo.header("traceparent"),
        Some(tp.as_str()),
        "passed on unchanged"
    );
}

// ---------------------------------------------------------------------------------------------
// check
// ---------------------------------------------------------------------------------------------

fn check_yaml(otlp: &str) -> String {
    format!(
        "{}upstreams:\n  u: {{backends: [\"127.0.0.1:4001\"]}}\nroutes:\n  - {{name: r, upstream: u}}\ntracing:\n  otlp: {otlp}\n",
        check_server_section!()
    )
}

#[test]
fn check_reports_bad_tracing_with_yaml_paths() {
    for (otlp, path, fragments) in [
        (
            "{endpoint: \"not a url\"}",
            "tracing.otlp.endpoint",
            &["invalid URL"][..],
        ),
        (
            "{endpoint: \"ftp://127.0.0.1:4318\"}",
            "tracing.otlp.endpoint",
            &["scheme", "http://"][..],
        ),
        (
            "{endpoint: \"http://127.0.0.1:4318\", sample_ratio: 1.5}",
            "tracing.otlp.sample_ratio",
            &["between 0 and 1"][..],
        ),
        (
            "{endpoint: \"http://127.0.0.1:4318\", sample_ratio: -0.1}",
            "tracing.otlp.sample_ratio",
            &["between 0 and 1"][..],
        ),
        (
            "{endpoint: \"http://127.0.0.1:4318\", protocol: http/json}",
            "tracing.otlp.protocol",
            &["unknown variant", "http/json"][..],
        ),
        (
            "{endpoint: \"http://127.0.0.1:4318\", sampel_ratio: 0.5}",
            "tracing.otlp",
            &["unknown field", "sampel_ratio"][..],
        ),
        (
            "{endpoint: \"http://127.0.0.1:4317/x\", protocol: grpc}",
            "tracing.otlp.endpoint",
            &["without a path"][..],
        ),
        (
            "{endpoint: \"http://127.0.0.1:4318\", headers: {\"bad header\": x}}",
            "tracing.otlp.headers.bad header",
            &["invalid header name"][..],
        ),
        (
            "{endpoint: \"http://127.0.0.1:4318\", headers_env: {x-api-key: TOLLGATE_TEST_UNSET_VAR}}",
            "tracing.otlp.headers_env.x-api-key",
            &["TOLLGATE_TEST_UNSET_VAR", "not set"][..],
        ),
    ] {
        assert_check_rejects_with(
            &check_yaml(otlp),
            &[("TOLLGATE_TEST_UNSET_VAR", None)],
            &format!("error: {path}"),
            fragments,
        );
    }
    let unknown_section_key = format!(
        "{}upstreams:\n  u: {{backends: [\"127.0.0.1:4001\"]}}\nroutes:\n  - {{name: r, upstream: u}}\ntracing:\n  otlp: {{endpoint: \"http://127.0.0.1:4318\"}}\n  zipkin: {{}}\n",
        check_server_section!()
    );
    assert_check_rejects_with(
        &unknown_section_key,
        &[],
        "error: tracing",
        &["unknown field", "zipkin"],
    );
}

#[test]
fn check_accepts_a_valid_tracing_section() {
    for otlp in [
        "{endpoint: \"http://127.0.0.1:4318\"}",
        "{endpoint: \"http://collector.internal:4318/\", sample_ratio: 0, service_name: edge, headers: {x-api-key: k}, timeout: 5s}",
        "{endpoint: \"http://127.0.0.1:4317\", protocol: grpc, sample_ratio: 1, batch: {max_queue: 10, max_batch: 10, delay: 1s}}",
    ] {
        let (code, _, err) = check(&check_yaml(otlp));
        assert_eq!(code, 0, "{otlp}: {err}");
    }
}
