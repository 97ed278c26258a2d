//! Minting tokens for development and the demo (`tollgate token`). Only HMAC: a gateway holds
//! shared secrets for HS* providers but never a private signing key of an identity provider.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Map, Value};

#[derive(Debug, Clone, Default)]
pub struct DevClaims {
    pub sub: String,
    pub roles: Vec<String>,
    pub scope: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub ttl_secs: u64,
}

pub fn mint_hmac(secret: &[u8], alg: Algorithm, claims: &DevClaims) -> Result<String, String> {
    if !matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
        return Err(format!(
            "only HS256/384/512 can be minted here, not {alg:?}"
        ));
    }
    let now = jsonwebtoken::get_current_timestamp();
    let mut body = Map::new();
    body.insert("sub".into(), json!(claims.sub));
    body.insert("iat".into(), json!(now));
    body.insert("exp".into(), json!(now + claims.ttl_secs));
    if !claims.roles.is_empty() {
        body.insert("roles".into(), json!(claims.roles));
    }
    if let Some(s) = &claims.scope {
        body.insert("scope".into(), json!(s));
    }
    if let Some(i) = &claims.issuer {
        body.insert("iss".into(), json!(i));
    }
    if let Some(a) = &claims.audience {
        body.insert("aud".into(), json!(a));
    }
    jsonwebtoken::encode(
        &Header::new(alg),
        &Value::Object(body),
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| format!("cannot sign token: {e}"))
}
