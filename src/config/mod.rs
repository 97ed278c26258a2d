//! The YAML contract of DESIGN.md: types, loading and validation.
//!
//! Loading is two-staged on purpose: serde rejects shape errors (unknown keys, wrong types,
//! bad units) and reports the YAML path of the first one; [`validate`] then checks meaning
//! (dangling names, bad addresses, conflicting options) and collects *every* problem, so an
//! operator fixes a file in one round trip rather than one error per `check`.

pub mod auth;
pub mod edge;
pub mod matching;
pub mod mirror;
pub mod path_policy;
mod problem;
pub mod rate_limit;
pub mod split;
pub mod tls;
pub mod trace_export;
mod units;
pub mod upstream_transport;
mod validate;
pub(crate) use validate::valid_host_pattern;
mod warnings;

pub use problem::{Problem, Problems};
pub use units::{ByteSize, HumanDuration};
pub use validate::{parse_nameserver, BackendTarget};
pub use warnings::{SHIPPED_UNIT_TIMEOUT_STOP, UPGRADE_HAND_OFF};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// The whole file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    #[serde(default)]
    pub auth: auth::AuthConfig,
    #[serde(default)]
    pub rate_limits: BTreeMap<String, rate_limit::RateLimitConfig>,
    /// Shared counters for `rate_limits.<name>.backend: redis`.
    #[serde(default)]
    pub redis: Option<rate_limit::RedisConfig>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// OpenTelemetry span export (OTLP); absent: no spans.
    #[serde(default)]
    pub tracing: Option<trace_export::TracingConfig>,
}

/// Listener and process settings; most map straight onto Pingora's `ServerConf`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "default_listen")]
    pub listen: Vec<String>,
    /// TLS listeners (TLS 1.2+, ALPN h2 and http/1.1); certificates in `tls`.
    #[serde(default)]
    pub tls_listen: Vec<String>,
    /// Also accept HTTP/2 with prior knowledge (h2c) on the cleartext `listen` addresses.
    #[serde(default)]
    pub h2c: bool,
    /// Cleartext requests get `308` to the same host and path on the first TLS listener.
    #[serde(default)]
    pub redirect_https: bool,
    #[serde(default)]
    pub tls: Option<tls::TlsConfig>,
    #[serde(default = "default_admin_listen")]
    pub admin_listen: String,
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// How the worker threads share connections. `true`: one tokio runtime whose threads steal
    /// each other's tasks (Pingora's default). `false`: one single-threaded event loop per
    /// thread, each connection staying on the loop it was given (nginx's model): every ready
    /// connection is served in turn, where the stealing scheduler serves a hot subset first.
    #[serde(default = "default_work_stealing")]
    pub work_stealing: bool,
    #[serde(default = "default_pid_file")]
    pub pid_file: String,
    #[serde(default = "default_upgrade_sock")]
    pub upgrade_sock: String,
    /// After SIGTERM (or an upgrade's socket hand-off), the most in-flight requests get to
    /// finish; the process exits as soon as they have (see `drain`). Has its own default:
    /// Pingora's is 300 s, far beyond the shipped unit's `TimeoutStopSec`.
    #[serde(default = "default_grace_period")]
    pub grace_period: HumanDuration,
    /// Then the bound on tearing the runtimes down (Pingora's default, made explicit).
    #[serde(default = "default_graceful_shutdown_timeout")]
    pub graceful_shutdown_timeout: HumanDuration,
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    #[serde(default = "default_max_request_body")]
    pub max_request_body: ByteSize,
    /// Request line plus headers; larger heads get 431.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: ByteSize,
    /// Header fields per request; more get 431.
    #[serde(default = "default_max_headers")]
    pub max_headers: usize,
    /// The whole request head must arrive within this (slowloris); else 408 and close.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout: HumanDuration,
    /// A keep-alive connection idle longer than this between requests is closed.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: HumanDuration,
    /// Concurrent client connections over all public listeners; more get 503 and close.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Read buffer of each client connection; 0 (the default): none, reads go straight into
    /// Pingora's own head and body buffers, as its upstream connections do. Pingora's default
    /// is 64 KiB per connection, zero-filled when allocated: under connection churn the
    /// allocator hands out reused memory, so the zeroing makes every page of every buffer
    /// resident (16 KiB cost ~15 MiB at 1,000 connections, README "Seventh round").
    #[serde(default = "default_read_buffer")]
    pub read_buffer: ByteSize,
    /// Idle upstream connections kept for reuse, over all upstreams.
    #[serde(default = "default_upstream_keepalive_pool")]
    pub upstream_keepalive_pool: usize,
    #[serde(default = "default_access_log")]
    pub access_log: String,
    /// Path spellings backends read differently (encoded slashes, backslash, `;`): default reject.
    #[serde(default)]
    pub path_policy: path_policy::PathPolicyConfig,
    /// Operational log level (`error`..`trace`, or a tracing filter); `RUST_LOG` overrides.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// Process log lines as text (default) or one JSON object per line, for a log pipeline.
    #[serde(default)]
    pub log_format: LogFormat,
    /// Name servers for backend hostnames instead of the system's.
    #[serde(default)]
    pub resolver: Option<ResolverConfig>,
    /// The response store of every route's `cache` (absent: no route may cache).
    #[serde(default)]
    pub cache: Option<edge::CacheStoreConfig>,
}

/// `server.log_format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            tls_listen: Vec::new(),
            h2c: false,
            redirect_https: false,
            tls: None,
            admin_listen: default_admin_listen(),
            threads: default_threads(),
            work_stealing: default_work_stealing(),
            pid_file: default_pid_file(),
            upgrade_sock: default_upgrade_sock(),
            grace_period: default_grace_period(),
            graceful_shutdown_timeout: default_graceful_shutdown_timeout(),
            trusted_proxies: Vec::new(),
            max_request_body: default_max_request_body(),
            max_header_bytes: default_max_header_bytes(),
            max_headers: default_max_headers(),
            header_read_timeout: default_header_read_timeout(),
            idle_timeout: default_idle_timeout(),
            max_connections: default_max_connections(),
            read_buffer: default_read_buffer(),
            upstream_keepalive_pool: default_upstream_keepalive_pool(),
            access_log: default_access_log(),
            path_policy: Default::default(),
            log_level: default_log_level(),
            log_format: LogFormat::Text,
            resolver: None,
            cache: None,
        }
    }
}

fn default_listen() -> Vec<String> {
    vec!["0.0.0.0:8080".to_string()]
}
fn default_admin_listen() -> String {
    "127.0.0.1:9901".to_string()
}
fn default_work_stealing() -> bool {
    true
}
fn default_threads() -> usize {
    2
}
fn default_pid_file() -> String {
    "/run/tollgate/tollgate.pid".to_string()
}
fn default_upgrade_sock() -> String {
    "/run/tollgate/upgrade.sock".to_string()
}
/// Leaves the shipped unit's `TimeoutStopSec` (60 s) room for the 5 s upgrade hand-off and
/// the teardown bound: 5 + 30 + 5 s.
fn default_grace_period() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_graceful_shutdown_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}
fn default_read_buffer() -> ByteSize {
    ByteSize(0)
}
fn default_upstream_keepalive_pool() -> usize {
    128
}
fn default_max_request_body() -> ByteSize {
    ByteSize(10 * 1024 * 1024)
}
fn default_max_header_bytes() -> ByteSize {
    ByteSize(64 * 1024)
}
fn default_max_headers() -> usize {
    100
}
fn default_header_read_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
fn default_idle_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}
fn default_max_connections() -> usize {
    10_000
}
fn default_log_level() -> String {
    "info".to_string()
}
fn default_access_log() -> String {
    "stdout".to_string()
}

/// A named pool of interchangeable backends.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub backends: Vec<BackendConfig>,
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: HumanDuration,
    #[serde(default = "default_read_timeout")]
    pub read_timeout: HumanDuration,
    #[serde(default = "default_retries")]
    pub retries: usize,
    /// Retrying after the request was sent: off unless listed (idempotent methods only).
    #[serde(default)]
    pub retry_on: Option<RetryOnConfig>,
    #[serde(default)]
    pub retry_budget: RetryBudgetConfig,
    #[serde(default)]
    pub preserve_host: bool,
    #[serde(default)]
    pub passive_health: Option<PassiveHealthConfig>,
    #[serde(default)]
    pub circuit_breaker: Option<CircuitBreakerConfig>,
    /// TLS towards the backends (and their health checks); absent: cleartext.
    #[serde(default)]
    pub tls: Option<upstream_transport::UpstreamTlsConfig>,
    /// `h1` (default), `h2` (TLS + ALPN) or `h2c`; gRPC needs h2 or h2c.
    #[serde(default)]
    pub protocol: upstream_transport::UpstreamProtocol,
    /// Backends given by hostname are resolved again this often (off the request path);
    /// IP literals never are.
    #[serde(default = "default_dns_refresh")]
    pub dns_refresh: HumanDuration,
}

fn default_dns_refresh() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

/// `server.resolver`: where backend hostnames are looked up. Absent: the system's
/// configuration (`/etc/resolv.conf`). `/etc/hosts` is read first either way.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ResolverConfig {
    /// `IP` or `IP:PORT` (port 53 when absent), asked in order.
    pub nameservers: Vec<String>,
    /// Per query, before the next attempt.
    #[serde(default = "default_resolver_timeout")]
    pub timeout: HumanDuration,
}

fn default_resolver_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(2))
}

/// Which answers and failures after the request was sent are worth another attempt.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryOnConfig {
    #[serde(default)]
    pub statuses: Vec<u16>,
    #[serde(default)]
    pub errors: Vec<RetryError>,
    /// Base of the jittered exponential backoff before a post-send retry.
    #[serde(default = "default_backoff")]
    pub backoff: HumanDuration,
    #[serde(default = "default_max_backoff")]
    pub max_backoff: HumanDuration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RetryError {
    /// The upstream closed or reset the connection before a complete response head.
    Reset,
    /// The upstream did not answer within `read_timeout`.
    Timeout,
}

fn default_backoff() -> HumanDuration {
    HumanDuration(Duration::from_millis(25))
}
fn default_max_backoff() -> HumanDuration {
    HumanDuration(Duration::from_millis(250))
}

/// Post-send retries may add at most `ratio` of the upstream's request rate, plus
/// `min_per_second`, so that retries cannot multiply the load of an upstream in trouble.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryBudgetConfig {
    #[serde(default = "default_budget_ratio")]
    pub ratio: f64,
    #[serde(default = "default_budget_min")]
    pub min_per_second: u32,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        RetryBudgetConfig {
            ratio: default_budget_ratio(),
            min_per_second: default_budget_min(),
        }
    }
}

fn default_budget_ratio() -> f64 {
    0.2
}
fn default_budget_min() -> u32 {
    10
}

/// Per-upstream circuit breaker (see `upstream::circuit`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    pub error_ratio: f64,
    #[serde(default = "default_min_requests")]
    pub min_requests: u32,
    #[serde(default = "default_cb_window")]
    pub window: HumanDuration,
    #[serde(default = "default_open_for")]
    pub open_for: HumanDuration,
}

fn default_min_requests() -> u32 {
    20
}
fn default_cb_window() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
fn default_open_for() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}

/// Outlier ejection on consecutive request failures (see `upstream::outlier`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PassiveHealthConfig {
    #[serde(default = "default_consecutive_failures")]
    pub consecutive_failures: u32,
    #[serde(default = "default_base_ejection")]
    pub base_ejection: HumanDuration,
    #[serde(default = "default_max_ejection")]
    pub max_ejection: HumanDuration,
}

fn default_consecutive_failures() -> u32 {
    5
}
fn default_base_ejection() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
fn default_max_ejection() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}

fn default_connect_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(2))
}
fn default_read_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_retries() -> usize {
    1
}

/// `"127.0.0.1:4001"` or `{addr: "127.0.0.1:4002", weight: 2}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum BackendConfig {
    Addr(String),
    Weighted(WeightedBackend),
}

/// Hand-written rather than `untagged` so a typo inside the map form reports the real problem
/// (`unknown field `adr``) instead of "data did not match any variant".
impl<'de> Deserialize<'de> for BackendConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match serde_yaml::Value::deserialize(d)? {
            serde_yaml::Value::String(s) => Ok(BackendConfig::Addr(s)),
            v @ serde_yaml::Value::Mapping(_) => WeightedBackend::deserialize(v)
                .map(BackendConfig::Weighted)
                .map_err(|e| D::Error::custom(strip_location(&e.to_string()))),
            _ => Err(D::Error::custom(
                "a backend is \"IP:PORT\" or {addr: \"IP:PORT\", weight: N}",
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedBackend {
    pub addr: String,
    #[serde(default = "default_weight")]
    pub weight: usize,
}

fn default_weight() -> usize {
    1
}

impl BackendConfig {
    pub fn addr(&self) -> &str {
        match self {
            BackendConfig::Addr(a) => a,
            BackendConfig::Weighted(w) => &w.addr,
        }
    }
    pub fn weight(&self) -> usize {
        match self {
            BackendConfig::Addr(_) => 1,
            BackendConfig::Weighted(w) => w.weight,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthCheckKind {
    Http,
    Tcp,
}

/// Active health checking; absent means every backend is always considered healthy.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    #[serde(rename = "type")]
    pub kind: HealthCheckKind,
    #[serde(default = "default_hc_path")]
    pub path: String,
    #[serde(default = "default_hc_interval")]
    pub interval: HumanDuration,
    #[serde(default = "default_hc_timeout")]
    pub timeout: HumanDuration,
    #[serde(default = "default_threshold")]
    pub healthy_threshold: usize,
    #[serde(default = "default_unhealthy_threshold")]
    pub unhealthy_threshold: usize,
}

fn default_hc_path() -> String {
    "/health".to_string()
}
fn default_hc_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}
fn default_hc_timeout() -> HumanDuration {
    HumanDuration(Duration::from_millis(500))
}
fn default_threshold() -> usize {
    1
}
fn default_unhealthy_threshold() -> usize {
    2
}

/// One routing rule: what it matches, where it goes, what it changes on the way.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub name: String,
    #[serde(rename = "match", default)]
    pub matcher: MatchConfig,
    /// The one upstream; or `split` instead.
    #[serde(default)]
    pub upstream: Option<String>,
    /// Several upstreams by weight (canary, blue-green), instead of `upstream`.
    #[serde(default)]
    pub split: Option<Vec<split::SplitSide>>,
    /// `random` (default) | `consumer` | `client_ip` | `header:<Name>`: sticky choices.
    #[serde(default)]
    pub split_by: Option<String>,
    /// Copy a share of the traffic to a shadow upstream; its answers are discarded.
    #[serde(default)]
    pub mirror: Option<mirror::MirrorConfig>,
    #[serde(default)]
    pub strip_prefix: bool,
    #[serde(default)]
    pub rewrite_prefix: Option<String>,
    #[serde(default)]
    pub request_headers: HeaderOps,
    #[serde(default)]
    pub response_headers: HeaderOps,
    #[serde(default)]
    pub auth: Option<auth::RouteAuthConfig>,
    /// One limit name or a list; every listed limit must pass.
    #[serde(default)]
    pub rate_limit: Option<auth::StringOrList>,
    #[serde(default)]
    pub response_json: Option<ResponseJsonConfig>,
    /// Overrides `server.path_policy` field by field for this route.
    #[serde(default)]
    pub path_policy: Option<path_policy::PathPolicyOverride>,
    /// Client addresses allowed or denied (403), before anything else about the request.
    #[serde(default)]
    pub ip: Option<edge::IpRulesConfig>,
    /// CORS answered at the edge: preflights never reach the upstream.
    #[serde(default)]
    pub cors: Option<edge::CorsConfig>,
    /// Overrides `server.max_request_body` for this route.
    #[serde(default)]
    pub max_request_body: Option<ByteSize>,
    /// The header, cookie or query parameter that authenticated the request is not forwarded.
    #[serde(default)]
    pub hide_credentials: bool,
    /// Compress responses the client accepts compressed (zstd, br, gzip).
    #[serde(default)]
    pub compress: Option<edge::CompressConfig>,
    /// Keep GET/HEAD responses in the shared `server.cache` store.
    #[serde(default)]
    pub cache: Option<edge::CacheConfig>,
}

/// Strip fields from JSON responses: `remove` (deny-list) or `keep` (allow-list) paths.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseJsonConfig {
    #[serde(default)]
    pub remove: Option<Vec<String>>,
    #[serde(default)]
    pub keep: Option<Vec<String>>,
    /// Larger (decoded) bodies are refused rather than passed unstripped.
    #[serde(default = "default_max_body")]
    pub max_body: ByteSize,
}

fn default_max_body() -> ByteSize {
    ByteSize(8 * 1024 * 1024)
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default = "default_prefix")]
    pub path_prefix: String,
    #[serde(default)]
    pub methods: Vec<String>,
    /// Header name (any case) → condition; every listed condition must hold.
    #[serde(default)]
    pub headers: BTreeMap<String, matching::ValueMatch>,
    /// Query parameter → condition on its percent-decoded value.
    #[serde(default)]
    pub query: BTreeMap<String, matching::ValueMatch>,
}

impl Default for MatchConfig {
    fn default() -> Self {
        MatchConfig {
            host: None,
            path_prefix: default_prefix(),
            methods: Vec::new(),
            headers: BTreeMap::new(),
            query: BTreeMap::new(),
        }
    }
}

fn default_prefix() -> String {
    "/".to_string()
}

/// Header edits: `add` appends, `set` replaces, `remove` deletes.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderOps {
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

impl RouteConfig {
    /// Every upstream the route sends to, with the YAML path naming it.
    pub fn upstream_refs(&self) -> Vec<(String, &str)> {
        let mut refs = Vec::new();
        if let Some(u) = &self.upstream {
            refs.push(("upstream".to_string(), u.as_str()));
        }
        for (i, side) in self.split.iter().flatten().enumerate() {
            refs.push((format!("split[{i}].upstream"), side.upstream.as_str()));
        }
        refs
    }
}

impl Config {
    /// Valid settings that are probably mistakes (see [`warnings`]); never refuse the file.
    pub fn warnings(&self) -> Vec<Problem> {
        warnings::warnings(self)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut Option<String>| {
            if let Some(path) = p {
                if Path::new(path.as_str()).is_relative() {
                    *path = base.join(path.as_str()).to_string_lossy().into_owned();
                }
            }
        };
        if let Some(tls) = &mut self.server.tls {
            for c in &mut tls.certificates {
                for path in [&mut c.cert_file, &mut c.key_file] {
                    let mut p = Some(std::mem::take(path));
                    resolve(&mut p);
                    *path = p.unwrap_or_default();
                }
            }
            resolve(&mut tls.client_ca_file);
        }
        for tls in self.upstreams.values_mut().filter_map(|u| u.tls.as_mut()) {
            resolve(&mut tls.ca_file);
            resolve(&mut tls.client_cert_file);
            resolve(&mut tls.client_key_file);
        }
        for jwt in self.auth.jwt.values_mut() {
            resolve(&mut jwt.secret_file);
            resolve(&mut jwt.public_key_file);
            resolve(&mut jwt.jwks_file);
        }
    }

    /// Parse YAML text: shape errors come back as a single problem naming the YAML path.
    pub fn parse(text: &str) -> Result<Config, Problems> {
        let de = serde_yaml::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let message = strip_path_prefix(&e.inner().to_string());
            Problems(vec![Problem::new(
                if path == "." { String::new() } else { path },
                message,
            )])
        })
    }

    /// Read and parse a file (shape errors only), relative key-file paths resolved against its
    /// directory; [`Config::problems`] then checks its meaning.
    pub fn read(path: &Path) -> Result<Config, Problems> {
        Self::read_with_text(path).map(|(config, _)| config)
    }

    /// [`Config::read`], also returning the file's text (an in-place reload hashes exactly the
    /// bytes it parsed).
    pub fn read_with_text(path: &Path) -> Result<(Config, String), Problems> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Problems(vec![Problem::new(
                String::new(),
                format!("cannot read {}: {e}", path.display()),
            )])
        })?;
        let mut config = Self::parse(&text)?;
        config.resolve_paths(path.parent().unwrap_or_else(|| Path::new(".")));
        Ok((config, text))
    }

    /// Every problem this file has on its own (dangling names, bad addresses, conflicting
    /// options); what only building the runtime can find is reported by `runtime::Runtime`.
    pub fn problems(&self) -> Vec<Problem> {
        validate::validate(self)
    }

    /// Read, parse and validate a file (its own checks only; see [`Config::problems`]).
    pub fn load(path: &Path) -> Result<Config, Problems> {
        let config = Self::read(path)?;
        let problems = config.problems();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(Problems(problems))
        }
    }

    /// Parse and validate YAML text; relative file paths are taken from the current directory.
    pub fn load_str(text: &str) -> Result<Config, Problems> {
        Self::load_str_in(text, Path::new("."))
    }

    /// Parse and validate YAML text whose relative file paths (key files) are relative to
    /// `base`, the directory of the config file — so `check` and `run` agree wherever they are
    /// started from.
    pub fn load_str_in(text: &str, base: &Path) -> Result<Config, Problems> {
        let mut config = Self::parse(text)?;
        config.resolve_paths(base);
        let problems = validate::validate(&config);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(Problems(problems))
        }
    }
}

/// serde_yaml prefixes its messages with its own idea of the path (`upstreams.orders: ...`);
/// we print the precise path from serde_path_to_error instead, so drop the duplicate.
fn strip_path_prefix(message: &str) -> String {
    match message.split_once(": ") {
        Some((head, rest)) if !head.is_empty() && !head.contains(' ') => rest.to_string(),
        _ => message.to_string(),
    }
}

/// Drop serde_yaml's "at line N column M" when re-wrapping a nested error (it would point into
/// a re-serialised fragment, not the user's file).
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_key_paths_are_relative_to_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("secret.txt"),
            "0123456789abcdef0123456789abcdef",
        )
        .unwrap();
        let yaml = "upstreams:\n  u: {backends: [\"127.0.0.1:1\"]}\nauth:\n  jwt:\n    j: {algorithms: [HS256], secret_file: secret.txt}\nroutes:\n  - {name: r, upstream: u, auth: {jwt: j}}\n";
        let file = dir.path().join("tollgate.yaml");
        std::fs::write(&file, yaml).unwrap();
        let config = Config::load(&file).expect("secret found next to the config");
        let resolved = config.auth.jwt["j"].secret_file.clone().unwrap();
        assert_eq!(Path::new(&resolved), dir.path().join("secret.txt"));
    }
}
