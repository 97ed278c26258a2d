//! Request smuggling and malformed HTTP/1.1 against the real gateway binary (issue 10).
//!
//! Every case sends literal bytes on one fresh client connection, reads whatever the gateway
//! answers, and — if the connection is still open — sends a second, well-formed request
//! (`GET /pub/follow`, `Connection: close`) on the same connection.
//!
//! The gateway routes only `/pub/...` to the echo backend; `/admin` is not routed (404 at the
//! gateway), so the backend must never see `/admin`. Between the gateway and the backend sits a
//! [`Tap`], a TCP relay that records every byte the gateway sends upstream (shown in failure
//! messages).
//!
//! What a client must be able to rely on, checked for every case:
//! * a malformed request is refused — `400`, or the connection closed without a response — and
//!   nothing after it on that connection is processed;
//! * the backend receives only requests the client sent as separate well-formed requests: every
//!   backend hit is accounted for by an echo response the client got, every echoed
//!   method/path is one the case allows, and no hidden `GET /admin` ever reaches it.
//!
//! Where Pingora alone is lenient in an RFC 9112-permitted way (`Content-Length` together with
//! `Transfer-Encoding`, which it resolves in favour of `Transfer-Encoding`; lone-LF line
//! endings), tollgate's own head scan (`src/listener/head_scan.rs`) refuses with 400 before
//! Pingora parses; those cases have both a `*_is_safe` test (refusal or safe framing) and a
//! strict `*_is_refused` test. Malformed chunked *bodies* are checked by the listener's chunk
//! scan (`src/listener/chunk_scan.rs`) too: sent with their head, they are refused before the
//! head reaches a backend (`*_is_refused`); `*_is_safe` proves the body-level guarantee that
//! holds however the bytes are split: no body byte after the break and no hidden request ever
//! reaches the backend.

mod common;

use std::time::Duration;

use common::raw_http::parse_responses;
use common::recorder::Tap;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The well-formed request sent after the case's bytes if the connection is still open.
const FOLLOW: &str = "GET /pub/follow HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n";

/// The request a smuggling attempt tries to hide; `/admin` is not routed by the gateway.
const HIDDEN: &str = "GET /admin HTTP/1.1\r\nHost: gw.test\r\n\r\n";

/// How long to wait for more bytes before deciding the gateway has nothing more to say.
const IDLE: Duration = Duration::from_millis(1500);

// ---------------------------------------------------------------------------------------------
// Running a case
// ---------------------------------------------------------------------------------------------

struct Fixture {
    backend: Backend,
    tap: Tap,
    gw: Gateway,
}

async fn fixture() -> Fixture {
    let backend = Backend::start("echo").await;
    let tap = Tap::start(backend.port()).await;
    let body = format!(
        "upstreams:
  echo:
    backends: [\"127.0.0.1:{}\"]
    retries: 0
routes:
  - name: pub
    match: {{path_prefix: /pub}}
    upstream: echo
",
        tap.port
    );
    let gw = Gateway::start(&body).await;
    Fixture { backend, tap, gw }
}

/// What happened to one case.
struct Obs {
    case: &'static str,
    sent: String,
    /// Every response received on the connection, in order.
    responses: Vec<Resp>,
    /// How many of `responses` arrived before the follow-up was (or would have been) sent.
    first_phase: usize,
    /// The gateway closed the connection before the follow-up could be sent.
    closed_before_follow: bool,
    follow_sent: bool,
    /// The connection was closed by the end of the exchange (rather than left idle).
    closed_at_end: bool,
    /// Backend requests (other than health checks) during the exchange.
    hits: usize,
    /// A fresh-connection `GET /pub/after` sent once the exchange is over: proves the gateway
    /// and its upstream connection pool are still in a sane state.
    after: Resp,
    /// Backend requests including the `after` one.
    hits_total: usize,
    upstream: Vec<String>,
}

impl Obs {
    /// The echo responses: requests the backend answered and the client received.
    fn echoes(&self) -> Vec<Echo> {
        self.responses
            .iter()
            .filter(|r| r.status == 200 && r.header("x-backend").is_some())
            .map(Resp::echo)
            .collect()
    }

    /// One line: what the gateway did with the case's bytes.
    fn verdict(&self) -> String {
        let first: Vec<String> = self.responses[..self.first_phase]
            .iter()
            .map(|r| r.status.to_string())
            .collect();
        let first = if first.is_empty() {
            "no response".to_string()
        } else {
            first.join("+")
        };
        let conn = if self.closed_before_follow {
            "then closed".to_string()
        } else {
            let later: Vec<String> = self.responses[self.first_phase..]
                .iter()
                .map(|r| r.status.to_string())
                .collect();
            format!(
                "connection left open; follow-up got [{}]{}",
                later.join(", "),
                if self.closed_at_end {
                    ", then closed"
                } else {
                    ""
                }
            )
        };
        let echoes: Vec<String> = self
            .echoes()
            .iter()
            .map(|e| format!("{} {} body_len={}", e.method, e.path, e.body_len))
            .collect();
        format!(
            "{first}, {conn}; backend hits={} echoes=[{}]; later request on a new connection: {}",
            self.hits,
            echoes.join("; "),
            self.after.status
        )
    }
}

impl std::fmt::Display for Obs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "case {}: {}", self.case, self.verdict())?;
        writeln!(f, "  sent: {:?}", self.sent)?;
        writeln!(f, "  follow-up sent: {}", self.follow_sent)?;
        for (i, r) in self.responses.iter().enumerate() {
            writeln!(
                f,
                "  response #{i}: {}",
                r.to_string().replace('\n', "\n    ")
            )?;
        }
        writeln!(
            f,
            "  after (new connection): {}",
            self.after.to_string().replace('\n', "\n    ")
        )?;
        for (i, u) in self.upstream.iter().enumerate() {
            writeln!(f, "  upstream conn #{i}: {u}")?;
        }
        Ok(())
    }
}

/// Reads into `buf` until at least `want` complete responses are in it, the peer closes, or
/// nothing arrives for [`IDLE`]. Returns true on EOF.
async fn read_phase(stream: &mut TcpStream, buf: &mut Vec<u8>, want: usize) -> bool {
    let mut chunk = [0u8; 8192];
    loop {
        if parse_responses(buf, false).len() >= want {
            // Got them; a closing peer usually closes right after the response.
            return match tokio::time::timeout(Duration::from_millis(300), stream.read(&mut chunk))
                .await
            {
                Ok(Ok(0)) | Ok(Err(_)) => true,
                Ok(Ok(n)) => {
                    buf.extend_from_slice(&chunk[..n]);
                    continue;
                }
                Err(_) => false,
            };
        }
        match tokio::time::timeout(IDLE, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return false,
        }
    }
}

/// Sends `request` on a new connection, then [`FOLLOW`] if the connection is still open.
async fn run_case(case: &'static str, request: &str) -> Obs {
    let fx = fixture().await;
    let mut stream = TcpStream::connect(("127.0.0.1", fx.gw.port))
        .await
        .expect("connect to gateway");
    let mut buf = Vec::new();
    let mut closed = stream.write_all(request.as_bytes()).await.is_err();
    if !closed {
        closed = read_phase(&mut stream, &mut buf, 1).await;
    }
    let first_phase = parse_responses(&buf, closed).len();
    let closed_before_follow = closed;
    let mut follow_sent = false;
    if !closed && stream.write_all(FOLLOW.as_bytes()).await.is_ok() {
        follow_sent = true;
        closed = read_phase(&mut stream, &mut buf, first_phase + 1).await;
        if !closed {
            // FOLLOW says `Connection: close`: wait for the close (or give up after IDLE).
            closed = read_phase(&mut stream, &mut buf, usize::MAX).await;
        }
    }
    // A request hidden from the client would be answered upstream shortly after; let it land.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let hits = fx.backend.hits();
    let after = raw_request(
        fx.gw.port,
        "GET /pub/after HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    let obs = Obs {
        case,
        sent: request.to_string(),
        responses: parse_responses(&buf, closed),
        first_phase,
        closed_before_follow,
        follow_sent,
        closed_at_end: closed,
        hits,
        after,
        hits_total: fx.backend.hits(),
        upstream: fx.tap.upstream(),
    };
    eprintln!("SMUGGLING-CASE {}: {}", case, obs.verdict());
    obs
}

// ---------------------------------------------------------------------------------------------
// Assertions
// ---------------------------------------------------------------------------------------------

/// No smuggling: every backend request is one the client got an echo for, every echo is an
/// allowed `(method, path, body_len)` (the case's own request if it may be accepted, and the
/// follow-up), and `/admin` never reached the backend.
#[track_caller]
fn assert_no_smuggling(o: &Obs, allowed: &[(&str, &str, u64)]) {
    let echoes = o.echoes();
    for e in &echoes {
        assert!(
            !e.path.contains("admin"),
            "hidden request reached the backend: {} {}\n{o}",
            e.method,
            e.path
        );
        let ok = allowed
            .iter()
            .chain(std::iter::once(&("GET", "/pub/follow", 0)))
            .any(|(m, p, n)| e.method == *m && e.path == *p && e.body_len == *n);
        assert!(
            ok,
            "backend saw a request the client did not send as a well-formed request: {} {} \
             (body_len {}); allowed {allowed:?} and the follow-up\n{o}",
            e.method, e.path, e.body_len
        );
    }
    assert_eq!(
        o.hits,
        echoes.len(),
        "backend received requests the client never got an answer for (hidden requests?)\n{o}"
    );
    assert_after_ok(o);
    let follow_echoes = echoes.iter().filter(|e| e.path == "/pub/follow").count();
    assert!(follow_echoes <= 1, "follow-up delivered twice\n{o}");
    if o.follow_sent && o.closed_at_end {
        // The follow-up was the last request on the connection; if the gateway answered it at
        // all, the last response must be its echo (nothing after it, nothing instead of it
        // being mistaken for body bytes and a stale answer returned).
        if follow_echoes == 1 {
            let last = o.echoes().pop().expect("an echo");
            assert_eq!(
                last.path, "/pub/follow",
                "follow-up answered out of order\n{o}"
            );
        }
    }
}

/// The later, unrelated request on a new connection went through cleanly, as the only extra
/// backend request: nothing left over (e.g. on a reused upstream connection) corrupted it.
#[track_caller]
fn assert_after_ok(o: &Obs) {
    assert_eq!(
        o.after.status, 200,
        "a later request on a new connection failed\n{o}"
    );
    let e = o.after.echo();
    assert_eq!(
        (e.method.as_str(), e.path.as_str(), e.body_len),
        ("GET", "/pub/after", 0),
        "a later request on a new connection was altered\n{o}"
    );
    assert_eq!(
        o.hits_total,
        o.hits + 1,
        "the backend saw extra requests after the exchange\n{o}"
    );
}

/// Refused: the first answer is a 400, or the connection closed without any response; and the
/// connection is then closed, so no byte after the malformed request is ever processed.
#[track_caller]
fn assert_refused(o: &Obs) {
    let first = o.responses.first().filter(|_| o.first_phase > 0);
    match first {
        None => assert!(
            o.closed_before_follow,
            "no response to the malformed request, and the connection stayed open\n{o}"
        ),
        Some(r) => assert_eq!(r.status, 400, "malformed request not refused with 400\n{o}"),
    }
    assert!(
        o.first_phase <= 1,
        "bytes after the malformed request were processed as further requests\n{o}"
    );
    assert!(
        o.closed_before_follow,
        "connection kept open after refusing a malformed request\n{o}"
    );
    assert_eq!(
        o.hits, 0,
        "the refused request (or part of it) reached the backend\n{o}"
    );
    assert_no_smuggling(o, &[]);
}

// ---------------------------------------------------------------------------------------------
// Request builders
// ---------------------------------------------------------------------------------------------

/// `POST /pub/a` with the given extra header lines (each without CRLF) and raw body bytes.
fn post(headers: &[&str], body: &str) -> String {
    let mut s = String::from("POST /pub/a HTTP/1.1\r\nHost: gw.test\r\n");
    for h in headers {
        s.push_str(h);
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    s.push_str(body);
    s
}

/// `GET /pub/a` with the given extra header lines (each without CRLF).
fn get(headers: &[&str]) -> String {
    let mut s = String::from("GET /pub/a HTTP/1.1\r\nHost: gw.test\r\n");
    for h in headers {
        s.push_str(h);
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    s
}

/// A chunked body holding `data` in one chunk, then the last chunk.
fn one_chunk(data: &str) -> String {
    format!("{:x}\r\n{data}\r\n0\r\n\r\n", data.len())
}

/// Defines a test that must be refused (400 or close) with no backend hit.
macro_rules! refused {
    ($(#[$m:meta])* $name:ident, $req:expr) => {
        $(#[$m])*
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let o = run_case(stringify!($name), &$req).await;
            assert_refused(&o);
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Content-Length
// ---------------------------------------------------------------------------------------------

refused!(
    content_length_duplicate_conflicting,
    post(&["Content-Length: 5", "Content-Length: 6"], "hello!")
);
refused!(
    content_length_list_conflicting,
    post(&["Content-Length: 5, 6"], "hello!")
);
refused!(content_length_empty, post(&["Content-Length:"], "hello"));
refused!(
    content_length_negative,
    post(&["Content-Length: -1"], "hello")
);
refused!(
    content_length_plus_sign,
    post(&["Content-Length: +5"], "hello")
);
refused!(content_length_hex, post(&["Content-Length: 0x5"], "hello"));
refused!(
    content_length_space_before_colon,
    post(&["Content-Length : 5"], "hello")
);

// Names a CGI-style backend (WSGI, Rack, PHP: `-`, `_` and `.` alike) reads as Content-Length:
// the gateway would frame the body without them and the backend by them.
refused!(
    content_length_with_underscores,
    post(&["Content_Length: 5"], "hello")
);
refused!(
    content_length_with_dots_after_the_real_one,
    post(&["Content-Length: 5", "Content.Length: 0"], "hello")
);
refused!(
    transfer_encoding_with_underscores_and_content_length,
    post(
        &["Content-Length: 6", "Transfer_Encoding: chunked"],
        "0\r\n\r\nG"
    )
);

// ---------------------------------------------------------------------------------------------
// Transfer-Encoding
// ---------------------------------------------------------------------------------------------

refused!(
    transfer_encoding_chunked_then_identity,
    post(
        &["Transfer-Encoding: chunked, identity"],
        &one_chunk("hello")
    )
);
refused!(
    transfer_encoding_identity,
    post(&["Transfer-Encoding: identity"], "hello")
);
refused!(
    transfer_encoding_xchunked,
    post(&["Transfer-Encoding: xchunked"], &one_chunk("hello"))
);
refused!(
    transfer_encoding_xchunked_with_content_length,
    post(
        &["Content-Length: 4", "Transfer-Encoding: xchunked"],
        &one_chunk("hello")
    )
);
refused!(
    transfer_encoding_space_before_colon,
    post(&["Transfer-Encoding : chunked"], &one_chunk("hello"))
);
refused!(
    transfer_encoding_on_http10,
    post(&["Transfer-Encoding: chunked"], &one_chunk("hello")).replacen("HTTP/1.1", "HTTP/1.0", 1)
);

/// `Transfer-Encoding:  Chunked ` (extra spaces, capital C) and `:\tchunked`: transfer-coding
/// names are case-insensitive and OWS around a field value is not part of it (RFC 9110 §5.5,
/// RFC 9112 §7), so these are valid. Either refusing or decoding them as chunked is safe; what
/// must not happen is any other framing. Accepted: the backend gets exactly one `POST /pub/a`
/// with the 5-byte decoded body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_encoding_odd_case_and_whitespace_is_safe() {
    for (case, te) in [
        ("te_spaces_capital", "Transfer-Encoding:  Chunked  "),
        ("te_tab", "Transfer-Encoding:\tchunked"),
        ("te_upper", "Transfer-Encoding: CHUNKED"),
    ] {
        let o = run_case(case, &post(&[te], &one_chunk("hello"))).await;
        let refused = o.first_phase > 0 && o.responses[0].status == 400;
        if !refused {
            let echoes = o.echoes();
            assert!(
                echoes
                    .first()
                    .is_some_and(|e| e.path == "/pub/a" && e.body_len == 5),
                "{case}: neither refused nor decoded as chunked\n{o}"
            );
        }
        assert_no_smuggling(&o, &[("POST", "/pub/a", 5)]);
    }
}

// ---------------------------------------------------------------------------------------------
// Content-Length together with Transfer-Encoding (incl. the CL.TE / TE.CL classics)
// ---------------------------------------------------------------------------------------------

/// Both headers, consistent-looking: `Content-Length: 5` and a chunked body of 5 bytes.
fn cl_and_te() -> String {
    post(
        &["Content-Length: 5", "Transfer-Encoding: chunked"],
        "0\r\n\r\n",
    )
}

/// CL.TE: a front end honouring `Content-Length` forwards all of it; one honouring
/// `Transfer-Encoding` stops at `0\r\n\r\n` and the rest is a hidden `GET /admin`.
fn cl_te() -> String {
    let body = format!("0\r\n\r\n{HIDDEN}");
    post(
        &[
            &format!("Content-Length: {}", body.len()),
            "Transfer-Encoding: chunked",
        ],
        &body,
    )
}

/// TE.CL: `Content-Length: 4` covers only the chunk-size line; a parser honouring it sees the
/// chunk data (a `GET /admin`) as the next request.
fn te_cl() -> String {
    post(
        &["Content-Length: 4", "Transfer-Encoding: chunked"],
        &one_chunk(HIDDEN),
    )
}

/// The safety half for a `Content-Length` + `Transfer-Encoding` request: refused, or (RFC 9112
/// §6.3) framed by `Transfer-Encoding` only — the backend gets one `POST /pub/a` with the
/// chunked-decoded body — and the connection is closed afterwards so nothing after the chunked
/// body is ever read as a request.
#[track_caller]
fn assert_cl_te_safe(o: &Obs, decoded_len: u64) {
    let refused = o.first_phase > 0 && o.responses[0].status == 400;
    if refused || (o.first_phase == 0 && o.closed_before_follow) {
        assert_refused(o);
        return;
    }
    let echoes = o.echoes();
    assert!(
        echoes
            .first()
            .is_some_and(|e| e.path == "/pub/a" && e.body_len == decoded_len),
        "accepted, but not framed by Transfer-Encoding (want body_len {decoded_len})\n{o}"
    );
    assert_eq!(
        o.first_phase, 1,
        "bytes after the chunked body were processed as another request\n{o}"
    );
    assert!(
        o.closed_before_follow,
        "RFC 9112 §6.1: connection must be closed after a request with both headers\n{o}"
    );
    assert!(
        echoes[0].header("content-length").is_none()
            || echoes[0].header("content-length") == Some(&decoded_len.to_string()),
        "the received Content-Length was forwarded alongside the chunked body\n{o}"
    );
    assert_no_smuggling(o, &[("POST", "/pub/a", decoded_len)]);
    assert_eq!(o.hits, 1, "{o}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_and_transfer_encoding_is_safe() {
    let o = run_case("cl_and_te", &cl_and_te()).await;
    assert_cl_te_safe(&o, 0);
}

refused!(content_length_and_transfer_encoding_is_refused, cl_and_te());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cl_te_classic_is_safe() {
    let o = run_case("cl_te", &cl_te()).await;
    assert_cl_te_safe(&o, 0);
}

refused!(cl_te_classic_is_refused, cl_te());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn te_cl_classic_is_safe() {
    let o = run_case("te_cl", &te_cl()).await;
    assert_cl_te_safe(&o, HIDDEN.len() as u64);
}

refused!(te_cl_classic_is_refused, te_cl());

// ---------------------------------------------------------------------------------------------
// Header syntax
// ---------------------------------------------------------------------------------------------

refused!(
    obs_fold_continuation_line,
    get(&["X-Folded: first", " second"])
);
refused!(
    obs_fold_on_transfer_encoding,
    post(
        &[
            "Content-Length: 5",
            "Transfer-Encoding: identity",
            " chunked"
        ],
        "0\r\n\r\n"
    )
);
refused!(empty_header_name, get(&[": x"]));
refused!(nul_in_header_value, get(&["X-A: a\0b"]));
refused!(bare_cr_in_header_value, get(&["X-A: a\rb"]));
refused!(
    bare_cr_before_transfer_encoding,
    post(&["X-A: a\rTransfer-Encoding: chunked"], &one_chunk("hello"))
);

/// Bare LF line endings: RFC 9112 §2.2 lets a recipient accept a lone LF as a line terminator,
/// so accepting is not smuggling as long as the gateway re-frames the request itself.
fn bare_lf() -> String {
    "GET /pub/a HTTP/1.1\nHost: gw.test\nX-A: b\n\n".to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_lf_line_endings_is_safe() {
    let o = run_case("bare_lf", &bare_lf()).await;
    let refused = o.first_phase > 0 && o.responses[0].status == 400;
    if refused || (o.first_phase == 0 && o.closed_before_follow) {
        assert_refused(&o);
    } else {
        assert_eq!(o.responses[0].echo().path, "/pub/a", "{o}");
        assert_no_smuggling(&o, &[("GET", "/pub/a", 0)]);
    }
}

refused!(bare_lf_line_endings_is_refused, bare_lf());

/// A lone LF inside a CRLF header section, in front of `Transfer-Encoding`.
fn bare_lf_mixed() -> String {
    format!(
        "POST /pub/a HTTP/1.1\r\nHost: gw.test\r\nX-A: b\nTransfer-Encoding: chunked\r\n\r\n{}",
        one_chunk("hello")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_lf_before_transfer_encoding_is_safe() {
    let o = run_case("bare_lf_mixed", &bare_lf_mixed()).await;
    let refused = o.first_phase > 0 && o.responses[0].status == 400;
    if refused || (o.first_phase == 0 && o.closed_before_follow) {
        assert_refused(&o);
    } else {
        let e = o.responses[0].echo();
        assert_eq!((e.path.as_str(), e.body_len), ("/pub/a", 5), "{o}");
        assert_no_smuggling(&o, &[("POST", "/pub/a", 5)]);
    }
}

refused!(bare_lf_before_transfer_encoding_is_refused, bare_lf_mixed());

// ---------------------------------------------------------------------------------------------
// Chunked body syntax
// ---------------------------------------------------------------------------------------------

/// The header section is valid, so the gateway has already forwarded the request head upstream
/// (it streams bodies) when the chunked body turns out to be malformed. What must hold: the
/// client gets a 400 or a close and nothing after the bad body is read; the upstream connection
/// carried only that head — no body bytes, no last chunk, nothing of the hidden request — so the
/// backend can never complete the request; and a later request goes through cleanly (the
/// half-sent upstream connection was not reused).
#[track_caller]
fn assert_body_safe(o: &Obs) {
    let first = o.responses.first().filter(|_| o.first_phase > 0);
    match first {
        None => assert!(
            o.closed_before_follow,
            "no response to the malformed body, and the connection stayed open\n{o}"
        ),
        Some(r) => assert_eq!(
            r.status, 400,
            "malformed chunked body not refused with 400\n{o}"
        ),
    }
    assert!(o.first_phase <= 1, "{o}");
    assert!(
        o.closed_before_follow,
        "connection kept open after a malformed body\n{o}"
    );
    assert!(
        o.echoes().is_empty(),
        "the backend completed a request with a malformed body\n{o}"
    );
    assert!(
        o.hits <= 1,
        "backend saw more than the head of the client's own request\n{o}"
    );
    for u in &o.upstream {
        assert!(!u.contains("admin"), "hidden request sent upstream\n{o}");
        if let Some(i) = u.find(r"\r\n\r\n") {
            let body = &u[i + 8..];
            assert!(
                !u.starts_with("POST /pub/a ") || body.is_empty(),
                "body bytes of the malformed request were forwarded upstream: {body:?}\n{o}"
            );
        }
    }
    assert_after_ok(o);
}

/// Defines `$safe` (body-level safety) and `$strict` (refused before anything reaches the
/// backend: the malformed body arrives in the same write as its head).
macro_rules! body_case {
    ($safe:ident, $strict:ident, $req:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $safe() {
            let o = run_case(stringify!($safe), &$req).await;
            assert_body_safe(&o);
        }

        refused!($strict, $req);
    };
}

/// `POST /pub/a`, chunked, with the given raw body followed by the hidden request.
fn chunked_post(body: &str) -> String {
    post(&["Transfer-Encoding: chunked"], &format!("{body}{HIDDEN}"))
}

body_case!(
    chunk_size_overflow_is_safe,
    chunk_size_overflow_is_refused,
    chunked_post("ffffffffffffffffff\r\nhello\r\n0\r\n\r\n")
);
// Small in value, but over httparse's 16 digits: refused by the listener with its head, not by
// Pingora after the head had gone upstream.
body_case!(
    chunk_size_of_seventeen_digits_is_safe,
    chunk_size_of_seventeen_digits_is_refused,
    chunked_post("00000000000000005\r\nhello\r\n0\r\n\r\n")
);
body_case!(
    chunk_size_not_hex_is_safe,
    chunk_size_not_hex_is_refused,
    chunked_post("5x\r\nhello\r\n0\r\n\r\n")
);
body_case!(
    chunk_extension_with_bare_lf_is_safe,
    chunk_extension_with_bare_lf_is_refused,
    chunked_post("5;a=b\nhello\r\n0\r\n\r\n")
);
body_case!(
    chunk_data_longer_than_size_is_safe,
    chunk_data_longer_than_size_is_refused,
    chunked_post("3\r\nhello\r\n0\r\n\r\n")
);

/// Chunk extension that violates the grammar (control bytes, unterminated quoted string).
fn chunk_ext_garbage() -> String {
    chunked_post("5;\x01\x7f\"unterminated\r\nhello\r\n0\r\n\r\n")
}

/// Accepting it is safe only if the body is decoded as one 5-byte chunk and re-chunked upstream
/// without the garbage; the bytes after the body may only ever be handled by the gateway itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_extension_garbage_is_safe() {
    let o = run_case("chunk_ext_garbage", &chunk_ext_garbage()).await;
    if o.first_phase == 0 || o.responses[0].status == 400 {
        assert_body_safe(&o);
        return;
    }
    let e = o.responses[0].echo();
    assert_eq!((e.path.as_str(), e.body_len), ("/pub/a", 5), "{o}");
    for u in &o.upstream {
        assert!(
            !u.contains("unterminated") && !u.contains(r"\x01"),
            "the garbage chunk extension was forwarded upstream\n{o}"
        );
    }
    assert_no_smuggling(&o, &[("POST", "/pub/a", 5)]);
}

refused!(chunk_extension_garbage_is_refused, chunk_ext_garbage());

// ---------------------------------------------------------------------------------------------
// A second request hidden after or inside a body
// ---------------------------------------------------------------------------------------------

/// `POST` with `Content-Length: 0` followed by `GET /admin`: the bytes after the empty body are a
/// pipelined request. The gateway must either parse, route (404: `/admin` is not routed) and
/// answer it itself, or close the connection without processing it — never pass it through to
/// the backend as part of the POST.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_after_content_length_zero_is_not_smuggled() {
    let req = post(&["Content-Length: 0"], HIDDEN);
    let o = run_case("cl0_then_get_admin", &req).await;
    assert_no_smuggling(&o, &[("POST", "/pub/a", 0)]);
    assert_eq!(o.responses[0].echo().path, "/pub/a", "{o}");
    let statuses: Vec<u16> = o.responses.iter().map(|r| r.status).collect();
    let routed = statuses.starts_with(&[200, 404]);
    let dropped = statuses == [200] && o.closed_before_follow;
    assert!(
        routed || dropped,
        "want the pipelined GET /admin answered 404 by the gateway, or dropped with the \
         connection\n{o}"
    );
    assert_eq!(o.hits, 1, "{o}");
}

/// `GET` with a `Content-Length` body that is itself a request (the CL.0 classic): the body must
/// be forwarded framed (or refused), never left on either connection to be read as a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_with_body_holding_a_request_is_not_split() {
    let req = get(&[&format!("Content-Length: {}", HIDDEN.len())]) + HIDDEN;
    let o = run_case("get_with_request_body", &req).await;
    if o.first_phase > 0 && o.responses[0].status == 400 {
        assert_refused(&o);
        return;
    }
    assert_no_smuggling(&o, &[("GET", "/pub/a", HIDDEN.len() as u64)]);
    assert!(
        o.responses.iter().all(|r| r.status != 404),
        "the body bytes were parsed as a request by the gateway\n{o}"
    );
    assert_eq!(o.responses[0].echo().path, "/pub/a", "{o}");
}

/// `POST` whose declared `Content-Length` body is a request: forwarded whole as the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_with_body_holding_a_request_is_not_split() {
    let req = post(&[&format!("Content-Length: {}", HIDDEN.len())], HIDDEN);
    let o = run_case("post_with_request_body", &req).await;
    assert_no_smuggling(&o, &[("POST", "/pub/a", HIDDEN.len() as u64)]);
    assert!(
        o.responses.iter().all(|r| r.status != 404),
        "the body bytes were parsed as a request by the gateway\n{o}"
    );
    assert_eq!(o.responses[0].echo().path, "/pub/a", "{o}");
    let follow = o.echoes().iter().any(|e| e.path == "/pub/follow");
    assert!(
        follow || o.closed_before_follow,
        "the well-formed follow-up on the kept-alive connection was not answered\n{o}"
    );
}

/// Control: a well-formed request followed by the follow-up on one connection works, so a
/// refusal above is about the malformed bytes, not the harness.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_well_formed_keepalive_pair() {
    let o = run_case("control", &post(&["Content-Length: 5"], "hello")).await;
    let paths: Vec<(String, u64)> = o
        .echoes()
        .into_iter()
        .map(|e| (e.path, e.body_len))
        .collect();
    assert_eq!(
        paths,
        vec![("/pub/a".to_string(), 5), ("/pub/follow".to_string(), 0)],
        "{o}"
    );
    assert_no_smuggling(&o, &[("POST", "/pub/a", 5)]);
    assert_eq!(o.hits, 2, "{o}");
}
