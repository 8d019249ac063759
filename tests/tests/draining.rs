//! Connection draining and session draining, end to end: the real control service, a real Envoy
//! with the shell under test, demo targets. A deregistration through the API while draining is
//! on: the target gets no new session; with session draining, the sessions already on it stay
//! until ConnectionDraining.Timeout and then move with rewritten cookies; without, they move at
//! once while its in-flight requests complete. A WebSocket to it runs until the Timeout, then
//! closes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use sticky_tests::bench::websocket::{echoes, open};
use sticky_tests::live::{Live, eventually};
use sticky_tests::{STICKY_COOKIE, TARGET_IDS};

const DRAIN_SECONDS: u64 = 4;

/// The Description DescribeInstanceHealth gives for `id`, or its error code.
fn health_description(live: &Live, id: &str) -> String {
    let reply = live
        .api()
        .call(
            "DescribeInstanceHealth",
            &[
                ("LoadBalancerName", sticky_tests::LOAD_BALANCER),
                ("Instances.member.1.InstanceId", id),
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    reply
        .error_code()
        .or_else(|| reply.field("Description"))
        .unwrap_or_default()
}

#[test]
fn session_draining_keeps_sessions_on_a_deregistered_target_until_the_timeout_then_moves_them() {
    let live = Live::start(1, &[]);
    let (cookie, draining) = live.lb_cookie_session(0);
    live.enable_draining(DRAIN_SECONDS, true);
    live.call(
        "DeregisterInstancesFromLoadBalancer",
        &[("Instances.member.1.InstanceId", &draining)],
    );
    let deregistered = Instant::now();
    assert!(
        health_description(&live, &draining).contains("deregistration currently in progress"),
        "{}",
        health_description(&live, &draining)
    );
    // No new session on it, from the moment the API answered.
    let unpinned = live.spread(0, 20, &[]);
    assert!(
        !unpinned.contains(&draining),
        "a new session on the draining target: {unpinned:?}"
    );
    // Its sessions stay on it until the timeout (counted from before the answer), then move,
    // with a rewritten cookie; no request fails meanwhile.
    let mut stayed = 0;
    let (moved_after, new_cookie, new_target) = loop {
        let reply = live.get(0, "/", &[(STICKY_COOKIE, &cookie)]);
        assert_eq!(reply.status, 200, "{}", reply.body);
        let target = reply.target();
        if target == draining {
            stayed += 1;
            assert!(
                deregistered.elapsed() < Duration::from_secs(DRAIN_SECONDS + 5),
                "the session stayed past the drain"
            );
            continue;
        }
        let rewritten = reply.sticky_cookie().expect("a moved session gets a rewritten cookie");
        break (deregistered.elapsed(), rewritten, target);
    };
    println!("session draining: {stayed} requests stayed on {draining}, moved after {moved_after:?}");
    assert!(
        moved_after >= Duration::from_secs(DRAIN_SECONDS) - Duration::from_millis(200),
        "moved before the timeout: {moved_after:?}"
    );
    assert_eq!(
        live.spread(0, 10, &[(STICKY_COOKIE, &new_cookie)]),
        HashSet::from([new_target]),
        "the moved session stays on its new target"
    );
    eventually(Duration::from_secs(5), "the instance is no longer listed", || {
        health_description(&live, &draining) == "InvalidInstance"
    });
    assert_eq!(
        live.counter(0, "draining_upstream"),
        0,
        "Envoy never sent a new session to it"
    );
}

#[test]
fn connection_draining_alone_moves_sessions_at_once_and_lets_in_flight_requests_finish() {
    let live = Live::start(1, &[]);
    let (cookie, draining) = live.lb_cookie_session(0);
    live.enable_draining(DRAIN_SECONDS, false);
    // ConnectionSettings.IdleTimeout is the listener's idle timeout, in force on the answer.
    live.call(
        "ModifyLoadBalancerAttributes",
        &[("LoadBalancerAttributes.ConnectionSettings.IdleTimeout", "120")],
    );
    let dump = live.envoys[0].admin_get("/config_dump").expect("config dump");
    assert!(
        dump.contains("\"idle_timeout\": \"120s\""),
        "no 120 s idle timeout in Envoy's listener"
    );
    // Envoy rebuilt the listener (and its filter configuration): the new one starts from the
    // state the old one held, so the session stays put, even on new connections.
    for _ in 0..10 {
        let reply = sticky_tests::get(
            &sticky_tests::agent(),
            &live.envoys[0].url(),
            "/",
            &[(STICKY_COOKIE, &cookie)],
            &[],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            reply.target(),
            draining,
            "a session moved when Envoy updated its listener"
        );
    }
    // A slow request in flight on the target when it is deregistered.
    let url = format!("{}/slow?delay_ms=1500", live.envoys[0].url());
    let header = format!("{STICKY_COOKIE}={cookie}");
    let slow = std::thread::spawn(move || {
        let response = sticky_tests::agent().get(&url).set("Cookie", &header).call();
        response
            .map(|r| (r.status(), r.into_string().unwrap_or_default()))
            .map_err(|e| e.to_string())
    });
    // Wait until it is in flight at the target (Envoy's active upstream requests).
    eventually(Duration::from_secs(5), "the slow request in flight", || {
        live.envoys[0].counters("upstream_rq_active").is_ok_and(|stats| {
            stats
                .iter()
                .any(|(name, active)| name.contains("terraform-balancer_80") && *active > 0)
        })
    });
    live.call(
        "DeregisterInstancesFromLoadBalancer",
        &[("Instances.member.1.InstanceId", &draining)],
    );
    // Its sessions move at once (the API answered once Envoy's filter held the change).
    let moved = live.get(0, "/", &[(STICKY_COOKIE, &cookie)]);
    assert_ne!(moved.target(), draining);
    assert!(moved.sticky_cookie().is_some(), "no rewritten cookie");
    assert!(health_description(&live, &draining).contains("in-flight requests"));
    let (status, body) = slow
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("the in-flight request failed: {e}"));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&draining), "answered by {body}");
}

#[test]
fn websockets_to_a_deregistered_target_run_until_its_connection_draining_ends_then_close() {
    let live = Live::start(1, &[]);
    live.lb_cookie_session(0);
    // A WebSocket on each target, pinned there by a cookie naming it.
    let mut cookies: HashMap<String, String> = HashMap::new();
    eventually(Duration::from_secs(10), "a cookie for each target", || {
        let reply = live.get(0, "/", &[]);
        cookies.insert(reply.target(), reply.sticky_cookie().expect("an LB cookie"));
        cookies.len() == TARGET_IDS.len()
    });
    let url = live.envoys[0].url();
    let mut websockets: HashMap<&str, _> = TARGET_IDS
        .iter()
        .map(|id| {
            let cookie = format!("{STICKY_COOKIE}={}", cookies[*id]);
            let mut socket = open(&url, Some(&cookie)).unwrap_or_else(|e| panic!("{e:#}"));
            assert!(echoes(&mut socket), "no echo from {id}");
            (*id, socket)
        })
        .collect();

    // Connection draining (no session draining): the deregistered target's WebSocket carries
    // messages until the Timeout, then is closed; the others are untouched.
    let (drained, deregistered, kept) = (TARGET_IDS[0], TARGET_IDS[1], TARGET_IDS[2]);
    live.enable_draining(DRAIN_SECONDS, false);
    live.call(
        "DeregisterInstancesFromLoadBalancer",
        &[("Instances.member.1.InstanceId", drained)],
    );
    let started = Instant::now();
    let socket = websockets.get_mut(drained).unwrap();
    assert!(echoes(socket), "closed at deregistration, before the drain ended");
    eventually(
        Duration::from_secs(DRAIN_SECONDS + 10),
        "the WebSocket closes when the drain ends",
        || !echoes(socket),
    );
    let closed_after = started.elapsed();
    println!("a drained target's WebSocket closed {closed_after:?} after its deregistration");
    // The drain ends on the service's whole-second clock: up to a second early.
    assert!(
        closed_after >= Duration::from_secs(DRAIN_SECONDS - 1),
        "closed after {closed_after:?}, before the {DRAIN_SECONDS} s drain ended"
    );
    for id in [deregistered, kept] {
        assert!(echoes(websockets.get_mut(id).unwrap()), "{id}'s WebSocket was closed");
    }
    assert_eq!(live.counter(0, "upgrades_closed"), 1);

    // Without connection draining, a deregistered target's WebSocket closes at once.
    live.call(
        "ModifyLoadBalancerAttributes",
        &[("LoadBalancerAttributes.ConnectionDraining.Enabled", "false")],
    );
    live.call(
        "DeregisterInstancesFromLoadBalancer",
        &[("Instances.member.1.InstanceId", deregistered)],
    );
    let socket = websockets.get_mut(deregistered).unwrap();
    let closed_after = eventually(Duration::from_secs(5), "the WebSocket closes at once", || {
        !echoes(socket)
    });
    println!("without draining, a deregistered target's WebSocket closed {closed_after:?} after the API answered");
    assert!(
        echoes(websockets.get_mut(kept).unwrap()),
        "{kept}'s WebSocket was closed"
    );
    assert_eq!(live.counter(0, "upgrades_closed"), 2);
}
