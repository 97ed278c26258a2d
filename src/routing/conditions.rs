//! Header and query conditions of a route, compiled once at start (regexes included).
//!
//! A route without conditions carries none of this: the router stores `Option<Box<_>>` and
//! the common case costs one `None` check. Conditions never allocate except to percent-decode
//! a query value that actually contains an escape.

use crate::config::matching::ValueMatch;
use crate::config::MatchConfig;
use http::{HeaderMap, HeaderName};
use percent_encoding::percent_decode;
use regex::bytes::Regex;
use std::borrow::Cow;

/// What a lookup may consult besides host, path and method.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestView<'a> {
    pub headers: Option<&'a HeaderMap>,
    /// The raw query string (after `?`), if any.
    pub query: Option<&'a str>,
}

#[derive(Debug)]
enum ValueTest {
    Exact(Box<[u8]>),
    Present,
    Prefix(Box<[u8]>),
    Regex(Regex),
}

impl ValueTest {
    fn compile(m: &ValueMatch) -> Result<ValueTest, regex::Error> {
        Ok(match m {
            ValueMatch::Exact(v) => ValueTest::Exact(v.as_bytes().into()),
            ValueMatch::Present => ValueTest::Present,
            ValueMatch::Prefix(p) => ValueTest::Prefix(p.as_bytes().into()),
            ValueMatch::Regex(r) => ValueTest::Regex(Regex::new(r)?),
        })
    }

    fn accepts(&self, value: &[u8]) -> bool {
        match self {
            ValueTest::Exact(v) => value == &v[..],
            ValueTest::Present => true,
            ValueTest::Prefix(p) => value.starts_with(p),
            ValueTest::Regex(r) => r.is_match(value),
        }
    }
}

/// All the header and query conditions of one route; every one must hold.
#[derive(Debug)]
pub struct Conditions {
    headers: Vec<(HeaderName, ValueTest)>,
    query: Vec<(Box<[u8]>, ValueTest)>,
}

impl Conditions {
    /// `None` when the route has no conditions (or one cannot compile, which `check` refuses
    /// before a runtime is ever built).
    pub fn compile(m: &MatchConfig) -> Option<Conditions> {
        if m.headers.is_empty() && m.query.is_empty() {
            return None;
        }
        let mut headers = Vec::with_capacity(m.headers.len());
        for (name, cond) in &m.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
            headers.push((name, ValueTest::compile(cond).ok()?));
        }
        let mut query = Vec::with_capacity(m.query.len());
        for (name, cond) in &m.query {
            query.push((name.as_bytes().into(), ValueTest::compile(cond).ok()?));
        }
        Some(Conditions { headers, query })
    }

    /// How many conditions: more beat fewer at the same prefix length.
    pub fn count(&self) -> usize {
        self.headers.len() + self.query.len()
    }

    pub fn hold(&self, req: &RequestView) -> bool {
        self.headers.iter().all(|(name, test)| {
            req.headers.is_some_and(|h| {
                h.get_all(name)
                    .iter()
                    .any(|value| test.accepts(value.as_bytes()))
            })
        }) && self.query.iter().all(|(name, test)| {
            req.query
                .is_some_and(|q| query_values(q, name).any(|v| test.accepts(&v)))
        })
    }
}

/// The percent-decoded values of every `name=value` pair of a query string whose decoded name
/// is `name` (`+` is a space, as in HTML forms); a bare `name` has the empty value.
fn query_values<'q>(query: &'q str, name: &'q [u8]) -> impl Iterator<Item = Cow<'q, [u8]>> + 'q {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter_map(move |pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k).as_ref() == name).then(|| decode(v))
        })
}

fn decode(s: &str) -> Cow<'_, [u8]> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(s.as_bytes());
    }
    let spaced: Cow<[u8]> = if s.contains('+') {
        Cow::Owned(
            s.bytes()
                .map(|b| if b == b'+' { b' ' } else { b })
                .collect(),
        )
    } else {
        Cow::Borrowed(s.as_bytes())
    };
    match spaced {
        Cow::Borrowed(b) => percent_decode(b).into(),
        Cow::Owned(b) => Cow::Owned(percent_decode(&b).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn conditions(headers: &[(&str, ValueMatch)], query: &[(&str, ValueMatch)]) -> Conditions {
        let m = MatchConfig {
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect::<BTreeMap<_, _>>(),
            query: query
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            ..MatchConfig::default()
        };
        Conditions::compile(&m).expect("compiles")
    }

    use crate::test_support::header_map as headers;

    #[test]
    fn no_conditions_compile_to_nothing() {
        assert!(Conditions::compile(&MatchConfig::default()).is_none());
    }

    #[test]
    fn header_names_are_case_insensitive_and_any_repeated_value_may_match() {
        let c = conditions(&[("X-Api-Version", ValueMatch::Exact("2".into()))], &[]);
        let h = headers(&[("x-api-version", "1"), ("X-API-VERSION", "2")]);
        assert!(c.hold(&RequestView {
            headers: Some(&h),
            query: None
        }));
        let h = headers(&[("x-api-version", "1")]);
        assert!(!c.hold(&RequestView {
            headers: Some(&h),
            query: None
        }));
        assert!(!c.hold(&RequestView::default()));
    }

    #[test]
    fn present_prefix_and_regex_forms() {
        let c = conditions(
            &[
                ("X-Canary", ValueMatch::Present),
                ("Accept", ValueMatch::Prefix("application/vnd.acme".into())),
                ("X-Tenant", ValueMatch::Regex("^t-[0-9]+$".into())),
            ],
            &[],
        );
        let ok = headers(&[
            ("x-canary", ""),
            ("accept", "application/vnd.acme.v2+json"),
            ("x-tenant", "t-42"),
        ]);
        assert!(c.hold(&RequestView {
            headers: Some(&ok),
            query: None
        }));
        let bad = headers(&[
            ("x-canary", "1"),
            ("accept", "application/vnd.acme.v2+json"),
            ("x-tenant", "t-42x"),
        ]);
        assert!(!c.hold(&RequestView {
            headers: Some(&bad),
            query: None
        }));
        assert_eq!(c.count(), 3);
    }

    #[test]
    fn query_values_are_percent_decoded_before_comparison() {
        let c = conditions(
            &[],
            &[
                ("beta", ValueMatch::Exact("1".into())),
                ("who", ValueMatch::Exact("a b/c".into())),
            ],
        );
        let view = |q| RequestView {
            headers: None,
            query: Some(q),
        };
        assert!(c.hold(&view("x=0&beta=1&who=a%20b%2Fc")));
        assert!(c.hold(&view("who=a+b/c&b%65ta=1")));
        assert!(!c.hold(&view("beta=2&who=a%20b%2Fc")));
        assert!(!c.hold(&view("who=a%20b%2Fc")));
        // repeated parameters: any value may match
        assert!(c.hold(&view("beta=0&beta=1&who=a%20b%2Fc")));
    }

    #[test]
    fn a_bare_query_name_is_present_with_an_empty_value() {
        let c = conditions(&[], &[("debug", ValueMatch::Present)]);
        let view = RequestView {
            headers: None,
            query: Some("debug&x=1"),
        };
        assert!(c.hold(&view));
    }
}
