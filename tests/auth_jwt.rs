//! JWT authentication at the edge (DESIGN.md request path step 4; the 401 rows of the error
//! table; `tollgate_auth_failures_total`): valid tokens of every algorithm and the identity they
//! forward, every way a token is invalid, JWKS key rotation, where a token may come from
//! (header, query, cookie) and the verified-token cache. Tokens are signed here with the
//! test-only keys in `tests/fixtures/`; the gateway is [`common::suites::auth`]'s.

mod common;

use std::time::Duration;

use common::suites::auth::*;
use common::tokens::{
    b64url, bearer, ed, es, fixture_bytes, hand_token, rs1, rs2, rsa_key, sign_with,
};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

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
