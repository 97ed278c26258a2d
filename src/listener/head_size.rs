//! Size and count limits on a request head (431), checked once Pingora has parsed it.
//!
//! Pingora's own ceiling is 1 MiB and 256 fields (400 beyond); the configured limits sit below
//! that and give the client the precise status, RFC 6585 §5.

use pingora::http::RequestHeader;

/// What a head costs on the wire, near enough: request line plus `name: value\r\n` per field.
pub fn head_bytes(req: &RequestHeader) -> usize {
    let line = req.method.as_str().len() + req.raw_path().len() + 12;
    req.headers
        .iter()
        .fold(line, |n, (k, v)| n + k.as_str().len() + v.len() + 4)
}

/// Whether a head is within `max_bytes` and `max_fields`.
pub fn within(req: &RequestHeader, max_bytes: usize, max_fields: usize) -> bool {
    req.headers.len() <= max_fields && head_bytes(req) <= max_bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(fields: usize, value_len: usize) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/orders/7", None).expect("request");
        for i in 0..fields {
            r.append_header(format!("x-f{i}"), "v".repeat(value_len))
                .expect("header");
        }
        r
    }

    #[test]
    fn counts_every_field_and_its_bytes() {
        let r = req(3, 10);
        // "GET" + "/orders/7" + 12, then 3 × ("x-fN" + 10 + 4).
        assert_eq!(head_bytes(&r), 3 + 9 + 12 + 3 * (4 + 10 + 4));
        assert!(within(&r, 1024, 3));
        assert!(!within(&r, 1024, 2));
        assert!(!within(&r, 60, 100));
    }

    #[test]
    fn one_huge_field_is_caught_by_bytes_alone() {
        let r = req(1, 100 * 1024);
        assert!(!within(&r, 64 * 1024, 100));
    }
}
