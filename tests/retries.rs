//! Retries after the request was sent (issue 10): `retry_on` statuses and errors, idempotent
//! methods only, the retry budget, and zero client-visible failures when a backend dies under
//! load. Real binary, real backends on loopback; every loop is bounded.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::metrics;
use common::*;

/// Backends `a` and `b` behind a gateway whose upstream `pool` has the given options.
async fn pair(extra: &[&str]) -> (Backend, Backend, Gateway) {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let gw = Gateway::start(&pool_config(&[&a, &b], extra)).await;
    (a, b, gw)
}

/// No active checks: these tests are about what happens to requests, not the rotation.
const NO_ACTIVE: &str = "health_check: {type: tcp, interval: 1h, timeout: 1s}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_answered_503_is_retried_on_the_other_backend() {
    let (a, b, gw) = pair(&[
        NO_ACTIVE,
        "retries: 1",
        "retry_on: {statuses: [503], backoff: 1ms, max_backoff: 5ms}",
        // Room for every retry here; the budget has its own test.
        "retry_budget: {ratio: 1, min_per_second: 100}",
    ])
    .await;
    a.set_fail_status(Some(503));
    for i in 0..20 {
        let r = gw.get("/x").await;
        assert_eq!(r.status, 200, "request {i}: {r}");
        assert_eq!(r.header("x-backend"), Some("b"), "request {i}");
    }
    let (ha, hb) = (a.hits(), b.hits());
    assert!(ha >= 5, "round robin still sends to a first: {ha}");
    assert_eq!(hb, 20, "every request ends on b");
    let m = gw.admin_get("/metrics").await.text();
    assert_eq!(
        metrics::value(
            &m,
            "tollgate_upstream_retries_total",
            &[("reason", "status"), ("upstream", "pool")]
        )
        .unwrap_or(0.0),
        ha as f64,
        "one retry per 503: {m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_is_never_retried_after_it_was_sent() {
    let (a, b, gw) = pair(&[
        NO_ACTIVE,
        "retries: 2",
        "retry_on: {statuses: [503], errors: [reset], backoff: 1ms, max_backoff: 5ms}",
    ])
    .await;
    a.set_fail_status(Some(503));
    let c = client();
    let mut unavailable = 0;
    for i in 0..20 {
        let r = send_body(&c, "POST", &gw.url("/orders"), &[], b"{\"n\":1}".to_vec()).await;
        match r.status {
            200 => assert_eq!(r.header("x-backend"), Some("b"), "request {i}"),
            // The upstream's own answer, passed through: it is not the gateway's error.
            503 => {
                unavailable += 1;
                assert_eq!(r.header("x-backend"), Some("a"), "request {i}: {r}");
            }
            other => panic!("request {i}: unexpected {other}: {r}"),
        }
    }
    assert!(unavailable >= 5, "a got its share of POSTs: {unavailable}");
    assert_eq!(
        a.hits(),
        unavailable,
        "each POST that reached a was sent exactly once"
    );
    assert_eq!(a.hits() + b.hits(), 20, "no POST was sent twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_not_listed_pass_through_untouched() {
    let (a, b, gw) = pair(&[NO_ACTIVE, "retries: 1", "retry_on: {statuses: [502]}"]).await;
    a.set_fail_status(Some(503));
    b.set_fail_status(Some(503));
    for i in 0..6 {
        let r = gw.get("/x").await;
        assert_eq!(r.status, 503, "request {i}: {r}");
        assert!(
            r.text().contains("\"failed\":503"),
            "the upstream's own body: {r}"
        );
    }
    assert_eq!(a.hits() + b.hits(), 6, "one attempt per request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_is_retried_only_when_listed() {
    let (a, b, listed) = pair(&[
        NO_ACTIVE,
        "retries: 1",
        "retry_on: {errors: [reset], backoff: 1ms, max_backoff: 5ms}",
    ])
    .await;
    let fresh = client_no_keepalive();
    for i in 0..4 {
        let r = send(&fresh, "GET", &listed.url("/reset"), &[]).await;
        r.assert_gateway_error(502, "bad_gateway");
        assert_eq!(r.status, 502, "request {i}");
    }
    assert_eq!(
        a.hits() + b.hits(),
        8,
        "two attempts per GET when reset is listed"
    );

    let (c, d) = (Backend::start("c").await, Backend::start("d").await);
    let unlisted = Gateway::start(&pool_config(
        &[&c, &d],
        &[NO_ACTIVE, "retries: 1", "retry_on: {statuses: [503]}"],
    ))
    .await;
    for i in 0..4 {
        let r = send(&fresh, "GET", &unlisted.url("/reset"), &[]).await;
        assert_eq!(r.status, 502, "request {i}: {r}");
    }
    assert_eq!(
        c.hits() + d.hits(),
        4,
        "one attempt per GET when reset is not listed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_timeout_is_retried_when_listed() {
    let a = Backend::start_with_delay("a", Duration::from_secs(2)).await;
    let b = Backend::start_with_delay("b", Duration::from_secs(2)).await;
    let gw = Gateway::start(&pool_config(
        &[&a, &b],
        &[
            NO_ACTIVE,
            "read_timeout: 300ms",
            "retries: 1",
            "retry_on: {errors: [timeout], backoff: 1ms, max_backoff: 5ms}",
        ],
    ))
    .await;
    let r = gw.get("/slow").await;
    r.assert_gateway_error(504, "gateway_timeout");
    assert_eq!(
        a.hits() + b.hits(),
        2,
        "the timed-out GET was tried on both"
    );
}

/// The budget bounds the extra load retries add: with no ratio and a floor of 1/s, a burst of
/// failing requests gets at most a retry or two (the floor of one or two seconds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_budget_bounds_extra_attempts() {
    let (a, b, gw) = pair(&[
        NO_ACTIVE,
        "retries: 1",
        "retry_on: {statuses: [503], backoff: 1ms, max_backoff: 5ms}",
        "retry_budget: {ratio: 0, min_per_second: 1}",
    ])
    .await;
    a.set_fail_status(Some(503));
    b.set_fail_status(Some(503));
    let n = 20;
    for _ in 0..n {
        assert_eq!(gw.get("/x").await.status, 503);
    }
    let attempts = a.hits() + b.hits();
    assert!(
        (n + 1..=n + 3).contains(&attempts),
        "retries limited by the budget's floor: {attempts} attempts for {n} requests"
    );
    let m = gw.admin_get("/metrics").await.text();
    let exhausted = metrics::value(
        &m,
        "tollgate_retry_budget_exhausted_total",
        &[("upstream", "pool")],
    )
    .unwrap_or(0.0);
    assert_eq!(exhausted as usize, 2 * n - attempts, "{m}");
}

/// Killing one of three backends under continuous load: in-flight requests on it are reset and
/// new connects to it are refused; both are retried on the others, so no client sees a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_backend_under_load_fails_no_idempotent_request() {
    // Every answer takes 50 ms, so requests are always in flight on c when it dies.
    let slow = Duration::from_millis(50);
    let a = Backend::start_with_delay("a", slow).await;
    let b = Backend::start_with_delay("b", slow).await;
    let c = Arc::new(Backend::start_with_delay("c", slow).await);
    let gw = Arc::new(
        Gateway::start(&pool_config(
            &[&a, &b, &c],
            &[
                "health_check: {type: tcp, interval: 200ms, timeout: 200ms}",
                "retries: 2",
                "retry_on: {errors: [reset], backoff: 1ms, max_backoff: 10ms}",
            ],
        ))
        .await,
    );
    let per_worker = 40;
    let mut workers = Vec::new();
    for w in 0..6 {
        let gw = gw.clone();
        workers.push(tokio::spawn(async move {
            let c = client();
            let mut failures = Vec::new();
            for i in 0..per_worker {
                let r = send(&c, "GET", &gw.url(&format!("/slow/w{w}/{i}")), &[]).await;
                if r.status != 200 {
                    failures.push(format!("worker {w} request {i}: {r}"));
                }
            }
            failures
        }));
    }
    // Let traffic flow, then kill c while requests are in flight.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let hits_before_kill = c.hits();
    c.kill().await;
    let others_at_kill = a.hits() + b.hits();
    let mut failures = Vec::new();
    for w in workers {
        failures.extend(w.await.expect("worker"));
    }
    assert!(hits_before_kill > 0, "c was serving before it died");
    assert!(
        a.hits() + b.hits() >= others_at_kill + 50,
        "load went on after the kill ({others_at_kill} before, {} after)",
        a.hits() + b.hits()
    );
    assert!(
        failures.is_empty(),
        "client-visible failures: {failures:#?}"
    );
    assert!(
        a.hits() + b.hits() >= 6 * per_worker - c.hits(),
        "the others took over c's share"
    );
}
