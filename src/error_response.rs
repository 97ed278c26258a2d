//! The JSON error body of every response the gateway makes itself (DESIGN.md "Error responses").
//! Messages are fixed strings chosen here: nothing from the upstream, the network or key
//! material can leak into them.

use serde::Serialize;

/// The gateway's own error kinds, each with its status and machine-readable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayError {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    PayloadTooLarge,
    HeadersTooLarge,
    RateLimited,
    BadGateway,
    ServiceUnavailable,
    GatewayTimeout,
    Internal,
}

impl GatewayError {
    pub fn status(self) -> u16 {
        match self {
            GatewayError::BadRequest => 400,
            GatewayError::Unauthorized => 401,
            GatewayError::Forbidden => 403,
            GatewayError::NotFound => 404,
            GatewayError::MethodNotAllowed => 405,
            GatewayError::PayloadTooLarge => 413,
            GatewayError::HeadersTooLarge => 431,
            GatewayError::RateLimited => 429,
            GatewayError::BadGateway => 502,
            GatewayError::ServiceUnavailable => 503,
            GatewayError::GatewayTimeout => 504,
            GatewayError::Internal => 500,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            GatewayError::BadRequest => "bad_request",
            GatewayError::Unauthorized => "unauthorized",
            GatewayError::Forbidden => "forbidden",
            GatewayError::NotFound => "not_found",
            GatewayError::MethodNotAllowed => "method_not_allowed",
            GatewayError::PayloadTooLarge => "payload_too_large",
            GatewayError::HeadersTooLarge => "request_header_fields_too_large",
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
            GatewayError::BadRequest => "the request is malformed",
            GatewayError::Unauthorized => "authentication is required",
            GatewayError::Forbidden => "you are not allowed to do this",
            GatewayError::NotFound => "no route matches this request",
            GatewayError::MethodNotAllowed => "this method is not allowed on this path",
            GatewayError::PayloadTooLarge => "the request body is too large",
            GatewayError::HeadersTooLarge => "the request headers are too large or too many",
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

#[cfg(test)]
mod tests {
    use super::*;

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
