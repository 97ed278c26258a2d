//! RFC 9111 as a shared cache sees it, as pure decisions on headers: the `Cache-Control`
//! directives of either side, whether a request may use or fill the cache
//! ([`request_plan`]), whether a response may be stored and for how long ([`storable`]), and
//! whether a stored response answers a conditional request with 304 ([`not_modified`]).
//!
//! Deliberate simplifications, all on the safe side: responses that would need revalidation
//! before every use (`no-cache`, with or without field names) and `private` ones (with or without
//! field names) are not stored; a stale entry is never served (`max-stale` is ignored), it is
//! fetched again; there is no heuristic freshness from `Last-Modified`: the route's `ttl` is
//! the heuristic.

use http::header::{self, HeaderMap, HeaderName};
use http::Method;
use std::time::{Duration, SystemTime};

/// Statuses stored: those RFC 9110 §15.1 calls heuristically cacheable, less 405, 414 and 501,
/// which describe the request (its method or length) or the server more than the resource, and
/// 206, which is a part of a body (range requests are never cached here).
pub const CACHEABLE_STATUSES: [u16; 8] = [200, 203, 204, 300, 301, 308, 404, 410];

/// `Cache-Control` directives that matter here, from every `Cache-Control` line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Directives {
    pub no_store: bool,
    pub no_cache: bool,
    pub private: bool,
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
    pub min_fresh: Option<u64>,
    pub only_if_cached: bool,
}

impl Directives {
    /// Parse every `Cache-Control` field line; names are case-insensitive, arguments may be
    /// quoted. An unparsable delta-seconds counts as 0 (RFC 9111 §1.2.2: a cache treats an
    /// invalid freshness as stale); repeated directives keep the most conservative value.
    pub fn of(headers: &HeaderMap) -> Directives {
        let mut d = Directives::default();
        for line in headers.get_all(header::CACHE_CONTROL) {
            let Ok(line) = line.to_str() else {
                // Not text: nothing can be trusted about it.
                d.no_store = true;
                continue;
            };
            for item in split_directives(line) {
                let (name, arg) = match item.split_once('=') {
                    Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                    None => (item.trim(), None),
                };
                let seconds = || {
                    arg.and_then(|a| a.parse::<u64>().ok())
                        .unwrap_or(0)
                        .min(u64::from(u32::MAX))
                };
                let min = |old: Option<u64>, new: u64| Some(old.map_or(new, |o| o.min(new)));
                match name.to_ascii_lowercase().as_str() {
                    "no-store" => d.no_store = true,
                    "no-cache" => d.no_cache = true,
                    "private" => d.private = true,
                    "max-age" => d.max_age = min(d.max_age, seconds()),
                    "s-maxage" => d.s_maxage = min(d.s_maxage, seconds()),
                    "min-fresh" => d.min_fresh = Some(seconds().max(d.min_fresh.unwrap_or(0))),
                    "only-if-cached" => d.only_if_cached = true,
                    _ => {}
                }
            }
        }
        d
    }
}

/// Split on commas outside quoted strings (`private="a, b"` is one directive).
fn split_directives(line: &str) -> impl Iterator<Item = &str> {
    let mut quoted = false;
    let mut start = 0;
    let mut parts = Vec::new();
    for (i, b) in line.bytes().enumerate() {
        match b {
            b'"' => quoted = !quoted,
            b',' if !quoted => {
                parts.push(&line[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&line[start..]);
    parts.into_iter().filter(|p| !p.trim().is_empty())
}

/// Why a request neither uses nor fills the cache (BYPASS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bypass {
    /// Only GET and HEAD are cached.
    Method,
    /// A range is a part of a body; it goes to the upstream.
    Range,
    /// Credentials the gateway did not verify: it cannot tell whose response this is.
    Credentials,
    /// `Cache-Control: no-store` from the client.
    NoStore,
    /// A GET with a body: its answer may depend on it.
    Body,
}

/// How a request on a cached route uses the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lookup {
    /// `no-cache` (or `Pragma: no-cache`) from the client: do not answer from the cache, but
    /// the fresh answer may be stored.
    pub refresh: bool,
    /// The client's `max-age`: an older entry is not used.
    pub max_age: Option<u64>,
    /// The client's `min-fresh`: an entry must stay fresh at least this long to be used.
    pub min_fresh: Option<u64>,
    /// The client's `only-if-cached`: a miss is answered 504 rather than sent upstream.
    pub only_if_cached: bool,
    /// `If-None-Match` / `If-Modified-Since`: on a miss, the upstream answers it (and its 304
    /// cannot be stored), so such a request does not hold up others with the fill lock.
    pub conditional: bool,
}

/// Decide from the request alone. `unverified_credentials`: it carries credentials the
/// route's auth did not verify (verified ones put their consumer into the key, so they are no
/// reason to bypass); `has_body`: it has a body, however framed.
pub fn request_plan(
    method: &Method,
    headers: &HeaderMap,
    unverified_credentials: bool,
    has_body: bool,
) -> Result<Lookup, Bypass> {
    if method != Method::GET && method != Method::HEAD {
        return Err(Bypass::Method);
    }
    if headers.contains_key(header::RANGE) {
        return Err(Bypass::Range);
    }
    if unverified_credentials {
        return Err(Bypass::Credentials);
    }
    let has_body = has_body
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
        || headers.contains_key(header::TRANSFER_ENCODING);
    if has_body {
        return Err(Bypass::Body);
    }
    let d = Directives::of(headers);
    if d.no_store {
        return Err(Bypass::NoStore);
    }
    // RFC 9111 §5.4: Pragma: no-cache counts only without Cache-Control.
    let pragma_no_cache = !headers.contains_key(header::CACHE_CONTROL)
        && headers.get_all(header::PRAGMA).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.to_ascii_lowercase().contains("no-cache"))
        });
    Ok(Lookup {
        refresh: d.no_cache || pragma_no_cache,
        max_age: d.max_age,
        min_fresh: d.min_fresh,
        only_if_cached: d.only_if_cached,
        conditional: headers.contains_key(header::IF_NONE_MATCH)
            || headers.contains_key(header::IF_MODIFIED_SINCE),
    })
}

/// How long a stored response is fresh and how old it already was when it arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// RFC 9111 §4.2.1 freshness lifetime.
    pub lifetime: Duration,
    /// RFC 9111 §4.2.3 `corrected_initial_age`.
    pub initial_age: Duration,
}

impl Freshness {
    /// Time left before the entry goes stale, counted from when it was stored.
    pub fn remaining(&self) -> Duration {
        self.lifetime.saturating_sub(self.initial_age)
    }
}

/// Why a response is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    Status,
    NoStore,
    Private,
    NoCache,
    SetCookie,
    VaryStar,
    Partial,
    /// Its freshness is used up on arrival (`max-age=0`, an `Expires` in the past, ...).
    Stale,
}

/// Whether a response to a GET may be stored, and its freshness: `s-maxage`, then `max-age`,
/// then `Expires` − `Date` decide it; `ttl` only when the upstream said none of these.
/// `requested`/`received`: when the request went out and the response head came back.
pub fn storable(
    status: u16,
    headers: &HeaderMap,
    ttl: Duration,
    requested: SystemTime,
    received: SystemTime,
) -> Result<Freshness, NotStored> {
    if !CACHEABLE_STATUSES.contains(&status) {
        return Err(NotStored::Status);
    }
    let d = Directives::of(headers);
    if d.no_store {
        return Err(NotStored::NoStore);
    }
    if d.private {
        return Err(NotStored::Private);
    }
    if d.no_cache {
        return Err(NotStored::NoCache);
    }
    if headers.contains_key(header::SET_COOKIE) {
        return Err(NotStored::SetCookie);
    }
    if vary_names(headers).is_none() {
        return Err(NotStored::VaryStar);
    }
    if headers.contains_key(header::CONTENT_RANGE) {
        return Err(NotStored::Partial);
    }
    let date = date_of(headers, header::DATE);
    let lifetime = if let Some(s) = d.s_maxage.or(d.max_age) {
        Duration::from_secs(s)
    } else if let Some(expires) = headers.get(header::EXPIRES) {
        // An invalid Expires (including "0") means "already expired" (RFC 9111 §5.3).
        let expires = expires
            .to_str()
            .ok()
            .and_then(|v| httpdate::parse_http_date(v.trim()).ok());
        match expires {
            Some(at) => at
                .duration_since(date.unwrap_or(received))
                .unwrap_or_default(),
            None => Duration::ZERO,
        }
    } else {
        ttl
    };
    let age_value = headers
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_secs);
    let apparent_age = date
        .and_then(|d| received.duration_since(d).ok())
        .unwrap_or_default();
    let response_delay = received.duration_since(requested).unwrap_or_default();
    let initial_age = apparent_age.max(age_value + response_delay);
    let f = Freshness {
        lifetime,
        initial_age,
    };
    if f.remaining().is_zero() {
        return Err(NotStored::Stale);
    }
    Ok(f)
}

/// Request fields the gateway writes itself for each request, not part of the key: a response
/// that varies on one was made for that client or that request alone (the client's own copy,
/// which a lookup would compare, is not what the upstream saw).
const PER_REQUEST: [&str; 4] = [
    "x-forwarded-for",
    "x-request-id",
    "traceparent",
    "tracestate",
];

/// The response's `Vary` field names, lowercase; `None` for `Vary: *` or a [`PER_REQUEST`]
/// name (matches nothing).
pub fn vary_names(headers: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut names = Vec::new();
    for line in headers.get_all(header::VARY) {
        let Ok(line) = line.to_str() else {
            return None;
        };
        for token in line.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if token == "*" {
                return None;
            }
            let name = HeaderName::from_bytes(token.as_bytes()).ok()?;
            if PER_REQUEST.contains(&name.as_str()) {
                return None;
            }
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    Some(names)
}

fn date_of(headers: &HeaderMap, name: HeaderName) -> Option<SystemTime> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v.trim()).ok())
}

/// Whether a stored response (its headers) answers this conditional request with 304:
/// `If-None-Match` by weak comparison (RFC 9110 §13.1.2), else `If-Modified-Since` against
/// `Last-Modified`.
pub fn not_modified(request: &HeaderMap, stored: &HeaderMap) -> bool {
    if let Some(inm) = request.get(header::IF_NONE_MATCH) {
        let Ok(inm) = inm.to_str() else {
            return false;
        };
        // `*` matches any current representation, with or without an ETag (§13.1.2).
        if inm.trim() == "*" {
            return true;
        }
        let Some(etag) = stored.get(header::ETAG).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let weak = |t: &str| t.trim().trim_start_matches("W/").to_string();
        let etag = weak(etag);
        return inm.split(',').any(|t| t.trim() == "*" || weak(t) == etag);
    }
    match (
        date_of(request, header::IF_MODIFIED_SINCE),
        date_of(stored, header::LAST_MODIFIED),
    ) {
        (Some(since), Some(modified)) => modified <= since,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_support::header_map as headers;

    const TTL: Duration = Duration::from_secs(30);

    fn fresh(pairs: &[(&str, &str)]) -> Result<Freshness, NotStored> {
        let now = SystemTime::now();
        storable(200, &headers(pairs), TTL, now, now)
    }

    #[test]
    fn directives_parse_case_quotes_and_repeats() {
        let d = Directives::of(&headers(&[
            ("cache-control", "Public, MAX-AGE=\"60\", private=\"a, b\""),
            ("cache-control", "max-age=30, s-maxage=x"),
        ]));
        assert!(d.private);
        assert_eq!(d.max_age, Some(30));
        assert_eq!(d.s_maxage, Some(0), "invalid is stale");
        assert!(!d.no_store);
    }

    #[test]
    fn freshness_prefers_s_maxage_then_max_age_then_expires_then_ttl() {
        assert_eq!(fresh(&[]).unwrap().lifetime, TTL);
        assert_eq!(
            fresh(&[("cache-control", "max-age=5, s-maxage=9")])
                .unwrap()
                .lifetime,
            Duration::from_secs(9)
        );
        assert_eq!(
            fresh(&[("cache-control", "public, max-age=5")])
                .unwrap()
                .lifetime,
            Duration::from_secs(5)
        );
        let now = SystemTime::now();
        let date = httpdate::fmt_http_date(now);
        let later = httpdate::fmt_http_date(now + Duration::from_secs(100));
        let f = storable(
            200,
            &headers(&[("date", &date), ("expires", &later)]),
            TTL,
            now,
            now,
        )
        .unwrap();
        assert!((99..=101).contains(&f.lifetime.as_secs()), "{f:?}");
        assert_eq!(
            fresh(&[("expires", "0")]),
            Err(NotStored::Stale),
            "invalid Expires is already expired, not ttl"
        );
        assert_eq!(
            fresh(&[("cache-control", "max-age=0")]),
            Err(NotStored::Stale)
        );
    }

    #[test]
    fn never_stored() {
        for (pairs, why) in [
            (vec![("cache-control", "no-store")], NotStored::NoStore),
            (
                vec![("cache-control", "private, max-age=60")],
                NotStored::Private,
            ),
            (vec![("cache-control", "no-cache")], NotStored::NoCache),
            (vec![("set-cookie", "s=1")], NotStored::SetCookie),
            (vec![("vary", "Accept, *")], NotStored::VaryStar),
            (vec![("content-range", "bytes 0-1/9")], NotStored::Partial),
        ] {
            assert_eq!(fresh(&pairs), Err(why), "{pairs:?}");
        }
        let now = SystemTime::now();
        for status in [201, 206, 302, 304, 400, 401, 403, 500, 502, 503] {
            assert_eq!(
                storable(status, &headers(&[]), TTL, now, now),
                Err(NotStored::Status),
                "{status}"
            );
        }
        for status in CACHEABLE_STATUSES {
            assert!(storable(status, &headers(&[]), TTL, now, now).is_ok());
        }
    }

    #[test]
    fn age_counts_upstream_age_and_delay() {
        let requested = SystemTime::now();
        let received = requested + Duration::from_secs(2);
        let f = storable(
            200,
            &headers(&[("age", "10"), ("cache-control", "max-age=60")]),
            TTL,
            requested,
            received,
        )
        .unwrap();
        assert_eq!(f.initial_age, Duration::from_secs(12));
        assert_eq!(f.remaining(), Duration::from_secs(48));
    }

    #[test]
    fn requests_that_bypass() {
        let get = Method::GET;
        let plan = |m: &Method, pairs: &[(&str, &str)], unverified: bool| {
            request_plan(m, &headers(pairs), unverified, false)
        };
        assert_eq!(plan(&Method::POST, &[], false), Err(Bypass::Method));
        assert_eq!(
            plan(&get, &[("range", "bytes=0-1")], false),
            Err(Bypass::Range)
        );
        assert_eq!(
            plan(&get, &[("authorization", "Bearer x")], true),
            Err(Bypass::Credentials)
        );
        assert!(plan(&get, &[("authorization", "Bearer x")], false).is_ok());
        // An HTTP/2 body needs no framing header.
        assert_eq!(
            request_plan(&get, &headers(&[]), false, true),
            Err(Bypass::Body)
        );
        assert_eq!(
            plan(&get, &[("cache-control", "no-store")], false),
            Err(Bypass::NoStore)
        );
        assert_eq!(
            plan(&get, &[("content-length", "3")], false),
            Err(Bypass::Body)
        );
        let l = plan(&Method::HEAD, &[("pragma", "no-cache")], false).unwrap();
        assert!(l.refresh);
        let l = plan(
            &get,
            &[
                ("cache-control", "max-age=5, min-fresh=2"),
                ("pragma", "no-cache"),
            ],
            false,
        )
        .unwrap();
        assert!(!l.refresh, "Pragma counts only without Cache-Control");
        assert_eq!((l.max_age, l.min_fresh), (Some(5), Some(2)));
    }

    #[test]
    fn conditional_requests() {
        let stored = headers(&[
            ("etag", "\"v1\""),
            ("last-modified", "Tue, 01 Dec 2026 10:00:00 GMT"),
        ]);
        assert!(not_modified(
            &headers(&[("if-none-match", "\"v0\", W/\"v1\"")]),
            &stored
        ));
        assert!(not_modified(&headers(&[("if-none-match", "*")]), &stored));
        assert!(not_modified(
            &headers(&[("if-none-match", "*")]),
            &headers(&[])
        ));
        assert!(!not_modified(
            &headers(&[
                ("if-none-match", "\"v2\""),
                ("if-modified-since", "Tue, 01 Dec 2026 11:00:00 GMT")
            ]),
            &stored
        ));
        assert!(not_modified(
            &headers(&[("if-modified-since", "Tue, 01 Dec 2026 11:00:00 GMT")]),
            &stored
        ));
        assert!(!not_modified(
            &headers(&[("if-modified-since", "Tue, 01 Dec 2026 09:00:00 GMT")]),
            &stored
        ));
    }

    #[test]
    fn vary_names_are_deduplicated_and_star_matches_nothing() {
        assert_eq!(
            vary_names(&headers(&[
                ("vary", "Accept, accept-language"),
                ("vary", "accept")
            ])),
            Some(vec![header::ACCEPT, header::ACCEPT_LANGUAGE])
        );
        assert_eq!(vary_names(&headers(&[("vary", "*")])), None);
        assert_eq!(
            vary_names(&headers(&[("vary", "Accept, X-Forwarded-For")])),
            None
        );
        assert_eq!(vary_names(&headers(&[("vary", "traceparent")])), None);
    }
}
