//! The `auth` section (providers) and the per-route `auth` policy.

use super::HumanDuration;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default)]
    pub jwt: BTreeMap<String, JwtProviderConfig>,
    #[serde(default)]
    pub api_keys: BTreeMap<String, ApiKeyProviderConfig>,
    /// Verified-token cache entries (per process). 0 disables caching.
    #[serde(default = "default_cache_entries")]
    pub token_cache_entries: usize,
}

fn default_cache_entries() -> usize {
    10_000
}

/// One JWT issuer: which algorithms, which key, which claims to check and forward.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JwtProviderConfig {
    pub algorithms: Vec<String>,
    #[serde(default)]
    pub secret_env: Option<String>,
    #[serde(default)]
    pub secret_file: Option<String>,
    #[serde(default)]
    pub public_key_file: Option<String>,
    #[serde(default)]
    pub jwks_file: Option<String>,
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default)]
    pub audience: Option<StringOrList>,
    #[serde(default = "default_leeway")]
    pub leeway: HumanDuration,
    /// `exp` must be present (default true). Tokens without expiry are bearer passwords.
    #[serde(default = "default_true")]
    pub require_exp: bool,
    /// Claim name → header sent upstream (`sub: X-User-Id`).
    #[serde(default = "default_forward_claims")]
    pub forward_claims: BTreeMap<String, String>,
    /// Where roles come from (a string array or a space/comma separated string).
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// Also accept the token from this cookie (off by default).
    #[serde(default)]
    pub token_cookie: Option<String>,
    /// Also accept the token from this query parameter (off by default; it leaks into logs
    /// of every hop, so prefer headers). The parameter is removed before forwarding.
    #[serde(default)]
    pub token_query: Option<String>,
}

fn default_leeway() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(30))
}
fn default_true() -> bool {
    true
}
fn default_roles_claim() -> String {
    "roles".to_string()
}
fn default_forward_claims() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("sub".to_string(), "X-User-Id".to_string()),
        ("roles".to_string(), "X-User-Roles".to_string()),
        ("scope".to_string(), "X-Scopes".to_string()),
    ])
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum StringOrList {
    One(String),
    Many(Vec<String>),
}

impl StringOrList {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            StringOrList::One(s) => vec![s.clone()],
            StringOrList::Many(v) => v.clone(),
        }
    }
}

/// A set of API keys read from one header.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyProviderConfig {
    #[serde(default = "default_api_key_header")]
    pub header: String,
    pub keys: Vec<ApiKeyConfig>,
    /// Header carrying the key's id upstream.
    #[serde(default = "default_consumer_header")]
    pub forward_id: String,
}

fn default_api_key_header() -> String {
    "X-API-Key".to_string()
}
fn default_consumer_header() -> String {
    "X-Consumer".to_string()
}

/// Keys are stored only as the hex SHA-256 of the key, never the key itself.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    pub id: String,
    pub sha256: String,
    #[serde(default)]
    pub roles: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Required {
    #[default]
    Always,
    Never,
    /// POST, PUT, PATCH, DELETE need credentials; reads are public.
    Mutating,
}

/// A route's auth policy. Credentials of either configured kind pass.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteAuthConfig {
    #[serde(default)]
    pub jwt: Option<String>,
    #[serde(default)]
    pub api_key: Option<String>,
    /// A client certificate verified against `server.tls.client_ca_file` identifies the caller
    /// (consumer = its subject); tried after any JWT or API key the request carries.
    #[serde(default)]
    pub mtls: bool,
    #[serde(default)]
    pub required: Required,
    #[serde(default)]
    pub roles_any: Vec<String>,
    #[serde(default)]
    pub roles_all: Vec<String>,
    #[serde(default)]
    pub scopes_all: Vec<String>,
}
