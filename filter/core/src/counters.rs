//! The filter's counters, named once for every shell: the wasm shell defines them as proxy-wasm
//! metrics (`wasmcustom.<name>` in Envoy's stats), the native shell as dynamic-module counters.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::Rejection;
use crate::listener::{CookieStatus, RequestDecision, ResponseOutcome};

/// One of the filter's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// A request came before the filter had any state: Envoy balanced it.
    NoState,
    /// New states taken from the control service.
    StateUpdates,
    /// Failed polls of the control service (the filter keeps its last state).
    ControlErrors,
    /// Targets Envoy could not reach (another answered): no request names them for a while.
    Unreachable,
    /// A valid cookie pinned the request.
    Pinned,
    /// A cookie was not honoured, by reason.
    Rejected(Rejection),
    Assigned,
    Refreshed,
    Repinned,
    Deleted,
    UnknownUpstream,
    UnhealthyUpstream,
    /// The answering upstream is draining: no session was started or moved there.
    DrainingUpstream,
    NoNonce,
    /// A hook of the native shell panicked; the panic was caught (the stream went on untouched).
    Panics,
    /// WebSockets (upgraded streams) closed because their target left the filter's state and
    /// Envoy's endpoints: deregistered, at once or at the end of its connection draining.
    UpgradesClosed,
}

/// How many counters there are; [`Counter::index`] is below it.
pub const COUNTERS: usize = 15 + Rejection::ALL.len();

/// Every counter's name, in [`Counter::index`] order.
const NAMES: [&str; COUNTERS] = [
    "sticky.no_state",
    "sticky.state_updates",
    "sticky.control_errors",
    "sticky.unreachable",
    "sticky.pinned",
    "sticky.assigned",
    "sticky.refreshed",
    "sticky.repinned",
    "sticky.deleted",
    "sticky.unknown_upstream",
    "sticky.unhealthy_upstream",
    "sticky.no_nonce",
    "sticky.panics",
    "sticky.draining_upstream",
    // `Rejection::ALL` order.
    "sticky.rejected.malformed",
    "sticky.rejected.unsupported_version",
    "sticky.rejected.unknown_key",
    "sticky.rejected.forged",
    "sticky.rejected.expired",
    "sticky.rejected.unknown_target",
    "sticky.rejected.unhealthy_target",
    "sticky.rejected.unreachable_target",
    "sticky.upgrades_closed",
];

impl Counter {
    /// Every counter, in [`Counter::index`] order.
    pub const ALL: [Counter; COUNTERS] = [
        Counter::NoState,
        Counter::StateUpdates,
        Counter::ControlErrors,
        Counter::Unreachable,
        Counter::Pinned,
        Counter::Assigned,
        Counter::Refreshed,
        Counter::Repinned,
        Counter::Deleted,
        Counter::UnknownUpstream,
        Counter::UnhealthyUpstream,
        Counter::NoNonce,
        Counter::Panics,
        Counter::DrainingUpstream,
        Counter::Rejected(Rejection::Malformed),
        Counter::Rejected(Rejection::UnsupportedVersion),
        Counter::Rejected(Rejection::UnknownKey),
        Counter::Rejected(Rejection::Forged),
        Counter::Rejected(Rejection::Expired),
        Counter::Rejected(Rejection::UnknownTarget),
        Counter::Rejected(Rejection::UnhealthyTarget),
        Counter::Rejected(Rejection::UnreachableTarget),
        Counter::UpgradesClosed,
    ];

    /// A dense index, for a shell's table of metric ids.
    pub fn index(self) -> usize {
        match self {
            Counter::NoState => 0,
            Counter::StateUpdates => 1,
            Counter::ControlErrors => 2,
            Counter::Unreachable => 3,
            Counter::Pinned => 4,
            Counter::Assigned => 5,
            Counter::Refreshed => 6,
            Counter::Repinned => 7,
            Counter::Deleted => 8,
            Counter::UnknownUpstream => 9,
            Counter::UnhealthyUpstream => 10,
            Counter::NoNonce => 11,
            Counter::Panics => 12,
            Counter::DrainingUpstream => 13,
            Counter::Rejected(reason) => 14 + reason as usize,
            Counter::UpgradesClosed => 14 + Rejection::ALL.len(),
        }
    }

    /// The counter's name, e.g. `sticky.pinned`, `sticky.rejected.expired`.
    pub fn name(self) -> &'static str {
        NAMES.get(self.index()).copied().unwrap_or("sticky.unnamed")
    }

    /// What a request's decision counts, if anything.
    pub fn for_request(decision: &RequestDecision) -> Option<Counter> {
        match decision.cookie {
            CookieStatus::Valid { .. } => Some(Counter::Pinned),
            CookieStatus::Rejected { reason, .. } => Some(Counter::Rejected(reason)),
            CookieStatus::Absent => None,
        }
    }

    /// What a response's outcome counts, if anything.
    pub fn for_response(outcome: ResponseOutcome) -> Option<Counter> {
        Some(match outcome {
            ResponseOutcome::Unchanged => return None,
            ResponseOutcome::Assigned => Counter::Assigned,
            ResponseOutcome::Refreshed => Counter::Refreshed,
            ResponseOutcome::Repinned => Counter::Repinned,
            ResponseOutcome::Deleted => Counter::Deleted,
            ResponseOutcome::UnknownUpstream => Counter::UnknownUpstream,
            ResponseOutcome::UnhealthyUpstream => Counter::UnhealthyUpstream,
            ResponseOutcome::DrainingUpstream => Counter::DrainingUpstream,
            ResponseOutcome::NoNonce => Counter::NoNonce,
        })
    }
}

/// What one listener's filter counted since it started (per Envoy process; per VM in wasm),
/// beside Envoy's own stats (which add every listener up): each poll of the control service
/// reports it, so the control service can show counters per listener.
#[derive(Debug)]
pub struct ListenerTally([AtomicU64; COUNTERS]);

impl Default for ListenerTally {
    fn default() -> Self {
        Self(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl ListenerTally {
    pub fn add(&self, counter: Counter, value: u64) {
        if let Some(count) = self.0.get(counter.index()) {
            count.fetch_add(value, Ordering::Relaxed);
        }
    }

    /// The counts in [`Counter::index`] order, comma-separated (a poll's `counts` parameter).
    pub fn report(&self) -> String {
        let mut text = String::with_capacity(COUNTERS * 2);
        for (i, count) in self.0.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            text.push_str(&count.load(Ordering::Relaxed).to_string());
        }
        text
    }

    /// A report read back; `None` unless it holds exactly one number per counter.
    pub fn parse_report(text: &str) -> Option<[u64; COUNTERS]> {
        let mut counts = [0u64; COUNTERS];
        let mut numbers = text.split(',');
        for count in &mut counts {
            *count = numbers.next()?.parse().ok()?;
        }
        numbers.next().is_none().then_some(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_tally_reports_every_counter_in_index_order_and_reads_back() {
        let tally = ListenerTally::default();
        tally.add(Counter::Pinned, 3);
        tally.add(Counter::Rejected(Rejection::Expired), 1);
        let report = tally.report();
        let counts = ListenerTally::parse_report(&report).expect("a report reads back");
        assert_eq!(counts[Counter::Pinned.index()], 3);
        assert_eq!(counts[Counter::Rejected(Rejection::Expired).index()], 1);
        assert_eq!(counts.iter().sum::<u64>(), 4);
        for bad in ["", "1,2", &format!("{report},1"), &report.replace('3', "x"), "-1"] {
            assert_eq!(ListenerTally::parse_report(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn every_counter_has_its_own_index_and_name() {
        for (i, counter) in Counter::ALL.iter().enumerate() {
            assert_eq!(counter.index(), i, "{counter:?}");
        }
        for reason in Rejection::ALL {
            assert_eq!(
                Counter::Rejected(reason).name(),
                format!("sticky.rejected.{}", reason.as_str())
            );
        }
        let mut names: Vec<&str> = Counter::ALL.iter().map(|c| c.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), COUNTERS);
        assert!(names.contains(&"sticky.rejected.expired"), "{names:?}");
    }
}
