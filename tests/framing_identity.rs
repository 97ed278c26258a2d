//! Identity-header spellings, request framing and JWT `crit` against the real gateway binary
//! (issue 14; DESIGN.md "Request path" step 4, "Error responses"): spellings of the identity
//! headers a CGI/PHP-style backend folds together, `Content-Length` lists and repeats, bad
//! chunk-size lines (with the head, or arriving later), and JOSE `crit` headers.
//!
//! Every case sends literal bytes and asserts BOTH what the client got AND what the backend
//! received, byte for byte, through a [`Recorder`](common::recorder::Recorder): the header lines, the body framing, or
//! nothing at all. The gateway is [`common::suites::path_confusion`]'s.

mod common;

use std::time::Duration;

use common::raw_http::{exchange, RawClient};
use common::recorder::{RecRequest, RECORDER_BODY};
use common::suites::path_confusion::*;
use common::tokens::hmac_sha256;

// ---------------------------------------------------------------------------------------------
// Identity headers
// ---------------------------------------------------------------------------------------------

/// Every identity header of the config, with the value a client would like to plant.
const FAMILIES: &[(&str, &str)] = &[
    ("X-User-Id", "mallory"),
    ("X-User-Roles", "root"),
    ("X-Scopes", "admin:all"),
    ("X-Consumer", "acme-spoof"),
    ("X-Tenant", "t-evil"),
];

/// Spellings a CGI-style backend folds into the same variable (`-`, `_`, `.` alike for
/// WSGI/Rack/PHP, every non-alphanumeric byte for lighttpd; any case), each with the family's
/// spoofed value.
fn spoofed_header_lines() -> String {
    let spellings: &[(&str, &[&str])] = &[
        (
            "X-User-Id",
            &[
                "X-User-Id",
                "x-user-id",
                "X.User.Id",
                "x_user_id",
                "X-USER_ID",
                "X_User.Id",
                // lighttpd's CGI/FastCGI/SCGI map every non-alphanumeric byte to `_`.
                "X~User~Id",
                "X+User+Id",
                "x|user*id",
            ],
        ),
        (
            "X-User-Roles",
            &[
                "X-User-Roles",
                "x_user_roles",
                "X.USER.ROLES",
                "X-User_Roles",
                "X!User#Roles",
            ],
        ),
        (
            "X-Scopes",
            &["X-Scopes", "x.scopes", "X_SCOPES", "x_Scopes"],
        ),
        ("X-Consumer", &["X-Consumer", "x_consumer", "X.Consumer"]),
        ("X-Tenant", &["X-Tenant", "x.tenant", "X_TENANT"]),
    ];
    let mut out = String::new();
    for (family, names) in spellings {
        let value = FAMILIES
            .iter()
            .find(|(f, _)| f == family)
            .map(|(_, v)| *v)
            .expect("family");
        for n in *names {
            out.push_str(&format!("{n}: {value}\r\n"));
        }
    }
    out
}

fn headers_dump(r: &RecRequest) -> String {
    r.headers
        .iter()
        .map(|(n, v)| format!("    {n}: {v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// On a route without auth, no spelling of any identity header reaches the backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_header_spellings_never_reach_the_backend_on_an_open_route() {
    let fx = Fx::strict().await;
    fx.rec.clear();
    let req = get_request("/public/id", None, &spoofed_header_lines());
    let resp = exchange(fx.gw.port, req.as_bytes()).await;
    assert!(
        resp.as_ref().is_some_and(|r| r.status == 200),
        "the request itself is fine: {}\n{}",
        show(&resp),
        fx.rec.dump()
    );
    let reqs = fx.rec.requests();
    assert_eq!(reqs.len(), 1, "{}", fx.rec.dump());
    let mut leaked = Vec::new();
    for (family, _) in FAMILIES {
        for (n, v) in reqs[0].header_family(family) {
            leaked.push(format!("{n}: {v}"));
        }
    }
    assert!(
        leaked.is_empty(),
        "client-sent identity headers reached the backend: {leaked:?}\n  backend headers:\n{}",
        headers_dump(&reqs[0])
    );
}

/// With a valid token, each identity header the gateway sets arrives exactly once, with the
/// claim's value; no spelling of a client's copy survives next to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_header_spellings_are_replaced_by_verified_claims() {
    let fx = Fx::strict().await;
    fx.rec.clear();
    let tok = token();
    let req = get_request("/admin/id", Some(&tok), &spoofed_header_lines());
    let resp = exchange(fx.gw.port, req.as_bytes()).await;
    assert!(
        resp.as_ref().is_some_and(|r| r.status == 200),
        "a valid token: {}\n{}",
        show(&resp),
        fx.rec.dump()
    );
    let reqs = fx.rec.requests();
    assert_eq!(reqs.len(), 1, "{}", fx.rec.dump());
    let r = &reqs[0];
    let mut problems = Vec::new();
    for (family, want) in [
        ("X-User-Id", Some("alice")),
        ("X-User-Roles", Some("admin")),
        ("X-Scopes", Some("orders:read")),
        ("X-Tenant", Some("t-1")),
        // No claim maps to X-Consumer for a JWT: at most the gateway's own, never the client's.
        ("X-Consumer", None),
    ] {
        let got: Vec<String> = r
            .header_family(family)
            .iter()
            .map(|(n, v)| format!("{n}: {v}"))
            .collect();
        let values: Vec<&str> = r.header_family(family).iter().map(|(_, v)| *v).collect();
        match want {
            Some(w) if values != [w] => problems.push(format!(
                "{family}: want exactly one header of the family, value {w:?}; got {got:?}"
            )),
            None if values.len() > 1 => {
                problems.push(format!("{family}: more than one header: {got:?}"))
            }
            _ => {}
        }
        let spoof = FAMILIES.iter().find(|(f, _)| *f == family).unwrap().1;
        if values.contains(&spoof) {
            problems.push(format!("{family}: the client's value got through: {got:?}"));
        }
    }
    assert!(
        problems.is_empty(),
        "{}\n  backend headers:\n{}",
        problems.join("\n"),
        headers_dump(r)
    );
}

// ---------------------------------------------------------------------------------------------
// Framing: Content-Length
// ---------------------------------------------------------------------------------------------

const BODY10: &str = "0123456789";

/// `POST /public/<name>` with the given header lines and body, without `Connection: close`
/// (the gateway must close on its own after refusing).
fn post(path: &str, header_lines: &[&str], body: &str) -> String {
    let mut s = format!("POST {path} HTTP/1.1\r\nHost: gw.test\r\n");
    for h in header_lines {
        s.push_str(h);
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    s.push_str(body);
    s
}

/// Agreeing `Content-Length` values, repeated or listed: forwarded as ONE `Content-Length: 10`
/// line with the 10 body bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agreeing_content_lengths_are_forwarded_as_one() {
    let fx = Fx::strict().await;
    let mut failures = Vec::new();
    for lines in [
        &["Content-Length: 10", "Content-Length: 10"][..],
        &["Content-Length: 10, 10"],
        &["Content-Length: 10,10"],
        &["content-length: 10", "Content-Length: 10"],
        &["Content-Length: 10"], // control
    ] {
        fx.rec.clear();
        let mut lines = lines.to_vec();
        lines.push("Connection: close");
        let req = post("/public/cl", &lines, BODY10);
        let resp = exchange(fx.gw.port, req.as_bytes()).await;
        let reqs = fx.rec.requests();
        let ok = resp
            .as_ref()
            .is_some_and(|r| r.status == 200 && r.body == RECORDER_BODY.as_bytes())
            && reqs.len() == 1
            && reqs[0].header_all("content-length") == ["10"]
            && reqs[0].header_all("transfer-encoding").is_empty()
            && reqs[0].body == BODY10.as_bytes();
        eprintln!("CL-CASE {lines:?} -> {}", if ok { "ok" } else { "FAILED" });
        if !ok {
            failures.push(format!(
                "{lines:?}: want 200 and the backend to get one `Content-Length: 10` line and \
                 the 10 bytes\n  client got: {}\n{}",
                show(&resp),
                fx.rec.dump()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Disagreeing `Content-Length` values, or values that are not plain digits: 400, the
/// connection is closed, and the backend receives nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disagreeing_or_non_digit_content_lengths_are_400_and_close() {
    let fx = Fx::strict().await;
    let mut failures = Vec::new();
    for lines in [
        &["Content-Length: 5", "Content-Length: 10"][..],
        &["Content-Length: 10", "Content-Length: 5"],
        &["Content-Length: 5, 10"],
        &["Content-Length: 10, 5"],
        &["Content-Length: +10"],
        &["Content-Length: 1_0"],
        &["Content-Length: 0x0a"],
        &["Content-Length: 10 10"],
        &["Content-Length: 10", "Content-Length: +10"],
    ] {
        fx.rec.clear();
        let req = post("/public/cl", lines, BODY10);
        let mut client = RawClient::connect(fx.gw.port).await;
        client.send(req.as_bytes()).await;
        let resp = client.response().await;
        let closed = client.closed_within(CLOSE_WITHIN).await;
        tokio::time::sleep(SETTLE).await;
        let mut problems = Vec::new();
        if !resp
            .as_ref()
            .is_some_and(|r| r.status == 400 && error_code(r).as_deref() == Some("bad_request"))
        {
            problems.push("want 400 bad_request");
        }
        if !closed {
            problems.push("the connection stayed open");
        }
        if fx.rec.byte_count() != 0 {
            problems.push("the backend received bytes");
        }
        eprintln!("CL-CASE {lines:?} -> {problems:?}");
        if !problems.is_empty() {
            failures.push(format!(
                "{lines:?}: {}\n  client got: {}\n  unparsed: {}\n{}",
                problems.join("; "),
                show(&resp),
                client.leftover(),
                fx.rec.dump()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

// ---------------------------------------------------------------------------------------------
// Framing: chunk-size lines
// ---------------------------------------------------------------------------------------------

/// Chunk-size lines with no hex digit, or with garbage before any extension.
const BAD_SIZE_LINES: &[&str] = &[
    "\r\n",
    ";ext=1\r\n",
    "5 x\r\n",
    "5x\r\n",
    "-5\r\n",
    "0x5\r\n",
    "g\r\n",
];

const CHUNKED_HEAD: &str =
    "POST /public/ch HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n";

/// The request a bad chunk line tries to smuggle after itself.
const SMUGGLED: &str = "GET /admin/smuggled HTTP/1.1\r\nHost: gw.test\r\n\r\n";

/// Well-formed chunked bodies (also split over two writes) go through, decoded as sent: the
/// control for the two tests below.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_chunked_bodies_pass() {
    let fx = Fx::strict().await;
    let mut failures = Vec::new();
    for (body, want) in [
        ("5\r\nhello\r\n0\r\n\r\n", "hello"),
        ("5;ext=1\r\nhello\r\n0\r\n\r\n", "hello"),
        ("A\r\n0123456789\r\n0\r\n\r\n", BODY10),
        ("a\r\n0123456789\r\n0\r\n\r\n", BODY10),
        ("0005\r\nhello\r\n0\r\n\r\n", "hello"),
    ] {
        fx.rec.clear();
        let req = format!("{CHUNKED_HEAD}{body}");
        let resp = exchange(fx.gw.port, req.as_bytes()).await;
        let reqs = fx.rec.requests();
        let ok = resp.as_ref().is_some_and(|r| r.status == 200)
            && reqs.len() == 1
            && reqs[0].body == want.as_bytes();
        if !ok {
            failures.push(format!(
                "{body:?}: want 200 and body {want:?} at the backend\n  client got: {}\n{}",
                show(&resp),
                fx.rec.dump()
            ));
        }
    }
    // Two writes 200 ms apart, as in the "bad line arrives later" test.
    fx.rec.clear();
    let mut client = RawClient::connect(fx.gw.port).await;
    client
        .send(format!("{CHUNKED_HEAD}5\r\nhello\r\n").as_bytes())
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    client.send(b"5\r\nworld\r\n0\r\n\r\n").await;
    let resp = client.response().await;
    let reqs = fx.rec.requests();
    if !(resp.as_ref().is_some_and(|r| r.status == 200)
        && reqs.len() == 1
        && reqs[0].body == b"helloworld")
    {
        failures.push(format!(
            "two writes: want 200 and body \"helloworld\" at the backend\n  client got: {}\n{}",
            show(&resp),
            fx.rec.dump()
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// A bad chunk-size line that arrives in the same write as the head: 400, the connection is
/// closed, and the backend receives nothing at all (not even the head).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_chunk_size_line_with_the_head_is_400_and_nothing_goes_upstream() {
    let fx = Fx::strict().await;
    let mut failures = Vec::new();
    for bad in BAD_SIZE_LINES {
        fx.rec.clear();
        let req = format!("{CHUNKED_HEAD}{bad}hello\r\n0\r\n\r\n{SMUGGLED}");
        let mut client = RawClient::connect(fx.gw.port).await;
        client.send(req.as_bytes()).await;
        let resp = client.response().await;
        let closed = client.closed_within(CLOSE_WITHIN).await;
        tokio::time::sleep(SETTLE).await;
        let mut problems = Vec::new();
        if !resp
            .as_ref()
            .is_some_and(|r| r.status == 400 && error_code(r).as_deref() == Some("bad_request"))
        {
            problems.push("want 400 bad_request");
        }
        if !closed {
            problems.push("the connection stayed open");
        }
        if fx.rec.byte_count() != 0 {
            problems.push("the backend received bytes");
        }
        eprintln!("CHUNK-CASE first write {bad:?} -> {problems:?}");
        if !problems.is_empty() {
            failures.push(format!(
                "size line {bad:?}: {}\n  client got: {}\n{}",
                problems.join("; "),
                show(&resp),
                fx.rec.dump()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Decodes as many complete chunks of `body` as there are: `(data, saw_last_chunk)`; stops at
/// the first line that is not a plain hex size.
fn decode_chunks(body: &[u8]) -> (Vec<u8>, bool) {
    let mut data = Vec::new();
    let mut pos = 0;
    while let Some(i) = body[pos..].windows(2).position(|w| w == b"\r\n") {
        let line = String::from_utf8_lossy(&body[pos..pos + i]).into_owned();
        let Ok(size) = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
        else {
            break;
        };
        if size == 0 {
            return (data, true);
        }
        let start = pos + i + 2;
        let Some(chunk) = body.get(start..start + size) else {
            break;
        };
        data.extend_from_slice(chunk);
        pos = start + size + 2;
        if pos > body.len() {
            break;
        }
    }
    (data, false)
}

/// A bad chunk-size line that arrives 200 ms after the head and a valid first chunk: the client
/// gets 400 (the backend cannot have answered an unfinished body), the connection closes, and no
/// byte of the bad line or after it reaches the backend: not the chunk data behind it, not a
/// terminating chunk, and never the smuggled `GET /admin/smuggled`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_chunk_size_line_after_a_valid_chunk_never_reaches_the_backend() {
    let fx = Fx::strict().await;
    let mut failures = Vec::new();
    for bad in BAD_SIZE_LINES {
        fx.rec.clear();
        let mut client = RawClient::connect(fx.gw.port).await;
        client
            .send(format!("{CHUNKED_HEAD}5\r\nhello\r\n").as_bytes())
            .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        client
            .send(format!("{bad}EVIL!\r\n0\r\n\r\n{SMUGGLED}").as_bytes())
            .await;
        let resp = client.response().await;
        let closed = client.closed_within(CLOSE_WITHIN).await;
        tokio::time::sleep(SETTLE).await;
        let mut problems: Vec<String> = Vec::new();
        if !resp
            .as_ref()
            .is_some_and(|r| r.status == 400 && error_code(r).as_deref() == Some("bad_request"))
        {
            problems.push("want 400 bad_request".into());
        }
        if !closed {
            problems.push("the connection stayed open".into());
        }
        for marker in ["EVIL", "admin", "smuggled"] {
            if fx.rec.saw(marker.as_bytes()) {
                problems.push(format!("the backend received {marker:?}"));
            }
        }
        if !fx.rec.requests().is_empty() {
            problems.push("the backend received a complete request".into());
        }
        for conn in fx.rec.raw() {
            let Some(head_end) = conn.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let (data, last) = decode_chunks(&conn[head_end + 4..]);
            if last || !b"hello".starts_with(&data) {
                problems.push(format!(
                    "the backend got body data {:?} (last chunk: {last}); only a prefix of \
                     \"hello\" and no end of body may get there",
                    data.escape_ascii().to_string()
                ));
            }
        }
        eprintln!("CHUNK-CASE later {bad:?} -> {problems:?}");
        if !problems.is_empty() {
            failures.push(format!(
                "size line {bad:?} after a valid chunk: {}\n  client got: {}\n{}",
                problems.join("; "),
                show(&resp),
                fx.rec.dump()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

// ---------------------------------------------------------------------------------------------
// JWT `crit`
// ---------------------------------------------------------------------------------------------

/// The hand-rolled HMAC the tokens below rely on (RFC 4231 test case 2).
#[test]
fn hand_built_hmac_matches_rfc4231() {
    let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex,
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

/// Control: the hand-built token without `crit` is accepted (so a 401 below is about `crit`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_built_token_without_crit_is_accepted() {
    let fx = Fx::strict().await;
    assert_cases(&fx, "no crit", &[t("/admin/x", Pass("/admin/x"))]).await;
    let reqs = fx.rec.requests();
    assert_eq!(
        reqs[0].header_all("x-user-id"),
        ["alice"],
        "{}",
        fx.rec.dump()
    );
}

/// Sends each token (built with the JOSE header) to `/admin/x`: each must get 401
/// `unauthorized` with `WWW-Authenticate` naming `invalid_token`, and the backend nothing.
async fn assert_headers_refused(fx: &Fx, headers: &[&str]) {
    let mut failures = Vec::new();
    for header in headers {
        fx.rec.clear();
        let tok = token_with_header(header);
        let req = get_request("/admin/x", Some(&tok), "");
        let resp = exchange(fx.gw.port, req.as_bytes()).await;
        tokio::time::sleep(SETTLE).await;
        let www = resp
            .as_ref()
            .and_then(|r| r.header("www-authenticate"))
            .unwrap_or_default()
            .to_string();
        let ok = resp
            .as_ref()
            .is_some_and(|r| r.status == 401 && error_code(r).as_deref() == Some("unauthorized"))
            && www.contains("invalid_token")
            && fx.rec.byte_count() == 0;
        eprintln!("CRIT-CASE {header} -> {}", if ok { "ok" } else { "FAILED" });
        if !ok {
            failures.push(format!(
                "JOSE header {header}: want 401 unauthorized with WWW-Authenticate \
                 error=\"invalid_token\" and nothing at the backend\n  client got: {}\n{}",
                show(&resp),
                fx.rec.dump()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// RFC 7515 §4.1.11: a recipient must reject a JWS whose `crit` names an extension it does not
/// understand, and `crit` must not be empty or list registered names; tollgate implements none:
/// any `crit` is a 401 with `invalid_token`, and the backend sees nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_with_crit_header_is_401() {
    let fx = Fx::strict().await;
    assert_headers_refused(
        &fx,
        &[
            r#"{"alg":"HS256","typ":"JWT","crit":["exp"]}"#,
            r#"{"alg":"HS256","typ":"JWT","crit":["x-unknown"],"x-unknown":true}"#,
            r#"{"alg":"HS256","typ":"JWT","crit":["x-unknown"]}"#,
            r#"{"alg":"HS256","typ":"JWT","crit":[]}"#,
            r#"{"alg":"HS256","typ":"JWT","crit":"x"}"#,
            r#"{"alg":"HS256","b64":false,"crit":["b64"]}"#,
            r#"{"crit":["exp"],"alg":"HS256"}"#,
        ],
    )
    .await;
}

/// Beyond the spec's examples, the same rule: a `crit` that is present but not an array of
/// names (`null`, an object, numbers) or that is given twice is not a header tollgate
/// understands, so the token is refused, never accepted as if `crit` were absent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_with_malformed_or_null_crit_is_401() {
    let fx = Fx::strict().await;
    assert_headers_refused(
        &fx,
        &[
            r#"{"alg":"HS256","typ":"JWT","crit":null}"#,
            r#"{"alg":"HS256","typ":"JWT","crit":{}}"#,
            r#"{"alg":"HS256","typ":"JWT","crit":[1]}"#,
            r#"{"alg":"HS256","typ":"JWT","crit":["x-unknown"],"crit":null}"#,
            r#"{"alg":"HS256","typ":"JWT","crit":null,"crit":["x-unknown"]}"#,
        ],
    )
    .await;
}
