//! `server.tls`, `tls_listen`, `h2c`, `redirect_https` (DESIGN.md "TLS and HTTP/2"). Plain data;
//! certificates are read and checked by `crate::tls` when the runtime is built.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Chosen by SNI: exact name, then `*.wildcard`, then the `default: true` one.
    #[serde(default)]
    pub certificates: Vec<CertificateConfig>,
    /// Lowest protocol version offered: only "1.2" (TLS 1.2 and 1.3) in this build.
    #[serde(default = "default_min_version")]
    pub min_version: String,
    /// CA bundle (PEM) that verifies client certificates (mTLS).
    #[serde(default)]
    pub client_ca_file: Option<String>,
    #[serde(default)]
    pub client_auth: ClientAuth,
}

fn default_min_version() -> String {
    "1.2".to_string()
}

/// One certificate chain and its key.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// PEM: the leaf first, then intermediates (served whole).
    pub cert_file: String,
    pub key_file: String,
    /// Names this certificate answers for; default: the DNS names of its SANs.
    #[serde(default)]
    pub sni: Vec<String>,
    /// Served when the client sends no SNI or a name no certificate claims.
    #[serde(default)]
    pub default: bool,
}

/// Whether a client certificate is asked for, when `client_ca_file` is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// Verified when presented; a client without one is still served.
    #[default]
    Optional,
    /// The handshake fails without a certificate the CA verifies.
    Required,
}
