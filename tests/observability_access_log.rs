//! Observability, logs and propagation (DESIGN.md "Observability"): the JSON access log (stdout
//! and file destinations, field values, no secrets, `off`, SIGUSR1 reopen for logrotate),
//! `X-Request-Id` and W3C trace context propagation.
//!
//! Every test runs its own gateway process. Log lines are written in Pingora's `logging` phase,
//! i.e. possibly after the client already has its response: log reads poll (bounded) until the
//! expected state is reached, then assert exact values.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use common::metrics::scrape_until;
use common::suites::observability::*;
use common::tokens::sha256_hex;
use common::*;
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The access log fields of DESIGN.md, plus `trace_id`.
const LOG_FIELDS: &[&str] = &[
    "ts",
    "request_id",
    "client_ip",
    "method",
    "host",
    "path",
    "route",
    "upstream",
    "backend",
    "status",
    "latency_ms",
    "upstream_latency_ms",
    "bytes_sent",
    "user_agent",
    "consumer",
    "error",
    "trace_id",
];

/// `(trace_id, parent_id, flags)` of a version-00 `traceparent` with lowercase-hex, non-zero ids.
fn valid_traceparent(v: &str) -> Option<(String, String, String)> {
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let parts: Vec<&str> = v.split('-').collect();
    if parts.len() != 4 || parts[0] != "00" {
        return None;
    }
    let (trace, parent, flags) = (parts[1], parts[2], parts[3]);
    if !hex(trace, 32) || trace.bytes().all(|b| b == b'0') {
        return None;
    }
    if !hex(parent, 16) || parent.bytes().all(|b| b == b'0') {
        return None;
    }
    if !hex(flags, 2) {
        return None;
    }
    Some((trace.into(), parent.into(), flags.into()))
}

fn is_trace_id(s: &str) -> bool {
    valid_traceparent(&format!("00-{s}-00f067aa0ba902b7-01")).is_some()
}

// ---------------------------------------------------------------------------------------------
// Access log lines (gateways from `common::LoggedGateway`)
// ---------------------------------------------------------------------------------------------

/// Checks the fields every access log line has, whatever the outcome.
fn assert_common_fields(line: &Value, resp: &Resp, method: &str, host: &str, ua: &str) {
    let obj = line.as_object().expect("object");
    for f in LOG_FIELDS {
        assert!(obj.contains_key(*f), "access log line lacks {f:?}: {line}");
    }
    let ts = line["ts"].as_str().unwrap_or_else(|| panic!("ts: {line}"));
    let t = humantime::parse_rfc3339(ts).unwrap_or_else(|e| panic!("ts {ts:?} not RFC 3339: {e}"));
    let skew = match SystemTime::now().duration_since(t) {
        Ok(d) => d,
        Err(e) => e.duration(),
    };
    assert!(
        skew < Duration::from_secs(600),
        "ts {ts:?} is far from now: {line}"
    );
    assert_eq!(line["status"], resp.status, "status: {line}");
    assert_eq!(line["method"], method, "method: {line}");
    assert_eq!(line["host"], host, "host: {line}");
    assert_eq!(line["user_agent"], ua, "user_agent: {line}");
    let latency = line["latency_ms"]
        .as_f64()
        .unwrap_or_else(|| panic!("latency_ms not a number: {line}"));
    assert!(latency >= 0.0, "latency_ms: {line}");
    assert_eq!(
        line["bytes_sent"].as_u64(),
        Some(resp.body.len() as u64),
        "bytes_sent must be the response body length ({}): {line}",
        resp.body.len()
    );
    let trace = line["trace_id"]
        .as_str()
        .unwrap_or_else(|| panic!("trace_id missing: {line}"));
    assert!(is_trace_id(trace), "trace_id {trace:?} invalid: {line}");
    let path = line["path"].as_str().unwrap_or_default();
    assert!(
        path.starts_with('/') && !path.contains('?'),
        "path must be the path without a query: {line}"
    );
    if let Some(rid) = resp.header("x-request-id") {
        assert_eq!(line["request_id"], rid, "request_id vs response: {line}");
    }
    assert_eq!(line["client_ip"], "127.0.0.1", "client_ip: {line}");
}

// ---------------------------------------------------------------------------------------------
// Access log
// ---------------------------------------------------------------------------------------------

const LOG_HOST: &str = "logs.example.test";
const LOG_UA: &str = "obs-agent/1.0";

/// `X-Request-Id`, `Host` and `User-Agent` for an access log test request, plus `extra`.
fn log_headers<'a>(rid: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut v = vec![
        ("x-request-id", rid),
        ("host", LOG_HOST),
        ("user-agent", LOG_UA),
    ];
    v.extend_from_slice(extra);
    v
}

/// `access_log: stdout`, a proxied 200 with an API key: every documented field, one JSON object
/// per line, exactly one line per request, nothing but access log lines on stdout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_line_of_a_proxied_200() {
    let fx = Fixture::new().await;
    let gw = LoggedGateway::start("stdout", &[], &[], &fx.config(1)).await;
    let r = gw
        .get(
            "/keyed/items/7?page=2",
            &log_headers("rid-200", &[("x-api-key", API_KEY)]),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    let r2 = gw
        .request("POST", "/ok/orders", &log_headers("rid-200-post", &[]))
        .await;
    assert_eq!(r2.status, 200, "{r2}");

    let l = gw.log_line("stdout.log", "rid-200").await;
    assert_common_fields(&l, &r, "GET", LOG_HOST, LOG_UA);
    assert_eq!(l["path"], "/keyed/items/7", "{l}");
    assert_eq!(l["route"], "keyed", "{l}");
    assert_eq!(l["upstream"], "echo", "{l}");
    assert_eq!(l["backend"], fx.echo.addr().as_str(), "{l}");
    assert_eq!(l["consumer"], KEY_ID, "{l}");
    assert_eq!(l["error"], Value::Null, "{l}");
    let up = l["upstream_latency_ms"]
        .as_f64()
        .unwrap_or_else(|| panic!("upstream_latency_ms of a proxied 200: {l}"));
    let total = l["latency_ms"].as_f64().unwrap();
    assert!(
        (0.0..=total).contains(&up),
        "upstream latency within total latency: {l}"
    );

    let l2 = gw.log_line("stdout.log", "rid-200-post").await;
    assert_common_fields(&l2, &r2, "POST", LOG_HOST, LOG_UA);
    assert_eq!(l2["route"], "ok", "{l2}");
    assert_eq!(l2["consumer"], Value::Null, "anonymous: {l2}");

    let lines = json_lines(&gw.read("stdout.log"));
    let mut ids: Vec<&str> = lines
        .iter()
        .map(|l| l["request_id"].as_str().unwrap_or_default())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["rid-200", "rid-200-post"], "one line per request");
    assert!(gw.read("stdout.log").ends_with('\n'));
}

/// A 404: route `_unmatched`, no upstream/backend, error `not_found`, and the client's address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_line_of_a_404() {
    let fx = Fixture::new().await;
    let gw = LoggedGateway::start("stdout", &[], &[], &fx.config(1)).await;
    let r = gw.get("/nowhere/9", &log_headers("rid-404", &[])).await;
    r.assert_gateway_error(404, "not_found");
    let l = gw.log_line("stdout.log", "rid-404").await;
    assert_eq!(l["path"], "/nowhere/9", "{l}");
    assert_eq!(l["route"], "_unmatched", "{l}");
    assert_eq!(l["upstream"], Value::Null, "{l}");
    assert_eq!(l["backend"], Value::Null, "{l}");
    assert_eq!(l["upstream_latency_ms"], Value::Null, "{l}");
    assert_eq!(l["consumer"], Value::Null, "{l}");
    assert_eq!(l["error"], "not_found", "{l}");
    assert_common_fields(&l, &r, "GET", LOG_HOST, LOG_UA);
}

/// A 401: the route, no backend, no consumer, error `unauthorized`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_line_of_a_401() {
    let fx = Fixture::new().await;
    let gw = LoggedGateway::start("stdout", &[], &[], &fx.config(1)).await;
    let r = gw
        .get(
            "/keyed/x",
            &log_headers("rid-401", &[("x-api-key", BAD_KEY)]),
        )
        .await;
    r.assert_gateway_error(401, "unauthorized");
    let l = gw.log_line("stdout.log", "rid-401").await;
    assert_common_fields(&l, &r, "GET", LOG_HOST, LOG_UA);
    assert_eq!(l["path"], "/keyed/x", "{l}");
    assert_eq!(l["route"], "keyed", "{l}");
    assert!(
        l["upstream"].is_null() || l["upstream"] == "echo",
        "upstream of a 401: {l}"
    );
    assert_eq!(l["backend"], Value::Null, "{l}");
    assert_eq!(l["upstream_latency_ms"], Value::Null, "{l}");
    assert_eq!(l["consumer"], Value::Null, "{l}");
    assert_eq!(l["error"], "unauthorized", "{l}");
}

/// A 429: the route, no backend, error `rate_limited` (the admitted request before it has none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_line_of_a_429() {
    let fx = Fixture::new().await;
    let gw = LoggedGateway::start("stdout", &[], &[], &fx.config(1)).await;
    let first = gw
        .get("/limited/a", &log_headers("rid-429-first", &[]))
        .await;
    assert_eq!(first.status, 200, "{first}");
    let r = gw.get("/limited/b", &log_headers("rid-429", &[])).await;
    r.assert_gateway_error(429, "rate_limited");

    let l = gw.log_line("stdout.log", "rid-429").await;
    assert_common_fields(&l, &r, "GET", LOG_HOST, LOG_UA);
    assert_eq!(l["path"], "/limited/b", "{l}");
    assert_eq!(l["route"], "limited", "{l}");
    assert_eq!(l["backend"], Value::Null, "{l}");
    assert_eq!(l["upstream_latency_ms"], Value::Null, "{l}");
    assert_eq!(l["consumer"], Value::Null, "{l}");
    assert_eq!(l["error"], "rate_limited", "{l}");

    let l = gw.log_line("stdout.log", "rid-429-first").await;
    assert_common_fields(&l, &first, "GET", LOG_HOST, LOG_UA);
    assert_eq!(l["route"], "limited", "{l}");
    assert_eq!(l["backend"], fx.echo.addr().as_str(), "{l}");
    assert_eq!(l["error"], Value::Null, "{l}");
}

/// A 503 (the upstream's only backend is dead): the upstream is named, no backend was picked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_line_of_a_503() {
    let fx = Fixture::new().await;
    let gw = LoggedGateway::start("stdout", &[], &[], &fx.config(1)).await;
    let r = gw.get("/down/x", &log_headers("rid-503", &[])).await;
    r.assert_gateway_error(503, "service_unavailable");
    let l = gw.log_line("stdout.log", "rid-503").await;
    assert_common_fields(&l, &r, "GET", LOG_HOST, LOG_UA);
    assert_eq!(l["route"], "down", "{l}");
    assert_eq!(l["upstream"], "dead", "{l}");
    assert_eq!(l["backend"], Value::Null, "{l}");
    assert_eq!(l["upstream_latency_ms"], Value::Null, "{l}");
    assert_eq!(l["error"], "service_unavailable", "{l}");
}

/// Authorization headers, API keys (valid or not), cookies and query strings never reach the
/// access log (nor the gateway's stderr).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_never_contains_credentials_cookies_or_query_strings() {
    let fx = Fixture::new().await;
    let gw = LoggedGateway::start("stdout", &[], &[], &fx.config(100)).await;
    const AUTH: &str = "Bearer eyJhbGciOiJIUzI1NiJ9.AUTHSECRETpayload.sig";
    const BASIC: &str = "Basic YWxpY2U6QkFTSUNTRUNSRVQ=";
    const COOKIE: &str = "session=COOKIESECRET1; theme=dark";
    let cases: [Case<'_>; 5] = [
        (
            "q-200-key",
            "/keyed/a?api_key=QSECRET1&token=QSECRET2",
            vec![
                ("x-api-key", API_KEY),
                ("authorization", AUTH),
                ("cookie", COOKIE),
            ],
            200,
        ),
        (
            "q-401-key",
            "/keyed/b?sig=QSECRET3",
            vec![
                ("x-api-key", BAD_KEY),
                ("authorization", BASIC),
                ("cookie", COOKIE),
            ],
            401,
        ),
        (
            "q-200",
            "/ok/c?password=QSECRET4",
            vec![("authorization", AUTH), ("cookie", COOKIE)],
            200,
        ),
        (
            "q-404",
            "/nowhere?access_token=QSECRET5",
            vec![("authorization", AUTH), ("cookie", COOKIE)],
            404,
        ),
        (
            "q-429-warm",
            "/limited/d?code=QSECRET6",
            vec![("cookie", COOKIE), ("x-api-key", API_KEY)],
            200,
        ),
    ];
    for (rid, path, headers, status) in &cases {
        let mut h = headers.clone();
        h.push(("x-request-id", rid));
        let r = gw.get(path, &h).await;
        assert_eq!(r.status, *status, "{path}: {r}");
    }
    for (rid, path, _, _) in &cases {
        let line = gw.log_line("stdout.log", rid).await;
        let want = path.split('?').next().unwrap();
        assert_eq!(
            line["path"], want,
            "logged path must drop the query: {line}"
        );
    }
    let stdout = gw.read("stdout.log");
    let stderr = gw.read("stderr.log");
    for (what, text) in [("access log", &stdout), ("stderr", &stderr)] {
        for secret in [
            API_KEY,
            BAD_KEY,
            &sha256_hex(API_KEY),
            "AUTHSECRET",
            "eyJhbGciOiJIUzI1NiJ9",
            "YWxpY2U6QkFTSUNTRUNSRVQ",
            "COOKIESECRET",
            "theme=dark",
            "QSECRET",
            "api_key=",
            "password=",
            "access_token=",
        ] {
            assert!(!text.contains(secret), "{secret:?} found in the {what}");
        }
    }
}

/// `access_log: off` writes no access log anywhere (stdout stays empty, no file appears).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_off_writes_nothing() {
    let fx = Fixture::new().await;
    let mut gw = LoggedGateway::start("off", &[], &[], &fx.config(1)).await;
    assert_eq!(gw.get("/ok/a", &[]).await.status, 200);
    assert_eq!(gw.get("/keyed/a", &[]).await.status, 401);
    assert_eq!(gw.get("/nowhere", &[]).await.status, 404);
    assert_eq!(gw.get("/limited/a", &[]).await.status, 200);
    assert_eq!(gw.get("/limited/a", &[]).await.status, 429);
    // The requests were fully handled (logging phase ran) once the metrics show them; then give
    // a writer (which flushes at least every 500 ms) time to show up if there were one.
    scrape_until(&gw.client, gw.admin_port, "5 requests", |m| {
        settled(m, 5, 2)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(gw.exited().is_none(), "gateway died");
    assert_eq!(gw.read("stdout.log"), "", "access_log: off wrote to stdout");
    let allowed = [
        "tollgate.yaml",
        "stdout.log",
        "stderr.log",
        "tollgate.pid",
        "upgrade.sock",
    ];
    let files: Vec<String> = std::fs::read_dir(gw.dir())
        .expect("read dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !allowed.contains(&n.as_str()))
        .collect();
    assert!(files.is_empty(), "unexpected files: {files:?}");
}

/// File destination: lines go to the file; after logrotate renames it and sends SIGUSR1, new
/// lines go to a freshly created file at the configured path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_file_is_reopened_on_usr1_after_rotation() {
    let fx = Fixture::new().await;
    let mut gw = LoggedGateway::start("@DIR@/access.log", &[], &[], &fx.config(1)).await;
    let rid = |id: &'static str| [("x-request-id", id)];

    assert_eq!(gw.get("/ok/1", &rid("file-1")).await.status, 200);
    let l1 = gw.log_line("access.log", "file-1").await;
    assert_eq!(l1["route"], "ok");
    assert!(
        !gw.read("stdout.log").contains("file-1"),
        "file destination must not also log to stdout"
    );

    std::fs::rename(gw.path("access.log"), gw.path("access.log.1")).expect("rename");
    // Until the signal, the writer keeps appending to the renamed file.
    assert_eq!(gw.get("/ok/2", &rid("file-2")).await.status, 200);
    gw.log_line("access.log.1", "file-2").await;

    signal(gw.pid(), "USR1");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(gw.exited().is_none(), "SIGUSR1 killed the gateway");
    assert_eq!(gw.get("/ok/3", &rid("file-3")).await.status, 200);
    assert_eq!(gw.get("/nowhere", &rid("file-4")).await.status, 404);
    let l3 = gw.log_line("access.log", "file-3").await;
    assert_eq!(l3["status"], 200);
    let l4 = gw.log_line("access.log", "file-4").await;
    assert_eq!(l4["status"], 404);

    let fresh = gw.read("access.log");
    assert!(
        !fresh.contains("file-1") && !fresh.contains("file-2"),
        "the new file must be freshly created:\n{fresh}"
    );
    assert_eq!(json_lines(&fresh).len(), 2, "{fresh}");
    let rotated = gw.read("access.log.1");
    assert!(
        !rotated.contains("file-3") && !rotated.contains("file-4"),
        "lines after SIGUSR1 went to the rotated file:\n{rotated}"
    );
    assert_eq!(json_lines(&rotated).len(), 2, "{rotated}");
}

/// logrotate may send SIGUSR1 before the gateway has logged anything (a quiet night after a
/// restart): the signal must not kill the process, and logging must work afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usr1_before_the_first_request_does_not_kill_the_gateway() {
    let fx = Fixture::new().await;
    let mut gw = LoggedGateway::start("@DIR@/access.log", &[], &[], &fx.config(1)).await;
    signal(gw.pid(), "USR1");
    tokio::time::sleep(Duration::from_millis(500)).await;
    if let Some(status) = gw.exited() {
        panic!("SIGUSR1 before any request terminated the gateway ({status})");
    }
    let r = gw
        .get("/ok/x", &[("x-request-id", "after-early-usr1")])
        .await;
    assert_eq!(r.status, 200, "{r}");
    gw.log_line("access.log", "after-early-usr1").await;
}

// ---------------------------------------------------------------------------------------------
// Request id
// ---------------------------------------------------------------------------------------------

/// A sane incoming `X-Request-Id` reaches the backend, the response and the log line unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incoming_request_id_round_trips_to_backend_response_and_log() {
    let fx = Fixture::new().await;
    let gw = LoggedGateway::start("stdout", &[], &[], &fx.config(1)).await;
    for (i, rid) in [
        "client-rid_42.AbC:xyz",
        "0f8fad5b-d9cb-469f-a165-70867728950e",
        &"r".repeat(128),
    ]
    .into_iter()
    .enumerate()
    {
        let r = gw.get(&format!("/ok/{i}"), &[("x-request-id", rid)]).await;
        let echo = r.echo();
        assert_eq!(
            echo.header("x-request-id"),
            Some(rid),
            "backend saw: {echo:?}"
        );
        assert_eq!(r.header_all("x-request-id"), [rid], "response: {r}");
        let line = gw.log_line("stdout.log", rid).await;
        assert_eq!(line["status"], 200, "{line}");
    }
}

/// Without an (acceptable) incoming id the gateway generates one, the same at the backend, in the
/// response and in the log; each request gets its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_request_id_is_the_same_everywhere() {
    let fx = Fixture::new().await;
    let gw = LoggedGateway::start("stdout", &[], &[], &fx.config(1)).await;
    let long = "x".repeat(200);
    let incoming: [Option<&str>; 4] = [None, None, Some("has a space"), Some(&long)];
    let mut seen = BTreeSet::new();
    for (i, inc) in incoming.iter().enumerate() {
        let headers: Vec<(&str, &str)> = inc.map(|v| ("x-request-id", v)).into_iter().collect();
        let r = gw.get(&format!("/ok/{i}"), &headers).await;
        let echo = r.echo();
        let at_backend = echo
            .header("x-request-id")
            .unwrap_or_else(|| panic!("backend got no X-Request-Id: {echo:?}"))
            .to_string();
        assert!(
            !at_backend.is_empty()
                && at_backend.len() <= 128
                && at_backend.bytes().all(|b| (0x21..0x7f).contains(&b)),
            "generated id {at_backend:?}"
        );
        if let Some(inc) = inc {
            assert_ne!(at_backend, *inc, "an unacceptable id must be replaced");
        }
        assert_eq!(
            r.header_all("x-request-id"),
            [at_backend.as_str()],
            "response: {r}"
        );
        let line = gw.log_line("stdout.log", &at_backend).await;
        assert_eq!(line["path"], format!("/ok/{i}"), "{line}");
        assert!(seen.insert(at_backend.clone()), "id reused: {at_backend}");
    }
}

/// The gateway's own error bodies (404, 401, 429, 503) carry the request id, equal to the
/// `X-Request-Id` response header and the log line's — incoming or generated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_bodies_carry_the_request_id() {
    let fx = Fixture::new().await;
    let gw = LoggedGateway::start("stdout", &[], &[], &fx.config(1)).await;
    assert_eq!(gw.get("/limited/warm", &[]).await.status, 200);
    let cases = [
        ("/nowhere", 404, "not_found"),
        ("/keyed/a", 401, "unauthorized"),
        ("/limited/b", 429, "rate_limited"),
        ("/down/c", 503, "service_unavailable"),
    ];
    for (path, status, code) in cases {
        for incoming in [Some(format!("err-{status}")), None] {
            let headers: Vec<(&str, &str)> = incoming
                .as_deref()
                .map(|v| ("x-request-id", v))
                .into_iter()
                .collect();
            let r = gw.get(path, &headers).await;
            let body = r.assert_gateway_error(status, code);
            let in_body = body["request_id"].as_str().unwrap().to_string();
            assert_eq!(
                r.header_all("x-request-id"),
                [in_body.as_str()],
                "body vs header: {r}"
            );
            if let Some(inc) = &incoming {
                assert_eq!(&in_body, inc, "incoming id kept: {r}");
            }
            let line = gw.log_line("stdout.log", &in_body).await;
            assert_eq!(line["status"], status, "{line}");
            assert_eq!(line["error"], code, "{line}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Trace context
// ---------------------------------------------------------------------------------------------

/// A valid `traceparent` (and its `tracestate`) reach the backend unchanged; the log's trace_id
/// is its trace id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_traceparent_and_tracestate_reach_the_backend_unchanged() {
    let fx = Fixture::new().await;
    let gw = LoggedGateway::start("stdout", &[], &[], &fx.config(1)).await;
    let cases = [
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
            "4bf92f3577b34da6a3ce929d0e0e4736",
        ),
        (
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
            "vendor=opaque-value",
            "0af7651916cd43dd8448eb211c80319c",
        ),
    ];
    for (i, (tp, ts, trace_id)) in cases.into_iter().enumerate() {
        let rid = format!("trace-valid-{i}");
        let r = gw
            .get(
                "/ok/trace",
                &[
                    ("traceparent", tp),
                    ("tracestate", ts),
                    ("x-request-id", &rid),
                ],
            )
            .await;
        let echo = r.echo();
        assert_eq!(echo.header("traceparent"), Some(tp), "{echo:?}");
        assert_eq!(echo.header("tracestate"), Some(ts), "{echo:?}");
        let line = gw.log_line("stdout.log", &rid).await;
        assert_eq!(line["trace_id"], trace_id, "{line}");
    }
}

/// No or an invalid `traceparent`: the backend gets a fresh valid one (version 00, lowercase hex,
/// non-zero ids) and no `tracestate`; the log's trace_id is the new trace id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_invalid_traceparent_starts_a_new_trace() {
    let fx = Fixture::new().await;
    let gw = LoggedGateway::start("stdout", &[], &[], &fx.config(1)).await;
    let incoming: [(Option<&str>, Option<&str>); 9] = [
        (None, None),
        (None, Some("rojo=00f067aa0ba902b7")),
        (
            Some("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
            Some("rojo=1"),
        ),
        (
            Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            Some("rojo=2"),
        ),
        (
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"),
            Some("rojo=3"),
        ),
        (
            Some("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some("rojo=4"),
        ),
        (
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"),
            Some("rojo=5"),
        ),
        (Some("00-4bf92f35-00f067aa0ba902b7-01"), Some("rojo=6")),
        (Some("garbage"), Some("rojo=7")),
    ];
    let mut traces = BTreeSet::new();
    for (i, (tp, ts)) in incoming.into_iter().enumerate() {
        let rid = format!("trace-new-{i}");
        let mut headers = vec![("x-request-id", rid.as_str())];
        if let Some(tp) = tp {
            headers.push(("traceparent", tp));
        }
        if let Some(ts) = ts {
            headers.push(("tracestate", ts));
        }
        let r = gw.get("/ok/trace", &headers).await;
        let echo = r.echo();
        let got = echo
            .header("traceparent")
            .unwrap_or_else(|| panic!("case {i}: backend got no traceparent: {echo:?}"));
        let (trace_id, _, _) = valid_traceparent(got)
            .unwrap_or_else(|| panic!("case {i}: backend got an invalid traceparent {got:?}"));
        if let Some(tp) = tp {
            assert_ne!(got, tp, "case {i}: invalid traceparent forwarded");
            if let Some(old_trace) = tp.split('-').nth(1) {
                assert_ne!(
                    trace_id,
                    old_trace.to_ascii_lowercase(),
                    "case {i}: the trace of an invalid traceparent must be restarted"
                );
            }
        }
        assert_eq!(
            echo.header("tracestate"),
            None,
            "case {i}: tracestate of a discarded trace forwarded: {echo:?}"
        );
        let line = gw.log_line("stdout.log", &rid).await;
        assert_eq!(line["trace_id"], trace_id.as_str(), "case {i}: {line}");
        assert!(traces.insert(trace_id), "case {i}: trace id reused");
    }
}
