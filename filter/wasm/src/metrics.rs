//! The filter's counters as proxy-wasm metrics (`wasmcustom.sticky.*` in Envoy's stats).

use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;
use sticky_core::{COUNTERS, Counter};

/// Every counter's metric id; a counter the host refused to define is silently skipped.
pub struct FilterMetrics([Option<u32>; COUNTERS]);

impl FilterMetrics {
    pub fn define() -> Self {
        Self(Counter::ALL.map(|counter| hostcalls::define_metric(MetricType::Counter, counter.name()).ok()))
    }

    pub fn increment(&self, counter: Counter) {
        if let Some(Some(id)) = self.0.get(counter.index()) {
            let _ = hostcalls::increment_metric(*id, 1);
        }
    }
}
