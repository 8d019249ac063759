//! Propagation figures of the live system (control service + Envoy following it):
//! - policy: time from SetLoadBalancerPoliciesOfListener's answer to the first request Envoy
//!   handles under the new policy (a cookie issued, or no longer issued), over N trials;
//! - target death: time from a target's death to its session being re-pinned, and to the
//!   health check taking it out of service.

use std::time::{Duration, Instant};

use clap::Parser;
use sticky_tests::STICKY_COOKIE;
use sticky_tests::live::Live;

/// Measures how fast API changes and target deaths reach a running Envoy.
#[derive(Parser)]
struct Args {
    /// Policy flips to measure.
    #[arg(long, default_value_t = 50)]
    trials: usize,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut live = Live::start(1, &[]);
    live.create_lb_cookie_policy("LBCookie", 300);

    let mut lags = Vec::with_capacity(args.trials);
    for trial in 0..args.trials {
        let enable = trial % 2 == 0;
        live.set_policy(enable.then_some("LBCookie"));
        let acknowledged = Instant::now();
        loop {
            let reply = live.get(0, "/", &[]);
            if reply.sticky_cookie().is_some() == enable {
                lags.push(acknowledged.elapsed());
                break;
            }
            if acknowledged.elapsed() > Duration::from_secs(5) {
                anyhow::bail!("trial {trial}: the policy change did not reach Envoy within 5 s");
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    lags.sort();
    println!(
        "Policy propagation (API answer -> first request under the new policy), {} trials: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        lags.len(),
        ms(percentile(&lags, 0.5)),
        ms(percentile(&lags, 0.99)),
        ms(lags[lags.len() - 1])
    );

    // Target death, with an LB cookie session on the target.
    live.set_policy(Some("LBCookie"));
    std::thread::sleep(Duration::from_millis(200));
    let first = live.get(0, "/", &[]);
    let (cookie, victim) = (first.sticky_cookie().unwrap_or_default(), first.target());
    live.targets.stop(&victim);
    let died = Instant::now();
    let mut failed = 0;
    let repinned = loop {
        match live.try_get(0, "/", &[(STICKY_COOKIE, &cookie)]) {
            Ok(reply) if reply.status == 200 && reply.target() != victim && reply.sticky_cookie().is_some() => {
                break died.elapsed();
            }
            Ok(reply) if reply.status == 200 => {}
            _ => failed += 1,
        }
        if died.elapsed() > Duration::from_secs(30) {
            anyhow::bail!("the session was not re-pinned within 30 s");
        }
    };
    let out_of_service = loop {
        if live.instance_state(&victim) == "OutOfService" {
            break died.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    println!(
        "Target death: session re-pinned after {:.1} ms (connection refused -> retried on another host -> cookie rewritten); \
         health check OutOfService after {:.2} s (interval 5 s, UnhealthyThreshold 2: expected 5-10 s); failed requests {failed}",
        ms(repinned),
        out_of_service.as_secs_f64()
    );
    live.targets.restart(&victim)?;
    Ok(())
}
