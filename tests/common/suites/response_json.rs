//! The response JSON suites' helpers (`tests/response_json.rs`,
//! `tests/response_json_framing.rs`): a gateway with routes to one [`Upstream`], requests to
//! send with [`crate::common::raw_http::fetch`], the checks of a stripped and of a failed-closed
//! response, the failure counter, and the test documents.
//!
//! Fail-closed cases put a marker ([`MARKER`]) in a *removed* field before the point of failure
//! and another one ([`AFTER`]) in a kept field after it: neither may ever appear in the client's
//! bytes, and whatever body did arrive must be a prefix of the stripped form.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::canned::Upstream;
use crate::common::metrics::{self, metrics_text};
use crate::common::raw_http::{contains, lossy_preview, Fetched, Wire};
use crate::common::Gateway;

/// Put in removed fields: must never reach a client.
pub const MARKER: &str = "SECRET-MARKER";
/// Put in a kept field after a syntax error: bytes after the point of failure must not arrive.
pub const AFTER: &str = "AFTER-ERROR-MARKER";

/// One mebibyte.
pub const MIB: usize = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Requests, gateway config and assertions
// ---------------------------------------------------------------------------------------------

/// `GET <path>` with `Connection: close`.
pub fn get(path: &str) -> String {
    req("GET", path, "")
}

/// `extra`: header lines, each ending in `\r\n`.
pub fn req(method: &str, path: &str, extra: &str) -> String {
    format!("{method} {path} HTTP/1.1\r\nHost: gw.test\r\n{extra}Connection: close\r\n\r\n")
}

/// One route to upstream `up` (no prefix stripping: the upstream sees the client's path).
/// `extra`: more route keys, each a line indented by 4 spaces.
pub fn route(name: &str, prefix: &str, extra: &[&str]) -> String {
    let mut s =
        format!("  - name: {name}\n    match: {{path_prefix: {prefix}}}\n    upstream: up\n");
    for line in extra {
        s.push_str("    ");
        s.push_str(line);
        s.push('\n');
    }
    s
}

/// A gateway with upstream `up` (`retries: 0`) on `up` and the given [`route`]s.
pub async fn gateway(up: &Upstream, routes: &[String]) -> Gateway {
    let body = format!(
        "upstreams:\n  up:\n    backends: [\"{}\"]\n    retries: 0\n\nroutes:\n{}",
        up.addr(),
        routes.concat()
    );
    Gateway::start(&body).await
}

pub fn parse(json: &str) -> Value {
    serde_json::from_str(json).unwrap_or_else(|e| panic!("test JSON does not parse ({e}): {json}"))
}

/// A sanitised 200: complete, chunked, no Content-Length / Content-Encoding, body == `expected`,
/// and the marker nowhere in the received bytes.
#[track_caller]
pub fn assert_stripped(f: &Fetched, expected: &Value, what: &str) {
    assert_eq!(f.got.status, 200, "{what}: status\n{f}");
    assert!(
        f.got.complete,
        "{what}: the sanitised body did not arrive complete\n{f}"
    );
    assert_eq!(
        f.got.header("content-length"),
        None,
        "{what}: a rewritten body must not carry the upstream's Content-Length\n{f}"
    );
    assert_eq!(
        f.got.wire,
        Wire::Chunked,
        "{what}: the rewritten body must be sent chunked\n{f}"
    );
    assert_eq!(
        f.got.header("content-encoding"),
        None,
        "{what}: the client must get identity\n{f}"
    );
    assert_eq!(
        &f.got.json(),
        expected,
        "{what}: stripped body differs from the expected one\n{f}"
    );
    assert!(
        !contains(&f.all, MARKER),
        "{what}: the marker of a removed field reached the client\n{f}"
    );
}

/// The body could not be sanitised: the gateway fails closed. Acceptable shapes: a 502
/// `bad_gateway` before any body, no response at all, or a 200 whose body visibly did not finish
/// (chunked/length framing, incomplete, connection closed) and whose received part is a prefix of
/// `allowed` (the stripped form of what preceded the failure). `secrets` never appear anywhere.
#[track_caller]
pub fn assert_failed_closed(f: &Fetched, allowed: &[u8], secrets: &[&str], what: &str) {
    for s in secrets {
        assert!(
            !contains(&f.all, s),
            "{what}: {s:?} reached the client although the body could not be sanitised\n{f}"
        );
    }
    match f.got.status {
        0 => assert!(f.closed, "{what}: no response and no close\n{f}"),
        502 => {
            f.got.resp().assert_gateway_error(502, "bad_gateway");
        }
        200 => {
            assert!(
                matches!(f.got.wire, Wire::Chunked | Wire::Length(_)),
                "{what}: a close-delimited body cannot tell the client it was cut\n{f}"
            );
            assert!(
                !f.got.complete,
                "{what}: the client received a properly terminated body although the gateway \
                 could not sanitise it (must be cut)\n{f}"
            );
            assert!(f.closed, "{what}: the connection must be closed\n{f}");
            assert!(
                allowed.starts_with(&f.got.body),
                "{what}: the received body is not a prefix of the stripped form\n\
                 allowed: {}\n{f}",
                lossy_preview(allowed)
            );
        }
        s => panic!("{what}: unexpected status {s}\n{f}"),
    }
}

/// `tollgate_response_sanitize_failures_total{route,reason}` from admin /metrics (0 if absent).
pub async fn sanitize_failures(gw: &Gateway, route: &str, reason: &str) -> f64 {
    let text = metrics_text(gw).await;
    metrics::value(
        &text,
        "tollgate_response_sanitize_failures_total",
        &[("route", route), ("reason", reason)],
    )
    .unwrap_or(0.0)
}

/// Waits (≤ 5 s) for the counter to reach `want`; returns the last value seen.
pub async fn wait_failures(gw: &Gateway, route: &str, reason: &str, want: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v = sanitize_failures(gw, route, reason).await;
        if v >= want || Instant::now() >= deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Test documents
// ---------------------------------------------------------------------------------------------

/// A compact JSON document of at least `target` bytes with the marker in removed fields all
/// along, and its stripped form under `remove: [secret, "data[].secret"]`:
/// `{"secret":M,"data":[{"id":0,"secret":M,"pad":"xx…"},…],"tail":"end"}`.
pub fn big_doc(target: usize) -> (Vec<u8>, Vec<u8>) {
    let pad = "x".repeat(1000);
    let mut doc = format!("{{\"secret\":\"{MARKER}\",\"data\":[").into_bytes();
    let mut stripped = b"{\"data\":[".to_vec();
    let mut i = 0usize;
    while doc.len() < target {
        if i > 0 {
            doc.push(b',');
            stripped.push(b',');
        }
        doc.extend_from_slice(
            format!("{{\"id\":{i},\"secret\":\"{MARKER}\",\"pad\":\"{pad}\"}}").as_bytes(),
        );
        stripped.extend_from_slice(format!("{{\"id\":{i},\"pad\":\"{pad}\"}}").as_bytes());
        i += 1;
    }
    doc.extend_from_slice(b"],\"tail\":\"end\"}");
    stripped.extend_from_slice(b"],\"tail\":\"end\"}");
    (doc, stripped)
}

pub const BIG_ROUTE: &str = "response_json: {remove: [secret, \"data[].secret\"]}";

/// A document exercising most of the tokenizer, and its stripped form.
pub fn rich_doc() -> (String, Value) {
    let doc = format!(
        r#"{{"id":7,"internal_cost":31.2e-1,"items":[{{"sku":"A\"1","supplier_id":"{MARKER}"}},{{"sku":"\u00e9 é","supplier_id":-0.5e-3,"qty":10}}],"t":true,"f":false,"n":null,"debug":{{"a":[{{"b":"{MARKER}"}}],"c":"}}]\\\""}},"nested":{{"deep":{{"deeper":[1,2.5,-3e+2]}}}},"end":"✓"}}"#
    );
    let expected = parse(
        r#"{"id":7,"items":[{"sku":"A\"1"},{"sku":"\u00e9 é","qty":10}],"t":true,"f":false,"n":null,"nested":{"deep":{"deeper":[1,2.5,-3e+2]}},"end":"✓"}"#,
    );
    (doc, expected)
}

pub const RICH_ROUTE: &str =
    "response_json: {remove: [internal_cost, \"items[].supplier_id\", debug]}";
