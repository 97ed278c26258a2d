//! The response-head decision of `response_json`: whether this response's body is stripped,
//! passed as is, or refused before its head reaches the client. Refusing early is the only way
//! to answer a proper 502; once the head is out, a failure can only cut the connection.

use super::body::{self, BodyFilter, Encoding, Policy};
use crate::observability::metrics::METRICS;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::{Error, ErrorType};

/// Ask the upstream for identity encoding and the whole representation: the body must be read
/// to be stripped, and a byte range of the unstripped body would bypass stripping.
pub fn prepare_request(upstream: &mut RequestHeader) {
    upstream.remove_header("accept-encoding");
    upstream.remove_header("range");
    upstream.remove_header("if-range");
}

/// What to do with one response of `route`, which strips JSON: the body filter to run, none,
/// or a 502 (logged and counted) while one is still possible.
pub fn on_response_head(
    policy: &Policy,
    head_request: bool,
    resp: &mut ResponseHeader,
    route: &str,
    request_id: &str,
) -> pingora::Result<Option<Box<BodyFilter>>> {
    // Boxed: the filter is a few hundred bytes that every request's context would otherwise
    // carry (and Pingora's per-request future copies), stripped or not.
    let decided = decide(policy, head_request, resp).map(|f| f.map(Box::new));
    decided.or_else(|reason| {
        tracing::warn!(
            request_id,
            route,
            reason,
            "refusing a response that cannot be sanitised"
        );
        METRICS
            .sanitize_failures
            .with_label_values(&[route, reason])
            .inc();
        Error::e_explain(ErrorType::HTTPStatus(502), "response cannot be sanitised")
    })
}

/// A body chunk through the route's filter. When the body cannot be sanitised, the head is gone
/// already: the error cuts the connection (fail closed; nothing unstripped was forwarded).
pub fn on_body(
    filter: &mut Option<Box<BodyFilter>>,
    body: &mut Option<Bytes>,
    end_of_stream: bool,
    route: &str,
    request_id: &str,
) -> pingora::Result<()> {
    let Some(f) = filter.as_mut() else {
        return Ok(());
    };
    match f.push(&body.take().unwrap_or_default(), end_of_stream) {
        Ok(out) => {
            *body = (!out.is_empty()).then(|| Bytes::from(out));
            Ok(())
        }
        Err(e) => {
            *filter = None;
            tracing::warn!(request_id, route, "cannot sanitise response: {e}");
            METRICS
                .sanitize_failures
                .with_label_values(&[route, e.reason()])
                .inc();
            Error::e_explain(
                ErrorType::HTTPStatus(502),
                "response could not be sanitised",
            )
        }
    }
}

/// `Err` is the refusal reason (a metric label).
fn decide(
    policy: &Policy,
    head_request: bool,
    resp: &mut ResponseHeader,
) -> Result<Option<BodyFilter>, &'static str> {
    let status = resp.status.as_u16();
    let has_body = !head_request && !matches!(status, 100..=199 | 204 | 304);
    // One readable media type, or the body is refused: with two `Content-Type` lines, a
    // list, or bytes that are not text, clients pick differently (browsers take the last
    // JSON-looking one), and reading the first as "not JSON" would send every field.
    let mut types = resp.headers.get_all(http::header::CONTENT_TYPE).iter();
    let json = match (types.next(), types.next()) {
        (None, _) => false,
        (Some(v), None) => match v.to_str() {
            Ok(t) if !t.contains(',') => body::is_json(t),
            _ => return Err("ambiguous_content_type"),
        },
        (Some(_), Some(_)) => return Err("ambiguous_content_type"),
    };
    if status == 206 {
        // We never ask for ranges on these routes; a partial body cannot be sanitised.
        return Err("range");
    }
    if !json {
        return Ok(None);
    }
    if !has_body {
        // HEAD: the upstream's length is that of the unstripped body; it would reveal the size
        // of what is hidden.
        resp.remove_header(&http::header::CONTENT_LENGTH);
        return Ok(None);
    }
    let encoding = resp
        .headers
        .get(http::header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?"));
    let Some(encoding) = body::encoding(encoding) else {
        return Err("bad_encoding");
    };
    let declared = resp
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if encoding == Encoding::Identity && declared.is_some_and(|n| n > policy.max_body) {
        // Known too large before a byte is sent: a proper 502 is still possible.
        return Err("too_large");
    }
    // The rewritten body has a new length: stream it chunked, decoded.
    resp.remove_header(&http::header::CONTENT_LENGTH);
    resp.remove_header(&http::header::CONTENT_ENCODING);
    Ok(Some(BodyFilter::new(policy, encoding)))
}
