//! `cors`: the CORS protocol of the Fetch standard (§3.2), answered by the gateway.
//!
//! A *preflight* (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is answered
//! here, before rate limits and auth, and never forwarded: browsers send it without
//! credentials, so an authenticated route could otherwise never be called cross-origin. An
//! *actual* response gets `Access-Control-Allow-Origin` (+ `-Credentials`, `-Expose-Headers`)
//! when its origin is allowed. A refused origin, method or header gets no
//! `Access-Control-Allow-*` at all: the browser then blocks the script, which is the whole of
//! what CORS can do. CORS is not access control: the request itself still meets the route's
//! auth and limits.

use crate::config::edge::CorsConfig;
use http::HeaderValue;

/// One `allow_origins` entry, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
enum OriginPattern {
    /// `https://app.example.com` (compared ASCII case-insensitively).
    Exact(String),
    /// `https://*.example.com[:port]`: any deeper name under `.example.com`, never the apex.
    Subdomains {
        scheme: String,
        /// `.example.com`
        suffix: String,
        port: Option<String>,
    },
}

/// A route's compiled CORS policy.
#[derive(Debug, Clone)]
pub struct Cors {
    origins: Vec<OriginPattern>,
    /// `*` listed: every origin; answered with a literal `*` (credentials are refused by
    /// `check` in that case).
    any_origin: bool,
    methods: Vec<String>,
    methods_value: String,
    /// Lowercase names.
    headers: Vec<String>,
    any_header: bool,
    headers_value: String,
    expose_value: Option<String>,
    credentials: bool,
    max_age: Option<String>,
}

/// The headers of one CORS answer, in order.
pub type Headers = Vec<(&'static str, String)>;

const PREFLIGHT_VARY: &str =
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers";

impl Cors {
    /// Compile a checked `cors` section (`config::edge::check` refused what cannot work).
    pub fn new(cfg: &CorsConfig) -> Cors {
        let mut origins = Vec::new();
        let mut any_origin = false;
        for o in &cfg.allow_origins {
            if o == "*" {
                any_origin = true;
                continue;
            }
            let Some((scheme, rest)) = o.split_once("://") else {
                continue;
            };
            let (host, port) = split_port(rest);
            origins.push(match host.strip_prefix('*') {
                Some(suffix) => OriginPattern::Subdomains {
                    scheme: scheme.to_ascii_lowercase(),
                    suffix: suffix.to_ascii_lowercase(),
                    port: port.map(str::to_owned),
                },
                None => OriginPattern::Exact(o.to_ascii_lowercase()),
            });
        }
        let any_header = cfg.allow_headers.iter().any(|h| h == "*");
        let headers: Vec<String> = cfg
            .allow_headers
            .iter()
            .filter(|h| *h != "*")
            .map(|h| h.to_ascii_lowercase())
            .collect();
        Cors {
            origins,
            any_origin,
            methods_value: cfg.allow_methods.join(", "),
            methods: cfg.allow_methods.clone(),
            headers_value: cfg.allow_headers.join(", "),
            headers,
            any_header,
            expose_value: (!cfg.expose_headers.is_empty()).then(|| cfg.expose_headers.join(", ")),
            credentials: cfg.allow_credentials,
            max_age: cfg.max_age.map(|d| d.0.as_secs().to_string()),
        }
    }

    /// Whether scripts of `origin` (the request's `Origin` value) may read responses.
    pub fn allows_origin(&self, origin: &str) -> bool {
        if self.any_origin {
            return true;
        }
        let Some(origin) = Origin::parse(origin) else {
            return false;
        };
        self.origins.iter().any(|p| match p {
            OriginPattern::Exact(o) => o.eq_ignore_ascii_case(origin.text),
            OriginPattern::Subdomains {
                scheme,
                suffix,
                port,
            } => {
                origin.scheme.eq_ignore_ascii_case(scheme)
                    && origin.port == port.as_deref()
                    && origin.host.len() > suffix.len()
                    && origin
                        .host
                        .is_char_boundary(origin.host.len() - suffix.len())
                    && origin.host[origin.host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        })
    }

    /// `Access-Control-Allow-Origin` (and `-Credentials`) for an allowed origin.
    fn allow_origin(&self, origin: &str, out: &mut Headers) {
        let value = if self.any_origin && !self.credentials {
            "*".to_owned()
        } else {
            origin.to_owned()
        };
        out.push(("Access-Control-Allow-Origin", value));
        if self.credentials {
            out.push(("Access-Control-Allow-Credentials", "true".to_owned()));
        }
    }

    /// Whether the answer depends on `Origin` (shared caches must then key on it).
    fn varies(&self) -> bool {
        !self.any_origin || self.credentials
    }

    /// The headers of the gateway's `204` answer to a preflight. A refused origin, method or
    /// request header yields no `Access-Control-Allow-*` header, only `Vary`.
    pub fn preflight(&self, origin: &str, method: &str, request_headers: Option<&str>) -> Headers {
        let mut out = vec![("Vary", PREFLIGHT_VARY.to_owned())];
        if !self.allows_origin(origin) || !self.methods.iter().any(|m| m == method) {
            return out;
        }
        let requested = request_headers.unwrap_or("");
        let names = requested
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty());
        let mut any_requested = false;
        for name in names {
            any_requested = true;
            if !self.any_header && !self.headers.iter().any(|h| h.eq_ignore_ascii_case(name)) {
                return out;
            }
        }
        self.allow_origin(origin, &mut out);
        out.push(("Access-Control-Allow-Methods", self.methods_value.clone()));
        // `*` is literal for credentialed requests and never covers `Authorization` (Fetch
        // §3.2.3), so a wildcard policy echoes what was asked for instead.
        if self.any_header && any_requested {
            out.push(("Access-Control-Allow-Headers", requested.trim().to_owned()));
        } else if !self.headers.is_empty() {
            out.push(("Access-Control-Allow-Headers", self.headers_value.clone()));
        }
        if let Some(age) = &self.max_age {
            out.push(("Access-Control-Max-Age", age.clone()));
        }
        out
    }

    /// The headers an actual (non-preflight) response gets; `Vary: Origin` even when the
    /// origin is refused or absent, since the answer would differ for another origin.
    pub fn actual(&self, origin: Option<&str>) -> Headers {
        let mut out = Vec::with_capacity(4);
        if self.varies() {
            out.push(("Vary", "Origin".to_owned()));
        }
        if let Some(origin) = origin.filter(|o| self.allows_origin(o)) {
            self.allow_origin(origin, &mut out);
            if let Some(expose) = &self.expose_value {
                out.push(("Access-Control-Expose-Headers", expose.clone()));
            }
        }
        out
    }
}

/// `Origin` + `Access-Control-Request-Method` on an `OPTIONS`: a CORS preflight (Fetch §3.2.2).
/// Returns the origin and the requested method.
pub fn preflight_of(req: &pingora::http::RequestHeader) -> Option<(&str, &str)> {
    if req.method != http::Method::OPTIONS {
        return None;
    }
    let one = |name: &str| -> Option<&str> {
        let mut all = req.headers.get_all(name).iter();
        let v = all.next()?;
        all.next().is_none().then_some(())?;
        v.to_str().ok().map(str::trim).filter(|s| !s.is_empty())
    };
    Some((one("origin")?, one("access-control-request-method")?))
}

/// The single `Origin` of a request, if it has exactly one readable value.
pub fn origin_of(req: &pingora::http::RequestHeader) -> Option<&str> {
    let mut all = req.headers.get_all(http::header::ORIGIN).iter();
    let v = all.next()?;
    if all.next().is_some() {
        return None;
    }
    v.to_str().ok()
}

/// A serialised origin as browsers send it: `scheme://host[:port]`, nothing else.
struct Origin<'a> {
    text: &'a str,
    scheme: &'a str,
    host: &'a str,
    port: Option<&'a str>,
}

impl<'a> Origin<'a> {
    fn parse(text: &'a str) -> Option<Origin<'a>> {
        let (scheme, rest) = text.split_once("://")?;
        if rest.is_empty()
            || rest
                .bytes()
                .any(|b| matches!(b, b'/' | b'@' | b'?' | b'#' | b'\\') || b <= b' ')
        {
            return None;
        }
        let (host, port) = split_port(rest);
        Some(Origin {
            text,
            scheme,
            host,
            port,
        })
    }
}

/// `host:port` → (`host`, `Some(port)`); a bracketed IPv6 host keeps its colons.
fn split_port(authority: &str) -> (&str, Option<&str>) {
    match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') && port.bytes().all(|b| b.is_ascii_digit()) => {
            (host, Some(port))
        }
        _ => (authority, None),
    }
}

/// An upstream response on a `cors` route: the gateway owns the `Access-Control-*` answer, so
/// the upstream's are dropped (two `Allow-Origin` values make browsers refuse), then the
/// policy's are set.
pub fn on_actual_response(
    cors: &Cors,
    req: &pingora::http::RequestHeader,
    resp: &mut pingora::http::ResponseHeader,
) -> pingora::Result<()> {
    for name in [
        "access-control-allow-origin",
        "access-control-allow-credentials",
        "access-control-expose-headers",
        "access-control-allow-methods",
        "access-control-allow-headers",
        "access-control-max-age",
    ] {
        resp.remove_header(name);
    }
    for (name, value) in cors.actual(origin_of(req)) {
        if name == "Vary" {
            add_vary(resp, &value)?;
        } else {
            resp.insert_header(name, value)?;
        }
    }
    Ok(())
}

/// Append `token` to the response's `Vary` unless it is already there (or `Vary: *`).
pub fn add_vary(resp: &mut pingora::http::ResponseHeader, token: &str) -> pingora::Result<()> {
    let present = resp.headers.get_all(http::header::VARY).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .map(str::trim)
                .any(|t| t == "*" || t.eq_ignore_ascii_case(token))
        })
    });
    if !present {
        resp.append_header(
            http::header::VARY,
            HeaderValue::from_str(token).map_err(|_| {
                pingora::Error::explain(pingora::ErrorType::InternalError, "invalid Vary token")
            })?,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(yaml: &str) -> Cors {
        Cors::new(&serde_yaml::from_str::<CorsConfig>(yaml).expect("cors yaml"))
    }

    fn get<'a>(h: &'a Headers, name: &str) -> Option<&'a str> {
        h.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    fn allows_any(h: &Headers) -> bool {
        h.iter()
            .any(|(n, _)| n.starts_with("Access-Control-Allow-"))
    }

    const ORDERS: &str = "{allow_origins: [\"https://app.example.com\", \"https://*.example.com\"], allow_methods: [GET, POST, PUT], allow_headers: [Authorization, Content-Type], expose_headers: [X-Request-Id], allow_credentials: true, max_age: 10m}";

    #[test]
    fn exact_and_subdomain_origins() {
        let c = cors(ORDERS);
        for ok in [
            "https://app.example.com",
            "https://a.example.com",
            "https://a.b.example.com",
            "https://APP.example.com",
        ] {
            assert!(c.allows_origin(ok), "{ok}");
        }
        for bad in [
            "https://example.com",
            "http://a.example.com",
            "https://evil-example.com",
            "https://a.example.com.evil.net",
            "https://a.example.com:8443",
            "https://a.example.com/",
            "https://user@a.example.com",
            "null",
            "",
        ] {
            assert!(!c.allows_origin(bad), "{bad}");
        }
        let ported = cors("{allow_origins: [\"http://*.local.test:3000\"]}");
        assert!(ported.allows_origin("http://ui.local.test:3000"));
        assert!(!ported.allows_origin("http://ui.local.test"));
    }

    #[test]
    fn allowed_preflight_gets_the_whole_answer() {
        let h = cors(ORDERS).preflight(
            "https://a.example.com",
            "PUT",
            Some("authorization, content-type"),
        );
        assert_eq!(
            get(&h, "Access-Control-Allow-Origin"),
            Some("https://a.example.com")
        );
        assert_eq!(get(&h, "Access-Control-Allow-Credentials"), Some("true"));
        assert_eq!(
            get(&h, "Access-Control-Allow-Methods"),
            Some("GET, POST, PUT")
        );
        assert_eq!(
            get(&h, "Access-Control-Allow-Headers"),
            Some("Authorization, Content-Type")
        );
        assert_eq!(get(&h, "Access-Control-Max-Age"), Some("600"));
        assert!(get(&h, "Vary").is_some_and(|v| v.starts_with("Origin")));
    }

    #[test]
    fn refused_origin_method_or_header_gets_no_allow_headers() {
        let c = cors(ORDERS);
        assert!(!allows_any(&c.preflight("https://evil.net", "GET", None)));
        assert!(!allows_any(&c.preflight(
            "https://a.example.com",
            "DELETE",
            None
        )));
        assert!(
            !allows_any(&c.preflight("https://a.example.com", "put", None)),
            "methods are case-sensitive"
        );
        assert!(!allows_any(&c.preflight(
            "https://a.example.com",
            "GET",
            Some("x-secret")
        )));
        assert!(allows_any(&c.preflight(
            "https://a.example.com",
            "GET",
            Some("")
        )));
    }

    #[test]
    fn wildcard_origin_without_credentials_is_a_literal_star() {
        let c = cors("{allow_origins: [\"*\"], allow_headers: [\"*\"]}");
        let h = c.actual(Some("https://anyone.net"));
        assert_eq!(get(&h, "Access-Control-Allow-Origin"), Some("*"));
        assert_eq!(get(&h, "Vary"), None, "a literal * does not vary");
        let p = c.preflight("https://anyone.net", "GET", Some("Authorization, X-Trace"));
        assert_eq!(
            get(&p, "Access-Control-Allow-Headers"),
            Some("Authorization, X-Trace")
        );
    }

    #[test]
    fn actual_responses_expose_and_always_vary() {
        let c = cors(ORDERS);
        let h = c.actual(Some("https://app.example.com"));
        assert_eq!(
            get(&h, "Access-Control-Allow-Origin"),
            Some("https://app.example.com")
        );
        assert_eq!(
            get(&h, "Access-Control-Expose-Headers"),
            Some("X-Request-Id")
        );
        assert_eq!(get(&h, "Vary"), Some("Origin"));
        let refused = c.actual(Some("https://evil.net"));
        assert_eq!(refused, vec![("Vary", "Origin".to_owned())]);
        assert_eq!(c.actual(None), vec![("Vary", "Origin".to_owned())]);
    }

    #[test]
    fn preflights_are_options_with_origin_and_method() {
        let mut r = pingora::http::RequestHeader::build("OPTIONS", b"/", None).unwrap();
        assert!(preflight_of(&r).is_none());
        r.insert_header("Origin", "https://a.example.com").unwrap();
        assert!(preflight_of(&r).is_none());
        r.insert_header("Access-Control-Request-Method", "PUT")
            .unwrap();
        assert_eq!(preflight_of(&r), Some(("https://a.example.com", "PUT")));
        r.append_header("Origin", "https://b.example.com").unwrap();
        assert!(
            preflight_of(&r).is_none(),
            "two origins are no preflight we answer"
        );
    }

    #[test]
    fn vary_is_appended_once() {
        let mut resp = pingora::http::ResponseHeader::build(200, None).unwrap();
        resp.insert_header("Vary", "Accept").unwrap();
        add_vary(&mut resp, "Origin").unwrap();
        add_vary(&mut resp, "origin").unwrap();
        let all: Vec<_> = resp
            .headers
            .get_all("vary")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        assert_eq!(all, ["Accept", "Origin"]);
    }
}
