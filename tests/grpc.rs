//! gRPC through the real binary with a real gRPC client and server (tonic, hand-written prost
//! messages): unary and server-streaming calls over h2c (cleartext listener with `h2c: true`)
//! to an h2c backend, and over TLS (h2 by ALPN) to an h2-over-TLS backend verified against a
//! CA the test generates; the backend's status in trailers reaching the client intact; and the
//! gateway's own refusals answered in gRPC's form (`grpc-status` 16, 7, 8, 12, 14).

mod common;
#[path = "common/grpc_backend.rs"]
mod grpc_backend;

use common::pki::Pki;
use common::{free_port, Gateway};
use grpc_backend::{
    h2c_channel, stream, tls_channel, unary, GrpcBackend, Listen, BACKEND_ERROR_MESSAGE, SLOW,
    UNARY,
};
use std::process::{Command, Stdio};
use tonic::Code;

/// Every reply of a 3-message stream, in order, then a clean end (`grpc-status: 0` in the
/// trailers, which tonic insists on).
async fn assert_calls_work(client: &mut grpc_backend::Client, backend: &str) {
    let reply = unary(client, UNARY, "hello", 0, &[])
        .await
        .unwrap_or_else(|s| panic!("unary failed: {s:?}"));
    assert!(
        reply.metadata().get("x-request-id").is_some(),
        "the gateway's request id reaches the client: {:?}",
        reply.metadata()
    );
    let reply = reply.into_inner();
    assert_eq!(
        (reply.message.as_str(), reply.backend.as_str()),
        ("hello", backend)
    );

    let (replies, end) = stream(client, "tick", 3, 0).await;
    assert!(end.is_ok(), "stream ended with {end:?}");
    let got: Vec<(u32, &str)> = replies
        .iter()
        .map(|r| (r.index, r.message.as_str()))
        .collect();
    assert_eq!(got, vec![(0, "tick #0"), (1, "tick #1"), (2, "tick #2")]);
}

/// The backend's own error statuses reach the client unchanged: a unary Trailers-Only error,
/// and a stream that ends in real trailers after its messages; the message has non-ASCII and
/// `%`, so its percent-encoding must survive too.
async fn assert_backend_errors_pass_through(client: &mut grpc_backend::Client) {
    let status = unary(client, UNARY, "x", Code::FailedPrecondition as u32, &[])
        .await
        .expect_err("the backend refuses");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(status.message(), BACKEND_ERROR_MESSAGE);

    let (replies, end) = stream(client, "tock", 2, Code::NotFound as u32).await;
    assert_eq!(replies.len(), 2, "messages before the error arrive");
    let status = end.expect_err("the stream ends in an error status");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert_eq!(status.message(), BACKEND_ERROR_MESSAGE);
}

fn echo_route(upstream: &str) -> String {
    format!(
        "routes:\n  - {{name: echo, match: {{path_prefix: /test.Echo}}, upstream: {upstream}}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_listener_to_h2c_backend() {
    let backend = GrpcBackend::start("h2c-1", Listen::H2c).await;
    let body = format!(
        "upstreams:\n  grpc:\n    backends: [\"{}\"]\n    protocol: h2c\n{}",
        backend.addr(),
        echo_route("grpc")
    );
    let gw = Gateway::start_with(&["h2c: true"], &body).await;
    let mut client = h2c_channel(gw.port).await;
    assert_calls_work(&mut client, "h2c-1").await;
    assert_backend_errors_pass_through(&mut client).await;
    assert!(backend.calls() >= 4, "{}", gw.logs());
}

/// A gateway with a TLS listener for `api.test` (signed by `pki`).
async fn tls_gateway(pki: &Pki, body: &str) -> (Gateway, u16) {
    let cert = pki.leaf("gateway", &["api.test"]);
    let tls_port = free_port();
    let listen = format!("tls_listen: [\"127.0.0.1:{tls_port}\"]");
    let tls = format!(
        "tls: {{certificates: [{{cert_file: \"{}\", key_file: \"{}\", default: true}}]}}",
        cert.cert.display(),
        cert.key.display()
    );
    let gw = Gateway::start_with(&[&listen, &tls], body).await;
    (gw, tls_port)
}

/// An h2-over-TLS gRPC backend for `backend.test`, its certificate signed by `pki`.
async fn tls_backend(name: &str, pki: &Pki) -> GrpcBackend {
    let issued = pki.leaf(name, &["backend.test"]);
    let listen = Listen::Tls {
        cert: issued.cert,
        key: issued.key,
        client_ca: None,
    };
    GrpcBackend::start(name, listen).await
}

/// The `grpc` upstream (h2 over TLS, verified against `ca`'s CA) and the echo route.
fn tls_upstream(backend: &GrpcBackend, ca: &Pki, extra: &str) -> String {
    format!(
        "upstreams:\n  grpc:\n    backends: [\"{}\"]\n{extra}    protocol: h2\n    tls: {{sni: backend.test, ca_file: \"{}\"}}\n{}",
        backend.addr(),
        ca.ca_file().display(),
        echo_route("grpc")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_to_h2_tls_backend_with_verification() {
    let pki = Pki::new();
    let backend = tls_backend("tls-1", &pki).await;
    let body = tls_upstream(&backend, &pki, "");
    let (gw, tls_port) = tls_gateway(&pki, &body).await;
    let mut client = tls_channel(tls_port, "api.test", &pki.ca_pem()).await;
    assert_calls_work(&mut client, "tls-1").await;
    assert_backend_errors_pass_through(&mut client).await;
    assert!(backend.calls() >= 4, "{}", gw.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_certificate_that_fails_verification_is_unavailable() {
    let trusted = Pki::new();
    let rogue = Pki::new();
    let backend = tls_backend("rogue", &rogue).await;
    let body = tls_upstream(&backend, &trusted, "    retries: 0\n");
    let gw = Gateway::start_with(&["h2c: true"], &body).await;
    let mut client = h2c_channel(gw.port).await;
    let status = unary(&mut client, UNARY, "x", 0, &[])
        .await
        .expect_err("an unverified backend is never used");
    assert_eq!(
        status.code(),
        Code::Unavailable,
        "{status:?}\n{}",
        gw.logs()
    );
    assert!(
        status.metadata().get("x-request-id").is_some(),
        "{status:?}"
    );
    assert_eq!(backend.calls(), 0, "no request reached the rogue backend");
}

const JWT_SECRET: &str = "grpc-test-secret-0123456789abcdef";

/// One gateway, one route per refusal: `/auth` (JWT required), `/admin` (role admin),
/// `/limited` (1 request a minute), `/down` (its only backend is dead), `/slow` (300 ms read
/// timeout); all other paths have no route. Routes strip their prefix, so the backend serves `/test.Echo/...`.
async fn refusing_gateway(backend: &GrpcBackend, secret_dir: &std::path::Path) -> Gateway {
    let secret = secret_dir.join("jwt.secret");
    std::fs::write(&secret, JWT_SECRET).expect("secret");
    let dead = free_port();
    let body = format!(
        r#"upstreams:
  grpc:
    backends: ["{addr}"]
    protocol: h2c
  slow:
    backends: ["{addr}"]
    protocol: h2c
    read_timeout: 300ms
  dead:
    backends: ["127.0.0.1:{dead}"]
    protocol: h2c
    health_check: {{type: tcp, interval: 1s, timeout: 200ms}}
auth:
  jwt:
    main: {{algorithms: [HS256], secret_file: "{secret}"}}
rate_limits:
  one: {{key: route, requests: 1, per: 1m}}
routes:
  - {{name: auth, match: {{path_prefix: /auth}}, upstream: grpc, strip_prefix: true, auth: {{jwt: main}}}}
  - {{name: admin, match: {{path_prefix: /admin}}, upstream: grpc, strip_prefix: true, auth: {{jwt: main, roles_any: [admin]}}}}
  - {{name: limited, match: {{path_prefix: /limited}}, upstream: grpc, strip_prefix: true, rate_limit: one}}
  - {{name: down, match: {{path_prefix: /down}}, upstream: dead, strip_prefix: true}}
  - {{name: slow, match: {{path_prefix: /slow}}, upstream: slow, strip_prefix: true}}
  - {{name: small, match: {{path_prefix: /small}}, upstream: grpc, strip_prefix: true, max_request_body: 1KiB}}
"#,
        addr = backend.addr(),
        secret = secret.display(),
    );
    Gateway::start_with(&["h2c: true"], &body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_refusals_are_grpc_statuses() {
    let backend = GrpcBackend::start("refused", Listen::H2c).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = refusing_gateway(&backend, dir.path()).await;
    let mut client = h2c_channel(gw.port).await;

    // 401 → UNAUTHENTICATED, with the request id as metadata.
    let s = unary(&mut client, "/auth/test.Echo/Unary", "x", 0, &[])
        .await
        .expect_err("no token");
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
    assert!(s.metadata().get("x-request-id").is_some(), "{s:?}");
    assert!(!s.message().is_empty(), "{s:?}");
    // ...and a valid token passes.
    let claims = serde_json::json!({"sub": "alice", "exp": common::tokens::unix_now() + 600});
    let token = common::tokens::hs256_jwt(JWT_SECRET.as_bytes(), &claims);
    let bearer = format!("Bearer {token}");
    let ok = unary(
        &mut client,
        "/auth/test.Echo/Unary",
        "x",
        0,
        &[("authorization", &bearer)],
    )
    .await;
    assert!(ok.is_ok(), "{ok:?}\n{}", gw.logs());

    // 403 → PERMISSION_DENIED.
    let s = unary(
        &mut client,
        "/admin/test.Echo/Unary",
        "x",
        0,
        &[("authorization", &bearer)],
    )
    .await
    .expect_err("no admin role");
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");

    // A message over the route's max_request_body (HTTP/2 sends no Content-Length): 413 →
    // RESOURCE_EXHAUSTED at once, not a timeout while the backend waits for the rest.
    let big = "m".repeat(4096);
    let started = std::time::Instant::now();
    let s = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        unary(&mut client, "/small/test.Echo/Unary", &big, 0, &[]),
    )
    .await
    .expect("an answer, not a wait for the upstream's read_timeout")
    .expect_err("over max_request_body");
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}\n{}", gw.logs());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "answered after {:?}",
        started.elapsed()
    );
    let small = unary(&mut client, "/small/test.Echo/Unary", "fits", 0, &[]).await;
    assert!(small.is_ok(), "{small:?}");

    // 429 → RESOURCE_EXHAUSTED, with Retry-After and the rate-limit headers.
    let first = unary(&mut client, "/limited/test.Echo/Unary", "x", 0, &[]).await;
    assert!(first.is_ok(), "{first:?}");
    let s = unary(&mut client, "/limited/test.Echo/Unary", "x", 0, &[])
        .await
        .expect_err("over the limit");
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
    assert!(s.metadata().get("retry-after").is_some(), "{s:?}");
    assert!(
        s.metadata().keys().any(|k| match k {
            tonic::metadata::KeyRef::Ascii(k) => k.as_str().starts_with("x-ratelimit-"),
            tonic::metadata::KeyRef::Binary(_) => false,
        }),
        "{s:?}"
    );

    // 404 → UNIMPLEMENTED.
    let s = unary(&mut client, "/nowhere.Svc/Call", "x", 0, &[])
        .await
        .expect_err("no route");
    assert_eq!(s.code(), Code::Unimplemented, "{s:?}");

    // 503 (no healthy backend) → UNAVAILABLE, with Retry-After.
    let s = unary(&mut client, "/down/test.Echo/Unary", "x", 0, &[])
        .await
        .expect_err("no healthy backend");
    assert_eq!(s.code(), Code::Unavailable, "{s:?}\n{}", gw.logs());
    assert!(s.metadata().get("retry-after").is_some(), "{s:?}");

    // 504 (the backend did not answer in time; Pingora's failure) → DEADLINE_EXCEEDED.
    let s = unary(&mut client, "/slow/test.Echo/Unary", SLOW, 0, &[])
        .await
        .expect_err("read timeout");
    assert_eq!(s.code(), Code::DeadlineExceeded, "{s:?}\n{}", gw.logs());
}

/// Run curl with a bounded wait; stdout (head and body).
fn curl(args: &[&str]) -> String {
    let mut child = Command::new("curl")
        .args(["-sS", "-i", "--max-time", "10"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn curl");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().expect("wait").is_none() {
        assert!(std::time::Instant::now() < deadline, "curl hung");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// On the wire a gRPC refusal is Trailers-Only: HTTP 200, `application/grpc`, the status and
/// the percent-encoded message in the one header block, no body; the same refusal without the
/// gRPC content type stays the documented JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_refusal_on_the_wire_is_trailers_only() {
    let backend = GrpcBackend::start("wire", Listen::H2c).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = refusing_gateway(&backend, dir.path()).await;
    let url = gw.url("/nowhere.Svc/Call");
    let grpc = curl(&[
        "--http2-prior-knowledge",
        "-X",
        "POST",
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
        "--data-binary",
        "",
        &url,
    ]);
    let (head, body) = grpc.split_once("\r\n\r\n").unwrap_or((&grpc, ""));
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/2 200"), "{grpc}");
    for line in [
        "content-type: application/grpc",
        "grpc-status: 12",
        "grpc-message: ",
        "x-request-id: ",
    ] {
        assert!(head.contains(line), "{line:?} missing:\n{grpc}");
    }
    assert!(body.is_empty(), "no body: {grpc:?}");

    let json = curl(&["--http2-prior-knowledge", &url]);
    assert!(json.starts_with("HTTP/2 404"), "{json}");
    assert!(json.contains("\"error\":\"not_found\""), "{json}");
}

/// Trailers-Only is one HEADERS frame that ends the stream. Written as a header block and then
/// an empty DATA frame with END_STREAM, grpcio and grpc-go read a broken stream and report
/// UNKNOWN instead of the status (tonic, used above, reads the status either way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_refusal_ends_the_stream_with_its_headers() {
    let backend = GrpcBackend::start("frames", Listen::H2c).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = refusing_gateway(&backend, dir.path()).await;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", gw.port))
        .await
        .expect("connect");
    let (send, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(conn);
    let mut send = send.ready().await.expect("ready");
    let req = http::Request::post(gw.url("/nowhere.Svc/Call"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request");
    let (resp, mut body) = send.send_request(req, false).expect("send");
    // The refusal may close the stream before the message is sent: that is not the point.
    let _ = body.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), true);
    let resp = tokio::time::timeout(std::time::Duration::from_secs(5), resp)
        .await
        .expect("answered in time")
        .expect("response");
    assert_eq!(resp.headers()["grpc-status"], "12");
    assert!(
        resp.body().is_end_stream(),
        "the header block must carry END_STREAM (Trailers-Only)"
    );
}
