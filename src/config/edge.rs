//! The per-route edge policies of DESIGN.md "Edge policies (per route)": IP rules, CORS,
//! compression (plain data), and the checks a file can fail on its own, with YAML paths.
//! The request-time decisions live in `crate::edge`.

use super::{HumanDuration, Problem};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// `ip: {allow, deny}` on the resolved client address; deny wins.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IpRulesConfig {
    /// Empty: every address not denied is allowed.
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
}

/// `cors`: the Fetch standard's CORS protocol answered by the gateway.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// `https://app.example.com`, `https://*.example.com` or `*`.
    pub allow_origins: Vec<String>,
    /// Methods a preflight may ask for; default the CORS-safelisted GET, HEAD, POST.
    #[serde(default = "default_cors_methods")]
    pub allow_methods: Vec<String>,
    /// Request headers a preflight may ask for (`*`: any).
    #[serde(default)]
    pub allow_headers: Vec<String>,
    /// Response headers scripts may read beyond the safelisted ones.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    #[serde(default)]
    pub allow_credentials: bool,
    /// How long a browser may cache a preflight answer (`Access-Control-Max-Age`).
    #[serde(default)]
    pub max_age: Option<HumanDuration>,
}

fn default_cors_methods() -> Vec<String> {
    ["GET", "HEAD", "POST"].map(String::from).to_vec()
}

/// `compress`: which responses are compressed (zstd, br or gzip by the client's preference).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CompressConfig {
    /// Media types (`application/json`) or whole families (`text/*`).
    pub types: Vec<String>,
    /// Bodies declared smaller than this are sent as they are.
    #[serde(default = "default_min_size")]
    pub min_size: super::ByteSize,
}

fn default_min_size() -> super::ByteSize {
    super::ByteSize(1024)
}

/// `cache`: GET/HEAD responses of the route kept in the shared `server.cache` store
/// (RFC 9111 as a shared cache: the upstream's `Cache-Control`/`Expires` win over `ttl`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// How long a response stays fresh when the upstream says nothing (no `s-maxage`,
    /// `max-age` or `Expires`).
    pub ttl: HumanDuration,
    /// Request headers whose values split entries, on top of the response's own `Vary`.
    #[serde(default)]
    pub vary: Vec<String>,
    /// Larger bodies (after JSON stripping) are sent but not stored; default 1MiB, or
    /// `server.cache.max_size` if that is smaller.
    #[serde(default)]
    pub max_object: Option<super::ByteSize>,
}

/// The default `cache.max_object`.
pub const DEFAULT_MAX_OBJECT: u64 = 1024 * 1024;

/// `server.cache`: the one bounded in-memory store every route's `cache` shares.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheStoreConfig {
    /// Bytes of stored responses (bodies, heads and keys) the store keeps at most.
    pub max_size: super::ByteSize,
    /// How long concurrent misses of one key wait for the one request that fills it, before
    /// they go upstream themselves.
    #[serde(default = "default_lock_timeout")]
    pub lock_timeout: HumanDuration,
}

fn default_lock_timeout() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(5))
}

impl CacheConfig {
    /// The effective `max_object` under a store of `max_size` bytes.
    pub fn max_object(&self, max_size: u64) -> u64 {
        self.max_object
            .map_or(DEFAULT_MAX_OBJECT.min(max_size), |b| b.0)
    }
}

/// An `allow`/`deny` entry: a CIDR (`10.0.0.0/8`, `2001:db8::/32`) or a bare address.
pub fn parse_net(s: &str) -> Option<IpNet> {
    let s = s.trim();
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

/// A configured origin: `*`, or `scheme://host[:port]` whose host may start with `*.`.
/// Lowercase and without path, since browsers serialise origins that way; `null` is refused
/// because sandboxed documents and `file:` pages of any site send it.
pub fn origin_problem(origin: &str) -> Option<String> {
    if origin == "*" {
        return None;
    }
    if origin == "null" {
        return Some(
            "\"null\" is sent by any sandboxed or file: page; it cannot be trusted".into(),
        );
    }
    let Some((scheme, rest)) = origin.split_once("://") else {
        return Some(format!(
            "invalid origin {origin:?}; write https://app.example.com or https://*.example.com"
        ));
    };
    let host = rest.rsplit_once(':').map_or(rest, |(h, port)| {
        if port.parse::<u16>().is_ok() {
            h
        } else {
            "\u{0}"
        }
    });
    let valid_host = super::valid_host_pattern(host);
    let lower = origin.bytes().all(|b| !b.is_ascii_uppercase());
    if !matches!(scheme, "http" | "https") || !valid_host || !lower {
        return Some(format!(
            "invalid origin {origin:?}; write scheme://host[:port] in lowercase, no path (https://*.example.com)"
        ));
    }
    None
}

/// Every problem of a route's edge policies (`routes[i].cors...`); `store` is `server.cache`.
pub(super) fn check(
    at: &str,
    route: &super::RouteConfig,
    store: Option<&CacheStoreConfig>,
    out: &mut Vec<Problem>,
) {
    if let Some(cache) = &route.cache {
        check_cache(&format!("{at}.cache"), cache, store, out);
    }
    if let Some(ip) = &route.ip {
        for (field, list) in [("allow", &ip.allow), ("deny", &ip.deny)] {
            for (j, entry) in list.iter().enumerate() {
                if parse_net(entry).is_none() {
                    out.push(Problem::new(
                        format!("{at}.ip.{field}[{j}]"),
                        format!("invalid CIDR {entry:?}; write e.g. 10.0.0.0/8, 2001:db8::/32 or 192.168.1.7"),
                    ));
                }
            }
        }
        if ip.allow.is_empty() && ip.deny.is_empty() {
            out.push(Problem::new(
                format!("{at}.ip"),
                "needs allow or deny entries",
            ));
        }
    }
    if let Some(cors) = &route.cors {
        check_cors(&format!("{at}.cors"), cors, out);
    }
    if let Some(c) = &route.compress {
        if c.types.is_empty() {
            out.push(Problem::new(
                format!("{at}.compress.types"),
                "list at least one media type",
            ));
        }
        for (j, t) in c.types.iter().enumerate() {
            let valid = t.split_once('/').is_some_and(|(family, sub)| {
                let token = |s: &str| {
                    !s.is_empty()
                        && s.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
                };
                token(family) && (sub == "*" || token(sub))
            });
            if !valid {
                out.push(Problem::new(
                    format!("{at}.compress.types[{j}]"),
                    format!("invalid media type {t:?}; write application/json or text/*"),
                ));
            }
        }
    }
    if route.max_request_body.is_some_and(|b| b.0 == 0) {
        out.push(Problem::new(
            format!("{at}.max_request_body"),
            "must be more than 0 (to refuse bodies, restrict the route's methods)",
        ));
    }
    if route.hide_credentials && route.auth.is_none() {
        out.push(Problem::new(
            format!("{at}.hide_credentials"),
            "needs auth on the route: there is no credential to hide",
        ));
    }
}

fn check_cache(
    at: &str,
    cache: &CacheConfig,
    store: Option<&CacheStoreConfig>,
    out: &mut Vec<Problem>,
) {
    if cache.ttl.0.is_zero() {
        out.push(Problem::new(
            format!("{at}.ttl"),
            "must be more than 0 (to store nothing, remove `cache`)",
        ));
    }
    for (j, h) in cache.vary.iter().enumerate() {
        if h == "*" || http::HeaderName::from_bytes(h.as_bytes()).is_err() {
            out.push(Problem::new(
                format!("{at}.vary[{j}]"),
                format!("invalid header name {h:?}; list request headers such as Accept"),
            ));
        }
    }
    if cache.max_object.is_some_and(|b| b.0 == 0) {
        out.push(Problem::new(
            format!("{at}.max_object"),
            "must be more than 0",
        ));
    }
    match store {
        None => out.push(Problem::new(
            at.to_string(),
            "needs the shared store: add `server.cache: {max_size: 64MiB}` (its memory bound)",
        )),
        Some(store) => {
            if let Some(max) = cache.max_object.filter(|b| b.0 > store.max_size.0) {
                out.push(Problem::new(
                    format!("{at}.max_object"),
                    format!(
                        "{} is more than server.cache.max_size ({}); such an object could never be stored",
                        max.0, store.max_size.0
                    ),
                ));
            }
        }
    }
}

/// `server.cache` on its own.
pub(super) fn check_store(store: &CacheStoreConfig, out: &mut Vec<Problem>) {
    if store.max_size.0 == 0 {
        out.push(Problem::new(
            "server.cache.max_size",
            "must be more than 0 (to cache nothing, remove `cache` from the routes)",
        ));
    }
    if store.lock_timeout.0.is_zero() {
        out.push(Problem::new(
            "server.cache.lock_timeout",
            "must be more than 0",
        ));
    }
}

fn check_cors(at: &str, cors: &CorsConfig, out: &mut Vec<Problem>) {
    if cors.allow_origins.is_empty() {
        out.push(Problem::new(
            format!("{at}.allow_origins"),
            "list at least one origin",
        ));
    }
    for (j, origin) in cors.allow_origins.iter().enumerate() {
        if let Some(why) = origin_problem(origin) {
            out.push(Problem::new(format!("{at}.allow_origins[{j}]"), why));
        }
        if origin == "*" && cors.allow_credentials {
            out.push(Problem::new(
                format!("{at}.allow_origins[{j}]"),
                "\"*\" cannot be combined with allow_credentials: true (browsers refuse it; list the origins)",
            ));
        }
    }
    for (j, m) in cors.allow_methods.iter().enumerate() {
        if !super::validate::METHODS.contains(&m.as_str()) {
            out.push(Problem::new(
                format!("{at}.allow_methods[{j}]"),
                format!("unknown HTTP method {m:?}; methods are case-sensitive (GET, PUT, ...)"),
            ));
        }
    }
    for (field, list) in [
        ("allow_headers", &cors.allow_headers),
        ("expose_headers", &cors.expose_headers),
    ] {
        for (j, h) in list.iter().enumerate() {
            if h != "*" && http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                out.push(Problem::new(
                    format!("{at}.{field}[{j}]"),
                    format!("invalid header name {h:?}"),
                ));
            }
        }
    }
    if cors.max_age.is_some_and(|d| d.0.as_secs() == 0) {
        out.push(Problem::new(format!("{at}.max_age"), "must be at least 1s"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_must_be_serialised_origins() {
        for ok in [
            "*",
            "https://app.example.com",
            "https://*.example.com",
            "http://localhost:3000",
        ] {
            assert_eq!(origin_problem(ok), None, "{ok}");
        }
        for bad in [
            "null",
            "app.example.com",
            "https://app.example.com/",
            "https://App.example.com",
            "ftp://x.example.com",
            "https://",
            "https://x.example.com:99999",
            "https://*",
        ] {
            assert!(origin_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn nets_are_cidrs_or_addresses() {
        assert!(parse_net("10.0.0.0/8").is_some());
        assert!(parse_net("2001:db8::/32").is_some());
        assert!(parse_net("::1").is_some());
        assert!(parse_net("10.0.0.0/33").is_none());
        assert!(parse_net("ten").is_none());
    }
}
