//! The control plane over TLS: the control service serves every surface over rustls; Envoys
//! follow it over mutual TLS (xDS and the filter's state feed); the API's standard clients work
//! over HTTPS with verification on; no one else gets key material or the fleet's state; the
//! certificate is reloaded without a restart; plain HTTP needs asking for, on loopback, behind
//! a token.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::Duration;

use sticky_testing::clients::{trusting, venv_bin};
use sticky_testing::eventually;
use sticky_tests::xds::XdsBouncer;
use sticky_tests::{LOAD_BALANCER, STICKY_COOKIE};

const ADS: &str = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// The routes that carry key material or the fleet's state, as (method, path).
fn peer_routes(lb: &str) -> Vec<(&'static str, String)> {
    vec![
        ("GET", format!("/v1/state/{lb}/80")),
        ("GET", "/v1/hosts".to_owned()),
        ("GET", "/v1/in-force?version=0&endpoints_version=0&wait_ms=0".to_owned()),
        ("POST", "/v3/discovery:endpoints".to_owned()),
        ("POST", ADS.to_owned()),
    ]
}

/// What `agent` gets at `url`: the status, or the transport error.
fn status(agent: &ureq::Agent, method: &str, url: &str, token: Option<&str>) -> Result<u16, String> {
    let mut request = agent.request(method, url);
    if let Some(token) = token {
        request = request.set("authorization", &format!("Bearer {token}"));
    }
    let answer = if method == "POST" {
        request.send_string("{}")
    } else {
        request.call()
    };
    match answer {
        Ok(response) => Ok(response.status()),
        Err(ureq::Error::Status(status, _)) => Ok(status),
        Err(e) => Err(e.to_string()),
    }
}

/// One aws CLI call against the control service, trusting `ca` when given.
fn aws(url: &str, ca: Option<&std::path::Path>, args: &[&str]) -> std::process::Output {
    let mut command = Command::new(venv_bin("aws"));
    trusting(&mut command, ca);
    command
        .args(["elb", "--endpoint-url", url])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", sticky_tests::live::ACCESS_KEY.0)
        .env("AWS_SECRET_ACCESS_KEY", sticky_tests::live::ACCESS_KEY.1)
        .env("AWS_DEFAULT_REGION", "eu-west-2")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_MAX_ATTEMPTS", "1")
        .output()
        .unwrap()
}

#[test]
fn over_tls_envoys_follow_with_their_certificates_and_no_other_peer_gets_keys_xds_in_force_or_hosts() {
    let bouncer = XdsBouncer::start_over_tls(1);
    let pki = bouncer.control.tls.clone().expect("TLS");
    let url = bouncer.control.url();
    assert!(url.starts_with("https://"), "{url}");

    // The seed's clients over HTTPS, verifying the control service: boto3 creates and sets the
    // policy, osc-cli and osc-sdk-python read, the aws CLI describes.
    bouncer.create_with_targets("shop", &["80"]);
    bouncer.boto3(&["lb-policy", "shop", "80", "300"]);
    assert!(bouncer.osc(&["DescribeLoadBalancers"]).contains("shop"));
    let read = bouncer.oapi("ReadLoadBalancers", &serde_json::json!({}));
    assert!(read.to_string().contains("shop"), "{read}");
    let described = aws(&url, Some(&pki.file("ca.pem")), &["describe-load-balancers"]);
    assert!(
        described.status.success() && String::from_utf8_lossy(&described.stdout).contains("shop"),
        "{}",
        String::from_utf8_lossy(&described.stderr)
    );
    // Verification is on: without the CA the aws CLI refuses the control service.
    let unverified = aws(&url, None, &["describe-load-balancers"]);
    assert!(!unverified.status.success());
    assert!(
        String::from_utf8_lossy(&unverified.stderr).contains("CERTIFICATE_VERIFY_FAILED"),
        "{}",
        String::from_utf8_lossy(&unverified.stderr)
    );

    // Envoy followed over mutual TLS: its listener serves, sticky (its filter polled the keys).
    let at = bouncer.listener(0, 1, 80);
    eventually(Duration::from_secs(10), "shop:80 serves LB-cookie stickiness", || {
        let Ok(first) = bouncer.try_get(at, "/", &[]) else {
            return false;
        };
        let (Some(cookie), Some(target)) = (first.sticky_cookie(), first.try_target()) else {
            return false;
        };
        (0..3).all(|_| {
            bouncer
                .try_get(at, "/", &[(STICKY_COOKIE, &cookie)])
                .is_ok_and(|r| r.try_target().as_ref() == Some(&target))
        })
    });

    // The Envoy's certificate opens the peer routes.
    let peer = pki.agent(true);
    let state = peer
        .get(&format!("{url}/v1/state/shop/80"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(state.contains("\"keys\""), "{state}");

    // No certificate (an API client, or anyone), or a token replayed without one: nothing.
    let anonymous = pki.agent(false);
    for (method, path) in peer_routes("shop") {
        for token in [None, Some(sticky_testing::control_process::FEED_TOKEN)] {
            assert_eq!(
                status(&anonymous, method, &format!("{url}{path}"), token),
                Ok(401),
                "{method} {path} with {token:?}"
            );
        }
    }
    // A certificate of another CA: refused at the handshake, before any HTTP.
    let stranger = pki.agent_presenting("stranger").unwrap();
    for (method, path) in peer_routes("shop") {
        let refused = status(&stranger, method, &format!("{url}{path}"), None);
        assert!(refused.is_err(), "{method} {path}: {refused:?}");
    }
    // Plain HTTP on the TLS port: no answer either.
    let plain = ureq::AgentBuilder::new().timeout(Duration::from_secs(5)).build();
    let port = bouncer.control.port;
    let answer = status(
        &plain,
        "GET",
        &format!("http://127.0.0.1:{port}/v1/state/shop/80"),
        None,
    );
    assert!(!matches!(answer, Ok(200)), "{answer:?}");
    // The state never went to anyone but the peer.
    assert!(!bouncer.control.log().contains("\"secret\""));
}

/// The control service's certificate, replaced on disk, is the one new connections get, with
/// no restart: established followers keep following.
#[test]
fn a_replaced_certificate_is_served_to_new_connections_without_a_restart() {
    let bouncer = XdsBouncer::start_over_tls(1);
    let pki = bouncer.control.tls.clone().expect("TLS");
    let fingerprint = || {
        let output = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "openssl s_client -connect 127.0.0.1:{} -servername control.sticky.internal </dev/null 2>/dev/null \
                 | openssl x509 -noout -fingerprint -sha256",
                bouncer.control.port
            ))
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    let before = fingerprint();
    assert!(before.contains("Fingerprint"), "{before}");
    // A renewal: a new certificate and key from the same CA, written over the old files.
    pki.renew_control().unwrap();
    eventually(Duration::from_secs(5), "the new certificate is served", || {
        fingerprint() != before
    });
    // Envoys and clients go on: the API answers over the new certificate, the listener serves.
    bouncer.create_with_targets(LOAD_BALANCER, &["80"]);
    let at = bouncer.listener(0, 1, 80);
    eventually(Duration::from_secs(10), "the new load balancer serves", || {
        bouncer.try_get(at, "/", &[]).is_ok_and(|r| r.status == 200)
    });
    assert!(bouncer.control.log().contains("control TLS reloaded"));
}

/// Plain HTTP is for loopback, asked for, behind a token; otherwise the service does not start
/// and says why.
#[test]
fn the_control_service_refuses_to_start_without_tls_unless_plain_http_on_loopback_with_a_token() {
    let binary = sticky_testing::artifacts::build_control().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("control.db").display().to_string();
    let refused = |args: &[&str]| {
        let output = Command::new(&binary)
            .args(["--access-key", "A:B", "--store", &store])
            .args(args)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?} started");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let error = refused(&["--listen", "127.0.0.1:0"]);
    assert!(
        error.contains("--tls-certificate") && error.contains("--plain-http"),
        "{error}"
    );
    let error = refused(&["--listen", "0.0.0.0:0", "--plain-http", "--feed-token", "t"]);
    assert!(error.contains("loopback"), "{error}");
    let error = refused(&["--listen", "127.0.0.1:0", "--plain-http"]);
    assert!(error.contains("--feed-token"), "{error}");
    let pki = sticky_testing::tls::ControlPlaneCa::new(&dir.path().join("pki")).unwrap();
    let mut args = vec!["--listen".to_owned(), "127.0.0.1:0".to_owned()];
    args.extend(pki.control_args());
    args.extend(["--feed-token".to_owned(), "t".to_owned()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let error = refused(&args);
    assert!(error.contains("--feed-token goes with --plain-http"), "{error}");
    std::fs::write(pki.file("control-key.pem"), "not a key").unwrap();
    let error = refused(&args[..args.len() - 2]);
    assert!(error.contains("control-key.pem"), "{error}");
}

/// Replicas over TLS ask each other, presenting their certificates, whether their followers
/// hold a change: an answer through any replica is in force on Envoys following another.
#[test]
fn replicas_over_tls_ask_each_other_and_an_answer_is_in_force_on_every_envoy() {
    let mut live = sticky_tests::live::Live::start_replicated_over_tls(2, 2, &[]);
    // Answered once in force on both Envoys, whichever replica each follows.
    let (cookie, target) = live.lb_cookie_session(1);
    let first = live.get(0, "/", &[]);
    assert!(first.sticky_cookie().is_some(), "in force on Envoy 0 too");
    assert_eq!(live.get(1, "/", &[(STICKY_COOKIE, &cookie)]).target(), target);
    for n in 0..live.replica_count() {
        let log = live.replica_mut(n).log();
        assert!(!log.contains("answering before every follower"), "replica {n}:\n{log}");
        assert!(log.contains("https://"), "replica {n} advertises an https URL:\n{log}");
    }
}
