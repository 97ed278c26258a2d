//! Protection of the public listener against hostile or broken clients, below HTTP: a cap on
//! concurrent connections and a deadline for each request head. Everything above (header size
//! and count, body size, idle keep-alive) is checked per request in the proxy phases.

pub mod head_size;
pub mod header_deadline;
pub mod probe;

use async_trait::async_trait;
use header_deadline::HeaderDeadline;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::observability::metrics::METRICS;

/// Connection-level limits of the public listeners (the `server` section).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
}

/// Wraps the proxy app: counts connections and puts every accepted stream under a head deadline.
pub struct GuardedApp<A> {
    inner: Arc<A>,
    limits: ConnectionLimits,
    open: Arc<AtomicUsize>,
}

impl<A> GuardedApp<A> {
    pub fn new(inner: A, limits: ConnectionLimits) -> GuardedApp<A> {
        GuardedApp {
            inner: Arc::new(inner),
            limits,
            open: Arc::default(),
        }
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

fn header_timed_out() {
    METRICS
        .connections_rejected
        .with_label_values(&["header_timeout"])
        .inc();
}

/// Sent, without reading the request, to a connection over `max_connections`.
const BUSY_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\nContent-Length: 84\r\nConnection: close\r\n\r\n{\"error\":\"service_unavailable\",\"message\":\"too many connections\",\"request_id\":\"none\"}";

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
            // Bounded: a client that does not read its answer must not hold the task.
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                let _ = stream.write_all(BUSY_RESPONSE).await;
                let _ = stream.flush().await;
            })
            .await;
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
                header_timed_out();
                let _ = tokio::time::timeout(
                    Duration::from_secs(1),
                    stream.write_all(header_deadline::TIMEOUT_RESPONSE),
                )
                .await;
                return None;
            }
        };
        first.truncate(n);
        let guarded: Stream = Box::new(HeaderDeadline::new(
            stream,
            first,
            deadline,
            timeout,
            Arc::new(header_timed_out),
        ));
        self.inner.process_new(guarded, shutdown).await
    }

    async fn cleanup(&self) {
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

    #[test]
    fn the_busy_answer_declares_its_real_length() {
        let split = BUSY_RESPONSE
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("head end");
        let body = &BUSY_RESPONSE[split + 4..];
        assert_eq!(body.len(), 84);
        assert!(serde_json::from_slice::<serde_json::Value>(body).is_ok());
    }
}
