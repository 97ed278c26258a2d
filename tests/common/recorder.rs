//! Helpers for attack tests that must see exact bytes on both sides of the gateway.
//!
//! * [`Recorder`]: a raw-socket HTTP/1.1 backend on 127.0.0.1 that records every byte it
//!   receives (per connection) and answers every complete request `200` with a small body.
//!   Unlike the hyper [`super::Backend`] it normalises nothing: a test sees the request line,
//!   the header lines and the body framing exactly as the gateway wrote them.
//! * [`RawClient`]: one client connection sending literal bytes, with a bound on every read.
//! * [`hs256_token`]: an HS256 JWT built by hand (any JOSE header, e.g. with `crit`).
//!
//! Every wait in here is bounded.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use super::Resp;

/// Bound on any single socket read in these helpers.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The body of every answer the recorder sends.
pub const RECORDER_BODY: &str = "recorded";

// ---------------------------------------------------------------------------------------------
// Recorder
// ---------------------------------------------------------------------------------------------

/// One complete request as the recorder received it.
#[derive(Debug, Clone)]
pub struct RecRequest {
    /// Index of the upstream connection it came on.
    pub conn: usize,
    pub method: String,
    /// The request-target exactly as received.
    pub target: String,
    pub version: String,
    /// Header lines as received: name (original case) and value (trimmed).
    pub headers: Vec<(String, String)>,
    /// The head exactly as received (request line through the empty line).
    pub head: Vec<u8>,
    /// The de-framed body (chunked decoded, or the `Content-Length` bytes).
    pub body: Vec<u8>,
}

impl RecRequest {
    /// Every value of header `name`, compared case-insensitively.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The header lines whose name is `name` once lower-cased with `_` and `.` read as `-`
    /// (how CGI/PHP-style backends fold names).
    pub fn header_family(&self, name: &str) -> Vec<(&str, &str)> {
        let want = fold_header_name(name);
        self.headers
            .iter()
            .filter(|(n, _)| fold_header_name(n) == want)
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect()
    }
}

/// `X_User.Id` -> `x-user-id`.
pub fn fold_header_name(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '_' | '.' => '-',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

#[derive(Default)]
struct RecState {
    /// Bytes received, one entry per upstream connection (emptied by `clear`).
    conns: Vec<Vec<u8>>,
    requests: Vec<RecRequest>,
}

/// A recording HTTP/1.1 backend on 127.0.0.1 (see the module docs). Stopped on drop.
pub struct Recorder {
    port: u16,
    state: Arc<Mutex<RecState>>,
    task: JoinHandle<()>,
}

impl Recorder {
    /// Starts on a fresh loopback port. Must be called inside a tokio runtime.
    pub async fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind recorder");
        let port = listener.local_addr().expect("recorder addr").port();
        let state: Arc<Mutex<RecState>> = Arc::default();
        let st = state.clone();
        let task = tokio::spawn(async move {
            // Owned here: aborting the accept task drops every connection task.
            let mut conns = JoinSet::new();
            loop {
                while conns.try_join_next().is_some() {}
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let idx = {
                    let mut s = st.lock().unwrap();
                    s.conns.push(Vec::new());
                    s.conns.len() - 1
                };
                conns.spawn(serve_conn(stream, idx, st.clone()));
            }
        });
        Recorder { port, state, task }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `"127.0.0.1:<port>"`
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Forgets everything received so far (open connections stay open).
    pub fn clear(&self) {
        let mut s = self.state.lock().unwrap();
        s.conns.iter_mut().for_each(Vec::clear);
        s.requests.clear();
    }

    /// Complete requests received since the last `clear`.
    pub fn requests(&self) -> Vec<RecRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Bytes received since the last `clear`, per connection (connections with none left out).
    pub fn raw(&self) -> Vec<Vec<u8>> {
        self.state
            .lock()
            .unwrap()
            .conns
            .iter()
            .filter(|c| !c.is_empty())
            .cloned()
            .collect()
    }

    /// Number of bytes received since the last `clear`, all connections together.
    pub fn byte_count(&self) -> usize {
        self.state.lock().unwrap().conns.iter().map(Vec::len).sum()
    }

    /// True if any connection received `needle` (case-sensitive) since the last `clear`.
    pub fn saw(&self, needle: &[u8]) -> bool {
        self.raw()
            .iter()
            .any(|c| c.windows(needle.len()).any(|w| w == needle))
    }

    /// Everything received since the last `clear`, escaped, one line per connection.
    pub fn dump(&self) -> String {
        let raw = self.raw();
        if raw.is_empty() {
            return "  (backend received nothing)".to_string();
        }
        raw.iter()
            .enumerate()
            .map(|(i, c)| format!("  upstream conn #{i}: \"{}\"", c.escape_ascii()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads more bytes into `buf`, recording them. False on EOF, error, or a minute without a byte
/// (an idle pooled upstream connection is then let go).
async fn fill(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    idx: usize,
    st: &Arc<Mutex<RecState>>,
) -> bool {
    let mut chunk = [0u8; 8192];
    match tokio::time::timeout(READ_TIMEOUT * 12, stream.read(&mut chunk)).await {
        Ok(Ok(n)) if n > 0 => {
            buf.extend_from_slice(&chunk[..n]);
            st.lock().unwrap().conns[idx].extend_from_slice(&chunk[..n]);
            true
        }
        _ => false,
    }
}

/// Serves one upstream connection: parse a request, record it, answer 200, repeat. Anything it
/// cannot frame ends the connection (the bytes are still recorded).
async fn serve_conn(mut stream: TcpStream, idx: usize, st: Arc<Mutex<RecState>>) {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        // Head.
        let head_end = loop {
            if let Some(p) = find(&buf, b"\r\n\r\n") {
                break p + 4;
            }
            if !fill(&mut stream, &mut buf, idx, &st).await {
                return;
            }
        };
        let head = buf[..head_end].to_vec();
        buf.drain(..head_end);
        let text = String::from_utf8_lossy(&head).into_owned();
        let mut lines = text.split("\r\n");
        let request_line = lines.next().unwrap_or_default().to_string();
        let mut parts = request_line.splitn(3, ' ');
        let method = parts.next().unwrap_or_default().to_string();
        let target = parts.next().unwrap_or_default().to_string();
        let version = parts.next().unwrap_or_default().to_string();
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .map(|l| match l.split_once(':') {
                Some((n, v)) => (n.to_string(), v.trim().to_string()),
                None => (l.to_string(), String::new()),
            })
            .collect();
        let value = |name: &str| {
            headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
                .collect::<Vec<_>>()
        };
        let chunked = value("transfer-encoding")
            .iter()
            .any(|v| v.to_ascii_lowercase().contains("chunked"));
        let body = if chunked {
            let mut body = Vec::new();
            loop {
                let line_end = loop {
                    if let Some(p) = find(&buf, b"\r\n") {
                        break p;
                    }
                    if !fill(&mut stream, &mut buf, idx, &st).await {
                        return;
                    }
                };
                let line = String::from_utf8_lossy(&buf[..line_end]).into_owned();
                buf.drain(..line_end + 2);
                let hex = line.split(';').next().unwrap_or_default().trim();
                let Ok(size) = usize::from_str_radix(hex, 16) else {
                    return; // unframeable: hang up
                };
                if size == 0 {
                    // Trailers until the empty line.
                    loop {
                        let end = loop {
                            if let Some(p) = find(&buf, b"\r\n") {
                                break p;
                            }
                            if !fill(&mut stream, &mut buf, idx, &st).await {
                                return;
                            }
                        };
                        buf.drain(..end + 2);
                        if end == 0 {
                            break;
                        }
                    }
                    break body;
                }
                while buf.len() < size + 2 {
                    if !fill(&mut stream, &mut buf, idx, &st).await {
                        return;
                    }
                }
                body.extend_from_slice(&buf[..size]);
                buf.drain(..size + 2);
            }
        } else {
            let cls = value("content-length");
            let mut lens = cls
                .iter()
                .flat_map(|v| v.split(','))
                .map(|v| v.trim().parse::<usize>());
            let len = match lens.next() {
                None => 0,
                Some(Ok(n)) if lens.all(|m| m == Ok(n)) => n,
                _ => return, // unframeable: hang up
            };
            while buf.len() < len {
                if !fill(&mut stream, &mut buf, idx, &st).await {
                    return;
                }
            }
            buf.drain(..len).collect()
        };
        st.lock().unwrap().requests.push(RecRequest {
            conn: idx,
            method: method.clone(),
            target,
            version,
            headers,
            head,
            body,
        });
        let body = if method == "HEAD" { "" } else { RECORDER_BODY };
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Recorder: 1\r\n\r\n{body}",
            RECORDER_BODY.len()
        );
        if stream.write_all(resp.as_bytes()).await.is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// RawClient
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

// ---------------------------------------------------------------------------------------------
// Hand-built JWTs
// ---------------------------------------------------------------------------------------------

/// Unpadded base64url (RFC 7515 §2).
pub fn b64url(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &x)| acc | (x as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// HMAC-SHA256 (RFC 2104) from the SHA-256 the crate already depends on.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// `b64(header).b64(payload).b64(HMAC-SHA256(secret, signing input))`, with the JOSE header and
/// the claims given as literal JSON text.
pub fn hs256_token(secret: &str, header_json: &str, claims_json: &str) -> String {
    let input = format!(
        "{}.{}",
        b64url(header_json.as_bytes()),
        b64url(claims_json.as_bytes())
    );
    let sig = hmac_sha256(secret.as_bytes(), input.as_bytes());
    format!("{input}.{}", b64url(&sig))
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}
