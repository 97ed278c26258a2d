//! Limits on hostile clients (issue 10): slowloris heads, idle keep-alive, oversized heads,
//! connection floods. Each is answered with the right status or a closed connection, while
//! well-behaved clients keep being served. Real binary, loopback only, bounded waits.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads whatever the gateway sends until it closes (bounded); `None` if still open at `limit`.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_head_is_cut_off_while_others_are_served() {
    let b = Backend::start("b").await;
    let gw = Gateway::start_with(&["header_read_timeout: 1s"], &pool_config(&[&b], &[])).await;
    let mut slow = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    let started = Instant::now();
    let head = b"GET /slowloris HTTP/1.1\r\nHost: x\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    let mut cut_after = None;
    let mut normal = 0;
    for (i, byte) in head.iter().enumerate() {
        if slow.write_all(&[*byte]).await.is_err() {
            cut_after = Some(i);
            break;
        }
        // A normal client is served while the slow one dribbles.
        if i % 5 == 0 {
            assert_eq!(
                gw.get("/normal").await.status,
                200,
                "normal client at byte {i}"
            );
            normal += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if started.elapsed() > Duration::from_secs(4) {
            break;
        }
    }
    let rest = read_until_closed(&mut slow, Duration::from_secs(4))
        .await
        .expect("the slow connection is closed");
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(5),
        "cut off near the 1 s header timeout, not at Pingora's 60 s: {elapsed:?} (write failed at {cut_after:?})"
    );
    let text = String::from_utf8_lossy(&rest);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "a 408 or nothing: {text}"
    );
    assert!(
        normal >= 2,
        "normal clients were served meanwhile: {normal}"
    );
    assert_eq!(
        b.hits(),
        normal,
        "the slow request never reached the backend"
    );
    let m = gw.admin_get("/metrics").await.text();
    assert!(
        m.contains("tollgate_connections_rejected_total{reason=\"header_timeout\"} 1"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connection_gets_408_and_is_closed() {
    let b = Backend::start("b").await;
    let gw = Gateway::start_with(&["header_read_timeout: 500ms"], &pool_config(&[&b], &[])).await;
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    let got = read_until_closed(&mut s, Duration::from_secs(5))
        .await
        .expect("closed");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(body).expect("JSON error body");
    assert_eq!(v["error"], "request_timeout");
}

/// The head deadline is for heads: a slow body on a keep-alive connection, and a second
/// request after an idle pause, are not cut by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_body_and_later_requests_are_not_cut_by_the_head_deadline() {
    let b = Backend::start("b").await;
    let gw = Gateway::start_with(&["header_read_timeout: 700ms"], &pool_config(&[&b], &[])).await;
    let mut conn = RawConn::connect(gw.port).await;
    let r = conn
        .request("GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("first answer");
    assert_eq!(r.status, 200);
    // Idle for longer than the head timeout: the next head's clock starts at its first byte.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = conn
        .request("GET /second HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("second answer on the same connection");
    assert_eq!(r.status, 200);

    // A body dribbled over ~2 s, three times the head timeout.
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    s.write_all(
        b"PUT /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    for byte in b"abcdefgh" {
        tokio::time::sleep(Duration::from_millis(250)).await;
        s.write_all(&[*byte]).await.unwrap();
    }
    let got = read_until_closed(&mut s, Duration::from_secs(5))
        .await
        .expect("answered and closed");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("\"body_len\":8"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keepalive_connection_is_closed_after_idle_timeout() {
    let b = Backend::start("b").await;
    let gw = Gateway::start_with(&["idle_timeout: 1s"], &pool_config(&[&b], &[])).await;
    let mut conn = RawConn::connect(gw.port).await;
    let r = conn
        .request("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("answer");
    assert_eq!(r.status, 200);
    assert!(
        !conn.closed_within(Duration::from_millis(400)).await,
        "still open well before idle_timeout"
    );
    assert!(
        conn.closed_within(Duration::from_secs(3)).await,
        "closed after idle_timeout (Pingora alone keeps it forever)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_or_too_many_headers_get_431() {
    let b = Backend::start("b").await;
    let gw = Gateway::start_with(
        &["max_header_bytes: 16KiB", "max_headers: 50"],
        &pool_config(&[&b], &[]),
    )
    .await;
    let big = "a".repeat(100 * 1024);
    let r = gw
        .raw(&format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\nConnection: close\r\n\r\n"
        ))
        .await;
    r.assert_gateway_error(431, "request_header_fields_too_large");

    let many: String = (0..60).map(|i| format!("X-H{i}: v\r\n")).collect();
    let r = gw
        .raw(&format!(
            "GET / HTTP/1.1\r\nHost: x\r\n{many}Connection: close\r\n\r\n"
        ))
        .await;
    r.assert_gateway_error(431, "request_header_fields_too_large");

    // Just under both limits: served.
    let some: String = (0..40).map(|i| format!("X-H{i}: v\r\n")).collect();
    let r = gw
        .raw(&format!(
            "GET / HTTP/1.1\r\nHost: x\r\n{some}Connection: close\r\n\r\n"
        ))
        .await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(b.hits(), 1, "refused heads never reached the backend");
}

/// Over Pingora's own 1 MiB ceiling the parser refuses before our filters: 400 or a close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_mebibyte_head_is_refused_without_crashing() {
    let b = Backend::start("b").await;
    let gw = Gateway::start(&pool_config(&[&b], &[])).await;
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    let big = "a".repeat(2 * 1024 * 1024);
    let _ = s
        .write_all(format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes())
        .await;
    let got = read_until_closed(&mut s, Duration::from_secs(5))
        .await
        .expect("closed");
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 400") || text.starts_with("HTTP/1.1 431"),
        "{text}"
    );
    assert_eq!(gw.get("/after").await.status, 200, "still serving");
    assert_eq!(b.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_max_connections_get_503_and_close() {
    let b = Backend::start("b").await;
    let gw = Gateway::start_with(
        &["max_connections: 2", "header_read_timeout: 10s"],
        &pool_config(&[&b], &[]),
    )
    .await;
    let mut first = RawConn::connect(gw.port).await;
    let r = first
        .request("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("first");
    assert_eq!(r.status, 200);
    let second = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    // Give the gateway a moment to count the second connection.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    let got = read_until_closed(&mut third, Duration::from_secs(5))
        .await
        .expect("the third connection is answered and closed");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains("Retry-After: 1"), "{text}");
    assert!(text.contains("\"error\":\"service_unavailable\""), "{text}");

    // A freed slot is usable again.
    drop(second);
    drop(first);
    let mut served = false;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut c = RawConn::connect(gw.port).await;
        if let Some(r) = c
            .request("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
        {
            if r.status == 200 {
                served = true;
                break;
            }
        }
    }
    assert!(served, "a connection is accepted once others closed");
    let m = gw.admin_get("/metrics").await.text();
    assert!(
        m.contains("tollgate_connections_rejected_total{reason=\"max_connections\"}"),
        "{m}"
    );
}

#[test]
fn client_limits_are_validated_with_their_yaml_paths() {
    let (code, _out, err) = check(
        "server:\n  max_connections: 0\n  max_headers: 0\n  max_header_bytes: 10\n  header_read_timeout: 0s\n  idle_timeout: 100ms\nupstreams:\n  u:\n    backends: [\"127.0.0.1:1\"]\nroutes:\n  - {name: r, upstream: u}\n",
    );
    assert_ne!(code, 0);
    for path in [
        "server.max_connections",
        "server.max_headers",
        "server.max_header_bytes",
        "server.header_read_timeout",
        "server.idle_timeout",
    ] {
        assert!(err.contains(path), "{path} missing in: {err}");
    }
}

#[test]
fn retry_settings_are_validated_with_their_yaml_paths() {
    let (code, _out, err) = check(
        "upstreams:\n  u:\n    backends: [\"127.0.0.1:1\"]\n    retries: 1\n    retry_on: {statuses: [200, 503], backoff: 1s, max_backoff: 10ms}\n    retry_budget: {ratio: 2}\nroutes:\n  - {name: r, upstream: u}\n",
    );
    assert_ne!(code, 0);
    for path in [
        "upstreams.u.retry_on.statuses[0]",
        "upstreams.u.retry_on.max_backoff",
        "upstreams.u.retry_budget.ratio",
    ] {
        assert!(err.contains(path), "{path} missing in: {err}");
    }
    assert!(!err.contains("statuses[1]"), "503 is retryable: {err}");

    let (code, _out, err) = check(
        "upstreams:\n  u:\n    backends: [\"127.0.0.1:1\"]\n    retry_on: {errors: [connection_refused]}\nroutes:\n  - {name: r, upstream: u}\n",
    );
    assert_ne!(code, 0);
    assert!(err.contains("upstreams.u.retry_on.errors[0]"), "{err}");
    assert!(
        err.contains("reset") && err.contains("timeout"),
        "lists the choices: {err}"
    );
}

/// A client that stops sending its body leaves the backend waiting for it: the silence is the
/// client's doing. It gets a 408 when the backend's read timeout runs out, and the backend is
/// not blamed: six stalled uploads must neither open the circuit breaker nor eject a backend
/// for everyone else (they did, as 504s counted against the pool, before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_body_is_a_408_and_the_backends_are_not_blamed() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let gw = Gateway::start(&pool_config(
        &[&a, &b],
        &[
            "read_timeout: 400ms",
            "retries: 0",
            "circuit_breaker: {error_ratio: 0.5, min_requests: 4, window: 30s, open_for: 30s}",
            "passive_health: {consecutive_failures: 2, base_ejection: 30s, max_ejection: 1m}",
        ],
    ))
    .await;
    let stall = || async {
        let mut s = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
        s.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\nhello")
            .await
            .unwrap();
        let got = read_until_closed(&mut s, Duration::from_secs(5)).await;
        String::from_utf8_lossy(&got.expect("answered and closed")).into_owned()
    };
    let answers = tokio::join!(stall(), stall(), stall(), stall(), stall(), stall());
    for text in [
        answers.0, answers.1, answers.2, answers.3, answers.4, answers.5,
    ] {
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(text.contains("\"error\":\"request_timeout\""), "{text}");
    }
    // An open circuit would answer 503 without trying a backend; an ejected backend would
    // get none of these four.
    let (hits_a, hits_b) = (a.hits(), b.hits());
    let fresh = client_no_keepalive();
    for i in 0..4 {
        let r = send(&fresh, "GET", &gw.url("/x"), &[]).await;
        assert_eq!(r.status, 200, "request {i} after the stalls: {r}");
    }
    assert_eq!(
        (a.hits() - hits_a, b.hits() - hits_b),
        (2, 2),
        "both backends still in rotation"
    );
}

/// A client that stops reading its response holds the gateway's buffers and an upstream
/// connection for as long as it likes, unless writes time out: after `idle_timeout` without
/// accepting a byte it loses the exchange (nginx's `send_timeout`), and others are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_loses_the_exchange_after_idle_timeout() {
    let b = Backend::start("b").await;
    let gw = Gateway::start_with(&["idle_timeout: 1s"], &pool_config(&[&b], &[])).await;
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    s.write_all(b"GET /huge-response HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // Never read while the gateway's writes stall, for well over idle_timeout.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => total += n,
            Err(_) => panic!("after {total} bytes the connection is still open"),
        }
    }
    assert!(
        total < 32 << 20,
        "the whole 32 MiB body arrived: the stalled exchange was never cut"
    );
    assert_eq!(gw.get("/after").await.status, 200);
}
