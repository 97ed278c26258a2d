//! Helpers for attack tests that must see exact bytes on both sides of the gateway.
//!
//! * [`Recorder`]: a raw-socket HTTP/1.1 backend on 127.0.0.1 that records every byte it
//!   receives (per connection) and answers every complete request `200` with a small body.
//!   Unlike the hyper [`super::Backend`] it normalises nothing: a test sees the request line,
//!   the header lines and the body framing exactly as the gateway wrote them.
//! * [`Tap`]: a TCP relay in front of a real backend that records every byte the gateway sends
//!   upstream, per connection (the backend still answers).
//!
//! The clients that send literal bytes are in [`super::raw_http`], hand-built JWTs in
//! [`super::tokens`].
//!
//! Every wait in here is bounded.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use super::raw_http::find;

/// An idle upstream connection (e.g. pooled by the gateway) is let go after this long.
const IDLE_CONN: Duration = Duration::from_secs(60);

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

/// `X_User.Id`, `X~User+Id` -> `x-user-id`: every byte but a letter or digit is a separator to
/// some CGI-style server (lighttpd maps them all to `_`).
pub fn fold_header_name(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            c if c.is_ascii_alphanumeric() => c.to_ascii_lowercase(),
            _ => '-',
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

/// Reads more bytes into `buf`, recording them. False on EOF, error, or a minute without a byte
/// (an idle pooled upstream connection is then let go).
async fn fill(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    idx: usize,
    st: &Arc<Mutex<RecState>>,
) -> bool {
    let mut chunk = [0u8; 8192];
    match tokio::time::timeout(IDLE_CONN, stream.read(&mut chunk)).await {
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
// Tap: a recording TCP relay
// ---------------------------------------------------------------------------------------------

/// Relays 127.0.0.1:`port` to the backend and records the bytes sent upstream, per connection.
pub struct Tap {
    pub port: u16,
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
    task: JoinHandle<()>,
}

impl Tap {
    /// Starts on a fresh loopback port, relaying to 127.0.0.1:`target`.
    pub async fn start(target: u16) -> Tap {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind tap");
        let port = listener.local_addr().expect("tap addr").port();
        let seen: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let rec = seen.clone();
        let task = tokio::spawn(async move {
            // Owned here: aborting the accept task drops every relay.
            let mut relays = JoinSet::new();
            loop {
                while relays.try_join_next().is_some() {}
                let Ok((down, _)) = listener.accept().await else {
                    continue;
                };
                let idx = {
                    let mut s = rec.lock().unwrap();
                    s.push(Vec::new());
                    s.len() - 1
                };
                let rec = rec.clone();
                relays.spawn(async move {
                    let Ok(up) = TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    let (mut dr, mut dw) = down.into_split();
                    let (mut ur, mut uw) = up.into_split();
                    let to_up = async {
                        let mut buf = [0u8; 8192];
                        loop {
                            match dr.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    rec.lock().unwrap()[idx].extend_from_slice(&buf[..n]);
                                    if uw.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        let _ = uw.shutdown().await;
                    };
                    let to_down = async {
                        let _ = tokio::io::copy(&mut ur, &mut dw).await;
                        let _ = dw.shutdown().await;
                    };
                    tokio::join!(to_up, to_down);
                });
            }
        });
        Tap { port, seen, task }
    }

    /// Everything the gateway sent upstream, one escaped string per upstream connection.
    pub fn upstream(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|b| b.escape_ascii().to_string())
            .collect()
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.task.abort();
    }
}
