//! Client certificates (mTLS) through the real binary with curl: a verified certificate's
//! subject is the consumer of routes with `auth: {mtls: true}` (forwarded, rate-limited by,
//! logged), a client can never claim one by header, a certificate from another CA never gets
//! past the handshake, and the TLS metrics count what happened.

mod common;

use common::metrics;
use common::pki::{cert_yaml, run, Issued, Pki};
use common::{check, upstream_yaml, Backend, Gateway};
use serde_json::Value;
use std::process::Command;

struct Fixture {
    pki: Pki,
    client: Issued,
    backend: Backend,
    gw: Gateway,
    tls_port: u16,
}

/// A TLS listener that asks for client certificates (`client_auth`), and three routes:
/// `/cert` admits certificates, `/either` certificates or an API key, `/open` anyone.
async fn fixture(client_auth: &str) -> Fixture {
    let pki = Pki::new();
    let server = pki.issue("server", "api.test", &["api.test"], None);
    let client = pki.issue("client", "svc-orders", &["orders.internal"], None);
    let tls_port = common::free_port();
    let tls_listen = format!("tls_listen: [\"127.0.0.1:{tls_port}\"]");
    let tls = format!(
        "tls: {{certificates: [{}], client_ca_file: \"{}\", client_auth: {client_auth}}}",
        cert_yaml(&server, ", default: true"),
        pki.ca_file().display()
    );
    let backend = Backend::start("b").await;
    let body = format!(
        "upstreams:\n{}\n\
         auth:\n  api_keys:\n    partners:\n      keys: [{{id: acme, sha256: \"{}\"}}]\n\
         rate_limits:\n  per_consumer: {{key: consumer, requests: 2, per: 1m}}\n\
         routes:\n\
         \x20 - {{name: cert, match: {{path_prefix: /cert}}, upstream: pool, auth: {{mtls: true}}, rate_limit: per_consumer}}\n\
         \x20 - {{name: either, match: {{path_prefix: /either}}, upstream: pool, auth: {{mtls: true, api_key: partners}}}}\n\
         \x20 - {{name: open, match: {{path_prefix: /open}}, upstream: pool}}\n",
        upstream_yaml("pool", &[&backend], &[]),
        common::tokens::sha256_hex("acme-key"),
    );
    let gw = Gateway::start_with(&[tls_listen.as_str(), tls.as_str()], &body).await;
    Fixture {
        pki,
        client,
        backend,
        gw,
        tls_port,
    }
}

/// curl to `https://api.test:<port><path>` with the test CA; `Err(stderr)` when curl failed
/// (e.g. the handshake was refused), else the parsed status and body.
fn curl(f: &Fixture, path: &str, extra: &[&str]) -> Result<(u16, String), String> {
    let out = run(Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code}",
            "--cacert",
        ])
        .arg(f.pki.ca_file())
        .args(["--resolve", &format!("api.test:{}:127.0.0.1", f.tls_port)])
        .args(extra)
        .arg(format!("https://api.test:{}{path}", f.tls_port)));
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    Ok((code.trim().parse().unwrap_or(0), body.to_owned()))
}

fn with_cert(c: &Issued) -> Vec<String> {
    vec![
        "--cert".into(),
        c.cert.display().to_string(),
        "--key".into(),
        c.key.display().to_string(),
    ]
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The headers the echo backend saw.
fn seen_headers(body: &str) -> serde_json::Map<String, Value> {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["headers"].as_object().cloned().unwrap_or_default()
}

async fn metric(f: &Fixture, result: &str) -> f64 {
    let text = f.gw.admin_get("/metrics").await.text();
    metrics::value(
        &text,
        "tollgate_tls_handshakes_total",
        &[("result", result)],
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_certificate_is_the_consumer_over_http1_and_http2() {
    let f = fixture("optional").await;
    let cert = with_cert(&f.client);
    for proto in ["--http1.1", "--http2"] {
        let mut extra = args(&cert);
        extra.extend([
            proto,
            "-H",
            "X-Client-Cert-Subject: root",
            "-H",
            "X_Consumer: root",
        ]);
        let (status, body) = curl(&f, "/cert/1", &extra).expect("handshake with a good cert");
        assert_eq!(status, 200, "{proto}: {body}");
        let h = seen_headers(&body);
        assert_eq!(h["x-client-cert-subject"], "svc-orders", "{proto}: {body}");
        assert_eq!(h["x-consumer"], "svc-orders", "{proto}: {body}");
        assert!(!h.contains_key("x_consumer"), "{proto}: {body}");
    }
    // The consumer is the rate-limit key: two per minute for svc-orders, the third is refused.
    let (status, body) = curl(&f, "/cert/1", &args(&cert)).expect("third request");
    assert_eq!(status, 429, "{body}");
    assert!(metric(&f, "ok").await >= 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_certificate_the_route_refuses_and_headers_cannot_stand_in() {
    let f = fixture("optional").await;
    let spoof = [
        "-H",
        "X-Client-Cert-Subject: svc-orders",
        "-H",
        "X-Consumer: svc-orders",
    ];
    let (status, body) = curl(&f, "/cert/1", &spoof).expect("optional: no cert is fine");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("\"unauthorized\""), "{body}");
    // A route without auth is served, and the spoofed identity never reaches the backend.
    let (status, body) = curl(&f, "/open/1", &spoof).expect("open route");
    assert_eq!(status, 200, "{body}");
    let h = seen_headers(&body);
    assert!(!h.contains_key("x-client-cert-subject"), "{body}");
    assert!(!h.contains_key("x-consumer"), "{body}");
    // Either credential passes a route that accepts both.
    let (status, body) = curl(&f, "/either/1", &["-H", "X-API-Key: acme-key"]).expect("key");
    assert_eq!(status, 200, "{body}");
    assert_eq!(seen_headers(&body)["x-consumer"], "acme");
    let (status, body) = curl(&f, "/either/1", &args(&with_cert(&f.client))).expect("cert");
    assert_eq!(status, 200, "{body}");
    assert_eq!(seen_headers(&body)["x-consumer"], "svc-orders");
    assert_eq!(f.backend.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_never_completes_the_handshake() {
    let f = fixture("optional").await;
    let rogue_ca = Pki::new();
    let rogue = rogue_ca.issue("rogue", "svc-orders", &["orders.internal"], None);
    let before = metric(&f, "client_certificate_rejected").await;
    let err = curl(&f, "/cert/1", &args(&with_cert(&rogue))).expect_err("rogue cert refused");
    assert!(!err.is_empty());
    assert_eq!(f.backend.hits(), 0);
    assert_eq!(
        metric(&f, "client_certificate_rejected").await,
        before + 1.0,
        "{}",
        f.gw.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_auth_required_refuses_a_handshake_without_a_certificate() {
    let f = fixture("required").await;
    let err = curl(&f, "/open/1", &[]).expect_err("no cert, no handshake");
    assert!(!err.is_empty());
    let (status, _) = curl(&f, "/open/1", &args(&with_cert(&f.client))).expect("with a cert");
    assert_eq!(status, 200);
    assert_eq!(f.backend.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_expiry_is_published_per_name() {
    let f = fixture("optional").await;
    let text = f.gw.admin_get("/metrics").await.text();
    let expiry = metrics::value(
        &text,
        "tollgate_tls_certificate_expiry_seconds",
        &[("name", "api.test")],
    )
    .expect("expiry of api.test");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as f64;
    // rcgen's default validity ends in 4096; any future time proves the gauge is notAfter.
    assert!(expiry > now, "{expiry} <= {now}");
}

#[test]
fn check_refuses_mtls_auth_without_a_client_ca() {
    let (code, _, stderr) = check(
        "upstreams:\n  u: {backends: [\"127.0.0.1:9\"]}\n\
         routes:\n  - {name: r, match: {path_prefix: /}, upstream: u, auth: {mtls: true}}\n",
    );
    assert_ne!(code, 0, "{stderr}");
    assert!(
        stderr.contains("routes[0].auth.mtls") && stderr.contains("client_ca_file"),
        "{stderr}"
    );
}
