//! The filter's counters, named once for every shell: the wasm shell defines them as proxy-wasm
//! metrics (`wasmcustom.<name>` in Envoy's stats), the native shell as dynamic-module counters.

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
}

/// How many counters there are; [`Counter::index`] is below it.
pub const COUNTERS: usize = 14 + Rejection::ALL.len();

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

#[cfg(test)]
mod tests {
    use super::*;

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
