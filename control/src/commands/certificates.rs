//! Server certificates: upload, rename or move, delete; and how a listener's reference to one
//! (IAM's ARN, Outscale's ORN) becomes the certificate's id.

use sticky_core::CookieSettings;

use super::Command;
use crate::certificates::{self, MAX_CERTIFICATES, ServerCertificate, Upload};
use crate::domain::{Domain, Write, unix_now};
use crate::error::{ApiError, ErrorCode};
use crate::model::Listener;

/// The id of the certificate `reference` names: an ARN, an ORN or the id itself.
pub fn id_named_by(domain: &Domain, reference: &str) -> Result<String, ApiError> {
    domain
        .certificate(reference)
        .or_else(|| domain.certificate_named_by(reference))
        .map(|c| c.id.clone())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::CertificateNotFound,
                format!("Server certificate {reference} is not found (give its ARN or ORN)"),
            )
        })
}

/// An HTTPS listener names an existing certificate (kept as its id); another names none.
pub fn resolve_listener(domain: &Domain, listener: &mut Listener) -> Result<(), ApiError> {
    listener.check_protocols()?;
    let port = listener.load_balancer_port;
    match (listener.is_https(), listener.certificate.take()) {
        (true, Some(reference)) => listener.certificate = Some(id_named_by(domain, &reference)?),
        (true, None) => {
            return Err(ApiError::validation(format!(
                "The {} listener on port {port} needs a server certificate (SSLCertificateId; OAPI's ServerCertificateId)",
                listener.protocol
            )));
        }
        (false, Some(_)) => {
            return Err(ApiError::validation(format!(
                "The listener on port {port} is {}; a server certificate is for HTTPS and SSL listeners",
                listener.protocol
            )));
        }
        (false, None) => {}
    }
    Ok(())
}

fn no_such_certificate(name: &str) -> ApiError {
    ApiError::new(
        ErrorCode::NoSuchEntity,
        format!("The Server Certificate with name {name} cannot be found."),
    )
}

fn name_taken(name: &str) -> ApiError {
    ApiError::new(
        ErrorCode::EntityAlreadyExists,
        format!("The Server Certificate with name {name} already exists."),
    )
}

/// Stores a certificate checked whole ([`certificates::validate`]); answers it.
#[derive(Debug, Clone)]
pub struct UploadServerCertificate(pub Upload);

impl Command for UploadServerCertificate {
    type Output = ServerCertificate;

    fn plan(self, domain: &Domain, _: &CookieSettings) -> Result<(Vec<Write>, ServerCertificate), ApiError> {
        let upload = self.0;
        if domain.certificate_by_name(&upload.name).is_some() {
            return Err(name_taken(&upload.name));
        }
        if domain.certificates().count() >= MAX_CERTIFICATES {
            return Err(ApiError::new(
                ErrorCode::LimitExceeded,
                format!("This service holds {MAX_CERTIFICATES} server certificates, its most; delete one first"),
            ));
        }
        let id = certificates::new_id().map_err(ApiError::internal)?;
        let certificate = certificates::validate(upload, id, unix_now())?;
        Ok((vec![Write::PutCertificate(certificate.clone())], certificate))
    }
}

/// Uploads each certificate whose name is not taken yet (the bootstrap file's, at every start);
/// one already there is left as it is.
#[derive(Debug, Clone)]
pub struct UploadMissingCertificates(pub Vec<Upload>);

impl Command for UploadMissingCertificates {
    type Output = ();

    fn plan(self, domain: &Domain, cookie: &CookieSettings) -> Result<(Vec<Write>, ()), ApiError> {
        let mut writes = Vec::new();
        let mut named = std::collections::BTreeSet::new();
        for upload in self.0 {
            if !named.insert(upload.name.clone()) {
                return Err(name_taken(&upload.name));
            }
            if domain.certificate_by_name(&upload.name).is_some() {
                continue;
            }
            let name = upload.name.clone();
            let (planned, _) = UploadServerCertificate(upload)
                .plan(domain, cookie)
                .map_err(|e| ApiError::new(e.code, format!("certificate {name}: {}", e.message)))?;
            writes.extend(planned);
        }
        Ok((writes, ()))
    }
}

/// Renames a certificate or changes its path; listeners keep serving it (they hold its id).
#[derive(Debug, Clone)]
pub struct UpdateServerCertificate {
    pub name: String,
    pub new_name: Option<String>,
    pub new_path: Option<String>,
}

impl Command for UpdateServerCertificate {
    type Output = ServerCertificate;

    fn plan(self, domain: &Domain, _: &CookieSettings) -> Result<(Vec<Write>, ServerCertificate), ApiError> {
        let mut certificate = domain
            .certificate_by_name(&self.name)
            .ok_or_else(|| no_such_certificate(&self.name))?
            .clone();
        if let Some(new_name) = self.new_name {
            certificates::validate_name("NewServerCertificateName", &new_name)?;
            if new_name != certificate.name && domain.certificate_by_name(&new_name).is_some() {
                return Err(name_taken(&new_name));
            }
            certificate.name = new_name;
        }
        if let Some(new_path) = self.new_path {
            certificate.path = certificates::validate_path("NewPath", Some(&new_path))?;
        }
        let writes = if domain.certificate(&certificate.id) == Some(&certificate) {
            vec![]
        } else {
            vec![Write::PutCertificate(certificate.clone())]
        };
        Ok((writes, certificate))
    }
}

/// Deletes a certificate no listener serves; answers it.
#[derive(Debug, Clone)]
pub struct DeleteServerCertificate {
    pub name: String,
}

impl Command for DeleteServerCertificate {
    type Output = ServerCertificate;

    fn plan(self, domain: &Domain, _: &CookieSettings) -> Result<(Vec<Write>, ServerCertificate), ApiError> {
        let certificate = domain
            .certificate_by_name(&self.name)
            .ok_or_else(|| no_such_certificate(&self.name))?;
        if let Some((lb, port)) = domain.certificate_users(&certificate.id).first() {
            return Err(ApiError::new(
                ErrorCode::DeleteConflict,
                format!(
                    "Certificate: {} is currently in use by {} (listener on port {port}); give that listener another certificate or delete it first",
                    certificate.id,
                    load_balancer_arn(lb)
                ),
            ));
        }
        Ok((
            vec![Write::DeleteCertificate(certificate.id.clone())],
            certificate.clone(),
        ))
    }
}

/// How IAM names a load balancer using a certificate.
fn load_balancer_arn(name: &str) -> String {
    format!(
        "arn:aws:elasticloadbalancing:eu-west-2:{}:loadbalancer/{name}",
        certificates::ACCOUNT_ID
    )
}
