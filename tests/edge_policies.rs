//! Edge policies through the real binary (DESIGN.md "Edge policies (per route)"): `ip` rules,
//! `cors`, per-route `max_request_body` (HTTP/1.1 and h2c) and `hide_credentials`, with
//! backends that count what reaches them, and `check` refusing what cannot work.

mod common;

use common::metrics::{self, metrics_text};
use common::tokens::{bearer, hs256_jwt, sha256_hex};
use common::*;
use serde_json::json;
use std::time::Duration;

const API_KEY: &str = "edge-test-key-0123456789";
const JWT_SECRET: &str = "tollgate-edge-tests-hs256-secret-0123456789";
const SECRET_ENV: &str = "TOLLGATE_EDGE_TEST_JWT_SECRET";

/// `auth:` with an API key set `k` (header `X-API-Key`) and a JWT provider `j` that also reads
/// the `tok` cookie and the `access_token` query parameter.
fn auth_yaml() -> String {
    // Every test sets the same value; the gateway child inherits it.
    std::env::set_var(SECRET_ENV, JWT_SECRET);
    format!(
        "auth:\n  api_keys:\n    k: {{header: X-API-Key, keys: [{{id: acme, sha256: \"{}\"}}]}}\n  jwt:\n    j: {{algorithms: [HS256], secret_env: {SECRET_ENV}, token_cookie: tok, token_query: access_token}}\n",
        sha256_hex(API_KEY)
    )
}

fn jwt() -> String {
    let now = common::tokens::unix_now();
    hs256_jwt(
        JWT_SECRET.as_bytes(),
        &json!({"sub": "alice", "iat": now, "exp": now + 300}),
    )
}

fn xff(ip: &str) -> [(&str, &str); 1] {
    [("X-Forwarded-For", ip)]
}

// ---------------------------------------------------------------------------------------------
// ip
// ---------------------------------------------------------------------------------------------

async fn ip_gateway(b: &Backend) -> Gateway {
    let body = format!(
        "upstreams:\n{}\n{}routes:
  - name: inner
    match: {{path_prefix: /inner}}
    upstream: echo
    ip: {{allow: [\"10.0.0.0/8\", \"2001:db8::/32\"], deny: [\"10.1.2.3\", \"2001:db8:bad::/48\"]}}
  - name: keyed
    match: {{path_prefix: /keyed}}
    upstream: echo
    auth: {{api_key: k}}
    ip: {{deny: [\"192.0.2.0/24\"]}}
",
        upstream_yaml("echo", &[b], &["retries: 0"]),
        auth_yaml()
    );
    Gateway::start_with(&["trusted_proxies: [\"127.0.0.1\"]"], &body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_deny_wins_over_allow_for_ipv4_and_ipv6_and_is_counted() {
    let b = Backend::start("echo").await;
    let gw = ip_gateway(&b).await;
    for ok in ["10.9.9.9", "2001:db8::1", "10.1.2.4"] {
        let r = gw.get_with("/inner", &xff(ok)).await;
        assert_eq!(r.status, 200, "{ok}: {r}");
    }
    for denied in [
        "10.1.2.3",
        "2001:db8:bad::7",
        "192.168.1.1",
        "2001:db9::1",
        "::ffff:10.1.2.3",
    ] {
        let r = gw.get_with("/inner", &xff(denied)).await;
        r.assert_gateway_error(403, "forbidden");
    }
    assert_eq!(b.hits(), 3, "a denied address reached the backend");
    let text = metrics_text(&gw).await;
    assert_eq!(
        metrics::value(&text, "tollgate_ip_denied_total", &[("route", "inner")]),
        Some(5.0),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_rules_run_before_auth() {
    let b = Backend::start("echo").await;
    let gw = ip_gateway(&b).await;
    // Denied and without a key: 403 from the ip rule, not 401.
    gw.get_with("/keyed", &xff("192.0.2.5"))
        .await
        .assert_gateway_error(403, "forbidden");
    // Denied with a valid key: still 403.
    let denied = [("X-Forwarded-For", "192.0.2.5"), ("X-API-Key", API_KEY)];
    gw.get_with("/keyed", &denied)
        .await
        .assert_gateway_error(403, "forbidden");
    // Allowed address: auth decides.
    gw.get_with("/keyed", &xff("198.51.100.1"))
        .await
        .assert_gateway_error(401, "unauthorized");
    let ok = [("X-Forwarded-For", "198.51.100.1"), ("X-API-Key", API_KEY)];
    assert_eq!(gw.get_with("/keyed", &ok).await.status, 200);
    assert_eq!(b.hits(), 1);
    let text = metrics_text(&gw).await;
    assert_eq!(
        metrics::value(
            &text,
            "tollgate_auth_failures_total",
            &[("route", "keyed"), ("reason", "missing")]
        ),
        Some(1.0),
        "only the allowed address reached auth: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_peer_cannot_forward_its_way_past_ip_rules() {
    let b = Backend::start("echo").await;
    let body = format!(
        "upstreams:\n{}\nroutes:\n  - {{name: r, upstream: echo, ip: {{deny: [\"127.0.0.0/8\"]}}, cors: {{allow_origins: [\"*\"]}}}}\n",
        upstream_yaml("echo", &[&b], &["retries: 0"]),
    );
    // No trusted proxies: the loopback peer is the client whatever X-Forwarded-For says.
    let gw = Gateway::start(&body).await;
    gw.get_with("/", &xff("8.8.8.8"))
        .await
        .assert_gateway_error(403, "forbidden");
    // The ip rule comes before the gateway answers a CORS preflight.
    let pf = preflight("https://app.example.com", "GET", "");
    gw.request("OPTIONS", "/", &pf)
        .await
        .assert_gateway_error(403, "forbidden");
    assert_eq!(b.hits(), 0);
}

// ---------------------------------------------------------------------------------------------
// cors
// ---------------------------------------------------------------------------------------------

async fn cors_gateway(b: &Backend) -> Gateway {
    let body = format!(
        "upstreams:\n{}\n{}routes:
  - name: orders
    match: {{path_prefix: /orders, methods: [GET, POST]}}
    upstream: echo
    auth: {{api_key: k}}
    cors: {{allow_origins: [\"https://app.example.com\", \"https://*.example.com\"], allow_methods: [GET, POST, PUT], allow_headers: [Authorization, Content-Type, X-API-Key], expose_headers: [X-Request-Id], allow_credentials: true, max_age: 10m}}
  - name: open
    match: {{path_prefix: /open}}
    upstream: echo
",
        upstream_yaml("echo", &[b], &["retries: 0"]),
        auth_yaml()
    );
    Gateway::start(&body).await
}

fn preflight<'a>(origin: &'a str, method: &'a str, headers: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut h = vec![
        ("Origin", origin),
        ("Access-Control-Request-Method", method),
    ];
    if !headers.is_empty() {
        h.push(("Access-Control-Request-Headers", headers));
    }
    h
}

fn has_allow_headers(r: &Resp) -> bool {
    r.headers
        .iter()
        .any(|(n, _)| n.starts_with("access-control-allow-"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_is_answered_before_auth_and_never_forwarded() {
    let b = Backend::start("echo").await;
    let gw = cors_gateway(&b).await;
    // POST is a route method; PUT is not (the route would 405 it) but CORS allows it; OPTIONS
    // is not a route method either: the preflight is still answered, not 405.
    for (origin, method) in [
        ("https://app.example.com", "POST"),
        ("https://a.b.example.com", "PUT"),
    ] {
        let r = gw
            .request(
                "OPTIONS",
                "/orders/7",
                &preflight(origin, method, "content-type, x-api-key"),
            )
            .await;
        assert_eq!(r.status, 204, "{r}");
        assert_eq!(r.header("access-control-allow-origin"), Some(origin), "{r}");
        assert_eq!(
            r.header("access-control-allow-credentials"),
            Some("true"),
            "{r}"
        );
        assert_eq!(
            r.header("access-control-allow-methods"),
            Some("GET, POST, PUT"),
            "{r}"
        );
        assert_eq!(
            r.header("access-control-allow-headers"),
            Some("Authorization, Content-Type, X-API-Key"),
            "{r}"
        );
        assert_eq!(r.header("access-control-max-age"), Some("600"), "{r}");
        assert!(
            r.header("vary").is_some_and(|v| v.contains("Origin")),
            "{r}"
        );
        assert!(r.body.is_empty(), "{r}");
    }
    assert_eq!(b.hits(), 0, "a preflight reached the backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_origin_method_or_header_gets_no_allow_headers() {
    let b = Backend::start("echo").await;
    let gw = cors_gateway(&b).await;
    for (origin, method, headers) in [
        ("https://evil.net", "POST", ""),
        ("https://example.com", "GET", ""),
        ("http://app.example.com", "GET", ""),
        ("https://app.example.com.evil.net", "GET", ""),
        ("null", "GET", ""),
        ("https://app.example.com", "DELETE", ""),
        ("https://app.example.com", "GET", "x-not-allowed"),
    ] {
        let r = gw
            .request("OPTIONS", "/orders", &preflight(origin, method, headers))
            .await;
        assert_eq!(r.status, 204, "{origin} {method}: {r}");
        assert!(!has_allow_headers(&r), "{origin} {method} {headers}: {r}");
    }
    assert_eq!(b.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actual_responses_carry_origin_credentials_and_expose_headers() {
    let b = Backend::start("echo").await;
    let gw = cors_gateway(&b).await;
    let origin = "https://shop.example.com";
    let r = gw
        .get_with("/orders", &[("Origin", origin), ("X-API-Key", API_KEY)])
        .await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.header("access-control-allow-origin"), Some(origin));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(
        r.header("access-control-expose-headers"),
        Some("X-Request-Id")
    );
    assert!(
        r.header_all("vary").iter().any(|v| v.contains("Origin")),
        "{r}"
    );
    // A refused origin is still served (CORS is the browser's check) but gets no ACAO.
    let r = gw
        .get_with(
            "/orders",
            &[("Origin", "https://evil.net"), ("X-API-Key", API_KEY)],
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    assert!(!has_allow_headers(&r), "{r}");
    // The route's policies still apply to cross-origin requests; a refusal is readable.
    let r = gw.get_with("/orders", &[("Origin", origin)]).await;
    r.assert_gateway_error(401, "unauthorized");
    assert_eq!(r.header("access-control-allow-origin"), Some(origin), "{r}");
    assert_eq!(b.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_without_a_cors_policy_is_routed_as_usual() {
    let b = Backend::start("echo").await;
    let gw = cors_gateway(&b).await;
    // No cors on /open: the preflight goes to the backend like any OPTIONS.
    let r = gw
        .request(
            "OPTIONS",
            "/open",
            &preflight("https://app.example.com", "PUT", ""),
        )
        .await;
    assert_eq!(r.echo().method, "OPTIONS");
    // A bare OPTIONS (no Access-Control-Request-Method) on /orders is not a preflight: 405.
    let r = gw
        .request(
            "OPTIONS",
            "/orders",
            &[("Origin", "https://app.example.com")],
        )
        .await;
    r.assert_gateway_error(405, "method_not_allowed");
    assert_eq!(b.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_cors_headers_are_replaced_on_a_cors_route() {
    let up = canned::Upstream::start().await;
    up.serve(
        "/x",
        canned::Canned::json("{}")
            .header("Access-Control-Allow-Origin", "*")
            .header("Vary", "Accept"),
    );
    let body = format!(
        "upstreams:\n  u: {{backends: [\"{}\"], retries: 0}}\nroutes:\n  - {{name: r, upstream: u, cors: {{allow_origins: [\"https://app.example.com\"]}}}}\n",
        up.addr()
    );
    let gw = Gateway::start(&body).await;
    let r = gw
        .get_with("/x", &[("Origin", "https://app.example.com")])
        .await;
    assert_eq!(
        r.header_all("access-control-allow-origin"),
        ["https://app.example.com"],
        "{r}"
    );
    let r = gw.get_with("/x", &[("Origin", "https://evil.net")]).await;
    assert!(r.header("access-control-allow-origin").is_none(), "{r}");
    let vary: Vec<_> = r.header_all("vary");
    assert!(vary.contains(&"Accept") && vary.contains(&"Origin"), "{r}");
}

// ---------------------------------------------------------------------------------------------
// max_request_body
// ---------------------------------------------------------------------------------------------

async fn body_gateway(b: &Backend) -> Gateway {
    let body = format!(
        "upstreams:\n{}\nroutes:
  - {{name: small, match: {{path_prefix: /small}}, upstream: echo, max_request_body: 1KiB}}
  - {{name: big, match: {{path_prefix: /big}}, upstream: echo, max_request_body: 64KiB}}
  - {{name: default, match: {{path_prefix: /}}, upstream: echo}}
",
        upstream_yaml("echo", &[b], &["retries: 0"]),
    );
    Gateway::start_with(&["h2c: true", "max_request_body: 4KiB"], &body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_body_limit_overrides_the_server_limit_both_ways() {
    let b = Backend::start("echo").await;
    let gw = body_gateway(&b).await;
    let post = |path: &str, len: usize| {
        let url = gw.url(path);
        let client = gw.client.clone();
        async move { send_body(&client, "POST", &url, &[], vec![b'x'; len]).await }
    };
    post("/small", 2000)
        .await
        .assert_gateway_error(413, "payload_too_large");
    assert_eq!(b.hits(), 0, "a declared over-limit body was forwarded");
    assert_eq!(post("/small", 1024).await.echo().body_len, 1024);
    assert_eq!(
        post("/other", 2000).await.echo().body_len,
        2000,
        "server limit elsewhere"
    );
    post("/other", 5000)
        .await
        .assert_gateway_error(413, "payload_too_large");
    assert_eq!(
        post("/big", 50_000).await.echo().body_len,
        50_000,
        "route raises the limit"
    );
    post("/big", 70_000)
        .await
        .assert_gateway_error(413, "payload_too_large");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_over_the_route_limit_is_never_forwarded_whole() {
    let b = Backend::start("echo").await;
    let gw = body_gateway(&b).await;
    let chunk = "y".repeat(500);
    let mut req = String::from(
        "POST /small HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    );
    for _ in 0..4 {
        req.push_str(&format!("1f4\r\n{chunk}\r\n"));
    }
    req.push_str("0\r\n\r\n");
    let r = gw.raw(&req).await;
    r.assert_gateway_error(413, "payload_too_large");
    assert!(
        b.max_body_len() <= 1024,
        "backend got a whole {}-byte body",
        b.max_body_len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_body_limit_holds_over_h2c_declared_and_streamed() {
    let b = Backend::start("echo").await;
    let gw = body_gateway(&b).await;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", gw.port))
        .await
        .expect("connect");
    let (mut send, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let url = format!("http://127.0.0.1:{}/small", gw.port);
    // Declared too large: refused before any body is sent.
    let req = http::Request::post(&url)
        .header("content-length", "2000")
        .body(())
        .unwrap();
    let (resp, _stream) = send.send_request(req, false).expect("send");
    let resp = tokio::time::timeout(Duration::from_secs(10), resp)
        .await
        .expect("in time")
        .expect("response");
    assert_eq!(resp.status().as_u16(), 413);
    // Streamed without a length: cut once past the limit, never forwarded whole.
    let mut send = send.ready().await.expect("ready");
    let req = http::Request::post(&url).body(()).unwrap();
    let (resp, mut stream) = send.send_request(req, false).expect("send");
    for i in 0..4 {
        stream.reserve_capacity(600);
        if stream
            .send_data(bytes::Bytes::from(vec![b'z'; 600]), i == 3)
            .is_err()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    match tokio::time::timeout(Duration::from_secs(10), resp)
        .await
        .expect("in time")
    {
        Ok(r) => assert_eq!(r.status().as_u16(), 413),
        Err(e) => assert!(e.is_reset() || e.is_io(), "neither 413 nor a reset: {e}"),
    }
    assert!(
        b.max_body_len() <= 1024,
        "backend got a whole {}-byte body",
        b.max_body_len()
    );
}

// ---------------------------------------------------------------------------------------------
// hide_credentials
// ---------------------------------------------------------------------------------------------

async fn hide_gateway(b: &Backend) -> Gateway {
    let body = format!(
        "upstreams:\n{}\n{}routes:
  - {{name: key-hidden, match: {{path_prefix: /key-hidden}}, upstream: echo, auth: {{api_key: k}}, hide_credentials: true}}
  - {{name: key-kept, match: {{path_prefix: /key-kept}}, upstream: echo, auth: {{api_key: k}}}}
  - {{name: jwt-hidden, match: {{path_prefix: /jwt-hidden}}, upstream: echo, auth: {{jwt: j}}, hide_credentials: true}}
  - {{name: jwt-kept, match: {{path_prefix: /jwt-kept}}, upstream: echo, auth: {{jwt: j}}}}
",
        upstream_yaml("echo", &[b], &["retries: 0"]),
        auth_yaml()
    );
    Gateway::start(&body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hide_credentials_removes_the_api_key_header_only_where_asked() {
    let b = Backend::start("echo").await;
    let gw = hide_gateway(&b).await;
    let h = [("X-API-Key", API_KEY), ("X-Other", "stays")];
    let e = gw.get_with("/key-hidden", &h).await.echo();
    assert_eq!(e.header("x-api-key"), None, "{e:?}");
    assert_eq!(e.header("x-other"), Some("stays"));
    assert_eq!(
        e.header("x-consumer"),
        Some("acme"),
        "identity still forwarded"
    );
    let e = gw.get_with("/key-kept", &h).await.echo();
    assert_eq!(e.header("x-api-key"), Some(API_KEY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hide_credentials_removes_the_bearer_header_the_cookie_or_the_query_parameter() {
    let b = Backend::start("echo").await;
    let gw = hide_gateway(&b).await;
    let token = jwt();
    let auth = bearer(&token);
    let e = gw
        .get_with("/jwt-hidden", &[("Authorization", auth.as_str())])
        .await
        .echo();
    assert_eq!(e.header("authorization"), None, "{e:?}");
    let e = gw
        .get_with("/jwt-kept", &[("Authorization", auth.as_str())])
        .await
        .echo();
    assert_eq!(e.header("authorization"), Some(auth.as_str()));
    // Cookie: only the token's cookie goes.
    let cookie = format!("theme=dark; tok={token}; lang=en");
    let e = gw
        .get_with("/jwt-hidden", &[("Cookie", cookie.as_str())])
        .await
        .echo();
    assert_eq!(e.header("cookie"), Some("theme=dark; lang=en"), "{e:?}");
    let e = gw
        .get_with("/jwt-kept", &[("Cookie", cookie.as_str())])
        .await
        .echo();
    assert_eq!(e.header("cookie"), Some(cookie.as_str()));
    let only = format!("tok={token}");
    let e = gw
        .get_with("/jwt-hidden", &[("Cookie", only.as_str())])
        .await
        .echo();
    assert_eq!(
        e.header("cookie"),
        None,
        "an emptied Cookie header is dropped: {e:?}"
    );
    // Query: the parameter goes, the others stay.
    let e = gw
        .get(&format!("/jwt-hidden/a?x=1&access_token={token}&y=2"))
        .await
        .echo();
    assert_eq!(e.path, "/jwt-hidden/a?x=1&y=2");
}

// ---------------------------------------------------------------------------------------------
// check
// ---------------------------------------------------------------------------------------------

const CHECK_BASE: &str = "server:\n  pid_file: \"@DIR@/t.pid\"\n  upgrade_sock: \"@DIR@/u.sock\"\nupstreams:\n  u: {backends: [\"127.0.0.1:1\"]}\nroutes:\n";

#[test]
fn check_refuses_bad_edge_policies_with_their_yaml_paths() {
    for (route, prefix, fragment) in [
        ("{name: r, upstream: u, ip: {allow: [\"10.0.0.0/33\"]}}", "routes[0].ip.allow[0]:", "invalid CIDR"),
        ("{name: r, upstream: u, ip: {deny: [\"fe80::/129\"]}}", "routes[0].ip.deny[0]:", "invalid CIDR"),
        ("{name: r, upstream: u, ip: {}}", "routes[0].ip:", "allow or deny"),
        ("{name: r, upstream: u, cors: {allow_origins: [\"*\"], allow_credentials: true}}", "routes[0].cors.allow_origins[0]:", "allow_credentials"),
        ("{name: r, upstream: u, cors: {allow_origins: [\"app.example.com\"]}}", "routes[0].cors.allow_origins[0]:", "invalid origin"),
        ("{name: r, upstream: u, cors: {allow_origins: [\"https://a.example.com/path\"]}}", "routes[0].cors.allow_origins[0]:", "invalid origin"),
        ("{name: r, upstream: u, cors: {allow_origins: [\"null\"]}}", "routes[0].cors.allow_origins[0]:", "null"),
        ("{name: r, upstream: u, cors: {allow_origins: [\"https://a.example.com\"], allow_methods: [get]}}", "routes[0].cors.allow_methods[0]:", "unknown HTTP method"),
        ("{name: r, upstream: u, cors: {allow_origins: [\"https://a.example.com\"], allow_headers: [\"bad header\"]}}", "routes[0].cors.allow_headers[0]:", "invalid header name"),
        ("{name: r, upstream: u, cors: {allow_origins: [\"https://a.example.com\"], max_age: 0s}}", "routes[0].cors.max_age:", "at least 1s"),
        ("{name: r, upstream: u, cors: {allow_origins: [\"https://a.example.com\"], max_age: soon}}", "routes[0].cors.max_age:", "invalid duration"),
        ("{name: r, upstream: u, cors: {allow_origins: []}}", "routes[0].cors.allow_origins:", "at least one origin"),
        ("{name: r, upstream: u, max_request_body: 0}", "routes[0].max_request_body:", "more than 0"),
        ("{name: r, upstream: u, max_request_body: huge}", "routes[0].max_request_body:", "invalid size"),
        ("{name: r, upstream: u, hide_credentials: true}", "routes[0].hide_credentials:", "needs auth"),
        ("{name: r, upstream: u, compress: {types: []}}", "routes[0].compress.types:", "at least one"),
        ("{name: r, upstream: u, compress: {types: [json]}}", "routes[0].compress.types[0]:", "invalid media type"),
        ("{name: r, upstream: u, compress: {types: [\"text/*\"], min_size: lots}}", "routes[0].compress.min_size:", "invalid size"),
        ("{name: r, upstream: u, compress: {types: [\"text/*\"], level: 9}}", "routes[0].compress.level:", "unknown field"),
    ] {
        let yaml = format!("{CHECK_BASE}  - {route}\n");
        assert_check_rejects_with(&yaml, &[], &format!("error: {prefix}"), &[fragment]);
    }
}

#[test]
fn check_accepts_the_documented_edge_example() {
    let yaml = format!(
        "{CHECK_BASE}  - name: orders
    upstream: u
    cors: {{allow_origins: [\"https://app.example.com\", \"https://*.example.com\"],
           allow_methods: [GET, POST], allow_headers: [Authorization, Content-Type],
           expose_headers: [X-Request-Id], allow_credentials: true, max_age: 10m}}
    ip: {{allow: [\"10.0.0.0/8\"], deny: [\"10.1.2.3/32\"]}}
    compress: {{types: [application/json, \"text/*\"], min_size: 1KiB}}
    max_request_body: 1MiB
"
    );
    let (code, out, err) = check(&yaml);
    assert_eq!(code, 0, "{out}\n{err}");
}
