//! Integration-test harness for the `tollgate` binary.
//!
//! * [`Backend`]: a real HTTP/1.1 echo server (hyper 1) on 127.0.0.1, which can be killed (listener
//!   closed, live connections dropped, connects refused) and revived on the same port.
//! * [`Gateway`]: the real `tollgate` binary started with a generated YAML config in a tempdir,
//!   free ports for the public and admin listeners, killed on drop.
//! * [`check`] / [`run_once`]: `tollgate check` / `tollgate run` on a config, with bounded waits.
//! * [`Resp`]: one response type for both reqwest and the raw-TCP helper ([`raw_request`]).
//!
//! Every wait in here is bounded in count and time.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

pub mod logged;
pub mod recorder;
#[allow(unused_imports)]
pub use logged::{json_lines, LoggedGateway};

/// Path of the binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_tollgate");

/// How long a backend sleeps before answering a request whose path starts with `/slow`.
pub const DEFAULT_SLOW_DELAY: Duration = Duration::from_secs(3);

/// Response header every backend sets; used to test `response_headers.remove`.
pub const BACKEND_SECRET_HEADER: &str = "x-internal-secret";

// ---------------------------------------------------------------------------------------------
// Backend
// ---------------------------------------------------------------------------------------------

struct BackendState {
    name: String,
    healthy: AtomicBool,
    /// Requests other than `GET /health`.
    hits: AtomicUsize,
    /// `GET /health` requests (health checks).
    health_hits: AtomicUsize,
    /// Largest request body received completely.
    max_body: AtomicUsize,
    slow_delay: Duration,
    /// Non-zero: every request but `GET /health` is answered with this status.
    fail_status: std::sync::atomic::AtomicU16,
}

/// A named HTTP/1.1 echo server on 127.0.0.1.
///
/// Every request gets `200` with JSON
/// `{"backend":name,"method":..,"path":"<path+query as received>","headers":{..},"body_len":n}`
/// (header names lowercased, repeated headers joined with `", "`), except `GET /health` which is
/// `200 ok` (or `503` after `set_healthy(false)`). Every response has `X-Backend: <name>`. Paths starting with `/slow` sleep
/// `slow_delay` first; paths starting with `/reset` drop the connection without an answer;
/// after `set_fail_status(Some(code))` every other request is answered `code`.
pub struct Backend {
    state: Arc<BackendState>,
    port: u16,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Backend {
    /// Starts a backend on a fresh port. Must be called inside a (multi-thread) tokio runtime.
    pub async fn start(name: &str) -> Backend {
        Self::start_with_delay(name, DEFAULT_SLOW_DELAY).await
    }

    pub async fn start_with_delay(name: &str, slow_delay: Duration) -> Backend {
        let state = Arc::new(BackendState {
            name: name.to_string(),
            healthy: AtomicBool::new(true),
            hits: AtomicUsize::new(0),
            health_hits: AtomicUsize::new(0),
            max_body: AtomicUsize::new(0),
            slow_delay,
            fail_status: std::sync::atomic::AtomicU16::new(0),
        });
        let listener = bind_listener(0).await.expect("bind backend listener");
        let port = listener.local_addr().expect("local_addr").port();
        let task = tokio::spawn(accept_loop(listener, state.clone()));
        Backend {
            state,
            port,
            task: Mutex::new(Some(task)),
        }
    }

    pub fn name(&self) -> &str {
        &self.state.name
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `"127.0.0.1:<port>"`
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Requests received other than `GET /health`.
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// `GET /health` requests received.
    pub fn health_hits(&self) -> usize {
        self.state.health_hits.load(Ordering::SeqCst)
    }

    /// The largest request body this backend received completely.
    pub fn max_body_len(&self) -> usize {
        self.state.max_body.load(Ordering::SeqCst)
    }

    /// `Some(code)`: answer every request but `GET /health` with `code` (still counted in hits).
    pub fn set_fail_status(&self, status: Option<u16>) {
        self.state
            .fail_status
            .store(status.unwrap_or(0), Ordering::SeqCst);
    }

    /// `false`: `GET /health` answers 503 (the server keeps serving everything else).
    pub fn set_healthy(&self, healthy: bool) {
        self.state.healthy.store(healthy, Ordering::SeqCst);
    }

    pub fn is_running(&self) -> bool {
        self.task.lock().unwrap().is_some()
    }

    /// Stops accepting, closes the listener (connects are refused from now on) and drops every
    /// open connection. Returns once the listener is closed.
    pub async fn kill(&self) {
        let task = self.task.lock().unwrap().take();
        if let Some(task) = task {
            task.abort();
            // Dropping the accept future drops the listener and the JoinSet of connections.
            let _ = task.await;
        }
    }

    /// Listens again on the same port (after [`Backend::kill`]).
    pub async fn revive(&self) {
        if self.is_running() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match bind_listener(self.port).await {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    eprintln!(
                        "revive {}: bind {} failed ({e}), retrying",
                        self.name(),
                        self.port
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!(
                    "revive {}: cannot bind port {}: {e}",
                    self.name(),
                    self.port
                ),
            }
        };
        let task = tokio::spawn(accept_loop(listener, self.state.clone()));
        *self.task.lock().unwrap() = Some(task);
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(task) = self.task.lock().unwrap().take() {
            task.abort();
        }
    }
}

async fn bind_listener(port: u16) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    socket.listen(1024)
}

async fn accept_loop(listener: TcpListener, state: Arc<BackendState>) {
    // Owned by this future: aborting the accept task drops (= aborts) every connection task.
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let state = state.clone();
        conns.spawn(async move {
            let svc = service_fn(move |req| handle(state.clone(), req));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn handle(
    state: Arc<BackendState>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let path = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_string())
        .unwrap_or_else(|| req.uri().to_string());

    if req.method() == hyper::Method::GET && req.uri().path() == "/health" {
        state.health_hits.fetch_add(1, Ordering::SeqCst);
        let (status, body) = if state.healthy.load(Ordering::SeqCst) {
            (200, "ok")
        } else {
            (503, "unhealthy")
        };
        let resp = Response::builder()
            .status(status)
            .header("content-type", "text/plain")
            .header("x-backend", state.name.as_str())
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap();
        return Ok(resp);
    }

    state.hits.fetch_add(1, Ordering::SeqCst);
    if req.uri().path().starts_with("/reset") {
        // An error from the service makes hyper drop the connection without an answer.
        return Err(std::io::Error::other("reset requested"));
    }
    let fail = state.fail_status.load(Ordering::SeqCst);
    if fail != 0 {
        let resp = Response::builder()
            .status(fail)
            .header("content-type", "application/json")
            .header("x-backend", state.name.as_str())
            .body(Full::new(Bytes::from(format!(
                "{{\"backend\":\"{}\",\"failed\":{fail}}}",
                state.name
            ))))
            .unwrap();
        return Ok(resp);
    }
    let method = req.method().to_string();
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in req.headers() {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_ascii_lowercase())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    if req.uri().path().starts_with("/slow") {
        tokio::time::sleep(state.slow_delay).await;
    }
    let body_len = match req.into_body().collect().await {
        Ok(b) => b.to_bytes().len(),
        Err(_) => 0,
    };
    state.max_body.fetch_max(body_len, Ordering::SeqCst);
    let json = serde_json::json!({
        "backend": state.name,
        "method": method,
        "path": path,
        "headers": headers,
        "body_len": body_len,
    });
    let resp = Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header(BACKEND_SECRET_HEADER, "s3cr3t")
        .header("x-backend", state.name.as_str())
        .body(Full::new(Bytes::from(json.to_string())))
        .unwrap();
    Ok(resp)
}

/// `upstreams:` entry lines (indented for use under `upstreams:`) for the given backends.
/// `extra` lines (e.g. `retries: 0`) are indented under the upstream.
pub fn upstream_yaml(name: &str, backends: &[&Backend], extra: &[&str]) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|b| format!("\"{}\"", b.addr()))
        .collect();
    let mut s = format!("  {name}:\n    backends: [{}]\n", list.join(", "));
    for line in extra {
        s.push_str("    ");
        s.push_str(line);
        s.push('\n');
    }
    s
}

/// A config routing everything to upstream `pool` with the given backends and upstream options.
pub fn pool_config(backends: &[&Backend], extra: &[&str]) -> String {
    format!(
        "upstreams:\n{}\nroutes:
  - name: all
    match: {{path_prefix: /}}
    upstream: pool
",
        upstream_yaml("pool", backends, extra)
    )
}

/// The fast health check used by pool tests.
pub const FAST_HEALTH: &str = "health_check: {type: http, path: /health, interval: 200ms, timeout: 200ms, healthy_threshold: 1, unhealthy_threshold: 2}";

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

/// A response, from reqwest or from the raw-TCP helper.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    /// Header names lowercased, in received order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What the echo backend saw.
#[derive(Debug, Clone)]
pub struct Echo {
    pub backend: String,
    pub method: String,
    pub path: String,
    pub headers: BTreeMap<String, String>,
    /// Request body bytes the backend received.
    pub body_len: u64,
}

impl Echo {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(|s| s.as_str())
    }
}

impl Resp {
    /// First value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// All values of a header (case-insensitive name).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {self}"))
    }

    /// Parses the echo backend's JSON; panics (with the response) unless this is a 200 echo.
    pub fn echo(&self) -> Echo {
        assert_eq!(
            self.status, 200,
            "expected a 200 from a backend, got: {self}"
        );
        let v = self.json();
        let s = |k: &str| -> String {
            v.get(k)
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("echo body has no string {k:?}: {self}"))
                .to_string()
        };
        let headers = v
            .get("headers")
            .and_then(Value::as_object)
            .unwrap_or_else(|| panic!("echo body has no headers object: {self}"))
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        Echo {
            backend: s("backend"),
            method: s("method"),
            path: s("path"),
            headers,
            body_len: v.get("body_len").and_then(Value::as_u64).unwrap_or(0),
        }
    }

    /// Asserts a gateway-produced error: the status, `Content-Type: application/json`, and a body
    /// `{"error":code,"message":<non-empty>,"request_id":<non-empty>}`. Returns the body.
    pub fn assert_gateway_error(&self, status: u16, code: &str) -> Value {
        assert_eq!(self.status, status, "unexpected status: {self}");
        let ct = self.header("content-type").unwrap_or_default();
        assert!(
            ct.to_ascii_lowercase().starts_with("application/json"),
            "gateway error must be Content-Type: application/json, got {ct:?}: {self}"
        );
        let v = self.json();
        assert_eq!(
            v.get("error").and_then(Value::as_str),
            Some(code),
            "error code: {self}"
        );
        let msg = v.get("message").and_then(Value::as_str).unwrap_or_default();
        assert!(!msg.is_empty(), "error message missing/empty: {self}");
        let rid = v
            .get("request_id")
            .and_then(Value::as_str)
            .unwrap_or_default();
        assert!(!rid.is_empty(), "request_id missing/empty: {self}");
        v
    }
}

impl std::fmt::Display for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}", self.status)?;
        for (n, v) in &self.headers {
            write!(f, "\n  {n}: {v}")?;
        }
        write!(f, "\n  body: {}", self.text())
    }
}

async fn from_reqwest(r: reqwest::Response) -> Resp {
    let status = r.status().as_u16();
    let headers = r
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = r.bytes().await.expect("read response body").to_vec();
    Resp {
        status,
        headers,
        body,
    }
}

/// A reqwest client that never reuses a connection (one request per connection).
pub fn client_no_keepalive() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("reqwest client")
}

/// A reqwest client that never uses a proxy, with a 10 s timeout per request.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("reqwest client")
}

/// Sends `method url` with the extra headers (a `host` header here overrides the URL's).
pub async fn send(
    client: &reqwest::Client,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
) -> Resp {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut rb = client.request(method, url);
    for (n, v) in headers {
        rb = rb.header(*n, *v);
    }
    match rb.send().await {
        Ok(r) => from_reqwest(r).await,
        Err(e) => panic!("request {url} failed: {e:?}"),
    }
}

/// Like [`send`], with a request body (sent with `Content-Length`).
pub async fn send_body(
    client: &reqwest::Client,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Resp {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut rb = client.request(method, url).body(body);
    for (n, v) in headers {
        rb = rb.header(*n, *v);
    }
    match rb.send().await {
        Ok(r) => from_reqwest(r).await,
        Err(e) => panic!("request {url} failed: {e:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Raw TCP
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
// Gateway process
// ---------------------------------------------------------------------------------------------

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind :0");
    l.local_addr().expect("local_addr").port()
}

/// Two distinct free ports on 127.0.0.1: `(public, admin)`.
/// A full config: a `server` section on the given loopback ports, with pid file and upgrade
/// socket inside `dir`, plus `server_extra` keys (one per entry), then `body`.
pub fn gateway_yaml(
    dir: &Path,
    port: u16,
    admin_port: u16,
    access_log: &str,
    server_extra: &[&str],
    body: &str,
) -> String {
    let d = dir.display();
    let mut yaml = format!(
        "server:\n  listen: [\"127.0.0.1:{port}\"]\n  admin_listen: \"127.0.0.1:{admin_port}\"\n  threads: 1\n  pid_file: \"{d}/tollgate.pid\"\n  upgrade_sock: \"{d}/upgrade.sock\"\n  access_log: \"{access_log}\"\n"
    );
    for line in server_extra {
        yaml.push_str("  ");
        yaml.push_str(line);
        yaml.push('\n');
    }
    yaml.push('\n');
    yaml.push_str(body);
    yaml
}

pub fn free_port_pair() -> (u16, u16) {
    let port = free_port();
    let mut admin_port = free_port();
    for _ in 0..10 {
        if admin_port != port {
            break;
        }
        admin_port = free_port();
    }
    assert_ne!(port, admin_port, "could not find two distinct free ports");
    (port, admin_port)
}

/// `kill -<sig> <pid>`; panics if `kill` cannot be run or reports failure.
pub fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("cannot run `kill -{sig} {pid}`: {e}"));
    assert!(status.success(), "`kill -{sig} {pid}` failed: {status}");
}

/// SIGKILLs `child` and reaps it, waiting at most 5 s.
pub fn kill_and_reap(mut child: Child) {
    let _ = child.kill();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => break,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Waits for `child` to exit, polling every `poll`; kills and reaps it once `limit` has passed.
/// Returns its exit status, or `None` if it had to be killed.
pub fn wait_or_kill(child: &mut Child, limit: Duration, poll: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return Some(s);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(poll);
    }
}

/// Waits (≤ 20 s) for admin `/health` on `admin_port` = 200, then for `port` to accept
/// connections. Panics if `child` exits or the deadline passes.
pub async fn wait_until_ready(child: &mut Child, admin_port: u16, port: u16) {
    let assert_alive = |child: &mut Child, when: &str| {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("tollgate exited early ({status}) {when}");
        }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let probe = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(1))
        .build()
        .expect("probe client");
    let health = format!("http://127.0.0.1:{admin_port}/health");
    loop {
        assert_alive(child, "while waiting for admin /health");
        if let Ok(r) = probe.get(&health).send().await {
            if r.status().as_u16() == 200 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "gateway admin {health} did not return 200 within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    loop {
        assert_alive(child, "while waiting for the public port");
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "gateway public port {port} not accepting within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A running `tollgate run -c <tempdir>/tollgate.yaml`.
pub struct Gateway {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub port: u16,
    pub admin_port: u16,
    pub config_path: PathBuf,
    pub client: reqwest::Client,
}

impl Gateway {
    /// Starts the gateway with the default server section and `body` (the `upstreams:` and
    /// `routes:` sections, verbatim).
    pub async fn start(body: &str) -> Gateway {
        Self::start_with(&[], body).await
    }

    /// Like [`Gateway::start`], with extra `server:` keys, one per entry (e.g.
    /// `trusted_proxies: ["127.0.0.0/8"]`).
    pub async fn start_with(server_extra: &[&str], body: &str) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        let (port, admin_port) = free_port_pair();
        let yaml = gateway_yaml(dir.path(), port, admin_port, "off", server_extra, body);
        let config_path = dir.path().join("tollgate.yaml");
        std::fs::write(&config_path, &yaml).expect("write config");

        let stdout = File::create(dir.path().join("stdout.log")).expect("stdout.log");
        let stderr = File::create(dir.path().join("stderr.log")).expect("stderr.log");
        let child = Command::new(BIN)
            .arg("run")
            .arg("-c")
            .arg(&config_path)
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {BIN}: {e}"));

        let mut gw = Gateway {
            child: Some(child),
            dir,
            port,
            admin_port,
            config_path,
            client: client(),
        };
        gw.wait_ready().await;
        gw
    }

    async fn wait_ready(&mut self) {
        let child = self.child.as_mut().expect("child");
        wait_until_ready(child, self.admin_port, self.port).await;
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.admin_port, path)
    }

    pub async fn get(&self, path: &str) -> Resp {
        send(&self.client, "GET", &self.url(path), &[]).await
    }

    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        send(&self.client, "GET", &self.url(path), headers).await
    }

    pub async fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
        send(&self.client, method, &self.url(path), headers).await
    }

    pub async fn admin_get(&self, path: &str) -> Resp {
        send(&self.client, "GET", &self.admin_url(path), &[]).await
    }

    /// `GET <target>` sent byte-for-byte to the public port.
    pub async fn raw_get(&self, target: &str, host: &str) -> Resp {
        raw_get(self.port, target, host).await
    }

    pub async fn raw(&self, request: &str) -> Resp {
        raw_request(self.port, request).await
    }

    pub fn logs(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
        format!(
            "--- tollgate config ({}) ---\n{}\n--- tollgate stdout ---\n{}\n--- tollgate stderr ---\n{}",
            self.config_path.display(),
            read("tollgate.yaml"),
            read("stdout.log"),
            read("stderr.log")
        )
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            kill_and_reap(child);
        }
        if std::thread::panicking() || std::env::var_os("TOLLGATE_TEST_LOGS").is_some() {
            eprintln!("{}", self.logs());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// check / run
// ---------------------------------------------------------------------------------------------

/// Output of a finished (or killed) `tollgate` invocation.
#[derive(Debug)]
pub struct Outcome {
    /// `None` if it had to be killed at the deadline (or died of a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}

/// Runs `tollgate <args...>` with stdout/stderr to files in `dir`; kills it after `limit`.
pub fn run_bounded(args: &[&str], dir: &Path, limit: Duration) -> Outcome {
    run_bounded_env(args, dir, limit, &[])
}

/// [`run_bounded`] with environment changes: `(name, Some(value))` sets, `(name, None)` removes.
pub fn run_bounded_env(
    args: &[&str],
    dir: &Path,
    limit: Duration,
    env: &[(&str, Option<&str>)],
) -> Outcome {
    let out_path = dir.join("cmd.stdout");
    let err_path = dir.join("cmd.stderr");
    let mut cmd = Command::new(BIN);
    for (k, v) in env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let mut child = cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("stdout file"))
        .stderr(File::create(&err_path).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {BIN}: {e}"));
    let status = wait_or_kill(&mut child, limit, Duration::from_millis(20));
    Outcome {
        timed_out: status.is_none(),
        code: status.and_then(|s| s.code()),
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
    }
}

/// Writes `yaml` (with every `@DIR@` replaced by a fresh tempdir) and runs
/// `tollgate check -c <file>`. Returns `(exit_code, stdout, stderr)`; exit code -1 = killed or
/// signalled.
pub fn check(yaml: &str) -> (i32, String, String) {
    check_env(yaml, &[])
}

/// [`check`] with environment changes (see [`run_bounded_env`]).
pub fn check_env(yaml: &str, env: &[(&str, Option<&str>)]) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("check.yaml");
    std::fs::write(
        &path,
        yaml.replace("@DIR@", &dir.path().display().to_string()),
    )
    .expect("write config");
    let o = run_bounded_env(
        &["check", "-c", path.to_str().expect("utf-8 path")],
        dir.path(),
        Duration::from_secs(30),
        env,
    );
    (o.code.unwrap_or(-1), o.stdout, o.stderr)
}

/// Runs [`check_env`] on `yaml` and asserts it exits 1 with a stderr line starting with `prefix`
/// that contains every fragment. Returns stderr.
#[track_caller]
pub fn assert_check_rejects_with(
    yaml: &str,
    env: &[(&str, Option<&str>)],
    prefix: &str,
    fragments: &[&str],
) -> String {
    let (code, out, err) = check_env(yaml, env);
    let found = err
        .lines()
        .any(|l| l.starts_with(prefix) && fragments.iter().all(|f| l.contains(f)));
    assert!(
        found,
        "expected a stderr line starting with {prefix:?} containing {fragments:?}\n\
         exit={code}\n--- stderr ---\n{err}\n--- stdout ---\n{out}\n--- config ---\n{yaml}"
    );
    assert_eq!(
        code, 1,
        "check must exit 1 on a broken config\n--- stderr ---\n{err}\n--- config ---\n{yaml}"
    );
    err
}

/// `tollgate check -c <file>` on an existing file.
pub fn check_file(path: &Path) -> (i32, String, String) {
    check_file_env(path, &[])
}

/// `tollgate check -c <file>` on an existing file, with environment changes (see
/// [`run_bounded_env`]).
pub fn check_file_env(path: &Path, env: &[(&str, Option<&str>)]) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = run_bounded_env(
        &["check", "-c", path.to_str().expect("utf-8 path")],
        dir.path(),
        Duration::from_secs(30),
        env,
    );
    (o.code.unwrap_or(-1), o.stdout, o.stderr)
}

/// Writes `yaml` (with `@DIR@` replaced) and runs `tollgate run -c <file>`, killing it after
/// `limit` if it is still running.
pub fn run_once(yaml: &str, limit: Duration) -> Outcome {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("run.yaml");
    std::fs::write(
        &path,
        yaml.replace("@DIR@", &dir.path().display().to_string()),
    )
    .expect("write config");
    run_bounded(
        &["run", "-c", path.to_str().expect("utf-8 path")],
        dir.path(),
        limit,
    )
}

// ---------------------------------------------------------------------------------------------
// Misc helpers
// ---------------------------------------------------------------------------------------------

/// Finds `(healthy, total)` for upstream `name` anywhere in a `/ready` JSON body. Accepts
/// `{..."<name>": {"healthy": h, "total": t}...}` and `[{"name"|"upstream": "<name>", "healthy":
/// h, "total": t}]` shapes, at any depth.
pub fn upstream_counts(v: &Value, name: &str) -> Option<(u64, u64)> {
    fn counts(o: &serde_json::Map<String, Value>) -> Option<(u64, u64)> {
        Some((o.get("healthy")?.as_u64()?, o.get("total")?.as_u64()?))
    }
    match v {
        Value::Object(o) => {
            if let Some(Value::Object(inner)) = o.get(name) {
                if let Some(c) = counts(inner) {
                    return Some(c);
                }
            }
            let named = ["name", "upstream"]
                .iter()
                .any(|k| o.get(*k).and_then(Value::as_str) == Some(name));
            if named {
                if let Some(c) = counts(o) {
                    return Some(c);
                }
            }
            o.values().find_map(|x| upstream_counts(x, name))
        }
        Value::Array(a) => a.iter().find_map(|x| upstream_counts(x, name)),
        _ => None,
    }
}
