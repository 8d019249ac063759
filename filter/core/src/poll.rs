//! When to poll the control service: one poll in flight at a time, the next at once after a
//! success (the control service holds it open until a change), and an exponential backoff
//! after failures. Times are milliseconds of any monotonic-enough clock.

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

#[cfg(test)]
mod tests {
    use super::*;

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
