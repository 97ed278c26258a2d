//! Response sanitising (`response_json`, DESIGN.md "Response sanitising", issue 5): JSON field
//! stripping end to end through the real binary.
//!
//! * [`Upstream`]: a raw HTTP/1.1 server on 127.0.0.1 serving canned responses by path, so the
//!   framing (Content-Length, chunked, close-delimited), the encoding and the write pattern (N-byte
//!   pieces with flushes) are exactly what a test asks for. It records every request it receives.
//! * [`Conn`]: a raw client that tolerates a cut connection and keeps every byte it received, so
//!   the leak checks scan what actually reached the client, framing included.
//!
//! Fail-closed cases put a marker (`SECRET-MARKER`) in a *removed* field before the point of
//! failure and another one (`AFTER-ERROR-MARKER`) in a kept field after it: neither may ever
//! appear in the client's bytes, and whatever body did arrive must be a prefix of the stripped
//! form.
//!
//! The last section tries ways around the stripper (Range requests, HTTP/1.0 clients, bodies at
//! the parser's limits).

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// Put in removed fields: must never reach a client.
const MARKER: &str = "SECRET-MARKER";
/// Put in a kept field after a syntax error: bytes after the point of failure must not arrive.
const AFTER: &str = "AFTER-ERROR-MARKER";

/// Client-side wait for one read.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Client-side bound for a whole response.
const RESPONSE_DEADLINE: Duration = Duration::from_secs(60);

const MIB: usize = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Canned upstream
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// `Content-Length`.
    Length,
    /// `Transfer-Encoding: chunked`, body cut into chunks of this many bytes.
    Chunked(usize),
    /// Neither: `Connection: close` and the body ends at EOF.
    Close,
}

/// One canned response.
#[derive(Clone, Debug)]
struct Canned {
    status: u16,
    headers: Vec<(String, String)>,
    body: Arc<Vec<u8>>,
    framing: Framing,
    /// The wire bytes (head included) are written in pieces of this size, each flushed.
    piece: usize,
    /// Pause after every piece.
    pause: Option<Duration>,
    /// Honour `Range: bytes=…` like a static file server (206, multipart/byteranges for several).
    ranges: bool,
}

impl Canned {
    fn typed(content_type: &str, body: impl Into<Vec<u8>>) -> Canned {
        Canned {
            status: 200,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: Arc::new(body.into()),
            framing: Framing::Length,
            piece: 64 * 1024,
            pause: None,
            ranges: false,
        }
    }

    fn json(body: impl Into<Vec<u8>>) -> Canned {
        Self::typed("application/json", body)
    }

    fn status(mut self, status: u16) -> Canned {
        self.status = status;
        self
    }

    fn header(mut self, name: &str, value: &str) -> Canned {
        self.headers.push((name.into(), value.into()));
        self
    }

    fn chunked(mut self, chunk: usize) -> Canned {
        self.framing = Framing::Chunked(chunk);
        self
    }

    fn close_delimited(mut self) -> Canned {
        self.framing = Framing::Close;
        self
    }

    fn with_ranges(mut self) -> Canned {
        self.ranges = true;
        self
    }

    /// The 206 answer to `Range: <range>` (`bytes=s-e[,s-e…]`), if this response honours ranges.
    fn ranged(&self, range: Option<&str>) -> Option<Canned> {
        let spec = range?.strip_prefix("bytes=")?;
        if !self.ranges {
            return None;
        }
        let len = self.body.len();
        let ranges: Vec<(usize, usize)> = spec
            .split(',')
            .filter_map(|r| {
                let (a, b) = r.trim().split_once('-')?;
                let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
                (a <= b && b < len).then_some((a, b))
            })
            .collect();
        let ct = self
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let mut out = self.clone();
        out.status = 206;
        match ranges.as_slice() {
            [] => return None,
            [(a, b)] => {
                out.headers
                    .push(("Content-Range".into(), format!("bytes {a}-{b}/{len}")));
                out.body = Arc::new(self.body[*a..=*b].to_vec());
            }
            several => {
                let mut body = Vec::new();
                for (a, b) in several {
                    body.extend_from_slice(
                        format!(
                            "--RANGE-BOUNDARY\r\nContent-Type: {ct}\r\nContent-Range: bytes {a}-{b}/{len}\r\n\r\n"
                        )
                        .as_bytes(),
                    );
                    body.extend_from_slice(&self.body[*a..=*b]);
                    body.extend_from_slice(b"\r\n");
                }
                body.extend_from_slice(b"--RANGE-BOUNDARY--\r\n");
                out.headers = vec![(
                    "Content-Type".into(),
                    "multipart/byteranges; boundary=RANGE-BOUNDARY".into(),
                )];
                out.body = Arc::new(body);
            }
        }
        Some(out)
    }

    fn pieces(mut self, piece: usize, pause: Option<Duration>) -> Canned {
        self.piece = piece.max(1);
        self.pause = pause;
        self
    }

    /// The response as it goes on the wire (`head_only` for HEAD requests).
    fn render(&self, head_only: bool) -> Vec<u8> {
        let bodyless_status = matches!(self.status, 204 | 304) || self.status < 200;
        let mut w = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status)).into_bytes();
        for (n, v) in &self.headers {
            w.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        if !bodyless_status {
            match self.framing {
                Framing::Length => w.extend_from_slice(
                    format!("Content-Length: {}\r\n", self.body.len()).as_bytes(),
                ),
                Framing::Chunked(_) => w.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
                Framing::Close => w.extend_from_slice(b"Connection: close\r\n"),
            }
        }
        w.extend_from_slice(b"\r\n");
        if head_only || bodyless_status {
            return w;
        }
        match self.framing {
            Framing::Length | Framing::Close => w.extend_from_slice(&self.body),
            Framing::Chunked(size) => {
                for c in self.body.chunks(size.max(1)) {
                    w.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                    w.extend_from_slice(c);
                    w.extend_from_slice(b"\r\n");
                }
                w.extend_from_slice(b"0\r\n\r\n");
            }
        }
        w
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        304 => "Not Modified",
        404 => "Not Found",
        422 => "Unprocessable Entity",
        500 => "Internal Server Error",
        _ => "Whatever",
    }
}

/// A request as the upstream received it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    /// Names lowercased, in received order, repeats kept.
    headers: Vec<(String, String)>,
}

impl Seen {
    fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

#[derive(Default)]
struct UpState {
    canned: Mutex<HashMap<String, Canned>>,
    seen: Mutex<Vec<Seen>>,
}

/// Raw HTTP/1.1 upstream on 127.0.0.1 (keep-alive, except for close-delimited responses).
struct Upstream {
    port: u16,
    state: Arc<UpState>,
    task: JoinHandle<()>,
}

impl Upstream {
    async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let port = listener.local_addr().expect("local_addr").port();
        let state = Arc::new(UpState::default());
        let task = tokio::spawn(up_accept(listener, state.clone()));
        Upstream { port, state, task }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Serve `c` for requests whose path (query ignored) is exactly `path`.
    fn serve(&self, path: &str, c: Canned) {
        self.state
            .canned
            .lock()
            .unwrap()
            .insert(path.to_string(), c);
    }

    fn seen(&self, path: &str) -> Vec<Seen> {
        self.state
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path == path)
            .cloned()
            .collect()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn up_accept(listener: TcpListener, state: Arc<UpState>) {
    // Owned by this future: aborting the accept task aborts every connection task.
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        match listener.accept().await {
            Ok((stream, _)) => {
                conns.spawn(up_conn(stream, state.clone()));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

fn contains(hay: &[u8], needle: &str) -> bool {
    find(hay, needle.as_bytes()).is_some()
}

async fn up_read(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut tmp = [0u8; 8192];
    match tokio::time::timeout(Duration::from_secs(60), s.read(&mut tmp)).await {
        Ok(Ok(n)) if n > 0 => {
            buf.extend_from_slice(&tmp[..n]);
            true
        }
        _ => false,
    }
}

async fn up_conn(mut s: TcpStream, state: Arc<UpState>) {
    let _ = s.set_nodelay(true);
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i;
            }
            if buf.len() > 64 * 1024 || !up_read(&mut s, &mut buf).await {
                return;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let mut rl = lines.next().unwrap_or("").split(' ');
        let method = rl.next().unwrap_or("").to_string();
        let target = rl.next().unwrap_or("").to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        if headers
            .iter()
            .any(|(n, v)| n == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"))
        {
            return; // not needed by these tests
        }
        let body_len: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < body_len {
            if !up_read(&mut s, &mut buf).await {
                return;
            }
        }
        buf.drain(..body_len);
        let path = target.split('?').next().unwrap_or("").to_string();
        let range = headers
            .iter()
            .find(|(n, _)| n == "range")
            .map(|(_, v)| v.clone());
        let close = headers
            .iter()
            .any(|(n, v)| n == "connection" && v.eq_ignore_ascii_case("close"));
        state.seen.lock().unwrap().push(Seen {
            method: method.clone(),
            path: path.clone(),
            headers,
        });
        let canned = state.canned.lock().unwrap().get(&path).cloned();
        let canned = canned.unwrap_or_else(|| {
            Canned::typed("text/plain", format!("no canned response for {path}")).status(404)
        });
        let canned = canned.ranged(range.as_deref()).unwrap_or(canned);
        let wire = canned.render(method == "HEAD");
        for piece in wire.chunks(canned.piece) {
            if s.write_all(piece).await.is_err() || s.flush().await.is_err() {
                return;
            }
            if let Some(p) = canned.pause {
                tokio::time::sleep(p).await;
            }
        }
        if close || canned.framing == Framing::Close {
            let _ = s.shutdown().await;
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Raw client
// ---------------------------------------------------------------------------------------------

/// How the response body was delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wire {
    /// HEAD, 204, 304, 1xx.
    NoBody,
    Length(usize),
    Chunked,
    /// Neither Content-Length nor chunked: ends at EOF, so a cut is indistinguishable from the end.
    Close,
}

/// One response as the client saw it.
#[derive(Clone, Debug)]
struct Got {
    /// 0: the connection ended without a response head.
    status: u16,
    headers: Vec<(String, String)>,
    /// Payload (de-chunked), as far as it arrived.
    body: Vec<u8>,
    wire: Wire,
    /// The framing says the body ended properly (terminal chunk / full Content-Length).
    complete: bool,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn resp(&self) -> Resp {
        Resp {
            status: self.status,
            headers: self.headers.clone(),
            body: self.body.clone(),
        }
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {self}"))
    }
}

fn lossy_preview(b: &[u8]) -> String {
    const MAX: usize = 1500;
    if b.len() <= MAX {
        String::from_utf8_lossy(b).into_owned()
    } else {
        format!(
            "{}… ({} bytes in all) …{}",
            String::from_utf8_lossy(&b[..MAX / 2]),
            b.len(),
            String::from_utf8_lossy(&b[b.len() - MAX / 2..])
        )
    }
}

impl std::fmt::Display for Got {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "HTTP {} ({:?}, complete: {})",
            self.status, self.wire, self.complete
        )?;
        for (n, v) in &self.headers {
            write!(f, "\n  {n}: {v}")?;
        }
        write!(f, "\n  body: {}", lossy_preview(&self.body))
    }
}

struct Conn {
    stream: TcpStream,
    /// Every byte received on this connection.
    buf: Vec<u8>,
    pos: usize,
    eof: bool,
    timed_out: bool,
}

impl Conn {
    async fn connect(port: u16) -> Conn {
        let stream = tokio::time::timeout(
            Duration::from_secs(5),
            TcpStream::connect(("127.0.0.1", port)),
        )
        .await
        .expect("connect timed out")
        .unwrap_or_else(|e| panic!("connect 127.0.0.1:{port}: {e}"));
        Conn {
            stream,
            buf: Vec::new(),
            pos: 0,
            eof: false,
            timed_out: false,
        }
    }

    async fn send(&mut self, request: &str) {
        tokio::time::timeout(READ_TIMEOUT, self.stream.write_all(request.as_bytes()))
            .await
            .expect("request write timed out")
            .expect("request write");
    }

    /// Reads more bytes; false at EOF, on an error (reset) or after `limit` without data.
    async fn fill(&mut self, limit: Duration) -> bool {
        if self.eof {
            return false;
        }
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout(limit, self.stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                self.eof = true;
                false
            }
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(_) => {
                self.eof = true;
                self.timed_out = true;
                false
            }
        }
    }

    async fn line(&mut self) -> Option<String> {
        loop {
            if let Some(i) = find(&self.buf[self.pos..], b"\r\n") {
                let l = String::from_utf8_lossy(&self.buf[self.pos..self.pos + i]).into_owned();
                self.pos += i + 2;
                return Some(l);
            }
            if !self.fill(READ_TIMEOUT).await {
                return None;
            }
        }
    }

    /// Up to `n` bytes; `true` if all `n` arrived.
    async fn take(&mut self, n: usize) -> (Vec<u8>, bool) {
        while self.buf.len() - self.pos < n {
            if !self.fill(READ_TIMEOUT).await {
                let out = self.buf[self.pos..].to_vec();
                self.pos = self.buf.len();
                return (out, false);
            }
        }
        let out = self.buf[self.pos..self.pos + n].to_vec();
        self.pos += n;
        (out, true)
    }

    /// Reads one response, tolerating a connection that ends anywhere.
    async fn read_response(&mut self, head_request: bool) -> Got {
        tokio::time::timeout(RESPONSE_DEADLINE, self.read_response_inner(head_request))
            .await
            .unwrap_or_else(|_| panic!("response not finished within {RESPONSE_DEADLINE:?}"))
    }

    async fn read_response_inner(&mut self, head_request: bool) -> Got {
        let mut got = Got {
            status: 0,
            headers: Vec::new(),
            body: Vec::new(),
            wire: Wire::NoBody,
            complete: false,
        };
        let head_end = loop {
            if let Some(i) = find(&self.buf[self.pos..], b"\r\n\r\n") {
                break self.pos + i;
            }
            if !self.fill(READ_TIMEOUT).await {
                return got;
            }
        };
        let head = String::from_utf8_lossy(&self.buf[self.pos..head_end]).into_owned();
        self.pos = head_end + 4;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        got.status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        got.headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let chunked = got
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let length = got
            .header("content-length")
            .map(|v| v.parse::<usize>().expect("content-length"));
        if head_request || matches!(got.status, 204 | 304) || got.status < 200 {
            got.wire = Wire::NoBody;
            got.complete = true;
        } else if chunked {
            got.wire = Wire::Chunked;
            got.complete = loop {
                let Some(size_line) = self.line().await else {
                    break false;
                };
                let hex = size_line.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(hex, 16)
                    .unwrap_or_else(|_| panic!("bad chunk size line {size_line:?}"));
                if size == 0 {
                    // Trailers until the empty line.
                    break loop {
                        match self.line().await {
                            Some(l) if l.is_empty() => break true,
                            Some(_) => continue,
                            None => break false,
                        }
                    };
                }
                let (data, full) = self.take(size).await;
                got.body.extend_from_slice(&data);
                if !full {
                    break false;
                }
                let (crlf, full) = self.take(2).await;
                if !full {
                    break false;
                }
                assert_eq!(crlf, b"\r\n", "chunk not followed by CRLF");
            };
        } else if let Some(n) = length {
            got.wire = Wire::Length(n);
            let (data, full) = self.take(n).await;
            got.body = data;
            got.complete = full;
        } else {
            got.wire = Wire::Close;
            while self.fill(READ_TIMEOUT).await {}
            got.body = self.buf[self.pos..].to_vec();
            self.pos = self.buf.len();
            // Ambiguous by nature: the end of the body and a cut look the same.
            got.complete = !self.timed_out;
        }
        got
    }

    /// Reads until EOF (bounded); true if the peer closed.
    async fn drain(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && self.fill(Duration::from_secs(5)).await {}
        self.eof && !self.timed_out
    }
}

/// One request on its own connection, and everything the client received.
struct Fetched {
    got: Got,
    /// Every byte received on the connection (head, framing, and anything after the response).
    all: Vec<u8>,
    /// The gateway closed the connection.
    closed: bool,
}

impl std::fmt::Display for Fetched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}\n  connection closed: {}\n  raw bytes received: {}",
            self.got,
            self.closed,
            lossy_preview(&self.all)
        )
    }
}

async fn fetch(port: u16, request: &str) -> Fetched {
    let mut c = Conn::connect(port).await;
    c.send(request).await;
    let got = c.read_response(request.starts_with("HEAD ")).await;
    let closed = c.drain().await;
    Fetched {
        got,
        all: c.buf,
        closed,
    }
}

fn get(path: &str) -> String {
    req("GET", path, "")
}

/// `extra`: header lines, each ending in `\r\n`.
fn req(method: &str, path: &str, extra: &str) -> String {
    format!("{method} {path} HTTP/1.1\r\nHost: gw.test\r\n{extra}Connection: close\r\n\r\n")
}

// ---------------------------------------------------------------------------------------------
// Gateway config and assertions
// ---------------------------------------------------------------------------------------------

/// One route to upstream `up` (no prefix stripping: the upstream sees the client's path).
/// `extra`: more route keys, each a line indented by 4 spaces.
fn route(name: &str, prefix: &str, extra: &[&str]) -> String {
    let mut s =
        format!("  - name: {name}\n    match: {{path_prefix: {prefix}}}\n    upstream: up\n");
    for line in extra {
        s.push_str("    ");
        s.push_str(line);
        s.push('\n');
    }
    s
}

async fn gateway(up: &Upstream, routes: &[String]) -> Gateway {
    let body = format!(
        "upstreams:\n  up:\n    backends: [\"{}\"]\n    retries: 0\n\nroutes:\n{}",
        up.addr(),
        routes.concat()
    );
    Gateway::start(&body).await
}

fn parse(json: &str) -> Value {
    serde_json::from_str(json).unwrap_or_else(|e| panic!("test JSON does not parse ({e}): {json}"))
}

/// A sanitised 200: complete, chunked, no Content-Length / Content-Encoding, body == `expected`,
/// and the marker nowhere in the received bytes.
#[track_caller]
fn assert_stripped(f: &Fetched, expected: &Value, what: &str) {
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
fn assert_failed_closed(f: &Fetched, allowed: &[u8], secrets: &[&str], what: &str) {
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
async fn sanitize_failures(gw: &Gateway, route: &str, reason: &str) -> f64 {
    let m = gw.admin_get("/metrics").await;
    assert_eq!(m.status, 200, "/metrics: {m}");
    let (r1, r2) = (format!("route=\"{route}\""), format!("reason=\"{reason}\""));
    m.text()
        .lines()
        .filter(|l| l.starts_with("tollgate_response_sanitize_failures_total{"))
        .filter(|l| l.contains(&r1) && l.contains(&r2))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits (≤ 5 s) for the counter to reach `want`; returns the last value seen.
async fn wait_failures(gw: &Gateway, route: &str, reason: &str, want: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v = sanitize_failures(gw, route, reason).await;
        if v >= want || Instant::now() >= deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// `Content-Encoding: deflate` as RFC 9110 defines it: a zlib stream.
fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Raw deflate (no zlib wrapper), as some servers wrongly send for `deflate`.
fn raw_deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A compact JSON document of at least `target` bytes with the marker in removed fields all
/// along, and its stripped form under `remove: [secret, "data[].secret"]`:
/// `{"secret":M,"data":[{"id":0,"secret":M,"pad":"xx…"},…],"tail":"end"}`.
fn big_doc(target: usize) -> (Vec<u8>, Vec<u8>) {
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

const BIG_ROUTE: &str = "response_json: {remove: [secret, \"data[].secret\"]}";

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
// Framing and encodings
// ---------------------------------------------------------------------------------------------

/// A document exercising most of the tokenizer, and its stripped form.
fn rich_doc() -> (String, Value) {
    let doc = format!(
        r#"{{"id":7,"internal_cost":31.2e-1,"items":[{{"sku":"A\"1","supplier_id":"{MARKER}"}},{{"sku":"\u00e9 é","supplier_id":-0.5e-3,"qty":10}}],"t":true,"f":false,"n":null,"debug":{{"a":[{{"b":"{MARKER}"}}],"c":"}}]\\\""}},"nested":{{"deep":{{"deeper":[1,2.5,-3e+2]}}}},"end":"✓"}}"#
    );
    let expected = parse(
        r#"{"id":7,"items":[{"sku":"A\"1"},{"sku":"\u00e9 é","qty":10}],"t":true,"f":false,"n":null,"nested":{"deep":{"deeper":[1,2.5,-3e+2]}},"end":"✓"}"#,
    );
    (doc, expected)
}

const RICH_ROUTE: &str = "response_json: {remove: [internal_cost, \"items[].supplier_id\", debug]}";

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
    let mut c = Conn::connect(gw.port).await;
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
    let mut c = Conn::connect(gw.port).await;
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
    let mut c = Conn::connect(gw.port).await;
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
