//! Shadow traffic (`mirror`): a copy of a proxied request sent to another upstream once the
//! client has its answer, the copy's answer read and discarded.
//!
//! The copy is made from the head the primary upstream was sent (path after rewrite, the
//! identity headers the gateway set) and the body as it streamed through, up to `max_body`.
//! It is sent from the logging phase, on its own task, so it can never delay, fail or change
//! the client's response, and it never touches the primary's retries, breaker or budget.
//! Concurrency is bounded per route by a semaphore: a copy that finds no permit is dropped
//! (counted), never queued. Copies speak plain HTTP/1.1 with `Connection: close` on a fresh
//! connection: simple, and isolated from the primary's connection pool.

use super::pool::Pool;
use crate::config::mirror::MirrorConfig;
use crate::observability::metrics::METRICS;
use pingora::http::RequestHeader;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// The header that tells a shadow service a request is a copy.
pub const MIRROR_HEADER: &str = "X-Tollgate-Mirror";

pub struct Mirror {
    route: String,
    pool: Arc<Pool>,
    /// Out of 1,000,000, so `percent: 0.5` works without floats per request.
    per_million: u32,
    max_body: usize,
    permits: Arc<Semaphore>,
}

/// One request's copy while it is being collected.
#[derive(Debug, Default)]
pub struct MirrorCopy {
    head: Option<Box<RequestHeader>>,
    body: Vec<u8>,
    too_large: bool,
}

impl Mirror {
    pub fn new(route: &str, pool: Arc<Pool>, cfg: &MirrorConfig) -> Mirror {
        Mirror {
            route: route.to_string(),
            pool,
            per_million: (cfg.percent.clamp(0.0, 100.0) * 10_000.0).round() as u32,
            max_body: usize::try_from(cfg.max_body.0).unwrap_or(usize::MAX),
            permits: Arc::new(Semaphore::new(cfg.max_concurrent)),
        }
    }

    /// Whether this request is copied (drawn once, when routing decided it is proxied).
    pub fn sample(&self) -> Option<MirrorCopy> {
        (fastrand::u32(..1_000_000) < self.per_million).then(MirrorCopy::default)
    }

    /// Keep the head as sent upstream (each attempt overwrites: the last one is what counted).
    pub fn on_upstream_head(&self, copy: &mut MirrorCopy, head: &RequestHeader) {
        copy.head = Some(Box::new(head.clone()));
    }

    /// Keep body bytes up to `max_body`; past it the copy is abandoned and its memory freed.
    pub fn on_body(&self, copy: &mut MirrorCopy, chunk: &[u8]) {
        if copy.too_large {
            return;
        }
        if copy.body.len() + chunk.len() > self.max_body {
            copy.too_large = true;
            copy.body = Vec::new();
            return;
        }
        copy.body.extend_from_slice(chunk);
    }

    /// Send the copy on its own task if it is complete, small enough and a permit is free.
    pub fn send(&self, copy: MirrorCopy) {
        let count = |result: &str| {
            METRICS
                .mirror_requests
                .with_label_values(&[self.route.as_str(), result])
                .inc();
        };
        let Some(head) = copy.head else {
            return; // never reached the upstream request phase: nothing to copy
        };
        if copy.too_large {
            return count("too_large");
        }
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            return count("dropped");
        };
        let Some(addr) = self
            .pool
            .select(&[])
            .and_then(|b| b.addr.as_inet().copied())
        else {
            return count("no_backend");
        };
        let bytes = encode(&head, &copy.body, &self.pool.host_header(addr));
        let (connect_timeout, read_timeout) = (self.pool.connect_timeout, self.pool.read_timeout);
        let route = self.route.clone();
        tokio::spawn(async move {
            let exchange = async {
                let mut stream = tokio::time::timeout(connect_timeout, TcpStream::connect(addr))
                    .await
                    .map_err(|_| "connect timeout")?
                    .map_err(|_| "connect")?;
                stream.write_all(&bytes).await.map_err(|_| "write")?;
                // Read to EOF and discard: the shadow's answer is never looked at.
                let mut sink = [0u8; 4096];
                loop {
                    match stream.read(&mut sink).await {
                        Ok(0) => return Ok::<(), &str>(()),
                        Ok(_) => {}
                        Err(_) => return Err("read"),
                    }
                }
            };
            let result = match tokio::time::timeout(read_timeout, exchange).await {
                Ok(Ok(())) => "sent",
                Ok(Err(_)) | Err(_) => "error",
            };
            METRICS
                .mirror_requests
                .with_label_values(&[route.as_str(), result])
                .inc();
            drop(permit);
        });
    }
}

/// The copy as HTTP/1.1 bytes: the upstream head with the body's real length, `Connection:
/// close`, the shadow's `Host` and the mirror marker.
fn encode(head: &RequestHeader, body: &[u8], host: &http::HeaderValue) -> Vec<u8> {
    let target = head.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = Vec::with_capacity(256 + body.len());
    out.extend_from_slice(head.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let skip = [
        http::header::HOST,
        http::header::CONNECTION,
        http::header::CONTENT_LENGTH,
        http::header::TRANSFER_ENCODING,
        http::header::TE,
        http::header::UPGRADE,
        http::header::HeaderName::from_static("keep-alive"),
        http::header::HeaderName::from_static("x-tollgate-mirror"),
    ];
    for (name, value) in head.headers.iter() {
        if skip.contains(name) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Host: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(
        format!(
            "\r\n{MIRROR_HEADER}: 1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_carries_the_upstream_head_its_body_length_and_the_marker() {
        let mut head = RequestHeader::build("POST", b"/v2/orders?x=1", None).unwrap();
        head.insert_header("X-User-Id", "u1").unwrap();
        head.insert_header("Transfer-Encoding", "chunked").unwrap();
        head.insert_header("Host", "api.example.com").unwrap();
        let bytes = encode(
            &head,
            b"{\"a\":1}",
            &http::HeaderValue::from_static("shadow:80"),
        );
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            text.starts_with("POST /v2/orders?x=1 HTTP/1.1\r\n"),
            "{text}"
        );
        assert!(text.contains("x-user-id: u1\r\n"), "{text}");
        assert!(
            !text.to_ascii_lowercase().contains("transfer-encoding"),
            "{text}"
        );
        assert!(text.contains("Host: shadow:80\r\n"), "{text}");
        assert!(text.contains("X-Tollgate-Mirror: 1\r\n"), "{text}");
        assert!(
            text.ends_with("Content-Length: 7\r\n\r\n{\"a\":1}"),
            "{text}"
        );
    }
}
