//! Which gateway error a Pingora failure becomes (DESIGN.md's status table).

use crate::error_response::GatewayError;
use crate::listener::header_deadline::BrokenFraming;
use pingora::{Error, ErrorSource, ErrorType};

/// Failures to establish the upstream connection (before any byte of the request was sent).
pub fn is_connect_failure(e: &Error) -> bool {
    use ErrorType::*;
    matches!(
        e.etype(),
        ConnectTimedout
            | ConnectRefused
            | ConnectNoRoute
            | ConnectError
            | ConnectProxyFailure
            | TLSHandshakeFailure
            | TLSHandshakeTimedout
            | HandshakeError
            | InvalidCert
    )
}

/// The client's read failed because the listener found its framing broken (a bad chunk-size
/// line): the client is still there and gets a `400` if its response has not started.
pub fn broke_framing(e: &Error) -> bool {
    let mut cause = e.cause.as_deref();
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return io
                .get_ref()
                .is_some_and(|inner| inner.is::<BrokenFraming>());
        }
        cause = c
            .downcast_ref::<Error>()
            .and_then(|inner| inner.cause.as_deref());
    }
    false
}

/// `None` means the client is gone or broke the exchange itself: there is no one to answer.
pub fn classify(e: &Error) -> Option<GatewayError> {
    use ErrorType::*;
    if let HTTPStatus(code) = e.etype() {
        return Some(GatewayError::from_status(*code));
    }
    if is_connect_failure(e) {
        return Some(GatewayError::BadGateway);
    }
    match e.esource() {
        ErrorSource::Upstream => match e.etype() {
            ReadTimedout | WriteTimedout => Some(GatewayError::GatewayTimeout),
            _ => Some(GatewayError::BadGateway),
        },
        ErrorSource::Downstream if broke_framing(e) => Some(GatewayError::BadRequest),
        ErrorSource::Downstream => match e.etype() {
            ReadError | WriteError | ConnectionClosed | ReadTimedout | WriteTimedout => None,
            _ => Some(GatewayError::BadRequest),
        },
        ErrorSource::Internal | ErrorSource::Unset => Some(GatewayError::Internal),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_timeouts_are_504_and_breakage_502() {
        let mut e = Error::new(ErrorType::ReadTimedout);
        e.as_up();
        assert_eq!(classify(&e), Some(GatewayError::GatewayTimeout));
        let e = Error::new(ErrorType::ConnectRefused);
        assert_eq!(classify(&e), Some(GatewayError::BadGateway));
        let mut e = Error::new(ErrorType::ConnectionClosed);
        e.as_up();
        assert_eq!(classify(&e), Some(GatewayError::BadGateway));
    }

    #[test]
    fn client_side_failures_get_no_answer_or_400() {
        let mut e = Error::new(ErrorType::ConnectionClosed);
        e.as_down();
        assert_eq!(classify(&e), None);
        let mut e = Error::new(ErrorType::InvalidHTTPHeader);
        e.as_down();
        assert_eq!(classify(&e), Some(GatewayError::BadRequest));
        let e = Error::new(ErrorType::HTTPStatus(503));
        assert_eq!(classify(&e), Some(GatewayError::ServiceUnavailable));
    }
}
