//! Durable state: load balancers (one JSON document each), the instance registry, the cookie
//! key ring and the version, in one of two backends behind one interface:
//!
//! - `sqlite`: embedded, one process (the default). Health is not stored: the one process
//!   re-learns it by probing after a start.
//! - `postgres`: shared by several replicas. Every change is one transaction that first locks
//!   the version row, so writers on different replicas take turns and each computes its change
//!   from the latest state (no lost update); the commit notifies every replica
//!   (`LISTEN/NOTIFY`), which reloads. Health flips are stored too, so they reach every replica.
//!
//! On both, a change is committed (SQLite `synchronous=FULL`; PostgreSQL's commit) before the
//! API acknowledges it. Schemas are versioned and migrated at start.

use std::collections::{BTreeMap, HashMap};

use crate::health::InstanceHealth;
use crate::model::{LoadBalancer, Registry};

pub mod postgres;
pub mod sqlite;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("store: {0}")]
    Postgres(#[from] ::postgres::Error),
    #[error("store holds a document that does not parse: {0}")]
    Corrupt(String),
    #[error("store schema is at version {found}, newer than this binary's {known}: run the newer binary")]
    SchemaTooNew { found: i64, known: i64 },
    #[error("this replica no longer holds the leader lease")]
    NotLeader,
    #[error("{0}")]
    Config(String),
}

/// A server certificate as stored: its private key sealed under the master key
/// ([`crate::sealing`]), never in clear.
#[derive(Debug, Clone)]
pub struct SealedCertificate {
    /// With no private key.
    pub certificate: crate::certificates::ServerCertificate,
    pub sealed_key: String,
}

/// A cookie key as stored: its secret sealed under the master key ([`crate::sealing`]), or,
/// in a store written before keys were sealed, the 32 bytes in clear (sealed again at start).
#[derive(Clone, PartialEq, Eq)]
pub struct StoredCookieKey {
    pub id: u16,
    pub secret: Vec<u8>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; `None` for the active key.
    pub retired_at: Option<i64>,
}

impl std::fmt::Debug for StoredCookieKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCookieKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// One durable change.
pub enum Change<'a> {
    PutLoadBalancer(&'a LoadBalancer),
    DeleteLoadBalancer(&'a str),
    ReplaceRegistry(&'a Registry),
    /// The whole ring, oldest first.
    ReplaceKeys(&'a [StoredCookieKey]),
    /// A health flip of (load balancer, instance); only shared stores keep it.
    PutHealth(&'a (String, String), &'a InstanceHealth),
    PutCertificate(&'a SealedCertificate),
    /// By id.
    DeleteCertificate(&'a str),
}

/// What the store holds.
pub struct Snapshot {
    pub load_balancers: BTreeMap<String, LoadBalancer>,
    pub registry: Registry,
    /// The cookie key ring, oldest first (empty before the first start).
    pub keys: Vec<StoredCookieKey>,
    /// Health of registered instances (empty from a store that does not keep it).
    pub health: HashMap<(String, String), InstanceHealth>,
    pub certificates: Vec<SealedCertificate>,
    pub version: u64,
    /// The version at which what Envoy is served last changed.
    pub endpoints_version: u64,
}
pub use sticky_control_schema::StoreLocation;

pub enum Store {
    Sqlite(sqlite::SqliteStore),
    Postgres(Box<postgres::PostgresStore>),
}

/// One write in progress: dropping it without [`Transaction::commit`] rolls it back.
pub enum Transaction<'a> {
    Sqlite(rusqlite::Transaction<'a>),
    Postgres(::postgres::Transaction<'a>),
}

impl Store {
    /// Opens (creating or migrating the schema) the store at `location`.
    pub fn open(location: &StoreLocation) -> Result<Self, StoreError> {
        Ok(match location {
            StoreLocation::Sqlite(path) => Self::Sqlite(sqlite::SqliteStore::open(path)?),
            StoreLocation::Postgres(url) => Self::Postgres(Box::new(postgres::PostgresStore::connect(url)?)),
        })
    }

    /// Whether other processes write to this store too (and health lives in it).
    pub fn is_shared(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }

    pub fn load(&mut self) -> Result<Snapshot, StoreError> {
        match self {
            Self::Sqlite(store) => store.load(),
            Self::Postgres(store) => store.load(),
        }
    }

    /// Starts a write. On a shared store this waits for the writers of other replicas to
    /// finish, so what [`Transaction::stored_versions`] and [`Transaction::load`] see stays
    /// current until the commit.
    pub fn begin(&mut self) -> Result<Transaction<'_>, StoreError> {
        Ok(match self {
            Self::Sqlite(store) => Transaction::Sqlite(store.begin()?),
            Self::Postgres(store) => Transaction::Postgres(store.begin()?),
        })
    }
}

impl Transaction<'_> {
    /// The stored (version, endpoints version) when other processes may have moved it on;
    /// `None` on a store this process alone writes.
    pub fn stored_versions(&mut self) -> Result<Option<(u64, u64)>, StoreError> {
        match self {
            Self::Sqlite(_) => Ok(None),
            Self::Postgres(tx) => postgres::stored_versions(tx).map(Some),
        }
    }

    /// Everything stored, as this transaction sees it.
    pub fn load(&mut self) -> Result<Snapshot, StoreError> {
        match self {
            Self::Sqlite(tx) => sqlite::load(tx),
            Self::Postgres(tx) => postgres::load(tx),
        }
    }

    /// Fails unless `holder` holds the leader lease (shared stores; a lone process always does).
    pub fn require_leader(&mut self, holder: &str) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(_) => Ok(()),
            Self::Postgres(tx) => postgres::require_leader(tx, holder),
        }
    }

    pub fn apply(&mut self, changes: &[Change<'_>]) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(tx) => sqlite::apply(tx, changes),
            Self::Postgres(tx) => postgres::apply(tx, changes),
        }
    }

    /// Records the versions and commits, durably; a shared store notifies every replica.
    pub fn commit(self, version: u64, endpoints_version: u64) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(tx) => sqlite::commit(tx, version, endpoints_version),
            Self::Postgres(tx) => postgres::commit(tx, version, endpoints_version),
        }
    }
}

fn to_doc<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// A stored certificate row: its document (no key) and its sealed key.
fn stored_certificate(doc: &str, sealed_key: String) -> Result<SealedCertificate, StoreError> {
    Ok(SealedCertificate {
        certificate: from_doc(doc)?,
        sealed_key,
    })
}

fn from_doc<T: serde::de::DeserializeOwned>(doc: &str) -> Result<T, StoreError> {
    serde_json::from_str(doc).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Health kept only for instances still registered with their load balancer.
fn registered_health(
    load_balancers: &BTreeMap<String, LoadBalancer>,
    rows: impl IntoIterator<Item = ((String, String), InstanceHealth)>,
) -> HashMap<(String, String), InstanceHealth> {
    rows.into_iter()
        .filter(|((lb, id), _)| load_balancers.get(lb).is_some_and(|lb| lb.has_target(id)))
        .collect()
}
