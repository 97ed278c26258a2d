//! `X-Request-Id`: keep a caller's id when it is safe to log and echo, otherwise mint one.

/// `X-Request-Id`, parsed once: a lookup by `&str` parses the name on every request.
pub const HEADER: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// Longest incoming id we keep; longer ones are replaced rather than truncated.
const MAX_LEN: usize = 128;

/// A client-supplied id is kept only if it is short and visible ASCII (no spaces, no control
/// bytes), so it can be echoed in headers and JSON logs without escaping tricks.
pub fn is_acceptable(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_LEN && id.iter().all(|b| (0x21..0x7f).contains(b))
}

pub fn from_incoming(incoming: Option<&[u8]>) -> String {
    match incoming {
        Some(id) if is_acceptable(id) => String::from_utf8_lossy(id).into_owned(),
        _ => generate(),
    }
}

pub fn generate() -> String {
    // A v4 UUID from the thread-local fast RNG, written straight into a buffer: the request
    // id needs to be unique, not unguessable, and this runs on every request.
    let uuid = uuid::Builder::from_random_bytes(fastrand::u128(..).to_ne_bytes()).into_uuid();
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    uuid.hyphenated().encode_lower(&mut buf).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sane_ids_are_kept_others_replaced() {
        assert_eq!(from_incoming(Some(b"abc-123")), "abc-123");
        let long = vec![b'a'; 300];
        assert_ne!(from_incoming(Some(&long)).len(), 300);
        assert_ne!(from_incoming(Some(b"a b")), "a b");
        assert_ne!(from_incoming(Some(b"a\x01")), "a\x01");
        assert_eq!(from_incoming(None).len(), 36);
    }
}
