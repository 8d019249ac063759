//! The embedded backend: one SQLite file (WAL, `synchronous=FULL`), written by one process.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{Change, Snapshot, StoreError, StoredCookieKey, from_doc, stored_certificate, to_doc};
use crate::model::Registry;

/// Schema versions, applied in order (`PRAGMA user_version` records the last). Version 1 is
/// the schema stores had before versioning (`IF NOT EXISTS`: such a store takes it as is).
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
     CREATE TABLE IF NOT EXISTS load_balancers (name TEXT PRIMARY KEY, doc TEXT NOT NULL);
     CREATE TABLE IF NOT EXISTS instances (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
     CREATE TABLE IF NOT EXISTS cookie_keys (
         id INTEGER PRIMARY KEY, secret BLOB NOT NULL, created_at INTEGER NOT NULL, retired_at INTEGER);",
    "CREATE TABLE server_certificates (id TEXT PRIMARY KEY, doc TEXT NOT NULL, sealed_key TEXT NOT NULL);",
];

pub struct SqliteStore {
    conn: Connection,
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut conn = Connection::open(path)?;
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")?;
        migrate(&mut conn)?;
        Ok(Self { conn })
    }

    pub fn load(&mut self) -> Result<Snapshot, StoreError> {
        let tx = self.conn.transaction()?;
        let snapshot = load(&tx)?;
        tx.commit()?;
        Ok(snapshot)
    }

    pub fn begin(&mut self) -> Result<rusqlite::Transaction<'_>, StoreError> {
        Ok(self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?)
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let known = MIGRATIONS.len() as i64;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > known {
        return Err(StoreError::SchemaTooNew { found, known });
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(usize::try_from(found).unwrap_or(0)) {
        tx.execute_batch(migration)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", index + 1))?;
    }
    tx.commit()?;
    Ok(())
}

pub(super) fn load(tx: &rusqlite::Transaction<'_>) -> Result<Snapshot, StoreError> {
    let mut load_balancers = BTreeMap::new();
    let mut statement = tx.prepare("SELECT name, doc FROM load_balancers")?;
    for row in statement.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
        let (name, doc) = row?;
        load_balancers.insert(name, from_doc(&doc)?);
    }
    let mut registry = Registry::default();
    let mut statement = tx.prepare("SELECT id, doc FROM instances")?;
    for row in statement.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
        let (id, doc) = row?;
        registry.instances.insert(id, from_doc(&doc)?);
    }
    let mut keys = Vec::new();
    let mut statement =
        tx.prepare("SELECT id, secret, created_at, retired_at FROM cookie_keys ORDER BY created_at, id")?;
    for row in statement.query_map([], |r| {
        Ok((
            r.get::<_, u16>(0)?,
            r.get::<_, Vec<u8>>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, Option<i64>>(3)?,
        ))
    })? {
        let (id, secret, created_at, retired_at) = row?;
        keys.push(StoredCookieKey {
            id,
            secret,
            created_at,
            retired_at,
        });
    }
    let mut certificates = Vec::new();
    let mut statement = tx.prepare("SELECT doc, sealed_key FROM server_certificates")?;
    for row in statement.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
        let (doc, sealed_key) = row?;
        certificates.push(stored_certificate(&doc, sealed_key)?);
    }
    let meta = |key: &str| -> Result<u64, StoreError> {
        let value: Option<String> = tx
            .query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| r.get(0))
            .optional()?;
        Ok(value.and_then(|v| v.parse().ok()).unwrap_or(0))
    };
    let version = meta("version")?;
    Ok(Snapshot {
        load_balancers,
        registry,
        keys,
        health: HashMap::new(),
        certificates,
        version,
        endpoints_version: meta("endpoints_version")?.min(version),
    })
}

pub(super) fn apply(tx: &rusqlite::Transaction<'_>, changes: &[Change<'_>]) -> Result<(), StoreError> {
    for change in changes {
        match change {
            Change::PutLoadBalancer(lb) => {
                tx.execute(
                    "INSERT INTO load_balancers (name, doc) VALUES (?1, ?2)
                     ON CONFLICT(name) DO UPDATE SET doc = excluded.doc",
                    params![lb.name, to_doc(lb)?],
                )?;
            }
            Change::DeleteLoadBalancer(name) => {
                tx.execute("DELETE FROM load_balancers WHERE name = ?1", params![name])?;
            }
            Change::ReplaceRegistry(registry) => {
                tx.execute("DELETE FROM instances", [])?;
                for (id, address) in &registry.instances {
                    tx.execute(
                        "INSERT INTO instances (id, doc) VALUES (?1, ?2)",
                        params![id, to_doc(address)?],
                    )?;
                }
            }
            Change::ReplaceKeys(ring) => {
                tx.execute("DELETE FROM cookie_keys", [])?;
                for key in ring.iter() {
                    tx.execute(
                        "INSERT INTO cookie_keys (id, secret, created_at, retired_at) VALUES (?1, ?2, ?3, ?4)",
                        params![key.id, key.secret.as_slice(), key.created_at, key.retired_at],
                    )?;
                }
            }
            // One process probes and serves: health is re-learnt after a start, not stored.
            Change::PutHealth(..) => {}
            Change::PutCertificate(sealed) => {
                tx.execute(
                    "INSERT INTO server_certificates (id, doc, sealed_key) VALUES (?1, ?2, ?3)
                     ON CONFLICT(id) DO UPDATE SET doc = excluded.doc, sealed_key = excluded.sealed_key",
                    params![sealed.certificate.id, to_doc(&sealed.certificate)?, sealed.sealed_key],
                )?;
            }
            Change::DeleteCertificate(id) => {
                tx.execute("DELETE FROM server_certificates WHERE id = ?1", params![id])?;
            }
        }
    }
    Ok(())
}

pub(super) fn commit(tx: rusqlite::Transaction<'_>, version: u64, endpoints_version: u64) -> Result<(), StoreError> {
    for (key, value) in [("version", version), ("endpoints_version", endpoints_version)] {
        tx.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value.to_string()],
        )?;
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn a_store_from_before_schema_versions_opens_with_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            // The schema as stores had it before versioning: no user_version.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.execute("INSERT INTO meta (key, value) VALUES ('version', '41')", [])
                .unwrap();
        }
        let mut store = Store::open(&crate::store::StoreLocation::Sqlite(path.clone())).unwrap();
        assert_eq!(store.load().unwrap().version, 41);
        let conn = Connection::open(&path).unwrap();
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        conn.execute_batch("PRAGMA user_version = 7").unwrap();
        drop(conn);
        assert!(matches!(
            SqliteStore::open(&path),
            Err(StoreError::SchemaTooNew { found: 7, known: 2 })
        ));
    }

    #[test]
    fn store_locations_name_their_backend() {
        use crate::store::StoreLocation;
        assert_eq!(
            "postgres://u:p@h/db".parse::<StoreLocation>().unwrap().to_string(),
            "postgres://u:***@h/db"
        );
        assert_eq!(
            "sqlite:/var/lib/sticky.db".parse::<StoreLocation>(),
            Ok(StoreLocation::Sqlite("/var/lib/sticky.db".into()))
        );
        assert_eq!(
            "sticky.db".parse::<StoreLocation>(),
            Ok(StoreLocation::Sqlite("sticky.db".into()))
        );
        assert!("postgres://h:notaport/db".parse::<StoreLocation>().is_err());
        assert!("sqlite:".parse::<StoreLocation>().is_err());
        assert!(
            "mysql://h/db".parse::<StoreLocation>().is_err(),
            "another scheme is no file name"
        );
    }
}
