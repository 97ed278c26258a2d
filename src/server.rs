//! Assemble the Pingora server from a validated config: pools, health checks, the proxy
//! listener (gated on the first health round) and the admin listener.

use crate::admin::Admin;
use crate::config::Config;
use crate::drain::DrainExit;
use crate::listener::probe::ListenerProbe;
use crate::listener::{ConnectionLimits, GuardedApp};
use crate::observability::metrics::METRICS;
use crate::proxy::live::LiveProxy;
use crate::runtime::live::{Generation, Live};
use crate::runtime::reload::Reloader;
use crate::runtime::Runtime;
use crate::tls::{LiveCerts, Tls};
use crate::upgrade::SelfUpgrade;
use crate::upstream::HealthService;
use pingora::apps::HttpServerOptions;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::ListenerConfig;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use pingora::services::ServiceWithDependents;
use std::path::Path;
use std::sync::Arc;

/// Command-line switches that shape how the process runs (not what it serves).
#[derive(Debug, Clone, Copy, Default)]
pub struct RunFlags {
    pub daemon: bool,
    pub upgrade: bool,
}

/// Pingora's `ServerConf` from our `server` section.
pub fn server_conf(config: &Config, flags: RunFlags) -> ServerConf {
    let s = &config.server;
    ServerConf {
        daemon: flags.daemon,
        threads: s.threads,
        work_stealing: s.work_stealing,
        pid_file: s.pid_file.clone(),
        upgrade_sock: s.upgrade_sock.clone(),
        // Always set: Pingora's own default grace is 300 s. A drain normally ends well before
        // it (`drain`); this is the bound for a request that does not.
        grace_period_seconds: Some(whole_seconds_up(s.grace_period.0)),
        graceful_shutdown_timeout_seconds: Some(whole_seconds_up(s.graceful_shutdown_timeout.0)),
        // With `-d`, the parent waits until the daemon is serving, so a supervisor (systemd's
        // Type=forking) sees success only when the new process is really up.
        daemon_wait_for_ready: flags.daemon,
        upstream_keepalive_pool_size: s.upstream_keepalive_pool,
        // Pingora's own bound on attempts per request must not cut `retries` short: `retries`
        // + 1 attempts, plus one for its resend over a pooled connection the backend had closed.
        max_retries: config
            .upstreams
            .values()
            .map(|u| u.retries + 2)
            .max()
            .unwrap_or(0)
            .max(ServerConf::default().max_retries),
        ..ServerConf::default()
    }
}

/// Pingora counts these periods in whole seconds; rounding down would turn `500ms` into no
/// grace at all, and rounding up costs nothing now that a drain ends when it is done.
fn whole_seconds_up(d: std::time::Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Pingora's rustls listener settings: TLS 1.2 and 1.3 (Pingora's fixed range), ALPN h2 then
/// http/1.1, certificates from our SNI resolver, client certificates when configured.
fn tls_settings(tls: &Tls, resolver: Arc<LiveCerts>) -> Result<TlsSettings, String> {
    // The post-handshake callback counts handshakes and attaches a client certificate's
    // subject to the connection (see `tls::client_cert`).
    let observer = Box::new(crate::tls::client_cert::HandshakeObserver);
    let mut settings =
        TlsSettings::with_callbacks(observer).map_err(|e| format!("TLS listener: {e}"))?;
    settings.set_cert_resolver(resolver);
    if let Some(verifier) = &tls.client_verifier {
        settings.set_client_cert_verifier(verifier.clone());
    }
    settings.enable_h2();
    Ok(settings)
}

/// With `run -d`, bootstrap tells the waiting parent "ready" by SIGUSR1. Pingora 0.9 registers
/// the parent's SIGUSR1 listener only after forking, so a daemon whose first health round is
/// instant (a local backend) could signal before the parent listens, and the parent then waited
/// out its whole timeout (seen in a clean-clone CI run). A short pause closes that window.
struct ParentSettle;

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for ParentSettle {
    async fn start_with_ready_notifier(
        &self,
        _shutdown: pingora::server::ShutdownWatch,
        ready: pingora::services::ServiceReadyNotifier,
    ) {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        ready.notify_ready();
    }
}

/// A ready-to-run server around a built runtime. `extra` services (the demo backends) start
/// before health checks.
/// `source`: the config file, re-read on `SIGHUP`, and the text `config` was parsed from (none
/// for the demo's embedded config).
pub fn build(
    config: &Config,
    runtime: Runtime,
    flags: RunFlags,
    extra: Vec<Box<dyn ServiceWithDependents>>,
    source: Option<(&Path, &str)>,
) -> Result<Server, String> {
    let Runtime {
        pools,
        gateway,
        tls,
    } = runtime;
    let limit_sync = gateway.rate_limit_sync();
    let trace_export = gateway.trace_export();
    let draining = gateway.draining.clone();
    let text = source.map_or("", |(_, text)| text);
    let live = Live::new(Generation::new(
        gateway,
        pools.clone(),
        config.clone(),
        1,
        text.as_bytes(),
    ));
    METRICS.config_generation.set(1);
    let certs = tls
        .as_ref()
        .map(|t| Arc::new(LiveCerts::new(t.certificates.clone())));
    let mut reload_service = None;
    if let Some((path, _)) = source {
        let reloader = Reloader {
            live: live.clone(),
            path: path.to_path_buf(),
            certs: certs.clone(),
            draining,
        };
        let mut service = background_service("config reload", reloader);
        service.threads = Some(1);
        reload_service = Some(service);
    }

    let opt = Opt {
        upgrade: flags.upgrade,
        daemon: flags.daemon,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, server_conf(config, flags));

    // Built-in backends (the demo's) are listening services, which Pingora marks ready before
    // their sockets are bound: the first health round waits until they accept, or it would
    // find them down and the first second of traffic would get 503s.
    let extra_listen: Vec<String> = extra
        .iter()
        .filter_map(|s| s.listen_addresses())
        .flatten()
        .collect();
    let extra_handles = server.add_services(extra);
    // Only `demo` has such services: a plain `run` starts no probe (and no runtime for one).
    let extra_probe = (!extra_listen.is_empty()).then(|| {
        let mut probe =
            background_service("built-in backends probe", ListenerProbe::new(&extra_listen));
        probe.threads = Some(1);
        let handle = server.add_service(probe);
        for h in &extra_handles {
            handle.add_dependency(h);
        }
        handle
    });

    let health = background_service(
        "health checks",
        HealthService::new(pools.iter().cloned().collect()),
    );
    let health_handle = server.add_service(health);
    if let Some(sync) = limit_sync {
        server.add_service(background_service("rate limit sync", sync));
    }
    if let Some(export) = trace_export {
        let mut service =
            background_service("trace export", crate::otel::ExportService::new(export));
        service.threads = Some(1);
        server.add_service(service);
    }
    if let Some(probe) = &extra_probe {
        health_handle.add_dependency(probe);
    }

    // Bootstrap (taking the listening sockets over from an old process on upgrade, and telling a
    // waiting `-d` parent that we are up) runs as a service *after* the first health round and
    // *after* daemonising: the new process is known-good before the old one is asked to leave.
    let bootstrap = server.bootstrap_as_a_service();
    bootstrap.add_dependency(&health_handle);
    if flags.daemon {
        let settle = server.add_service(background_service("daemon parent settle", ParentSettle));
        bootstrap.add_dependency(&settle);
    }

    let limits = ConnectionLimits {
        max_connections: config.server.max_connections,
        header_read_timeout: config.server.header_read_timeout.0,
        h2c: config.server.h2c,
    };
    let mut http = pingora::proxy::http_proxy(&server.configuration, LiveProxy(live.clone()));
    let mut options = HttpServerOptions::default();
    options.h2c = config.server.h2c;
    // An HTTP/2 connection with no stream open closes after `idle_timeout`, as an idle
    // HTTP/1.1 keep-alive connection does (Pingora's default keeps it forever: ten thousand
    // idle h2 connections would hold every `max_connections` slot). Read at start: a reload
    // changes it for HTTP/1.1 only.
    options.h2_idle_timeout = Some(config.server.idle_timeout.0);
    http.server_options = Some(options);
    let app = GuardedApp::new(http, limits);
    // Ends a graceful stop once nothing is in flight, instead of after all of `grace_period`.
    let mut drain = background_service("drain exit", DrainExit::new(app.state()));
    drain.threads = Some(1);
    server.add_service(drain);
    let mut proxy = Service::new("tollgate proxy".to_string(), app);
    let buffers = L4BufferSettings::default().read(config.server.read_buffer.0 as usize);
    for addr in &config.server.listen {
        proxy.add_listener(ListenerConfig::tcp(addr.as_str()).l4_buffer(buffers));
    }
    if let (Some(tls), Some(certs)) = (&tls, &certs) {
        tls.publish_expiries();
        for addr in &config.server.tls_listen {
            let endpoint = ListenerConfig::tcp(addr.as_str()).l4_buffer(buffers);
            proxy.add_listener(endpoint.tls(tls_settings(tls, certs.clone())?));
        }
    }
    let proxy_handle = server.add_service(proxy);
    // No traffic before the first health round (a backend dead at start gets no request) and
    // before the inherited sockets are in place.
    proxy_handle.add_dependency(&health_handle);
    proxy_handle.add_dependency(&bootstrap);

    // `/ready` must not say ready before the public port accepts (see `listener::probe`).
    let probe = server.add_service(background_service(
        "listener probe",
        ListenerProbe::new(&config.server.listen),
    ));
    probe.add_dependency(&proxy_handle);

    let mut admin = Service::new("tollgate admin".to_string(), Admin::new(live.clone()));
    admin.threads = Some(1);
    admin.add_tcp(&config.server.admin_listen);
    server.add_service(admin).add_dependency(&probe);
    // SIGHUP reloads and SIGUSR2 upgrades only once the first generation is serving.
    if let Some(reload) = reload_service {
        server.add_service(reload).add_dependency(&probe);
    }
    if let (Some((path, _)), Ok(exe)) = (source, std::env::current_exe()) {
        let upgrade = SelfUpgrade {
            exe,
            config: path.to_path_buf(),
        };
        let mut service = background_service("self upgrade", upgrade);
        service.threads = Some(1);
        server.add_service(service).add_dependency(&probe);
    }

    Ok(server)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn shutdown_periods_round_up_to_whole_seconds() {
        assert_eq!(whole_seconds_up(Duration::ZERO), 0);
        assert_eq!(whole_seconds_up(Duration::from_millis(500)), 1);
        assert_eq!(whole_seconds_up(Duration::from_secs(30)), 30);
        assert_eq!(whole_seconds_up(Duration::from_millis(30_001)), 31);
    }

    #[test]
    fn pingora_gets_a_grace_period_even_when_the_config_names_none() {
        let config = Config::load_str(
            "upstreams:\n  u: {backends: [\"127.0.0.1:1\"]}\n\
             routes:\n  - {name: r, match: {path_prefix: /}, upstream: u}\n",
        )
        .expect("valid config");
        let conf = server_conf(&config, RunFlags::default());
        assert_eq!(conf.grace_period_seconds, Some(30));
        assert_eq!(conf.graceful_shutdown_timeout_seconds, Some(5));
    }
}
