//! One request's attempts at its upstream pool: which backends were tried, the passive-health
//! outcome of each attempt (recorded exactly once), and whether a failed attempt earns another
//! (see `upstream::retry` for the rules). The proxy calls one method per Pingora phase.

use super::circuit::Admission;
use super::members::InFlight;
use super::pool::Pool;
use super::retry::Failure;
use crate::observability::metrics::METRICS;
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Failures to establish the upstream connection (before any byte of the request was sent).
pub fn is_connect_failure(e: &Error) -> bool {
    use ErrorType::*;
    matches!(
        e.etype(),
        ConnectTimedout
            | ConnectRefused
            | ConnectNoRoute
            | ConnectError
            | ConnectProxyFailure
            | TLSHandshakeFailure
            | TLSHandshakeTimedout
            | HandshakeError
            | InvalidCert
    )
}

#[derive(Debug, Default)]
pub struct Attempts {
    tried: Vec<SocketAddr>,
    backend: Option<SocketAddr>,
    /// The current attempt's outcome was reported to passive health.
    outcome_recorded: bool,
    /// Post-send retries made so far (they drive the backoff).
    post_send_retries: u32,
    /// Wait this long before the next attempt (a post-send retry's jittered backoff).
    backoff: Option<Duration>,
    /// The next attempt may go to a backend already tried (a post-send retry, or Pingora's
    /// retry of a pooled connection the backend had closed) when no other one is left.
    same_backend_ok: bool,
    /// The current attempt ended in a status listed in `retry_on`: retry it.
    status_retry: bool,
    started: Option<Instant>,
    /// Seconds from sending the request to the response head, for logs and metrics.
    pub latency: Option<f64>,
    /// Seconds a refused client should wait (open circuit), for `Retry-After`.
    pub retry_after: Option<u64>,
    /// The current attempt's member, counted in flight until the next attempt or the end of
    /// the request (admin `/upstreams`).
    in_flight: Option<InFlight>,
}

impl Attempts {
    /// The backend of the current (last) attempt.
    pub fn backend(&self) -> Option<SocketAddr> {
        self.backend
    }

    /// The `Host` for the current attempt when the client's is not preserved.
    pub fn host_header(&self, pool: &Pool) -> Option<http::HeaderValue> {
        match &self.in_flight {
            Some(f) => Some(f.member().host_header.clone()),
            None => self.backend.map(|a| pool.host_header(a)),
        }
    }

    /// The peer for the next attempt: after the backoff a post-send retry asked for, through
    /// the circuit breaker, to a healthy backend not tried yet (or, when allowed, one that was).
    pub async fn next_peer(&mut self, pool: &Pool) -> pingora::Result<Box<HttpPeer>> {
        if let Some(wait) = self.backoff.take() {
            tokio::time::sleep(wait).await;
        }
        let first = self.tried.is_empty();
        if first && pool.retry_on.is_some() {
            pool.retry_budget.deposit();
        }
        if let (Some(breaker), true) = (&pool.breaker, first) {
            if let Admission::Refused { retry_after_secs } = breaker.admit(Instant::now()) {
                self.retry_after = Some(retry_after_secs);
                return Error::e_explain(ErrorType::HTTPStatus(503), "circuit open");
            }
        }
        let same_backend_ok = std::mem::take(&mut self.same_backend_ok);
        let picked = pool
            .select(&self.tried)
            .or_else(|| same_backend_ok.then(|| pool.select(&[])).flatten());
        let Some(backend) = picked else {
            // First attempt: nothing healthy at all. Later attempts: every healthy backend
            // already failed to connect for this request.
            let status = if first { 503 } else { 502 };
            return Error::e_explain(ErrorType::HTTPStatus(status), "no healthy backend left");
        };
        let Some(addr) = backend.addr.as_inet().copied() else {
            return Error::e_explain(ErrorType::InternalError, "backend is not an inet address");
        };
        self.tried.push(addr);
        self.backend = Some(addr);
        self.outcome_recorded = false;
        // The previous attempt's count ends before this one's starts.
        self.in_flight = None;
        let mut peer = match pool.members.get(&addr) {
            Some(member) => {
                let peer = pool.transport.peer_for(&member);
                self.in_flight = Some(member.enter());
                peer
            }
            None => pool.transport.peer(addr),
        };
        peer.options.connection_timeout = Some(pool.connect_timeout);
        peer.options.read_timeout = Some(pool.read_timeout);
        self.started = Some(Instant::now());
        Ok(Box::new(peer))
    }

    /// A connect failure never reached the backend's application: always safe to retry on
    /// another backend, up to the upstream's `retries`.
    pub fn connect_failed(&mut self, pool: &Pool, mut e: Box<Error>) -> Box<Error> {
        if let Some(addr) = self.backend {
            pool.record_outcome(&addr, true);
        }
        let retry = self.tried.len() <= pool.retries;
        if retry {
            METRICS
                .upstream_retries
                .with_label_values(&[pool.name.as_str(), "connect"])
                .inc();
        }
        e.set_retry(retry);
        e
    }

    /// The exchange broke after connecting. `replayable`: see [`retry::replayable`].
    pub fn proxy_failed(
        &mut self,
        pool: Option<&Pool>,
        mut e: Box<Error>,
        replayable: bool,
        client_reused: bool,
    ) -> Box<Error> {
        if std::mem::take(&mut self.status_retry) {
            e.set_retry(true);
            return e;
        }
        // A pooled connection that the backend closed while it sat idle is keep-alive churn,
        // not a failure of the backend: it is neither counted against it nor spends the retry
        // budget; Pingora's own rule below sends the request again.
        let stale = client_reused && matches!(e.retry, pingora::RetryType::ReusedOnly);
        if let (Some(failure), Some(pool)) = (Failure::of_error(&e).filter(|_| !stale), pool) {
            self.record_once(pool, true);
            if self.retry_after_send(pool, failure, replayable) {
                e.set_retry(true);
                return e;
            }
        }
        // Otherwise Pingora's own rule: a pooled connection the backend had already closed
        // is retried (idempotent requests with a replayable body only), never anything else.
        if !replayable {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
            self.same_backend_ok = e.retry();
        }
        e
    }

    /// The response head arrived. A status listed in `retry_on` that may be retried fails the
    /// phase, so that nothing of this answer reaches the client and Pingora tries again.
    pub fn response_head(
        &mut self,
        pool: &Pool,
        status: u16,
        replayable: bool,
    ) -> pingora::Result<()> {
        if let Some(t) = self.started {
            self.latency = Some(t.elapsed().as_secs_f64());
        }
        self.record_once(pool, (500..600).contains(&status));
        if self.retry_after_send(pool, Failure::Status(status), replayable) {
            self.status_retry = true;
            return Error::e_explain(
                ErrorType::Custom("retryable upstream status"),
                format!("upstream answered {status}"),
            );
        }
        Ok(())
    }

    /// The request is over: a reset or timeout after connecting that no earlier phase saw
    /// counts against the backend (connect failures were counted as they happened).
    pub fn finished(&mut self, pool: &Pool, error: Option<&Error>) {
        if let Some(err) = error {
            if !is_connect_failure(err) && *err.esource() == pingora::ErrorSource::Upstream {
                self.record_once(pool, true);
            }
        }
    }

    fn record_once(&mut self, pool: &Pool, failed: bool) {
        if let (Some(addr), false) = (self.backend, self.outcome_recorded) {
            pool.record_outcome(&addr, failed);
            self.outcome_recorded = true;
        }
    }

    /// Whether a failure after the request was sent earns another attempt; when it does,
    /// schedules the jittered backoff.
    fn retry_after_send(&mut self, pool: &Pool, failure: Failure, replayable: bool) -> bool {
        let Some(policy) = &pool.retry_on else {
            return false;
        };
        if !policy.covers(failure) || !replayable || self.tried.len() > pool.retries {
            return false;
        }
        if !pool.retry_budget.try_withdraw() {
            METRICS
                .retry_budget_exhausted
                .with_label_values(&[pool.name.as_str()])
                .inc();
            return false;
        }
        METRICS
            .upstream_retries
            .with_label_values(&[pool.name.as_str(), failure.reason()])
            .inc();
        self.post_send_retries += 1;
        self.backoff = Some(policy.backoff(self.post_send_retries, fastrand::f64()));
        self.same_backend_ok = true;
        true
    }
}
