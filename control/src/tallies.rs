//! What the filters count per listener, as their polls report it (`counts`, cumulative since
//! each filter started): summed over the filters following this replica, for the operator page.
//! Envoy's own stats add every listener up; these keep them apart.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use sticky_core::{COUNTERS, Counter};

/// A filter not heard from for this long is gone (an Envoy restarted or a listener replaced):
/// its last counts are kept in the listener's total, the filter forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(600);
/// Filters remembered per listener at most; reports of more are not counted.
const MAX_FILTERS: usize = 20_000;

pub type Counts = [u64; COUNTERS];

#[derive(Default)]
struct ListenerCounts {
    /// Per filter (poller id): its last report and when it came.
    filters: HashMap<String, (Instant, Counts)>,
    /// What filters forgotten (or restarted) had counted.
    retired: Counts,
}

fn add(total: &mut Counts, counts: &Counts) {
    for (t, c) in total.iter_mut().zip(counts) {
        *t = t.saturating_add(*c);
    }
}

/// Per listener (load balancer, port): the filters' counts.
#[derive(Default)]
pub struct ListenerTallies {
    listeners: Mutex<HashMap<(String, u16), ListenerCounts>>,
}

impl ListenerTallies {
    /// Takes filter `poller`'s report for a listener.
    pub fn report(&self, load_balancer: &str, port: u16, poller: &str, counts: Counts, now: Instant) {
        let mut listeners = self.listeners.lock().unwrap_or_else(PoisonError::into_inner);
        let listener = listeners.entry((load_balancer.to_owned(), port)).or_default();
        let ListenerCounts { filters, retired } = listener;
        filters.retain(|_, (seen, last)| {
            let gone = now.saturating_duration_since(*seen) > FORGET_AFTER;
            if gone {
                add(retired, last);
            }
            !gone
        });
        let room = filters.len() < MAX_FILTERS;
        match filters.get_mut(poller) {
            Some((seen, last)) => {
                // Counts never go down: lower ones are a filter that started again.
                if counts.iter().zip(last.iter()).any(|(new, old)| new < old) {
                    add(retired, last);
                }
                *seen = now;
                *last = counts;
            }
            None if room => {
                filters.insert(poller.to_owned(), (now, counts));
            }
            None => {}
        }
    }

    /// The listener's counts, every filter of this replica added up.
    pub fn totals(&self, load_balancer: &str, port: u16) -> Counts {
        let listeners = self.listeners.lock().unwrap_or_else(PoisonError::into_inner);
        let mut total = [0; COUNTERS];
        if let Some(listener) = listeners.get(&(load_balancer.to_owned(), port)) {
            add(&mut total, &listener.retired);
            for (_, counts) in listener.filters.values() {
                add(&mut total, counts);
            }
        }
        total
    }
}

/// `counter`'s count in `counts`.
pub fn count(counts: &Counts, counter: Counter) -> u64 {
    counts.get(counter.index()).copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use sticky_core::Rejection;

    use super::*;

    fn counts(pinned: u64, expired: u64) -> Counts {
        let mut counts = [0; COUNTERS];
        counts[Counter::Pinned.index()] = pinned;
        counts[Counter::Rejected(Rejection::Expired).index()] = expired;
        counts
    }

    #[test]
    fn a_listeners_total_adds_its_filters_up_and_never_goes_down() {
        let tallies = ListenerTallies::default();
        let start = Instant::now();
        tallies.report("lb", 80, "aa", counts(5, 1), start);
        tallies.report("lb", 80, "bb", counts(2, 0), start);
        tallies.report("lb", 81, "aa", counts(100, 0), start);
        // Cumulative reports: the latest replaces the one before.
        tallies.report("lb", 80, "aa", counts(7, 1), start);
        assert_eq!(tallies.totals("lb", 80), counts(9, 1));
        // A filter that started again keeps what it had counted.
        tallies.report("lb", 80, "bb", counts(1, 0), start);
        assert_eq!(tallies.totals("lb", 80), counts(10, 1));
        // A filter gone quiet is forgotten, its counts kept.
        let later = start + FORGET_AFTER + Duration::from_secs(1);
        tallies.report("lb", 80, "cc", counts(1, 0), later);
        assert_eq!(tallies.totals("lb", 80), counts(11, 1));
        tallies.report("lb", 80, "aa", counts(8, 1), later);
        assert_eq!(
            tallies.totals("lb", 80),
            counts(19, 2),
            "a forgotten filter coming back counts anew"
        );
        assert_eq!(tallies.totals("lb", 81), counts(100, 0));
        assert_eq!(tallies.totals("other", 80), [0; COUNTERS]);
    }
}
