//! Protection of the public listener against hostile or broken clients, below HTTP: a cap on
//! concurrent connections, a deadline for each request head, and request framing checked byte
//! by byte before Pingora parses it. Everything above (header size and count, body size, idle
//! keep-alive) is checked per request in the proxy phases.

pub mod chunk_scan;
pub mod content_length;
pub mod framing;
pub mod head_scan;
pub mod head_size;
pub mod header_deadline;
pub mod probe;

use async_trait::async_trait;
use header_deadline::{HeaderDeadline, Refusal};
use pingora::apps::ServerApp;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::observability::metrics::METRICS;
use crate::reply::{self, GatewayError};

/// Connection-level limits of the public listeners (the `server` section).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    /// Cleartext connections may open with the HTTP/2 preface (`server.h2c`).
    pub h2c: bool,
}

/// The first bytes of an HTTP/2 connection with prior knowledge (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Wraps the proxy app: counts connections and puts every accepted stream under a head deadline.
pub struct GuardedApp<A> {
    inner: Arc<A>,
    limits: ConnectionLimits,
    open: Arc<AtomicUsize>,
    stopped_accepting: Arc<AtomicBool>,
}

impl<A> GuardedApp<A> {
    pub fn new(inner: A, limits: ConnectionLimits) -> GuardedApp<A> {
        GuardedApp {
            inner: Arc::new(inner),
            limits,
            open: Arc::default(),
            stopped_accepting: Arc::default(),
        }
    }

    /// A live view of this app's listeners, for ending a drain early (`crate::drain`).
    pub fn state(&self) -> ListenerState {
        ListenerState {
            open: self.open.clone(),
            stopped_accepting: self.stopped_accepting.clone(),
        }
    }
}

/// What a drain needs to know about the public listeners.
#[derive(Debug, Clone)]
pub struct ListenerState {
    open: Arc<AtomicUsize>,
    stopped_accepting: Arc<AtomicBool>,
}

impl ListenerState {
    /// Connections that hold a `max_connections` slot: from accept to close, whatever happens
    /// in between (the slot is freed on drop, so a panic or a cancelled task cannot leak one).
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// True once Pingora has ended every accept loop of the service (it calls the app's
    /// `cleanup` only then): no new connection can arrive.
    pub fn stopped_accepting(&self) -> bool {
        self.stopped_accepting.load(Ordering::Acquire)
    }
}

/// One of the `max_connections` slots; freed when the connection ends, however it ends.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(open: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .ok()?;
        METRICS.downstream_connections.inc();
        Some(Slot(open.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
        METRICS.downstream_connections.dec();
    }
}

/// Enough for a typical request head in one read; the rest is read by Pingora as usual.
const FIRST_READ: usize = 4096;

fn count_refusal(why: Refusal) {
    METRICS
        .connections_rejected
        .with_label_values(&[why.reason()])
        .inc();
}

/// Write a refusal and give up on the connection; bounded, so a client that does not read its
/// answer cannot hold the task.
async fn answer_and_close(stream: &mut Stream, response: &[u8]) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(response).await;
        let _ = stream.flush().await;
    })
    .await;
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for GuardedApp<A> {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let Some(_slot) = Slot::take(&self.open, self.limits.max_connections) else {
            METRICS
                .connections_rejected
                .with_label_values(&["max_connections"])
                .inc();
            let busy = reply::canned(
                GatewayError::ServiceUnavailable,
                "too many connections",
                "Retry-After: 1\r\n",
            );
            answer_and_close(&mut stream, &busy).await;
            return None;
        };
        let timeout = self.limits.header_read_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        // Wait for the first bytes here rather than in Pingora: Pingora drops a connection
        // whose request has not arrived when its service starts shutting down, so a client
        // accepted by the old process in the last instant of an upgrade would lose its request.
        // With bytes in hand, its parser sees a request at once and serves it (with
        // `Connection: close`).
        let mut first = vec![0u8; FIRST_READ];
        // Not cut short by a shutdown: a connection accepted in the last instant before this
        // process stopped accepting has its request on the way, and deserves an answer.
        let n = match tokio::time::timeout_at(deadline, stream.read(&mut first)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return None,
            Ok(Ok(n)) => n,
            Err(_) => {
                count_refusal(Refusal::HeaderTimeout);
                answer_and_close(&mut stream, &Refusal::HeaderTimeout.response()).await;
                return None;
            }
        };
        first.truncate(n);
        let http1 = match stream.selected_alpn_proto() {
            Some(ALPN::H2) => false,
            _ if !self.limits.h2c => true,
            _ => {
                // Enough bytes to tell an h2c preface from an HTTP/1 request line.
                while first.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(&first) {
                    let mut more = [0u8; 64];
                    match tokio::time::timeout_at(deadline, stream.read(&mut more)).await {
                        Ok(Ok(n)) if n > 0 => first.extend_from_slice(&more[..n]),
                        _ => return None,
                    }
                }
                !first.starts_with(H2_PREFACE)
            }
        };
        let guarded: Stream = Box::new(HeaderDeadline::new(
            stream,
            first,
            http1,
            deadline,
            timeout,
            Arc::new(count_refusal),
        ));
        self.inner.process_new(guarded, shutdown).await
    }

    /// Pingora calls this once all accept loops of the service have ended (after its shutdown
    /// broadcast); the inner cleanup then closes keep-alive connections waiting for a request.
    async fn cleanup(&self) {
        self.stopped_accepting.store(true, Ordering::Release);
        self.inner.cleanup().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_returned_on_drop() {
        let open = Arc::new(AtomicUsize::new(0));
        let a = Slot::take(&open, 2).expect("first");
        let b = Slot::take(&open, 2).expect("second");
        assert!(Slot::take(&open, 2).is_none());
        drop(a);
        let c = Slot::take(&open, 2).expect("freed slot is reusable");
        drop((b, c));
        assert_eq!(open.load(Ordering::Acquire), 0);
    }
}
