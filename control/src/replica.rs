//! This process among the replicas sharing a store: who it is, whether it leads (the health
//! checker and the key rotator run on the leader only), which other replicas are alive, and
//! whether the store answers. The threads that keep it in step are `replicas`'.
//!
//! On a store one process writes (SQLite) the replica always leads and has no peers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::store::postgres::Peer;

#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// Unique per process: the lease holder's name.
    pub id: String,
    /// Where other replicas reach this one's API (for the in-force wait across replicas).
    pub url: String,
    /// How long a leader lease lasts unless renewed (renewed every third of it).
    pub lease: Duration,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        Self {
            id: "local".to_owned(),
            url: String::new(),
            lease: Duration::from_secs(3),
        }
    }
}

/// This replica's view of the others and of the lease.
#[derive(Debug)]
pub struct Replica {
    pub config: ReplicaConfig,
    /// Leading until this instant (renewals move it on); `None` when not leading.
    leading_until: Mutex<Option<Instant>>,
    /// Bumped when leadership is taken or lost, to wake the leader-only tasks.
    leadership: watch::Sender<bool>,
    peers: Mutex<Vec<Peer>>,
    /// False while this replica cannot reach the shared store (it then fails `/healthz`, so
    /// Envoys follow another replica).
    store_reachable: AtomicBool,
    /// Whether other replicas may exist (a shared store).
    shared: bool,
}

impl Replica {
    pub fn new(config: ReplicaConfig, shared: bool) -> Self {
        Self {
            config,
            leading_until: Mutex::new(None),
            leadership: watch::channel(!shared).0,
            peers: Mutex::default(),
            store_reachable: AtomicBool::new(true),
            shared,
        }
    }

    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// Whether this replica leads now (a lone process always does).
    pub fn is_leader(&self) -> bool {
        !self.shared
            || self
                .leading_until
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_some_and(|until| Instant::now() < until)
    }

    /// Changes whenever leadership is taken or lost.
    pub fn leadership(&self) -> watch::Receiver<bool> {
        self.leadership.subscribe()
    }

    /// Records until when this replica leads, and tells the leader-only tasks when that
    /// changes whether it leads (also when a lease lapsed unrenewed since the last call).
    pub(crate) fn set_leading_until(&self, until: Option<Instant>) {
        *self.leading_until.lock().unwrap_or_else(PoisonError::into_inner) = until;
        let leads = self.is_leader();
        if *self.leadership.borrow() != leads {
            self.leadership.send_replace(leads);
        }
    }

    /// The other replicas alive now.
    pub(crate) fn set_peers(&self, peers: Vec<Peer>) {
        *self.peers.lock().unwrap_or_else(PoisonError::into_inner) = peers;
    }

    pub fn peers(&self) -> Vec<Peer> {
        self.peers.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub fn store_reachable(&self) -> bool {
        self.store_reachable.load(Ordering::Relaxed)
    }

    pub(crate) fn set_store_reachable(&self, reachable: bool) {
        self.store_reachable.store(reachable, Ordering::Relaxed);
    }
}
