//! Prometheus counters, rendered in the text exposition format at `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Counters rendered as 0 until first counted, so a dashboard's sums never come back empty.
pub const DECLARED: [&str; 8] = [
    "sticky_control_catch_ups_total",
    "sticky_control_api_requests_total",
    "sticky_control_sync_waits_total",
    "sticky_control_sync_wait_microseconds_total",
    "sticky_control_sync_timeouts_total",
    "sticky_control_health_probes_total",
    "sticky_control_health_flips_total",
    "sticky_control_xds_refusals_total",
];

/// A counter's name and labels.
type SeriesKey = (String, Vec<(String, String)>);

/// Counters keyed by name and label set.
#[derive(Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<SeriesKey, u64>>,
}

impl Metrics {
    pub fn count(&self, name: &str, labels: &[(&str, &str)]) {
        self.add(name, labels, 1);
    }

    pub fn add(&self, name: &str, labels: &[(&str, &str)], amount: u64) {
        let key = (
            name.to_owned(),
            labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        );
        let mut counters = self.counters.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let counter = counters.entry(key).or_insert(0);
        *counter = counter.saturating_add(amount);
    }

    /// An API answer that waited `waited` for every follower to hold its change.
    pub fn observe_sync(&self, waited: std::time::Duration) {
        self.count("sticky_control_sync_waits_total", &[]);
        let micros = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
        self.add("sticky_control_sync_wait_microseconds_total", &[], micros);
    }

    /// The exposition text, with `gauges` (name, value) appended.
    pub fn render(&self, gauges: &[(&str, u64)]) -> String {
        let counters = self.counters.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = String::new();
        let mut last_name = "";
        for ((name, labels), value) in counters.iter() {
            if name != last_name {
                let _ = writeln!(out, "# TYPE {name} counter");
                last_name = name;
            }
            let labels: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
                .collect();
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {value}");
            } else {
                let _ = writeln!(out, "{name}{{{}}} {value}", labels.join(","));
            }
        }
        for name in DECLARED {
            if !counters.keys().any(|(counted, _)| counted == name) {
                let _ = writeln!(out, "# TYPE {name} counter\n{name} 0");
            }
        }
        for (name, value) in gauges {
            let _ = writeln!(out, "# TYPE {name} gauge\n{name} {value}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_gauges() {
        let metrics = Metrics::default();
        metrics.count("api_requests_total", &[("action", "X"), ("code", "ok")]);
        metrics.count("api_requests_total", &[("action", "X"), ("code", "ok")]);
        let text = metrics.render(&[("state_version", 7)]);
        assert!(
            text.contains("api_requests_total{action=\"X\",code=\"ok\"} 2"),
            "{text}"
        );
        assert!(text.contains("state_version 7"));
        assert!(text.contains("\nsticky_control_sync_timeouts_total 0\n"), "{text}");
    }
}
