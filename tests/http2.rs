//! Every policy behaves the same over HTTP/1.1 and HTTP/2 (h2c with prior knowledge): the same
//! requests are sent over both protocols through one gateway and must get the same statuses,
//! error bodies, headers, stripped JSON and forwarded identity; metrics and the access log name
//! the protocol. Then the HTTP/2-only hostilities: streams reset mid-upload, a connection going
//! away mid-response, and a bounded h2load run with no failed request.

mod common;

use common::pki::run;
use common::tokens::sha256_hex;
use common::{upstream_yaml, Backend, LoggedGateway, Resp};
use std::process::Command;
use std::time::{Duration, Instant};

const KEY: &str = "h2-suite-key-6b1e0c";

async fn gateway(backend: &Backend) -> LoggedGateway {
    let body = format!(
        "upstreams:\n{}\n\
         auth:\n  api_keys:\n    partners:\n      keys: [{{id: acme, sha256: \"{}\"}}]\n\
         rate_limits:\n  tiny: {{key: client_ip, requests: 2, per: 1m}}\n\
         routes:\n\
         \x20 - {{name: private, match: {{path_prefix: /private}}, upstream: pool, auth: {{api_key: partners}}}}\n\
         \x20 - {{name: limited, match: {{path_prefix: /limited}}, upstream: pool, rate_limit: tiny}}\n\
         \x20 - {{name: writes, match: {{path_prefix: /writes, methods: [POST]}}, upstream: pool}}\n\
         \x20 - {{name: stripped, match: {{path_prefix: /stripped}}, upstream: pool, \
         response_json: {{remove: [headers]}}, response_headers: {{add: {{X-Edge: yes}}}}}}\n\
         \x20 - {{name: open, match: {{path_prefix: /open}}, upstream: pool, request_headers: {{set: {{X-Via: gw}}}}}}\n",
        upstream_yaml("pool", &[backend], &[]),
        sha256_hex(KEY),
    );
    LoggedGateway::start(
        "@DIR@/access.log",
        &["h2c: true", "max_request_body: 1KiB"],
        &[],
        &body,
    )
    .await
}

fn h2_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("h2 client")
}

fn h1_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("h1 client")
}

/// One request; the response in the harness's type.
async fn send(
    client: &reqwest::Client,
    gw: &LoggedGateway,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> (reqwest::Version, Resp) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = client.request(method, format!("http://127.0.0.1:{}{path}", gw.port));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.body(b);
    }
    let r = req.send().await.expect("request");
    let version = r.version();
    (version, common::client::from_reqwest(r).await)
}

/// What must be identical over both protocols: status, error code, the headers that carry
/// policy decisions, and the JSON body without per-request ids.
fn essence(r: &Resp) -> String {
    let mut body: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
    if let Some(o) = body.as_object_mut() {
        o.remove("request_id");
        if let Some(h) = o.get_mut("headers").and_then(|h| h.as_object_mut()) {
            for volatile in ["x-request-id", "traceparent", "x-forwarded-for", "host"] {
                h.remove(volatile);
            }
        }
    }
    let keep = [
        "allow",
        "www-authenticate",
        "retry-after",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-edge",
        "content-type",
    ];
    let headers: Vec<String> = keep
        .iter()
        .filter_map(|h| r.header(h).map(|v| format!("{h}: {v}")))
        .collect();
    format!("{} {:?} {body}", r.status, headers)
}

/// (method, path, headers, body, expected status)
type Case = (
    &'static str,
    &'static str,
    Vec<(&'static str, &'static str)>,
    Option<Vec<u8>>,
    u16,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_policy_answers_the_same_over_http1_and_h2c() {
    let backend = Backend::start("b").await;
    let gw = gateway(&backend).await;
    let big = vec![b'x'; 4096];
    let cases: Vec<Case> = vec![
        ("GET", "/private/1", vec![], None, 401),
        ("GET", "/private/1", vec![("X-API-Key", "wrong")], None, 401),
        ("GET", "/private/1", vec![("X-API-Key", KEY)], None, 200),
        (
            "GET",
            "/open/1",
            vec![("X-Consumer", "root"), ("X_User_Id", "root")],
            None,
            200,
        ),
        ("GET", "/nowhere", vec![], None, 404),
        ("DELETE", "/writes/1", vec![], None, 405),
        ("POST", "/writes/1", vec![], Some(big), 413),
        ("POST", "/writes/1", vec![], Some(b"{}".to_vec()), 200),
        ("GET", "/open/a%2fb", vec![], None, 400),
        ("GET", "/stripped/1", vec![], None, 200),
    ];
    for (method, path, headers, body, status) in &cases {
        let (v1, h1) = send(&h1_client(), &gw, method, path, headers, body.clone()).await;
        let (v2, h2) = send(&h2_client(), &gw, method, path, headers, body.clone()).await;
        assert_eq!(v1, reqwest::Version::HTTP_11);
        assert_eq!(v2, reqwest::Version::HTTP_2, "{method} {path}");
        assert_eq!(h1.status, *status, "{method} {path} over h1: {h1}");
        assert_eq!(
            essence(&h1),
            essence(&h2),
            "{method} {path}: h1 and h2 differ\nh1: {h1}\nh2: {h2}"
        );
    }
    // Identity spoofing is stripped over both, and request headers are set over both.
    let (_, r) = send(
        &h2_client(),
        &gw,
        "GET",
        "/open/1",
        &[("X-Consumer", "root")],
        None,
    )
    .await;
    let echo = r.echo();
    assert!(!echo.headers.contains_key("x-consumer"), "{r}");
    assert_eq!(echo.headers.get("x-via").map(String::as_str), Some("gw"));
    // JSON stripping over h2: the field is gone, the added response header is there.
    let (_, r) = send(&h2_client(), &gw, "GET", "/stripped/1", &[], None).await;
    assert!(r.json().get("headers").is_none(), "{r}");
    assert_eq!(r.header("x-edge"), Some("yes"));

    // Rate limits count both protocols together: 2 per minute per client IP.
    let (_, a) = send(&h1_client(), &gw, "GET", "/limited", &[], None).await;
    let (_, b) = send(&h2_client(), &gw, "GET", "/limited", &[], None).await;
    let (_, c) = send(&h2_client(), &gw, "GET", "/limited", &[], None).await;
    assert_eq!((a.status, b.status, c.status), (200, 200, 429), "{c}");
    assert!(c.header("retry-after").is_some(), "{c}");
    c.assert_gateway_error(429, "rate_limited");

    // The access log and the metrics name the protocol of each request.
    let logged = gw
        .log_line("access.log", c.header("x-request-id").expect("id"))
        .await;
    assert_eq!(logged["protocol"], "HTTP/2", "{logged}");
    assert_eq!(logged["status"], 429, "{logged}");
    let logged = gw
        .log_line("access.log", a.header("x-request-id").expect("id"))
        .await;
    assert_eq!(logged["protocol"], "HTTP/1.1", "{logged}");
}

/// An h2c connection to the gateway with the `h2` crate, for what reqwest cannot do.
async fn raw_h2(port: u16) -> h2::client::SendRequest<bytes::Bytes> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let (send, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

fn request(port: u16, method: &str, path: &str) -> http::Request<()> {
    http::Request::builder()
        .method(method)
        .uri(format!("http://127.0.0.1:{port}{path}"))
        .body(())
        .expect("request")
}

async fn read_all(resp: h2::client::ResponseFuture) -> (u16, Vec<u8>) {
    let resp = tokio::time::timeout(Duration::from_secs(10), resp)
        .await
        .expect("response in time")
        .expect("response");
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut out = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("body chunk");
        let _ = body.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
    }
    (status, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_reset_mid_upload_leaves_the_connection_and_the_gateway_serving() {
    let backend = Backend::start("b").await;
    let gw = gateway(&backend).await;
    let mut send = raw_h2(gw.port).await;
    // Start an upload, send part of the body, then reset the stream.
    let (resp, mut body) = send
        .send_request(request(gw.port, "POST", "/writes/1"), false)
        .expect("open stream");
    body.send_data(bytes::Bytes::from_static(b"{\"partial\":"), false)
        .expect("first piece");
    tokio::time::sleep(Duration::from_millis(100)).await;
    body.send_reset(h2::Reason::CANCEL);
    let _ = tokio::time::timeout(Duration::from_secs(5), resp).await;
    // The same connection still serves new streams, several at once.
    let mut pending = Vec::new();
    for i in 0..5 {
        let mut ready = send.clone().ready().await.expect("connection still open");
        let (resp, _) = ready
            .send_request(request(gw.port, "GET", &format!("/open/{i}")), true)
            .expect("new stream");
        pending.push(resp);
    }
    for resp in pending {
        let (status, body) = read_all(resp).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
    // The reset upload never completed at the backend, and the gateway is alive for others.
    let r = gw.get("/open/after", &[]).await;
    assert_eq!(r.status, 200, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_mid_response_does_not_disturb_the_others() {
    let backend = Backend::start("b").await;
    let gw = gateway(&backend).await;
    // Open streams on one connection and drop the whole connection before reading them:
    // the gateway sees the connection close with streams in flight (as after a GOAWAY and
    // close).
    {
        let mut send = raw_h2(gw.port).await;
        for i in 0..4 {
            send = send.ready().await.expect("ready");
            let _ = send
                .send_request(request(gw.port, "GET", &format!("/open/gone{i}")), true)
                .expect("stream");
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Other h2 and h1 clients are served normally, and the gateway counts nothing as stuck.
    let mut send = raw_h2(gw.port).await;
    send = send.ready().await.expect("ready");
    let (resp, _) = send
        .send_request(request(gw.port, "GET", "/open/next"), true)
        .expect("stream");
    assert_eq!(read_all(resp).await.0, 200);
    assert_eq!(gw.get("/open/h1", &[]).await.status, 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", gw.admin_port))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        let in_flight =
            common::metrics::value(&text, "tollgate_http_requests_in_flight", &[]).unwrap_or(-1.0);
        if in_flight == 0.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "requests still in flight after the client left: {in_flight}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounded_h2load_run_has_no_failed_request() {
    if Command::new("h2load").arg("--version").output().is_err() {
        panic!("h2load (Debian nghttp2-client) is required for this test; .ci/run installs it");
    }
    let backend = Backend::start("b").await;
    let gw = gateway(&backend).await;
    // 2,000 requests, 4 connections, 10 concurrent streams each: bounded in count, and in
    // time by `run`'s 20 s limit.
    let out = run(Command::new("h2load").args([
        "-n",
        "2000",
        "-c",
        "4",
        "-m",
        "10",
        &format!("http://127.0.0.1:{}/open/load", gw.port),
    ]));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("requests:"))
        .unwrap_or_else(|| panic!("no summary from h2load:\n{text}"));
    assert!(
        line.contains("2000 total") && line.contains("2000 succeeded") && line.contains("0 failed"),
        "{line}"
    );
    assert!(text.contains("status codes: 2000 2xx"), "{text}");
}

/// An HTTP/2 connection with no stream open is closed after `idle_timeout`, after serving or
/// without ever opening a stream, as an idle HTTP/1.1 keep-alive connection is. Pingora alone
/// keeps them forever, so idle h2 connections could hold every `max_connections` slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_h2_connections_are_closed_after_idle_timeout() {
    let backend = Backend::start("b").await;
    let body = format!(
        "upstreams:\n{}\nroutes:\n  - {{name: open, match: {{path_prefix: /open}}, upstream: pool}}\n",
        upstream_yaml("pool", &[&backend], &[]),
    );
    let gw = LoggedGateway::start(
        "@DIR@/access.log",
        &["h2c: true", "idle_timeout: 1s"],
        &[],
        &body,
    )
    .await;
    let connect = || async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", gw.port))
            .await
            .expect("connect");
        let (send, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
        let closed = tokio::spawn(async move {
            let _ = conn.await;
            Instant::now()
        });
        (send, closed)
    };

    let (send, closed) = connect().await;
    let mut ready = send.clone().ready().await.expect("ready");
    let (resp, _) = ready
        .send_request(request(gw.port, "GET", "/open/1"), true)
        .expect("stream");
    let (status, _) = read_all(resp).await;
    assert_eq!(status, 200);
    let idle_from = Instant::now();
    let closed_at = tokio::time::timeout(Duration::from_secs(8), closed)
        .await
        .expect("the gateway closed the served, idle connection")
        .expect("connection task");
    assert!(
        closed_at - idle_from >= Duration::from_millis(900),
        "closed {:?} after its last stream, before idle_timeout",
        closed_at - idle_from
    );
    drop(send);

    let (send, closed) = connect().await;
    tokio::time::timeout(Duration::from_secs(8), closed)
        .await
        .expect("the gateway closed a connection that never opened a stream")
        .expect("connection task");
    drop(send);
}

/// `content_length` / `transfer.encoding` over HTTP/2 are refused, as the HTTP/1 listener refuses
/// them: an HTTP/1 backend that maps `_` and `.` to `-` would frame the body by them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_framing_lookalike_names_are_refused() {
    let backend = Backend::start("b").await;
    let gw = gateway(&backend).await;
    let send = raw_h2(gw.port).await;
    for (name, value) in [("content_length", "0"), ("transfer.encoding", "chunked")] {
        let mut req = request(gw.port, "POST", "/writes/1");
        req.headers_mut().insert(
            http::HeaderName::from_static(name),
            http::HeaderValue::from_static(value),
        );
        let mut ready = send.clone().ready().await.expect("ready");
        let (resp, mut body) = ready.send_request(req, false).expect("stream");
        body.send_data(bytes::Bytes::from_static(b"hello"), true)
            .expect("body");
        let (status, got) = read_all(resp).await;
        assert_eq!(status, 400, "{name}: {}", String::from_utf8_lossy(&got));
    }
    assert_eq!(backend.hits(), 0, "nothing reached the backend");
}
