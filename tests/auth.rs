//! Authentication and authorisation at the edge (DESIGN.md request path steps 4, 5 and 8; the
//! 401/403 rows of the error table; `tollgate_auth_failures_total`; `tollgate check` on auth
//! config). Tokens are signed here with the test-only keys in `tests/fixtures/`.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------------------------
// Keys, tokens
// ---------------------------------------------------------------------------------------------

/// The HS256 shared secret (≥ 32 bytes), written to a file for the `hs` provider.
const HS_SECRET: &str = "tollgate-auth-tests-hs256-secret-0123456789";
const ISS: &str = "https://idp.test";
const AUD: &str = "api";
/// API keys; the config holds only their SHA-256.
const ACME_KEY: &str = "acme-live-key-4f1c9a7e2b";
const GLOBEX_KEY: &str = "globex-live-key-8d02bb61c3";

fn fixture_dir() -> String {
    format!("{}/tests/fixtures", env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> String {
    format!("{}/{name}", fixture_dir())
}

fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap_or_else(|e| panic!("read fixture {name}: {e}"))
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Standard claims: issuer, audience `api`, valid for 5 minutes.
fn claims(sub: &str, roles: &[&str], scope: &str) -> Value {
    let n = now();
    json!({
        "sub": sub,
        "roles": roles,
        "scope": scope,
        "iss": ISS,
        "aud": AUD,
        "iat": n,
        "exp": n + 300,
    })
}

/// alice: roles admin+staff, scopes orders:read orders:write.
fn alice() -> Value {
    claims("alice", &["admin", "staff"], "orders:read orders:write")
}

/// `claims` with some fields replaced (or removed, with `Value::Null`).
fn with(mut c: Value, changes: &[(&str, Value)]) -> Value {
    let o = c.as_object_mut().expect("claims object");
    for (k, v) in changes {
        if v.is_null() {
            o.remove(*k);
        } else {
            o.insert(k.to_string(), v.clone());
        }
    }
    c
}

fn sign_with(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_string);
    encode(&h, claims, key).expect("sign token")
}

fn rsa_key(file: &str) -> EncodingKey {
    EncodingKey::from_rsa_pem(&fixture_bytes(file)).expect("rsa private key")
}

/// RS256, signed by `rsa1` (the `rs` provider's key).
fn rs1(claims: &Value) -> String {
    sign_with(Algorithm::RS256, &rsa_key("rsa1_private.pem"), None, claims)
}

/// RS256, signed by `rsa2`.
fn rs2(claims: &Value) -> String {
    sign_with(Algorithm::RS256, &rsa_key("rsa2_private.pem"), None, claims)
}

fn hs(claims: &Value) -> String {
    sign_with(
        Algorithm::HS256,
        &EncodingKey::from_secret(HS_SECRET.as_bytes()),
        None,
        claims,
    )
}

fn es(claims: &Value) -> String {
    let key = EncodingKey::from_ec_pem(&fixture_bytes("ec_private.pem")).expect("ec key");
    sign_with(Algorithm::ES256, &key, None, claims)
}

fn ed(claims: &Value) -> String {
    let key = EncodingKey::from_ed_pem(&fixture_bytes("ed_private.pem")).expect("ed key");
    sign_with(Algorithm::EdDSA, &key, None, claims)
}

/// Unpadded base64url (RFC 7515), for hand-built tokens.
fn b64url(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &x)| acc | (x as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// `b64(header).b64(payload).signature` from raw parts.
fn hand_token(header: &str, payload: &str, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        b64url(header.as_bytes()),
        b64url(payload.as_bytes())
    )
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

// ---------------------------------------------------------------------------------------------
// The standard gateway: every provider and route the tests below need
// ---------------------------------------------------------------------------------------------

const AUTH_CONFIG: &str = r#"upstreams:
  echo:
    backends: ["@BACKEND@"]

auth:
  jwt:
    hs:
      algorithms: [HS256]
      secret_file: "@HS_SECRET_FILE@"
      issuer: "https://idp.test"
      audience: [api, other]
      leeway: 30s
    rs:
      algorithms: [RS256]
      public_key_file: "@FIX@/rsa1_public.pem"
      issuer: "https://idp.test"
      audience: api
      leeway: 0s
      forward_claims: {sub: X-User-Id, roles: X-User-Roles, scope: X-Scopes, tenant: X-Tenant}
    rs2:
      algorithms: [RS256]
      public_key_file: "@FIX@/rsa2_public.pem"
      issuer: "https://idp.test"
      audience: api
      leeway: 0s
    es:
      algorithms: [ES256]
      public_key_file: "@FIX@/ec_public.pem"
      issuer: "https://idp.test"
      audience: api
    ed:
      algorithms: [EdDSA]
      public_key_file: "@FIX@/ed_public.pem"
      issuer: "https://idp.test"
      audience: api
    jwks:
      algorithms: [RS256]
      jwks_file: "@FIX@/jwks.json"
      issuer: "https://idp.test"
      audience: api
    qc:
      algorithms: [RS256]
      public_key_file: "@FIX@/rsa1_public.pem"
      issuer: "https://idp.test"
      audience: api
      leeway: 0s
      token_query: access_token
      token_cookie: tg_token
  api_keys:
    partners:
      header: X-API-Key
      forward_id: X-Consumer
      keys:
        - {id: acme, sha256: "@ACME_SHA@", roles: [partner]}
        - {id: globex, sha256: "@GLOBEX_SHA@"}

routes:
  - name: open
    match: {path_prefix: /open}
    upstream: echo
  - name: hs
    match: {path_prefix: /hs}
    upstream: echo
    auth: {jwt: hs}
  - name: rs
    match: {path_prefix: /rs}
    upstream: echo
    auth: {jwt: rs}
  - name: rs2
    match: {path_prefix: /rs2}
    upstream: echo
    auth: {jwt: rs2}
  - name: es
    match: {path_prefix: /es}
    upstream: echo
    auth: {jwt: es}
  - name: ed
    match: {path_prefix: /ed}
    upstream: echo
    auth: {jwt: ed}
  - name: jwks
    match: {path_prefix: /jwks}
    upstream: echo
    auth: {jwt: jwks}
  - name: qc
    match: {path_prefix: /qc}
    upstream: echo
    auth: {jwt: qc}
  - name: admin
    match: {path_prefix: /admin}
    upstream: echo
    auth: {jwt: rs, roles_any: [admin, ops]}
  - name: allroles
    match: {path_prefix: /allroles}
    upstream: echo
    auth: {jwt: rs, roles_all: [admin, staff]}
  - name: scoped
    match: {path_prefix: /scoped}
    upstream: echo
    auth: {jwt: rs, scopes_all: [orders:read, orders:write]}
  - name: mut
    match: {path_prefix: /mut}
    upstream: echo
    auth: {jwt: rs, required: mutating, roles_any: [writer]}
  - name: key
    match: {path_prefix: /key}
    upstream: echo
    auth: {api_key: partners}
  - name: keyrole
    match: {path_prefix: /keyrole}
    upstream: echo
    auth: {api_key: partners, roles_any: [partner]}
  - name: either
    match: {path_prefix: /either}
    upstream: echo
    auth: {jwt: rs, api_key: partners}
"#;

/// Writes the HS secret into `dir` and returns the full config body for `backend`.
fn auth_config(backend: &Backend, dir: &Path) -> String {
    let secret = dir.join("hs.secret");
    // A trailing newline, as `echo > file` leaves it: the gateway trims it.
    std::fs::write(&secret, format!("{HS_SECRET}\n")).expect("write secret file");
    AUTH_CONFIG
        .replace("@BACKEND@", &backend.addr())
        .replace("@HS_SECRET_FILE@", &secret.display().to_string())
        .replace("@FIX@", &fixture_dir())
        .replace("@ACME_SHA@", &sha256_hex(ACME_KEY))
        .replace("@GLOBEX_SHA@", &sha256_hex(GLOBEX_KEY))
}

struct Fx {
    b: Backend,
    gw: Gateway,
    _keys: tempfile::TempDir,
}

async fn fx() -> Fx {
    let b = Backend::start("echo").await;
    let keys = tempfile::tempdir().expect("tempdir");
    let body = auth_config(&b, keys.path());
    let gw = Gateway::start(&body).await;
    Fx { b, gw, _keys: keys }
}

impl Fx {
    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.gw.get_with(path, headers).await
    }

    async fn get_token(&self, path: &str, token: &str) -> Resp {
        let auth = bearer(token);
        self.gw
            .get_with(path, &[("authorization", auth.as_str())])
            .await
    }

    /// A request the gateway must refuse with 401 before the backend: checks the status, the
    /// JSON body, the RFC 6750 challenge, that the backend saw nothing, that the token does not
    /// come back, and that `tollgate_auth_failures_total{route,reason}` went up by one.
    async fn expect_401(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        route: &str,
        reason: &str,
    ) -> Resp {
        let hits = self.b.hits();
        let before = auth_failures(&self.gw, route, reason).await;
        let r = self.gw.request(method, path, headers).await;
        assert_unauthorized(&r);
        for (_, v) in headers {
            assert_not_echoed(&r, v);
        }
        assert_eq!(
            self.b.hits(),
            hits,
            "the backend must not see a refused request ({method} {path})"
        );
        let after = auth_failures(&self.gw, route, reason).await;
        assert_eq!(
            after,
            before + 1,
            "tollgate_auth_failures_total{{route={route:?},reason={reason:?}}} must go up by one \
             for {method} {path}; response: {r}\n--- metrics ---\n{}",
            auth_metric_lines(&self.gw).await
        );
        r
    }

    async fn expect_401_token(&self, path: &str, token: &str, route: &str, reason: &str) -> Resp {
        let auth = bearer(token);
        self.expect_401(
            "GET",
            path,
            &[("authorization", auth.as_str())],
            route,
            reason,
        )
        .await
    }

    /// 403 `forbidden` before the backend, counted with reason `forbidden`.
    async fn expect_403(&self, method: &str, path: &str, token: &str, route: &str) -> Resp {
        let hits = self.b.hits();
        let before = auth_failures(&self.gw, route, "forbidden").await;
        let auth = bearer(token);
        let r = self
            .gw
            .request(method, path, &[("authorization", auth.as_str())])
            .await;
        r.assert_gateway_error(403, "forbidden");
        assert_not_echoed(&r, token);
        assert_eq!(
            self.b.hits(),
            hits,
            "the backend must not see a 403 request"
        );
        assert_eq!(
            auth_failures(&self.gw, route, "forbidden").await,
            before + 1,
            "403 on {path} must be counted with reason=forbidden"
        );
        r
    }
}

/// 401 `unauthorized` JSON with `WWW-Authenticate: Bearer realm="tollgate", error="invalid_token",
/// error_description="..."`.
#[track_caller]
fn assert_unauthorized(r: &Resp) {
    r.assert_gateway_error(401, "unauthorized");
    let www = r.header_all("www-authenticate");
    assert_eq!(www.len(), 1, "exactly one WWW-Authenticate: {r}");
    let www = www[0];
    assert!(
        www.starts_with("Bearer "),
        "challenge scheme must be Bearer: {r}"
    );
    for part in [
        "realm=\"tollgate\"",
        "error=\"invalid_token\"",
        "error_description=\"",
    ] {
        assert!(www.contains(part), "WWW-Authenticate lacks {part}: {r}");
    }
    let desc = www
        .split("error_description=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_default();
    assert!(
        !desc.is_empty() && desc.len() <= 80,
        "error_description must be a short text: {r}"
    );
}

/// Neither the body nor any header of `r` contains `secret` (a token, a key, a header value
/// carrying one). Short values (< 12 chars) are not meaningful to search for.
#[track_caller]
fn assert_not_echoed(r: &Resp, secret: &str) {
    let needles: Vec<&str> = std::iter::once(secret)
        .chain(secret.strip_prefix("Bearer "))
        .chain(secret.split('.').filter(|p| p.len() >= 12))
        .filter(|s| s.len() >= 12)
        .collect();
    let text = r.text();
    for n in needles {
        assert!(!text.contains(n), "response body echoes a credential: {r}");
        for (name, v) in &r.headers {
            assert!(
                !v.contains(n),
                "response header {name} echoes a credential: {r}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------

async fn metrics_text(gw: &Gateway) -> String {
    let r = gw.admin_get("/metrics").await;
    assert_eq!(r.status, 200, "admin /metrics: {r}");
    r.text()
}

/// The `tollgate_auth_failures_total` sample lines.
async fn auth_metric_lines(gw: &Gateway) -> String {
    metrics_text(gw)
        .await
        .lines()
        .filter(|l| l.starts_with("tollgate_auth_failures_total"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Value of `tollgate_auth_failures_total{route,reason}`; 0 when the series does not exist yet.
async fn auth_failures(gw: &Gateway, route: &str, reason: &str) -> u64 {
    let text = metrics_text(gw).await;
    let route_l = format!("route=\"{route}\"");
    let reason_l = format!("reason=\"{reason}\"");
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("tollgate_auth_failures_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once('}') else {
            continue;
        };
        let labels: Vec<&str> = labels.split(',').map(str::trim).collect();
        if labels.contains(&route_l.as_str()) && labels.contains(&reason_l.as_str()) {
            let v: f64 = value
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("bad metric line {line:?}"));
            return v as u64;
        }
    }
    0
}

// ---------------------------------------------------------------------------------------------
// Valid tokens
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hs256_token_accepted_and_identity_forwarded() {
    let fx = fx().await;
    let r = fx.get_token("/hs/orders", &hs(&alice())).await;
    let e = r.echo();
    assert_eq!(e.path, "/hs/orders");
    assert_eq!(e.header("x-user-id"), Some("alice"), "{e:?}");
    assert_eq!(e.header("x-user-roles"), Some("admin,staff"), "{e:?}");
    assert_eq!(
        e.header("x-scopes"),
        Some("orders:read orders:write"),
        "{e:?}"
    );

    // The provider's audience is a list: a token for the other audience passes too.
    let t = hs(&with(
        claims("bob", &["user"], "a"),
        &[("aud", json!("other"))],
    ));
    let e = fx.get_token("/hs", &t).await.echo();
    assert_eq!(e.header("x-user-id"), Some("bob"), "{e:?}");
    assert_eq!(e.header("x-user-roles"), Some("user"), "{e:?}");
    assert_eq!(fx.b.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_es256_eddsa_tokens_accepted_and_identity_forwarded() {
    let fx = fx().await;
    for (path, token) in [
        ("/rs/x", rs1(&alice())),
        ("/es/x", es(&alice())),
        ("/ed/x", ed(&alice())),
    ] {
        let r = fx.get_token(path, &token).await;
        assert_eq!(r.status, 200, "{path}: {r}");
        let e = r.echo();
        assert_eq!(e.path, path);
        assert_eq!(e.header("x-user-id"), Some("alice"), "{path}: {e:?}");
        assert_eq!(
            e.header("x-user-roles"),
            Some("admin,staff"),
            "{path}: {e:?}"
        );
        assert_eq!(
            e.header("x-scopes"),
            Some("orders:read orders:write"),
            "{path}: {e:?}"
        );
    }
    assert_eq!(fx.b.hits(), 3);

    // A valid token of another provider's algorithm is not accepted.
    fx.expect_401_token("/rs", &es(&alice()), "rs", "disallowed_alg")
        .await;
    fx.expect_401_token("/es", &rs1(&alice()), "es", "disallowed_alg")
        .await;
}

/// Roles as a space/comma separated string, and a forwarded custom claim (`tenant`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn string_roles_and_custom_claim_forwarded() {
    let fx = fx().await;
    let c = with(
        alice(),
        &[
            ("roles", json!("admin staff")),
            ("scope", json!("orders:read")),
            ("tenant", json!("t-42")),
        ],
    );
    let e = fx.get_token("/rs", &rs1(&c)).await.echo();
    assert_eq!(e.header("x-user-roles"), Some("admin,staff"), "{e:?}");
    assert_eq!(e.header("x-scopes"), Some("orders:read"), "{e:?}");
    assert_eq!(e.header("x-tenant"), Some("t-42"), "{e:?}");
}

// ---------------------------------------------------------------------------------------------
// Invalid tokens: each a 401 before the backend, counted with its reason
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_rejected() {
    let fx = fx().await;
    let t = rs1(&with(alice(), &[("exp", json!(now() - 60))]));
    let r = fx.expect_401_token("/rs", &t, "rs", "expired").await;
    assert!(
        r.header("www-authenticate")
            .unwrap_or_default()
            .contains("expired"),
        "the challenge should say the token expired: {r}"
    );
}

/// The `hs` provider has `leeway: 30s`: 10 s past `exp` passes, 2 minutes does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leeway_applies_to_exp() {
    let fx = fx().await;
    let t = hs(&with(alice(), &[("exp", json!(now() - 10))]));
    let e = fx.get_token("/hs", &t).await.echo();
    assert_eq!(e.header("x-user-id"), Some("alice"));
    let t = hs(&with(alice(), &[("exp", json!(now() - 120))]));
    fx.expect_401_token("/hs", &t, "hs", "expired").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_yet_valid_token_rejected() {
    let fx = fx().await;
    let t = rs1(&with(alice(), &[("nbf", json!(now() + 300))]));
    fx.expect_401_token("/rs", &t, "rs", "not_yet_valid").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_without_exp_rejected() {
    let fx = fx().await;
    let t = rs1(&with(alice(), &[("exp", Value::Null)]));
    fx.expect_401_token("/rs", &t, "rs", "missing_claim").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_issuer_rejected() {
    let fx = fx().await;
    let t = rs1(&with(alice(), &[("iss", json!("https://evil.test"))]));
    fx.expect_401_token("/rs", &t, "rs", "wrong_issuer").await;
    let t = rs1(&with(alice(), &[("iss", Value::Null)]));
    fx.expect_401_token("/rs", &t, "rs", "missing_claim").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_audience_rejected() {
    let fx = fx().await;
    let t = rs1(&with(alice(), &[("aud", json!("billing"))]));
    fx.expect_401_token("/rs", &t, "rs", "wrong_audience").await;
    // `other` is accepted by the hs provider only.
    let t = rs1(&with(alice(), &[("aud", json!("other"))]));
    fx.expect_401_token("/rs", &t, "rs", "wrong_audience").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signature_rejected() {
    let fx = fx().await;
    // Signed by the wrong key.
    fx.expect_401_token("/rs", &rs2(&alice()), "rs", "bad_signature")
        .await;
    // A valid token whose payload was swapped for another identity.
    let good = rs1(&claims("bob", &["user"], ""));
    let parts: Vec<&str> = good.split('.').collect();
    let evil_payload = b64url(alice().to_string().as_bytes());
    let forged = format!("{}.{evil_payload}.{}", parts[0], parts[2]);
    fx.expect_401_token("/rs", &forged, "rs", "bad_signature")
        .await;
    // HS256 token signed with some other secret.
    let t = sign_with(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"another-secret-that-is-at-least-32-bytes-long"),
        None,
        &alice(),
    );
    fx.expect_401_token("/hs", &t, "hs", "bad_signature").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alg_none_rejected() {
    let fx = fx().await;
    let payload = alice().to_string();
    for header in [
        r#"{"alg":"none","typ":"JWT"}"#,
        r#"{"alg":"None","typ":"JWT"}"#,
        r#"{"alg":"NONE"}"#,
    ] {
        let hits = fx.b.hits();
        for t in [
            hand_token(header, &payload, ""),
            hand_token(header, &payload, "AAAA"),
        ] {
            let r = fx.get_token("/rs", &t).await;
            assert_unauthorized(&r);
            assert_not_echoed(&r, &t);
        }
        assert_eq!(fx.b.hits(), hits, "alg {header} reached the backend");
    }
    // `none` is not an algorithm at all: reported as malformed (or disallowed), never passed.
    let counted = auth_failures(&fx.gw, "rs", "malformed").await
        + auth_failures(&fx.gw, "rs", "disallowed_alg").await;
    assert_eq!(
        counted,
        6,
        "six alg:none tokens must be counted as malformed/disallowed_alg:\n{}",
        auth_metric_lines(&fx.gw).await
    );
}

/// The classic confusion attack: HS256 signed with the RS public key's PEM bytes as the
/// HMAC secret, presented to an RS256 provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hs256_signed_with_rs_public_key_rejected() {
    let fx = fx().await;
    let public = fixture_bytes("rsa1_public.pem");
    let forged = sign_with(
        Algorithm::HS256,
        &EncodingKey::from_secret(&public),
        None,
        &alice(),
    );
    fx.expect_401_token("/rs", &forged, "rs", "disallowed_alg")
        .await;
    // Same with the PEM's trailing newline trimmed, and against the JWKS provider.
    let trimmed = String::from_utf8(public).unwrap();
    let forged = sign_with(
        Algorithm::HS256,
        &EncodingKey::from_secret(trimmed.trim_end().as_bytes()),
        None,
        &alice(),
    );
    fx.expect_401_token("/rs", &forged, "rs", "disallowed_alg")
        .await;
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("key-2026-01".into());
    let forged = encode(
        &h,
        &alice(),
        &EncodingKey::from_secret(&fixture_bytes("rsa1_public.pem")),
    )
    .unwrap();
    fx.expect_401_token("/jwks", &forged, "jwks", "disallowed_alg")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_tokens_rejected() {
    let fx = fx().await;
    let good = rs1(&alice());
    let parts: Vec<&str> = good.split('.').collect();
    let cases = [
        "not-a-jwt".to_string(),
        "a.b.c".to_string(),
        format!("{}.{}", parts[0], parts[1]),
        format!("{good}.extra"),
        // invalid base64url characters
        format!("{}.{}!!.{}", parts[0], parts[1], parts[2]),
        "!!!!.####.$$$$".to_string(),
        // header is base64 of something that is not JSON
        format!("{}.{}.{}", b64url(b"{not json"), parts[1], parts[2]),
        // payload is base64 of something that is not JSON
        format!("{}.{}.{}", parts[0], b64url(b"[1,2"), parts[2]),
        // header JSON without alg
        format!("{}.{}.{}", b64url(br#"{"typ":"JWT"}"#), parts[1], parts[2]),
    ];
    let hits = fx.b.hits();
    for t in &cases {
        let r = fx.get_token("/rs", t).await;
        assert_unauthorized(&r);
        assert_not_echoed(&r, t);
    }
    assert_eq!(fx.b.hits(), hits, "a malformed token reached the backend");
    let malformed = auth_failures(&fx.gw, "rs", "malformed").await;
    assert!(
        malformed >= 7,
        "most of these must be counted as malformed, got {malformed}:\n{}",
        auth_metric_lines(&fx.gw).await
    );
    // Still alive and serving.
    assert_eq!(fx.get_token("/rs", &good).await.status, 200);
}

/// A 10 KB token (header and payload valid JSON, garbage padding claim, wrong signature) and a
/// 20 KB one: refused with 401, no crash; the gateway keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_token_rejected_without_crash() {
    let fx = fx().await;
    let padding = "x".repeat(10 * 1024);
    let big = rs2(&with(alice(), &[("pad", json!(padding))]));
    assert!(big.len() > 10 * 1024, "token is {} bytes", big.len());
    fx.expect_401_token("/rs", &big, "rs", "bad_signature")
        .await;

    let huge = format!(
        "{}.{}.{}",
        "A".repeat(7000),
        "B".repeat(7000),
        "C".repeat(7000)
    );
    // Over the gateway's 16 KiB token limit: refused without parsing.
    fx.expect_401_token("/rs", &huge, "rs", "malformed").await;

    let e = fx.get_token("/rs", &rs1(&alice())).await.echo();
    assert_eq!(e.header("x-user-id"), Some("alice"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_credentials_rejected() {
    let fx = fx().await;
    fx.expect_401("GET", "/rs", &[], "rs", "missing").await;
    // Not a bearer token: other schemes, an empty bearer.
    fx.expect_401(
        "GET",
        "/rs",
        &[("authorization", "Basic YWxpY2U6cGFzc3dvcmQ=")],
        "rs",
        "missing",
    )
    .await;
    let hits = fx.b.hits();
    let r = fx.get("/rs", &[("authorization", "Bearer ")]).await;
    assert_unauthorized(&r);
    assert_eq!(fx.b.hits(), hits);
}

// ---------------------------------------------------------------------------------------------
// JWKS
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_rotation_accepts_both_keys() {
    let fx = fx().await;
    for (file, kid, sub) in [
        ("rsa1_private.pem", "key-2026-01", "old-key-user"),
        ("rsa2_private.pem", "key-2026-02", "new-key-user"),
    ] {
        let c = claims(sub, &["user"], "");
        let t = sign_with(Algorithm::RS256, &rsa_key(file), Some(kid), &c);
        let e = fx.get_token("/jwks", &t).await.echo();
        assert_eq!(e.header("x-user-id"), Some(sub), "kid {kid}: {e:?}");
    }
    assert_eq!(fx.b.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_unknown_or_missing_kid_rejected() {
    let fx = fx().await;
    let t = sign_with(
        Algorithm::RS256,
        &rsa_key("rsa1_private.pem"),
        Some("key-2099-01"),
        &alice(),
    );
    fx.expect_401_token("/jwks", &t, "jwks", "unknown_kid")
        .await;
    // Two keys in the set: a token without a kid cannot be matched.
    fx.expect_401_token("/jwks", &rs1(&alice()), "jwks", "unknown_kid")
        .await;
    // Signed by key 2 but naming key 1.
    let t = sign_with(
        Algorithm::RS256,
        &rsa_key("rsa2_private.pem"),
        Some("key-2026-01"),
        &alice(),
    );
    fx.expect_401_token("/jwks", &t, "jwks", "bad_signature")
        .await;
}

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
// Token sources: header scheme, query, cookie
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_scheme_is_case_insensitive() {
    let fx = fx().await;
    let t = rs1(&alice());
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let v = format!("{scheme} {t}");
        let r = fx.get("/rs", &[("authorization", v.as_str())]).await;
        assert_eq!(r.status, 200, "scheme {scheme:?}: {r}");
        assert_eq!(r.echo().header("x-user-id"), Some("alice"));
    }
    assert_eq!(fx.b.hits(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_token_accepted_and_removed_before_forwarding() {
    let fx = fx().await;
    let t = rs1(&alice());
    let path = format!("/qc/items?x=1&access_token={t}&y=2");
    let e = fx.get(&path, &[]).await.echo();
    assert_eq!(e.header("x-user-id"), Some("alice"), "{e:?}");
    assert_eq!(e.path, "/qc/items?x=1&y=2", "{e:?}");
    assert!(!e.path.contains(&t));

    let e = fx.get(&format!("/qc?access_token={t}"), &[]).await.echo();
    assert_eq!(e.path, "/qc", "{e:?}");
    assert_eq!(e.header("x-user-id"), Some("alice"), "{e:?}");

    let e = fx
        .get(&format!("/qc?access_token={t}&z=3"), &[])
        .await
        .echo();
    assert_eq!(e.path, "/qc?z=3", "{e:?}");
    for (n, v) in &e.headers {
        assert!(
            !v.contains("access_token"),
            "header {n} carries the query: {e:?}"
        );
    }
    assert_eq!(fx.b.hits(), 3);

    // The query parameter is not a token source for a provider that does not enable it.
    fx.expect_401(
        "GET",
        &format!("/rs?access_token={t}"),
        &[],
        "rs",
        "missing",
    )
    .await;
    // An invalid query token is refused.
    let bad = rs2(&alice());
    fx.expect_401(
        "GET",
        &format!("/qc?access_token={bad}"),
        &[],
        "qc",
        "bad_signature",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_in_header_and_query_is_rejected() {
    let fx = fx().await;
    let t = rs1(&alice());
    let auth = bearer(&t);
    // Even the same valid token twice: two sources, refused.
    fx.expect_401(
        "GET",
        &format!("/qc?access_token={t}"),
        &[("authorization", auth.as_str())],
        "qc",
        "ambiguous",
    )
    .await;
    let other = rs1(&claims("bob", &["user"], ""));
    fx.expect_401(
        "GET",
        &format!("/qc?access_token={other}"),
        &[("authorization", auth.as_str())],
        "qc",
        "ambiguous",
    )
    .await;
    // Two query tokens.
    fx.expect_401(
        "GET",
        &format!("/qc?access_token={t}&access_token={other}"),
        &[],
        "qc",
        "ambiguous",
    )
    .await;
    // Two Authorization headers.
    let auth2 = bearer(&other);
    fx.expect_401(
        "GET",
        "/rs",
        &[
            ("authorization", auth.as_str()),
            ("authorization", auth2.as_str()),
        ],
        "rs",
        "ambiguous",
    )
    .await;
    // Two API keys.
    fx.expect_401(
        "GET",
        "/key",
        &[("x-api-key", ACME_KEY), ("x-api-key", GLOBEX_KEY)],
        "key",
        "ambiguous",
    )
    .await;
    // Header and cookie.
    let cookie = format!("tg_token={t}");
    fx.expect_401(
        "GET",
        "/qc",
        &[
            ("authorization", auth.as_str()),
            ("cookie", cookie.as_str()),
        ],
        "qc",
        "ambiguous",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_token_only_where_configured() {
    let fx = fx().await;
    let t = rs1(&alice());
    let cookie = format!("theme=dark; tg_token={t}; lang=en");
    let e = fx.get("/qc/c", &[("cookie", cookie.as_str())]).await.echo();
    assert_eq!(e.header("x-user-id"), Some("alice"), "{e:?}");
    assert_eq!(fx.b.hits(), 1);

    // `rs` has no token_cookie: the cookie is not a credential there.
    fx.expect_401(
        "GET",
        "/rs",
        &[("cookie", cookie.as_str())],
        "rs",
        "missing",
    )
    .await;
    // Another cookie name is not the token.
    let wrong = format!("token={t}");
    fx.expect_401("GET", "/qc", &[("cookie", wrong.as_str())], "qc", "missing")
        .await;
    // An invalid cookie token is refused.
    let bad = format!("tg_token={}", rs2(&alice()));
    fx.expect_401(
        "GET",
        "/qc",
        &[("cookie", bad.as_str())],
        "qc",
        "bad_signature",
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Verified-token cache
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_token_twice_and_cache_does_not_cross_providers_or_policies() {
    let fx = fx().await;
    let t = rs1(&claims("bob", &["user"], "orders:read"));
    for i in 0..2 {
        let e = fx.get_token("/rs", &t).await.echo();
        assert_eq!(e.header("x-user-id"), Some("bob"), "use #{i}: {e:?}");
        assert_eq!(e.header("x-user-roles"), Some("user"), "use #{i}: {e:?}");
    }
    assert_eq!(fx.b.hits(), 2);
    // Accepted (and cached) by `rs`; `rs2` has another key and must verify for itself.
    fx.expect_401_token("/rs2", &t, "rs2", "bad_signature")
        .await;
    // Cached identity, but the admin route's roles are still enforced.
    fx.expect_403("GET", "/admin", &t, "admin").await;
    // And again through the cache.
    assert_eq!(fx.get_token("/rs", &t).await.status, 200);
}

/// A token accepted while valid is refused once it expires, cache or not (leeway 0s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_token_refused_after_expiry() {
    let fx = fx().await;
    let n = now();
    let t = rs1(&with(alice(), &[("iat", json!(n)), ("exp", json!(n + 2))]));
    let e = fx.get_token("/rs", &t).await.echo();
    assert_eq!(e.header("x-user-id"), Some("alice"));
    assert_eq!(fx.get_token("/rs", &t).await.status, 200, "second use");
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let r = fx.expect_401_token("/rs", &t, "rs", "expired").await;
    assert_unauthorized(&r);
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
