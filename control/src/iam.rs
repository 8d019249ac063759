//! IAM's server-certificate actions (Query API 2010-05-08), as LBU and classic ELB users manage
//! the certificates their HTTPS listeners name (`aws iam …`, boto3's `iam`): parameters in, XML
//! out, each a command of the domain. Told apart from ELB's calls by their `Version`.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::certificates::{ServerCertificate, Upload};
use crate::commands::certificates::{DeleteServerCertificate, UpdateServerCertificate, UploadServerCertificate};
use crate::error::{ApiError, ErrorCode};
use crate::query::Params;
use crate::service::{Done, Service};
use crate::xml::Xml;

/// The `Version` of IAM's Query API.
pub const VERSION: &str = "2010-05-08";

/// The actions served.
pub const ACTIONS: [&str; 5] = [
    "DeleteServerCertificate",
    "GetServerCertificate",
    "ListServerCertificates",
    "UpdateServerCertificate",
    "UploadServerCertificate",
];

/// Most certificates one ListServerCertificates page holds (IAM's MaxItems ceiling).
const MAX_ITEMS: usize = 1000;

/// Runs `action`; returns the inner XML of its `{Action}Result`.
pub fn dispatch(service: &Service, action: &str, params: &Params) -> Result<Done<String>, ApiError> {
    match action {
        "UploadServerCertificate" => {
            let upload = Upload {
                name: params.required("ServerCertificateName")?.to_owned(),
                path: params.get("Path").map(str::to_owned),
                body: params.required("CertificateBody")?.to_owned(),
                chain: params.get("CertificateChain").map(str::to_owned),
                private_key: params.required("PrivateKey")?.to_owned(),
            };
            Ok(service.execute(UploadServerCertificate(upload))?.map(|certificate| {
                let mut x = Xml::new();
                metadata(&mut x, "ServerCertificateMetadata", &certificate);
                x.finish()
            }))
        }
        "UpdateServerCertificate" => {
            let command = UpdateServerCertificate {
                name: params.required("ServerCertificateName")?.to_owned(),
                new_name: params.get("NewServerCertificateName").map(str::to_owned),
                new_path: params.get("NewPath").map(str::to_owned),
            };
            Ok(service.execute(command)?.map(|_| String::new()))
        }
        "DeleteServerCertificate" => {
            let command = DeleteServerCertificate {
                name: params.required("ServerCertificateName")?.to_owned(),
            };
            Ok(service.execute(command)?.map(|_| String::new()))
        }
        "GetServerCertificate" => {
            let name = params.required("ServerCertificateName")?;
            service.read(|domain| {
                let certificate = domain.certificate_by_name(name).ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::NoSuchEntity,
                        format!("The Server Certificate with name {name} cannot be found."),
                    )
                })?;
                let mut x = Xml::new();
                x.open("ServerCertificate");
                metadata(&mut x, "ServerCertificateMetadata", certificate);
                x.leaf("CertificateBody", certificate.body.trim_end());
                if !certificate.chain.is_empty() {
                    x.leaf("CertificateChain", certificate.chain.trim_end());
                }
                x.close("ServerCertificate");
                Ok(Done::read(x.finish()))
            })
        }
        "ListServerCertificates" => {
            let prefix = params.get("PathPrefix").unwrap_or("/");
            let max_items = params.number::<usize>("MaxItems")?.unwrap_or(100);
            if !(1..=MAX_ITEMS).contains(&max_items) {
                return Err(ApiError::validation(format!(
                    "MaxItems must be 1 to {MAX_ITEMS}, got {max_items}"
                )));
            }
            let marker = params.get("Marker");
            service.read(|domain| {
                let mut selected: Vec<&ServerCertificate> =
                    domain.certificates().filter(|c| c.path.starts_with(prefix)).collect();
                selected.sort_by(|a, b| a.name.cmp(&b.name));
                let start = marker.map_or(0, |m| selected.iter().take_while(|c| c.name.as_str() <= m).count());
                let page = &selected[start.min(selected.len())..selected.len().min(start + max_items)];
                let truncated = start + page.len() < selected.len();
                let mut x = Xml::new();
                x.members("ServerCertificateMetadataList", page, |x, certificate| {
                    metadata_fields(x, certificate);
                });
                x.leaf("IsTruncated", truncated);
                if let Some(last) = page.last().filter(|_| truncated) {
                    x.leaf("Marker", &last.name);
                }
                Ok(Done::read(x.finish()))
            })
        }
        _ => Err(ApiError::new(
            ErrorCode::InvalidAction,
            format!("The action {action} is not valid for this web service."),
        )),
    }
}

fn metadata(x: &mut Xml, tag: &str, certificate: &ServerCertificate) {
    x.open(tag);
    metadata_fields(x, certificate);
    x.close(tag);
}

fn metadata_fields(x: &mut Xml, certificate: &ServerCertificate) {
    x.leaf("Path", &certificate.path);
    x.leaf("ServerCertificateName", &certificate.name);
    x.leaf("ServerCertificateId", &certificate.id);
    x.leaf("Arn", certificate.arn());
    x.leaf("UploadDate", timestamp(certificate.uploaded_at));
    x.leaf("Expiration", timestamp(certificate.not_after));
}

/// ISO 8601, as IAM writes dates.
pub fn timestamp(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .format(&Rfc3339)
        .unwrap_or_default()
}
