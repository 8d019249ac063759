//! End to end, the live system: real demo targets, the real control service (a process), real
//! Envoys whose filter long-polls the control service and whose cluster comes from its EDS.
//! An operator's API call changes what the running Envoy does, with no restart.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use sticky_tests::live::{Live, eventually};
use sticky_tests::{STICKY_COOKIE, TARGET_IDS, key_id};

fn all_targets() -> HashSet<String> {
    TARGET_IDS.iter().map(|s| (*s).to_owned()).collect()
}

/// The key id sealed in a stickiness cookie's header.
#[test]
fn policies_set_through_the_api_are_in_force_when_it_answers() {
    let live = Live::start(1, &[]);

    // 1. No policy: requests spread, no stickiness cookie.
    assert_eq!(live.spread(0, 30, &[]), all_targets());
    assert_eq!(live.get(0, "/", &[]).sticky_cookie(), None);
    // The API answers once every filter holds the change: the very next request shows it.
    let (cookie, pinned) = live.lb_cookie_session(0);
    assert_eq!(
        live.spread(0, 20, &[(STICKY_COOKIE, &cookie)]),
        HashSet::from([pinned.clone()])
    );

    // 2. Switch to the app cookie policy: no more LB cookies; stickiness starts with `session`.
    live.create_app_cookie_policy("AppCookie", "session");
    live.set_policy(Some("AppCookie"));
    assert!(
        live.get(0, "/", &[]).sticky_cookie().is_none(),
        "LB cookies are no longer issued once the API answered"
    );
    assert!(
        live.spread(0, 20, &[(STICKY_COOKIE, &cookie)]).len() > 1,
        "the LB cookie no longer pins"
    );
    let login = live.get(0, "/login", &[]);
    let session = login.cookie_value("session").unwrap();
    let sticky = login
        .sticky_cookie()
        .expect("stickiness starts when the target sets session");
    let app_target = login.target();
    let both = [("session", session.as_str()), (STICKY_COOKIE, sticky.as_str())];
    assert_eq!(live.spread(0, 20, &both), HashSet::from([app_target]));

    // 8. Remove the policy: stickiness stops.
    live.set_policy(None);
    assert!(
        live.get(0, "/login", &[]).sticky_cookie().is_none(),
        "stickiness stops once the API answered"
    );
    assert_eq!(live.spread(0, 30, &both), all_targets());
}

#[test]
fn a_dead_target_loses_its_sessions_to_a_healthy_one_and_they_stay_there() {
    let mut live = Live::start(1, &[]);
    live.create_app_cookie_policy("AppCookie", "session");
    live.set_policy(Some("AppCookie"));
    assert!(
        live.get(0, "/login", &[]).sticky_cookie().is_some(),
        "the app cookie policy is in force once the API answered"
    );
    let login = live.get(0, "/login", &[]);
    let session = login.cookie_value("session").unwrap();
    let old = login.target();
    let mut sticky = login.sticky_cookie().unwrap();

    live.targets.stop(&old);
    let stopped = Instant::now();
    let mut failed = 0;
    let mut repinned_after = None;
    let mut out_of_service_after = None;
    while stopped.elapsed() < Duration::from_secs(20) && out_of_service_after.is_none() {
        match live.try_get(0, "/", &[("session", &session), (STICKY_COOKIE, &sticky)]) {
            Ok(reply) if reply.status == 200 => {
                assert_ne!(reply.target(), old, "no answer from the dead target");
                if let Some(rewritten) = reply.sticky_cookie() {
                    repinned_after.get_or_insert(stopped.elapsed());
                    sticky = rewritten;
                }
            }
            _ => failed += 1,
        }
        if repinned_after.is_some() && live.instance_state(&old) == "OutOfService" {
            out_of_service_after = Some(stopped.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let repinned_after = repinned_after.expect("the session was re-pinned");
    let new = live
        .get(0, "/", &[("session", &session), (STICKY_COOKIE, &sticky)])
        .target();
    assert_ne!(new, old);
    println!(
        "target death: session re-pinned after {repinned_after:?}; health check marked it OutOfService after {out_of_service_after:?} \
         (interval 5 s, UnhealthyThreshold 2); failed requests: {failed}"
    );
    // Refused connections are retried on another host; what can still fail is the one request
    // Envoy had already written to a pooled connection the dying target was closing.
    assert!(
        failed <= 1,
        "{failed} failed requests: only a stale pooled connection may cost one"
    );

    live.targets.restart(&old).unwrap();
    eventually(Duration::from_secs(15), "the old target back in service", || {
        live.instance_state(&old) == "InService"
    });
    eventually(
        Duration::from_secs(5),
        "new sessions reach the old target again",
        || live.spread(0, 12, &[]).contains(&old),
    );
    let after = live.spread(0, 20, &[("session", &session), (STICKY_COOKIE, &sticky)]);
    assert_eq!(after, HashSet::from([new]), "the session stays on its new target");
}

#[test]
fn deregistered_targets_lose_their_sessions_and_their_traffic() {
    let live = Live::start(1, &[]);
    let (mut cookie, old) = live.lb_cookie_session(0);

    live.call(
        "DeregisterInstancesFromLoadBalancer",
        &[("Instances.member.1.InstanceId", &old)],
    );
    let moved = eventually(Duration::from_secs(5), "the session moves", || {
        let reply = live.get(0, "/", &[(STICKY_COOKIE, &cookie)]);
        match reply.sticky_cookie() {
            Some(new) if reply.target() != old => {
                cookie = new;
                true
            }
            _ => false,
        }
    });
    println!("deregistration: session moved {moved:?} after the API answered");
    // The API answered once Envoy's EDS held the change: no request reaches the old target.
    let new = live.get(0, "/", &[(STICKY_COOKIE, &cookie)]).target();
    assert_eq!(live.spread(0, 20, &[(STICKY_COOKIE, &cookie)]), HashSet::from([new]));
    let unpinned = live.spread(0, 40, &[]);
    assert!(!unpinned.contains(&old), "{unpinned:?}");
    assert_eq!(unpinned.len(), 2);
}

#[test]
fn envoy_keeps_its_sessions_while_the_control_service_is_down() {
    let mut live = Live::start(1, &[]);
    let (cookie, pinned) = live.lb_cookie_session(0);
    let updates_before = live.counter(0, "state_updates");

    live.control.kill();
    let down = Instant::now();
    let mut failed = 0;
    let mut served = 0;
    while down.elapsed() < Duration::from_secs(3) {
        match live.try_get(0, "/", &[(STICKY_COOKIE, &cookie)]) {
            Ok(reply) if reply.status == 200 => {
                assert_eq!(reply.target(), pinned, "stickiness holds without the control service");
                served += 1;
            }
            _ => failed += 1,
        }
        // New sessions start too.
        let fresh = live.get(0, "/", &[]);
        assert_eq!(fresh.status, 200);
        assert!(fresh.sticky_cookie().is_some());
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("control service down for 3 s: {served} pinned requests served, {failed} failed");
    assert_eq!(failed, 0);
    assert!(live.counter(0, "control_errors") > 0, "failed polls are counted");

    live.control.launch().unwrap_or_else(|e| panic!("{e}"));
    let resync = eventually(
        Duration::from_secs(10),
        "the filter takes the restarted service's state",
        || live.counter(0, "state_updates") > updates_before,
    );
    println!("control service restarted: filter resynchronised after {resync:?}");
    assert_eq!(live.spread(0, 10, &[(STICKY_COOKIE, &cookie)]), HashSet::from([pinned]));
    let policies = live.call("DescribeLoadBalancerPolicies", &[]);
    assert_eq!(
        policies.fields("PolicyName"),
        ["LBCookie"],
        "same state after the restart"
    );
}

#[test]
fn cookies_sealed_with_a_rotated_key_are_still_honoured() {
    // Rotate every 3 s (the service checks every 5 s); retired keys are kept for days.
    let live = Live::start(1, &["--key-rotation", "3"]);
    let (old_cookie, pinned) = live.lb_cookie_session(0);
    let old_key = key_id(&old_cookie);
    let mut new_cookie = String::new();
    eventually(Duration::from_secs(15), "new cookies are sealed with a new key", || {
        new_cookie = live.get(0, "/", &[]).sticky_cookie().unwrap_or_default();
        !new_cookie.is_empty() && key_id(&new_cookie) != old_key
    });
    let pinned_before = live.counter(0, "pinned");
    assert_eq!(
        live.spread(0, 20, &[(STICKY_COOKIE, &old_cookie)]),
        HashSet::from([pinned]),
        "the old key still opens"
    );
    assert_eq!(live.counter(0, "pinned"), pinned_before + 20);
    assert_eq!(live.counter(0, "rejected.unknown_key"), 0);
}

#[test]
fn a_cookie_issued_by_one_envoy_is_honoured_by_another() {
    let live = Live::start(2, &[]);
    live.create_lb_cookie_policy("LBCookie", 300);
    live.set_policy(Some("LBCookie"));
    for envoy in 0..2 {
        assert!(
            live.get(envoy, "/", &[]).sticky_cookie().is_some(),
            "the policy is in force once the API answered"
        );
    }
    for (issuer, other) in [(0, 1), (1, 0)] {
        let first = live.get(issuer, "/", &[]);
        let (cookie, pinned) = (first.sticky_cookie().unwrap(), first.target());
        assert_eq!(
            live.spread(other, 20, &[(STICKY_COOKIE, &cookie)]),
            HashSet::from([pinned])
        );
    }
}
