//! Routing by header and query conditions (issue 21, DESIGN.md "Routing by headers, traffic
//! split and mirroring"): exact, `present`, `prefix` and `regex` forms through the real binary,
//! precedence (longest prefix, then more conditions, then file order), 405 + `Allow`, and
//! `check` refusing a bad pattern with its YAML path.

mod common;

use common::*;

async fn versioned_gateway(v1: &Backend, v2: &Backend, beta: &Backend, vnd: &Backend) -> Gateway {
    let body = format!(
        "upstreams:\n{}{}{}{}\nroutes:
  - name: v1
    match: {{path_prefix: /orders, methods: [GET, POST]}}
    upstream: v1
  - name: v2
    match: {{path_prefix: /orders, methods: [GET], headers: {{X-Api-Version: 2}}}}
    upstream: v2
  - name: beta
    match: {{path_prefix: /orders, headers: {{X-Api-Version: 2}}, query: {{beta: \"on now\"}}}}
    upstream: beta
  - name: vnd
    match: {{path_prefix: /orders, headers: {{Accept: {{prefix: \"application/vnd.acme.\"}}, X-Tenant: {{regex: \"^t-[0-9]+$\"}}}}}}
    upstream: vnd
  - name: canary-flag
    match: {{path_prefix: /orders, headers: {{X-Canary: {{present: true}}}}, methods: [PUT]}}
    upstream: v2
",
        upstream_yaml("v1", &[v1], &[]),
        upstream_yaml("v2", &[v2], &[]),
        upstream_yaml("beta", &[beta], &[]),
        upstream_yaml("vnd", &[vnd], &[]),
    );
    Gateway::start(&body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_and_query_conditions_pick_the_route() {
    let v1 = Backend::start("v1").await;
    let v2 = Backend::start("v2").await;
    let beta = Backend::start("beta").await;
    let vnd = Backend::start("vnd").await;
    let gw = versioned_gateway(&v1, &v2, &beta, &vnd).await;

    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 9] = [
        ("/orders/1", &[], "v1"),
        ("/orders/1", &[("x-api-version", "2")], "v2"),
        // header names any case
        ("/orders/1", &[("X-API-VERSION", "2")], "v2"),
        ("/orders/1", &[("x-api-version", "3")], "v1"),
        // query value percent-decoded (and `+` as a space) before comparison
        ("/orders/1?beta=on%20now", &[("x-api-version", "2")], "beta"),
        (
            "/orders/1?x=1&beta=on+now",
            &[("x-api-version", "2")],
            "beta",
        ),
        ("/orders/1?beta=on", &[("x-api-version", "2")], "v2"),
        // prefix + regex, both must hold
        (
            "/orders/1",
            &[
                ("accept", "application/vnd.acme.v2+json"),
                ("x-tenant", "t-42"),
            ],
            "vnd",
        ),
        (
            "/orders/1",
            &[
                ("accept", "application/vnd.acme.v2+json"),
                ("x-tenant", "t-42x"),
            ],
            "v1",
        ),
    ];
    for (path, headers, want) in cases {
        let r = gw.get_with(path, headers).await;
        assert_eq!(r.status, 200, "GET {path} {headers:?} -> {r}");
        assert_eq!(r.echo().backend, want, "GET {path} {headers:?}");
    }
}

/// A repeated header matches when any of its values does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_value_of_a_repeated_header_may_match() {
    let v1 = Backend::start("v1").await;
    let v2 = Backend::start("v2").await;
    let beta = Backend::start("beta").await;
    let vnd = Backend::start("vnd").await;
    let gw = versioned_gateway(&v1, &v2, &beta, &vnd).await;
    let r = gw
        .raw("GET /orders/1 HTTP/1.1\r\nHost: x\r\nX-Api-Version: 1\r\nX-Api-Version: 2\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.echo().backend, "v2");
}

/// Only the method differs: the route whose conditions hold but which refuses the method adds
/// to `Allow`; a route whose conditions fail does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_not_allowed_lists_only_routes_whose_conditions_hold() {
    let v1 = Backend::start("v1").await;
    let v2 = Backend::start("v2").await;
    let beta = Backend::start("beta").await;
    let vnd = Backend::start("vnd").await;
    let gw = versioned_gateway(&v1, &v2, &beta, &vnd).await;

    let r = gw.request("DELETE", "/orders/1", &[]).await;
    r.assert_gateway_error(405, "method_not_allowed");
    assert_eq!(r.header("allow"), Some("GET, HEAD, POST"));

    let r = gw.request("DELETE", "/orders/1", &[("x-canary", "")]).await;
    r.assert_gateway_error(405, "method_not_allowed");
    assert_eq!(r.header("allow"), Some("GET, HEAD, POST, PUT"));

    let r = gw.request("PUT", "/orders/1", &[("x-canary", "yes")]).await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.echo().backend, "v2");

    // v2 (GET only) holds but POST falls through to v1 at the same prefix
    let r = gw
        .request("POST", "/orders/1", &[("x-api-version", "2")])
        .await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.echo().backend, "v1");
}

/// A longer prefix beats more conditions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_longer_prefix_beats_more_conditions() {
    let cond = Backend::start("cond").await;
    let deep = Backend::start("deep").await;
    let body = format!(
        "upstreams:\n{}{}\nroutes:
  - name: cond
    match: {{path_prefix: /orders, headers: {{X-Api-Version: 2}}}}
    upstream: cond
  - name: deep
    match: {{path_prefix: /orders/items}}
    upstream: deep
",
        upstream_yaml("cond", &[&cond], &[]),
        upstream_yaml("deep", &[&deep], &[]),
    );
    let gw = Gateway::start(&body).await;
    let h = [("x-api-version", "2")];
    assert_eq!(
        gw.get_with("/orders/items/1", &h).await.echo().backend,
        "deep"
    );
    assert_eq!(
        gw.get_with("/orders/other", &h).await.echo().backend,
        "cond"
    );
    gw.get("/orders/other")
        .await
        .assert_gateway_error(404, "not_found");
}

const CHECK_BASE: &str = concat!(
    check_server_section!(),
    "upstreams:\n  orders:\n    backends: [\"127.0.0.1:4001\"]\n"
);

#[test]
fn check_refuses_a_bad_regex_with_its_yaml_path() {
    let yaml = format!(
        "{CHECK_BASE}routes:\n  - name: r\n    match: {{headers: {{X-Tenant: {{regex: \"t-(\"}}}}, query: {{v: {{regex: \"[a-\"}}}}}}\n    upstream: orders\n"
    );
    let err = assert_check_rejects_with(
        &yaml,
        &[],
        "error: routes[0].match.headers.X-Tenant.regex",
        &["invalid regex"],
    );
    assert!(
        err.contains("error: routes[0].match.query.v.regex: invalid regex"),
        "{err}"
    );
}

#[test]
fn check_refuses_two_forms_in_one_condition() {
    let yaml = format!(
        "{CHECK_BASE}routes:\n  - name: r\n    match: {{headers: {{X-A: {{prefix: a, regex: b}}}}}}\n    upstream: orders\n"
    );
    assert_check_rejects_with(
        &yaml,
        &[],
        "error: routes[0].match.headers",
        &["exactly one"],
    );
}

#[test]
fn check_accepts_every_form() {
    let yaml = format!(
        "{CHECK_BASE}routes:\n  - name: r\n    match: {{headers: {{X-A: 2, X-B: {{present: true}}, X-C: {{prefix: p}}, X-D: {{regex: \"^d$\"}}}}, query: {{q: \"1\"}}}}\n    upstream: orders\n"
    );
    let (code, _out, err) = check(&yaml);
    assert_eq!(code, 0, "{err}");
}
