//! Who follows the control service, and with which version: every filter VM's state
//! long-poll (identified by the `poller` id it sends), every Envoy's REST EDS fetches
//! (identified by node id) and every Envoy's xDS stream (by node id and stream). A change made through the API is answered only once every live
//! follower holds it (or a time limit passes), so "acknowledged" means "in force": a request
//! sent after the answer is routed under the new state by every Envoy.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// A follower seen this recently between polls still counts (a filter re-polls at once after
/// an answer; an Envoy fetches EDS every 100 ms).
const POLLER_GRACE: Duration = Duration::from_secs(2);
const EDS_GRACE: Duration = Duration::from_secs(1);
/// Forgotten after this long unseen.
const FORGET_AFTER: Duration = Duration::from_secs(60);
const PRUNE_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Follower {
    Poller(String),
    Eds(String),
    Xds(String),
}

#[derive(Debug)]
struct Entry {
    version: u64,
    /// Open long-polls, or open xDS streams.
    open_polls: u32,
    last_seen: Instant,
    /// What the follower last refused (an xDS NACK), until it accepts a newer version.
    refusal: Option<String>,
    /// What it follows: a filter, its listener (`<load balancer>_<port>`); an Envoy's xDS
    /// stream, the HTTP listeners it holds (their filters follow each).
    listeners: Arc<[String]>,
}

impl Entry {
    fn new(version: u64, open_polls: u32, listeners: Arc<[String]>) -> Self {
        Self {
            version,
            open_polls,
            last_seen: Instant::now(),
            refusal: None,
            listeners,
        }
    }
}

/// The HTTP listeners some live Envoy holds whose filters do not all follow yet: fewer live
/// filters of the listener hold what `version` serves them than live Envoys hold the listener
/// (each Envoy's copy of a listener has at least one filter, which polls as soon as Envoy built
/// it). Closes the gap between an Envoy accepting a new listener and its filter's first state:
/// an answer then also means in force on a listener created moments before.
/// `(listener, following, held)`.
fn unfollowed(
    entries: &HashMap<Follower, Entry>,
    version: u64,
    states: &StateVersions<'_>,
) -> Vec<(String, usize, usize)> {
    let mut counts: HashMap<&str, (usize, usize)> = HashMap::new();
    for (key, entry) in entries {
        match key {
            Follower::Xds(_) if is_live(key, entry) => {
                for listener in entry.listeners.iter() {
                    counts.entry(listener).or_default().1 += 1;
                }
            }
            Follower::Poller(_) if is_live(key, entry) && entry.version >= needed(key, entry, version, 0, states) => {
                if let Some(listener) = entry.listeners.first() {
                    counts.entry(listener).or_default().0 += 1;
                }
            }
            _ => {}
        }
    }
    let mut short: Vec<(String, usize, usize)> = counts
        .into_iter()
        .filter(|(_, (following, held))| following < held)
        .map(|(listener, (following, held))| (listener.to_owned(), following, held))
        .collect();
    short.sort();
    short
}

/// The version of the filter state of each load balancer's listeners (`None`: no such load
/// balancer): a filter holds what a change served it once it holds that version (changes of
/// other load balancers leave its state, and its long-poll, alone).
pub type StateVersions<'a> = dyn Fn(&str) -> Option<u64> + Sync + 'a;

/// [`StateVersions`] where every change changes every listener's state.
pub fn every_state_changes(_: &str) -> Option<u64> {
    Some(u64::MAX)
}

#[derive(Debug)]
pub struct Followers {
    entries: Mutex<HashMap<Follower, Entry>>,
    /// When forgotten followers were last dropped: not at every update, which would make each
    /// poll cost as much as all the followers (10,000 polls answered per change).
    pruned_at: Mutex<Instant>,
    changed: Notify,
    /// Followers are known only once they poll: after a (re)start, every live one has polled
    /// within its longest retry backoff. Until then a change waits that long, so no follower
    /// still reconnecting is forgotten.
    discovered_at: Instant,
}

impl Default for Followers {
    fn default() -> Self {
        Self::new(Duration::ZERO)
    }
}

/// Held while a long-poll is open; closing it (answer or disconnect) records the time.
pub struct OpenPoll<'a> {
    followers: &'a Followers,
    key: Follower,
}

impl Drop for OpenPoll<'_> {
    fn drop(&mut self) {
        let close = |entries: &mut HashMap<Follower, Entry>| {
            if let Some(entry) = entries.get_mut(&self.key) {
                entry.open_polls = entry.open_polls.saturating_sub(1);
                entry.last_seen = Instant::now();
            }
        };
        // A closed xDS stream is no longer waited for: waiters look again at once. A closed
        // poll changes nothing a waiter waits for (its grace runs on), so waiters are not woken
        // (10,000 filters answered would wake them 10,000 times more).
        if matches!(self.key, Follower::Xds(_)) {
            self.followers.update(close);
        } else {
            self.followers.update_quietly(close);
        }
    }
}

/// A follower is live while a poll is open or within its grace after the last one.
fn is_live(key: &Follower, entry: &Entry) -> bool {
    match key {
        Follower::Poller(_) => entry.open_polls > 0 || entry.last_seen.elapsed() < POLLER_GRACE,
        Follower::Eds(_) => entry.last_seen.elapsed() < EDS_GRACE,
        Follower::Xds(_) => entry.open_polls > 0,
    }
}

/// The version `key` must hold after the change that made `version`: a filter, the state of
/// its listener as of that change (its load balancer's `states`, or `version` when it changed
/// again since); Envoys, only what EDS and xDS serve.
fn needed(key: &Follower, entry: &Entry, version: u64, endpoints_version: u64, states: &StateVersions<'_>) -> u64 {
    match key {
        Follower::Poller(_) => {
            let load_balancer = entry
                .listeners
                .first()
                .and_then(|listener| listener.split_once('_'))
                .map(|(load_balancer, _)| load_balancer);
            // A filter of a load balancer that is gone follows nothing any more.
            load_balancer.and_then(states).map_or(0, |state| state.min(version))
        }
        Follower::Eds(_) | Follower::Xds(_) => endpoints_version,
    }
}

/// See [`Followers::census`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Census {
    pub live: u64,
    pub open_polls: u64,
    pub discovering: bool,
}

/// A poller id as filters send it: 1 to 64 ASCII letters and digits.
pub fn is_poller_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

impl Followers {
    /// A registry whose followers are all known `discovery` after now.
    pub fn new(discovery: Duration) -> Self {
        Self {
            entries: Mutex::default(),
            pruned_at: Mutex::new(Instant::now()),
            changed: Notify::new(),
            discovered_at: Instant::now() + discovery,
        }
    }

    /// Applies `change` and wakes the waiters.
    fn update<T>(&self, change: impl FnOnce(&mut HashMap<Follower, Entry>) -> T) -> T {
        let result = self.update_quietly(change);
        self.changed.notify_waiters();
        result
    }

    /// Applies `change` without waking the waiters.
    fn update_quietly<T>(&self, change: impl FnOnce(&mut HashMap<Follower, Entry>) -> T) -> T {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let result = change(&mut entries);
        let mut pruned_at = self.pruned_at.lock().unwrap_or_else(PoisonError::into_inner);
        if pruned_at.elapsed() >= PRUNE_EVERY {
            *pruned_at = Instant::now();
            entries.retain(|_, e| e.open_polls > 0 || e.last_seen.elapsed() < FORGET_AFTER);
        }
        drop(pruned_at);
        drop(entries);
        result
    }

    /// A state long-poll from `poller`, which holds `version`, is open until the guard drops.
    pub fn poll_opened(&self, poller: &str, listener: &str, version: u64) -> OpenPoll<'_> {
        let key = Follower::Poller(poller.to_owned());
        self.update(|entries| {
            let entry = entries
                .entry(key.clone())
                .or_insert_with(|| Entry::new(version, 0, Arc::from([listener.to_owned()])));
            entry.version = version;
            entry.open_polls += 1;
            entry.last_seen = Instant::now();
        });
        OpenPoll { followers: self, key }
    }

    /// Filter `poller` follows a listener that is gone: no change waits for it any more.
    pub fn forget_poller(&self, poller: &str) {
        self.update(|entries| entries.remove(&Follower::Poller(poller.to_owned())));
    }

    /// An EDS fetch from Envoy `node`, which last accepted `version`.
    pub fn eds_fetched(&self, node: &str, version: u64) {
        self.update(|entries| {
            entries.insert(Follower::Eds(node.to_owned()), Entry::new(version, 0, Arc::from([])));
        });
    }

    /// An xDS stream from Envoy `stream` (its node id and a stream number) is open until the
    /// guard drops; it holds nothing yet.
    pub fn xds_opened(&self, stream: &str) -> OpenPoll<'_> {
        let key = Follower::Xds(stream.to_owned());
        self.update(|entries| {
            entries.insert(key.clone(), Entry::new(0, 1, Arc::from([])));
        });
        OpenPoll { followers: self, key }
    }

    /// xDS stream `stream` holds everything the service served up to `version`.
    pub fn xds_holds(&self, stream: &str, version: u64, http_listeners: Arc<[String]>) {
        self.update(|entries| {
            if let Some(entry) = entries.get_mut(&Follower::Xds(stream.to_owned())) {
                entry.version = entry.version.max(version);
                entry.listeners = http_listeners;
                entry.refusal = None;
                entry.last_seen = Instant::now();
            }
        });
    }

    /// xDS stream `stream` refused (NACKed) what it was sent: `detail` is Envoy's reason.
    pub fn xds_refused(&self, stream: &str, detail: String) {
        self.update(|entries| {
            if let Some(entry) = entries.get_mut(&Follower::Xds(stream.to_owned())) {
                entry.refusal = Some(detail);
            }
        });
    }

    /// What `/metrics` shows of the followers: how many are live, how many long-polls are
    /// open, and whether the discovery window after a start is still open.
    pub fn census(&self) -> Census {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        Census {
            live: entries.iter().filter(|(key, entry)| is_live(key, entry)).count() as u64,
            open_polls: entries.values().map(|e| u64::from(e.open_polls)).sum(),
            discovering: Instant::now() < self.discovered_at,
        }
    }

    /// Live followers still behind: filters behind `version`, Envoys behind `endpoints_version`
    /// (the version at which what EDS serves last changed).
    pub fn lagging(&self, version: u64, endpoints_version: u64, states: &StateVersions<'_>) -> Vec<String> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries
            .iter()
            .filter(|(key, entry)| {
                is_live(key, entry) && entry.version < needed(key, entry, version, endpoints_version, states)
            })
            .map(|(key, entry)| match key {
                Follower::Poller(id) => format!("filter {id} at version {}", entry.version),
                Follower::Eds(node) => format!("Envoy {node} (EDS) at version {}", entry.version),
                Follower::Xds(stream) => match &entry.refusal {
                    Some(detail) => format!("Envoy {stream} (xDS) refused the change: {detail}"),
                    None => format!("Envoy {stream} (xDS) at version {}", entry.version),
                },
            })
            .chain(
                unfollowed(&entries, version, states)
                    .into_iter()
                    .map(|(listener, following, held)| {
                        format!(
                            "listener {listener}: the filters of {following} of the {held} Envoys holding it follow"
                        )
                    }),
            )
            .collect()
    }

    /// Whether a live follower is behind (see [`Followers::lagging`]); cheaper than it.
    fn any_lagging(&self, version: u64, endpoints_version: u64, states: &StateVersions<'_>) -> bool {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.iter().any(|(key, entry)| {
            is_live(key, entry) && entry.version < needed(key, entry, version, endpoints_version, states)
        }) || !unfollowed(&entries, version, states).is_empty()
    }

    /// Whether every follower in `lagging` refused the change: waiting longer is pointless.
    fn all_refused(&self, version: u64, endpoints_version: u64, states: &StateVersions<'_>) -> bool {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let mut behind = entries.iter().filter(|(key, entry)| {
            is_live(key, entry) && entry.version < needed(key, entry, version, endpoints_version, states)
        });
        behind.all(|(_, entry)| entry.refusal.is_some()) && unfollowed(&entries, version, states).is_empty()
    }

    /// Waits until no live follower is behind (see [`Followers::lagging`]), at most `limit`; on
    /// time-out, the followers still behind.
    pub async fn wait_until_current(
        &self,
        version: u64,
        endpoints_version: u64,
        limit: Duration,
        states: &StateVersions<'_>,
    ) -> Result<(), Vec<String>> {
        let deadline = tokio::time::Instant::now() + limit;
        let discovered = tokio::time::Instant::from_std(self.discovered_at);
        if discovered > tokio::time::Instant::now() {
            tokio::time::sleep_until(discovered.min(deadline)).await;
        }
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.any_lagging(version, endpoints_version, states) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline || self.all_refused(version, endpoints_version, states) {
                let lagging = self.lagging(version, endpoints_version, states);
                if lagging.is_empty() {
                    return Ok(());
                }
                return Err(lagging);
            }
            // Woken by any follower's news; re-checked regularly, as followers also go quiet.
            let _ = tokio::time::timeout_at(
                deadline.min(tokio::time::Instant::now() + Duration::from_millis(50)),
                notified,
            )
            .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_for_open_polls_and_recent_eds_fetches_to_catch_up() {
        let followers = Followers::default();
        assert_eq!(
            followers
                .wait_until_current(5, 5, Duration::ZERO, &every_state_changes)
                .await,
            Ok(()),
            "nobody follows"
        );
        let poll = followers.poll_opened("aa", "lb_80", 4);
        followers.eds_fetched("envoy-1", 4);
        assert_eq!(followers.lagging(5, 5, &every_state_changes).len(), 2);
        assert!(
            followers
                .wait_until_current(5, 5, Duration::from_millis(10), &every_state_changes)
                .await
                .is_err()
        );
        drop(poll);
        let _again = followers.poll_opened("aa", "lb_80", 5);
        followers.eds_fetched("envoy-1", 5);
        assert_eq!(
            followers
                .wait_until_current(5, 5, Duration::from_millis(10), &every_state_changes)
                .await,
            Ok(())
        );
    }

    #[tokio::test]
    async fn a_waiter_is_woken_when_the_last_follower_catches_up() {
        let followers = std::sync::Arc::new(Followers::default());
        let _poll = followers.poll_opened("bb", "lb_80", 1);
        let waiter = {
            let followers = std::sync::Arc::clone(&followers);
            tokio::spawn(async move {
                followers
                    .wait_until_current(2, 2, Duration::from_secs(5), &every_state_changes)
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let started = Instant::now();
        let _next = followers.poll_opened("bb", "lb_80", 2);
        assert_eq!(waiter.await.unwrap(), Ok(()));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "woken by the follower, not by the 5 s limit"
        );
    }

    #[tokio::test]
    async fn after_a_start_changes_wait_until_every_follower_had_time_to_reconnect() {
        let followers = Followers::new(Duration::from_millis(100));
        let started = Instant::now();
        assert_eq!(
            followers
                .wait_until_current(1, 1, Duration::from_secs(1), &every_state_changes)
                .await,
            Ok(())
        );
        assert!(started.elapsed() >= Duration::from_millis(90));
    }

    #[tokio::test]
    async fn envoys_are_waited_for_only_when_the_endpoints_changed() {
        let followers = Followers::default();
        let _poll = followers.poll_opened("cc", "lb_80", 7);
        followers.eds_fetched("envoy-1", 4);
        // Version 7 changed a policy; the endpoints last changed at 4, which Envoy holds.
        assert_eq!(
            followers
                .wait_until_current(7, 4, Duration::ZERO, &every_state_changes)
                .await,
            Ok(())
        );
        // Version 7 registered a target: Envoy must fetch it first.
        assert_eq!(
            followers
                .wait_until_current(7, 7, Duration::ZERO, &every_state_changes)
                .await,
            Err(vec!["Envoy envoy-1 (EDS) at version 4".to_owned()])
        );
    }

    #[tokio::test]
    async fn a_change_waits_only_for_the_filters_of_the_load_balancer_it_changed() {
        let followers = Followers::default();
        // Version 9 changed shop; cart's state last changed at 4, gone's load balancer is gone.
        let states = |lb: &str| match lb {
            "shop" => Some(9),
            "cart" => Some(4),
            _ => None,
        };
        let _shop = followers.poll_opened("aa", "shop_80", 8);
        let _cart = followers.poll_opened("bb", "cart_80", 4);
        let _gone = followers.poll_opened("cc", "gone_80", 2);
        assert_eq!(
            followers.wait_until_current(9, 4, Duration::ZERO, &states).await,
            Err(vec!["filter aa at version 8".to_owned()])
        );
        let _shop = followers.poll_opened("aa", "shop_80", 9);
        assert_eq!(
            followers.wait_until_current(9, 4, Duration::ZERO, &states).await,
            Ok(())
        );
        // Waiting for version 7 after shop changed again (at 9): its filters must hold 7 or later.
        let _late = followers.poll_opened("dd", "shop_81", 6);
        assert_eq!(
            followers.lagging(7, 4, &states),
            vec!["filter dd at version 6".to_owned()]
        );
    }

    #[test]
    fn poller_ids_are_short_alphanumerics() {
        assert!(is_poller_id("0123abcdef"));
        for bad in ["", "a b", "a&b", &"a".repeat(65)] {
            assert!(!is_poller_id(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_listener_an_envoy_holds_is_followed_once_its_filter_polled() {
        let followers = Followers::default();
        let _stream = followers.xds_opened("bouncer-1/1");
        followers.xds_holds("bouncer-1/1", 3, Arc::from(["lb_80".to_owned(), "lb_81".to_owned()]));
        let _old = followers.poll_opened("aa", "lb_80", 3);
        // Envoy built listener 81, whose filter has not polled yet.
        assert_eq!(
            followers
                .wait_until_current(3, 3, Duration::ZERO, &every_state_changes)
                .await,
            Err(vec![
                "listener lb_81: the filters of 0 of the 1 Envoys holding it follow".to_owned()
            ])
        );
        let _new = followers.poll_opened("bb", "lb_81", 3);
        assert_eq!(
            followers
                .wait_until_current(3, 3, Duration::ZERO, &every_state_changes)
                .await,
            Ok(())
        );
    }
}
