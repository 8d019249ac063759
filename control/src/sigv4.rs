//! Signature Version 4 verification, for AWS's scheme (the Query API's clients) and Outscale's
//! OSC4 (OAPI's), which is the same algorithm with other names ([`Scheme`]). The signature is
//! recomputed over exactly the headers the client says it signed, with the client's scope
//! (region and service: `lbu` for osc-cli, `elasticloadbalancing` for aws/boto3, `api` for OAPI,
//! any other too), and compared in constant time. The tests check it against AWS's test suite and
//! against the `aws-sigv4` crate's signing.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use axum::http::HeaderMap;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
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

/// A signature scheme of the SigV4 family. AWS's (the Query API's clients) and Outscale's
/// OSC4 (OAPI's: osc-cli `api`, osc-sdk-python, Terraform's provider) are one algorithm with
/// other names: the key's prefix, the scope's terminator, the date header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Aws4,
    Osc4,
}

impl Scheme {
    fn algorithm(self) -> &'static str {
        match self {
            Scheme::Aws4 => "AWS4-HMAC-SHA256",
            Scheme::Osc4 => "OSC4-HMAC-SHA256",
        }
    }

    fn key_prefix(self) -> &'static str {
        match self {
            Scheme::Aws4 => "AWS4",
            Scheme::Osc4 => "OSC4",
        }
    }

    fn terminator(self) -> &'static str {
        match self {
            Scheme::Aws4 => "aws4_request",
            Scheme::Osc4 => "osc4_request",
        }
    }

    fn date_header(self) -> &'static str {
        match self {
            Scheme::Aws4 => "x-amz-date",
            Scheme::Osc4 => "x-osc-date",
        }
    }
}

struct Authorization<'a> {
    scheme: Scheme,
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
    let (scheme, rest) = [Scheme::Aws4, Scheme::Osc4]
        .into_iter()
        .find_map(|scheme| {
            value
                .strip_prefix(scheme.algorithm())
                .and_then(|rest| rest.strip_prefix(' '))
                .map(|rest| (scheme, rest))
        })
        .ok_or_else(|| incomplete("Authorization must use the AWS4-HMAC-SHA256 or OSC4-HMAC-SHA256 algorithm"))?;
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
    let [access_key, date, region, service, terminator] = scope[..] else {
        return Err(incomplete(&format!(
            "Credential must be access-key/date/region/service/{}",
            scheme.terminator()
        )));
    };
    if terminator != scheme.terminator() {
        return Err(incomplete(&format!(
            "Credential must be access-key/date/region/service/{}",
            scheme.terminator()
        )));
    }
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
        scheme,
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

/// Bytes SigV4 leaves as they are in a URI; every other byte is `%XX` (uppercase hex).
fn uri_encode(bytes: &[u8], keep_slash: bool, out: &mut String) {
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || (keep_slash && b == b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// The path as SigV4 normalizes it before encoding (RFC 3986's dot segments removed, repeated
/// slashes merged; a trailing slash kept): what the client signed, whatever it sent.
fn normalized_path(path: &str) -> String {
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let mut kept: Vec<&str> = Vec::with_capacity(segments.len());
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            "." | "" => {}
            ".." => {
                kept.pop();
            }
            other => kept.push(other),
        }
        if i + 1 == segments.len() && matches!(*segment, "." | ".." | "") {
            kept.push("");
        }
    }
    format!("/{}", kept.join("/"))
}

/// The canonical query string: each parameter decoded, then encoded SigV4's way, sorted.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .map(|(name, value)| {
            let (mut n, mut v) = (String::new(), String::new());
            uri_encode(name.as_bytes(), false, &mut n);
            uri_encode(value.as_bytes(), false, &mut v);
            (n, v)
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// A header's values as SigV4 canonicalizes them: trimmed, inner runs of spaces made one,
/// several values joined by commas.
fn canonical_value<'v>(values: impl Iterator<Item = &'v str>) -> String {
    values
        .map(|value| value.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(",")
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn hmac(key: &[u8], message: &[u8]) -> Result<Vec<u8>, ApiError> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).map_err(ApiError::internal)?;
    mac.update(message);
    Ok(mac.finalize().into_bytes().to_vec())
}

/// The signature of a request whose canonical request is `canonical`.
fn signature(auth: &Authorization<'_>, secret: &str, datetime: &str, canonical: &str) -> Result<String, ApiError> {
    let scheme = auth.scheme;
    let scope = format!("{}/{}/{}/{}", auth.date, auth.region, auth.service, scheme.terminator());
    let to_sign = format!(
        "{}\n{datetime}\n{scope}\n{}",
        scheme.algorithm(),
        sha256_hex(canonical.as_bytes())
    );
    let mut key = hmac(
        format!("{}{secret}", scheme.key_prefix()).as_bytes(),
        auth.date.as_bytes(),
    )?;
    for part in [auth.region, auth.service, scheme.terminator()] {
        key = hmac(&key, part.as_bytes())?;
    }
    Ok(hex::encode(hmac(&key, to_sign.as_bytes())?))
}

/// Verifies the request's signature (AWS4 or OSC4); returns the access key id that signed it.
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
    let date_header = auth.scheme.date_header();
    let datetime = header(date_header).ok_or_else(|| incomplete(&format!("the request must carry {date_header}")))?;
    let signed_at =
        parse_amz_date(datetime).ok_or_else(|| incomplete(&format!("{date_header} must be YYYYMMDDTHHMMSSZ")))?;
    let skew = now.duration_since(signed_at).unwrap_or_else(|e| e.duration());
    if skew > MAX_CLOCK_SKEW {
        return Err(ApiError::new(
            ErrorCode::RequestExpired,
            format!("Request has expired: signed at {datetime}, more than 15 minutes from the service's clock"),
        ));
    }
    if !datetime.starts_with(auth.date) || auth.date.len() != 8 {
        return Err(ApiError::new(
            ErrorCode::SignatureDoesNotMatch,
            format!("Credential date does not match {date_header}"),
        ));
    }
    if !auth.signed_headers.contains(&"host") || !auth.signed_headers.contains(&date_header) {
        return Err(incomplete(&format!(
            "SignedHeaders must include host and {date_header}"
        )));
    }
    let host = header("host").ok_or_else(|| incomplete("the request must carry Host"))?;
    let (path, query) = request
        .path_and_query
        .split_once('?')
        .unwrap_or((request.path_and_query, ""));
    let mut canonical_path = String::new();
    uri_encode(normalized_path(path).as_bytes(), true, &mut canonical_path);
    let head = format!("{}\n{canonical_path}\n{}\n", request.method, canonical_query(query));
    let tail = format!("\n{}\n{}", auth.signed_headers.join(";"), sha256_hex(request.body));
    // osc-sdk-python signs the host without its port; any other client, the Host header.
    let bare_host = without_port(host);
    for host in std::iter::once(host).chain(bare_host) {
        let mut headers = String::new();
        for name in &auth.signed_headers {
            let value = if *name == "host" {
                host.to_owned()
            } else {
                let values: Result<Vec<&str>, _> = request.headers.get_all(*name).iter().map(|v| v.to_str()).collect();
                let values = values.map_err(|_| mismatch())?;
                if values.is_empty() {
                    return Err(mismatch());
                }
                canonical_value(values.into_iter())
            };
            headers.push_str(&format!("{name}:{value}\n"));
        }
        let expected = signature(&auth, secret, datetime, &format!("{head}{headers}{tail}"))?;
        if bool::from(expected.as_bytes().ct_eq(auth.signature.as_bytes())) {
            return Ok(auth.access_key.to_owned());
        }
    }
    Err(mismatch())
}

/// `host` without its `:port`, if it ends with one: a decimal port after a name, an IPv4 address
/// or a bracketed IPv6 address. Anything else after a colon is not a port and stays part of the
/// host the signature must cover.
fn without_port(host: &str) -> Option<&str> {
    let (name, port) = host.rsplit_once(':')?;
    let is_port = port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok();
    let is_name = !name.is_empty() && (!name.contains(':') || (name.starts_with('[') && name.ends_with(']')));
    (is_port && is_name).then_some(name)
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

    #[test]
    fn a_path_is_normalized_as_sigv4_signs_it() {
        for (sent, signed) in [
            ("/", "/"),
            ("", "/"),
            ("//api/latest/ReadLoadBalancers", "/api/latest/ReadLoadBalancers"),
            ("/a/./b/../c", "/a/c"),
            ("/a/b/", "/a/b/"),
            ("/a/..", "/"),
            ("/../..", "/"),
        ] {
            assert_eq!(normalized_path(sent), signed, "{sent}");
        }
    }

    #[test]
    fn only_a_port_is_taken_off_a_host() {
        for (host, bare) in [
            ("example.com:8000", Some("example.com")),
            ("127.0.0.1:80", Some("127.0.0.1")),
            ("[::1]:8000", Some("[::1]")),
            ("example.com", None),
            ("[::1]", None),
            ("::1", None),
            ("example.com:", None),
            (":8000", None),
            ("example.com:80a", None),
            ("example.com:123456", None),
            ("example.com:8000:8000", None),
            ("example.com:8000: x", None),
            ("[::1]x:80", None),
        ] {
            assert_eq!(without_port(host), bare, "{host}");
        }
    }

    /// Requests as osc-sdk-python 0.42.0 signs them (its own code run for these vectors): OSC4,
    /// `content-type;host;x-osc-date`, the host without its port.
    #[test]
    fn osc4_requests_of_osc_sdk_python_verify() {
        let body = r#"{"LoadBalancerName": "terraform-balancer"}"#;
        for (host, signature) in [
            (
                "api.eu-west-2.outscale.com",
                "74bf71f488e8831c124a2708fca8eaaa3531e62ce35e75f7b5725da57b2446c7",
            ),
            (
                "127.0.0.1:8000",
                "f281de200e52a886ca150042276d976b67504b1b99c1603b053157d0dd329739",
            ),
        ] {
            let authorization = format!(
                "OSC4-HMAC-SHA256 Credential={AKID}/20150830/eu-west-2/api/osc4_request, SignedHeaders=content-type;host;x-osc-date, Signature={signature}"
            );
            let headers = headers(&[
                ("Host", host),
                ("Content-Type", "application/json; charset=utf-8"),
                ("X-Osc-Date", "20150830T123600Z"),
                ("Authorization", &authorization),
            ]);
            let request = |body: &'static str| RequestToVerify {
                method: "POST",
                path_and_query: "/api/v1/ReadLoadBalancers",
                headers: &headers,
                body: body.as_bytes(),
            };
            let body: &'static str = Box::leak(body.to_owned().into_boxed_str());
            assert_eq!(
                verify(&keys(), &request(body), vector_time()).as_deref(),
                Ok(AKID),
                "{host}"
            );
            assert_eq!(
                verify(&keys(), &request("{}"), vector_time()).unwrap_err().code,
                ErrorCode::SignatureDoesNotMatch,
                "{host}: another body"
            );
        }
        // The host signed without its port: only a port may be taken off what is sent.
        for sent in [
            "127.0.0.1:8000:8000",
            "127.0.0.1:8000: x",
            "127.0.0.1:80000",
            "127.0.0.1:",
        ] {
            let authorization = "OSC4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/eu-west-2/api/osc4_request, SignedHeaders=content-type;host;x-osc-date, Signature=f281de200e52a886ca150042276d976b67504b1b99c1603b053157d0dd329739";
            let headers = headers(&[
                ("Host", sent),
                ("Content-Type", "application/json; charset=utf-8"),
                ("X-Osc-Date", "20150830T123600Z"),
                ("Authorization", authorization),
            ]);
            let request = RequestToVerify {
                method: "POST",
                path_and_query: "/api/v1/ReadLoadBalancers",
                headers: &headers,
                body: body.as_bytes(),
            };
            assert_eq!(
                verify(&keys(), &request, vector_time()).map_err(|e| e.code),
                Err(ErrorCode::SignatureDoesNotMatch),
                "{sent}"
            );
        }
        // OSC4 needs its own date header, and its own scope terminator.
        let aws_dated = headers(&[
            ("Host", "api.eu-west-2.outscale.com"),
            ("X-Amz-Date", "20150830T123600Z"),
            (
                "Authorization",
                "OSC4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/eu-west-2/api/osc4_request, SignedHeaders=host;x-amz-date, Signature=74bf71f488e8831c124a2708fca8eaaa3531e62ce35e75f7b5725da57b2446c7",
            ),
        ]);
        let request = RequestToVerify {
            method: "POST",
            path_and_query: "/api/v1/ReadLoadBalancers",
            headers: &aws_dated,
            body: b"",
        };
        assert_eq!(
            verify(&keys(), &request, vector_time()).unwrap_err().code,
            ErrorCode::IncompleteSignature
        );
        let mixed = "OSC4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/eu-west-2/api/aws4_request, SignedHeaders=host;x-osc-date, Signature=74bf71f488e8831c124a2708fca8eaaa3531e62ce35e75f7b5725da57b2446c7";
        assert_eq!(
            parse_authorization(mixed).err().map(|e| e.code),
            Some(ErrorCode::IncompleteSignature)
        );
    }

    use proptest::prelude::*;

    /// Text a client puts raw in a path or a query: unreserved characters, sub-delimiters and
    /// percent-escapes.
    fn raw_uri_text() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                "[A-Za-z0-9._~-]",
                Just("%20".to_owned()),
                Just("%2F".to_owned()),
                Just("%C3%A9".to_owned()),
                Just("!".to_owned()),
                Just("*".to_owned()),
                Just("'".to_owned()),
            ],
            0..8,
        )
        .prop_map(|parts| parts.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever the standard signer (`aws-sigv4`, as boto3 and the aws CLI sign) signs, the
        /// verifier accepts; and the same request with another body is refused.
        #[test]
        fn what_aws_sigv4_signs_verifies(
            post in any::<bool>(),
            segments in proptest::collection::vec(prop_oneof![raw_uri_text(), Just(".".to_owned()), Just("..".to_owned())], 0..4),
            query in proptest::collection::vec((raw_uri_text(), raw_uri_text()), 0..4),
            custom in "[ -~]{0,20}",
            body in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            use aws_credential_types::Credentials;
            use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
            use aws_sigv4::sign::v4;

            let method = if post { "POST" } else { "GET" };
            let mut path_and_query = format!("/{}", segments.join("/"));
            if !query.is_empty() {
                let pairs: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
                path_and_query.push('?');
                path_and_query.push_str(&pairs.join("&"));
            }
            let host = "lbu.eu-west-2.outscale.com:8443";
            let custom = custom.trim().to_owned();
            let identity = Credentials::new(AKID, SECRET, None, None, "test").into();
            let params = v4::SigningParams::builder()
                .identity(&identity)
                .region("eu-west-2")
                .name("lbu")
                .time(vector_time())
                .settings(SigningSettings::default())
                .build()
                .unwrap()
                .into();
            let signable = SignableRequest::new(
                method,
                format!("http://{host}{path_and_query}"),
                [("host", host), ("x-custom", custom.as_str())].into_iter(),
                SignableBody::Bytes(&body),
            )
            .unwrap();
            let (instructions, _) = sign(signable, &params).unwrap().into_parts();
            let mut map = headers(&[("Host", host), ("X-Custom", &custom)]);
            for (name, value) in instructions.headers() {
                map.insert(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
            }
            let request = |body: &[u8]| verify(&keys(), &RequestToVerify { method, path_and_query: &path_and_query, headers: &map, body }, vector_time());
            let verified = request(&body);
            prop_assert_eq!(verified.as_deref(), Ok(AKID));
            let mut other = body.clone();
            other.push(b'x');
            prop_assert_eq!(request(&other).unwrap_err().code, ErrorCode::SignatureDoesNotMatch);
        }
    }
}
