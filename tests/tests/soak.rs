//! The soak test with faults (see `sticky_tests::soak`): about 2 minutes here, longer with
//! `STICKY_SOAK_SECONDS` or `cargo run --release -p sticky-tests --bin soak -- --seconds 600`.
//! Everything must go right but non-idempotent requests in flight to a target when it died or
//! vanished (a POST that reached a target is not sent twice).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

fn soak_seconds(default: u64) -> Duration {
    let seconds = std::env::var("STICKY_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    Duration::from_secs(seconds)
}

#[test]
fn sticky_clients_keep_their_sessions_through_faults() {
    let report = sticky_tests::soak::run(soak_seconds(110));
    assert_all_went_right(&report);
}

/// The same faults with three replicas of the control service on PostgreSQL, the leader and
/// another replica killed -9 in turn, the API called through Envoy's front of the replicas.
#[test]
fn sticky_clients_keep_their_sessions_through_replica_deaths() {
    let report = sticky_tests::soak::run_replicated(soak_seconds(60), 3);
    assert_all_went_right(&report);
}

/// Scale-down with session draining: each target in turn deregistered while sticky clients
/// (new browsers every few requests) keep going; every other time it also dies while draining.
#[test]
fn sticky_sessions_stay_on_a_draining_target_until_its_timeout_and_no_new_one_lands_there() {
    let report = sticky_tests::scale_down::run(soak_seconds(45));
    println!("{}", report.summary());
    assert!(report.scale_downs >= 2, "{}", report.summary());
    assert!(
        report.kept_on_draining > 50,
        "too few requests of kept sessions: {}",
        report.summary()
    );
    assert!(
        report.moved_at_end > 0,
        "no session moved at a drain's end: {}",
        report.summary()
    );
    for (what, list) in [
        ("failed requests", &report.failed),
        ("sessions moved before the Timeout", &report.moved_before_timeout),
        ("new sessions on a draining target", &report.new_sessions_on_draining),
        ("requests answered after a drain ended", &report.answered_after_drain),
        ("stickiness violations", &report.stickiness_violations),
    ] {
        assert!(list.is_empty(), "{what}: {list:#?}\n{}", report.summary());
    }
}

fn assert_all_went_right(report: &sticky_tests::soak::SoakReport) {
    println!("{}", report.summary());
    assert!(
        report.requests > 1_000,
        "too little traffic to mean anything: {}",
        report.summary()
    );
    assert!(
        report.pinned_requests > 500,
        "too few sticky requests: {}",
        report.summary()
    );
    assert!(
        report.in_flight_errors_idempotent.is_empty(),
        "idempotent requests failed when a target died or vanished: {:#?}",
        report.in_flight_errors_idempotent
    );
    assert!(
        report.other_errors.is_empty(),
        "other errors: {:#?}",
        report.other_errors
    );
    assert!(
        report.stickiness_violations.is_empty(),
        "stickiness violations: {:#?}\nthe filter's unreachable targets: {:#?}",
        report.stickiness_violations,
        report.unreachable_log
    );
    assert!(
        report.deregistered_hits.is_empty(),
        "requests reached a deregistered target: {:#?}",
        report.deregistered_hits
    );
    assert!(
        report.lost_writes.is_empty(),
        "acknowledged writes lost: {:#?}",
        report.lost_writes
    );
}
