//! Semantic checks that serde cannot express. Every check pushes a [`Problem`] and carries on,
//! so one `tollgate check` lists everything wrong with a file.

use super::{Config, HeaderOps, Problem, RouteConfig, UpstreamConfig};
use std::collections::HashSet;
use std::net::SocketAddr;

/// HTTP methods a route may match on (the router knows each of them).
pub const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
];

pub(super) fn validate(config: &Config) -> Vec<Problem> {
    let mut out = Vec::new();
    check_server(config, &mut out);
    for (name, upstream) in &config.upstreams {
        check_upstream(name, upstream, &mut out);
    }
    for (name, limit) in &config.rate_limits {
        check_rate_limit(name, limit, &mut out);
    }
    check_redis(config, &mut out);
    if let Some(tracing) = &config.tracing {
        super::trace_export::check(tracing, &mut out);
    }
    if config.routes.is_empty() {
        out.push(Problem::new("routes", "at least one route is required"));
    }
    let mut names = HashSet::new();
    for (i, route) in config.routes.iter().enumerate() {
        let at = format!("routes[{i}]");
        if !names.insert(route.name.as_str()) {
            out.push(Problem::new(
                format!("{at}.name"),
                format!("duplicate route name {:?}", route.name),
            ));
        }
        check_route(&at, route, config, &mut out);
    }
    out
}

/// Limits on hostile clients: zero would refuse everything (or, for timeouts, nothing).
fn check_client_limits(server: &super::ServerConfig, out: &mut Vec<Problem>) {
    if server.read_buffer.0 != 0 && !(1024..=1024 * 1024).contains(&server.read_buffer.0) {
        out.push(Problem::new(
            "server.read_buffer",
            "must be 0 (no buffer) or between 1KiB and 1MiB",
        ));
    }
    if server.max_connections == 0 {
        out.push(Problem::new("server.max_connections", "must be at least 1"));
    }
    if server.max_headers == 0 {
        out.push(Problem::new("server.max_headers", "must be at least 1"));
    }
    // Pingora itself refuses heads over 1 MiB with 400: a larger setting would never apply.
    if !(1024..=1024 * 1024).contains(&server.max_header_bytes.0) {
        out.push(Problem::new(
            "server.max_header_bytes",
            "must be between 1KiB and 1MiB",
        ));
    }
    if server.header_read_timeout.0.is_zero() {
        out.push(Problem::new("server.header_read_timeout", "must be > 0"));
    }
    // Pingora counts keep-alive in whole seconds.
    if server.idle_timeout.0.as_secs() == 0 {
        out.push(Problem::new("server.idle_timeout", "must be at least 1s"));
    }
}

fn check_server(config: &Config, out: &mut Vec<Problem>) {
    let server = &config.server;
    if let Some(store) = &server.cache {
        super::edge::check_store(store, out);
    }
    if server.listen.is_empty() {
        out.push(Problem::new(
            "server.listen",
            "at least one address is required",
        ));
    }
    let mut listen = Vec::new();
    for (i, addr) in server.listen.iter().enumerate() {
        match addr.parse::<SocketAddr>() {
            Ok(a) => listen.push(a),
            Err(_) => out.push(Problem::new(
                format!("server.listen[{i}]"),
                format!("invalid socket address {addr:?}; write IP:PORT such as 0.0.0.0:8080"),
            )),
        }
    }
    for (i, addr) in server.tls_listen.iter().enumerate() {
        match addr.parse::<SocketAddr>() {
            Ok(a) if listen.contains(&a) => out.push(Problem::new(
                format!("server.tls_listen[{i}]"),
                format!("{addr} is also in server.listen; one port speaks one protocol"),
            )),
            Ok(a) => listen.push(a),
            Err(_) => out.push(Problem::new(
                format!("server.tls_listen[{i}]"),
                format!("invalid socket address {addr:?}; write IP:PORT such as 0.0.0.0:8443"),
            )),
        }
    }
    check_tls(server, out);
    match server.admin_listen.parse::<SocketAddr>() {
        Ok(admin) => {
            if listen.contains(&admin) {
                out.push(Problem::new(
                    "server.admin_listen",
                    "must differ from every server.listen address: admin endpoints are never public",
                ));
            }
        }
        Err(_) => out.push(Problem::new(
            "server.admin_listen",
            format!(
                "invalid socket address {:?}; write IP:PORT such as 127.0.0.1:9901",
                server.admin_listen
            ),
        )),
    }
    if server.threads == 0 {
        out.push(Problem::new("server.threads", "must be at least 1"));
    }
    check_client_limits(server, out);
    check_resolver(config, out);
    let log = server.access_log.as_str();
    if !(log == "stdout" || log == "off" || log.starts_with('/')) {
        out.push(Problem::new(
            "server.access_log",
            format!("must be stdout, off or an absolute file path, not {log:?}"),
        ));
    }
    // `run -d` changes directory to `/` when it daemonises: relative paths would move.
    for (field, path) in [
        ("pid_file", &server.pid_file),
        ("upgrade_sock", &server.upgrade_sock),
    ] {
        if !path.starts_with('/') {
            out.push(Problem::new(
                format!("server.{field}"),
                format!("must be an absolute path, not {path:?}"),
            ));
        }
    }
}

/// The TLS section's own consistency; certificate files are checked when they are loaded
/// (`crate::tls`).
fn check_tls(server: &super::ServerConfig, out: &mut Vec<Problem>) {
    let certificates = server.tls.as_ref().map_or(0, |t| t.certificates.len());
    if !server.tls_listen.is_empty() && certificates == 0 {
        out.push(Problem::new(
            "server.tls.certificates",
            "tls_listen needs at least one certificate",
        ));
    }
    if server.redirect_https && server.tls_listen.is_empty() {
        out.push(Problem::new(
            "server.redirect_https",
            "needs a tls_listen address to redirect to",
        ));
    }
    let Some(tls) = &server.tls else {
        return;
    };
    if tls.min_version != "1.2" {
        out.push(Problem::new(
            "server.tls.min_version",
            format!(
                "{:?} is not supported: this build offers TLS 1.2 and 1.3 (write \"1.2\")",
                tls.min_version
            ),
        ));
    }
    let defaults: Vec<usize> = (0..tls.certificates.len())
        .filter(|&i| tls.certificates[i].default)
        .collect();
    if let [_, second, ..] = defaults[..] {
        out.push(Problem::new(
            format!("server.tls.certificates[{second}].default"),
            format!("certificate {} is already the default", defaults[0]),
        ));
    }
    if tls.client_auth == super::tls::ClientAuth::Required && tls.client_ca_file.is_none() {
        out.push(Problem::new(
            "server.tls.client_auth",
            "required needs client_ca_file",
        ));
    }
}

/// Post-send retries: only statuses that say "try elsewhere", a sane backoff and budget.
fn check_retries(at: &str, upstream: &UpstreamConfig, out: &mut Vec<Problem>) {
    if let Some(r) = &upstream.retry_on {
        for (i, status) in r.statuses.iter().enumerate() {
            if !matches!(status, 408 | 429 | 500..=599) {
                out.push(Problem::new(
                    format!("{at}.retry_on.statuses[{i}]"),
                    format!("{status} is not retryable: use 408, 429 or a 5xx status"),
                ));
            }
        }
        if r.max_backoff.0 < r.backoff.0 {
            out.push(Problem::new(
                format!("{at}.retry_on.max_backoff"),
                "must be at least backoff",
            ));
        }
        if upstream.retries == 0 {
            out.push(Problem::new(
                format!("{at}.retry_on"),
                "has no effect with retries: 0 (retries bounds every kind of retry)",
            ));
        }
    }
    let budget = &upstream.retry_budget;
    if !(0.0..=1.0).contains(&budget.ratio) {
        out.push(Problem::new(
            format!("{at}.retry_budget.ratio"),
            "must be in [0, 1] (0.2 = retries add at most 20% load)",
        ));
    }
}

fn check_upstream(name: &str, upstream: &UpstreamConfig, out: &mut Vec<Problem>) {
    let at = format!("upstreams.{name}");
    if upstream.backends.is_empty() {
        out.push(Problem::new(
            format!("{at}.backends"),
            "at least one backend is required",
        ));
    }
    for (i, backend) in upstream.backends.iter().enumerate() {
        if let Err(msg) = BackendTarget::parse(backend.addr()) {
            out.push(Problem::new(format!("{at}.backends[{i}]"), msg));
        }
        if backend.weight() == 0 {
            out.push(Problem::new(
                format!("{at}.backends[{i}].weight"),
                "must be at least 1",
            ));
        }
    }
    if upstream.dns_refresh.0.is_zero() {
        out.push(Problem::new(format!("{at}.dns_refresh"), "must be > 0"));
    }
    if upstream.connect_timeout.0.is_zero() {
        out.push(Problem::new(format!("{at}.connect_timeout"), "must be > 0"));
    }
    if upstream.read_timeout.0.is_zero() {
        out.push(Problem::new(format!("{at}.read_timeout"), "must be > 0"));
    }
    if let Some(cb) = &upstream.circuit_breaker {
        if !(cb.error_ratio > 0.0 && cb.error_ratio <= 1.0) {
            out.push(Problem::new(
                format!("{at}.circuit_breaker.error_ratio"),
                "must be in (0, 1]",
            ));
        }
        if cb.min_requests == 0 {
            out.push(Problem::new(
                format!("{at}.circuit_breaker.min_requests"),
                "must be at least 1",
            ));
        }
        if cb.window.0.is_zero() {
            out.push(Problem::new(
                format!("{at}.circuit_breaker.window"),
                "must be > 0",
            ));
        }
        if cb.open_for.0.is_zero() {
            out.push(Problem::new(
                format!("{at}.circuit_breaker.open_for"),
                "must be > 0",
            ));
        }
    }
    check_retries(&at, upstream, out);
    check_transport(&at, upstream, out);
    if let Some(ph) = &upstream.passive_health {
        if ph.consecutive_failures == 0 {
            out.push(Problem::new(
                format!("{at}.passive_health.consecutive_failures"),
                "must be at least 1",
            ));
        }
        if ph.base_ejection.0.is_zero() {
            out.push(Problem::new(
                format!("{at}.passive_health.base_ejection"),
                "must be > 0",
            ));
        }
        if ph.max_ejection.0 < ph.base_ejection.0 {
            out.push(Problem::new(
                format!("{at}.passive_health.max_ejection"),
                "must be at least base_ejection",
            ));
        }
    }
    if let Some(hc) = &upstream.health_check {
        if !hc.path.starts_with('/') {
            out.push(Problem::new(
                format!("{at}.health_check.path"),
                "must start with \"/\"",
            ));
        }
        if hc.interval.0.is_zero() {
            out.push(Problem::new(
                format!("{at}.health_check.interval"),
                "must be > 0",
            ));
        }
        if hc.timeout.0.is_zero() {
            out.push(Problem::new(
                format!("{at}.health_check.timeout"),
                "must be > 0",
            ));
        }
        if hc.healthy_threshold == 0 {
            out.push(Problem::new(
                format!("{at}.health_check.healthy_threshold"),
                "must be at least 1",
            ));
        }
        if hc.unhealthy_threshold == 0 {
            out.push(Problem::new(
                format!("{at}.health_check.unhealthy_threshold"),
                "must be at least 1",
            ));
        }
    }
}

/// `tls` and `protocol` must agree, and a client certificate comes with its key. The files
/// themselves are read when the runtime is built (`upstream::transport`).
fn check_transport(at: &str, upstream: &UpstreamConfig, out: &mut Vec<Problem>) {
    use super::upstream_transport::UpstreamProtocol;
    match (upstream.protocol, &upstream.tls) {
        (UpstreamProtocol::H2, None) => out.push(Problem::new(
            format!("{at}.protocol"),
            "h2 is HTTP/2 over TLS and needs tls: {...} (cleartext HTTP/2 is h2c)",
        )),
        (UpstreamProtocol::H2c, Some(_)) => out.push(Problem::new(
            format!("{at}.protocol"),
            "h2c is cleartext HTTP/2 and cannot be combined with tls (HTTP/2 over TLS is h2)",
        )),
        _ => {}
    }
    let Some(tls) = &upstream.tls else {
        return;
    };
    match (&tls.client_cert_file, &tls.client_key_file) {
        (Some(_), None) => out.push(Problem::new(
            format!("{at}.tls.client_key_file"),
            "client_cert_file needs its client_key_file",
        )),
        (None, Some(_)) => out.push(Problem::new(
            format!("{at}.tls.client_cert_file"),
            "client_key_file needs its client_cert_file",
        )),
        _ => {}
    }
    if let Some(sni) = &tls.sni {
        let ip = sni.parse::<std::net::IpAddr>().is_ok();
        if (!ip && !valid_host_pattern(sni)) || sni.starts_with("*.") {
            out.push(Problem::new(
                format!("{at}.tls.sni"),
                format!("invalid server name {sni:?}; write a DNS name such as billing.internal"),
            ));
        }
    }
    if !tls.verify && tls.ca_file.is_some() {
        out.push(Problem::new(
            format!("{at}.tls.ca_file"),
            "has no effect with verify: false (nothing is verified)",
        ));
    }
}

/// Where a configured backend is: an IP literal, or a hostname that is resolved (and
/// re-resolved every `dns_refresh`) when the pool runs. Validation only checks the spelling:
/// whether a name resolves is a warning of `check` (`upstream::dns`), never a refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendTarget {
    Literal(SocketAddr),
    Named { host: String, port: u16 },
}

impl BackendTarget {
    pub fn parse(addr: &str) -> Result<BackendTarget, String> {
        if let Ok(a) = addr.parse::<SocketAddr>() {
            return Ok(BackendTarget::Literal(a));
        }
        let bad = || format!("invalid backend address {addr:?}; write IP:PORT or HOST:PORT");
        let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
        let port = port.parse::<u16>().map_err(|_| bad())?;
        let host = host.strip_suffix('.').unwrap_or(host);
        if port == 0 || host.starts_with("*.") || !valid_host_pattern(host) {
            return Err(bad());
        }
        Ok(BackendTarget::Named {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

/// `server.resolver.nameservers[i]`: `IP` or `IP:PORT`.
pub fn parse_nameserver(text: &str) -> Result<SocketAddr, String> {
    text.parse::<SocketAddr>()
        .or_else(|_| {
            text.parse::<std::net::IpAddr>()
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .map_err(|_| format!("invalid name server {text:?}; write IP or IP:PORT"))
}

fn check_resolver(config: &Config, out: &mut Vec<Problem>) {
    let Some(r) = &config.server.resolver else {
        return;
    };
    if r.nameservers.is_empty() {
        out.push(Problem::new(
            "server.resolver.nameservers",
            "at least one name server is required (or drop resolver: to use the system's)",
        ));
    }
    for (i, ns) in r.nameservers.iter().enumerate() {
        if let Err(e) = parse_nameserver(ns) {
            out.push(Problem::new(format!("server.resolver.nameservers[{i}]"), e));
        }
    }
    if r.timeout.0.is_zero() {
        out.push(Problem::new("server.resolver.timeout", "must be > 0"));
    }
}

fn check_route(at: &str, route: &RouteConfig, config: &Config, out: &mut Vec<Problem>) {
    if route.name.is_empty() {
        out.push(Problem::new(format!("{at}.name"), "must not be empty"));
    }
    check_route_upstreams(at, route, config, out);
    let m = &route.matcher;
    if !m.path_prefix.starts_with('/') {
        out.push(Problem::new(
            format!("{at}.match.path_prefix"),
            "must start with \"/\"",
        ));
    } else if m.path_prefix.contains("//")
        || m.path_prefix.split('/').any(|s| s == "." || s == "..")
    {
        out.push(Problem::new(
            format!("{at}.match.path_prefix"),
            "must be a normalised path (no \"//\", \".\" or \"..\" segments)",
        ));
    }
    if let Some(host) = &m.host {
        if !valid_host_pattern(host) {
            out.push(Problem::new(
                format!("{at}.match.host"),
                format!("invalid host {host:?}; write api.example.com or *.example.com"),
            ));
        }
    }
    for (i, method) in m.methods.iter().enumerate() {
        if !METHODS.contains(&method.as_str()) {
            out.push(Problem::new(
                format!("{at}.match.methods[{i}]"),
                format!(
                    "unknown HTTP method {method:?}; expected one of GET HEAD POST PUT PATCH DELETE OPTIONS TRACE CONNECT"
                ),
            ));
        }
    }
    for (name, cond) in &m.headers {
        let path = format!("{at}.match.headers.{name}");
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            out.push(Problem::new(
                path.clone(),
                format!("invalid header name {name:?}"),
            ));
        }
        check_condition_regex(&path, cond, out);
    }
    for (name, cond) in &m.query {
        let path = format!("{at}.match.query.{name}");
        if name.is_empty() {
            out.push(Problem::new(
                path.clone(),
                "query parameter name must not be empty",
            ));
        }
        check_condition_regex(&path, cond, out);
    }
    if route.strip_prefix && route.rewrite_prefix.is_some() {
        out.push(Problem::new(
            at.to_string(),
            "strip_prefix and rewrite_prefix are mutually exclusive",
        ));
    }
    if let Some(p) = &route.rewrite_prefix {
        if !p.starts_with('/') {
            out.push(Problem::new(
                format!("{at}.rewrite_prefix"),
                "must start with \"/\"",
            ));
        }
    }
    if let Some(auth) = &route.auth {
        check_route_auth(at, auth, config, out);
    }
    if let Some(limits) = &route.rate_limit {
        let single = matches!(limits, super::auth::StringOrList::One(_));
        for (j, name) in limits.to_vec().iter().enumerate() {
            if !config.rate_limits.contains_key(name) {
                let hint = did_you_mean(name, config.rate_limits.keys().map(String::as_str));
                let path = if single {
                    format!("{at}.rate_limit")
                } else {
                    format!("{at}.rate_limit[{j}]")
                };
                out.push(Problem::new(
                    path,
                    format!("no rate limit named {name:?}{hint}"),
                ));
            }
        }
    }
    super::edge::check(at, route, config.server.cache.as_ref(), out);
    check_header_ops(
        &format!("{at}.request_headers"),
        &route.request_headers,
        out,
    );
    check_header_ops(
        &format!("{at}.response_headers"),
        &route.response_headers,
        out,
    );
}

/// `backend: redis` needs the `redis:` section, and the section must be usable.
fn check_redis(config: &Config, out: &mut Vec<Problem>) {
    use super::rate_limit::{Backend, SyncMode};
    for (name, limit) in &config.rate_limits {
        if limit.backend == Backend::Redis && config.redis.is_none() {
            out.push(Problem::new(
                format!("rate_limits.{name}.backend"),
                "backend: redis needs a top-level redis: section (url, ...)",
            ));
        }
        if limit.backend == Backend::Local && limit.sync == SyncMode::Batched {
            out.push(Problem::new(
                format!("rate_limits.{name}.sync"),
                "sync applies to backend: redis only",
            ));
        }
    }
    let Some(redis) = &config.redis else {
        return;
    };
    if redis.pool_size == 0 || redis.pool_size > 64 {
        out.push(Problem::new("redis.pool_size", "must be between 1 and 64"));
    }
    if redis.timeout.0.is_zero() {
        out.push(Problem::new("redis.timeout", "must be > 0"));
    }
    if redis.sync_interval.0 < std::time::Duration::from_millis(10) {
        out.push(Problem::new("redis.sync_interval", "must be at least 10ms"));
    }
    if redis.key_prefix.is_empty() || redis.key_prefix.contains(char::is_whitespace) {
        out.push(Problem::new(
            "redis.key_prefix",
            "must be non-empty, without whitespace",
        ));
    }
}

fn check_rate_limit(
    name: &str,
    limit: &super::rate_limit::RateLimitConfig,
    out: &mut Vec<Problem>,
) {
    let at = format!("rate_limits.{name}");
    if limit.requests == 0 {
        out.push(Problem::new(format!("{at}.requests"), "must be at least 1"));
    } else if limit.requests > crate::rate_limit::sliding::MAX_COUNT {
        // The sketch's counters saturate there; a larger limit could never refuse.
        out.push(Problem::new(
            format!("{at}.requests"),
            format!("must be at most {}", crate::rate_limit::sliding::MAX_COUNT),
        ));
    }
    let per = limit.per.0;
    if per < std::time::Duration::from_secs(1) || per > std::time::Duration::from_secs(86_400) {
        out.push(Problem::new(
            format!("{at}.per"),
            "must be between 1s and 1d",
        ));
    } else if per.subsec_nanos() != 0 {
        out.push(Problem::new(
            format!("{at}.per"),
            "must be a whole number of seconds",
        ));
    }
    if limit.expected_clients == 0 {
        out.push(Problem::new(
            format!("{at}.expected_clients"),
            "must be at least 1",
        ));
    }
}

fn check_route_auth(
    at: &str,
    auth: &super::auth::RouteAuthConfig,
    config: &Config,
    out: &mut Vec<Problem>,
) {
    if auth.jwt.is_none() && auth.api_key.is_none() && !auth.mtls {
        out.push(Problem::new(
            format!("{at}.auth"),
            "needs jwt: <provider>, api_key: <provider> and/or mtls: true",
        ));
    }
    let client_ca = config
        .server
        .tls
        .as_ref()
        .and_then(|t| t.client_ca_file.as_ref());
    if auth.mtls && (client_ca.is_none() || config.server.tls_listen.is_empty()) {
        out.push(Problem::new(
            format!("{at}.auth.mtls"),
            "needs a tls_listen address and server.tls.client_ca_file to verify client certificates with",
        ));
    }
    if let Some(name) = &auth.jwt {
        if !config.auth.jwt.contains_key(name) {
            let hint = did_you_mean(name, config.auth.jwt.keys().map(String::as_str));
            out.push(Problem::new(
                format!("{at}.auth.jwt"),
                format!("no auth.jwt provider named {name:?}{hint}"),
            ));
        }
    }
    if let Some(name) = &auth.api_key {
        if !config.auth.api_keys.contains_key(name) {
            let hint = did_you_mean(name, config.auth.api_keys.keys().map(String::as_str));
            out.push(Problem::new(
                format!("{at}.auth.api_key"),
                format!("no auth.api_keys provider named {name:?}{hint}"),
            ));
        }
    }
}

fn check_header_ops(at: &str, ops: &HeaderOps, out: &mut Vec<Problem>) {
    for (kind, map) in [("add", &ops.add), ("set", &ops.set)] {
        for (name, value) in map {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                out.push(Problem::new(
                    format!("{at}.{kind}.{name}"),
                    "invalid header name",
                ));
            }
            if http::HeaderValue::from_str(value).is_err() {
                out.push(Problem::new(
                    format!("{at}.{kind}.{name}"),
                    "invalid header value",
                ));
            }
        }
    }
    for (i, name) in ops.remove.iter().enumerate() {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            out.push(Problem::new(
                format!("{at}.remove[{i}]"),
                format!("invalid header name {name:?}"),
            ));
        }
    }
}

/// `upstream` xor `split`; every name known; a split's weights must give some side a share.
fn check_route_upstreams(at: &str, route: &RouteConfig, config: &Config, out: &mut Vec<Problem>) {
    match (&route.upstream, &route.split) {
        (Some(_), Some(_)) => out.push(Problem::new(
            at.to_string(),
            "upstream and split are mutually exclusive; list the upstream as a side of split",
        )),
        (None, None) => out.push(Problem::new(
            at.to_string(),
            "one of upstream or split is required",
        )),
        (None, Some(sides)) => {
            if sides.is_empty() {
                out.push(Problem::new(
                    format!("{at}.split"),
                    "at least one side is required",
                ));
            } else if sides.iter().map(|s| u64::from(s.weight)).sum::<u64>() == 0 {
                out.push(Problem::new(
                    format!("{at}.split"),
                    "weights sum to zero; at least one side needs a positive weight",
                ));
            }
        }
        (Some(_), None) => {}
    }
    if route.split.is_none() && route.split_by.is_some() {
        out.push(Problem::new(
            format!("{at}.split_by"),
            "only applies with split",
        ));
    }
    if let Err(why) = super::split::SplitBy::parse(route.split_by.as_deref()) {
        out.push(Problem::new(format!("{at}.split_by"), why));
    }
    if let Some(m) = &route.mirror {
        check_mirror(at, m, config, out);
    }
    for (path, name) in route.upstream_refs() {
        if !config.upstreams.contains_key(name) {
            let hint = did_you_mean(name, config.upstreams.keys().map(String::as_str));
            out.push(Problem::new(
                format!("{at}.{path}"),
                format!("no upstream named {name:?}{hint}"),
            ));
        }
    }
}

/// A mirror needs a known plain HTTP/1.1 upstream, a percentage and room for one copy.
fn check_mirror(
    at: &str,
    m: &super::mirror::MirrorConfig,
    config: &Config,
    out: &mut Vec<Problem>,
) {
    use super::upstream_transport::UpstreamProtocol;
    match config.upstreams.get(&m.upstream) {
        None => {
            let hint = did_you_mean(&m.upstream, config.upstreams.keys().map(String::as_str));
            out.push(Problem::new(
                format!("{at}.mirror.upstream"),
                format!("no upstream named {:?}{hint}", m.upstream),
            ));
        }
        Some(u) if u.tls.is_some() || u.protocol != UpstreamProtocol::H1 => {
            out.push(Problem::new(
                format!("{at}.mirror.upstream"),
                "a mirror upstream must be plain HTTP/1.1 (no tls, protocol h1)",
            ));
        }
        Some(_) => {}
    }
    if !(0.0..=100.0).contains(&m.percent) {
        out.push(Problem::new(
            format!("{at}.mirror.percent"),
            "must be between 0 and 100",
        ));
    }
    if m.max_concurrent == 0 {
        out.push(Problem::new(
            format!("{at}.mirror.max_concurrent"),
            "must be at least 1",
        ));
    }
}

/// A `{regex: ...}` condition must compile (the router compiles it again, once, at start).
fn check_condition_regex(at: &str, cond: &super::matching::ValueMatch, out: &mut Vec<Problem>) {
    if let Some(pattern) = cond.regex() {
        if let Err(e) = regex::bytes::Regex::new(pattern) {
            let first = e.to_string();
            let why = first.lines().last().unwrap_or("invalid pattern").trim();
            out.push(Problem::new(
                format!("{at}.regex"),
                format!("invalid regex {pattern:?}: {why}"),
            ));
        }
    }
}

/// A DNS name, or `*.` and one: labels of letters, digits and `-`. Route hosts, upstream
/// `sni`, CORS origins and server certificates' `sni` entries all take this spelling.
pub(crate) fn valid_host_pattern(host: &str) -> bool {
    let name = host.strip_prefix("*.").unwrap_or(host);
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// ` (did you mean "x"?)` when a known name is close to the typo, else nothing.
fn did_you_mean<'a>(wanted: &str, known: impl Iterator<Item = &'a str>) -> String {
    closest(wanted, known)
        .map(|s| format!(" (did you mean {s:?}?)"))
        .unwrap_or_default()
}

/// The known name closest to a typo, if any is close enough to be a plausible intent.
fn closest<'a>(wanted: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    known
        .map(|k| (strsim::damerau_levenshtein(wanted, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    fn problems(yaml: &str) -> Vec<String> {
        match Config::load_str(yaml) {
            Ok(_) => Vec::new(),
            Err(p) => p.0.iter().map(|p| p.to_string()).collect(),
        }
    }

    const BASE: &str = "upstreams:\n  orders:\n    backends: [\"127.0.0.1:4001\"]\n";

    #[test]
    fn split_problems_have_their_paths() {
        let yaml = format!(
            "{BASE}routes:\n  - {{name: a, upstream: orders, split: [{{upstream: orders, weight: 1}}]}}\n  - {{name: b, split: [{{upstream: orders, weight: 0}}, {{upstream: ordrs, weight: 0}}], split_by: cookie}}\n  - {{name: c}}\n"
        );
        let p = problems(&yaml);
        assert_eq!(
            p,
            vec![
                "routes[0]: upstream and split are mutually exclusive; list the upstream as a side of split",
                "routes[1].split: weights sum to zero; at least one side needs a positive weight",
                "routes[1].split_by: unknown split_by \"cookie\"; expected random, consumer, client_ip or header:<Name>",
                "routes[1].split[1].upstream: no upstream named \"ordrs\" (did you mean \"orders\"?)",
                "routes[2]: one of upstream or split is required",
            ]
        );
    }

    #[test]
    fn bad_condition_regex_and_header_name_are_refused_with_their_paths() {
        let yaml = format!(
            "{BASE}routes:\n  - {{name: a, upstream: orders, match: {{headers: {{X-V: {{regex: \"v(\"}}, \"bad name\": x}}, query: {{q: {{regex: \"[\"}}}}}}}}\n"
        );
        let p = problems(&yaml);
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(
            p[0].starts_with("routes[0].match.headers.X-V.regex: invalid regex"),
            "{p:?}"
        );
        assert!(
            p[1].starts_with("routes[0].match.headers.bad name: invalid header name"),
            "{p:?}"
        );
        assert!(
            p[2].starts_with("routes[0].match.query.q.regex: invalid regex"),
            "{p:?}"
        );
    }

    #[test]
    fn dangling_upstream_suggests_the_closest_name() {
        let yaml = format!(
            "{BASE}routes:\n  - {{name: a, upstream: orders}}\n  - {{name: b, upstream: orders}}\n  - {{name: c, upstream: ordrs}}\n"
        );
        assert_eq!(
            problems(&yaml),
            vec![r#"routes[2].upstream: no upstream named "ordrs" (did you mean "orders"?)"#]
        );
    }

    #[test]
    fn collects_every_problem() {
        let yaml = format!(
            "{BASE}routes:\n  - {{name: a, upstream: nope, match: {{path_prefix: x}}}}\n  - {{name: a, upstream: orders, match: {{methods: [GETT]}}}}\n"
        );
        let p = problems(&yaml);
        assert_eq!(p.len(), 4, "{p:?}");
        assert!(p[0].starts_with("routes[0].upstream: no upstream named \"nope\""));
        assert_eq!(p[1], "routes[0].match.path_prefix: must start with \"/\"");
        assert_eq!(p[2], "routes[1].name: duplicate route name \"a\"");
        assert!(p[3].starts_with("routes[1].match.methods[0]: unknown HTTP method \"GETT\""));
    }

    #[test]
    fn shape_errors_name_the_yaml_path() {
        let yaml =
            format!("{BASE}routes:\n  - {{name: a, upstream: orders, match: {{hots: x}}}}\n");
        let p = problems(&yaml);
        assert_eq!(p.len(), 1);
        assert!(p[0].starts_with("routes[0].match"), "{p:?}");
        assert!(p[0].contains("unknown field `hots`"), "{p:?}");
    }

    #[test]
    fn server_addresses_and_cidrs_are_checked() {
        let yaml = format!(
            "server:\n  listen: [\"nope\", \"127.0.0.1:80\"]\n  admin_listen: \"127.0.0.1:80\"\n  trusted_proxies: [\"10.0.0.0/33\"]\n{BASE}routes:\n  - {{name: a, upstream: orders}}\n"
        );
        let p = problems(&yaml);
        assert!(
            p.iter()
                .any(|p| p.starts_with("server.listen[0]: invalid socket address")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|p| p.starts_with("server.admin_listen: must differ")),
            "{p:?}"
        );
    }

    #[test]
    fn daemon_paths_must_be_absolute() {
        let yaml = format!(
            "server:\n  pid_file: run/t.pid\n  upgrade_sock: /run/t.sock\n{BASE}routes:\n  - {{name: a, upstream: orders}}\n"
        );
        assert_eq!(
            problems(&yaml),
            vec![r#"server.pid_file: must be an absolute path, not "run/t.pid""#]
        );
    }

    #[test]
    fn strip_and_rewrite_conflict() {
        let yaml = format!(
            "{BASE}routes:\n  - {{name: a, upstream: orders, strip_prefix: true, rewrite_prefix: /v2}}\n"
        );
        assert_eq!(
            problems(&yaml),
            vec!["routes[0]: strip_prefix and rewrite_prefix are mutually exclusive"]
        );
    }

    #[test]
    fn a_valid_file_has_no_problems() {
        let yaml = format!("{BASE}routes:\n  - {{name: a, upstream: orders, match: {{host: \"*.example.com\", path_prefix: /orders, methods: [GET]}}}}\n");
        assert!(problems(&yaml).is_empty());
    }
}
