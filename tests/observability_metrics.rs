//! Observability, metrics (DESIGN.md "Observability"): the admin `/metrics` exposition (exact
//! counters by label, histograms, backend health gauges, in-flight, build info, process metrics,
//! format and label hygiene), and the strict exposition parser all metrics tests read it with.
//!
//! Every test runs its own gateway process, so counters start from zero and exact values can be
//! asserted. Metrics are written in Pingora's `logging` phase, i.e. possibly after the client
//! already has its response: scrapes poll (bounded) until the expected state is reached, then
//! assert exact values.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::metrics::{self as prom, scrape, scrape_until};
use common::suites::observability::*;
use common::tokens::sha256_hex;
use common::*;

/// The exposition checks below are only as good as this parser: it must accept the real format
/// (escapes, histograms, timestamps) and reject what Prometheus would not.
#[test]
fn prometheus_parser_is_strict() {
    let good = "# HELP a_total Things, with a \\\\ and a \\n.\n# TYPE a_total counter\n\
a_total{x=\"q\\\"uote\\\\back\\nnl\",y=\"\"} 3\na_total{x=\"2\",} 4 1700000000000\n\
# HELP h Hist\n# TYPE h histogram\nh_bucket{le=\"0.1\"} 1\nh_bucket{le=\"+Inf\"} 2\n\
h_sum 0.3\nh_count 2\n# HELP g G\n# TYPE g gauge\ng -1.5e-3\ng{k=\"v\"} NaN\n";
    let m = prom::parse(good);
    assert!(m.problems.is_empty(), "{:?}", m.problems);
    assert_eq!(
        m.value("a_total", &[("x", "q\"uote\\back\nnl"), ("y", "")]),
        Some(3.0)
    );
    assert_eq!(m.value("a_total", &[("x", "2")]), Some(4.0));
    assert_eq!(m.value("h_count", &[]), Some(2.0));
    assert_eq!(m.value("g", &[]), Some(-0.0015));
    assert_eq!(m.families["h"].samples.len(), 4);

    let header = "# HELP m M\n# TYPE m counter\n";
    let bad: &[(&str, String)] = &[
        ("no TYPE", "# HELP m M\nm 1\n".into()),
        ("no HELP", "# TYPE m counter\nm 1\n".into()),
        ("no value", format!("{header}m\n")),
        ("bad value", format!("{header}m one\n")),
        ("bad name", format!("{header}1m 1\n")),
        ("bad label name", format!("{header}m{{1a=\"x\"}} 1\n")),
        ("unquoted label", format!("{header}m{{a=x}} 1\n")),
        ("unterminated", format!("{header}m{{a=\"x}} 1\n")),
        ("bad escape", format!("{header}m{{a=\"\\t\"}} 1\n")),
        ("repeated label", format!("{header}m{{a=\"1\",a=\"2\"}} 1\n")),
        ("duplicate", format!("{header}m{{a=\"1\"}} 1\nm{{a=\"1\"}} 2\n")),
        ("trailing", format!("{header}m 1 2 3\n")),
        ("negative counter", format!("{header}m -1\n")),
        ("NaN counter", format!("{header}m NaN\n")),
        ("no final newline", format!("{header}m 1")),
        ("second TYPE", format!("{header}# TYPE m gauge\nm 1\n")),
        (
            "split group",
            format!("{header}m 1\n# HELP n N\n# TYPE n gauge\nn 1\nm{{a=\"b\"}} 2\n"),
        ),
        (
            "+Inf != count",
            "# HELP h H\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n".into(),
        ),
        (
            "not cumulative",
            "# HELP h H\n# TYPE h histogram\nh_bucket{le=\"1\"} 3\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 2\n"
                .into(),
        ),
    ];
    for (what, text) in bad {
        let m = prom::parse(text);
        assert!(!m.problems.is_empty(), "{what}: accepted {text:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn key(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------

/// `tollgate_http_requests_total{route,method,status}` counts exactly what was answered — 200,
/// 401, 404 (`_unmatched`), 429, 503 — and the duration histograms, auth failures, rate-limit
/// refusals, backend gauges, in-flight and build info agree with the same traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_counters_and_histograms_match_the_traffic_exactly() {
    let fx = Fixture::new().await;
    let gw = Gateway::start(&fx.config(3)).await;

    for i in 0..5 {
        assert_eq!(gw.get(&format!("/ok/{i}")).await.status, 200);
    }
    for _ in 0..2 {
        let r = gw.request("POST", "/ok/b", &[]).await;
        assert_eq!(r.status, 200, "{r}");
    }
    for _ in 0..4 {
        assert_eq!(gw.get("/two/x").await.status, 200);
    }
    for _ in 0..2 {
        gw.get("/keyed/x")
            .await
            .assert_gateway_error(401, "unauthorized");
    }
    gw.get_with("/keyed/x", &[("x-api-key", BAD_KEY)])
        .await
        .assert_gateway_error(401, "unauthorized");
    for _ in 0..3 {
        let r = gw.get_with("/keyed/y", &[("x-api-key", API_KEY)]).await;
        assert_eq!(r.status, 200, "{r}");
    }
    let mut limited: BTreeMap<u16, usize> = BTreeMap::new();
    for _ in 0..6 {
        *limited
            .entry(gw.get("/limited/z").await.status)
            .or_default() += 1;
    }
    assert_eq!(
        limited,
        BTreeMap::from([(200, 3), (429, 3)]),
        "limit of 3 per minute"
    );
    for i in 0..4 {
        gw.get(&format!("/nowhere/{i}"))
            .await
            .assert_gateway_error(404, "not_found");
    }
    gw.request("DELETE", "/nowhere", &[])
        .await
        .assert_gateway_error(404, "not_found");
    for _ in 0..2 {
        gw.get("/down/x")
            .await
            .assert_gateway_error(503, "service_unavailable");
    }
    let total = 5 + 2 + 4 + 3 + 3 + 6 + 4 + 1 + 2;

    let (text, m) = scrape_until(&gw.client, gw.admin_port, "all requests logged", |m| {
        settled(m, total, 17)
    })
    .await;

    let requests = m.by(
        "tollgate_http_requests_total",
        &["route", "method", "status"],
    );
    let expected: BTreeMap<Vec<String>, f64> = [
        (["ok", "GET", "200"], 5.0),
        (["ok", "POST", "200"], 2.0),
        (["two", "GET", "200"], 4.0),
        (["keyed", "GET", "401"], 3.0),
        (["keyed", "GET", "200"], 3.0),
        (["limited", "GET", "200"], 3.0),
        (["limited", "GET", "429"], 3.0),
        (["_unmatched", "GET", "404"], 4.0),
        (["_unmatched", "DELETE", "404"], 1.0),
        (["down", "GET", "503"], 2.0),
    ]
    .into_iter()
    .map(|(k, v)| (key(&k), v))
    .collect();
    assert_eq!(requests, expected, "requests_total; exposition:\n{text}");
    for s in m.samples("tollgate_http_requests_total") {
        let names: Vec<&str> = s.labels.keys().map(String::as_str).collect();
        assert_eq!(names, ["method", "route", "status"], "labels of {s:?}");
    }

    let durations = m.by("tollgate_http_request_duration_seconds_count", &["route"]);
    let expected: BTreeMap<Vec<String>, f64> = [
        ("ok", 7.0),
        ("two", 4.0),
        ("keyed", 6.0),
        ("limited", 6.0),
        ("_unmatched", 5.0),
        ("down", 2.0),
    ]
    .into_iter()
    .map(|(k, v)| (key(&[k]), v))
    .collect();
    assert_eq!(
        durations, expected,
        "request duration _count per route; exposition:\n{text}"
    );

    // Only requests that got an upstream response are timed upstream: 5+2+3+3 on echo, 4 on
    // second; the dead upstream was never reached.
    let up = m.by("tollgate_upstream_duration_seconds_count", &["upstream"]);
    assert_eq!(up.get(&key(&["echo"])), Some(&13.0), "{text}");
    assert_eq!(up.get(&key(&["second"])), Some(&4.0), "{text}");
    assert!(
        up.get(&key(&["dead"])).is_none_or(|v| *v == 0.0),
        "dead upstream timed: {text}"
    );
    assert_eq!(up.len() - usize::from(up.contains_key(&key(&["dead"]))), 2);

    let auth = m.by("tollgate_auth_failures_total", &["route", "reason"]);
    assert_eq!(
        auth,
        BTreeMap::from([
            (key(&["keyed", "missing"]), 2.0),
            (key(&["keyed", "invalid_api_key"]), 1.0)
        ]),
        "auth failures; exposition:\n{text}"
    );
    let rl = m.by("tollgate_rate_limited_total", &["route", "limit"]);
    assert_eq!(
        rl,
        BTreeMap::from([(key(&["limited", "tiny"]), 3.0)]),
        "rate limited; exposition:\n{text}"
    );

    let healthy = m.by(
        "tollgate_upstream_backend_healthy",
        &["upstream", "backend"],
    );
    assert_eq!(
        healthy,
        BTreeMap::from([
            (key(&["echo", &fx.echo.addr()]), 1.0),
            (key(&["second", &fx.second.addr()]), 1.0),
            (key(&["dead", &fx.dead.addr()]), 0.0),
        ]),
        "backend health gauges; exposition:\n{text}"
    );

    assert_eq!(in_flight(&m), Some(0.0), "{text}");
    let build: Vec<_> = m.samples("tollgate_build_info").collect();
    assert_eq!(build.len(), 1, "{text}");
    assert_eq!(
        build[0].labels.get("version").map(String::as_str),
        Some(VERSION)
    );
    assert_eq!(build[0].value, 1.0);
}

/// `tollgate_upstream_backend_healthy` goes 1 → 0 when a backend dies or fails its health check,
/// and back to 1 when it recovers (health checks every 200 ms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_healthy_gauge_follows_health_checks() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let body = format!(
        "upstreams:\n{}\nroutes:\n  - name: all\n    match: {{path_prefix: /}}\n    upstream: pool\n",
        upstream_yaml("pool", &[&a, &b], &[FAST_HEALTH, "retries: 0"])
    );
    let gw = Gateway::start(&body).await;
    let (aa, ba) = (a.addr(), b.addr());
    let gauge = move |m: &prom::Exposition, addr: &str| {
        m.value(
            "tollgate_upstream_backend_healthy",
            &[("upstream", "pool"), ("backend", addr)],
        )
    };

    let (_, m) = scrape_until(&gw.client, gw.admin_port, "both backends healthy", |m| {
        gauge(m, &aa) == Some(1.0) && gauge(m, &ba) == Some(1.0)
    })
    .await;
    assert_eq!(m.samples("tollgate_upstream_backend_healthy").count(), 2);

    b.kill().await;
    let (text, m) = scrape_until(&gw.client, gw.admin_port, "b unhealthy", |m| {
        gauge(m, &ba) == Some(0.0)
    })
    .await;
    assert_eq!(gauge(&m, &aa), Some(1.0), "a must stay healthy:\n{text}");

    b.revive().await;
    let (text, m) = scrape_until(&gw.client, gw.admin_port, "b healthy again", |m| {
        gauge(m, &ba) == Some(1.0)
    })
    .await;
    assert_eq!(gauge(&m, &aa), Some(1.0), "{text}");

    // An HTTP health check answering 503 counts as unhealthy too.
    a.set_healthy(false);
    let (text, m) = scrape_until(&gw.client, gw.admin_port, "a unhealthy (503)", |m| {
        gauge(m, &aa) == Some(0.0)
    })
    .await;
    assert_eq!(gauge(&m, &ba), Some(1.0), "{text}");
    a.set_healthy(true);
    scrape_until(&gw.client, gw.admin_port, "a healthy again", |m| {
        gauge(m, &aa) == Some(1.0) && gauge(m, &ba) == Some(1.0)
    })
    .await;
}

/// `tollgate_http_requests_in_flight` is 1 while a request waits on a slow upstream and 0 after,
/// also when the client gave up before the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_gauge_tracks_open_requests_and_returns_to_zero() {
    let slow = Backend::start_with_delay("slow", Duration::from_millis(1500)).await;
    let body = format!(
        "upstreams:\n{}\nroutes:\n  - name: slow\n    match: {{path_prefix: /slow}}\n    upstream: pool\n",
        upstream_yaml("pool", &[&slow], &[FAST_HEALTH, "retries: 0", "read_timeout: 10s"])
    );
    let gw = Gateway::start(&body).await;
    let (_, _, m) = scrape(&gw.client, gw.admin_port).await;
    assert_eq!(in_flight(&m), Some(0.0), "idle gateway");

    let (c, url) = (gw.client.clone(), gw.url("/slow/a"));
    let pending = tokio::spawn(async move { send(&c, "GET", &url, &[]).await });
    scrape_until(&gw.client, gw.admin_port, "one request in flight", |m| {
        in_flight(m) == Some(1.0)
    })
    .await;
    let r = tokio::time::timeout(Duration::from_secs(15), pending)
        .await
        .expect("slow request finished")
        .expect("task");
    assert_eq!(r.status, 200, "{r}");
    scrape_until(&gw.client, gw.admin_port, "in flight back to 0", |m| {
        in_flight(m) == Some(0.0)
    })
    .await;

    // A client that hangs up while the upstream is still working.
    let impatient = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client");
    let err = impatient.get(gw.url("/slow/b")).send().await;
    assert!(err.is_err(), "expected a client timeout: {err:?}");
    let (text, m) = scrape_until(
        &gw.client,
        gw.admin_port,
        "in flight back to 0 after a client abort",
        |m| settled(m, 2, 1),
    )
    .await;
    assert_eq!(
        m.sum("tollgate_http_requests_total"),
        2.0,
        "both requests counted:\n{text}"
    );
}

/// The exposition parses strictly: every sample line (name, labels, value), HELP and TYPE for
/// every family, contiguous groups, consistent histograms; the documented metrics have the
/// documented types and label names; process metrics are there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exposition_is_well_formed_and_has_the_documented_families() {
    let fx = Fixture::new().await;
    let gw = Gateway::start(&fx.config(1)).await;
    assert_eq!(gw.get("/ok/a").await.status, 200);
    assert_eq!(gw.get("/two/a").await.status, 200);
    assert_eq!(gw.get("/keyed/a").await.status, 401);
    assert_eq!(gw.get("/limited/a").await.status, 200);
    assert_eq!(gw.get("/limited/a").await.status, 429);
    assert_eq!(gw.get("/nowhere").await.status, 404);
    assert_eq!(gw.get("/down").await.status, 503);
    scrape_until(&gw.client, gw.admin_port, "7 requests", |m| {
        settled(m, 7, 3)
    })
    .await;

    let (resp, text, m) = scrape(&gw.client, gw.admin_port).await;
    let ct = resp.header("content-type").unwrap_or_default();
    assert!(
        ct.starts_with("text/plain") && ct.contains("version=0.0.4"),
        "Content-Type of /metrics: {ct:?}"
    );
    assert!(
        m.problems.is_empty(),
        "exposition problems:\n{}\n--- exposition ---\n{text}",
        m.problems.join("\n")
    );
    // Every non-comment line was parsed into a sample.
    let sample_lines = text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count();
    let parsed: usize = m.families.values().map(|f| f.samples.len()).sum();
    assert_eq!(sample_lines, parsed);

    let documented: &[(&str, &str, &[&str])] = &[
        (
            "tollgate_http_requests_total",
            "counter",
            &["method", "route", "status"],
        ),
        (
            "tollgate_http_request_duration_seconds",
            "histogram",
            &["route"],
        ),
        (
            "tollgate_upstream_duration_seconds",
            "histogram",
            &["upstream"],
        ),
        (
            "tollgate_upstream_backend_healthy",
            "gauge",
            &["backend", "upstream"],
        ),
        (
            "tollgate_rate_limited_total",
            "counter",
            &["limit", "route"],
        ),
        (
            "tollgate_auth_failures_total",
            "counter",
            &["reason", "route"],
        ),
        ("tollgate_http_requests_in_flight", "gauge", &[]),
        ("tollgate_build_info", "gauge", &["version"]),
    ];
    for (name, kind, labels) in documented {
        let fam = m
            .families
            .get(*name)
            .unwrap_or_else(|| panic!("family {name} missing:\n{text}"));
        assert_eq!(fam.kind.as_deref(), Some(*kind), "TYPE of {name}");
        assert!(!fam.samples.is_empty(), "{name} has no samples:\n{text}");
        for s in &fam.samples {
            let names: Vec<&str> = s
                .labels
                .keys()
                .map(String::as_str)
                .filter(|k| !(s.name.ends_with("_bucket") && *k == "le"))
                .collect();
            assert_eq!(&names, labels, "label names of {s:?}");
        }
    }
    for (name, kind) in [
        ("process_resident_memory_bytes", "gauge"),
        ("process_open_fds", "gauge"),
    ] {
        let fam = m
            .families
            .get(name)
            .unwrap_or_else(|| panic!("process metric {name} missing:\n{text}"));
        assert_eq!(fam.kind.as_deref(), Some(kind), "TYPE of {name}");
        let v = m.value(name, &[]).unwrap_or(0.0);
        assert!(v > 0.0, "{name} = {v}");
    }
}

/// Labels are bounded: route names from config (or `_unmatched`), a fixed method set, status
/// codes, configured upstream/backend/limit names, fixed reasons. Paths, query strings, user ids,
/// consumer ids, client IPs, tokens, keys, cookies and user agents never reach the exposition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_labels_never_carry_paths_ids_ips_or_tokens() {
    let fx = Fixture::new().await;
    let gw = Gateway::start_with(&["trusted_proxies: [\"127.0.0.0/8\"]"], &fx.config(2)).await;
    const CLIENT_IP: &str = "203.0.113.77";
    const BEARER: &str = "Bearer tok3nSECRETvalue";
    const COOKIE: &str = "sid=cookieSECRET55";
    const USER: &str = "user-31337x";
    const UA: &str = "agentMARK42/1.0";
    let leaky: [(&str, &str); 6] = [
        ("x-forwarded-for", CLIENT_IP),
        ("authorization", BEARER),
        ("cookie", COOKIE),
        ("x-user-id", USER),
        ("x-consumer", USER),
        ("user-agent", UA),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut h = leaky.to_vec();
        h.extend_from_slice(extra);
        h
    };
    let mut sent = 0;
    let cases: Vec<Case<'_>> = vec![
        (
            "GET",
            "/ok/users/u98765pathmark/orders?token=querySECRET66",
            with(&[]),
            200,
        ),
        (
            "GET",
            "/two/pathmark-two/42?email=querySECRET66",
            with(&[]),
            200,
        ),
        (
            "GET",
            "/keyed/pathmark-keyed",
            with(&[("x-api-key", API_KEY)]),
            200,
        ),
        (
            "GET",
            "/keyed/pathmark-keyed",
            with(&[("x-api-key", BAD_KEY)]),
            401,
        ),
        ("GET", "/limited/pathmark-l/1", with(&[]), 200),
        ("GET", "/limited/pathmark-l/2", with(&[]), 200),
        ("GET", "/limited/pathmark-l/3", with(&[]), 429),
        (
            "GET",
            "/secret-unmatched-pathmark?session=querySECRET66",
            with(&[]),
            404,
        ),
        ("FOOBARMETHOD", "/nowhere-pathmark", with(&[]), 404),
        ("GET", "/down/pathmark-down", with(&[]), 503),
    ];
    for (method, path, headers, status) in &cases {
        let r = gw.request(method, path, headers).await;
        assert_eq!(r.status, *status, "{method} {path}: {r}");
        sent += 1;
    }

    let (text, m) = scrape_until(&gw.client, gw.admin_port, "all requests counted", |m| {
        settled(m, sent, 5)
    })
    .await;
    assert_eq!(
        m.value(
            "tollgate_http_requests_total",
            &[
                ("route", "_unmatched"),
                ("method", "OTHER"),
                ("status", "404")
            ]
        ),
        Some(1.0),
        "an unknown method is counted as OTHER:\n{text}"
    );

    let lower = text.to_ascii_lowercase();
    for marker in [
        "pathmark",
        "querysecret66",
        "tok3nsecretvalue",
        "cookiesecret55",
        USER,
        CLIENT_IP,
        API_KEY,
        BAD_KEY,
        KEY_ID,
        &sha256_hex(API_KEY),
        "agentmark42",
        "foobarmethod",
        "/ok",
        "/keyed",
        "users",
    ] {
        assert!(
            !lower.contains(&marker.to_ascii_lowercase()),
            "{marker:?} leaked into /metrics:\n{text}"
        );
    }

    let routes = ["ok", "two", "keyed", "limited", "down", "_unmatched"];
    let methods = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "OTHER",
    ];
    let upstreams = ["echo", "second", "dead"];
    let backends = [fx.echo.addr(), fx.second.addr(), fx.dead.addr()];
    let reasons = [
        "missing",
        "malformed",
        "ambiguous",
        "expired",
        "not_yet_valid",
        "bad_signature",
        "wrong_issuer",
        "wrong_audience",
        "unknown_kid",
        "disallowed_alg",
        "missing_claim",
        "invalid_api_key",
        "forbidden",
    ];
    for (fname, fam) in m
        .families
        .iter()
        .filter(|(n, _)| n.starts_with("tollgate_"))
    {
        for s in &fam.samples {
            for (k, v) in &s.labels {
                let ok = match k.as_str() {
                    "route" => routes.contains(&v.as_str()),
                    "method" => methods.contains(&v.as_str()),
                    "status" => v.len() == 3 && v.bytes().all(|b| b.is_ascii_digit()),
                    "upstream" => upstreams.contains(&v.as_str()),
                    "backend" => backends.contains(v),
                    "reason" => reasons.contains(&v.as_str()),
                    "limit" => v == "tiny",
                    "version" => v == VERSION,
                    "le" => prom::parse_value(v).is_some(),
                    _ => false,
                };
                assert!(
                    ok,
                    "unbounded or unexpected label {k}={v:?} on {fname}: {s:?}"
                );
            }
        }
    }
}
