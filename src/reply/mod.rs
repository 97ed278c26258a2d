//! Every response the gateway writes itself (DESIGN.md "Error responses"): the error kinds
//! with their statuses and codes, the JSON body, the answer written through a Pingora session,
//! the canned bytes the listener writes before Pingora has a request, which gateway error a
//! Pingora failure becomes ([`classify`]), and the same refusals in gRPC's form ([`grpc`]).
//! Messages are fixed strings chosen by the gateway: nothing from the upstream, the network or
//! key material can leak into them.

pub mod classify;
pub mod grpc;

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use serde::Serialize;

/// The gateway's own error kinds, each with its status and machine-readable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayError {
    /// `redirect_https`: the same request belongs on the TLS port.
    HttpsRequired,
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    PayloadTooLarge,
    HeadersTooLarge,
    RequestTimeout,
    RateLimited,
    BadGateway,
    ServiceUnavailable,
    GatewayTimeout,
    Internal,
}

impl GatewayError {
    pub fn status(self) -> u16 {
        match self {
            GatewayError::HttpsRequired => 308,
            GatewayError::BadRequest => 400,
            GatewayError::Unauthorized => 401,
            GatewayError::Forbidden => 403,
            GatewayError::NotFound => 404,
            GatewayError::MethodNotAllowed => 405,
            GatewayError::PayloadTooLarge => 413,
            GatewayError::HeadersTooLarge => 431,
            GatewayError::RequestTimeout => 408,
            GatewayError::RateLimited => 429,
            GatewayError::BadGateway => 502,
            GatewayError::ServiceUnavailable => 503,
            GatewayError::GatewayTimeout => 504,
            GatewayError::Internal => 500,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            GatewayError::HttpsRequired => "https_required",
            GatewayError::BadRequest => "bad_request",
            GatewayError::Unauthorized => "unauthorized",
            GatewayError::Forbidden => "forbidden",
            GatewayError::NotFound => "not_found",
            GatewayError::MethodNotAllowed => "method_not_allowed",
            GatewayError::PayloadTooLarge => "payload_too_large",
            GatewayError::HeadersTooLarge => "request_header_fields_too_large",
            GatewayError::RequestTimeout => "request_timeout",
            GatewayError::RateLimited => "rate_limited",
            GatewayError::BadGateway => "bad_gateway",
            GatewayError::ServiceUnavailable => "service_unavailable",
            GatewayError::GatewayTimeout => "gateway_timeout",
            GatewayError::Internal => "internal_error",
        }
    }

    /// Default human message when the caller has nothing more specific to say.
    pub fn default_message(self) -> &'static str {
        match self {
            GatewayError::HttpsRequired => "use https",
            GatewayError::BadRequest => "the request is malformed",
            GatewayError::Unauthorized => "authentication is required",
            GatewayError::Forbidden => "you are not allowed to do this",
            GatewayError::NotFound => "no route matches this request",
            GatewayError::MethodNotAllowed => "this method is not allowed on this path",
            GatewayError::PayloadTooLarge => "the request body is too large",
            GatewayError::HeadersTooLarge => "the request headers are too large or too many",
            GatewayError::RequestTimeout => "request head not received in time",
            GatewayError::RateLimited => "too many requests",
            GatewayError::BadGateway => "the upstream service failed to answer properly",
            GatewayError::ServiceUnavailable => "no healthy upstream is available",
            GatewayError::GatewayTimeout => "the upstream service did not answer in time",
            GatewayError::Internal => "the gateway failed to handle the request",
        }
    }

    /// Map an HTTP status to the closest gateway error (for statuses Pingora decided).
    pub fn from_status(status: u16) -> GatewayError {
        match status {
            401 => GatewayError::Unauthorized,
            403 => GatewayError::Forbidden,
            404 => GatewayError::NotFound,
            405 => GatewayError::MethodNotAllowed,
            408 => GatewayError::RequestTimeout,
            413 => GatewayError::PayloadTooLarge,
            431 => GatewayError::HeadersTooLarge,
            429 => GatewayError::RateLimited,
            502 => GatewayError::BadGateway,
            503 => GatewayError::ServiceUnavailable,
            504 => GatewayError::GatewayTimeout,
            400..=499 => GatewayError::BadRequest,
            _ => GatewayError::Internal,
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    message: &'a str,
    request_id: &'a str,
}

/// `{"error":..,"message":..,"request_id":..}`
pub fn body(kind: GatewayError, message: &str, request_id: &str) -> Vec<u8> {
    serde_json::to_vec(&Body {
        error: kind.code(),
        message,
        request_id,
    })
    .unwrap_or_else(|_| b"{\"error\":\"internal_error\"}".to_vec())
}

/// A request the gateway answers itself instead of proxying: what a policy module returns when
/// it says no, and all the proxy needs to write the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub kind: GatewayError,
    pub message: std::borrow::Cow<'static, str>,
    pub headers: Vec<(&'static str, String)>,
}

impl Refusal {
    /// With the kind's default message and no extra headers.
    pub fn of(kind: GatewayError) -> Refusal {
        Refusal {
            kind,
            message: kind.default_message().into(),
            headers: Vec::new(),
        }
    }

    pub fn with_message(
        kind: GatewayError,
        message: impl Into<std::borrow::Cow<'static, str>>,
    ) -> Refusal {
        Refusal {
            kind,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Refusal {
        self.headers.push((name, value.into()));
        self
    }
}

/// The answer to a request Pingora failed to proxy (DESIGN.md's status table; see
/// [`classify`]): the gateway error it became, `None` when the client is gone or broke the
/// exchange. Nothing is written once the response started (a cut connection is the only honest
/// signal left). The request body may be unread and the upstream exchange is in an unknown
/// state: the answer says `Connection: close` rather than keep-alive and then hang up.
pub async fn on_failure(
    session: &mut Session,
    e: &pingora::Error,
    request_id: &mut crate::request_id::RequestId,
    retry_after: Option<u64>,
    mut headers: Vec<(&'static str, String)>,
) -> Option<GatewayError> {
    let kind = classify::classify(e)?;
    if request_id.is_empty() {
        *request_id = crate::request_id::RequestId::generate();
    }
    if session.response_written().is_some() {
        return Some(kind);
    }
    session.set_keepalive(None);
    if kind == GatewayError::ServiceUnavailable {
        headers.push(("Retry-After", retry_after.unwrap_or(1).to_string()));
    }
    let headers: Vec<(&'static str, &str)> =
        headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    if let Err(err) = send(session, kind, kind.default_message(), request_id, &headers).await {
        tracing::debug!("could not send error response: {err}");
    }
    Some(kind)
}

/// Pingora frames length-less bodies as chunked whatever the client speaks; an HTTP/1.0 client
/// cannot parse chunked, so it gets a close-delimited body instead.
pub fn frame_for_http10(session: &mut Session, resp: &mut ResponseHeader) -> pingora::Result<()> {
    if session.req_header().version < http::Version::HTTP_11
        && resp.headers.get(http::header::CONTENT_LENGTH).is_none()
        && resp.headers.contains_key(http::header::TRANSFER_ENCODING)
    {
        resp.remove_header(&http::header::TRANSFER_ENCODING);
        resp.insert_header(http::header::CONNECTION, "close")?;
        session.set_keepalive(None);
    }
    Ok(())
}

/// Send `{"error","message","request_id"}` with the status of `kind` and any extra headers;
/// a gRPC request gets the same refusal in gRPC's form instead ([`grpc`]).
pub async fn send(
    session: &mut Session,
    kind: GatewayError,
    message: &str,
    request_id: &str,
    extra: &[(&'static str, &str)],
) -> pingora::Result<()> {
    if grpc::is_grpc(session.req_header()) {
        return grpc::send(session, kind, message, request_id, extra).await;
    }
    let body = body(kind, message, request_id);
    let mut resp = ResponseHeader::build(kind.status(), Some(4 + extra.len()))?;
    resp.insert_header("Content-Type", "application/json")?;
    resp.insert_header("Content-Length", body.len().to_string())?;
    resp.insert_header("X-Request-Id", request_id)?;
    resp.insert_header("Cache-Control", "no-store")?;
    for (name, value) in extra {
        resp.insert_header(*name, *value)?;
    }
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(resp), head_only)
        .await?;
    if !head_only {
        session
            .write_response_body(Some(Bytes::from(body)), true)
            .await?;
    }
    Ok(())
}

/// `204 No Content` with the given headers: the gateway's answer to a CORS preflight.
pub async fn no_content(
    session: &mut Session,
    request_id: &str,
    extra: &[(&'static str, String)],
) -> pingora::Result<()> {
    let mut resp = ResponseHeader::build(204, Some(2 + extra.len()))?;
    resp.insert_header("X-Request-Id", request_id)?;
    for (name, value) in extra {
        resp.append_header(*name, value.as_str())?;
    }
    session.write_response_header(Box::new(resp), true).await
}

/// A complete `Connection: close` answer in raw HTTP/1.1 bytes, for connections refused by the
/// listener before Pingora saw a request (so there is no request id to echo). `extra_headers`
/// are whole lines, each ending in CRLF.
pub fn canned(kind: GatewayError, message: &str, extra_headers: &str) -> Vec<u8> {
    let body = body(kind, message, "none");
    let status = kind.status();
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n{extra_headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canned_answers_declare_their_real_length_and_carry_json() {
        let r = canned(
            GatewayError::ServiceUnavailable,
            "busy",
            "Retry-After: 1\r\n",
        );
        let text = String::from_utf8(r).expect("utf-8");
        let (head, body) = text.split_once("\r\n\r\n").expect("head end");
        assert!(
            head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\nRetry-After: 1\r\n"), "{head}");
        assert!(
            head.contains(&format!("Content-Length: {}\r\n", body.len())),
            "{head}"
        );
        let v: serde_json::Value = serde_json::from_str(body).expect("JSON");
        assert_eq!(v["error"], "service_unavailable");
        assert_eq!(v["request_id"], "none");
        let timeout = String::from_utf8(canned(GatewayError::RequestTimeout, "slow", "")).unwrap();
        assert!(
            timeout.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
            "{timeout}"
        );
    }

    #[test]
    fn body_is_the_documented_json_shape() {
        let b = body(GatewayError::NotFound, "no route \"x\"", "rid-1");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["error"], "not_found");
        assert_eq!(v["message"], "no route \"x\"");
        assert_eq!(v["request_id"], "rid-1");
        assert_eq!(GatewayError::from_status(504), GatewayError::GatewayTimeout);
    }
}
