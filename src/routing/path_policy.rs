//! The `path_policy` decision (DESIGN.md "Path policy"): which path spellings a route accepts,
//! and — for `escaped_slashes: decode` — routing again on the decoded segments, so that the
//! route that judges a request is the one whose segments the backend will read.
//!
//! The policy that applies is the one of the route the path leads to (a route may relax the
//! server's), or the server's when no route matches. A path is first normalised with escaped
//! slashes kept: a `%2F` is data inside one segment. If the route found that way decodes them,
//! the path is normalised and routed again with `%2F` as `/`, and the route reached then must
//! not reject escaped slashes itself.

use super::normalize::{normalize, Found, NormalizedPath, PathError};
use super::Match;
use crate::config::path_policy::{EscapedSlashes, PathPolicyConfig, RejectOrKeep};

/// Why a path was refused (400 `bad_request`); the text is the client's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathRefusal {
    #[error(transparent)]
    Malformed(#[from] PathError),
    #[error("encoded slash or backslash (%2F, %5C) in path")]
    EscapedSlash,
    #[error("backslash in path")]
    Backslash,
    #[error("path parameter (;) in path")]
    Parameters,
}

/// The spellings `policy` refuses among those `found` (escaped slashes only when
/// `check_slashes`: after decoding there are none left to judge).
fn refused(found: Found, policy: PathPolicyConfig, check_slashes: bool) -> Option<PathRefusal> {
    if check_slashes && found.escaped_slash && policy.escaped_slashes == EscapedSlashes::Reject {
        return Some(PathRefusal::EscapedSlash);
    }
    if found.backslash && policy.backslash == RejectOrKeep::Reject {
        return Some(PathRefusal::Backslash);
    }
    if found.parameters && policy.path_parameters == RejectOrKeep::Reject {
        return Some(PathRefusal::Parameters);
    }
    None
}

/// Normalise `raw`, route it with `lookup`, and apply the policy of the route it leads to
/// (`policy_of(Some(route))`, or `policy_of(None)` for the server's when nothing matches).
pub fn resolve<'a>(
    raw: &'a str,
    lookup: impl Fn(&str) -> Match,
    policy_of: impl Fn(Option<usize>) -> PathPolicyConfig,
) -> Result<(NormalizedPath<'a>, Match), PathRefusal> {
    let route_of = |m: Match| match m {
        Match::Found(i) => Some(i),
        _ => None,
    };
    let path = normalize(raw, false)?;
    let found = lookup(path.route());
    let policy = policy_of(route_of(found));
    if !(path.found.escaped_slash && policy.escaped_slashes == EscapedSlashes::Decode) {
        return match refused(path.found, policy, true) {
            Some(why) => Err(why),
            None => Ok((path, found)),
        };
    }
    let decoded = normalize(raw, true)?;
    let found = lookup(decoded.route());
    let policy = policy_of(route_of(found));
    if policy.escaped_slashes == EscapedSlashes::Reject {
        return Err(PathRefusal::EscapedSlash);
    }
    match refused(decoded.found, policy, false) {
        Some(why) => Err(why),
        None => Ok((decoded, found)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: PathPolicyConfig = PathPolicyConfig {
        escaped_slashes: EscapedSlashes::Reject,
        backslash: RejectOrKeep::Reject,
        path_parameters: RejectOrKeep::Reject,
    };
    const LOOSE: PathPolicyConfig = PathPolicyConfig {
        escaped_slashes: EscapedSlashes::Keep,
        backslash: RejectOrKeep::Keep,
        path_parameters: RejectOrKeep::Keep,
    };
    const DECODE: PathPolicyConfig = PathPolicyConfig {
        escaped_slashes: EscapedSlashes::Decode,
        ..STRICT
    };

    /// Routes: 0 = `/public`, 1 = `/admin`, 2 = `/`.
    fn lookup(path: &str) -> Match {
        let under = |p: &str| path == p || path.starts_with(&format!("{p}/"));
        if under("/admin") {
            Match::Found(1)
        } else if under("/public") {
            Match::Found(0)
        } else {
            Match::Found(2)
        }
    }

    fn run(
        raw: &str,
        policies: [PathPolicyConfig; 3],
    ) -> Result<(String, String, Match), PathRefusal> {
        resolve(raw, lookup, |r| r.map_or(STRICT, |i| policies[i]))
            .map(|(p, m)| (p.forward.to_string(), p.route().to_string(), m))
    }

    #[test]
    fn reject_is_the_default_for_each_spelling() {
        let strict = [STRICT; 3];
        assert_eq!(
            run("/public/..%2fadmin/x", strict),
            Err(PathRefusal::EscapedSlash)
        );
        assert_eq!(run("/public/a%5Cb", strict), Err(PathRefusal::EscapedSlash));
        assert_eq!(
            run("/public\\..\\admin", strict),
            Err(PathRefusal::Backslash)
        );
        assert_eq!(
            run("/admin;x=1/secret", strict),
            Err(PathRefusal::Parameters)
        );
        assert_eq!(
            run("/public/..;/admin/x", strict),
            Err(PathRefusal::Parameters)
        );
        assert_eq!(
            run("/public/../x", strict),
            Ok(("/x".into(), "/x".into(), Match::Found(2)))
        );
    }

    #[test]
    fn decode_routes_on_the_decoded_segments() {
        let got = run("/public/..%2fadmin/x", [DECODE; 3]).expect("decoded");
        assert_eq!(got, ("/admin/x".into(), "/admin/x".into(), Match::Found(1)));
        // The route reached after decoding must accept escaped slashes itself.
        assert_eq!(
            run("/public/..%2fadmin/x", [DECODE, STRICT, DECODE]),
            Err(PathRefusal::EscapedSlash)
        );
        // A decoded %5C is a backslash, judged as one.
        assert_eq!(
            run("/public/a%5cb", [DECODE; 3]),
            Err(PathRefusal::Backslash)
        );
    }

    #[test]
    fn keep_forwards_but_routes_conservatively() {
        let got = run("/public/..%2fadmin/x", [LOOSE; 3]).expect("kept");
        assert_eq!(got.0, "/public/..%2Fadmin/x");
        assert_eq!(got.2, Match::Found(0));
        // Parameters kept: routed as Tomcat reads it, forwarded as sent.
        let got = run("/admin;x=1/secret", [LOOSE; 3]).expect("kept");
        assert_eq!(
            got,
            (
                "/admin;x=1/secret".into(),
                "/admin/secret".into(),
                Match::Found(1)
            )
        );
        let got = run("/public/..;/admin/x", [LOOSE; 3]).expect("kept");
        assert_eq!(got.2, Match::Found(1));
    }

    #[test]
    fn a_route_override_relaxes_only_that_route() {
        let policies = [LOOSE, STRICT, STRICT];
        assert!(run("/public/a%2Fb", policies).is_ok());
        assert_eq!(
            run("/other/a%2Fb", policies),
            Err(PathRefusal::EscapedSlash)
        );
    }

    #[test]
    fn malformed_paths_are_refused_whatever_the_policy() {
        assert_eq!(
            run("/public/../../x", [LOOSE; 3]),
            Err(PathRefusal::Malformed(PathError::AboveRoot))
        );
        assert_eq!(
            run("/public/%2e%2e%2f..%2f..", [DECODE; 3]),
            Err(PathRefusal::Malformed(PathError::AboveRoot))
        );
    }
}
