//! How one upstream's backends are reached: cleartext or TLS, HTTP/1.1, h2 (ALPN) or h2c, and
//! with which server name, CA roots and client certificate.
//!
//! The CA bundle and the client certificate are read and checked once, when the runtime is
//! built ([`load_all`], every problem with its YAML path), never per request: each attempt and
//! each health probe only clones `Arc`s into its `HttpPeer` ([`Transport::peer`]).
//!
//! Two Pingora behaviours shape this module. Its rustls connector skips *all* certificate
//! verification when a peer's SNI is empty (`connectors/tls/rustls/mod.rs`, "disable verification
//! if sni does not exist"), so a TLS peer here always has a server name: the configured `sni`,
//! else the host of the backend's address (an IP address is then verified against the
//! certificate's IP SANs). And it trusts the caller that a cleartext peer whose ALPN minimum is
//! HTTP/2 speaks h2c (`connectors/http/v2.rs`), which is how `protocol: h2c` is expressed.

use super::members::{Member, MemberTable};
use crate::config::upstream_transport::{UpstreamProtocol, UpstreamTlsConfig};
use crate::config::{Config, Problem};
use pingora::protocols::tls::CaType;
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::{CertKey, WrappedX509};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// The TLS material of one upstream, read from its files.
#[derive(Clone)]
pub struct TlsMaterial {
    sni: Option<String>,
    verify: bool,
    /// `None`: the system's roots (Pingora's connector loads them once).
    ca: Option<Arc<CaType>>,
    client_cert_key: Option<Arc<CertKey>>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("sni", &self.sni)
            .field("verify", &self.verify)
            .field("ca_certificates", &self.ca.as_ref().map(|c| c.len()))
            .field("client_certificate", &self.client_cert_key.is_some())
            .finish()
    }
}

/// Read the TLS files of every upstream that has `tls`, collecting every problem.
pub fn load_all(config: &Config) -> Result<HashMap<String, TlsMaterial>, Vec<Problem>> {
    let mut out = HashMap::new();
    let mut problems = Vec::new();
    for (name, upstream) in &config.upstreams {
        if let Some(tls) = &upstream.tls {
            match TlsMaterial::load(&format!("upstreams.{name}.tls"), tls) {
                Ok(m) => {
                    out.insert(name.clone(), m);
                }
                Err(p) => problems.extend(p),
            }
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

impl TlsMaterial {
    /// Read and check `tls`'s files; `at` is its YAML path.
    pub fn load(at: &str, tls: &UpstreamTlsConfig) -> Result<TlsMaterial, Vec<Problem>> {
        let mut problems = Vec::new();
        let ca = tls.ca_file.as_deref().and_then(|file| {
            read_ca(file)
                .map_err(|e| problems.push(Problem::new(format!("{at}.ca_file"), e)))
                .ok()
        });
        let client_cert_key = match (&tls.client_cert_file, &tls.client_key_file) {
            (Some(cert), Some(key)) => read_cert_key(at, cert, key)
                .map_err(|p| problems.push(p))
                .ok(),
            // A half-configured pair is reported by `config::validate`.
            _ => None,
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(TlsMaterial {
            sni: tls.sni.clone(),
            verify: tls.verify,
            ca: ca.map(Arc::from),
            client_cert_key: client_cert_key.map(Arc::new),
        })
    }
}

/// The CA bundle as Pingora's per-peer roots; every certificate is parsed here so that a bad
/// file fails the build, not a handshake (Pingora would panic on an unparsable one).
fn read_ca(file: &str) -> Result<Vec<WrappedX509>, String> {
    let certs = read_pem_certificates(file)?;
    let mut roots = rustls::RootCertStore::empty();
    let mut out = Vec::with_capacity(certs.len());
    for (i, der) in certs.into_iter().enumerate() {
        roots
            .add(der.clone())
            .map_err(|e| format!("certificate {} in {file} is not a usable CA: {e}", i + 1))?;
        out.push(wrap(der.to_vec()).map_err(|e| format!("certificate {} in {file}: {e}", i + 1))?);
    }
    Ok(out)
}

/// The client certificate chain and its key, checked to belong together.
fn read_cert_key(at: &str, cert_file: &str, key_file: &str) -> Result<CertKey, Problem> {
    let cert_at = format!("{at}.client_cert_file");
    let key_at = format!("{at}.client_key_file");
    let chain = read_pem_certificates(cert_file).map_err(|e| Problem::new(&cert_at, e))?;
    for (i, der) in chain.iter().enumerate() {
        wrap(der.to_vec()).map_err(|e| {
            Problem::new(
                &cert_at,
                format!("certificate {} in {cert_file}: {e}", i + 1),
            )
        })?;
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| {
        Problem::new(
            &key_at,
            format!("cannot read a private key from {key_file}: {e}"),
        )
    })?;
    let signing = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key)
        .map_err(|e| Problem::new(&key_at, format!("unsupported private key: {e}")))?;
    let certified = rustls::sign::CertifiedKey::new(chain.clone(), signing);
    if certified.keys_match().is_err() {
        return Err(Problem::new(
            key_at,
            format!("does not match the certificate in {cert_file}"),
        ));
    }
    // Pingora turns the key bytes back into a `PrivateKeyDer` (and unwraps): DER it recognises.
    let key_der = key.secret_der().to_vec();
    if PrivateKeyDer::try_from(key_der.clone()).is_err() {
        return Err(Problem::new(key_at, "unrecognised private key encoding"));
    }
    Ok(CertKey::new(
        chain.into_iter().map(|c| c.to_vec()).collect(),
        key_der,
    ))
}

fn read_pem_certificates(file: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read certificates from {file}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("no PEM certificate in {file}"));
    }
    Ok(certs)
}

/// Pingora's certificate wrapper, built without its panicking parser.
fn wrap(der: Vec<u8>) -> Result<WrappedX509, String> {
    WrappedX509::try_new(der, |raw| {
        x509_parser::parse_x509_certificate(raw)
            .map(|(_, cert)| cert)
            .map_err(|e| format!("unparsable certificate: {e}"))
    })
}

/// Everything an attempt or a health probe needs to connect to one backend of a pool.
#[derive(Debug, Clone)]
pub struct Transport {
    pub protocol: UpstreamProtocol,
    tls: Option<TlsMaterial>,
    /// The pool's members: the host each address was configured as is the default server name.
    members: Arc<MemberTable>,
}

impl Transport {
    pub fn new(
        protocol: UpstreamProtocol,
        tls: Option<TlsMaterial>,
        members: Arc<MemberTable>,
    ) -> Transport {
        Transport {
            protocol,
            tls,
            members,
        }
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The server name sent to (and verified for) `addr`; empty without TLS.
    pub fn sni(&self, addr: SocketAddr) -> String {
        match self.members.get(&addr) {
            Some(m) => self.sni_for_host(&m.host),
            None => self.sni_for_host(&addr.ip().to_string()),
        }
    }

    /// The server name for a backend configured with `host`; empty without TLS.
    pub fn sni_for_host(&self, host: &str) -> String {
        match &self.tls {
            None => String::new(),
            Some(tls) => tls.sni.clone().unwrap_or_else(|| host.to_string()),
        }
    }

    /// A peer for `addr` with this pool's TLS and HTTP version (timeouts are the caller's).
    pub fn peer(&self, addr: SocketAddr) -> HttpPeer {
        let mut peer = HttpPeer::new(addr, self.is_tls(), self.sni(addr));
        self.apply(&mut peer);
        peer
    }

    /// A peer for one member: its server name, and its connection group (see
    /// [`Member::group_key`]).
    pub fn peer_for(&self, member: &Member) -> HttpPeer {
        let mut peer = HttpPeer::new(member.addr, self.is_tls(), self.sni_for_host(&member.host));
        peer.group_key = member.group_key;
        self.apply(&mut peer);
        peer
    }

    /// Set TLS material and ALPN on a peer whose address, TLS flag and SNI are already right
    /// (Pingora's health check builds its own template).
    pub fn apply(&self, peer: &mut HttpPeer) {
        if let Some(tls) = &self.tls {
            peer.options.verify_cert = tls.verify;
            peer.options.verify_hostname = tls.verify;
            peer.options.ca = tls.ca.clone();
            peer.client_cert_key = tls.client_cert_key.clone();
        }
        match self.protocol {
            UpstreamProtocol::H1 => peer.options.set_http_version(1, 1),
            UpstreamProtocol::H2 | UpstreamProtocol::H2c => peer.options.set_http_version(2, 2),
        }
    }
}

/// `billing.internal:8443` → `billing.internal`, `[::1]:443` → `::1`, `10.0.0.1:443` → `10.0.0.1`.
pub fn host_of(configured: &str) -> String {
    let host = configured
        .rsplit_once(':')
        .map_or(configured, |(host, _port)| host);
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_server_name_is_the_configured_host() {
        assert_eq!(host_of("billing.internal:8443"), "billing.internal");
        assert_eq!(host_of("[::1]:443"), "::1");
        assert_eq!(host_of("10.0.0.1:443"), "10.0.0.1");
    }

    #[test]
    fn tls_peers_always_carry_a_server_name_and_the_alpn_of_the_protocol() {
        let addr: SocketAddr = "127.0.0.1:8443".parse().unwrap();
        let material = TlsMaterial {
            sni: None,
            verify: true,
            ca: None,
            client_cert_key: None,
        };
        let members = Arc::new(MemberTable::of_literals(&[(addr, "127.0.0.1:8443")]));
        let t = Transport::new(UpstreamProtocol::H2, Some(material), members.clone());
        let peer = t.peer(addr);
        assert!(peer.is_tls());
        assert_eq!(peer.sni, "127.0.0.1");
        assert!(peer.options.verify_cert && peer.options.verify_hostname);
        assert_eq!(peer.options.alpn.get_min_http_version(), 2);

        let h2c = Transport::new(UpstreamProtocol::H2c, None, members);
        let peer = h2c.peer(addr);
        assert!(!peer.is_tls());
        assert!(peer.sni.is_empty());
        assert_eq!(peer.options.alpn.get_max_http_version(), 2);
        assert_eq!(peer.options.alpn.get_min_http_version(), 2);

        let h1 = Transport::new(UpstreamProtocol::H1, None, Arc::default());
        assert_eq!(h1.peer(addr).options.alpn.get_max_http_version(), 1);
    }

    #[test]
    fn unreadable_and_mismatched_files_are_problems_with_their_paths() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem").display().to_string();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let junk = junk.display().to_string();
        let tls = UpstreamTlsConfig {
            sni: None,
            ca_file: Some(missing),
            verify: true,
            client_cert_file: Some(junk.clone()),
            client_key_file: Some(junk),
        };
        let p = TlsMaterial::load("upstreams.u.tls", &tls).unwrap_err();
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(p[0].path, "upstreams.u.tls.ca_file");
        assert_eq!(p[1].path, "upstreams.u.tls.client_cert_file");

        let key_a = rcgen::KeyPair::generate().unwrap();
        let key_b = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["gw.test".to_string()])
            .unwrap()
            .self_signed(&key_a)
            .unwrap();
        let cert_file = dir.path().join("gw.pem");
        let key_file = dir.path().join("other.key");
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key_b.serialize_pem()).unwrap();
        let tls = UpstreamTlsConfig {
            ca_file: Some(cert_file.display().to_string()),
            client_cert_file: Some(cert_file.display().to_string()),
            client_key_file: Some(key_file.display().to_string()),
            ..tls
        };
        let p = TlsMaterial::load("upstreams.u.tls", &tls).unwrap_err();
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].path, "upstreams.u.tls.client_key_file");
        assert!(p[0].message.contains("does not match"), "{p:?}");

        std::fs::write(&key_file, key_a.serialize_pem()).unwrap();
        let m = TlsMaterial::load("upstreams.u.tls", &tls).expect("a matching pair");
        assert!(m.client_cert_key.is_some());
        assert_eq!(m.ca.map(|c| c.len()), Some(1));
    }
}
