//! The control service through real HTTP: every action, signed as the standard clients sign,
//! its errors, durability across kill -9, health checks against real targets, and the
//! long-poll state feed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use common::{ACCESS_KEY, Control, SECRET_KEY, Style, bootstrap};
use sticky_testing::control_process::FEED_TOKEN;
use sticky_testing::eventually;

fn fake(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn control_with_three_instances() -> Control {
    let instances = [("i-1", fake(1)), ("i-2", fake(2)), ("i-3", fake(3))];
    Control::start(&bootstrap(&instances, &[]), &[])
}

const LISTENER_80: [(&str, &str); 3] = [
    ("Listeners.member.1.Protocol", "HTTP"),
    ("Listeners.member.1.LoadBalancerPort", "80"),
    ("Listeners.member.1.InstancePort", "8080"),
];

fn with<'a>(base: &[(&'a str, &'a str)], more: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    base.iter().chain(more).copied().collect()
}

#[test]
fn every_action_with_lists_and_errors() {
    let control = control_with_three_instances();
    let lb = [("LoadBalancerName", "my-lb")];

    // CreateLoadBalancer, idempotent for the same listeners.
    let created = control.call("CreateLoadBalancer", &with(&lb, &LISTENER_80)).ok();
    assert!(created.body.starts_with(
        "<CreateLoadBalancerResponse xmlns=\"http://elasticloadbalancing.amazonaws.com/doc/2012-06-01/\">"
    ));
    assert!(created.field("DNSName").unwrap().starts_with("my-lb."));
    assert!(created.field("RequestId").is_some());
    control.call("CreateLoadBalancer", &with(&lb, &LISTENER_80)).ok();
    let other_listeners = with(
        &lb,
        &[
            ("Listeners.member.1.Protocol", "HTTP"),
            ("Listeners.member.1.LoadBalancerPort", "81"),
            ("Listeners.member.1.InstancePort", "8080"),
        ],
    );
    control
        .call("CreateLoadBalancer", &other_listeners)
        .err(400, "DuplicateLoadBalancerName");
    control
        .call(
            "CreateLoadBalancer",
            &with(&[("LoadBalancerName", "bad_name")], &LISTENER_80),
        )
        .err(400, "ValidationError");
    control.call("CreateLoadBalancer", &lb).err(400, "ValidationError");
    // Layer 4: TCP in front of TCP (not of HTTP); no stickiness policy on it, as in ELB.
    let tcp_to_http = with(
        &[("LoadBalancerName", "tcp-lb")],
        &[
            ("Listeners.member.1.Protocol", "TCP"),
            ("Listeners.member.1.LoadBalancerPort", "80"),
            ("Listeners.member.1.InstanceProtocol", "HTTP"),
            ("Listeners.member.1.InstancePort", "80"),
        ],
    );
    control
        .call("CreateLoadBalancer", &tcp_to_http)
        .err(400, "ValidationError");
    let tcp = with(
        &[("LoadBalancerName", "tcp-lb")],
        &[
            ("Listeners.member.1.Protocol", "TCP"),
            ("Listeners.member.1.LoadBalancerPort", "80"),
            ("Listeners.member.1.InstancePort", "80"),
        ],
    );
    control.call("CreateLoadBalancer", &tcp).ok();
    let tcp_lb = [("LoadBalancerName", "tcp-lb")];
    control
        .call("CreateLBCookieStickinessPolicy", &with(&tcp_lb, &[("PolicyName", "P")]))
        .ok();
    control
        .call(
            "SetLoadBalancerPoliciesOfListener",
            &with(&tcp_lb, &[("LoadBalancerPort", "80"), ("PolicyNames.member.1", "P")]),
        )
        .err(409, "InvalidConfigurationRequest");
    // An SSL negotiation policy is one of the "other" policies, for HTTPS and SSL listeners only.
    let tls_policy = [
        ("PolicyName", "Tls"),
        ("PolicyTypeName", "SSLNegotiationPolicyType"),
        ("PolicyAttributes.member.1.AttributeName", "Reference-Security-Policy"),
        ("PolicyAttributes.member.1.AttributeValue", "ELBSecurityPolicy-2016-08"),
    ];
    control
        .call("CreateLoadBalancerPolicy", &with(&tcp_lb, &tls_policy))
        .ok();
    let described = control.call("DescribeLoadBalancers", &tcp_lb).ok();
    assert!(
        described
            .body
            .contains("<OtherPolicies><member>Tls</member></OtherPolicies>"),
        "{}",
        described.body
    );
    control
        .call(
            "SetLoadBalancerPoliciesOfListener",
            &with(&tcp_lb, &[("LoadBalancerPort", "80"), ("PolicyNames.member.1", "Tls")]),
        )
        .err(409, "InvalidConfigurationRequest");
    control
        .call(
            "CreateLoadBalancer",
            &with(
                &[("LoadBalancerName", "ssl-lb")],
                &[
                    ("Listeners.member.1.Protocol", "SSL"),
                    ("Listeners.member.1.LoadBalancerPort", "443"),
                    ("Listeners.member.1.InstancePort", "80"),
                ],
            ),
        )
        .err(400, "ValidationError");
    control.call("DeleteLoadBalancer", &tcp_lb).ok();

    // Policies.
    control
        .call(
            "CreateLBCookieStickinessPolicy",
            &with(&lb, &[("PolicyName", "LBCookie"), ("CookieExpirationPeriod", "10")]),
        )
        .ok();
    control
        .call(
            "CreateLBCookieStickinessPolicy",
            &with(&lb, &[("PolicyName", "LBCookie")]),
        )
        .err(400, "DuplicatePolicyName");
    control
        .call(
            "CreateLBCookieStickinessPolicy",
            &with(&lb, &[("PolicyName", "Neg"), ("CookieExpirationPeriod", "-1")]),
        )
        .err(400, "ValidationError");
    control
        .call(
            "CreateLBCookieStickinessPolicy",
            &with(&lb, &[("PolicyName", "Session")]),
        )
        .ok();
    control
        .call(
            "CreateAppCookieStickinessPolicy",
            &with(&lb, &[("PolicyName", "AppCookie"), ("CookieName", "session")]),
        )
        .ok();
    for bad in ["a;b", "a,b", "a b", "a\r\nb", "sé", "", "a=b"] {
        control
            .call(
                "CreateAppCookieStickinessPolicy",
                &with(&lb, &[("PolicyName", "Bad"), ("CookieName", bad)]),
            )
            .err(400, "ValidationError");
    }
    control
        .call(
            "CreateAppCookieStickinessPolicy",
            &with(
                &[("LoadBalancerName", "nope")],
                &[("PolicyName", "P"), ("CookieName", "c")],
            ),
        )
        .err(400, "LoadBalancerNotFound");

    // Listener policies.
    let set = |port: &'static str, names: &[&'static str]| {
        let mut params = with(&lb, &[("LoadBalancerPort", port)]);
        let keys = ["PolicyNames.member.1", "PolicyNames.member.2"];
        if names.is_empty() {
            params.push(("PolicyNames", ""));
        }
        params.extend(keys.iter().zip(names).map(|(k, v)| (*k, *v)));
        control.call("SetLoadBalancerPoliciesOfListener", &params)
    };
    set("80", &["LBCookie"]).ok();
    set("81", &["LBCookie"]).err(400, "ListenerNotFound");
    set("80", &["Nope"]).err(400, "PolicyNotFound");
    set("80", &["LBCookie", "AppCookie"]).err(409, "InvalidConfigurationRequest");

    let described = control
        .call("DescribeLoadBalancers", &[("LoadBalancerNames.member.1", "my-lb")])
        .ok();
    assert_eq!(described.fields("LoadBalancerName"), ["my-lb"]);
    assert!(
        described
            .body
            .contains("<PolicyNames><member>LBCookie</member></PolicyNames>"),
        "{}",
        described.body
    );
    assert!(described.body.contains(
        "<member><PolicyName>LBCookie</PolicyName><CookieExpirationPeriod>10</CookieExpirationPeriod></member>"
    ));
    assert!(
        described
            .body
            .contains("<member><PolicyName>AppCookie</PolicyName><CookieName>session</CookieName></member>")
    );
    assert_eq!(
        described.field("Target").as_deref(),
        Some("TCP:8080"),
        "ELB's default health check"
    );
    control
        .call("DescribeLoadBalancers", &[("LoadBalancerNames.member.1", "nope")])
        .err(400, "LoadBalancerNotFound");

    let policies = control.call("DescribeLoadBalancerPolicies", &lb).ok();
    assert_eq!(policies.fields("PolicyName"), ["AppCookie", "LBCookie", "Session"]);
    assert!(
        policies
            .body
            .contains("<PolicyTypeName>LBCookieStickinessPolicyType</PolicyTypeName>")
    );
    assert!(
        policies
            .body
            .contains("<AttributeName>CookieName</AttributeName><AttributeValue>session</AttributeValue>")
    );
    let one = control
        .call(
            "DescribeLoadBalancerPolicies",
            &with(&lb, &[("PolicyNames.member.1", "LBCookie")]),
        )
        .ok();
    assert_eq!(one.fields("AttributeValue"), ["10"]);
    control
        .call(
            "DescribeLoadBalancerPolicies",
            &with(&lb, &[("PolicyNames.member.1", "Nope")]),
        )
        .err(400, "PolicyNotFound");

    // Deleting a policy in use is refused; after the listener drops it, it goes.
    control
        .call("DeleteLoadBalancerPolicy", &with(&lb, &[("PolicyName", "LBCookie")]))
        .err(409, "InvalidConfigurationRequest");
    set("80", &[]).ok();
    let described = control.call("DescribeLoadBalancers", &[]).ok();
    assert!(
        described.body.contains("<PolicyNames></PolicyNames>"),
        "{}",
        described.body
    );
    // An absent list is the empty list (osc-cli sends none for an empty list).
    set("80", &["LBCookie"]).ok();
    control
        .call(
            "SetLoadBalancerPoliciesOfListener",
            &with(&lb, &[("LoadBalancerPort", "80")]),
        )
        .ok();
    let described = control.call("DescribeLoadBalancers", &[]).ok();
    assert!(
        described.body.contains("<PolicyNames></PolicyNames>"),
        "an absent PolicyNames removes the listener's policy: {}",
        described.body
    );
    control
        .call("DeleteLoadBalancerPolicy", &with(&lb, &[("PolicyName", "LBCookie")]))
        .ok();
    assert_eq!(
        control
            .call("DescribeLoadBalancerPolicies", &lb)
            .ok()
            .fields("PolicyName"),
        ["AppCookie", "Session"]
    );

    // Instances.
    let registered = control
        .call(
            "RegisterInstancesWithLoadBalancer",
            &with(
                &lb,
                &[
                    ("Instances.member.1.InstanceId", "i-1"),
                    ("Instances.member.2.InstanceId", "i-2"),
                ],
            ),
        )
        .ok();
    assert_eq!(registered.fields("InstanceId"), ["i-1", "i-2"]);
    control
        .call(
            "RegisterInstancesWithLoadBalancer",
            &with(&lb, &[("Instances.member.1.InstanceId", "i-unknown")]),
        )
        .err(400, "InvalidInstance");
    control
        .call(
            "RegisterInstancesWithLoadBalancer",
            &with(&lb, &[("Instances.member.1.InstanceId", "127.0.0.1:9")]),
        )
        .ok();
    let health = control.call("DescribeInstanceHealth", &lb).ok();
    assert_eq!(health.fields("InstanceId"), ["127.0.0.1:9", "i-1", "i-2"]);
    assert!(
        health
            .fields("State")
            .iter()
            .all(|s| s == "OutOfService" || s == "InService")
    );
    control
        .call(
            "DescribeInstanceHealth",
            &with(&lb, &[("Instances.member.1.InstanceId", "i-3")]),
        )
        .err(400, "InvalidInstance");
    let remaining = control
        .call(
            "DeregisterInstancesFromLoadBalancer",
            &with(&lb, &[("Instances.member.1.InstanceId", "i-2")]),
        )
        .ok();
    assert_eq!(remaining.fields("InstanceId"), ["127.0.0.1:9", "i-1"]);
    control
        .call(
            "DeregisterInstancesFromLoadBalancer",
            &with(&lb, &[("Instances.member.1.InstanceId", "i-2")]),
        )
        .err(400, "InvalidInstance");

    // Health check.
    let check = [
        ("HealthCheck.Target", "HTTP:80/health"),
        ("HealthCheck.Interval", "10"),
        ("HealthCheck.Timeout", "3"),
        ("HealthCheck.UnhealthyThreshold", "2"),
        ("HealthCheck.HealthyThreshold", "3"),
    ];
    let configured = control.call("ConfigureHealthCheck", &with(&lb, &check)).ok();
    assert_eq!(configured.field("Target").as_deref(), Some("HTTP:80/health"));
    assert_eq!(configured.field("HealthyThreshold").as_deref(), Some("3"));
    let mut bad = with(&lb, &check);
    bad[2] = ("HealthCheck.Interval", "4");
    control.call("ConfigureHealthCheck", &bad).err(400, "ValidationError");
    control.call("ConfigureHealthCheck", &lb).err(400, "MissingParameter");

    // The osc-cli style (GET, service `lbu`, Version = today) works the same.
    let via_osc = control.call_as(Style::OscGet, "DescribeLoadBalancers", &lb).ok();
    assert_eq!(via_osc.field("Interval").as_deref(), Some("10"));

    // Unknown action, deletion (idempotent).
    control.call("NoSuchAction", &[]).err(400, "InvalidAction");
    control.call("DeleteLoadBalancer", &lb).ok();
    control
        .call("DescribeLoadBalancers", &[("LoadBalancerNames.member.1", "my-lb")])
        .err(400, "LoadBalancerNotFound");
    control.call("DeleteLoadBalancer", &lb).ok();

    // Nothing in any answer or in the log shows key material.
    let state = control.state("terraform-balancer", 80, None, 0).1;
    let secret = state["keys"]["keys"][0]["secret"].as_str().unwrap().to_owned();
    assert!(!control.log().contains(&secret));
    assert!(!control.log().contains(SECRET_KEY));
}

#[test]
fn unauthenticated_or_tampered_calls_change_nothing() {
    let control = control_with_three_instances();
    let lb = [("LoadBalancerName", "terraform-balancer")];
    let create = with(&lb, &[("PolicyName", "LBCookie"), ("CookieExpirationPeriod", "10")]);
    let sign = |access_key: &str, secret: &str, at: SystemTime| {
        let action = "CreateLBCookieStickinessPolicy";
        control
            .client()
            .signed(Style::AwsPost, action, &create, access_key, secret, at)
            .unwrap()
    };
    let (method, path, headers, body) = sign(ACCESS_KEY, SECRET_KEY, SystemTime::now());

    let mut tampered_body = body.clone();
    tampered_body.extend_from_slice(b"0");
    control
        .send(method, &path, &headers, &tampered_body)
        .err(403, "SignatureDoesNotMatch");

    let mut tampered_header = headers.clone();
    for (name, value) in &mut tampered_header {
        if name == "content-type" {
            *value = "application/x-www-form-urlencoded".to_owned();
        }
    }
    control
        .send(method, &path, &tampered_header, &body)
        .err(403, "SignatureDoesNotMatch");

    let (_, _, wrong_secret, _) = sign(ACCESS_KEY, "wrong", SystemTime::now());
    control
        .send(method, &path, &wrong_secret, &body)
        .err(403, "SignatureDoesNotMatch");
    let (_, _, unknown_key, _) = sign("AKIDUNKNOWN", SECRET_KEY, SystemTime::now());
    control
        .send(method, &path, &unknown_key, &body)
        .err(403, "InvalidClientTokenId");
    let stale_time = SystemTime::now() - Duration::from_secs(16 * 60);
    let (_, _, stale, stale_body) = sign(ACCESS_KEY, SECRET_KEY, stale_time);
    control
        .send(method, &path, &stale, &stale_body)
        .err(400, "RequestExpired");
    let unsigned: Vec<(String, String)> = headers.iter().filter(|(n, _)| n != "authorization").cloned().collect();
    control
        .send(method, &path, &unsigned, &body)
        .err(403, "MissingAuthenticationToken");

    let policies = control.call("DescribeLoadBalancerPolicies", &lb).ok();
    assert!(
        policies.fields("PolicyName").is_empty(),
        "no rejected call changed anything: {}",
        policies.body
    );
    // The genuine request still works.
    control.send(method, &path, &headers, &body).ok();
}

#[test]
fn state_survives_kill_9_between_writes() {
    let mut control = control_with_three_instances();
    let lb = [("LoadBalancerName", "terraform-balancer")];
    control
        .call(
            "CreateLBCookieStickinessPolicy",
            &with(&lb, &[("PolicyName", "LBCookie"), ("CookieExpirationPeriod", "10")]),
        )
        .ok();
    control
        .call(
            "RegisterInstancesWithLoadBalancer",
            &with(&lb, &[("Instances.member.1.InstanceId", "i-1")]),
        )
        .ok();
    let keys_before = control.state("terraform-balancer", 80, None, 0).1["keys"].clone();
    let describe_before = control.call("DescribeLoadBalancers", &[]).ok().body;

    control.restart();
    let after = control.call("DescribeLoadBalancers", &[]).ok().body;
    let strip_id = |s: &str| s.split("<RequestId>").next().unwrap().to_owned();
    assert_eq!(strip_id(&after), strip_id(&describe_before));
    assert_eq!(
        control.state("terraform-balancer", 80, None, 0).1["keys"],
        keys_before,
        "same key ring"
    );

    control
        .call(
            "SetLoadBalancerPoliciesOfListener",
            &with(&lb, &[("LoadBalancerPort", "80"), ("PolicyNames.member.1", "LBCookie")]),
        )
        .ok();
    control.restart();
    let state = control.state("terraform-balancer", 80, None, 0).1;
    assert_eq!(
        state["policy"],
        serde_json::json!({"kind": "lb_cookie", "expiration_period": 10})
    );
    assert_eq!(state["targets"][0]["id"], "i-1");
}

#[test]
fn health_checks_flip_instances_and_eds_and_the_feed_follow() {
    let mut targets = sticky_demo_target::DemoTargets::start(&[("i-a", 0), ("i-b", 0)]).unwrap();
    let addresses = targets.addresses();
    let instances: Vec<(&str, SocketAddr)> = addresses.iter().map(|(id, a)| (id.as_str(), *a)).collect();
    let control = Control::start(&bootstrap(&instances, &["i-a", "i-b"]), &[]);
    let lb = [("LoadBalancerName", "terraform-balancer")];
    let check = [
        ("HealthCheck.Target", "HTTP:80/health"),
        ("HealthCheck.Interval", "5"),
        ("HealthCheck.Timeout", "2"),
        ("HealthCheck.UnhealthyThreshold", "2"),
        ("HealthCheck.HealthyThreshold", "2"),
    ];
    control.call("ConfigureHealthCheck", &with(&lb, &check)).ok();
    let state_of = |id: &str| {
        let reply = control
            .call(
                "DescribeInstanceHealth",
                &with(&lb, &[("Instances.member.1.InstanceId", id)]),
            )
            .ok();
        reply.field("State").unwrap()
    };
    let wait_for = |id: &str, state: &str, limit: Duration| -> Duration {
        eventually(limit, &format!("{id} {state}"), || state_of(id) == state)
    };
    wait_for("i-a", "InService", Duration::from_secs(10));
    wait_for("i-b", "InService", Duration::from_secs(10));

    targets.stop("i-a");
    let down = wait_for("i-a", "OutOfService", Duration::from_secs(20));
    // Two failed checks 5 s apart: at least one interval, at most three.
    assert!(
        down >= Duration::from_secs(4),
        "flipped after {down:?}, before UnhealthyThreshold checks"
    );
    assert_eq!(state_of("i-b"), "InService");
    let eds = control.eds(&["terraform-balancer_80"]);
    let endpoints = eds["resources"][0]["endpoints"][0]["lb_endpoints"]
        .as_array()
        .unwrap()
        .clone();
    let health_of = |address: SocketAddr| {
        endpoints
            .iter()
            .find(|e| e["endpoint"]["address"]["socket_address"]["port_value"] == address.port())
            .map(|e| e["health_status"].as_str().unwrap().to_owned())
            .unwrap()
    };
    assert_eq!(health_of(addresses[0].1), "UNHEALTHY");
    assert_eq!(health_of(addresses[1].1), "HEALTHY");
    let feed = control.state("terraform-balancer", 80, None, 0).1;
    let feed_health: Vec<(String, bool)> = feed["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["id"].as_str().unwrap().to_owned(), t["healthy"].as_bool().unwrap()))
        .collect();
    assert_eq!(feed_health, [("i-a".to_owned(), false), ("i-b".to_owned(), true)]);

    targets.restart("i-a").unwrap();
    let up = wait_for("i-a", "InService", Duration::from_secs(20));
    assert!(
        up >= Duration::from_secs(4),
        "back after {up:?}, before HealthyThreshold checks"
    );
    let feed = control.state("terraform-balancer", 80, None, 0).1;
    assert_eq!(feed["targets"][0]["healthy"], true);
    println!("health flip: out of service after {down:?}, back in service after {up:?} (interval 5 s, thresholds 2/2)");
}

#[test]
fn a_waiting_long_poll_is_woken_by_the_change() {
    let control = control_with_three_instances();
    let lb = [("LoadBalancerName", "terraform-balancer")];
    control
        .call(
            "CreateLBCookieStickinessPolicy",
            &with(&lb, &[("PolicyName", "P"), ("CookieExpirationPeriod", "60")]),
        )
        .ok();
    let (status, _) = control.state("nope", 80, None, 0);
    assert_eq!(status, 404);
    for trial in 0..20 {
        let (_, state) = control.state("terraform-balancer", 80, None, 0);
        let version = state["version"].as_u64().unwrap();
        let url = control.url();
        let waiter = std::thread::spawn(move || {
            let response = ureq::get(&format!(
                "{url}/v1/state/terraform-balancer/80?version={version}&timeout_ms=20000&poller=waiter{trial}"
            ))
            .set("authorization", &format!("Bearer {FEED_TOKEN}"))
            .call()
            .unwrap();
            let received = Instant::now();
            (
                received,
                serde_json::from_str::<serde_json::Value>(&response.into_string().unwrap()).unwrap(),
            )
        });
        eventually(Duration::from_secs(5), "the caller is waiting", || {
            control.metric("sticky_control_open_polls") == 1
        });
        let policies: &[(&str, &str)] = if trial % 2 == 0 {
            &[("PolicyNames.member.1", "P")]
        } else {
            &[("PolicyNames", "")]
        };
        control
            .call(
                "SetLoadBalancerPoliciesOfListener",
                &with(&with(&lb, &[("LoadBalancerPort", "80")]), policies),
            )
            .ok();
        let acknowledged = Instant::now();
        let (received, state) = waiter.join().unwrap();
        assert!(state["version"].as_u64().unwrap() > version);
        assert_eq!(state["policy"].is_null(), trial % 2 == 1);
        // Woken by the change, not by its 20 s time-out (how fast: `bench-control`).
        let lag = received.saturating_duration_since(acknowledged);
        assert!(
            lag < Duration::from_secs(10),
            "trial {trial}: the waiting caller got the change {lag:?} after the API answered"
        );
    }
}

#[test]
fn a_change_is_answered_once_every_follower_holds_it() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    let control = Control::start(
        &bootstrap(&[("i-1", fake(1)), ("i-2", fake(2))], &["i-1", "i-2"]),
        &["--sync-timeout-ms", "3000"],
    );
    // After a start, changes wait until every filter had time to reconnect.
    control.wait_for_discovery();
    // A slow follower: takes 300 ms to come back with the version it was given.
    let stop = Arc::new(AtomicBool::new(false));
    let repolled_with = Arc::new(Mutex::new(Vec::<(u64, Instant)>::new()));
    let follower = {
        let (stop, repolled_with, client) = (Arc::clone(&stop), Arc::clone(&repolled_with), control.client());
        std::thread::spawn(move || {
            let mut version = None;
            while !stop.load(Ordering::Relaxed) {
                if let Some(v) = version {
                    repolled_with.lock().unwrap().push((v, Instant::now()));
                }
                let (_, state) = client
                    .state_as("terraform-balancer", 80, version, 1_000, Some("slowfilter1"))
                    .unwrap();
                let new = state["version"].as_u64();
                if new != version {
                    version = new;
                    std::thread::sleep(Duration::from_millis(300));
                }
            }
        })
    };
    eventually(Duration::from_secs(5), "the slow follower is known", || {
        control.metric("sticky_control_followers") == 1
    });

    let sent = Instant::now();
    let reply = control.call(
        "DeregisterInstancesFromLoadBalancer",
        &[
            ("LoadBalancerName", "terraform-balancer"),
            ("Instances.member.1.InstanceId", "i-2"),
        ],
    );
    let answered = Instant::now();
    reply.ok();
    let version = control.state("terraform-balancer", 80, None, 0).1["version"]
        .as_u64()
        .unwrap();
    let caught_up = repolled_with
        .lock()
        .unwrap()
        .iter()
        .find(|(v, _)| *v >= version)
        .map(|(_, at)| *at)
        .expect("the follower came back with the new version");
    assert!(
        caught_up <= answered,
        "answered {:?} after sending, the follower caught up at {:?}",
        answered - sent,
        caught_up - sent
    );
    assert!(
        answered - sent >= Duration::from_millis(250),
        "the answer waited for the slow follower"
    );

    // A follower that stops following is not waited for once its grace is over; one that keeps
    // polling without catching up holds the answer until the time-out.
    stop.store(true, Ordering::Relaxed);
    follower.join().unwrap();
    eventually(Duration::from_secs(10), "the stopped follower is gone", || {
        control.metric("sticky_control_followers") == 0
    });
    control.call("RegisterInstancesWithLoadBalancer", REGISTER_I2).ok();
    assert_eq!(
        control.metric("sticky_control_sync_timeouts_total"),
        0,
        "a gone follower is not waited for"
    );
    let metrics = ureq::get(&format!("{}/metrics", control.url()))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(metrics.contains("sticky_control_sync_waits_total"), "{metrics}");
}

#[test]
fn a_policy_change_does_not_wait_for_envoy_but_a_new_target_does() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    let control = Control::start(
        &bootstrap(&[("i-1", fake(1)), ("i-2", fake(2))], &["i-1"]),
        &["--sync-timeout-ms", "3000"],
    );
    control.wait_for_discovery();
    // An Envoy that keeps fetching EDS but accepts what it gets only while `accepting`: it
    // reports the version it accepted last, as Envoy does.
    let (stop, accepting, reported) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(true)),
        Arc::new(AtomicU64::new(0)),
    );
    let envoy = {
        let (stop, accepting, reported, client) = (
            Arc::clone(&stop),
            Arc::clone(&accepting),
            Arc::clone(&reported),
            control.client(),
        );
        std::thread::spawn(move || {
            let mut accepted: Option<String> = None;
            while !stop.load(Ordering::Relaxed) {
                // Recorded before the fetch that reports it: the service may answer the API
                // call as soon as it reads the fetch.
                if let Some(version) = &accepted {
                    reported.store(version.parse().unwrap(), Ordering::Relaxed);
                }
                let answer = client
                    .eds_as(&["terraform-balancer_80"], "stubborn-envoy", accepted.as_deref())
                    .unwrap();
                if accepting.load(Ordering::Relaxed) {
                    accepted = answer["version_info"].as_str().map(str::to_owned);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    eventually(Duration::from_secs(5), "the Envoy is known", || {
        control.metric("sticky_control_followers") == 1
    });
    // … and holds the endpoints served now (the targets' first health probes flip them).
    eventually(Duration::from_secs(5), "the Envoy holds the current endpoints", || {
        let current = control.eds(&["terraform-balancer_80"])["version_info"]
            .as_str()
            .and_then(|v| v.parse::<u64>().ok());
        current.is_some_and(|v| reported.load(Ordering::Relaxed) >= v)
    });

    // While Envoy accepts nothing, a policy change is answered without waiting for it: had it
    // waited, the answer would have come at the 3 s time-out, counted as such.
    accepting.store(false, Ordering::Relaxed);
    control
        .call(
            "CreateLBCookieStickinessPolicy",
            &[
                ("LoadBalancerName", "terraform-balancer"),
                ("PolicyName", "sticky"),
                ("CookieExpirationPeriod", "60"),
            ],
        )
        .ok();
    control
        .call(
            "SetLoadBalancerPoliciesOfListener",
            &[
                ("LoadBalancerName", "terraform-balancer"),
                ("LoadBalancerPort", "80"),
                ("PolicyNames.member.1", "sticky"),
            ],
        )
        .ok();
    assert_eq!(
        control.metric("sticky_control_sync_timeouts_total"),
        0,
        "policy calls answered without waiting for Envoy"
    );

    // A new target changes what EDS serves: the answer waits for Envoy (here, until the time-out).
    control.call("RegisterInstancesWithLoadBalancer", REGISTER_I2).ok();
    assert_eq!(
        control.metric("sticky_control_sync_timeouts_total"),
        1,
        "a registration waits for Envoy to hold the new endpoints"
    );

    // With Envoy accepting again, the next change is answered once Envoy reported it.
    accepting.store(true, Ordering::Relaxed);
    control.call("DeregisterInstancesFromLoadBalancer", REGISTER_I2).ok();
    let version = control.state("terraform-balancer", 80, None, 0).1["version"]
        .as_u64()
        .unwrap();
    assert!(
        reported.load(Ordering::Relaxed) >= version,
        "answered once Envoy holds version {version}"
    );
    assert_eq!(control.metric("sticky_control_sync_timeouts_total"), 1);
    stop.store(true, Ordering::Relaxed);
    envoy.join().unwrap();
}

const REGISTER_I2: &[(&str, &str)] = &[
    ("LoadBalancerName", "terraform-balancer"),
    ("Instances.member.1.InstanceId", "i-2"),
];

#[test]
fn sigterm_answers_waiting_long_polls_and_stops() {
    let mut control = control_with_three_instances();
    let (_, state) = control.state("terraform-balancer", 80, None, 0);
    let version = state["version"].as_u64().unwrap();
    let client = control.client();
    // A filter waiting for a change that will not come (its poll would hold 25 s).
    let waiter =
        std::thread::spawn(move || client.state_as("terraform-balancer", 80, Some(version), 25_000, Some("waiting1")));
    eventually(Duration::from_secs(5), "the long-poll is waiting", || {
        control.metric("sticky_control_open_polls") == 1
    });
    let status = control
        .terminate(Duration::from_secs(10))
        .expect("exits on SIGTERM without waiting out the long-poll");
    assert!(status.success(), "a clean exit: {status}");
    let (code, answer) = waiter.join().unwrap().expect("the waiting poll is answered");
    assert_eq!(code, 200);
    assert_eq!(answer["version"].as_u64(), Some(version), "with the state it holds");
    assert!(control.log().contains("stopping"), "{}", control.log());
}
