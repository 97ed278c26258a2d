//! Which gateway error a Pingora failure becomes (DESIGN.md's status table).

use super::GatewayError;
use crate::listener::header_deadline::BrokenFraming;
use crate::upstream::attempt::is_connect_failure;
use pingora::{Error, ErrorSource, ErrorType};

/// `e` and each Pingora error nested in its causes (Pingora nests them both as `Error` and as
/// `Box<Error>`), outermost first.
fn chain(e: &Error) -> impl Iterator<Item = &Error> {
    std::iter::successors(Some(e), |err| {
        let cause = err.cause.as_deref()?;
        cause
            .downcast_ref::<Error>()
            .or_else(|| cause.downcast_ref::<Box<Error>>().map(|b| &**b))
    })
}

/// The client's read failed because the listener found its framing broken (a bad chunk-size
/// line): the client is still there and gets a `400` if its response has not started.
pub fn broke_framing(e: &Error) -> bool {
    chain(e)
        .find_map(|err| err.cause.as_deref()?.downcast_ref::<std::io::Error>())
        .and_then(std::io::Error::get_ref)
        .is_some_and(|inner| inner.is::<BrokenFraming>())
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

/// The client reset, closed or timed out its side: nobody is left to answer, and nothing is
/// wrong with the gateway or the backend. Logging each as an error lets one client that opens
/// and resets streams in a loop write megabytes of error log a second (nginx logs client
/// aborts at `info`); the access log still has every such request.
pub fn client_went_away(e: &Error) -> bool {
    *e.esource() == ErrorSource::Downstream && classify(e).is_none()
}

/// The client reset its HTTP/2 stream (or closed the connection) while the gateway waited on
/// the backend. Pingora reports that as an `H2Error` with no cause, only this context
/// (`pingora-core` `v2/server.rs`, `read_body_or_idle`), so the text is all there is to match.
/// Pingora wraps it when adding context (`Peer: …`), so the whole chain is looked at.
fn closed_its_h2_stream(e: &Error) -> bool {
    chain(e).any(|err| {
        matches!(err.etype(), ErrorType::H2Error)
            && err
                .context
                .as_ref()
                .is_some_and(|c| c.as_str().starts_with("Client closed H2"))
    })
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
        ErrorSource::Downstream if closed_its_h2_stream(e) => None,
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
        assert!(client_went_away(&e));
        let mut reset = Error::explain(
            ErrorType::H2Error,
            "Client closed H2, reason: stream no longer needed",
        );
        reset.as_down();
        assert_eq!(classify(&reset), None);
        assert!(client_went_away(&reset));
        let mut wrapped = reset.more_context("Peer: addr: 127.0.0.1:1");
        wrapped.as_down();
        assert!(client_went_away(&wrapped), "{wrapped}");
        let mut other_h2 = Error::explain(ErrorType::H2Error, "malformed frame");
        other_h2.as_down();
        assert_eq!(classify(&other_h2), Some(GatewayError::BadRequest));
        let mut upstream = Error::new(ErrorType::ConnectionClosed);
        upstream.as_up();
        assert!(!client_went_away(&upstream));
        let mut e = Error::new(ErrorType::InvalidHTTPHeader);
        e.as_down();
        assert_eq!(classify(&e), Some(GatewayError::BadRequest));
        let e = Error::new(ErrorType::HTTPStatus(503));
        assert_eq!(classify(&e), Some(GatewayError::ServiceUnavailable));
    }
}
