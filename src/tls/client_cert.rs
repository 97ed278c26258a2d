//! Client certificates (mTLS): who a verified certificate says the client is.
//!
//! rustls has verified the chain against `client_ca_file` before the handshake completes (with
//! `client_auth: optional` a client may send none, never an unverified one), so a certificate
//! present after the handshake is trusted. Its subject is read once per connection, in the
//! handshake callback, and travels with the connection's TLS digest; each request on that
//! connection (h1 keep-alive or h2 streams) reads it without parsing anything.

use crate::auth::Identity;
use crate::observability::metrics::METRICS;
use http::HeaderName;
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use pingora::protocols::Digest;
use std::any::Any;
use std::sync::Arc;
use x509_parser::extensions::GeneralName;

/// Header the upstream receives with the certificate's subject, written by the gateway only
/// (a client's own spelling of it is stripped like every identity header).
pub const SUBJECT_HEADER: &str = "x-client-cert-subject";

/// A verified client certificate, as the requests on its connection see it.
#[derive(Debug)]
pub struct ClientCert {
    /// The identity a route with `auth: {mtls: true}` admits: consumer = the subject, no roles.
    pub identity: Arc<Identity>,
}

impl ClientCert {
    pub fn subject(&self) -> &str {
        &self.identity.consumer
    }

    fn from_subject(subject: String) -> ClientCert {
        let forward = vec![
            (HeaderName::from_static(SUBJECT_HEADER), subject.clone()),
            (HeaderName::from_static("x-consumer"), subject.clone()),
        ];
        ClientCert {
            identity: Arc::new(Identity {
                provider: "mtls".into(),
                consumer: subject,
                roles: Vec::new(),
                scopes: Vec::new(),
                forward,
                expires_at: None,
                claims: Vec::new(),
            }),
        }
    }

    /// The certificate of the connection a request came on, if it presented one.
    pub fn of(digest: Option<&Digest>) -> Option<Arc<ClientCert>> {
        let ssl = digest?.ssl_digest.as_ref()?;
        let found = ssl.extension.get::<Arc<ClientCert>>()?;
        Some(found.clone())
    }
}

/// The subject a certificate names its holder by: the subject's common name, else (without
/// one) its first subject alternative name (DNS, e-mail or URI).
///
/// `None`, so the certificate identifies no one, when that name is not printable ASCII with
/// no whitespace at either end, or the common name cannot be read as text. Dropping what a
/// header cannot carry would make `adminé`, `ad\u{200b}min`, `admin\0` and `admin` one
/// consumer, minted by whoever gets any of those names signed.
pub fn subject_of(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = match cert.subject().iter_common_name().next() {
        Some(cn) => Some(cn.as_str().ok()?.to_owned()),
        None => None,
    };
    let san = || {
        let san = cert.subject_alternative_name().ok()??;
        san.value.general_names.iter().find_map(|n| match n {
            GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) => {
                Some((*s).to_owned())
            }
            _ => None,
        })
    };
    let subject = cn.or_else(san)?;
    let printable = subject.bytes().all(|b| (b' '..=b'~').contains(&b));
    (printable && !subject.is_empty() && subject.trim() == subject).then_some(subject)
}

/// Pingora's post-handshake hook on the TLS listeners: counts the handshake and attaches the
/// client certificate's subject to the connection.
pub struct HandshakeObserver;

#[async_trait::async_trait]
impl TlsAccept for HandshakeObserver {
    async fn handshake_complete_callback(
        &self,
        tls: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        METRICS.tls_handshakes.with_label_values(&["ok"]).inc();
        let subject = subject_of(tls.peer_certificate_der()?)?;
        let cert: Arc<ClientCert> = Arc::new(ClientCert::from_subject(subject));
        Some(Arc::new(cert))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

    fn der(cn: Option<&str>, sans: Vec<SanType>) -> Vec<u8> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        if let Some(cn) = cn {
            dn.push(DnType::CommonName, cn);
        }
        params.distinguished_name = dn;
        params.subject_alt_names = sans;
        let key = KeyPair::generate().expect("key");
        params.self_signed(&key).expect("cert").der().to_vec()
    }

    #[test]
    fn common_name_first_then_the_first_alternative_name() {
        let dns = SanType::DnsName("svc.internal".try_into().expect("dns"));
        assert_eq!(
            subject_of(&der(Some("billing-service"), vec![dns.clone()])).as_deref(),
            Some("billing-service")
        );
        assert_eq!(
            subject_of(&der(None, vec![dns])).as_deref(),
            Some("svc.internal")
        );
        let email = SanType::Rfc822Name("ops@example.com".try_into().expect("email"));
        assert_eq!(
            subject_of(&der(None, vec![email])).as_deref(),
            Some("ops@example.com")
        );
    }

    #[test]
    fn no_usable_name_or_no_certificate_gives_no_subject() {
        assert_eq!(subject_of(&der(None, vec![])), None);
        assert_eq!(subject_of(b"not a certificate"), None);
    }

    #[test]
    fn a_subject_is_a_header_value_and_the_identity_forwards_it() {
        for cn in [
            "evil\r\nX-User-Id: root",
            "admin\u{e9}",
            "ad\u{200b}min",
            "admin\0",
            "  alice  ",
            "ali\tce",
            "\u{430}dmin",
        ] {
            assert_eq!(subject_of(&der(Some(cn), vec![])), None, "{cn:?}");
        }
        assert_eq!(
            subject_of(&der(Some("Billing Service"), vec![])).as_deref(),
            Some("Billing Service")
        );
        let cert = ClientCert::from_subject("svc".into());
        assert_eq!(cert.subject(), "svc");
        let names: Vec<&str> = cert
            .identity
            .forward
            .iter()
            .map(|(n, _)| n.as_str())
            .collect();
        assert_eq!(names, [SUBJECT_HEADER, "x-consumer"]);
    }
}
