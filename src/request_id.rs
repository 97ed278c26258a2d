//! `X-Request-Id`: keep a caller's id when it is safe to log and echo, otherwise mint one.

use http::HeaderValue;

/// `X-Request-Id`, parsed once: a lookup by `&str` parses the name on every request.
pub const HEADER: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// Longest incoming id we keep; longer ones are replaced rather than truncated.
const MAX_LEN: usize = 128;

/// A client-supplied id is kept only if it is short and visible ASCII (no spaces, no control
/// bytes), so it can be echoed in headers and JSON logs without escaping tricks.
pub fn is_acceptable(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_LEN && id.iter().all(|b| (0x21..0x7f).contains(b))
}

/// A request's id, held as the header value itself: it is echoed upstream and to the client,
/// and a clone shares its bytes instead of copying them (an incoming id shares the buffer the
/// request head was parsed from). Always visible ASCII, so it reads as a `&str`.
#[derive(Debug, Clone)]
pub struct RequestId(HeaderValue);

impl Default for RequestId {
    /// No id yet (a request refused before its id was taken).
    fn default() -> Self {
        RequestId(HeaderValue::from_static(""))
    }
}

impl RequestId {
    pub fn as_str(&self) -> &str {
        self
    }

    /// The value for an `X-Request-Id` header.
    pub fn header(&self) -> HeaderValue {
        self.0.clone()
    }

    /// A fresh id, in one allocation that every clone of its header value shares.
    pub fn generate() -> RequestId {
        let bytes = bytes::Bytes::from_owner(uuid_bytes());
        HeaderValue::from_maybe_shared(bytes).map_or_else(|_| RequestId::default(), RequestId)
    }
}

impl std::ops::Deref for RequestId {
    type Target = str;

    fn deref(&self) -> &str {
        // Only acceptable ids (visible ASCII) and generated ones are ever held.
        self.0.to_str().unwrap_or("")
    }
}

/// The caller's id when it is acceptable, otherwise a fresh one.
pub fn from_incoming(incoming: Option<&HeaderValue>) -> RequestId {
    match incoming {
        Some(id) if is_acceptable(id.as_bytes()) => RequestId(id.clone()),
        _ => RequestId::generate(),
    }
}

/// A v4 UUID from the thread-local fast RNG, written straight into a buffer: the request id
/// needs to be unique, not unguessable, and this runs on every request without one.
fn uuid_bytes() -> [u8; uuid::fmt::Hyphenated::LENGTH] {
    let uuid = uuid::Builder::from_random_bytes(fastrand::u128(..).to_ne_bytes()).into_uuid();
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    uuid.hyphenated().encode_lower(&mut buf);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sane_ids_are_kept_others_replaced() {
        let id = |b: &[u8]| HeaderValue::from_bytes(b).expect("header value");
        assert_eq!(&*from_incoming(Some(&id(b"abc-123"))), "abc-123");
        let long = vec![b'a'; 300];
        assert_ne!(from_incoming(Some(&id(&long))).len(), 300);
        assert_ne!(&*from_incoming(Some(&id(b"a b"))), "a b");
        // Pingora keeps such bytes in a parsed value unchecked; `HeaderValue` cannot build one.
        assert!(!is_acceptable(b"a\x01"));
        assert_eq!(from_incoming(None).len(), 36);
        assert_ne!(&*RequestId::generate(), &*RequestId::generate());
    }
}
