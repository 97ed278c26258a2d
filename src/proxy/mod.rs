//! The Pingora `ProxyHttp` glue. It only sequences DESIGN.md's request path; each step's logic
//! lives in its own module (routing, forwarded, strip_identity, upstream, header_ops, ...).

mod error_map;
pub mod respond;
pub mod routes;

use crate::auth::{Auth, AuthFailure, Identity, Verdict};
use crate::config::path_policy::PathPolicyConfig;
use crate::config::rate_limit::Stage;
use crate::config::Config;
use crate::error_response::GatewayError;
use crate::forwarded::{self, TrustedProxies};
use crate::observability::access_log::{self, AccessLog, Destination, Entry};
use crate::observability::metrics::{self, METRICS};
use crate::rate_limit::{self, key::RequestFacts, RateLimiter};
use crate::request_id;
use crate::routing::rewrite::PrefixRewrite;
use crate::routing::{path_policy, router::host_only, Match, Router};
use crate::transform::response_json::{self, Sanitizer};
use crate::upstream::retry::{self, Failure};
use crate::upstream::Pools;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType};
use routes::RouteRuntime;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

/// Label used for requests that matched no route (bounded metric cardinality).
const UNMATCHED: &str = "_unmatched";

pub struct Gateway {
    router: Router,
    auth: Auth,
    limiter: RateLimiter,
    routes: Vec<RouteRuntime>,
    trusted: TrustedProxies,
    path_policy: PathPolicyConfig,
    max_request_body: u64,
    max_header_bytes: usize,
    max_headers: usize,
    idle_timeout_secs: u64,
    access_log: AccessLog,
    /// Set on SIGQUIT/SIGTERM: stop offering keep-alive (see `server::build`).
    draining: Arc<std::sync::atomic::AtomicBool>,
}

impl Gateway {
    pub fn new(config: &Config, pools: &Pools) -> Result<Gateway, String> {
        let router = Router::new(&config.routes);
        let auth = Auth::build(config).map_err(|p| joined(&p))?;
        let limiter = RateLimiter::build(config).map_err(|p| joined(&p))?;
        let routes = routes::build(config, &router, pools, &auth, &limiter)?;
        Ok(Gateway {
            router,
            auth,
            limiter,
            routes,
            trusted: TrustedProxies::new(&config.server.trusted_proxies),
            path_policy: config.server.path_policy,
            max_request_body: config.server.max_request_body.0,
            max_header_bytes: usize::try_from(config.server.max_header_bytes.0)
                .unwrap_or(usize::MAX),
            max_headers: config.server.max_headers,
            idle_timeout_secs: config.server.idle_timeout.0.as_secs().max(1),
            access_log: AccessLog::new(Destination::from_config(&config.server.access_log)),
            draining: Arc::default(),
        })
    }
}

/// Problems of an already validated config (only reachable if validation and building drift).
fn joined(problems: &[crate::config::Problem]) -> String {
    problems
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Per-request state carried between phases.
pub struct Ctx {
    start: Instant,
    request_id: String,
    route: Option<usize>,
    client_ip: Option<IpAddr>,
    forwarded_for: Option<String>,
    peer_trusted: bool,
    identity: Option<Arc<Identity>>,
    trace: Option<crate::trace_context::TraceContext>,
    /// Seconds a refused client should wait (open circuit), for `Retry-After`.
    retry_after: Option<u64>,
    /// The current attempt's outcome was reported to passive health.
    outcome_recorded: bool,
    /// Set when this response's JSON body is being stripped.
    sanitizer: Option<Sanitizer>,
    /// The rate-limit decision reported in `X-RateLimit-*` (the tightest limit).
    rate: Option<rate_limit::Verdict>,
    /// Set when the upstream path differs from what the client sent.
    upstream_path: Option<String>,
    tried: Vec<SocketAddr>,
    /// Post-send retries made so far (they drive the backoff).
    post_send_retries: u32,
    /// Wait this long before the next attempt (a post-send retry's jittered backoff).
    retry_backoff: Option<std::time::Duration>,
    /// The next attempt may go to a backend already tried (a post-send retry, or Pingora's
    /// retry of a pooled connection the backend had closed) when no other one is left.
    same_backend_ok: bool,
    /// The current attempt ended in a status listed in `retry_on`: retry it.
    status_retry: bool,
    backend: Option<SocketAddr>,
    upstream_start: Option<Instant>,
    upstream_latency: Option<f64>,
    body_bytes: u64,
    error: Option<&'static str>,
    in_flight: bool,
}

impl Gateway {
    /// The background sync of `sync: batched` Redis limits, if the config has any.
    pub fn rate_limit_sync(&self) -> Option<crate::rate_limit::BatchedSync> {
        self.limiter.sync_task()
    }

    pub fn set_draining_flag(&mut self, flag: Arc<std::sync::atomic::AtomicBool>) {
        self.draining = flag;
    }

    fn route(&self, ctx: &Ctx) -> Option<&RouteRuntime> {
        ctx.route.map(|i| &self.routes[i])
    }

    /// 401 with an RFC 6750 challenge; the description is fixed text, never the token.
    async fn unauthorized(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        failure: AuthFailure,
    ) -> pingora::Result<bool> {
        let route = self.route(ctx).map_or(UNMATCHED, |r| r.name.as_str());
        METRICS
            .auth_failures
            .with_label_values(&[route, failure.reason()])
            .inc();
        let challenge = format!(
            "Bearer realm=\"tollgate\", error=\"invalid_token\", error_description=\"{}\"",
            failure.description()
        );
        self.reject(
            session,
            ctx,
            GatewayError::Unauthorized,
            failure.description(),
            &[("WWW-Authenticate", &challenge)],
        )
        .await
    }

    /// Refuse a response that must be sanitised but cannot be, before its head is sent (502).
    fn sanitize_refused(&self, ctx: &mut Ctx, reason: &'static str) -> pingora::Result<()> {
        let route = self.route(ctx).map_or(UNMATCHED, |r| r.name.as_str());
        tracing::warn!(request_id = %ctx.request_id, route, reason, "refusing a response that cannot be sanitised");
        METRICS
            .sanitize_failures
            .with_label_values(&[route, reason])
            .inc();
        Error::e_explain(ErrorType::HTTPStatus(502), "response cannot be sanitised")
    }

    /// Check the route's limits of one stage; answers 429 and returns true when refused.
    async fn rate_limited(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        stage: Stage,
    ) -> pingora::Result<bool> {
        let Some(route) = self.route(ctx) else {
            return Ok(false);
        };
        if route.limits.is_empty() {
            return Ok(false);
        }
        let identity = ctx.identity.as_deref();
        let facts = RequestFacts {
            client_ip: ctx.client_ip,
            consumer: identity.map(|i| i.consumer.as_str()),
            claims: identity.map_or(&[][..], |i| i.claims.as_slice()),
            route: ctx.route.unwrap_or_default(),
            headers: &session.req_header().headers,
        };
        let Some(verdict) = self.limiter.check(&route.limits, stage, &facts).await else {
            return Ok(false);
        };
        let keep = match &ctx.rate {
            None => true,
            Some(prev) => {
                !verdict.decision.allowed || rate_limit::tighter(&verdict.decision, &prev.decision)
            }
        };
        if keep {
            ctx.rate = Some(verdict);
        }
        if verdict.decision.allowed {
            return Ok(false);
        }
        let limit_name = self.limiter.limit(verdict.limit).name.as_str();
        METRICS
            .rate_limited
            .with_label_values(&[route.name.as_str(), limit_name])
            .inc();
        let d = verdict.decision;
        let (limit, remaining, reset, retry) = (
            d.limit.to_string(),
            d.remaining.to_string(),
            d.reset_secs.to_string(),
            d.retry_after_secs.to_string(),
        );
        self.reject(
            session,
            ctx,
            GatewayError::RateLimited,
            GatewayError::RateLimited.default_message(),
            &[
                ("Retry-After", &retry),
                ("X-RateLimit-Limit", &limit),
                ("X-RateLimit-Remaining", &remaining),
                ("X-RateLimit-Reset", &reset),
            ],
        )
        .await
    }

    /// Whether a failure after the request was sent earns another attempt (see
    /// `upstream::retry` for the rules); when it does, schedules the jittered backoff.
    fn retry_after_send(&self, session: &Session, ctx: &mut Ctx, failure: Failure) -> bool {
        let Some(pool) = self.route(ctx).map(|r| &r.pool) else {
            return false;
        };
        let Some(policy) = &pool.retry_on else {
            return false;
        };
        if !policy.covers(failure) || !replayable(session) || ctx.tried.len() > pool.retries {
            return false;
        }
        if !pool.retry_budget.try_withdraw() {
            METRICS
                .retry_budget_exhausted
                .with_label_values(&[pool.name.as_str()])
                .inc();
            return false;
        }
        METRICS
            .upstream_retries
            .with_label_values(&[pool.name.as_str(), failure.reason()])
            .inc();
        ctx.post_send_retries += 1;
        ctx.retry_backoff = Some(policy.backoff(ctx.post_send_retries, fastrand::f64()));
        ctx.same_backend_ok = true;
        true
    }

    /// Answer with a gateway error and remember why, for the access log.
    async fn reject(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        kind: GatewayError,
        message: &str,
        extra: &[(&'static str, &str)],
    ) -> pingora::Result<bool> {
        ctx.error = Some(kind.code());
        if self.draining.load(std::sync::atomic::Ordering::Relaxed) {
            session.set_keepalive(None);
        }
        let rate = rate_headers(ctx);
        let mut headers: Vec<(&'static str, &str)> = extra.to_vec();
        headers.extend(rate.iter().map(|(k, v)| (*k, v.as_str())));
        respond::error(session, kind, message, &ctx.request_id, &headers).await?;
        Ok(true)
    }
}

/// Whether sending this request again is safe at all: an idempotent method, a body still held
/// whole in Pingora's retry buffer, and nothing of an answer sent to the client yet.
fn replayable(session: &Session) -> bool {
    retry::idempotent(&session.req_header().method)
        && !session.as_ref().retry_buffer_truncated()
        && session.response_written().is_none()
}

/// `X-RateLimit-*` for the tightest limit checked so far: every response of a limited route
/// carries them, the gateway's own errors included.
fn rate_headers(ctx: &Ctx) -> Vec<(&'static str, String)> {
    match &ctx.rate {
        None => Vec::new(),
        Some(v) => vec![
            ("X-RateLimit-Limit", v.decision.limit.to_string()),
            ("X-RateLimit-Remaining", v.decision.remaining.to_string()),
            ("X-RateLimit-Reset", v.decision.reset_secs.to_string()),
        ],
    }
}

fn header_str<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

/// The host the client addressed: `Host`, else the absolute-form URI's authority.
fn request_host(req: &RequestHeader) -> &str {
    header_str(req, "host")
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
        .unwrap_or("")
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    /// No downstream modules: Pingora's default registers a (disabled) compression module
    /// that still runs on every request and response.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    fn new_ctx(&self) -> Ctx {
        Ctx {
            start: Instant::now(),
            request_id: String::new(),
            route: None,
            client_ip: None,
            forwarded_for: None,
            peer_trusted: false,
            identity: None,
            rate: None,
            sanitizer: None,
            outcome_recorded: false,
            retry_after: None,
            trace: None,
            upstream_path: None,
            tried: Vec::new(),
            post_send_retries: 0,
            retry_backoff: None,
            same_backend_ok: false,
            status_retry: false,
            backend: None,
            upstream_start: None,
            upstream_latency: None,
            body_bytes: 0,
            error: None,
            in_flight: false,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> pingora::Result<bool> {
        METRICS.in_flight.inc();
        ctx.in_flight = true;
        let req = session.req_header();
        ctx.request_id =
            request_id::from_incoming(req.headers.get("x-request-id").map(|v| v.as_bytes()));
        ctx.trace = Some(crate::trace_context::from_incoming(header_str(
            req,
            "traceparent",
        )));

        // Client identity first: every answer, even a 400 or 404, is logged with it.
        let incoming_xff = header_str(req, "x-forwarded-for").map(str::to_owned);
        if let Some(peer) = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip())
        {
            let (client, xff) = forwarded::resolve(peer, incoming_xff.as_deref(), &self.trusted);
            ctx.peer_trusted = !self.trusted.is_empty() && self.trusted.contains(peer);
            ctx.client_ip = Some(client);
            ctx.forwarded_for = Some(xff);
        }

        // Idle keep-alive is bounded (Pingora's default after the first request is forever).
        if session.as_ref().get_keepalive().is_some()
            && !self.draining.load(std::sync::atomic::Ordering::Relaxed)
        {
            session.set_keepalive(Some(self.idle_timeout_secs));
        }
        // Agreeing `Content-Length` values travel on as one header (DESIGN.md "Path policy").
        if !crate::listener::content_length::collapse(session.req_header_mut()) {
            let msg = "invalid or conflicting Content-Length";
            session.set_keepalive(None);
            return self
                .reject(session, ctx, GatewayError::BadRequest, msg, &[])
                .await;
        }
        let req = session.req_header();
        if !crate::listener::head_size::within(req, self.max_header_bytes, self.max_headers) {
            let kind = GatewayError::HeadersTooLarge;
            return self
                .reject(session, ctx, kind, kind.default_message(), &[])
                .await;
        }

        // 2-3. normalise the path and route it under the path policy of the route it leads
        // to; routing and forwarding both use the result.
        let host = host_only(request_host(req));
        let method = req.method.as_str().as_bytes();
        let resolved = path_policy::resolve(
            req.uri.path(),
            |path| self.router.lookup(host, path, method),
            |route| {
                self.path_policy
                    .with(route.and_then(|i| self.routes[i].path_policy.as_ref()))
            },
        );
        let (path, found) = match resolved {
            Ok(r) => r,
            Err(why) => {
                let msg = why.to_string();
                return self
                    .reject(session, ctx, GatewayError::BadRequest, &msg, &[])
                    .await;
            }
        };
        let route = match found {
            Match::Found(i) => i,
            Match::NotFound => {
                let kind = GatewayError::NotFound;
                return self
                    .reject(session, ctx, kind, kind.default_message(), &[])
                    .await;
            }
            Match::MethodNotAllowed(allowed) => {
                let allow = allowed.allow_header();
                let kind = GatewayError::MethodNotAllowed;
                return self
                    .reject(
                        session,
                        ctx,
                        kind,
                        kind.default_message(),
                        &[("Allow", &allow)],
                    )
                    .await;
            }
        };
        // The upstream path, decided before the request head is touched: the normalised path
        // (with `;parameters` when they are kept), or, when the route rewrites its prefix and
        // the path had parameters, the path the prefix was matched against.
        let normalized: Option<String> = if !path.changed() {
            None
        } else if self.routes[route].rewrite != PrefixRewrite::Keep {
            Some(path.route().to_owned())
        } else {
            Some(path.forward.into_owned())
        };
        ctx.route = Some(route);
        let rt = &self.routes[route];
        let declared = header_str(req, "content-length").and_then(|v| v.trim().parse::<u64>().ok());

        // 6a. limits that need no identity run before auth: floods are rejected cheaply.
        if self.rate_limited(session, ctx, Stage::BeforeAuth).await? {
            return Ok(true);
        }

        // 4. identity headers are ours alone, on every route.
        self.auth.strip_identity(session.req_header_mut());

        // 5. authenticate and authorise.
        let mut strip_query = None;
        if let Some(policy) = &rt.auth {
            let outcome = self.auth.check(policy, session.req_header());
            strip_query = outcome.strip_query_param;
            match outcome.verdict {
                Verdict::Pass(identity) => ctx.identity = identity,
                Verdict::Unauthorized(failure) => {
                    return self.unauthorized(session, ctx, failure).await;
                }
                Verdict::Forbidden(identity) => {
                    METRICS
                        .auth_failures
                        .with_label_values(&[rt.name.as_str(), "forbidden"])
                        .inc();
                    ctx.identity = Some(identity);
                    let kind = GatewayError::Forbidden;
                    return self
                        .reject(
                            session,
                            ctx,
                            kind,
                            "a required role or scope is missing",
                            &[],
                        )
                        .await;
                }
            }
        }

        // 6b. limits keyed by consumer or claims, once the identity is known.
        if self.rate_limited(session, ctx, Stage::AfterAuth).await? {
            return Ok(true);
        }

        // Declared body too large: refuse before reading it.
        if declared.is_some_and(|n| n > self.max_request_body) {
            let kind = GatewayError::PayloadTooLarge;
            return self
                .reject(session, ctx, kind, kind.default_message(), &[])
                .await;
        }

        // 8 (decided now): the path and query the upstream receives.
        let req = session.req_header();
        let query = match (&strip_query, req.uri.query()) {
            (Some(param), Some(q)) => crate::auth::token_source::remove_query_param(q, param),
            (_, q) => q.map(str::to_owned),
        };
        if normalized.is_some() || strip_query.is_some() || rt.rewrite != PrefixRewrite::Keep {
            let path = normalized.as_deref().unwrap_or(req.uri.path());
            ctx.upstream_path = Some(rt.rewrite.apply(&rt.prefix, path, query.as_deref()));
        }

        Ok(false)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        if let Some(b) = body {
            ctx.body_bytes += b.len() as u64;
            if ctx.body_bytes > self.max_request_body {
                return Error::e_explain(
                    ErrorType::HTTPStatus(413),
                    "request body over max_request_body",
                );
            }
        }
        Ok(())
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Ctx,
    ) -> pingora::Result<Box<HttpPeer>> {
        let Some(route) = self.route(ctx) else {
            return Error::e_explain(ErrorType::InternalError, "no route selected");
        };
        let pool = &route.pool;
        if let Some(wait) = ctx.retry_backoff.take() {
            tokio::time::sleep(wait).await;
        }
        if ctx.tried.is_empty() && pool.retry_on.is_some() {
            pool.retry_budget.deposit();
        }
        if let (Some(breaker), true) = (&pool.breaker, ctx.tried.is_empty()) {
            if let crate::upstream::circuit::Admission::Refused { retry_after_secs } =
                breaker.admit(Instant::now())
            {
                ctx.retry_after = Some(retry_after_secs);
                return Error::e_explain(ErrorType::HTTPStatus(503), "circuit open");
            }
        }
        let same_backend_ok = std::mem::take(&mut ctx.same_backend_ok);
        let picked = pool
            .select(&ctx.tried)
            .or_else(|| same_backend_ok.then(|| pool.select(&[])).flatten());
        let Some(backend) = picked else {
            // First attempt: nothing healthy at all. Later attempts: every healthy backend
            // already failed to connect for this request.
            let status = if ctx.tried.is_empty() { 503 } else { 502 };
            return Error::e_explain(ErrorType::HTTPStatus(status), "no healthy backend left");
        };
        let Some(addr) = backend.addr.as_inet().copied() else {
            return Error::e_explain(ErrorType::InternalError, "backend is not an inet address");
        };
        ctx.tried.push(addr);
        ctx.backend = Some(addr);
        ctx.outcome_recorded = false;
        let mut peer = HttpPeer::new(addr, false, String::new());
        peer.options.connection_timeout = Some(pool.connect_timeout);
        peer.options.read_timeout = Some(pool.read_timeout);
        ctx.upstream_start = Some(Instant::now());
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // A connect failure never reached the backend's application: always safe to retry on
        // another backend, up to the upstream's `retries`.
        if let (Some(route), Some(addr)) = (self.route(ctx), ctx.backend) {
            route.pool.record_outcome(&addr, true);
        }
        let Some(pool) = self.route(ctx).map(|r| &r.pool) else {
            return e;
        };
        let retry = ctx.tried.len() <= pool.retries;
        if retry {
            METRICS
                .upstream_retries
                .with_label_values(&[pool.name.as_str(), "connect"])
                .inc();
        }
        e.set_retry(retry);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        if std::mem::take(&mut ctx.status_retry) {
            e.set_retry(true);
            return e;
        }
        // A pooled connection that the backend closed while it sat idle is keep-alive churn,
        // not a failure of the backend: it is neither counted against it nor spends the retry
        // budget; Pingora's own rule below sends the request again.
        let stale = client_reused && matches!(e.retry, pingora::RetryType::ReusedOnly);
        if let Some(failure) = Failure::of_error(&e).filter(|_| !stale) {
            if let (Some(route), Some(addr), false) =
                (self.route(ctx), ctx.backend, ctx.outcome_recorded)
            {
                route.pool.record_outcome(&addr, true);
                ctx.outcome_recorded = true;
            }
            if self.retry_after_send(session, ctx, failure) {
                e.set_retry(true);
                return e;
            }
        }
        // Otherwise Pingora's own rule: a pooled connection the backend had already closed
        // is retried (idempotent requests with a replayable body only), never anything else.
        if !replayable(session) {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
            ctx.same_backend_ok = e.retry();
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        if let Some(p) = &ctx.upstream_path {
            upstream.set_raw_path(p.as_bytes())?;
        }
        upstream.insert_header("X-Request-Id", ctx.request_id.as_str())?;
        if let Some(crate::trace_context::TraceContext::Started { header, .. }) = &ctx.trace {
            upstream.insert_header("traceparent", header.as_str())?;
            upstream.remove_header("tracestate");
        }
        if let Some(xff) = &ctx.forwarded_for {
            upstream.insert_header("X-Forwarded-For", xff.as_str())?;
        }
        let original = session.req_header();
        if !(ctx.peer_trusted && original.headers.contains_key("x-forwarded-proto")) {
            upstream.insert_header("X-Forwarded-Proto", "http")?;
        }
        if !(ctx.peer_trusted && original.headers.contains_key("x-forwarded-host")) {
            let host = request_host(original).to_owned();
            if !host.is_empty() {
                upstream.insert_header("X-Forwarded-Host", host)?;
            }
        }
        if let Some(route) = self.route(ctx) {
            if !route.pool.preserve_host {
                if let Some(addr) = ctx.backend {
                    upstream.insert_header("Host", addr.to_string())?;
                }
            }
            route.request_headers.apply_request(upstream)?;
            if route.response_json.is_some() {
                // Ask for identity and the whole representation: the body must be read to be
                // stripped, and a byte range of the unstripped body would bypass stripping.
                upstream.remove_header("accept-encoding");
                upstream.remove_header("range");
                upstream.remove_header("if-range");
            }
        }
        // Identity headers last: nothing configured or sent by the client can override them.
        if let Some(identity) = &ctx.identity {
            for (name, value) in &identity.forward {
                upstream.insert_header(name.clone(), value.as_str())?;
            }
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        if let Some(t) = ctx.upstream_start {
            ctx.upstream_latency = Some(t.elapsed().as_secs_f64());
        }
        if let (Some(route), Some(addr)) = (self.route(ctx), ctx.backend) {
            route
                .pool
                .record_outcome(&addr, resp.status.is_server_error());
            ctx.outcome_recorded = true;
        }
        let status = resp.status.as_u16();
        if self.retry_after_send(session, ctx, Failure::Status(status)) {
            // Nothing of this answer has reached the client: drop it and try again.
            ctx.status_retry = true;
            return Error::e_explain(
                ErrorType::Custom("retryable upstream status"),
                format!("upstream answered {status}"),
            );
        }
        let Some(policy) = self.route(ctx).and_then(|r| r.response_json.as_ref()) else {
            return Ok(());
        };
        let has_body = session.req_header().method != http::Method::HEAD
            && !matches!(status, 100..=199 | 204 | 304);
        let json = resp
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(response_json::is_json);
        if status == 206 {
            // We never ask for ranges on these routes; a partial body cannot be sanitised.
            return self.sanitize_refused(ctx, "range");
        }
        if !json {
            return Ok(());
        }
        if !has_body {
            // HEAD: the upstream's length is that of the unstripped body; it would reveal
            // the size of what is hidden.
            resp.remove_header(&http::header::CONTENT_LENGTH);
            return Ok(());
        }
        let encoding = resp
            .headers
            .get(http::header::CONTENT_ENCODING)
            .map(|v| v.to_str().unwrap_or("?"));
        let Some(encoding) = response_json::encoding(encoding) else {
            return self.sanitize_refused(ctx, "bad_encoding");
        };
        let declared = resp
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if encoding == response_json::Encoding::Identity
            && declared.is_some_and(|n| n > policy.max_body)
        {
            // Known too large before a byte is sent: a proper 502 is still possible.
            return self.sanitize_refused(ctx, "too_large");
        }
        // The rewritten body has a new length: stream it chunked, decoded.
        resp.remove_header(&http::header::CONTENT_LENGTH);
        resp.remove_header(&http::header::CONTENT_ENCODING);
        ctx.sanitizer = Some(Sanitizer::new(policy, encoding));
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> pingora::Result<Option<std::time::Duration>> {
        let Some(sanitizer) = ctx.sanitizer.as_mut() else {
            return Ok(None);
        };
        let chunk = body.take().unwrap_or_default();
        match sanitizer.push(&chunk, end_of_stream) {
            Ok(out) => {
                if !out.is_empty() {
                    *body = Some(Bytes::from(out));
                }
                Ok(None)
            }
            Err(e) => {
                // Headers are gone already; cutting the connection is the only way to fail
                // closed. Nothing unstripped was ever forwarded.
                ctx.sanitizer = None;
                let reason = e.reason();
                let route = self.route(ctx).map_or(UNMATCHED, |r| r.name.as_str());
                tracing::warn!(request_id = %ctx.request_id, route, "cannot sanitise response: {e}");
                METRICS
                    .sanitize_failures
                    .with_label_values(&[route, reason])
                    .inc();
                ctx.error = Some("sanitize_failed");
                Error::e_explain(
                    ErrorType::HTTPStatus(502),
                    "response could not be sanitised",
                )
            }
        }
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        // Pingora frames length-less bodies as chunked whatever the client speaks; an
        // HTTP/1.0 client cannot parse chunked, so it gets a close-delimited body instead.
        if session.req_header().version < http::Version::HTTP_11
            && resp.headers.get(http::header::CONTENT_LENGTH).is_none()
            && resp.headers.contains_key(http::header::TRANSFER_ENCODING)
        {
            resp.remove_header(&http::header::TRANSFER_ENCODING);
            resp.insert_header(http::header::CONNECTION, "close")?;
            session.set_keepalive(None);
        }
        resp.insert_header("X-Request-Id", ctx.request_id.as_str())?;
        if self.draining.load(std::sync::atomic::Ordering::Relaxed) {
            resp.insert_header(http::header::CONNECTION, "close")?;
            session.set_keepalive(None);
        }
        for (name, value) in rate_headers(ctx) {
            resp.insert_header(name, value)?;
        }
        if let Some(route) = self.route(ctx) {
            route.response_headers.apply_response(resp)?;
        }
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let kind = error_map::classify(e);
        let code = kind.map_or(0, GatewayError::status);
        if let Some(kind) = kind {
            ctx.error = Some(kind.code());
            if ctx.request_id.is_empty() {
                ctx.request_id = request_id::generate();
            }
            // Once the response head went out, the only honest signal left is a cut connection.
            if session.response_written().is_none() {
                // The request body may be unread and the upstream exchange is in an unknown
                // state: say `Connection: close` honestly rather than keep-alive and then hang up.
                session.set_keepalive(None);
                let rate = rate_headers(ctx);
                let mut headers: Vec<(&'static str, &str)> =
                    rate.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let retry_after = ctx.retry_after.unwrap_or(1).to_string();
                if kind == GatewayError::ServiceUnavailable {
                    headers.push(("Retry-After", &retry_after));
                }
                if let Err(err) = respond::error(
                    session,
                    kind,
                    kind.default_message(),
                    &ctx.request_id,
                    &headers,
                )
                .await
                {
                    tracing::debug!("could not send error response: {err}");
                }
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// Answers the gateway decided on purpose (413, 503 with nothing healthy) are not errors
    /// of the gateway; they are in the access log and metrics, not the error log.
    fn suppress_error_log(&self, _session: &Session, _ctx: &Ctx, error: &Error) -> bool {
        matches!(error.etype(), ErrorType::HTTPStatus(_))
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        // A reset or timeout after connecting counts against the backend (connect failures
        // were counted as they happened).
        if let (Some(err), Some(route), Some(addr)) = (e, self.route(ctx), ctx.backend) {
            let connect_failure = error_map::is_connect_failure(err);
            if !ctx.outcome_recorded
                && !connect_failure
                && *err.esource() == pingora::ErrorSource::Upstream
            {
                route.pool.record_outcome(&addr, true);
            }
        }
        if ctx.in_flight {
            METRICS.in_flight.dec();
        }
        let req = session.req_header();
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let route = self.route(ctx);
        let route_name = route.map_or(UNMATCHED, |r| r.name.as_str());
        let latency = ctx.start.elapsed().as_secs_f64();
        let status_label = http::StatusCode::from_u16(status)
            .map(|s| s.as_str().to_owned())
            .unwrap_or_else(|_| "0".to_owned());
        METRICS
            .requests
            .with_label_values(&[
                route_name,
                metrics::method_label(&req.method),
                &status_label,
            ])
            .inc();
        METRICS
            .request_duration
            .with_label_values(&[route_name])
            .observe(latency);
        if let (Some(r), Some(up)) = (route, ctx.upstream_latency) {
            METRICS
                .upstream_duration
                .with_label_values(&[&r.pool.name])
                .observe(up);
        }
        if self.access_log.enabled() {
            let error = ctx.error.or_else(|| e.map(|_| "proxy_error"));
            self.access_log.write(&Entry {
                ts: access_log::now_rfc3339(),
                request_id: &ctx.request_id,
                trace_id: ctx.trace.as_ref().map(|t| t.trace_id()),
                client_ip: ctx.client_ip.map(|ip| ip.to_string()),
                method: req.method.as_str(),
                host: request_host(req),
                path: req.uri.path(),
                route: route_name,
                upstream: route.map(|r| r.pool.name.as_str()),
                backend: ctx.backend.map(|b| b.to_string()),
                status,
                latency_ms: latency * 1000.0,
                upstream_latency_ms: ctx.upstream_latency.map(|s| s * 1000.0),
                bytes_sent: session.body_bytes_sent(),
                user_agent: header_str(req, "user-agent").unwrap_or(""),
                consumer: ctx
                    .identity
                    .as_deref()
                    .map(|i| i.consumer.as_str())
                    .filter(|c| !c.is_empty()),
                error,
            });
        }
    }
}
