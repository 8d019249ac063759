//! When to poll the control service: one poll in flight at a time, the next at once after a
//! success (the control service holds it open until a change), and an exponential backoff
//! after failures. Times are milliseconds of any monotonic-enough clock.

use std::sync::{Arc, Mutex, PoisonError, Weak};

use crate::counters::{Counter, ListenerTally};
use crate::error::StateError;
use crate::listener::CompiledListener;
use crate::plugin::ControlSource;

/// First retry delay after a failure.
pub const BACKOFF_START_MS: u64 = 100;
/// Longest retry delay.
pub const BACKOFF_MAX_MS: u64 = 5_000;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollSchedule {
    in_flight: bool,
    consecutive_failures: u32,
    next_at_ms: u64,
}

impl PollSchedule {
    /// True when a poll should be sent now.
    pub fn due(&self, now_ms: u64) -> bool {
        !self.in_flight && now_ms >= self.next_at_ms
    }

    pub fn sent(&mut self) {
        self.in_flight = true;
    }

    /// The control service answered with a usable state: poll again at once.
    pub fn succeeded(&mut self, now_ms: u64) {
        self.in_flight = false;
        self.consecutive_failures = 0;
        self.next_at_ms = now_ms;
    }

    /// No usable answer: retry after a backoff that doubles up to [`BACKOFF_MAX_MS`].
    pub fn failed(&mut self, now_ms: u64) {
        self.in_flight = false;
        let delay = BACKOFF_START_MS
            .saturating_mul(1u64 << self.consecutive_failures.min(16))
            .min(BACKOFF_MAX_MS);
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.next_at_ms = now_ms.saturating_add(delay);
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }
}

/// The last state each control source gave in this VM (wasm) or process (native), for the
/// filter configuration that replaces the one following it: Envoy builds a new filter
/// configuration when it updates a listener over xDS (its idle timeout, say), and the new one
/// starts from the state the old one holds rather than from none (Envoy would balance alone
/// until its first poll, and sessions would move). Weak: a state lives only while a
/// configuration holds it (Envoy builds the new listener before it drains the old one).
static HANDOVER: Mutex<Vec<(String, Weak<CompiledListener>)>> = Mutex::new(Vec::new());

fn handover_key(control: &ControlSource) -> String {
    format!(
        "{}\n{}\n{}\n{}",
        control.cluster, control.authority, control.load_balancer, control.listener_port
    )
}

/// Extra time a poll is given beyond the control service's own hold time.
pub const POLL_GRACE_MS: u64 = 5_000;

/// A filter following the control service: when to poll, what to ask, what an answer means.
/// Both shells drive one per Envoy process (wasm: per VM), from their host's timer and HTTP
/// call-out.
#[derive(Debug, Clone)]
pub struct Follower {
    control: ControlSource,
    schedule: PollSchedule,
    /// This follower's id in its polls (16 hex digits).
    poller: String,
}

/// A poll to send: a GET of `path` on the control cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollRequest {
    pub path: String,
    pub authority: String,
    /// `Bearer <token>`, when the control service requires one.
    pub authorization: Option<String>,
    pub timeout_ms: u64,
}

/// What a poll's answer did.
#[derive(Debug)]
pub enum PollAnswer {
    /// A new state: it replaces the old whole (targets learnt unreachable stay so).
    Changed(Arc<CompiledListener>),
    /// The same version again (the poll's hold time ran out).
    Unchanged,
    /// No usable answer: the filter keeps its last state (fail static) and backs off.
    Failed(Option<StateError>),
}

impl PollAnswer {
    /// The counter this answer counts.
    pub fn counter(&self) -> Option<Counter> {
        match self {
            PollAnswer::Changed(_) => Some(Counter::StateUpdates),
            PollAnswer::Unchanged => None,
            PollAnswer::Failed(_) => Some(Counter::ControlErrors),
        }
    }
}

impl Follower {
    /// `id` names this follower in its polls.
    pub fn new(control: ControlSource, id: [u8; 8]) -> Self {
        Self {
            control,
            schedule: PollSchedule::default(),
            poller: id.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }

    pub fn control(&self) -> &ControlSource {
        &self.control
    }

    /// The state another configuration following the same control source holds, if any: a
    /// new configuration starts from it.
    pub fn handed_over(&self) -> Option<Arc<CompiledListener>> {
        let key = handover_key(&self.control);
        let states = HANDOVER.lock().unwrap_or_else(PoisonError::into_inner);
        states
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, state)| state.upgrade())
    }

    /// Offers `listener` to the configurations that will replace this one.
    fn hand_over(&self, listener: &Arc<CompiledListener>) {
        let key = handover_key(&self.control);
        let mut states = HANDOVER.lock().unwrap_or_else(PoisonError::into_inner);
        states.retain(|(k, state)| *k != key && state.strong_count() > 0);
        states.push((key, Arc::downgrade(listener)));
    }

    /// The poll to send now, if one is due; `version` is the state held. Tell the follower
    /// whether it went out ([`Follower::sent`], [`Follower::not_sent`]).
    /// `tally` is what the listener counted: the poll reports it.
    pub fn due_poll(&self, version: Option<u64>, now_ms: u64, tally: &ListenerTally) -> Option<PollRequest> {
        self.schedule.due(now_ms).then(|| PollRequest {
            path: format!("{}&counts={}", self.control.path(version, &self.poller), tally.report()),
            authority: self.control.authority.clone(),
            authorization: self.control.token.as_ref().map(|t| format!("Bearer {t}")),
            timeout_ms: self.control.poll_timeout_ms.saturating_add(POLL_GRACE_MS),
        })
    }

    pub fn sent(&mut self) {
        self.schedule.sent();
    }

    /// The host refused to send the poll: counts as a failed poll.
    pub fn not_sent(&mut self, now_ms: u64) {
        self.schedule.failed(now_ms);
    }

    /// Takes a poll's answer (`status` 200 and `body`, or a failure), given the state held.
    pub fn take_answer(
        &mut self,
        now_ms: u64,
        status_ok: bool,
        body: &[u8],
        current: Option<&CompiledListener>,
    ) -> PollAnswer {
        if !status_ok {
            self.schedule.failed(now_ms);
            return PollAnswer::Failed(None);
        }
        match CompiledListener::from_json(body) {
            Ok(listener) => {
                self.schedule.succeeded(now_ms);
                if current.map(CompiledListener::version) == Some(listener.version()) {
                    return PollAnswer::Unchanged;
                }
                if let Some(previous) = current {
                    listener.carry_unreachable_from(previous);
                }
                let listener = Arc::new(listener);
                self.hand_over(&listener);
                PollAnswer::Changed(listener)
            }
            Err(err) => {
                self.schedule.failed(now_ms);
                PollAnswer::Failed(Some(err))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_configuration_starts_from_the_state_the_one_it_replaces_holds() {
        let control = ControlSource {
            cluster: "control".into(),
            authority: "control".into(),
            load_balancer: "handover-test".into(),
            listener_port: 80,
            poll_timeout_ms: 25_000,
            token: None,
        };
        let state = crate::testing::filter_state(
            None,
            crate::testing::targets(&["127.0.0.1:9001"], &[]),
            crate::testing::ring_state(&[(1, 1)], 1),
        );
        let json = serde_json::to_vec(&state).unwrap();
        let mut old = Follower::new(control.clone(), [1; 8]);
        assert!(old.handed_over().is_none());
        let PollAnswer::Changed(held) = old.take_answer(0, true, &json, None) else {
            panic!("no state taken");
        };
        let new = Follower::new(control.clone(), [2; 8]);
        assert_eq!(new.handed_over().map(|l| l.version()), Some(state.version));
        // Another listener's configuration gets nothing.
        let other = Follower::new(
            ControlSource {
                listener_port: 81,
                ..control
            },
            [3; 8],
        );
        assert!(other.handed_over().is_none());
        // Once no configuration holds it, it is gone.
        drop(held);
        assert!(new.handed_over().is_none());
    }

    #[test]
    fn one_poll_at_a_time_then_backoff_doubles_to_a_ceiling() {
        let mut schedule = PollSchedule::default();
        assert!(schedule.due(0));
        schedule.sent();
        assert!(!schedule.due(1_000_000), "never two polls in flight");
        schedule.succeeded(10);
        assert!(schedule.due(10), "after a success, poll again at once");
        let mut now = 10;
        let mut delays = Vec::new();
        for _ in 0..8 {
            schedule.sent();
            schedule.failed(now);
            let mut t = now;
            while !schedule.due(t) {
                t += 1;
            }
            delays.push(t - now);
            now = t;
        }
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        schedule.sent();
        schedule.succeeded(now);
        assert_eq!(schedule.consecutive_failures(), 0);
    }
}
