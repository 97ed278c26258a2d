//! The gateway's own refusals in gRPC's words (DESIGN.md "TLS and HTTP/2").
//!
//! A gRPC client does not read HTTP statuses or JSON bodies: it reads `grpc-status` and
//! `grpc-message`. So a request whose `content-type` is `application/grpc*` that the gateway
//! itself refuses (auth, limits, no route, no healthy backend, upstream failure) is answered as
//! gRPC's *Trailers-Only* response: HTTP 200, `content-type: application/grpc`, the status and
//! message in the header block, no body (on HTTP/2 the header block ends the stream). Headers
//! the refusal carries anyway (`x-request-id`, `retry-after`, `x-ratelimit-*`,
//! `www-authenticate`) are kept: gRPC exposes them to the caller as metadata.
//!
//! The status follows what the refusal means, not the generic HTTP→gRPC table clients apply to
//! non-gRPC answers (Envoy's and gRPC's own table maps 429 and 504 to UNAVAILABLE; the gateway
//! knows a 429 is a quota and a 504 a deadline, and says so).

use super::GatewayError;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;

/// gRPC status codes the gateway uses (grpc/doc/statuscodes.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Code {
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    Unauthenticated = 16,
}

/// The gRPC status of a gateway refusal.
pub fn code(kind: GatewayError) -> Code {
    match kind {
        GatewayError::Unauthorized => Code::Unauthenticated,
        GatewayError::Forbidden => Code::PermissionDenied,
        // A quota, and message or metadata over a size limit: what gRPC itself reports as
        // RESOURCE_EXHAUSTED.
        GatewayError::RateLimited
        | GatewayError::PayloadTooLarge
        | GatewayError::HeadersTooLarge => Code::ResourceExhausted,
        // No such method here: what a gRPC server says of a method it does not serve.
        GatewayError::NotFound | GatewayError::MethodNotAllowed => Code::Unimplemented,
        GatewayError::BadGateway | GatewayError::ServiceUnavailable => Code::Unavailable,
        GatewayError::GatewayTimeout | GatewayError::RequestTimeout => Code::DeadlineExceeded,
        // The path or headers are malformed or refused by path policy: the request itself is
        // wrong, retrying it unchanged cannot help.
        GatewayError::BadRequest => Code::InvalidArgument,
        // Cleartext where TLS is required: the client must change how it connects first.
        GatewayError::HttpsRequired => Code::FailedPrecondition,
        GatewayError::Internal => Code::Internal,
    }
}

/// `content-type: application/grpc`, `application/grpc+proto`, `application/grpc-web...`:
/// the client speaks gRPC and only understands a gRPC answer.
pub fn is_grpc(req: &RequestHeader) -> bool {
    content_type(req).is_some_and(|ct| {
        let ct = ct.trim_start().as_bytes();
        ct.len() >= GRPC.len() && ct[..GRPC.len()].eq_ignore_ascii_case(GRPC.as_bytes())
    })
}

const GRPC: &str = "application/grpc";

fn content_type(req: &RequestHeader) -> Option<&str> {
    req.headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
}

/// gRPC-Web clients get their own content type back; everyone else `application/grpc`.
fn response_content_type(req: &RequestHeader) -> &'static str {
    let web = content_type(req).is_some_and(|ct| {
        ct.trim_start()
            .get(..GRPC.len() + 4)
            .is_some_and(|p| p.eq_ignore_ascii_case("application/grpc-web"))
    });
    if web {
        "application/grpc-web"
    } else {
        GRPC
    }
}

/// `grpc-message` is percent-encoded: every byte outside printable ASCII, and `%` itself
/// (gRPC over HTTP/2, "Responses").
pub fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The Trailers-Only head of a refusal: 200, gRPC content type, status and message, the
/// request id and any `extra` headers.
pub fn response(
    req: &RequestHeader,
    kind: GatewayError,
    message: &str,
    request_id: &str,
    extra: &[(&'static str, &str)],
) -> pingora::Result<ResponseHeader> {
    let mut resp = ResponseHeader::build(200, Some(5 + extra.len()))?;
    resp.insert_header("content-type", response_content_type(req))?;
    resp.insert_header("grpc-status", (code(kind) as u8).to_string())?;
    resp.insert_header("grpc-message", percent_encode(message))?;
    resp.insert_header("x-request-id", request_id)?;
    // An HTTP/1 client (gRPC-Web through a proxy) needs a framed, empty body.
    if req.version < http::Version::HTTP_2 {
        resp.insert_header("content-length", "0")?;
    }
    for (name, value) in extra {
        resp.insert_header(*name, *value)?;
    }
    Ok(resp)
}

/// Write the refusal as a gRPC Trailers-Only response.
pub async fn send(
    session: &mut Session,
    kind: GatewayError,
    message: &str,
    request_id: &str,
    extra: &[(&'static str, &str)],
) -> pingora::Result<()> {
    let resp = response(session.req_header(), kind, message, request_id, extra)?;
    // Trailers-Only is one HEADERS frame carrying END_STREAM. Pingora's proxy session drops
    // the end flag on HTTP/2 (the stream ends later with an empty DATA frame), which gRPC
    // clients read as a broken stream ("Data frame with END_STREAM flag received") and
    // report UNKNOWN instead of this status: on HTTP/2 the head goes straight to the stream.
    if let pingora::protocols::http::server::Session::H2(h2) = &mut **session {
        return h2.write_response_header(Box::new(resp), true);
    }
    session.write_response_header(Box::new(resp), true).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(content_type: Option<&str>, version: http::Version) -> RequestHeader {
        let mut req = RequestHeader::build("POST", b"/pkg.Svc/Method", None).unwrap();
        req.set_version(version);
        if let Some(ct) = content_type {
            req.insert_header("content-type", ct).unwrap();
        }
        req
    }

    #[test]
    fn every_refusal_has_the_status_a_grpc_client_can_act_on() {
        use GatewayError::*;
        let table = [
            (Unauthorized, 16),
            (Forbidden, 7),
            (RateLimited, 8),
            (PayloadTooLarge, 8),
            (HeadersTooLarge, 8),
            (NotFound, 12),
            (MethodNotAllowed, 12),
            (BadGateway, 14),
            (ServiceUnavailable, 14),
            (GatewayTimeout, 4),
            (RequestTimeout, 4),
            (BadRequest, 3),
            (HttpsRequired, 9),
            (Internal, 13),
        ];
        for (kind, expected) in table {
            assert_eq!(code(kind) as u8, expected, "{kind:?}");
        }
        // Statuses Pingora decides reach the same table through `from_status`.
        assert_eq!(code(GatewayError::from_status(429)) as u8, 8);
        assert_eq!(code(GatewayError::from_status(502)) as u8, 14);
        assert_eq!(code(GatewayError::from_status(504)) as u8, 4);
    }

    #[test]
    fn grpc_is_recognised_by_content_type_alone() {
        for ct in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC+json",
            "application/grpc-web+proto",
        ] {
            assert!(is_grpc(&request(Some(ct), http::Version::HTTP_2)), "{ct}");
        }
        for ct in [None, Some("application/json"), Some("application/gr")] {
            assert!(!is_grpc(&request(ct, http::Version::HTTP_2)), "{ct:?}");
        }
    }

    #[test]
    fn messages_are_percent_encoded_as_the_spec_says() {
        assert_eq!(percent_encode("no route"), "no route");
        assert_eq!(percent_encode("100% sure"), "100%25 sure");
        assert_eq!(percent_encode("caf\u{e9}\n"), "caf%C3%A9%0A");
    }

    #[test]
    fn the_answer_is_trailers_only_with_the_request_id_and_extra_headers() {
        let req = request(Some("application/grpc"), http::Version::HTTP_2);
        let resp = response(
            &req,
            GatewayError::RateLimited,
            "too many requests",
            "rid-1",
            &[("retry-after", "3"), ("x-ratelimit-limit", "1")],
        )
        .unwrap();
        let h = |n: &str| resp.headers.get(n).map(|v| v.to_str().unwrap().to_string());
        assert_eq!(resp.status.as_u16(), 200);
        assert_eq!(h("content-type").as_deref(), Some("application/grpc"));
        assert_eq!(h("grpc-status").as_deref(), Some("8"));
        assert_eq!(h("grpc-message").as_deref(), Some("too many requests"));
        assert_eq!(h("x-request-id").as_deref(), Some("rid-1"));
        assert_eq!(h("retry-after").as_deref(), Some("3"));
        assert_eq!(h("x-ratelimit-limit").as_deref(), Some("1"));
        assert_eq!(
            h("content-length"),
            None,
            "HTTP/2: the header block ends the stream"
        );

        let web = request(Some("application/grpc-web+proto"), http::Version::HTTP_11);
        let resp = response(&web, GatewayError::NotFound, "no route", "r", &[]).unwrap();
        let ct = resp.headers.get("content-type").unwrap();
        assert_eq!(ct, "application/grpc-web");
        assert_eq!(resp.headers.get("content-length").unwrap(), "0");
    }
}
