//! `cache` through the real binary (DESIGN.md "Edge policies (per route)", issue 19): upstreams
//! that count what reaches them, RFC 9111 freshness and storability, `Vary` and per-consumer
//! keys, the fill lock under 50 concurrent misses, a bounded store under a flood of distinct
//! keys, stripped and compressed hits, admin purge, HEAD and 304 from a GET entry, reload, and
//! `check` refusing what cannot work. Every wait is a bounded poll; nothing asserts wall time.

mod common;

use common::canned::{decode, Canned, Upstream};
use common::metrics::{self, metrics_text};
use common::tokens::sha256_hex;
use common::*;
use std::time::{Duration, Instant};

const KEY_ACME: &str = "cache-test-key-acme-0123456789";
const KEY_GLOBEX: &str = "cache-test-key-globex-0123456789";

fn routes(up: &Upstream, echo: &Backend) -> String {
    format!(
        "upstreams:
  canned: {{backends: [\"{up}\"], retries: 0}}
  echo: {{backends: [\"{echo}\"], retries: 0}}
auth:
  api_keys:
    k: {{header: X-API-Key, keys: [{{id: acme, sha256: \"{acme}\"}}, {{id: globex, sha256: \"{globex}\"}}]}}
rate_limits:
  two: {{key: client_ip, requests: 2, per: 1m}}
routes:
  - name: c
    match: {{path_prefix: /c}}
    upstream: canned
    cache: {{ttl: 1h}}
    cors: {{allow_origins: [\"https://app.example.com\"]}}
    response_headers: {{add: {{X-Gateway: tollgate}}, remove: [X-Internal]}}
  - name: short
    match: {{path_prefix: /short}}
    upstream: canned
    cache: {{ttl: 1s}}
  - name: json
    match: {{path_prefix: /json}}
    upstream: canned
    response_json: {{remove: [\"items[].secret\"]}}
    compress: {{types: [application/json], min_size: 1KiB}}
    cache: {{ttl: 1h}}
  - name: echo
    match: {{path_prefix: /echo}}
    upstream: echo
    cache: {{ttl: 1h, vary: [X-Tenant]}}
  - name: keyed
    match: {{path_prefix: /keyed}}
    upstream: echo
    auth: {{api_key: k}}
    cache: {{ttl: 1h}}
  - name: limited
    match: {{path_prefix: /limited}}
    upstream: echo
    rate_limit: two
    cache: {{ttl: 1h}}
",
        up = up.addr(),
        echo = echo.addr(),
        acme = sha256_hex(KEY_ACME),
        globex = sha256_hex(KEY_GLOBEX),
    )
}

const STORE: &str = "cache: {max_size: 8MiB, lock_timeout: 5s}";

async fn gateway(up: &Upstream, echo: &Backend) -> Gateway {
    Gateway::start_with(&[STORE], &routes(up, echo)).await
}

fn x_cache(r: &Resp) -> &str {
    r.header("x-cache").unwrap_or("<none>")
}

fn age(r: &Resp) -> u64 {
    r.header("age")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no Age: {r}"))
}

fn cache_count(text: &str, route: &str, result: &str) -> f64 {
    metrics::value(
        text,
        "tollgate_cache_requests_total",
        &[("route", route), ("result", result)],
    )
    .unwrap_or(0.0)
}

/// GET `path` every 100 ms until the answer is not a HIT (at most `limit`); returns it.
async fn until_not_hit(gw: &Gateway, path: &str, limit: Duration) -> Resp {
    let deadline = Instant::now() + limit;
    loop {
        let r = gw.get(path).await;
        if x_cache(&r) != "HIT" || Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn miss_then_hits_from_one_upstream_request_with_a_growing_age() {
    let up = Upstream::start().await;
    let echo = Backend::start("echo").await;
    up.serve(
        "/c/doc",
        Canned::json(r#"{"id":7}"#).header("X-Internal", "secret-host"),
    );
    let gw = gateway(&up, &echo).await;
    let first = gw.get("/c/doc").await;
    assert_eq!(first.status, 200, "{first}");
    assert_eq!(x_cache(&first), "MISS", "{first}");
    assert_eq!(age(&first), 0);
    let origin = [("Origin", "https://app.example.com")];
    let hit = gw.get_with("/c/doc", &origin).await;
    assert_eq!(x_cache(&hit), "HIT", "{hit}");
    assert_eq!(hit.text(), r#"{"id":7}"#);
    assert_eq!(hit.header("content-length"), Some("8"), "{hit}");
    // A hit is an answer like any other: its own request id, the route's header policy, CORS.
    assert_ne!(hit.header("x-request-id"), first.header("x-request-id"));
    assert!(hit.header("x-request-id").is_some_and(|v| !v.is_empty()));
    assert_eq!(hit.header("x-gateway"), Some("tollgate"), "{hit}");
    assert!(hit.header("x-internal").is_none(), "{hit}");
    assert_eq!(
        hit.header("access-control-allow-origin"),
        Some("https://app.example.com"),
        "{hit}"
    );
    // Age grows while the entry is served (seconds: poll for at most 5 s).
    let deadline = Instant::now() + Duration::from_secs(5);
    let older = loop {
        let r = gw.get("/c/doc").await;
        assert_eq!(x_cache(&r), "HIT", "{r}");
        if age(&r) >= 1 || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(age(&older) >= 1, "Age did not grow: {older}");
    assert_eq!(up.seen("/c/doc").len(), 1, "the upstream was asked again");
    let text = metrics_text(&gw).await;
    assert_eq!(cache_count(&text, "c", "miss"), 1.0, "{text}");
    assert!(cache_count(&text, "c", "hit") >= 2.0, "{text}");
    let bytes = metrics::value(&text, "tollgate_cache_bytes", &[]).expect("cache bytes");
    assert!(bytes > 0.0, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_must_never_be_stored_or_served_from_the_cache() {
    let up = Upstream::start().await;
    let echo = Backend::start("echo").await;
    up.serve(
        "/c/nostore",
        Canned::json("{}").header("Cache-Control", "no-store"),
    );
    up.serve(
        "/c/private",
        Canned::json("{}").header("Cache-Control", "private, max-age=600"),
    );
    up.serve(
        "/c/nocache",
        Canned::json("{}").header("Cache-Control", "no-cache"),
    );
    up.serve("/c/cookie", Canned::json("{}").header("Set-Cookie", "s=1"));
    up.serve(
        "/c/expired",
        Canned::json("{}").header("Expires", "Thu, 01 Jan 1970 00:00:00 GMT"),
    );
    up.serve("/c/error", Canned::json("{}").status(500));
    up.serve("/c/star", Canned::json("{}").header("Vary", "*"));
    up.serve("/c/doc", Canned::json("{}"));
    let gw = gateway(&up, &echo).await;
    for path in [
        "/c/nostore",
        "/c/private",
        "/c/nocache",
        "/c/cookie",
        "/c/expired",
        "/c/error",
        "/c/star",
    ] {
        for _ in 0..3 {
            let r = gw.get(path).await;
            assert_eq!(x_cache(&r), "MISS", "{path}: {r}");
        }
        assert_eq!(up.seen(path).len(), 3, "{path} was served from the cache");
    }
    // POST, a client's no-store, a range, or credentials nobody verified: BYPASS, never stored.
    gw.get("/c/doc").await;
    for (method, headers) in [
        ("POST", vec![]),
        ("GET", vec![("Cache-Control", "no-store")]),
        ("GET", vec![("Range", "bytes=0-1")]),
        ("GET", vec![("Authorization", "Bearer someone")]),
    ] {
        for _ in 0..2 {
            let r = gw.request(method, "/c/doc", &headers).await;
            assert_eq!(x_cache(&r), "BYPASS", "{method} {headers:?}: {r}");
        }
    }
    assert_eq!(up.seen("/c/doc").len(), 9);
    // A client's no-cache refetches (and refreshes the entry).
    let r = gw
        .get_with("/c/doc", &[("Cache-Control", "no-cache")])
        .await;
    assert_eq!(x_cache(&r), "MISS", "{r}");
    assert_eq!(up.seen("/c/doc").len(), 10);
    assert_eq!(x_cache(&gw.get("/c/doc").await), "HIT");
    let text = metrics_text(&gw).await;
    assert_eq!(cache_count(&text, "c", "bypass"), 8.0, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_freshness_wins_and_ttl_applies_only_when_it_is_silent() {
    let up = Upstream::start().await;
    let echo = Backend::start("echo").await;
    up.serve("/short/silent", Canned::json("{}"));
    up.serve(
        "/short/long",
        Canned::json("{}").header("Cache-Control", "public, max-age=3600"),
    );
    up.serve(
        "/c/brief",
        Canned::json("{}").header("Cache-Control", "max-age=1"),
    );
    let gw = gateway(&up, &echo).await;
    for path in ["/short/silent", "/short/long", "/c/brief"] {
        assert_eq!(x_cache(&gw.get(path).await), "MISS", "{path}");
        assert_eq!(x_cache(&gw.get(path).await), "HIT", "{path}");
    }
    // The upstream's max-age=1 beats the route's ttl of 1h; the route's 1s applies to the
    // silent upstream only.
    for path in ["/c/brief", "/short/silent"] {
        let r = until_not_hit(&gw, path, Duration::from_secs(5)).await;
        assert_eq!(x_cache(&r), "MISS", "{path} never expired: {r}");
        assert_eq!(up.seen(path).len(), 2, "{path}");
    }
    // By now more than the route's 1s has passed: the upstream's max-age=3600 keeps it.
    let r = gw.get("/short/long").await;
    assert_eq!(x_cache(&r), "HIT", "{r}");
    assert_eq!(up.seen("/short/long").len(), 1);
    // A client's max-age=0 does not accept an entry that has aged.
    let r = gw
        .get_with("/short/long", &[("Cache-Control", "max-age=0")])
        .await;
    assert_eq!(x_cache(&r), "MISS", "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_and_the_routes_vary_list_split_entries() {
    let up = Upstream::start().await;
    let echo = Backend::start("echo").await;
    up.serve(
        "/c/lang",
        Canned::json("{}").header("Vary", "Accept-Language"),
    );
    let gw = gateway(&up, &echo).await;
    let lang = |l: &'static str| [("Accept-Language", l)];
    for (l, expected) in [("fr", "MISS"), ("de", "MISS"), ("fr", "HIT"), ("de", "HIT")] {
        let r = gw.get_with("/c/lang", &lang(l)).await;
        assert_eq!(x_cache(&r), expected, "{l}: {r}");
    }
    assert_eq!(up.seen("/c/lang").len(), 2);
    // The route's `vary: [X-Tenant]`: each tenant its own entry, with its own body.
    let tenant = |t: &'static str| [("X-Tenant", t)];
    let a = gw.get_with("/echo/x", &tenant("a")).await;
    let b = gw.get_with("/echo/x", &tenant("b")).await;
    assert_eq!((x_cache(&a), x_cache(&b)), ("MISS", "MISS"));
    let a2 = gw.get_with("/echo/x", &tenant("a")).await;
    assert_eq!(x_cache(&a2), "HIT");
    assert_eq!(a2.echo().header("x-tenant"), Some("a"));
    assert_eq!(
        gw.get_with("/echo/x", &tenant("b"))
            .await
            .echo()
            .header("x-tenant"),
        Some("b")
    );
    assert_eq!(echo.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_never_see_each_others_responses_and_hits_pass_auth_and_limits() {
    let up = Upstream::start().await;
    let echo = Backend::start("echo").await;
    let gw = gateway(&up, &echo).await;
    let acme = [("X-API-Key", KEY_ACME)];
    let globex = [("X-API-Key", KEY_GLOBEX)];
    for (key, consumer, expected) in [
        (&acme, "acme", "MISS"),
        (&globex, "globex", "MISS"),
        (&acme, "acme", "HIT"),
        (&globex, "globex", "HIT"),
    ] {
        let r = gw.get_with("/keyed/me", key).await;
        assert_eq!(x_cache(&r), expected, "{consumer}: {r}");
        assert_eq!(r.echo().header("x-consumer"), Some(consumer), "{r}");
    }
    assert_eq!(echo.hits(), 2);
    // No key: refused before the cache is consulted.
    gw.get("/keyed/me")
        .await
        .assert_gateway_error(401, "unauthorized");
    // A hit counts against the limit like a miss (2 per minute per client).
    let first = gw.get("/limited").await;
    assert_eq!(x_cache(&first), "MISS");
    let second = gw.get("/limited").await;
    assert_eq!(x_cache(&second), "HIT");
    assert_eq!(
        second.header("x-ratelimit-remaining"),
        Some("0"),
        "{second}"
    );
    gw.get("/limited")
        .await
        .assert_gateway_error(429, "rate_limited");
    assert_eq!(echo.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_misses_make_one_upstream_request() {
    let up = Upstream::start().await;
    let echo = Backend::start("echo").await;
    // About a second to answer: every request below arrives while the first is in flight.
    let doc = format!("{{\"slow\":\"{}\"}}", "x".repeat(100));
    up.serve(
        "/c/slow",
        Canned::json(doc.clone()).pieces(8, Some(Duration::from_millis(40))),
    );
    let gw = gateway(&up, &echo).await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let (client, url) = (client(), gw.url("/c/slow"));
        tasks.spawn(async move { send(&client, "GET", &url, &[]).await });
    }
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    while let Some(r) = tasks.join_next().await {
        let r = r.expect("task");
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(r.text(), doc);
        *outcomes.entry(x_cache(&r).to_string()).or_default() += 1;
    }
    assert_eq!(up.seen("/c/slow").len(), 1, "{outcomes:?}");
    assert_eq!(outcomes.get("MISS"), Some(&1), "{outcomes:?}");
    assert_eq!(outcomes.get("HIT"), Some(&49), "{outcomes:?}");
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_stays_bounded_under_a_flood_of_distinct_keys() {
    let up = Upstream::start().await;
    up.serve(
        "/big",
        Canned::json(format!("\"{}\"", "b".repeat(64 * 1024))),
    );
    up.serve("/small", Canned::json("{\"small\":true}"));
    let body = format!(
        "upstreams:\n  canned: {{backends: [\"{}\"], retries: 0}}\nroutes:
  - name: flood
    match: {{path_prefix: /}}
    upstream: canned
    cache: {{ttl: 1h, max_object: 256KiB}}
",
        up.addr()
    );
    let gw = Gateway::start_with(&["cache: {max_size: 2MiB}"], &body).await;
    let before = rss_kib(gw.pid());
    // 600 distinct 64 KiB responses (37 MiB) through a 2 MiB store, then 100,000 small ones,
    // 8 clients at a time; every 50th request of each asks for a popular entry.
    async fn flood(gw: &Gateway, path: &'static str, n: usize) {
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..8 {
            let (client, base, hot) = (gw.client.clone(), gw.url(path), gw.url("/small?k=hot"));
            tasks.spawn(async move {
                for i in (worker..n).step_by(8) {
                    let r = send(&client, "GET", &format!("{base}?k={i}"), &[]).await;
                    assert_eq!(r.status, 200, "{r}");
                    if i % 50 == worker {
                        assert_eq!(send(&client, "GET", &hot, &[]).await.status, 200);
                    }
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.expect("flood task");
        }
    }
    for _ in 0..5 {
        gw.get("/small?k=hot").await;
    }
    flood(&gw, "/big", 600).await;
    let text = metrics_text(&gw).await;
    let bytes = metrics::value(&text, "tollgate_cache_bytes", &[]).expect("bytes");
    let evictions = metrics::value(&text, "tollgate_cache_evictions_total", &[]).unwrap_or(0.0);
    assert!(bytes <= 2.0 * 1024.0 * 1024.0, "{bytes} bytes stored");
    assert!(evictions > 0.0, "{text}");
    flood(&gw, "/small", 100_000).await;
    let text = metrics_text(&gw).await;
    let bytes = metrics::value(&text, "tollgate_cache_bytes", &[]).expect("bytes");
    assert!(bytes <= 2.0 * 1024.0 * 1024.0, "{bytes} bytes stored");
    let after = rss_kib(gw.pid());
    assert!(
        before > 0 && after < before + 48 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    // TinyLFU admission: the popular entry outlived the flood of one-time keys...
    assert_eq!(x_cache(&gw.get("/small?k=hot").await), "HIT");
    // ...and a new key is admitted once it is asked for more often than what it displaces.
    let mut outcomes = Vec::new();
    for _ in 0..10 {
        let r = gw.get("/small?k=fresh").await;
        outcomes.push(x_cache(&r).to_string());
        if x_cache(&r) == "HIT" {
            break;
        }
    }
    assert_eq!(
        outcomes.last().map(String::as_str),
        Some("HIT"),
        "{outcomes:?}"
    );
}

fn document() -> (String, serde_json::Value) {
    let items: Vec<String> = (0..80)
        .map(|i| format!("{{\"id\":{i},\"name\":\"item {i}\",\"secret\":\"s3cr3t-{i}\"}}"))
        .collect();
    let doc = format!("{{\"items\":[{}]}}", items.join(","));
    let mut v: serde_json::Value = serde_json::from_str(&doc).unwrap();
    for item in v["items"].as_array_mut().unwrap() {
        item.as_object_mut().unwrap().remove("secret");
    }
    (doc, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_are_the_stripped_json_compressed_per_client() {
    let up = Upstream::start().await;
    let echo = Backend::start("echo").await;
    let (doc, expected) = document();
    up.serve("/json/doc", Canned::json(doc).header("ETag", "\"d1\""));
    let gw = gateway(&up, &echo).await;
    let first = gw
        .get_with("/json/doc", &[("Accept-Encoding", "gzip")])
        .await;
    assert_eq!(x_cache(&first), "MISS", "{first}");
    assert_eq!(first.header("content-encoding"), Some("gzip"));
    for coding in ["zstd", "br", "gzip"] {
        let r = gw
            .get_with("/json/doc", &[("Accept-Encoding", coding)])
            .await;
        assert_eq!(x_cache(&r), "HIT", "{r}");
        assert_eq!(r.header("content-encoding"), Some(coding), "{r}");
        assert_eq!(
            r.header("content-length"),
            Some(r.body.len().to_string().as_str())
        );
        assert_eq!(r.header("etag"), Some("W/\"d1\""), "{r}");
        assert!(r
            .header_all("vary")
            .iter()
            .any(|v| v.contains("Accept-Encoding")));
        let plain = decode(coding, &r.body);
        assert!(!String::from_utf8_lossy(&plain).contains("s3cr3t"));
        let got: serde_json::Value = serde_json::from_slice(&plain).expect("JSON");
        assert_eq!(got, expected, "{coding}");
    }
    // A revalidation of the gzip variant: the 304 names what that client holds (the weak
    // ETag) and says the representation varies by Accept-Encoding; for an identity client the
    // strong ETag stays.
    let not_modified = gw
        .get_with(
            "/json/doc",
            &[("Accept-Encoding", "gzip"), ("If-None-Match", "W/\"d1\"")],
        )
        .await;
    assert_eq!(not_modified.status, 304, "{not_modified}");
    assert_eq!(
        not_modified.header("etag"),
        Some("W/\"d1\""),
        "{not_modified}"
    );
    assert!(
        not_modified
            .header_all("vary")
            .iter()
            .any(|v| v.contains("Accept-Encoding")),
        "{not_modified}"
    );
    let identity = gw
        .get_with("/json/doc", &[("If-None-Match", "\"d1\"")])
        .await;
    assert_eq!(identity.status, 304, "{identity}");
    assert_eq!(identity.header("etag"), Some("\"d1\""), "{identity}");
    let r = gw.get("/json/doc").await;
    assert_eq!(x_cache(&r), "HIT", "{r}");
    assert!(r.header("content-encoding").is_none(), "{r}");
    assert!(!r.text().contains("s3cr3t"), "the raw body was stored");
    assert_eq!(r.json(), expected);
    // One upstream request, asked for identity.
    let seen = up.seen("/json/doc");
    assert_eq!(seen.len(), 1);
    assert!(seen[0].header_all("accept-encoding").is_empty(), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_and_conditional_requests_are_answered_from_a_get_entry() {
    let up = Upstream::start().await;
    let echo = Backend::start("echo").await;
    up.serve(
        "/c/h",
        Canned::json(r#"{"head":"less"}"#)
            .header("ETag", "\"v1\"")
            .header("Last-Modified", "Tue, 01 Dec 2026 10:00:00 GMT"),
    );
    up.serve("/c/cold", Canned::json("{}"));
    let gw = gateway(&up, &echo).await;
    assert_eq!(x_cache(&gw.get("/c/h").await), "MISS");
    let head = gw.request("HEAD", "/c/h", &[]).await;
    assert_eq!(x_cache(&head), "HIT", "{head}");
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-length"), Some("15"), "{head}");
    let not_modified = gw
        .get_with("/c/h", &[("If-None-Match", "\"v0\", \"v1\"")])
        .await;
    assert_eq!(not_modified.status, 304, "{not_modified}");
    assert_eq!(x_cache(&not_modified), "HIT");
    assert_eq!(not_modified.header("etag"), Some("\"v1\""));
    assert!(not_modified.body.is_empty());
    let changed = gw.get_with("/c/h", &[("If-None-Match", "\"v2\"")]).await;
    assert_eq!(changed.status, 200);
    assert_eq!(x_cache(&changed), "HIT");
    let since = gw
        .get_with(
            "/c/h",
            &[("If-Modified-Since", "Wed, 02 Dec 2026 10:00:00 GMT")],
        )
        .await;
    assert_eq!(since.status, 304, "{since}");
    assert_eq!(up.seen("/c/h").len(), 1);
    // A HEAD miss goes upstream as HEAD and does not fill the entry.
    assert_eq!(x_cache(&gw.request("HEAD", "/c/cold", &[]).await), "MISS");
    assert_eq!(x_cache(&gw.get("/c/cold").await), "MISS");
    assert_eq!(x_cache(&gw.get("/c/cold").await), "HIT");
    let seen: Vec<String> = up
        .seen("/c/cold")
        .iter()
        .map(|s| s.method.clone())
        .collect();
    assert_eq!(seen, ["HEAD", "GET"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_purges_a_path_or_a_whole_route() {
    let up = Upstream::start().await;
    let echo = Backend::start("echo").await;
    up.serve("/c/p1", Canned::json("{}"));
    up.serve("/c/p2", Canned::json("{}"));
    let gw = gateway(&up, &echo).await;
    for path in ["/c/p1", "/c/p2?q=1", "/c/p2?q=2"] {
        assert_eq!(x_cache(&gw.get(path).await), "MISS");
        assert_eq!(x_cache(&gw.get(path).await), "HIT");
    }
    let purge = |q: &'static str| {
        let (client, url) = (gw.client.clone(), gw.admin_url(&format!("/cache?{q}")));
        async move { send(&client, "DELETE", &url, &[]).await }
    };
    let r = purge("route=c&path=%2Fc%2Fp2").await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.json()["removed"], 2, "{r}");
    assert_eq!(x_cache(&gw.get("/c/p2?q=1").await), "MISS");
    assert_eq!(x_cache(&gw.get("/c/p1").await), "HIT");
    let r = purge("route=c").await;
    assert_eq!(r.json()["removed"], 2, "{r}");
    assert_eq!(x_cache(&gw.get("/c/p1").await), "MISS");
    assert_eq!(purge("route=nope").await.status, 404);
    assert_eq!(purge("path=/c/p1").await.status, 400);
    let stats = gw.admin_get("/cache").await;
    assert_eq!(stats.status, 200, "{stats}");
    assert_eq!(stats.json()["max_size"], 8 * 1024 * 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_store_and_drops_only_changed_routes() {
    let up = Upstream::start().await;
    let echo = Backend::start("echo").await;
    up.serve("/c/kept", Canned::json("{}"));
    up.serve("/short/changed", Canned::json("{}"));
    let gw = gateway(&up, &echo).await;
    for path in ["/c/kept", "/short/changed"] {
        assert_eq!(x_cache(&gw.get(path).await), "MISS");
    }
    let changed = routes(&up, &echo).replace("cache: {ttl: 1s}", "cache: {ttl: 2s}");
    gw.rewrite_config(&[STORE], &changed);
    gw.reload_to(2).await;
    assert_eq!(x_cache(&gw.get("/c/kept").await), "HIT");
    assert_eq!(x_cache(&gw.get("/short/changed").await), "MISS");
    // A new store size is a new store.
    gw.rewrite_config(&["cache: {max_size: 4MiB}"], &changed);
    gw.reload_to(3).await;
    assert_eq!(x_cache(&gw.get("/c/kept").await), "MISS");
}

const CHECK_BODY: &str =
    "upstreams:\n  u: {backends: [\"127.0.0.1:1\"]}\nroutes:\n  - name: r\n    upstream: u\n";

fn check_yaml(server_extra: &str, cache: &str) -> String {
    format!(
        "{}{server_extra}\n{CHECK_BODY}    cache: {cache}\n",
        check_server_section!()
    )
}

#[test]
fn check_refuses_what_cannot_work_with_yaml_paths() {
    let store = "  cache: {max_size: 1MiB}";
    for (server, cache, path, fragments) in [
        (
            store,
            "{ttl: 0s}",
            "routes[0].cache.ttl",
            &["more than 0"][..],
        ),
        (
            store,
            "{ttl: -5s}",
            "routes[0].cache.ttl",
            &["invalid duration"][..],
        ),
        (
            store,
            "{ttl: 1m, max_object: 2MiB}",
            "routes[0].cache.max_object",
            &["server.cache.max_size"][..],
        ),
        (
            store,
            "{ttl: 1m, max_object: 0}",
            "routes[0].cache.max_object",
            &["more than 0"][..],
        ),
        (
            store,
            "{ttl: 1m, vary: [\"Bad Header\"]}",
            "routes[0].cache.vary[0]",
            &["invalid header name"][..],
        ),
        (
            store,
            "{ttl: 1m, vray: [Accept]}",
            "routes[0].cache",
            &["unknown field", "vray"][..],
        ),
        ("", "{ttl: 1m}", "routes[0].cache", &["server.cache"][..]),
        (
            "  cache: {max_size: 0}",
            "{ttl: 1m}",
            "server.cache.max_size",
            &["more than 0"][..],
        ),
        (
            "  cache: {max_size: 1MiB, size: 2}",
            "{ttl: 1m}",
            "server.cache",
            &["unknown field", "size"][..],
        ),
    ] {
        assert_check_rejects_with(
            &check_yaml(server, cache),
            &[],
            &format!("error: {path}"),
            fragments,
        );
    }
    let (code, _, err) = check(&check_yaml(
        store,
        "{ttl: 30s, vary: [Accept], max_object: 512KiB}",
    ));
    assert_eq!(code, 0, "{err}");
}

/// What would let one client's request shape an entry others get: a credential the route did
/// not check (the answer may be that caller's: not stored, not served), and hop claims an
/// untrusted client wrote (`Forwarded`, `X-Real-IP`, `X-Original-URL`: stripped, so the backend
/// never builds an answer from them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unverified_credentials_and_client_hop_claims_shape_no_entry() {
    let up = Upstream::start().await;
    let echo = Backend::start("echo").await;
    let gw = gateway(&up, &echo).await;
    let r = gw.get_with("/echo/k", &[("X-API-Key", KEY_ACME)]).await;
    assert_eq!(x_cache(&r), "BYPASS", "{r}");
    let claims = [
        ("Forwarded", "for=6.6.6.6;host=evil.example;proto=http"),
        ("X-Real-IP", "6.6.6.6"),
        ("X-Original-URL", "/admin"),
        ("X-HTTP-Method-Override", "DELETE"),
    ];
    let r = gw.get_with("/echo/f", &claims).await;
    assert_eq!(x_cache(&r), "MISS", "{r}");
    let seen = r.echo();
    for (name, _) in claims {
        assert_eq!(
            seen.header(&name.to_ascii_lowercase()),
            None,
            "{name} reached the backend"
        );
    }
}

/// A MISS that is stored answers with the age its copy starts with (RFC 9111 §4.2.3): a
/// response whose `Date` is 100 s old is 100 s old for the client that fetched it and for the
/// next one that gets the copy, not 0 s and then 100 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_miss_reports_the_age_its_copy_starts_with() {
    let up = Upstream::start().await;
    let echo = Backend::start("echo").await;
    let dated =
        httpdate::fmt_http_date(std::time::SystemTime::now() - std::time::Duration::from_secs(100));
    up.serve(
        "/c/aged",
        Canned::json("{}")
            .header("Date", &dated)
            .header("Cache-Control", "max-age=3600"),
    );
    up.serve(
        "/c/fresh",
        Canned::json("{}").header("Cache-Control", "no-store"),
    );
    let gw = gateway(&up, &echo).await;
    let age = |r: &Resp| -> u64 {
        r.header("age")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no numeric Age: {r}"))
    };
    let miss = gw.get("/c/aged").await;
    assert_eq!(x_cache(&miss), "MISS", "{miss}");
    assert!((100..110).contains(&age(&miss)), "{miss}");
    let hit = gw.get("/c/aged").await;
    assert_eq!(x_cache(&hit), "HIT", "{hit}");
    assert!(age(&hit) >= age(&miss), "{miss}\n{hit}");
    // Not stored: nothing was kept, so nothing has aged.
    let passed = gw.get("/c/fresh").await;
    assert_eq!(age(&passed), 0, "{passed}");
}
