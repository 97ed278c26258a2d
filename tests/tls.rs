//! TLS termination, SNI certificates, HTTP/2 (ALPN and h2c) and `redirect_https` through the
//! real binary, with real clients: curl and the openssl CLI. Certificates are generated here
//! (rcgen), never checked in.

mod common;

use common::pki::{cert_yaml, run, Issued, Pki};
use common::{check, upstream_yaml, Backend, Gateway};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

/// api.test, *.wild.test, and a default certificate (CN default.test).
struct Fixture {
    pki: Pki,
    backend: Backend,
    gw: Gateway,
    tls_port: u16,
}

async fn fixture(with_default: bool, server_extra: &[&str]) -> Fixture {
    let pki = Pki::new();
    let api = pki.issue("api", "api.test", &["api.test"], None);
    let wild = pki.issue("wild", "wild.test", &["*.wild.test"], None);
    let fallback = pki.issue("default", "default.test", &["default.test"], None);
    let tls_port = common::free_port();
    let mut certs = vec![cert_yaml(&api, ""), cert_yaml(&wild, "")];
    if with_default {
        certs.push(cert_yaml(&fallback, ", default: true"));
    }
    let tls_listen = format!("tls_listen: [\"127.0.0.1:{tls_port}\"]");
    let tls = format!("tls: {{certificates: [{}]}}", certs.join(", "));
    let mut extra = vec![tls_listen.as_str(), tls.as_str()];
    extra.extend_from_slice(server_extra);
    let backend = Backend::start("b").await;
    let body = format!(
        "upstreams:\n{}\nroutes:\n  - {{name: api, match: {{path_prefix: /}}, upstream: pool}}\n",
        upstream_yaml("pool", &[&backend], &[])
    );
    let gw = Gateway::start_with(&extra, &body).await;
    Fixture {
        pki,
        backend,
        gw,
        tls_port,
    }
}

/// `openssl s_client` against the TLS port: the subject of the served leaf, if the handshake
/// completed. `sni`: `None` sends no server name.
fn served_subject(port: u16, sni: Option<&str>, extra: &[&str]) -> (Option<String>, String) {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &format!("127.0.0.1:{port}")]);
    match sni {
        Some(name) => cmd.args(["-servername", name]),
        None => cmd.arg("-noservername"),
    };
    cmd.args(["-showcerts"]).args(extra);
    let out = run(&mut cmd);
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let subject = text
        .lines()
        .find(|l| l.starts_with("subject="))
        .map(|l| l.trim_start_matches("subject=").replace(' ', ""));
    (subject, text)
}

/// curl over TLS to `name` (resolved to 127.0.0.1), verifying against the test CA; returns
/// (status line, headers+body).
fn curl_tls(f: &Fixture, name: &str, path: &str, extra: &[&str]) -> String {
    let out = run(Command::new("curl")
        .args(["-sS", "-i", "--max-time", "10", "--cacert"])
        .arg(f.pki.ca_file())
        .args(["--resolve", &format!("{name}:{}:127.0.0.1", f.tls_port)])
        .args(extra)
        .arg(format!("https://{name}:{}{path}", f.tls_port)));
    assert!(
        out.status.success(),
        "curl failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        f.gw.logs()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_exact_then_wildcard_then_default() {
    let f = fixture(true, &[]).await;
    for (sni, expected) in [
        (Some("api.test"), "CN=api.test"),
        (Some("API.TEST"), "CN=api.test"),
        (Some("a.wild.test"), "CN=wild.test"),
        (Some("b.a.wild.test"), "CN=default.test"),
        (Some("other.test"), "CN=default.test"),
        (None, "CN=default.test"),
    ] {
        let (subject, text) = served_subject(f.tls_port, sni, &[]);
        assert_eq!(subject.as_deref(), Some(expected), "SNI {sni:?}\n{text}");
        // The whole chain is served: leaf and CA.
        assert!(
            text.matches("-----BEGIN CERTIFICATE-----").count() >= 2,
            "chain not served whole for {sni:?}\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_or_missing_sni_without_a_default_is_refused() {
    let f = fixture(false, &[]).await;
    assert_eq!(
        served_subject(f.tls_port, Some("api.test"), &[])
            .0
            .as_deref(),
        Some("CN=api.test")
    );
    for sni in [Some("other.test"), None] {
        let (subject, text) = served_subject(f.tls_port, sni, &[]);
        assert_eq!(
            subject, None,
            "a certificate was served for {sni:?}\n{text}"
        );
    }
    // Each refusal is counted; the one served handshake is an `ok`.
    let text = f.gw.admin_get("/metrics").await.text();
    let count = |result| {
        common::metrics::value(
            &text,
            "tollgate_tls_handshakes_total",
            &[("result", result)],
        )
    };
    assert_eq!(count("unknown_name"), Some(2.0), "{text}");
    assert_eq!(count("ok"), Some(1.0), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_protocol_versions_are_refused() {
    let f = fixture(true, &[]).await;
    for version in ["-tls1", "-tls1_1"] {
        // SECLEVEL=0 so that the client really offers the old version.
        let (subject, text) = served_subject(
            f.tls_port,
            Some("api.test"),
            &[version, "-cipher", "DEFAULT@SECLEVEL=0"],
        );
        assert_eq!(subject, None, "{version} was accepted\n{text}");
    }
    for version in ["-tls1_2", "-tls1_3"] {
        let (subject, text) = served_subject(f.tls_port, Some("api.test"), &[version]);
        assert_eq!(subject.as_deref(), Some("CN=api.test"), "{version}\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_over_http1_and_http2_reaches_the_backend_as_https() {
    let f = fixture(true, &[]).await;
    let h1 = curl_tls(&f, "api.test", "/x?a=1", &["--http1.1"]);
    assert!(h1.starts_with("HTTP/1.1 200"), "{h1}");
    assert!(
        h1.contains("\"x-forwarded-proto\":\"https\""),
        "backend did not see https: {h1}"
    );
    let h2 = curl_tls(&f, "api.test", "/y", &["--http2"]);
    assert!(h2.starts_with("HTTP/2 200"), "{h2}");
    assert!(h2.contains("\"path\":\"/y\""), "{h2}");
    assert!(f.backend.hits() >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_refusals_are_the_same_over_http2() {
    let f = fixture(true, &[]).await;
    let bad_path = curl_tls(&f, "api.test", "/a/..%2fb", &["--http2", "--path-as-is"]);
    assert!(bad_path.starts_with("HTTP/2 400"), "{bad_path}");
    assert!(bad_path.contains("\"error\":\"bad_request\""), "{bad_path}");
    // An invalid Content-Length over HTTP/2 is refused by the h2 layer itself (the stream is
    // reset with PROTOCOL_ERROR); nothing reaches the backend.
    let out = run(Command::new("curl")
        .args(["-sS", "-i", "--max-time", "10", "--http2", "--cacert"])
        .arg(f.pki.ca_file())
        .args(["--resolve", &format!("api.test:{}:127.0.0.1", f.tls_port)])
        .args(["-H", "Content-Length: 1, 2", "--data", "x"])
        .arg(format!("https://api.test:{}/x", f.tls_port)));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains(" 200"), "{text}");
    assert_eq!(f.backend.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_sent_to_the_tls_port_gets_no_http_answer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let f = fixture(true, &[]).await;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", f.tls_port))
        .await
        .expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: api.test\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(
        !buf.starts_with(b"HTTP/"),
        "a TLS port answered plaintext: {}",
        String::from_utf8_lossy(&buf)
    );
    assert_eq!(f.backend.hits(), 0);
    // The gateway still serves TLS afterwards.
    let ok = curl_tls(&f, "api.test", "/ok", &[]);
    assert!(ok.starts_with("HTTP/2 200"), "{ok}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_with_prior_knowledge_and_http1_share_the_cleartext_port() {
    let f = fixture(true, &["h2c: true"]).await;
    let url = f.gw.url("/z");
    let h2 = run(Command::new("curl").args([
        "-sS",
        "-i",
        "--max-time",
        "10",
        "--http2-prior-knowledge",
        &url,
    ]));
    let h2 = String::from_utf8_lossy(&h2.stdout);
    assert!(h2.starts_with("HTTP/2 200"), "{h2}\n{}", f.gw.logs());
    assert!(h2.contains("\"x-forwarded-proto\":\"http\""), "{h2}");
    let h1 = f.gw.get("/z").await;
    assert_eq!(h1.status, 200, "{h1}");
    // The HTTP/1 framing checks still apply to HTTP/1 on an h2c port.
    let bad =
        f.gw.raw("POST /z HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab")
            .await;
    assert_eq!(bad.status, 400, "{bad}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_https_sends_cleartext_requests_to_the_tls_port() {
    let f = fixture(true, &["redirect_https: true"]).await;
    let r = f.gw.raw_get("/orders/7?x=1", "api.test:8080").await;
    assert_eq!(r.status, 308, "{r}");
    assert_eq!(
        r.header("location"),
        Some(format!("https://api.test:{}/orders/7?x=1", f.tls_port).as_str()),
        "{r}"
    );
    assert_eq!(f.backend.hits(), 0);
    let ok = curl_tls(&f, "api.test", "/orders/7", &[]);
    assert!(ok.starts_with("HTTP/2 200"), "{ok}");
    // The admin listener is never redirected.
    assert_eq!(f.gw.admin_get("/health").await.status, 200);
}

/// A config with one TLS listener and the given certificate entries.
fn tls_config(certs: &[String]) -> String {
    format!(
        "server:\n  listen: [\"127.0.0.1:18080\"]\n  tls_listen: [\"127.0.0.1:18443\"]\n  pid_file: /tmp/t.pid\n  upgrade_sock: /tmp/t.sock\n  tls: {{certificates: [{}]}}\nupstreams:\n  u: {{backends: [\"127.0.0.1:1\"]}}\nroutes:\n  - {{name: r, upstream: u}}\n",
        certs.join(", ")
    )
}

#[test]
fn check_reports_every_certificate_problem_with_its_yaml_path() {
    let pki = Pki::new();
    let good = pki.issue("good", "good.test", &["good.test"], None);
    let other = pki.issue("other", "other.test", &["other.test"], None);
    let dup = pki.issue("dup", "dup.test", &["good.test"], None);
    let expired = pki.issue(
        "expired",
        "old.test",
        &["old.test"],
        Some(SystemTime::now() - Duration::from_secs(24 * 3600)),
    );
    let mismatched = Issued {
        cert: good.cert.clone(),
        key: other.key.clone(),
    };
    let missing = Issued {
        cert: Path::new("/nonexistent/cert.pem").to_path_buf(),
        key: good.key.clone(),
    };
    let (code, out, err) = check(&tls_config(&[
        cert_yaml(&good, ""),
        cert_yaml(&mismatched, ", sni: [m.test]"),
        cert_yaml(&expired, ""),
        cert_yaml(&dup, ""),
        cert_yaml(&missing, ""),
    ]));
    assert_eq!(code, 1, "{out}{err}");
    for expected in [
        "server.tls.certificates[1].key_file: does not match the certificate",
        "server.tls.certificates[2].cert_file: the certificate expired",
        "server.tls.certificates[3].sni: good.test is already claimed by server.tls.certificates[0]",
        "server.tls.certificates[4].cert_file: cannot read",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}

#[test]
fn check_warns_about_a_certificate_that_expires_soon_and_accepts_a_good_one() {
    let pki = Pki::new();
    let soon = pki.issue(
        "soon",
        "soon.test",
        &["soon.test"],
        Some(SystemTime::now() + Duration::from_secs(5 * 24 * 3600)),
    );
    let (code, out, err) = check(&tls_config(&[cert_yaml(&soon, ", default: true")]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("warning: server.tls.certificates[0].cert_file: the certificate expires"),
        "{err}"
    );
    let good = pki.issue("good", "good.test", &["good.test"], None);
    let (code, out, err) = check(&tls_config(&[cert_yaml(&good, "")]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(!err.contains("warning"), "{err}");
}

#[test]
fn check_refuses_tls_listeners_without_certificates_and_bad_tls_options() {
    let (code, _, err) = check(
        "server:\n  tls_listen: [\"127.0.0.1:18443\"]\n  redirect_https: false\n  tls: {min_version: \"1.0\", client_auth: required}\nupstreams:\n  u: {backends: [\"127.0.0.1:1\"]}\nroutes:\n  - {name: r, upstream: u}\n",
    );
    assert_eq!(code, 1, "{err}");
    for expected in [
        "server.tls.certificates: tls_listen needs at least one certificate",
        "server.tls.min_version:",
        "server.tls.client_auth: required needs client_ca_file",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    let (code, _, err) = check(
        "server:\n  redirect_https: true\nupstreams:\n  u: {backends: [\"127.0.0.1:1\"]}\nroutes:\n  - {name: r, upstream: u}\n",
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("server.redirect_https: needs a tls_listen"),
        "{err}"
    );
}

/// A certificate naming one host twice (again, in another case, or with a trailing dot in
/// `sni`) does not clash with itself; two certificates naming it still do.
#[test]
fn a_certificate_may_repeat_its_own_names() {
    let pki = Pki::new();
    let twice = pki.issue("twice", "d.test", &["d.test", "D.test", "e.test"], None);
    let (code, out, err) = check(&tls_config(&[cert_yaml(&twice, "")]));
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = check(&tls_config(&[cert_yaml(
        &twice,
        ", sni: [d.test, d.test.]",
    )]));
    assert_eq!(code, 0, "{out}{err}");
    let other = pki.issue("other", "other.test", &["d.test"], None);
    let (code, _, err) = check(&tls_config(&[
        cert_yaml(&twice, ""),
        cert_yaml(&other, ", sni: [D.test.]"),
    ]));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("d.test is already claimed by server.tls.certificates[0]"),
        "{err}"
    );
}

/// `check` (and so reload) refuses what would fail every handshake for a name: a chain whose
/// next certificate did not sign the leaf (another CA's of the same name, or a corrupt block),
/// and `sni` entries no client can send.
#[test]
fn check_refuses_a_chain_that_does_not_sign_the_leaf_and_sni_no_client_sends() {
    let pki = Pki::new();
    let elsewhere = Pki::new();
    let good = pki.issue("good", "good.test", &["good.test"], None);
    let pem = std::fs::read_to_string(&good.cert).expect("chain");
    let leaf_pem = &pem[..pem.find("-----END CERTIFICATE-----").expect("leaf") + 26];
    let unrelated = Issued {
        cert: pki.dir.path().join("unrelated.pem"),
        key: good.key.clone(),
    };
    std::fs::write(&unrelated.cert, format!("{leaf_pem}{}", elsewhere.ca_pem())).expect("write");
    let corrupt = Issued {
        cert: pki.dir.path().join("corrupt.pem"),
        key: good.key.clone(),
    };
    std::fs::write(
        &corrupt.cert,
        format!("{leaf_pem}-----BEGIN CERTIFICATE-----\nMAMCAQA=\n-----END CERTIFICATE-----\n"),
    )
    .expect("write");
    let (code, out, err) = check(&tls_config(&[
        cert_yaml(&unrelated, ", sni: [a.test]"),
        cert_yaml(&corrupt, ", sni: [b.test]"),
        cert_yaml(&good, ", sni: ['*', '', 'a b', 127.0.0.1, c.test]"),
    ]));
    assert_eq!(code, 1, "{out}{err}");
    for expected in [
        "server.tls.certificates[0].cert_file:",
        // Both test CAs are named alike: the name matches, the key does not.
        "a certificate was not signed by the key of the next one",
        "server.tls.certificates[1].cert_file:",
        "certificate 2 of the file is not a readable X.509 certificate",
        "server.tls.certificates[2].sni[0]: \"*\" is not a DNS name",
        "server.tls.certificates[2].sni[1]: \"\" is not a DNS name",
        "server.tls.certificates[2].sni[2]: \"a b\" is not a DNS name",
        "server.tls.certificates[2].sni[3]: \"127.0.0.1\" is an address",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    assert!(!err.contains("sni[4]"), "{err}");
    // The same leaf with its own CA after it, and the leaf alone, pass.
    let alone = Issued {
        cert: pki.dir.path().join("alone.pem"),
        key: good.key.clone(),
    };
    std::fs::write(&alone.cert, leaf_pem).expect("write");
    let (code, out, err) = check(&tls_config(&[
        cert_yaml(&good, ""),
        cert_yaml(&alone, ", sni: [alone.test]"),
    ]));
    assert_eq!(code, 0, "{out}{err}");
}
