//! Which request-targets the gateway routes at all (RFC 9112 §3.2), before any path is judged.
//!
//! The router and the path policy read `uri.path()`; Pingora keeps any target that is not a
//! path verbatim and forwards those bytes, while the `Uri` the router sees falls back to `/`
//! for a relative target like `../admin` or `%2e%2e/admin`. Such a target would be routed as
//! `/` and reach the backend un-normalised: the router and the backend would read different
//! paths. So only a path (origin-form) or an `http`/`https` URL (absolute-form, whose path is
//! what `uri.path()` holds) is routed; anything else is a 400.

use pingora::http::RequestHeader;

/// The request-target forms the gateway routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// `/path?query`.
    Origin,
    /// `http://host/path?query`: forwarded upstream as its origin-form.
    Absolute,
}

/// The form of `req`'s target, or why it is refused.
pub fn check(req: &RequestHeader) -> Result<Form, &'static str> {
    let form = form(req.raw_path())
        .ok_or("the request target must be a path starting with / or an http(s) URL")?;
    let has_host = req.headers.contains_key(http::header::HOST);
    // RFC 9112 §3.2: an HTTP/1.1 request without Host is a 400. An absolute-form target's
    // authority is not what the router reads (it reads Host), so it must come with one.
    if !has_host && (req.version == http::Version::HTTP_11 || form == Form::Absolute) {
        return Err("the request has no Host header");
    }
    // RFC 9112 §3.2: a Host with an invalid value is a 400 too. It would reach the backend
    // as `X-Forwarded-Host` and the redirect to https as its authority
    // (`Host: evil.example/x?` makes `https://evil.example/x?:8443/...`).
    if let Some(host) = req.headers.get(http::header::HOST) {
        if !valid_host(host.as_bytes()) {
            return Err("the Host header is not a host and optional port");
        }
    }
    Ok(form)
}

/// `uri-host [ ":" port ]` (RFC 9110 §7.2, RFC 3986 §3.2.2): a reg-name or IPv4 address of
/// unreserved, percent-encoded and sub-delimiter bytes, or a bracketed IPv6 literal; a port of
/// digits. Empty is allowed (a target without an authority).
fn valid_host(v: &[u8]) -> bool {
    let (host_ok, port) = if let Some(inner) = v.strip_prefix(b"[") {
        let Some(end) = inner.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = &inner[..end];
        let ok = !literal.is_empty()
            && literal
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        (ok, &inner[end + 1..])
    } else {
        let end = v.iter().position(|&b| b == b':').unwrap_or(v.len());
        let name = &v[..end];
        let reg = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&b);
        (name.iter().all(|&b| reg(b)), &v[end..])
    };
    let port_ok = match port.split_first() {
        None => true,
        Some((b':', digits)) => digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    };
    host_ok && port_ok
}

fn form(target: &[u8]) -> Option<Form> {
    if target.first() == Some(&b'/') {
        return Some(Form::Origin);
    }
    let scheme_end = target.iter().position(|&b| b == b':')?;
    let scheme = &target[..scheme_end];
    let http = scheme.eq_ignore_ascii_case(b"http") || scheme.eq_ignore_ascii_case(b"https");
    (http && target[scheme_end..].starts_with(b"://")).then_some(Form::Absolute)
}

/// The origin-form the upstream receives for an absolute-form target that no rewrite or
/// normalisation already replaced: `Some(path?query)`.
pub fn origin_form(req: &RequestHeader) -> Option<String> {
    let path_and_query = req.uri.path_and_query()?.as_str();
    Some(if path_and_query.starts_with('/') {
        path_and_query.to_owned()
    } else {
        format!("/{path_and_query}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(
        method: &str,
        target: &[u8],
        host: Option<&str>,
        version: http::Version,
    ) -> RequestHeader {
        let mut req = RequestHeader::build(method, target, None).expect("head");
        req.set_version(version);
        if let Some(host) = host {
            req.insert_header("Host", host).expect("host");
        }
        req
    }

    #[test]
    fn paths_and_http_urls_are_routed_everything_else_refused() {
        let v11 = http::Version::HTTP_11;
        for (target, want) in [
            (&b"/"[..], Some(Form::Origin)),
            (b"/a/../b?x=1", Some(Form::Origin)),
            (b"http://a.test/x", Some(Form::Absolute)),
            (b"HTTPS://a.test/x?y", Some(Form::Absolute)),
            (b"../admin/secret.txt", None),
            (b"%2e%2e/admin", None),
            (b".%2e/admin", None),
            (b"admin/x", None),
            (b"%2fadmin", None),
            (b"\\admin", None),
            (b"?x=1", None),
            (b"*", None),
            (b"ftp://a.test/x", None),
            (b"http:/a.test/x", None),
            (b"a.test:443", None),
        ] {
            let req = head("GET", target, Some("a.test"), v11);
            assert_eq!(check(&req).ok(), want, "{}", target.escape_ascii());
        }
    }

    #[test]
    fn host_is_required_for_http11_and_for_absolute_form() {
        let (v10, v11) = (http::Version::HTTP_10, http::Version::HTTP_11);
        assert!(check(&head("GET", b"/x", None, v11)).is_err());
        assert!(check(&head("GET", b"/x", Some(""), v11)).is_ok());
        assert!(check(&head("GET", b"/x", None, v10)).is_ok());
        assert!(check(&head("GET", b"http://admin.test/x", None, v10)).is_err());
        assert!(check(&head(
            "GET",
            b"http://admin.test/x",
            Some("admin.test"),
            v11
        ))
        .is_ok());
    }

    #[test]
    fn absolute_form_is_forwarded_as_its_path_and_query() {
        let req = head(
            "GET",
            b"http://a.test/x/y?z=1",
            Some("a.test"),
            http::Version::HTTP_11,
        );
        assert_eq!(origin_form(&req).as_deref(), Some("/x/y?z=1"));
    }

    #[test]
    fn hosts_are_names_or_addresses_with_an_optional_port() {
        for ok in [
            "a.test",
            "a.test:8080",
            "127.0.0.1:1",
            "[::1]",
            "[2001:db8::1]:443",
            "",
            "a_b.test",
            "xn--bcher-kva.test",
        ] {
            assert!(valid_host(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "evil.example/x?",
            "a b",
            "ev\"il<>",
            "a.test:abc",
            "evil.example#",
            "[::1",
            "[]",
            "[::1]x",
            "a.test:80:80",
            "a@b",
            "a\\b",
        ] {
            assert!(!valid_host(bad.as_bytes()), "{bad}");
        }
    }
}
