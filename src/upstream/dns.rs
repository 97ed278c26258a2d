//! Backends given by hostname (DESIGN.md "Live operations"): resolved before the pool takes
//! traffic, then again every `dns_refresh`, off the request path, with an async resolver
//! (hickory) that reads `/etc/hosts` first, then asks the system's name servers
//! (`/etc/resolv.conf`) or those of `server.resolver`.
//!
//! - Each address a name resolves to is a backend of the pool, with the name's weight. A names
//!   that resolves to A records uses those; AAAA records only when it has none.
//! - A new address joins rotation only after passing one health check (at once when the pool
//!   has none); until then `/upstreams` lists it as pending and it is probed again at the
//!   health-check interval.
//! - An address that is no longer in the answer leaves rotation: no new request goes to it,
//!   requests in flight finish, its idle connections are never reused.
//! - A failed lookup or an empty answer keeps the name's last good addresses (logged with the
//!   upstream, counted in `tollgate_dns_resolutions_total{upstream,result}`).
//! - Schedule: every `dns_refresh`, with a fresh resolver each round, so nothing is cached
//!   between rounds and TTLs neither stretch nor shorten it: `dns_refresh` alone is the bound
//!   on how stale an address can be (set it at or below the records' TTL). A fresh resolver
//!   also picks up edits of `/etc/hosts` and `/etc/resolv.conf`.
//! - A name that does not resolve when the gateway starts leaves the pool without its
//!   addresses (a pool with nothing else answers 503) until a later round resolves it;
//!   `check` warns about it rather than refusing the file (DNS may be down only for now).

use super::pool::Pool;
use crate::config::{BackendTarget, Config, Problem, ResolverConfig};
use crate::observability::metrics::METRICS;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts,
    ResolverConfig as HickoryConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A resolver for one round: `server.resolver`'s name servers, or the system's configuration.
pub fn resolver(cfg: Option<&ResolverConfig>) -> Result<TokioResolver, String> {
    let mut builder = match cfg {
        None => TokioResolver::builder_tokio()
            .map_err(|e| format!("cannot read the system resolver configuration: {e}"))?,
        Some(r) => {
            let servers = r
                .nameservers
                .iter()
                .filter_map(|ns| crate::config::parse_nameserver(ns).ok())
                .map(|ns| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = ns.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = ns.port();
                    NameServerConfig::new(ns.ip(), true, vec![udp, tcp])
                })
                .collect();
            let mut b = TokioResolver::builder_with_config(
                HickoryConfig::from_name_servers(servers),
                TokioRuntimeProvider::default(),
            );
            b.options_mut().timeout = r.timeout.0;
            b.options_mut().attempts = 2;
            b
        }
    };
    let options = builder.options_mut();
    options.ip_strategy = LookupIpStrategy::Ipv4thenIpv6;
    options.use_hosts_file = ResolveHosts::Always;
    builder
        .build()
        .map_err(|e| format!("cannot build a DNS resolver: {e}"))
}

/// The addresses of `host`, each with `port`, sorted; an empty answer is an error.
pub async fn lookup(
    resolver: &TokioResolver,
    host: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, Failure> {
    let answer = resolver
        .lookup_ip(host)
        .await
        .map_err(|e| Failure::Error(e.to_string()))?;
    let mut addrs: Vec<SocketAddr> = answer.iter().map(|ip| SocketAddr::new(ip, port)).collect();
    addrs.sort();
    addrs.dedup();
    if addrs.is_empty() {
        return Err(Failure::Empty);
    }
    Ok(addrs)
}

/// Why a name has no new addresses this round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    Error(String),
    Empty,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // hickory's messages for a name that does not exist say so themselves.
            Failure::Error(e) => f.write_str(e),
            Failure::Empty => f.write_str("the answer has no address"),
        }
    }
}

fn addr_list(addrs: &[SocketAddr]) -> String {
    let list: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    format!("[{}]", list.join(", "))
}

/// Resolve every name of `pool` once and record each good answer as the name's addresses;
/// a failure keeps the previous ones.
async fn resolve_round(pool: &Pool) {
    let resolver = match resolver(pool.resolver.as_ref()) {
        Ok(r) => r,
        Err(e) => {
            METRICS
                .dns_resolutions
                .with_label_values(&[pool.name.as_str(), "error"])
                .inc();
            tracing::warn!(
                "upstream {}: {e}; keeping the last good addresses",
                pool.name
            );
            return;
        }
    };
    let mut lookups = tokio::task::JoinSet::new();
    for (i, t) in pool.targets.iter().enumerate() {
        if let BackendTarget::Named { host, port } = &t.kind {
            let (resolver, host, port) = (resolver.clone(), host.clone(), *port);
            lookups.spawn(async move { (i, lookup(&resolver, &host, port).await) });
        }
    }
    while let Some(joined) = lookups.join_next().await {
        let Ok((i, result)) = joined else { continue };
        let configured = &pool.targets[i].configured;
        let result_label = match &result {
            Ok(_) => "ok",
            Err(Failure::Empty) => "empty",
            Err(Failure::Error(_)) => "error",
        };
        METRICS
            .dns_resolutions
            .with_label_values(&[pool.name.as_str(), result_label])
            .inc();
        let Ok(mut resolved) = pool.resolved.lock() else {
            return;
        };
        let Some(last) = resolved.get_mut(i) else {
            continue;
        };
        match result {
            Ok(addrs) if *last != addrs => {
                tracing::info!(
                    "upstream {}: {configured} resolves to {} (was {})",
                    pool.name,
                    addr_list(&addrs),
                    addr_list(last)
                );
                *last = addrs;
            }
            Ok(_) => {}
            Err(e) if last.is_empty() => tracing::warn!(
                "upstream {}: cannot resolve {configured}: {e}; it has no address yet, \
                 trying again in {}",
                pool.name,
                humantime::format_duration(pool.dns_refresh)
            ),
            Err(e) => tracing::warn!(
                "upstream {}: cannot resolve {configured}: {e}; keeping its last good \
                 addresses {}",
                pool.name,
                addr_list(last)
            ),
        }
    }
}

/// Bring the pool's rotation in line with its names' current addresses: gone addresses
/// leave, new ones join once they pass a health check. Returns the addresses still waiting
/// for a passing check.
async fn admit(pool: &Pool) -> Vec<SocketAddr> {
    let resolved = match pool.resolved.lock() {
        Ok(r) => r.clone(),
        Err(_) => return Vec::new(),
    };
    let wanted = pool.wanted(&resolved);
    let current = pool.members.snapshot();
    let new: Vec<(SocketAddr, usize)> = wanted
        .iter()
        .filter(|(a, _)| !current.contains_key(a))
        .copied()
        .collect();
    if new.is_empty() && wanted.len() == current.len() {
        return Vec::new();
    }
    // Until its probe passes, every new address counts as failed.
    let mut failed: HashSet<SocketAddr> = HashSet::new();
    if let Some(check) = &pool.check {
        failed.extend(new.iter().map(|(a, _)| *a));
        let mut probes = tokio::task::JoinSet::new();
        for (addr, i) in &new {
            let (check, addr) = (check.clone(), *addr);
            let host = super::transport::host_of(&pool.targets[*i].configured);
            probes.spawn(async move { (addr, check.probe_new(addr, &host).await) });
        }
        while let Some(joined) = probes.join_next().await {
            if let Ok((addr, Ok(()))) = joined {
                failed.remove(&addr);
            }
        }
    }
    let admitted: Vec<(SocketAddr, usize)> = wanted
        .iter()
        .filter(|(a, _)| !failed.contains(a))
        .copied()
        .collect();
    for (addr, _) in new.iter().filter(|(a, _)| !failed.contains(a)) {
        tracing::info!("upstream {}: {addr} joins rotation", pool.name);
    }
    for gone in current
        .keys()
        .filter(|a| !wanted.iter().any(|(w, _)| w == *a))
    {
        tracing::info!(
            "upstream {}: {gone} is no longer resolved; it leaves rotation and drains",
            pool.name
        );
    }
    if let Err(e) = pool.publish(&admitted).await {
        tracing::error!("upstream {}: cannot update its backends: {e}", pool.name);
    }
    pool.publish_health_gauges();
    failed.into_iter().collect()
}

/// The first resolution of every pool with names, concurrently, before they take traffic
/// (at start and for the new pools of a reload). The first health round that follows decides
/// which addresses are healthy, as for literal backends.
pub async fn first_resolution(pools: &[Arc<Pool>]) {
    let mut rounds = tokio::task::JoinSet::new();
    for pool in pools.iter().filter(|p| p.has_names()) {
        let pool = pool.clone();
        rounds.spawn(async move {
            resolve_round(&pool).await;
            let resolved = pool.resolved.lock().map(|r| r.clone()).unwrap_or_default();
            let wanted = pool.wanted(&resolved);
            if let Err(e) = pool.publish(&wanted).await {
                tracing::error!("upstream {}: cannot set its backends: {e}", pool.name);
            }
        });
    }
    while rounds.join_next().await.is_some() {}
}

/// Resolve a pool's names every `dns_refresh` until a reload retires it; addresses waiting
/// for their first passing health check are probed again at the health-check interval.
pub async fn refresh_loop(pool: Arc<Pool>) {
    if !pool.has_names() {
        return;
    }
    let reprobe = pool
        .health_check
        .as_ref()
        .map_or(pool.dns_refresh, |hc| hc.interval.0.min(pool.dns_refresh));
    let mut next_round = Instant::now() + pool.dns_refresh;
    let mut pending: Vec<SocketAddr> = Vec::new();
    loop {
        let until_round = next_round.saturating_duration_since(Instant::now());
        let wait = if pending.is_empty() {
            until_round
        } else {
            reprobe.min(until_round)
        };
        tokio::time::sleep(wait.max(Duration::from_millis(10))).await;
        if pool.retired.load(Ordering::Acquire) {
            return;
        }
        if Instant::now() >= next_round {
            resolve_round(&pool).await;
            next_round = Instant::now() + pool.dns_refresh;
        }
        let still = admit(&pool).await;
        for addr in still.iter().filter(|a| !pending.contains(a)) {
            tracing::warn!(
                "upstream {}: new address {addr} failed its first health check; it joins \
                 rotation once one passes",
                pool.name
            );
        }
        pending = still;
    }
}

/// `check`: resolve every backend name once, now. A name that does not resolve is a warning,
/// not a problem: `run` starts without its addresses and keeps trying.
pub fn check_names(config: &Config) -> Vec<Problem> {
    let named: Vec<(String, String, u16)> = config
        .upstreams
        .iter()
        .flat_map(|(name, u)| {
            u.backends.iter().enumerate().filter_map(move |(i, b)| {
                match BackendTarget::parse(b.addr()).ok()? {
                    BackendTarget::Named { host, port } => {
                        Some((format!("upstreams.{name}.backends[{i}]"), host, port))
                    }
                    BackendTarget::Literal(_) => None,
                }
            })
        })
        .collect();
    if named.is_empty() {
        return Vec::new();
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            return vec![Problem::new(
                "",
                format!("cannot resolve backend names: {e}"),
            )]
        }
    };
    runtime.block_on(async {
        let resolver = match resolver(config.server.resolver.as_ref()) {
            Ok(r) => r,
            Err(e) => return vec![Problem::new("server.resolver", e)],
        };
        let mut out = Vec::new();
        for (at, host, port) in named {
            if let Err(e) = lookup(&resolver, &host, port).await {
                out.push(Problem::new(
                    at,
                    format!(
                        "{host} does not resolve now ({e}); the gateway starts without its \
                         addresses and resolves it again every dns_refresh"
                    ),
                ));
            }
        }
        out
    })
}
