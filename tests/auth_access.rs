//! Authorisation and identity at the edge (DESIGN.md request path steps 5 and 8; the 401/403
//! rows of the error table): roles and scopes, identity headers never taken from the client,
//! API keys and JWT-or-key routes, `tollgate_auth_failures_total`, no credential in responses
//! or logs, and `tollgate check` on auth config. The gateway is [`common::suites::auth`]'s.

mod common;

use std::time::{Duration, Instant};

use common::suites::auth::*;
use common::tokens::{bearer, fixture, hand_token, rs1, rs2, sha256_hex, sign_with};
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// Authorisation: roles and scopes
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_role_is_403() {
    let fx = fx().await;
    let user = rs1(&claims("bob", &["user"], "orders:read"));
    fx.expect_403("GET", "/admin", &user, "admin").await;
    let no_roles = rs1(&with(alice(), &[("roles", Value::Null)]));
    fx.expect_403("GET", "/admin", &no_roles, "admin").await;
    // One of roles_any is enough.
    let ops = rs1(&claims("olga", &["ops"], ""));
    let e = fx.get_token("/admin", &ops).await.echo();
    assert_eq!(e.header("x-user-id"), Some("olga"));
    assert_eq!(e.header("x-user-roles"), Some("ops"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_all_needs_every_role() {
    let fx = fx().await;
    let only_admin = rs1(&claims("bob", &["admin"], ""));
    fx.expect_403("GET", "/allroles", &only_admin, "allroles")
        .await;
    let only_staff = rs1(&claims("bob", &["staff", "user"], ""));
    fx.expect_403("GET", "/allroles", &only_staff, "allroles")
        .await;
    let e = fx.get_token("/allroles", &rs1(&alice())).await.echo();
    assert_eq!(e.header("x-user-roles"), Some("admin,staff"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_all_needs_every_scope() {
    let fx = fx().await;
    let read_only = rs1(&claims("bob", &["admin"], "orders:read"));
    fx.expect_403("GET", "/scoped", &read_only, "scoped").await;
    // A scope is a whole word: `orders:writer` is not `orders:write`.
    let near = rs1(&claims("bob", &["admin"], "orders:read orders:writer"));
    fx.expect_403("GET", "/scoped", &near, "scoped").await;
    let e = fx.get_token("/scoped", &rs1(&alice())).await.echo();
    assert_eq!(e.header("x-scopes"), Some("orders:read orders:write"));
    // `scp` as an array is accepted as the scope claim too.
    let scp = rs1(&with(
        alice(),
        &[
            ("scope", Value::Null),
            ("scp", json!(["orders:write", "orders:read"])),
        ],
    ));
    assert_eq!(fx.get_token("/scoped", &scp).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_mutating_guards_writes_only() {
    let fx = fx().await;
    // Reads are public, and a spoofed identity is stripped on them.
    let r = fx
        .get(
            "/mut/items",
            &[("x-user-id", "mallory"), ("x-user-roles", "writer")],
        )
        .await;
    let e = r.echo();
    assert_eq!(e.method, "GET");
    assert_eq!(e.header("x-user-id"), None, "{e:?}");
    assert_eq!(e.header("x-user-roles"), None, "{e:?}");

    for m in ["POST", "PUT", "PATCH", "DELETE"] {
        fx.expect_401(m, "/mut/items", &[], "mut", "missing").await;
        fx.expect_401(
            m,
            "/mut/items",
            &[("x-user-id", "mallory")],
            "mut",
            "missing",
        )
        .await;
    }

    let writer = rs1(&claims("wendy", &["writer"], ""));
    let auth = bearer(&writer);
    for m in ["POST", "PUT", "PATCH", "DELETE"] {
        let r = fx
            .gw
            .request(m, "/mut/items", &[("authorization", auth.as_str())])
            .await;
        let e = r.echo();
        assert_eq!(e.method, m);
        assert_eq!(e.header("x-user-id"), Some("wendy"), "{m}: {e:?}");
    }
    // A valid token without the role: 403 on writes.
    let reader = rs1(&claims("rita", &["reader"], ""));
    fx.expect_403("POST", "/mut/items", &reader, "mut").await;
    // A GET with a valid token is let through with the identity.
    let e = fx.get_token("/mut/items", &writer).await.echo();
    assert_eq!(e.header("x-user-id"), Some("wendy"), "{e:?}");
}

// ---------------------------------------------------------------------------------------------
// Identity headers: never from the client
// ---------------------------------------------------------------------------------------------

const SPOOFED: [(&str, &str); 5] = [
    ("X-User-Id", "mallory"),
    ("X-User-Roles", "admin,root"),
    ("X-Scopes", "orders:write admin:all"),
    ("X-Consumer", "acme"),
    ("X-Tenant", "t-evil"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_identity_never_reaches_backend_on_open_route() {
    let fx = fx().await;
    let r = fx.get("/open", &SPOOFED).await;
    let e = r.echo();
    for (name, _) in SPOOFED {
        assert_eq!(e.header(name), None, "{name} spoofed through: {e:?}");
    }
    // Lower-case names, repeated headers, via a raw request.
    let mut raw = String::from("GET /open HTTP/1.1\r\nHost: t\r\nConnection: close\r\n");
    for (name, v) in SPOOFED {
        raw.push_str(&format!("{}: {v}\r\n", name.to_ascii_lowercase()));
        raw.push_str(&format!("{name}: {v}-2\r\n"));
    }
    raw.push_str("\r\n");
    let e = fx.gw.raw(&raw).await.echo();
    for (name, _) in SPOOFED {
        assert_eq!(e.header(name), None, "{name} spoofed through: {e:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_identity_replaced_on_authenticated_route() {
    let fx = fx().await;
    let t = rs1(&with(alice(), &[("tenant", json!("t-1"))]));
    let auth = bearer(&t);
    let mut headers = vec![("authorization", auth.as_str())];
    headers.extend(SPOOFED);
    let e = fx.get("/rs", &headers).await.echo();
    assert_eq!(e.header("x-user-id"), Some("alice"), "{e:?}");
    assert_eq!(e.header("x-user-roles"), Some("admin,staff"), "{e:?}");
    assert_eq!(
        e.header("x-scopes"),
        Some("orders:read orders:write"),
        "{e:?}"
    );
    assert_eq!(e.header("x-tenant"), Some("t-1"), "{e:?}");
    assert_eq!(e.header("x-consumer"), None, "{e:?}");

    // A token without roles/scope/tenant: the spoofed values are removed, not kept.
    let bare = rs1(&with(
        claims("bob", &[], ""),
        &[("roles", Value::Null), ("scope", Value::Null)],
    ));
    let auth = bearer(&bare);
    let mut headers = vec![("authorization", auth.as_str())];
    headers.extend(SPOOFED);
    let e = fx.get("/rs", &headers).await.echo();
    assert_eq!(e.header("x-user-id"), Some("bob"), "{e:?}");
    for name in ["x-user-roles", "x-scopes", "x-tenant", "x-consumer"] {
        assert_eq!(e.header(name), None, "{name} spoofed through: {e:?}");
    }

    // API key route: X-Consumer is the key's id, the rest is stripped.
    let mut headers = vec![("x-api-key", GLOBEX_KEY)];
    headers.extend(SPOOFED);
    let e = fx.get("/key", &headers).await.echo();
    assert_eq!(e.header("x-consumer"), Some("globex"), "{e:?}");
    for name in ["x-user-id", "x-user-roles", "x-scopes", "x-tenant"] {
        assert_eq!(e.header(name), None, "{name} spoofed through: {e:?}");
    }
}

/// `X_User_Roles` is another header name than `X-User-Roles`, but CGI-style backends (WSGI,
/// Rack, PHP-FPM, nginx `fastcgi_param`/`uwsgi_param`) turn both into `HTTP_X_USER_ROLES`, so a
/// client sending the underscore spelling spoofs the identity header there (nginx drops such
/// headers by default: `underscores_in_headers off`). The backend must get no header that maps
/// to an identity header other than the one the gateway set itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn underscore_spelling_of_identity_headers_is_not_forwarded() {
    let fx = fx().await;
    let spoof = "X_User_Id: mallory\r\nX_User_Roles: admin\r\nX_Scopes: admin:all\r\n\
                 X_Consumer: acme\r\nx_tenant: t-evil\r\n";
    // A token with a subject but no roles/scope/tenant: the gateway sets X-User-Id only.
    let t = rs1(&with(
        claims("bob", &[], ""),
        &[("roles", Value::Null), ("scope", Value::Null)],
    ));
    for (route, auth) in [
        ("/open", String::new()),
        ("/rs", format!("Authorization: Bearer {t}\r\n")),
        ("/key", format!("X-API-Key: {GLOBEX_KEY}\r\n")),
    ] {
        let raw =
            format!("GET {route} HTTP/1.1\r\nHost: t\r\n{auth}{spoof}Connection: close\r\n\r\n");
        let e = fx.gw.raw(&raw).await.echo();
        let cgi = |name: &str| name.to_ascii_uppercase().replace('-', "_");
        let identity = [
            "X-User-Id",
            "X-User-Roles",
            "X-Scopes",
            "X-Consumer",
            "X-Tenant",
        ];
        for (name, value) in &e.headers {
            let is_identity = identity.iter().any(|h| cgi(h) == cgi(name));
            assert!(
                !is_identity || name.contains('-'),
                "{route}: the backend got `{name}: {value}` from the client, which a CGI-style \
                 backend reads as HTTP_{}: {e:?}",
                cgi(name)
            );
        }
    }
}

/// `Connection: X-User-Id` asks a hop to drop that header. The gateway must neither let it
/// remove the identity it sets nor let a client header survive in its place, and it must not
/// hand the backend a `Connection` header that nominates an identity header (the next hop would
/// then drop the verified value).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_header_cannot_remove_or_replace_identity() {
    let fx = fx().await;
    let t = rs1(&alice());
    for conn in [
        "X-User-Id",
        "close, X-User-Id, X-User-Roles, X-Scopes",
        "keep-alive, x-user-id",
    ] {
        let raw = format!(
            "GET /rs HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {t}\r\nX-User-Id: mallory\r\n\
             X-User-Roles: root\r\nConnection: {conn}\r\n\r\n"
        );
        let r = fx.gw.raw(&raw).await;
        let e = r.echo();
        assert_eq!(
            e.header("x-user-id"),
            Some("alice"),
            "Connection: {conn}: {e:?}"
        );
        assert_eq!(
            e.header("x-user-roles"),
            Some("admin,staff"),
            "Connection: {conn}: {e:?}"
        );
        assert_eq!(
            e.header("x-scopes"),
            Some("orders:read orders:write"),
            "Connection: {conn}: {e:?}"
        );
        let upstream_conn = e
            .header("connection")
            .unwrap_or_default()
            .to_ascii_lowercase();
        for h in ["x-user-id", "x-user-roles", "x-scopes"] {
            assert!(
                !upstream_conn.contains(h),
                "the backend got `Connection: {upstream_conn}` nominating {h} (client sent \
                 `Connection: {conn}`): a next hop would drop the verified identity: {e:?}"
            );
        }
    }

    // API key: X-Consumer nominated.
    let raw = format!(
        "GET /key HTTP/1.1\r\nHost: t\r\nX-API-Key: {ACME_KEY}\r\nX-Consumer: evil\r\n\
         Connection: close, X-Consumer\r\n\r\n"
    );
    let e = fx.gw.raw(&raw).await.echo();
    assert_eq!(e.header("x-consumer"), Some("acme"), "{e:?}");
    let upstream_conn = e
        .header("connection")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(!upstream_conn.contains("x-consumer"), "{e:?}");

    // Open route: the nominated spoofed header does not come through either.
    let raw = "GET /open HTTP/1.1\r\nHost: t\r\nX-User-Id: mallory\r\nConnection: close, X-User-Id\r\n\r\n";
    let e = fx.gw.raw(raw).await.echo();
    assert_eq!(e.header("x-user-id"), None, "{e:?}");
}

// ---------------------------------------------------------------------------------------------
// API keys, JWT-or-key
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_valid_invalid_absent() {
    let fx = fx().await;
    let e = fx.get("/key/x", &[("x-api-key", ACME_KEY)]).await.echo();
    assert_eq!(e.header("x-consumer"), Some("acme"), "{e:?}");
    assert_eq!(e.header("x-user-id"), None, "{e:?}");
    let e = fx.get("/key/x", &[("X-API-KEY", GLOBEX_KEY)]).await.echo();
    assert_eq!(e.header("x-consumer"), Some("globex"), "{e:?}");
    assert_eq!(fx.b.hits(), 2);

    let almost = format!("{ACME_KEY}x");
    fx.expect_401(
        "GET",
        "/key/x",
        &[("x-api-key", almost.as_str())],
        "key",
        "invalid_api_key",
    )
    .await;
    // The digest itself is not the key.
    let digest = sha256_hex(ACME_KEY);
    fx.expect_401(
        "GET",
        "/key/x",
        &[("x-api-key", digest.as_str())],
        "key",
        "invalid_api_key",
    )
    .await;
    fx.expect_401("GET", "/key/x", &[], "key", "missing").await;
    // A key in the wrong header is no key.
    fx.expect_401(
        "GET",
        "/key/x",
        &[("x-api-token", ACME_KEY)],
        "key",
        "missing",
    )
    .await;
    // A bearer token is not accepted on a key-only route.
    let auth = bearer(&rs1(&alice()));
    fx.expect_401(
        "GET",
        "/key/x",
        &[("authorization", auth.as_str())],
        "key",
        "missing",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_roles_are_authorised() {
    let fx = fx().await;
    let e = fx.get("/keyrole", &[("x-api-key", ACME_KEY)]).await.echo();
    assert_eq!(e.header("x-consumer"), Some("acme"));
    let hits = fx.b.hits();
    let r = fx.get("/keyrole", &[("x-api-key", GLOBEX_KEY)]).await;
    r.assert_gateway_error(403, "forbidden");
    assert_not_echoed(&r, GLOBEX_KEY);
    assert_eq!(fx.b.hits(), hits);
    assert_eq!(auth_failures(&fx.gw, "keyrole", "forbidden").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_with_jwt_or_api_key_accepts_either() {
    let fx = fx().await;
    let e = fx.get_token("/either", &rs1(&alice())).await.echo();
    assert_eq!(e.header("x-user-id"), Some("alice"), "{e:?}");
    assert_eq!(e.header("x-consumer"), None, "{e:?}");
    let e = fx.get("/either", &[("x-api-key", ACME_KEY)]).await.echo();
    assert_eq!(e.header("x-consumer"), Some("acme"), "{e:?}");
    assert_eq!(e.header("x-user-id"), None, "{e:?}");
    assert_eq!(fx.b.hits(), 2);

    fx.expect_401("GET", "/either", &[], "either", "missing")
        .await;
    fx.expect_401(
        "GET",
        "/either",
        &[("x-api-key", "nope-not-a-key-at-all")],
        "either",
        "invalid_api_key",
    )
    .await;
    fx.expect_401_token("/either", &rs2(&alice()), "either", "bad_signature")
        .await;
}

// ---------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_failure_metric_counts_by_route_and_reason() {
    let fx = fx().await;
    assert_eq!(auth_failures(&fx.gw, "rs", "missing").await, 0);
    for _ in 0..3 {
        assert_eq!(fx.get("/rs", &[]).await.status, 401);
    }
    let expired = rs1(&with(alice(), &[("exp", json!(now() - 100))]));
    for _ in 0..2 {
        assert_eq!(
            fx.get_token("/hs", &hs(&with(alice(), &[("exp", json!(now() - 100))])))
                .await
                .status,
            401
        );
        assert_eq!(fx.get_token("/rs", &expired).await.status, 401);
    }
    assert_eq!(
        fx.get("/key", &[("x-api-key", "wrong-key-123456")])
            .await
            .status,
        401
    );
    let user = rs1(&claims("bob", &["user"], ""));
    assert_eq!(fx.get_token("/admin", &user).await.status, 403);
    // Successes are not failures.
    assert_eq!(fx.get_token("/rs", &rs1(&alice())).await.status, 200);

    let lines = auth_metric_lines(&fx.gw).await;
    for (route, reason, n) in [
        ("rs", "missing", 3),
        ("rs", "expired", 2),
        ("hs", "expired", 2),
        ("key", "invalid_api_key", 1),
        ("admin", "forbidden", 1),
        ("rs", "bad_signature", 0),
        ("admin", "missing", 0),
    ] {
        assert_eq!(
            auth_failures(&fx.gw, route, reason).await,
            n,
            "route={route} reason={reason}\n{lines}"
        );
    }
    // Labels are bounded: no series carries a path, a token or a key.
    for line in lines.lines() {
        assert!(
            !line.contains("/rs") && !line.contains("eyJ") && !line.contains("wrong-key"),
            "{line}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// No secret in responses or logs (a gateway started here, with `access_log: stdout`)
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_secret_or_key_in_responses_or_logs() {
    const ENV_SECRET: &str = "env-provided-hs256-secret-for-the-leak-test-77";
    let b = Backend::start("echo").await;
    let keys = tempfile::tempdir().expect("tempdir");
    let mut body = auth_config(&b, keys.path());
    // One more provider whose secret comes from the environment of the gateway process only.
    body = body.replace(
        "  jwt:\n",
        "  jwt:\n    envhs:\n      algorithms: [HS256]\n      secret_env: TOLLGATE_TEST_LEAK_SECRET\n",
    );
    body.push_str("  - name: envhs\n    match: {path_prefix: /envhs}\n    upstream: echo\n    auth: {jwt: envhs}\n");
    let gw = LoggedGateway::start(
        "stdout",
        &[],
        &[("TOLLGATE_TEST_LEAK_SECRET", ENV_SECRET)],
        &body,
    )
    .await;

    let env_token = |c: &Value| {
        sign_with(
            Algorithm::HS256,
            &EncodingKey::from_secret(ENV_SECRET.as_bytes()),
            None,
            c,
        )
    };
    let valid_rs = rs1(&alice());
    let valid_hs = hs(&alice());
    let valid_env = env_token(&alice());
    let expired = rs1(&with(alice(), &[("exp", json!(now() - 100))]));
    let bad_sig = rs2(&alice());
    let forged_hs = sign_with(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"attacker-secret-attacker-secret-attacker"),
        None,
        &alice(),
    );
    let wrong_role = rs1(&claims("bob", &["user"], ""));
    let none = hand_token(r#"{"alg":"none"}"#, &alice().to_string(), "");
    let bad_key = "partner-key-that-is-wrong-1234";

    let mut responses: Vec<(String, Resp)> = Vec::new();
    let mut expect = |what: &str, r: Resp, status: u16| {
        assert_eq!(r.status, status, "{what}: {r}");
        responses.push((what.to_string(), r));
    };
    let a = |t: &str| bearer(t);
    expect(
        "valid rs",
        gw.request("GET", "/rs", &[("authorization", a(&valid_rs).as_str())])
            .await,
        200,
    );
    expect(
        "valid hs",
        gw.request("GET", "/hs", &[("authorization", a(&valid_hs).as_str())])
            .await,
        200,
    );
    expect(
        "valid env hs",
        gw.request(
            "GET",
            "/envhs",
            &[("authorization", a(&valid_env).as_str())],
        )
        .await,
        200,
    );
    expect(
        "expired",
        gw.request("GET", "/rs", &[("authorization", a(&expired).as_str())])
            .await,
        401,
    );
    expect(
        "bad sig",
        gw.request("GET", "/rs", &[("authorization", a(&bad_sig).as_str())])
            .await,
        401,
    );
    expect(
        "forged hs",
        gw.request("GET", "/hs", &[("authorization", a(&forged_hs).as_str())])
            .await,
        401,
    );
    expect(
        "alg none",
        gw.request("GET", "/rs", &[("authorization", a(&none).as_str())])
            .await,
        401,
    );
    expect(
        "forbidden",
        gw.request(
            "GET",
            "/admin",
            &[("authorization", a(&wrong_role).as_str())],
        )
        .await,
        403,
    );
    expect(
        "query token",
        gw.request("GET", &format!("/qc/q?access_token={valid_rs}&k=v"), &[])
            .await,
        200,
    );
    expect(
        "bad query token",
        gw.request("GET", &format!("/qc/q?access_token={bad_sig}"), &[])
            .await,
        401,
    );
    expect(
        "ambiguous",
        gw.request(
            "GET",
            &format!("/qc?access_token={valid_rs}"),
            &[("authorization", a(&valid_rs).as_str())],
        )
        .await,
        401,
    );
    expect(
        "cookie token",
        gw.request(
            "GET",
            "/qc",
            &[("cookie", format!("tg_token={valid_rs}").as_str())],
        )
        .await,
        200,
    );
    expect(
        "bad cookie token",
        gw.request(
            "GET",
            "/qc",
            &[("cookie", format!("tg_token={expired}").as_str())],
        )
        .await,
        401,
    );
    expect(
        "api key",
        gw.request("GET", "/key", &[("x-api-key", ACME_KEY)]).await,
        200,
    );
    expect(
        "bad api key",
        gw.request("GET", "/key", &[("x-api-key", bad_key)]).await,
        401,
    );
    expect(
        "api key roles",
        gw.request("GET", "/keyrole", &[("x-api-key", GLOBEX_KEY)])
            .await,
        403,
    );
    let n_requests = responses.len();

    // Wait (bounded) for the access log: one line per request.
    let deadline = Instant::now() + Duration::from_secs(10);
    let stdout = loop {
        let out = gw.read("stdout.log");
        let lines = out.lines().filter(|l| l.contains("\"request_id\"")).count();
        if lines >= n_requests || Instant::now() >= deadline {
            break out;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let stderr = gw.read("stderr.log");
    let log_lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("\"request_id\""))
        .collect();
    assert!(
        log_lines.len() >= n_requests,
        "expected ≥ {n_requests} access log lines on stdout, got {}:\n{stdout}",
        log_lines.len()
    );
    // The log is real: the consumer of an authenticated request, the 401s, the route.
    assert!(
        log_lines
            .iter()
            .any(|l| l.contains("\"consumer\":\"alice\"")),
        "no access log line names consumer alice:\n{stdout}"
    );
    assert!(
        log_lines
            .iter()
            .any(|l| l.contains("\"consumer\":\"acme\"")),
        "no access log line names consumer acme:\n{stdout}"
    );
    assert!(
        log_lines.iter().any(|l| l.contains("\"status\":401")),
        "{stdout}"
    );

    let hs_file_secret = HS_SECRET.to_string();
    let mut secrets: Vec<(&str, String)> = vec![
        ("HS secret (file)", hs_file_secret),
        ("HS secret (env)", ENV_SECRET.to_string()),
        ("API key acme", ACME_KEY.to_string()),
        ("API key globex", GLOBEX_KEY.to_string()),
        ("wrong API key", bad_key.to_string()),
    ];
    for (what, t) in [
        ("valid rs token", &valid_rs),
        ("valid hs token", &valid_hs),
        ("valid env token", &valid_env),
        ("expired token", &expired),
        ("bad-signature token", &bad_sig),
        ("forged hs token", &forged_hs),
        ("wrong-role token", &wrong_role),
        ("alg none token", &none),
    ] {
        secrets.push((what, t.clone()));
        // Each part long enough to be identifying on its own (the signature in particular).
        for part in t.split('.').filter(|p| p.len() >= 16) {
            secrets.push((what, part.to_string()));
        }
    }

    for (what, secret) in &secrets {
        for (req, r) in &responses {
            // A 200 body is the echo backend reporting the request it got (which carries the
            // credential upstream); every other body was written by the gateway.
            assert!(
                r.status == 200 || !r.text().contains(secret.as_str()),
                "{what} in the body of the {req:?} response: {r}"
            );
            for (n, v) in &r.headers {
                assert!(
                    !v.contains(secret.as_str()),
                    "{what} in response header {n} ({req:?}): {r}"
                );
            }
        }
        for line in stdout.lines() {
            assert!(
                !line.contains(secret.as_str()),
                "{what} in a stdout line: {line}"
            );
        }
        for line in stderr.lines() {
            assert!(
                !line.contains(secret.as_str()),
                "{what} in a stderr line: {line}"
            );
        }
    }
    // Query strings with the token are not logged either.
    assert!(
        !stdout.contains("access_token"),
        "the query string was logged:\n{stdout}"
    );
}

// ---------------------------------------------------------------------------------------------
// `tollgate check`
// ---------------------------------------------------------------------------------------------

const CHECK_SERVER: &str = r#"server:
  listen: ["127.0.0.1:18080"]
  admin_listen: "127.0.0.1:19901"
  pid_file: "@DIR@/tollgate.pid"
  upgrade_sock: "@DIR@/upgrade.sock"
  access_log: "off"

upstreams:
  echo:
    backends: ["127.0.0.1:4001"]
"#;

/// A config with one `main` JWT provider (`provider` = its YAML lines, indented 6) and one route
/// using provider `route_provider`.
fn check_config(provider: &str, route_provider: &str) -> String {
    format!(
        "{CHECK_SERVER}\nauth:\n  jwt:\n    main:\n{provider}\nroutes:\n  - name: r\n    match: {{path_prefix: /}}\n    upstream: echo\n    auth: {{jwt: {route_provider}}}\n"
    )
}

/// `check` exits 1 with a stderr line `error: <path>...` containing every fragment.
#[track_caller]
fn assert_check_rejects(yaml: &str, env: &[(&str, Option<&str>)], path: &str, fragments: &[&str]) {
    assert_check_rejects_with(yaml, env, &format!("error: {path}"), fragments);
}

fn key_line(field: &str, file: &str) -> String {
    format!("      {field}: \"{}\"", fixture(file))
}

#[test]
fn check_accepts_valid_auth_config() {
    let provider = format!(
        "      algorithms: [RS256]\n{}\n      issuer: https://idp.test\n      audience: [api, other]",
        key_line("public_key_file", "rsa1_public.pem")
    );
    let (code, out, err) = check(&check_config(&provider, "main"));
    assert_eq!(code, 0, "a valid auth config must pass\n{err}\n{out}");
}

#[test]
fn check_rejects_hs256_with_public_key() {
    let provider = format!(
        "      algorithms: [HS256]\n{}",
        key_line("public_key_file", "rsa1_public.pem")
    );
    assert_check_rejects(
        &check_config(&provider, "main"),
        &[],
        "auth.jwt.main.algorithms",
        &["confusion"],
    );
}

#[test]
fn check_rejects_mixed_rs_and_hs_algorithms() {
    let provider = format!(
        "      algorithms: [RS256, HS256]\n{}",
        key_line("public_key_file", "rsa1_public.pem")
    );
    assert_check_rejects(
        &check_config(&provider, "main"),
        &[],
        "auth.jwt.main.algorithms",
        &["RSA", "HMAC"],
    );
}

#[test]
fn check_rejects_none_algorithm() {
    for algs in ["[none]", "[RS256, none]", "[NONE]"] {
        let provider = format!(
            "      algorithms: {algs}\n{}",
            key_line("public_key_file", "rsa1_public.pem")
        );
        assert_check_rejects(
            &check_config(&provider, "main"),
            &[],
            "auth.jwt.main.algorithms",
            &["none"],
        );
    }
}

#[test]
fn check_rejects_unknown_provider_in_route_with_suggestion() {
    let provider = format!(
        "      algorithms: [RS256]\n{}",
        key_line("public_key_file", "rsa1_public.pem")
    );
    assert_check_rejects(
        &check_config(&provider, "mian"),
        &[],
        "routes[0].auth.jwt",
        &["mian", "did you mean \"main\""],
    );
    // Same for an API key provider.
    let yaml = format!(
        "{CHECK_SERVER}\nauth:\n  api_keys:\n    partners:\n      keys: [{{id: acme, sha256: \"{}\"}}]\nroutes:\n  - name: r\n    match: {{path_prefix: /}}\n    upstream: echo\n    auth: {{api_key: partnres}}\n",
        sha256_hex(ACME_KEY)
    );
    assert_check_rejects(
        &yaml,
        &[],
        "routes[0].auth.api_key",
        &["partnres", "did you mean \"partners\""],
    );
}

#[test]
fn check_rejects_missing_secret_env() {
    let provider = "      algorithms: [HS256]\n      secret_env: TOLLGATE_TEST_UNSET_SECRET_VAR";
    assert_check_rejects(
        &check_config(provider, "main"),
        &[("TOLLGATE_TEST_UNSET_SECRET_VAR", None)],
        "auth.jwt.main.secret_env",
        &["TOLLGATE_TEST_UNSET_SECRET_VAR"],
    );
    // Set but too short: refused too, and the value is not printed.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.yaml");
    std::fs::write(
        &file,
        check_config(provider, "main").replace("@DIR@", &dir.path().display().to_string()),
    )
    .unwrap();
    let (code, out, err) = check_file_env(
        &file,
        &[("TOLLGATE_TEST_UNSET_SECRET_VAR", Some("short-secret-xyz"))],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.lines()
            .any(|l| l.starts_with("error: auth.jwt.main.secret_env")),
        "{err}"
    );
    assert!(
        !err.contains("short-secret-xyz") && !out.contains("short-secret-xyz"),
        "{err}{out}"
    );
}

#[test]
fn check_rejects_unreadable_key_files() {
    let missing =
        "      algorithms: [RS256]\n      public_key_file: \"/nonexistent/tollgate/jwt.pem\"";
    assert_check_rejects(
        &check_config(missing, "main"),
        &[],
        "auth.jwt.main.public_key_file",
        &["/nonexistent/tollgate/jwt.pem"],
    );
    let secret = "      algorithms: [HS256]\n      secret_file: \"/nonexistent/tollgate/secret\"";
    assert_check_rejects(
        &check_config(secret, "main"),
        &[],
        "auth.jwt.main.secret_file",
        &["/nonexistent/tollgate/secret"],
    );
    let jwks = "      algorithms: [RS256]\n      jwks_file: \"/nonexistent/tollgate/jwks.json\"";
    assert_check_rejects(
        &check_config(jwks, "main"),
        &[],
        "auth.jwt.main.jwks_file",
        &["/nonexistent/tollgate/jwks.json"],
    );
    // Readable, but not a key of the right kind.
    let not_pem = format!(
        "      algorithms: [RS256]\n{}",
        key_line("public_key_file", "README.md")
    );
    assert_check_rejects(
        &check_config(&not_pem, "main"),
        &[],
        "auth.jwt.main.public_key_file",
        &[],
    );
    let ec_for_rs = format!(
        "      algorithms: [RS256]\n{}",
        key_line("public_key_file", "ec_public.pem")
    );
    assert_check_rejects(
        &check_config(&ec_for_rs, "main"),
        &[],
        "auth.jwt.main.public_key_file",
        &[],
    );
}

/// `run` refuses to start on the same problems.
#[test]
fn run_refuses_alg_confusion_config() {
    let provider = format!(
        "      algorithms: [HS256]\n{}",
        key_line("public_key_file", "rsa1_public.pem")
    );
    let o = run_once(&check_config(&provider, "main"), Duration::from_secs(20));
    assert!(
        !o.timed_out,
        "run started with an alg-confusion config\n{}",
        o.stderr
    );
    assert_ne!(o.code, Some(0), "{}", o.stderr);
    assert!(
        o.stderr.contains("auth.jwt.main.algorithms"),
        "run must name the YAML path:\n{}",
        o.stderr
    );
}
