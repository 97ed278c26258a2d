//! Request bodies: forwarded intact, and `server.max_request_body` enforced with a 413
//! (DESIGN.md error table).

mod common;

use common::*;

async fn body_gateway() -> (Backend, Gateway) {
    let b = Backend::start("echo").await;
    let body = format!(
        "upstreams:\n{}\nroutes:
  - name: up
    match: {{path_prefix: /up}}
    upstream: echo
",
        upstream_yaml("echo", &[&b], &["retries: 0"]),
    );
    let gw = Gateway::start_with(&["max_request_body: 4KiB"], &body).await;
    (b, gw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_body_under_limit_is_forwarded() {
    let (b, gw) = body_gateway().await;
    for (method, len) in [("POST", 1000usize), ("PUT", 4096), ("PATCH", 0)] {
        let r = send_body(&gw.client, method, &gw.url("/up"), &[], vec![b'x'; len]).await;
        let e = r.echo();
        assert_eq!(e.method, method);
        assert_eq!(e.body_len, len as u64, "{method} body of {len} bytes: {r}");
    }
    // chunked, under the limit
    let r = gw
        .raw(
            "POST /up HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
             5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        )
        .await;
    assert_eq!(r.echo().body_len, 11, "{r}");
    assert_eq!(b.hits(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_body_over_limit_is_413() {
    let (b, gw) = body_gateway().await;
    let r = send_body(&gw.client, "POST", &gw.url("/up"), &[], vec![b'x'; 5000]).await;
    r.assert_gateway_error(413, "payload_too_large");
    assert_eq!(
        b.hits(),
        0,
        "an over-limit body with Content-Length reached the backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_over_limit_is_413_and_never_delivered_whole() {
    let (b, gw) = body_gateway().await;
    let chunk = "y".repeat(1000);
    let mut req = String::from(
        "POST /up HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    );
    for _ in 0..6 {
        req.push_str(&format!("3e8\r\n{chunk}\r\n"));
    }
    req.push_str("0\r\n\r\n");
    let r = gw.raw(&req).await;
    r.assert_gateway_error(413, "payload_too_large");
    // the backend may have seen the start of the stream, but never the complete body
    assert!(
        b.max_body_len() <= 4096,
        "backend received a complete {}-byte body over the 4 KiB limit",
        b.max_body_len()
    );
}
