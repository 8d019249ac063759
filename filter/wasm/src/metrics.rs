//! The filter's Envoy counters (`wasmcustom.sticky.*` in Envoy's stats).

use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;
use sticky_core::{CookieStatus, Rejection, RequestDecision, ResponseOutcome};

/// One counter; a counter the host refused to define is silently skipped.
#[derive(Clone, Copy)]
pub struct Counter(Option<u32>);

impl Counter {
    fn define(name: &str) -> Self {
        Counter(hostcalls::define_metric(MetricType::Counter, name).ok())
    }

    pub fn increment(self) {
        if let Some(id) = self.0 {
            let _ = hostcalls::increment_metric(id, 1);
        }
    }
}

pub struct FilterMetrics {
    pub no_state: Counter,
    /// New states taken from the control service.
    pub state_updates: Counter,
    /// Failed polls of the control service (the filter keeps its last state).
    pub control_errors: Counter,
    /// Targets Envoy could not reach (another answered): no request names them for a while.
    pub unreachable: Counter,
    pinned: Counter,
    rejected: [Counter; Rejection::ALL.len()],
    assigned: Counter,
    refreshed: Counter,
    repinned: Counter,
    deleted: Counter,
    unknown_upstream: Counter,
    unhealthy_upstream: Counter,
    no_nonce: Counter,
}

impl FilterMetrics {
    pub fn define() -> Self {
        Self {
            no_state: Counter::define("sticky.no_state"),
            state_updates: Counter::define("sticky.state_updates"),
            control_errors: Counter::define("sticky.control_errors"),
            unreachable: Counter::define("sticky.unreachable"),
            pinned: Counter::define("sticky.pinned"),
            rejected: Rejection::ALL.map(|r| Counter::define(&format!("sticky.rejected.{}", r.as_str()))),
            assigned: Counter::define("sticky.assigned"),
            refreshed: Counter::define("sticky.refreshed"),
            repinned: Counter::define("sticky.repinned"),
            deleted: Counter::define("sticky.deleted"),
            unknown_upstream: Counter::define("sticky.unknown_upstream"),
            unhealthy_upstream: Counter::define("sticky.unhealthy_upstream"),
            no_nonce: Counter::define("sticky.no_nonce"),
        }
    }

    pub fn count_request(&self, decision: &RequestDecision) {
        match decision.cookie {
            CookieStatus::Valid { .. } => self.pinned.increment(),
            CookieStatus::Rejected { reason, .. } => {
                if let Some(counter) = Rejection::ALL
                    .iter()
                    .position(|r| *r == reason)
                    .and_then(|i| self.rejected.get(i))
                {
                    counter.increment();
                }
            }
            CookieStatus::Absent => {}
        }
    }

    pub fn count_response(&self, outcome: ResponseOutcome) {
        let counter = match outcome {
            ResponseOutcome::Unchanged => return,
            ResponseOutcome::Assigned => self.assigned,
            ResponseOutcome::Refreshed => self.refreshed,
            ResponseOutcome::Repinned => self.repinned,
            ResponseOutcome::Deleted => self.deleted,
            ResponseOutcome::UnknownUpstream => self.unknown_upstream,
            ResponseOutcome::UnhealthyUpstream => self.unhealthy_upstream,
            ResponseOutcome::NoNonce => self.no_nonce,
        };
        counter.increment();
    }
}
