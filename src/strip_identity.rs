//! DESIGN.md step 4: identity headers are the gateway's to write. Whatever a client sends under
//! those names is removed on every route, authenticated or not, before anything else looks at
//! the request.

use pingora::http::RequestHeader;

/// Headers the gateway sets from verified identity; clients may never supply them.
pub const IDENTITY_HEADERS: [&str; 4] = ["x-user-id", "x-user-roles", "x-scopes", "x-consumer"];

pub fn strip(req: &mut RequestHeader) {
    for name in IDENTITY_HEADERS {
        req.remove_header(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spoofed_identity_is_removed_whatever_the_case() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("X-User-Id", "admin").unwrap();
        req.append_header("x-user-id", "root").unwrap();
        req.append_header("X-SCOPES", "all").unwrap();
        req.append_header("X-Other", "kept").unwrap();
        strip(&mut req);
        assert!(req.headers.get("x-user-id").is_none());
        assert!(req.headers.get("x-scopes").is_none());
        assert_eq!(req.headers.get("x-other").unwrap(), "kept");
    }
}
