//! A route's auth policy: when credentials are required and what they must carry.

use super::identity::Identity;
use crate::config::auth::Required;

#[derive(Debug, Clone)]
pub struct RoutePolicy {
    pub jwt: Option<usize>,
    pub api_key: Option<usize>,
    /// A verified client certificate is a credential on this route.
    pub mtls: bool,
    pub required: Required,
    pub roles_any: Vec<String>,
    pub roles_all: Vec<String>,
    pub scopes_all: Vec<String>,
}

/// The methods that change state: `required: mutating` protects exactly these.
pub fn is_mutating(method: &http::Method) -> bool {
    matches!(
        *method,
        http::Method::POST | http::Method::PUT | http::Method::PATCH | http::Method::DELETE
    )
}

impl RoutePolicy {
    pub fn requires_credentials(&self, method: &http::Method) -> bool {
        match self.required {
            Required::Always => true,
            Required::Never => false,
            Required::Mutating => is_mutating(method),
        }
    }

    /// Roles and scopes: `roles_any` needs one, `roles_all` and `scopes_all` need every one.
    pub fn permits(&self, id: &Identity) -> bool {
        (self.roles_any.is_empty() || self.roles_any.iter().any(|r| id.has_role(r)))
            && self.roles_all.iter().all(|r| id.has_role(r))
            && self.scopes_all.iter().all(|s| id.has_scope(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(roles: &[&str], scopes: &[&str]) -> Identity {
        Identity {
            provider: "jwt:t".into(),
            consumer: "u".into(),
            roles: roles.iter().map(|s| s.to_string()).collect(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            forward: vec![],
            expires_at: None,
            claims: vec![],
        }
    }

    fn policy(required: Required) -> RoutePolicy {
        RoutePolicy {
            jwt: Some(0),
            api_key: None,
            mtls: false,
            required,
            roles_any: vec!["admin".into(), "ops".into()],
            roles_all: vec!["staff".into()],
            scopes_all: vec!["orders:write".into()],
        }
    }

    #[test]
    fn mutating_protects_writes_only() {
        let p = policy(Required::Mutating);
        assert!(!p.requires_credentials(&http::Method::GET));
        assert!(!p.requires_credentials(&http::Method::HEAD));
        for m in [
            http::Method::POST,
            http::Method::PUT,
            http::Method::PATCH,
            http::Method::DELETE,
        ] {
            assert!(p.requires_credentials(&m), "{m}");
        }
        assert!(!policy(Required::Never).requires_credentials(&http::Method::POST));
        assert!(policy(Required::Always).requires_credentials(&http::Method::GET));
    }

    #[test]
    fn roles_and_scopes() {
        let p = policy(Required::Always);
        assert!(p.permits(&id(&["ops", "staff"], &["orders:write", "x"])));
        assert!(
            !p.permits(&id(&["staff"], &["orders:write"])),
            "needs one of roles_any"
        );
        assert!(
            !p.permits(&id(&["admin"], &["orders:write"])),
            "needs all of roles_all"
        );
        assert!(
            !p.permits(&id(&["admin", "staff"], &[])),
            "needs all scopes"
        );
    }
}
