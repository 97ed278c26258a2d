//! Configured header edits (`request_headers` / `response_headers`), parsed once at start.

use crate::config::HeaderOps;
use http::{HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};

#[derive(Debug, Clone, Default)]
pub struct CompiledHeaderOps {
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
}

impl CompiledHeaderOps {
    /// Names and values were checked by config validation; anything unparsable is skipped.
    pub fn compile(ops: &HeaderOps) -> CompiledHeaderOps {
        let pairs = |m: &std::collections::BTreeMap<String, String>| {
            m.iter()
                .filter_map(|(k, v)| {
                    Some((
                        HeaderName::from_bytes(k.as_bytes()).ok()?,
                        HeaderValue::from_str(v).ok()?,
                    ))
                })
                .collect::<Vec<_>>()
        };
        CompiledHeaderOps {
            remove: ops
                .remove
                .iter()
                .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
                .collect(),
            set: pairs(&ops.set),
            add: pairs(&ops.add),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    /// Order: remove, then set, then add — so `remove: [X]` + `add: {X: y}` yields exactly `y`.
    pub fn apply_request(&self, req: &mut RequestHeader) -> pingora::Result<()> {
        for n in &self.remove {
            req.remove_header(n);
        }
        for (n, v) in &self.set {
            req.insert_header(n.clone(), v.clone())?;
        }
        for (n, v) in &self.add {
            req.append_header(n.clone(), v.clone())?;
        }
        Ok(())
    }

    pub fn apply_response(&self, resp: &mut ResponseHeader) -> pingora::Result<()> {
        for n in &self.remove {
            resp.remove_header(n);
        }
        for (n, v) in &self.set {
            resp.insert_header(n.clone(), v.clone())?;
        }
        for (n, v) in &self.add {
            resp.append_header(n.clone(), v.clone())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_set_add_in_that_order() {
        let ops: HeaderOps = serde_yaml::from_str(
            "{add: {X-Gateway: tollgate}, set: {X-Env: prod}, remove: [Cookie, X-Gateway]}",
        )
        .unwrap();
        let ops = CompiledHeaderOps::compile(&ops);
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("Cookie", "secret").unwrap();
        req.insert_header("X-Gateway", "spoofed").unwrap();
        req.insert_header("X-Env", "dev").unwrap();
        ops.apply_request(&mut req).unwrap();
        assert!(req.headers.get("cookie").is_none());
        assert_eq!(req.headers.get_all("x-gateway").iter().count(), 1);
        assert_eq!(req.headers.get("x-gateway").unwrap(), "tollgate");
        assert_eq!(req.headers.get("x-env").unwrap(), "prod");
    }
}

/// Several `Cookie` fields as one (RFC 9113 §8.2.3: an HTTP/2 client may split its cookies
/// into one field each, and they must be joined with `; ` before going to HTTP/1.1, where a
/// server reads only one `Cookie` line, and frameworks differ on which).
pub fn join_cookies(req: &mut RequestHeader) -> pingora::Result<()> {
    let mut lines = req.headers.get_all(http::header::COOKIE).iter();
    if lines.nth(1).is_none() {
        return Ok(());
    }
    let joined: Vec<&[u8]> = req
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    let joined = HeaderValue::from_bytes(&joined.join(&b"; "[..]))
        .map_err(|_| pingora::Error::explain(pingora::ErrorType::InvalidHTTPHeader, "cookie"))?;
    req.insert_header(http::header::COOKIE, joined)?;
    Ok(())
}

#[cfg(test)]
mod cookie_tests {
    use super::join_cookies;

    #[test]
    fn split_cookie_fields_become_one() {
        let mut req =
            crate::test_support::get_request("/", &[("cookie", "a=1"), ("cookie", "b=2")]);
        join_cookies(&mut req).unwrap();
        let lines: Vec<_> = req.headers.get_all("cookie").iter().collect();
        assert_eq!(lines, ["a=1; b=2"]);
        let mut one = crate::test_support::get_request("/", &[("cookie", "a=1")]);
        join_cookies(&mut one).unwrap();
        assert_eq!(one.headers["cookie"], "a=1");
    }
}
