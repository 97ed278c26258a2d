//! `tollgate check`: every problem reported with its YAML path (`error: <path>: <message>` on
//! stderr, exit 1), collect-all, valid configs accepted; `tollgate run` refuses broken configs.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

/// A valid server section; `@DIR@` is replaced by a tempdir. Nothing binds during `check`.
const SERVER: &str = r#"server:
  listen: ["127.0.0.1:18080"]
  admin_listen: "127.0.0.1:19901"
  pid_file: "@DIR@/tollgate.pid"
  upgrade_sock: "@DIR@/upgrade.sock"
  access_log: "off"
"#;

const UPSTREAMS: &str = r#"upstreams:
  orders:
    backends: ["127.0.0.1:4001", {addr: "127.0.0.1:4002", weight: 2}]
  users:
    backends: ["127.0.0.1:4101"]
"#;

const ROUTES: &str = r#"routes:
  - name: orders
    match: {path_prefix: /orders}
    upstream: orders
"#;

fn cfg(server: &str, upstreams: &str, routes: &str) -> String {
    format!("{server}\n{upstreams}\n{routes}")
}

/// `check` must exit 1 and print a line `error: <path>...` containing every fragment.
/// Returns stderr.
#[track_caller]
fn assert_rejected(yaml: &str, path: &str, fragments: &[&str]) -> String {
    assert_check_rejects_with(yaml, &[], &format!("error: {path}"), fragments)
}

#[test]
fn unknown_key() {
    let routes = r#"routes:
  - name: orders
    match: {hots: api.example.com, path_prefix: /orders}
    upstream: orders
"#;
    assert_rejected(
        &cfg(SERVER, UPSTREAMS, routes),
        "routes[0].match",
        &["unknown field", "hots"],
    );
}

#[test]
fn unknown_upstream_key() {
    let upstreams = r#"upstreams:
  orders:
    backends: ["127.0.0.1:4001"]
    retires: 1
"#;
    assert_rejected(
        &cfg(SERVER, upstreams, ROUTES),
        "upstreams.orders",
        &["unknown field", "retires"],
    );
}

#[test]
fn dangling_upstream_with_suggestion() {
    let routes = r#"routes:
  - name: orders
    match: {path_prefix: /orders}
    upstream: orders
  - name: users
    match: {path_prefix: /users}
    upstream: users
  - name: orders-v2
    match: {path_prefix: /v2/orders}
    upstream: ordrs
"#;
    let err = assert_rejected(&cfg(SERVER, UPSTREAMS, routes), "routes[2].upstream", &[]);
    assert!(
        err.contains(
            r#"error: routes[2].upstream: no upstream named "ordrs" (did you mean "orders"?)"#
        ),
        "exact message expected, got:\n{err}"
    );
}

#[test]
fn duplicate_route_name() {
    let routes = r#"routes:
  - name: orders
    match: {path_prefix: /orders}
    upstream: orders
  - name: orders
    match: {path_prefix: /users}
    upstream: users
"#;
    assert_rejected(
        &cfg(SERVER, UPSTREAMS, routes),
        "routes[1].name",
        &["duplicate"],
    );
}

#[test]
fn path_prefix_without_leading_slash() {
    let routes = r#"routes:
  - name: orders
    match: {path_prefix: orders}
    upstream: orders
"#;
    assert_rejected(
        &cfg(SERVER, UPSTREAMS, routes),
        "routes[0].match.path_prefix",
        &[r#"must start with "/""#],
    );
}

#[test]
fn strip_prefix_with_rewrite_prefix() {
    let routes = r#"routes:
  - name: orders
    match: {path_prefix: /orders}
    upstream: orders
    strip_prefix: true
    rewrite_prefix: /v2/orders
"#;
    assert_rejected(
        &cfg(SERVER, UPSTREAMS, routes),
        "routes[0]",
        &["mutually exclusive"],
    );
}

#[test]
fn bad_duration() {
    let upstreams = r#"upstreams:
  orders:
    backends: ["127.0.0.1:4001"]
    connect_timeout: 2x
"#;
    assert_rejected(
        &cfg(SERVER, upstreams, ROUTES),
        "upstreams.orders.connect_timeout",
        &[],
    );
}

#[test]
fn empty_backends() {
    let upstreams = r#"upstreams:
  orders:
    backends: []
"#;
    assert_rejected(
        &cfg(SERVER, upstreams, ROUTES),
        "upstreams.orders.backends",
        &["at least one backend"],
    );
}

#[test]
fn bad_backend_address() {
    let upstreams = r#"upstreams:
  orders:
    backends: ["127.0.0.1"]
"#;
    assert_rejected(
        &cfg(SERVER, upstreams, ROUTES),
        "upstreams.orders.backends[0]",
        &[],
    );
}

#[test]
fn weight_zero() {
    let upstreams = r#"upstreams:
  orders:
    backends: ["127.0.0.1:4001", {addr: "127.0.0.1:4002", weight: 0}]
"#;
    assert_rejected(
        &cfg(SERVER, upstreams, ROUTES),
        "upstreams.orders.backends[1].weight",
        &[],
    );
}

#[test]
fn bad_health_check_type() {
    let upstreams = r#"upstreams:
  orders:
    backends: ["127.0.0.1:4001"]
    health_check: {type: udp, interval: 1s}
"#;
    assert_rejected(
        &cfg(SERVER, upstreams, ROUTES),
        "upstreams.orders.health_check",
        &[],
    );
}

#[test]
fn unknown_http_method() {
    let routes = r#"routes:
  - name: orders
    match: {path_prefix: /orders, methods: [GETT, POST]}
    upstream: orders
"#;
    assert_rejected(
        &cfg(SERVER, UPSTREAMS, routes),
        "routes[0].match.methods[0]",
        &[],
    );
}

#[test]
fn bad_listen_address() {
    let server = r#"server:
  listen: ["127.0.0.1:notaport"]
  admin_listen: "127.0.0.1:19901"
  pid_file: "@DIR@/tollgate.pid"
  upgrade_sock: "@DIR@/upgrade.sock"
  access_log: "off"
"#;
    assert_rejected(&cfg(server, UPSTREAMS, ROUTES), "server.listen[0]", &[]);
}

#[test]
fn bad_trusted_proxy_cidr() {
    let server = r#"server:
  listen: ["127.0.0.1:18080"]
  admin_listen: "127.0.0.1:19901"
  pid_file: "@DIR@/tollgate.pid"
  upgrade_sock: "@DIR@/upgrade.sock"
  access_log: "off"
  trusted_proxies: ["10.0.0.0/33"]
"#;
    assert_rejected(
        &cfg(server, UPSTREAMS, ROUTES),
        "server.trusted_proxies[0]",
        &[],
    );
}

#[test]
fn admin_listen_same_as_listen() {
    let server = r#"server:
  listen: ["127.0.0.1:18081", "127.0.0.1:18080"]
  admin_listen: "127.0.0.1:18080"
  pid_file: "@DIR@/tollgate.pid"
  upgrade_sock: "@DIR@/upgrade.sock"
  access_log: "off"
"#;
    assert_rejected(&cfg(server, UPSTREAMS, ROUTES), "server.admin_listen", &[]);
}

/// Independent semantic problems are all reported, not just the first.
#[test]
fn collects_all_problems() {
    let upstreams = r#"upstreams:
  orders:
    backends: ["127.0.0.1:4001"]
"#;
    let routes = r#"routes:
  - name: orders
    match: {path_prefix: /orders}
    upstream: nope
  - name: orders
    match: {path_prefix: /users}
    upstream: orders
  - name: items
    match: {path_prefix: items}
    upstream: orders
"#;
    let yaml = cfg(SERVER, upstreams, routes);
    let err = assert_rejected(&yaml, "routes[0].upstream", &["nope"]);
    assert_rejected(&yaml, "routes[1].name", &["duplicate"]);
    assert_rejected(
        &yaml,
        "routes[2].match.path_prefix",
        &[r#"must start with "/""#],
    );
    let n = err.lines().filter(|l| l.starts_with("error: ")).count();
    assert!(n >= 3, "expected at least 3 error lines, got {n}:\n{err}");
}

/// A config using every key of this round's schema is accepted.
#[test]
fn valid_config_passes() {
    let yaml = r#"server:
  listen: ["127.0.0.1:18080", "127.0.0.1:18081"]
  admin_listen: "127.0.0.1:19901"
  threads: 2
  pid_file: "@DIR@/tollgate.pid"
  upgrade_sock: "@DIR@/upgrade.sock"
  grace_period: 30s
  graceful_shutdown_timeout: 10s
  trusted_proxies: ["10.0.0.0/8", "192.168.1.1/32"]
  max_request_body: 10MiB
  access_log: "off"

upstreams:
  orders:
    backends: ["127.0.0.1:4001", {addr: "127.0.0.1:4002", weight: 2}]
    health_check: {type: http, path: /health, interval: 1s, timeout: 500ms,
                   healthy_threshold: 1, unhealthy_threshold: 2}
    connect_timeout: 2s
    read_timeout: 5s
    retries: 1
    preserve_host: false
  users:
    backends: [{addr: "127.0.0.1:4101"}]
    health_check: {type: tcp}
    preserve_host: true

routes:
  - name: orders
    match: {host: api.example.com, path_prefix: /orders, methods: [GET, POST]}
    upstream: orders
    strip_prefix: true
    request_headers: {add: {X-Gateway: tollgate}, set: {X-Env: prod}, remove: [Cookie]}
    response_headers: {add: {X-Served-By: tollgate}, remove: [Server, X-Powered-By]}
  - name: orders-v1
    match: {host: "*.example.com", path_prefix: /v1/orders}
    upstream: orders
    rewrite_prefix: /v2/orders
  - name: users
    match: {path_prefix: /users, methods: [GET, HEAD, PUT, PATCH, DELETE, OPTIONS]}
    upstream: users
  - name: root
    match: {path_prefix: /}
    upstream: users
"#;
    let (code, out, err) = check(yaml);
    assert_eq!(
        code, 0,
        "valid config rejected\n--- stderr ---\n{err}\n--- stdout ---\n{out}"
    );
    assert!(
        !err.lines().any(|l| l.starts_with("error: ")),
        "error lines on a valid config:\n{err}"
    );
}

#[track_caller]
fn assert_shipped_config_passes(rel: &str, env: &[(&str, Option<&str>)]) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    assert!(path.exists(), "{rel} does not exist");
    let (code, out, err) = check_file_env(&path, env);
    assert_eq!(
        code, 0,
        "tollgate check -c {rel} (env {env:?}) failed\n--- stderr ---\n{err}\n--- stdout ---\n{out}"
    );
    assert!(
        !err.contains("warning:"),
        "a shipped config must not draw warnings from check -c {rel}:\n{err}"
    );
}

/// Issue 22: a `grace_period` longer than the shipped systemd unit can wait for is a warning
/// (`warning: <path>: ...` on stderr), not an error: `check` still exits 0 and says OK.
#[test]
fn grace_period_past_the_shipped_unit_is_a_warning_not_an_error() {
    let server = format!("{SERVER}  grace_period: 2m\n");
    let (code, out, err) = check(&cfg(&server, UPSTREAMS, ROUTES));
    assert_eq!(code, 0, "--- stderr ---\n{err}\n--- stdout ---\n{out}");
    assert!(out.contains("OK"), "--- stdout ---\n{out}");
    let warning = err
        .lines()
        .find(|l| l.starts_with("warning: server.grace_period: "))
        .unwrap_or_else(|| panic!("no grace_period warning on stderr:\n{err}"));
    assert!(
        warning.contains("TimeoutStopSec=60s") && warning.contains("at most 50s"),
        "the warning should name the unit's limit and the largest grace_period that fits: \
         {warning}"
    );
    assert!(!err.contains("error:"), "{err}");

    // The default (no grace_period key) fits.
    let (code, _, err) = check(&cfg(SERVER, UPSTREAMS, ROUTES));
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("warning:"), "{err}");
}

#[test]
fn example_config_passes() {
    assert_shipped_config_passes("conf/tollgate.example.yaml", &[]);
}

/// `conf/demo.yaml` reads its (published, demo-only) JWT secret from a file next to it; the
/// relative path is resolved against the config's directory, so `check` passes from any
/// working directory.
#[test]
fn demo_config_passes() {
    assert_shipped_config_passes("conf/demo.yaml", &[]);
}

/// `run` refuses to start on the problems `check` reports, quickly, and says why.
#[test]
fn run_refuses_broken_config() {
    let routes = r#"routes:
  - name: orders
    match: {path_prefix: /orders}
    upstream: orders
  - name: users
    match: {path_prefix: /users}
    upstream: users
  - name: orders-v2
    match: {path_prefix: /v2/orders}
    upstream: ordrs
"#;
    // real free ports, in case it (wrongly) starts
    let server = SERVER
        .replace("127.0.0.1:18080", &format!("127.0.0.1:{}", free_port()))
        .replace("127.0.0.1:19901", &format!("127.0.0.1:{}", free_port()));
    let o = run_once(&cfg(&server, UPSTREAMS, routes), Duration::from_secs(10));
    assert!(
        !o.timed_out,
        "tollgate run kept running on a broken config\n{}",
        o.stderr
    );
    assert!(
        matches!(o.code, Some(c) if c != 0),
        "tollgate run exit code {:?} on a broken config\n--- stderr ---\n{}",
        o.code,
        o.stderr
    );
    let all = format!("{}{}", o.stderr, o.stdout);
    assert!(
        all.contains("routes[2].upstream") && all.contains("ordrs"),
        "run did not print the problem\n--- stderr ---\n{}\n--- stdout ---\n{}",
        o.stderr,
        o.stdout
    );
}
