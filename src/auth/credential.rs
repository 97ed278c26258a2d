//! Which credential authenticated a request, and removing exactly it from the upstream request
//! (`hide_credentials`, as Kong's): the backend then never holds a token or key it could leak
//! or replay, while other headers, cookies and parameters reach it untouched.

use http::HeaderName;
use pingora::http::RequestHeader;

/// Where the credential that authenticated the request was carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// `Authorization` (bearer token) or an API key header.
    Header(HeaderName),
    /// A JWT in this cookie (`token_cookie`).
    Cookie(String),
    /// A JWT in this query parameter (`token_query`; always stripped, see `token_source`).
    Query(String),
}

impl Credential {
    /// Remove the credential from the request sent upstream.
    pub fn remove_from(&self, upstream: &mut RequestHeader) -> pingora::Result<()> {
        match self {
            Credential::Header(name) => {
                upstream.remove_header(name);
            }
            Credential::Cookie(name) => {
                let kept = without_cookie(upstream, name);
                upstream.remove_header(&http::header::COOKIE);
                if !kept.is_empty() {
                    upstream.insert_header(http::header::COOKIE, kept)?;
                }
            }
            Credential::Query(name) => {
                let uri = &upstream.uri;
                if let Some(query) = uri.query() {
                    let rest = super::token_source::remove_query_param(query, name);
                    let target = match rest {
                        Some(q) => format!("{}?{q}", uri.path()),
                        None => uri.path().to_owned(),
                    };
                    upstream.set_raw_path(target.as_bytes())?;
                }
            }
        }
        Ok(())
    }
}

/// Every cookie of every `Cookie` header but `name`, joined into one header (RFC 6265 §5.4).
fn without_cookie(req: &RequestHeader, name: &str) -> String {
    req.headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty() && pair.split_once('=').map_or(*pair, |(k, _)| k) != name)
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_support::get_request as req;

    #[test]
    fn only_the_authenticating_cookie_goes() {
        let mut r = req(
            "/",
            &[("Cookie", "theme=dark; tok=a.b.c"), ("Cookie", "lang=en")],
        );
        Credential::Cookie("tok".into())
            .remove_from(&mut r)
            .unwrap();
        assert_eq!(r.headers["cookie"], "theme=dark; lang=en");
        let mut alone = req("/", &[("Cookie", "tok=a.b.c")]);
        Credential::Cookie("tok".into())
            .remove_from(&mut alone)
            .unwrap();
        assert!(alone.headers.get("cookie").is_none());
    }

    #[test]
    fn header_and_query() {
        let mut r = req(
            "/a?x=1&access_token=t&y=2",
            &[("Authorization", "Bearer t"), ("X-API-Key", "k")],
        );
        Credential::Header(http::header::AUTHORIZATION)
            .remove_from(&mut r)
            .unwrap();
        assert!(r.headers.get("authorization").is_none());
        assert_eq!(r.headers["x-api-key"], "k");
        Credential::Query("access_token".into())
            .remove_from(&mut r)
            .unwrap();
        assert_eq!(r.uri.to_string(), "/a?x=1&y=2");
    }
}
