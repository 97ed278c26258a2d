//! TLS termination: server certificates chosen by SNI, loaded and checked once per build.
//!
//! [`CertStore`] is the rustls certificate resolver Pingora's TLS listeners ask during each
//! handshake: the exact name first, then a `*.wildcard` covering one more label, then the
//! `default: true` certificate; with no match and no default the handshake is refused. Every
//! certificate is read whole (leaf and intermediates, served as a chain), its key is checked
//! against the leaf, and its names and expiry come from the leaf itself. Problems carry the YAML
//! path of the certificate they are about; a certificate expiring within [`EXPIRY_WARNING`] is a
//! warning, an expired one a problem.

pub mod client_cert;
mod counted_verifier;

use crate::config::tls::{CertificateConfig, ClientAuth, TlsConfig};
use crate::config::Problem;
use crate::observability::metrics::METRICS;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `check` warns about certificates that expire sooner than this.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// The certificates of the TLS listeners, by name.
#[derive(Debug, Default)]
pub struct CertStore {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` stored under `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
    /// Each served name (`default` for a default certificate without names) and its leaf's
    /// expiry, Unix seconds.
    pub expiries: Vec<(String, i64)>,
}

impl CertStore {
    /// The certificate for a client hello's server name (`None`: no SNI).
    pub fn lookup(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = server_name else {
            return self.default.clone();
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(c) = self.exact.get(&name) {
            return Some(c.clone());
        }
        let parent = name.split_once('.').map(|(_, rest)| rest);
        parent
            .and_then(|p| self.wildcard.get(p))
            .or(self.default.as_ref())
            .cloned()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let found = self.lookup(hello.server_name());
        if found.is_none() {
            METRICS
                .tls_handshakes
                .with_label_values(&["unknown_name"])
                .inc();
        }
        found
    }
}

/// The resolver Pingora's TLS listeners hold for their lifetime: it answers from whichever
/// [`CertStore`] was swapped in last, so a reload serves new certificates to new handshakes
/// while established connections keep theirs.
#[derive(Debug)]
pub struct LiveCerts(arc_swap::ArcSwap<CertStore>);

impl LiveCerts {
    pub fn new(store: Arc<CertStore>) -> LiveCerts {
        LiveCerts(arc_swap::ArcSwap::new(store))
    }

    pub fn swap(&self, store: Arc<CertStore>) {
        self.0.store(store);
    }
}

impl ResolvesServerCert for LiveCerts {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.load().resolve(hello)
    }
}

/// What building the TLS side produced: the store, the client verifier (mTLS), and warnings.
pub struct Tls {
    pub certificates: Arc<CertStore>,
    pub client_verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
    pub warnings: Vec<Problem>,
}

impl Tls {
    /// `tollgate_tls_certificate_expiry_seconds{name}` for the certificates being served.
    pub fn publish_expiries(&self) {
        let gauge = &METRICS.tls_certificate_expiry;
        gauge.reset();
        for (name, not_after) in &self.certificates.expiries {
            gauge.with_label_values(&[name]).set(*not_after);
        }
    }
}

/// Load and check every certificate of `server.tls`.
pub fn build(tls: &TlsConfig, now: SystemTime) -> Result<Tls, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let mut store = CertStore::default();
    let mut claimed: HashMap<String, usize> = HashMap::new();
    for (i, cfg) in tls.certificates.iter().enumerate() {
        let at = format!("server.tls.certificates[{i}]");
        let Some((key, leaf)) = load_one(&at, cfg, now, &mut problems, &mut warnings) else {
            continue;
        };
        let key = Arc::new(key);
        // One spelling per name: a certificate listing a name twice (or in two cases), or an
        // `sni` entry with the trailing dot of an absolute name, claims it once, and is
        // matched like the SNI a client sends.
        let mut names: Vec<String> = if cfg.sni.is_empty() {
            leaf.names
        } else {
            cfg.sni.clone()
        }
        .iter()
        .map(|n| n.trim_end_matches('.').to_ascii_lowercase())
        .collect();
        names.sort();
        names.dedup();
        if names.is_empty() && !cfg.default {
            problems.push(Problem::new(
                format!("{at}.cert_file"),
                "the certificate has no DNS names in its SANs: list its names in sni, or make it the default",
            ));
        }
        if names.is_empty() {
            store.expiries.push(("default".into(), leaf.not_after));
        }
        for name in names {
            store.expiries.push((name.clone(), leaf.not_after));
            if let Some(j) = claimed.insert(name.clone(), i) {
                problems.push(Problem::new(
                    format!("{at}.sni"),
                    format!("{name} is already claimed by server.tls.certificates[{j}]"),
                ));
            }
            match name.strip_prefix("*.") {
                Some(parent) => store.wildcard.insert(parent.to_owned(), key.clone()),
                None => store.exact.insert(name, key.clone()),
            };
        }
        if cfg.default {
            store.default = Some(key);
        }
    }
    let client_verifier = tls
        .client_ca_file
        .as_deref()
        .and_then(|ca| client_verifier(ca, tls.client_auth, &mut problems));
    if problems.is_empty() {
        Ok(Tls {
            certificates: Arc::new(store),
            client_verifier,
            warnings,
        })
    } else {
        Err(problems)
    }
}

/// What the leaf says about itself.
struct Leaf {
    names: Vec<String>,
    not_after: i64,
}

fn load_one(
    at: &str,
    cfg: &CertificateConfig,
    now: SystemTime,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
) -> Option<(CertifiedKey, Leaf)> {
    let cert_at = format!("{at}.cert_file");
    let key_at = format!("{at}.key_file");
    let chain = match read_certificates(&cfg.cert_file) {
        Ok(c) if !c.is_empty() => c,
        Ok(_) => {
            problems.push(Problem::new(
                cert_at,
                format!("no PEM certificate in {}", cfg.cert_file),
            ));
            return None;
        }
        Err(e) => {
            problems.push(Problem::new(
                cert_at,
                format!(
                    "cannot read a certificate chain from {}: {e}",
                    cfg.cert_file
                ),
            ));
            return None;
        }
    };
    let key = match PrivateKeyDer::from_pem_file(&cfg.key_file) {
        Ok(k) => k,
        Err(e) => {
            problems.push(Problem::new(
                key_at,
                format!("cannot read a private key from {}: {e}", cfg.key_file),
            ));
            return None;
        }
    };
    let signing = match rustls::crypto::aws_lc_rs::sign::any_supported_type(&key) {
        Ok(s) => s,
        Err(e) => {
            problems.push(Problem::new(
                key_at,
                format!("unsupported private key: {e}"),
            ));
            return None;
        }
    };
    let leaf = match leaf_facts(&chain[0]) {
        Ok(l) => l,
        Err(e) => {
            problems.push(Problem::new(
                cert_at,
                format!("unreadable certificate: {e}"),
            ));
            return None;
        }
    };
    let certified = CertifiedKey::new(chain, signing);
    if certified.keys_match().is_err() {
        problems.push(Problem::new(
            key_at,
            format!("does not match the certificate in {}", cfg.cert_file),
        ));
        return None;
    }
    let now = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let expiry = humantime::format_rfc3339_seconds(
        UNIX_EPOCH + Duration::from_secs(leaf.not_after.max(0) as u64),
    );
    if leaf.not_after <= now {
        problems.push(Problem::new(
            cert_at,
            format!("the certificate expired at {expiry}"),
        ));
        return None;
    }
    if leaf.not_after - now < EXPIRY_WARNING.as_secs() as i64 {
        warnings.push(Problem::new(
            cert_at,
            format!("the certificate expires at {expiry}, in less than 14 days"),
        ));
    }
    Some((certified, leaf))
}

/// Every PEM certificate in a file, in order.
fn read_certificates(
    path: &str,
) -> Result<Vec<CertificateDer<'static>>, rustls::pki_types::pem::Error> {
    CertificateDer::pem_file_iter(path)?.collect()
}

fn leaf_facts(der: &CertificateDer<'_>) -> Result<Leaf, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| e.to_string())?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    Ok(Leaf {
        names,
        not_after: cert.validity().not_after.timestamp(),
    })
}

fn client_verifier(
    ca_file: &str,
    auth: ClientAuth,
    problems: &mut Vec<Problem>,
) -> Option<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
    let at = "server.tls.client_ca_file";
    let mut roots = rustls::RootCertStore::empty();
    let certs =
        CertificateDer::pem_file_iter(ca_file).and_then(|it| it.collect::<Result<Vec<_>, _>>());
    match certs {
        Ok(certs) if !certs.is_empty() => {
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                problems.push(Problem::new(
                    at,
                    format!("no usable CA certificate in {ca_file}"),
                ));
                return None;
            }
        }
        Ok(_) => {
            problems.push(Problem::new(at, format!("no PEM certificate in {ca_file}")));
            return None;
        }
        Err(e) => {
            problems.push(Problem::new(at, format!("cannot read {ca_file}: {e}")));
            return None;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    let builder = match auth {
        ClientAuth::Optional => builder.allow_unauthenticated(),
        ClientAuth::Required => builder,
    };
    match builder.build() {
        Ok(v) => Some(Arc::new(counted_verifier::Counted(v))),
        Err(e) => {
            problems.push(Problem::new(
                at,
                format!("cannot verify clients with it: {e}"),
            ));
            None
        }
    }
}
