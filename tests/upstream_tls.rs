//! `upstreams.<n>.tls` and `protocol` through the real binary: HTTPS backends verified against a
//! CA the test generates (by configured SNI, or by the backend's IP address), refused when they
//! do not verify, client certificates for mTLS backends, h2 over TLS for plain HTTP routes,
//! health checks with the same TLS settings, and `check` naming every bad field by its path.

mod common;
#[path = "common/grpc_backend.rs"]
mod grpc_backend;

use common::pki::Pki;
use common::{check, free_port, upstream_counts, Gateway};
use grpc_backend::{GrpcBackend, Listen};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

async fn tls_backend(
    name: &str,
    pki: &Pki,
    names: &[&str],
    client_ca: Option<&Path>,
) -> GrpcBackend {
    let issued = pki.leaf(name, names);
    GrpcBackend::start(
        name,
        Listen::Tls {
            cert: issued.cert,
            key: issued.key,
            client_ca: client_ca.map(Path::to_path_buf),
        },
    )
    .await
}

/// A gateway routing everything to upstream `u` = `backends` with the given upstream lines.
async fn gateway(backends: &[&GrpcBackend], upstream: &[&str]) -> Gateway {
    let list: Vec<String> = backends
        .iter()
        .map(|b| format!("\"{}\"", b.addr()))
        .collect();
    let mut body = format!(
        "upstreams:\n  u:\n    backends: [{}]\n    retries: 0\n",
        list.join(", ")
    );
    for line in upstream {
        body.push_str(&format!("    {line}\n"));
    }
    body.push_str("routes:\n  - {name: all, match: {path_prefix: /}, upstream: u}\n");
    Gateway::start(&body).await
}

fn ca_line(pki: &Pki, extra: &str) -> String {
    format!("tls: {{ca_file: \"{}\"{extra}}}", pki.ca_file().display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstream_with_sni_and_ca_file() {
    let pki = Pki::new();
    let backend = tls_backend("secure", &pki, &["backend.test"], None).await;
    let gw = gateway(&[&backend], &[&ca_line(&pki, ", sni: backend.test")]).await;
    let r = gw.get("/info").await;
    assert_eq!(r.status, 200, "{r}\n{}", gw.logs());
    let seen = r.json();
    assert_eq!(seen["backend"], "secure");
    assert_eq!(seen["sni"], "backend.test", "{seen}");
    assert_eq!(seen["version"], "HTTP/1.1", "{seen}");
    assert_eq!(seen["path"], "/info");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_sni_the_backend_address_is_verified() {
    let pki = Pki::new();
    // The certificate names the IP address the backend is configured by.
    let backend = tls_backend("by-ip", &pki, &["127.0.0.1"], None).await;
    let gw = gateway(&[&backend], &[&ca_line(&pki, "")]).await;
    let r = gw.get("/x").await;
    assert_eq!(r.status, 200, "{r}\n{}", gw.logs());
    assert_eq!(
        r.json()["sni"],
        Value::Null,
        "an IP address is not sent as SNI"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unverifiable_upstreams_are_502_unless_verification_is_off() {
    let trusted = Pki::new();
    let rogue = Pki::new();
    let unknown_ca = tls_backend("rogue", &rogue, &["backend.test"], None).await;
    let gw = gateway(&[&unknown_ca], &[&ca_line(&trusted, ", sni: backend.test")]).await;
    gw.get("/x").await.assert_gateway_error(502, "bad_gateway");
    assert_eq!(unknown_ca.calls(), 0);

    // Signed by the trusted CA, but for another name.
    let other_name = tls_backend("other", &trusted, &["other.test"], None).await;
    let gw = gateway(&[&other_name], &[&ca_line(&trusted, ", sni: backend.test")]).await;
    gw.get("/x").await.assert_gateway_error(502, "bad_gateway");
    assert_eq!(other_name.calls(), 0);

    // verify: false encrypts without checking: the same rogue backend answers.
    let gw = gateway(&[&unknown_ca], &["tls: {sni: backend.test, verify: false}"]).await;
    let r = gw.get("/x").await;
    assert_eq!(r.status, 200, "{r}\n{}", gw.logs());
    assert_eq!(r.json()["sni"], "backend.test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_opens_an_mtls_backend() {
    let pki = Pki::new();
    let backend = tls_backend("mtls", &pki, &["backend.test"], Some(&pki.ca_file())).await;
    let client = pki.leaf("gateway-client", &["gateway.test"]);
    let with_cert = format!(
        "tls: {{sni: backend.test, ca_file: \"{}\", client_cert_file: \"{}\", client_key_file: \"{}\"}}",
        pki.ca_file().display(),
        client.cert.display(),
        client.key.display()
    );
    let gw = gateway(&[&backend], &[&with_cert]).await;
    let r = gw.get("/x").await;
    assert_eq!(r.status, 200, "{r}\n{}", gw.logs());
    assert_eq!(r.json()["client_cert"], true);

    let gw = gateway(&[&backend], &[&ca_line(&pki, ", sni: backend.test")]).await;
    gw.get("/x").await.assert_gateway_error(502, "bad_gateway");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_h2_speaks_http2_over_tls_to_plain_http_routes() {
    let pki = Pki::new();
    let backend = tls_backend("h2", &pki, &["backend.test"], None).await;
    let gw = gateway(
        &[&backend],
        &[&ca_line(&pki, ", sni: backend.test"), "protocol: h2"],
    )
    .await;
    for _ in 0..3 {
        let r = gw.get("/x?y=1").await;
        assert_eq!(r.status, 200, "{r}\n{}", gw.logs());
        let seen = r.json();
        assert_eq!(seen["version"], "HTTP/2.0", "{seen}");
        assert_eq!(seen["alpn"], "h2", "{seen}");
        assert_eq!(seen["path"], "/x");
    }
}

/// `/ready`'s `(healthy, total)` for upstream `u` once it equals `want` (≤ 10 s).
async fn wait_for_counts(gw: &Gateway, want: (u64, u64)) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = gw.admin_get("/ready").await;
        let counts = upstream_counts(&r.json(), "u");
        if counts == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "upstream u: {counts:?}, want {want:?}: {r}\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_use_the_upstream_tls_settings() {
    let pki = Pki::new();
    let rogue = Pki::new();
    let good = tls_backend("good", &pki, &["backend.test"], None).await;
    let bad = tls_backend("bad", &rogue, &["backend.test"], None).await;
    let dead_port = free_port();
    let tls = ca_line(&pki, ", sni: backend.test");
    for (kind, path) in [("http", ", path: /health"), ("tcp", "")] {
        let hc = format!("health_check: {{type: {kind}{path}, interval: 200ms, timeout: 500ms}}");
        let body = format!(
            "upstreams:\n  u:\n    backends: [\"{}\", \"{}\", \"127.0.0.1:{dead_port}\"]\n    {tls}\n    {hc}\nroutes:\n  - {{name: all, match: {{path_prefix: /}}, upstream: u}}\n",
            good.addr(),
            bad.addr()
        );
        let gw = Gateway::start(&body).await;
        wait_for_counts(&gw, (1, 3)).await;
        // Only the verified backend takes traffic.
        for _ in 0..4 {
            let r = gw.get("/x").await;
            assert_eq!(r.status, 200, "{kind}: {r}");
            assert_eq!(r.json()["backend"], "good", "{kind}");
        }
    }
    assert_eq!(bad.calls(), 0);

    // Over h2 too (the probe speaks the pool's protocol).
    let body = format!(
        "upstreams:\n  u:\n    backends: [\"{}\"]\n    protocol: h2\n    {tls}\n    health_check: {{type: http, path: /health, interval: 200ms, timeout: 500ms}}\nroutes:\n  - {{name: all, match: {{path_prefix: /}}, upstream: u}}\n",
        good.addr()
    );
    let gw = Gateway::start(&body).await;
    wait_for_counts(&gw, (1, 1)).await;
}

const SERVER: &str = "server:\n  listen: [\"127.0.0.1:18080\"]\n  admin_listen: \"127.0.0.1:19901\"\n  pid_file: \"@DIR@/tollgate.pid\"\n  upgrade_sock: \"@DIR@/upgrade.sock\"\n  access_log: \"off\"\n";

fn check_upstream(lines: &[&str]) -> (i32, String) {
    let mut yaml = format!("{SERVER}upstreams:\n  billing:\n    backends: [\"127.0.0.1:4001\"]\n");
    for l in lines {
        yaml.push_str(&format!("    {l}\n"));
    }
    yaml.push_str("routes:\n  - {name: r, upstream: billing}\n");
    let (code, _out, err) = check(&yaml);
    (code, err)
}

#[track_caller]
fn assert_problem(lines: &[&str], path: &str, fragment: &str) {
    let (code, err) = check_upstream(lines);
    assert_eq!(code, 1, "{err}");
    let prefix = format!("error: upstreams.billing.{path}:");
    assert!(
        err.lines()
            .any(|l| l.starts_with(&prefix) && l.contains(fragment)),
        "want {prefix} ... {fragment:?}\n{err}"
    );
}

#[test]
fn check_names_every_bad_upstream_tls_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new();
    let good = pki.leaf("client", &["gw.test"]);
    let other = pki.leaf("other", &["other.test"]);
    let junk = dir.path().join("junk.pem");
    std::fs::write(
        &junk,
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    )
    .expect("junk");
    let (ca, cert, key, other_key) = (
        pki.ca_file().display().to_string(),
        good.cert.display().to_string(),
        good.key.display().to_string(),
        other.key.display().to_string(),
    );
    let missing = dir.path().join("missing.pem").display().to_string();

    assert_problem(&["protocol: h2"], "protocol", "needs tls");
    assert_problem(
        &["protocol: h2c", "tls: {}"],
        "protocol",
        "cannot be combined with tls",
    );
    assert_problem(&["protocol: h3"], "protocol", "unknown variant");
    assert_problem(&["tls: {verfy: false}"], "tls.verfy", "unknown field");
    assert_problem(
        &[&format!("tls: {{client_cert_file: \"{cert}\"}}")],
        "tls.client_key_file",
        "needs its client_key_file",
    );
    assert_problem(
        &[&format!("tls: {{client_key_file: \"{key}\"}}")],
        "tls.client_cert_file",
        "needs its client_cert_file",
    );
    assert_problem(
        &["tls: {sni: \"bad name!\"}"],
        "tls.sni",
        "invalid server name",
    );
    assert_problem(
        &[&format!("tls: {{ca_file: \"{missing}\"}}")],
        "tls.ca_file",
        "cannot read",
    );
    assert_problem(
        &[&format!("tls: {{ca_file: \"{}\"}}", junk.display())],
        "tls.ca_file",
        "cannot read",
    );
    assert_problem(
        &[&format!(
            "tls: {{client_cert_file: \"{cert}\", client_key_file: \"{other_key}\"}}"
        )],
        "tls.client_key_file",
        "does not match",
    );
    assert_problem(
        &[&format!(
            "tls: {{client_cert_file: \"{missing}\", client_key_file: \"{key}\"}}"
        )],
        "tls.client_cert_file",
        "cannot read",
    );

    // A complete, valid setting passes; verify: false is allowed with a warning.
    let (code, err) = check_upstream(&[
        &format!("tls: {{sni: billing.internal, ca_file: \"{ca}\", client_cert_file: \"{cert}\", client_key_file: \"{key}\"}}"),
        "protocol: h2",
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = {
        let mut yaml = format!("{SERVER}upstreams:\n  billing:\n    backends: [\"127.0.0.1:4001\"]\n    tls: {{verify: false}}\n");
        yaml.push_str("routes:\n  - {name: r, upstream: billing}\n");
        check(&yaml)
    };
    assert_eq!(code, 0, "{err}");
    assert!(
        format!("{out}{err}").contains("upstreams.billing.tls.verify"),
        "verify: false is warned about\n{out}\n{err}"
    );
}
