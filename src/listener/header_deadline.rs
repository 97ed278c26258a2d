//! The guard between a client connection and Pingora's parser: a whole-head deadline
//! (slowloris) and framing checks on every byte read (see `listener::framing`).
//!
//! Pingora times out each *read* of a request head, not the head as a whole: a client that
//! sends one byte every few seconds holds a connection and a task forever. This wrapper around
//! the accepted stream arms a timer when a request head starts (at accept, and at the first byte
//! after the previous request's body) and disarms it when the blank line that ends the head
//! arrives. If the timer fires first, the client gets a best-effort `408` and the read fails,
//! which closes the connection. Reads outside a head (bodies, Pingora's idle read that notices a
//! client hanging up while the upstream works) never time out here.
//!
//! Framing that breaks (a malformed head, a bad chunk-size line) is never handed to Pingora:
//! when no earlier request of the connection is still in progress, the client gets a `400`
//! and the connection closes before Pingora sees any byte of that read — so no backend
//! receives anything of it. Otherwise the bytes before the break are handed on, the next read
//! fails (Pingora answers `400` if the request's response has not started, else the connection
//! is cut), and nothing from the break on ever reaches a backend.

use async_trait::async_trait;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::TlsRef;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::framing::{Broken, Framing};
use crate::reply::{self, GatewayError};

pub struct HeaderDeadline {
    inner: Stream,
    /// Bytes read before Pingora took over (see `listener::GuardedApp`), served first.
    prefix: Vec<u8>,
    prefix_pos: usize,
    timeout: Duration,
    framing: Framing,
    /// Set once the framing broke after earlier bytes were handed on: every later read fails.
    broken: Option<Refusal>,
    /// When the head being read must be complete. Kept as a plain instant and handed to
    /// `timer` only when a read would wait in the middle of a head: a head that arrives in one
    /// read (nearly every keep-alive request) never touches the timer wheel.
    deadline: Instant,
    timer: Pin<Box<Sleep>>,
    on_refused: Arc<dyn Fn(Refusal) + Send + Sync>,
}

/// Why a connection was refused while its head was arriving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    HeaderTimeout,
    Malformed(&'static str),
    MalformedBody(&'static str),
}

impl From<Broken> for Refusal {
    fn from(b: Broken) -> Refusal {
        match b {
            Broken::Head(why) => Refusal::Malformed(why),
            Broken::Body(why) => Refusal::MalformedBody(why),
        }
    }
}

/// The cause inside the I/O error a read fails with when the client broke the framing, so the
/// proxy can tell it from a network failure and answer `400` while it still can.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("{0}")]
pub struct BrokenFraming(pub &'static str);

impl Refusal {
    /// Metric label.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::HeaderTimeout => "header_timeout",
            Refusal::Malformed(_) => "malformed_head",
            Refusal::MalformedBody(_) => "malformed_body",
        }
    }

    /// The answer sent before closing: Pingora never saw a request, so no request id exists.
    pub fn response(self) -> Vec<u8> {
        match self {
            Refusal::HeaderTimeout => {
                let kind = GatewayError::RequestTimeout;
                reply::canned(kind, kind.default_message(), "")
            }
            Refusal::Malformed(why) | Refusal::MalformedBody(why) => {
                reply::canned(GatewayError::BadRequest, why, "")
            }
        }
    }

    fn io_error(self) -> std::io::Error {
        match self {
            Refusal::HeaderTimeout => std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "request head not received within header_read_timeout",
            ),
            Refusal::Malformed(why) | Refusal::MalformedBody(why) => {
                std::io::Error::new(std::io::ErrorKind::InvalidData, BrokenFraming(why))
            }
        }
    }
}

impl std::fmt::Debug for HeaderDeadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderDeadline")
            .field("inner", &self.inner)
            .field("framing", &self.framing)
            .finish()
    }
}

impl HeaderDeadline {
    /// `prefix`: the first bytes already read from `inner` (not yet scanned); `deadline`: when
    /// the first head must be complete (its clock started at accept, so a client that connects
    /// and says nothing is cut off just like one that talks slowly).
    /// `http1`: false for an HTTP/2 connection, whose bytes are not followed.
    pub fn new(
        inner: Stream,
        prefix: Vec<u8>,
        http1: bool,
        deadline: Instant,
        timeout: Duration,
        on_refused: Arc<dyn Fn(Refusal) + Send + Sync>,
    ) -> HeaderDeadline {
        HeaderDeadline {
            inner,
            prefix,
            prefix_pos: 0,
            timeout,
            framing: if http1 {
                Framing::new()
            } else {
                Framing::not_http1()
            },
            broken: None,
            deadline,
            timer: Box::pin(tokio::time::sleep_until(deadline)),
            on_refused,
        }
    }

    /// Best effort: the socket's send buffer is empty here (no response is in progress while a
    /// head is being read), so the answer goes out at once or not at all.
    fn refuse(&mut self, cx: &mut Context<'_>, why: Refusal) -> Poll<std::io::Result<()>> {
        (self.on_refused)(why);
        let _ = Pin::new(&mut self.inner).poll_write(cx, &why.response());
        Poll::Ready(Err(why.io_error()))
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.framing.reading_head() {
            return false;
        }
        if self.timer.deadline() != self.deadline {
            self.timer.as_mut().reset(self.deadline);
        }
        self.timer.as_mut().poll(cx).is_ready()
    }
}

impl AsyncRead for HeaderDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if let Some(why) = this.broken {
            return Poll::Ready(Err(why.io_error()));
        }
        let before = buf.filled().len();
        if this.prefix_pos < this.prefix.len() {
            // Read before Pingora took over; handed over (and scanned) now.
            let rest = &this.prefix[this.prefix_pos..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.prefix_pos += n;
            if this.prefix_pos == this.prefix.len() {
                this.prefix = Vec::new();
                this.prefix_pos = 0;
            }
        } else {
            match Pin::new(&mut this.inner).poll_read(cx, buf) {
                Poll::Ready(Ok(())) => {}
                Poll::Pending => {
                    if this.expired(cx) {
                        return this.refuse(cx, Refusal::HeaderTimeout);
                    }
                    return Poll::Pending;
                }
                other => return other,
            }
        }
        let fresh = &buf.filled()[before..];
        if fresh.is_empty() {
            return Poll::Ready(Ok(()));
        }
        let busy = this.framing.busy();
        let fed = this.framing.feed(fresh);
        if fed.head_started {
            this.deadline = Instant::now() + this.timeout;
        }
        let Some((at, broken)) = fed.broken else {
            return Poll::Ready(Ok(()));
        };
        let why = Refusal::from(broken);
        if !busy {
            // Nothing of this connection's current exchange reached Pingora: answer here.
            return this.refuse(cx, why);
        }
        (this.on_refused)(why);
        this.broken = Some(why);
        buf.set_filled(before + at);
        if at == 0 {
            return Poll::Ready(Err(why.io_error()));
        }
        Poll::Ready(Ok(()))
    }
}

/// The status of the response head `buf` starts with, if it starts one.
fn response_status(buf: &[u8]) -> Option<u16> {
    let code = buf.strip_prefix(b"HTTP/1.")?.get(2..5)?;
    if !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(code.iter().fold(0, |n, d| n * 10 + u16::from(d - b'0')))
}

impl AsyncWrite for HeaderDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if let Some(status) = response_status(buf) {
            this.framing.on_response(status);
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if let Some(status) = bufs.first().and_then(|b| response_status(b)) {
            this.framing.on_response(status);
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for HeaderDeadline {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for HeaderDeadline {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeaderDeadline {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for HeaderDeadline {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for HeaderDeadline {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for HeaderDeadline {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for HeaderDeadline {
    /// Pingora peeks for the h2c preface; the first bytes are already in `prefix` (the listener
    /// reads enough of them to tell, see `listener::GuardedApp`).
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        let rest = &self.prefix[self.prefix_pos..];
        if rest.is_empty() {
            return self.inner.try_peek(buf).await;
        }
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        buf[n..].fill(0);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_heads_are_recognised_by_their_status_line() {
        assert_eq!(response_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(response_status(b"HTTP/1.0 404 Not Found\r\n"), Some(404));
        assert_eq!(response_status(b"HTTP/1.1 101 Switching"), Some(101));
        assert_eq!(response_status(b"HTTP/1.1 1x0"), None);
        assert_eq!(response_status(b"HTTP/1.1 20"), None);
        assert_eq!(response_status(b"{\"json\":1}"), None);
    }

    #[test]
    fn refusals_answer_with_json_errors() {
        for (why, status) in [
            (Refusal::HeaderTimeout, "408"),
            (Refusal::Malformed("bare LF in request head"), "400"),
        ] {
            let text = String::from_utf8(why.response()).expect("utf-8");
            assert!(text.starts_with(&format!("HTTP/1.1 {status} ")), "{text}");
        }
    }
}
