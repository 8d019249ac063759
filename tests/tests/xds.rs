//! The control service drives Envoy for real over xDS: load balancers and listeners created
//! through the API (boto3, osc-cli) are served by every Envoy following it, where the
//! listener rule says, and changes are in force when the API answers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use sticky_demo_target::APP_COOKIE;
use sticky_tests::xds::{XdsBouncer, eventually};
use sticky_tests::{STICKY_COOKIE, TARGET_IDS};

/// Within a second of the answers (the product promises at once; Envoy's workers take the
/// listener a moment after its main thread accepted it).
const SERVED_WITHIN: Duration = Duration::from_secs(1);

/// A new LB-cookie session at `at`: its cookie and its target, which `n` more requests keep.
fn lb_cookie_session(bouncer: &XdsBouncer, at: SocketAddr, n: usize) -> (String, String) {
    let first = bouncer.get(at, "/", &[]);
    assert_eq!(first.status, 200, "{}", first.body);
    let cookie = first.sticky_cookie().expect("an LB cookie on the first response");
    let target = first.target();
    for _ in 0..n {
        assert_eq!(bouncer.get(at, "/", &[(STICKY_COOKIE, &cookie)]).target(), target);
    }
    (cookie, target)
}

/// Whether `at` serves LB-cookie stickiness now.
fn lb_sticky(bouncer: &XdsBouncer, at: SocketAddr) -> bool {
    let Ok(first) = bouncer.try_get(at, "/", &[]) else {
        return false;
    };
    let (Some(cookie), Some(target)) = (first.sticky_cookie(), first.try_target()) else {
        return false;
    };
    (0..5).all(|_| {
        bouncer
            .try_get(at, "/", &[(STICKY_COOKIE, &cookie)])
            .is_ok_and(|r| r.try_target().as_ref() == Some(&target))
    })
}

/// Whether `at` serves app-cookie stickiness now: it starts when the target sets `session`.
fn app_sticky(bouncer: &XdsBouncer, at: SocketAddr) -> bool {
    let Ok(login) = bouncer.try_get(at, "/login", &[]) else {
        return false;
    };
    let (Some(session), Some(sticky)) = (login.cookie_value(APP_COOKIE), login.sticky_cookie()) else {
        return false;
    };
    let cookies = [(APP_COOKIE, session.as_str()), (STICKY_COOKIE, sticky.as_str())];
    let Some(target) = bouncer.try_get(at, "/", &cookies).ok().and_then(|r| r.try_target()) else {
        return false;
    };
    (0..5).all(|_| {
        bouncer
            .try_get(at, "/", &cookies)
            .is_ok_and(|r| r.try_target().as_ref() == Some(&target))
    })
}

/// One GET on an open connection (HTTP/1.1 keep-alive); the status.
fn keep_alive_get(connection: &mut std::net::TcpStream) -> u16 {
    use std::io::{BufRead, BufReader, Read, Write};
    connection
        .write_all(b"GET / HTTP/1.1\r\nHost: bouncer\r\n\r\n")
        .unwrap();
    let mut reader = BufReader::new(connection.try_clone().unwrap());
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().unwrap();
        }
        if line == "\r\n" || line.is_empty() {
            break;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[test]
fn load_balancers_created_with_boto3_and_osc_cli_are_served_and_a_deleted_listener_stops_alone() {
    let bouncer = XdsBouncer::start(1);

    // boto3: `shop`, two listeners, an LB cookie on one and an app cookie on the other.
    bouncer.create_with_targets("shop", &["80", "81"]);
    let described = bouncer.api().call("DescribeLoadBalancers", &[]).expect("api").ok();
    assert!(
        described
            .fields("DNSName")
            .contains(&"shop.lbu.sticky.internal".to_owned()),
        "{described:?}"
    );
    bouncer.boto3(&["lb-policy", "shop", "80", "300"]);
    bouncer.boto3(&["app-policy", "shop", "81", APP_COOKIE]);
    let (shop_lb, shop_app) = (bouncer.listener(0, 1, 80), bouncer.listener(0, 1, 81));
    eventually(SERVED_WITHIN, "shop:80 serves LB-cookie stickiness", || {
        lb_sticky(&bouncer, shop_lb)
    });
    eventually(SERVED_WITHIN, "shop:81 serves app-cookie stickiness", || {
        app_sticky(&bouncer, shop_app)
    });

    // osc-cli, as the seed's operator types it: `cart`, on the next address of the pool.
    let mut create = vec!["CreateLoadBalancer", "--LoadBalancerName", "cart"];
    for (i, port) in ["80", "81"].iter().enumerate() {
        let prefix = format!("--Listeners.member.{}", i + 1);
        for (field, value) in [("Protocol", "HTTP"), ("LoadBalancerPort", port), ("InstancePort", "80")] {
            create.push(Box::leak(format!("{prefix}.{field}").into_boxed_str()));
            create.push(value);
        }
    }
    bouncer.osc(&create);
    bouncer.configure_health_check("cart");
    let mut register = vec!["RegisterInstancesWithLoadBalancer", "--LoadBalancerName", "cart"];
    let members: Vec<String> = (1..=TARGET_IDS.len())
        .map(|i| format!("--Instances.member.{i}.InstanceId"))
        .collect();
    for (member, id) in members.iter().zip(TARGET_IDS) {
        register.extend([member.as_str(), id]);
    }
    bouncer.osc(&register);
    bouncer.osc(&[
        "CreateLBCookieStickinessPolicy",
        "--CookieExpirationPeriod",
        "300",
        "--LoadBalancerName",
        "cart",
        "--PolicyName",
        "LBCookie",
    ]);
    bouncer.osc(&[
        "SetLoadBalancerPoliciesOfListener",
        "--LoadBalancerName",
        "cart",
        "--LoadBalancerPort",
        "81",
        "--PolicyNames.member.1",
        "LBCookie",
    ]);
    let (cart_plain, cart_lb) = (bouncer.listener(0, 2, 80), bouncer.listener(0, 2, 81));
    eventually(SERVED_WITHIN, "cart:81 serves LB-cookie stickiness", || {
        lb_sticky(&bouncer, cart_lb)
    });
    let plain = bouncer.get(cart_plain, "/", &[]);
    assert_eq!(plain.status, 200);
    assert_eq!(plain.sticky_cookie(), None, "no policy on cart:80, no cookie");
    let hosts = bouncer
        .api()
        .peer_get(&format!("{}/v1/hosts", bouncer.control.url()))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert_eq!(
        hosts,
        format!(
            "{} cart.lbu.sticky.internal\n{} shop.lbu.sticky.internal\n",
            bouncer.address(2),
            bouncer.address(1)
        ),
        "each DNSName maps to its load balancer's own address"
    );

    // A keep-alive connection to shop:80, open across every change below.
    let mut kept = std::net::TcpStream::connect(shop_lb).unwrap();
    assert_eq!(keep_alive_get(&mut kept), 200);

    // Delete shop:81 while sticky sessions run on shop:80 and cart:81: they never fail.
    let (cookie, target) = lb_cookie_session(&bouncer, shop_lb, 2);
    let (cart_cookie, cart_target) = lb_cookie_session(&bouncer, cart_lb, 2);
    let stop = Arc::new(AtomicBool::new(false));
    let (served, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    // The traffic holds no part of the bouncer: should the test fail, unwinding stops its
    // processes.
    let traffic = {
        let (stop, served, failed) = (Arc::clone(&stop), Arc::clone(&served), Arc::clone(&failed));
        std::thread::spawn(move || {
            let agent = sticky_tests::agent();
            while !stop.load(Ordering::Relaxed) {
                for (at, cookie, target) in [(shop_lb, &cookie, &target), (cart_lb, &cart_cookie, &cart_target)] {
                    let base = format!("http://{at}");
                    match sticky_tests::get(&agent, &base, "/", &[(STICKY_COOKIE, cookie)], &[]) {
                        Ok(r) if r.try_target().as_ref() == Some(target) => served.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            }
        })
    };
    eventually(Duration::from_secs(5), "traffic flows", || {
        served.load(Ordering::Relaxed) > 20
    });
    let answer = bouncer.boto3(&["delete-listener", "shop", "81"]);
    assert!(!answer.contains("not in force"), "{answer}");
    // It takes no new connection (those open drain gracefully, as Envoy drains any listener).
    eventually(SERVED_WITHIN, "shop:81 stops", || {
        std::net::TcpStream::connect(shop_app).is_err()
    });
    let before = served.load(Ordering::Relaxed);
    eventually(Duration::from_secs(5), "traffic goes on", || {
        served.load(Ordering::Relaxed) > before + 50
    });
    // A listener created beside them: served, and still nothing fails.
    bouncer.boto3(&["add-listener", "cart", "82"]);
    eventually(SERVED_WITHIN, "cart:82 serves", || {
        bouncer
            .try_get(bouncer.listener(0, 2, 82), "/", &[])
            .is_ok_and(|r| r.status == 200)
    });
    stop.store(true, Ordering::Relaxed);
    traffic.join().unwrap();
    assert_eq!(
        keep_alive_get(&mut kept),
        200,
        "the connection to a listener that did not change stays open"
    );

    // A load balancer deleted: all its listeners stop, the others serve on.
    bouncer
        .api()
        .call("DeleteLoadBalancer", &[("LoadBalancerName", "cart")])
        .expect("api")
        .ok();
    for port in [80, 81, 82] {
        let at = bouncer.listener(0, 2, port);
        eventually(SERVED_WITHIN, &format!("cart:{port} stops"), || {
            std::net::TcpStream::connect(at).is_err()
        });
    }
    assert_eq!(keep_alive_get(&mut kept), 200);
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "sticky requests failed or moved on the listeners that did not change ({} served)",
        served.load(Ordering::Relaxed)
    );
}

#[test]
fn an_acknowledged_deregistration_is_in_force_on_every_envoy() {
    let bouncer = XdsBouncer::start(2);
    bouncer.create_with_targets("shop", &["80"]);
    let spread = |envoy: usize| -> HashSet<String> {
        (0..12)
            .filter_map(|_| bouncer.try_get(bouncer.listener(envoy, 1, 80), "/", &[]).ok())
            .filter_map(|r| r.try_target())
            .collect()
    };
    for envoy in 0..2 {
        eventually(Duration::from_secs(5), "each Envoy balances over the three", || {
            spread(envoy).len() == 3
        });
    }
    let gone = TARGET_IDS[0];
    let answer = bouncer.boto3(&["deregister", "shop", TARGET_IDS[0]]);
    assert!(!answer.contains("not in force"), "{answer}");
    for envoy in 0..2 {
        for _ in 0..30 {
            let reply = bouncer.get(bouncer.listener(envoy, 1, 80), "/", &[]);
            assert_ne!(
                reply.target(),
                gone,
                "Envoy {envoy} sent a request to the deregistered target"
            );
        }
    }
}

#[test]
fn a_policy_on_a_listener_created_moments_before_is_in_force_on_every_envoy_when_answered() {
    let bouncer = XdsBouncer::start(2);
    bouncer.create_with_targets("shop", &["80"]);
    bouncer.wait_served(bouncer.listener(1, 1, 80));
    let api = bouncer.api();
    // Ports 10 apart: the second Envoy binds each port shifted by 2 (`envoy_shift`).
    for port in (90..=140u16).step_by(10) {
        let port_text = port.to_string();
        let policy = format!("lb-{port}");
        let lb = ("LoadBalancerName", "shop");
        let calls: [(&str, Vec<(&str, &str)>); 3] = [
            (
                "CreateLoadBalancerListeners",
                vec![
                    lb,
                    ("Listeners.member.1.Protocol", "HTTP"),
                    ("Listeners.member.1.LoadBalancerPort", &port_text),
                    ("Listeners.member.1.InstancePort", "80"),
                ],
            ),
            (
                "CreateLBCookieStickinessPolicy",
                vec![lb, ("PolicyName", &policy), ("CookieExpirationPeriod", "300")],
            ),
            (
                "SetLoadBalancerPoliciesOfListener",
                vec![lb, ("LoadBalancerPort", &port_text), ("PolicyNames.member.1", &policy)],
            ),
        ];
        for (action, params) in calls {
            api.call(action, &params).expect("api").ok();
        }
        // Right after the answer, on every Envoy: the listener serves, with its policy.
        for envoy in 0..2 {
            let reply = bouncer.get(bouncer.listener(envoy, 1, port), "/", &[]);
            assert!(
                reply.sticky_cookie().is_some(),
                "Envoy {envoy}, listener {port} created moments before: no cookie on the first request"
            );
        }
    }
}

#[test]
fn two_envoys_honour_each_others_cookies_and_keep_serving_through_a_control_restart() {
    let mut bouncer = XdsBouncer::start(2);
    bouncer.create_with_targets("shop", &["80"]);
    bouncer.boto3(&["lb-policy", "shop", "80", "300"]);
    let (first, second) = (bouncer.listener(0, 1, 80), bouncer.listener(1, 1, 80));
    let (cookie, target) = lb_cookie_session(&bouncer, first, 2);
    for _ in 0..5 {
        assert_eq!(bouncer.get(second, "/", &[(STICKY_COOKIE, &cookie)]).target(), target);
    }

    // The control service dies: both Envoys keep serving what they hold (fail static).
    bouncer.control.kill();
    for at in [first, second] {
        for _ in 0..5 {
            let reply = bouncer.get(at, "/", &[(STICKY_COOKIE, &cookie)]);
            assert_eq!((reply.status, reply.target()), (200, target.clone()));
        }
    }
    // Back: they resynchronise, and a change answered afterwards is in force on both.
    bouncer.control.restart().unwrap_or_else(|e| panic!("{e}"));
    let gone = *TARGET_IDS.iter().find(|id| **id != target).unwrap();
    let answer = bouncer.boto3(&["deregister", "shop", gone]);
    assert!(!answer.contains("not in force"), "{answer}");
    for at in [first, second] {
        for _ in 0..20 {
            assert_ne!(bouncer.get(at, "/", &[]).target(), gone);
        }
        assert_eq!(bouncer.get(at, "/", &[(STICKY_COOKIE, &cookie)]).target(), target);
    }
}

#[test]
fn a_listener_envoy_cannot_bind_is_refused_and_the_answer_says_so() {
    let bouncer = XdsBouncer::start(1);
    bouncer.boto3(&["create", "shop", "80"]);
    bouncer.configure_health_check("shop");
    bouncer.boto3(&["register", "shop", TARGET_IDS[0]]);
    let served = bouncer.listener(0, 1, 80);
    bouncer.wait_served(served);
    // Another program holds the bouncer's port for shop:81.
    let squatter = std::net::TcpListener::bind(bouncer.listener(0, 1, 81)).unwrap();
    let started = std::time::Instant::now();
    let answer = bouncer.boto3(&["add-listener", "shop", "81"]);
    assert!(
        answer.contains("not in force") && answer.contains("refused"),
        "the answer names Envoy's refusal: {answer}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a refusal is answered at once, not after the sync time-out"
    );
    let metrics = ureq::get(&format!("{}/metrics", bouncer.control.url()))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(
        metrics.contains(
            "sticky_control_xds_refusals_total{type_url=\"type.googleapis.com/envoy.config.listener.v3.Listener\"} 1"
        ),
        "{metrics}"
    );
    assert_eq!(
        bouncer.get(served, "/", &[]).status,
        200,
        "the other listener serves on"
    );
    drop(squatter);
}

#[test]
fn with_a_feed_token_envoys_that_present_it_are_served_over_xds_and_their_filters_follow() {
    let bouncer = XdsBouncer::start_with_token(1, "feed-secret");
    bouncer.create_with_targets("shop", &["80"]);
    bouncer.boto3(&["lb-policy", "shop", "80", "300"]);
    // Sticky: the filter served over xDS polls its state with the token it was given.
    let at = bouncer.listener(0, 1, 80);
    eventually(SERVED_WITHIN, "shop:80 serves LB-cookie stickiness", || {
        lb_sticky(&bouncer, at)
    });
    let hosts = ureq::get(&format!("{}/v1/hosts", bouncer.control.url())).call();
    assert!(
        matches!(hosts, Err(ureq::Error::Status(401, _))),
        "the host map needs the token"
    );
}

/// Outscale's current API drives the bouncer as LBU does (osc-sdk-python's Gateway and
/// `osc-cli api`, the calls Terraform's provider makes): a load balancer created through OAPI is
/// served, its VMs registered and healthy, stickiness on with an app-cookie policy attached by
/// UpdateLoadBalancer and off with an empty PolicyNames, each in force on Envoy when the call
/// answers; deleted, it is no longer served.
#[test]
fn oapi_calls_drive_the_load_balancer_and_traffic_follows_each_step() {
    use serde_json::json;
    let bouncer = XdsBouncer::start(1);
    let lb = "oapi-shop";
    let created = bouncer.oapi(
        "CreateLoadBalancer",
        &json!({"LoadBalancerName": lb, "SubregionNames": ["eu-west-2a"], "Listeners": [
            {"BackendPort": 80, "BackendProtocol": "HTTP", "LoadBalancerPort": 80, "LoadBalancerProtocol": "HTTP"}]}),
    );
    assert_eq!(
        created["LoadBalancer"]["PublicIp"],
        bouncer.address(1).to_string(),
        "{created}"
    );
    // outscale_load_balancer_attributes: the health check, with osc-cli.
    bouncer.osc_api(&[
        "UpdateLoadBalancer",
        "--LoadBalancerName",
        lb,
        "--HealthCheck",
        r#"{"CheckInterval": 5, "HealthyThreshold": 2, "Path": "/health", "Port": 80, "Protocol": "HTTP", "Timeout": 2, "UnhealthyThreshold": 2}"#,
    ]);
    // outscale_load_balancer_vms.
    bouncer.oapi(
        "LinkLoadBalancerBackendMachines",
        &json!({"LoadBalancerName": lb, "BackendVmIds": TARGET_IDS}),
    );
    let at = bouncer.listener(0, 1, 80);
    bouncer.wait_served(at);
    eventually(Duration::from_secs(15), "every VM UP", || {
        let health = bouncer.oapi("ReadVmsHealth", &json!({"LoadBalancerName": lb}));
        health["BackendVmHealth"]
            .as_array()
            .is_some_and(|vms| vms.len() == 3 && vms.iter().all(|vm| vm["State"] == "UP"))
    });
    assert!(!app_sticky(&bouncer, at), "no stickiness before a policy");
    // outscale_load_balancer_policy: an app-cookie policy, attached by UpdateLoadBalancer.
    bouncer.osc_api(&[
        "CreateLoadBalancerPolicy",
        "--LoadBalancerName",
        lb,
        "--PolicyName",
        "app-session",
        "--PolicyType",
        "app",
        "--CookieName",
        APP_COOKIE,
    ]);
    bouncer.oapi(
        "UpdateLoadBalancer",
        &json!({"LoadBalancerName": lb, "LoadBalancerPort": 80, "PolicyNames": ["app-session"]}),
    );
    assert!(app_sticky(&bouncer, at), "sticky once UpdateLoadBalancer answered");
    // An empty PolicyNames removes stickiness.
    bouncer.oapi(
        "UpdateLoadBalancer",
        &json!({"LoadBalancerName": lb, "LoadBalancerPort": 80, "PolicyNames": []}),
    );
    assert!(
        !app_sticky(&bouncer, at),
        "not sticky once the empty PolicyNames answered"
    );
    let spread: HashSet<String> = (0..30)
        .filter_map(|_| bouncer.try_get(at, "/", &[]).ok()?.try_target())
        .collect();
    assert!(spread.len() > 1, "balanced again: {spread:?}");
    bouncer.oapi("DeleteLoadBalancer", &json!({"LoadBalancerName": lb}));
    eventually(SERVED_WITHIN, "the deleted load balancer stops", || {
        std::net::TcpStream::connect(at).is_err()
    });
}
