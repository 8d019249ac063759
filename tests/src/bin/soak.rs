//! The soak test with faults, for as long as asked (`--seconds`, default 600), printing its
//! counts; exits non-zero if anything went wrong but non-idempotent requests in flight to a
//! target when it died or vanished.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use clap::Parser;

#[derive(Parser)]
#[command(
    about = "Sticky clients through Envoy while targets, the control service, policies, registrations and keys change"
)]
struct Args {
    /// How long the faults go on.
    #[arg(long, default_value_t = 600)]
    seconds: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let report = sticky_tests::soak::run(Duration::from_secs(args.seconds));
    println!("{}", report.summary());
    for line in report
        .in_flight_errors_idempotent
        .iter()
        .chain(&report.other_errors)
        .chain(&report.stickiness_violations)
        .chain(&report.deregistered_hits)
        .take(50)
    {
        println!("  {line}");
    }
    let clean = report.in_flight_errors_idempotent.is_empty()
        && report.other_errors.is_empty()
        && report.stickiness_violations.is_empty()
        && report.deregistered_hits.is_empty();
    if !clean {
        anyhow::bail!("the soak found faults it should have survived");
    }
    Ok(())
}
