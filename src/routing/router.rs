//! The route table, compiled once at start.
//!
//! Routes are bucketed by their path prefix. A lookup walks the request path's segment-boundary
//! prefixes from longest to shortest (`/a/b/c`, `/a/b`, `/a`, `/`) and probes each bucket, so
//! the cost grows with the depth of the path, not the number of routes, and the segment rule
//! (`/orders` never matches `/ordersx`) holds by construction. Lookups borrow slices of the
//! request path and never allocate.
//!
//! Header and query conditions (`match.headers`, `match.query`) are checked only on routes that
//! have them; within a bucket, routes with more conditions come first (then file order), so the
//! first route whose conditions hold wins at each prefix length.

use super::conditions::{Conditions, RequestView};
use super::methods::MethodSet;
use crate::config::RouteConfig;
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostMatch {
    Any,
    Exact(Box<str>),
    /// `*.example.com` stored as `.example.com`; matches `a.example.com`, not `example.com`.
    Suffix(Box<str>),
}

impl HostMatch {
    fn parse(pattern: Option<&str>) -> HostMatch {
        match pattern {
            None => HostMatch::Any,
            Some(p) => match p.strip_prefix('*') {
                Some(suffix) => HostMatch::Suffix(suffix.to_ascii_lowercase().into()),
                None => HostMatch::Exact(p.to_ascii_lowercase().into()),
            },
        }
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Any => true,
            HostMatch::Exact(h) => host.eq_ignore_ascii_case(h),
            HostMatch::Suffix(s) => {
                host.len() > s.len()
                    && host.is_char_boundary(host.len() - s.len())
                    && host[host.len() - s.len()..].eq_ignore_ascii_case(s)
            }
        }
    }
}

#[derive(Debug)]
struct CompiledRoute {
    host: HostMatch,
    methods: MethodSet,
    /// Normalised prefix without a trailing slash (except the root, `/`).
    prefix: Box<str>,
    /// `None` for the common route without header/query conditions: no cost on lookup.
    conditions: Option<Box<Conditions>>,
}

/// Result of a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    /// Index of the winning route in the config's `routes` list.
    Found(usize),
    /// Some route matches host and path, but none accepts this method.
    MethodNotAllowed(MethodSet),
    NotFound,
}

#[derive(Debug)]
pub struct Router {
    routes: Vec<CompiledRoute>,
    /// Prefix → route indices, more conditions first, then file order (ties go to the
    /// earlier route).
    buckets: HashMap<Box<str>, Vec<usize>>,
}

/// Canonical form of a configured prefix: `/orders/` and `/orders` are the same rule.
pub fn canonical_prefix(prefix: &str) -> &str {
    let trimmed = prefix.trim_end_matches('/');
    if trimmed.is_empty() {
        "/"
    } else {
        trimmed
    }
}

/// The host a client asked for, without port or trailing dot.
pub fn host_only(authority: &str) -> &str {
    let h = if authority.starts_with('[') {
        match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        }
    } else {
        match authority.rfind(':') {
            Some(i) => &authority[..i],
            None => authority,
        }
    };
    h.strip_suffix('.').unwrap_or(h)
}

impl Router {
    pub fn new(routes: &[RouteConfig]) -> Router {
        let mut compiled = Vec::with_capacity(routes.len());
        let mut buckets: HashMap<Box<str>, Vec<usize>> = HashMap::new();
        for (i, r) in routes.iter().enumerate() {
            let prefix: Box<str> = canonical_prefix(&r.matcher.path_prefix).into();
            buckets.entry(prefix.clone()).or_default().push(i);
            compiled.push(CompiledRoute {
                host: HostMatch::parse(r.matcher.host.as_deref()),
                methods: MethodSet::from_names(&r.matcher.methods),
                prefix,
                conditions: Conditions::compile(&r.matcher).map(Box::new),
            });
        }
        let count = |i: usize| compiled[i].conditions.as_ref().map_or(0, |c| c.count());
        for bucket in buckets.values_mut() {
            // Stable: equal counts keep file order.
            bucket.sort_by_key(|&i| std::cmp::Reverse(count(i)));
        }
        Router {
            routes: compiled,
            buckets,
        }
    }

    /// The prefix a route was compiled with (for strip/rewrite).
    pub fn prefix(&self, route: usize) -> &str {
        &self.routes[route].prefix
    }

    /// Find the route for a normalised path. `host` is the bare host (see [`host_only`]).
    /// Routes with header or query conditions never match here (see [`Router::lookup_request`]).
    pub fn lookup(&self, host: &str, path: &str, method: &[u8]) -> Match {
        self.find(host, path, &RequestView::default(), |methods| {
            methods.contains(method)
        })
    }

    /// [`Router::lookup`] with the request's headers and query for routes with conditions.
    pub fn lookup_request(
        &self,
        host: &str,
        path: &str,
        method: &[u8],
        view: &RequestView,
    ) -> Match {
        self.find(host, path, view, |methods| methods.contains(method))
    }

    /// The route a path leads to whatever the method (a CORS preflight asks on behalf of a
    /// method it does not use itself).
    pub fn lookup_any_method(&self, host: &str, path: &str, view: &RequestView) -> Match {
        self.find(host, path, view, |_| true)
    }

    fn find(
        &self,
        host: &str,
        path: &str,
        view: &RequestView,
        accepts: impl Fn(MethodSet) -> bool,
    ) -> Match {
        let mut allowed = MethodSet::EMPTY;
        let mut end = path.len();
        loop {
            let candidate = if end == 0 { "/" } else { &path[..end] };
            if let Some(bucket) = self.buckets.get(candidate) {
                for &i in bucket {
                    let r = &self.routes[i];
                    if !r.host.matches(host) {
                        continue;
                    }
                    if let Some(c) = &r.conditions {
                        // A route whose conditions fail is not there at all: it neither wins
                        // nor adds its methods to a 405's `Allow`.
                        if !c.hold(view) {
                            continue;
                        }
                    }
                    if accepts(r.methods) {
                        return Match::Found(i);
                    }
                    allowed = allowed.union(r.methods);
                }
            }
            if candidate == "/" {
                break;
            }
            end = match path[..end].rfind('/') {
                Some(i) => i,
                None => break,
            };
        }
        if allowed.is_empty() {
            Match::NotFound
        } else {
            Match::MethodNotAllowed(allowed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn router(routes_yaml: &str) -> Router {
        let yaml =
            format!("upstreams:\n  u:\n    backends: [\"127.0.0.1:1\"]\nroutes:\n{routes_yaml}");
        let config = Config::load_str(&yaml).expect("valid config");
        Router::new(&config.routes)
    }

    #[test]
    fn longest_prefix_on_segment_boundaries() {
        let r = router(
            "  - {name: root, upstream: u}\n  - {name: orders, upstream: u, match: {path_prefix: /orders}}\n  - {name: items, upstream: u, match: {path_prefix: /orders/items/}}\n",
        );
        assert_eq!(r.lookup("h", "/orders", b"GET"), Match::Found(1));
        assert_eq!(r.lookup("h", "/orders/7", b"GET"), Match::Found(1));
        assert_eq!(r.lookup("h", "/orders/", b"GET"), Match::Found(1));
        assert_eq!(r.lookup("h", "/ordersx", b"GET"), Match::Found(0));
        assert_eq!(r.lookup("h", "/orders/items/3", b"GET"), Match::Found(2));
        assert_eq!(r.lookup("h", "/", b"GET"), Match::Found(0));
    }

    #[test]
    fn hosts_filter_and_ties_go_to_the_earlier_route() {
        let r = router(
            "  - {name: exact, upstream: u, match: {host: api.example.com, path_prefix: /a}}\n  - {name: wild, upstream: u, match: {host: \"*.example.com\", path_prefix: /a}}\n  - {name: any, upstream: u, match: {path_prefix: /a}}\n",
        );
        assert_eq!(r.lookup("API.example.com", "/a", b"GET"), Match::Found(0));
        assert_eq!(r.lookup("x.example.com", "/a", b"GET"), Match::Found(1));
        assert_eq!(r.lookup("example.com", "/a", b"GET"), Match::Found(2));
        assert_eq!(r.lookup("other", "/a/b", b"GET"), Match::Found(2));
    }

    #[test]
    fn method_mismatch_reports_allowed_methods() {
        let r =
            router("  - {name: a, upstream: u, match: {path_prefix: /a, methods: [GET, POST]}}\n");
        match r.lookup("h", "/a/1", b"DELETE") {
            Match::MethodNotAllowed(set) => assert_eq!(set.allow_header(), "GET, HEAD, POST"),
            other => panic!("expected 405, got {other:?}"),
        }
        assert_eq!(r.lookup("h", "/b", b"GET"), Match::NotFound);
    }

    #[test]
    fn a_shorter_prefix_with_the_method_beats_a_longer_one_without() {
        let r = router(
            "  - {name: reads, upstream: u, match: {path_prefix: /a/b, methods: [GET]}}\n  - {name: all, upstream: u, match: {path_prefix: /a}}\n",
        );
        assert_eq!(r.lookup("h", "/a/b", b"POST"), Match::Found(1));
    }

    fn view<'a>(headers: &'a http::HeaderMap, query: Option<&'a str>) -> RequestView<'a> {
        RequestView {
            headers: Some(headers),
            query,
        }
    }

    #[test]
    fn more_conditions_beat_fewer_at_the_same_prefix_then_file_order() {
        let r = router(
            "  - {name: plain, upstream: u, match: {path_prefix: /o}}\n  - {name: v2, upstream: u, match: {path_prefix: /o, headers: {X-Api-Version: 2}}}\n  - {name: v2beta, upstream: u, match: {path_prefix: /o, headers: {X-Api-Version: 2}, query: {beta: \"1\"}}}\n  - {name: v2again, upstream: u, match: {path_prefix: /o, headers: {x-api-version: 2}}}\n",
        );
        let mut h = http::HeaderMap::new();
        assert_eq!(
            r.lookup_request("h", "/o", b"GET", &view(&h, None)),
            Match::Found(0)
        );
        h.insert("x-api-version", "2".parse().unwrap());
        assert_eq!(
            r.lookup_request("h", "/o/1", b"GET", &view(&h, None)),
            Match::Found(1)
        );
        assert_eq!(
            r.lookup_request("h", "/o/1", b"GET", &view(&h, Some("beta=1"))),
            Match::Found(2)
        );
        assert_eq!(r.lookup("h", "/o", b"GET"), Match::Found(0));
    }

    #[test]
    fn a_longer_prefix_beats_more_conditions() {
        let r = router(
            "  - {name: cond, upstream: u, match: {path_prefix: /o, headers: {X-A: {present: true}}}}\n  - {name: deep, upstream: u, match: {path_prefix: /o/items}}\n",
        );
        let mut h = http::HeaderMap::new();
        h.insert("x-a", "1".parse().unwrap());
        assert_eq!(
            r.lookup_request("h", "/o/items/1", b"GET", &view(&h, None)),
            Match::Found(1)
        );
        assert_eq!(
            r.lookup_request("h", "/o/x", b"GET", &view(&h, None)),
            Match::Found(0)
        );
    }

    #[test]
    fn allow_lists_only_routes_whose_conditions_hold() {
        let r = router(
            "  - {name: v2, upstream: u, match: {path_prefix: /o, methods: [POST], headers: {X-Api-Version: 2}}}\n  - {name: v1, upstream: u, match: {path_prefix: /o, methods: [GET]}}\n",
        );
        let mut h = http::HeaderMap::new();
        match r.lookup_request("h", "/o", b"DELETE", &view(&h, None)) {
            Match::MethodNotAllowed(set) => assert_eq!(set.allow_header(), "GET, HEAD"),
            other => panic!("expected 405, got {other:?}"),
        }
        h.insert("x-api-version", "2".parse().unwrap());
        match r.lookup_request("h", "/o", b"DELETE", &view(&h, None)) {
            Match::MethodNotAllowed(set) => assert_eq!(set.allow_header(), "GET, HEAD, POST"),
            other => panic!("expected 405, got {other:?}"),
        }
        // only the method differs from the v2 route: GET falls through to v1
        assert_eq!(
            r.lookup_request("h", "/o", b"GET", &view(&h, None)),
            Match::Found(1)
        );
        assert_eq!(
            r.lookup_request("h", "/o", b"POST", &view(&h, None)),
            Match::Found(0)
        );
    }

    #[test]
    fn host_only_strips_ports_and_trailing_dots() {
        assert_eq!(host_only("api.example.com:8080"), "api.example.com");
        assert_eq!(host_only("api.example.com."), "api.example.com");
        assert_eq!(host_only("[::1]:8080"), "[::1]");
        assert_eq!(host_only("localhost"), "localhost");
    }
}
