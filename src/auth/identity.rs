//! Who a verified request is, and what the gateway tells the upstream about it.

use http::HeaderName;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Which provider proved it (`jwt:<name>`, `api_key:<name>`, `mtls`): a JWT `sub` and
    /// an API key id of the same spelling are different callers (the cache keys by both).
    pub provider: std::sync::Arc<str>,
    /// JWT `sub` or API key id: the rate-limit and log key for this caller.
    pub consumer: String,
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
    /// Headers to set on the upstream request (values derived from verified claims only).
    pub forward: Vec<(HeaderName, String)>,
    /// Unix seconds after which this identity must be re-verified (token `exp`).
    pub expires_at: Option<u64>,
    /// Claim values that rate-limit keys (`claim:<name>`) count by.
    pub claims: Vec<(String, String)>,
}

impl Identity {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}
