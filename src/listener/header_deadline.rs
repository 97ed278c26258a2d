//! A whole-head deadline on client connections (slowloris).
//!
//! Pingora times out each *read* of a request head, not the head as a whole: a client that
//! sends one byte every few seconds holds a connection and a task forever. This wrapper around
//! the accepted stream arms a timer when a request head starts (at accept, and at the first byte
//! after a response went out) and disarms it when the blank line that ends the head arrives. If
//! the timer fires first, the client gets a best-effort `408` and the read fails, which closes
//! the connection. Reads outside a head (bodies, Pingora's idle read that notices a client
//! hanging up while the upstream works) never time out here.

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

use super::head_scan::{HeadScan, Scan};

#[derive(Debug)]
enum Phase {
    /// Reading a request head; the timer runs.
    Head(HeadScan),
    /// Past the head: body and response; the timer is off.
    Body,
    /// A response started; the next byte from the client starts a new head.
    Responded,
}

pub struct HeaderDeadline {
    inner: Stream,
    /// Bytes read before Pingora took over (see `listener::GuardedApp`), served first.
    prefix: Vec<u8>,
    prefix_pos: usize,
    timeout: Duration,
    phase: Phase,
    timer: Pin<Box<Sleep>>,
    on_refused: Arc<dyn Fn(Refusal) + Send + Sync>,
}

/// Why a connection was refused while its head was arriving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    HeaderTimeout,
    Malformed(&'static str),
}

impl Refusal {
    /// Metric label.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::HeaderTimeout => "header_timeout",
            Refusal::Malformed(_) => "malformed_head",
        }
    }

    /// The answer sent before closing: Pingora never saw a request, so no request id exists.
    pub fn response(self) -> Vec<u8> {
        match self {
            Refusal::HeaderTimeout => super::canned_response(
                "408 Request Timeout",
                "request_timeout",
                "request head not received in time",
                "",
            ),
            Refusal::Malformed(why) => {
                super::canned_response("400 Bad Request", "bad_request", why, "")
            }
        }
    }

    fn io_error(self) -> std::io::Error {
        match self {
            Refusal::HeaderTimeout => std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "request head not received within header_read_timeout",
            ),
            Refusal::Malformed(why) => std::io::Error::new(std::io::ErrorKind::InvalidData, why),
        }
    }
}

impl std::fmt::Debug for HeaderDeadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderDeadline")
            .field("inner", &self.inner)
            .field("phase", &self.phase)
            .finish()
    }
}

impl HeaderDeadline {
    /// `prefix`: the first bytes already read from `inner`, and `head` the scan of them (`None`
    /// when the head was complete in them); `deadline`: when the first head must be complete
    /// (its clock started at accept, so a client that connects and says nothing is cut off just
    /// like one that talks slowly).
    pub fn new(
        inner: Stream,
        prefix: Vec<u8>,
        head: Option<HeadScan>,
        deadline: Instant,
        timeout: Duration,
        on_refused: Arc<dyn Fn(Refusal) + Send + Sync>,
    ) -> HeaderDeadline {
        let phase = head.map_or(Phase::Body, Phase::Head);
        HeaderDeadline {
            inner,
            prefix,
            prefix_pos: 0,
            timeout,
            phase,
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
        matches!(self.phase, Phase::Head(_)) && self.timer.as_mut().poll(cx).is_ready()
    }
}

impl AsyncRead for HeaderDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.prefix_pos < this.prefix.len() {
            // Already scanned when it was read; just hand it over.
            let rest = &this.prefix[this.prefix_pos..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.prefix_pos += n;
            if this.prefix_pos == this.prefix.len() {
                this.prefix = Vec::new();
                this.prefix_pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let fresh = &buf.filled()[before..];
                if fresh.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                if matches!(this.phase, Phase::Responded) {
                    this.phase = Phase::Head(HeadScan::new());
                    let deadline = Instant::now() + this.timeout;
                    this.timer.as_mut().reset(deadline);
                }
                if let Phase::Head(head) = &mut this.phase {
                    match head.feed(fresh) {
                        Scan::More => {}
                        Scan::End(_) => this.phase = Phase::Body,
                        Scan::Malformed(why) => return this.refuse(cx, Refusal::Malformed(why)),
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                if this.expired(cx) {
                    return this.refuse(cx, Refusal::HeaderTimeout);
                }
                Poll::Pending
            }
            other => other,
        }
    }
}

/// True when `buf` starts a final (non-1xx) response head: the request it answers is over, so
/// the client's next byte starts a new head. `100 Continue` does not count: the body follows.
fn starts_final_response(buf: &[u8]) -> bool {
    buf.len() > 9 && buf.starts_with(b"HTTP/1.") && buf[9] != b'1'
}

impl AsyncWrite for HeaderDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if starts_final_response(buf) {
            this.phase = Phase::Responded;
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if bufs.first().is_some_and(|b| starts_final_response(b)) {
            this.phase = Phase::Responded;
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
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_final_responses_end_a_request() {
        assert!(starts_final_response(b"HTTP/1.1 200 OK\r\n"));
        assert!(starts_final_response(b"HTTP/1.1 404 Not Found\r\n"));
        assert!(!starts_final_response(b"HTTP/1.1 100 Continue\r\n"));
        assert!(!starts_final_response(b"{\"json\":1}"));
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
