//! In-place reload on `SIGHUP` (DESIGN.md "Live operations"): read the file again, build it with
//! the same code as `check` and `run` ([`Runtime::rebuild`]), and only if nothing is wrong swap
//! it in. A refused reload is logged with every problem and counted; the serving generation is
//! untouched. State that a user would be surprised to lose is carried over by the build itself
//! (see `Runtime::rebuild`); what a reload cannot change without new sockets (listeners,
//! threads, the client CA) is named in a warning that points to the binary upgrade.

use super::live::{Generation, Live};
use super::Runtime;
use crate::config::{Config, Problems};
use crate::drain::Draining;
use crate::observability::metrics::METRICS;
use crate::tls::LiveCerts;
use crate::upstream::health;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The `SIGHUP` handler of `tollgate run`.
pub struct Reloader {
    pub live: Arc<Live>,
    pub path: PathBuf,
    /// The certificate resolver the TLS listeners hold, when there are TLS listeners.
    pub certs: Option<Arc<LiveCerts>>,
    pub draining: Draining,
}

/// What a successful reload did.
#[derive(Debug)]
pub struct Reloaded {
    pub generation: u64,
    pub hash: String,
    /// Changes this reload could not apply (they need `tollgate run -u`).
    pub not_applied: Vec<String>,
}

impl Reloader {
    /// Build the file's config next to the serving one and swap it in, or refuse it.
    /// `shutdown`: the process's, for the background tasks a new generation starts.
    pub async fn reload(&self, shutdown: &ShutdownWatch) -> Result<Reloaded, Problems> {
        let current = self.live.current();
        let (mut config, text) = Config::read_with_text(&self.path)?;
        let not_applied = keep_running_listeners(&current.config, &mut config);
        let runtime = Runtime::rebuild(&config, self.draining.clone(), &current)?;
        if let (Some(certs), Some(tls)) = (&self.certs, &runtime.tls) {
            certs.swap(tls.certificates.clone());
            tls.publish_expiries();
        }
        // New pools are resolved and probed before they take traffic, as at start; their probe
        // and DNS loops run from now on, and pools the new config dropped stop both.
        let fresh: Vec<_> = runtime
            .pools
            .iter()
            .filter(|p| !current.pools.iter().any(|old| Arc::ptr_eq(old, p)))
            .cloned()
            .collect();
        crate::upstream::dns::first_resolution(&fresh).await;
        health::first_round(&fresh).await;
        for pool in fresh {
            pool.publish_health_gauges();
            tokio::spawn(crate::upstream::dns::refresh_loop(pool.clone()));
            tokio::spawn(health::probe_loop(pool));
        }
        // A changed `tracing` section has a new tracer: its export loop runs from now on, on
        // this background runtime; the old loop ends with the old generation's last request.
        if let Some(export) = runtime.gateway.trace_export() {
            tokio::spawn(export.run(Some(shutdown.clone())));
        }
        for old in current.pools.iter() {
            if !runtime.pools.iter().any(|p| Arc::ptr_eq(old, p)) {
                old.retired.store(true, Ordering::Release);
            }
        }
        let number = current.number + 1;
        let next = Generation::new(
            runtime.gateway,
            runtime.pools,
            config,
            number,
            text.as_bytes(),
        );
        let hash = next.hash.clone();
        self.live.swap(next);
        METRICS.config_generation.set(number as i64);
        Ok(Reloaded {
            generation: number,
            hash,
            not_applied,
        })
    }

    async fn reload_and_report(&self, shutdown: &ShutdownWatch) {
        match self.reload(shutdown).await {
            Ok(done) => {
                METRICS.config_reloads.with_label_values(&["ok"]).inc();
                tracing::info!(
                    "config reloaded from {}: generation {}, sha256 {}",
                    self.path.display(),
                    done.generation,
                    done.hash
                );
                for change in done.not_applied {
                    tracing::warn!("not applied by reload, needs the binary upgrade (tollgate run -u): {change}");
                }
            }
            Err(problems) => {
                METRICS.config_reloads.with_label_values(&["refused"]).inc();
                tracing::error!(
                    "config reload refused, still serving the previous config; {} problem(s) in {}:",
                    problems.0.len(),
                    self.path.display()
                );
                for p in &problems.0 {
                    tracing::error!("{p}");
                }
            }
        }
    }
}

/// Settings that live in sockets, threads or the TLS listener itself: a reload cannot change
/// them, only the binary upgrade can. The new generation runs with the running values, so that
/// everything built from it agrees with what serves: a redirect to https names the port a TLS
/// listener really has, `/config` shows the client CA really asked for, and the next reload
/// compares against what runs, not against the last file. A file that only works with its own
/// listener settings (`redirect_https` with a `tls_listen` added in the same edit) is then
/// refused, like any config that cannot be applied. Returns the settings the file changed,
/// which the reload names as not applied.
fn keep_running_listeners(running: &Config, new: &mut Config) -> Vec<String> {
    // Client authentication exists only with a client CA: a `tls` section appearing without
    // one changes nothing the listener does.
    let client_auth = |c: &Config| {
        let tls = c.server.tls.as_ref()?;
        Some((tls.client_ca_file.clone()?, tls.client_auth))
    };
    let client_auth_changed = client_auth(running) != client_auth(new);
    let (o, n) = (&running.server, &mut new.server);
    let mut changed = Vec::new();
    keep(&mut changed, "server.listen", &o.listen, &mut n.listen);
    keep(
        &mut changed,
        "server.tls_listen",
        &o.tls_listen,
        &mut n.tls_listen,
    );
    keep(
        &mut changed,
        "server.admin_listen",
        &o.admin_listen,
        &mut n.admin_listen,
    );
    keep(&mut changed, "server.threads", &o.threads, &mut n.threads);
    keep(
        &mut changed,
        "server.work_stealing",
        &o.work_stealing,
        &mut n.work_stealing,
    );
    keep(&mut changed, "server.h2c", &o.h2c, &mut n.h2c);
    keep(
        &mut changed,
        "server.read_buffer",
        &o.read_buffer,
        &mut n.read_buffer,
    );
    keep(
        &mut changed,
        "server.max_connections",
        &o.max_connections,
        &mut n.max_connections,
    );
    keep(
        &mut changed,
        "server.header_read_timeout",
        &o.header_read_timeout,
        &mut n.header_read_timeout,
    );
    keep(
        &mut changed,
        "server.upstream_keepalive_pool",
        &o.upstream_keepalive_pool,
        &mut n.upstream_keepalive_pool,
    );
    if client_auth_changed {
        changed.push("server.tls.client_ca_file / client_auth".to_string());
    }
    if let (Some(o), Some(n)) = (&o.tls, &mut n.tls) {
        n.client_ca_file = o.client_ca_file.clone();
        n.client_auth = o.client_auth;
    }
    changed
}

/// `new` takes the running value; `what` is named when the file had another.
fn keep<T: PartialEq + Clone>(changed: &mut Vec<String>, what: &str, running: &T, new: &mut T) {
    if running != new {
        changed.push(what.to_string());
        *new = running.clone();
    }
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cannot watch SIGHUP, in-place reload is off: {e}");
                return;
            }
        };
        loop {
            tokio::select! {
                got = hangup.recv() => {
                    if got.is_none() {
                        return;
                    }
                    self.reload_and_report(&shutdown).await;
                }
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(server: &str) -> Config {
        Config::load_str(&format!(
            "server:\n{server}\nupstreams:\n  u: {{backends: [\"127.0.0.1:1\"]}}\nroutes:\n  - {{name: r, upstream: u}}\n"
        ))
        .expect("valid config")
    }

    #[test]
    fn a_reloaded_generation_keeps_the_running_listener_settings() {
        let old = config("  listen: [\"127.0.0.1:8080\"]\n  max_connections: 10");
        let mut new =
            config("  listen: [\"127.0.0.1:9090\"]\n  max_connections: 77\n  idle_timeout: 5s");
        let changed = keep_running_listeners(&old, &mut new);
        assert_eq!(changed, ["server.listen", "server.max_connections"]);
        assert_eq!(new.server.listen, ["127.0.0.1:8080"]);
        assert_eq!(new.server.max_connections, 10);
        assert_eq!(
            new.server.idle_timeout.0,
            std::time::Duration::from_secs(5),
            "the rest is new"
        );
    }

    #[test]
    fn listener_changes_are_named_as_needing_the_upgrade() {
        let old = config("  listen: [\"127.0.0.1:8080\"]\n  threads: 2");
        let mut same = config("  listen: [\"127.0.0.1:8080\"]\n  threads: 2\n  idle_timeout: 5s");
        assert!(keep_running_listeners(&old, &mut same).is_empty());
        let mut moved =
            config("  listen: [\"127.0.0.1:8081\"]\n  threads: 4\n  work_stealing: false");
        assert_eq!(
            keep_running_listeners(&old, &mut moved),
            ["server.listen", "server.threads", "server.work_stealing"]
        );
    }
}
