//! API keys: the config holds only SHA-256 digests; a presented key is hashed and compared
//! against every digest in constant time, so timing reveals neither which key nor how much
//! of one matched.

use super::failure::AuthFailure;
use super::identity::Identity;
use crate::config::auth::ApiKeyProviderConfig;
use http::HeaderName;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq;

pub struct ApiKeyProvider {
    pub name: String,
    pub header: HeaderName,
    pub forward_id: HeaderName,
    keys: Vec<([u8; 32], Arc<Identity>)>,
}

/// Longest key accepted from a client; anything longer is not one of ours.
const MAX_KEY_LEN: usize = 1024;

/// Parse a 64-hex-digit SHA-256 digest.
pub fn parse_digest(hex_digest: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(hex_digest.trim()).ok()?;
    bytes.try_into().ok()
}

impl ApiKeyProvider {
    /// Build from config; errors are (field, message) under `auth.api_keys.<name>`.
    pub fn build(
        name: &str,
        cfg: &ApiKeyProviderConfig,
    ) -> Result<ApiKeyProvider, (String, String)> {
        let header = HeaderName::from_bytes(cfg.header.as_bytes()).map_err(|_| {
            (
                "header".to_string(),
                format!("invalid header name {:?}", cfg.header),
            )
        })?;
        let forward_id = HeaderName::from_bytes(cfg.forward_id.as_bytes()).map_err(|_| {
            (
                "forward_id".to_string(),
                format!("invalid header name {:?}", cfg.forward_id),
            )
        })?;
        if cfg.keys.is_empty() {
            return Err((
                "keys".to_string(),
                "at least one key is required".to_string(),
            ));
        }
        let mut keys = Vec::with_capacity(cfg.keys.len());
        let provider: Arc<str> = format!("api_key:{name}").into();
        for (i, k) in cfg.keys.iter().enumerate() {
            let digest = parse_digest(&k.sha256).ok_or_else(|| {
                (
                    format!("keys[{i}].sha256"),
                    "must be the 64 hex digits of sha256(key), e.g. from `printf %s KEY | sha256sum`".to_string(),
                )
            })?;
            if k.id.is_empty() || http::HeaderValue::from_str(&k.id).is_err() {
                return Err((
                    format!("keys[{i}].id"),
                    "must be a non-empty printable string".to_string(),
                ));
            }
            let identity = Identity {
                provider: provider.clone(),
                consumer: k.id.clone(),
                roles: k.roles.clone(),
                scopes: Vec::new(),
                forward: vec![(forward_id.clone(), k.id.clone())],
                expires_at: None,
                claims: Vec::new(),
            };
            keys.push((digest, Arc::new(identity)));
        }
        Ok(ApiKeyProvider {
            name: name.to_string(),
            header,
            forward_id,
            keys,
        })
    }

    pub fn verify(&self, presented: &[u8]) -> Result<Arc<Identity>, AuthFailure> {
        if presented.is_empty() || presented.len() > MAX_KEY_LEN {
            return Err(AuthFailure::InvalidApiKey);
        }
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let mut found: Option<&Arc<Identity>> = None;
        // Visit every key whatever happens, so the time taken does not depend on the match.
        for (d, identity) in &self.keys {
            if bool::from(d.ct_eq(&digest)) {
                found = Some(identity);
            }
        }
        found.cloned().ok_or(AuthFailure::InvalidApiKey)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> ApiKeyProvider {
        let digest = hex::encode(Sha256::digest(b"s3cret-key"));
        let cfg: ApiKeyProviderConfig = serde_yaml::from_str(&format!(
            "{{header: X-API-Key, keys: [{{id: acme, sha256: \"{digest}\", roles: [partner]}}]}}"
        ))
        .unwrap();
        ApiKeyProvider::build("partners", &cfg).unwrap()
    }

    #[test]
    fn right_key_yields_its_identity_wrong_keys_fail() {
        let p = provider();
        let id = p.verify(b"s3cret-key").unwrap();
        assert_eq!(id.consumer, "acme");
        assert!(id.has_role("partner"));
        assert_eq!(id.forward[0].0.as_str(), "x-consumer");
        assert_eq!(p.verify(b"s3cret-kez"), Err(AuthFailure::InvalidApiKey));
        assert_eq!(p.verify(b""), Err(AuthFailure::InvalidApiKey));
    }

    #[test]
    fn digests_must_be_sha256_hex() {
        assert!(parse_digest("abc").is_none());
        assert!(parse_digest(&"0".repeat(64)).is_some());
    }
}
