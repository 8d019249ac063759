//! Waiting for an event instead of sleeping for it (linkerd2-proxy's `assert_eventually!`):
//! a bound generous enough for a loaded CI machine, scaled by `STICKY_TEST_PATIENCE`.

use std::time::{Duration, Instant};

/// The factor every [`eventually`] bound is multiplied by: `STICKY_TEST_PATIENCE` (a positive
/// number, e.g. `3` on a slow machine), 1 by default.
pub fn patience() -> f64 {
    std::env::var("STICKY_TEST_PATIENCE")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|f| f.is_finite() && *f > 0.0)
        .unwrap_or(1.0)
}

/// Polls `check` every 20 ms until it holds, and returns how long that took; panics naming
/// `what` once `bound` (times [`patience`]) has passed. A bound is a ceiling for a stuck test,
/// never a measurement: figures belong in the benchmarks.
#[allow(clippy::panic)]
pub fn eventually(bound: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let bound = bound.mul_f64(patience());
    let start = Instant::now();
    loop {
        if check() {
            return start.elapsed();
        }
        if start.elapsed() >= bound {
            panic!("not within {bound:?}: {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
