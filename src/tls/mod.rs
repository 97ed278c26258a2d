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
        for (j, name) in cfg.sni.iter().enumerate() {
            if let Some(why) = sni_problem(name) {
                problems.push(Problem::new(format!("{at}.sni[{j}]"), why));
            }
        }
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
            cert_at.clone(),
            format!("the certificate expires at {expiry}, in less than 14 days"),
        ));
    }
    match chain_fault(&certified.cert, now) {
        None => {}
        Some(ChainFault::Broken(why)) => {
            problems.push(Problem::new(cert_at, format!("{}: {why}", cfg.cert_file)));
            return None;
        }
        Some(ChainFault::OutOfDate(why)) => {
            warnings.push(Problem::new(cert_at, format!("{}: {why}", cfg.cert_file)))
        }
    }
    Some((certified, leaf))
}

/// What is wrong with the certificates served after the leaf.
enum ChainFault {
    /// Clients cannot build a path from the leaf through them: refused.
    Broken(String),
    /// The path is there but a certificate on it is outside its validity period. Only a
    /// warning: clients that know a newer cross-signature still connect.
    OutOfDate(String),
}

/// Whether the certificates after the leaf are the chain that signs it, in the order clients
/// read them: each one readable X.509, the issuer of the one before it, its signature on it
/// valid. The file is served as it is, so a stale or unrelated intermediate would otherwise pass
/// `check` and reload and then fail every handshake for the name. The last certificate is
/// taken as the anchor (a root or the top intermediate; clients hold the root). A leaf alone
/// has nothing to check.
fn chain_fault(chain: &[CertificateDer<'_>], now: i64) -> Option<ChainFault> {
    if chain.len() < 2 {
        return None;
    }
    let mut parsed = Vec::with_capacity(chain.len());
    for (i, der) in chain.iter().enumerate() {
        match x509_parser::parse_x509_certificate(der.as_ref()) {
            Ok((_, cert)) => parsed.push(cert),
            Err(e) => {
                return Some(ChainFault::Broken(format!(
                    "certificate {} of the file is not a readable X.509 certificate ({e})",
                    i + 1
                )))
            }
        }
    }
    for (i, pair) in parsed.windows(2).enumerate() {
        if pair[0].issuer().as_raw() != pair[1].subject().as_raw() {
            return Some(ChainFault::Broken(format!(
                "certificate {} ({}) is not the issuer of certificate {} (issued by {}); \
                 list the leaf first, then each issuer in turn",
                i + 2,
                pair[1].subject(),
                i + 1,
                pair[0].issuer()
            )));
        }
    }
    let (top, between) = chain[1..].split_last()?;
    let anchor = match webpki::anchor_from_trusted_cert(top) {
        Ok(a) => a,
        Err(e) => {
            return Some(ChainFault::Broken(format!(
                "the last certificate cannot anchor the chain: {e}"
            )))
        }
    };
    let leaf = match webpki::EndEntityCert::try_from(&chain[0]) {
        Ok(l) => l,
        Err(e) => return Some(ChainFault::Broken(format!("the leaf: {e}"))),
    };
    let algorithms = rustls::crypto::aws_lc_rs::default_provider()
        .signature_verification_algorithms
        .all;
    let anchors = [anchor];
    let verified = leaf.verify_for_usage(
        algorithms,
        &anchors,
        between,
        rustls::pki_types::UnixTime::since_unix_epoch(Duration::from_secs(now.max(0) as u64)),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    );
    match verified {
        Ok(_) => None,
        Err(e @ (webpki::Error::CertExpired { .. } | webpki::Error::CertNotValidYet { .. })) => {
            Some(ChainFault::OutOfDate(format!(
                "a certificate of the chain is outside its validity period ({e})"
            )))
        }
        Err(e @ webpki::Error::InvalidSignatureForPublicKey) => Some(ChainFault::Broken(format!(
            "the chain does not verify: a certificate was not signed by the key of the next \
             one, though its name matches (an old or re-keyed intermediate?) ({e})"
        ))),
        Err(e) => Some(ChainFault::Broken(format!(
            "the chain does not verify from the leaf to the last certificate ({e})"
        ))),
    }
}

/// Why an `sni` entry can never match what a client sends, if it cannot: SNI carries a DNS
/// name (RFC 6066 §3: no address, no trailing dot), and a wildcard covers one label.
fn sni_problem(name: &str) -> Option<String> {
    let host = name.strip_suffix('.').unwrap_or(name);
    let bare = host.strip_prefix("*.").unwrap_or(host);
    if bare.parse::<std::net::IpAddr>().is_ok() {
        return Some(format!(
            "{name:?} is an address; clients send no SNI when they connect by address: \
             make this certificate the default instead"
        ));
    }
    if !crate::config::valid_host_pattern(host) {
        return Some(format!(
            "{name:?} is not a DNS name (or *. and a DNS name) that SNI can carry"
        ));
    }
    None
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

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

    #[test]
    fn sni_entries_are_names_a_client_can_send() {
        for good in ["api.test", "*.wild.test", "absolute.test.", "x"] {
            assert_eq!(sni_problem(good), None, "{good}");
        }
        for bad in [
            "*",
            "",
            "*.",
            ".",
            "a b",
            "127.0.0.1",
            "::1",
            "*.10.0.0.1",
            "a..b",
            "é.test",
            "a/b",
        ] {
            assert!(sni_problem(bad).is_some(), "{bad:?}");
        }
    }

    struct Ca {
        der: CertificateDer<'static>,
        cert: rcgen::Certificate,
        key: KeyPair,
    }

    fn ca(name: &str, signer: Option<&Ca>, not_after: Option<SystemTime>) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        if let Some(t) = not_after {
            params.not_before = (t - Duration::from_secs(3600)).into();
            params.not_after = t.into();
        }
        let key = KeyPair::generate().expect("key");
        let cert = match signer {
            Some(s) => params.signed_by(&key, &s.cert, &s.key),
            None => params.self_signed(&key),
        }
        .expect("cert");
        Ca {
            der: cert.der().clone(),
            cert,
            key,
        }
    }

    fn leaf(signer: &Ca) -> CertificateDer<'static> {
        let params = CertificateParams::new(vec!["api.test".to_string()]).expect("params");
        let key = KeyPair::generate().expect("key");
        params
            .signed_by(&key, &signer.cert, &signer.key)
            .expect("leaf")
            .der()
            .clone()
    }

    fn now() -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    }

    #[test]
    fn the_served_chain_must_sign_the_leaf_in_order() {
        let root = ca("root", None, None);
        let inter = ca("inter", Some(&root), None);
        let good = leaf(&inter);
        let fault = |chain: &[&CertificateDer<'static>]| {
            let chain: Vec<_> = chain.iter().map(|c| (*c).clone()).collect();
            chain_fault(&chain, now())
        };
        assert!(fault(&[&good]).is_none(), "a leaf alone");
        assert!(
            fault(&[&good, &inter.der]).is_none(),
            "leaf and intermediate"
        );
        assert!(
            fault(&[&good, &inter.der, &root.der]).is_none(),
            "the whole chain"
        );

        let broken = |f: Option<ChainFault>, needle: &str| match f {
            Some(ChainFault::Broken(why)) => assert!(why.contains(needle), "{why}"),
            Some(ChainFault::OutOfDate(why)) => panic!("broken, not out of date: {why}"),
            None => panic!("accepted; wanted {needle}"),
        };
        let unrelated = ca("other", Some(&root), None);
        broken(
            fault(&[&good, &unrelated.der]),
            "is not the issuer of certificate 1",
        );
        broken(fault(&[&good, &root.der, &inter.der]), "is not the issuer");
        // Same name, another key: what a CA's re-keyed intermediate looks like.
        let rekeyed = ca("inter", Some(&root), None);
        broken(fault(&[&good, &rekeyed.der, &root.der]), "does not verify");
        let garbage = CertificateDer::from(b"\x30\x03\x02\x01\x00".to_vec());
        broken(
            fault(&[&good, &garbage]),
            "certificate 2 of the file is not a readable",
        );

        let stale = ca(
            "stale",
            Some(&root),
            Some(SystemTime::now() - Duration::from_secs(60)),
        );
        match fault(&[&leaf(&stale), &stale.der, &root.der]) {
            Some(ChainFault::OutOfDate(why)) => assert!(why.contains("validity"), "{why}"),
            _ => panic!("an expired intermediate is a warning"),
        }
    }
}
