//! Path normalisation before routing (DESIGN.md step 2).
//!
//! Routing and forwarding both use the normalised path, so `/public/../admin` is judged by the
//! `/admin` route's policy and the backend sees exactly what was judged. Only unreserved
//! characters are percent-decoded (RFC 3986 §6.2.2.2): decoding anything else would let a
//! client invent bytes the backend reads differently. Double encodings (`%252e`) and overlong
//! UTF-8 (`%c0%ae`) are therefore never turned into dots: they stay encoded (in canonical
//! upper-case hex) and are an ordinary segment for the router and the backend alike.
//!
//! Three spellings are read differently by common backends and are reported in [`Found`] so
//! that `path_policy` can refuse them: an encoded slash or backslash (`%2F`, `%5C`: nginx and
//! many frameworks decode them into separators), a raw `\` (IIS, ASP.NET) and `;` path
//! parameters (Tomcat, Jetty and Spring drop `;params` per segment). Whatever the policy, a dot
//! segment in any disguise is a dot segment: `%2e`, `.%2E`, and `..;anything`.

use std::borrow::Cow;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path must start with \"/\"")]
    NotAbsolute,
    #[error("path climbs above \"/\"")]
    AboveRoot,
    #[error("malformed percent-encoding in path")]
    BadEscape,
}

/// The spellings in a path that backends disagree about (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Found {
    /// `%2F` or `%5C`, in any case.
    pub escaped_slash: bool,
    /// A raw `\` (after decoding, when `%5C` was decoded).
    pub backslash: bool,
    /// A `;` inside a segment.
    pub parameters: bool,
}

/// A normalised path: what the backend receives and what the router matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedPath<'a> {
    /// The path forwarded upstream (before any prefix rewrite).
    pub forward: Cow<'a, str>,
    /// `forward` without each segment's `;parameters`, when it had any: what Tomcat-like
    /// backends read, and therefore what the router must judge.
    route: Option<String>,
    pub found: Found,
}

impl NormalizedPath<'_> {
    /// The path the router matches.
    pub fn route(&self) -> &str {
        self.route.as_deref().unwrap_or(&self.forward)
    }

    /// Whether the forwarded path differs from the one the client sent.
    pub fn changed(&self) -> bool {
        matches!(self.forward, Cow::Owned(_))
    }
}

/// Normalise a request path (no query string). With `decode_slashes`, `%2F`/`%5C` become `/`
/// and `\` before dot segments are resolved, so the segments they create are resolved too.
/// Borrows when nothing needs to change, which is the common case, so well-formed requests cost
/// one scan and no allocation.
pub fn normalize(path: &str, decode_slashes: bool) -> Result<NormalizedPath<'_>, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    if !needs_work(bytes) {
        return Ok(NormalizedPath {
            forward: Cow::Borrowed(path),
            route: None,
            found: Found::default(),
        });
    }
    let mut found = Found::default();
    let decoded = decode_unreserved(bytes, decode_slashes, &mut found)?;
    found.backslash = decoded.contains('\\');
    found.parameters = decoded.contains(';');
    // (whole segment, its name without `;parameters`)
    let mut segments: Vec<(&str, &str)> = Vec::new();
    let mut ends_in_directory = false;
    for seg in decoded[1..].split('/') {
        let name = seg.split(';').next().unwrap_or("");
        ends_in_directory = matches!(name, "" | "." | "..") && !(name.is_empty() && seg != name);
        match name {
            "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
            }
            "" if seg.is_empty() => {}
            _ => segments.push((seg, name)),
        }
    }
    let forward = join(
        segments.iter().map(|s| s.0),
        ends_in_directory,
        decoded.len(),
    );
    let route = found.parameters.then(|| {
        join(
            segments.iter().map(|s| s.1),
            ends_in_directory,
            decoded.len(),
        )
    });
    Ok(NormalizedPath {
        forward: Cow::Owned(forward),
        route,
        found,
    })
}

fn join<'s>(segments: impl Iterator<Item = &'s str>, directory: bool, cap: usize) -> String {
    let mut out = String::with_capacity(cap);
    for s in segments.filter(|s| !s.is_empty()) {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || directory {
        out.push('/');
    }
    out
}

/// Anything that could change under normalisation or that the policy must see: escapes,
/// backslashes, parameters, empty or dot segments.
fn needs_work(b: &[u8]) -> bool {
    memchr::memchr3(b'%', b'\\', b';', b).is_some()
        || memchr::memmem::find(b, b"//").is_some()
        || memchr::memmem::find(b, b"/.").is_some()
}

fn decode_unreserved(
    b: &[u8],
    decode_slashes: bool,
    found: &mut Found,
) -> Result<String, PathError> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3).ok_or(PathError::BadEscape)?;
            let v = (hex_val(hex[0]).ok_or(PathError::BadEscape)? << 4)
                | hex_val(hex[1]).ok_or(PathError::BadEscape)?;
            let slash = matches!(v, b'/' | b'\\');
            found.escaped_slash |= slash;
            if v.is_ascii_alphanumeric()
                || matches!(v, b'-' | b'.' | b'_' | b'~')
                || (slash && decode_slashes)
            {
                out.push(v);
            } else {
                // Keep reserved/unsafe bytes encoded, in canonical upper-case form.
                out.push(b'%');
                out.push(hex[0].to_ascii_uppercase());
                out.push(hex[1].to_ascii_uppercase());
            }
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    // Only ASCII bytes were inserted; the input was already a valid &str.
    String::from_utf8(out).map_err(|_| PathError::BadEscape)
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> Result<String, PathError> {
        normalize(p, false).map(|c| c.forward.into_owned())
    }

    fn d(p: &str) -> Result<String, PathError> {
        normalize(p, true).map(|c| c.forward.into_owned())
    }

    fn route(p: &str) -> String {
        normalize(p, false).expect("valid").route().to_owned()
    }

    #[test]
    fn clean_paths_are_borrowed() {
        for p in ["/orders/7", "/", "/a.b/c-d_e~f"] {
            let out = normalize(p, false).expect("valid");
            assert!(matches!(out.forward, Cow::Borrowed(_)), "{p}");
            assert!(!out.changed());
            assert_eq!(out.found, Found::default());
        }
    }

    #[test]
    fn dot_segments_and_double_slashes() {
        assert_eq!(n("/public/../admin").unwrap(), "/admin");
        assert_eq!(n("//orders//7").unwrap(), "/orders/7");
        assert_eq!(n("/orders/./7").unwrap(), "/orders/7");
        assert_eq!(n("/orders/").unwrap(), "/orders/");
        assert_eq!(n("/a/..").unwrap(), "/");
        assert_eq!(n("/a/b/..").unwrap(), "/a/");
        assert_eq!(n("/.well-known/x").unwrap(), "/.well-known/x");
        assert_eq!(n("/a/...").unwrap(), "/a/...");
    }

    #[test]
    fn encoded_dots_in_every_case_and_mix_are_dots() {
        assert_eq!(n("/orders/%2e/7").unwrap(), "/orders/7");
        assert_eq!(n("/a/%2E%2e/b").unwrap(), "/b");
        assert_eq!(n("/a/.%2E/b").unwrap(), "/b");
        assert_eq!(n("/a/%2e./b").unwrap(), "/b");
        assert_eq!(n("/%7Euser").unwrap(), "/~user");
    }

    #[test]
    fn double_encoding_and_overlong_utf8_are_never_dots() {
        assert_eq!(n("/a/%252e%252e/b").unwrap(), "/a/%252e%252e/b");
        assert_eq!(n("/a/%c0%ae%c0%ae/b").unwrap(), "/a/%C0%AE%C0%AE/b");
        assert_eq!(n("/a/%e0%80%ae/b").unwrap(), "/a/%E0%80%AE/b");
    }

    #[test]
    fn escaped_slashes_are_found_and_kept_or_decoded() {
        let kept = normalize("/public/..%2fadmin/x", false).unwrap();
        assert!(kept.found.escaped_slash);
        assert_eq!(kept.forward, "/public/..%2Fadmin/x");
        assert_eq!(d("/public/..%2fadmin/x").unwrap(), "/admin/x");
        assert_eq!(d("/a%2F%2Fb").unwrap(), "/a/b");
        assert_eq!(d("/%2e%2e%2fadmin"), Err(PathError::AboveRoot));
        let back = normalize("/a%5cb", true).unwrap();
        assert!(back.found.escaped_slash && back.found.backslash);
        assert_eq!(back.forward, "/a\\b");
        assert!(normalize("/a%5Cb", false).unwrap().found.escaped_slash);
    }

    #[test]
    fn raw_backslashes_are_found() {
        let p = normalize("/public\\..\\admin", false).unwrap();
        assert!(p.found.backslash);
        assert_eq!(p.forward, "/public\\..\\admin");
    }

    #[test]
    fn parameters_are_dropped_for_routing_and_dot_segments_with_parameters_resolve() {
        assert_eq!(route("/admin;x=1/secret"), "/admin/secret");
        assert_eq!(n("/admin;x=1/secret").unwrap(), "/admin;x=1/secret");
        assert_eq!(n("/public/..;/admin/x").unwrap(), "/admin/x");
        assert_eq!(n("/public/..;jsessionid=1/admin").unwrap(), "/admin");
        assert_eq!(n("/a/.;x/b").unwrap(), "/a/b");
        assert_eq!(n("/a/%2e%2e;x/b").unwrap(), "/b");
        assert_eq!(route("/;x/admin"), "/admin");
        assert_eq!(route("/a/b;v=1"), "/a/b");
        assert!(normalize("/a;b", false).unwrap().found.parameters);
        assert_eq!(normalize("/..;/x", false), Err(PathError::AboveRoot));
        // An encoded semicolon is data, not a parameter.
        assert!(!normalize("/a%3bb", false).unwrap().found.parameters);
    }

    #[test]
    fn climbing_above_root_is_rejected() {
        assert_eq!(n("/.."), Err(PathError::AboveRoot));
        assert_eq!(n("/%2e%2e/x"), Err(PathError::AboveRoot));
        assert_eq!(n("/a/../../x"), Err(PathError::AboveRoot));
    }

    #[test]
    fn malformed_input_is_rejected() {
        assert_eq!(n("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(n("/a%2"), Err(PathError::BadEscape));
        assert_eq!(n("relative"), Err(PathError::NotAbsolute));
        assert_eq!(n(""), Err(PathError::NotAbsolute));
    }

    #[test]
    fn normalising_twice_changes_nothing() {
        for p in [
            "/public/..%2fadmin/x",
            "/a;b/../c;d/",
            "/x\\y/%2e/z",
            "/%252e/%c0%ae",
        ] {
            for decode in [false, true] {
                let Ok(once) = normalize(p, decode) else {
                    continue;
                };
                let twice = normalize(&once.forward, decode).expect("still valid");
                assert_eq!(twice.forward, once.forward, "{p} decode={decode}");
                assert_eq!(twice.route(), once.route(), "{p} decode={decode}");
            }
        }
    }
}
