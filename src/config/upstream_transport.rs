//! `upstreams.<n>.tls` and `upstreams.<n>.protocol` (DESIGN.md "TLS and HTTP/2"): how the
//! gateway talks to a pool's backends. Plain data; the CA and client certificate files are read
//! once when the runtime is built (`crate::upstream::transport`).

use serde::{Deserialize, Serialize};

/// TLS towards the backends of one upstream.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// Server name sent and verified; default: the host part of each backend's address (a DNS
    /// name, or an IP address checked against the certificate's IP SANs).
    #[serde(default)]
    pub sni: Option<String>,
    /// CA bundle (PEM) that verifies the backends' certificates; default: the system's roots.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Verify the backend's certificate chain and name. Off only for a backend whose
    /// certificate cannot be verified at all: the connection is then encrypted but not
    /// authenticated.
    #[serde(default = "default_verify")]
    pub verify: bool,
    /// Client certificate (PEM, leaf first) presented to backends that ask for one (mTLS).
    #[serde(default)]
    pub client_cert_file: Option<String>,
    #[serde(default)]
    pub client_key_file: Option<String>,
}

fn default_verify() -> bool {
    true
}

/// The HTTP version spoken to the backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (over TLS when `tls` is set).
    #[default]
    H1,
    /// HTTP/2 over TLS, chosen by ALPN (needs `tls`); carries gRPC.
    H2,
    /// HTTP/2 over cleartext with prior knowledge (no `tls`); carries gRPC.
    H2c,
}

impl UpstreamProtocol {
    pub fn name(self) -> &'static str {
        match self {
            UpstreamProtocol::H1 => "h1",
            UpstreamProtocol::H2 => "h2",
            UpstreamProtocol::H2c => "h2c",
        }
    }

    /// HTTP/2, with or without TLS.
    pub fn is_h2(self) -> bool {
        self != UpstreamProtocol::H1
    }
}
