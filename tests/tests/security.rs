//! Attacks on the live system that need every part running: key material never leaves the
//! state feed (not in API answers, logs or metrics of the control service or Envoy), and
//! re-encoded cookies, or a cookie replayed as the other policy kind, never pin. (Cookies of
//! another listener or load balancer: `filter/core` codec tests, the AAD binds both.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use sticky_tests::live::{Live, eventually};
use sticky_tests::{LOAD_BALANCER, STICKY_COOKIE, agent};

/// Every form a 32-byte key could be written in: base64 (both alphabets, padded or not), hex.
fn written_forms(secret_b64url: &str) -> Vec<String> {
    let raw = URL_SAFE_NO_PAD.decode(secret_b64url).expect("key secret is base64url");
    assert_eq!(raw.len(), 32, "keys are 256-bit");
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    vec![
        URL_SAFE_NO_PAD.encode(&raw),
        URL_SAFE.encode(&raw),
        STANDARD.encode(&raw),
        STANDARD_NO_PAD.encode(&raw),
        hex.clone(),
        hex.to_uppercase(),
        // A prefix long enough to be the key and not chance (24 of 43 characters).
        URL_SAFE_NO_PAD.encode(&raw)[..24].to_owned(),
    ]
}

#[test]
fn key_material_never_appears_in_api_answers_logs_or_metrics() {
    // Rotate every 3 s so several keys exist, active and retired.
    let live = Live::start(1, &["--key-rotation", "3"]);
    live.create_lb_cookie_policy("LBCookie", 300);
    live.create_app_cookie_policy("AppCookie", "session");
    live.set_policy(Some("LBCookie"));
    eventually(Duration::from_secs(2), "the policy is in effect", || {
        live.get(0, "/", &[]).sticky_cookie().is_some()
    });
    // Let a rotation or two happen, with traffic.
    let control = live.control.client(sticky_tests::live::ACCESS_KEY);
    let mut secrets = HashSet::new();
    eventually(Duration::from_secs(30), "three keys, active and retired", || {
        for _ in 0..10 {
            live.get(0, "/", &[]);
        }
        let (_, state) = control.state(LOAD_BALANCER, 80, None, 0).expect("state feed");
        for key in state["keys"]["keys"].as_array().expect("keys in the feed") {
            secrets.insert(key["secret"].as_str().expect("secret").to_owned());
        }
        secrets.len() >= 3
    });
    assert!(secrets.len() >= 2, "the keys rotated: {}", secrets.len());

    // Everything an operator or a scraper can see.
    let mut seen: Vec<(String, String)> = Vec::new();
    let lb = ("LoadBalancerName", LOAD_BALANCER);
    for (action, params) in [
        ("DescribeLoadBalancers", vec![]),
        (
            "DescribeLoadBalancers",
            vec![("LoadBalancerNames.member.1", LOAD_BALANCER)],
        ),
        ("DescribeLoadBalancerPolicies", vec![lb]),
        (
            "DescribeLoadBalancerPolicies",
            vec![lb, ("PolicyNames.member.1", "LBCookie")],
        ),
        ("DescribeInstanceHealth", vec![lb]),
        ("DescribeLoadBalancerAttributes", vec![lb]),
        ("DescribeLoadBalancerPolicyTypes", vec![]),
        // Errors too: they echo parameters.
        ("DescribeLoadBalancerPolicies", vec![("LoadBalancerName", "no-such-lb")]),
        ("NoSuchAction", vec![lb]),
    ] {
        let reply = control.call(action, &params).expect("API call");
        seen.push((format!("API {action} {params:?}"), reply.body));
    }
    let metrics = agent()
        .get(&format!("{}/metrics", live.control.url()))
        .call()
        .map(|r| r.into_string().unwrap_or_default())
        .unwrap_or_default();
    assert!(!metrics.is_empty(), "the control service serves /metrics");
    seen.push(("control /metrics".to_owned(), metrics));
    seen.push(("control log".to_owned(), live.control.log()));
    let envoy = &live.envoys[0];
    seen.push(("Envoy /stats".to_owned(), envoy.admin_get("/stats").expect("stats")));
    seen.push((
        "Envoy /config_dump".to_owned(),
        envoy.admin_get("/config_dump").expect("config dump"),
    ));
    seen.push((
        "Envoy log".to_owned(),
        std::fs::read_to_string(&envoy.log).unwrap_or_default(),
    ));
    // A client sees responses only: headers and body of ordinary requests.
    let reply = live.get(0, "/", &[]);
    seen.push((
        "a client's response".to_owned(),
        format!("{:?}\n{}", reply.set_cookies, reply.body),
    ));

    for secret in &secrets {
        for form in written_forms(secret) {
            for (place, text) in &seen {
                assert!(!text.contains(&form), "key material ({form}) appears in {place}");
            }
        }
    }
    println!(
        "{} keys checked in {} forms against {} places ({} bytes)",
        secrets.len(),
        written_forms(secrets.iter().next().expect("a key")).len(),
        seen.len(),
        seen.iter().map(|(_, t)| t.len()).sum::<usize>()
    );
}

#[test]
fn re_encoded_and_cross_listener_cookies_never_pin() {
    let live = Live::start(1, &[]);
    let (cookie, _) = live.lb_cookie_session(0);
    let raw = URL_SAFE_NO_PAD.decode(&cookie).expect("base64url");
    let pinned_before = live.counter(0, "pinned");
    let mut variants = vec![
        URL_SAFE.encode(&raw), // padded
        STANDARD.encode(&raw), // other alphabet, padded
        STANDARD_NO_PAD.encode(&raw),
        format!("{cookie}="),
        cookie.to_uppercase(),
        cookie.replace('-', "+").replace('_', "/"),
    ];
    // Non-canonical last character: same bytes, unused low bits set.
    let last = cookie.chars().last().expect("non-empty");
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let index = alphabet.find(last).expect("base64url character");
    for bits in 1..4 {
        if let Some(other) = alphabet.chars().nth(index ^ bits)
            && other != last
        {
            variants.push(format!("{}{other}", &cookie[..cookie.len() - 1]));
        }
    }
    variants.retain(|v| v != &cookie);
    for variant in &variants {
        let reply = live.get(0, "/", &[(STICKY_COOKIE, variant)]);
        assert_eq!(reply.status, 200, "{variant}");
        assert!(
            reply.sticky_cookie().is_some(),
            "a re-encoded cookie ({variant}) was not replaced by a new one"
        );
    }
    assert_eq!(
        live.counter(0, "pinned"),
        pinned_before,
        "no re-encoded cookie pinned a request"
    );

    // The genuine cookie, replayed after the listener switched to an app cookie policy,
    // does not pin (the policy kind is authenticated).
    live.create_app_cookie_policy("AppCookie", "session");
    // In force on every filter once the API answered.
    live.set_policy(Some("AppCookie"));
    let pinned_before = live.counter(0, "pinned");
    for _ in 0..10 {
        live.get(0, "/", &[("session", "x"), (STICKY_COOKIE, &cookie)]);
    }
    assert_eq!(
        live.counter(0, "pinned"),
        pinned_before,
        "an LB cookie never pins under an app cookie policy"
    );
}
