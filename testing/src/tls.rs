//! Certificates for the tests' TLS: a test CA (root and intermediate, made with rcgen) that
//! issues server certificates, and the bad uploads an operator might make. The tests' clients
//! trust the root ([`TestCa::root_pem`]).

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SignatureAlgorithm};
use sticky_envoy_bootstrap::CONTROL_SERVER_NAME;
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

/// The control plane's certificates in a directory, as the launcher issues them: a CA
/// (`ca.pem`), the control service's certificate (`control.pem`, `control-key.pem`; it names
/// [`CONTROL_SERVER_NAME`], 127.0.0.1 and localhost) and an Envoy's client certificate
/// (`envoy.pem`, `envoy-key.pem`); and, to be refused, a client certificate of another CA
/// (`stranger.pem`, `stranger-key.pem`).
#[derive(Clone)]
pub struct ControlPlaneCa {
    pub dir: std::path::PathBuf,
    ca: std::sync::Arc<CertifiedIssuer<'static, KeyPair>>,
    /// Trusting the CA, presenting no certificate (an API client).
    client: ureq::Agent,
    /// Trusting the CA, presenting the Envoy's certificate (a peer).
    peer: ureq::Agent,
}

impl std::fmt::Debug for ControlPlaneCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlaneCa").field("dir", &self.dir).finish()
    }
}

/// A TLS set-up of the tests that did not work out.
pub type TlsSetupError = Box<dyn std::error::Error + Send + Sync>;

impl ControlPlaneCa {
    pub fn new(dir: &std::path::Path) -> Result<Self, TlsSetupError> {
        use rcgen::ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
        std::fs::create_dir_all(dir)?;
        let write = |name: &str, text: &str| std::fs::write(dir.join(name), text);
        let ca = CertifiedIssuer::self_signed(ca_params("sticky control plane test CA"), KeyPair::generate()?)?;
        let stranger_ca = CertifiedIssuer::self_signed(ca_params("another CA"), KeyPair::generate()?)?;
        write("ca.pem", &ca.pem())?;
        write("stranger-ca.pem", &stranger_ca.pem())?;
        for (name, (certificate, key)) in [
            (
                "control",
                control_plane_leaf(control_names(), vec![ServerAuth, ClientAuth], &ca, "control")?,
            ),
            ("envoy", control_plane_leaf(Vec::new(), vec![ClientAuth], &ca, "envoy")?),
            // Everything right but the issuer.
            (
                "stranger",
                control_plane_leaf(control_names(), vec![ServerAuth, ClientAuth], &stranger_ca, "envoy")?,
            ),
        ] {
            write(&format!("{name}.pem"), &certificate)?;
            write(&format!("{name}-key.pem"), &key)?;
        }
        let client = agent_trusting(&dir.join("ca.pem"), None)?;
        let peer = agent_trusting(
            &dir.join("ca.pem"),
            Some((&dir.join("envoy.pem"), &dir.join("envoy-key.pem"))),
        )?;
        Ok(Self {
            dir: dir.to_owned(),
            ca: std::sync::Arc::new(ca),
            client,
            peer,
        })
    }

    /// A renewal: a new certificate and key for the control service from the same CA, written
    /// over its files (the key first, as an operator's tooling would).
    pub fn renew_control(&self) -> Result<(), TlsSetupError> {
        use rcgen::ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
        let (certificate, key) =
            control_plane_leaf(control_names(), vec![ServerAuth, ClientAuth], &self.ca, "control")?;
        std::fs::write(self.file("control-key.pem"), key)?;
        std::fs::write(self.file("control.pem"), certificate)?;
        Ok(())
    }

    pub fn file(&self, name: &str) -> std::path::PathBuf {
        self.dir.join(name)
    }

    /// The control service's flags.
    pub fn control_args(&self) -> Vec<String> {
        [
            ("--tls-certificate", "control.pem"),
            ("--tls-private-key", "control-key.pem"),
            ("--tls-client-ca", "ca.pem"),
        ]
        .into_iter()
        .flat_map(|(flag, file)| [flag.to_owned(), self.file(file).display().to_string()])
        .collect()
    }

    /// An agent trusting the CA; presenting the Envoy's certificate when `peer`.
    pub fn agent(&self, peer: bool) -> ureq::Agent {
        if peer { self.peer.clone() } else { self.client.clone() }
    }

    /// An agent trusting the CA, presenting certificate `name` (`envoy`, `stranger`).
    pub fn agent_presenting(&self, name: &str) -> Result<ureq::Agent, TlsSetupError> {
        agent_trusting(
            &self.file("ca.pem"),
            Some((
                &self.file(&format!("{name}.pem")),
                &self.file(&format!("{name}-key.pem")),
            )),
        )
    }
}

/// What the control service's certificate names.
fn control_names() -> Vec<String> {
    vec![
        CONTROL_SERVER_NAME.to_owned(),
        "127.0.0.1".to_owned(),
        "localhost".to_owned(),
    ]
}

/// A leaf of the control plane for `sans` with `usages`, by `issuer`: (certificate, key) PEM.
fn control_plane_leaf(
    sans: Vec<String>,
    usages: Vec<rcgen::ExtendedKeyUsagePurpose>,
    issuer: &CertifiedIssuer<'static, KeyPair>,
    name: &str,
) -> Result<(String, String), rcgen::Error> {
    let mut params = CertificateParams::new(sans)?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = usages;
    let validity = Validity::days(30);
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    let key = KeyPair::generate()?;
    let certificate = params.signed_by(&key, issuer)?;
    Ok((certificate.pem(), key.serialize_pem()))
}

/// An HTTPS agent trusting only the CA in `ca` (PEM), presenting `identity` (certificate and
/// key files) when given.
pub fn agent_trusting(
    ca: &std::path::Path,
    identity: Option<(&std::path::Path, &std::path::Path)>,
) -> Result<ureq::Agent, TlsSetupError> {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(ca)? {
        roots.add(certificate?)?;
    }
    #[allow(deprecated)]
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match identity {
        Some((certificate, key)) => {
            let chain = CertificateDer::pem_file_iter(certificate)?.collect::<Result<Vec<_>, _>>()?;
            builder.with_client_auth_cert(chain, PrivateKeyDer::from_pem_file(key)?)?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(ureq::AgentBuilder::new()
        .timeout(std::time::Duration::from_secs(60))
        .tls_config(std::sync::Arc::new(config))
        .build())
}
