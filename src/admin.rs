//! The admin listener: `/health`, `/ready`, `/config`, `/upstreams`, `/metrics`, and `/cache`
//! (`GET`: the store's size; `DELETE ?route=<name>[&path=<path>]`: purge). It binds its own
//! address and is never mounted on the public port.

use crate::observability::metrics;
use crate::runtime::live::Live;
use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde::Serialize;
use std::sync::Arc;

pub struct Admin {
    /// The serving generation: `/ready` answers for the upstreams being served now.
    live: Arc<Live>,
}

#[derive(Serialize)]
struct UpstreamReadiness<'a> {
    name: &'a str,
    healthy: usize,
    total: usize,
}

#[derive(Serialize)]
struct Readiness<'a> {
    ready: bool,
    /// Which process answered: lets operators (and the upgrade tests) see a hand-off happen.
    pid: u32,
    /// Which config is served: 1 at start, +1 per in-place reload, and the file's SHA-256.
    config_generation: u64,
    config_sha256: &'a str,
    upstreams: Vec<UpstreamReadiness<'a>>,
}

impl Admin {
    pub fn new(live: Arc<Live>) -> Admin {
        Admin { live }
    }

    /// Ready = the first health round ran and every upstream has a healthy backend.
    pub fn readiness(&self) -> (bool, Vec<u8>) {
        let generation = self.live.current();
        let pools = &generation.pools;
        let upstreams: Vec<UpstreamReadiness<'_>> = pools
            .iter()
            .map(|p| {
                let h = p.health();
                UpstreamReadiness {
                    name: &p.name,
                    healthy: h.healthy,
                    total: h.total,
                }
            })
            .collect();
        let ready = pools.warmed_up() && upstreams.iter().all(|u| u.healthy > 0);
        let body = serde_json::to_vec(&Readiness {
            ready,
            pid: std::process::id(),
            config_generation: generation.number,
            config_sha256: &generation.hash,
            upstreams,
        })
        .unwrap_or_default();
        (ready, body)
    }

    fn refresh_backend_gauges(&self) {
        let generation = self.live.current();
        for pool in generation.pools.iter() {
            pool.publish_health_gauges();
        }
        if let Some(store) = &generation.gateway.cache {
            store.publish();
        }
    }

    /// `/cache`: `GET` the store's size; `DELETE ?route=<name>` removes the route's responses,
    /// `&path=<path>` only those of one (normalised) path, whatever their query.
    fn cache(&self, method: &http::Method, query: Option<&str>) -> Response<Vec<u8>> {
        let generation = self.live.current();
        let Some(store) = &generation.gateway.cache else {
            return error(404, "not_found", "no server.cache is configured");
        };
        if method != http::Method::DELETE {
            store.publish();
            let body = serde_json::json!({
                "bytes": store.weighted_size(),
                "max_size": store.max_size,
            });
            return reply(200, "application/json", body.to_string().into_bytes());
        }
        let (mut route, mut path) = (None, None);
        for (k, v) in query
            .unwrap_or("")
            .split('&')
            .filter_map(|p| p.split_once('='))
        {
            let v = percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned();
            match k {
                "route" => route = Some(v),
                "path" => path = Some(v),
                _ => {}
            }
        }
        let Some(route) = route else {
            return error(
                400,
                "bad_request",
                "DELETE /cache?route=<name>[&path=<path>]",
            );
        };
        if !generation.config.routes.iter().any(|r| r.name == route) {
            return error(404, "not_found", "no route of that name");
        }
        let removed = store.purge(&route, path.as_deref());
        let body = serde_json::json!({"route": route, "path": path, "removed": removed});
        reply(200, "application/json", body.to_string().into_bytes())
    }
}

/// The admin endpoints and the methods each answers. Everything is read-only except purging
/// `/cache`; a `POST` or `PUT` that got `200` would tell a script (or an attacker probing for
/// write access) that something happened.
const ENDPOINTS: [(&str, &str); 6] = [
    ("/health", "GET, HEAD"),
    ("/ready", "GET, HEAD"),
    ("/config", "GET, HEAD"),
    ("/upstreams", "GET, HEAD"),
    ("/metrics", "GET, HEAD"),
    ("/cache", "GET, HEAD, DELETE"),
];

/// `None` when `method` may be used on `path` (or the path is no endpoint: that is a 404),
/// else the `Allow` value of the 405.
fn refused_method(path: &str, method: &http::Method) -> Option<&'static str> {
    let (_, allow) = ENDPOINTS.iter().find(|(p, _)| *p == path)?;
    (!allow.split(", ").any(|m| m == method.as_str())).then_some(*allow)
}

fn error(status: u16, code: &str, message: &str) -> Response<Vec<u8>> {
    let body = serde_json::json!({"error": code, "message": message});
    reply(status, "application/json", body.to_string().into_bytes())
}

/// The effective config (defaults filled in) as JSON, without what must not leave the box:
/// a Redis URL's password and the API keys' digests (a digest of a short key can be reversed by
/// brute force), and the values of `tracing.otlp.headers` (collector credentials). Key files are
/// shown by path only; secrets in environment variables by name.
pub fn redacted(config: &crate::config::Config) -> serde_json::Value {
    let mut v = serde_json::to_value(config).unwrap_or_default();
    if let Some(url) = v.pointer_mut("/redis/url") {
        if let Some(text) = url.as_str() {
            *url = serde_json::Value::String(redact_url_password(text));
        }
    }
    if let Some(sets) = v
        .pointer_mut("/auth/api_keys")
        .and_then(|s| s.as_object_mut())
    {
        for set in sets.values_mut() {
            let keys = set.get_mut("keys").and_then(|k| k.as_array_mut());
            for key in keys.into_iter().flatten() {
                if let Some(digest) = key.get_mut("sha256") {
                    *digest = serde_json::Value::String("<redacted>".into());
                }
            }
        }
    }
    let hide_values = |headers: Option<&mut serde_json::Value>| {
        for value in headers
            .and_then(|h| h.as_object_mut())
            .into_iter()
            .flat_map(|h| h.values_mut())
        {
            *value = serde_json::Value::String("<redacted>".into());
        }
    };
    hide_values(v.pointer_mut("/tracing/otlp/headers"));
    // Headers the gateway adds upstream are how a backend's own credentials are configured
    // (`Authorization: Basic ...`): names are shown, values are not.
    for route in v
        .pointer_mut("/routes")
        .and_then(|r| r.as_array_mut())
        .into_iter()
        .flatten()
    {
        for op in ["add", "set"] {
            hide_values(route.pointer_mut(&format!("/request_headers/{op}")));
        }
    }
    v
}

/// `redis://user:secret@host` → `redis://user:<redacted>@host`.
fn redact_url_password(url: &str) -> String {
    // `redis+unix:///run/redis.sock?pass=...`: redis-rs reads a password from the query too.
    let url = match url.split_once('?') {
        Some((base, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if matches!(k, "pass" | "password") => format!("{k}=<redacted>"),
                    _ => p.to_string(),
                })
                .collect();
            format!("{base}?{}", query.join("&"))
        }
        None => url.to_string(),
    };
    let url = url.as_str();
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_string();
    };
    let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
    format!("{scheme}://{user}:<redacted>@{host}")
}

fn reply(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("Content-Type", content_type)
        .header("Content-Length", body.len())
        .header("Cache-Control", "no-store")
        .body(body)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let path = req.uri.path();
        if let Some(allow) = refused_method(path, &req.method) {
            let mut refusal = error(
                405,
                "method_not_allowed",
                &format!("{path} answers {allow}"),
            );
            if let Ok(v) = http::HeaderValue::from_str(allow) {
                refusal.headers_mut().insert(http::header::ALLOW, v);
            }
            return refusal;
        }
        match path {
            "/cache" => self.cache(&req.method, req.uri.query()),
            "/health" => reply(200, "application/json", br#"{"status":"ok"}"#.to_vec()),
            "/ready" => {
                let (ready, body) = self.readiness();
                reply(if ready { 200 } else { 503 }, "application/json", body)
            }
            "/config" => {
                let generation = self.live.current();
                let body = serde_json::json!({
                    "config_generation": generation.number,
                    "config_sha256": generation.hash,
                    "config": redacted(&generation.config),
                });
                reply(200, "application/json", serde_json::to_vec(&body).unwrap_or_default())
            }
            "/upstreams" => {
                let generation = self.live.current();
                let body = serde_json::json!({
                    "config_generation": generation.number,
                    "upstreams": generation.pools.iter().map(|p| p.status()).collect::<Vec<_>>(),
                });
                reply(200, "application/json", serde_json::to_vec(&body).unwrap_or_default())
            }
            "/metrics" => {
                self.refresh_backend_gauges();
                reply(200, "text/plain; version=0.0.4", metrics::render())
            }
            _ => reply(
                404,
                "application/json",
                br#"{"error":"not_found","message":"admin endpoints: /health /ready /config /upstreams /metrics /cache"}"#
                    .to_vec(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_cache_takes_delete_and_nothing_takes_post() {
        use http::Method;
        assert_eq!(refused_method("/health", &Method::GET), None);
        assert_eq!(refused_method("/metrics", &Method::HEAD), None);
        assert_eq!(refused_method("/cache", &Method::DELETE), None);
        assert_eq!(refused_method("/config", &Method::POST), Some("GET, HEAD"));
        assert_eq!(refused_method("/ready", &Method::DELETE), Some("GET, HEAD"));
        assert_eq!(
            refused_method("/cache", &Method::PUT),
            Some("GET, HEAD, DELETE")
        );
        assert_eq!(refused_method("/nowhere", &Method::POST), None, "a 404");
    }

    #[test]
    fn secrets_do_not_leave_in_config() {
        assert_eq!(
            redact_url_password("redis://:hunter2@10.0.0.5:6379/0"),
            "redis://:<redacted>@10.0.0.5:6379/0"
        );
        assert_eq!(
            redact_url_password("rediss://app:hunter2@r.example:6380"),
            "rediss://app:<redacted>@r.example:6380"
        );
        assert_eq!(
            redact_url_password("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(
            redact_url_password("redis+unix:///run/redis.sock?db=1&pass=hunter2"),
            "redis+unix:///run/redis.sock?db=1&pass=<redacted>"
        );
        let with_headers = crate::config::Config::load_str(
            "upstreams:\n  u: {backends: [\"127.0.0.1:1\"]}\n\
             routes:\n  - {name: r, upstream: u, request_headers: {add: {Authorization: Basic c2VjcmV0}}}\n",
        )
        .expect("valid");
        let shown = redacted(&with_headers).to_string();
        assert!(!shown.contains("c2VjcmV0"), "{shown}");
        assert!(shown.contains("Authorization"), "{shown}");
        let config = crate::config::Config::load_str(
            "upstreams:\n  u: {backends: [\"127.0.0.1:1\"]}\n\
             redis: {url: \"redis://:hunter2@127.0.0.1:6379\"}\n\
             tracing: {otlp: {endpoint: \"http://127.0.0.1:4318\", headers: {x-api-key: sesame}}}\n\
             auth:\n  api_keys:\n    p:\n      keys: [{id: acme, sha256: \"2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae\"}]\n\
             routes:\n  - {name: r, upstream: u, auth: {api_key: p}}\n",
        )
        .expect("valid config");
        let text = redacted(&config).to_string();
        assert!(
            !text.contains("hunter2") && !text.contains("2c26b46b") && !text.contains("sesame"),
            "{text}"
        );
        assert!(text.contains("\"id\":\"acme\""), "{text}");
        assert!(text.contains("\"x-api-key\":\"<redacted>\""), "{text}");
        assert!(
            text.contains("\"max_request_body\""),
            "defaults are shown: {text}"
        );
    }
}
