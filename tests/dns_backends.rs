//! Backends given by hostname (DESIGN.md "Live operations"): re-resolved every `dns_refresh`,
//! new addresses join after a passing health check, vanished ones drain, a failing name server
//! keeps the last good set. The names are served by a test DNS server on 127.0.0.1
//! (`server.resolver`); the addresses are 127.0.0.2 and 127.0.0.3, each with a backend that
//! names itself. `/etc/hosts` is exercised through `localhost`, without editing the file.

mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::dns::TestDns;
use common::metrics::scrape;
use common::*;
use serde_json::Value;

const NAME: &str = "api.tollgate.test";
const TWO: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const THREE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
/// Refresh period of the tests' pools.
const REFRESH: &str = "dns_refresh: 300ms";
/// Every "eventually" wait: bounded, far above one refresh plus one health interval.
const BOUND: Duration = Duration::from_secs(8);

/// Two backends on the same port, one on 127.0.0.2 and one on 127.0.0.3, as the two addresses
/// of one name are.
async fn backend_pair() -> (Backend, Backend) {
    for _ in 0..20 {
        let two = Backend::start_at("two", TWO, 0)
            .await
            .expect("bind 127.0.0.2");
        let port = two.port();
        if let Ok(three) = Backend::start_at("three", THREE, port).await {
            return (two, three);
        }
    }
    panic!("no port free on both 127.0.0.2 and 127.0.0.3");
}

/// A pool with one backend given by name, its health check and `extra` lines.
fn named_pool(port: u16, extra: &[&str]) -> String {
    let mut s = format!("upstreams:\n  pool:\n    backends: [\"{NAME}:{port}\"]\n    {REFRESH}\n");
    for line in extra {
        s.push_str(&format!("    {line}\n"));
    }
    s.push_str("routes:\n  - name: all\n    match: {path_prefix: /}\n    upstream: pool\n");
    s
}

async fn start(dns: &TestDns, body: &str) -> Gateway {
    Gateway::start_with(&[&dns.resolver_yaml()], body).await
}

/// Which backend answered (`x-backend`), asserting the request succeeded.
async fn who(gw: &Gateway) -> String {
    let r = gw.get("/who").await;
    assert_eq!(r.status, 200, "request failed: {r}\n{}", gw.logs());
    r.header("x-backend").unwrap_or_default().to_string()
}

async fn upstreams(gw: &Gateway) -> Value {
    let r = gw.admin_get("/upstreams").await;
    assert_eq!(r.status, 200, "{r}");
    r.json()["upstreams"][0].clone()
}

/// The addresses `/upstreams` lists for the pool, with `(healthy, pending)`.
async fn listed(gw: &Gateway) -> Vec<(String, bool, bool)> {
    upstreams(gw).await["backends"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|b| {
            (
                b["address"].as_str().unwrap_or_default().to_string(),
                b["healthy"].as_bool().unwrap_or(false),
                b["pending"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

async fn dns_count(gw: &Gateway, result: &str) -> f64 {
    let (_, _, exp) = scrape(&gw.client, gw.admin_port).await;
    exp.value(
        "tollgate_dns_resolutions_total",
        &[("upstream", "pool"), ("result", result)],
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_moves_to_the_new_address_within_a_refresh_without_failed_requests() {
    let dns = TestDns::start().await;
    let (two, three) = backend_pair().await;
    dns.set(NAME, &[TWO]);
    let gw = start(&dns, &named_pool(two.port(), &[FAST_HEALTH])).await;

    for _ in 0..5 {
        assert_eq!(who(&gw).await, "two");
    }
    let echo = gw.get("/host").await.echo();
    assert_eq!(
        echo.header("host"),
        Some(format!("{NAME}:{}", two.port()).as_str()),
        "a named backend gets its name as Host"
    );
    let status = upstreams(&gw).await;
    assert_eq!(
        status["hostnames"][0]["hostname"],
        format!("{NAME}:{}", two.port())
    );
    assert_eq!(status["hostnames"][0]["addresses"][0], two.addr());
    assert_eq!(
        status["backends"][0]["hostname"],
        format!("{NAME}:{}", two.port())
    );
    assert!(status["backends"][0]["in_flight"].is_u64(), "{status}");

    // The name moves: every request keeps succeeding, and within about one refresh (plus one
    // health check of the new address) the traffic is on the new address.
    dns.set(NAME, &[THREE]);
    let moved_at = Instant::now();
    let mut consecutive = 0;
    let mut requests = 0;
    while consecutive < 10 {
        assert!(
            moved_at.elapsed() < BOUND,
            "traffic did not move to 127.0.0.3 within {BOUND:?} ({requests} requests)\n{}",
            gw.logs()
        );
        requests += 1;
        if who(&gw).await == "three" {
            consecutive += 1;
        } else {
            consecutive = 0;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        moved_at.elapsed() < Duration::from_secs(3),
        "took {:?} for a 300ms refresh",
        moved_at.elapsed()
    );

    // The old address drained: it gets nothing more, and killing it costs no request (no
    // pooled keep-alive connection to it is used again).
    let old_hits = two.hits();
    two.kill().await;
    for _ in 0..20 {
        assert_eq!(who(&gw).await, "three");
    }
    assert_eq!(two.hits(), old_hits);
    let addrs: Vec<String> = listed(&gw).await.into_iter().map(|(a, _, _)| a).collect();
    assert_eq!(addrs, vec![three.addr()]);
    assert!(dns_count(&gw, "ok").await >= 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_address_takes_no_traffic_before_its_health_check_passes() {
    let dns = TestDns::start().await;
    let (two, three) = backend_pair().await;
    three.set_healthy(false);
    dns.set(NAME, &[TWO]);
    let gw = start(&dns, &named_pool(two.port(), &[FAST_HEALTH])).await;
    assert_eq!(who(&gw).await, "two");

    dns.set(NAME, &[TWO, THREE]);
    // Bounded: the new address is probed (and fails) at least twice.
    let deadline = Instant::now() + BOUND;
    while three.health_hits() < 2 {
        assert!(Instant::now() < deadline, "127.0.0.3 was never probed");
        assert_eq!(who(&gw).await, "two");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..10 {
        assert_eq!(who(&gw).await, "two");
    }
    assert_eq!(
        three.hits(),
        0,
        "an address that failed its check took traffic"
    );
    let pending: Vec<_> = listed(&gw)
        .await
        .into_iter()
        .filter(|(_, _, p)| *p)
        .collect();
    assert_eq!(pending, vec![(three.addr(), false, true)]);

    // It passes: it joins, and the name's two addresses share the traffic round robin.
    three.set_healthy(true);
    let deadline = Instant::now() + BOUND;
    while three.hits() == 0 {
        assert!(
            Instant::now() < deadline,
            "127.0.0.3 never joined\n{}",
            gw.logs()
        );
        who(&gw).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (before2, before3) = (two.hits(), three.hits());
    for _ in 0..20 {
        who(&gw).await;
    }
    assert_eq!(two.hits() - before2, 10, "round robin over both addresses");
    assert_eq!(
        three.hits() - before3,
        10,
        "round robin over both addresses"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_name_server_keeps_the_last_good_addresses() {
    let dns = TestDns::start().await;
    let (two, three) = backend_pair().await;
    dns.set(NAME, &[TWO, THREE]);
    let gw = start(&dns, &named_pool(two.port(), &[FAST_HEALTH])).await;

    // Two addresses from the start: round robin over both.
    for _ in 0..10 {
        who(&gw).await;
    }
    assert_eq!((two.hits(), three.hits()), (5, 5));

    dns.set_silent(true);
    let errors_before = dns_count(&gw, "error").await;
    let deadline = Instant::now() + BOUND;
    while dns_count(&gw, "error").await < errors_before + 2.0 {
        assert!(
            Instant::now() < deadline,
            "failed lookups were never counted"
        );
        assert_eq!(gw.get("/during").await.status, 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (before2, before3) = (two.hits(), three.hits());
    for _ in 0..10 {
        who(&gw).await;
    }
    assert_eq!((two.hits() - before2, three.hits() - before3), (5, 5));
    let addrs: Vec<String> = listed(&gw).await.into_iter().map(|(a, _, _)| a).collect();
    assert_eq!(addrs, vec![two.addr(), three.addr()]);
    assert!(
        gw.logs().contains("keeping its last good addresses"),
        "{}",
        gw.logs()
    );

    // An empty answer (the name lost its records) also keeps them.
    dns.set_silent(false);
    dns.set(NAME, &[]);
    let queries = dns.queries(NAME);
    let deadline = Instant::now() + BOUND;
    while dns.queries(NAME) < queries + 2 {
        assert!(
            Instant::now() < deadline,
            "no refresh after the answer emptied"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..4 {
        who(&gw).await;
    }
    assert_eq!(listed(&gw).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_does_not_resolve_at_start_serves_503_until_it_does() {
    let dns = TestDns::start().await;
    let (two, _three) = backend_pair().await;
    let gw = start(&dns, &named_pool(two.port(), &[])).await;

    let r = gw.get("/early").await;
    r.assert_gateway_error(503, "service_unavailable");
    assert!(gw.logs().contains("cannot resolve"), "{}", gw.logs());
    let ready = gw.admin_get("/ready").await;
    assert_eq!(ready.status, 503, "not ready without an address: {ready}");

    // Without a health check, a resolved address is in rotation at once.
    dns.set(NAME, &[TWO]);
    let deadline = Instant::now() + BOUND;
    loop {
        let r = gw.get("/later").await;
        if r.status == 200 {
            assert_eq!(r.header("x-backend"), Some("two"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never resolved: {r}\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(gw.admin_get("/ready").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_file_names_resolve_with_the_system_resolver() {
    // `localhost` is in every /etc/hosts: no name server is asked.
    let a = Backend::start("a").await;
    let body = format!(
        "upstreams:\n  pool:\n    backends: [\"localhost:{}\"]\n    {FAST_HEALTH}\n    {REFRESH}\n\
         routes:\n  - name: all\n    match: {{path_prefix: /}}\n    upstream: pool\n",
        a.port()
    );
    let gw = Gateway::start(&body).await;
    for _ in 0..3 {
        assert_eq!(gw.get("/x").await.header("x-backend"), Some("a"));
    }
    // Refreshes keep it.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(gw.get("/x").await.header("x-backend"), Some("a"));
    let addrs: Vec<String> = listed(&gw).await.into_iter().map(|(a, _, _)| a).collect();
    assert_eq!(addrs, vec![a.addr()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_warns_about_a_name_that_does_not_resolve_and_refuses_bad_spellings() {
    let dns = TestDns::start().await;
    dns.set("known.tollgate.test", &[TWO]);
    let config = |backends: &str, extra: &str| {
        format!(
            "server:\n  listen: [\"127.0.0.1:18080\"]\n  admin_listen: \"127.0.0.1:19901\"\n  \
             pid_file: \"@DIR@/t.pid\"\n  upgrade_sock: \"@DIR@/u.sock\"\n  \
             {}\nupstreams:\n  pool:\n    backends: [{backends}]\n{extra}\
             routes:\n  - {{name: all, upstream: pool}}\n",
            dns.resolver_yaml()
        )
    };
    let (code, stdout, stderr) = check(&config(
        "\"known.tollgate.test:80\", \"missing.tollgate.test:80\"",
        "",
    ));
    assert_eq!(code, 0, "a name that does not resolve only warns: {stderr}");
    assert!(stdout.contains("OK"), "{stdout}");
    assert!(
        stderr.contains(
            "warning: upstreams.pool.backends[1]: missing.tollgate.test does not resolve"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("backends[0]"), "{stderr}");

    let (code, _, stderr) = check(&config(
        "\"api_internal:80\", \"api.internal:http\"",
        "    dns_refresh: 0s\n",
    ));
    assert_eq!(code, 1, "{stderr}");
    for expected in [
        "upstreams.pool.backends[0]: invalid backend address",
        "upstreams.pool.backends[1]: invalid backend address",
        "upstreams.pool.dns_refresh: must be > 0",
    ] {
        assert!(stderr.contains(expected), "{expected}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_renames_the_backend_resolves_it_before_the_swap() {
    let dns = TestDns::start().await;
    let (two, _three) = backend_pair().await;
    dns.set(NAME, &[TWO]);
    dns.set("other.tollgate.test", &[THREE]);
    let gw = start(&dns, &named_pool(two.port(), &[FAST_HEALTH])).await;
    assert_eq!(who(&gw).await, "two");

    // An unchanged reload keeps the pool: its name is not resolved again out of turn.
    signal(gw.pid(), "HUP");
    let renamed = named_pool(two.port(), &[FAST_HEALTH]).replace(NAME, "other.tollgate.test");
    let deadline = Instant::now() + BOUND;
    while gw.config_generation().await != 2 {
        assert!(
            Instant::now() < deadline,
            "first reload not applied\n{}",
            gw.logs()
        );
        assert_eq!(who(&gw).await, "two");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gw.rewrite_config(&[&dns.resolver_yaml()], &renamed);
    signal(gw.pid(), "HUP");
    // Every request succeeds while the new pool is resolved and probed; then all go to three.
    let deadline = Instant::now() + BOUND;
    loop {
        let b = who(&gw).await;
        if b == "three" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "reload never moved traffic\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..10 {
        assert_eq!(who(&gw).await, "three");
    }
    let status = upstreams(&gw).await;
    assert_eq!(
        status["hostnames"][0]["hostname"],
        format!("other.tollgate.test:{}", two.port())
    );
    assert_eq!(status["dns_refresh_ms"], 300);
}
