//! Fuzz targets `query` (the Query API parameter parser), `sigv4` (the signature verifier),
//! `oapi` (the OAPI calls) and `certificate` (the server-certificate upload parser),
//! from the corpus in `fuzz/corpus/<target>/` and mutations of valid requests. Nothing panics;
//! the verifier accepts only what a key holder signed. Budget `STICKY_FUZZ_SECONDS` (default
//! 10 per target).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use sticky_control::query::Params;
use sticky_control::sigv4::{AccessKeys, RequestToVerify, verify};
use sticky_testing::control_client::{QueryClient, Style};

const ACCESS_KEY: &str = "AKIDFUZZ";
const SECRET: &str = "fuzz-secret";

#[test]
fn fuzz_the_query_parameter_parser() {
    let seeds: Vec<Vec<u8>> = [
        "Action=CreateLoadBalancer&Version=2012-06-01&LoadBalancerName=a&Listeners.member.1.Protocol=HTTP&Listeners.member.1.LoadBalancerPort=80&Listeners.member.1.InstancePort=8080\n",
        "Action=SetLoadBalancerPoliciesOfListener\nLoadBalancerName=a&LoadBalancerPort=80&PolicyNames.member.1=P&PolicyNames.member.2=Q",
        "Action=DescribeLoadBalancers&LoadBalancerNames.member.1=a%20b&PageSize=400&Marker=x\n",
        "\nAction=CreateAppCookieStickinessPolicy&CookieName=session&PolicyName=P&LoadBalancerName=lb",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    sticky_fuzz::run("query", 10, &seeds, |input| {
        // Before the first newline: the query string; after: the form body.
        let (query, body) = match input.iter().position(|b| *b == b'\n') {
            Some(i) => (&input[..i], &input[i + 1..]),
            None => (input, &[][..]),
        };
        let query = String::from_utf8_lossy(query);
        if let Ok(params) = Params::parse(Some(&query), Some(body)) {
            let _ = params.get("Action");
            let _ = params.list("PolicyNames");
            let _ = params.list("LoadBalancerNames");
            let _ = params.struct_list("Listeners");
            let _ = params.struct_list("Instances");
            let _ = params.number::<u16>("LoadBalancerPort");
            let _ = params.number::<u64>("CookieExpirationPeriod");
            let _ = params.required("LoadBalancerName");
        }
    });
}

/// A request as text: `METHOD PATH`, header lines, an empty line, the body.
fn to_text(method: &str, path: &str, headers: &[(String, String)], body: &[u8]) -> Vec<u8> {
    let mut text = format!("{method} {path}\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\n"));
    }
    text.push('\n');
    [text.into_bytes(), body.to_vec()].concat()
}

/// Parses [`to_text`]'s format leniently (the fuzzer breaks it); None when no request line.
fn from_text(input: &[u8]) -> Option<(String, String, HeaderMap, Vec<u8>)> {
    let split = input.windows(2).position(|w| w == b"\n\n");
    let (head, body) = match split {
        Some(i) => (&input[..i], input[i + 2..].to_vec()),
        None => (input, Vec::new()),
    };
    let head = String::from_utf8_lossy(head);
    let mut lines = head.split('\n');
    let (method, path) = lines.next()?.split_once(' ')?;
    let mut headers = HeaderMap::new();
    for line in lines {
        if let Some((name, value)) = line.split_once(':')
            && let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.trim().as_bytes()),
                HeaderValue::from_bytes(value.trim().as_bytes()),
            )
        {
            headers.append(name, value);
        }
    }
    Some((method.to_owned(), path.to_owned(), headers, body))
}

/// Credential, SignedHeaders and Signature of the Authorization header (its spacing aside).
fn authorization_fields(headers: &HeaderMap) -> Option<Vec<String>> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let rest = value.strip_prefix("AWS4-HMAC-SHA256 ")?;
    let mut fields: Vec<String> = rest.split(',').map(|p| p.trim().to_owned()).collect();
    fields.sort();
    Some(fields)
}

/// What a signature covers of the request target, as SigV4 canonicalises it: the path with
/// `.` and `..` segments resolved (RFC 3986, 5.2.4) and repeated slashes merged, and the
/// query's parameters.
fn without_dot_segments(path_and_query: &str) -> String {
    let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            // SigV4 also merges repeated slashes.
            "." | "" => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
        // A trailing dot segment leaves a trailing slash.
        if i + 1 == segments.len() && matches!(*segment, "." | ".." | "") {
            out.push("");
        }
    }
    // The parameters as the service reads them (decoded, empty pairs dropped), in order of name.
    let mut pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .filter(|(name, _)| !name.is_empty())
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect();
    pairs.sort();
    format!("/{}?{pairs:?}", out.join("/"))
}

#[test]
fn fuzz_the_sigv4_verifier() {
    let keys = AccessKeys::new([(ACCESS_KEY.to_owned(), SECRET.to_owned())]);
    // Fixed signing time, so the corpus stays valid across runs.
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let client = QueryClient::new("127.0.0.1:8000", ACCESS_KEY, SECRET);
    let mut seeds = Vec::new();
    for (style, action, params) in [
        (Style::AwsPost, "DescribeLoadBalancers", vec![]),
        (
            Style::AwsPost,
            "CreateLBCookieStickinessPolicy",
            vec![
                ("LoadBalancerName", "lb"),
                ("PolicyName", "P"),
                ("CookieExpirationPeriod", "60"),
            ],
        ),
        (
            Style::OscGet,
            "DescribeLoadBalancers",
            vec![("LoadBalancerNames.member.1", "lb")],
        ),
    ] {
        let (method, path, headers, body) = client.signed(style, action, &params, ACCESS_KEY, SECRET, at).unwrap();
        let text = to_text(method, &path, &headers, &body);
        // The genuine request verifies: the harness parses what it prints.
        let (m, p, h, b) = from_text(&text).unwrap();
        let request = RequestToVerify {
            method: &m,
            path_and_query: &p,
            headers: &h,
            body: &b,
        };
        assert_eq!(verify(&keys, &request, at).unwrap(), ACCESS_KEY, "the seed verifies");
        seeds.push(text);
    }
    let genuine = seeds.clone();
    sticky_fuzz::run("sigv4", 10, &seeds, |input| {
        let Some((method, path, headers, body)) = from_text(input) else {
            return;
        };
        // Only what an HTTP server would hand over: an origin-form request target, as the
        // service reads it (`Uri::path_and_query`: a `#fragment` is not part of it).
        let Ok(uri) = path.parse::<axum::http::Uri>() else {
            return;
        };
        if !path.starts_with('/') {
            return;
        }
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let request = RequestToVerify {
            method: &method,
            path_and_query: &path,
            headers: &headers,
            body: &body,
        };
        if verify(&keys, &request, at).is_ok() {
            // Accepted: then what was signed (method, path, body, signed headers) is intact.
            // Unsigned headers and header-line formatting may differ, and the target may differ
            // where SigV4 canonicalises it (dot segments, escapes, empty or reordered pairs).
            let intact = genuine.iter().any(|g| {
                let (gm, gp, gh, gb) = from_text(g).unwrap();
                gm == method
                    && without_dot_segments(&gp) == without_dot_segments(&path)
                    && gb == body
                    && ["x-amz-date", "host"].iter().all(|n| gh.get(*n) == headers.get(*n))
                    && authorization_fields(&gh) == authorization_fields(&headers)
            });
            assert!(
                intact,
                "the verifier accepted an altered request:\n{}",
                String::from_utf8_lossy(input)
            );
        }
    });
}

/// The OAPI twin of the Query API target: a call's name, a newline, its JSON body. Whatever the
/// body (wrong types, out-of-range values, unknown fields, nested junk), no call panics, and a
/// refused call changes nothing (the state's version stays where it was).
#[test]
fn fuzz_the_oapi_calls() {
    use sticky_control::service::{Service, ServiceConfig};
    use sticky_control::store::{Store, StoreLocation};

    let config = ServiceConfig {
        access_keys: AccessKeys::new([(ACCESS_KEY.to_owned(), SECRET.to_owned())]),
        long_poll_timeout: Duration::from_secs(5),
        key_rotation: Duration::from_secs(3600),
        key_retention: Duration::from_secs(3600),
        cookie: sticky_core::CookieSettings::default(),
        sync_timeout: Duration::ZERO,
        listener_binding: Default::default(),
        target_connect_timeout: Duration::from_secs(1),
        replica: Default::default(),
        master_key: sticky_control::sealing::MasterKey::generate().unwrap(),
    };
    let instances = [
        ("i-1".to_owned(), "127.0.0.1:9001".parse().unwrap()),
        ("i-2".to_owned(), "127.0.0.2:9002".parse().unwrap()),
    ];
    let bootstrap = sticky_control::BootstrapFile::one_listener("terraform-balancer", &instances);
    let store = Store::open(&StoreLocation::Sqlite(":memory:".into())).unwrap();
    let service = Service::open(config, store, Some(bootstrap)).unwrap();
    let seeds: Vec<Vec<u8>> = [
        r#"CreateLoadBalancer
{"LoadBalancerName":"oapi","Listeners":[{"BackendPort":80,"BackendProtocol":"HTTP","LoadBalancerPort":8080,"LoadBalancerProtocol":"HTTP"}],"Tags":[{"Key":"env","Value":"test"}],"SubregionNames":["eu-west-2a"]}"#,
        r#"UpdateLoadBalancer
{"LoadBalancerName":"terraform-balancer","LoadBalancerPort":80,"PolicyNames":["p"],"HealthCheck":{"CheckInterval":30,"HealthyThreshold":2,"Path":"/h","Port":80,"Protocol":"HTTP","Timeout":5,"UnhealthyThreshold":2},"SecuredCookies":true}"#,
        r#"CreateLoadBalancerPolicy
{"LoadBalancerName":"terraform-balancer","PolicyName":"p","PolicyType":"load_balancer","CookieExpirationPeriod":60}"#,
        r#"CreateLoadBalancerPolicy
{"LoadBalancerName":"terraform-balancer","PolicyName":"a","PolicyType":"app","CookieName":"session"}"#,
        r#"LinkLoadBalancerBackendMachines
{"LoadBalancerName":"terraform-balancer","BackendVmIds":["i-2"],"BackendIps":["127.0.0.1"]}"#,
        r#"CreateLoadBalancerTags
{"LoadBalancerNames":["terraform-balancer"],"Tags":[{"Key":"team","Value":"web"}]}"#,
        r#"DeleteLoadBalancerListeners
{"LoadBalancerName":"terraform-balancer","LoadBalancerPorts":[80]}"#,
        r#"ReadLoadBalancers
{"Filters":{"LoadBalancerNames":["terraform-balancer"]}}"#,
        r#"ReadVmsHealth
{"LoadBalancerName":"terraform-balancer","BackendVmIds":["i-1"]}"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let report = sticky_fuzz::run("oapi", 10, &seeds, |input| {
        let Some(newline) = input.iter().position(|b| *b == b'\n') else {
            return;
        };
        let call = String::from_utf8_lossy(&input[..newline]);
        let Ok(body) = serde_json::from_slice::<serde_json::Value>(&input[newline + 1..]) else {
            return;
        };
        let before = service.version();
        if sticky_control::oapi::run(&service, &call, body).is_err() {
            assert_eq!(
                service.version(),
                before,
                "a refused call changed the state:\n{}",
                String::from_utf8_lossy(input)
            );
        }
    });
    eprintln!("{report:?}");
}

/// Target `certificate`: the upload parser and its checks (PEM, X.509, chain, key) take any
/// input without panicking. An input is a mode byte, then: `P` the body, chain and key texts
/// separated by NUL; `D` a leaf certificate's DER (wrapped in PEM with a real key), so the
/// mutations reach the X.509 parser and not only the PEM decoder.
#[test]
fn fuzz_the_certificate_upload_parser() {
    use base64::Engine as _;
    use sticky_control::certificates::{Upload, validate};
    let ca = sticky_testing::tls::TestCa::new("fuzz").unwrap();
    let issued = ca.issue(&["fuzz.example"]).unwrap();
    let der_of = |pem: &str| {
        let text: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD.decode(text).unwrap()
    };
    let mut texts = b"P".to_vec();
    texts.extend_from_slice(format!("{}\0{}\0{}", issued.body, issued.chain, issued.private_key).as_bytes());
    let mut der = b"D".to_vec();
    der.extend_from_slice(&der_of(&issued.body));
    let seeds = vec![texts, der];
    let now = sticky_control::domain::unix_now();
    sticky_fuzz::run("certificate", 10, &seeds, |input| {
        let Some((mode, data)) = input.split_first() else {
            return;
        };
        let upload = match mode {
            b'P' => {
                let text = String::from_utf8_lossy(data);
                let mut parts = text.split('\0');
                Upload {
                    name: "fuzz".into(),
                    path: None,
                    body: parts.next().unwrap_or_default().to_owned(),
                    chain: parts.next().map(str::to_owned),
                    private_key: parts.next().unwrap_or_default().to_owned(),
                }
            }
            _ => Upload {
                name: "fuzz".into(),
                path: None,
                body: format!(
                    "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                    base64::engine::general_purpose::STANDARD.encode(data)
                ),
                chain: Some(issued.chain.clone()),
                private_key: issued.private_key.clone(),
            },
        };
        if let Ok(certificate) = validate(upload, "ASCAFUZZ".into(), now) {
            // What was accepted is whole: its leaf parses again, its key is kept.
            assert!(certificate.body.starts_with("-----BEGIN CERTIFICATE-----"));
            assert!(certificate.private_key.is_some());
        }
    });
}
