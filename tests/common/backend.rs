//! [`Backend`]: a real HTTP/1.1 echo server (hyper 1) on 127.0.0.1, which can be killed (listener
//! closed, live connections dropped, connects refused) and revived on the same port; and the
//! `upstreams:` YAML that points a gateway at backends.

use std::collections::BTreeMap;
use std::net::SocketAddr;
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
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::{JoinHandle, JoinSet};

/// How long a backend sleeps before answering a request whose path starts with `/slow`.
pub const DEFAULT_SLOW_DELAY: Duration = Duration::from_secs(3);

/// Response header every backend sets; used to test `response_headers.remove`.
pub const BACKEND_SECRET_HEADER: &str = "x-internal-secret";

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
    ip: std::net::Ipv4Addr,
    port: u16,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Backend {
    /// Starts a backend on a fresh port. Must be called inside a (multi-thread) tokio runtime.
    pub async fn start(name: &str) -> Backend {
        Self::start_with_delay(name, DEFAULT_SLOW_DELAY).await
    }

    /// The port comes from [`super::free_port`], outside the kernel's ephemeral range, so that
    /// no outgoing connection can take it while the backend is down between
    /// [`Backend::kill`] and [`Backend::revive`]. A port that turns out taken after all (a
    /// socket left by an earlier test process) is skipped for the next one.
    pub async fn start_with_delay(name: &str, slow_delay: Duration) -> Backend {
        let mut last = None;
        for _ in 0..20 {
            let port = super::free_port();
            match Self::start_on(name, slow_delay, std::net::Ipv4Addr::LOCALHOST, port).await {
                Ok(b) => return b,
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => last = Some(e),
                Err(e) => panic!("bind backend listener: {e}"),
            }
        }
        panic!("bind backend listener: 20 ports in use, last: {last:?}");
    }

    /// Starts a backend on a chosen loopback address and port (0: any free port), e.g. one
    /// of several that share a port on 127.0.0.2, 127.0.0.3, ... as a DNS name's addresses do.
    pub async fn start_at(
        name: &str,
        ip: std::net::Ipv4Addr,
        port: u16,
    ) -> std::io::Result<Backend> {
        Self::start_on(name, DEFAULT_SLOW_DELAY, ip, port).await
    }

    async fn start_on(
        name: &str,
        slow_delay: Duration,
        ip: std::net::Ipv4Addr,
        port: u16,
    ) -> std::io::Result<Backend> {
        let state = Arc::new(BackendState {
            name: name.to_string(),
            healthy: AtomicBool::new(true),
            hits: AtomicUsize::new(0),
            health_hits: AtomicUsize::new(0),
            max_body: AtomicUsize::new(0),
            slow_delay,
            fail_status: std::sync::atomic::AtomicU16::new(0),
        });
        let listener = bind_listener(ip, port).await?;
        let port = listener.local_addr()?.port();
        let task = tokio::spawn(accept_loop(listener, state.clone()));
        Ok(Backend {
            state,
            ip,
            port,
            task: Mutex::new(Some(task)),
        })
    }

    pub fn name(&self) -> &str {
        &self.state.name
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `"127.0.0.1:<port>"` (the address it listens on)
    pub fn addr(&self) -> String {
        format!("{}:{}", self.ip, self.port)
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
            match bind_listener(self.ip, self.port).await {
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

async fn bind_listener(ip: std::net::Ipv4Addr, port: u16) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from((ip, port)))?;
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
    if req.uri().path().starts_with("/huge-response") {
        // 32 MiB: more than loopback socket buffers hold, for clients that stop reading.
        let resp = Response::builder()
            .status(200)
            .header("content-type", "application/octet-stream")
            .header("x-backend", state.name.as_str())
            .body(Full::new(Bytes::from(vec![b'x'; 32 << 20])))
            .unwrap();
        return Ok(resp);
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
