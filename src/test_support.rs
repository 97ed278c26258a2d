//! Helpers shared by the unit tests of several modules.

use http::{HeaderMap, HeaderName};
use pingora::http::RequestHeader;

/// A header map of `(name, value)` pairs, repeated names appended in order.
pub fn header_map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    h
}

/// A `GET` request head for `path` with `(name, value)` headers, repeated names appended.
pub fn get_request(path: &str, headers: &[(&str, &str)]) -> RequestHeader {
    let mut r = RequestHeader::build("GET", path.as_bytes(), None).unwrap();
    for (k, v) in headers {
        r.append_header(k.to_string(), *v).unwrap();
    }
    r
}
