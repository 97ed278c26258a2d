//! Where a bearer token comes from: `Authorization: Bearer` always; a cookie or a query
//! parameter only when the provider enables them. A token found in more than one place is
//! refused: two sources would mean two possible identities for one request.

use super::failure::AuthFailure;
use pingora::http::RequestHeader;
use std::borrow::Cow;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Header,
    Cookie,
    Query,
}

/// The one token of a request, if any.
pub fn find<'a>(
    req: &'a RequestHeader,
    cookie: Option<&str>,
    query: Option<&str>,
) -> Result<Option<(Cow<'a, str>, Source)>, AuthFailure> {
    let mut found: Option<(Cow<'a, str>, Source)> = None;
    let mut put = |tok: Cow<'a, str>, src: Source| -> Result<(), AuthFailure> {
        if found.is_some() {
            return Err(AuthFailure::Ambiguous);
        }
        found = Some((tok, src));
        Ok(())
    };
    for value in req.headers.get_all(http::header::AUTHORIZATION) {
        let Ok(v) = value.to_str() else {
            return Err(AuthFailure::Malformed);
        };
        if let Some(tok) = bearer(v) {
            put(Cow::Borrowed(tok), Source::Header)?;
        }
    }
    if let Some(name) = cookie {
        for value in req.headers.get_all(http::header::COOKIE) {
            if let Ok(v) = value.to_str() {
                for pair in v.split(';') {
                    if let Some((k, val)) = pair.trim().split_once('=') {
                        if k == name && !val.is_empty() {
                            put(Cow::Borrowed(val), Source::Cookie)?;
                        }
                    }
                }
            }
        }
    }
    if let (Some(name), Some(q)) = (query, req.uri.query()) {
        for pair in q.split(QUERY_SEPARATORS) {
            if let Some((k, val)) = pair.split_once('=') {
                if same_param(k, name) && !val.is_empty() {
                    let decoded = percent_encoding::percent_decode_str(val)
                        .decode_utf8()
                        .map_err(|_| AuthFailure::Malformed)?;
                    put(Cow::Owned(decoded.into_owned()), Source::Query)?;
                }
            }
        }
    }
    Ok(found)
}

/// Query parameters are split on `;` too: some frameworks do (Python before 3.10, Rack's
/// default), and a token they would read must not pass unseen.
const QUERY_SEPARATORS: [char; 2] = ['&', ';'];

/// A parameter name as a backend reads it: percent-decoded (`access%5Ftoken` is
/// `access_token` to `parse_qs`, Rack and Express alike).
pub fn same_param(raw: &str, name: &str) -> bool {
    raw == name || percent_encoding::percent_decode_str(raw).eq(name.bytes())
}

/// `Bearer <token>` with a case-insensitive scheme (RFC 6750 §2.1). Any whitespace ends the
/// scheme: a backend that splits on a tab would otherwise read a token the gateway never saw.
fn bearer(v: &str) -> Option<&str> {
    let v = v.trim();
    let (scheme, rest) = v.split_once([' ', '\t'])?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let tok = rest.trim();
    (!tok.is_empty()).then_some(tok)
}

/// The query string without parameter `name` (so a query token never reaches the upstream).
pub fn remove_query_param(query: &str, name: &str) -> Option<String> {
    let kept: Vec<&str> = query
        .split(QUERY_SEPARATORS)
        .filter(|p| !p.is_empty() && !same_param(p.split_once('=').map_or(*p, |(k, _)| k), name))
        .collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_support::get_request as req;

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        let r = req("/", &[("Authorization", "bEaReR abc.def.ghi")]);
        let (tok, src) = find(&r, None, None).unwrap().unwrap();
        assert_eq!(tok, "abc.def.ghi");
        assert_eq!(src, Source::Header);
        assert!(
            find(&req("/", &[("Authorization", "Basic xyz")]), None, None)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn cookie_and_query_only_when_enabled_and_never_two_sources() {
        let r = req("/?access_token=q.q.q&x=1", &[("Cookie", "a=1; tok=c.c.c")]);
        assert!(find(&r, None, None).unwrap().is_none());
        assert_eq!(find(&r, Some("tok"), None).unwrap().unwrap().0, "c.c.c");
        assert_eq!(
            find(&r, None, Some("access_token")).unwrap().unwrap().0,
            "q.q.q"
        );
        assert_eq!(
            find(&r, Some("tok"), Some("access_token")),
            Err(AuthFailure::Ambiguous)
        );
        let two = req(
            "/",
            &[("Authorization", "Bearer a"), ("Authorization", "Bearer b")],
        );
        assert_eq!(find(&two, None, None), Err(AuthFailure::Ambiguous));
    }

    #[test]
    fn query_token_is_removed_before_forwarding() {
        assert_eq!(
            remove_query_param("access_token=t&x=1", "access_token").as_deref(),
            Some("x=1")
        );
        assert_eq!(remove_query_param("access_token=t", "access_token"), None);
    }

    #[test]
    fn disguised_token_spellings_are_found() {
        let r = req("/", &[("Authorization", "Bearer\tabc.def.ghi")]);
        let (tok, _) = find(&r, None, None).unwrap().unwrap();
        assert_eq!(tok, "abc.def.ghi");
        for target in [
            "/?access%5Ftoken=t1",
            "/?x=1;access_token=t1",
            "/?access%5ftoken=t1&y=2",
        ] {
            let r = req(target, &[]);
            let (tok, src) = find(&r, None, Some("access_token")).unwrap().unwrap();
            assert_eq!((tok.as_ref(), src), ("t1", Source::Query), "{target}");
            let q = r.uri.query().unwrap();
            let rest = remove_query_param(q, "access_token").unwrap_or_default();
            assert!(!rest.contains("t1"), "{target}: {rest}");
        }
        let r = req("/?access_token=a&access%5Ftoken=b", &[]);
        assert_eq!(
            find(&r, None, Some("access_token")),
            Err(AuthFailure::Ambiguous)
        );
    }
}
