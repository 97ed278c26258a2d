//! Load balancing over health-checked pools, retries, timeouts, and the admin listener
//! (DESIGN.md request path step 7, error table, observability).

mod common;

use std::time::Duration;

use common::*;

/// How long a backend may take to leave the rotation after it dies: 2 health-check intervals
/// (200 ms each) plus one check timeout (200 ms), with generous slack for a loaded test machine.
const LEAVE_BOUND: Duration = Duration::from_millis(1500);

/// Polling for "eventually" conditions: at most `POLLS` × `POLL_EVERY` (≈ 5 s) plus request time.
const POLLS: usize = 50;
const POLL_EVERY: Duration = Duration::from_millis(100);

async fn get_n(gw: &Gateway, n: usize) -> Vec<Resp> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(gw.get("/rr").await);
    }
    out
}

fn assert_all_ok(rs: &[Resp], what: &str) {
    for (i, r) in rs.iter().enumerate() {
        assert_eq!(r.status, 200, "{what}: request #{i} failed: {r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_over_three_backends() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let c = Backend::start("c").await;
    let gw = Gateway::start(&pool_config(&[&a, &b, &c], &[FAST_HEALTH, "retries: 0"])).await;

    let rs = get_n(&gw, 30).await;
    assert_all_ok(&rs, "round robin");
    for be in [&a, &b, &c] {
        let n = be.hits();
        assert!(
            (9..=11).contains(&n),
            "backend {} got {n} of 30 requests (a={}, b={}, c={})",
            be.name(),
            a.hits(),
            b.hits(),
            c.hits()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_round_robin() {
    let heavy = Backend::start("heavy").await;
    let light = Backend::start("light").await;
    let body = format!(
        "upstreams:
  pool:
    backends: [{{addr: \"{}\", weight: 2}}, \"{}\"]
    {FAST_HEALTH}
    retries: 0
routes:
  - name: all
    match: {{path_prefix: /}}
    upstream: pool
",
        heavy.addr(),
        light.addr()
    );
    let gw = Gateway::start(&body).await;

    let rs = get_n(&gw, 30).await;
    assert_all_ok(&rs, "weighted");
    let (h, l) = (heavy.hits(), light.hits());
    assert_eq!(h + l, 30);
    assert!(
        (18..=22).contains(&h) && (8..=12).contains(&l),
        "weight 2:1 over 30 requests gave heavy={h} light={l}"
    );
}

/// A backend killed mid-test leaves the rotation within ~2 health-check intervals (then no request
/// fails, even with `retries: 0`), and rejoins after it is revived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_backend_leaves_and_rejoins_rotation() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let c = Backend::start("c").await;
    let gw = Gateway::start(&pool_config(&[&a, &b, &c], &[FAST_HEALTH, "retries: 0"])).await;

    assert_all_ok(&get_n(&gw, 6).await, "before kill");
    assert!(c.hits() > 0, "c got no traffic before the kill");

    c.kill().await;
    let c_before = c.hits();
    tokio::time::sleep(LEAVE_BOUND).await;

    let rs = get_n(&gw, 20).await;
    assert_all_ok(&rs, "after c left the rotation");
    assert_eq!(c.hits(), c_before, "dead backend got requests");

    c.revive().await;
    let before = c.hits();
    let mut rejoined = false;
    for _ in 0..POLLS {
        let r = gw.get("/rr").await;
        assert_eq!(r.status, 200, "request failed while c was rejoining: {r}");
        if c.hits() > before {
            rejoined = true;
            break;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    assert!(
        rejoined,
        "revived backend c received no request within ~5 s"
    );
    // and the rotation is complete again
    let (a0, b0, c0) = (a.hits(), b.hits(), c.hits());
    assert_all_ok(&get_n(&gw, 9).await, "after revive");
    for (name, n) in [
        ("a", a.hits() - a0),
        ("b", b.hits() - b0),
        ("c", c.hits() - c0),
    ] {
        assert!((2..=4).contains(&n), "after revive, {name} got {n} of 9");
    }
}

/// An HTTP health check answering 503 takes the backend out of rotation (even though it still
/// serves traffic), and 200 brings it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_http_health_check_removes_backend() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let gw = Gateway::start(&pool_config(&[&a, &b], &[FAST_HEALTH, "retries: 0"])).await;
    assert!(
        b.health_hits() > 0,
        "no health check reached b before start"
    );

    b.set_healthy(false);
    tokio::time::sleep(LEAVE_BOUND).await;
    let b_before = b.hits();
    assert_all_ok(&get_n(&gw, 10).await, "b unhealthy");
    assert_eq!(b.hits(), b_before, "unhealthy backend still in rotation");

    b.set_healthy(true);
    let mut back = false;
    for _ in 0..POLLS {
        let r = gw.get("/rr").await;
        assert_eq!(r.status, 200, "{r}");
        if b.hits() > b_before {
            back = true;
            break;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    assert!(
        back,
        "backend b did not rejoin within ~5 s after turning healthy"
    );
}

/// `type: tcp` health checks detect a dead backend too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_health_check_detects_dead_backend() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let gw = Gateway::start(&pool_config(
        &[&a, &b],
        &[
            "health_check: {type: tcp, interval: 200ms, timeout: 200ms, healthy_threshold: 1, unhealthy_threshold: 2}",
            "retries: 0",
        ],
    ))
    .await;
    assert_all_ok(&get_n(&gw, 4).await, "both alive");
    assert_eq!(b.hits(), 2);

    b.kill().await;
    tokio::time::sleep(LEAVE_BOUND).await;
    assert_all_ok(&get_n(&gw, 10).await, "b dead");
    assert_eq!(b.hits(), 2);
}

/// The gateway runs one health round before it accepts traffic: a backend that is dead at start
/// never gets a request and no request fails (with `retries: 0`, so a retry cannot hide it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_dead_before_start_is_never_used() {
    let a = Backend::start("a").await;
    let dead = Backend::start("dead").await;
    dead.kill().await;
    let gw = Gateway::start(&pool_config(&[&a, &dead], &[FAST_HEALTH, "retries: 0"])).await;

    let rs = get_n(&gw, 20).await;
    assert_all_ok(&rs, "one backend dead before start");
    assert_eq!(a.hits(), 20);
    assert_eq!(dead.hits(), 0);
}

/// Every backend dead: 503 JSON with `Retry-After`. (One connection per request here, so that
/// keep-alive handling, tested in `error_responses_keep_connection_usable`, does not interfere.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_backends_dead_is_503_with_retry_after() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let gw = Gateway::start(&pool_config(&[&a, &b], &[FAST_HEALTH, "retries: 0"])).await;
    assert_all_ok(&get_n(&gw, 2).await, "alive");

    let fresh = client_no_keepalive();
    let url = gw.url("/rr");
    a.kill().await;
    b.kill().await;
    let mut r = send(&fresh, "GET", &url, &[]).await;
    for _ in 0..POLLS {
        if r.status == 503 {
            break;
        }
        tokio::time::sleep(POLL_EVERY).await;
        r = send(&fresh, "GET", &url, &[]).await;
    }
    assert_eq!(
        r.status, 503,
        "no 503 within ~5 s of killing every backend: {r}"
    );
    r.assert_gateway_error(503, "service_unavailable");
    let ra = r
        .header("retry-after")
        .unwrap_or_else(|| panic!("503 without Retry-After: {r}"));
    assert!(!ra.trim().is_empty(), "empty Retry-After: {r}");
    let msg = r.json()["message"].as_str().unwrap_or_default().to_string();
    assert!(
        !msg.contains(&a.addr()) && !msg.contains(&b.addr()),
        "message leaks a backend address: {r}"
    );

    // still 503 (not a hang or a 502) on the next ones
    for _ in 0..3 {
        send(&fresh, "GET", &url, &[])
            .await
            .assert_gateway_error(503, "service_unavailable");
    }
}

/// After an error response the gateway produced (404, 502, 503, 504), the client connection is
/// either still usable for the next request, or the response said `Connection: close`. Closing
/// a connection after advertising keep-alive makes keep-alive clients fail their next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_responses_keep_connection_usable() {
    let ok = Backend::start("ok").await;
    let dead = Backend::start("dead").await;
    dead.kill().await;
    let gone = Backend::start("gone").await;
    let slow = Backend::start("slow").await;
    let body = format!(
        "upstreams:\n{}{}{}{}\nroutes:
  - name: ok
    match: {{path_prefix: /ok}}
    upstream: ok
  - name: dead
    match: {{path_prefix: /dead}}
    upstream: dead
  - name: gone
    match: {{path_prefix: /gone}}
    upstream: gone
  - name: slow
    match: {{path_prefix: /slow}}
    upstream: slow
",
        upstream_yaml("ok", &[&ok], &[FAST_HEALTH]),
        upstream_yaml("dead", &[&dead], &[FAST_HEALTH, "retries: 0"]),
        upstream_yaml(
            "gone",
            &[&gone],
            &[
                "health_check: {type: http, path: /health, interval: 1h, timeout: 1s, healthy_threshold: 1, unhealthy_threshold: 2}",
                "retries: 0",
            ],
        ),
        upstream_yaml("slow", &[&slow], &[FAST_HEALTH, "retries: 0", "read_timeout: 500ms"]),
    );
    let gw = Gateway::start(&body).await;
    // `gone` is healthy at start and dies now: its next request is a connect failure (502)
    gone.kill().await;

    let mut problems = Vec::new();
    for (path, want) in [
        ("/nothing", 404),
        ("/gone", 502),
        ("/dead", 503),
        ("/slow/x", 504),
    ] {
        let mut conn = RawConn::connect(gw.port).await;
        let req = format!("GET {path} HTTP/1.1\r\nHost: gw.test\r\n\r\n");
        let r = conn
            .request(&req)
            .await
            .unwrap_or_else(|| panic!("GET {path}: connection closed without a response"));
        assert_eq!(r.status, want, "GET {path}: {r}");
        let says_close = r
            .header("connection")
            .map(|v| v.to_ascii_lowercase().contains("close"))
            .unwrap_or(false);
        if says_close {
            continue;
        }
        match conn
            .request("GET /ok HTTP/1.1\r\nHost: gw.test\r\n\r\n")
            .await
        {
            Some(next) if next.status == 200 => {}
            Some(next) => problems.push(format!(
                "after GET {path} -> {want}: next request on the connection got {next}"
            )),
            None => problems.push(format!(
                "after GET {path} -> {want} (response without `Connection: close`, headers {:?}), \
                 the gateway closed the connection: the next request on it failed",
                r.headers
            )),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// With health checks effectively off, a connect failure is retried on another backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failure_retried_on_other_backend() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let gw = Gateway::start(&pool_config(
        &[&a, &b],
        &[
            "health_check: {type: http, path: /health, interval: 1h, timeout: 1s, healthy_threshold: 1, unhealthy_threshold: 2}",
            "retries: 1",
        ],
    ))
    .await;
    assert_all_ok(&get_n(&gw, 4).await, "both alive");
    assert_eq!(b.hits(), 2);

    b.kill().await;
    let a_before = a.hits();
    let rs = get_n(&gw, 20).await;
    assert_all_ok(&rs, "b dead, retries: 1");
    assert_eq!(a.hits() - a_before, 20);
    assert_eq!(b.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_read_timeout_is_504() {
    let a = Backend::start("a").await;
    let gw = Gateway::start(&pool_config(
        &[&a],
        &[FAST_HEALTH, "retries: 0", "read_timeout: 500ms"],
    ))
    .await;
    // one connection per request: keep-alive after errors is `error_responses_keep_connection_usable`
    let fresh = client_no_keepalive();
    let r = send(&fresh, "GET", &gw.url("/slow/x"), &[]).await;
    r.assert_gateway_error(504, "gateway_timeout");
    // fast requests on the same upstream are fine
    let r = send(&fresh, "GET", &gw.url("/fast"), &[]).await;
    assert_eq!(r.echo().path, "/fast");
}

/// `/ready` (admin port) is 200 only while every upstream has a healthy backend, with
/// per-upstream healthy/total counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_follows_upstream_health() {
    let o1 = Backend::start("o1").await;
    let o2 = Backend::start("o2").await;
    let u1 = Backend::start("u1").await;
    let body = format!(
        "upstreams:\n{}{}\nroutes:
  - name: orders
    match: {{path_prefix: /orders}}
    upstream: orders
  - name: users
    match: {{path_prefix: /users}}
    upstream: users
",
        upstream_yaml("orders", &[&o1, &o2], &[FAST_HEALTH]),
        upstream_yaml("users", &[&u1], &[FAST_HEALTH]),
    );
    let gw = Gateway::start(&body).await;

    let r = gw.admin_get("/ready").await;
    assert_eq!(r.status, 200, "{r}");
    let v = r.json();
    assert_eq!(upstream_counts(&v, "orders"), Some((2, 2)), "{r}");
    assert_eq!(upstream_counts(&v, "users"), Some((1, 1)), "{r}");

    o1.kill().await;
    o2.kill().await;
    let mut r = gw.admin_get("/ready").await;
    for _ in 0..POLLS {
        if r.status == 503 {
            break;
        }
        tokio::time::sleep(POLL_EVERY).await;
        r = gw.admin_get("/ready").await;
    }
    assert_eq!(
        r.status, 503,
        "/ready not 503 within ~5 s of the orders pool dying: {r}"
    );
    let v = r.json();
    assert_eq!(upstream_counts(&v, "orders"), Some((0, 2)), "{r}");
    assert_eq!(upstream_counts(&v, "users"), Some((1, 1)), "{r}");
    assert!(
        r.text().replace(' ', "").contains("\"healthy\":0"),
        "no \"healthy\":0 in {r}"
    );
    // liveness is not readiness
    assert_eq!(gw.admin_get("/health").await.status, 200);

    o1.revive().await;
    o2.revive().await;
    let mut r = gw.admin_get("/ready").await;
    for _ in 0..POLLS {
        if r.status == 200 {
            break;
        }
        tokio::time::sleep(POLL_EVERY).await;
        r = gw.admin_get("/ready").await;
    }
    assert_eq!(
        r.status, 200,
        "/ready did not return to 200 within ~5 s: {r}"
    );
    let v = r.json();
    assert_eq!(upstream_counts(&v, "orders"), Some((2, 2)), "{r}");
    assert_eq!(upstream_counts(&v, "users"), Some((1, 1)), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_health_and_admin_paths_not_on_public_port() {
    let a = Backend::start("a").await;
    let app = Backend::start("app").await;
    let body = format!(
        "upstreams:\n{}{}\nroutes:
  - name: api
    match: {{path_prefix: /api}}
    upstream: pool
  - name: app
    match: {{host: app.local, path_prefix: /}}
    upstream: app
",
        upstream_yaml("pool", &[&a], &[]),
        upstream_yaml("app", &[&app], &[]),
    );
    let gw = Gateway::start(&body).await;

    assert_eq!(gw.admin_get("/health").await.status, 200);
    assert_eq!(gw.admin_get("/ready").await.status, 200);

    // on the public port, admin paths are ordinary paths: no route -> 404 ...
    for path in ["/health", "/ready", "/metrics"] {
        let r = gw.get(path).await;
        r.assert_gateway_error(404, "not_found");
    }
    // ... and with a matching route they go to the backend
    let r = gw.get_with("/health", &[("host", "app.local")]).await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(
        r.header("x-backend"),
        Some("app"),
        "public /health not proxied: {r}"
    );
    for path in ["/ready", "/metrics", "/health/x"] {
        let r = gw.get_with(path, &[("host", "app.local")]).await;
        let e = r.echo();
        assert_eq!(e.backend, "app", "{r}");
        assert_eq!(e.path, path);
    }
    assert_eq!(a.hits(), 0);
}

/// Passive health (issue 10): with active checks effectively off, a backend that fails
/// `consecutive_failures` requests in a row leaves the rotation; nothing else fails after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_health_ejects_a_failing_backend() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let gw = Gateway::start(&pool_config(
        &[&a, &b],
        &[
            "health_check: {type: tcp, interval: 1h, timeout: 1s}",
            "retries: 0",
            "passive_health: {consecutive_failures: 2, base_ejection: 30s, max_ejection: 1m}",
        ],
    ))
    .await;
    assert_all_ok(&get_n(&gw, 4).await, "both alive");
    b.kill().await;
    let first = get_n(&gw, 10).await;
    let failed: Vec<u16> = first
        .iter()
        .map(|r| r.status)
        .filter(|s| *s != 200)
        .collect();
    assert_eq!(
        failed,
        vec![502, 502],
        "exactly the two consecutive failures that eject b: {first:?}"
    );
    let a_before = a.hits();
    assert_all_ok(&get_n(&gw, 20).await, "b ejected");
    assert_eq!(a.hits() - a_before, 20);
}

/// Ejection never empties a pool (panic threshold): with its only backend ejected, requests are
/// still attempted (502 from the failed connect), not refused as "no healthy backend" (503).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_health_never_ejects_the_last_backend() {
    let a = Backend::start("a").await;
    let gw = Gateway::start(&pool_config(
        &[&a],
        &[
            "health_check: {type: tcp, interval: 1h, timeout: 1s}",
            "retries: 0",
            "passive_health: {consecutive_failures: 1, base_ejection: 1m}",
        ],
    ))
    .await;
    a.kill().await;
    let fresh = client_no_keepalive();
    for i in 0..3 {
        let r = send(&fresh, "GET", &gw.url("/x"), &[]).await;
        r.assert_gateway_error(502, "bad_gateway");
        assert_ne!(r.status, 503, "request {i}");
    }
    a.revive().await;
    let r = send(&fresh, "GET", &gw.url("/x"), &[]).await;
    assert_eq!(
        r.status, 200,
        "the only backend is used again as soon as it answers: {r}"
    );
}

/// Circuit breaker (issue 10): enough failures open the circuit — fast 503 with Retry-After and
/// no upstream attempt — then after `open_for` one probe closes it again when the backend is
/// back. The state is exported as `tollgate_circuit_state{upstream}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaker_opens_then_recovers() {
    let a = Backend::start("a").await;
    let gw = Gateway::start(&pool_config(
        &[&a],
        &[
            "health_check: {type: tcp, interval: 1h, timeout: 1s}",
            "retries: 0",
            "circuit_breaker: {error_ratio: 0.5, min_requests: 4, window: 30s, open_for: 2s}",
        ],
    ))
    .await;
    let fresh = client_no_keepalive();
    let metric = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("tollgate_circuit_state{upstream=\"pool\"}"))
            .map(|l| l.rsplit(' ').next().unwrap_or("").to_string())
    };
    a.kill().await;
    for i in 0..4 {
        let r = send(&fresh, "GET", &gw.url("/x"), &[]).await;
        r.assert_gateway_error(502, "bad_gateway");
        assert_eq!(r.status, 502, "failure {i} reaches the (dead) backend");
    }
    a.revive().await;
    let hits = a.hits();
    let r = send(&fresh, "GET", &gw.url("/x"), &[]).await;
    r.assert_gateway_error(503, "service_unavailable");
    let retry: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After on an open circuit");
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    assert_eq!(a.hits(), hits, "an open circuit makes no upstream attempt");
    let m = send(&fresh, "GET", &gw.admin_url("/metrics"), &[])
        .await
        .text();
    assert_eq!(metric(&m).as_deref(), Some("1"), "open");

    tokio::time::sleep(Duration::from_millis(2200)).await;
    let r = send(&fresh, "GET", &gw.url("/x"), &[]).await;
    assert_eq!(r.status, 200, "the half-open probe succeeds: {r}");
    for _ in 0..5 {
        assert_eq!(send(&fresh, "GET", &gw.url("/x"), &[]).await.status, 200);
    }
    let m = send(&fresh, "GET", &gw.admin_url("/metrics"), &[])
        .await
        .text();
    assert_eq!(metric(&m).as_deref(), Some("0"), "closed again");
}

/// Passive health on answers, not only on connects: a backend answering 500 to everything (half
/// of the pool's traffic) is ejected after `consecutive_failures`, and the client error rate
/// drops to zero while it is out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_answering_500_is_ejected_and_errors_stop() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let gw = Gateway::start(&pool_config(
        &[&a, &b],
        &[
            "health_check: {type: tcp, interval: 1h, timeout: 1s}",
            "retries: 0",
            "passive_health: {consecutive_failures: 3, base_ejection: 30s, max_ejection: 1m}",
        ],
    ))
    .await;
    a.set_fail_status(Some(500));
    let before: Vec<u16> = get_n(&gw, 20).await.iter().map(|r| r.status).collect();
    let errors = before.iter().filter(|s| **s == 500).count();
    assert_eq!(errors, 3, "exactly the failures that eject a: {before:?}");
    let a_hits = a.hits();
    assert_all_ok(&get_n(&gw, 20).await, "a ejected");
    assert_eq!(a.hits(), a_hits, "no request reaches the ejected backend");
}

/// `server.work_stealing: false` (one single-threaded event loop per worker thread) serves
/// concurrent clients, balances over the pool and keeps the health checks running, as the
/// default runtime does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_loops_without_work_stealing_serve_and_balance() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let gw = Gateway::start_with(
        &["work_stealing: false"],
        &pool_config(&[&a, &b], &[FAST_HEALTH, "retries: 0"]),
    )
    .await;
    let mut calls = Vec::new();
    for _ in 0..40 {
        let client = gw.client.clone();
        let url = gw.url("/rr");
        calls.push(tokio::spawn(async move {
            common::client::send(&client, "GET", &url, &[]).await
        }));
    }
    for call in calls {
        let r = call.await.expect("request task");
        assert_eq!(r.status, 200, "{r}");
    }
    assert_eq!(a.hits() + b.hits(), 40);
    assert!(
        a.hits() >= 15 && b.hits() >= 15,
        "a={} b={}",
        a.hits(),
        b.hits()
    );
    // The health checks run on their own loop: a dead backend still leaves the rotation.
    b.kill().await;
    tokio::time::sleep(LEAVE_BOUND).await;
    let before = a.hits();
    assert_all_ok(&get_n(&gw, 10).await, "after b died");
    assert_eq!(a.hits() - before, 10, "{}", gw.logs());
}
