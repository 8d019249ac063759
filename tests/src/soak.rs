//! The soak test with faults: sticky clients keep sending requests (GETs, and a POST in five)
//! through Envoy while, on a schedule, a target's process is killed (-9) and restarted,
//! another target's host vanishes from the network (its link goes down: packets are dropped
//! without an answer) and comes back, the control service is killed (-9) and restarted, the
//! policy flips between LB cookie, app cookie and none, targets are deregistered and registered
//! again, and keys rotate (every 5 s). With replicas of the control service on PostgreSQL
//! ([`run_replicated`]), the control fault kills -9 the leading replica and, the next time, one
//! that does not lead; the API is called through Envoy's front of the replicas, so calls go on
//! while one is dead. The targets run on test hosts (network namespaces,
//! [`crate::hosts`]). Every request is recorded with its send and answer times; the events with
//! theirs. The checks afterwards count:
//!
//! - errors of requests in flight to a target when it died or vanished (sent from a second
//!   before the fault to a few seconds after it), split by idempotent and not (only the
//!   latter may fail: Envoy retries the former elsewhere), and other errors;
//! - stickiness violations: a request carrying a cookie issued under the policy in force was
//!   answered by another target than the cookie's, although, since the client last saw it, that
//!   target was neither killed, nor deregistered, nor out of service;
//! - requests sent after a deregistration was acknowledged that reached the deregistered
//!   target (before it was registered again);
//! - acknowledged writes lost: at the end, every replica (or the one service) must hold the last
//!   acknowledged policy and registrations.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::hosts::{Placement, TargetProcesses};
use crate::live::{ACCESS_KEY, Live};
use crate::traffic::{Plan, Sample, Traffic};
use crate::{LOAD_BALANCER, TARGET_IDS};

/// Clients sending at once, and how each sends.
const CLIENTS: usize = 6;
const PLAN: Plan = Plan {
    pause: Duration::from_millis(15),
    relogin_every: 40,
    post_every: Some(5),
    path: "/",
    new_browser_every: None,
};
/// Time between scheduled faults.
const STEP: Duration = Duration::from_secs(3);
/// How long after a target dies or vanishes a failed request is counted as one that was in
/// flight to it: the connect timeout, plus the keepalive probes that find a connection whose
/// request was sent before the target vanished (2 × the connect timeout), with room to spare.
const IN_FLIGHT_WINDOW: Duration = Duration::from_secs(4);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    TargetKilled(String),
    TargetRestarted(String),
    TargetVanished(String),
    TargetReappeared(String),
    ControlKilled,
    ControlRestarted,
    Policy(Option<&'static str>),
    Deregistered(String),
    Registered(String),
}

#[derive(Debug, Clone)]
pub struct Event {
    pub kind: EventKind,
    /// When the action started (the API call was sent, the process signalled).
    pub started: Instant,
    /// When it was done (the API answered, the process was gone or ready).
    pub done: Instant,
}

/// What the run counted.
#[derive(Debug, Clone, Default)]
pub struct SoakReport {
    pub seconds: f64,
    pub requests: usize,
    pub events: usize,
    /// Failed requests in flight to a target when it died or vanished: idempotent ones (Envoy
    /// retries them elsewhere, so this must be 0) and the others (POST: not retried once sent).
    pub in_flight_errors_idempotent: Vec<String>,
    pub in_flight_errors_other: usize,
    pub other_errors: Vec<String>,
    pub stickiness_violations: Vec<String>,
    pub deregistered_hits: Vec<String>,
    /// Acknowledged writes a replica (or the one service) does not hold at the end.
    pub lost_writes: Vec<String>,
    /// What the filter logged about targets it found unreachable (for diagnosis).
    pub unreachable_log: Vec<String>,
    /// Moves of a pinned client that the faults explain (for information).
    pub excused_moves: usize,
    pub pinned_requests: usize,
}

impl SoakReport {
    pub fn summary(&self) -> String {
        format!(
            "soak {:.0} s: {} requests ({} carrying a cookie of the policy in force), {} scheduled faults; \
             failed requests in flight to a target that died or vanished: idempotent {}, not idempotent {}; \
             other errors {}; stickiness violations {}; \
             requests to a deregistered target after the acknowledgement {}; acknowledged writes lost {}; \
             (moves explained by faults {})",
            self.seconds,
            self.requests,
            self.pinned_requests,
            self.events,
            self.in_flight_errors_idempotent.len(),
            self.in_flight_errors_other,
            self.other_errors.len(),
            self.stickiness_violations.len(),
            self.deregistered_hits.len(),
            self.lost_writes.len(),
            self.excused_moves,
        )
    }
}

/// Runs the soak for `duration` (plus start-up) and returns its counts.
pub fn run(duration: Duration) -> SoakReport {
    run_replicated(duration, 1)
}

/// [`run`] with `replicas` replicas of the control service sharing PostgreSQL (one: the
/// embedded store).
pub fn run_replicated(duration: Duration, replicas: usize) -> SoakReport {
    let targets = TargetProcesses::start(&TARGET_IDS, Placement::TestHosts).unwrap_or_else(|e| panic!("{e:#}"));
    let mut live = Live::start_replicated(targets, 1, replicas, &["--key-rotation", "5"]);
    live.create_lb_cookie_policy("LBCookie", 300);
    live.create_app_cookie_policy("AppCookie", "session");
    let api_authority = live.api_authority();

    let traffic = Traffic::start(CLIENTS, &live.envoys[0].url(), PLAN);
    let stop = Arc::new(AtomicBool::new(false));
    let health = Arc::new(Mutex::new(Vec::<(Instant, String, bool)>::new()));
    // Each target's InService state, as the control service reports it (when it is up).
    let monitor = {
        let (stop, health) = (Arc::clone(&stop), Arc::clone(&health));
        std::thread::spawn(move || {
            let api = sticky_testing::control_client::QueryClient::new(api_authority, ACCESS_KEY.0, ACCESS_KEY.1);
            while !stop.load(Ordering::Relaxed) {
                if let Ok(reply) = api.call("DescribeInstanceHealth", &[("LoadBalancerName", LOAD_BALANCER)]) {
                    let now = Instant::now();
                    let ids = reply.fields("InstanceId");
                    let states = reply.fields("State");
                    let mut health = health.lock().unwrap_or_else(PoisonError::into_inner);
                    for (id, state) in ids.iter().zip(states.iter()) {
                        health.push((now, id.clone(), state == "InService"));
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };

    let started = Instant::now();
    let events = schedule(&mut live, duration);
    let samples = traffic.stop();
    stop.store(true, Ordering::Relaxed);
    let _ = monitor.join();
    let health = health.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let mut report = check(&samples, &events, &health);
    report.lost_writes = lost_writes(&mut live, &events);
    report.seconds = started.elapsed().as_secs_f64();
    let first = samples.first().map_or(started, |s| s.sent);
    report.unreachable_log = std::fs::read_to_string(&live.envoys[0].log)
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains("unreachable for"))
        .map(|line| format!("(soak +{:?} at the end) {line}", first.elapsed()))
        .collect();
    report
}

/// What every replica holds at the end that differs from the last acknowledged policy and
/// registrations of the run.
fn lost_writes(live: &mut Live<TargetProcesses>, events: &[Event]) -> Vec<String> {
    let policy = events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::Policy(p) => Some(p),
            _ => None,
        })
        .next_back()
        .flatten();
    let mut registered: Vec<String> = TARGET_IDS.iter().map(|id| (*id).to_owned()).collect();
    for event in events {
        match &event.kind {
            EventKind::Deregistered(id) => registered.retain(|r| r != id),
            EventKind::Registered(id) if !registered.contains(id) => registered.push(id.clone()),
            _ => {}
        }
    }
    registered.sort();
    let mut lost = Vec::new();
    for n in 0..live.replica_count() {
        let api = live.replica_mut(n).client(ACCESS_KEY);
        let reply = match api.call(
            "DescribeLoadBalancers",
            &[("LoadBalancerNames.member.1", LOAD_BALANCER)],
        ) {
            Ok(reply) if reply.error_code().is_none() => reply,
            other => {
                lost.push(format!("replica {n} cannot be read: {other:?}"));
                continue;
            }
        };
        let mut held = reply.fields("InstanceId");
        held.sort();
        if held != registered {
            lost.push(format!("replica {n} has {held:?} registered, not {registered:?}"));
        }
        let policies = reply.fields("PolicyNames").concat();
        let holds = match policy {
            Some(name) => policies.contains(&format!(">{name}<")),
            None => !policies.contains("<member>"),
        };
        if !holds {
            lost.push(format!(
                "replica {n}: listener 80's policies are {policies:?}, not {policy:?}"
            ));
        }
    }
    lost
}

fn record(events: &mut Vec<Event>, kind: EventKind, started: Instant) {
    events.push(Event {
        kind,
        started,
        done: Instant::now(),
    });
}

/// One step of the schedule on a target: after a pause, `fault`, recorded when it succeeded.
fn target_fault(events: &mut Vec<Event>, kind: EventKind, fault: impl FnOnce() -> anyhow::Result<()>) {
    std::thread::sleep(STEP);
    let started = Instant::now();
    if fault().is_ok() {
        record(events, kind, started);
    }
}

/// The fault schedule, repeated until `duration` has passed; returns what happened when.
fn schedule(live: &mut Live<TargetProcesses>, duration: Duration) -> Vec<Event> {
    let start = Instant::now();
    let mut events = Vec::new();
    let policies: [Option<&'static str>; 3] = [Some("LBCookie"), Some("AppCookie"), None];
    let t = Instant::now();
    live.set_policy(Some("LBCookie"));
    record(&mut events, EventKind::Policy(Some("LBCookie")), t);
    let mut round = 0usize;
    while start.elapsed() < duration {
        let victim = TARGET_IDS[round % TARGET_IDS.len()].to_owned();
        let other = TARGET_IDS[(round + 1) % TARGET_IDS.len()].to_owned();
        let vanishing = TARGET_IDS[(round + 2) % TARGET_IDS.len()].to_owned();

        // A target's process dies and comes back.
        let targets = &mut live.targets;
        target_fault(&mut events, EventKind::TargetKilled(victim.clone()), || {
            targets.kill(&victim)
        });
        target_fault(&mut events, EventKind::TargetRestarted(victim.clone()), || {
            targets.restart(&victim)
        });

        // Another target's host vanishes from the network and comes back.
        target_fault(&mut events, EventKind::TargetVanished(vanishing.clone()), || {
            targets.vanish(&vanishing)
        });
        target_fault(&mut events, EventKind::TargetReappeared(vanishing.clone()), || {
            targets.reappear(&vanishing)
        });

        // Another target is deregistered, then registered again.
        std::thread::sleep(STEP);
        let t = Instant::now();
        live.call(
            "DeregisterInstancesFromLoadBalancer",
            &[("Instances.member.1.InstanceId", other.as_str())],
        );
        record(&mut events, EventKind::Deregistered(other.clone()), t);
        std::thread::sleep(STEP);
        let t = Instant::now();
        live.call(
            "RegisterInstancesWithLoadBalancer",
            &[("Instances.member.1.InstanceId", other.as_str())],
        );
        record(&mut events, EventKind::Registered(other.clone()), t);

        // The policy flips.
        std::thread::sleep(STEP);
        let policy = policies[(round + 1) % policies.len()];
        let t = Instant::now();
        live.set_policy(policy);
        record(&mut events, EventKind::Policy(policy), t);

        // The control service (a replica: the leader, then one that does not lead) is killed
        // -9 and comes back.
        std::thread::sleep(STEP);
        let replicas = live.replica_count();
        let leader = live.leader().unwrap_or(0);
        let victim = if round.is_multiple_of(2) {
            leader
        } else {
            (leader + 1) % replicas
        };
        let t = Instant::now();
        live.replica_mut(victim).kill();
        record(&mut events, EventKind::ControlKilled, t);
        std::thread::sleep(STEP);
        let t = Instant::now();
        if live.replica_mut(victim).launch().is_ok() {
            record(&mut events, EventKind::ControlRestarted, t);
        }
        round += 1;
    }
    // Let the last faults settle before the clients stop.
    std::thread::sleep(STEP);
    events
}

/// Counts errors, violations and deregistered hits in the recorded run.
fn check(samples: &[Sample], events: &[Event], health: &[(Instant, String, bool)]) -> SoakReport {
    let mut report = SoakReport {
        requests: samples.len(),
        events: events.len(),
        ..SoakReport::default()
    };
    let Some(first) = samples.first() else {
        return report;
    };
    let since_start = |at: Instant| at.duration_since(first.sent);
    // The events of the 10 s before a sample was answered, for a report line.
    let events_before = |sample: &Sample| -> Vec<String> {
        events
            .iter()
            .filter(|e| e.started <= sample.answered && e.started + Duration::from_secs(10) >= sample.sent)
            .map(|e| format!("{:?} at +{:?}", e.kind, since_start(e.started)))
            .collect()
    };
    let grace = Duration::from_millis(300);

    // Errors: of requests in flight to a target that died or vanished, or not.
    for sample in samples.iter().filter(|s| s.failed()) {
        let in_flight = events.iter().any(|e| {
            matches!(e.kind, EventKind::TargetKilled(_) | EventKind::TargetVanished(_))
                && sample.sent + Duration::from_secs(1) >= e.started
                && sample.sent <= e.done + IN_FLIGHT_WINDOW
        });
        if in_flight && sample.idempotent() {
            report.in_flight_errors_idempotent.push(format!(
                "client {}: {} at +{:?}: status {:?} ({})",
                sample.client,
                sample.method,
                since_start(sample.sent),
                sample.status,
                sample.error.as_deref().unwrap_or_default().trim(),
            ));
        } else if in_flight {
            report.in_flight_errors_other += 1;
        } else {
            let recent = events_before(sample);
            report.other_errors.push(format!(
                "client {} at +{:?}: status {:?} ({}); events in the 10 s before: {recent:?}",
                sample.client,
                since_start(sample.sent),
                sample.status,
                sample.error.as_deref().unwrap_or_default().trim(),
            ));
        }
    }

    // Deregistered targets reached by a request sent after the acknowledgement.
    for (i, event) in events.iter().enumerate() {
        let EventKind::Deregistered(target) = &event.kind else {
            continue;
        };
        let back = events[i..]
            .iter()
            .find(|e| matches!(&e.kind, EventKind::Registered(t) if t == target))
            .map(|e| e.started);
        for sample in samples {
            let after_ack = sample.sent > event.done && back.is_none_or(|b| sample.sent < b);
            if after_ack && sample.target.as_deref() == Some(target.as_str()) {
                report.deregistered_hits.push(format!(
                    "client {} sent {:?} after {target}'s deregistration was acknowledged, and reached it",
                    sample.client,
                    sample.sent.duration_since(event.done)
                ));
            }
        }
    }

    // Stickiness: a request carrying a cookie issued under the policy still in force must be
    // answered by the target the cookie names, unless a fault explains the move.
    let policy_at = |at: Instant| {
        events
            .iter()
            .filter(|e| e.done <= at)
            .filter_map(|e| match e.kind {
                EventKind::Policy(p) => Some(p),
                _ => None,
            })
            .next_back()
            .flatten()
    };
    let mut previous_sent: HashMap<usize, Instant> = HashMap::new();
    for current in samples {
        let previous = previous_sent
            .insert(current.client, current.sent)
            .unwrap_or(current.sent);
        let (Some(_), Some(pinned_to), Some(received), Some(answered_by)) = (
            &current.cookie_sent,
            &current.cookie_target,
            current.cookie_received,
            &current.target,
        ) else {
            continue;
        };
        let flipped_since = events.iter().any(|e| {
            matches!(e.kind, EventKind::Policy(_)) && e.started <= current.answered && e.done + grace >= received
        });
        if flipped_since || policy_at(current.sent).is_none() {
            continue;
        }
        report.pinned_requests += 1;
        if pinned_to == answered_by {
            continue;
        }
        let window_start = previous.min(received) - grace;
        let window_end = current.answered;
        let target_event = events.iter().any(|e| {
            e.started <= window_end
                && e.done + grace >= window_start
                && matches!(&e.kind, EventKind::TargetKilled(t) | EventKind::TargetVanished(t) | EventKind::Deregistered(t) if t == pinned_to)
        });
        let out_of_service = health.iter().any(|(at, id, in_service)| {
            id == pinned_to && !in_service && *at + Duration::from_secs(1) >= window_start && *at <= window_end
        });
        if target_event || out_of_service {
            report.excused_moves += 1;
        } else {
            let recent = events_before(current);
            report.stickiness_violations.push(format!(
                "client {}: cookie for {pinned_to} (received at +{:?}), answered by {answered_by} at +{:?}; \
                 events in the 10 s before: {recent:?}",
                current.client,
                since_start(received),
                since_start(current.sent)
            ));
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    fn sample(base: Instant, client: usize, sent_ms: u64, target: &str, cookie_for: Option<(&str, u64)>) -> Sample {
        Sample {
            client,
            method: "GET",
            sent: at(base, sent_ms),
            answered: at(base, sent_ms + 2),
            status: Some(200),
            target: Some(target.to_owned()),
            cookie_sent: cookie_for.map(|_| "c".to_owned()),
            cookie_target: cookie_for.map(|(t, _)| t.to_owned()),
            cookie_received: cookie_for.map(|(_, ms)| at(base, ms)),
            error: None,
        }
    }

    fn event(base: Instant, kind: EventKind, started_ms: u64, done_ms: u64) -> Event {
        Event {
            kind,
            started: at(base, started_ms),
            done: at(base, done_ms),
        }
    }

    #[test]
    fn the_checker_counts_what_it_must_and_excuses_what_faults_explain() {
        let base = Instant::now();
        let events = vec![
            event(base, EventKind::Policy(Some("LBCookie")), 0, 1),
            event(base, EventKind::TargetKilled("b".into()), 5_000, 5_001),
            event(base, EventKind::Deregistered("c".into()), 8_000, 8_100),
            event(base, EventKind::Registered("c".into()), 9_000, 9_100),
        ];
        let samples = vec![
            sample(base, 0, 1_000, "a", None),
            sample(base, 0, 1_100, "a", Some(("a", 1_002))),
            // Moved without a fault: a violation.
            sample(base, 0, 1_200, "b", Some(("a", 1_002))),
            // Moved right after its target was killed: explained.
            sample(base, 1, 4_990, "b", Some(("b", 4_000))),
            sample(base, 1, 5_010, "a", Some(("b", 4_000))),
            // Failures in flight at the kill: a GET (which must not fail) and a POST; a
            // failure later: another error.
            Sample {
                status: Some(503),
                target: None,
                ..sample(base, 2, 5_000, "-", None)
            },
            Sample {
                method: "POST",
                status: Some(503),
                target: None,
                ..sample(base, 2, 5_500, "-", None)
            },
            Sample {
                status: None,
                target: None,
                ..sample(base, 2, 9_500, "-", None)
            },
            // Sent after c's deregistration was acknowledged, before it came back.
            sample(base, 3, 8_200, "c", None),
            // Sent during the call (before the acknowledgement), and after re-registration: fine.
            sample(base, 3, 8_050, "c", None),
            sample(base, 3, 9_200, "c", None),
        ];
        let report = check(&samples, &events, &[]);
        assert_eq!(report.stickiness_violations.len(), 1, "{report:#?}");
        assert_eq!(report.excused_moves, 1, "{report:#?}");
        assert_eq!(report.in_flight_errors_idempotent.len(), 1, "{report:#?}");
        assert_eq!(report.in_flight_errors_other, 1, "{report:#?}");
        assert_eq!(report.other_errors.len(), 1, "{report:#?}");
        assert_eq!(report.deregistered_hits.len(), 1, "{report:#?}");
    }

    #[test]
    fn cookies_from_before_a_policy_change_or_without_a_policy_pin_nothing() {
        let base = Instant::now();
        let events = vec![
            event(base, EventKind::Policy(Some("LBCookie")), 0, 1),
            event(base, EventKind::Policy(Some("AppCookie")), 2_000, 2_010),
            event(base, EventKind::Policy(None), 4_000, 4_010),
        ];
        let samples = vec![
            // Issued under LBCookie, sent under AppCookie: not a pin.
            sample(base, 0, 3_000, "b", Some(("a", 1_000))),
            // Issued under AppCookie, sent with no policy: not a pin.
            sample(base, 0, 5_000, "b", Some(("a", 3_500))),
        ];
        let report = check(&samples, &events, &[]);
        assert_eq!(report.pinned_requests, 0, "{report:#?}");
        assert!(report.stickiness_violations.is_empty(), "{report:#?}");
    }
}
