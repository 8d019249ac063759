//! The scale-down soak: sticky clients keep sending requests through Envoy (half of them keep
//! their session, the others turn into a new browser, a new session, every
//! [`NEW_BROWSER_EVERY`] requests) while, in turn, each
//! target is deregistered with session draining on (ConnectionDraining.Timeout
//! [`DRAIN_SECONDS`]) and registered again after its drain; every other time the draining target
//! also dies halfway through its drain (and comes back before it is registered again). The
//! targets run on test hosts. The checks afterwards count:
//!
//! - failed requests (a POST in flight to a target when it died may fail: counted apart);
//! - sessions moved off a draining target before its Timeout while it had not failed;
//! - new sessions placed on a draining target (a request it answered that carried no cookie
//!   for it), and requests it answered after its drain had ended;
//! - stickiness violations elsewhere: a session moved off a target that was neither draining
//!   nor dead.

use std::time::{Duration, Instant};

use crate::hosts::{Placement, TargetProcesses};
use crate::live::Live;
use crate::traffic::{Plan, Sample, Traffic};
use crate::{LOAD_BALANCER, TARGET_IDS};

/// ConnectionDraining.Timeout of the run.
pub const DRAIN_SECONDS: u64 = 8;
/// A client turns into a new browser every this many requests.
pub const NEW_BROWSER_EVERY: u64 = 25;
/// Clients of each kind.
const CLIENTS: usize = 4;
const KEEPING: Plan = Plan {
    pause: Duration::from_millis(15),
    relogin_every: 1_000_000,
    post_every: Some(5),
    path: "/",
    new_browser_every: None,
};
const ARRIVING: Plan = Plan {
    new_browser_every: Some(NEW_BROWSER_EVERY),
    ..KEEPING
};
/// Between two scale-downs.
const STEP: Duration = Duration::from_secs(3);
/// After a drain's Timeout, by when it has certainly ended (whole seconds, the leader's 250 ms
/// tick, the filters' long-poll).
const DRAIN_END_SLACK: Duration = Duration::from_millis(1500);
/// A failed POST sent this long around a target's death was in flight to it.
const IN_FLIGHT_WINDOW: Duration = Duration::from_secs(4);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Deregistered,
    Killed,
    Restarted,
    Registered,
}

#[derive(Debug, Clone)]
struct Event {
    kind: Kind,
    target: String,
    started: Instant,
    done: Instant,
}

/// What the run counted.
#[derive(Debug, Clone, Default)]
pub struct ScaleDownReport {
    pub seconds: f64,
    pub requests: usize,
    pub scale_downs: usize,
    pub killed_while_draining: usize,
    pub failed: Vec<String>,
    /// POSTs in flight to a target when it died (not retried once sent).
    pub in_flight_posts_failed: usize,
    pub moved_before_timeout: Vec<String>,
    pub new_sessions_on_draining: Vec<String>,
    pub answered_after_drain: Vec<String>,
    pub stickiness_violations: Vec<String>,
    /// Requests a draining target answered for the sessions it kept.
    pub kept_on_draining: usize,
    /// Sessions that moved off a draining target at its Timeout (or when it died).
    pub moved_at_end: usize,
}

impl ScaleDownReport {
    pub fn summary(&self) -> String {
        format!(
            "scale-down soak {:.0} s: {} requests, {} scale-downs with session draining ({} s Timeout; {} with the target killed halfway); \
             failed requests {} (POSTs in flight to a target that died, apart: {}); sessions moved before Timeout {}; \
             new sessions on a draining target {}; requests answered after a drain ended {}; other stickiness violations {}; \
             (requests served to kept sessions while draining {}, sessions moved at the end {})",
            self.seconds,
            self.requests,
            self.scale_downs,
            DRAIN_SECONDS,
            self.killed_while_draining,
            self.failed.len(),
            self.in_flight_posts_failed,
            self.moved_before_timeout.len(),
            self.new_sessions_on_draining.len(),
            self.answered_after_drain.len(),
            self.stickiness_violations.len(),
            self.kept_on_draining,
            self.moved_at_end,
        )
    }
}

/// Runs the scale-down soak for about `duration` and returns its counts.
pub fn run(duration: Duration) -> ScaleDownReport {
    let targets = TargetProcesses::start(&TARGET_IDS, Placement::TestHosts).unwrap_or_else(|e| panic!("{e:#}"));
    let mut live = Live::start_with(targets, 1, &[]);
    live.create_lb_cookie_policy("LBCookie", 300);
    live.set_policy(Some("LBCookie"));
    live.enable_draining(DRAIN_SECONDS, true);
    let keeping = Traffic::start(CLIENTS, &live.envoys[0].url(), KEEPING);
    let arriving = Traffic::start(CLIENTS, &live.envoys[0].url(), ARRIVING);
    let started = Instant::now();
    let events = schedule(&mut live, duration);
    let mut samples = keeping.stop();
    // The arriving clients numbered after the keeping ones.
    samples.extend(arriving.stop().into_iter().map(|s| Sample {
        client: s.client + CLIENTS,
        ..s
    }));
    samples.sort_by_key(|s| s.sent);
    let mut report = check(&samples, &events);
    report.seconds = started.elapsed().as_secs_f64();
    report
}

fn call(live: &Live<TargetProcesses>, action: &str, target: &str) {
    live.call(action, &[("Instances.member.1.InstanceId", target)]);
}

fn schedule(live: &mut Live<TargetProcesses>, duration: Duration) -> Vec<Event> {
    let start = Instant::now();
    let drain = Duration::from_secs(DRAIN_SECONDS);
    let mut events = Vec::new();
    let mut round = 0usize;
    while start.elapsed() < duration {
        let target = TARGET_IDS[round % TARGET_IDS.len()].to_owned();
        std::thread::sleep(STEP);
        let at = Instant::now();
        call(live, "DeregisterInstancesFromLoadBalancer", &target);
        events.push(event(Kind::Deregistered, &target, at));
        let kill = round % 2 == 1;
        if kill {
            std::thread::sleep(drain / 2);
            let at = Instant::now();
            if live.targets.kill(&target).is_ok() {
                events.push(event(Kind::Killed, &target, at));
            }
        }
        std::thread::sleep((at + drain + DRAIN_END_SLACK).saturating_duration_since(Instant::now()));
        if kill {
            let at = Instant::now();
            if live.targets.restart(&target).is_ok() {
                events.push(event(Kind::Restarted, &target, at));
            }
        }
        let at = Instant::now();
        call(live, "RegisterInstancesWithLoadBalancer", &target);
        events.push(event(Kind::Registered, &target, at));
        round += 1;
    }
    // Let the last registration settle (its health checks) before the clients stop.
    std::thread::sleep(STEP);
    let _ = LOAD_BALANCER;
    events
}

fn event(kind: Kind, target: &str, started: Instant) -> Event {
    Event {
        kind,
        target: target.to_owned(),
        started,
        done: Instant::now(),
    }
}

fn check(samples: &[Sample], events: &[Event]) -> ScaleDownReport {
    let drain = Duration::from_secs(DRAIN_SECONDS);
    let mut report = ScaleDownReport {
        requests: samples.len(),
        scale_downs: events.iter().filter(|e| e.kind == Kind::Deregistered).count(),
        killed_while_draining: events.iter().filter(|e| e.kind == Kind::Killed).count(),
        ..ScaleDownReport::default()
    };
    let Some(first) = samples.first() else {
        return report;
    };
    let at = |instant: Instant| instant.saturating_duration_since(first.sent);
    let describe = |s: &Sample| {
        format!(
            "client {} {} at +{:?}: status {:?}, answered by {:?}, cookie for {:?}",
            s.client,
            s.method,
            at(s.sent),
            s.status,
            s.target,
            s.cookie_target
        )
    };
    let killed = |target: &str, from: Instant, to: Instant| {
        events
            .iter()
            .any(|e| e.kind == Kind::Killed && e.target == target && e.started >= from && e.started <= to)
    };

    for sample in samples.iter().filter(|s| s.failed()) {
        let in_flight = events.iter().any(|e| {
            e.kind == Kind::Killed
                && sample.sent + Duration::from_secs(1) >= e.started
                && sample.sent <= e.done + IN_FLIGHT_WINDOW
        });
        if in_flight && !sample.idempotent() {
            report.in_flight_posts_failed += 1;
        } else {
            report.failed.push(describe(sample));
        }
    }

    // Each drain: from its acknowledgement to the registration that ends the round.
    for (i, deregistered) in events.iter().enumerate() {
        if deregistered.kind != Kind::Deregistered {
            continue;
        }
        let target = deregistered.target.as_str();
        let registered = events[i..]
            .iter()
            .find(|e| e.kind == Kind::Registered && e.target == target)
            .map_or_else(Instant::now, |e| e.started);
        let timeout_at = deregistered.started + drain;
        for sample in samples
            .iter()
            .filter(|s| s.sent > deregistered.done && s.sent < registered)
        {
            let answered_here = sample.target.as_deref() == Some(target);
            let session_here = sample.cookie_target.as_deref() == Some(target);
            if answered_here && !session_here {
                report.new_sessions_on_draining.push(describe(sample));
            } else if answered_here && sample.sent > timeout_at + DRAIN_END_SLACK {
                report.answered_after_drain.push(describe(sample));
            } else if answered_here {
                report.kept_on_draining += 1;
            } else if session_here && sample.target.is_some() {
                let early = sample.answered < timeout_at;
                if early && !killed(target, deregistered.started, sample.answered) {
                    report.moved_before_timeout.push(describe(sample));
                } else {
                    report.moved_at_end += 1;
                }
            }
        }
    }

    // Elsewhere: a session moves only off a target that drained or died since it was set.
    for sample in samples {
        let (Some(pinned), Some(answered), Some(received)) =
            (&sample.cookie_target, &sample.target, sample.cookie_received)
        else {
            continue;
        };
        if pinned == answered {
            continue;
        }
        let explained = events.iter().any(|e| {
            e.target == *pinned
                && matches!(e.kind, Kind::Deregistered | Kind::Killed)
                && e.started <= sample.answered
                && e.done + drain + Duration::from_secs(15) >= received
        });
        if !explained {
            report.stickiness_violations.push(describe(sample));
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(base: Instant, sent_ms: u64, target: &str, cookie_for: Option<&str>) -> Sample {
        let sent = base + Duration::from_millis(sent_ms);
        Sample {
            client: 0,
            method: "GET",
            sent,
            answered: sent + Duration::from_millis(5),
            status: Some(200),
            target: Some(target.to_owned()),
            cookie_sent: cookie_for.map(|_| "c".to_owned()),
            cookie_target: cookie_for.map(str::to_owned),
            cookie_received: cookie_for.map(|_| base),
            error: None,
        }
    }

    fn at(base: Instant, kind: Kind, target: &str, ms: u64) -> Event {
        let started = base + Duration::from_millis(ms);
        Event {
            kind,
            target: target.to_owned(),
            started,
            done: started + Duration::from_millis(10),
        }
    }

    #[test]
    fn the_checker_counts_early_moves_new_sessions_and_late_answers_on_a_draining_target() {
        let base = Instant::now();
        let events = vec![
            at(base, Kind::Deregistered, "a", 1_000),
            at(base, Kind::Registered, "a", 20_000),
        ];
        let samples = vec![
            sample(base, 0, "a", None),
            // Kept on the draining target: fine.
            sample(base, 2_000, "a", Some("a")),
            // Moved before the Timeout (1 s + 8 s) without a death.
            sample(base, 3_000, "b", Some("a")),
            // A new session placed on it.
            sample(base, 4_000, "a", None),
            // Moved at the end: fine.
            sample(base, 9_500, "b", Some("a")),
            // Answered after the drain ended.
            sample(base, 12_000, "a", Some("a")),
            // Elsewhere, a move no event explains.
            sample(base, 13_000, "c", Some("b")),
        ];
        let report = check(&samples, &events);
        assert_eq!(report.moved_before_timeout.len(), 1, "{report:#?}");
        assert_eq!(report.new_sessions_on_draining.len(), 1, "{report:#?}");
        assert_eq!(report.answered_after_drain.len(), 1, "{report:#?}");
        assert_eq!(report.kept_on_draining, 1, "{report:#?}");
        assert_eq!(report.moved_at_end, 1, "{report:#?}");
        assert_eq!(report.stickiness_violations.len(), 1, "{report:#?}");
        // The target's death excuses an early move.
        let mut killed = events.clone();
        killed.insert(1, at(base, Kind::Killed, "a", 2_500));
        assert!(check(&samples, &killed).moved_before_timeout.is_empty());
    }
}
