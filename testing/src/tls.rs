//! Certificates for the tests' TLS: a test CA (root and intermediate, made with rcgen) that
//! issues server certificates, and the bad uploads an operator might make. The tests' clients
//! trust the root ([`TestCa::root_pem`]).

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SignatureAlgorithm};
use time::{Duration, OffsetDateTime};

/// The key algorithms a test may ask for.
pub use rcgen::{PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519};

/// What an operator uploads for one listener: PEM texts.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    pub body: String,
    /// Its intermediate (the leaf's issuer).
    pub chain: String,
    pub private_key: String,
}

impl IssuedCertificate {
    /// The Query API parameters of IAM's UploadServerCertificate for it, under `name`.
    pub fn upload_params<'a>(&'a self, name: &'a str) -> [(&'a str, &'a str); 5] {
        [
            ("Version", "2010-05-08"),
            ("ServerCertificateName", name),
            ("CertificateBody", &self.body),
            ("CertificateChain", &self.chain),
            ("PrivateKey", &self.private_key),
        ]
    }
}

/// A root and an intermediate CA; leaves are issued by the intermediate.
pub struct TestCa {
    root: CertifiedIssuer<'static, KeyPair>,
    intermediate: CertifiedIssuer<'static, KeyPair>,
}

/// When a leaf is valid.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From a day ago to `days` from now.
    pub fn days(days: i64) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            not_before: now - Duration::days(1),
            not_after: now + Duration::days(days),
        }
    }

    /// Ended yesterday.
    pub fn expired() -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            not_before: now - Duration::days(30),
            not_after: now - Duration::days(1),
        }
    }
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Longer than any leaf it issues (the demo keeps its CA).
    let validity = Validity::days(3650);
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    params
}

impl TestCa {
    /// A fresh CA; `name` goes into its subjects.
    pub fn new(name: &str) -> Result<Self, rcgen::Error> {
        let root = CertifiedIssuer::self_signed(ca_params(&format!("{name} test root")), KeyPair::generate()?)?;
        let intermediate = CertifiedIssuer::signed_by(
            ca_params(&format!("{name} test intermediate")),
            KeyPair::generate()?,
            &root,
        )?;
        Ok(Self { root, intermediate })
    }

    /// The root, for clients to trust.
    pub fn root_pem(&self) -> String {
        self.root.pem()
    }

    /// The intermediate, PEM (the chain of every leaf).
    pub fn intermediate_pem(&self) -> String {
        self.intermediate.pem()
    }

    /// A P-256 server certificate for `hosts`, valid for 30 days.
    pub fn issue(&self, hosts: &[&str]) -> Result<IssuedCertificate, rcgen::Error> {
        self.issue_with(hosts, &rcgen::PKCS_ECDSA_P256_SHA256, Validity::days(30))
    }

    /// A server certificate for `hosts` with a key of `algorithm`, valid over `validity`.
    pub fn issue_with(
        &self,
        hosts: &[&str],
        algorithm: &'static SignatureAlgorithm,
        validity: Validity,
    ) -> Result<IssuedCertificate, rcgen::Error> {
        let mut params = CertificateParams::new(hosts.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>())?;
        if let Some(first) = hosts.first() {
            params.distinguished_name.push(DnType::CommonName, *first);
        }
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        let key = KeyPair::generate_for(algorithm)?;
        let leaf = params.signed_by(&key, &self.intermediate)?;
        Ok(IssuedCertificate {
            body: leaf.pem(),
            chain: self.intermediate.pem(),
            private_key: key.serialize_pem(),
        })
    }
}

/// A self-signed RSA certificate of `bits` for `host`, made by the openssl command (ring, under
/// rcgen, makes no RSA keys).
pub fn openssl_rsa_certificate(host: &str, bits: u32) -> std::io::Result<IssuedCertificate> {
    let dir = std::env::temp_dir().join(format!("sticky-rsa-{}-{bits}-{host}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            &format!("rsa:{bits}"),
            "-nodes",
            "-days",
            "2",
            "-subj",
        ])
        .arg(format!("/CN={host}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()?;
    if !status.success() {
        return Err(std::io::Error::other(format!(
            "openssl req for an RSA-{bits} certificate failed: {status}"
        )));
    }
    let issued = IssuedCertificate {
        body: std::fs::read_to_string(&cert)?,
        chain: String::new(),
        private_key: std::fs::read_to_string(&key)?,
    };
    let _ = std::fs::remove_dir_all(&dir);
    Ok(issued)
}
