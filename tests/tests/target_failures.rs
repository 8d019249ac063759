//! A pinned target fails while sticky clients send through the live system (the control service
//! and an Envoy following it), the targets running as processes of their own. Each client keeps
//! its connection to Envoy alive and sends GETs with a POST now and then.
//!
//! - Killed (SIGKILL, on loopback): its connections are closed or reset at once, also those
//!   Envoy holds in its pool. No idempotent request fails; a POST that had reached it may.
//! - Vanished (its test host's link goes down: packets dropped without an answer, as when a VM
//!   is powered off or its network cut): no idempotent request fails, no request waits more
//!   than the connect timeout once Envoy has seen the first timeout (and ejected the target),
//!   and none waits for it at all once the filter has learnt it from Envoy's retry.
//!
//! Each test prints its figures (`cargo test -p sticky-tests --test target_failures -- --nocapture`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sticky_envoy::DEFAULT_CONNECT_TIMEOUT;
use sticky_tests::hosts::{Placement, TargetProcesses};
use sticky_tests::live::{Live, eventually};
use sticky_tests::traffic::{Plan, Sample, Traffic};

const CLIENTS: usize = 6;

/// Starts the clients and waits until each is pinned; returns the target client 0 is pinned to
/// (the victim) and the clients pinned to it.
fn pinned_clients(traffic: &Traffic) -> (String, Vec<usize>) {
    eventually(Duration::from_secs(20), "every client has a stickiness cookie", || {
        traffic.pinned().len() == CLIENTS
    });
    let pinned = traffic.pinned();
    let victim = pinned[&0].clone();
    let clients = pinned
        .iter()
        .filter(|(_, target)| **target == victim)
        .map(|(client, _)| *client)
        .collect();
    (victim, clients)
}

/// Waits until each of `clients` has had `n` answers after `since`.
fn wait_answers(traffic: &Traffic, clients: &[usize], since: Instant, n: usize, what: &str) {
    eventually(Duration::from_secs(30), what, || {
        let samples = traffic.samples();
        clients.iter().all(|client| {
            samples
                .iter()
                .filter(|s| s.client == *client && s.sent > since && s.status == Some(200))
                .count()
                >= n
        })
    });
}

/// The failed requests sent from a second before `since` on: (idempotent, other).
fn failures(samples: &[Sample], since: Instant) -> (Vec<&Sample>, Vec<&Sample>) {
    samples
        .iter()
        .filter(|s| s.sent + Duration::from_secs(1) > since && s.failed())
        .partition(|s| s.idempotent())
}

/// Each of `clients` left `victim` and then stayed on one target: the session moved once.
fn assert_moved_and_stayed(samples: &[Sample], clients: &[usize], victim: &str, since: Instant) {
    for client in clients {
        let after: Vec<&str> = samples
            .iter()
            .filter(|s| s.client == *client && s.sent > since && s.status == Some(200))
            .filter_map(|s| s.target.as_deref())
            .collect();
        let new_home = after.iter().find(|t| **t != victim).unwrap_or_else(|| {
            panic!("client {client} never left {victim}: {after:?}");
        });
        let first = after.iter().position(|t| t == new_home).unwrap_or_default();
        assert!(
            after[first..].iter().all(|t| t == new_home),
            "client {client}'s session moved from {victim} to {new_home} and must stay there: {after:?}"
        );
    }
}

#[test]
fn a_killed_target_fails_no_idempotent_request() {
    let mut live = Live::start_processes(Placement::Loopback, 1, &[]);
    live.create_lb_cookie_policy("LBCookie", 300);
    live.set_policy(Some("LBCookie"));
    // Each request spends 200 ms at its target, so when the victim dies its clients' requests
    // are in flight there, on connections Envoy keeps alive: the GET clients' are reset after
    // they were sent (Envoy retries them elsewhere), and so are the POST clients'.
    let slow = |post_every| Plan {
        pause: Duration::ZERO,
        relogin_every: 1_000_000,
        post_every,
        path: "/?delay_ms=200",
        new_browser_every: None,
    };
    let traffic = Traffic::start(CLIENTS, &live.envoys[0].url(), slow(None));
    let posts = Traffic::start(CLIENTS / 2, &live.envoys[0].url(), slow(Some(1)));
    let (victim, clients) = pinned_clients(&traffic);
    wait_answers(
        &traffic,
        &clients,
        Instant::now(),
        3,
        "the victim's clients keep sending",
    );

    let killed = Instant::now();
    live.targets.kill(&victim).unwrap();
    wait_answers(&traffic, &clients, killed, 10, "the victim's clients go on elsewhere");
    let samples = traffic.stop();
    let all: Vec<Sample> = samples.iter().cloned().chain(posts.stop()).collect();

    let (idempotent, other) = failures(&all, killed);
    let after: Vec<&Sample> = all
        .iter()
        .filter(|s| s.sent + Duration::from_secs(1) > killed)
        .collect();
    println!(
        "target killed: {} requests from 1 s before the kill on ({} POST); failed: idempotent {}, POST {} \
         (a POST that reached the target when it died is not sent again); repinned {}",
        after.len(),
        after.iter().filter(|s| !s.idempotent()).count(),
        idempotent.len(),
        other.len(),
        live.counter(0, "repinned"),
    );
    for failure in &other {
        println!("  POST failed: {:?}", failure.error);
    }
    assert!(idempotent.is_empty(), "idempotent requests failed: {idempotent:#?}");
    assert_moved_and_stayed(&samples, &clients, &victim, killed);
}

/// The health flags Envoy shows for `address` in the listener's cluster (admin `/clusters`).
fn health_flags(live: &Live<TargetProcesses>, address: &str) -> String {
    let clusters = live.envoys[0].admin_get("/clusters").unwrap_or_default();
    let cluster = sticky_control::feed::cluster_name(sticky_tests::LOAD_BALANCER, 80);
    let prefix = format!("{cluster}::{address}::health_flags::");
    clusters
        .lines()
        .find_map(|line| line.strip_prefix(&prefix).map(str::to_owned))
        .unwrap_or_default()
}

#[test]
fn a_vanished_target_fails_no_idempotent_request_and_costs_at_most_the_connect_timeout() {
    let mut live = Live::start_processes(Placement::TestHosts, 1, &[]);
    live.create_app_cookie_policy("AppCookie", "session");
    live.set_policy(Some("AppCookie"));
    let plan = Plan {
        pause: Duration::from_millis(20),
        relogin_every: 1_000_000,
        post_every: Some(4),
        path: "/",
        new_browser_every: None,
    };
    let traffic = Traffic::start(CLIENTS, &live.envoys[0].url(), plan);
    let (victim, clients) = pinned_clients(&traffic);
    wait_answers(
        &traffic,
        &clients,
        Instant::now(),
        10,
        "the victim's clients keep sending",
    );
    let addresses: HashMap<String, String> = live
        .targets
        .addresses()
        .into_iter()
        .map(|(id, a)| (id, a.to_string()))
        .collect();
    let address = &addresses[&victim];

    let vanished = Instant::now();
    live.targets.vanish(&victim).unwrap();
    // Envoy ejects it at its first timeout; the filter learns it from the first response
    // another target gave to a request it had routed there (Envoy's retry). Each instant is
    // when the test saw it, at most 20 ms after it happened.
    let (mut ejected, mut learned) = (None, None);
    eventually(
        Duration::from_secs(15),
        "Envoy ejects the vanished target and the filter stops routing to it",
        || {
            if ejected.is_none() && health_flags(&live, address).contains("failed_outlier_check") {
                ejected = Some(Instant::now());
            }
            if learned.is_none() && live.counter(0, "unreachable") >= 1 {
                learned = Some(Instant::now());
            }
            ejected.is_some() && learned.is_some()
        },
    );
    let (ejected, learned) = (ejected.unwrap(), learned.unwrap());
    let (until_ejected, until_learned) = (ejected - vanished, learned - vanished);
    eventually(
        Duration::from_secs(30),
        "the health check marks it OutOfService",
        || live.instance_state(&victim) == "OutOfService",
    );
    let until_out_of_service = vanished.elapsed();
    wait_answers(&traffic, &clients, ejected, 20, "the victim's clients go on elsewhere");
    let samples = traffic.stop();
    live.targets.reappear(&victim).unwrap();

    let (idempotent, other) = failures(&samples, vanished);
    let victims: Vec<&Sample> = samples
        .iter()
        .filter(|s| clients.contains(&s.client) && s.sent > vanished)
        .collect();
    let max_latency = |samples: &[&Sample]| samples.iter().map(|s| s.latency()).max().unwrap_or_default();
    let before_ejection: Vec<&Sample> = victims.iter().copied().filter(|s| s.sent < ejected).collect();
    let after_ejection: Vec<&Sample> = samples.iter().filter(|s| s.sent > ejected).collect();
    let paid = |samples: &[&Sample], since: Instant| -> Vec<Sample> {
        samples
            .iter()
            .filter(|s| s.sent > since && s.latency() >= DEFAULT_CONNECT_TIMEOUT)
            .map(|s| (*s).clone())
            .collect()
    };
    let paid_after_ejection = paid(&after_ejection, ejected);
    let paid_after_learning = paid(&after_ejection, learned);
    // Sent after the ejection, a request can still pay the connect timeout once, until the
    // filter learns (Envoy's override_host keeps sending requests that name an ejected host
    // to it), and then goes to another host: never more than the timeout and a retry.
    let retry_allowance = Duration::from_millis(500);
    let too_slow: Vec<&Sample> = after_ejection
        .iter()
        .copied()
        .filter(|s| s.latency() >= DEFAULT_CONNECT_TIMEOUT + retry_allowance)
        .collect();
    let others_before: Vec<&Sample> = samples
        .iter()
        .filter(|s| !clients.contains(&s.client) && s.sent < vanished)
        .collect();
    println!(
        "target vanished (link down; connect timeout {:?}): {} requests after it; failed: idempotent {}, POST {}; \
         ejected by Envoy after {:?}, the filter stopped routing to it after {:?} (sessions stop trying it), \
         OutOfService after {:?}; requests of its {} pinned clients sent before the ejection: {}, slowest {:?} \
         (other clients' slowest before the vanish: {:?}); requests sent after the ejection: {}, slowest {:?}, \
         {} paid the connect timeout ({} sent after the filter learnt); repinned {}",
        DEFAULT_CONNECT_TIMEOUT,
        samples.iter().filter(|s| s.sent > vanished).count(),
        idempotent.len(),
        other.len(),
        until_ejected,
        until_learned,
        until_out_of_service,
        clients.len(),
        before_ejection.len(),
        max_latency(&before_ejection),
        max_latency(&others_before),
        after_ejection.len(),
        max_latency(&after_ejection),
        paid_after_ejection.len(),
        paid_after_learning.len(),
        live.counter(0, "repinned"),
    );
    for failure in &other {
        println!("  POST failed: {:?}", failure.error);
    }
    assert!(idempotent.is_empty(), "idempotent requests failed: {idempotent:#?}");
    // By design a request waits at most the connect timeout (a new connection, or data sent on
    // a pooled one: TCP_USER_TIMEOUT), or twice it (one in flight when the target vanished,
    // found by keepalive probes); the first such failure ejects the target.
    let bound = 3 * DEFAULT_CONNECT_TIMEOUT;
    let slowest = max_latency(&victims);
    assert!(slowest < bound, "a request waited {slowest:?} for the vanished target");
    assert!(
        until_ejected < bound,
        "Envoy ejected the vanished target only after {until_ejected:?}"
    );
    assert!(
        too_slow.is_empty(),
        "requests sent after the ejection waited more than the connect timeout: {too_slow:#?}"
    );
    assert!(
        paid_after_learning.is_empty(),
        "requests sent after the filter learnt waited for the vanished target: {paid_after_learning:#?}"
    );
    assert_moved_and_stayed(&samples, &clients, &victim, vanished);
}
