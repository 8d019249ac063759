//! Durable state in SQLite: load balancers (one JSON document each), the instance registry, the
//! cookie key ring and the state version. Every change is one transaction, committed (with
//! `synchronous=FULL`) before the API acknowledges it.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use crate::keys::{CookieKey, RotatingKeys};
use crate::model::{InstanceAddress, LoadBalancer, Registry};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("store holds a document that does not parse: {0}")]
    Corrupt(String),
}

/// One durable change.
pub enum Change<'a> {
    PutLoadBalancer(&'a LoadBalancer),
    DeleteLoadBalancer(&'a str),
    ReplaceRegistry(&'a Registry),
    ReplaceKeys(&'a RotatingKeys),
}

/// What the store holds.
pub struct Snapshot {
    pub load_balancers: BTreeMap<String, LoadBalancer>,
    pub registry: Registry,
    pub keys: Option<RotatingKeys>,
    pub version: u64,
}

pub struct Store {
    conn: Connection,
}

impl Store {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS load_balancers (name TEXT PRIMARY KEY, doc TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS instances (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS cookie_keys (
                 id INTEGER PRIMARY KEY, secret BLOB NOT NULL, created_at INTEGER NOT NULL, retired_at INTEGER);",
        )?;
        Ok(Self { conn })
    }

    pub fn load(&self) -> Result<Snapshot, StoreError> {
        let corrupt = |e: serde_json::Error| StoreError::Corrupt(e.to_string());
        let mut load_balancers = BTreeMap::new();
        let mut statement = self.conn.prepare("SELECT name, doc FROM load_balancers")?;
        for row in statement.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
            let (name, doc) = row?;
            load_balancers.insert(name, serde_json::from_str(&doc).map_err(corrupt)?);
        }
        let mut registry = Registry::default();
        let mut statement = self.conn.prepare("SELECT id, doc FROM instances")?;
        for row in statement.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
            let (id, doc) = row?;
            registry
                .instances
                .insert(id, serde_json::from_str::<InstanceAddress>(&doc).map_err(corrupt)?);
        }
        let mut keys = Vec::new();
        let mut statement = self
            .conn
            .prepare("SELECT id, secret, created_at, retired_at FROM cookie_keys ORDER BY created_at, id")?;
        for row in statement.query_map([], |r| {
            Ok((
                r.get::<_, u16>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Option<i64>>(3)?,
            ))
        })? {
            let (id, secret, created_at, retired_at) = row?;
            let secret: [u8; 32] = secret
                .try_into()
                .map_err(|_| StoreError::Corrupt(format!("key {id} is not 32 bytes")))?;
            keys.push(CookieKey {
                id,
                secret,
                created_at,
                retired_at,
            });
        }
        let keys = if keys.is_empty() {
            None
        } else {
            Some(RotatingKeys::from_keys(keys).map_err(StoreError::Corrupt)?)
        };
        let version: Option<String> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'version'", [], |r| r.get(0))
            .optional()?;
        let version = version.and_then(|v| v.parse().ok()).unwrap_or(0);
        Ok(Snapshot {
            load_balancers,
            registry,
            keys,
            version,
        })
    }

    /// Applies `changes` and records `version`, atomically and durably.
    pub fn commit(&mut self, changes: &[Change<'_>], version: u64) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        for change in changes {
            match change {
                Change::PutLoadBalancer(lb) => {
                    let doc = serde_json::to_string(lb).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    tx.execute(
                        "INSERT INTO load_balancers (name, doc) VALUES (?1, ?2)
                         ON CONFLICT(name) DO UPDATE SET doc = excluded.doc",
                        params![lb.name, doc],
                    )?;
                }
                Change::DeleteLoadBalancer(name) => {
                    tx.execute("DELETE FROM load_balancers WHERE name = ?1", params![name])?;
                }
                Change::ReplaceRegistry(registry) => {
                    tx.execute("DELETE FROM instances", [])?;
                    for (id, address) in &registry.instances {
                        let doc = serde_json::to_string(address).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                        tx.execute("INSERT INTO instances (id, doc) VALUES (?1, ?2)", params![id, doc])?;
                    }
                }
                Change::ReplaceKeys(ring) => {
                    tx.execute("DELETE FROM cookie_keys", [])?;
                    for key in ring.keys() {
                        tx.execute(
                            "INSERT INTO cookie_keys (id, secret, created_at, retired_at) VALUES (?1, ?2, ?3, ?4)",
                            params![key.id, key.secret.as_slice(), key.created_at, key.retired_at],
                        )?;
                    }
                }
            }
        }
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('version', ?1) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![version.to_string()],
        )?;
        tx.commit()?;
        Ok(())
    }
}
