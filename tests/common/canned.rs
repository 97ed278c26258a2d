//! [`Upstream`]: a raw HTTP/1.1 server on 127.0.0.1 serving [`Canned`] responses by path, so the
//! framing (Content-Length, chunked, close-delimited), the encoding and the write pattern (N-byte
//! pieces with flushes) are exactly what a test asks for; it can honour `Range` like a static
//! file server, and records every request it receives ([`Seen`]). Plus the body encoders
//! ([`gzip`], [`zlib`], [`raw_deflate`]).
//!
//! Every wait in here is bounded.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use super::raw_http::find;

// ---------------------------------------------------------------------------------------------
// Canned responses
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length`.
    Length,
    /// `Transfer-Encoding: chunked`, body cut into chunks of this many bytes.
    Chunked(usize),
    /// Neither: `Connection: close` and the body ends at EOF.
    Close,
}

/// One canned response.
#[derive(Clone, Debug)]
pub struct Canned {
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
    pub fn typed(content_type: &str, body: impl Into<Vec<u8>>) -> Canned {
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

    pub fn json(body: impl Into<Vec<u8>>) -> Canned {
        Self::typed("application/json", body)
    }

    pub fn status(mut self, status: u16) -> Canned {
        self.status = status;
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Canned {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn chunked(mut self, chunk: usize) -> Canned {
        self.framing = Framing::Chunked(chunk);
        self
    }

    pub fn close_delimited(mut self) -> Canned {
        self.framing = Framing::Close;
        self
    }

    pub fn with_ranges(mut self) -> Canned {
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

    pub fn pieces(mut self, piece: usize, pause: Option<Duration>) -> Canned {
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

// ---------------------------------------------------------------------------------------------
// Upstream
// ---------------------------------------------------------------------------------------------

/// A request as the upstream received it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// Names lowercased, in received order, repeats kept.
    pub headers: Vec<(String, String)>,
}

impl Seen {
    pub fn header_all(&self, name: &str) -> Vec<&str> {
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
pub struct Upstream {
    pub port: u16,
    state: Arc<UpState>,
    task: JoinHandle<()>,
}

impl Upstream {
    /// Starts on a fresh loopback port. Must be called inside a tokio runtime.
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let port = listener.local_addr().expect("local_addr").port();
        let state = Arc::new(UpState::default());
        let task = tokio::spawn(up_accept(listener, state.clone()));
        Upstream { port, state, task }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Serve `c` for requests whose path (query ignored) is exactly `path`.
    pub fn serve(&self, path: &str, c: Canned) {
        self.state
            .canned
            .lock()
            .unwrap()
            .insert(path.to_string(), c);
    }

    pub fn seen(&self, path: &str) -> Vec<Seen> {
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
// Body encodings
// ---------------------------------------------------------------------------------------------

/// `Content-Encoding: gzip`.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// `Content-Encoding: deflate` as RFC 9110 defines it: a zlib stream.
pub fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Raw deflate (no zlib wrapper), as some servers wrongly send for `deflate`.
pub fn raw_deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A response body decoded from its `Content-Encoding` (gzip, br or zstd); panics on anything
/// else or on a body that does not decode.
pub fn decode(encoding: &str, body: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    match encoding {
        "gzip" => flate2::read::GzDecoder::new(body)
            .read_to_end(&mut out)
            .map(|_| ()),
        "br" => brotli::Decompressor::new(body, 4096)
            .read_to_end(&mut out)
            .map(|_| ()),
        "zstd" => zstd::stream::read::Decoder::new(body)
            .and_then(|mut d| d.read_to_end(&mut out))
            .map(|_| ()),
        other => panic!("unexpected encoding {other}"),
    }
    .unwrap_or_else(|e| panic!("{encoding} body does not decode: {e}"));
    out
}
