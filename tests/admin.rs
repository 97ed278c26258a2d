//! The admin port beyond `/health`, `/ready` and `/metrics`: `/upstreams` (per backend health and
//! passive ejection, circuit state) through the real binary; and the process log: concise by
//! default (Pingora's INFO lines off), JSON lines with `server.log_format: json`.

mod common;

use common::{pool_config, Backend, Gateway};
use serde_json::Value;

fn upstream<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["upstreams"]
        .as_array()
        .and_then(|a| a.iter().find(|u| u["name"] == name))
        .unwrap_or_else(|| panic!("no upstream {name} in {doc}"))
}

fn backend<'a>(up: &'a Value, addr: &str) -> &'a Value {
    up["backends"]
        .as_array()
        .and_then(|a| a.iter().find(|b| b["address"] == addr))
        .unwrap_or_else(|| panic!("no backend {addr} in {up}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreams_shows_health_ejection_and_circuit_state() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let gw = Gateway::start(&pool_config(
        &[&a, &b],
        &[
            "health_check: {type: tcp, interval: 1h, timeout: 1s}",
            "retries: 0",
            "passive_health: {consecutive_failures: 2, base_ejection: 30s, max_ejection: 1m}",
            "circuit_breaker: {error_ratio: 0.9, min_requests: 100, window: 30s, open_for: 2s}",
        ],
    ))
    .await;
    let doc: Value = gw.admin_get("/upstreams").await.json();
    assert_eq!(doc["config_generation"], 1);
    let up = upstream(&doc, "pool");
    assert_eq!(up["circuit"]["state"], "closed", "{up}");
    for be in [&a, &b] {
        let entry = backend(up, &be.addr());
        assert_eq!(entry["healthy"], true, "{entry}");
        assert!(entry["ejected_for_ms"].is_null(), "{entry}");
    }
    // b dies: two consecutive failures eject it for 30 s (the active check runs hourly).
    b.kill().await;
    for _ in 0..10 {
        let _ = gw.get("/").await;
    }
    let doc: Value = gw.admin_get("/upstreams").await.json();
    let up = upstream(&doc, "pool");
    let ejected = backend(up, &b.addr())["ejected_for_ms"].as_u64();
    assert!(
        ejected.is_some_and(|ms| ms > 20_000 && ms <= 30_000),
        "b ejected for about 30 s: {up}"
    );
    assert!(backend(up, &a.addr())["ejected_for_ms"].is_null(), "{up}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_log_is_concise_by_default_and_json_when_asked() {
    let a = Backend::start("a").await;
    let body = pool_config(&[&a], &[]);
    let text = Gateway::start(&body).await;
    let _ = text.get("/").await;
    let logs = std::fs::read_to_string(text.dir().join("stderr.log")).expect("stderr");
    assert!(
        logs.contains("tollgate 0."),
        "tollgate's own start line: {logs}"
    );
    assert!(
        !logs.contains("pingora_core") && !logs.contains("pingora_proxy"),
        "Pingora's INFO lines are off by default: {logs}"
    );
    drop(text);

    let json = Gateway::start_with(&["log_format: json"], &body).await;
    let _ = json.get("/").await;
    let logs = std::fs::read_to_string(json.dir().join("stderr.log")).expect("stderr");
    let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "no process log at all");
    for line in lines {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_shows_the_effective_config_without_secrets() {
    let a = Backend::start("a").await;
    let body = format!(
        "{}\nauth:\n  api_keys:\n    partners:\n      keys: [{{id: acme, sha256: \"{}\"}}]\n",
        pool_config(&[&a], &[]),
        common::tokens::sha256_hex("acme-secret-key")
    );
    let gw = Gateway::start(&body).await;
    let doc: Value = gw.admin_get("/config").await.json();
    assert_eq!(doc["config_generation"], 1);
    assert_eq!(doc["config_sha256"].as_str().map(str::len), Some(16));
    let config = &doc["config"];
    assert_eq!(
        config["server"]["read_buffer"], 0,
        "defaults filled in: {config}"
    );
    assert_eq!(
        config["auth"]["api_keys"]["partners"]["keys"][0]["id"],
        "acme"
    );
    let text = doc.to_string();
    assert!(
        !text.contains(&common::tokens::sha256_hex("acme-secret-key")),
        "key digests are redacted: {text}"
    );
}

/// The harness's port-ownership check, which the gateway fixtures rely on to move off a port
/// another process holds: it must tell the gateway's listeners from the test process's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_tells_whose_listener_holds_a_port() {
    let b = Backend::start("b").await;
    let gw = Gateway::start(&pool_config(&[&b], &[])).await;
    let me = std::process::id();
    assert!(common::gateway::listens_on(gw.pid(), gw.port));
    assert!(common::gateway::listens_on(gw.pid(), gw.admin_port));
    assert!(!common::gateway::listens_on(me, gw.port));
    assert!(common::gateway::listens_on(me, b.port()));
    assert!(!common::gateway::listens_on(gw.pid(), b.port()));
}

/// The admin port is read-only except `DELETE /cache`: a write method gets 405 with the methods
/// the endpoint answers, and `HEAD` gets the head alone (the next response on the same
/// connection parses, so no body was sent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_refuse_methods_they_do_not_answer() {
    let a = Backend::start("a").await;
    let gw = Gateway::start(&pool_config(&[&a], &[])).await;
    for (method, path, allow) in [
        ("POST", "/config", "GET, HEAD"),
        ("PUT", "/health", "GET, HEAD"),
        ("DELETE", "/ready", "GET, HEAD"),
        ("PATCH", "/upstreams", "GET, HEAD"),
        ("POST", "/metrics", "GET, HEAD"),
        ("POST", "/cache", "GET, HEAD, DELETE"),
    ] {
        let r = common::raw_http::raw_request(
            gw.admin_port(),
            &format!("{method} {path} HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(r.status, 405, "{method} {path}: {r:?}");
        assert_eq!(r.header("allow"), Some(allow), "{method} {path}: {r:?}");
    }
    let mut conn = common::raw_http::RawConn::connect(gw.admin_port()).await;
    let head = conn
        .request("HEAD /health HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("a response to HEAD");
    assert_eq!(head.status, 200, "{head:?}");
    let next = conn
        .request("GET /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .expect("a response after HEAD");
    assert_eq!(next.status, 200, "{next:?}");
    assert_eq!(next.body, br#"{"status":"ok"}"#);
    // An unknown path stays a 404 whatever the method.
    let r = common::raw_http::raw_request(
        gw.admin_port(),
        "POST /nowhere HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 404, "{r:?}");
}
