//! Helpers shared by the unit tests of several modules.

use http::{HeaderMap, HeaderName};

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
