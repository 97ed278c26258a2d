//! Rate limiting (DESIGN.md "Rate limiting", issue 4): sliding-window admission under sustained
//! overload, per-key independence (`client_ip`, `consumer`, `header:`), several limits on one
//! route, `X-RateLimit-*` / `Retry-After` headers, the 429 body, 429s never reaching the
//! backend, the `tollgate_rate_limited_total` metric, and `tollgate check` rejections.
//!
//! How the limiter counts (needed to reason about expected numbers): one count-min sketch per
//! named limit, holding each key's admitted requests per quarter of the window (`sub = per / 4`),
//! on fixed boundaries shared by all keys of a limit and counted from the moment the gateway built
//! the limit. A request is admitted while `c₀ × (1 − f) + c₁ + c₂ + c₃ + c₄ < requests`: `c₀` is the
//! quarter sliding out of the window, `c₄` the current one, `f` the elapsed fraction of the current
//! quarter; only admitted requests are counted. Tests that depend on the phase find a boundary
//! first (see [`align_to_the_interval`]).
//!
//! Every loop is bounded in count and time; nothing asserts throughput or wall time.

mod common;

use std::time::Duration;

use common::metrics;
use common::tokens::{hs256_jwt, sha256_hex, unix_now};
use common::*;
use serde_json::Value;

/// `server:` extra that lets loopback vouch for `X-Forwarded-For`, so one test process can act
/// as many clients.
const TRUST_LOOPBACK: &str = r#"trusted_proxies: ["127.0.0.0/8"]"#;

/// `upstreams:` (one upstream `pool` → `backend`), then `extra` top-level sections verbatim
/// (`rate_limits:`, `auth:`, ...), then `routes:` verbatim.
fn config(backend: &Backend, extra: &str, routes: &str) -> String {
    format!(
        "upstreams:\n{}\n{extra}\nroutes:\n{routes}",
        upstream_yaml("pool", &[backend], &["retries: 0"])
    )
}

/// Starts a gateway that trusts loopback for `X-Forwarded-For`.
async fn gateway(backend: &Backend, extra: &str, routes: &str) -> Gateway {
    Gateway::start_with(&[TRUST_LOOPBACK], &config(backend, extra, routes)).await
}

/// `GET path` as client `ip` (via `X-Forwarded-For` from a trusted loopback peer), plus headers.
async fn get_as(gw: &Gateway, path: &str, ip: &str, headers: &[(&str, &str)]) -> Resp {
    let mut all: Vec<(&str, &str)> = vec![("X-Forwarded-For", ip)];
    all.extend_from_slice(headers);
    gw.get_with(path, &all).await
}

/// The limiter's sub-intervals are fixed to the moment the gateway built it, which a test cannot
/// see, so "start now" lands at a random phase. This finds a sub-interval boundary with another
/// client of the same limit: a burst past the limit, then a poll until that client is admitted
/// again, which happens as soon as a boundary passes and the burst's sub-interval starts to
/// slide out of the window; then it waits for the next window boundary of that grid. Returns
/// that client's admissions (backend hits). Bounded: 40 burst requests and polling for at most
/// 2 windows.
async fn align_to_the_interval(gw: &Gateway, per: Duration) -> usize {
    let probe = "10.9.9.8";
    let mut admitted = 0;
    for _ in 0..40 {
        if get_as(gw, "/x", probe, &[]).await.status != 200 {
            break;
        }
        admitted += 1;
    }
    let deadline = tokio::time::Instant::now() + per * 2;
    let boundary = loop {
        tokio::time::sleep(Duration::from_millis(2)).await;
        if get_as(gw, "/x", probe, &[]).await.status == 200 {
            admitted += 1;
            break tokio::time::Instant::now();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the probe client was not admitted again within two intervals"
        );
    };
    // Just after the next boundary (the poll saw this one within a few milliseconds).
    tokio::time::sleep_until(boundary + per + Duration::from_millis(5)).await;
    admitted
}

/// A header that must be present and an unsigned integer.
#[track_caller]
fn num_header(r: &Resp, name: &str) -> u64 {
    let v = r
        .header(name)
        .unwrap_or_else(|| panic!("missing {name} header: {r}"));
    v.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not an unsigned integer ({v:?}): {r}"))
}

/// `(X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset)`, all required.
#[track_caller]
fn rl_headers(r: &Resp) -> (u64, u64, u64) {
    (
        num_header(r, "x-ratelimit-limit"),
        num_header(r, "x-ratelimit-remaining"),
        num_header(r, "x-ratelimit-reset"),
    )
}

/// Asserts a well-formed 429 (JSON `rate_limited` body, `Content-Type: application/json`,
/// `Retry-After` ≥ 1 whole seconds); returns `Retry-After`.
#[track_caller]
fn assert_429(r: &Resp) -> u64 {
    r.assert_gateway_error(429, "rate_limited");
    let retry = num_header(r, "retry-after");
    assert!(retry >= 1, "Retry-After must be at least 1 s: {r}");
    retry
}

fn count(rs: &[Resp], status: u16) -> usize {
    rs.iter().filter(|r| r.status == status).count()
}

fn statuses(rs: &[Resp]) -> Vec<u16> {
    rs.iter().map(|r| r.status).collect()
}

/// One request of a paced run: when it was sent (relative to the first) and what came back.
struct Sent {
    at: Duration,
    resp: Resp,
}

/// Sends `n` sequential GETs as client `ip`, request `i` no earlier than `i × period` after the
/// first (never more than one in flight; a slow request delays the next, which then catches up).
/// Bounded: `n` requests, each with the client's 10 s timeout, the whole run ≤ `n × period + 60 s`.
async fn send_paced(gw: &Gateway, path: &str, ip: &str, n: usize, period: Duration) -> Vec<Sent> {
    let limit = period * n as u32 + Duration::from_secs(60);
    let run = async {
        let start = tokio::time::Instant::now();
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            tokio::time::sleep_until(start + period * i as u32).await;
            let at = start.elapsed();
            let resp = get_as(gw, path, ip, &[]).await;
            out.push(Sent { at, resp });
        }
        out
    };
    tokio::time::timeout(limit, run)
        .await
        .unwrap_or_else(|_| panic!("paced run of {n} requests did not finish within {limit:?}"))
}

/// `[floor(0.9 × x), ceil(1.1 × x)]`: ±10 % of `x`, widened to whole requests.
fn ten_percent_band(x: u64) -> (u64, u64) {
    ((x * 9) / 10, (x * 11).div_ceil(10))
}

/// Checks a paced run against a limit of `limit` per window over `windows` windows: every
/// response is a 200 or a well-formed 429, the backend saw exactly the 200s, and the number of
/// 200s is within ±10 % of `limit × windows`. Returns the number of 200s.
#[track_caller]
fn assert_admitted_within_ten_percent(
    sent: &[Sent],
    backend: &Backend,
    other_hits: usize,
    limit: u64,
    windows: u64,
    what: &str,
) -> usize {
    for s in sent {
        match s.resp.status {
            200 => {}
            429 => {
                assert_429(&s.resp);
            }
            other => panic!(
                "{what}: unexpected status {other} at {:?}: {}",
                s.at, s.resp
            ),
        }
    }
    let rs: Vec<Resp> = sent.iter().map(|s| s.resp.clone()).collect();
    let ok = count(&rs, 200);
    assert_eq!(
        backend.hits(),
        ok + other_hits,
        "{what}: the backend must see exactly the admitted requests"
    );
    let (lo, hi) = ten_percent_band(limit * windows);
    eprintln!("{what}: admitted {ok} of {} (band {lo}..={hi})", sent.len());
    let timeline: Vec<String> = sent
        .iter()
        .map(|s| format!("{}ms:{}", s.at.as_millis(), s.resp.status))
        .collect();
    assert!(
        (lo as usize..=hi as usize).contains(&ok),
        "{what}: admitted {ok} of {} requests; expected {lo}..={hi} (limit {limit} × {windows} \
         windows ± 10 %)\ntimeline: {}",
        sent.len(),
        timeline.join(" ")
    );
    ok
}

// ---------------------------------------------------------------------------------------------
// Sustained overload
// ---------------------------------------------------------------------------------------------

/// A client sending at 3× its limit for 3 windows is admitted at its limit, within ±10 %.
///
/// Limit 20 per 1 s; 60 requests/s, paced, for 3 s (180 requests, the last at 2.983 s). The
/// run starts at a boundary (`align_to_the_interval`). Expected, with only admitted requests
/// counted:
/// * window 1: the first 20 requests (sent within ~0.33 s: 15 in the first quarter, 5 in the
///   second) are admitted, the rest of the window is refused;
/// * windows 2 and 3: budget comes back as those quarters slide out of the window, one admission
///   each time the sliding quarter's weighted count drops by one → 20 each.
///
/// So 60 of 180 against `20 × 3 = 60 ± 10 %` = 54..=66. (A limit of 10 at 30/s gives 28, one
/// request from the band's edge, hence the larger limit.) The backend's hits must equal the
/// number of 200s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_times_the_limit_for_three_windows_is_admitted_at_the_limit() {
    let backend = Backend::start("b").await;
    let gw = gateway(
        &backend,
        "rate_limits:\n  per_ip: {key: client_ip, requests: 20, per: 1s}\n",
        "  - {name: api, match: {path_prefix: /}, upstream: pool, rate_limit: per_ip}\n",
    )
    .await;
    let probe_hits = align_to_the_interval(&gw, Duration::from_secs(1)).await;

    let sent = send_paced(&gw, "/x", "10.0.0.1", 180, Duration::from_millis(1000) / 60).await;

    // Window 1 admits exactly the limit: the first 20 go through, the 21st (sent at ~0.33 s, still
    // in the first window) is refused.
    for (i, s) in sent.iter().take(20).enumerate() {
        assert_eq!(
            s.resp.status, 200,
            "request #{i} of a fresh client: {}",
            s.resp
        );
    }
    if sent[20].at < Duration::from_millis(900) {
        let retry = assert_429(&sent[20].resp);
        assert_eq!(rl_headers(&sent[20].resp).0, 20, "{}", sent[20].resp);
        assert!(retry <= 2, "Retry-After {retry} s for a 1 s window");
    } else {
        eprintln!(
            "request #20 was sent {:?} after the first (machine very slow): first-window check skipped",
            sent[20].at
        );
    }
    assert_admitted_within_ten_percent(
        &sent,
        &backend,
        probe_hits,
        20,
        3,
        "60/s against 20 per 1s",
    );
}

/// Same as above, but the client starts 0.65 s after a boundary (0.6 into a quarter). A client
/// cannot choose its phase, so the ±10 % requirement holds for any start time.
///
/// Expected by the requirement: 54..=66 of 180. Previous/current interpolation alone admitted 73
/// here (+22 %): the first 20 went through in the 0.35 s left of the interval and were then
/// weighted as if spread over all of it, freeing budget while they were still inside the client's
/// real 1 s window. With quarters the misplaced part is at most one quarter's worth: the
/// arithmetic gives 62-64 for every phase (`window` unit tests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_times_the_limit_started_mid_interval_is_still_within_ten_percent() {
    let backend = Backend::start("b").await;
    let gw = gateway(
        &backend,
        "rate_limits:\n  per_ip: {key: client_ip, requests: 20, per: 1s}\n",
        "  - {name: api, match: {path_prefix: /}, upstream: pool, rate_limit: per_ip}\n",
    )
    .await;
    let probe_hits = align_to_the_interval(&gw, Duration::from_secs(1)).await;
    tokio::time::sleep(Duration::from_millis(650)).await;

    let sent = send_paced(&gw, "/x", "10.0.0.1", 180, Duration::from_millis(1000) / 60).await;
    for (i, s) in sent.iter().take(20).enumerate() {
        assert_eq!(
            s.resp.status, 200,
            "request #{i} of a fresh client: {}",
            s.resp
        );
    }
    assert_admitted_within_ten_percent(
        &sent,
        &backend,
        probe_hits,
        20,
        3,
        "60/s against 20 per 1s, started 0.65 s after a boundary",
    );
}

/// The same requirement with a small limit: 2 per 1 s, 6 requests/s for 3 s (18 requests),
/// starting at an interval boundary (`align_to_the_interval`). Expected `2 × 3 = 6` within ±10 %,
/// widened to whole requests: 5..=7. (A sliding log admits exactly 6: two at the start of each
/// second.) The estimate admits 2 in the first window, then with `prev = 2` one at the start of
/// each window and one once `2 × (1 − f) + 1 < 2`, i.e. past its middle: 6. From a random phase
/// it admitted 7, the band's edge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_limit_under_sustained_overload_is_admitted_at_the_limit() {
    let backend = Backend::start("b").await;
    let gw = gateway(
        &backend,
        "rate_limits:\n  tiny: {key: client_ip, requests: 2, per: 1s}\n",
        "  - {name: api, match: {path_prefix: /}, upstream: pool, rate_limit: tiny}\n",
    )
    .await;
    let probe_hits = align_to_the_interval(&gw, Duration::from_secs(1)).await;

    let sent = send_paced(&gw, "/x", "10.0.0.1", 18, Duration::from_millis(1000) / 6).await;
    assert_eq!(sent[0].resp.status, 200, "{}", sent[0].resp);
    assert_eq!(sent[1].resp.status, 200, "{}", sent[1].resp);
    assert_admitted_within_ten_percent(&sent, &backend, probe_hits, 2, 3, "6/s against 2 per 1s");
}

/// A client that used its whole limit and then stayed quiet for 1.5 windows has its budget back:
/// the quarter of the burst slid out of the window at most 1.25 s after it, so all 10 of 10
/// back-to-back requests pass (previous/current interpolation guaranteed only 5). And the headers
/// must be honest: a 200 saying `X-RateLimit-Remaining: n ≥ 1` means the very next request (sent
/// immediately, no other traffic on this limit) is admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_client_gets_its_budget_back_and_remaining_is_honest() {
    let backend = Backend::start("b").await;
    let gw = gateway(
        &backend,
        "rate_limits:\n  per_ip: {key: client_ip, requests: 10, per: 1s}\n",
        "  - {name: api, match: {path_prefix: /}, upstream: pool, rate_limit: per_ip}\n",
    )
    .await;

    let t0 = tokio::time::Instant::now();
    for i in 0..10 {
        let r = get_as(&gw, "/x", "10.0.0.1", &[]).await;
        assert_eq!(r.status, 200, "burst request #{i}: {r}");
    }
    let r = get_as(&gw, "/x", "10.0.0.1", &[]).await;
    // A burst late in a quarter starts to slide out of the window 0.75 s after it.
    if t0.elapsed() < Duration::from_millis(700) {
        assert_429(&r);
    }

    // 1.5 windows after the first request: the burst's quarter has left the window.
    tokio::time::sleep_until(t0 + Duration::from_millis(1500)).await;
    let probe_at = t0.elapsed();
    let mut after = Vec::new();
    for _ in 0..10 {
        after.push(get_as(&gw, "/x", "10.0.0.1", &[]).await);
    }
    let ok = count(&after, 200);
    assert_eq!(backend.hits(), 10 + ok, "backend sees exactly the 200s");
    if probe_at >= Duration::from_millis(1900) {
        eprintln!("probe started {probe_at:?} after the burst (machine very slow): checks skipped");
        return;
    }
    let mut problems = Vec::new();
    if ok < 10 {
        problems.push(format!(
            "10 requests sent back to back {probe_at:?} (≈1.5 windows) after a burst of 10: only \
             {ok} admitted, expected all (the burst's quarter has slid out of the window)"
        ));
    }
    if let Some(pair) = after.windows(2).find(|p| {
        p[0].status == 200 && num_header(&p[0], "x-ratelimit-remaining") >= 1 && p[1].status != 200
    }) {
        problems.push(format!(
            "a 200 said X-RateLimit-Remaining: {}, yet the next request, sent immediately after \
             it with no other traffic, was refused\n--- the 200 ---\n{}\n--- the next ---\n{}",
            num_header(&pair[0], "x-ratelimit-remaining"),
            pair[0],
            pair[1]
        ));
    }
    assert!(
        problems.is_empty(),
        "statuses of the 10 requests: {:?}\n{}",
        statuses(&after),
        problems.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------------

/// Two clients (different `X-Forwarded-For` behind a trusted proxy) have independent budgets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_have_independent_budgets() {
    let backend = Backend::start("b").await;
    let gw = gateway(
        &backend,
        "rate_limits:\n  per_ip: {key: client_ip, requests: 3, per: 1m}\n",
        "  - {name: api, match: {path_prefix: /}, upstream: pool, rate_limit: per_ip}\n",
    )
    .await;

    for i in 0..3 {
        let r = get_as(&gw, "/a", "10.1.1.1", &[]).await;
        assert_eq!(r.status, 200, "client A request #{i}: {r}");
    }
    assert_429(&get_as(&gw, "/a", "10.1.1.1", &[]).await);

    // Client A being limited does not affect client B.
    for i in 0..3 {
        let r = get_as(&gw, "/b", "10.2.2.2", &[]).await;
        assert_eq!(r.status, 200, "client B request #{i} (A is limited): {r}");
        assert_eq!(rl_headers(&r).1, 2 - i, "B's own remaining count: {r}");
    }
    assert_429(&get_as(&gw, "/b", "10.2.2.2", &[]).await);
    // And A is still limited.
    assert_429(&get_as(&gw, "/a", "10.1.1.1", &[]).await);
    assert_eq!(backend.hits(), 6);
}

const ACME_KEY: &str = "acme-secret-key-0001";
const GLOBEX_KEY: &str = "globex-secret-key-0002";

/// `consumer` = API key id: the same key from different client IPs shares one budget, two keys
/// have separate budgets; anonymous callers (credentials optional) fall back to their client IP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_key_follows_the_api_key_across_client_ips() {
    let backend = Backend::start("b").await;
    let extra = format!(
        "auth:
  api_keys:
    p:
      header: X-API-Key
      keys: [{{id: acme, sha256: \"{}\"}}, {{id: globex, sha256: \"{}\"}}]
rate_limits:
  per_consumer: {{key: consumer, requests: 3, per: 1m}}
  per_consumer_open: {{key: consumer, requests: 2, per: 1m}}
",
        sha256_hex(ACME_KEY),
        sha256_hex(GLOBEX_KEY)
    );
    let routes = "  - name: keyed
    match: {path_prefix: /keyed}
    upstream: pool
    auth: {api_key: p, required: always}
    rate_limit: per_consumer
  - name: open
    match: {path_prefix: /open}
    upstream: pool
    auth: {api_key: p, required: never}
    rate_limit: per_consumer_open
";
    let gw = gateway(&backend, &extra, routes).await;
    let acme = [("X-API-Key", ACME_KEY)];
    let globex = [("X-API-Key", GLOBEX_KEY)];

    // acme from three different addresses: one budget of 3.
    for (i, ip) in ["10.0.0.1", "10.0.0.2", "10.0.0.3"].iter().enumerate() {
        let r = get_as(&gw, "/keyed", ip, &acme).await;
        assert_eq!(r.status, 200, "acme request #{i} from {ip}: {r}");
        assert_eq!(
            rl_headers(&r).1,
            2 - i as u64,
            "acme's remaining count is shared across addresses: {r}"
        );
    }
    let r = get_as(&gw, "/keyed", "10.0.0.4", &acme).await;
    assert_429(&r);
    assert_429(&get_as(&gw, "/keyed", "10.0.0.1", &acme).await);

    // globex, from an address acme used: its own budget.
    for i in 0..3 {
        let r = get_as(&gw, "/keyed", "10.0.0.1", &globex).await;
        assert_eq!(r.status, 200, "globex request #{i} (acme is limited): {r}");
    }
    assert_429(&get_as(&gw, "/keyed", "10.0.0.2", &globex).await);
    assert_eq!(backend.hits(), 6);

    // Anonymous on the optional-auth route: counted by client IP.
    for i in 0..2 {
        let r = get_as(&gw, "/open", "10.5.5.5", &[]).await;
        assert_eq!(r.status, 200, "anonymous 10.5.5.5 request #{i}: {r}");
    }
    assert_429(&get_as(&gw, "/open", "10.5.5.5", &[]).await);
    let r = get_as(&gw, "/open", "10.6.6.6", &[]).await;
    assert_eq!(
        r.status, 200,
        "another anonymous address has its own budget: {r}"
    );
    // A key presented from the limited anonymous address counts as the key's consumer.
    let r = get_as(&gw, "/open", "10.5.5.5", &acme).await;
    assert_eq!(
        r.status, 200,
        "acme from 10.5.5.5 is not the anonymous 10.5.5.5: {r}"
    );
    assert_eq!(backend.hits(), 6 + 4);
}

/// HS256 token for `sub`, valid for 10 minutes.
fn hs256_token(secret: &[u8], sub: &str) -> String {
    let now = unix_now();
    hs256_jwt(
        secret,
        &serde_json::json!({"sub": sub, "iat": now, "exp": now + 600}),
    )
}

/// `consumer` = verified JWT `sub`: one subject from several addresses shares one budget, another
/// subject has its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_key_follows_the_jwt_subject_across_client_ips() {
    let secret = b"rate-limit-tests-hs256-secret-0123456789abcdef";
    let dir = tempfile::tempdir().expect("tempdir");
    let secret_path = dir.path().join("jwt.secret");
    std::fs::write(&secret_path, secret).expect("write secret");

    let backend = Backend::start("b").await;
    let extra = format!(
        "auth:
  jwt:
    j: {{algorithms: [HS256], secret_file: \"{}\"}}
rate_limits:
  per_consumer: {{key: consumer, requests: 3, per: 1m}}
",
        secret_path.display()
    );
    let routes = "  - name: jwt
    match: {path_prefix: /}
    upstream: pool
    auth: {jwt: j, required: always}
    rate_limit: per_consumer
";
    let gw = gateway(&backend, &extra, routes).await;
    let alice = format!("Bearer {}", hs256_token(secret, "alice"));
    let bob = format!("Bearer {}", hs256_token(secret, "bob"));

    for (i, ip) in ["10.0.0.1", "10.0.0.2", "10.0.0.3"].iter().enumerate() {
        let r = get_as(&gw, "/x", ip, &[("Authorization", &alice)]).await;
        assert_eq!(r.status, 200, "alice request #{i} from {ip}: {r}");
    }
    assert_429(&get_as(&gw, "/x", "10.0.0.4", &[("Authorization", &alice)]).await);

    for i in 0..3 {
        let r = get_as(&gw, "/x", "10.0.0.1", &[("Authorization", &bob)]).await;
        assert_eq!(r.status, 200, "bob request #{i} (alice is limited): {r}");
    }
    assert_429(&get_as(&gw, "/x", "10.0.0.1", &[("Authorization", &bob)]).await);
    assert_eq!(backend.hits(), 6);
}

/// `header:X-Tenant` counts by the header's value, whatever the client address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_key_counts_per_tenant() {
    let backend = Backend::start("b").await;
    let gw = gateway(
        &backend,
        "rate_limits:\n  per_tenant: {key: \"header:X-Tenant\", requests: 2, per: 1m}\n",
        "  - {name: api, match: {path_prefix: /}, upstream: pool, rate_limit: per_tenant}\n",
    )
    .await;
    let red = [("X-Tenant", "red")];
    let blue = [("X-Tenant", "blue")];

    let r = get_as(&gw, "/x", "10.0.0.1", &red).await;
    assert_eq!(r.status, 200, "{r}");
    let r = get_as(&gw, "/x", "10.0.0.2", &red).await;
    assert_eq!(r.status, 200, "{r}");
    // Tenant red is out of budget from any address, including a fresh one.
    assert_429(&get_as(&gw, "/x", "10.0.0.3", &red).await);
    // Tenant blue, from an address red used, has its own budget.
    for i in 0..2 {
        let r = get_as(&gw, "/x", "10.0.0.1", &blue).await;
        assert_eq!(r.status, 200, "blue request #{i}: {r}");
    }
    assert_429(&get_as(&gw, "/x", "10.0.0.1", &blue).await);
    assert_eq!(backend.hits(), 4);
}

// ---------------------------------------------------------------------------------------------
// Several limits on one route
// ---------------------------------------------------------------------------------------------

/// A route with `rate_limit: [burst, slow]` (3 per 1 s and 5 per 1 min) enforces both: the burst
/// limit refuses the 4th request in a second; once it has recovered, the slow limit refuses the
/// 6th in the minute although the burst limit would admit it. Refused requests are not counted.
/// Headers on 200s report the tighter limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_with_two_limits_enforces_both() {
    let backend = Backend::start("b").await;
    let gw = gateway(
        &backend,
        "rate_limits:
  burst: {key: client_ip, requests: 3, per: 1s}
  slow: {key: client_ip, requests: 5, per: 1m}
",
        "  - {name: two, match: {path_prefix: /}, upstream: pool, rate_limit: [burst, slow]}\n",
    )
    .await;
    let ip = "10.0.0.1";

    let t0 = tokio::time::Instant::now();
    for i in 0..3u64 {
        let r = get_as(&gw, "/x", ip, &[]).await;
        assert_eq!(r.status, 200, "request #{i}: {r}");
        let (limit, remaining, reset) = rl_headers(&r);
        assert_eq!(
            (limit, remaining),
            (3, 2 - i),
            "burst (3/s) is tighter than slow (5/min): {r}"
        );
        assert_eq!(reset, 1, "X-RateLimit-Reset for a 1 s window: {r}");
    }
    let r = get_as(&gw, "/x", ip, &[]).await;
    // A burst late in a quarter starts to slide out of the window 0.75 s after it.
    let burst_429_in_time = t0.elapsed() < Duration::from_millis(700);
    if burst_429_in_time {
        let retry = assert_429(&r);
        assert_eq!(rl_headers(&r).0, 3, "the burst limit refused: {r}");
        assert!(retry <= 2, "Retry-After {retry} for a 1 s window: {r}");
    }

    // Two burst windows later the burst limit has forgotten everything; slow has 2 left.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let r = get_as(&gw, "/x", ip, &[]).await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(
        (rl_headers(&r).0, rl_headers(&r).1),
        (5, 1),
        "slow (1 left) is now tighter than burst (2 left): {r}"
    );
    let r = get_as(&gw, "/x", ip, &[]).await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(
        (rl_headers(&r).0, rl_headers(&r).1),
        (5, 0),
        "slow exhausted: {r}"
    );
    // Burst would admit a third request this second; slow refuses it.
    let r = get_as(&gw, "/x", ip, &[]).await;
    let retry = assert_429(&r);
    assert_eq!(rl_headers(&r).0, 5, "the slow limit refused: {r}");
    assert!(
        retry >= 10,
        "Retry-After must reflect the 1 min limit (5 requests in the last ~3 s): {r}"
    );
    assert_eq!(backend.hits(), 5, "3 + 2 admitted, 429s never forwarded");

    let text = gw.admin_get("/metrics").await.text();
    if burst_429_in_time {
        assert_eq!(
            metrics::value(&text, RL_METRIC, &[("route", "two"), ("limit", "burst")]),
            Some(1.0),
            "metrics:\n{text}"
        );
    }
    assert_eq!(
        metrics::value(&text, RL_METRIC, &[("route", "two"), ("limit", "slow")]),
        Some(1.0),
        "metrics:\n{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// Headers, 429 body, Retry-After, backend isolation
// ---------------------------------------------------------------------------------------------

/// `X-RateLimit-*` on every 200 and on the 429: Limit = configured, Remaining decreasing to 0,
/// Reset within the window; the 429 is JSON with `Content-Type: application/json`, error
/// `rate_limited`, and `Retry-After` in whole seconds ≥ 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_on_200_and_429_and_the_429_body() {
    let backend = Backend::start("b").await;
    let gw = gateway(
        &backend,
        "rate_limits:\n  five: {key: client_ip, requests: 5, per: 1m}\n",
        "  - {name: api, match: {path_prefix: /}, upstream: pool, rate_limit: five}\n",
    )
    .await;

    let mut last_remaining = None;
    for i in 0..5u64 {
        let r = get_as(&gw, "/x", "10.0.0.1", &[]).await;
        assert_eq!(r.status, 200, "request #{i}: {r}");
        let (limit, remaining, reset) = rl_headers(&r);
        assert_eq!(limit, 5, "X-RateLimit-Limit = configured requests: {r}");
        assert_eq!(
            remaining,
            4 - i,
            "X-RateLimit-Remaining after request #{i}: {r}"
        );
        if let Some(prev) = last_remaining {
            assert!(remaining < prev, "Remaining must decrease: {r}");
        }
        last_remaining = Some(remaining);
        assert!(
            (1..=60).contains(&reset),
            "X-RateLimit-Reset within a 1 min window: {r}"
        );
        assert!(
            r.header("retry-after").is_none(),
            "no Retry-After on a 200: {r}"
        );
    }

    let r = get_as(&gw, "/x", "10.0.0.1", &[]).await;
    let body: Value = r.assert_gateway_error(429, "rate_limited");
    assert_eq!(
        body.get("request_id").and_then(Value::as_str),
        r.header("x-request-id"),
        "the body's request_id is the X-Request-Id header: {r}"
    );
    let retry = assert_429(&r);
    let (limit, remaining, reset) = rl_headers(&r);
    assert_eq!((limit, remaining), (5, 0), "{r}");
    // Five requests within at most two quarters come back within a window (+ rounding), and the
    // quota is not said to reset before the client may send again.
    assert!((1..=61).contains(&retry), "Retry-After: {r}");
    assert!(
        (retry..=61).contains(&reset),
        "X-RateLimit-Reset no earlier than Retry-After, within the window: {r}"
    );
    assert_eq!(backend.hits(), 5);
}

/// After a 429, waiting `Retry-After` seconds is enough: the next request succeeds. Two rounds
/// (the second one starts from a partly decayed previous interval).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let backend = Backend::start("b").await;
    let gw = gateway(
        &backend,
        "rate_limits:\n  per_ip: {key: client_ip, requests: 3, per: 2s}\n",
        "  - {name: api, match: {path_prefix: /}, upstream: pool, rate_limit: per_ip}\n",
    )
    .await;

    for round in 0..2 {
        // Use the budget up (bounded: at most 10 requests).
        let mut refused = None;
        for _ in 0..10 {
            let r = get_as(&gw, "/x", "10.0.0.1", &[]).await;
            if r.status == 429 {
                refused = Some(r);
                break;
            }
            assert_eq!(r.status, 200, "round {round}: {r}");
        }
        let r = refused.unwrap_or_else(|| panic!("round {round}: 10 requests, no 429"));
        let retry = assert_429(&r);
        assert!(
            retry <= 4,
            "round {round}: Retry-After {retry} s exceeds two 2 s windows: {r}"
        );
        tokio::time::sleep(Duration::from_secs(retry)).await;
        let after = get_as(&gw, "/x", "10.0.0.1", &[]).await;
        assert_eq!(
            after.status, 200,
            "round {round}: slept Retry-After ({retry} s) after\n{r}\nyet was refused again:\n{after}"
        );
    }
}

/// Refused requests never reach the backend: not a GET, not a POST with a body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_never_reach_the_backend() {
    let backend = Backend::start("b").await;
    let gw = gateway(
        &backend,
        "rate_limits:\n  two: {key: client_ip, requests: 2, per: 1m}\n",
        "  - {name: api, match: {path_prefix: /}, upstream: pool, rate_limit: two}\n",
    )
    .await;
    for i in 0..2 {
        let r = get_as(&gw, "/x", "10.0.0.1", &[]).await;
        assert_eq!(r.status, 200, "request #{i}: {r}");
    }
    assert_eq!(backend.hits(), 2);

    for i in 0..20 {
        let r = get_as(&gw, "/x", "10.0.0.1", &[]).await;
        assert_eq!(r.status, 429, "refused request #{i}: {r}");
    }
    for i in 0..3 {
        let r = send_body(
            &gw.client,
            "POST",
            &gw.url("/upload"),
            &[
                ("X-Forwarded-For", "10.0.0.1"),
                ("Content-Type", "application/octet-stream"),
            ],
            vec![b'x'; 64 * 1024],
        )
        .await;
        assert_429(&r);
        assert_eq!(backend.hits(), 2, "refused POST #{i} reached the backend");
    }
    assert_eq!(backend.hits(), 2, "429s must never reach the backend");
    assert_eq!(backend.max_body_len(), 0, "no refused body was forwarded");
}

/// A 401 on a route whose `client_ip` limit runs before auth (and counted this request) still
/// carries `X-RateLimit-*`: "every response on a limited route".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_on_a_limited_route_carries_the_headers() {
    let backend = Backend::start("b").await;
    let extra = format!(
        "auth:
  api_keys:
    p:
      header: X-API-Key
      keys: [{{id: acme, sha256: \"{}\"}}]
rate_limits:
  per_ip: {{key: client_ip, requests: 5, per: 1m}}
",
        sha256_hex(ACME_KEY)
    );
    let routes = "  - name: guarded
    match: {path_prefix: /}
    upstream: pool
    auth: {api_key: p, required: always}
    rate_limit: per_ip
";
    let gw = gateway(&backend, &extra, routes).await;

    let r = get_as(&gw, "/x", "10.0.0.1", &[]).await;
    assert_eq!(r.status, 401, "{r}");
    // The before-auth limit was checked and counted (see the 200 below), so it can be reported.
    let r2 = get_as(&gw, "/x", "10.0.0.1", &[("X-API-Key", ACME_KEY)]).await;
    assert_eq!(r2.status, 200, "{r2}");
    assert_eq!(
        rl_headers(&r2).1,
        3,
        "the 401 counted against the before-auth limit: {r2}"
    );
    let (limit, remaining, _) = rl_headers(&r);
    assert_eq!((limit, remaining), (5, 4), "{r}");
    assert_eq!(backend.hits(), 1);
}

/// A 502 (dead backend) on a limited route still carries `X-RateLimit-*`: "every response on a
/// limited route".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_502_on_a_limited_route_carries_the_headers() {
    let dead = Backend::start("dead").await;
    dead.kill().await;
    let gw = gateway(
        &dead,
        "rate_limits:\n  per_ip: {key: client_ip, requests: 5, per: 1m}\n",
        "  - {name: broken, match: {path_prefix: /}, upstream: pool, rate_limit: per_ip}\n",
    )
    .await;

    let r = get_as(&gw, "/x", "10.0.0.1", &[]).await;
    assert_eq!(r.status, 502, "{r}");
    let (limit, remaining, _) = rl_headers(&r);
    assert_eq!((limit, remaining), (5, 4), "{r}");
}

// ---------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------

const RL_METRIC: &str = "tollgate_rate_limited_total";

/// `tollgate_rate_limited_total{route,limit}` counts 429s per route and refusing limit; 200s do
/// not count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_counts_429s_by_route_and_limit() {
    let backend = Backend::start("b").await;
    let gw = gateway(
        &backend,
        "rate_limits:
  small: {key: client_ip, requests: 2, per: 1m}
  tiny: {key: \"header:X-Tenant\", requests: 1, per: 1m}
",
        "  - {name: one, match: {path_prefix: /one}, upstream: pool, rate_limit: small}
  - {name: two, match: {path_prefix: /two}, upstream: pool, rate_limit: [small, tiny]}
",
    )
    .await;

    // Route one, client 10.0.1.1: 2 admitted, 3 refused by `small`.
    for i in 0..5 {
        let r = get_as(&gw, "/one", "10.0.1.1", &[]).await;
        assert_eq!(r.status, if i < 2 { 200 } else { 429 }, "/one #{i}: {r}");
    }
    // Route two, client 10.0.2.2: tenant t admitted, then refused by `tiny` (small has 1 left).
    let r = get_as(&gw, "/two", "10.0.2.2", &[("X-Tenant", "t")]).await;
    assert_eq!(r.status, 200, "{r}");
    let r = get_as(&gw, "/two", "10.0.2.2", &[("X-Tenant", "t")]).await;
    assert_429(&r);
    assert_eq!(rl_headers(&r).0, 1, "tiny refused: {r}");
    // Tenant u uses small's last request; tenant v is then refused by `small`.
    let r = get_as(&gw, "/two", "10.0.2.2", &[("X-Tenant", "u")]).await;
    assert_eq!(r.status, 200, "{r}");
    let r = get_as(&gw, "/two", "10.0.2.2", &[("X-Tenant", "v")]).await;
    assert_429(&r);
    assert_eq!(rl_headers(&r).0, 2, "small refused: {r}");
    assert_eq!(backend.hits(), 4);

    let text = gw.admin_get("/metrics").await.text();
    let v = |route: &str, limit: &str| {
        metrics::value(&text, RL_METRIC, &[("route", route), ("limit", limit)])
    };
    assert_eq!(v("one", "small"), Some(3.0), "metrics:\n{text}");
    assert_eq!(v("two", "tiny"), Some(1.0), "metrics:\n{text}");
    assert_eq!(v("two", "small"), Some(1.0), "metrics:\n{text}");
    assert!(
        matches!(v("one", "tiny"), None | Some(0.0)),
        "route one has no tiny limit:\n{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// tollgate check
// ---------------------------------------------------------------------------------------------

/// A valid config for `check` with the given `rate_limits:` body and route-0 extra keys. The
/// `auth:` section has an API-key provider `p` for consumer limits.
fn check_cfg(limits: &str, route_extra: &str) -> String {
    format!(
        r#"server:
  listen: ["127.0.0.1:18080"]
  admin_listen: "127.0.0.1:19901"
  pid_file: "@DIR@/tollgate.pid"
  upgrade_sock: "@DIR@/upgrade.sock"
  access_log: "off"
upstreams:
  orders:
    backends: ["127.0.0.1:4001"]
auth:
  api_keys:
    p:
      header: X-API-Key
      keys: [{{id: acme, sha256: "{}"}}]
rate_limits:
{limits}routes:
  - name: orders
    match: {{path_prefix: /orders}}
    upstream: orders
    auth: {{api_key: p, required: always}}
{route_extra}"#,
        sha256_hex(ACME_KEY)
    )
}

/// `check` exits 1 with a stderr line `error: <path>: ...` containing every fragment.
#[track_caller]
fn assert_rejected(yaml: &str, path: &str, fragments: &[&str]) -> String {
    assert_check_rejects_with(yaml, &[], &format!("error: {path}: "), fragments)
}

const GOOD_LIMITS: &str = "  per_client: {key: client_ip, requests: 10, per: 1s}
  burst: {key: consumer, requests: 100, per: 1d, stage: after_auth}
  tenant: {key: \"header:X-Tenant\", requests: 5, per: 1m, expected_clients: 1000}
  by_route: {key: route, requests: 1000, per: 10s}
  by_claim: {key: \"claim:tenant\", requests: 5, per: 1h}
";

#[test]
fn check_accepts_valid_limits() {
    let yaml = check_cfg(
        GOOD_LIMITS,
        "    rate_limit: [per_client, burst, tenant, by_route, by_claim]\n",
    );
    let (code, out, err) = check(&yaml);
    assert_eq!(
        code, 0,
        "valid limits (every key kind, per 1s and 1d) must pass\n--- stderr ---\n{err}\n--- stdout ---\n{out}\n--- config ---\n{yaml}"
    );
    let yaml = check_cfg(GOOD_LIMITS, "    rate_limit: per_client\n");
    let (code, _, err) = check(&yaml);
    assert_eq!(code, 0, "a single limit name must pass\n{err}");
}

#[test]
fn check_rejects_an_unknown_limit_name_with_a_suggestion() {
    let err = assert_rejected(
        &check_cfg(GOOD_LIMITS, "    rate_limit: per_clinet\n"),
        "routes[0].rate_limit",
        &["per_clinet"],
    );
    assert!(
        err.contains(r#"did you mean "per_client""#),
        "expected a suggestion, got:\n{err}"
    );
    let err = assert_rejected(
        &check_cfg(GOOD_LIMITS, "    rate_limit: [per_client, brust]\n"),
        "routes[0].rate_limit[1]",
        &["brust"],
    );
    assert!(
        err.contains(r#"did you mean "burst""#),
        "expected a suggestion, got:\n{err}"
    );
}

#[test]
fn check_rejects_per_outside_one_second_to_one_day() {
    for per in ["0s", "2d", "500ms"] {
        assert_rejected(
            &check_cfg(
                &format!("  x: {{key: client_ip, requests: 10, per: {per}}}\n"),
                "    rate_limit: x\n",
            ),
            "rate_limits.x.per",
            &[],
        );
    }
}

#[test]
fn check_rejects_zero_requests() {
    assert_rejected(
        &check_cfg(
            "  x: {key: client_ip, requests: 0, per: 1s}\n",
            "    rate_limit: x\n",
        ),
        "rate_limits.x.requests",
        &[],
    );
}

/// Counts saturate at 2³² − 1 per quarter: a larger limit could never refuse.
#[test]
fn check_rejects_a_limit_the_counters_cannot_reach() {
    assert_rejected(
        &check_cfg(
            "  x: {key: route, requests: 4294967296, per: 1d}\n",
            "    rate_limit: x\n",
        ),
        "rate_limits.x.requests",
        &["at most 4294967295"],
    );
    let ok = check_cfg(
        "  x: {key: route, requests: 4294967295, per: 1d}\n",
        "    rate_limit: x\n",
    );
    let (code, _, err) = check(&ok);
    assert_eq!(code, 0, "the largest countable limit must pass\n{err}");
}

#[test]
fn check_rejects_an_unknown_key_kind() {
    for key in ["ip", "\"cookie:session\"", "\"claim:\""] {
        assert_rejected(
            &check_cfg(
                &format!("  x: {{key: {key}, requests: 10, per: 1s}}\n"),
                "    rate_limit: x\n",
            ),
            "rate_limits.x.key",
            &[],
        );
    }
}

#[test]
fn check_rejects_identity_keys_before_auth() {
    for key in ["consumer", "\"claim:tenant\""] {
        assert_rejected(
            &check_cfg(
                &format!("  x: {{key: {key}, requests: 10, per: 1s, stage: before_auth}}\n"),
                "    rate_limit: x\n",
            ),
            "rate_limits.x.stage",
            &["after_auth"],
        );
    }
}

#[test]
fn check_reports_every_rate_limit_problem_at_once() {
    let limits = "  a: {key: client_ip, requests: 0, per: 1s}
  b: {key: client_ip, requests: 1, per: 0s}
  c: {key: nope, requests: 1, per: 1s}
  d: {key: consumer, requests: 1, per: 1s, stage: before_auth}
";
    let yaml = check_cfg(limits, "    rate_limit: [a, b, c, d, e]\n");
    let (code, _, err) = check(&yaml);
    assert_eq!(code, 1, "{err}");
    for path in [
        "rate_limits.a.requests",
        "rate_limits.b.per",
        "rate_limits.c.key",
        "rate_limits.d.stage",
        "routes[0].rate_limit[4]",
    ] {
        assert!(
            err.lines()
                .any(|l| l.starts_with(&format!("error: {path}: "))),
            "{path} not reported:\n{err}"
        );
    }
}
