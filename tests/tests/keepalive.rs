//! A healthy target that resets a reused keep-alive connection never moves a session: Envoy
//! closes its idle connections to targets before common servers' keep-alive timeouts end, and a
//! request that failed on its target anyway is tried once more on that target, on a new
//! connection, before any other (the routing header names the target twice; see
//! `sticky_core::listener::Target::routing_value`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use sticky_testing::flask::{FlaskApp, FlaskTargets};
use sticky_tests::live::{Live, Targets};
use sticky_tests::resetting::ResettingTargets;
use sticky_tests::{STICKY_COOKIE, TARGET_IDS, get};

/// Envoy's retries of requests to targets so far.
fn retries<T: Targets>(live: &Live<T>) -> u64 {
    live.envoys[0]
        .counters("upstream_rq_retry")
        .unwrap()
        .iter()
        .filter(|(name, _)| name.starts_with("cluster.") && name.ends_with(".upstream_rq_retry"))
        .map(|(_, value)| value)
        .sum()
}

/// `count` GETs pinned by `cookie` on one kept-alive client, `pause` apart: every one answered
/// by `pinned`, and no cookie ever naming another target.
fn all_stay_on<T: Targets>(
    live: &Live<T>,
    cookie: &str,
    pinned: &str,
    count: usize,
    pause: impl Fn(usize) -> Duration,
) {
    let client = sticky_tests::agent();
    let url = live.envoys[0].url();
    for n in 0..count {
        let reply = get(&client, &url, "/", &[(STICKY_COOKIE, cookie)], &[]).unwrap_or_else(|e| panic!("GET {n}: {e}"));
        assert_eq!(reply.status, 200, "GET {n} failed: {}", reply.body);
        assert_eq!(reply.target(), pinned, "GET {n}: the session moved");
        assert!(reply.sticky_cookie().is_none(), "GET {n}: a new cookie was issued");
        // The pattern of use under test (a client pausing between requests), not a wait.
        std::thread::sleep(pause(n));
    }
}

#[test]
fn a_target_that_resets_every_reused_connection_loses_no_request_and_no_session() {
    let targets = ResettingTargets::start(&TARGET_IDS).unwrap_or_else(|e| panic!("{e}"));
    let live = Live::start_with(targets, 1, &[]);
    let (cookie, pinned) = live.lb_cookie_session(0);
    let retried_before = retries(&live);
    all_stay_on(&live, &cookie, &pinned, 40, |_| Duration::ZERO);
    assert!(
        retries(&live) > retried_before,
        "Envoy never retried: the target reset nothing and the test proves nothing"
    );
    assert_eq!(
        live.counter(0, "unreachable"),
        0,
        "the filter marked its target unreachable"
    );
}

#[test]
fn gunicorns_keep_alive_never_races_envoy_into_moving_a_session() {
    // The seed's gunicorn with its gthread worker and default 2 s keep-alive.
    let targets = FlaskTargets::start_app(&TARGET_IDS, FlaskApp::Realtime).unwrap_or_else(|e| panic!("{e:#}"));
    let live = Live::start_with(targets, 1, &[]);
    let (cookie, pinned) = live.lb_cookie_session(0);
    let started = Instant::now();
    // Pauses around gunicorn's keep-alive timeout, when Envoy reusing a connection would race
    // gunicorn closing it.
    all_stay_on(&live, &cookie, &pinned, 12, |n| {
        Duration::from_millis(1_900 + 20 * n as u64)
    });
    let closed_idle: u64 = live.envoys[0]
        .counters("upstream_cx_idle_timeout")
        .unwrap()
        .iter()
        .filter(|(name, _)| name.starts_with("cluster.terraform"))
        .map(|(_, value)| value)
        .sum();
    assert!(
        closed_idle > 0,
        "Envoy never closed an idle connection to a target first"
    );
    eprintln!(
        "figure: 12 GETs {:?} apart on average, 0 failed, 0 moved; Envoy closed {closed_idle} idle target connections first",
        started.elapsed() / 12
    );
}
