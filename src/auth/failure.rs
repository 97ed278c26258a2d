//! Why a request was not let in: a bounded metric label and a short, non-secret description
//! for `WWW-Authenticate` (RFC 6750 `error_description`). Nothing here ever echoes a token.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    Missing,
    Malformed,
    Ambiguous,
    Expired,
    NotYetValid,
    BadSignature,
    WrongIssuer,
    WrongAudience,
    UnknownKid,
    DisallowedAlg,
    MissingClaim,
    /// The token's `crit` header names extensions that must be understood (RFC 7515 §4.1.11);
    /// tollgate implements none.
    UnsupportedCrit,
    InvalidApiKey,
}

impl AuthFailure {
    /// `tollgate_auth_failures_total{reason}` label.
    pub fn reason(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Malformed => "malformed",
            AuthFailure::Ambiguous => "ambiguous",
            AuthFailure::Expired => "expired",
            AuthFailure::NotYetValid => "not_yet_valid",
            AuthFailure::BadSignature => "bad_signature",
            AuthFailure::WrongIssuer => "wrong_issuer",
            AuthFailure::WrongAudience => "wrong_audience",
            AuthFailure::UnknownKid => "unknown_kid",
            AuthFailure::DisallowedAlg => "disallowed_alg",
            AuthFailure::MissingClaim => "missing_claim",
            AuthFailure::UnsupportedCrit => "unsupported_crit",
            AuthFailure::InvalidApiKey => "invalid_api_key",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            AuthFailure::Missing => "credentials missing",
            AuthFailure::Malformed => "token malformed",
            AuthFailure::Ambiguous => "token supplied in more than one place",
            AuthFailure::Expired => "token expired",
            AuthFailure::NotYetValid => "token not yet valid",
            AuthFailure::BadSignature => "signature invalid",
            AuthFailure::WrongIssuer => "issuer not accepted",
            AuthFailure::WrongAudience => "audience not accepted",
            AuthFailure::UnknownKid => "unknown key id",
            AuthFailure::DisallowedAlg => "algorithm not accepted",
            AuthFailure::MissingClaim => "required claim missing",
            AuthFailure::UnsupportedCrit => "token requires an unsupported extension (crit)",
            AuthFailure::InvalidApiKey => "API key invalid",
        }
    }

    /// The RFC 6750 `WWW-Authenticate` challenge; the description is fixed text, never the
    /// token.
    pub fn challenge(self) -> String {
        format!(
            "Bearer realm=\"tollgate\", error=\"invalid_token\", error_description=\"{}\"",
            self.description()
        )
    }
}
