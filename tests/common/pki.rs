//! A throwaway PKI for the TLS tests: a CA made by rcgen in a temp dir and the leaves it
//! signs (server and client certificates), written as PEM files; never checked in. Plus a
//! bounded runner for the CLI clients (curl, openssl) those tests drive.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime};

/// A throwaway CA and the certificates it signs, written as PEM files into a temp dir.
pub struct Pki {
    pub dir: tempfile::TempDir,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

/// Paths of one certificate chain (leaf + CA) and its key.
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    pub fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "tollgate test CA");
        let ca_key = KeyPair::generate().expect("CA key");
        let ca = params.self_signed(&ca_key).expect("CA cert");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write CA");
        Pki { dir, ca, ca_key }
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// A leaf for `names` (DNS names or IP addresses), named by its first name.
    pub fn leaf(&self, file: &str, names: &[&str]) -> Issued {
        self.issue(file, names.first().copied().unwrap_or(file), names, None)
    }

    /// A leaf for `names` with common name `cn`, valid until `not_after` (default: rcgen's).
    pub fn issue(
        &self,
        file: &str,
        cn: &str,
        names: &[&str],
        not_after: Option<SystemTime>,
    ) -> Issued {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, cn);
        if let Some(t) = not_after {
            params.not_before = (t - Duration::from_secs(30 * 24 * 3600)).into();
            params.not_after = t.into();
        }
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.ca, &self.ca_key)
            .expect("sign leaf");
        let issued = Issued {
            cert: self.dir.path().join(format!("{file}.pem")),
            key: self.dir.path().join(format!("{file}.key")),
        };
        // The chain as served: leaf first, then the CA.
        std::fs::write(&issued.cert, format!("{}{}", cert.pem(), self.ca.pem())).expect("cert");
        std::fs::write(&issued.key, key.serialize_pem()).expect("key");
        issued
    }
}

pub fn cert_yaml(c: &Issued, extra: &str) -> String {
    format!(
        "{{cert_file: \"{}\", key_file: \"{}\"{extra}}}",
        c.cert.display(),
        c.key.display()
    )
}

/// Run a command with a bounded wait; its output.
pub fn run(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{cmd:?} did not finish within 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
