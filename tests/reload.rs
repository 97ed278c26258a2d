//! In-place reload on SIGHUP (DESIGN.md "Live operations", issue 18) through the real binary:
//! routes and keys change under steady traffic with no failed request, a client at its limit
//! stays limited, a broken file is refused while the old config keeps serving, new
//! certificates reach new TLS handshakes, and what a reload cannot change is named.

mod common;

use common::pki::{cert_yaml, run, Pki};
use common::tokens::hs256_token;
use common::{metrics, signal, upstream_yaml, Backend, Gateway};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn reloads(gw: &Gateway, result: &str) -> f64 {
    let text = gw.admin_get("/metrics").await.text();
    metrics::value(
        &text,
        "tollgate_config_reloads_total",
        &[("result", result)],
    )
    .unwrap_or(0.0)
}

/// SIGHUP, then wait (≤ 10 s) until the reload was applied (`/ready` shows `expected`) or
/// refused (the refused counter moved); returns whether it was applied.
async fn reload(gw: &Gateway, expected: u64) -> bool {
    let refused_before = reloads(gw, "refused").await;
    signal(gw.pid(), "HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if gw.config_generation().await == expected {
            return true;
        }
        if reloads(gw, "refused").await > refused_before {
            return false;
        }
        assert!(
            Instant::now() < deadline,
            "reload neither applied nor refused:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const SECRET_A: &str = "reload-test-secret-a-0123456789abcdef";
const SECRET_B: &str = "reload-test-secret-b-0123456789abcdef";

/// Routes: `/steady` (always there), `/limited` (2 per minute per client IP), `/private` (JWT
/// signed with the secret in `secret.txt`), and `/extra` when `extra` is set.
fn body(backend: &Backend, extra: bool, limit: u32) -> String {
    let extra_route = if extra {
        "  - {name: extra, match: {path_prefix: /extra}, upstream: pool}\n"
    } else {
        ""
    };
    format!(
        "upstreams:\n{}\n\
         auth:\n  jwt:\n    main: {{algorithms: [HS256], secret_file: secret.txt, require_exp: false}}\n\
         rate_limits:\n  tiny: {{key: client_ip, requests: {limit}, per: 1m}}\n\
         routes:\n\
         \x20 - {{name: steady, match: {{path_prefix: /steady}}, upstream: pool}}\n\
         \x20 - {{name: limited, match: {{path_prefix: /limited}}, upstream: pool, rate_limit: tiny}}\n\
         \x20 - {{name: private, match: {{path_prefix: /private}}, upstream: pool, auth: {{jwt: main}}}}\n\
         {extra_route}",
        upstream_yaml("pool", &[backend], &[]),
    )
}

fn token(secret: &str) -> String {
    hs256_token(secret, r#"{"alg":"HS256","typ":"JWT"}"#, r#"{"sub":"ops"}"#)
}

/// The gateway, and the directory of the key file its first config names (kept alive with it).
async fn start(backend: &Backend) -> (Gateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    // The secret file sits next to the config; the gateway's dir is only known after start,
    // so start with an absolute path first, then switch to the relative form on reload.
    std::fs::write(dir.path().join("secret.txt"), SECRET_A).expect("secret");
    let first = body(backend, false, 2).replace(
        "secret_file: secret.txt",
        &format!("secret_file: \"{}/secret.txt\"", dir.path().display()),
    );
    let gw = Gateway::start(&first).await;
    std::fs::write(gw.dir().join("secret.txt"), SECRET_A).expect("secret");
    (gw, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_reloads_under_load_fail_no_request_and_apply_each_change() {
    let backend = Backend::start("b").await;
    let (gw, _keys) = start(&backend).await;
    // Steady traffic on a route every generation has: 4 workers, bounded by a stop flag and
    // a 30 s ceiling.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        let (client, url) = (common::client(), gw.url("/steady"));
        workers.push(tokio::spawn(async move {
            let until = Instant::now() + Duration::from_secs(30);
            while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    let bearer_a = format!("Bearer {}", token(SECRET_A));
    let bearer_b = format!("Bearer {}", token(SECRET_B));
    for round in 0..5u64 {
        let extra = round % 2 == 0;
        // Rounds 2 and 4 rotate the JWT key: the secret file changes, and the config with it
        // (a reload re-reads key files).
        let secret = if round % 4 == 1 { SECRET_B } else { SECRET_A };
        std::fs::write(gw.dir().join("secret.txt"), secret).expect("secret");
        gw.rewrite_config(&[], &body(&backend, extra, 2));
        assert!(
            reload(&gw, round + 2).await,
            "round {round}:\n{}",
            gw.logs()
        );
        let status = gw.get("/extra/1").await.status;
        assert_eq!(status, if extra { 200 } else { 404 }, "round {round}");
        let (good, stale) = if secret == SECRET_B {
            (&bearer_b, &bearer_a)
        } else {
            (&bearer_a, &bearer_b)
        };
        let auth = |b: &String| vec![("Authorization", b.clone())];
        let h = auth(good);
        let r = gw
            .get_with("/private/1", &[(h[0].0, h[0].1.as_str())])
            .await;
        assert_eq!(
            r.status, 200,
            "round {round}: the current key is accepted: {r}"
        );
        let h = auth(stale);
        let r = gw
            .get_with("/private/1", &[(h[0].0, h[0].1.as_str())])
            .await;
        assert_eq!(r.status, 401, "round {round}: the previous key is not: {r}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("worker");
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "{}", gw.logs());
    assert!(
        ok.load(Ordering::Relaxed) > 20,
        "too little traffic to show anything"
    );
    assert_eq!(reloads(&gw, "ok").await, 5.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_at_its_limit_stays_limited_until_the_limit_itself_changes() {
    let backend = Backend::start("b").await;
    let (gw, _keys) = start(&backend).await;
    let statuses = |gw: &Gateway| {
        let url = gw.url("/limited");
        let client = gw.client.clone();
        async move {
            let r = client.get(&url).send().await.expect("request");
            r.status().as_u16()
        }
    };
    assert_eq!(statuses(&gw).await, 200);
    assert_eq!(statuses(&gw).await, 200);
    assert_eq!(statuses(&gw).await, 429);
    // An unrelated change: the limit's counts carry over.
    gw.rewrite_config(&[], &body(&backend, true, 2));
    assert!(reload(&gw, 2).await, "{}", gw.logs());
    assert_eq!(gw.get("/extra").await.status, 200, "the change applied");
    assert_eq!(
        statuses(&gw).await,
        429,
        "a reload is not a fresh allowance"
    );
    // The limit's own definition changes: it starts afresh, as a new limit.
    gw.rewrite_config(&[], &body(&backend, true, 5));
    assert!(reload(&gw, 3).await, "{}", gw.logs());
    assert_eq!(statuses(&gw).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_config_is_refused_and_the_old_one_keeps_serving() {
    let backend = Backend::start("b").await;
    let (gw, _keys) = start(&backend).await;
    let broken = format!(
        "{}  - {{name: dangling, match: {{path_prefix: /d}}, upstream: nowhere}}\n",
        body(&backend, true, 2)
    );
    gw.rewrite_config(&[], &broken);
    assert!(
        !reload(&gw, 2).await,
        "a config with a dangling upstream was applied"
    );
    assert_eq!(gw.config_generation().await, 1);
    assert_eq!(gw.get("/steady").await.status, 200);
    assert_eq!(gw.get("/extra").await.status, 404, "nothing of it applied");
    let logs = gw
        .logs_once_containing(&["reload refused", "routes[4].upstream"])
        .await;
    assert!(
        logs.contains("reload refused") && logs.contains("routes[4].upstream"),
        "the refusal names the problem with its path:\n{logs}"
    );
    // Unparsable YAML too.
    std::fs::write(&gw.config_path, "server: [").expect("write");
    assert!(!reload(&gw, 2).await);
    assert_eq!(gw.get("/steady").await.status, 200);
    assert_eq!(reloads(&gw, "refused").await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_changes_are_reported_as_needing_the_binary_upgrade() {
    let backend = Backend::start("b").await;
    let (gw, _keys) = start(&backend).await;
    gw.rewrite_config(
        &["max_connections: 77", "h2c: true"],
        &body(&backend, true, 2),
    );
    assert!(reload(&gw, 2).await, "{}", gw.logs());
    assert_eq!(gw.get("/extra").await.status, 200, "the rest applied");
    let logs = gw
        .logs_once_containing(&["needs the binary upgrade", "server.max_connections"])
        .await;
    assert!(
        logs.contains("needs the binary upgrade") && logs.contains("server.max_connections"),
        "{logs}"
    );
    // `/config` is the effective config: the listener still runs with the old cap.
    let doc = gw.admin_get("/config").await.json();
    assert_ne!(doc["config"]["server"]["max_connections"], 77, "{doc}");
    assert_eq!(doc["config"]["server"]["h2c"], false, "{doc}");
}

/// `openssl s_client`: the subject of the certificate served for `name`.
fn served_subject(port: u16, name: &str) -> String {
    let out = run(Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-servername", name]));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find(|l| l.starts_with("subject="))
        .map(|l| l.trim_start_matches("subject=").replace(' ', ""))
        .unwrap_or_else(|| format!("no certificate: {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_certificate_reaches_new_handshakes_and_a_broken_one_is_refused() {
    let pki = Pki::new();
    let first = pki.issue("first", "first.api.test", &["api.test"], None);
    let second = pki.issue("second", "second.api.test", &["api.test"], None);
    let backend = Backend::start("b").await;
    let tls_port = common::free_port();
    let listen = format!("tls_listen: [\"127.0.0.1:{tls_port}\"]");
    let tls = |c| format!("tls: {{certificates: [{}]}}", cert_yaml(c, ""));
    let routes = format!(
        "upstreams:\n{}\nroutes:\n  - {{name: r, match: {{path_prefix: /}}, upstream: pool}}\n",
        upstream_yaml("pool", &[&backend], &[])
    );
    let gw = Gateway::start_with(&[listen.as_str(), tls(&first).as_str()], &routes).await;
    assert_eq!(served_subject(tls_port, "api.test"), "CN=first.api.test");
    gw.rewrite_config(&[listen.as_str(), tls(&second).as_str()], &routes);
    assert!(reload(&gw, 2).await, "{}", gw.logs());
    assert_eq!(served_subject(tls_port, "api.test"), "CN=second.api.test");
    // A key that does not match its certificate: refused, the second one keeps serving.
    std::fs::copy(&first.key, &second.key).expect("break the key");
    assert!(!reload(&gw, 3).await);
    assert_eq!(served_subject(tls_port, "api.test"), "CN=second.api.test");
}
