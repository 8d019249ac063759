//! Outscale's current API (OAPI) for load balancers: JSON over `POST /api/v1/<Call>` (osc-sdk-python,
//! Terraform's provider) or `/api/latest/<Call>` (`osc-cli api`), signed OSC4-HMAC-SHA256 (or
//! AWS4) with the same access keys. One domain model with the Query API: each call is checked
//! against OAPI's shapes and ranges here ([`calls`]), then carried out by the same commands as
//! the Query API's actions (`commands`), so their validation, their store writes and their "in
//! force on every follower" answer are the same; answers and errors are OAPI's JSON ([`views`],
//! [`OapiError`]).

mod calls;
mod views;

pub use calls::run;

use std::time::SystemTime;

use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::error::{ApiError, ErrorCode};
use crate::service::Done;
use crate::sigv4::{self, RequestToVerify};

pub use calls::CALLS;

/// An error in OAPI's shape: `{"Errors": [{"Type", "Code", "Details"}], "ResponseContext"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OapiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub code: &'static str,
    pub details: String,
}

impl OapiError {
    fn bad(kind: &'static str, code: &'static str, details: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind,
            code,
            details: details.into(),
        }
    }

    /// A value out of OAPI's range or set (4047 `invalid-parameter-value`).
    pub fn invalid(details: impl Into<String>) -> Self {
        Self::bad("InvalidParameterValue", "4047", details)
    }

    pub fn missing(field: &str) -> Self {
        Self::bad(
            "MissingParameter",
            "7000",
            format!("The parameter {field} is required."),
        )
    }

    /// A parameter of OAPI's this service does not carry out (said in `details`).
    pub fn unsupported(details: impl Into<String>) -> Self {
        Self::bad("InvalidParameterValue", "4047", details)
    }

    /// A body that does not fit the call: an unknown parameter (4045 `invalid-parameter`) or one
    /// of the wrong type (4108 `invalid-parameter-type`).
    pub(super) fn shape(error: &serde_json::Error) -> Self {
        let text = error.to_string();
        if text.starts_with("unknown field") {
            Self::bad("InvalidParameterValue", "4045", format!("Unknown parameter: {text}"))
        } else if text.starts_with("missing field") {
            let field = text.split('`').nth(1).unwrap_or("a parameter");
            Self::missing(field)
        } else {
            Self::bad(
                "InvalidParameterValue",
                "4108",
                format!("A parameter has the wrong type: {text}"),
            )
        }
    }

    pub(super) fn unknown_call(call: &str) -> Self {
        Self::bad(
            "InvalidResource",
            "5011",
            format!(
                "The call {call} is not one this service answers (OAPI's load balancer calls: {}).",
                CALLS.join(", ")
            ),
        )
    }

    pub fn into_response_with(self, request_id: &str) -> Response {
        let body = json!({
            "Errors": [{ "Type": self.kind, "Code": self.code, "Details": self.details }],
            "ResponseContext": { "RequestId": request_id },
        });
        (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    }
}

impl crate::runner::Refusal for OapiError {
    fn counted_as(&self) -> &str {
        self.kind
    }

    fn details(&self) -> &str {
        &self.details
    }
}

/// The Query API's errors, in OAPI's words: types and codes of OAPI's error table (the one
/// osc-sdk-python ships, `gateway_errors.yaml`; 1 and 7000 from OAPI's error page).
impl From<ApiError> for OapiError {
    fn from(error: ApiError) -> Self {
        let (status, kind, code) = match error.code {
            ErrorCode::MissingAuthenticationToken
            | ErrorCode::IncompleteSignature
            | ErrorCode::InvalidClientTokenId
            | ErrorCode::SignatureDoesNotMatch
            | ErrorCode::RequestExpired => (StatusCode::UNAUTHORIZED, "AccessDenied", "1"),
            ErrorCode::MissingParameter => (StatusCode::BAD_REQUEST, "MissingParameter", "7000"),
            ErrorCode::LoadBalancerNotFound => (StatusCode::BAD_REQUEST, "InvalidResource", "5030"),
            ErrorCode::PolicyNotFound => (StatusCode::BAD_REQUEST, "InvalidResource", "5056"),
            ErrorCode::ListenerNotFound => (StatusCode::BAD_REQUEST, "InvalidResource", "5028"),
            ErrorCode::InvalidInstance => (StatusCode::BAD_REQUEST, "InvalidResource", "5063"),
            ErrorCode::InvalidAction => (StatusCode::BAD_REQUEST, "InvalidResource", "5011"),
            ErrorCode::DuplicateLoadBalancerName => (StatusCode::CONFLICT, "ResourceConflict", "9013"),
            ErrorCode::DuplicateListener => (StatusCode::CONFLICT, "ResourceConflict", "9012"),
            ErrorCode::DuplicatePolicyName => (StatusCode::CONFLICT, "ResourceConflict", "9021"),
            ErrorCode::DuplicateTagKeys => (StatusCode::CONFLICT, "ResourceConflict", "9011"),
            ErrorCode::TooManyLoadBalancers => (StatusCode::BAD_REQUEST, "TooManyResources", "10014"),
            ErrorCode::TooManyTags => (StatusCode::BAD_REQUEST, "TooManyResources", "10041"),
            ErrorCode::InternalFailure => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError", "2000"),
            // no-such-certificate, already-exist, device-in-use, too-many-certificate.
            ErrorCode::CertificateNotFound | ErrorCode::NoSuchEntity => {
                (StatusCode::BAD_REQUEST, "InvalidResource", "5012")
            }
            ErrorCode::EntityAlreadyExists => (StatusCode::CONFLICT, "ResourceConflict", "9000"),
            ErrorCode::DeleteConflict => (StatusCode::CONFLICT, "ResourceConflict", "9004"),
            ErrorCode::LimitExceeded => (StatusCode::BAD_REQUEST, "TooManyResources", "10007"),
            ErrorCode::MalformedCertificate | ErrorCode::KeyPairMismatch => {
                (StatusCode::BAD_REQUEST, "InvalidParameterValue", "4047")
            }
            ErrorCode::PolicyTypeNotFound => (StatusCode::BAD_REQUEST, "InvalidParameterValue", "4045"),
            // Valid alone, not together or not here (one policy per listener, TLS, a quota).
            ErrorCode::InvalidConfigurationRequest
            | ErrorCode::TooManyPolicies
            | ErrorCode::UnsupportedOperation
            | ErrorCode::UnsupportedProtocol => (StatusCode::BAD_REQUEST, "InvalidParameterValue", "4046"),
            ErrorCode::ValidationError | ErrorCode::InvalidParameterValue => {
                (StatusCode::BAD_REQUEST, "InvalidParameterValue", "4047")
            }
        };
        Self {
            status,
            kind,
            code,
            details: error.message,
        }
    }
}

/// The URI of an OAPI call with its path's repeated slashes made one (osc-cli joins its
/// endpoint and `/api/latest/<Call>` with a slash, and signs the single-slash path); `None` for
/// a path that is not an OAPI call's.
pub fn normalized(uri: &Uri) -> Option<Uri> {
    let mut path = String::with_capacity(uri.path().len());
    for c in uri.path().chars() {
        if !(c == '/' && path.ends_with('/')) {
            path.push(c);
        }
    }
    call_of(&path)?;
    let path_and_query = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    path_and_query.parse().ok()
}

/// `/api/<version>/<call>`: the call's name, for the versions OAPI's clients send.
pub fn call_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/api/")?;
    let (version, call) = rest.split_once('/')?;
    (matches!(version, "v1" | "latest") && !call.is_empty() && !call.contains('/')).then_some(call)
}

/// Verifies and runs one OAPI call (on a blocking thread: it may commit to the store). The
/// call's name is returned when it is one of OAPI's load balancer calls.
pub fn verify_and_run(
    service: &crate::service::Service,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> (String, Result<Done<Value>, OapiError>) {
    let path = uri.path();
    let call = call_of(path).unwrap_or_default();
    let name = if CALLS.contains(&call) { call } else { "unknown" }.to_owned();
    let result = (|| {
        if *method != Method::POST {
            return Err(OapiError {
                status: StatusCode::METHOD_NOT_ALLOWED,
                kind: "AccessDenied",
                code: "2",
                details: "OAPI calls are POST requests.".to_owned(),
            });
        }
        let request = RequestToVerify {
            method: method.as_str(),
            path_and_query: uri.path_and_query().map_or(path, |p| p.as_str()),
            headers,
            body,
        };
        sigv4::verify(&service.config.access_keys, &request, SystemTime::now())?;
        if !CALLS.contains(&call) {
            return Err(OapiError::unknown_call(call));
        }
        let input: Value = if body.iter().all(u8::is_ascii_whitespace) {
            json!({})
        } else {
            serde_json::from_slice(body)
                .map_err(|e| OapiError::invalid(format!("The request body is not JSON: {e}")))?
        };
        calls::run(service, call, input)
    })();
    (name, result)
}

/// The answer's JSON with its `ResponseContext`.
pub fn answer_response(mut body: Value, request_id: &str) -> Response {
    if let Some(object) = body.as_object_mut() {
        object.insert("ResponseContext".to_owned(), json!({ "RequestId": request_id }));
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_call_is_the_last_segment_of_a_v1_or_latest_path() {
        assert_eq!(call_of("/api/v1/ReadLoadBalancers"), Some("ReadLoadBalancers"));
        assert_eq!(call_of("/api/latest/CreateLoadBalancer"), Some("CreateLoadBalancer"));
        let doubled: Uri = "//api/latest/ReadLoadBalancers".parse().unwrap();
        assert_eq!(normalized(&doubled).unwrap().path(), "/api/latest/ReadLoadBalancers");
        assert!(normalized(&"/metricsx".parse().unwrap()).is_none());
        for path in [
            "/api/v2/ReadLoadBalancers",
            "/api/v1/",
            "/api/v1/a/b",
            "/v1/ReadLoadBalancers",
            "/",
        ] {
            assert_eq!(call_of(path), None, "{path}");
        }
    }

    #[test]
    fn every_query_api_error_has_an_oapi_type_code_and_status() {
        let error = OapiError::from(ApiError::load_balancer_not_found("lb"));
        assert_eq!(
            (error.kind, error.code, error.status),
            ("InvalidResource", "5030", StatusCode::BAD_REQUEST)
        );
        let error = OapiError::from(ApiError::new(ErrorCode::SignatureDoesNotMatch, "x"));
        assert_eq!((error.kind, error.status), ("AccessDenied", StatusCode::UNAUTHORIZED));
    }
}
