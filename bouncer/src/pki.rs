//! The control plane's certificates: the operator's CA (made once by `sticky-bouncer init-ca`)
//! and what the launcher issues from it on every start: the control service's certificate
//! (server, and client towards the other replicas) and this bouncer's Envoy's client
//! certificate. Private keys are written readable by their owner only.

use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use sticky_envoy_bootstrap::CONTROL_SERVER_NAME;
use time::{Duration, OffsetDateTime};

/// How long the CA is valid.
const CA_DAYS: i64 = 3650;
/// How long an issued certificate is valid (the launcher issues new ones on every start).
const LEAF_DAYS: i64 = 397;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("issuing a certificate: {0}")]
    Issue(#[from] rcgen::Error),
}

fn file_error(path: &Path, reason: impl std::fmt::Display) -> PkiError {
    PkiError::File {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// Writes `text` to `path`; with `secret`, readable by its owner only.
fn write(path: &Path, text: &str, secret: bool, replace: bool) -> Result<(), PkiError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if replace {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    if secret {
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    }
    let mut file = options.open(path).map_err(|e| file_error(path, e))?;
    file.write_all(text.as_bytes()).map_err(|e| file_error(path, e))?;
    file.sync_all().map_err(|e| file_error(path, e))
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    // A clock a little behind on a peer still accepts it.
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(days);
}

/// Makes a CA in `dir` (`ca.pem`, and `ca-key.pem` readable by its owner only); refuses to
/// replace one.
pub fn init_ca(dir: &Path) -> Result<(PathBuf, PathBuf), PkiError> {
    let (certificate, key) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
    make_ca(&certificate, &key)?;
    Ok((certificate, key))
}

/// Makes a CA at `certificate` and `key` (readable by its owner only); refuses to replace one.
pub fn make_ca(certificate: &Path, key: &Path) -> Result<(), PkiError> {
    for path in [certificate, key] {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| file_error(dir, e))?;
        }
    }
    for path in [certificate, key] {
        if path.exists() {
            return Err(file_error(path, "exists already; a CA is made once"));
        }
    }
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "sticky-bouncer control plane CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut params, CA_DAYS);
    let signing = KeyPair::generate()?;
    let ca = params.self_signed(&signing)?;
    write(key, &signing.serialize_pem(), true, false)?;
    write(certificate, &ca.pem(), false, false)
}

/// The operator's CA, read from its files.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
}

/// An issued certificate's files.
#[derive(Debug, Clone)]
pub struct Issued {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
}

impl Ca {
    /// The CA at `certificate` and `key`, made there first when neither exists (a first start).
    pub fn read_or_make(certificate: &Path, key: &Path) -> Result<Self, PkiError> {
        if !certificate.exists() && !key.exists() {
            make_ca(certificate, key)?;
            tracing::info!(certificate = %certificate.display(), "made the control plane's CA; the API's clients verify the control service with it");
        }
        Self::read(certificate, key)
    }

    pub fn read(certificate: &Path, private_key: &Path) -> Result<Self, PkiError> {
        let certificate_pem = std::fs::read_to_string(certificate).map_err(|e| file_error(certificate, e))?;
        let key_pem = std::fs::read_to_string(private_key).map_err(|e| file_error(private_key, e))?;
        let key =
            KeyPair::from_pem(&key_pem).map_err(|e| file_error(private_key, format!("not a private key: {e}")))?;
        let issuer = Issuer::from_ca_cert_pem(&certificate_pem, key)
            .map_err(|e| file_error(certificate, format!("not a CA certificate: {e}")))?;
        Ok(Self { issuer })
    }

    fn issue(
        &self,
        mut params: CertificateParams,
        common_name: &str,
        usages: Vec<ExtendedKeyUsagePurpose>,
        dir: &Path,
        name: &str,
    ) -> Result<Issued, PkiError> {
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.extended_key_usages = usages;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity(&mut params, LEAF_DAYS);
        let key = KeyPair::generate()?;
        let certificate = params.signed_by(&key, &self.issuer)?;
        std::fs::create_dir_all(dir).map_err(|e| file_error(dir, e))?;
        let issued = Issued {
            certificate: dir.join(format!("{name}.pem")),
            private_key: dir.join(format!("{name}-key.pem")),
        };
        write(&issued.private_key, &key.serialize_pem(), true, true)?;
        write(&issued.certificate, &certificate.pem(), false, true)?;
        Ok(issued)
    }

    /// The control service's certificate: [`CONTROL_SERVER_NAME`] (what Envoys verify), the
    /// address it listens on and `names` (what the API's clients reach it by); for serving, and
    /// for asking the other replicas.
    pub fn issue_control(&self, listen: IpAddr, names: &[String], dir: &Path) -> Result<Issued, PkiError> {
        let mut sans = vec![CONTROL_SERVER_NAME.to_owned(), listen.to_string()];
        if listen.is_loopback() {
            sans.push("localhost".to_owned());
        }
        sans.extend(names.iter().cloned());
        let params = CertificateParams::new(sans)?;
        self.issue(
            params,
            CONTROL_SERVER_NAME,
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
            dir,
            "control",
        )
    }

    /// An Envoy's client certificate, for node `node_id`.
    pub fn issue_envoy(&self, node_id: &str, dir: &Path) -> Result<Issued, PkiError> {
        self.issue(
            CertificateParams::default(),
            &format!("envoy {node_id}"),
            vec![ExtendedKeyUsagePurpose::ClientAuth],
            dir,
            "envoy",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_is_made_once_with_its_key_for_its_owner_then_issues() {
        let dir = tempfile::tempdir().unwrap();
        let (certificate, key) = init_ca(dir.path()).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
        let again = init_ca(dir.path()).unwrap_err().to_string();
        assert!(again.contains("ca.pem") && again.contains("made once"), "{again}");
        let ca = Ca::read(&certificate, &key).unwrap();
        let issued = ca
            .issue_control(
                "127.0.0.1".parse().unwrap(),
                &["bouncer.example".to_owned()],
                dir.path(),
            )
            .unwrap();
        let text = std::fs::read_to_string(&issued.certificate).unwrap();
        assert!(text.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(
            std::fs::metadata(&issued.private_key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // Issued again on the next start: replaced.
        ca.issue_envoy("bouncer", dir.path()).unwrap();
        ca.issue_envoy("bouncer", dir.path()).unwrap();
        let swapped = Ca::read(&key, &certificate).err().unwrap().to_string();
        assert!(
            swapped.contains("ca-key.pem") || swapped.contains("ca.pem"),
            "{swapped}"
        );
    }
}
