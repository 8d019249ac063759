//! Durability under kill -9 during a burst of API writes: every write the service answered
//! is present after the restart, and no write is visible half-done (a load balancer without
//! all its listeners, a registration with only some of its instances).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{ACCESS_KEY, Control, QueryClient, SECRET_KEY, bootstrap};
use sticky_testing::eventually;

const WRITERS: usize = 4;
const KILLS: usize = 3;
/// Load balancers that receive the policies.
const POOL: usize = 40;

/// One write a writer attempted.
#[derive(Debug, Clone)]
enum Write {
    /// A load balancer with two listeners (80 and 81), in one call.
    LoadBalancer(String),
    /// An LB-cookie policy on one of the `pool-N` load balancers (ELB allows 100 per LB).
    Policy(String, String),
    /// Two instances registered with `terraform-balancer` in one call.
    Registration([String; 2]),
}

#[derive(Default)]
struct Outcomes {
    acknowledged: Vec<Write>,
    /// Sent, but the connection failed before an answer (the service was being killed).
    unanswered: Vec<Write>,
}

fn attempt(client: &QueryClient, write: &Write) -> Option<bool> {
    let lb = ("LoadBalancerName", "terraform-balancer");
    let reply = match write {
        Write::LoadBalancer(name) => client.call(
            "CreateLoadBalancer",
            &[
                ("LoadBalancerName", name.as_str()),
                ("Listeners.member.1.Protocol", "HTTP"),
                ("Listeners.member.1.LoadBalancerPort", "80"),
                ("Listeners.member.1.InstancePort", "8080"),
                ("Listeners.member.2.Protocol", "HTTP"),
                ("Listeners.member.2.LoadBalancerPort", "81"),
                ("Listeners.member.2.InstancePort", "8081"),
            ],
        ),
        Write::Policy(load_balancer, name) => client.call(
            "CreateLBCookieStickinessPolicy",
            &[
                ("LoadBalancerName", load_balancer.as_str()),
                ("PolicyName", name.as_str()),
                ("CookieExpirationPeriod", "60"),
            ],
        ),
        Write::Registration([a, b]) => client.call(
            "RegisterInstancesWithLoadBalancer",
            &[
                lb,
                ("Instances.member.1.InstanceId", a.as_str()),
                ("Instances.member.2.InstanceId", b.as_str()),
            ],
        ),
    };
    match reply {
        Ok(reply) if reply.status == 200 => Some(true),
        Ok(reply) => panic!("write {write:?} refused: {} {}", reply.status, reply.body),
        // Connection refused (down) never reached the service: not even attempted.
        Err(e) if e.to_string().contains("refused") => None,
        Err(_) => Some(false),
    }
}

#[test]
fn every_acknowledged_write_survives_kill_9_during_a_burst() {
    // 2 instances per registration, enough for every writer's registrations.
    let instances: Vec<(String, SocketAddr)> = (0..400)
        .map(|i| {
            (
                format!("i-{i:04}"),
                SocketAddr::from(([127, 0, 0, 1], 10_000 + i as u16)),
            )
        })
        .collect();
    let refs: Vec<(&str, SocketAddr)> = instances.iter().map(|(id, a)| (id.as_str(), *a)).collect();
    let mut control = Control::start(&bootstrap(&refs, &[]), &[]);
    let authority = format!("127.0.0.1:{}", control.port);
    for i in 0..POOL {
        let name = format!("pool-{i}");
        control
            .call(
                "CreateLoadBalancer",
                &[
                    ("LoadBalancerName", name.as_str()),
                    ("Listeners.member.1.Protocol", "HTTP"),
                    ("Listeners.member.1.LoadBalancerPort", "80"),
                    ("Listeners.member.1.InstancePort", "8080"),
                ],
            )
            .ok();
    }

    let stop = Arc::new(AtomicBool::new(false));
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (stop, outcomes, authority) = (Arc::clone(&stop), Arc::clone(&outcomes), authority.clone());
            std::thread::spawn(move || {
                let client = QueryClient::new(authority, ACCESS_KEY, SECRET_KEY);
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let write = match n % 3 {
                        0 => Write::LoadBalancer(format!("lb-{w}-{n}")),
                        1 => Write::Policy(format!("pool-{}", (w + n) % POOL), format!("P-{w}-{n}")),
                        _ => {
                            let k = (w * 100 + n / 3) % 200;
                            Write::Registration([format!("i-{:04}", 2 * k), format!("i-{:04}", 2 * k + 1)])
                        }
                    };
                    match attempt(&client, &write) {
                        Some(true) => outcomes.lock().unwrap().acknowledged.push(write),
                        Some(false) => outcomes.lock().unwrap().unanswered.push(write),
                        None => std::thread::sleep(Duration::from_millis(5)),
                    }
                    n += 1;
                }
            })
        })
        .collect();

    let acknowledged = || outcomes.lock().unwrap().acknowledged.len();
    let some_more_writes = |since: usize| {
        eventually(Duration::from_secs(30), "more writes acknowledged", || {
            acknowledged() >= since + 20
        });
    };
    for _ in 0..KILLS {
        // kill -9 mid-burst, then start again on the same database.
        some_more_writes(acknowledged());
        control.restart();
    }
    some_more_writes(acknowledged());
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().unwrap();
    }
    control.restart();

    // What the service holds now.
    // Every page of DescribeLoadBalancers, concatenated.
    let mut describe = String::new();
    let mut marker: Option<String> = None;
    loop {
        let mut params = vec![("PageSize", "400")];
        if let Some(marker) = &marker {
            params.push(("Marker", marker.as_str()));
        }
        let page = control.call("DescribeLoadBalancers", &params).ok();
        marker = page.field("NextMarker");
        describe.push_str(&page.body);
        if marker.is_none() {
            break;
        }
    }
    let mut policies = BTreeSet::new();
    for i in 0..POOL {
        let name = format!("pool-{i}");
        let reply = control
            .call("DescribeLoadBalancerPolicies", &[("LoadBalancerName", name.as_str())])
            .ok();
        for policy in reply.fields("PolicyName") {
            policies.insert((name.clone(), policy));
        }
    }
    let registered: BTreeSet<String> = describe
        .split("<InstanceId>")
        .skip(1)
        .filter_map(|s| s.split('<').next().map(str::to_owned))
        .collect();
    let load_balancer_block = |name: &str| -> Option<String> {
        describe
            .split("<member><LoadBalancerName>")
            .skip(1)
            .find(|block| block.starts_with(&format!("{name}<")))
            .map(str::to_owned)
    };
    let present = |write: &Write| -> bool {
        match write {
            Write::LoadBalancer(name) => match load_balancer_block(name) {
                Some(block) => {
                    let listeners = block.matches("<LoadBalancerPort>").count();
                    assert_eq!(listeners, 2, "load balancer {name} half-written: {block}");
                    true
                }
                None => false,
            },
            Write::Policy(load_balancer, name) => policies.contains(&(load_balancer.clone(), name.clone())),
            Write::Registration([a, b]) => registered.contains(a) && registered.contains(b),
        }
    };

    let outcomes = outcomes.lock().unwrap();
    let acknowledged = outcomes.acknowledged.len();
    let missing: Vec<&Write> = outcomes.acknowledged.iter().filter(|w| !present(w)).collect();
    let unanswered_present = outcomes.unanswered.iter().filter(|w| present(w)).count();
    // Every registration is both instances or neither.
    for write in outcomes.acknowledged.iter().chain(&outcomes.unanswered) {
        if let Write::Registration([a, b]) = write {
            assert_eq!(
                registered.contains(a),
                registered.contains(b),
                "registration of {a} and {b} half-done"
            );
        }
    }
    println!(
        "kill -9 x{KILLS} during a burst of {WRITERS} writers: acknowledged {acknowledged}, present after restart {}; \
         unanswered (in flight at a kill) {}, of which present {unanswered_present}",
        acknowledged - missing.len(),
        outcomes.unanswered.len()
    );
    assert!(
        acknowledged > 50,
        "the burst made too few writes ({acknowledged}) to mean anything"
    );
    assert!(missing.is_empty(), "acknowledged writes lost: {missing:?}");
}
