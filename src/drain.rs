//! Everything about stopping: the signals that start a drain, `Connection: close` on every
//! response from then on ([`Draining`]), and ending the process as soon as nothing is left to
//! drain instead of after the whole `grace_period` ([`DrainExit`]).
//!
//! Why `Connection: close` from the signal on: Pingora keeps accepting for a few seconds after
//! SIGQUIT (the socket hand-off of an upgrade) and then drops idle keep-alive connections; a
//! busy client's next request on such a connection would be lost. Told to close, clients move
//! to fresh connections (served by the new process) while this one still answers.
//!
//! Why a service that exits the process: Pingora 0.9's graceful exit broadcasts shutdown and
//! then blocks its main thread in `thread::sleep(grace_period)` (pingora-core `Server::run`)
//! whatever is still in flight; only after that does it tear the runtimes down, which drops every
//! task at once. Nothing can end that sleep early, and the teardown cannot be used to wait
//! either (tokio cancels the async tasks before it waits for anything). So the wait for
//! in-flight requests has to happen here, on a runtime that is still alive, and the process
//! ends with `exit(0)`, as Pingora's `run_forever` itself does after its teardown. If the drain
//! does not finish first, Pingora's own sequence runs unchanged: `grace_period`, then
//! `graceful_shutdown_timeout`, so both still bound a stop.
//!
//! When "nothing is left" is decided, and why no request can be lost:
//! * Only after Pingora's shutdown broadcast. On SIGQUIT Pingora broadcasts after it has sent the
//!   listening sockets to the new process and waited its fixed 5 s hand-off window, so the
//!   upgrade is complete; on SIGTERM it broadcasts at once.
//! * Only once the public listeners have stopped accepting ([`ListenerState::stopped_accepting`]:
//!   Pingora calls the app's cleanup after its accept loops have ended). From then on no
//!   connection can arrive, and Pingora's cleanup also closes keep-alive connections that are
//!   waiting for their next request (responses already say `Connection: close`).
//! * Only when no public connection is open and no request is in flight, continuously for
//!   [`QUIET`]: a connection accepted in the accept loop's last instant takes its slot a task
//!   spawn later, and the access-log writer gets time to write the last lines.
//!
//! A connection that was accepted but has not sent a byte keeps the process alive until its
//! `header_read_timeout` (it may be a request on its way); the admin listener does not count.

use crate::listener::ListenerState;
use crate::observability::metrics::METRICS;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::server::ShutdownWatch;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Set by SIGQUIT or SIGTERM: this process is on its way out.
#[derive(Debug, Clone, Default)]
pub struct Draining(Arc<AtomicBool>);

impl Draining {
    /// A flag that the drain signals raise.
    pub fn on_signals() -> Result<Draining, String> {
        let flag = Arc::new(AtomicBool::new(false));
        for signal in [signal_hook::consts::SIGQUIT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(signal, flag.clone())
                .map_err(|e| format!("cannot watch signal {signal}: {e}"))?;
        }
        Ok(Draining(flag))
    }

    pub fn active(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Before the gateway answers a request itself: no keep-alive once draining.
    pub fn before_reply(&self, session: &mut Session) {
        if self.active() {
            session.set_keepalive(None);
        }
    }

    /// On a response head going out: `Connection: close` once draining.
    pub fn on_response(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
    ) -> pingora::Result<()> {
        if self.active() {
            resp.insert_header(http::header::CONNECTION, "close")?;
            session.set_keepalive(None);
        }
        Ok(())
    }
}

/// How long the process must be continuously idle before it exits.
const QUIET: Duration = Duration::from_millis(250);
/// How often the idle condition is sampled once a drain has begun (never before).
const POLL: Duration = Duration::from_millis(25);

// The access log is written by a thread that wakes every `WRITE_INTERVAL`; the quiet period must
// let it run at least once after the last request's line was queued.
const _: () =
    assert!(QUIET.as_millis() >= 2 * crate::observability::access_log::WRITE_INTERVAL.as_millis());

/// The background service that ends a graceful stop early (see the module docs).
pub struct DrainExit {
    listeners: ListenerState,
}

impl DrainExit {
    pub fn new(listeners: ListenerState) -> DrainExit {
        DrainExit { listeners }
    }

    fn idle(&self) -> bool {
        self.listeners.stopped_accepting()
            && self.listeners.open_connections() == 0
            && METRICS.in_flight.get() <= 0
    }
}

/// Resolves once Pingora has broadcast its shutdown; never if it never does (SIGINT and a
/// normal life), or if the sender is gone.
async fn shutdown_began(mut shutdown: ShutdownWatch) -> bool {
    while !*shutdown.borrow_and_update() {
        if shutdown.changed().await.is_err() {
            return false;
        }
    }
    true
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for DrainExit {
    async fn start(&self, shutdown: ShutdownWatch) {
        if !shutdown_began(shutdown).await {
            return;
        }
        let began = Instant::now();
        tracing::info!("draining: exiting as soon as no connection or request is left");
        let mut idle_since: Option<Instant> = None;
        loop {
            tokio::time::sleep(POLL).await;
            if !self.idle() {
                idle_since = None;
                continue;
            }
            let since = *idle_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= QUIET {
                tracing::info!(
                    "drained {:.3}s after the shutdown began; exiting",
                    began.elapsed().as_secs_f64()
                );
                std::process::exit(0);
            }
        }
    }
}
