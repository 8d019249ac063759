//! HTTPS listeners, driven as an operator drives them: certificates uploaded through IAM's API
//! (boto3 `iam`, the aws CLI) and Outscale's (osc-sdk-python), an HTTPS listener created and
//! its certificate swapped through ELB's (boto3 `elb`), served by Envoy over xDS with the
//! certificate fetched over SDS; clients (curl over HTTP/2 and HTTP/1.1, openssl) trust the
//! test's own CA.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use sticky_testing::clients::venv_bin;
use sticky_testing::tls::{IssuedCertificate, TestCa, Validity};
use sticky_tests::TARGET_IDS;
use sticky_tests::https::curl;
use sticky_tests::live::ACCESS_KEY;
use sticky_tests::xds::{XdsBouncer, eventually};

const HOST: &str = "shop.example";

/// One call through `tests/clients/certificates.py` (boto3 `iam` and `elb`); its JSON answer.
fn boto3(bouncer: &XdsBouncer, args: &[&str]) -> Value {
    let script = sticky_testing::artifacts::workspace_root().join("tests/clients/certificates.py");
    let output = Command::new(venv_bin("python"))
        .arg(script)
        .args([bouncer.control.url().as_str(), ACCESS_KEY.0, ACCESS_KEY.1])
        .args(args)
        .output()
        .expect("python runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "certificates.py {args:?}: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("certificates.py {args:?}: {e}: {text}"))
}

/// The certificate's files in `dir/name/`: body, key, chain.
fn write_files(dir: &Path, name: &str, issued: &IssuedCertificate) -> [String; 3] {
    let at = dir.join(name);
    std::fs::create_dir_all(&at).unwrap();
    [
        ("body.pem", &issued.body),
        ("key.pem", &issued.private_key),
        ("chain.pem", &issued.chain),
    ]
    .map(|(file, text)| {
        let path = at.join(file);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    })
}

fn upload(bouncer: &XdsBouncer, dir: &Path, name: &str, issued: &IssuedCertificate) -> Value {
    let [body, key, chain] = write_files(dir, name, issued);
    boto3(bouncer, &["upload", name, &body, &key, &chain])
}

/// Whether openssl completes a handshake at `at` with `flags`.
fn handshakes(at: SocketAddr, flags: &[&str]) -> bool {
    Command::new("openssl")
        .args(["s_client", "-connect", &at.to_string(), "-servername", HOST])
        .args(flags)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The SHA-256 fingerprint of the certificate a new handshake at `at` gets.
fn served_fingerprint(at: SocketAddr) -> Option<String> {
    let client = Command::new("openssl")
        .args(["s_client", "-connect", &at.to_string(), "-servername", HOST])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let pem = client.wait_with_output().ok()?.stdout;
    let mut fingerprint = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    fingerprint.stdin.take()?.write_all(&pem).ok()?;
    let out = fingerprint.wait_with_output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn fingerprint_of(pem: &str) -> String {
    let mut fingerprint = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    fingerprint.stdin.take().unwrap().write_all(pem.as_bytes()).unwrap();
    String::from_utf8_lossy(&fingerprint.wait_with_output().unwrap().stdout)
        .trim()
        .to_owned()
}

/// An open TLS connection (openssl s_client, HTTP/1.1) on which requests are sent later.
struct OpenConnection {
    child: std::process::Child,
    reader: BufReader<std::process::ChildStdout>,
}

impl OpenConnection {
    fn open(at: SocketAddr, ca: &Path) -> Self {
        let mut child = Command::new("openssl")
            .args(["s_client", "-quiet", "-verify_return_error", "-alpn", "http/1.1"])
            .args(["-connect", &at.to_string(), "-servername", HOST, "-CAfile"])
            .arg(ca)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let reader = BufReader::new(child.stdout.take().unwrap());
        Self { child, reader }
    }

    /// One GET on the connection; its status.
    fn get(&mut self) -> u16 {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin
            .write_all(format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
            .unwrap();
        stdin.flush().unwrap();
        let mut status_line = String::new();
        self.reader.read_line(&mut status_line).unwrap();
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = value.trim().parse().unwrap();
            }
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        let mut body = vec![0; length];
        std::io::Read::read_exact(&mut self.reader, &mut body).unwrap();
        status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ca_file(dir: &Path, ca: &TestCa) -> PathBuf {
    let path = dir.join("root.pem");
    std::fs::write(&path, ca.root_pem()).unwrap();
    path
}

#[test]
fn an_https_listener_is_sticky_over_http2_and_http1_and_its_certificate_swaps_live() {
    let bouncer = XdsBouncer::start(1);
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("https").unwrap();
    let root = ca_file(dir.path(), &ca);
    let first = ca.issue(&[HOST]).unwrap();
    let uploaded = upload(&bouncer, dir.path(), "shop-2026", &first);
    let arn = uploaded["Arn"]
        .as_str()
        .unwrap_or_else(|| panic!("{uploaded}"))
        .to_owned();

    boto3(&bouncer, &["create-https", "shop", "80", &arn]);
    bouncer.configure_health_check("shop");
    let mut register = vec!["register", "shop"];
    register.extend(TARGET_IDS);
    bouncer.boto3(&register);
    bouncer.boto3(&["lb-policy", "shop", "80", "300"]);
    let described = boto3(&bouncer, &["describe", "shop"]);
    assert_eq!(described[0]["Listener"]["Protocol"], "HTTPS", "{described}");
    assert_eq!(
        described[0]["Listener"]["SSLCertificateId"],
        arn.as_str(),
        "{described}"
    );

    let at = bouncer.listener(0, 1, 80);
    eventually(Duration::from_secs(10), "the HTTPS listener serves", || {
        curl(at, HOST, &root, "--http2", None).is_ok_and(|r| r.status == 200)
    });
    // Same stickiness as over HTTP: a cookie on the first answer pins the session, on HTTP/2
    // and on HTTP/1.1; it is Secure on an HTTPS listener by default.
    let opened = curl(at, HOST, &root, "--http2", None).unwrap();
    assert_eq!(opened.version, "HTTP/2", "ALPN agreed on HTTP/2");
    let (cookie, attributes) = opened.sticky_cookie().expect("a stickiness cookie");
    assert!(attributes.contains("Secure"), "{attributes}");
    let target = opened.target();
    for http in ["--http2", "--http1.1", "--http2", "--http1.1"] {
        let reply = curl(at, HOST, &root, http, Some(&cookie)).unwrap();
        assert_eq!(reply.target(), target, "{http}");
    }
    assert_eq!(curl(at, HOST, &root, "--http1.1", None).unwrap().version, "HTTP/1.1");
    // The TLS policy: TLS 1.2 and 1.3, forward-secret suites only.
    assert!(handshakes(at, &["-tls1_3"]));
    assert!(handshakes(at, &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"]));
    assert!(
        !handshakes(at, &["-tls1_2", "-cipher", "AES128-GCM-SHA256"]),
        "a suite without forward secrecy"
    );
    assert!(
        !handshakes(at, &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]),
        "TLS 1.1"
    );

    // ELB's SSL negotiation policies, beside the stickiness policy. The samples that map are
    // described; an old one is refused with the reason.
    let samples = boto3(&bouncer, &["policies", "-"]);
    let names: Vec<&str> = samples
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["PolicyName"].as_str())
        .collect();
    assert!(
        names.contains(&"ELBSecurityPolicy-2016-08") && names.contains(&"ELBSecurityPolicy-TLS-1-2-2017-01"),
        "{samples}"
    );
    let old = boto3(
        &bouncer,
        &[
            "ssl-policy",
            "shop",
            "legacy",
            "Reference-Security-Policy=ELBSecurityPolicy-2015-03",
        ],
    );
    assert_eq!(old["error"], "InvalidConfigurationRequest", "{old}");
    assert!(old["message"].as_str().unwrap().contains("DHE"), "{old}");
    let tls11 = "Reference-Security-Policy=ELBSecurityPolicy-TLS-1-1-2017-01";
    assert_eq!(boto3(&bouncer, &["ssl-policy", "shop", "tls11", tls11]), json!({}));
    assert_eq!(
        boto3(&bouncer, &["set-policies", "shop", "80", "lb-80", "tls11"]),
        json!({})
    );
    // In force when answered: TLS 1.1 now, not TLS 1.0; TLS 1.3 stays on; still sticky.
    assert!(
        handshakes(at, &["-tls1_1", "-cipher", "ECDHE-ECDSA-AES128-SHA@SECLEVEL=0"]),
        "TLS 1.1 under ELBSecurityPolicy-TLS-1-1-2017-01"
    );
    assert!(!handshakes(at, &["-tls1", "-cipher", "DEFAULT@SECLEVEL=0"]), "TLS 1.0");
    assert!(handshakes(at, &["-tls1_3"]));
    assert_eq!(
        curl(at, HOST, &root, "--http2", Some(&cookie)).unwrap().target(),
        target
    );
    // A custom policy: TLS 1.2 with one suite.
    let custom = [
        "ssl-policy",
        "shop",
        "strict",
        "Protocol-TLSv1.2=true",
        "Protocol-TLSv1.1=false",
        "Server-Defined-Cipher-Order=true",
        "ECDHE-ECDSA-AES256-GCM-SHA384=true",
    ];
    assert_eq!(boto3(&bouncer, &custom), json!({}));
    assert_eq!(
        boto3(&bouncer, &["set-policies", "shop", "80", "lb-80", "strict"]),
        json!({})
    );
    assert!(handshakes(at, &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384"]));
    assert!(!handshakes(
        at,
        &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"]
    ));
    assert!(!handshakes(at, &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]));
    let described = boto3(&bouncer, &["policies", "shop", "strict"]);
    let attributes = &described[0]["PolicyAttributeDescriptions"];
    assert!(
        attributes
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["AttributeName"] == "Protocol-TLSv1.2" && a["AttributeValue"] == "true"),
        "{described}"
    );
    // Back to the default policy.
    assert_eq!(boto3(&bouncer, &["set-policies", "shop", "80", "lb-80"]), json!({}));
    assert!(!handshakes(at, &["-tls1_2", "-cipher", "AES128-GCM-SHA256"]));

    // The certificate swaps live: new handshakes get the new one, an open connection goes on.
    assert_eq!(served_fingerprint(at), Some(fingerprint_of(&first.body)));
    let mut open = OpenConnection::open(at, &root);
    assert_eq!(open.get(), 200);
    let second = ca.issue(&[HOST]).unwrap();
    let renewed = upload(&bouncer, dir.path(), "shop-2027", &second);
    boto3(
        &bouncer,
        &["set-certificate", "shop", "80", renewed["Arn"].as_str().unwrap()],
    );
    // In force when answered: the very next handshake gets it.
    assert_eq!(served_fingerprint(at), Some(fingerprint_of(&second.body)));
    assert_eq!(open.get(), 200, "the connection opened before the swap goes on");
    assert_eq!(
        curl(at, HOST, &root, "--http2", Some(&cookie)).unwrap().target(),
        target
    );

    // The certificate in use cannot be deleted; the one replaced can.
    let refused = boto3(&bouncer, &["delete", "shop-2027"]);
    assert_eq!(refused["error"], "DeleteConflict", "{refused}");
    assert_eq!(boto3(&bouncer, &["delete", "shop-2026"]), json!({}));

    // The private key is nowhere Envoy shows, nor in the store in clear.
    let key_body = key_material(&second.private_key);
    let dump = bouncer.envoys[0].admin_get("/config_dump?include_eds").unwrap();
    assert!(
        dump.contains("shop-2027") || dump.contains("ASCA"),
        "the secret is in the dump"
    );
    assert!(!dump.contains(&key_body), "Envoy's config dump shows the private key");
    let store = std::fs::read(bouncer.control.dir.join("control.db")).unwrap();
    assert!(
        !String::from_utf8_lossy(&store).contains(&key_body),
        "the store holds the private key in clear"
    );
    assert!(
        !bouncer.control.log().contains(&key_body),
        "the log shows the private key"
    );
}

/// A line from the middle of a PEM key: what would show if the key leaked anywhere.
fn key_material(pem: &str) -> String {
    pem.lines().nth(2).unwrap_or_default().to_owned()
}

/// Independent of the shell: runs with the native one only (scripts/test skips it for wasm).
#[test]
fn server_certificates_are_managed_through_iam_and_oapi_and_bad_ones_refused_whole() {
    let bouncer = XdsBouncer::start(0);
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("api").unwrap();
    let good = ca.issue(&[HOST]).unwrap();
    let other = ca.issue(&["other.example"]).unwrap();
    let expired = ca
        .issue_with(
            &["old.example"],
            &sticky_testing::tls::PKCS_ECDSA_P256_SHA256,
            Validity::expired(),
        )
        .unwrap();
    let garbage = IssuedCertificate {
        body: "this is no certificate\n".into(),
        ..good.clone()
    };
    let mismatched = IssuedCertificate {
        private_key: other.private_key.clone(),
        ..good.clone()
    };
    let reversed = IssuedCertificate {
        chain: format!("{}{}", ca.root_pem(), ca.intermediate_pem()),
        ..good.clone()
    };
    let huge = IssuedCertificate {
        body: format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            "A".repeat(1 << 20)
        ),
        ..good.clone()
    };
    for (name, bad, code) in [
        ("garbage", &garbage, "MalformedCertificate"),
        ("mismatched", &mismatched, "KeyPairMismatch"),
        ("expired", &expired, "MalformedCertificate"),
        ("reversed", &reversed, "MalformedCertificate"),
        ("huge", &huge, "ValidationError"),
    ] {
        let refused = upload(&bouncer, dir.path(), name, bad);
        assert_eq!(refused["error"], code, "{name}: {refused}");
    }
    assert_eq!(boto3(&bouncer, &["list"]), json!([]), "nothing refused was stored");

    // boto3 iam: upload, list, get (no key), rename.
    let uploaded = upload(&bouncer, dir.path(), "web", &good);
    assert!(uploaded["ServerCertificateId"].as_str().unwrap().starts_with("ASCA"));
    assert_eq!(boto3(&bouncer, &["list"])[0]["ServerCertificateName"], "web");
    let got = boto3(&bouncer, &["get", "web"]);
    assert!(got["CertificateBody"].as_str().unwrap().contains("BEGIN CERTIFICATE"));
    assert!(!got.to_string().contains("PRIVATE KEY"), "{got}");
    let again = upload(&bouncer, dir.path(), "web", &good);
    assert_eq!(again["error"], "EntityAlreadyExists", "{again}");
    assert_eq!(boto3(&bouncer, &["rename", "web", "web-2026"]), json!({}));

    // The aws CLI sees the same store.
    let aws = Command::new(venv_bin("aws"))
        .args([
            "iam",
            "list-server-certificates",
            "--endpoint-url",
            &bouncer.control.url(),
        ])
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY.0)
        .env("AWS_SECRET_ACCESS_KEY", ACCESS_KEY.1)
        .env("AWS_DEFAULT_REGION", "eu-west-2")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&aws.stdout);
    assert!(
        aws.status.success() && listed.contains("web-2026"),
        "{listed}{}",
        String::from_utf8_lossy(&aws.stderr)
    );

    // osc-sdk-python: create, read, update, delete; an HTTPS listener names the ORN.
    let created = bouncer.oapi(
        "CreateServerCertificate",
        &json!({ "Name": "api", "Body": other.body, "Chain": other.chain, "PrivateKey": other.private_key }),
    );
    let orn = created["ServerCertificate"]["Orn"].as_str().unwrap().to_owned();
    assert!(orn.starts_with("orn:ows:idauth::"), "{created}");
    let read = bouncer.oapi("ReadServerCertificates", &json!({}));
    assert_eq!(read["ServerCertificates"].as_array().unwrap().len(), 2, "{read}");
    assert!(!read.to_string().contains("PRIVATE KEY"));
    bouncer.oapi(
        "CreateLoadBalancer",
        &json!({
            "LoadBalancerName": "api-lb",
            "Listeners": [{ "LoadBalancerProtocol": "HTTPS", "LoadBalancerPort": 443,
                            "BackendProtocol": "HTTP", "BackendPort": 80, "ServerCertificateId": orn }],
        }),
    );
    let lbs = bouncer.oapi(
        "ReadLoadBalancers",
        &json!({ "Filters": { "LoadBalancerNames": ["api-lb"] } }),
    );
    assert_eq!(
        lbs["LoadBalancers"][0]["Listeners"][0]["ServerCertificateId"],
        orn.as_str(),
        "{lbs}"
    );
    let refused = bouncer
        .try_osc_api(&["DeleteServerCertificate", "--Name", "api"])
        .unwrap_err();
    assert!(
        refused.contains("ResourceConflict") || refused.contains("9004"),
        "{refused}"
    );
    bouncer.oapi(
        "UpdateServerCertificate",
        &json!({ "Name": "api", "NewName": "api-renamed" }),
    );
    let lbs = bouncer.oapi(
        "ReadLoadBalancers",
        &json!({ "Filters": { "LoadBalancerNames": ["api-lb"] } }),
    );
    let renamed_orn = lbs["LoadBalancers"][0]["Listeners"][0]["ServerCertificateId"]
        .as_str()
        .unwrap();
    assert!(
        renamed_orn.ends_with("/api-renamed"),
        "the listener follows the rename: {lbs}"
    );
    bouncer.oapi("DeleteLoadBalancer", &json!({ "LoadBalancerName": "api-lb" }));
    bouncer.oapi("DeleteServerCertificate", &json!({ "Name": "api-renamed" }));
    assert_eq!(boto3(&bouncer, &["list"]).as_array().unwrap().len(), 1);
}

/// A process killed when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Independent of the shell: runs with the native one only (scripts/test skips it for wasm).
#[test]
fn in_chromium_over_https_the_cors_twin_keeps_a_cross_site_frame_on_its_target() {
    let bouncer = XdsBouncer::start(1);
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("browser").unwrap();
    let issued = ca.issue(&[HOST, "app.example"]).unwrap();
    let uploaded = upload(&bouncer, dir.path(), "shop-browser", &issued);
    boto3(
        &bouncer,
        &["create-https", "shop", "80", uploaded["Arn"].as_str().unwrap()],
    );
    bouncer.configure_health_check("shop");
    let mut register = vec!["register", "shop"];
    register.extend(TARGET_IDS);
    bouncer.boto3(&register);
    bouncer.boto3(&["lb-policy", "shop", "80", "300"]);
    // The twin (SameSite=None) and CHIPS, which browsers take over HTTPS only.
    let mut attributes = vec![("LoadBalancerName", "shop")];
    let keys = [
        "sticky.cookie.secure",
        "sticky.cookie.cors_twin",
        "sticky.cookie.partitioned",
    ];
    let names: Vec<(String, String)> = (1..=keys.len())
        .map(|i| {
            (
                format!("LoadBalancerAttributes.AdditionalAttributes.member.{i}.Key"),
                format!("LoadBalancerAttributes.AdditionalAttributes.member.{i}.Value"),
            )
        })
        .collect();
    for ((key_field, value_field), key) in names.iter().zip(keys) {
        attributes.push((key_field, key));
        attributes.push((value_field, "true"));
    }
    bouncer
        .api()
        .call("ModifyLoadBalancerAttributes", &attributes)
        .expect("api")
        .ok();
    let at = bouncer.listener(0, 1, 80);
    let root = ca_file(dir.path(), &ca);
    eventually(Duration::from_secs(10), "the HTTPS listener serves", || {
        curl(at, HOST, &root, "--http2", None).is_ok_and(|r| r.status == 200)
    });

    // A page of another site (app.example) that frames the load balancer's.
    let [body, key, chain] = write_files(dir.path(), "page", &issued);
    let full_chain = dir.path().join("page/full.pem");
    std::fs::write(
        &full_chain,
        format!(
            "{}{}",
            std::fs::read_to_string(&body).unwrap(),
            std::fs::read_to_string(&chain).unwrap()
        ),
    )
    .unwrap();
    let page_port = sticky_testing::free_port().unwrap();
    let frame = format!("https://{HOST}:{}/", at.port());
    let mut page = Child(
        Command::new(venv_bin("python"))
            .arg(sticky_testing::artifacts::workspace_root().join("tests/clients/embedding_page.py"))
            .args([&page_port.to_string(), full_chain.to_str().unwrap(), &key, &frame])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut ready = String::new();
    BufReader::new(page.0.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready.trim(), "serving");

    let trusted = format!(
        "{},{}",
        sticky_tests::browser::spki_hash(&issued.body),
        sticky_tests::browser::spki_hash(&issued.chain)
    );
    let browser = sticky_tests::browser::Browser::start_with(
        "https-cors-twin",
        &[
            format!(
                "--host-resolver-rules=MAP {HOST} {}, MAP app.example 127.0.0.1",
                at.ip()
            ),
            format!("--ignore-certificate-errors-spki-list={trusted}"),
        ],
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let embedding = format!("https://app.example:{page_port}/");
    let target_in_frame = || {
        browser.goto(&embedding).unwrap();
        let text = browser
            .wait_frame_text(0, "the framed load balancer's answer", Duration::from_secs(10), |t| {
                t.contains("\"target\"")
            })
            .unwrap_or_else(|e| panic!("{e:#}"));
        let value: Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"));
        value["target"].as_str().unwrap().to_owned()
    };
    let first = target_in_frame();
    for _ in 0..5 {
        assert_eq!(
            target_in_frame(),
            first,
            "a cross-site frame sends only the SameSite=None twin: it keeps the session"
        );
    }
}

/// One HTTP/1.1 GET written on `stream` (closing after it); the answer's target.
fn target_over(mut stream: impl std::io::Read + Write) -> String {
    stream
        .write_all(format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    let value: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"));
    value["target"].as_str().unwrap().to_owned()
}

/// Independent of the shell (no HTTP filter on them): runs with the native one only.
#[test]
fn tcp_and_ssl_listeners_balance_connections_and_refuse_stickiness() {
    let bouncer = XdsBouncer::start(1);
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("layer4").unwrap();
    let root = ca_file(dir.path(), &ca);
    let uploaded = upload(&bouncer, dir.path(), "layer4", &ca.issue(&[HOST]).unwrap());
    let arn = uploaded["Arn"].as_str().unwrap();
    boto3(&bouncer, &["create", "l4", "TCP:80:TCP", &format!("SSL:81:TCP:{arn}")]);
    bouncer.configure_health_check("l4");
    let mut register = vec!["register", "l4"];
    register.extend(TARGET_IDS);
    bouncer.boto3(&register);
    let (tcp, ssl) = (bouncer.listener(0, 1, 80), bouncer.listener(0, 1, 81));

    // TCP: connections balanced over the targets, the bytes passed as they are.
    eventually(Duration::from_secs(10), "the TCP listener reaches every target", || {
        let targets: std::collections::HashSet<String> = (0..6)
            .filter_map(|_| std::net::TcpStream::connect(tcp).ok())
            .map(target_over)
            .collect();
        targets.len() == TARGET_IDS.len()
    });
    // SSL: TLS over TCP with the listener's certificate, which openssl verifies.
    let mut tls = Command::new("openssl")
        .args([
            "s_client",
            "-quiet",
            "-verify_return_error",
            "-connect",
            &ssl.to_string(),
        ])
        .args(["-servername", HOST, "-CAfile"])
        .arg(&root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    tls.stdin
        .take()
        .unwrap()
        .write_all(format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let answer = String::from_utf8_lossy(&tls.wait_with_output().unwrap().stdout).into_owned();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(TARGET_IDS.iter().any(|id| answer.contains(id)), "{answer}");

    // No stickiness on a layer-4 listener (ELB's InvalidConfigurationRequest).
    let api = bouncer.api();
    api.call(
        "CreateLBCookieStickinessPolicy",
        &[("LoadBalancerName", "l4"), ("PolicyName", "P")],
    )
    .expect("api")
    .ok();
    api.call(
        "SetLoadBalancerPoliciesOfListener",
        &[
            ("LoadBalancerName", "l4"),
            ("LoadBalancerPort", "80"),
            ("PolicyNames.member.1", "P"),
        ],
    )
    .expect("api")
    .err(409, "InvalidConfigurationRequest");
}
