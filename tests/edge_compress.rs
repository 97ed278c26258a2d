//! `compress` through the real binary: zstd, br and gzip chosen by `Accept-Encoding` q-values,
//! decoded here back to exactly what the upstream sent (or, with `response_json`, to the
//! stripped document); and every case where the body must go out as it came.

mod common;

use common::canned::{decode, gzip, Canned, Upstream};
use common::*;

fn document(fields: usize) -> String {
    let items: Vec<String> = (0..fields)
        .map(|i| format!("{{\"id\":{i},\"name\":\"item number {i}\",\"secret\":\"s3cr3t-{i}\"}}"))
        .collect();
    format!("{{\"items\":[{}]}}", items.join(","))
}

async fn gateway(up: &Upstream, echo: &Backend) -> Gateway {
    let body = format!(
        "upstreams:
  canned: {{backends: [\"{}\"], retries: 0}}
  echo: {{backends: [\"{}\"], retries: 0}}
routes:
  - name: plain
    match: {{path_prefix: /plain}}
    upstream: canned
    compress: {{types: [application/json, \"text/*\"], min_size: 1KiB}}
  - name: stripped
    match: {{path_prefix: /stripped}}
    upstream: canned
    response_json: {{remove: [\"items[].secret\"]}}
    compress: {{types: [application/json], min_size: 1KiB}}
  - name: echo
    match: {{path_prefix: /echo}}
    upstream: echo
    compress: {{types: [application/json], min_size: 1}}
",
        up.addr(),
        echo.addr()
    );
    Gateway::start(&body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codings_follow_q_values_and_decode_to_the_upstream_body() {
    let up = Upstream::start().await;
    let echo = Backend::start("echo").await;
    let doc = document(100);
    up.serve(
        "/plain/len",
        Canned::json(doc.clone()).header("ETag", "\"v7\""),
    );
    up.serve(
        "/plain/chunked",
        Canned::typed("text/csv; charset=utf-8", doc.clone()).chunked(700),
    );
    let gw = gateway(&up, &echo).await;
    for path in ["/plain/len", "/plain/chunked"] {
        for (accept, expected) in [
            ("gzip, deflate, br, zstd", "zstd"),
            ("br", "br"),
            ("gzip", "gzip"),
            ("gzip;q=0.4, br;q=0.8, zstd;q=0", "br"),
            ("zstd;q=0, br;q=0, *;q=0.1", "gzip"),
            ("*", "zstd"),
        ] {
            let r = gw.get_with(path, &[("Accept-Encoding", accept)]).await;
            assert_eq!(r.status, 200, "{r}");
            assert_eq!(
                r.header_all("content-encoding"),
                [expected],
                "{path} {accept}: {r}"
            );
            assert!(r.header("content-length").is_none(), "{r}");
            assert!(
                r.header_all("vary")
                    .iter()
                    .any(|v| v.contains("Accept-Encoding")),
                "{r}"
            );
            assert_eq!(
                String::from_utf8(decode(expected, &r.body)).unwrap(),
                doc,
                "{path} {accept}"
            );
        }
    }
    let r = gw
        .get_with("/plain/len", &[("Accept-Encoding", "gzip")])
        .await;
    assert_eq!(
        r.header("etag"),
        Some("W/\"v7\""),
        "a compressed representation's ETag is weak"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_go_out_as_they_came_when_compression_does_not_apply() {
    let up = Upstream::start().await;
    let echo = Backend::start("echo").await;
    let doc = document(100);
    up.serve("/plain/doc", Canned::json(doc.clone()).with_ranges());
    up.serve("/plain/small", Canned::json(document(2)));
    up.serve("/plain/png", Canned::typed("image/png", doc.clone()));
    let pre = gzip(doc.as_bytes());
    up.serve(
        "/plain/pre",
        Canned::json(pre.clone()).header("Content-Encoding", "gzip"),
    );
    up.serve(
        "/plain/keep",
        Canned::json(doc.clone()).header("Cache-Control", "no-transform"),
    );
    let gw = gateway(&up, &echo).await;
    // Refused by the client, or nothing asked.
    for accept in [
        None,
        Some("identity"),
        Some("gzip;q=0, br;q=0, zstd;q=0"),
        Some("gzip;q=0.5, identity"),
        Some("deflate"),
    ] {
        let h: Vec<(&str, &str)> = accept.iter().map(|a| ("Accept-Encoding", *a)).collect();
        let r = gw.get_with("/plain/doc", &h).await;
        assert!(r.header("content-encoding").is_none(), "{accept:?}: {r}");
        assert_eq!(r.text(), doc, "{accept:?}");
        assert!(
            r.header_all("vary")
                .iter()
                .any(|v| v.contains("Accept-Encoding")),
            "eligible responses vary: {r}"
        );
    }
    let gz = [("Accept-Encoding", "gzip, br, zstd")];
    // Below min_size, or a type not listed.
    for path in ["/plain/small", "/plain/png", "/plain/keep"] {
        let r = gw.get_with(path, &gz).await;
        assert!(r.header("content-encoding").is_none(), "{path}: {r}");
        assert!(r.header("content-length").is_some(), "{path}: {r}");
    }
    // Already encoded: passed through, never encoded twice.
    let r = gw.get_with("/plain/pre", &gz).await;
    assert_eq!(r.header_all("content-encoding"), ["gzip"], "{r}");
    assert_eq!(r.body, pre);
    // A range answer is a part of the identity body: left alone.
    let r = gw
        .get_with(
            "/plain/doc",
            &[("Accept-Encoding", "gzip"), ("Range", "bytes=0-99")],
        )
        .await;
    assert_eq!(r.status, 206, "{r}");
    assert!(r.header("content-encoding").is_none(), "{r}");
    assert_eq!(r.body, doc.as_bytes()[..100]);
    // HEAD: no encoding announced, no body.
    let r = gw.request("HEAD", "/echo", &gz).await;
    assert_eq!(r.status, 200, "{r}");
    assert!(r.header("content-encoding").is_none(), "{r}");
    // The same path with GET is compressed (the route's floor is 1 byte).
    let r = gw.get_with("/echo", &gz).await;
    assert_eq!(r.header("content-encoding"), Some("zstd"), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_is_stripped_then_compressed() {
    let up = Upstream::start().await;
    let echo = Backend::start("echo").await;
    let doc = document(100);
    up.serve("/stripped/doc", Canned::json(doc.clone()));
    up.serve(
        "/stripped/gz",
        Canned::json(gzip(doc.as_bytes())).header("Content-Encoding", "gzip"),
    );
    let gw = gateway(&up, &echo).await;
    let expected: serde_json::Value = {
        let mut v: serde_json::Value = serde_json::from_str(&doc).unwrap();
        for item in v["items"].as_array_mut().unwrap() {
            item.as_object_mut().unwrap().remove("secret");
        }
        v
    };
    for path in ["/stripped/doc", "/stripped/gz"] {
        for coding in ["zstd", "br", "gzip"] {
            let r = gw.get_with(path, &[("Accept-Encoding", coding)]).await;
            assert_eq!(r.status, 200, "{r}");
            assert_eq!(r.header_all("content-encoding"), [coding], "{path}: {r}");
            let plain = decode(coding, &r.body);
            assert!(
                !String::from_utf8_lossy(&plain).contains("s3cr3t"),
                "{path} {coding}: unstripped body"
            );
            let got: serde_json::Value = serde_json::from_slice(&plain).expect("stripped JSON");
            assert_eq!(got, expected, "{path} {coding}");
        }
    }
    // The upstream was asked for identity (the stripper's need), whatever the client accepts.
    for seen in up.seen("/stripped/doc") {
        assert!(seen.header_all("accept-encoding").is_empty(), "{seen:?}");
    }
}
