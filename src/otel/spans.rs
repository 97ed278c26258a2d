//! One request's spans: a SERVER span for the whole exchange and a CLIENT span per upstream
//! attempt (siblings under the server span, so retries are visible), with attributes of the
//! OpenTelemetry HTTP semantic conventions. The proxy calls one method per phase.
//!
//! Status follows the conventions: the server span is `Error` only for a 5xx answer (or no
//! answer at all); a client span is `Error` for a 4xx/5xx answer or a failed attempt.

use super::Tracing;
use crate::trace_context::{self, Ascii, TraceContext};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState, Tracer as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{SdkTracer, Span};
use pingora::http::RequestHeader;
use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};

/// A request's spans while it is served.
pub struct RequestSpans {
    tracer: SdkTracer,
    /// Holds the server span; the parent of every client span.
    server: Context,
    /// The current upstream attempt, until it ends.
    client: Option<Span>,
    /// The current attempt's answer was recorded (its status decides its span status).
    client_answered: bool,
    attempts: u32,
    method: &'static str,
}

/// How a request ended, for its server span.
pub struct Outcome<'a> {
    /// 0 when no response was written.
    pub status: u16,
    /// The matched route's name; `None` for `_unmatched`.
    pub route: Option<&'a str>,
    pub consumer: Option<&'a str>,
    /// `Some` on routes with rate limits: whether a limit refused the request.
    pub rate_limited: Option<bool>,
    /// The gateway's own error code (`unauthorized`, `rate_limited`, `bad_gateway`, ...).
    pub error: Option<&'static str>,
    /// Pingora's error, when the exchange failed.
    pub failure: Option<&'a pingora::Error>,
}

/// `http.request.method`: the known methods, else `_OTHER` (as the conventions ask).
fn method_of(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::TRACE => "TRACE",
        http::Method::CONNECT => "CONNECT",
        _ => "_OTHER",
    }
}

fn protocol_version(req: &RequestHeader) -> &'static str {
    match req.version {
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_09 => "0.9",
        _ => "1.1",
    }
}

/// The remote parent of a valid incoming `traceparent` (with its `tracestate`).
fn remote_parent(req: &RequestHeader) -> Option<Context> {
    let header = req
        .headers
        .get(crate::trace_context::TRACEPARENT)?
        .to_str()
        .ok()?;
    let parts = trace_context::parts(header)?;
    let trace_id = TraceId::from_hex(parts.trace_id).ok()?;
    let span_id = SpanId::from_hex(parts.parent_id).ok()?;
    let flags = u8::from_str_radix(parts.flags, 16).ok()?;
    let state = req
        .headers
        .get("tracestate")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<TraceState>().ok())
        .unwrap_or_default();
    let parent = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags & TraceFlags::SAMPLED.to_u8()),
        true,
        state,
    );
    Some(Context::new().with_remote_span_context(parent))
}

/// `traceparent` naming a span as the parent.
fn traceparent_of(sc: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    )
}

impl RequestSpans {
    /// Start the server span: the child of a valid incoming `traceparent` (whose sampled flag
    /// decides), else a new root sampled at `sample_ratio`.
    pub fn start(
        tracing: &Tracing,
        req: &RequestHeader,
        client_ip: Option<IpAddr>,
        tls: bool,
    ) -> RequestSpans {
        let tracer = tracing.tracer().clone();
        let parent = remote_parent(req).unwrap_or_default();
        let method = method_of(&req.method);
        let mut attributes = Vec::with_capacity(12);
        attributes.push(KeyValue::new("http.request.method", method));
        attributes.push(KeyValue::new("url.path", req.uri.path().to_string()));
        attributes.push(KeyValue::new(
            "url.scheme",
            if tls { "https" } else { "http" },
        ));
        attributes.push(KeyValue::new(
            "network.protocol.version",
            protocol_version(req),
        ));
        let host = crate::routing::request_host(req);
        if let Ok(authority) = host.parse::<http::uri::Authority>() {
            attributes.push(KeyValue::new(
                "server.address",
                authority.host().to_string(),
            ));
            if let Some(port) = authority.port_u16() {
                attributes.push(KeyValue::new("server.port", i64::from(port)));
            }
        }
        if let Some(ip) = client_ip {
            attributes.push(KeyValue::new("client.address", ip.to_string()));
        }
        // The conventions' name for a request without a known route; set to
        // `{method} {route}` when the request ends.
        let name = if method == "_OTHER" { "HTTP" } else { method };
        let span = tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
            .start_with_context(&tracer, &parent);
        RequestSpans {
            server: Context::new().with_span(span),
            tracer,
            client: None,
            client_answered: false,
            attempts: 0,
            method,
        }
    }

    /// The trace this request belongs to, for the access log and the upstream: an incoming
    /// trace is kept; a trace the gateway started takes the server span's trace id.
    pub fn adopt(&self, trace: &mut TraceContext) {
        let sc = self.server.span().span_context().clone();
        if let TraceContext::Started { header } = trace {
            if let Some(ours) = Ascii::new(&traceparent_of(&sc)) {
                *header = ours;
            }
        }
    }

    /// An upstream attempt to `backend` begins (after a previous one, if any, ended).
    pub fn attempt_started(&mut self, upstream: &str, backend: SocketAddr, tls: bool, path: &str) {
        self.end_attempt(None);
        self.attempts += 1;
        let scheme = if tls { "https" } else { "http" };
        let path = path.split('?').next().unwrap_or("/");
        let mut attributes = vec![
            KeyValue::new("http.request.method", self.method),
            KeyValue::new("server.address", backend.ip().to_string()),
            KeyValue::new("server.port", i64::from(backend.port())),
            KeyValue::new("url.full", format!("{scheme}://{backend}{path}")),
            KeyValue::new("tollgate.upstream", upstream.to_string()),
        ];
        if self.attempts > 1 {
            attributes.push(KeyValue::new(
                "http.request.resend_count",
                i64::from(self.attempts - 1),
            ));
        }
        let name = if self.method == "_OTHER" {
            "HTTP"
        } else {
            self.method
        };
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &self.server);
        self.client = Some(span);
        self.client_answered = false;
    }

    /// The `traceparent` the upstream receives: the current client span as its parent.
    pub fn upstream_traceparent(&self) -> Option<String> {
        self.client
            .as_ref()
            .map(|s| traceparent_of(s.span_context()))
    }

    /// The upstream answered the current attempt with this status.
    pub fn attempt_answered(&mut self, status: u16) {
        let Some(span) = self.client.as_mut() else {
            return;
        };
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        if status >= 400 {
            span.set_attribute(KeyValue::new("error.type", status.to_string()));
            span.set_status(Status::error(""));
        }
        self.client_answered = true;
    }

    /// The current attempt failed (connect failure, reset, timeout, or a status retried).
    pub fn attempt_failed(&mut self, e: &pingora::Error) {
        self.end_attempt(Some(e));
    }

    fn end_attempt(&mut self, failure: Option<&pingora::Error>) {
        let Some(mut span) = self.client.take() else {
            return;
        };
        if let (Some(e), false) = (failure, self.client_answered) {
            let kind = error_type(e);
            span.set_attribute(KeyValue::new("error.type", kind.clone()));
            span.set_status(Status::error(kind));
        }
        span.end();
    }

    /// The `tollgate.cache` attribute (`HIT`, `MISS`, `BYPASS`): set by the response cache
    /// on cacheable routes, before the request ends.
    pub fn set_cache(&self, outcome: &'static str) {
        self.server
            .span()
            .set_attribute(KeyValue::new("tollgate.cache", outcome));
    }

    /// The request is over: end the open attempt, then the server span.
    pub fn finish(&mut self, o: &Outcome<'_>) {
        let upstream_failure = o
            .failure
            .filter(|e| *e.esource() == pingora::ErrorSource::Upstream);
        self.end_attempt(upstream_failure);
        let span = self.server.span();
        let route = o.route.unwrap_or(crate::observability::UNMATCHED);
        let name = if self.method == "_OTHER" {
            "HTTP"
        } else {
            self.method
        };
        span.update_name(Cow::Owned(format!("{name} {route}")));
        if let Some(route) = o.route {
            span.set_attribute(KeyValue::new("http.route", route.to_string()));
        }
        if o.status != 0 {
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(o.status),
            ));
        }
        if let Some(consumer) = o.consumer.filter(|c| !c.is_empty()) {
            span.set_attribute(KeyValue::new("tollgate.consumer", consumer.to_string()));
        }
        if let Some(limited) = o.rate_limited {
            span.set_attribute(KeyValue::new("tollgate.rate_limited", limited));
        }
        if let Some(code) = o.error {
            span.set_attribute(KeyValue::new("tollgate.error", code));
        }
        if o.status >= 500 || o.status == 0 {
            let kind: Cow<'static, str> = match (o.status, o.failure) {
                (0, Some(e)) => error_type(e),
                (0, None) => Cow::Borrowed("_OTHER"),
                (status, _) => Cow::Owned(status.to_string()),
            };
            span.set_attribute(KeyValue::new("error.type", kind.clone()));
            span.set_status(Status::error(o.error.unwrap_or("")));
        }
        span.end();
    }
}

/// `error.type` of a failed exchange: Pingora's error kind (`ConnectRefused`, `ReadTimedout`).
fn error_type(e: &pingora::Error) -> Cow<'static, str> {
    match e.etype() {
        pingora::ErrorType::HTTPStatus(s) => Cow::Owned(s.to_string()),
        other => Cow::Borrowed(other.as_str()),
    }
}
