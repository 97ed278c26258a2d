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

/// Finds the empty line that ends a request head across reads: `\n` then optional `\r` then `\n`
/// (bare-LF heads are accepted by Pingora's parser, so they must end the head here too).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HeadEnd {
    /// 0: inside a line; 1: just after `\n`; 2: after `\n\r`.
    state: u8,
}

impl HeadEnd {
    /// Index just past the end of the head in `bytes`, if it ends there.
    pub fn scan(&mut self, bytes: &[u8]) -> Option<usize> {
        for (i, b) in bytes.iter().enumerate() {
            self.state = match (self.state, b) {
                (1 | 2, b'\n') => {
                    self.state = 0;
                    return Some(i + 1);
                }
                (_, b'\n') => 1,
                (1, b'\r') => 2,
                _ => 0,
            };
        }
        None
    }
}

/// The canned answer when the head did not arrive in time. Pingora never saw a request, so
/// there is no request id to echo.
pub const TIMEOUT_RESPONSE: &[u8] = b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\nContent-Length: 93\r\nConnection: close\r\n\r\n{\"error\":\"request_timeout\",\"message\":\"request head not received in time\",\"request_id\":\"none\"}";

#[derive(Debug)]
enum Phase {
    /// Reading a request head; the timer runs.
    Head(HeadEnd),
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
    on_timeout: Arc<dyn Fn() + Send + Sync>,
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
    /// `prefix`: the first bytes already read from `inner`; `deadline`: when the first head
    /// must be complete (its clock started at accept, so a client that connects and says
    /// nothing is cut off just like one that talks slowly).
    pub fn new(
        inner: Stream,
        prefix: Vec<u8>,
        deadline: Instant,
        timeout: Duration,
        on_timeout: Arc<dyn Fn() + Send + Sync>,
    ) -> HeaderDeadline {
        let mut end = HeadEnd::default();
        let phase = if end.scan(&prefix).is_some() {
            Phase::Body
        } else {
            Phase::Head(end)
        };
        HeaderDeadline {
            inner,
            prefix,
            prefix_pos: 0,
            timeout,
            phase,
            timer: Box::pin(tokio::time::sleep_until(deadline)),
            on_timeout,
        }
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
                    this.phase = Phase::Head(HeadEnd::default());
                    let deadline = Instant::now() + this.timeout;
                    this.timer.as_mut().reset(deadline);
                }
                if let Phase::Head(end) = &mut this.phase {
                    if end.scan(fresh).is_some() {
                        this.phase = Phase::Body;
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                if this.expired(cx) {
                    (this.on_timeout)();
                    // Best effort: the socket's send buffer is empty here (no response is in
                    // progress while a head is being read), so this completes at once or not
                    // at all.
                    let _ = Pin::new(&mut this.inner).poll_write(cx, TIMEOUT_RESPONSE);
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "request head not received within header_read_timeout",
                    )));
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

    fn ends(chunks: &[&[u8]]) -> Option<(usize, usize)> {
        let mut h = HeadEnd::default();
        chunks
            .iter()
            .enumerate()
            .find_map(|(i, c)| h.scan(c).map(|at| (i, at)))
    }

    #[test]
    fn finds_crlf_and_bare_lf_head_ends_across_reads() {
        assert_eq!(
            ends(&[b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody"]),
            Some((0, 27))
        );
        assert_eq!(
            ends(&[b"GET / HTTP/1.1\r\nHost: a\r", b"\n\r", b"\n"]),
            Some((2, 1))
        );
        assert_eq!(ends(&[b"GET / HTTP/1.1\nHost: a\n\n"]), Some((0, 24)));
        // One byte at a time, as a slowloris client sends it.
        let head = b"GET / HTTP/1.1\r\nX: y\r\n\r\n";
        let bytes: Vec<&[u8]> = head.chunks(1).collect();
        assert_eq!(ends(&bytes), Some((head.len() - 1, 1)));
    }

    #[test]
    fn header_lines_alone_do_not_end_the_head() {
        assert_eq!(ends(&[b"GET / HTTP/1.1\r\nHost: a\r\nX: \r\r\n"]), None);
        assert_eq!(
            ends(&[b"GET / HTTP/1.1\r\n", b"Host: a\r\n", b"X: b\r\n"]),
            None
        );
    }

    #[test]
    fn only_final_responses_end_a_request() {
        assert!(starts_final_response(b"HTTP/1.1 200 OK\r\n"));
        assert!(starts_final_response(b"HTTP/1.1 404 Not Found\r\n"));
        assert!(!starts_final_response(b"HTTP/1.1 100 Continue\r\n"));
        assert!(!starts_final_response(b"{\"json\":1}"));
    }

    #[test]
    fn the_canned_408_declares_its_real_length() {
        let split = TIMEOUT_RESPONSE
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("head end");
        let body = &TIMEOUT_RESPONSE[split + 4..];
        assert_eq!(body.len(), 93);
        assert!(serde_json::from_slice::<serde_json::Value>(body).is_ok());
    }
}
