//! Authentication (JWT, API keys) and authorisation (roles, scopes) at the edge.
//!
//! [`Auth`] is built once from config and is pure request-in, verdict-out: no network, so it is
//! unit-testable and the proxy glue only has to act on the verdict.

pub mod api_key;
pub mod credential;
pub mod failure;
pub mod identity;
pub mod jwt;
pub mod mint;
pub mod policy;
pub mod token_cache;
pub mod token_source;

pub use credential::Credential;
pub use failure::AuthFailure;
pub use identity::Identity;
pub use policy::RoutePolicy;

use crate::config::{auth::RouteAuthConfig, Config, Problem};
use crate::observability::metrics::METRICS;
use crate::reply::{GatewayError, Refusal};
use crate::tls::client_cert::ClientCert;
use api_key::ApiKeyProvider;
use http::HeaderName;
use jwt::JwtProvider;
use pingora::http::RequestHeader;
use std::sync::Arc;
use token_cache::TokenCache;

/// Headers the gateway writes from identity even with no provider configured.
const DEFAULT_IDENTITY_HEADERS: [&str; 5] = [
    "x-user-id",
    "x-user-roles",
    "x-scopes",
    "x-consumer",
    crate::tls::client_cert::SUBJECT_HEADER,
];

pub struct Auth {
    jwt: Vec<JwtProvider>,
    api_keys: Vec<ApiKeyProvider>,
    cache: TokenCache,
    identity_headers: Vec<HeaderName>,
    /// Some configured identity header is itself spelled with `_` or `.`, so a dashed client
    /// header may alias it: every request header name must be compared.
    compare_every_name: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Let through, with the caller's identity when one was presented and verified.
    Pass(Option<Arc<Identity>>),
    Unauthorized(AuthFailure),
    Forbidden(Arc<Identity>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
/// A request let in: who it is (if it said), and a query parameter that carried the token and
/// must not be forwarded.
pub struct Admitted {
    pub identity: Option<Arc<Identity>>,
    pub strip_query_param: Option<String>,
    /// Where the credential that authenticated was carried (for `hide_credentials`).
    pub credential: Option<Credential>,
}

pub struct Outcome {
    pub verdict: Verdict,
    /// A query parameter that carried the token and must not be forwarded.
    pub strip_query_param: Option<String>,
    /// Where the credential that yielded the identity was carried.
    pub credential: Option<Credential>,
}

impl Auth {
    /// Build every provider; problems carry YAML paths (`auth.jwt.main.public_key_file`).
    pub fn build(config: &Config) -> Result<Auth, Vec<Problem>> {
        let mut problems = Vec::new();
        let key_claims: Vec<String> = config
            .rate_limits
            .values()
            .filter_map(|l| l.key.strip_prefix("claim:").map(|c| c.trim().to_string()))
            .collect();
        let mut jwt = Vec::new();
        for (name, cfg) in &config.auth.jwt {
            match JwtProvider::build(name, cfg, &key_claims) {
                Ok(p) => jwt.push(p),
                Err((field, msg)) => {
                    let path = if field.is_empty() {
                        format!("auth.jwt.{name}")
                    } else {
                        format!("auth.jwt.{name}.{field}")
                    };
                    problems.push(Problem::new(path, msg));
                }
            }
        }
        let mut api_keys = Vec::new();
        for (name, cfg) in &config.auth.api_keys {
            match ApiKeyProvider::build(name, cfg) {
                Ok(p) => api_keys.push(p),
                Err((field, msg)) => {
                    problems.push(Problem::new(format!("auth.api_keys.{name}.{field}"), msg))
                }
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut identity_headers: Vec<HeaderName> = DEFAULT_IDENTITY_HEADERS
            .iter()
            .map(|h| HeaderName::from_static(h))
            .collect();
        for h in jwt
            .iter()
            .flat_map(|p| p.forwarded_headers().cloned().collect::<Vec<_>>())
            .chain(api_keys.iter().map(|k| k.forward_id.clone()))
        {
            if !identity_headers.contains(&h) {
                identity_headers.push(h);
            }
        }
        let compare_every_name = identity_headers.iter().any(|h| {
            h.as_str()
                .bytes()
                .any(|b| !(b.is_ascii_alphanumeric() || b == b'-'))
        });
        Ok(Auth {
            jwt,
            api_keys,
            cache: TokenCache::new(config.auth.token_cache_entries),
            identity_headers,
            compare_every_name,
        })
    }

    /// Compile a route's policy; `None` when the route has no `auth`.
    pub fn policy(&self, cfg: Option<&RouteAuthConfig>) -> Option<RoutePolicy> {
        let cfg = cfg?;
        Some(RoutePolicy {
            jwt: cfg
                .jwt
                .as_ref()
                .and_then(|n| self.jwt.iter().position(|p| &p.name == n)),
            api_key: cfg
                .api_key
                .as_ref()
                .and_then(|n| self.api_keys.iter().position(|p| &p.name == n)),
            mtls: cfg.mtls,
            required: cfg.required,
            roles_any: cfg.roles_any.clone(),
            roles_all: cfg.roles_all.clone(),
            scopes_all: cfg.scopes_all.clone(),
        })
    }

    /// DESIGN.md step 4: remove every identity header a client sent, on every route.
    ///
    /// One pass over the names the request has (usually a handful) rather than a removal per
    /// identity header: a request without any, the common case, changes nothing and hashes
    /// nothing.
    pub fn strip_identity(&self, req: &mut RequestHeader) {
        let found: Vec<http::HeaderName> = req
            .headers
            .keys()
            .filter(|name| self.is_identity(name))
            .cloned()
            .collect();
        for name in found {
            req.remove_header(&name);
        }
    }

    /// An identity header in any spelling a backend would read as one. CGI-style backends
    /// (WSGI, Rack, PHP) map `-`, `_` and `.` in a name alike, so `X_User_Roles` and
    /// `X.User.Roles` reach them as HTTP_X_USER_ROLES, the same variable as the real header.
    /// Unless an identity header is itself spelled with `_` or `.`, only names holding one
    /// need that comparison.
    fn is_identity(&self, name: &http::HeaderName) -> bool {
        if self.identity_headers.contains(name) {
            return true;
        }
        let name = name.as_str();
        // Parsed names are lower case; any byte but a letter, digit or `-` may be a disguise.
        let disguised = |b: u8| !(b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        (self.compare_every_name || name.bytes().any(disguised))
            && self
                .identity_headers
                .iter()
                .any(|h| same_cgi_name(name, h.as_str()))
    }

    pub fn identity_headers(&self) -> &[HeaderName] {
        &self.identity_headers
    }

    /// DESIGN.md step 5 for one request: the caller's identity, or the gateway's answer (401
    /// with an RFC 6750 challenge, or 403), counted in `tollgate_auth_failures_total`. A 403
    /// still carries the identity, for the access log.
    pub fn admit(
        &self,
        policy: &RoutePolicy,
        req: &RequestHeader,
        cert: Option<&ClientCert>,
        route_name: &str,
    ) -> Result<Admitted, (Refusal, Option<Arc<Identity>>)> {
        let outcome = self.check(policy, req, cert);
        let reason = match &outcome.verdict {
            Verdict::Pass(_) => None,
            Verdict::Unauthorized(why) => Some(why.reason()),
            Verdict::Forbidden(_) => Some("forbidden"),
        };
        if let Some(reason) = reason {
            METRICS
                .auth_failures
                .with_label_values(&[route_name, reason])
                .inc();
        }
        match outcome.verdict {
            Verdict::Pass(identity) => Ok(Admitted {
                identity,
                strip_query_param: outcome.strip_query_param,
                credential: outcome.credential,
            }),
            Verdict::Unauthorized(why) => Err((
                Refusal::with_message(GatewayError::Unauthorized, why.description())
                    .header("WWW-Authenticate", why.challenge()),
                None,
            )),
            Verdict::Forbidden(identity) => Err((
                Refusal::with_message(
                    GatewayError::Forbidden,
                    "a required role or scope is missing",
                ),
                Some(identity),
            )),
        }
    }

    /// Authenticate and authorise one request against a route's policy.
    pub fn check(
        &self,
        policy: &RoutePolicy,
        req: &RequestHeader,
        cert: Option<&ClientCert>,
    ) -> Outcome {
        let mut strip_query_param = None;
        let mut credential = None;
        let verdict = self.verdict(policy, req, cert, &mut strip_query_param, &mut credential);
        Outcome {
            verdict,
            strip_query_param,
            credential,
        }
    }

    fn verdict(
        &self,
        policy: &RoutePolicy,
        req: &RequestHeader,
        cert: Option<&ClientCert>,
        strip_query: &mut Option<String>,
        credential: &mut Option<Credential>,
    ) -> Verdict {
        let needed = policy.requires_credentials(&req.method);
        let mut identity: Option<Arc<Identity>> = None;

        if let Some(provider) = policy.api_key.map(|i| &self.api_keys[i]) {
            let mut values = req.headers.get_all(&provider.header).iter();
            if let Some(first) = values.next() {
                if values.next().is_some() {
                    return Verdict::Unauthorized(AuthFailure::Ambiguous);
                }
                match provider.verify(first.as_bytes()) {
                    Ok(id) => {
                        identity = Some(id);
                        *credential = Some(Credential::Header(provider.header.clone()));
                    }
                    Err(f) => return Verdict::Unauthorized(f),
                }
            }
        }
        // A request with an API key *and* a token on a route that takes both is as ambiguous
        // as a token in two places: the key would win, and the unverified token would still
        // travel upstream to a backend that may believe it.
        let api_key_found = identity.is_some();
        if let Some((index, provider)) = policy.jwt.map(|i| (i, &self.jwt[i])) {
            match token_source::find(
                req,
                provider.token_cookie.as_deref(),
                provider.token_query.as_deref(),
            ) {
                Err(f) => return Verdict::Unauthorized(f),
                Ok(None) => {}
                Ok(Some(_)) if api_key_found => {
                    return Verdict::Unauthorized(AuthFailure::Ambiguous)
                }
                Ok(Some((token, source))) => {
                    if source == token_source::Source::Query {
                        *strip_query = provider.token_query.clone();
                    }
                    match self.verify_jwt(index, &token) {
                        Ok(id) => {
                            identity = Some(id);
                            *credential = Some(match source {
                                token_source::Source::Header => {
                                    Credential::Header(http::header::AUTHORIZATION)
                                }
                                token_source::Source::Cookie => Credential::Cookie(
                                    provider.token_cookie.clone().unwrap_or_default(),
                                ),
                                token_source::Source::Query => Credential::Query(
                                    provider.token_query.clone().unwrap_or_default(),
                                ),
                            });
                        }
                        Err(f) => return Verdict::Unauthorized(f),
                    }
                }
            }
        }
        if identity.is_none() && policy.mtls {
            identity = cert.map(|c| c.identity.clone());
        }
        match identity {
            None if needed => Verdict::Unauthorized(AuthFailure::Missing),
            Some(id) if needed && !policy.permits(&id) => Verdict::Forbidden(id),
            other => Verdict::Pass(other),
        }
    }

    /// Whether the request carries a credential some configured provider reads
    /// (`Authorization`, an API key header, a token cookie or parameter). On a route that did
    /// not verify it, the answer may be that caller's alone: the cache does not share it.
    pub fn carries_credential(&self, req: &RequestHeader) -> bool {
        req.headers.contains_key(http::header::AUTHORIZATION)
            || self
                .api_keys
                .iter()
                .any(|p| req.headers.contains_key(&p.header))
            || self.jwt.iter().any(|p| {
                let (cookie, query) = (p.token_cookie.as_deref(), p.token_query.as_deref());
                !matches!(token_source::find(req, cookie, query), Ok(None))
            })
    }

    /// Verify through the cache: a repeat token costs one SHA-256 and a map lookup.
    pub fn verify_jwt(&self, provider: usize, token: &str) -> Result<Arc<Identity>, AuthFailure> {
        if token.len() > jwt::MAX_TOKEN_LEN {
            return Err(AuthFailure::Malformed);
        }
        let now = jsonwebtoken::get_current_timestamp();
        let key = token_cache::key(provider, token);
        if let Some(id) = self.cache.get(&key, now) {
            return Ok(id);
        }
        let id = Arc::new(self.jwt[provider].verify(token)?);
        self.cache.insert(key, id.clone(), now);
        Ok(id)
    }

    /// Index of a JWT provider by name (benches, the token minting command).
    pub fn jwt_index(&self, name: &str) -> Option<usize> {
        self.jwt.iter().position(|p| p.name == name)
    }
}

/// Whether two header names reach a CGI-style backend as the same variable: compared
/// case-insensitively with every byte that is not a letter or digit alike. WSGI, Rack and PHP
/// map `-`, `_` and `.` to `_`; lighttpd's CGI/FastCGI/SCGI maps every other byte too, so
/// `X~User~Id` and `X+User+Id` reach its applications as `HTTP_X_USER_ID`.
pub fn same_cgi_name(a: &str, b: &str) -> bool {
    same_cgi_bytes(a.as_bytes(), b.as_bytes())
}

/// [`same_cgi_name`] on raw bytes, for the listener, which sees names before they are parsed.
pub fn same_cgi_bytes(a: &[u8], b: &[u8]) -> bool {
    let fold = |c: u8| match c {
        c if c.is_ascii_alphanumeric() => c.to_ascii_lowercase(),
        _ => b'-',
    };
    a.len() == b.len() && a.iter().zip(b).all(|(&x, &y)| fold(x) == fold(y))
}

#[cfg(test)]
mod tests {
    use super::same_cgi_name;

    #[test]
    fn cgi_names_fold_case_and_separators() {
        for alias in [
            "x-user-id",
            "X.User.Id",
            "x_user_id",
            "X-USER_ID",
            "x.user-id",
            "x~user~id",
            "X+User+Id",
            "x|user*id",
        ] {
            assert!(same_cgi_name(alias, "x-user-id"), "{alias}");
            assert!(same_cgi_name("x_user_id", alias), "{alias}");
        }
        for other in ["x-user-ids", "x-userid", "x-user-i", "y-user-id", "xuserid"] {
            assert!(!same_cgi_name(other, "x-user-id"), "{other}");
        }
    }
}
