//! The auth suites' standard gateway (`tests/auth_jwt.rs`, `tests/auth_access.rs`): every JWT
//! provider, API key set and route they need, the claims they sign (tokens are signed with the
//! test-only keys in `tests/fixtures/`, see [`crate::common::tokens`]), and the checks of a 401/403
//! (status, challenge, nothing at the backend, `tollgate_auth_failures_total` up by one).

use std::path::Path;

use serde_json::{json, Value};

use crate::common::metrics::{self, metrics_text};
use crate::common::tokens::{bearer, fixture_dir, hs256_jwt, sha256_hex};
use crate::common::{Backend, Gateway, Resp};

// ---------------------------------------------------------------------------------------------
// Keys, claims
// ---------------------------------------------------------------------------------------------

/// The HS256 shared secret (≥ 32 bytes), written to a file for the `hs` provider.
pub const HS_SECRET: &str = "tollgate-auth-tests-hs256-secret-0123456789";
pub const ISS: &str = "https://idp.test";
pub const AUD: &str = "api";
/// API keys; the config holds only their SHA-256.
pub const ACME_KEY: &str = "acme-live-key-4f1c9a7e2b";
pub const GLOBEX_KEY: &str = "globex-live-key-8d02bb61c3";

/// Seconds since the Unix epoch, as `jsonwebtoken` reads the clock.
pub fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// Standard claims: issuer, audience `api`, valid for 5 minutes.
pub fn claims(sub: &str, roles: &[&str], scope: &str) -> Value {
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
pub fn alice() -> Value {
    claims("alice", &["admin", "staff"], "orders:read orders:write")
}

/// `claims` with some fields replaced (or removed, with `Value::Null`).
pub fn with(mut c: Value, changes: &[(&str, Value)]) -> Value {
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

/// HS256 with [`HS_SECRET`] (the `hs` provider's secret).
pub fn hs(claims: &Value) -> String {
    hs256_jwt(HS_SECRET.as_bytes(), claims)
}

// ---------------------------------------------------------------------------------------------
// The standard gateway: every provider and route the tests below need
// ---------------------------------------------------------------------------------------------

pub const AUTH_CONFIG: &str = r#"upstreams:
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
pub fn auth_config(backend: &Backend, dir: &Path) -> String {
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

/// The echo backend and a gateway on [`AUTH_CONFIG`].
pub struct Fx {
    pub b: Backend,
    pub gw: Gateway,
    _keys: tempfile::TempDir,
}

pub async fn fx() -> Fx {
    let b = Backend::start("echo").await;
    let keys = tempfile::tempdir().expect("tempdir");
    let body = auth_config(&b, keys.path());
    let gw = Gateway::start(&body).await;
    Fx { b, gw, _keys: keys }
}

impl Fx {
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.gw.get_with(path, headers).await
    }

    pub async fn get_token(&self, path: &str, token: &str) -> Resp {
        let auth = bearer(token);
        self.gw
            .get_with(path, &[("authorization", auth.as_str())])
            .await
    }

    /// A request the gateway must refuse with 401 before the backend: checks the status, the
    /// JSON body, the RFC 6750 challenge, that the backend saw nothing, that the token does not
    /// come back, and that `tollgate_auth_failures_total{route,reason}` went up by one.
    pub async fn expect_401(
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

    pub async fn expect_401_token(
        &self,
        path: &str,
        token: &str,
        route: &str,
        reason: &str,
    ) -> Resp {
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
    pub async fn expect_403(&self, method: &str, path: &str, token: &str, route: &str) -> Resp {
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
pub fn assert_unauthorized(r: &Resp) {
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
pub fn assert_not_echoed(r: &Resp, secret: &str) {
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

/// The `tollgate_auth_failures_total` sample lines.
pub async fn auth_metric_lines(gw: &Gateway) -> String {
    metrics_text(gw)
        .await
        .lines()
        .filter(|l| l.starts_with("tollgate_auth_failures_total"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Value of `tollgate_auth_failures_total{route,reason}`; 0 when the series does not exist yet.
pub async fn auth_failures(gw: &Gateway, route: &str, reason: &str) -> u64 {
    let text = metrics_text(gw).await;
    metrics::value(
        &text,
        "tollgate_auth_failures_total",
        &[("route", route), ("reason", reason)],
    )
    .map_or(0, |v| v as u64)
}
