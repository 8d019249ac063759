//! Server certificates: what an upload must be (PEM, a usable key that matches the certificate,
//! a chain in order, dates that hold, a key strong enough) and how a stored one is named (IAM's
//! ARN, Outscale's ORN). Pure: parsing and checks, no I/O. The private key is kept apart in
//! [`PrivateKeyPem`], which never prints and is never serialised: the store seals it, Envoy gets
//! it over SDS, and no API answers it.

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{PemObject, SectionKind};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use x509_parser::oid_registry::{OID_EC_P256, OID_NIST_EC_P384};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;

/// The account every ARN and ORN of this service names (the bouncer has one tenant).
pub const ACCOUNT_ID: &str = "000000000000";
/// IAM's bounds on an upload's parts, in characters.
pub const MAX_BODY_LEN: usize = 16_384;
pub const MAX_PRIVATE_KEY_LEN: usize = 16_384;
/// IAM allows 2 MiB of chain; a chain of ten intermediates is far below this one.
pub const MAX_CHAIN_LEN: usize = 262_144;
/// Most certificates one service holds (IAM's default quota).
pub const MAX_CERTIFICATES: usize = 20;
/// The weakest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;

/// Why an upload is refused (IAM's codes: `From<CertificateError> for ApiError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Malformed(String),
    #[error("the private key does not match the certificate's public key")]
    KeyMismatch,
}

fn malformed(message: impl Into<String>) -> CertificateError {
    CertificateError::Malformed(message.into())
}

/// A PEM private key. Never printed (`Debug` says `[redacted]`), never serialised by serde.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKeyPem(String);

impl PrivateKeyPem {
    pub fn new(pem: String) -> Self {
        Self(pem)
    }

    /// The PEM text: for Envoy (over SDS) and the store's sealing only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for PrivateKeyPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A stored server certificate. Its `id` is fixed for its life: listeners name it by id, so a
/// rename (UpdateServerCertificate) keeps them served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerCertificate {
    pub id: String,
    pub name: String,
    pub path: String,
    /// The leaf certificate, PEM.
    pub body: String,
    /// Its intermediates, leaf's issuer first, PEM (empty: none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub chain: String,
    #[serde(skip)]
    pub private_key: Option<PrivateKeyPem>,
    /// Unix seconds.
    pub uploaded_at: i64,
    pub not_before: i64,
    pub not_after: i64,
    /// The names it serves (its DNS subject alternative names, else its common name).
    #[serde(default)]
    pub hosts: Vec<String>,
}

impl ServerCertificate {
    /// IAM's ARN, which ELB's `SSLCertificateId` names.
    pub fn arn(&self) -> String {
        format!("arn:aws:iam::{ACCOUNT_ID}:server-certificate{}{}", self.path, self.name)
    }

    /// Outscale's ORN, which OAPI's `ServerCertificateId` names.
    pub fn orn(&self) -> String {
        format!(
            "orn:ows:idauth::{ACCOUNT_ID}:server-certificate{}{}",
            self.path, self.name
        )
    }

    /// Whether `reference` (an ARN or an ORN) names this certificate.
    pub fn is_named_by(&self, reference: &str) -> bool {
        reference == self.arn() || reference == self.orn()
    }

    /// Leaf then chain, as a TLS server sends them.
    pub fn full_chain(&self) -> String {
        let mut pem = self.body.clone();
        if !pem.ends_with('\n') {
            pem.push('\n');
        }
        pem.push_str(&self.chain);
        pem
    }
}

/// A certificate name: 1-128 of letters, digits and `+=,.@-_` (IAM and OAPI).
pub fn validate_name(field: &str, name: &str) -> Result<(), CertificateError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@-_".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(CertificateError::Invalid(format!(
            "{field} {name:?} must be 1 to 128 letters, digits or '+=,.@-_'"
        )))
    }
}

/// A path: `/`, or `/…/` of visible ASCII, at most 512 characters (IAM); `None` is `/`.
pub fn validate_path(field: &str, path: Option<&str>) -> Result<String, CertificateError> {
    let path = path.unwrap_or("/");
    let ok = path.len() <= 512
        && path.starts_with('/')
        && path.ends_with('/')
        && path.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if ok {
        Ok(path.to_owned())
    } else {
        Err(CertificateError::Invalid(format!(
            "{field} {path:?} must be '/' or begin and end with '/', in visible ASCII, at most 512 characters"
        )))
    }
}

/// What a client uploads.
#[derive(Clone)]
pub struct Upload {
    pub name: String,
    pub path: Option<String>,
    pub body: String,
    pub chain: Option<String>,
    pub private_key: String,
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload")
            .field("name", &self.name)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Checks an upload whole at Unix second `now`; the certificate it makes has id `id`.
pub fn validate(upload: Upload, id: String, now: i64) -> Result<ServerCertificate, CertificateError> {
    validate_name("ServerCertificateName", &upload.name)?;
    let path = validate_path("Path", upload.path.as_deref())?;
    for (field, text, max) in [
        ("CertificateBody", upload.body.as_str(), MAX_BODY_LEN),
        ("PrivateKey", upload.private_key.as_str(), MAX_PRIVATE_KEY_LEN),
        ("CertificateChain", upload.chain.as_deref().unwrap_or(""), MAX_CHAIN_LEN),
    ] {
        if text.len() > max {
            return Err(CertificateError::Invalid(format!(
                "{field} is {} characters long; at most {max}",
                text.len()
            )));
        }
    }
    let leaf_der = certificates("CertificateBody", &upload.body)?;
    let [leaf_der] = <[CertificateDer<'static>; 1]>::try_from(leaf_der).map_err(|all| {
        malformed(format!(
            "CertificateBody holds {} certificates; give one, and its intermediates as the chain",
            all.len()
        ))
    })?;
    let chain_der = match upload.chain.as_deref() {
        Some(chain) if !chain.trim().is_empty() => certificates("CertificateChain", chain)?,
        _ => Vec::new(),
    };
    let key = private_key(&upload.private_key)?;

    let leaf = parse("CertificateBody", &leaf_der)?;
    check_key_strength(&leaf)?;
    let mut issued = &leaf;
    let chain: Vec<X509Certificate<'_>> = chain_der
        .iter()
        .enumerate()
        .map(|(i, der)| parse(&format!("CertificateChain's certificate {}", i + 1), der))
        .collect::<Result<_, _>>()?;
    for (i, issuer) in chain.iter().enumerate() {
        if issued.issuer().as_raw() != issuer.subject().as_raw()
            || issued.verify_signature(Some(issuer.public_key())).is_err()
        {
            return Err(malformed(format!(
                "CertificateChain is out of order: its certificate {} ({}) did not sign {} ({}); \
                 give the leaf's issuer first, then its issuer, and so on",
                i + 1,
                issuer.subject(),
                if i == 0 {
                    "the certificate".to_owned()
                } else {
                    format!("certificate {i}")
                },
                issued.subject()
            )));
        }
        issued = issuer;
    }
    for (what, cert) in std::iter::once(("the certificate".to_owned(), &leaf)).chain(
        chain
            .iter()
            .enumerate()
            .map(|(i, c)| (format!("chain certificate {}", i + 1), c)),
    ) {
        let validity = cert.validity();
        if validity.not_after.timestamp() < now {
            return Err(malformed(format!(
                "{what} ({}) expired on {}",
                cert.subject(),
                validity.not_after
            )));
        }
        if validity.not_before.timestamp() > now {
            return Err(malformed(format!(
                "{what} ({}) is not valid before {}",
                cert.subject(),
                validity.not_before
            )));
        }
    }
    keys_match(&leaf_der, key)?;
    Ok(ServerCertificate {
        id,
        name: upload.name,
        path,
        body: pem("CERTIFICATE", &leaf_der),
        chain: chain_der.iter().map(|der| pem("CERTIFICATE", der)).collect(),
        private_key: Some(PrivateKeyPem::new(upload.private_key.trim().to_owned() + "\n")),
        uploaded_at: now,
        not_before: leaf.validity().not_before.timestamp(),
        not_after: leaf.validity().not_after.timestamp(),
        hosts: hosts(&leaf),
    })
}

/// The certificates of a PEM text: at least one, and nothing else in it.
fn certificates(field: &str, text: &str) -> Result<Vec<CertificateDer<'static>>, CertificateError> {
    let sections = sections(field, text)?;
    let mut certificates = Vec::with_capacity(sections.len());
    for (kind, der) in sections {
        if kind != SectionKind::Certificate {
            return Err(malformed(format!(
                "{field} holds a {kind:?} section; it takes PEM CERTIFICATE blocks only"
            )));
        }
        certificates.push(CertificateDer::from(der));
    }
    if certificates.is_empty() {
        return Err(malformed(format!("{field} holds no PEM CERTIFICATE block")));
    }
    Ok(certificates)
}

/// Every PEM section of `text`, refusing one this parser does not know (an encrypted key…).
fn sections(field: &str, text: &str) -> Result<Vec<(SectionKind, Vec<u8>)>, CertificateError> {
    let mut sections = Vec::new();
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(text.as_bytes()) {
        sections.push(section.map_err(|e| malformed(format!("{field} is not valid PEM: {e}")))?);
    }
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") || text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(malformed(format!(
            "{field} is encrypted; give the key unencrypted (it is sealed at rest here)"
        )));
    }
    let begun = text.matches("-----BEGIN ").count();
    if begun != sections.len() {
        return Err(malformed(format!(
            "{field} holds {begun} PEM blocks of which {} are readable certificates or keys",
            sections.len()
        )));
    }
    Ok(sections)
}

/// The one private key of a PEM text (PKCS#8, PKCS#1 RSA or SEC1 EC).
fn private_key(text: &str) -> Result<PrivateKeyDer<'static>, CertificateError> {
    let mut keys = Vec::new();
    for (kind, der) in sections("PrivateKey", text)? {
        let key = match kind {
            SectionKind::PrivateKey => PrivateKeyDer::Pkcs8(der.into()),
            SectionKind::RsaPrivateKey => PrivateKeyDer::Pkcs1(der.into()),
            SectionKind::EcPrivateKey => PrivateKeyDer::Sec1(der.into()),
            other => {
                return Err(malformed(format!(
                    "PrivateKey holds a {other:?} section; it takes one PEM private key"
                )));
            }
        };
        keys.push(key);
    }
    match <[PrivateKeyDer<'static>; 1]>::try_from(keys) {
        Ok([key]) => Ok(key),
        Err(keys) if keys.is_empty() => Err(malformed("PrivateKey holds no PEM private key")),
        Err(keys) => Err(malformed(format!("PrivateKey holds {} keys; give one", keys.len()))),
    }
}

fn parse<'a>(what: &str, der: &'a CertificateDer<'_>) -> Result<X509Certificate<'a>, CertificateError> {
    match X509Certificate::from_der(der.as_ref()) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(malformed(format!("{what} has bytes after its certificate"))),
        Err(e) => Err(malformed(format!("{what} is not an X.509 certificate: {e}"))),
    }
}

/// RSA of at least [`MIN_RSA_BITS`], or ECDSA on P-256 or P-384: what ELB and current scanners accept.
fn check_key_strength(leaf: &X509Certificate<'_>) -> Result<(), CertificateError> {
    let spki = leaf.public_key();
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) if rsa.key_size() >= MIN_RSA_BITS => Ok(()),
        Ok(PublicKey::RSA(rsa)) => Err(malformed(format!(
            "the certificate's RSA key has {} bits; at least {MIN_RSA_BITS}",
            rsa.key_size()
        ))),
        Ok(PublicKey::EC(_)) => {
            let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok());
            match curve {
                Some(oid) if oid == OID_EC_P256 || oid == OID_NIST_EC_P384 => Ok(()),
                _ => Err(malformed(
                    "the certificate's ECDSA key is on a curve other than P-256 or P-384",
                )),
            }
        }
        _ => Err(malformed(
            "the certificate's key is neither RSA nor ECDSA (P-256, P-384), which the listeners serve",
        )),
    }
}

fn keys_match(leaf: &CertificateDer<'static>, key: PrivateKeyDer<'static>) -> Result<(), CertificateError> {
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| malformed(format!("PrivateKey is not a usable RSA or ECDSA key: {e}")))?;
    match CertifiedKey::new(vec![leaf.clone()], signing).keys_match() {
        Ok(()) => Ok(()),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(CertificateError::KeyMismatch)
        }
        Err(e) => Err(malformed(format!(
            "cannot tell whether the key matches the certificate: {e}"
        ))),
    }
}

fn hosts(leaf: &X509Certificate<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let mut names: Vec<String> = leaf
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some((*d).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        names.extend(
            leaf.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok().map(str::to_owned)),
        );
    }
    names
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in text.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A new certificate id, as IAM draws them: `ASCA` and 17 capitals or digits.
pub fn new_id() -> Result<String, getrandom::Error> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut bytes = [0u8; 17];
    getrandom::fill(&mut bytes)?;
    Ok(std::iter::once("ASCA".to_owned())
        .chain(
            bytes
                .iter()
                .map(|b| char::from(ALPHABET[usize::from(b % 32)]).to_string()),
        )
        .collect())
}

#[cfg(test)]
mod tests {
    use sticky_testing::tls::{self, IssuedCertificate, TestCa, Validity, openssl_rsa_certificate};

    use super::*;

    fn upload(issued: &IssuedCertificate) -> Upload {
        Upload {
            name: "web".into(),
            path: None,
            body: issued.body.clone(),
            chain: Some(issued.chain.clone()).filter(|c| !c.is_empty()),
            private_key: issued.private_key.clone(),
        }
    }

    fn now() -> i64 {
        crate::domain::unix_now()
    }

    #[test]
    fn a_good_upload_is_kept_with_its_dates_hosts_and_names() {
        let ca = TestCa::new("good").unwrap();
        let issued = ca.issue(&["shop.example", "www.shop.example"]).unwrap();
        let cert = validate(upload(&issued), "ASCAEXAMPLE".into(), now()).unwrap();
        assert_eq!(cert.hosts, ["shop.example", "www.shop.example"]);
        assert!(cert.not_before < now() && now() < cert.not_after);
        assert_eq!(cert.arn(), format!("arn:aws:iam::{ACCOUNT_ID}:server-certificate/web"));
        assert!(cert.is_named_by(&format!("orn:ows:idauth::{ACCOUNT_ID}:server-certificate/web")));
        assert!(cert.full_chain().matches("BEGIN CERTIFICATE").count() == 2);
        assert_eq!(format!("{:?}", cert.private_key), "Some([redacted])");
        let json = serde_json::to_string(&cert).unwrap();
        assert!(!json.contains("PRIVATE KEY"), "serialised with its key: {json}");
        let p384 = ca
            .issue_with(&["p384.example"], &tls::PKCS_ECDSA_P384_SHA384, Validity::days(3))
            .unwrap();
        validate(upload(&p384), "ASCA2".into(), now()).unwrap();
        let rsa = openssl_rsa_certificate("rsa.example", 2048).unwrap();
        validate(upload(&rsa), "ASCA3".into(), now()).unwrap();
    }

    #[test]
    fn each_bad_upload_is_refused_with_its_reason() {
        let ca = TestCa::new("bad").unwrap();
        let good = ca.issue(&["shop.example"]).unwrap();
        let other = ca.issue(&["other.example"]).unwrap();
        let expired = ca
            .issue_with(&["old.example"], &tls::PKCS_ECDSA_P256_SHA256, Validity::expired())
            .unwrap();
        let ed25519 = ca
            .issue_with(&["ed.example"], &tls::PKCS_ED25519, Validity::days(3))
            .unwrap();
        let weak = openssl_rsa_certificate("weak.example", 1024).unwrap();
        let other_ca = TestCa::new("another").unwrap();
        let cases: Vec<(&str, Upload, &str)> = vec![
            (
                "garbage body",
                Upload {
                    body: "not a certificate".into(),
                    ..upload(&good)
                },
                "no PEM CERTIFICATE",
            ),
            (
                "garbage inside PEM",
                Upload {
                    body: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
                    ..upload(&good)
                },
                "not an X.509 certificate",
            ),
            (
                "key of another certificate",
                Upload {
                    private_key: other.private_key.clone(),
                    ..upload(&good)
                },
                "does not match",
            ),
            (
                "no key",
                Upload {
                    private_key: String::new(),
                    ..upload(&good)
                },
                "no PEM private key",
            ),
            (
                "a key as the body",
                Upload {
                    body: good.private_key.clone(),
                    ..upload(&good)
                },
                "CERTIFICATE blocks only",
            ),
            ("expired", upload(&expired), "expired on"),
            (
                "chain out of order",
                Upload {
                    chain: Some(format!("{}{}", ca.root_pem(), ca.intermediate_pem())),
                    ..upload(&good)
                },
                "out of order",
            ),
            (
                "chain of another CA",
                Upload {
                    chain: Some(other_ca.intermediate_pem()),
                    ..upload(&good)
                },
                "out of order",
            ),
            (
                "two leaves",
                Upload {
                    body: format!("{}{}", good.body, other.body),
                    ..upload(&good)
                },
                "holds 2 certificates",
            ),
            ("RSA 1024", upload(&weak), "at least 2048"),
            ("Ed25519", upload(&ed25519), "neither RSA nor ECDSA"),
            (
                "1 MiB body",
                Upload {
                    body: "A".repeat(1 << 20),
                    ..upload(&good)
                },
                "at most 16384",
            ),
            (
                "encrypted key",
                Upload {
                    private_key: "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"
                        .into(),
                    ..upload(&good)
                },
                "encrypted",
            ),
            (
                "bad name",
                Upload {
                    name: "a b".into(),
                    ..upload(&good)
                },
                "ServerCertificateName",
            ),
            (
                "bad path",
                Upload {
                    path: Some("certs".into()),
                    ..upload(&good)
                },
                "Path",
            ),
        ];
        for (case, bad, reason) in cases {
            let error = validate(bad, "ASCAX".into(), now()).expect_err(case);
            assert!(error.to_string().contains(reason), "{case}: {error}");
        }
        assert_eq!(
            validate(
                Upload {
                    private_key: other.private_key,
                    ..upload(&good)
                },
                "A".into(),
                now()
            )
            .unwrap_err(),
            CertificateError::KeyMismatch
        );
    }

    #[test]
    fn ids_look_like_iam_ones() {
        let id = new_id().unwrap();
        assert_eq!(id.len(), 21);
        assert!(id.starts_with("ASCA") && id.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()));
        assert_ne!(id, new_id().unwrap());
    }
}
