//! `cache`: GET/HEAD responses of a route kept in the shared bounded store (`server.cache`)
//! and answered by the gateway, as an RFC 9111 shared cache ([`control`]) over a byte-weighed
//! `moka` store with a fill lock ([`store`]).
//!
//! The request path (sequenced by `proxy`):
//! * after routing, ip rules, auth and limits (a hit is refused exactly like a miss),
//!   [`RouteCache::begin`] decides from the request: BYPASS (not GET/HEAD, a range, credentials
//!   the gateway did not verify, `no-store`, a body), a HIT to answer now, or a MISS to send
//!   upstream. The first miss of a key leads its fill; concurrent misses of that key wait up
//!   to `lock_timeout` for it and are then answered from the store (or go upstream themselves).
//! * on the upstream's head, [`Exchange::on_response_head`] decides whether the response may be
//!   stored (status, `Cache-Control`, `Expires`, `Set-Cookie`, `Vary: *`, declared size); on
//!   the body, [`Exchange::on_body`] collects it *after* JSON stripping and *before*
//!   compression, and stores it once complete and within `max_object`.
//! * a hit is the stored head and body ([`hit_response`]) with a computed `Age`; compression
//!   and every response header policy then run on it as on a proxied response.
//!
//! What is stored is the body a client without `Accept-Encoding` would get: stripped JSON,
//! never the raw upstream body; compression happens per client on the way out. On routes that
//! compress or strip JSON, fills ask the upstream for identity, so the upstream's
//! `Vary: Accept-Encoding` selects nothing and one entry serves every client.
//!
//! The key: route, host, normalised path and query, `split` side, the consumer when the
//! route's auth verified one (so two consumers never share an entry), and the values of the
//! route's `vary` headers; then the response's own `Vary`.

pub mod control;
pub mod store;

use crate::config::edge::CacheConfig;
use crate::edge::compress::Coding;
use crate::observability::metrics::METRICS;
use bytes::{Bytes, BytesMut};
use control::{Freshness, Lookup};
use http::header::{self, HeaderMap, HeaderName};
use pingora::http::{RequestHeader, ResponseHeader};
use prometheus::IntCounter;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use store::{Fill, FillGuard, Key, Store, Stored};

/// What the cache did for one request (`X-Cache`, and the metric's `result`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Hit,
    Miss,
    Bypass,
}

impl Outcome {
    pub fn header(self) -> &'static str {
        match self {
            Outcome::Hit => "HIT",
            Outcome::Miss => "MISS",
            Outcome::Bypass => "BYPASS",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Bypass => "bypass",
        }
    }
}

/// A route's compiled `cache` section over the shared store.
pub struct RouteCache {
    pub store: Arc<Store>,
    route: Arc<str>,
    ttl: Duration,
    vary: Vec<HeaderName>,
    max_object: u64,
    /// Fills ask the upstream for identity (the route compresses or strips JSON).
    identity_upstream: bool,
    /// `tollgate_cache_requests_total{route, result}` for hit, miss and bypass, resolved
    /// once (see `observability::route_metrics` for why not per request), in `Outcome`'s
    /// declaration order.
    counters: [IntCounter; 3],
}

/// What the upstream request will say about the client, beyond the request line and `Host`:
/// every such fact is part of the key, because the backend may answer differently for each
/// and the gateway, not the client, decides it (a client's own copies are replaced or
/// stripped, so matching a response's `Vary` on the client's headers could not tell them
/// apart).
pub struct Upstream<'a> {
    /// `X-Forwarded-Proto`: the listener's scheme, or a trusted proxy's value.
    pub proto: &'a str,
    /// A trusted proxy's `X-Forwarded-Host` (otherwise the upstream is told `Host`).
    pub forwarded_host: Option<&'a [u8]>,
    /// The identity the route's auth verified, with everything forwarded from it.
    pub identity: Option<&'a crate::auth::identity::Identity>,
    /// The request carries credentials the gateway did not verify (`Authorization`, or a
    /// configured API key header, token cookie or token parameter on a route that did not
    /// check them): the answer may be that caller's alone.
    pub unverified_credentials: bool,
    /// The request has a body (HTTP/2 DATA frames need no `Content-Length`).
    pub has_body: bool,
}

impl Upstream<'static> {
    /// A cleartext request with no identity, credentials or body (benches and tests).
    pub fn anonymous() -> Upstream<'static> {
        Upstream {
            proto: "http",
            forwarded_host: None,
            identity: None,
            unverified_credentials: false,
            has_body: false,
        }
    }
}

/// What [`RouteCache::begin`] decided.
pub enum Begin {
    /// Answer with this stored response.
    Hit(Hit),
    /// Send the request upstream; the exchange goes along with it.
    Forward(Exchange),
    /// `only-if-cached` and nothing usable is stored: 504 (RFC 9111 §5.2.1.7).
    NotCached,
}

/// A stored response that answers a request, and the key it is stored under.
pub struct Hit {
    pub stored: Arc<Stored>,
    key: Key,
}

/// One request's use of the cache on its way upstream.
pub struct Exchange {
    pub outcome: Outcome,
    /// Boxed: every request of a cache route carries an `Exchange` in its context (which
    /// Pingora's per-request future holds several times); only a miss that fills needs this.
    fill: Option<Box<Filling>>,
}

/// A miss that may store its response.
struct Filling {
    key: Key,
    /// Held when this request leads the key's fill: waiters wake when it is dropped.
    _guard: Option<FillGuard>,
    requested: SystemTime,
    /// The store's purge count when the fill began: a purge since then voids it.
    purges: u64,
    /// Set on a storable response head.
    pending: Option<Box<Pending>>,
}

struct Pending {
    head: ResponseHeader,
    freshness: Freshness,
    /// The response's `Vary` names that select it.
    vary: Vec<HeaderName>,
    body: BytesMut,
}

impl RouteCache {
    pub fn new(
        route: &str,
        cfg: &CacheConfig,
        store: Arc<Store>,
        identity_upstream: bool,
    ) -> RouteCache {
        let max_object = cfg.max_object(store.max_size);
        let counter = |o: Outcome| {
            METRICS
                .cache_requests
                .with_label_values(&[route, o.label()])
        };
        RouteCache {
            counters: [
                counter(Outcome::Hit),
                counter(Outcome::Miss),
                counter(Outcome::Bypass),
            ],
            route: route.into(),
            ttl: cfg.ttl.0,
            vary: cfg
                .vary
                .iter()
                .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
                .collect(),
            max_object,
            identity_upstream,
            store,
        }
    }

    /// Fills ask the upstream for identity encoding (see the module docs).
    pub fn identity_upstream(&self) -> bool {
        self.identity_upstream
    }

    pub fn count(&self, outcome: Outcome) {
        self.counters[outcome as usize].inc();
    }

    /// The primary key of a request: `path` is the normalised path (no query), `side` the
    /// `split` side, `who` what the upstream is told about the client (see [`Upstream`]).
    pub fn key(&self, req: &RequestHeader, path: &str, who: &Upstream<'_>, side: usize) -> Key {
        let mut rest = String::with_capacity(64);
        store::push_field(
            &mut rest,
            &crate::routing::request_host(req).to_ascii_lowercase(),
        );
        store::push_field(&mut rest, who.proto);
        match who.forwarded_host {
            Some(h) => {
                store::push_field(&mut rest, &String::from_utf8_lossy(h).to_ascii_lowercase())
            }
            None => rest.push('!'),
        }
        match req.uri.query() {
            Some(q) => store::push_field(&mut rest, q),
            None => rest.push('!'),
        }
        store::push_field(&mut rest, &side.to_string());
        match who.identity {
            Some(id) => {
                store::push_field(&mut rest, &id.provider);
                store::push_field(&mut rest, &id.consumer);
                for list in [&id.roles, &id.scopes] {
                    store::push_field(&mut rest, &list.len().to_string());
                    list.iter().for_each(|v| store::push_field(&mut rest, v));
                }
                store::push_field(&mut rest, &id.forward.len().to_string());
                for (name, value) in &id.forward {
                    store::push_field(&mut rest, name.as_str());
                    store::push_field(&mut rest, value);
                }
            }
            None => rest.push('!'),
        }
        for name in &self.vary {
            store::push_values(&mut rest, &req.headers, name);
        }
        Key {
            route: self.route.clone(),
            path: path.into(),
            rest: rest.into(),
            variant: None,
        }
    }

    /// A stored response this request may be answered with: fresh, and within the client's
    /// `max-age` / `min-fresh`.
    fn usable(&self, key: &Key, req: &RequestHeader, lookup: &Lookup) -> Option<Hit> {
        let (key, stored) = self.store.lookup(key, &req.headers)?;
        let now = Instant::now();
        let fresh_for = stored.fresh_for(now);
        let young_enough = lookup
            .max_age
            .is_none_or(|max| stored.age(now).as_secs() <= max);
        let fresh_enough = lookup
            .min_fresh
            .is_none_or(|min| fresh_for.as_secs() >= min);
        (!fresh_for.is_zero() && young_enough && fresh_enough).then_some(Hit { stored, key })
    }

    /// A hit's body in the negotiated `coding`: encoded by an earlier hit, or encoded now and
    /// kept with the entry for the next (unless the entry changed meanwhile). `None` when the
    /// coding has no encoder.
    pub fn encoded_body(&self, hit: &Hit, coding: Coding) -> pingora::Result<Option<Bytes>> {
        if let Some(done) = hit.stored.encoded(coding) {
            return Ok(Some(done));
        }
        let Some(mut encoder) = coding.new_encoder() else {
            return Ok(None);
        };
        let mut body = Some(hit.stored.body.clone());
        encoder.on_body(&mut body, true)?;
        let body = body.unwrap_or_default();
        let kept = hit.stored.with_encoding(coding, body.clone());
        self.store.replace(hit.key.clone(), &hit.stored, kept);
        Ok(Some(body))
    }

    /// Decide what the cache does for this request (see the module docs). May wait (bounded
    /// by `lock_timeout`) for another request's fill of the same key.
    pub async fn begin(
        &self,
        req: &RequestHeader,
        path: &str,
        who: &Upstream<'_>,
        side: usize,
    ) -> Begin {
        let plan = control::request_plan(
            &req.method,
            &req.headers,
            who.unverified_credentials,
            who.has_body,
        );
        let Ok(lookup) = plan else {
            return Begin::Forward(Exchange {
                outcome: Outcome::Bypass,
                fill: None,
            });
        };
        let key = self.key(req, path, who, side);
        if !lookup.refresh {
            if let Some(hit) = self.usable(&key, req, &lookup) {
                return Begin::Hit(hit);
            }
        }
        if lookup.only_if_cached {
            return Begin::NotCached;
        }
        let miss = |key: Option<Key>, guard: Option<FillGuard>| {
            Begin::Forward(Exchange {
                outcome: Outcome::Miss,
                fill: key.map(|key| {
                    Box::new(Filling {
                        key,
                        _guard: guard,
                        requested: SystemTime::now(),
                        purges: self.store.purges(),
                        pending: None,
                    })
                }),
            })
        };
        // A HEAD has no body to store; a conditional request is answered by the upstream
        // (its 304 is not stored): neither fills, so neither holds others up.
        if req.method == http::Method::HEAD || lookup.conditional {
            return miss(None, None);
        }
        // A client asking for a refetch does not wait for someone else's.
        if lookup.refresh {
            return miss(Some(key), None);
        }
        match self.store.fill(&key) {
            Fill::Leader(guard) => miss(Some(key), Some(guard)),
            Fill::Follower(done) => {
                if tokio::time::timeout(self.store.lock_timeout, done)
                    .await
                    .is_err()
                {
                    METRICS.cache_lock_timeouts.inc();
                }
                match self.usable(&key, req, &lookup) {
                    Some(hit) => Begin::Hit(hit),
                    // The leader's response was not storable, or it is still coming: fetch
                    // it too (and store it if it can be).
                    None => miss(Some(key), None),
                }
            }
        }
    }
}

/// Fields that describe one connection, not the response (RFC 9110 §7.6.1), plus those the
/// gateway recomputes for each answer.
const NOT_STORED: [HeaderName; 8] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::CONTENT_LENGTH,
    header::AGE,
];

impl Exchange {
    /// A request answered from the store.
    pub fn hit() -> Exchange {
        Exchange {
            outcome: Outcome::Hit,
            fill: None,
        }
    }

    /// Whether this request may store its response (a MISS that leads or joins a fill).
    pub fn filling(&self) -> bool {
        self.fill.is_some()
    }

    /// The `Age` a MISS answers with when the upstream sent none: the age the stored copy
    /// starts with (RFC 9111 §4.2.3, from the upstream's `Date` and the response delay), so
    /// the client and the next hit agree; zero for a response that is not stored.
    pub fn miss_age(&self) -> Duration {
        self.fill
            .as_ref()
            .and_then(|f| f.pending.as_ref())
            .map_or(Duration::ZERO, |p| p.freshness.initial_age)
    }

    /// The upstream's response head, as JSON stripping left it and before compression: keep a
    /// copy when the response may be stored, else give up the fill (waking its waiters).
    pub fn on_response_head(&mut self, cache: &RouteCache, resp: &ResponseHeader) {
        let Some(fill) = self.fill.as_mut() else {
            return;
        };
        let status = resp.status.as_u16();
        let declared_too_large = resp
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n > cache.max_object);
        let decision = control::storable(
            status,
            &resp.headers,
            cache.ttl,
            fill.requested,
            SystemTime::now(),
        );
        match (decision, control::vary_names(&resp.headers)) {
            (Ok(freshness), Some(mut vary)) if !declared_too_large => {
                if cache.identity_upstream {
                    vary.retain(|n| n != header::ACCEPT_ENCODING);
                }
                let mut head = resp.clone();
                let named_by_connection: Vec<HeaderName> = resp
                    .headers
                    .get_all(header::CONNECTION)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(','))
                    .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
                    .collect();
                for name in NOT_STORED.iter().chain(&named_by_connection) {
                    head.remove_header(name);
                }
                head.remove_header("keep-alive");
                head.remove_header("proxy-connection");
                fill.pending = Some(Box::new(Pending {
                    head,
                    freshness,
                    vary,
                    body: BytesMut::new(),
                }));
            }
            _ => self.fill = None,
        }
    }

    /// A body chunk as the client gets it before compression; stored at the end of the body
    /// when complete and within `max_object`.
    pub fn on_body(
        &mut self,
        cache: &RouteCache,
        chunk: Option<&Bytes>,
        end_of_stream: bool,
        request: &HeaderMap,
    ) {
        let Some(pending) = self.fill.as_mut().and_then(|f| f.pending.as_mut()) else {
            return;
        };
        if let Some(chunk) = chunk {
            if (pending.body.len() + chunk.len()) as u64 > cache.max_object {
                self.fill = None;
                return;
            }
            pending.body.extend_from_slice(chunk);
        }
        if end_of_stream {
            self.finish(cache, request);
        }
    }

    /// The exchange is over: a response whose body ended without a body chunk marking it
    /// (an empty body) is stored when nothing failed; anything else is dropped.
    pub fn on_done(&mut self, cache: &RouteCache, request: &HeaderMap, failed: bool) {
        if failed {
            self.fill = None;
        } else {
            self.finish(cache, request);
        }
    }

    fn finish(&mut self, cache: &RouteCache, request: &HeaderMap) {
        let Some(fill) = self.fill.take() else {
            return;
        };
        if let Some(p) = fill.pending {
            let stored = Stored::new(p.head, p.body.freeze(), p.freshness);
            cache
                .store
                .insert(fill.purges, fill.key, p.vary, request, stored);
        }
        // `fill` (and its guard) dropped here, after the insert: waiters find the entry.
    }
}

/// The answer to a hit: the stored head with `Age`, `X-Cache: HIT` and its `Content-Length`,
/// and the body (none for HEAD); or a 304 when the request's validators match the entry.
pub fn hit_response(
    stored: &Stored,
    req: &RequestHeader,
    now: Instant,
) -> pingora::Result<(ResponseHeader, Option<Bytes>)> {
    let age = stored.age(now).as_secs().to_string();
    // RFC 9110 §13.2.1: preconditions apply only where the unconditional answer is a 2xx.
    let success = stored.head.status.is_success();
    if success && control::not_modified(&req.headers, &stored.head.headers) {
        // RFC 9110 §15.4.5: the fields a 200 would have carried that describe caching.
        let mut resp = ResponseHeader::build(304, Some(8))?;
        for name in [
            header::CACHE_CONTROL,
            header::CONTENT_LOCATION,
            header::DATE,
            header::ETAG,
            header::EXPIRES,
            header::LAST_MODIFIED,
            header::VARY,
        ] {
            for v in stored.head.headers.get_all(&name) {
                resp.append_header(name.clone(), v.clone())?;
            }
        }
        resp.insert_header(header::AGE, age)?;
        resp.insert_header("X-Cache", Outcome::Hit.header())?;
        return Ok((resp, None));
    }
    let mut resp = stored.head.clone();
    resp.insert_header(header::AGE, age)?;
    resp.insert_header("X-Cache", Outcome::Hit.header())?;
    let bodiless = matches!(resp.status.as_u16(), 204 | 304);
    if !bodiless {
        resp.insert_header(header::CONTENT_LENGTH, stored.body.len().to_string())?;
    }
    let body = (req.method != http::Method::HEAD && !bodiless).then(|| stored.body.clone());
    Ok((resp, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::edge::CacheStoreConfig;
    use crate::config::{ByteSize, HumanDuration};

    fn route_cache(vary: &[&str], max_object: u64) -> RouteCache {
        let store = Store::new(&CacheStoreConfig {
            max_size: ByteSize(1 << 20),
            lock_timeout: HumanDuration(Duration::from_millis(200)),
        });
        let cfg = CacheConfig {
            ttl: HumanDuration(Duration::from_secs(30)),
            vary: vary.iter().map(|s| s.to_string()).collect(),
            max_object: Some(ByteSize(max_object)),
        };
        RouteCache::new("r", &cfg, store, true)
    }

    fn get(path: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = crate::test_support::get_request(path, headers);
        r.insert_header("host", "api.example.com").unwrap();
        r
    }

    fn response(headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(200, None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn who(identity: Option<&crate::auth::identity::Identity>) -> Upstream<'_> {
        Upstream {
            identity,
            ..Upstream::anonymous()
        }
    }

    fn ident(provider: &str, consumer: &str, roles: &[&str]) -> crate::auth::identity::Identity {
        crate::auth::identity::Identity {
            provider: provider.into(),
            consumer: consumer.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            scopes: vec![],
            forward: vec![],
            expires_at: None,
            claims: vec![],
        }
    }

    async fn fill(
        c: &RouteCache,
        req: &RequestHeader,
        who: &Upstream<'_>,
        resp: &ResponseHeader,
        body: &str,
    ) -> Outcome {
        match c.begin(req, req.uri.path(), who, 0).await {
            Begin::Hit(_) => Outcome::Hit,
            Begin::NotCached => panic!("not only-if-cached"),
            Begin::Forward(mut x) => {
                x.on_response_head(c, resp);
                x.on_body(c, Some(&Bytes::from(body.to_string())), true, &req.headers);
                x.outcome
            }
        }
    }

    #[tokio::test]
    async fn miss_then_hit_and_consumers_and_vary_split() {
        let c = route_cache(&["accept"], 1000);
        let ok = response(&[
            ("content-type", "application/json"),
            ("connection", "x-hop"),
            ("x-hop", "1"),
        ]);
        let a = get("/a?x=1", &[("accept", "application/json")]);
        assert_eq!(fill(&c, &a, &who(None), &ok, "{}").await, Outcome::Miss);
        assert_eq!(fill(&c, &a, &who(None), &ok, "{}").await, Outcome::Hit);
        // Another query, consumer or `vary` value is another entry.
        assert_eq!(
            fill(
                &c,
                &get("/a?x=2", &[("accept", "application/json")]),
                &who(None),
                &ok,
                "{}"
            )
            .await,
            Outcome::Miss
        );
        let alice = ident("jwt:j", "alice", &[]);
        let bob = ident("jwt:j", "bob", &[]);
        let alice_key = ident("api_key:k", "alice", &[]);
        let alice_admin = ident("jwt:j", "alice", &["admin"]);
        let alice = who(Some(&alice));
        assert_eq!(fill(&c, &a, &alice, &ok, "{}").await, Outcome::Miss);
        assert_eq!(
            fill(&c, &a, &who(Some(&bob)), &ok, "{}").await,
            Outcome::Miss
        );
        assert_eq!(fill(&c, &a, &alice, &ok, "{}").await, Outcome::Hit);
        // The same name from another provider, or with other roles, is another caller.
        assert_eq!(
            fill(&c, &a, &who(Some(&alice_key)), &ok, "{}").await,
            Outcome::Miss
        );
        assert_eq!(
            fill(&c, &a, &who(Some(&alice_admin)), &ok, "{}").await,
            Outcome::Miss
        );
        // What the upstream is told about scheme and host is part of the key.
        let https = Upstream {
            proto: "https",
            ..who(None)
        };
        assert_eq!(fill(&c, &a, &https, &ok, "{}").await, Outcome::Miss);
        let fwd = Upstream {
            forwarded_host: Some(b"evil.example"),
            ..who(None)
        };
        assert_eq!(fill(&c, &a, &fwd, &ok, "{}").await, Outcome::Miss);
        assert_eq!(
            fill(
                &c,
                &get("/a?x=1", &[("accept", "text/html")]),
                &who(None),
                &ok,
                "{}"
            )
            .await,
            Outcome::Miss
        );
        let Begin::Hit(hit) = c.begin(&a, "/a", &who(None), 0).await else {
            panic!("stored");
        };
        let (head, body) = hit_response(&hit.stored, &a, Instant::now()).unwrap();
        assert_eq!(head.headers["x-cache"], "HIT");
        assert_eq!(head.headers["content-length"], "2");
        assert!(head.headers.get("x-hop").is_none() && head.headers.get("connection").is_none());
        assert_eq!(body.as_deref(), Some(&b"{}"[..]));
        let head_req = {
            let mut r = a.clone();
            r.set_method(http::Method::HEAD);
            r
        };
        let (_, body) = hit_response(&hit.stored, &head_req, Instant::now()).unwrap();
        assert!(body.is_none());
    }

    #[tokio::test]
    async fn not_stored_when_too_large_or_uncacheable() {
        let c = route_cache(&[], 10);
        let req = get("/big", &[]);
        let ok = response(&[]);
        assert_eq!(
            fill(&c, &req, &who(None), &ok, "01234567890").await,
            Outcome::Miss
        );
        assert_eq!(fill(&c, &req, &who(None), &ok, "0123").await, Outcome::Miss);
        assert_eq!(fill(&c, &req, &who(None), &ok, "0123").await, Outcome::Hit);
        let req = get("/cookie", &[]);
        let cookie = response(&[("set-cookie", "a=b")]);
        assert_eq!(
            fill(&c, &req, &who(None), &cookie, "x").await,
            Outcome::Miss
        );
        assert_eq!(
            fill(&c, &req, &who(None), &cookie, "x").await,
            Outcome::Miss
        );
        // Accept-Encoding selects nothing when fills ask for identity.
        let req = get("/ae", &[("accept-encoding", "gzip")]);
        let vary_ae = response(&[("vary", "Accept-Encoding")]);
        assert_eq!(
            fill(&c, &req, &who(None), &vary_ae, "x").await,
            Outcome::Miss
        );
        assert_eq!(
            fill(&c, &get("/ae", &[]), &who(None), &vary_ae, "x").await,
            Outcome::Hit
        );
    }

    #[tokio::test]
    async fn bypass_and_only_if_cached() {
        let c = route_cache(&[], 10);
        let Begin::Forward(x) = c
            .begin(
                &get("/a", &[("authorization", "Bearer t")]),
                "/a",
                &Upstream {
                    unverified_credentials: true,
                    ..who(None)
                },
                0,
            )
            .await
        else {
            panic!("forwarded");
        };
        assert_eq!(x.outcome, Outcome::Bypass);
        assert!(matches!(
            c.begin(
                &get("/a", &[("cache-control", "only-if-cached")]),
                "/a",
                &who(None),
                0
            )
            .await,
            Begin::NotCached
        ));
    }
}
