//! Response sanitising (`response_json`, DESIGN.md "Response sanitising", issue 5): JSON field
//! stripping end to end through the real binary, what it strips (paths, arrays, keep mode,
//! content types), what it leaves alone and what the upstream is asked for, and `tollgate check`
//! on `response_json`. Framing, encodings and failing closed are in
//! `tests/response_json_framing.rs`.
//!
//! Upstreams are [`Upstream`]s serving canned responses; clients are [`fetch`]/[`WireConn`],
//! which keep every byte the client received, so the leak checks scan what actually reached the
//! client, framing included.

mod common;

use std::time::Duration;

use common::canned::{gzip, Canned, Upstream};
use common::raw_http::{contains, fetch, find, Wire, WireConn};
use common::suites::response_json::*;
use common::*;

// ---------------------------------------------------------------------------------------------
// Stripping semantics
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_objects_are_stripped_by_exact_path() {
    let up = Upstream::start().await;
    let body = format!(
        r#"{{"id":7,"debug":{{"sql":"{MARKER} select *","trace":[1,2,{{"x":"{MARKER}"}}]}},"meta":{{"internal":{{"cost":"{MARKER}","keep":1}},"public":true}},"a":{{"b":{{"c":{{"deep":"{MARKER}"}},"d":2}},"e":3}},"x":{{"y":[{{"z":"array-element-kept"}}]}},"tail":"end"}}"#
    );
    up.serve("/s/nested", Canned::json(body));
    let gw = gateway(
        &up,
        &[route(
            "strip",
            "/s",
            &["response_json: {remove: [debug, meta.internal.cost, a.b.c, x.y.z]}"],
        )],
    )
    .await;
    let f = fetch(gw.port, &get("/s/nested")).await;
    assert_stripped(
        &f,
        &parse(
            r#"{"id":7,"meta":{"internal":{"keep":1},"public":true},"a":{"b":{"d":2},"e":3},"x":{"y":[{"z":"array-element-kept"}]},"tail":"end"}"#,
        ),
        "nested objects (x.y.z names no array element: kept)",
    );
    assert_eq!(
        f.got.header("content-type"),
        Some("application/json"),
        "{f}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrays_of_objects_are_stripped_per_element() {
    let up = Upstream::start().await;
    let body = format!(
        r#"{{"supplier_id":"top-level-kept","items":[{{"sku":"A","supplier_id":"{MARKER}"}},{{"sku":"B","supplier_id":{{"name":"{MARKER}","n":[1,2]}}}},{{"sku":"C"}},{{}},7,"s",null,[{{"supplier_id":"nested-array-kept"}}],{{"sku":"D","details":{{"supplier_id":"deeper-kept"}},"supplier_id":["{MARKER}"]}}],"matrix":[[{{"secret":"{MARKER}","v":1}}],[{{"v":2,"secret":"{MARKER}"}}]],"empty":[]}}"#
    );
    up.serve("/s/items", Canned::json(body));
    let gw = gateway(
        &up,
        &[route(
            "strip",
            "/s",
            &["response_json: {remove: [\"items[].supplier_id\", \"matrix[][].secret\"]}"],
        )],
    )
    .await;
    let f = fetch(gw.port, &get("/s/items")).await;
    assert_stripped(
        &f,
        &parse(
            r#"{"supplier_id":"top-level-kept","items":[{"sku":"A"},{"sku":"B"},{"sku":"C"},{},7,"s",null,[{"supplier_id":"nested-array-kept"}],{"sku":"D","details":{"supplier_id":"deeper-kept"}}],"matrix":[[{"v":1}],[{"v":2}]],"empty":[]}"#,
        ),
        "items[].supplier_id",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_field_name_at_several_depths_only_the_named_path_goes() {
    let up = Upstream::start().await;
    let body = format!(
        r#"{{"secret":"{MARKER}","x":{{"secret":"x-kept","y":{{"secret":"{MARKER}","z":{{"secret":"z-kept"}}}}}},"list":[{{"secret":"list-kept"}}],"y":{{"secret":"top-y-kept"}},"secretive":"kept","secre":"kept","secret":"duplicate {MARKER}","\u0073ecret":"escaped-key {MARKER}"}}"#
    );
    up.serve("/s/depths", Canned::json(body));
    let gw = gateway(
        &up,
        &[route(
            "strip",
            "/s",
            &["response_json: {remove: [secret, x.y.secret]}"],
        )],
    )
    .await;
    let f = fetch(gw.port, &get("/s/depths")).await;
    assert_stripped(
        &f,
        &parse(
            r#"{"x":{"secret":"x-kept","y":{"z":{"secret":"z-kept"}}},"list":[{"secret":"list-kept"}],"y":{"secret":"top-y-kept"},"secretive":"kept","secre":"kept"}"#,
        ),
        "same name at several depths",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unicode_and_escaped_quotes_in_strings() {
    let up = Upstream::start().await;
    // The removed value holds escaped quotes, braces and a fake member; one removed key is
    // spelled with a \u escape (`cl\u00e9` is "clé", `na\u006de` is "name"); kept strings hold
    // raw multi-byte UTF-8, surrogate pairs, escaped quotes and backslashes, and \u0000.
    let body = format!(
        r#"{{"secret":"{MARKER} \" }} ] , \"id\": 0 \\","cl\u00e9":"{MARKER} via an escaped key","data":{{"na\u006de":"{MARKER}","title":"caf\u00e9 \"quoted\" \\ back\\slash \/ tab\t","raw":"é ✓ 😀 日本語","pair":"\ud83d\ude00","word":"the word secret in a value","ctl":"a\nb\u0000c","quote\"key":"v"}},"id":7,"clé2":"kept","\"":"only a quote"}}"#
    );
    up.serve("/s/unicode", Canned::json(body.clone()));
    let gw = gateway(
        &up,
        &[route(
            "strip",
            "/s",
            &["response_json: {remove: [secret, \"clé\", data.name]}"],
        )],
    )
    .await;
    let f = fetch(gw.port, &get("/s/unicode")).await;
    let mut expected = parse(&body);
    let obj = expected.as_object_mut().unwrap();
    assert!(obj.remove("secret").is_some() && obj.remove("clé").is_some());
    assert!(obj["data"]
        .as_object_mut()
        .unwrap()
        .remove("name")
        .is_some());
    assert_stripped(&f, &expected, "unicode and escapes");
    assert!(
        std::str::from_utf8(&f.got.body).is_ok(),
        "output must stay valid UTF-8\n{f}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_in_exponent_form_pass_unchanged() {
    let up = Upstream::start().await;
    // 1E400 overflows f64: a removed value is skipped, never interpreted.
    let body = r#"{"a":1e5,"b":-2.5E-3,"c":0e0,"d":1E+2,"e":-0.0e-0,"drop":6.02e23,"arr":[1e-7,{"drop":1E400,"k":3.0E+1},-1E-1],"big":123456789012345678901234567890,"f":1.5e308}"#;
    up.serve("/s/numbers", Canned::json(body));
    // The same document, chunked in 3-byte chunks: numbers split across reads.
    up.serve(
        "/s/numbers-chunked",
        Canned::json(body)
            .chunked(3)
            .pieces(16, Some(Duration::from_millis(1))),
    );
    let gw = gateway(
        &up,
        &[route(
            "strip",
            "/s",
            &["response_json: {remove: [drop, \"arr[].drop\"]}"],
        )],
    )
    .await;
    for path in ["/s/numbers", "/s/numbers-chunked"] {
        let f = fetch(gw.port, &get(path)).await;
        assert_stripped(
            &f,
            &parse(
                r#"{"a":1e5,"b":-2.5E-3,"c":0e0,"d":1E+2,"e":-0.0e-0,"arr":[1e-7,{"k":3.0E+1},-1E-1],"big":123456789012345678901234567890,"f":1.5e308}"#,
            ),
            path,
        );
        // Values are passed on, not re-serialised: every literal survives verbatim (no precision
        // loss for the 30-digit integer, no reformatting of exponents).
        let text = String::from_utf8_lossy(&f.got.body);
        for lit in [
            "1e5",
            "-2.5E-3",
            "0e0",
            "1E+2",
            "-0.0e-0",
            "1e-7",
            "3.0E+1",
            "-1E-1",
            "123456789012345678901234567890",
            "1.5e308",
        ] {
            assert!(
                text.contains(lit),
                "{path}: number literal {lit} altered or lost\n{f}"
            );
        }
        assert!(
            !text.contains("6.02e23") && !text.contains("1E400"),
            "{path}: removed numbers present\n{f}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_mode_is_an_allow_list() {
    let up = Upstream::start().await;
    // The order response the seed's sanitizeOrderResponse handled: keep id, status, total, items.
    let order = format!(
        r#"{{"id":"ord-7","status":"paid","total":59.9,"currency_internal":"EUR","internal_cost":31.2,"customer":{{"email":"{MARKER}@example.com","id":42}},"items":[{{"sku":"A-1","qty":2,"supplier_id":"sup-93"}},{{"sku":"B-7","qty":1,"supplier_id":"sup-12"}}],"debug":{{"sql":"{MARKER}"}},"_links":{{"self":"/orders/7"}},"status_history":["{MARKER}"],"ids":[1]}}"#
    );
    up.serve("/k/orders/7", Canned::json(order.clone()));
    up.serve("/n/orders/7", Canned::json(order));
    up.serve(
        "/t/list",
        Canned::json(format!(
            r#"[{{"id":1,"secret":"{MARKER}"}},{{"id":2,"x":{{"secret":"{MARKER}"}}}},{{"noid":"{MARKER}"}},5]"#
        )),
    );
    let gw = gateway(
        &up,
        &[
            route(
                "keep",
                "/k",
                &["response_json: {keep: [id, status, total, items]}"],
            ),
            route(
                "keep_nested",
                "/n",
                &["response_json: {keep: [id, \"items[].sku\", customer.id]}"],
            ),
            route("keep_top", "/t", &["response_json: {keep: [\"[].id\"]}"]),
        ],
    )
    .await;

    let f = fetch(gw.port, &get("/k/orders/7")).await;
    assert_stripped(
        &f,
        &parse(
            r#"{"id":"ord-7","status":"paid","total":59.9,"items":[{"sku":"A-1","qty":2,"supplier_id":"sup-93"},{"sku":"B-7","qty":1,"supplier_id":"sup-12"}]}"#,
        ),
        "keep [id, status, total, items] (a kept key keeps its whole subtree)",
    );

    let f = fetch(gw.port, &get("/n/orders/7")).await;
    assert_stripped(
        &f,
        &parse(r#"{"id":"ord-7","customer":{"id":42},"items":[{"sku":"A-1"},{"sku":"B-7"}]}"#),
        "keep with nested paths",
    );

    let f = fetch(gw.port, &get("/t/list")).await;
    let v = f.got.json();
    assert!(
        !contains(&f.all, MARKER),
        "keep [].id leaked a field that is not on the allow-list\n{f}"
    );
    assert_eq!(
        v.as_array()
            .map(|a| a.iter().take(2).cloned().collect::<Vec<_>>()),
        Some(vec![parse(r#"{"id":1}"#), parse(r#"{"id":2}"#)]),
        "keep [].id\n{f}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_content_types_are_stripped_whatever_the_status() {
    let up = Upstream::start().await;
    let body = format!(r#"{{"title":"x","secret":"{MARKER}"}}"#);
    let cases = [
        ("/s/problem", "application/problem+json", 422),
        ("/s/vnd", "application/vnd.api+json; charset=utf-8", 200),
        ("/s/charset", "application/json; charset=utf-8", 200),
        ("/s/upper", "Application/JSON", 200),
        ("/s/error", "application/json", 500),
    ];
    for (path, ct, status) in cases {
        up.serve(path, Canned::typed(ct, body.clone()).status(status));
    }
    let gw = gateway(
        &up,
        &[route("strip", "/s", &["response_json: {remove: [secret]}"])],
    )
    .await;
    for (path, ct, status) in cases {
        let f = fetch(gw.port, &get(path)).await;
        assert_eq!(
            f.got.status, status,
            "{path}: status must pass through\n{f}"
        );
        assert_eq!(f.got.header("content-type"), Some(ct), "{path}\n{f}");
        assert!(f.got.complete, "{path}\n{f}");
        assert_eq!(f.got.header("content-length"), None, "{path}\n{f}");
        assert_eq!(
            f.got.json(),
            parse(r#"{"title":"x"}"#),
            "{path} ({ct})\n{f}"
        );
        assert!(!contains(&f.all, MARKER), "{path} ({ct}) leaked\n{f}");
    }
}

/// A `Content-Type` that does not name one media type (two lines, a list, bytes that are not
/// text) is refused with 502 rather than read as "not JSON": clients differ on which type
/// wins, and a browser taking the JSON one would get every field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_content_types_fail_closed() {
    let up = Upstream::start().await;
    let body = format!(r#"{{"title":"x","secret":"{MARKER}"}}"#);
    up.serve(
        "/s/two",
        Canned::typed("text/plain", body.clone()).header("Content-Type", "application/json"),
    );
    up.serve(
        "/s/list",
        Canned::typed("text/plain, application/json", body.clone()),
    );
    let gw = gateway(
        &up,
        &[route("strip", "/s", &["response_json: {remove: [secret]}"])],
    )
    .await;
    for path in ["/s/two", "/s/list"] {
        let f = fetch(gw.port, &get(path)).await;
        assert_eq!(f.got.status, 502, "{path}\n{f}");
        assert!(!contains(&f.all, MARKER), "{path} leaked\n{f}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_json_content_types_are_untouched_byte_for_byte() {
    let up = Upstream::start().await;
    // Looks like JSON, is not declared as JSON: passed on as is.
    let text = format!("{{\"secret\":\"{MARKER}\"}}\n  not: json at all\r\n\u{e9}\n").into_bytes();
    up.serve("/s/text", Canned::typed("text/plain", text.clone()));
    up.serve(
        "/s/html",
        Canned::typed("text/html; charset=utf-8", text.clone()).chunked(7),
    );
    let gz = gzip(&text);
    up.serve(
        "/s/text-gz",
        Canned::typed("text/plain", gz.clone()).header("Content-Encoding", "gzip"),
    );
    let gw = gateway(
        &up,
        &[route("strip", "/s", &["response_json: {remove: [secret]}"])],
    )
    .await;

    let f = fetch(gw.port, &get("/s/text")).await;
    assert_eq!(f.got.status, 200, "{f}");
    assert_eq!(f.got.body, text, "text/plain must be untouched\n{f}");
    assert_eq!(
        f.got.header("content-length"),
        Some(text.len().to_string().as_str()),
        "text/plain keeps its Content-Length\n{f}"
    );
    assert_eq!(f.got.wire, Wire::Length(text.len()), "{f}");
    assert_eq!(f.got.header("content-type"), Some("text/plain"), "{f}");

    let f = fetch(gw.port, &get("/s/html")).await;
    assert_eq!(f.got.status, 200, "{f}");
    assert!(f.got.complete, "{f}");
    assert_eq!(f.got.body, text, "text/html must be untouched\n{f}");

    let f = fetch(gw.port, &get("/s/text-gz")).await;
    assert_eq!(f.got.status, 200, "{f}");
    assert_eq!(
        f.got.body, gz,
        "a non-JSON gzip body is passed through, not decoded\n{f}"
    );
    assert_eq!(f.got.header("content-encoding"), Some("gzip"), "{f}");
    assert_eq!(
        f.got.header("content-length"),
        Some(gz.len().to_string().as_str()),
        "{f}"
    );
}

// ---------------------------------------------------------------------------------------------
// What is left alone, and the request side
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_on_a_stripped_route_has_no_body_and_no_error() {
    let up = Upstream::start().await;
    let small = format!(r#"{{"id":1,"secret":"{MARKER}"}}"#);
    up.serve("/s/small", Canned::json(small.clone()));
    up.serve("/s/chunked", Canned::json(small.clone()).chunked(5));
    let (big, _) = big_doc(20 * MIB);
    up.serve("/s/big", Canned::json(big));
    up.serve(
        "/s/gz",
        Canned::json(gzip(small.as_bytes())).header("Content-Encoding", "gzip"),
    );
    let gw = gateway(
        &up,
        &[route(
            "strip",
            "/s",
            &["response_json: {remove: [secret, \"data[].secret\"]}"],
        )],
    )
    .await;
    for path in ["/s/small", "/s/chunked", "/s/big", "/s/gz"] {
        let f = fetch(gw.port, &req("HEAD", path, "")).await;
        assert_eq!(
            f.got.status, 200,
            "HEAD {path}: no body to sanitise, no error\n{f}"
        );
        let head_len = find(&f.all, b"\r\n\r\n").map(|i| i + 4).unwrap_or(0);
        assert_eq!(
            head_len,
            f.all.len(),
            "HEAD {path}: bytes after the response head\n{f}"
        );
        assert!(f.closed, "HEAD {path}: Connection: close not honoured\n{f}");
        let seen = up.seen(path);
        assert_eq!(
            seen.last().map(|s| s.method.as_str()),
            Some("HEAD"),
            "{path}"
        );
    }
    for reason in ["malformed", "too_large", "bad_encoding"] {
        assert_eq!(
            sanitize_failures(&gw, "strip", reason).await,
            0.0,
            "{reason}"
        );
    }
    // And the connection framing stays sane: HEAD then GET on one connection.
    let mut c = WireConn::connect(gw.port).await;
    c.send("HEAD /s/small HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        .await;
    let h = c.read_response(true).await;
    assert_eq!(h.status, 200, "{h}");
    c.send("GET /s/small HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n")
        .await;
    let g = c.read_response(false).await;
    assert_eq!(g.status, 200, "GET after HEAD on one connection\n{g}");
    assert_eq!(g.json(), parse(r#"{"id":1}"#), "{g}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_content_and_not_modified_are_untouched() {
    let up = Upstream::start().await;
    up.serve(
        "/s/204",
        Canned::json(Vec::new()).status(204).header("X-Up", "204"),
    );
    up.serve(
        "/s/304",
        Canned::json(Vec::new())
            .status(304)
            .header("ETag", "\"v1\""),
    );
    up.serve(
        "/s/ok",
        Canned::json(format!(r#"{{"id":1,"secret":"{MARKER}"}}"#)),
    );
    let gw = gateway(
        &up,
        &[route("strip", "/s", &["response_json: {remove: [secret]}"])],
    )
    .await;
    // One keep-alive connection: a stray body or wrong framing would break the next response.
    let mut c = WireConn::connect(gw.port).await;
    c.send("GET /s/204 HTTP/1.1\r\nHost: gw.test\r\n\r\n").await;
    let r = c.read_response(false).await;
    assert_eq!(r.status, 204, "{r}");
    assert_eq!(r.header("x-up"), Some("204"), "{r}");
    c.send("GET /s/304 HTTP/1.1\r\nHost: gw.test\r\nIf-None-Match: \"v1\"\r\n\r\n")
        .await;
    let r = c.read_response(false).await;
    assert_eq!(r.status, 304, "{r}");
    assert_eq!(r.header("etag"), Some("\"v1\""), "{r}");
    c.send("GET /s/ok HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n")
        .await;
    let r = c.read_response(false).await;
    assert_eq!(
        r.status, 200,
        "GET after 204 and 304 on one connection\n{r}"
    );
    assert!(r.complete, "{r}");
    assert_eq!(r.json(), parse(r#"{"id":1}"#), "{r}");
    assert!(c.drain().await, "Connection: close not honoured");
    // Everything after the 200's head is its body: nothing stray from the 204/304.
    assert!(!contains(&c.buf, MARKER));
    for reason in ["malformed", "too_large", "bad_encoding"] {
        assert_eq!(
            sanitize_failures(&gw, "strip", reason).await,
            0.0,
            "{reason}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_request_on_a_stripped_route_has_no_accept_encoding() {
    let up = Upstream::start().await;
    for p in ["/s/x", "/k/x", "/p/x"] {
        up.serve(p, Canned::json(r#"{"id":1,"secret":"s"}"#));
    }
    let gw = gateway(
        &up,
        &[
            route("strip", "/s", &["response_json: {remove: [secret]}"]),
            route("keep", "/k", &["response_json: {keep: [id]}"]),
            route("plain", "/p", &[]),
        ],
    )
    .await;
    let ae = "Accept-Encoding: gzip, deflate, br\r\nAccept-Encoding: zstd\r\n";
    for p in ["/s/x", "/k/x", "/p/x"] {
        let f = fetch(gw.port, &req("GET", p, ae)).await;
        assert_eq!(f.got.status, 200, "{p}\n{f}");
        assert!(f.got.complete, "{p}\n{f}");
    }
    for p in ["/s/x", "/k/x"] {
        let seen = up.seen(p);
        assert_eq!(seen.len(), 1, "{p}: {seen:?}");
        assert_eq!(
            seen[0].header_all("accept-encoding"),
            Vec::<&str>::new(),
            "{p}: a stripped route must ask the upstream for identity: {:?}",
            seen[0]
        );
    }
    // Control: elsewhere the client's Accept-Encoding reaches the upstream.
    let seen = up.seen("/p/x");
    assert_eq!(seen.len(), 1, "{seen:?}");
    let all = seen[0].header_all("accept-encoding").join(", ");
    assert!(
        all.contains("gzip") && all.contains("zstd"),
        "control route lost Accept-Encoding: {:?}",
        seen[0]
    );
    // And the plain route's JSON is not stripped.
    let f = fetch(gw.port, &get("/p/x")).await;
    assert_eq!(f.got.json(), parse(r#"{"id":1,"secret":"s"}"#), "{f}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_header_transforms_work_with_stripping() {
    let up = Upstream::start().await;
    let (doc, expected) = rich_doc();
    let with_headers = |c: Canned| {
        c.header("Server", "upstream-server/1.0")
            .header("X-Powered-By", "Express")
            .header("X-Trace", "keep-me")
    };
    up.serve("/s/plain", with_headers(Canned::json(doc.clone())));
    up.serve(
        "/s/gz",
        with_headers(Canned::json(gzip(doc.as_bytes())).header("Content-Encoding", "gzip"))
            .chunked(100),
    );
    let gw = gateway(
        &up,
        &[route(
            "strip",
            "/s",
            &[
                RICH_ROUTE,
                "response_headers: {remove: [Server, X-Powered-By], add: {X-Gateway: tollgate}}",
            ],
        )],
    )
    .await;
    for path in ["/s/plain", "/s/gz"] {
        let f = fetch(gw.port, &get(path)).await;
        assert_stripped(&f, &expected, path);
        let server: Vec<_> = f
            .got
            .headers
            .iter()
            .filter(|(n, _)| n == "server" || n == "x-powered-by")
            .collect();
        assert!(
            server.is_empty(),
            "{path}: removed response headers present: {server:?}\n{f}"
        );
        assert_eq!(f.got.header("x-trace"), Some("keep-me"), "{path}\n{f}");
        assert_eq!(f.got.header("x-gateway"), Some("tollgate"), "{path}\n{f}");
        assert!(f.got.header("x-request-id").is_some(), "{path}\n{f}");
    }
}

// ---------------------------------------------------------------------------------------------
// tollgate check
// ---------------------------------------------------------------------------------------------

const CHECK_HEAD: &str = r#"server:
  listen: ["127.0.0.1:18080"]
  admin_listen: "127.0.0.1:19901"
  pid_file: "@DIR@/tollgate.pid"
  upgrade_sock: "@DIR@/upgrade.sock"
  access_log: "off"

upstreams:
  up:
    backends: ["127.0.0.1:4001"]

routes:
  - name: first
    match: {path_prefix: /first}
    upstream: up
"#;

/// A config whose second route (`routes[1]`) has `response_json: <rj>`.
fn check_cfg(rj: &str) -> String {
    format!(
        "{CHECK_HEAD}  - name: second\n    match: {{path_prefix: /second}}\n    upstream: up\n    response_json: {rj}\n"
    )
}

/// `check` exits 1 and prints, for every `(path, fragment)`, a line `error: <path>…` that
/// contains `fragment`.
#[track_caller]
fn assert_check_rejects(yaml: &str, expected: &[(&str, &str)]) {
    let (code, out, err) = check(yaml);
    for (path, fragment) in expected {
        let prefix = format!("error: {path}");
        assert!(
            err.lines().any(|l| l.starts_with(&prefix)
                && l.contains(fragment)
                && l.len() > prefix.len() + 2),
            "expected a stderr line starting with {prefix:?} containing {fragment:?}\n\
             exit={code}\n--- stderr ---\n{err}\n--- stdout ---\n{out}\n--- config ---\n{yaml}"
        );
    }
    assert_eq!(
        code, 1,
        "check must exit 1\n--- stderr ---\n{err}\n--- config ---\n{yaml}"
    );
}

#[test]
fn check_rejects_bad_path_syntax_naming_the_yaml_path() {
    let p = "routes[1].response_json";
    assert_check_rejects(
        &check_cfg(r#"{remove: [ok, "a..b", "items[0]", "", ".lead", "trail.", "x[]y", "k]"]}"#),
        &[
            (&format!("{p}.remove[1]"), ""),
            (&format!("{p}.remove[2]"), ""),
            (&format!("{p}.remove[3]"), ""),
            (&format!("{p}.remove[4]"), ""),
            (&format!("{p}.remove[5]"), ""),
            (&format!("{p}.remove[6]"), ""),
            (&format!("{p}.remove[7]"), ""),
        ],
    );
    // The good path at index 0 is not reported.
    let (_, _, err) = check(&check_cfg(r#"{remove: [ok, "a..b"]}"#));
    assert!(
        !err.contains(&format!("{p}.remove[0]")),
        "a valid path was reported:\n{err}"
    );
    // keep uses the same syntax.
    assert_check_rejects(
        &check_cfg(r#"{keep: [id, "items[0].sku", "x..y"]}"#),
        &[(&format!("{p}.keep[1]"), ""), (&format!("{p}.keep[2]"), "")],
    );
}

#[test]
fn check_rejects_both_or_neither_mode_and_empty_lists() {
    let p = "routes[1].response_json";
    assert_check_rejects(&check_cfg("{remove: [a], keep: [b]}"), &[(p, "")]);
    assert_check_rejects(&check_cfg("{}"), &[(p, "")]);
    assert_check_rejects(&check_cfg("{max_body: 1MiB}"), &[(p, "")]);
    assert_check_rejects(&check_cfg("{remove: []}"), &[(p, "")]);
    assert_check_rejects(&check_cfg("{remvoe: [a]}"), &[(p, "remvoe")]);
    assert_check_rejects(&check_cfg("{remove: [a], max_body: lots}"), &[(p, "")]);
}

#[test]
fn check_reports_every_bad_route_and_accepts_valid_paths() {
    let yaml = format!(
        "{CHECK_HEAD}    response_json: {{remove: [\"a..b\"]}}\n  - name: second\n    match: {{path_prefix: /second}}\n    upstream: up\n    response_json: {{keep: [\"\"]}}\n"
    );
    assert_check_rejects(
        &yaml,
        &[
            ("routes[0].response_json.remove[0]", ""),
            ("routes[1].response_json.keep[0]", ""),
        ],
    );
    let (code, out, err) = check(&check_cfg(
        r#"{remove: [internal_cost, "items[].supplier_id", debug, "[].id", "m[][].x", "a.b.c", "list[]"], max_body: 512KiB}"#,
    ));
    assert_eq!(
        code, 0,
        "valid paths rejected\n--- stderr ---\n{err}\n--- stdout ---\n{out}"
    );
    let (code, _, err) = check(&check_cfg("{keep: [id, status, total, items]}"));
    assert_eq!(code, 0, "valid keep rejected\n{err}");
}

#[test]
fn run_refuses_a_bad_path() {
    let o = run_once(&check_cfg(r#"{remove: ["a..b"]}"#), Duration::from_secs(20));
    assert!(!o.timed_out, "run kept running on a broken config: {o:?}");
    assert_ne!(o.code, Some(0), "run must refuse a broken config: {o:?}");
    assert!(
        format!("{}{}", o.stdout, o.stderr).contains("routes[1].response_json.remove[0]"),
        "run must name the problem: {o:?}"
    );
}
