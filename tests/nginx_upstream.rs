//! tollgate in front of a real nginx (Debian's `/usr/sbin/nginx`) that reads paths the way
//! nginx does: it percent-decodes `%2F`, resolves dot segments after decoding and merges
//! slashes before matching a `location`. That is exactly the kind of backend issue 14 protects:
//! if any path form reaches it and nginx maps it to `/admin/...`, the gateway judged one path
//! and the backend served another.
//!
//! nginx answers `location /admin/` (and `= /admin`) with `ADMIN $request_uri` and everything
//! else with `OTHER $uri`. tollgate routes `/public` (no auth), `/admin` (JWT) and a catch-all
//! `/` to it. No path form from the attack families may make nginx say `ADMIN` without a
//! token, under the default policy and under a relaxed one (`decode`/`keep`/`keep`); with a
//! valid token `/admin/x` does reach it.
//!
//! Skipped (with a message) only if no nginx binary is installed; `.ci/run` installs it.

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::raw_http::exchange;
use common::tokens::{hs256_token, unix_now};
use common::*;

const SECRET: &str = "tollgate-nginx-upstream-hs256-secret-0123456789";
const SECRET_ENV: &str = "TOLLGATE_NGINX_UPSTREAM_SECRET";

/// Path forms from every family: encoded slashes, backslashes, dot disguises, path parameters,
/// double encoding, overlong UTF-8, empty segments, case and encoded letters.
const FORMS: &[&str] = &[
    "/admin/x",
    "/admin",
    "/public/../admin/x",
    "/public/..%2fadmin/x",
    "/public/..%2Fadmin/x",
    "/public%2f..%2fadmin/x",
    "/public/x/..%2f..%2fadmin/x",
    "/%2fadmin/x",
    "/admin%2fx",
    "/public/..%5cadmin/x",
    "/public/..%5Cadmin/x",
    r"/public\..\admin\x",
    r"/public/..\admin/x",
    r"/\admin/x",
    r"/admin\x",
    "/public/%2e%2e/admin/x",
    "/public/%2E%2E/admin/x",
    "/public/%2E%2e/admin/x",
    "/public/.%2e/admin/x",
    "/public/%2e./admin/x",
    "/public/%2e%2e%2fadmin/x",
    "/public/%2e%2e%5cadmin/x",
    "/public/..;/admin/x",
    "/public/..;x=1/admin/x",
    "/public/%2e%2e;x/admin/x",
    "/public;x=1/../admin/x",
    "/admin;x=1/x",
    "/admin;/x",
    "/public/..%3badmin/x",
    "/public/%2e%2e%3b/admin/x",
    "/public/%252e%252e/admin/x",
    "/public/..%252fadmin/x",
    "/public/%252e%252e%252fadmin/x",
    "/public/%c0%ae%c0%ae/admin/x",
    "/public/..%c0%afadmin/x",
    "/%c0%ae%c0%ae/admin/x",
    "/public/%e0%80%ae%e0%80%ae/admin/x",
    "//admin/x",
    "///admin//x",
    "/public//../admin/x",
    "/public/.//../admin/x",
    "/%61dmin/x",
    "/%61%64%6d%69%6e/x",
    "/ADMIN/x",
    "/Admin/x",
    // nginx drops a `#fragment` from the request-target, and decodes `%23`, `%3F`, `%00`.
    "/admin#x",
    "/admin#/x",
    "/public/x#/../../admin/x",
    "/admin%23/x",
    "/admin%3f/x",
    "/admin%00/x",
    "/admin?/x",
    "/public/x?/../../admin/x",
    // absolute-form
    "http://gw.test/admin/x",
    "http://gw.test/public/..%2fadmin/x",
    "http://gw.test/public/%2e%2e/admin/x",
    "http://gw.test//admin/x",
];

// ---------------------------------------------------------------------------------------------
// nginx
// ---------------------------------------------------------------------------------------------

/// The nginx binary, if one is installed.
fn nginx_binary() -> Option<PathBuf> {
    let mut candidates = vec![PathBuf::from("/usr/sbin/nginx")];
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("nginx")));
    }
    candidates.into_iter().find(|p| p.is_file())
}

/// `Some(path)`, or `None` after telling why the test is skipped.
fn nginx_or_skip(test: &str) -> Option<PathBuf> {
    let bin = nginx_binary();
    if bin.is_none() {
        eprintln!(
            "SKIPPED {test}: no nginx binary (/usr/sbin/nginx or on PATH); \
             install it with `apt-get install -y nginx` (.ci/run does)"
        );
    }
    bin
}

/// A foreground, single-process nginx on a free loopback port, everything in a tempdir.
/// Killed on drop.
struct Nginx {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
}

impl Nginx {
    async fn start(bin: &Path) -> Nginx {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let d = dir.path().display().to_string();
        let conf = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    default_type text/plain;
    server {{
        listen 127.0.0.1:{port};
        server_name _;
        location /admin/ {{ return 200 "ADMIN $request_uri\n"; }}
        location = /admin {{ return 200 "ADMIN $request_uri\n"; }}
        location / {{ return 200 "OTHER $uri\n"; }}
    }}
}}
"#
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write nginx.conf");
        let child = Command::new(bin)
            .arg("-p")
            .arg(format!("{d}/"))
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(format!("{d}/error.log"))
            .stdin(Stdio::null())
            .stdout(File::create(dir.path().join("stdout.log")).expect("stdout.log"))
            .stderr(File::create(dir.path().join("stderr.log")).expect("stderr.log"))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let mut n = Nginx {
            child: Some(child),
            dir,
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(Ok(Some(status))) = n.child.as_mut().map(Child::try_wait) {
                panic!("nginx exited early ({status})\n{}", n.logs());
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "nginx not accepting on 127.0.0.1:{port} within 10 s\n{}",
                n.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        n
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn logs(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
        format!(
            "--- nginx stderr ---\n{}\n--- nginx error.log ---\n{}\n--- nginx access.log ---\n{}",
            read("stderr.log"),
            read("error.log"),
            read("access.log")
        )
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

fn get(target: &str, token: Option<&str>) -> String {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    format!("GET {target} HTTP/1.1\r\nHost: gw.test\r\n{auth}Connection: close\r\n\r\n")
}

/// `(status, body)`; status 0 if the connection closed without a response.
async fn send(port: u16, target: &str, token: Option<&str>) -> (u16, String) {
    match exchange(port, get(target, token).as_bytes()).await {
        Some(r) => (r.status, r.text().trim_end().to_string()),
        None => (0, String::new()),
    }
}

fn token() -> String {
    let n = unix_now();
    let claims = format!(
        r#"{{"sub":"alice","roles":["admin"],"iat":{n},"exp":{}}}"#,
        n + 300
    );
    hs256_token(SECRET, r#"{"alg":"HS256","typ":"JWT"}"#, &claims)
}

/// tollgate in front of `nginx` with `server_extra` lines under `server:`.
async fn gateway(nginx: &Nginx, server_extra: &[&str]) -> LoggedGateway {
    let body = format!(
        r#"upstreams:
  nginx:
    backends: ["{}"]
    retries: 0

auth:
  jwt:
    main:
      algorithms: [HS256]
      secret_env: {SECRET_ENV}

routes:
  - name: public
    match: {{path_prefix: /public}}
    upstream: nginx
  - name: admin
    match: {{path_prefix: /admin}}
    upstream: nginx
    auth: {{jwt: main, required: always}}
  - name: other
    match: {{path_prefix: /}}
    upstream: nginx
"#,
        nginx.addr()
    );
    LoggedGateway::start("off", server_extra, &[(SECRET_ENV, SECRET)], &body).await
}

/// Sends every form through the gateway without a token; fails listing each form that made
/// nginx answer `ADMIN`.
async fn assert_no_form_reaches_admin(gw: &LoggedGateway, policy: &str) {
    let mut leaks = Vec::new();
    for form in FORMS {
        let (status, body) = send(gw.port, form, None).await;
        eprintln!("NGINX-CASE {policy}: GET {form} -> {status} {body:?}");
        if body.starts_with("ADMIN") {
            leaks.push(format!("GET {form} -> {status} {body:?}"));
        }
    }
    assert!(
        leaks.is_empty(),
        "{policy}: nginx served its /admin location without a token for:\n  {}",
        leaks.join("\n  ")
    );
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// The fixture can see a bypass: sent straight to nginx, the disguised forms do land in its
/// `/admin/` location. Without this, "nginx never said ADMIN" below would prove nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_alone_maps_disguised_paths_to_admin() {
    let Some(bin) = nginx_or_skip("nginx_alone_maps_disguised_paths_to_admin") else {
        return;
    };
    let nginx = Nginx::start(&bin).await;
    let mut admin = Vec::new();
    for form in FORMS {
        let (status, body) = send(nginx.port, form, None).await;
        eprintln!("NGINX-DIRECT GET {form} -> {status} {body:?}");
        if body.starts_with("ADMIN") {
            admin.push(*form);
        }
    }
    for must in [
        "/admin/x",
        "/public/../admin/x",
        "/public/..%2fadmin/x",
        "/public/..%2Fadmin/x",
        "/public/%2e%2e/admin/x",
        "/public/%2e%2e%2fadmin/x",
        "/public;x=1/../admin/x",
        "//admin/x",
        "/%61dmin/x",
    ] {
        assert!(
            admin.contains(&must),
            "nginx itself should map {must} to /admin (it decodes, resolves and merges); \
             forms it mapped: {admin:?}\n{}",
            nginx.logs()
        );
    }
}

/// Default policy (everything `reject`): no form reaches nginx's `/admin/` without a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_path_form_reaches_nginx_admin_without_a_token_by_default() {
    let Some(bin) = nginx_or_skip("no_path_form_reaches_nginx_admin_without_a_token_by_default")
    else {
        return;
    };
    let nginx = Nginx::start(&bin).await;
    let gw = gateway(&nginx, &[]).await;
    assert_no_form_reaches_admin(&gw, "default policy").await;
}

/// Relaxed policy (`escaped_slashes: decode`, `backslash: keep`, `path_parameters: keep`):
/// decoding before resolving makes the router see what nginx sees; `\` and `;` mean nothing
/// to nginx on Linux. Still no form reaches `/admin/` without a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_path_form_reaches_nginx_admin_without_a_token_when_relaxed() {
    let Some(bin) = nginx_or_skip("no_path_form_reaches_nginx_admin_without_a_token_when_relaxed")
    else {
        return;
    };
    let nginx = Nginx::start(&bin).await;
    let gw = gateway(
        &nginx,
        &["path_policy: {escaped_slashes: decode, backslash: keep, path_parameters: keep}"],
    )
    .await;
    assert_no_form_reaches_admin(&gw, "decode/keep/keep policy").await;
}

/// Control: with a valid token `/admin/x` reaches nginx's `/admin/` location under both
/// policies, and under `decode` `/public/..%2fadmin/x` arrives as the decoded `/admin/x`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_token_reaches_nginx_admin() {
    let Some(bin) = nginx_or_skip("a_valid_token_reaches_nginx_admin") else {
        return;
    };
    let nginx = Nginx::start(&bin).await;
    let tok = token();

    let strict = gateway(&nginx, &[]).await;
    let got = send(strict.port, "/admin/x", Some(&tok)).await;
    assert_eq!(got, (200, "ADMIN /admin/x".to_string()), "default policy");
    let got = send(strict.port, "/public/x", None).await;
    assert_eq!(got, (200, "OTHER /public/x".to_string()), "default policy");
    drop(strict);

    let relaxed = gateway(&nginx, &["path_policy: {escaped_slashes: decode}"]).await;
    let got = send(relaxed.port, "/admin/x", Some(&tok)).await;
    assert_eq!(got, (200, "ADMIN /admin/x".to_string()), "decode policy");
    let got = send(relaxed.port, "/public/..%2fadmin/x", Some(&tok)).await;
    assert_eq!(
        got,
        (200, "ADMIN /admin/x".to_string()),
        "decode policy: the backend must get the decoded, resolved path"
    );
}
