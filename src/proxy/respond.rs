//! Writing the gateway's own JSON error responses to the client.

use crate::error_response::{self, GatewayError};
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

/// Send `{"error","message","request_id"}` with the status of `kind` and any extra headers.
pub async fn error(
    session: &mut Session,
    kind: GatewayError,
    message: &str,
    request_id: &str,
    extra: &[(&'static str, &str)],
) -> pingora::Result<()> {
    let body = error_response::body(kind, message, request_id);
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
