//! Headers the gateway adds, replaces and strips (DESIGN.md request path, steps 4, 8 and 9).

mod common;

use common::*;

async fn one_backend_gateway(server_extra: &[&str]) -> (Backend, Gateway) {
    let b = Backend::start("echo").await;
    let body = format!(
        "upstreams:\n{}\nroutes:
  - name: all
    match: {{path_prefix: /}}
    upstream: echo
",
        upstream_yaml("echo", &[&b], &[]),
    );
    let gw = Gateway::start_with(server_extra, &body).await;
    (b, gw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_generated_when_absent_and_echoed() {
    let (_b, gw) = one_backend_gateway(&[]).await;

    let r1 = gw.get("/a").await;
    let e1 = r1.echo();
    let id1 = e1
        .header("x-request-id")
        .unwrap_or_else(|| panic!("backend got no x-request-id: {e1:?}"))
        .to_string();
    assert!(!id1.is_empty());
    assert_eq!(
        r1.header("x-request-id"),
        Some(id1.as_str()),
        "response X-Request-Id must be the id sent upstream: {r1}"
    );

    let r2 = gw.get("/a").await;
    let id2 = r2
        .echo()
        .header("x-request-id")
        .unwrap_or_default()
        .to_string();
    assert!(!id2.is_empty());
    assert_ne!(id1, id2, "two requests got the same generated id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sane_request_id_is_kept() {
    let (_b, gw) = one_backend_gateway(&[]).await;
    let r = gw.get_with("/a", &[("x-request-id", "abc-123")]).await;
    let e = r.echo();
    assert_eq!(e.header("x-request-id"), Some("abc-123"), "{e:?}");
    assert_eq!(r.header("x-request-id"), Some("abc-123"), "{r}");
    assert_eq!(
        r.header_all("x-request-id").len(),
        1,
        "one X-Request-Id: {r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_request_id_is_replaced() {
    let (_b, gw) = one_backend_gateway(&[]).await;
    let long = "a".repeat(300);
    let r = gw.get_with("/a", &[("x-request-id", long.as_str())]).await;
    let e = r.echo();
    let seen = e.header("x-request-id").unwrap_or_default();
    assert!(!seen.is_empty(), "backend got no x-request-id: {e:?}");
    assert_ne!(seen, long, "a 300-char request id was forwarded as is");
    assert!(
        !seen.contains(&long),
        "the absurd id was forwarded (joined): {seen}"
    );
    assert_eq!(r.header("x-request-id"), Some(seen), "{r}");
}

/// Errors produced by the gateway carry the request id too, in the body and the header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_errors_carry_the_request_id() {
    let b = Backend::start("echo").await;
    let body = format!(
        "upstreams:\n{}\nroutes:
  - name: only
    match: {{path_prefix: /only, methods: [GET]}}
    upstream: echo
",
        upstream_yaml("echo", &[&b], &[]),
    );
    let gw = Gateway::start(&body).await;

    let r = gw
        .get_with("/missing", &[("x-request-id", "abc-123")])
        .await;
    let v = r.assert_gateway_error(404, "not_found");
    assert_eq!(v["request_id"], "abc-123", "{r}");
    assert_eq!(r.header("x-request-id"), Some("abc-123"), "{r}");

    let r = gw.request("POST", "/only", &[]).await;
    let v = r.assert_gateway_error(405, "method_not_allowed");
    let id = v["request_id"].as_str().unwrap_or_default();
    assert_eq!(r.header("x-request-id"), Some(id), "{r}");
    assert_eq!(b.hits(), 0);
}

/// A client that is not a trusted proxy cannot inject X-Forwarded-For entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_x_forwarded_for_dropped_for_untrusted_client() {
    let (_b, gw) = one_backend_gateway(&[]).await;
    let r = gw.get_with("/a", &[("x-forwarded-for", "1.2.3.4")]).await;
    let e = r.echo();
    assert_eq!(e.header("x-forwarded-for"), Some("127.0.0.1"), "{e:?}");

    let r = gw.get("/a").await;
    assert_eq!(r.echo().header("x-forwarded-for"), Some("127.0.0.1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_for_appended_for_trusted_proxy() {
    let (_b, gw) = one_backend_gateway(&["trusted_proxies: [\"127.0.0.0/8\"]"]).await;
    let r = gw.get_with("/a", &[("x-forwarded-for", "1.2.3.4")]).await;
    let e = r.echo();
    assert_eq!(
        e.header("x-forwarded-for"),
        Some("1.2.3.4, 127.0.0.1"),
        "{e:?}"
    );

    let r = gw.get("/a").await;
    assert_eq!(r.echo().header("x-forwarded-for"), Some("127.0.0.1"));

    // Two lines are one list (RFC 9110 §5.3): the second line is not dropped, so a client cannot
    // put an address of its choice ahead of the one its proxy appended.
    let r = gw
        .get_with(
            "/a",
            &[
                ("x-forwarded-for", "10.9.9.9"),
                ("x-forwarded-for", "6.6.6.6"),
            ],
        )
        .await;
    let e = r.echo();
    assert_eq!(
        e.header("x-forwarded-for"),
        Some("10.9.9.9, 6.6.6.6, 127.0.0.1"),
        "{e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_proto_and_host() {
    let (_b, gw) = one_backend_gateway(&[]).await;
    let r = gw.get_with("/a", &[("host", "shop.example.com")]).await;
    let e = r.echo();
    assert_eq!(e.header("x-forwarded-proto"), Some("http"), "{e:?}");
    assert_eq!(
        e.header("x-forwarded-host"),
        Some("shop.example.com"),
        "{e:?}"
    );

    // default Host (127.0.0.1:<port>)
    let r = gw.get("/a").await;
    let host = format!("127.0.0.1:{}", gw.port);
    assert_eq!(r.echo().header("x-forwarded-host"), Some(host.as_str()));
}

/// From an untrusted client, X-Forwarded-Proto/-Host are the gateway's own view, not the
/// client's claims.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_proto_and_host_not_spoofable() {
    let (_b, gw) = one_backend_gateway(&[]).await;
    let r = gw
        .get_with(
            "/a",
            &[
                ("host", "shop.example.com"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "evil.example.net"),
            ],
        )
        .await;
    let e = r.echo();
    assert_eq!(e.header("x-forwarded-proto"), Some("http"), "{e:?}");
    assert_eq!(
        e.header("x-forwarded-host"),
        Some("shop.example.com"),
        "{e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preserve_host() {
    let rewritten = Backend::start("rewritten").await;
    let preserved = Backend::start("preserved").await;
    let body = format!(
        "upstreams:\n{}{}\nroutes:
  - name: a
    match: {{path_prefix: /a}}
    upstream: rewritten
  - name: b
    match: {{path_prefix: /b}}
    upstream: preserved
",
        upstream_yaml("rewritten", &[&rewritten], &["preserve_host: false"]),
        upstream_yaml("preserved", &[&preserved], &["preserve_host: true"]),
    );
    let gw = Gateway::start(&body).await;

    let r = gw.get_with("/a", &[("host", "shop.example.com")]).await;
    let e = r.echo();
    assert_eq!(e.backend, "rewritten");
    assert_eq!(e.header("host"), Some(rewritten.addr().as_str()), "{e:?}");
    assert_eq!(e.header("x-forwarded-host"), Some("shop.example.com"));

    let r = gw.get_with("/b", &[("host", "shop.example.com")]).await;
    let e = r.echo();
    assert_eq!(e.backend, "preserved");
    assert_eq!(e.header("host"), Some("shop.example.com"), "{e:?}");
    assert_eq!(e.header("x-forwarded-host"), Some("shop.example.com"));
}

/// DESIGN.md step 4: a client must never be able to spoof identity headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_identity_headers_never_reach_backend() {
    let (_b, gw) = one_backend_gateway(&[]).await;
    let r = gw
        .get_with(
            "/a",
            &[
                ("X-User-Id", "admin"),
                ("X-User-Roles", "admin"),
                ("X-Scopes", "orders:write"),
                ("X-Consumer", "acme"),
                ("X-Custom", "kept"),
            ],
        )
        .await;
    let e = r.echo();
    for h in ["x-user-id", "x-user-roles", "x-scopes", "x-consumer"] {
        assert!(e.header(h).is_none(), "{h} reached the backend: {e:?}");
    }
    assert_eq!(e.header("x-custom"), Some("kept"), "{e:?}");

    // mixed case and repeated, over raw TCP
    let r = gw
        .raw(
            "GET /a HTTP/1.1\r\nHost: gw.test\r\nx-user-id: 1\r\nX-USER-ID: 2\r\nx-UsEr-RoLeS: admin\r\n\
             X-Scopes: a\r\nX-Scopes: b\r\nx-consumer: c\r\nConnection: close\r\n\r\n",
        )
        .await;
    let e = r.echo();
    for h in ["x-user-id", "x-user-roles", "x-scopes", "x-consumer"] {
        assert!(e.header(h).is_none(), "{h} reached the backend: {e:?}");
    }
}

/// Per-route `request_headers` / `response_headers` `{add, set, remove}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_header_rules() {
    let b = Backend::start("echo").await;
    let body = format!(
        "upstreams:\n{}\nroutes:
  - name: rules
    match: {{path_prefix: /rules}}
    upstream: echo
    request_headers:
      add: {{X-Gateway: tollgate}}
      set: {{X-Env: prod}}
      remove: [Cookie, X-Debug]
    response_headers:
      add: {{X-Served-By: tollgate}}
      set: {{X-Backend: hidden}}
      remove: [{BACKEND_SECRET_HEADER}]
  - name: plain
    match: {{path_prefix: /plain}}
    upstream: echo
",
        upstream_yaml("echo", &[&b], &[]),
    );
    let gw = Gateway::start(&body).await;

    let r = gw
        .get_with(
            "/rules/1",
            &[
                ("cookie", "session=secret"),
                ("x-env", "dev"),
                ("x-debug", "1"),
            ],
        )
        .await;
    let e = r.echo();
    assert_eq!(e.header("x-gateway"), Some("tollgate"), "{e:?}");
    assert_eq!(e.header("x-env"), Some("prod"), "set replaces: {e:?}");
    assert!(e.header("cookie").is_none(), "cookie not removed: {e:?}");
    assert!(e.header("x-debug").is_none(), "x-debug not removed: {e:?}");
    assert_eq!(r.header("x-served-by"), Some("tollgate"), "{r}");
    assert_eq!(
        r.header_all("x-backend"),
        vec!["hidden"],
        "set replaces: {r}"
    );
    assert!(
        r.header(BACKEND_SECRET_HEADER).is_none(),
        "not removed: {r}"
    );

    // the other route is untouched
    let r = gw.get_with("/plain", &[("cookie", "a=b")]).await;
    let e = r.echo();
    assert_eq!(e.header("cookie"), Some("a=b"));
    assert!(e.header("x-gateway").is_none());
    assert_eq!(r.header(BACKEND_SECRET_HEADER), Some("s3cr3t"));
    assert_eq!(r.header("x-backend"), Some("echo"));
}

/// The client read buffer (`server.read_buffer`, none by default) bounds one read, not a
/// request head: a head several times its size (under `max_header_bytes`) is read whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_larger_than_the_read_buffer_is_read_whole() {
    let (_b, gw) = one_backend_gateway(&["read_buffer: 4KiB", "max_header_bytes: 48KiB"]).await;
    let big = "v".repeat(1000);
    let names: Vec<String> = (0..30).map(|i| format!("x-big-{i}")).collect();
    let headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), big.as_str())).collect();
    let r = gw.get_with("/big", &headers).await;
    let echo = r.echo();
    for n in &names {
        assert_eq!(echo.header(n).map(str::len), Some(1000), "{n} lost");
    }
}

#[test]
fn check_refuses_a_read_buffer_out_of_range() {
    let (code, _, err) = check(
        "server:\n  read_buffer: 100\nupstreams:\n  u: {backends: [\"127.0.0.1:1\"]}\nroutes:\n  - {name: r, upstream: u}\n",
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("server.read_buffer: must be 0 (no buffer) or between 1KiB and 1MiB"),
        "{err}"
    );
}
