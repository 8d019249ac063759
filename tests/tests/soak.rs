//! The soak test with faults (see `sticky_tests::soak`): about 2 minutes here, longer with
//! `STICKY_SOAK_SECONDS` or `cargo run --release -p sticky-tests --bin soak -- --seconds 600`.
//! Everything must go right but non-idempotent requests in flight to a target when it died or
//! vanished (a POST that reached a target is not sent twice).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

#[test]
fn sticky_clients_keep_their_sessions_through_faults() {
    let seconds: u64 = std::env::var("STICKY_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(110);
    let report = sticky_tests::soak::run(Duration::from_secs(seconds));
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
}
