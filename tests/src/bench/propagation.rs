//! Propagation through the live system (control service + Envoy following it):
//! - policy: from SetLoadBalancerPoliciesOfListener's answer to the first request Envoy handles
//!   under the new policy (a cookie issued, or no longer issued);
//! - target death: from a target's death to its session being re-pinned, and to the health
//!   check taking it out of service.

use std::time::{Duration, Instant};

use anyhow::bail;

use crate::STICKY_COOKIE;
use crate::live::Live;

#[derive(Debug, Clone)]
pub struct Propagation {
    /// API call sent -> first request under the new policy, one per trial, sorted.
    pub policy_lags: Vec<Duration>,
    /// API call sent -> answered (the service answers once every follower holds the change).
    pub answer_times: Vec<Duration>,
    /// Requests sent after the answer that were still handled under the old policy.
    pub stale_after_answer: usize,
    pub repinned_after: Duration,
    /// Requests that failed while the session moved.
    pub failed_while_repinning: u32,
    /// None when not waited for.
    pub out_of_service_after: Option<Duration>,
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Measures `trials` policy flips, then one target death (waiting for the health check too
/// when `wait_health` is set).
pub fn measure(trials: usize, wait_health: bool) -> anyhow::Result<Propagation> {
    let mut live = Live::start(1, &[]);
    live.create_lb_cookie_policy("LBCookie", 300);

    let mut policy_lags = Vec::with_capacity(trials);
    let mut answer_times = Vec::with_capacity(trials);
    let mut stale_after_answer = 0;
    for trial in 0..trials {
        let enable = trial % 2 == 0;
        let sent = Instant::now();
        live.set_policy(enable.then_some("LBCookie"));
        answer_times.push(sent.elapsed());
        loop {
            let reply = live.get(0, "/", &[]);
            if reply.sticky_cookie().is_some() == enable {
                policy_lags.push(sent.elapsed());
                break;
            }
            stale_after_answer += 1;
            if sent.elapsed() > Duration::from_secs(5) {
                bail!("trial {trial}: the policy change did not reach Envoy within 5 s");
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    policy_lags.sort();
    answer_times.sort();

    // Target death, with an LB cookie session on the target.
    live.set_policy(Some("LBCookie"));
    std::thread::sleep(Duration::from_millis(200));
    let first = live.get(0, "/", &[]);
    let (cookie, victim) = (first.sticky_cookie().unwrap_or_default(), first.target());
    live.targets.stop(&victim);
    let died = Instant::now();
    let mut failed_while_repinning = 0;
    let repinned_after = loop {
        match live.try_get(0, "/", &[(STICKY_COOKIE, &cookie)]) {
            Ok(reply) if reply.status == 200 && reply.target() != victim && reply.sticky_cookie().is_some() => {
                break died.elapsed();
            }
            Ok(reply) if reply.status == 200 => {}
            _ => failed_while_repinning += 1,
        }
        if died.elapsed() > Duration::from_secs(30) {
            bail!("the session was not re-pinned within 30 s");
        }
    };
    let out_of_service_after = if wait_health {
        loop {
            if live.instance_state(&victim) == "OutOfService" {
                break Some(died.elapsed());
            }
            if died.elapsed() > Duration::from_secs(30) {
                bail!("the health check did not take the dead target out of service within 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    } else {
        None
    };
    live.targets.restart(&victim)?;
    Ok(Propagation {
        policy_lags,
        answer_times,
        stale_after_answer,
        repinned_after,
        failed_while_repinning,
        out_of_service_after,
    })
}

impl Propagation {
    pub fn markdown(&self) -> String {
        let lags = &self.policy_lags;
        let answers = &self.answer_times;
        let mut out = format!(
            "- Policy change, API call sent → first request under the new policy ({} flips): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms\n\
             - … API call sent → answered (once every filter and Envoy holds the change): p50 {:.2} ms, p99 {:.2} ms; requests sent after the answer still under the old policy: {}\n",
            lags.len(),
            ms(percentile(lags, 0.5)),
            ms(percentile(lags, 0.99)),
            ms(lags.last().copied().unwrap_or_default()),
            ms(percentile(answers, 0.5)),
            ms(percentile(answers, 0.99)),
            self.stale_after_answer,
        );
        out.push_str(&format!(
            "- Target death → its session re-pinned to another target: {:.1} ms ({} failed requests meanwhile)\n",
            ms(self.repinned_after),
            self.failed_while_repinning
        ));
        if let Some(d) = self.out_of_service_after {
            out.push_str(&format!(
                "- Target death → health check OutOfService (interval 5 s, UnhealthyThreshold 2): {:.2} s\n",
                d.as_secs_f64()
            ));
        }
        out
    }
}
