//! Shadow traffic (`mirror`, issue 21) through the real binary: the shadow gets the share of
//! requests asked for, with the upstream path, headers and body and `X-Tollgate-Mirror: 1`;
//! a shadow that answers 500 or never answers changes nothing for the client; bodies over
//! `max_body` are not copied; copies over `max_concurrent` are dropped and counted.
//! (Client latency with a hanging shadow is a benchmark note, not asserted here: copies leave
//! from the logging phase, after the response.)

mod common;

use common::canned::{Canned, Upstream};
use common::*;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

fn mirror_body(primary: &Backend, shadow_addr: &str, mirror: &str) -> String {
    format!(
        "upstreams:\n{}  shadow:\n    backends: [\"{shadow_addr}\"]\n    read_timeout: 30s\nroutes:
  - name: orders
    match: {{path_prefix: /orders}}
    upstream: primary
    rewrite_prefix: /v2/orders
    mirror: {mirror}
",
        upstream_yaml("primary", &[primary], &[]),
    )
}

async fn mirror_count(gw: &Gateway, result: &str) -> f64 {
    let text = gw.admin_get("/metrics").await.text();
    metrics::value(
        &text,
        "tollgate_mirror_requests_total",
        &[("route", "orders"), ("result", result)],
    )
    .unwrap_or(0.0)
}

/// Waits (≤ 10 s) until `tollgate_mirror_requests_total{result}` reaches `want`.
async fn wait_mirror_count(gw: &Gateway, result: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = mirror_count(gw, result).await;
        if n >= want {
            assert_eq!(n, want, "more {result} copies than expected");
            return;
        }
        assert!(Instant::now() < deadline, "{result}: {n} of {want} copies");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// percent: 100 — every request is copied, with the rewritten path, the gateway's headers and
/// the body, marked `X-Tollgate-Mirror: 1`; the client only sees the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_copy_has_the_upstream_path_headers_and_body() {
    let primary = Backend::start("primary").await;
    let shadow = Upstream::start().await;
    shadow.serve("/v2/orders/7", Canned::json("{\"shadow\":true}"));
    let gw = Gateway::start(&mirror_body(
        &primary,
        &shadow.addr(),
        "{upstream: shadow, percent: 100}",
    ))
    .await;

    for i in 0..10 {
        let r = send_body(
            &gw.client,
            "POST",
            &gw.url("/orders/7?x=1"),
            &[("x-test", "t")],
            vec![b'a'; 100 + i],
        )
        .await;
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(r.echo().backend, "primary");
        assert!(r.header("x-tollgate-mirror").is_none());
    }
    wait_mirror_count(&gw, "sent", 10.0).await;
    let seen = shadow.seen("/v2/orders/7");
    assert_eq!(seen.len(), 10);
    for s in &seen {
        assert_eq!(s.method, "POST");
        // (the canned upstream records the path without its query; `encode`'s unit test
        // covers the query)
        assert_eq!(s.path, "/v2/orders/7");
        assert_eq!(s.header_all("x-tollgate-mirror"), vec!["1"]);
        assert_eq!(s.header_all("x-test"), vec!["t"]);
        assert_eq!(s.header_all("x-request-id").len(), 1);
        let len: usize = s.header_all("content-length")[0].parse().expect("length");
        assert!((100..110).contains(&len), "{len}");
    }
}

/// percent: 25 over 800 requests: 25% ± 5% copied (the binomial σ is 12.2 copies, so ±40 is
/// 3.3 σ). The shadow answers 500 to all of them: every client request is still a 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_is_copied_and_a_failing_shadow_changes_nothing() {
    let primary = Backend::start("primary").await;
    let shadow = Backend::start("shadow").await;
    shadow.set_fail_status(Some(500));
    let gw = Gateway::start(&mirror_body(
        &primary,
        &shadow.addr(),
        "{upstream: shadow, percent: 25}",
    ))
    .await;
    for i in 0..800 {
        let r = gw.get(&format!("/orders/{i}")).await;
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(r.echo().backend, "primary");
    }
    // Settle: copies leave after responses; wait until two scrapes 200 ms apart agree.
    let mut last = -1.0;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = mirror_count(&gw, "sent").await + mirror_count(&gw, "error").await;
        if n == last && n as usize == shadow.hits() {
            break;
        }
        assert!(Instant::now() < deadline, "copies never settled");
        last = n;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let copies = shadow.hits();
    assert!(
        (160..=240).contains(&copies),
        "{copies} of 800 copied at 25%"
    );
    assert_eq!(primary.hits(), 800);
}

/// Bodies over `max_body` are not copied (counted `too_large`); smaller ones are, whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_max_body_are_not_mirrored() {
    let primary = Backend::start("primary").await;
    let shadow = Backend::start("shadow").await;
    let gw = Gateway::start(&mirror_body(
        &primary,
        &shadow.addr(),
        "{upstream: shadow, percent: 100, max_body: 1KiB}",
    ))
    .await;
    let r = send_body(
        &gw.client,
        "POST",
        &gw.url("/orders/1"),
        &[],
        vec![b'x'; 1000],
    )
    .await;
    assert_eq!(r.status, 200, "{r}");
    wait_mirror_count(&gw, "sent", 1.0).await;
    assert_eq!(shadow.max_body_len(), 1000);
    let r = send_body(
        &gw.client,
        "POST",
        &gw.url("/orders/1"),
        &[],
        vec![b'x'; 5000],
    )
    .await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.echo().body_len, 5000);
    wait_mirror_count(&gw, "too_large", 1.0).await;
    assert_eq!(shadow.hits(), 1);
    assert_eq!(shadow.max_body_len(), 1000);
}

/// A shadow that accepts and never answers: the first `max_concurrent` copies hang, every
/// later one is dropped and counted, and every client request is answered by the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_shadow_fills_the_bound_and_overflow_is_dropped_and_counted() {
    let primary = Backend::start("primary").await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = listener.accept().await {
            conns.push(c); // read nothing, answer nothing
        }
    });
    let gw = Gateway::start(&mirror_body(
        &primary,
        &addr,
        "{upstream: shadow, percent: 100, max_concurrent: 4}",
    ))
    .await;
    for i in 0..20 {
        let r = gw.get(&format!("/orders/{i}")).await;
        assert_eq!(r.status, 200, "{r}");
    }
    wait_mirror_count(&gw, "dropped", 16.0).await;
    assert_eq!(mirror_count(&gw, "sent").await, 0.0);
    held.abort();
}

const CHECK_BASE: &str = concat!(
    check_server_section!(),
    "upstreams:\n  v1:\n    backends: [\"127.0.0.1:4001\"]\n"
);

#[test]
fn check_refuses_a_dangling_mirror_and_warns_about_a_self_mirror() {
    let yaml = format!(
        "{CHECK_BASE}routes:\n  - name: a\n    upstream: v1\n    mirror: {{upstream: shadw, percent: 150}}\n"
    );
    let err = assert_check_rejects_with(
        &yaml,
        &[],
        "error: routes[0].mirror.upstream",
        &["no upstream named \"shadw\""],
    );
    assert!(
        err.contains("error: routes[0].mirror.percent: must be between 0 and 100"),
        "{err}"
    );
    let yaml = format!(
        "{CHECK_BASE}routes:\n  - name: a\n    upstream: v1\n    mirror: {{upstream: v1}}\n"
    );
    let (code, out, err) = check(&yaml);
    assert_eq!(code, 0, "{err}");
    let all = format!("{out}{err}");
    assert!(all.contains("warning: routes[0].mirror.upstream"), "{all}");
}
