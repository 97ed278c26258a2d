//! The Pingora `ProxyHttp` implementation. It only sequences DESIGN.md's request path: each
//! phase is a short list of calls into the module that owns the work (`routing`, `auth`,
//! `rate_limit`, `upstream::attempt`, `forwarded`, `response_json`, `drain`, `reply`,
//! `observability`). Per-request state is one small struct per feature inside [`Ctx`].

pub mod live;

use crate::auth::{Credential, Identity};
use crate::config::rate_limit::Stage;
use crate::edge::cache::{self, Begin, Exchange};
use crate::edge::{compress, compress::Encoder, cors};
use crate::forwarded::Client;
use crate::header_ops;
use crate::listener::{content_length, head_size};
use crate::observability::metrics::METRICS;
use crate::observability::route_metrics::RouteMetrics;
use crate::observability::{self, Finished, UNMATCHED};
use crate::otel::{spans::Outcome, RequestSpans};
use crate::rate_limit::{self, key::RequestFacts};
use crate::reply::{self, classify, GatewayError, Refusal};
use crate::request_id;
use crate::response_json::{self, BodyFilter};
use crate::routing::request::{https_redirect, route_preflight, route_request};
use crate::routing::request_host;
use crate::runtime::routes::RouteRuntime;
use crate::runtime::Gateway;
use crate::tls::client_cert::ClientCert;
use crate::trace_context::{self, TraceContext};
use crate::upstream::mirror::MirrorCopy;
use crate::upstream::split::SplitInput;
use crate::upstream::{retry, Attempts, Pool};
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType};
use std::sync::Arc;
use std::time::Instant;

/// Per-request state carried between phases.
#[derive(Default)]
pub struct Ctx {
    start: Option<Instant>,
    request_id: request_id::RequestId,
    trace: Option<TraceContext>,
    client: Client,
    route: Option<usize>,
    identity: Option<Arc<Identity>>,
    limits: rate_limit::Reported,
    /// Set when the upstream path differs from what the client sent.
    upstream_path: Option<String>,
    attempts: Attempts,
    /// The `split` side this request goes to (0 without `split`); chosen once, before the
    /// first attempt, so retries stay within that side's pool.
    side: Option<usize>,
    /// This request's `mirror` copy, while it is collected (sent from `logging`).
    mirror: Option<MirrorCopy>,
    /// Set when this response's JSON body is being stripped.
    body_filter: Option<Box<BodyFilter>>,
    /// The credential that authenticated (removed upstream on `hide_credentials` routes).
    credential: Option<Credential>,
    /// Set when this response's body is being compressed (after any JSON stripping).
    encoder: Option<Encoder>,
    /// `cache` routes: the normalised path the cache key is made of (set by admission).
    cache_path: Option<String>,
    /// `cache` routes, on the way upstream: MISS or BYPASS, and the fill of a miss.
    cache: Option<Exchange>,
    body_bytes: u64,
    error: Option<&'static str>,
    /// Counted in `tollgate_http_requests_in_flight` while held.
    in_flight: Option<observability::InFlight>,
    /// This request's OpenTelemetry spans (`tracing.otlp` only; `None` costs nothing).
    spans: Option<Box<RequestSpans>>,
}

/// What admission decided for a request that was not refused.
enum Admit {
    /// Proxy it.
    Forward,
    /// A CORS preflight the gateway answers itself with these headers.
    Preflight(cors::Headers),
}

impl Gateway {
    /// The pool of the request's route and `split` side.
    fn pool<'a>(&'a self, ctx: &Ctx) -> Option<&'a Arc<Pool>> {
        let route = &self.routes[ctx.route?];
        Some(route.pool_for(ctx.side.unwrap_or(0)))
    }

    fn route(&self, ctx: &Ctx) -> Option<&RouteRuntime> {
        ctx.route.map(|i| &self.routes[i])
    }

    /// The `split` side of a request (0 without `split`); a side with no healthy backend
    /// gives its share to the others, logged as `split_fallback` and counted.
    fn choose_side(&self, route: &RouteRuntime, req: &RequestHeader, ctx: &mut Ctx) -> usize {
        let Some(split) = &route.split else {
            return 0;
        };
        let point = split.point(&SplitInput {
            consumer: ctx.identity.as_deref().map(|i| i.consumer.as_str()),
            client_ip: ctx.client.ip,
            headers: &req.headers,
        });
        let choice = split.choose(point, |pool| pool.health().healthy > 0);
        if choice.fell_back {
            ctx.error = Some("split_fallback");
            METRICS
                .split_fallbacks
                .with_label_values(&[route.name.as_str()])
                .inc();
        }
        choice.side
    }

    fn route_name(&self, ctx: &Ctx) -> &str {
        self.route(ctx).map_or(UNMATCHED, |r| r.name.as_str())
    }

    /// Check the route's limits of one stage (see `RateLimiter::enforce`).
    async fn limit(&self, session: &Session, ctx: &mut Ctx, stage: Stage) -> Result<(), Refusal> {
        let Some(route) = self.route(ctx).filter(|r| !r.limits.is_empty()) else {
            return Ok(());
        };
        let headers = &session.req_header().headers;
        let id = ctx.identity.as_deref();
        let facts = RequestFacts::of(
            ctx.client.ip,
            id.map(|i| (i.consumer.as_str(), &i.claims[..])),
            ctx.route.unwrap_or_default(),
            headers,
        );
        let (limits, name) = (&route.limits, route.name.as_str());
        self.limiter
            .enforce(limits, stage, &facts, name, &mut ctx.limits)
            .await
    }

    /// DESIGN.md steps 2-8 up to the upstream: framing, routing, identity, auth and limits;
    /// on success the path the upstream receives is decided.
    async fn admit(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Admit, Refusal> {
        if let (Some(port), false) = (self.redirect_https, ctx.client.tls) {
            return Err(https_redirect(session.req_header(), port));
        }
        if !content_length::collapse(session.req_header_mut()) {
            session.set_keepalive(None);
            let msg = "invalid or conflicting Content-Length";
            return Err(Refusal::with_message(GatewayError::BadRequest, msg));
        }
        let req = session.req_header();
        let form = crate::routing::target::check(req)
            .map_err(|why| Refusal::with_message(GatewayError::BadRequest, why))?;
        if req.version == http::Version::HTTP_2 && content_length::framing_lookalike(req) {
            let msg = crate::listener::head_scan::FRAMING_LOOKALIKE;
            return Err(Refusal::with_message(GatewayError::BadRequest, msg));
        }
        if !head_size::within(
            session.req_header(),
            self.max_header_bytes,
            self.max_headers,
        ) {
            return Err(Refusal::of(GatewayError::HeadersTooLarge));
        }
        // 2-3. normalise and route under the path policy; a CORS preflight is routed as the
        // request it announces.
        let req = session.req_header();
        let preflight = cors::preflight_of(req).and_then(|(origin, method)| {
            let (route, _) = route_preflight(
                &self.router,
                &self.routes[..],
                self.path_policy,
                req,
                method,
            )?;
            let cors = self.routes[route].cors.as_ref()?;
            let requested = header_str(req, http::header::ACCESS_CONTROL_REQUEST_HEADERS);
            Some((route, cors.preflight(origin, method, requested)))
        });
        let (route, normalized) = match preflight {
            Some((route, _)) => (route, None),
            None => route_request(&self.router, &self.routes[..], self.path_policy, req)?,
        };
        ctx.route = Some(route);
        let rt = &self.routes[route];
        // Edge: the client's network first, then a preflight is answered before limits and auth.
        if rt.ip.as_ref().is_some_and(|ip| !ip.permits(ctx.client.ip)) {
            METRICS
                .ip_denied
                .with_label_values(&[rt.name.as_str()])
                .inc();
            let msg = "requests from this address are not allowed";
            return Err(Refusal::with_message(GatewayError::Forbidden, msg));
        }
        if let Some((_, headers)) = preflight {
            return Ok(Admit::Preflight(headers));
        }
        // 6a. limits that need no identity run before auth: floods are rejected cheaply.
        self.limit(session, ctx, Stage::BeforeAuth).await?;
        // 4. identity headers are ours alone, on every route.
        self.auth.strip_identity(session.req_header_mut());
        // 5. authenticate and authorise.
        let mut strip_query = None;
        if let Some(policy) = &rt.auth {
            let cert = ctx.client.certificate.as_deref();
            match self
                .auth
                .admit(policy, session.req_header(), cert, &rt.name)
            {
                Ok(admitted) => {
                    ctx.identity = admitted.identity;
                    ctx.credential = admitted.credential;
                    strip_query = admitted.strip_query_param;
                }
                Err((refusal, identity)) => {
                    ctx.identity = identity;
                    return Err(refusal);
                }
            }
        }
        // 6b. limits keyed by consumer or claims, once the identity is known.
        self.limit(session, ctx, Stage::AfterAuth).await?;
        // Declared body too large: refuse before reading it.
        let req = session.req_header();
        let declared = header_str(req, http::header::CONTENT_LENGTH)
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > rt.max_request_body) {
            return Err(Refusal::of(GatewayError::PayloadTooLarge));
        }
        // 8 (decided now): the path and query the upstream receives.
        let (path, query) = (req.uri.path(), req.uri.query());
        let target = rt.rewrite.upstream_target(
            &rt.prefix,
            path,
            normalized.as_deref(),
            query,
            strip_query.as_deref(),
        );
        // An absolute-form target goes upstream as its path: the client's scheme and authority
        // are not the backend's business (Pingora would forward them verbatim).
        ctx.upstream_path = match (target, form) {
            (None, crate::routing::target::Form::Absolute) => {
                crate::routing::target::origin_form(req)
            }
            (target, _) => target,
        };
        if rt.cache.is_some() {
            ctx.cache_path = Some(normalized.unwrap_or_else(|| path.to_string()));
        }
        Ok(Admit::Forward)
    }

    /// Answer a refused request (plus the `X-RateLimit-*` headers it earned) and remember why,
    /// for the access log.
    async fn refuse(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        r: Refusal,
    ) -> pingora::Result<bool> {
        ctx.error = Some(r.kind.code());
        self.draining.before_reply(session);
        let limits = ctx.limits.headers();
        // A browser must be able to read a refusal (401, 429) of an allowed origin.
        let cors = self
            .route(ctx)
            .and_then(|rt| rt.cors.as_ref())
            .map_or_else(Vec::new, |c| {
                c.actual(cors::origin_of(session.req_header()))
            });
        let headers: Vec<(&'static str, &str)> = r
            .headers
            .iter()
            .chain(&limits)
            .chain(&cors)
            .map(|(k, v)| (*k, v.as_str()))
            .collect();
        reply::send(session, r.kind, &r.message, &ctx.request_id, &headers).await?;
        Ok(true)
    }
}

impl Gateway {
    /// A `cache` route: answer from the store (true), or note the MISS/BYPASS and send the
    /// request upstream (false). Runs after every admission policy, so a hit is refused,
    /// limited and counted exactly like a miss.
    async fn consult_cache(&self, session: &mut Session, ctx: &mut Ctx) -> pingora::Result<bool> {
        let Some(i) = ctx.route else {
            return Ok(false);
        };
        let route = &self.routes[i];
        let Some(cache) = &route.cache else {
            return Ok(false);
        };
        // The `split` side is part of the key (sides may answer differently): chosen now.
        let side = match route.split {
            Some(_) => {
                let side = self.choose_side(route, session.req_header(), ctx);
                ctx.side = Some(side);
                side
            }
            None => 0,
        };
        let path = ctx.cache_path.take().unwrap_or_default();
        let has_body = !session.is_body_empty();
        let req = session.req_header();
        let (proto, forwarded_host) = ctx.client.forwarded_view(req);
        let who = cache::Upstream {
            proto,
            forwarded_host,
            identity: ctx.identity.as_deref(),
            unverified_credentials: ctx.identity.is_none() && self.auth.carries_credential(req),
            has_body,
        };
        match cache.begin(req, &path, &who, side).await {
            Begin::Forward(exchange) => {
                note_cache(cache, ctx, exchange.outcome);
                ctx.cache = Some(exchange);
                Ok(false)
            }
            Begin::NotCached => {
                note_cache(cache, ctx, cache::Outcome::Miss);
                let msg = "the response is not in the cache (only-if-cached)";
                let r = Refusal::with_message(GatewayError::GatewayTimeout, msg);
                self.refuse(session, ctx, r).await
            }
            Begin::Hit(hit) => {
                note_cache(cache, ctx, cache::Outcome::Hit);
                ctx.cache = Some(Exchange::hit());
                let req = session.req_header();
                let (mut resp, mut body) = cache::hit_response(&hit.stored, req, Instant::now())?;
                // Compressed per client from the stored identity body, each coding once per
                // entry; whole, so the answer keeps a Content-Length.
                let accept = header_str(req, http::header::ACCEPT_ENCODING);
                if let (Some(compress), 304) = (&route.compress, resp.status.as_u16()) {
                    compress.not_modified_head(&hit.stored.head, accept, &mut resp)?;
                }
                if let (Some(compress), Some(_)) = (&route.compress, &body) {
                    if let Some(coding) = compress.choose(false, accept, &mut resp)? {
                        if let Some(encoded) = cache.encoded_body(&hit, coding)? {
                            compress::encoded_head(coding, &mut resp)?;
                            let len = encoded.len().to_string();
                            resp.insert_header(http::header::CONTENT_LENGTH, len)?;
                            body = Some(encoded);
                        }
                    }
                }
                self.on_response(session, &mut resp, ctx)?;
                session
                    .write_response_header(Box::new(resp), body.is_none())
                    .await?;
                if body.is_some() {
                    session.write_response_body(body, true).await?;
                }
                Ok(true)
            }
        }
    }

    /// Every response head the client gets, proxied or from the cache: request id, drain,
    /// limit headers, the route's response headers, CORS and the cache result.
    fn on_response(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &Ctx,
    ) -> pingora::Result<()> {
        resp.insert_header("X-Request-Id", ctx.request_id.header())?;
        self.draining.on_response(session, resp)?;
        ctx.limits.apply(resp)?;
        if let Some(route) = self.route(ctx) {
            route.response_headers.apply_response(resp)?;
            if let Some(cors) = &route.cors {
                cors::on_actual_response(cors, session.req_header(), resp)?;
            }
        }
        if let Some(exchange) = &ctx.cache {
            resp.insert_header("X-Cache", exchange.outcome.header())?;
            if !resp.headers.contains_key(http::header::AGE) {
                let age = exchange.miss_age().as_secs().to_string();
                resp.insert_header(http::header::AGE, age)?;
            }
        }
        Ok(())
    }
}

/// What the cache did for a request: counted, and `tollgate.cache` on its server span when it
/// is traced.
fn note_cache(cache: &cache::RouteCache, ctx: &Ctx, outcome: cache::Outcome) {
    cache.count(outcome);
    if let Some(spans) = &ctx.spans {
        spans.set_cache(outcome.header());
    }
}

fn header_str(req: &RequestHeader, name: impl http::header::AsHeaderName) -> Option<&str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

/// Pingora's phases for one generation, as inherent methods: [`live::LiveProxy`] is the
/// `ProxyHttp` Pingora serves and awaits these inside its own phase futures, so each phase is
/// one boxed future per request instead of two (an `async_trait` here would box again).
impl Gateway {
    /// No downstream modules: Pingora's default registers a (disabled) compression module
    /// that still runs on every request and response.
    pub fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    pub fn new_ctx(&self) -> Ctx {
        Ctx {
            start: Some(Instant::now()),
            ..Ctx::default()
        }
    }

    pub async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
    ) -> pingora::Result<bool> {
        ctx.in_flight = Some(observability::InFlight::enter());
        let req = session.req_header();
        ctx.request_id = request_id::from_incoming(req.headers.get(request_id::HEADER));
        ctx.trace = Some(trace_context::from_incoming(header_str(
            req,
            trace_context::TRACEPARENT,
        )));
        // Client identity first: every answer, even a 400 or 404, is logged with it.
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let digest = session.digest();
        let tls = digest.is_some_and(|d| d.ssl_digest.is_some());
        let xff = crate::forwarded::incoming_chain(req);
        ctx.client = self.trusted.client(peer, xff.as_deref(), tls);
        ctx.client.certificate = ClientCert::of(digest);
        if let Some(tracing) = &self.tracing {
            let spans = RequestSpans::start(tracing, req, ctx.client.ip, tls);
            if let Some(trace) = ctx.trace.as_mut() {
                spans.adopt(trace);
            }
            ctx.spans = Some(Box::new(spans));
        }
        // Idle keep-alive is bounded (Pingora's default after the first request is forever).
        if session.as_ref().get_keepalive().is_some() && !self.draining.active() {
            session.set_keepalive(Some(self.idle_timeout_secs));
        }
        // So is a client that stops reading: one that accepts no response bytes (an HTTP/2
        // window left at zero, a socket never read) for `idle_timeout` loses the exchange, and
        // the upstream connection and buffers it held are freed (nginx's `send_timeout`).
        // Pingora's default waits forever.
        session.set_write_timeout(Some(std::time::Duration::from_secs(self.idle_timeout_secs)));
        match self.admit(session, ctx).await {
            Ok(Admit::Forward) => {
                if self.consult_cache(session, ctx).await? {
                    return Ok(true);
                }
                ctx.mirror = self
                    .route(ctx)
                    .and_then(|r| r.mirror.as_ref())
                    .and_then(|m| m.sample());
                Ok(false)
            }
            Ok(Admit::Preflight(headers)) => {
                self.draining.before_reply(session);
                reply::no_content(session, &ctx.request_id, &headers).await?;
                Ok(true)
            }
            Err(refusal) => self.refuse(session, ctx, refusal).await,
        }
    }

    pub async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        ctx.body_bytes += body.as_ref().map_or(0, |b| b.len() as u64);
        if let (Some(copy), Some(chunk)) = (ctx.mirror.as_mut(), body.as_ref()) {
            if let Some(m) = ctx.route.and_then(|i| self.routes[i].mirror.as_ref()) {
                m.on_body(copy, chunk);
            }
        }
        let limit = self
            .route(ctx)
            .map_or(self.max_request_body, |r| r.max_request_body);
        if ctx.body_bytes > limit {
            // Blamed on the client: Pingora's HTTP/2 upstream path keeps waiting for the
            // upstream's answer after any other body error (the upstream, still expecting body,
            // never answers: a 504 after read_timeout), but stops on a downstream error and
            // resets the upstream stream. The HTTP/1 path stops on any error alike.
            let mut refused = Error::explain(
                ErrorType::HTTPStatus(413),
                "request body over max_request_body",
            );
            refused.as_down();
            return Err(refused);
        }
        Ok(())
    }

    pub async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
    ) -> pingora::Result<Box<HttpPeer>> {
        let Some(route) = ctx.route.map(|i| &self.routes[i]) else {
            return Error::e_explain(ErrorType::InternalError, "no route selected");
        };
        let side = match ctx.side {
            Some(side) => side,
            None => {
                let side = self.choose_side(route, session.req_header(), ctx);
                ctx.side = Some(side);
                side
            }
        };
        let pool = route.pool_for(side);
        let peer = ctx.attempts.next_peer(pool).await?;
        if let (Some(spans), Some(backend)) = (ctx.spans.as_mut(), ctx.attempts.backend()) {
            let req = session.req_header();
            let path = ctx.upstream_path.as_deref().unwrap_or(req.uri.path());
            spans.attempt_started(&pool.name, backend, pool.transport.is_tls(), path);
        }
        Ok(peer)
    }

    pub fn fail_to_connect(
        &self,
        _s: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        e: Box<Error>,
    ) -> Box<Error> {
        if let Some(spans) = ctx.spans.as_mut() {
            spans.attempt_failed(&e);
        }
        match self.pool(ctx) {
            Some(pool) => ctx.attempts.connect_failed(pool, e),
            None => e,
        }
    }

    pub fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        if let Some(spans) = ctx.spans.as_mut() {
            spans.attempt_failed(&e);
        }
        if reply::classify::client_stalled_body(&e, session) {
            // Not the backend's failure: not counted against it, not retried.
            return Error::explain(
                ErrorType::HTTPStatus(408),
                "the client stopped sending its request body; the backend waited for it",
            );
        }
        let e = e.more_context(format!("Peer: {peer}"));
        let pool = self.pool(ctx).map(Arc::as_ref);
        ctx.attempts
            .proxy_failed(pool, e, retry::replayable(session), client_reused)
    }

    pub async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        if let Some(p) = &ctx.upstream_path {
            upstream.set_raw_path(p.as_bytes())?;
        }
        upstream.insert_header("X-Request-Id", ctx.request_id.header())?;
        if let Some(trace) = &ctx.trace {
            trace.set_upstream(upstream)?;
        }
        // With tracing, the backend's parent is this attempt's client span.
        if let Some(traceparent) = ctx.spans.as_ref().and_then(|s| s.upstream_traceparent()) {
            upstream.insert_header("traceparent", traceparent)?;
        }
        let original = session.req_header();
        ctx.client
            .set_upstream_headers(upstream, original, request_host(original))?;
        header_ops::join_cookies(upstream)?;
        if let (Some(route), Some(pool)) = (self.route(ctx), self.pool(ctx)) {
            if let (false, Some(host)) = (pool.preserve_host, ctx.attempts.host_header(pool)) {
                upstream.insert_header("Host", host)?;
            }
            if let (true, Some(credential)) = (route.hide_credentials, &ctx.credential) {
                credential.remove_from(upstream)?;
            }
            route.request_headers.apply_request(upstream)?;
            if route.response_json.is_some() {
                response_json::gate::prepare_request(upstream);
            }
            // One stored representation for every client: compressed on the way out.
            let filling = ctx.cache.as_ref().is_some_and(Exchange::filling);
            if filling && route.cache.as_ref().is_some_and(|c| c.identity_upstream()) {
                upstream.remove_header(&http::header::ACCEPT_ENCODING);
            }
        }
        // Identity headers last: nothing configured or sent by the client can override them.
        for (name, value) in ctx.identity.iter().flat_map(|i| i.forward.iter()) {
            upstream.insert_header(name.clone(), value.as_str())?;
        }
        if let (Some(copy), Some(route)) = (ctx.mirror.as_mut(), ctx.route) {
            if let Some(m) = &self.routes[route].mirror {
                m.on_upstream_head(copy, upstream);
            }
        }
        Ok(())
    }

    pub async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        let (Some(route), Some(pool)) = (ctx.route.map(|i| &self.routes[i]), self.pool(ctx)) else {
            return Ok(());
        };
        let status = resp.status.as_u16();
        if let Some(spans) = ctx.spans.as_mut() {
            spans.attempt_answered(status);
        }
        ctx.attempts
            .response_head(pool, status, retry::replayable(session))?;
        let head = session.req_header().method == http::Method::HEAD;
        if let Some(policy) = &route.response_json {
            let (name, id) = (route.name.as_str(), ctx.request_id.as_str());
            ctx.body_filter = response_json::gate::on_response_head(policy, head, resp, name, id)?;
        }
        // Stored as stripping left it, before compression.
        if let (Some(exchange), Some(cache)) = (ctx.cache.as_mut(), &route.cache) {
            exchange.on_response_head(cache, resp);
        }
        // Strip, then compress: decided on the head as stripping left it, here so that
        // Pingora frames the now length-less body as chunked.
        if let Some(compress) = &route.compress {
            let accept = header_str(session.req_header(), http::header::ACCEPT_ENCODING);
            ctx.encoder = compress.on_response_head(head, accept, resp)?;
        }
        Ok(())
    }

    pub fn response_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> pingora::Result<Option<std::time::Duration>> {
        let (route, id) = (self.route_name(ctx), ctx.request_id.as_str());
        let filtered =
            response_json::gate::on_body(&mut ctx.body_filter, body, end_of_stream, route, id);
        if filtered.is_err() {
            ctx.error = Some("sanitize_failed");
        }
        filtered?;
        if let Some(exchange) = ctx.cache.as_mut() {
            if let Some(cache) = ctx.route.and_then(|i| self.routes[i].cache.as_ref()) {
                let request = &session.req_header().headers;
                exchange.on_body(cache, body.as_ref(), end_of_stream, request);
            }
        }
        if let Some(encoder) = ctx.encoder.as_mut() {
            encoder.on_body(body, end_of_stream)?;
        }
        Ok(None)
    }

    pub async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        reply::frame_for_http10(session, resp)?;
        self.on_response(session, resp, ctx)
    }

    pub async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Ctx,
    ) -> FailToProxy {
        let retry_after = ctx.attempts.retry_after;
        let answered = reply::on_failure(
            session,
            e,
            &mut ctx.request_id,
            retry_after,
            ctx.limits.headers(),
        )
        .await;
        ctx.error = answered.map(GatewayError::code).or(ctx.error);
        FailToProxy {
            error_code: answered.map_or(0, GatewayError::status),
            can_reuse_downstream: false,
        }
    }

    /// Answers the gateway decided on purpose (413, 503 with nothing healthy, 400 for broken
    /// framing) and clients that went away are not errors of the gateway; they are in the
    /// access log and metrics, not the error log.
    pub fn suppress_error_log(&self, _session: &Session, _ctx: &Ctx, error: &Error) -> bool {
        matches!(error.etype(), ErrorType::HTTPStatus(_))
            || classify::broke_framing(error)
            || classify::client_went_away(error)
    }

    pub async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        if let (Some(route), Some(pool)) = (ctx.route.map(|i| &self.routes[i]), self.pool(ctx)) {
            ctx.attempts.finished(pool, e);
            // An empty body ends without a body chunk saying so: stored now.
            if let (Some(exchange), Some(cache)) = (ctx.cache.as_mut(), &route.cache) {
                exchange.on_done(cache, &session.req_header().headers, e.is_some());
            }
            // The client has its answer: only now is the copy sent, on its own task.
            if let (Some(m), Some(copy)) = (&route.mirror, ctx.mirror.take()) {
                m.send(copy);
            }
        }
        ctx.in_flight = None;
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        if let Some(mut spans) = ctx.spans.take() {
            let route = self.route(ctx);
            spans.finish(&Outcome {
                status,
                route: route.map(|r| r.name.as_str()),
                consumer: ctx.identity.as_deref().map(|i| i.consumer.as_str()),
                rate_limited: route
                    .filter(|r| !r.limits.is_empty())
                    .map(|_| ctx.error == Some(GatewayError::RateLimited.code())),
                error: ctx.error,
                failure: e,
            });
        }
        let route = self.route(ctx);
        observability::request_finished(
            &self.access_log,
            &Finished {
                req: session.req_header(),
                status,
                route: route.map_or(UNMATCHED, |r| r.name.as_str()),
                metrics: route.map_or(RouteMetrics::unmatched(), |r| &r.metrics),
                side: ctx.side.unwrap_or(0),
                // A cache hit asked no upstream.
                upstream: self
                    .pool(ctx)
                    .filter(|_| {
                        !ctx.cache
                            .as_ref()
                            .is_some_and(|c| c.outcome == cache::Outcome::Hit)
                    })
                    .map(|p| p.name.as_str()),
                backend: ctx.attempts.backend(),
                seconds: ctx.start.map_or(0.0, |t| t.elapsed().as_secs_f64()),
                upstream_seconds: ctx.attempts.latency,
                bytes_sent: session.body_bytes_sent(),
                request_id: &ctx.request_id,
                trace_id: ctx.trace.as_ref().map(|t| t.trace_id()),
                client_ip: ctx.client.ip,
                consumer: ctx.identity.as_deref().map(|i| i.consumer.as_str()),
                error: ctx.error.or_else(|| e.map(|_| "proxy_error")),
            },
        );
    }
}
