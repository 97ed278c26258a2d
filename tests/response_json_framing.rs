//! Response sanitising (`response_json`, DESIGN.md "Response sanitising", issue 5) on the wire:
//! bodies in any framing and write pattern, gzip and deflate, size limits, malformed JSON (the
//! gateway fails closed, and counts it), and ways around the stripper (Range requests, HTTP/1.0
//! clients, bodies at the parser's limits).
//!
//! Fail-closed cases put a marker ([`MARKER`]) in a *removed* field before the point of failure
//! and another one ([`AFTER`]) in a kept field after it: neither may ever appear in the client's
//! bytes, and whatever body did arrive must be a prefix of the stripped form.

mod common;

use std::time::Duration;

use common::canned::{gzip, raw_deflate, zlib, Canned, Upstream};
use common::raw_http::{contains, fetch, WireConn};
use common::suites::response_json::*;

// ---------------------------------------------------------------------------------------------
// Framing and encodings
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_delivered_one_byte_per_write_is_stripped() {
    let up = Upstream::start().await;
    let (doc, expected) = rich_doc();
    // Chunked, one body byte per chunk, and the whole wire (head and framing included) written
    // one byte per write, each flushed (TCP_NODELAY) with a pause.
    up.serve(
        "/s/trickle-chunked",
        Canned::json(doc.clone())
            .chunked(1)
            .pieces(1, Some(Duration::from_millis(1))),
    );
    up.serve(
        "/s/trickle-length",
        Canned::json(doc).pieces(1, Some(Duration::from_millis(1))),
    );
    let gw = gateway(&up, &[route("strip", "/s", &[RICH_ROUTE])]).await;
    for path in ["/s/trickle-chunked", "/s/trickle-length"] {
        let f = fetch(gw.port, &get(path)).await;
        assert_stripped(&f, &expected, path);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_delimited_upstream_body_is_stripped_and_sent_chunked() {
    let up = Upstream::start().await;
    let (doc, expected) = rich_doc();
    up.serve(
        "/s/close",
        Canned::json(doc).close_delimited().pieces(13, None),
    );
    let gw = gateway(&up, &[route("strip", "/s", &[RICH_ROUTE])]).await;
    let f = fetch(gw.port, &get("/s/close")).await;
    assert_stripped(&f, &expected, "close-delimited upstream body");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_encoded_json_is_decoded_stripped_and_sent_as_identity() {
    let up = Upstream::start().await;
    let (doc, expected) = rich_doc();
    let gz = gzip(doc.as_bytes());
    up.serve(
        "/s/gz",
        Canned::json(gz.clone()).header("Content-Encoding", "gzip"),
    );
    // Compressed stream split in 7-byte chunks, trickled.
    up.serve(
        "/s/gz-chunked",
        Canned::json(gz)
            .header("Content-Encoding", "gzip")
            .chunked(7)
            .pieces(11, Some(Duration::from_millis(1))),
    );
    // Larger than one decode step many times over.
    let (big, big_stripped) = big_doc(300 * 1024);
    up.serve(
        "/b/gz-big",
        Canned::json(gzip(&big))
            .header("Content-Encoding", "gzip")
            .chunked(1000),
    );
    let gw = gateway(
        &up,
        &[
            route("strip", "/s", &[RICH_ROUTE]),
            route("big", "/b", &[BIG_ROUTE]),
        ],
    )
    .await;
    for path in ["/s/gz", "/s/gz-chunked"] {
        // The client even says it accepts gzip: it still gets identity (the gateway decodes and
        // does not re-compress).
        let f = fetch(gw.port, &req("GET", path, "Accept-Encoding: gzip\r\n")).await;
        assert_stripped(&f, &expected, path);
    }
    let f = fetch(gw.port, &get("/b/gz-big")).await;
    assert_stripped(
        &f,
        &serde_json::from_slice(&big_stripped).unwrap(),
        "300 KiB gzip body",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deflate_encoded_json_is_decoded_stripped_and_sent_as_identity() {
    let up = Upstream::start().await;
    let (doc, expected) = rich_doc();
    let z = zlib(doc.as_bytes());
    up.serve(
        "/s/deflate",
        Canned::json(z.clone()).header("Content-Encoding", "deflate"),
    );
    up.serve(
        "/s/deflate-chunked",
        Canned::json(z)
            .header("Content-Encoding", "Deflate")
            .chunked(5)
            .pieces(9, Some(Duration::from_millis(1))),
    );
    // Raw deflate without the zlib wrapper (a common server mistake): decoding it or failing
    // closed are both fine; passing compressed or unstripped bytes on is not.
    up.serve(
        "/s/raw-deflate",
        Canned::json(raw_deflate(doc.as_bytes())).header("Content-Encoding", "deflate"),
    );
    let gw = gateway(&up, &[route("strip", "/s", &[RICH_ROUTE])]).await;
    for path in ["/s/deflate", "/s/deflate-chunked"] {
        let f = fetch(gw.port, &req("GET", path, "Accept-Encoding: deflate\r\n")).await;
        assert_stripped(&f, &expected, path);
    }
    let f = fetch(gw.port, &get("/s/raw-deflate")).await;
    if f.got.status == 200 && f.got.complete {
        assert_stripped(&f, &expected, "raw deflate, decoded");
    } else {
        assert_failed_closed(&f, b"", &[MARKER], "raw deflate, refused");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_connection_survives_stripped_responses() {
    let up = Upstream::start().await;
    let (doc, expected) = rich_doc();
    up.serve("/s/a", Canned::json(doc.clone()));
    up.serve("/s/b", Canned::json(doc.clone()).chunked(10));
    up.serve(
        "/s/c",
        Canned::json(gzip(doc.as_bytes())).header("Content-Encoding", "gzip"),
    );
    up.serve("/s/plain", Canned::typed("text/plain", "hello"));
    let gw = gateway(&up, &[route("strip", "/s", &[RICH_ROUTE])]).await;
    let mut c = WireConn::connect(gw.port).await;
    for path in ["/s/a", "/s/b", "/s/plain", "/s/c", "/s/a"] {
        c.send(&format!("GET {path} HTTP/1.1\r\nHost: gw.test\r\n\r\n"))
            .await;
        let got = c.read_response(false).await;
        assert_eq!(got.status, 200, "{path} on a reused connection\n{got}");
        assert!(got.complete, "{path} on a reused connection\n{got}");
        if path == "/s/plain" {
            assert_eq!(got.body, b"hello", "{got}");
        } else {
            assert_eq!(got.json(), expected, "{path} on a reused connection\n{got}");
        }
    }
    assert!(!contains(&c.buf, MARKER));
}

// ---------------------------------------------------------------------------------------------
// Fail closed
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body_with_content_length_is_502_before_any_body() {
    let up = Upstream::start().await;
    let (doc, _) = big_doc(20 * MIB);
    up.serve("/b/big", Canned::json(doc));
    let gw = gateway(&up, &[route("big", "/b", &[BIG_ROUTE])]).await;
    let f = fetch(gw.port, &get("/b/big")).await;
    assert_eq!(
        f.got.status, 502,
        "20 MB declared by Content-Length, max_body 8MiB (default)\n{f}"
    );
    f.got.resp().assert_gateway_error(502, "bad_gateway");
    assert!(f.got.complete, "{f}");
    assert!(!contains(&f.all, MARKER), "{f}");
    assert!(f.all.len() < 4096, "nothing but the error may be sent\n{f}");
    assert_eq!(wait_failures(&gw, "big", "too_large", 1.0).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_chunked_body_is_cut_without_leaking() {
    let up = Upstream::start().await;
    let (doc, stripped) = big_doc(20 * MIB);
    up.serve("/b/big", Canned::json(doc).chunked(64 * 1024));
    let gw = gateway(&up, &[route("big", "/b", &[BIG_ROUTE])]).await;
    let f = fetch(gw.port, &get("/b/big")).await;
    assert_failed_closed(
        &f,
        &stripped,
        &[MARKER, "\"tail\":\"end\""],
        "20 MB chunked",
    );
    assert!(
        f.got.body.len() <= 8 * MIB,
        "more than max_body (8 MiB) of body was forwarded: {} bytes",
        f.got.body.len()
    );
    assert_eq!(wait_failures(&gw, "big", "too_large", 1.0).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_body_decoding_past_max_body_is_cut_without_leaking() {
    let up = Upstream::start().await;
    // 20 MB of JSON that compresses to little: Content-Length is small, the decoded size is not.
    let (doc, stripped) = big_doc(20 * MIB);
    let gz = gzip(&doc);
    assert!(gz.len() < 8 * MIB);
    up.serve(
        "/b/bomb",
        Canned::json(gz).header("Content-Encoding", "gzip"),
    );
    let gw = gateway(&up, &[route("big", "/b", &[BIG_ROUTE])]).await;
    let f = fetch(gw.port, &get("/b/bomb")).await;
    assert_failed_closed(&f, &stripped, &[MARKER, "\"tail\":\"end\""], "gzip bomb");
    assert!(
        f.got.body.len() <= 8 * MIB,
        "more than max_body (8 MiB) of decoded body was forwarded: {} bytes",
        f.got.body.len()
    );
    assert_eq!(wait_failures(&gw, "big", "too_large", 1.0).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_content_encoding_is_502_before_any_body() {
    let up = Upstream::start().await;
    // Not really brotli: if the gateway passed it on, the marker would be in plain sight.
    let body = format!(r#"{{"id":1,"secret":"{MARKER}"}}"#);
    for (path, enc) in [
        ("/s/br", "br"),
        ("/s/gzip-br", "gzip, br"),
        ("/s/compress", "compress"),
    ] {
        up.serve(
            path,
            Canned::json(body.clone()).header("Content-Encoding", enc),
        );
    }
    up.serve(
        "/s/identity",
        Canned::json(body.clone()).header("Content-Encoding", "identity"),
    );
    let gw = gateway(
        &up,
        &[route("strip", "/s", &["response_json: {remove: [secret]}"])],
    )
    .await;
    for path in ["/s/br", "/s/gzip-br", "/s/compress"] {
        let f = fetch(gw.port, &get(path)).await;
        assert_eq!(
            f.got.status, 502,
            "{path}: cannot be decoded, so cannot be stripped\n{f}"
        );
        f.got.resp().assert_gateway_error(502, "bad_gateway");
        assert!(!contains(&f.all, MARKER), "{path}\n{f}");
    }
    let f = fetch(gw.port, &get("/s/identity")).await;
    assert_stripped(
        &f,
        &parse(r#"{"id":1}"#),
        "Content-Encoding: identity is no encoding",
    );
    assert_eq!(wait_failures(&gw, "strip", "bad_encoding", 3.0).await, 3.0);
}

/// Bodies that break the JSON grammar after a removed field carrying the marker, and before a
/// kept field carrying [`AFTER`]; with the stripped form of what precedes the failure.
fn malformed_cases() -> Vec<(&'static str, String, String)> {
    let m = MARKER;
    let a = AFTER;
    vec![
        (
            "bad-literal",
            format!(
                r#"{{"id":1,"items":[{{"sku":"A","supplier_id":"{m}"}}],"secret":"{m}","oops":tru,"after":"{a}"}}"#
            ),
            r#"{"id":1,"items":[{"sku":"A"}],"oops":tru"#.to_string(),
        ),
        (
            "missing-colon",
            format!(r#"{{"id":1,"secret":"{m}","x" 5,"after":"{a}"}}"#),
            r#"{"id":1,"x""#.to_string(),
        ),
        (
            "raw-newline-in-string",
            format!("{{\"id\":1,\"secret\":\"{m}\",\"note\":\"line\nbreak\",\"after\":\"{a}\"}}"),
            r#"{"id":1,"note":"line"#.to_string(),
        ),
        (
            "bad-escape",
            format!(r#"{{"id":1,"secret":"{m}","s":"bad \x escape","after":"{a}"}}"#),
            r#"{"id":1,"s":"bad \"#.to_string(),
        ),
        (
            "error-inside-removed-value",
            format!(r#"{{"id":1,"secret":{{"a":"{m}",,"b":2}},"after":"{a}"}}"#),
            r#"{"id":1"#.to_string(),
        ),
        (
            "bad-number",
            format!(r#"{{"secret":"{m}","id":1,"n":-,"after":"{a}"}}"#),
            r#"{"id":1,"n":-"#.to_string(),
        ),
        (
            "second-document",
            format!(r#"{{"id":1,"secret":"{m}"}}{{"secret":"{m}","after":"{a}"}}"#),
            r#"{"id":1}"#.to_string(),
        ),
        (
            "html-error-page",
            format!("<html><body>{m} {a}</body></html>"),
            String::new(),
        ),
        (
            "truncated-string",
            format!(r#"{{"id":1,"list":[1,2],"secret":"{m}"#),
            r#"{"id":1,"list":[1,2]"#.to_string(),
        ),
        (
            "truncated-array",
            format!(r#"{{"id":1,"secret":"{m}","list":[1,2"#),
            r#"{"id":1,"list":[1,2"#.to_string(),
        ),
        (
            "truncated-after-value",
            format!(r#"{{"id":1,"secret":"{m}""#),
            r#"{"id":1"#.to_string(),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_cut_without_leaking() {
    let up = Upstream::start().await;
    let cases = malformed_cases();
    for (name, body, _) in &cases {
        // Whole body in one write with Content-Length ...
        up.serve(&format!("/s/{name}/length"), Canned::json(body.clone()));
        // ... and trickled in small chunks, so part of the stripped output is already out
        // when the error is found.
        up.serve(
            &format!("/s/{name}/chunked"),
            Canned::json(body.clone())
                .chunked(4)
                .pieces(9, Some(Duration::from_millis(2))),
        );
    }
    let gw = gateway(
        &up,
        &[route(
            "strip",
            "/s",
            &["response_json: {remove: [secret, \"items[].supplier_id\"]}"],
        )],
    )
    .await;
    for (name, _, allowed) in &cases {
        for framing in ["length", "chunked"] {
            let path = format!("/s/{name}/{framing}");
            let f = fetch(gw.port, &get(&path)).await;
            assert_failed_closed(&f, allowed.as_bytes(), &[MARKER, AFTER], &path);
        }
    }
    let n = 2.0 * cases.len() as f64;
    assert_eq!(
        wait_failures(&gw, "strip", "malformed", n).await,
        n,
        "one malformed failure per response"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_after_a_large_valid_prefix_is_cut_mid_stream() {
    let up = Upstream::start().await;
    // ~200 KB of valid JSON goes out stripped, then a syntax error: the head (200) and part of
    // the body are gone already, so the only way to fail closed is to cut the connection.
    let (valid, stripped) = big_doc(200 * 1024);
    let cut_at = valid.len() - b"],\"tail\":\"end\"}".len();
    let mut doc = valid[..cut_at].to_vec();
    doc.extend_from_slice(format!(",{{\"id\":-1,\"secret\":\"{MARKER}\",\"pad\":}}").as_bytes());
    doc.extend_from_slice(format!(",{{\"id\":-2,\"pad\":\"{AFTER}\"}}]}}").as_bytes());
    let stripped_cut = stripped.len() - b"],\"tail\":\"end\"}".len();
    let mut allowed = stripped[..stripped_cut].to_vec();
    allowed.extend_from_slice(b",{\"id\":-1,\"pad\":");
    up.serve(
        "/b/broken",
        Canned::json(doc.clone())
            .chunked(4096)
            .pieces(4096 + 8, Some(Duration::from_millis(1))),
    );
    up.serve("/b/broken-length", Canned::json(doc).pieces(4096, None));
    let gw = gateway(&up, &[route("big", "/b", &[BIG_ROUTE])]).await;

    let f = fetch(gw.port, &get("/b/broken")).await;
    assert_failed_closed(&f, &allowed, &[MARKER, AFTER], "syntax error after 200 KB");
    assert_eq!(
        f.got.status, 200,
        "with 200 KB streamed first the head is long gone; expected a cut 200\n{f}"
    );
    assert!(
        !f.got.body.is_empty(),
        "the valid, stripped prefix should have streamed before the error\n{f}"
    );

    let f = fetch(gw.port, &get("/b/broken-length")).await;
    assert_failed_closed(
        &f,
        &allowed,
        &[MARKER, AFTER],
        "syntax error after 200 KB (Content-Length)",
    );
    assert_eq!(wait_failures(&gw, "big", "malformed", 2.0).await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_max_body_boundary() {
    let up = Upstream::start().await;
    // Exactly 1024 bytes, then 1025.
    let mk = |len: usize| {
        let head = format!("{{\"secret\":\"{MARKER}\",\"pad\":\"");
        let tail = "\"}";
        let pad = "p".repeat(len - head.len() - tail.len());
        let stripped = format!("{{\"pad\":\"{pad}\"}}");
        (format!("{head}{pad}{tail}"), stripped)
    };
    let (exact, exact_stripped) = mk(1024);
    let exact_stripped = parse(&exact_stripped);
    let (over, over_stripped) = mk(1025);
    assert_eq!((exact.len(), over.len()), (1024, 1025));
    up.serve("/m/exact", Canned::json(exact.clone()));
    up.serve("/m/exact-chunked", Canned::json(exact).chunked(100));
    up.serve("/m/over", Canned::json(over.clone()));
    up.serve("/m/over-chunked", Canned::json(over).chunked(100));
    let gw = gateway(
        &up,
        &[route(
            "m",
            "/m",
            &["response_json: {remove: [secret], max_body: 1KiB}"],
        )],
    )
    .await;
    for path in ["/m/exact", "/m/exact-chunked"] {
        let f = fetch(gw.port, &get(path)).await;
        assert_stripped(
            &f,
            &exact_stripped,
            &format!("{path}: 1024 bytes, max_body 1KiB"),
        );
    }
    let f = fetch(gw.port, &get("/m/over")).await;
    assert_eq!(f.got.status, 502, "1025 bytes declared, max_body 1KiB\n{f}");
    f.got.resp().assert_gateway_error(502, "bad_gateway");
    assert!(!contains(&f.all, MARKER));
    let f = fetch(gw.port, &get("/m/over-chunked")).await;
    assert_failed_closed(
        &f,
        over_stripped.as_bytes(),
        &[MARKER],
        "1025 bytes chunked, max_body 1KiB",
    );
    assert!(
        f.got.body.len() <= 1024,
        "more than max_body forwarded\n{f}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sanitize_failures_are_counted_by_route_and_reason() {
    let up = Upstream::start().await;
    let ok = format!(r#"{{"id":1,"secret":"{MARKER}"}}"#);
    let big = format!(r#"{{"secret":"{MARKER}","pad":"{}"}}"#, "p".repeat(2000));
    for prefix in ["/m", "/q"] {
        up.serve(&format!("{prefix}/ok"), Canned::json(ok.clone()));
    }
    up.serve(
        "/m/malformed",
        Canned::json(format!(r#"{{"secret":"{MARKER}",]"#)),
    );
    up.serve("/m/big-length", Canned::json(big.clone()));
    up.serve("/m/big-chunked", Canned::json(big).chunked(256));
    up.serve(
        "/m/br",
        Canned::json(ok.clone()).header("Content-Encoding", "br"),
    );
    let gw = gateway(
        &up,
        &[
            route(
                "m",
                "/m",
                &["response_json: {remove: [secret], max_body: 1KiB}"],
            ),
            route("q", "/q", &["response_json: {remove: [secret]}"]),
        ],
    )
    .await;
    for reason in ["malformed", "too_large", "bad_encoding"] {
        assert_eq!(sanitize_failures(&gw, "m", reason).await, 0.0);
    }
    for path in [
        "/m/ok",
        "/q/ok",
        "/m/malformed",
        "/m/big-length",
        "/m/big-chunked",
        "/m/br",
    ] {
        let f = fetch(gw.port, &get(path)).await;
        assert!(!contains(&f.all, MARKER), "{path}\n{f}");
    }
    assert_eq!(wait_failures(&gw, "m", "malformed", 1.0).await, 1.0);
    assert_eq!(
        wait_failures(&gw, "m", "too_large", 2.0).await,
        2.0,
        "one declared (502) and one discovered mid-stream (cut)"
    );
    assert_eq!(wait_failures(&gw, "m", "bad_encoding", 1.0).await, 1.0);
    for reason in ["malformed", "too_large", "bad_encoding"] {
        assert_eq!(
            sanitize_failures(&gw, "q", reason).await,
            0.0,
            "route q had no failure ({reason})"
        );
    }
    let m = gw.admin_get("/metrics").await;
    assert!(
        m.text()
            .lines()
            .any(|l| l.starts_with("# TYPE tollgate_response_sanitize_failures_total counter")),
        "the metric must be a counter\n{}",
        m.text()
    );
}

// ---------------------------------------------------------------------------------------------
// Ways around the stripper
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_requests_cannot_bypass_stripping() {
    let up = Upstream::start().await;
    let body = format!(r#"{{"id":1,"secret":"{MARKER}","n":2}}"#);
    // The removed value, quotes included, is a complete JSON text on its own.
    let start = body.find(&format!("\"{MARKER}\"")).unwrap();
    let end = start + MARKER.len() + 1;
    up.serve("/s/doc", Canned::json(body.clone()).with_ranges());
    let gw = gateway(
        &up,
        &[route("strip", "/s", &["response_json: {remove: [secret]}"])],
    )
    .await;
    // The upstream honours ranges like any static file server.
    let direct = fetch(
        up.port,
        &req("GET", "/s/doc", &format!("Range: bytes={start}-{end}\r\n")),
    )
    .await;
    assert_eq!(direct.got.status, 206, "{direct}");
    assert_eq!(direct.got.body, format!("\"{MARKER}\"").as_bytes());

    let last = body.len() - 1;
    let mut leaks = Vec::new();
    for range in [
        // One range: a 206 `application/json` whose body is just the removed string.
        format!("bytes={start}-{end}"),
        // Several ranges: a 206 `multipart/byteranges` carrying the whole unstripped body.
        format!("bytes=0-{last},0-0"),
    ] {
        let f = fetch(
            gw.port,
            &req("GET", "/s/doc", &format!("Range: {range}\r\n")),
        )
        .await;
        if contains(&f.all, MARKER) {
            leaks.push(format!("--- Range: {range} ---\n{f}"));
        } else if f.got.status == 200 {
            assert_stripped(&f, &parse(r#"{"id":1,"n":2}"#), &range);
        }
    }
    assert!(
        leaks.is_empty(),
        "Range on a stripped route delivered the removed field to the client (the gateway \
         forwards Range to the upstream and passes the 206 on):\n{}",
        leaks.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_client_gets_a_stripped_body_it_can_read() {
    let up = Upstream::start().await;
    let (doc, expected) = rich_doc();
    up.serve("/s/doc", Canned::json(doc));
    let gw = gateway(&up, &[route("strip", "/s", &[RICH_ROUTE])]).await;
    let f = fetch(gw.port, "GET /s/doc HTTP/1.0\r\nHost: gw.test\r\n\r\n").await;
    assert_eq!(f.got.status, 200, "{f}");
    // RFC 9112 §6.1: no Transfer-Encoding in a response to an HTTP/1.0 request; the body is
    // delimited by the close instead.
    assert_eq!(
        f.got.header("transfer-encoding"),
        None,
        "chunked framing sent to an HTTP/1.0 client\n{f}"
    );
    assert_eq!(f.got.header("content-length"), None, "{f}");
    assert!(f.closed, "{f}");
    assert_eq!(f.got.json(), expected, "{f}");
    assert!(!contains(&f.all, MARKER), "{f}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_deep_and_huge_key_bodies_never_leak() {
    let up = Upstream::start().await;
    up.serve("/s/empty", Canned::json(Vec::new()));
    up.serve("/s/blank", Canned::json("  \r\n "));
    let depth = 2000;
    let deep = format!(
        r#"{{"secret":"{MARKER}","deep":{}1{}}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let deep_stripped = format!(r#"{{"deep":{}1{}}}"#, "[".repeat(depth), "]".repeat(depth));
    up.serve("/s/deep", Canned::json(deep.clone()));
    up.serve("/s/deep-chunked", Canned::json(deep).chunked(512));
    let long = "k".repeat(100 * 1024);
    let huge_key = format!(r#"{{"id":1,"{long}":1,"secret":"{MARKER}","after":"{AFTER}"}}"#);
    up.serve("/s/huge-key", Canned::json(huge_key.clone()));
    up.serve("/s/huge-key-chunked", Canned::json(huge_key).chunked(4096));
    let gw = gateway(
        &up,
        &[route("strip", "/s", &["response_json: {remove: [secret]}"])],
    )
    .await;

    for path in ["/s/empty", "/s/blank"] {
        let f = fetch(gw.port, &get(path)).await;
        assert!(
            f.got.status == 200 || f.got.status == 502,
            "{path}: an empty body is either passed as empty or refused\n{f}"
        );
        if f.got.status == 200 {
            assert!(f.got.complete, "{path}\n{f}");
            assert!(
                f.got.body.iter().all(|b| b.is_ascii_whitespace()),
                "{path}\n{f}"
            );
        }
    }
    for path in ["/s/deep", "/s/deep-chunked"] {
        let f = fetch(gw.port, &get(path)).await;
        if f.got.status == 200 && f.got.complete {
            assert_eq!(f.got.body, deep_stripped.as_bytes(), "{path}\n{f}");
        } else {
            assert_failed_closed(&f, deep_stripped.as_bytes(), &[MARKER], path);
        }
    }
    let huge_stripped = format!(r#"{{"id":1,"{long}":1,"after":"{AFTER}"}}"#);
    for path in ["/s/huge-key", "/s/huge-key-chunked"] {
        let f = fetch(gw.port, &get(path)).await;
        if f.got.status == 200 && f.got.complete {
            assert_eq!(f.got.body, huge_stripped.as_bytes(), "{path}\n{f}");
        } else {
            assert_failed_closed(&f, huge_stripped.as_bytes(), &[MARKER, AFTER], path);
        }
    }
}
