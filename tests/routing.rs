//! Routing: host matching, longest prefix on segment boundaries, ties, methods (404/405),
//! prefix strip/rewrite and path normalisation (DESIGN.md request path, steps 2, 3 and 8).

mod common;

use common::*;

/// Host: exact / `*.suffix` / no host. Routes are listed most-specific first, so "earlier wins on
/// a tie" and "more specific host wins" give the same answer here; a longer path prefix beats a
/// more specific host (DESIGN.md step 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_exact_wildcard_and_any() {
    let exact = Backend::start("exact").await;
    let wild = Backend::start("wild").await;
    let any = Backend::start("any").await;
    let orders = Backend::start("orders").await;
    let body = format!(
        "upstreams:\n{}{}{}{}\nroutes:
  - name: exact
    match: {{host: api.example.com, path_prefix: /}}
    upstream: exact
  - name: wildcard
    match: {{host: \"*.example.com\", path_prefix: /}}
    upstream: wild
  - name: any
    match: {{path_prefix: /}}
    upstream: any
  - name: orders-any-host
    match: {{path_prefix: /orders}}
    upstream: orders
",
        upstream_yaml("exact", &[&exact], &[]),
        upstream_yaml("wild", &[&wild], &[]),
        upstream_yaml("any", &[&any], &[]),
        upstream_yaml("orders", &[&orders], &[]),
    );
    let gw = Gateway::start(&body).await;

    let cases = [
        ("api.example.com", "/", "exact"),
        ("api.example.com", "/users/1", "exact"),
        ("shop.example.com", "/x", "wild"),
        ("other.org", "/", "any"),
        // `*.example.com` is a suffix on a label boundary, not a string suffix
        ("evilexample.com", "/", "any"),
        ("127.0.0.1", "/x", "any"),
        // longest path prefix wins over host specificity
        ("api.example.com", "/orders/1", "orders"),
        ("shop.example.com", "/orders", "orders"),
    ];
    for (host, path, want) in cases {
        let r = gw.get_with(path, &[("host", host)]).await;
        let e = r.echo();
        assert_eq!(e.backend, want, "Host: {host} GET {path} -> {r}");
        assert_eq!(e.path, path, "Host: {host} GET {path}");
    }
}

/// Host names are case-insensitive and a `:port` in the Host header is not part of the name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_match_ignores_case_and_port_and_unmatched_host_is_404() {
    let exact = Backend::start("exact").await;
    let wild = Backend::start("wild").await;
    let body = format!(
        "upstreams:\n{}{}\nroutes:
  - name: exact
    match: {{host: api.example.com, path_prefix: /}}
    upstream: exact
  - name: wildcard
    match: {{host: \"*.example.com\", path_prefix: /}}
    upstream: wild
",
        upstream_yaml("exact", &[&exact], &[]),
        upstream_yaml("wild", &[&wild], &[]),
    );
    let gw = Gateway::start(&body).await;

    for (host, want) in [
        ("API.Example.COM", "exact"),
        ("api.example.com:8080", "exact"),
        ("shop.example.com:8080", "wild"),
        ("Shop.EXAMPLE.com", "wild"),
    ] {
        let r = gw.get_with("/a", &[("host", host)]).await;
        assert_eq!(r.echo().backend, want, "Host: {host} -> {r}");
    }

    // no route has a matching host: 404 (not a fallback to some route)
    for host in ["other.org", "example.org", "evilexample.com"] {
        let r = gw.get_with("/a", &[("host", host)]).await;
        r.assert_gateway_error(404, "not_found");
    }
    assert_eq!(
        exact.hits() + wild.hits(),
        4,
        "404s must not reach a backend"
    );
}

/// Longest prefix wins; prefixes match on segment boundaries only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn longest_prefix_on_segment_boundaries() {
    let orders = Backend::start("orders").await;
    let items = Backend::start("items").await;
    let api = Backend::start("api").await;
    let body = format!(
        "upstreams:\n{}{}{}\nroutes:
  - name: orders
    match: {{path_prefix: /orders}}
    upstream: orders
  - name: items
    match: {{path_prefix: /orders/items}}
    upstream: items
  - name: api
    match: {{path_prefix: /api/v1}}
    upstream: api
",
        upstream_yaml("orders", &[&orders], &[]),
        upstream_yaml("items", &[&items], &[]),
        upstream_yaml("api", &[&api], &[]),
    );
    let gw = Gateway::start(&body).await;

    for (path, want) in [
        ("/orders", "orders"),
        ("/orders/", "orders"),
        ("/orders/7", "orders"),
        ("/orders?x=1", "orders"),
        ("/orders/items", "items"),
        ("/orders/items/3", "items"),
        ("/orders/items?page=2", "items"),
        ("/orders/itemsx", "orders"),
        ("/orders/7/items", "orders"),
        ("/api/v1", "api"),
        ("/api/v1/users", "api"),
    ] {
        let r = gw.get(path).await;
        let e = r.echo();
        assert_eq!(e.backend, want, "GET {path} -> {r}");
        assert_eq!(e.path, path, "GET {path}: forwarded path");
    }

    for path in [
        "/ordersx",
        "/order",
        "/ordersx/7",
        "/",
        "/api",
        "/api/v10",
        "/nothing",
    ] {
        let r = gw.get(path).await;
        r.assert_gateway_error(404, "not_found");
    }
    assert_eq!(orders.hits(), 6);
    assert_eq!(items.hits(), 3);
    assert_eq!(api.hits(), 2);
}

/// Two routes with the same prefix: the earlier one in the file wins, among those whose methods
/// match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tie_goes_to_earlier_route_among_method_matches() {
    let first = Backend::start("first").await;
    let second = Backend::start("second").await;
    let posts = Backend::start("posts").await;
    let gets = Backend::start("gets").await;
    let body = format!(
        "upstreams:\n{}{}{}{}\nroutes:
  - name: first
    match: {{path_prefix: /dup}}
    upstream: first
  - name: second
    match: {{path_prefix: /dup}}
    upstream: second
  - name: m-post
    match: {{path_prefix: /m, methods: [POST]}}
    upstream: posts
  - name: m-get
    match: {{path_prefix: /m, methods: [GET]}}
    upstream: gets
",
        upstream_yaml("first", &[&first], &[]),
        upstream_yaml("second", &[&second], &[]),
        upstream_yaml("posts", &[&posts], &[]),
        upstream_yaml("gets", &[&gets], &[]),
    );
    let gw = Gateway::start(&body).await;

    for _ in 0..3 {
        assert_eq!(gw.get("/dup/x").await.echo().backend, "first");
    }
    assert_eq!(
        gw.request("POST", "/dup", &[]).await.echo().backend,
        "first"
    );
    assert_eq!(second.hits(), 0);

    let r = gw.get("/m/1").await;
    assert_eq!(r.echo().backend, "gets", "{r}");
    let r = gw.request("POST", "/m/1", &[]).await;
    assert_eq!(r.echo().backend, "posts", "{r}");
    assert_eq!(r.echo().method, "POST");
}

/// A longer prefix whose methods do not match does not shadow a shorter prefix whose methods do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_filter_falls_back_to_shorter_prefix() {
    let orders = Backend::start("orders").await;
    let admin = Backend::start("admin").await;
    let body = format!(
        "upstreams:\n{}{}\nroutes:
  - name: orders
    match: {{path_prefix: /orders, methods: [GET]}}
    upstream: orders
  - name: orders-admin
    match: {{path_prefix: /orders/admin, methods: [POST]}}
    upstream: admin
",
        upstream_yaml("orders", &[&orders], &[]),
        upstream_yaml("admin", &[&admin], &[]),
    );
    let gw = Gateway::start(&body).await;

    let r = gw.get("/orders/admin/1").await;
    assert_eq!(r.echo().backend, "orders", "{r}");
    let r = gw.request("POST", "/orders/admin/1", &[]).await;
    assert_eq!(r.echo().backend, "admin", "{r}");
    // PUT matches neither route's methods, but both routes' paths: 405
    let r = gw.request("PUT", "/orders/admin/1", &[]).await;
    r.assert_gateway_error(405, "method_not_allowed");
    assert!(r.header("allow").is_some(), "405 without Allow: {r}");
    assert_eq!(orders.hits() + admin.hits(), 2);
}

fn allow_set(r: &Resp) -> Vec<String> {
    let allow = r
        .header("allow")
        .unwrap_or_else(|| panic!("405 without Allow header: {r}"));
    allow
        .split(',')
        .map(|m| m.trim().to_ascii_uppercase())
        .filter(|m| !m.is_empty())
        .collect()
}

/// 405 with `Allow` listing the route's methods; HEAD is allowed where GET is; 404 JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_not_allowed_405_with_allow_and_404_json() {
    let orders = Backend::start("orders").await;
    let body = format!(
        "upstreams:\n{}\nroutes:
  - name: orders
    match: {{path_prefix: /orders, methods: [GET, POST]}}
    upstream: orders
",
        upstream_yaml("orders", &[&orders], &[]),
    );
    let gw = Gateway::start(&body).await;

    for method in ["DELETE", "PUT", "PATCH"] {
        let r = gw.request(method, "/orders/7", &[]).await;
        let v = r.assert_gateway_error(405, "method_not_allowed");
        let allow = allow_set(&r);
        assert!(allow.contains(&"GET".to_string()), "Allow {allow:?}: {r}");
        assert!(allow.contains(&"POST".to_string()), "Allow {allow:?}: {r}");
        assert!(!allow.contains(&method.to_string()), "Allow {allow:?}: {r}");
        assert!(v["message"].is_string());
    }

    // HEAD is allowed wherever GET is
    let r = gw.request("HEAD", "/orders/7", &[]).await;
    assert_eq!(r.status, 200, "HEAD on a GET route: {r}");
    assert!(r.body.is_empty(), "HEAD response with a body: {r}");
    let r = gw.get("/orders/7").await;
    assert_eq!(r.echo().method, "GET");
    let r = gw.request("POST", "/orders", &[]).await;
    assert_eq!(r.echo().method, "POST");

    // no route for the path at all: 404 (whatever the method), not 405
    let r = gw.request("DELETE", "/nothing", &[]).await;
    r.assert_gateway_error(404, "not_found");
    assert!(r.header("allow").is_none(), "404 with Allow: {r}");
    let r = gw.get("/ordersx").await;
    let v = r.assert_gateway_error(404, "not_found");
    // the message never leaks internals
    let msg = v["message"].as_str().unwrap_or_default();
    assert!(!msg.contains("127.0.0.1"), "message leaks an address: {r}");

    // HEAD on a gateway-produced error: same status, no body
    let r = gw
        .raw("HEAD /nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(r.status, 404, "{r}");

    // 3 backend hits: HEAD, GET, POST
    assert_eq!(orders.hits(), 3);
}

/// Several routes on the same path with different methods: `Allow` is the union.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_header_lists_methods_of_all_matching_routes() {
    let reads = Backend::start("reads").await;
    let writes = Backend::start("writes").await;
    let body = format!(
        "upstreams:\n{}{}\nroutes:
  - name: items-read
    match: {{path_prefix: /items, methods: [GET]}}
    upstream: reads
  - name: items-write
    match: {{path_prefix: /items, methods: [POST, PUT]}}
    upstream: writes
",
        upstream_yaml("reads", &[&reads], &[]),
        upstream_yaml("writes", &[&writes], &[]),
    );
    let gw = Gateway::start(&body).await;

    let r = gw.request("DELETE", "/items/1", &[]).await;
    r.assert_gateway_error(405, "method_not_allowed");
    let allow = allow_set(&r);
    for m in ["GET", "POST", "PUT"] {
        assert!(
            allow.contains(&m.to_string()),
            "Allow {allow:?} lacks {m}: {r}"
        );
    }
    assert_eq!(
        gw.request("PUT", "/items/1", &[]).await.echo().backend,
        "writes"
    );
    assert_eq!(gw.get("/items/1").await.echo().backend, "reads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strip_prefix_and_rewrite_prefix() {
    let stripped = Backend::start("stripped").await;
    let rewritten = Backend::start("rewritten").await;
    let plain = Backend::start("plain").await;
    let body = format!(
        "upstreams:\n{}{}{}\nroutes:
  - name: orders
    match: {{path_prefix: /orders}}
    upstream: stripped
    strip_prefix: true
  - name: v1
    match: {{path_prefix: /v1/orders}}
    upstream: rewritten
    rewrite_prefix: /v2/orders
  - name: plain
    match: {{path_prefix: /plain}}
    upstream: plain
    strip_prefix: false
",
        upstream_yaml("stripped", &[&stripped], &[]),
        upstream_yaml("rewritten", &[&rewritten], &[]),
        upstream_yaml("plain", &[&plain], &[]),
    );
    let gw = Gateway::start(&body).await;

    for (path, want_backend, want_path) in [
        ("/orders/7?x=1", "stripped", "/7?x=1"),
        ("/orders/7", "stripped", "/7"),
        ("/orders", "stripped", "/"),
        ("/orders/", "stripped", "/"),
        ("/orders?x=1", "stripped", "/?x=1"),
        ("/orders/a/b/c", "stripped", "/a/b/c"),
        ("/v1/orders/7", "rewritten", "/v2/orders/7"),
        ("/v1/orders", "rewritten", "/v2/orders"),
        ("/v1/orders?q=1", "rewritten", "/v2/orders?q=1"),
        (
            "/v1/orders/7/items?q=a%20b",
            "rewritten",
            "/v2/orders/7/items?q=a%20b",
        ),
        ("/plain/x?y=z", "plain", "/plain/x?y=z"),
    ] {
        let r = gw.get(path).await;
        let e = r.echo();
        assert_eq!(e.backend, want_backend, "GET {path} -> {r}");
        assert_eq!(e.path, want_path, "GET {path}: path seen by the backend");
    }
}

/// Dot segments, `//` and percent-encoded unreserved characters are normalised before routing and
/// forwarding; climbing above `/` is a 400. Sent over raw TCP so no client normalises first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_normalisation() {
    let public = Backend::start("public").await;
    let admin = Backend::start("admin").await;
    let orders = Backend::start("orders").await;
    let body = format!(
        "upstreams:\n{}{}{}\nroutes:
  - name: public
    match: {{path_prefix: /public}}
    upstream: public
  - name: admin
    match: {{path_prefix: /admin}}
    upstream: admin
  - name: orders
    match: {{path_prefix: /orders}}
    upstream: orders
",
        upstream_yaml("public", &[&public], &[]),
        upstream_yaml("admin", &[&admin], &[]),
        upstream_yaml("orders", &[&orders], &[]),
    );
    let gw = Gateway::start(&body).await;

    for (target, want_backend, want_path) in [
        ("/public/../admin", "admin", "/admin"),
        ("/public/../admin/x?y=1", "admin", "/admin/x?y=1"),
        ("/public/./a", "public", "/public/a"),
        ("//orders//7", "orders", "/orders/7"),
        ("/orders/%2e/7", "orders", "/orders/7"),
        ("/orders/%2E/7", "orders", "/orders/7"),
        ("/orders/x/%2e%2e/7", "orders", "/orders/7"),
        // percent-encoded unreserved characters are decoded
        ("/%6Frders/7", "orders", "/orders/7"),
        ("/orders/%37", "orders", "/orders/7"),
        // reserved / non-ASCII escapes stay encoded
        ("/orders/a%20b", "orders", "/orders/a%20b"),
        ("/orders/caf%C3%A9", "orders", "/orders/caf%C3%A9"),
        // the query is not part of the path: dots there are left alone
        (
            "/orders/7?next=/../../etc",
            "orders",
            "/orders/7?next=/../../etc",
        ),
    ] {
        let r = gw.raw_get(target, "gw.test").await;
        let e = r.echo();
        assert_eq!(e.backend, want_backend, "GET {target} -> {r}");
        assert_eq!(e.path, want_path, "GET {target}: path seen by the backend");
    }

    // climbing above the root
    for target in [
        "/%2e%2e/x",
        "/%2E%2E/x",
        "/..",
        "/../admin",
        "/a/../../x",
        "/public/../../admin",
        "/orders/%2e%2e/%2e%2e/admin",
    ] {
        let r = gw.raw_get(target, "gw.test").await;
        r.assert_gateway_error(400, "bad_request");
    }

    // `%2F` is reserved: not decoded, so `/orders%2F7` is the single segment "orders%2F7" and
    // does not match `/orders` (404); rejecting it outright (400) is acceptable too.
    let r = gw.raw_get("/orders%2F7", "gw.test").await;
    if r.status == 400 {
        r.assert_gateway_error(400, "bad_request");
    } else {
        r.assert_gateway_error(404, "not_found");
    }

    assert_eq!(admin.hits(), 2, "admin route hits");
    assert_eq!(public.hits(), 1, "public route hits");
}
