//! Credentials for the auth tests.
//!
//! * Hand-built JWTs ([`hs256_token`], [`hand_token`]): any JOSE header or payload text, e.g. a
//!   `crit` header, `alg: none`, or bytes that are not JSON.
//! * JWTs signed by `jsonwebtoken` ([`sign_with`], [`hs256_jwt`]) and with the test-only keys in
//!   `tests/fixtures/` ([`rs1`], [`rs2`], [`es`], [`ed`]).
//! * [`sha256_hex`]: how configs hold API keys.

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::Value;
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------------------------
// Hand-built JWTs
// ---------------------------------------------------------------------------------------------

/// Unpadded base64url (RFC 7515 §2).
pub fn b64url(b: &[u8]) -> String {
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

/// HMAC-SHA256 (RFC 2104) from the SHA-256 the crate already depends on.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// `b64(header).b64(payload).b64(HMAC-SHA256(secret, signing input))`, with the JOSE header and
/// the claims given as literal JSON text.
pub fn hs256_token(secret: &str, header_json: &str, claims_json: &str) -> String {
    let input = format!(
        "{}.{}",
        b64url(header_json.as_bytes()),
        b64url(claims_json.as_bytes())
    );
    let sig = hmac_sha256(secret.as_bytes(), input.as_bytes());
    format!("{input}.{}", b64url(&sig))
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// `b64(header).b64(payload).signature` from raw parts (the signature verbatim).
pub fn hand_token(header: &str, payload: &str, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        b64url(header.as_bytes()),
        b64url(payload.as_bytes())
    )
}

/// The `Authorization` value for a bearer token.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Lowercase hex SHA-256 of `s` (how configs hold API keys).
pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

// ---------------------------------------------------------------------------------------------
// Signed JWTs, and the test-only keys in tests/fixtures/
// ---------------------------------------------------------------------------------------------

/// `tests/fixtures` (absolute).
pub fn fixture_dir() -> String {
    format!("{}/tests/fixtures", env!("CARGO_MANIFEST_DIR"))
}

/// A file of `tests/fixtures` (absolute path).
pub fn fixture(name: &str) -> String {
    format!("{}/{name}", fixture_dir())
}

pub fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap_or_else(|e| panic!("read fixture {name}: {e}"))
}

/// `claims` signed with `alg` and `key`, with `kid` in the JOSE header if given.
pub fn sign_with(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_string);
    encode(&h, claims, key).expect("sign token")
}

/// `claims` as an HS256 JWT (no `kid`) with the shared secret `secret`.
pub fn hs256_jwt(secret: &[u8], claims: &Value) -> String {
    sign_with(
        Algorithm::HS256,
        &EncodingKey::from_secret(secret),
        None,
        claims,
    )
}

/// An RSA private key of `tests/fixtures`.
pub fn rsa_key(file: &str) -> EncodingKey {
    EncodingKey::from_rsa_pem(&fixture_bytes(file)).expect("rsa private key")
}

/// RS256, signed by `rsa1` (`tests/fixtures/rsa1_private.pem`).
pub fn rs1(claims: &Value) -> String {
    sign_with(Algorithm::RS256, &rsa_key("rsa1_private.pem"), None, claims)
}

/// RS256, signed by `rsa2`.
pub fn rs2(claims: &Value) -> String {
    sign_with(Algorithm::RS256, &rsa_key("rsa2_private.pem"), None, claims)
}

/// ES256, signed by `tests/fixtures/ec_private.pem`.
pub fn es(claims: &Value) -> String {
    let key = EncodingKey::from_ec_pem(&fixture_bytes("ec_private.pem")).expect("ec key");
    sign_with(Algorithm::ES256, &key, None, claims)
}

/// EdDSA, signed by `tests/fixtures/ed_private.pem`.
pub fn ed(claims: &Value) -> String {
    let key = EncodingKey::from_ed_pem(&fixture_bytes("ed_private.pem")).expect("ed key");
    sign_with(Algorithm::EdDSA, &key, None, claims)
}
