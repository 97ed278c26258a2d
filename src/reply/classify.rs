//! Which gateway error a Pingora failure becomes (DESIGN.md's status table).

use super::GatewayError;
use crate::listener::header_deadline::BrokenFraming;
use crate::upstream::attempt::is_connect_failure;
use pingora::{Error, ErrorSource, ErrorType};

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
        // Pingora nests its errors both as `Error` and as `Box<Error>`.
        let inner = c
            .downcast_ref::<Error>()
            .or_else(|| c.downcast_ref::<Box<Error>>().map(|b| &**b));
        cause = inner.and_then(|inner| inner.cause.as_deref());
    }
    false
}

/// The backend went quiet while the client still owed part of its request body. A backend
/// that waits for the whole body before answering (most do) is silent because the client is:
/// a client that stalls its upload must get a `408`, and must not be able to make the backend
/// look broken — a handful of such uploads would otherwise open the circuit breaker or eject
/// the backend for every other client.
pub fn client_stalled_body(e: &Error, session: &mut pingora::proxy::Session) -> bool {
    *e.esource() == ErrorSource::Upstream
        && matches!(e.etype(), ErrorType::ReadTimedout)
        && !session.is_body_done()
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
    fn a_read_the_listener_failed_for_broken_framing_is_a_400() {
        let io = || std::io::Error::new(std::io::ErrorKind::InvalidData, BrokenFraming("bad"));
        let inner = || Error::because(ErrorType::ReadError, "when reading body", io());
        for mut e in [
            Error::because(ErrorType::ReadError, "outer", inner()),
            Error::because(ErrorType::ReadError, "outer", *inner()),
            inner(),
        ] {
            e.as_down();
            assert_eq!(classify(&e), Some(GatewayError::BadRequest));
        }
        let mut plain = Error::because(
            ErrorType::ReadError,
            "when reading body",
            std::io::Error::from(std::io::ErrorKind::ConnectionReset),
        );
        plain.as_down();
        assert_eq!(classify(&plain), None);
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
