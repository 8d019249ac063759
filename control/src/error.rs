//! The API's errors: ELB error codes with the HTTP status the real service uses, rendered as
//! an `ErrorResponse` document.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::xml;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    LoadBalancerNotFound,
    DuplicateLoadBalancerName,
    DuplicateListener,
    DuplicatePolicyName,
    PolicyNotFound,
    ListenerNotFound,
    InvalidConfigurationRequest,
    InvalidInstance,
    TooManyPolicies,
    TooManyLoadBalancers,
    TooManyTags,
    DuplicateTagKeys,
    PolicyTypeNotFound,
    UnsupportedOperation,
    UnsupportedProtocol,
    ValidationError,
    MissingParameter,
    InvalidParameterValue,
    InvalidAction,
    MissingAuthenticationToken,
    IncompleteSignature,
    InvalidClientTokenId,
    SignatureDoesNotMatch,
    RequestExpired,
    InternalFailure,
    /// ELB's: an SSLCertificateId naming no certificate.
    CertificateNotFound,
    /// IAM's, for server certificates.
    EntityAlreadyExists,
    NoSuchEntity,
    MalformedCertificate,
    KeyPairMismatch,
    DeleteConflict,
    LimitExceeded,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::LoadBalancerNotFound => "LoadBalancerNotFound",
            ErrorCode::DuplicateLoadBalancerName => "DuplicateLoadBalancerName",
            ErrorCode::DuplicateListener => "DuplicateListener",
            ErrorCode::DuplicatePolicyName => "DuplicatePolicyName",
            ErrorCode::PolicyNotFound => "PolicyNotFound",
            ErrorCode::ListenerNotFound => "ListenerNotFound",
            ErrorCode::InvalidConfigurationRequest => "InvalidConfigurationRequest",
            ErrorCode::InvalidInstance => "InvalidInstance",
            ErrorCode::TooManyPolicies => "TooManyPolicies",
            ErrorCode::TooManyLoadBalancers => "TooManyLoadBalancers",
            ErrorCode::TooManyTags => "TooManyTags",
            ErrorCode::DuplicateTagKeys => "DuplicateTagKeys",
            ErrorCode::PolicyTypeNotFound => "PolicyTypeNotFound",
            ErrorCode::UnsupportedOperation => "UnsupportedOperation",
            ErrorCode::UnsupportedProtocol => "UnsupportedProtocol",
            ErrorCode::ValidationError => "ValidationError",
            ErrorCode::MissingParameter => "MissingParameter",
            ErrorCode::InvalidParameterValue => "InvalidParameterValue",
            ErrorCode::InvalidAction => "InvalidAction",
            ErrorCode::MissingAuthenticationToken => "MissingAuthenticationToken",
            ErrorCode::IncompleteSignature => "IncompleteSignature",
            ErrorCode::InvalidClientTokenId => "InvalidClientTokenId",
            ErrorCode::SignatureDoesNotMatch => "SignatureDoesNotMatch",
            ErrorCode::RequestExpired => "RequestExpired",
            ErrorCode::InternalFailure => "InternalFailure",
            ErrorCode::CertificateNotFound => "CertificateNotFound",
            ErrorCode::EntityAlreadyExists => "EntityAlreadyExists",
            ErrorCode::NoSuchEntity => "NoSuchEntity",
            ErrorCode::MalformedCertificate => "MalformedCertificate",
            ErrorCode::KeyPairMismatch => "KeyPairMismatch",
            ErrorCode::DeleteConflict => "DeleteConflict",
            ErrorCode::LimitExceeded => "LimitExceeded",
        }
    }

    /// The HTTP status ELB answers with (botocore's service model for the service errors,
    /// AWS's common errors for the rest).
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::InvalidConfigurationRequest
            | ErrorCode::EntityAlreadyExists
            | ErrorCode::DeleteConflict
            | ErrorCode::LimitExceeded => StatusCode::CONFLICT,
            ErrorCode::NoSuchEntity => StatusCode::NOT_FOUND,
            ErrorCode::MissingAuthenticationToken
            | ErrorCode::InvalidClientTokenId
            | ErrorCode::SignatureDoesNotMatch
            | ErrorCode::IncompleteSignature => StatusCode::FORBIDDEN,
            ErrorCode::InternalFailure => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// `Sender` or `Receiver`, as in the `ErrorResponse` document.
    fn fault(self) -> &'static str {
        if self == ErrorCode::InternalFailure {
            "Receiver"
        } else {
            "Sender"
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ValidationError, message)
    }

    pub fn invalid_configuration(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidConfigurationRequest, message)
    }

    pub fn load_balancer_not_found(name: &str) -> Self {
        Self::new(
            ErrorCode::LoadBalancerNotFound,
            format!("There is no ACTIVE Load Balancer named '{name}'"),
        )
    }

    /// A failure of the service itself: logged here with its cause, answered without it (a
    /// client learns nothing of the service's insides).
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal failure");
        Self::new(
            ErrorCode::InternalFailure,
            "The request processing has failed because of an unknown error, exception or failure.",
        )
    }

    /// The response, tagged with the request id.
    pub fn into_response_with(self, request_id: &str) -> Response {
        let body = xml::error_response(self.code.fault(), self.code.as_str(), &self.message, request_id);
        (self.code.status(), [("content-type", "text/xml")], body).into_response()
    }
}

/// A refused certificate upload, as IAM words it.
impl From<crate::certificates::CertificateError> for ApiError {
    fn from(error: crate::certificates::CertificateError) -> Self {
        use crate::certificates::CertificateError;
        let code = match &error {
            CertificateError::Invalid(_) => ErrorCode::ValidationError,
            CertificateError::Malformed(_) => ErrorCode::MalformedCertificate,
            CertificateError::KeyMismatch => ErrorCode::KeyPairMismatch,
        };
        Self::new(code, error.to_string())
    }
}

/// A value the schema refuses, as ELB words it.
impl From<sticky_control_schema::Invalid> for ApiError {
    fn from(invalid: sticky_control_schema::Invalid) -> Self {
        match invalid {
            sticky_control_schema::Invalid::Value(message) => Self::validation(message),
            sticky_control_schema::Invalid::Unsupported(message) => Self::invalid_configuration(message),
        }
    }
}
