//! AWS Signature Version 4 verification. The signature is recomputed with the `aws-sigv4`
//! crate over exactly the headers the client says it signed, with the client's scope (region
//! and service: `lbu` for osc-cli, `elasticloadbalancing` for aws/boto3, any other too), and
//! compared in constant time.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use axum::http::HeaderMap;
use subtle::ConstantTimeEq;
use time::PrimitiveDateTime;
use time::macros::format_description;

use crate::error::{ApiError, ErrorCode};

/// Largest accepted difference between the request's date and the service's clock.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);

/// Access key id → secret access key.
#[derive(Clone, Default)]
pub struct AccessKeys {
    keys: HashMap<String, String>,
}

impl std::fmt::Debug for AccessKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKeys")
            .field("ids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl AccessKeys {
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        Self {
            keys: pairs.into_iter().collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether `secret` is access key `id`'s secret (compared in constant time).
    pub fn secret_matches(&self, id: &str, secret: &str) -> bool {
        use subtle::ConstantTimeEq;
        self.keys
            .get(id)
            .is_some_and(|known| bool::from(known.as_bytes().ct_eq(secret.as_bytes())))
    }
}

/// The parts of an HTTP request a signature covers.
pub struct RequestToVerify<'a> {
    pub method: &'a str,
    /// Path and query exactly as received.
    pub path_and_query: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

struct Authorization<'a> {
    access_key: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn incomplete(message: &str) -> ApiError {
    ApiError::new(ErrorCode::IncompleteSignature, message)
}

fn parse_authorization(value: &str) -> Result<Authorization<'_>, ApiError> {
    let rest = value
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or_else(|| incomplete("Authorization must use the AWS4-HMAC-SHA256 algorithm"))?;
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for part in rest.split(',') {
        let (name, value) = part
            .trim()
            .split_once('=')
            .ok_or_else(|| incomplete("malformed Authorization header"))?;
        let slot = match name {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            _ => return Err(incomplete("malformed Authorization header")),
        };
        // A field given twice is ambiguous (which one would a log or a proxy read?): refused.
        if slot.replace(value).is_some() {
            return Err(incomplete("a field of the Authorization header is repeated"));
        }
    }
    let credential = credential.ok_or_else(|| incomplete("Authorization lacks Credential"))?;
    let signed_headers = signed_headers.ok_or_else(|| incomplete("Authorization lacks SignedHeaders"))?;
    let signature = signature.ok_or_else(|| incomplete("Authorization lacks Signature"))?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key, date, region, service, "aws4_request"] = scope[..] else {
        return Err(incomplete(
            "Credential must be access-key/date/region/service/aws4_request",
        ));
    };
    let signed_headers: Vec<&str> = signed_headers.split(';').collect();
    // Lowercase hex only, as SigV4 defines and every client sends: one spelling per signature
    // (a case variant of a captured signature is not a second valid request).
    let well_formed = signature.len() == 64 && signature.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    // SignedHeaders as SigV4 defines them: lowercase names, sorted, each once.
    let canonical_names = signed_headers.iter().all(|h| {
        !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
    }) && signed_headers.windows(2).all(|pair| pair[0] < pair[1]);
    if !well_formed || !canonical_names {
        return Err(incomplete("malformed Signature or SignedHeaders"));
    }
    Ok(Authorization {
        access_key,
        date,
        region,
        service,
        signed_headers,
        signature,
    })
}

fn parse_amz_date(text: &str) -> Option<SystemTime> {
    let format = format_description!("[year][month][day]T[hour][minute][second]Z");
    let parsed = PrimitiveDateTime::parse(text, &format).ok()?.assume_utc();
    let secs = u64::try_from(parsed.unix_timestamp()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// Verifies the request's signature; returns the access key id that signed it.
pub fn verify(keys: &AccessKeys, request: &RequestToVerify<'_>, now: SystemTime) -> Result<String, ApiError> {
    let header = |name: &str| request.headers.get(name).and_then(|v| v.to_str().ok());
    let authorization = header("authorization").ok_or_else(|| {
        ApiError::new(
            ErrorCode::MissingAuthenticationToken,
            "Request is missing Authentication Token",
        )
    })?;
    let auth = parse_authorization(authorization)?;
    let secret = keys.keys.get(auth.access_key).ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidClientTokenId,
            "The security token included in the request is invalid.",
        )
    })?;
    let amz_date = header("x-amz-date").ok_or_else(|| incomplete("the request must carry X-Amz-Date"))?;
    let signed_at = parse_amz_date(amz_date).ok_or_else(|| incomplete("X-Amz-Date must be YYYYMMDDTHHMMSSZ"))?;
    let skew = now.duration_since(signed_at).unwrap_or_else(|e| e.duration());
    if skew > MAX_CLOCK_SKEW {
        return Err(ApiError::new(
            ErrorCode::RequestExpired,
            format!("Request has expired: signed at {amz_date}, more than 15 minutes from the service's clock"),
        ));
    }
    if !amz_date.starts_with(auth.date) || auth.date.len() != 8 {
        return Err(ApiError::new(
            ErrorCode::SignatureDoesNotMatch,
            "Credential date does not match X-Amz-Date",
        ));
    }
    if !auth.signed_headers.contains(&"host") || !auth.signed_headers.contains(&"x-amz-date") {
        return Err(incomplete("SignedHeaders must include host and x-amz-date"));
    }
    let host = header("host").ok_or_else(|| incomplete("the request must carry Host"))?;

    // Exactly the headers the client signed; x-amz-date is added back by the signer from the time.
    let mut signed: Vec<(&str, &str)> = Vec::new();
    for name in auth.signed_headers.iter().filter(|h| **h != "x-amz-date") {
        let values = request.headers.get_all(*name);
        let mut any = false;
        for value in values {
            let value = value.to_str().map_err(|_| mismatch())?;
            signed.push((name, value));
            any = true;
        }
        if !any {
            return Err(mismatch());
        }
    }
    let uri = format!("http://{host}{}", request.path_and_query);
    let identity = Credentials::new(auth.access_key, secret, None, None, "sticky-control").into();
    let mut settings = SigningSettings::default();
    settings.excluded_headers = None;
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(auth.region)
        .name(auth.service)
        .time(signed_at)
        .settings(settings)
        .build()
        .map_err(ApiError::internal)?
        .into();
    let signable = SignableRequest::new(
        request.method,
        uri,
        signed.into_iter(),
        SignableBody::Bytes(request.body),
    )
    .map_err(|_| mismatch())?;
    let output = sign(signable, &params).map_err(|_| mismatch())?;
    let expected = output.signature();
    if expected.as_bytes().ct_eq(auth.signature.as_bytes()).into() {
        Ok(auth.access_key.to_owned())
    } else {
        Err(mismatch())
    }
}

fn mismatch() -> ApiError {
    ApiError::new(
        ErrorCode::SignatureDoesNotMatch,
        "The request signature we calculated does not match the signature you provided.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderName, HeaderValue};

    const AKID: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    fn keys() -> AccessKeys {
        AccessKeys::new([(AKID.to_owned(), SECRET.to_owned())])
    }

    fn vector_time() -> SystemTime {
        parse_amz_date("20150830T123600Z").unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn auth(signed: &str, signature: &str) -> String {
        format!(
            "AWS4-HMAC-SHA256 Credential={AKID}/20150830/us-east-1/service/aws4_request, SignedHeaders={signed}, Signature={signature}"
        )
    }

    /// Vectors of the AWS Signature Version 4 test suite (header-signed requests) that apply to
    /// a Query API: (name, method, path and query, extra headers, body, signed headers, signature).
    type Vector = (
        &'static str,
        &'static str,
        &'static str,
        &'static [(&'static str, &'static str)],
        &'static str,
        &'static str,
        &'static str,
    );
    const VECTORS: [Vector; 6] = [
        (
            "get-vanilla",
            "GET",
            "/",
            &[],
            "",
            "host;x-amz-date",
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        ),
        (
            "get-vanilla-query-order-key-case",
            "GET",
            "/?Param2=value2&Param1=value1",
            &[],
            "",
            "host;x-amz-date",
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
        ),
        (
            "get-vanilla-query-unreserved",
            "GET",
            "/?-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz=-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
            &[],
            "",
            "host;x-amz-date",
            "9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197",
        ),
        (
            "post-vanilla-query",
            "POST",
            "/?Param1=value1",
            &[],
            "",
            "host;x-amz-date",
            "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11",
        ),
        (
            "post-header-key-sort",
            "POST",
            "/",
            &[("My-Header1", "value1")],
            "",
            "host;my-header1;x-amz-date",
            "c5410059b04c1ee005303aed430f6e6645f61f4dc9e1461ec8f8916fdf18852c",
        ),
        (
            "post-x-www-form-urlencoded",
            "POST",
            "/",
            &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Content-Length", "13"),
                (
                    "x-amz-content-sha256",
                    "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e",
                ),
            ],
            "Param1=value1",
            "content-length;content-type;host;x-amz-content-sha256;x-amz-date",
            "d3875051da38690788ef43de4db0d8f280229d82040bfac253562e56c3f20e0b",
        ),
    ];

    fn vector_request(vector: &Vector) -> (HeaderMap, String) {
        let (_, _, _, extra, _, signed, signature) = *vector;
        let mut pairs = vec![("Host", "example.amazonaws.com"), ("X-Amz-Date", "20150830T123600Z")];
        pairs.extend_from_slice(extra);
        let authorization = auth(signed, signature);
        let mut map = headers(&pairs);
        map.insert("authorization", HeaderValue::from_str(&authorization).unwrap());
        (map, authorization)
    }

    #[test]
    fn aws_test_suite_vectors_verify() {
        for vector in &VECTORS {
            let (name, method, path, _, body, _, _) = *vector;
            let (headers, _) = vector_request(vector);
            let request = RequestToVerify {
                method,
                path_and_query: path,
                headers: &headers,
                body: body.as_bytes(),
            };
            assert_eq!(verify(&keys(), &request, vector_time()).as_deref(), Ok(AKID), "{name}");
        }
    }

    #[test]
    fn tampering_is_rejected() {
        let form = &VECTORS[5];
        let (headers, _) = vector_request(form);
        let ok = |h: &HeaderMap, body: &str, path: &str, method: &str, now: SystemTime, keys: &AccessKeys| {
            verify(
                keys,
                &RequestToVerify {
                    method,
                    path_and_query: path,
                    headers: h,
                    body: body.as_bytes(),
                },
                now,
            )
        };
        let code = |r: Result<String, ApiError>| r.unwrap_err().code;
        assert_eq!(
            code(ok(&headers, "Param1=value2", "/", "POST", vector_time(), &keys())),
            ErrorCode::SignatureDoesNotMatch,
            "body"
        );
        let mut tampered = headers.clone();
        tampered.insert("content-type", HeaderValue::from_static("text/plain"));
        assert_eq!(
            code(ok(&tampered, "Param1=value1", "/", "POST", vector_time(), &keys())),
            ErrorCode::SignatureDoesNotMatch,
            "header"
        );
        assert_eq!(
            code(ok(&headers, "Param1=value1", "/?x=1", "POST", vector_time(), &keys())),
            ErrorCode::SignatureDoesNotMatch,
            "query"
        );
        assert_eq!(
            code(ok(&headers, "Param1=value1", "/", "PUT", vector_time(), &keys())),
            ErrorCode::SignatureDoesNotMatch,
            "method"
        );
        let wrong_secret = AccessKeys::new([(AKID.to_owned(), "other".to_owned())]);
        assert_eq!(
            code(ok(&headers, "Param1=value1", "/", "POST", vector_time(), &wrong_secret)),
            ErrorCode::SignatureDoesNotMatch,
            "secret"
        );
        let unknown = AccessKeys::new([("AKIDOTHER".to_owned(), SECRET.to_owned())]);
        assert_eq!(
            code(ok(&headers, "Param1=value1", "/", "POST", vector_time(), &unknown)),
            ErrorCode::InvalidClientTokenId,
            "key id"
        );
        let stale = vector_time() + MAX_CLOCK_SKEW + Duration::from_secs(1);
        assert_eq!(
            code(ok(&headers, "Param1=value1", "/", "POST", stale, &keys())),
            ErrorCode::RequestExpired,
            "stale"
        );
        let early = vector_time() - MAX_CLOCK_SKEW - Duration::from_secs(1);
        assert_eq!(
            code(ok(&headers, "Param1=value1", "/", "POST", early, &keys())),
            ErrorCode::RequestExpired,
            "future"
        );
        let within = vector_time() + MAX_CLOCK_SKEW - Duration::from_secs(1);
        assert!(
            ok(&headers, "Param1=value1", "/", "POST", within, &keys()).is_ok(),
            "within the skew"
        );
    }

    #[test]
    fn malformed_authorization_is_rejected() {
        let base = headers(&[("Host", "example.amazonaws.com"), ("X-Amz-Date", "20150830T123600Z")]);
        let run = |authorization: Option<&str>| {
            let mut h = base.clone();
            if let Some(a) = authorization {
                h.insert("authorization", HeaderValue::from_str(a).unwrap());
            }
            verify(
                &keys(),
                &RequestToVerify {
                    method: "GET",
                    path_and_query: "/",
                    headers: &h,
                    body: b"",
                },
                vector_time(),
            )
            .unwrap_err()
            .code
        };
        assert_eq!(run(None), ErrorCode::MissingAuthenticationToken);
        for bad in [
            "Basic abc",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE, SignedHeaders=host;x-amz-date, Signature=00",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            // Found by the fuzz target `sigv4`: other spellings of one signature are refused.
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5FA00FA31553B73EBF1942676E86291E8372FF2A2260956D9B8AAE1D763FBF31",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=Host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=x-amz-date;host, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=00, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        ] {
            assert_eq!(run(Some(bad)), ErrorCode::IncompleteSignature, "{bad}");
        }
        let wrong_day = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150831/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";
        assert_eq!(run(Some(wrong_day)), ErrorCode::SignatureDoesNotMatch);
    }
}
