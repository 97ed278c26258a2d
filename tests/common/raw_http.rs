//! Raw HTTP/1.1 clients on 127.0.0.1 that send literal bytes (no normalisation) and parse the
//! answers themselves. Three flavours, for three kinds of test:
//!
//! * [`RawConn`] / [`raw_request`] / [`raw_get`]: well-behaved exchanges (keep-alive or one-shot);
//!   a connection cut in the middle of a response is a test failure (panic).
//! * [`RawClient`] / [`exchange`] / [`parse_response`]: attack tests; a close (or silence) before
//!   a complete response is an answer (`None`), and unparsed bytes stay inspectable.
//! * [`WireConn`] / [`fetch`]: tolerates a connection cut anywhere and keeps every byte it
//!   received ([`Got`] says how the body was framed and whether it finished), so leak checks can
//!   scan what actually reached the client, framing included.
//!
//! Every wait in here is bounded.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Resp;

/// Bound on any single socket read of [`RawClient`].
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// [`WireConn`]: client-side wait for one read.
pub const WIRE_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// [`WireConn`]: client-side bound for a whole response.
pub const WIRE_RESPONSE_DEADLINE: Duration = Duration::from_secs(60);

/// Position of the first `needle` (non-empty) in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

/// `hay` contains the bytes of `needle` (non-empty).
pub fn contains(hay: &[u8], needle: &str) -> bool {
    find(hay, needle.as_bytes()).is_some()
}

// ---------------------------------------------------------------------------------------------
// RawConn: well-behaved exchanges
// ---------------------------------------------------------------------------------------------

struct RawReader {
    stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
    eof: bool,
}

impl RawReader {
    async fn fill(&mut self) -> bool {
        if self.eof {
            return false;
        }
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            self.eof = true;
            return false;
        }
        self.buf.extend_from_slice(&chunk[..n]);
        true
    }

    async fn line(&mut self) -> String {
        loop {
            if let Some(i) = self.buf[self.pos..].windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[self.pos..self.pos + i]).into_owned();
                self.pos += i + 2;
                return line;
            }
            if !self.fill().await {
                panic!(
                    "connection closed in the middle of a line; got so far: {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
            }
        }
    }

    async fn exact(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() - self.pos < n {
            if !self.fill().await {
                panic!(
                    "connection closed: wanted {n} body bytes, have {}",
                    self.buf.len() - self.pos
                );
            }
        }
        let out = self.buf[self.pos..self.pos + n].to_vec();
        self.pos += n;
        out
    }

    async fn read_to_eof(&mut self) -> Vec<u8> {
        while self.fill().await {}
        let out = self.buf[self.pos..].to_vec();
        self.pos = self.buf.len();
        out
    }
}

/// One client connection, for several sequential requests (keep-alive) sent byte-for-byte.
pub struct RawConn {
    r: RawReader,
}

impl RawConn {
    pub async fn connect(port: u16) -> RawConn {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("raw connect to 127.0.0.1:{port}: {e}"));
        RawConn {
            r: RawReader {
                stream,
                buf: Vec::new(),
                pos: 0,
                eof: false,
            },
        }
    }

    /// Sends the literal request and reads one response. `None` if the peer closed (or reset)
    /// the connection before any byte of a response. Bounded by a 10 s timeout.
    pub async fn request(&mut self, request: &str) -> Option<Resp> {
        let is_head = request.starts_with("HEAD ");
        let fut = async {
            if self.r.stream.write_all(request.as_bytes()).await.is_err() {
                return None;
            }
            let r = &mut self.r;
            if r.pos == r.buf.len() && !r.fill().await {
                return None;
            }
            let status_line = r.line().await;
            let mut parts = status_line.splitn(3, ' ');
            let _version = parts.next();
            let status: u16 = parts
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
            let mut headers = Vec::new();
            loop {
                let line = r.line().await;
                if line.is_empty() {
                    break;
                }
                if let Some((n, v)) = line.split_once(':') {
                    headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
                }
            }
            let find = |name: &str| {
                headers
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
            };
            let body = if is_head || status == 204 || status == 304 || (100..200).contains(&status)
            {
                Vec::new()
            } else if find("transfer-encoding")
                .map(|v| v.to_ascii_lowercase().contains("chunked"))
                .unwrap_or(false)
            {
                let mut body = Vec::new();
                loop {
                    let size_line = r.line().await;
                    let size_hex = size_line.split(';').next().unwrap_or("").trim();
                    let size = usize::from_str_radix(size_hex, 16)
                        .unwrap_or_else(|_| panic!("bad chunk size line {size_line:?}"));
                    if size == 0 {
                        // trailers until the empty line
                        while !r.line().await.is_empty() {}
                        break;
                    }
                    body.extend_from_slice(&r.exact(size).await);
                    let _crlf = r.exact(2).await;
                }
                body
            } else if let Some(len) = find("content-length") {
                let len: usize = len.parse().expect("content-length");
                r.exact(len).await
            } else {
                r.read_to_eof().await
            };
            Some(Resp {
                status,
                headers,
                body,
            })
        };
        tokio::time::timeout(Duration::from_secs(10), fut)
            .await
            .unwrap_or_else(|_| panic!("raw request timed out: {request:?}"))
    }

    /// True if the peer closes the connection within `limit` (reading and discarding any bytes).
    pub async fn closed_within(&mut self, limit: Duration) -> bool {
        tokio::time::timeout(limit, async { while self.r.fill().await {} })
            .await
            .is_ok()
    }
}

/// Sends the literal request bytes to 127.0.0.1:`port` on a new connection and parses one
/// HTTP/1.x response (Content-Length, chunked, or read-to-EOF bodies). Bounded by a 10 s timeout.
pub async fn raw_request(port: u16, request: &str) -> Resp {
    let mut conn = RawConn::connect(port).await;
    conn.request(request)
        .await
        .unwrap_or_else(|| panic!("connection closed without a response to {request:?}"))
}

/// `GET <target>` with the given Host, `Connection: close`, sent byte-for-byte (no normalisation).
pub async fn raw_get(port: u16, target: &str, host: &str) -> Resp {
    raw_request(
        port,
        &format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// RawClient: attack tests
// ---------------------------------------------------------------------------------------------

/// One client connection to 127.0.0.1 sending literal bytes. Every read is bounded by
/// [`READ_TIMEOUT`].
pub struct RawClient {
    stream: TcpStream,
    buf: Vec<u8>,
    eof: bool,
    /// A write failed (the peer had closed or reset the connection).
    pub write_failed: bool,
}

impl RawClient {
    pub async fn connect(port: u16) -> RawClient {
        let stream = tokio::time::timeout(READ_TIMEOUT, TcpStream::connect(("127.0.0.1", port)))
            .await
            .unwrap_or_else(|_| panic!("connect to 127.0.0.1:{port} timed out"))
            .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
        RawClient {
            stream,
            buf: Vec::new(),
            eof: false,
            write_failed: false,
        }
    }

    /// Writes `bytes` in one call; a failure is remembered in `write_failed`, not raised.
    pub async fn send(&mut self, bytes: &[u8]) {
        let w = tokio::time::timeout(READ_TIMEOUT, self.stream.write_all(bytes)).await;
        if !matches!(w, Ok(Ok(()))) {
            self.write_failed = true;
        }
    }

    async fn fill(&mut self, limit: Duration) -> bool {
        if self.eof {
            return false;
        }
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout(limit, self.stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Ok(_) => {
                self.eof = true;
                false
            }
            Err(_) => false,
        }
    }

    /// Reads one response: `None` if the connection closed (or nothing came within
    /// [`READ_TIMEOUT`]) before a complete one.
    pub async fn response(&mut self) -> Option<Resp> {
        loop {
            if let Some((r, used)) = parse_response(&self.buf, self.eof) {
                self.buf.drain(..used);
                return Some(r);
            }
            if !self.fill(READ_TIMEOUT).await {
                return parse_response(&self.buf, true).map(|(r, used)| {
                    self.buf.drain(..used);
                    r
                });
            }
        }
    }

    /// True if the peer closes the connection within `limit` (bytes read meanwhile are kept).
    pub async fn closed_within(&mut self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while !self.eof {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            self.fill(left).await;
        }
        true
    }

    /// Bytes received and not yet parsed as a response.
    pub fn leftover(&self) -> String {
        self.buf.escape_ascii().to_string()
    }
}

/// Sends `request` on a new connection and reads one response (`None`: closed without one).
pub async fn exchange(port: u16, request: &[u8]) -> Option<Resp> {
    let mut c = RawClient::connect(port).await;
    c.send(request).await;
    c.response().await
}

/// Parses one HTTP/1.x response from the start of `buf` (a close-delimited body only if `eof`).
/// Returns it and the number of bytes it used.
pub fn parse_response(buf: &[u8], eof: bool) -> Option<(Resp, usize)> {
    let head_end = find(buf, b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let get = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    let mut pos = head_end + 4;
    let body = if status == 204 || status == 304 || (100..200).contains(&status) {
        Vec::new()
    } else if get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        let mut body = Vec::new();
        loop {
            let line_end = pos + find(&buf[pos..], b"\r\n")?;
            let size_line = String::from_utf8_lossy(&buf[pos..line_end]).into_owned();
            let size = usize::from_str_radix(size_line.split(';').next()?.trim(), 16).ok()?;
            pos = line_end + 2;
            if size == 0 {
                pos += find(&buf[pos..], b"\r\n")? + 2;
                break;
            }
            body.extend_from_slice(buf.get(pos..pos + size)?);
            pos += size + 2;
        }
        body
    } else if let Some(len) = get("content-length") {
        let len: usize = len.parse().ok()?;
        let body = buf.get(pos..pos + len)?.to_vec();
        pos += len;
        body
    } else if eof {
        let body = buf[pos..].to_vec();
        pos = buf.len();
        body
    } else {
        return None;
    };
    Some((
        Resp {
            status,
            headers,
            body,
        },
        pos,
    ))
}

/// Parses as many complete responses as `buf` holds (a close-delimited body only if `eof`).
pub fn parse_responses(buf: &[u8], eof: bool) -> Vec<Resp> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some((resp, used)) = parse_response(&buf[pos..], eof) {
        out.push(resp);
        pos += used;
    }
    out
}

// ---------------------------------------------------------------------------------------------
// WireConn: every byte, cuts tolerated
// ---------------------------------------------------------------------------------------------

/// How the response body was delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    /// HEAD, 204, 304, 1xx.
    NoBody,
    Length(usize),
    Chunked,
    /// Neither Content-Length nor chunked: ends at EOF, so a cut is indistinguishable from the end.
    Close,
}

/// One response as the client saw it.
#[derive(Clone, Debug)]
pub struct Got {
    /// 0: the connection ended without a response head.
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// Payload (de-chunked), as far as it arrived.
    pub body: Vec<u8>,
    pub wire: Wire,
    /// The framing says the body ended properly (terminal chunk / full Content-Length).
    pub complete: bool,
}

impl Got {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn resp(&self) -> Resp {
        Resp {
            status: self.status,
            headers: self.headers.clone(),
            body: self.body.clone(),
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {self}"))
    }
}

/// `b` as text, shortened to its first and last 750 bytes when long.
pub fn lossy_preview(b: &[u8]) -> String {
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

/// One client connection that tolerates a cut anywhere and keeps every byte it received.
pub struct WireConn {
    stream: TcpStream,
    /// Every byte received on this connection.
    pub buf: Vec<u8>,
    pos: usize,
    eof: bool,
    timed_out: bool,
}

impl WireConn {
    pub async fn connect(port: u16) -> WireConn {
        let stream = tokio::time::timeout(
            Duration::from_secs(5),
            TcpStream::connect(("127.0.0.1", port)),
        )
        .await
        .expect("connect timed out")
        .unwrap_or_else(|e| panic!("connect 127.0.0.1:{port}: {e}"));
        WireConn {
            stream,
            buf: Vec::new(),
            pos: 0,
            eof: false,
            timed_out: false,
        }
    }

    pub async fn send(&mut self, request: &str) {
        tokio::time::timeout(WIRE_READ_TIMEOUT, self.stream.write_all(request.as_bytes()))
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
            if !self.fill(WIRE_READ_TIMEOUT).await {
                return None;
            }
        }
    }

    /// Up to `n` bytes; `true` if all `n` arrived.
    async fn take(&mut self, n: usize) -> (Vec<u8>, bool) {
        while self.buf.len() - self.pos < n {
            if !self.fill(WIRE_READ_TIMEOUT).await {
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
    pub async fn read_response(&mut self, head_request: bool) -> Got {
        tokio::time::timeout(
            WIRE_RESPONSE_DEADLINE,
            self.read_response_inner(head_request),
        )
        .await
        .unwrap_or_else(|_| panic!("response not finished within {WIRE_RESPONSE_DEADLINE:?}"))
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
            if !self.fill(WIRE_READ_TIMEOUT).await {
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
            while self.fill(WIRE_READ_TIMEOUT).await {}
            got.body = self.buf[self.pos..].to_vec();
            self.pos = self.buf.len();
            // Ambiguous by nature: the end of the body and a cut look the same.
            got.complete = !self.timed_out;
        }
        got
    }

    /// Reads until EOF (bounded); true if the peer closed.
    pub async fn drain(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && self.fill(Duration::from_secs(5)).await {}
        self.eof && !self.timed_out
    }
}

/// One request on its own connection, and everything the client received.
pub struct Fetched {
    pub got: Got,
    /// Every byte received on the connection (head, framing, and anything after the response).
    pub all: Vec<u8>,
    /// The gateway closed the connection.
    pub closed: bool,
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

pub async fn fetch(port: u16, request: &str) -> Fetched {
    let mut c = WireConn::connect(port).await;
    c.send(request).await;
    let got = c.read_response(request.starts_with("HEAD ")).await;
    let closed = c.drain().await;
    Fetched {
        got,
        all: c.buf,
        closed,
    }
}
