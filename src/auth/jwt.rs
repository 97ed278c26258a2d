//! JWT verification for one provider (issuer): allow-listed algorithms, keys loaded once at
//! start, claims checked by `jsonwebtoken`, identity derived from verified claims only.
//!
//! Algorithm confusion is closed twice: config validation refuses to mix HMAC with public-key
//! algorithms in one provider, and at verify time the key's family must match the token's
//! `alg`. `alg: none` does not parse as an algorithm at all and is reported as malformed.

use super::failure::AuthFailure;
use super::identity::Identity;
use crate::config::auth::JwtProviderConfig;
use http::{HeaderName, HeaderValue};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::str::FromStr;

/// Longest token we even try to parse; real tokens are well under 8 KiB.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

enum Keys {
    Single(DecodingKey),
    /// JWKS: chosen by `kid`; a token without `kid` is accepted only if there is one key.
    ByKid {
        by_kid: HashMap<String, DecodingKey>,
        only: Option<DecodingKey>,
    },
}

pub struct JwtProvider {
    pub name: String,
    /// `jwt:<name>`, shared by every identity this provider verifies.
    tag: std::sync::Arc<str>,
    algorithms: Vec<Algorithm>,
    keys: Keys,
    validation: Validation,
    leeway: u64,
    roles_claim: String,
    forward: Vec<(String, HeaderName)>,
    key_claims: Vec<String>,
    pub token_cookie: Option<String>,
    pub token_query: Option<String>,
}

/// Whether the token's JOSE header has a `crit` member, whatever its value (the header is
/// parsed as plain JSON, so escaped spellings of the name count too).
fn names_crit(token: &str) -> bool {
    use base64::Engine;
    let Some(header) = token.split('.').next() else {
        return false;
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|json| serde_json::from_slice::<Map<String, Value>>(&json).ok())
        .is_some_and(|h| h.contains_key("crit"))
}

/// Parse the allow-list; `none` and unknown names are errors.
pub fn parse_algorithms(names: &[String]) -> Result<Vec<Algorithm>, String> {
    if names.is_empty() {
        return Err("at least one algorithm is required".into());
    }
    names
        .iter()
        .map(|n| {
            if n.eq_ignore_ascii_case("none") {
                return Err("\"none\" is never accepted".to_string());
            }
            Algorithm::from_str(n).map_err(|_| {
                format!("unknown algorithm {n:?}; expected HS256/384/512, RS256/384/512, PS256/384/512, ES256/384 or EdDSA")
            })
        })
        .collect()
}

fn family_name(f: AlgorithmFamily) -> &'static str {
    match f {
        AlgorithmFamily::Hmac => "HMAC",
        AlgorithmFamily::Rsa => "RSA",
        AlgorithmFamily::Ec => "EC",
        AlgorithmFamily::Ed => "EdDSA",
    }
}

/// A config problem: (field under the provider, message).
pub type KeyProblem = (&'static str, String);

fn read(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))
}

/// Load the provider's key material, checking it fits the algorithms.
fn load_keys(cfg: &JwtProviderConfig, algs: &[Algorithm]) -> Result<Keys, KeyProblem> {
    let sources = [
        cfg.secret_env.is_some(),
        cfg.secret_file.is_some(),
        cfg.public_key_file.is_some(),
        cfg.jwks_file.is_some(),
    ];
    match sources.iter().filter(|s| **s).count() {
        0 => {
            return Err((
                "",
                "needs exactly one key source: secret_env, secret_file, public_key_file or jwks_file".into(),
            ))
        }
        1 => {}
        _ => {
            return Err((
                "",
                "key sources are mutually exclusive: use one of secret_env, secret_file, public_key_file, jwks_file".into(),
            ))
        }
    }
    let family = algs[0].family();
    if let Some(other) = algs.iter().find(|a| a.family() != family) {
        return Err((
            "algorithms",
            format!(
                "mixes {} and {} algorithms ({other:?}); one provider has one kind of key",
                family_name(family),
                family_name(other.family())
            ),
        ));
    }
    let symmetric = cfg.secret_env.is_some() || cfg.secret_file.is_some();
    if symmetric && family != AlgorithmFamily::Hmac {
        return Err((
            "algorithms",
            format!(
                "{} algorithms need public_key_file or jwks_file, not a shared secret",
                family_name(family)
            ),
        ));
    }
    if !symmetric && family == AlgorithmFamily::Hmac {
        return Err((
            "algorithms",
            "HS* algorithms with a public key would let anyone who has the public key forge tokens (algorithm confusion); use secret_env or secret_file".into(),
        ));
    }
    if let Some(var) = &cfg.secret_env {
        let secret = std::env::var(var).map_err(|_| {
            (
                "secret_env",
                format!("environment variable {var} is not set"),
            )
        })?;
        if secret.len() < 32 {
            return Err((
                "secret_env",
                format!("secret in {var} is shorter than 32 bytes"),
            ));
        }
        return Ok(Keys::Single(DecodingKey::from_secret(secret.as_bytes())));
    }
    if let Some(path) = &cfg.secret_file {
        let secret = read(path).map_err(|m| ("secret_file", m))?;
        let secret = trim_ascii_end(&secret);
        if secret.len() < 32 {
            return Err((
                "secret_file",
                format!("secret in {path} is shorter than 32 bytes"),
            ));
        }
        return Ok(Keys::Single(DecodingKey::from_secret(secret)));
    }
    if let Some(path) = &cfg.public_key_file {
        let pem = read(path).map_err(|m| ("public_key_file", m))?;
        let key = match family {
            AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(&pem),
            AlgorithmFamily::Ec => DecodingKey::from_ec_pem(&pem),
            AlgorithmFamily::Ed => DecodingKey::from_ed_pem(&pem),
            AlgorithmFamily::Hmac => unreachable_hmac(),
        }
        .map_err(|e| {
            (
                "public_key_file",
                format!(
                    "{path} is not a {} public key in PEM form ({e})",
                    family_name(family)
                ),
            )
        })?;
        return Ok(Keys::Single(key));
    }
    let path = cfg.jwks_file.as_deref().unwrap_or_default();
    let text = read(path).map_err(|m| ("jwks_file", m))?;
    let set: JwkSet = serde_json::from_slice(&text)
        .map_err(|e| ("jwks_file", format!("{path} is not a JWKS document ({e})")))?;
    let mut by_kid = HashMap::new();
    let mut all = Vec::new();
    for (i, jwk) in set.keys.iter().enumerate() {
        let key = DecodingKey::from_jwk(jwk)
            .map_err(|e| ("jwks_file", format!("{path}: key {i} is unusable ({e})")))?;
        if key.family() != family {
            return Err((
                "jwks_file",
                format!(
                    "{path}: key {i} is {} but the algorithms are {}",
                    family_name(key.family()),
                    family_name(family)
                ),
            ));
        }
        if let Some(kid) = &jwk.common.key_id {
            by_kid.insert(kid.clone(), key.clone());
        }
        all.push(key);
    }
    if all.is_empty() {
        return Err(("jwks_file", format!("{path} holds no keys")));
    }
    let only = if all.len() == 1 { all.pop() } else { None };
    Ok(Keys::ByKid { by_kid, only })
}

fn unreachable_hmac() -> jsonwebtoken::errors::Result<DecodingKey> {
    // Guarded above: HMAC never reaches the public-key branch.
    Err(jsonwebtoken::errors::ErrorKind::InvalidKeyFormat.into())
}

fn trim_ascii_end(b: &[u8]) -> &[u8] {
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    &b[..end]
}

impl JwtProvider {
    /// Build from config; errors name the field under `auth.jwt.<name>`.
    pub fn build(
        name: &str,
        cfg: &JwtProviderConfig,
        key_claims: &[String],
    ) -> Result<JwtProvider, KeyProblem> {
        let algorithms = parse_algorithms(&cfg.algorithms).map_err(|m| ("algorithms", m))?;
        let keys = load_keys(cfg, &algorithms)?;
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms.clone();
        validation.leeway = cfg.leeway.0.as_secs();
        validation.validate_nbf = true;
        let mut required = Vec::new();
        if cfg.require_exp {
            required.push("exp");
        }
        if let Some(iss) = &cfg.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        match &cfg.audience {
            Some(aud) => {
                validation.set_audience(&aud.to_vec());
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        let mut forward = Vec::new();
        for (claim, header) in &cfg.forward_claims {
            let h = HeaderName::from_bytes(header.as_bytes())
                .map_err(|_| ("forward_claims", format!("invalid header name {header:?}")))?;
            forward.push((claim.clone(), h));
        }
        Ok(JwtProvider {
            name: name.to_string(),
            tag: format!("jwt:{name}").into(),
            algorithms,
            keys,
            validation,
            leeway: cfg.leeway.0.as_secs(),
            roles_claim: cfg.roles_claim.clone(),
            forward,
            key_claims: key_claims.to_vec(),
            token_cookie: cfg.token_cookie.clone(),
            token_query: cfg.token_query.clone(),
        })
    }

    /// Header names this provider writes upstream (stripped from every client request).
    pub fn forwarded_headers(&self) -> impl Iterator<Item = &HeaderName> {
        self.forward.iter().map(|(_, h)| h)
    }

    /// Verify signature and claims; on success derive the identity.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthFailure> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(AuthFailure::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthFailure::Malformed)?;
        // RFC 7515 §4.1.11: a recipient MUST reject a token whose `crit` lists an extension it
        // does not understand, and `crit` must never be empty nor name a registered parameter.
        // tollgate implements no extension, so a `crit` parameter of any value (even `null`,
        // which the typed header above reads as absent) is refused.
        if names_crit(token) {
            return Err(AuthFailure::UnsupportedCrit);
        }
        if !self.algorithms.contains(&header.alg) {
            return Err(AuthFailure::DisallowedAlg);
        }
        let key = match &self.keys {
            Keys::Single(k) => k,
            Keys::ByKid { by_kid, only } => match header.kid.as_deref() {
                Some(kid) => by_kid.get(kid).ok_or(AuthFailure::UnknownKid)?,
                None => only.as_ref().ok_or(AuthFailure::UnknownKid)?,
            },
        };
        if key.family() != header.alg.family() {
            return Err(AuthFailure::DisallowedAlg);
        }
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, key, &self.validation)
            .map_err(|e| classify(e.kind()))?;
        let claims = data.claims;
        let now = jsonwebtoken::get_current_timestamp();
        if let Some(iat) = claims.get("iat") {
            match iat.as_u64() {
                Some(iat) if iat <= now + self.leeway => {}
                _ => return Err(AuthFailure::Malformed),
            }
        }
        self.identity(&claims)
    }

    /// A claim the route forwards must reach the backend as the issuer wrote it, or the token
    /// is refused: a `sub` holding CR/LF used to be dropped while the token's roles still went
    /// through (a backend reading roles without a user), and a role `"user,admin"` became two
    /// roles once joined with commas.
    fn identity(&self, claims: &Map<String, Value>) -> Result<Identity, AuthFailure> {
        let roles = string_list(claims.get(&self.roles_claim));
        let scopes = match claims.get("scope") {
            Some(s) => string_list(Some(s)),
            None => string_list(claims.get("scp")),
        };
        let mut forward = Vec::with_capacity(self.forward.len());
        for (claim, header) in &self.forward {
            let value = if *claim == self.roles_claim {
                if roles.iter().any(|r| r.contains(',')) {
                    return Err(AuthFailure::Malformed);
                }
                (!roles.is_empty()).then(|| roles.join(","))
            } else if claim == "scope" || claim == "scp" {
                if scopes.iter().any(|s| s.contains(char::is_whitespace)) {
                    return Err(AuthFailure::Malformed);
                }
                (!scopes.is_empty()).then(|| scopes.join(" "))
            } else {
                claims.get(claim).map(scalar_or_list).transpose()?.flatten()
            };
            if let Some(v) = value {
                // CR, LF, NUL and other controls cannot be a header value.
                if HeaderValue::from_str(&v).is_err() {
                    return Err(AuthFailure::Malformed);
                }
                forward.push((header.clone(), v));
            }
        }
        // RFC 7519 §4.1.2: `sub` is a string. A number would otherwise become no consumer at
        // all, and every such token one caller for limits and the cache.
        let consumer = match claims.get("sub") {
            None => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(AuthFailure::Malformed),
        };
        let mut key_claims = Vec::with_capacity(self.key_claims.len());
        for k in &self.key_claims {
            if let Some(v) = claims.get(k).map(scalar_or_list).transpose()?.flatten() {
                key_claims.push((k.clone(), v));
            }
        }
        Ok(Identity {
            provider: self.tag.clone(),
            consumer,
            roles,
            scopes,
            forward,
            expires_at: claims.get("exp").and_then(Value::as_u64),
            claims: key_claims,
        })
    }
}

fn classify(kind: &ErrorKind) -> AuthFailure {
    match kind {
        ErrorKind::ExpiredSignature => AuthFailure::Expired,
        ErrorKind::ImmatureSignature => AuthFailure::NotYetValid,
        ErrorKind::InvalidSignature => AuthFailure::BadSignature,
        ErrorKind::InvalidIssuer => AuthFailure::WrongIssuer,
        ErrorKind::InvalidAudience => AuthFailure::WrongAudience,
        ErrorKind::InvalidAlgorithm => AuthFailure::DisallowedAlg,
        ErrorKind::MissingRequiredClaim(_) => AuthFailure::MissingClaim,
        _ => AuthFailure::Malformed,
    }
}

/// Roles/scopes as a list: a JSON array of strings, or one string separated by spaces/commas.
fn string_list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => s
            .split([' ', ','])
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

/// A claim as one header value: a scalar as written, a list of scalars joined by `,`; `None`
/// for an object or null. Refused (malformed) when the joined value would not say what the
/// issuer wrote: a list element that is not a scalar (it would be dropped), or a string
/// element holding the `,` that separates elements (`["T2,admin"]` would read as two).
fn scalar_or_list(v: &Value) -> Result<Option<String>, AuthFailure> {
    let scalar = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    match v {
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match (scalar(item), item) {
                    (Some(s), Value::String(_)) if s.contains(',') => {
                        return Err(AuthFailure::Malformed)
                    }
                    (Some(s), _) => out.push(s),
                    (None, _) => return Err(AuthFailure::Malformed),
                }
            }
            Ok(Some(out.join(",")))
        }
        v => Ok(scalar(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &str = "an-hs256-test-secret-that-is-long-enough";

    fn fixture(name: &str) -> String {
        format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    fn provider(yaml: &str) -> JwtProvider {
        let cfg: JwtProviderConfig = serde_yaml::from_str(yaml).unwrap();
        JwtProvider::build("t", &cfg, &[]).unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn hs_provider() -> JwtProvider {
        // One file per call: tests run in parallel threads, and a file rewritten by one while
        // another reads it would be read truncated.
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("tollgate-jwt-secret-{}-{n}", std::process::id()));
        std::fs::write(&path, SECRET).unwrap();
        provider(&format!(
            "{{algorithms: [HS256], secret_file: {}, issuer: idp, audience: [api, other], leeway: 0s}}",
            path.display()
        ))
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn hs(claims: serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    fn good_claims() -> serde_json::Value {
        json!({"sub": "alice", "iss": "idp", "aud": "api", "exp": now() + 300, "iat": now(),
               "roles": ["admin", "ops"], "scope": "orders:read orders:write"})
    }

    #[test]
    fn valid_hs256_token_yields_identity_and_forwarded_claims() {
        let id = hs_provider().verify(&hs(good_claims())).unwrap();
        assert_eq!(id.consumer, "alice");
        assert_eq!(id.roles, vec!["admin", "ops"]);
        assert!(id.has_scope("orders:write"));
        let fwd: Vec<(String, String)> = id
            .forward
            .iter()
            .map(|(h, v)| (h.to_string(), v.clone()))
            .collect();
        assert!(fwd.contains(&("x-user-id".into(), "alice".into())));
        assert!(fwd.contains(&("x-user-roles".into(), "admin,ops".into())));
        assert!(fwd.contains(&("x-scopes".into(), "orders:read orders:write".into())));
    }

    #[test]
    fn forwarded_claims_that_cannot_travel_as_written_refuse_the_token() {
        let p = hs_provider();
        let mut c = good_claims();
        c["sub"] = json!("alice\r\nX-User-Roles: root");
        assert_eq!(p.verify(&hs(c)), Err(AuthFailure::Malformed));
        let mut c = good_claims();
        c["roles"] = json!(["user,admin"]);
        assert_eq!(p.verify(&hs(c)), Err(AuthFailure::Malformed));
        let mut c = good_claims();
        c.as_object_mut().unwrap().remove("scope");
        c["scp"] = json!(["orders:read admin:all"]);
        assert_eq!(p.verify(&hs(c)), Err(AuthFailure::Malformed));
        // `sub` is a string (RFC 7519 §4.1.2), never a number standing for no one.
        let mut c = good_claims();
        c["sub"] = json!(42);
        assert_eq!(p.verify(&hs(c)), Err(AuthFailure::Malformed));
        // A forwarded list claim whose joined value would not be the issuer's list.
        let path = std::env::temp_dir().join(format!("tollgate-jwt-fwd-{}", std::process::id()));
        std::fs::write(&path, SECRET).unwrap();
        let fwd = provider(&format!(
            "{{algorithms: [HS256], secret_file: {}, issuer: idp, audience: api, forward_claims: {{tenant: X-Tenant-Id}}}}",
            path.display()
        ));
        for bad in [
            json!(["T1", "T2,admin"]),
            json!(["T1", ["T2"]]),
            json!(["T1", {"a": 1}]),
        ] {
            let mut c = good_claims();
            c["tenant"] = bad.clone();
            assert_eq!(fwd.verify(&hs(c)), Err(AuthFailure::Malformed), "{bad}");
        }
        let mut c = good_claims();
        c["tenant"] = json!(["T1", 5, true]);
        let id = fwd.verify(&hs(c)).expect("valid");
        assert!(id
            .forward
            .iter()
            .any(|(h, v)| h == "x-tenant-id" && v == "T1,5,true"));
        // A roles string is a list already: split, then joined the same way.
        let mut c = good_claims();
        c["roles"] = json!("user,admin");
        let id = p.verify(&hs(c)).expect("valid");
        assert_eq!(id.roles, vec!["user", "admin"]);
    }

    #[test]
    fn claim_failures_are_classified() {
        let p = hs_provider();
        let mut c = good_claims();
        c["exp"] = json!(now() - 10);
        assert_eq!(p.verify(&hs(c)), Err(AuthFailure::Expired));
        let mut c = good_claims();
        c["nbf"] = json!(now() + 600);
        assert_eq!(p.verify(&hs(c)), Err(AuthFailure::NotYetValid));
        let mut c = good_claims();
        c["iss"] = json!("evil");
        assert_eq!(p.verify(&hs(c)), Err(AuthFailure::WrongIssuer));
        let mut c = good_claims();
        c["aud"] = json!(["nobody"]);
        assert_eq!(p.verify(&hs(c)), Err(AuthFailure::WrongAudience));
        let mut c = good_claims();
        c.as_object_mut().unwrap().remove("exp");
        assert_eq!(p.verify(&hs(c)), Err(AuthFailure::MissingClaim));
        let mut c = good_claims();
        c["iat"] = json!(now() + 3600);
        assert_eq!(p.verify(&hs(c)), Err(AuthFailure::Malformed));
    }

    #[test]
    fn forged_and_malformed_tokens_fail() {
        let p = hs_provider();
        let other = encode(
            &Header::new(Algorithm::HS256),
            &good_claims(),
            &EncodingKey::from_secret(b"some-other-secret-of-sufficient-length!"),
        )
        .unwrap();
        assert_eq!(p.verify(&other), Err(AuthFailure::BadSignature));
        // alg: none, hand-built: header {"alg":"none"}.
        let none = format!(
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
            base64_url(&serde_json::to_vec(&good_claims()).unwrap())
        );
        assert_eq!(p.verify(&none), Err(AuthFailure::Malformed));
        assert_eq!(p.verify("not-a-jwt"), Err(AuthFailure::Malformed));
        assert_eq!(p.verify("a.b.c"), Err(AuthFailure::Malformed));
        assert_eq!(
            p.verify(&"a".repeat(MAX_TOKEN_LEN + 1)),
            Err(AuthFailure::Malformed)
        );
        // HS384 is not on the allow-list.
        let t = encode(
            &Header::new(Algorithm::HS384),
            &good_claims(),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert_eq!(p.verify(&t), Err(AuthFailure::DisallowedAlg));
    }

    fn base64_url(b: &[u8]) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
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

    #[test]
    fn rs256_and_algorithm_confusion() {
        let p = provider(&format!(
            "{{algorithms: [RS256], public_key_file: {}}}",
            fixture("rsa1_public.pem")
        ));
        let private = std::fs::read(fixture("rsa1_private.pem")).unwrap();
        let claims = json!({"sub": "bob", "exp": now() + 300});
        let t = encode(
            &Header::new(Algorithm::RS256),
            &claims,
            &EncodingKey::from_rsa_pem(&private).unwrap(),
        )
        .unwrap();
        assert_eq!(p.verify(&t).unwrap().consumer, "bob");
        // The classic attack: HS256 signed with the public key's PEM text as the secret.
        let public = std::fs::read(fixture("rsa1_public.pem")).unwrap();
        let forged = encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&public),
        )
        .unwrap();
        assert_eq!(p.verify(&forged), Err(AuthFailure::DisallowedAlg));
    }

    #[test]
    fn es256_and_eddsa() {
        let claims = json!({"sub": "carol", "exp": now() + 300});
        let es = provider(&format!(
            "{{algorithms: [ES256], public_key_file: {}}}",
            fixture("ec_public.pem")
        ));
        let key =
            EncodingKey::from_ec_pem(&std::fs::read(fixture("ec_private.pem")).unwrap()).unwrap();
        let t = encode(&Header::new(Algorithm::ES256), &claims, &key).unwrap();
        assert_eq!(es.verify(&t).unwrap().consumer, "carol");
        let ed = provider(&format!(
            "{{algorithms: [EdDSA], public_key_file: {}}}",
            fixture("ed_public.pem")
        ));
        let key =
            EncodingKey::from_ed_pem(&std::fs::read(fixture("ed_private.pem")).unwrap()).unwrap();
        let t = encode(&Header::new(Algorithm::EdDSA), &claims, &key).unwrap();
        assert_eq!(ed.verify(&t).unwrap().consumer, "carol");
    }

    #[test]
    fn jwks_selects_by_kid_for_rotation() {
        let p = provider(&format!(
            "{{algorithms: [RS256], jwks_file: {}}}",
            fixture("jwks.json")
        ));
        let claims = json!({"sub": "dave", "exp": now() + 300});
        for (file, kid) in [
            ("rsa1_private.pem", "key-2026-01"),
            ("rsa2_private.pem", "key-2026-02"),
        ] {
            let key = EncodingKey::from_rsa_pem(&std::fs::read(fixture(file)).unwrap()).unwrap();
            let mut h = Header::new(Algorithm::RS256);
            h.kid = Some(kid.into());
            assert_eq!(
                p.verify(&encode(&h, &claims, &key).unwrap())
                    .unwrap()
                    .consumer,
                "dave"
            );
            h.kid = Some("retired".into());
            assert_eq!(
                p.verify(&encode(&h, &claims, &key).unwrap()),
                Err(AuthFailure::UnknownKid)
            );
        }
        // Signed by key 2 but claiming key 1's kid.
        let key2 = EncodingKey::from_rsa_pem(&std::fs::read(fixture("rsa2_private.pem")).unwrap())
            .unwrap();
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some("key-2026-01".into());
        assert_eq!(
            p.verify(&encode(&h, &claims, &key2).unwrap()),
            Err(AuthFailure::BadSignature)
        );
    }

    #[test]
    fn any_crit_header_is_refused_and_a_non_array_one_is_malformed() {
        let p = hs_provider();
        let sign = |header: &str| {
            use base64::Engine;
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let signing_input = format!(
                "{}.{}",
                b64.encode(header),
                b64.encode(good_claims().to_string())
            );
            let sig = jsonwebtoken::crypto::sign(
                signing_input.as_bytes(),
                &EncodingKey::from_secret(SECRET.as_bytes()),
                Algorithm::HS256,
            )
            .unwrap();
            format!("{signing_input}.{sig}")
        };
        for crit in [r#"["x-unknown"]"#, r#"["exp"]"#, "[]", r#"["b64"]"#, "null"] {
            let header = format!(r#"{{"alg":"HS256","typ":"JWT","crit":{crit},"x-unknown":1}}"#);
            assert_eq!(
                p.verify(&sign(&header)),
                Err(AuthFailure::UnsupportedCrit),
                "{crit}"
            );
        }
        let header = r#"{"alg":"HS256","typ":"JWT","crit":"x-unknown"}"#;
        assert_eq!(p.verify(&sign(header)), Err(AuthFailure::Malformed));
        // The same token without `crit` passes: the refusal is about `crit` alone.
        assert!(p.verify(&sign(r#"{"alg":"HS256","typ":"JWT"}"#)).is_ok());
    }

    #[test]
    fn config_refuses_alg_confusion_and_none() {
        let build = |yaml: &str| {
            let cfg: JwtProviderConfig = serde_yaml::from_str(yaml).unwrap();
            JwtProvider::build("t", &cfg, &[])
                .err()
                .map(|(f, m)| format!("{f}: {m}"))
        };
        let pk = fixture("rsa1_public.pem");
        let e = build(&format!("{{algorithms: [HS256], public_key_file: {pk}}}")).unwrap();
        assert!(e.contains("algorithm confusion"), "{e}");
        let e = build(&format!(
            "{{algorithms: [RS256, HS256], public_key_file: {pk}}}"
        ))
        .unwrap();
        assert!(e.starts_with("algorithms: mixes RSA and HMAC"), "{e}");
        let e = build(&format!("{{algorithms: [none], public_key_file: {pk}}}")).unwrap();
        assert!(e.contains("never accepted"), "{e}");
        let e = build("{algorithms: [RS256], secret_env: NOPE_NOT_SET_ANYWHERE}").unwrap();
        assert!(e.contains("need public_key_file or jwks_file"), "{e}");
        let e = build("{algorithms: [HS256]}").unwrap();
        assert!(e.contains("exactly one key source"), "{e}");
        let e = build("{algorithms: [HS256], secret_env: NOPE_NOT_SET_ANYWHERE}").unwrap();
        assert!(e.contains("is not set"), "{e}");
    }
}
