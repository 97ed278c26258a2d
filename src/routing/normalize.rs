//! Path normalisation before routing (DESIGN.md step 2).
//!
//! Routing and forwarding both use the normalised path, so `/public/../admin` is judged by the
//! `/admin` route's policy and the backend sees exactly what was judged. Only unreserved
//! characters are percent-decoded (RFC 3986 §6.2.2.2): decoding `%2F` would let a client
//! invent segment boundaries the backend never sees.

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

/// Normalise a request path (no query string). Borrows when nothing needs to change, which is
/// the common case, so well-formed requests cost one scan and no allocation.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    if !needs_work(bytes) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(bytes)?;
    let ends_with_slash = ends_in_directory(&decoded);
    let mut segments: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || (ends_with_slash && !segments.is_empty()) {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

/// Anything that could change under normalisation: escapes, empty or dot segments.
fn needs_work(b: &[u8]) -> bool {
    b.contains(&b'%') || b.windows(2).any(|w| w == b"//" || w == b"/.")
}

fn ends_in_directory(p: &str) -> bool {
    p.ends_with('/') || p.ends_with("/.") || p.ends_with("/..")
}

fn decode_unreserved(b: &[u8]) -> Result<String, PathError> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3).ok_or(PathError::BadEscape)?;
            let v = (hex_val(hex[0]).ok_or(PathError::BadEscape)? << 4)
                | hex_val(hex[1]).ok_or(PathError::BadEscape)?;
            if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') {
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
        normalize(p).map(|c| c.into_owned())
    }

    #[test]
    fn clean_paths_are_borrowed() {
        assert!(matches!(normalize("/orders/7"), Ok(Cow::Borrowed(_))));
        assert!(matches!(normalize("/"), Ok(Cow::Borrowed(_))));
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
    }

    #[test]
    fn encoded_dots_are_decoded_before_resolution() {
        assert_eq!(n("/orders/%2e/7").unwrap(), "/orders/7");
        assert_eq!(n("/a/%2E%2e/b").unwrap(), "/b");
        assert_eq!(n("/%7Euser").unwrap(), "/~user");
    }

    #[test]
    fn reserved_escapes_stay_encoded() {
        assert_eq!(n("/a%2fb").unwrap(), "/a%2Fb");
        assert_eq!(n("/a%00b").unwrap(), "/a%00b");
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
}
