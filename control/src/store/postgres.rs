//! The shared backend: PostgreSQL, written by several replicas. Writers take turns on the
//! version row (`SELECT … FOR UPDATE`, the first statement of every write), so each computes its
//! change from the latest state and none overwrites another's. A commit notifies every replica
//! on channel [`CHANGES_CHANNEL`]; each reloads ([`ChangeListener`]). The leader lease and the
//! replicas' heartbeats live here too.

use std::collections::BTreeMap;
use std::time::Duration;

use fallible_iterator::FallibleIterator;
use postgres::{Client, IsolationLevel};

use super::{Change, Snapshot, StoreError, StoredCookieKey, from_doc, registered_health, stored_certificate, to_doc};
use crate::model::Registry;

/// The channel every commit notifies, with the new version as payload.
pub const CHANGES_CHANNEL: &str = "sticky_changes";
/// The lease the health checker and key rotator run under.
const LEADER_LEASE: &str = "leader";
/// Taken (per transaction) while migrating, so replicas starting together migrate once.
const MIGRATION_LOCK: i64 = 0x5354_4943_4b59; // "STICKY"

/// Schema versions, applied in order; `schema_migrations` records those applied.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE meta (
         id INT PRIMARY KEY CHECK (id = 1),
         version BIGINT NOT NULL,
         endpoints_version BIGINT NOT NULL);
     INSERT INTO meta (id, version, endpoints_version) VALUES (1, 0, 0);
     CREATE TABLE load_balancers (name TEXT PRIMARY KEY, doc TEXT NOT NULL);
     CREATE TABLE instances (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
     CREATE TABLE cookie_keys (
         id INT PRIMARY KEY, secret BYTEA NOT NULL, created_at BIGINT NOT NULL, retired_at BIGINT);
     CREATE TABLE health (
         load_balancer TEXT NOT NULL, instance TEXT NOT NULL, doc TEXT NOT NULL,
         PRIMARY KEY (load_balancer, instance));
     CREATE TABLE leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at TIMESTAMPTZ NOT NULL);
     CREATE TABLE replicas (id TEXT PRIMARY KEY, url TEXT NOT NULL, seen_at TIMESTAMPTZ NOT NULL);",
    "CREATE TABLE server_certificates (id TEXT PRIMARY KEY, doc TEXT NOT NULL, sealed_key TEXT NOT NULL);",
];

/// A connection to `url`, with keepalives so a vanished server is noticed; over TLS as libpq
/// would: when the server offers it (`sslmode=prefer`, the default; `require`; `disable`),
/// and with `sslrootcert=FILE` in the URL the server's certificate must verify against that CA
/// for the URL's host (as libpq's `verify-full`).
pub fn connect(url: &str) -> Result<Client, StoreError> {
    let (url, root) = sticky_control_schema::without_sslrootcert(url);
    let mut config: postgres::Config = url
        .parse()
        .map_err(|e| StoreError::Config(format!("not a PostgreSQL connection URL: {e}")))?;
    config.application_name("sticky-control");
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    config.keepalives(true).keepalives_idle(Duration::from_secs(5));
    let tls = match root {
        Some(root) => {
            config.ssl_mode(postgres::config::SslMode::Require);
            verified_tls(&root)?
        }
        None => encrypted_tls()?,
    };
    Ok(config.connect(tls)?)
}

#[allow(deprecated)] // ring, as the rest of the control service's TLS
fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS verifying the server against the CA in `root`.
fn verified_tls(root: &str) -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    let fail = |reason: String| StoreError::Config(format!("sslrootcert {root}: {reason}"));
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(root).map_err(|e| fail(e.to_string()))? {
        roots
            .add(certificate.map_err(|e| fail(e.to_string()))?)
            .map_err(|e| fail(e.to_string()))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// TLS that encrypts without authenticating the server (libpq's `prefer` and `require`):
/// against an eavesdropper, not against a man in the middle; `sslrootcert` is for that.
fn encrypted_tls() -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    let provider = provider();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(AnyServerCertificate(provider)))
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// Accepts the server's certificate unverified; the handshake's signatures are still checked
/// (the server holds the key of the certificate it sent).
#[derive(Debug)]
struct AnyServerCertificate(std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &rustls_pki_types::CertificateDer<'_>,
        signature: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            certificate,
            signature,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &rustls_pki_types::CertificateDer<'_>,
        signature: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            certificate,
            signature,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

pub struct PostgresStore {
    url: String,
    client: Client,
}

impl PostgresStore {
    pub fn connect(url: &str) -> Result<Self, StoreError> {
        let mut client = connect(url)?;
        migrate(&mut client)?;
        Ok(Self {
            url: url.to_owned(),
            client,
        })
    }

    /// The connection, opened again if the last one broke (a restarted server, a network cut).
    fn client(&mut self) -> Result<&mut Client, StoreError> {
        if self.client.is_closed() {
            self.client = connect(&self.url)?;
        }
        Ok(&mut self.client)
    }

    pub fn load(&mut self) -> Result<Snapshot, StoreError> {
        load_consistent(self.client()?)
    }

    pub fn begin(&mut self) -> Result<postgres::Transaction<'_>, StoreError> {
        let mut tx = self.client()?.transaction()?;
        // Every writer locks this row first: writes take turns, and what this transaction
        // reads from here on stays current until it commits.
        tx.execute("SELECT version FROM meta WHERE id = 1 FOR UPDATE", &[])?;
        Ok(tx)
    }
}

fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let known = MIGRATIONS.len() as i64;
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute("SET LOCAL client_min_messages = warning")?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY)")?;
    let found: i64 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM schema_migrations", &[])?
        .get(0);
    if found > known {
        return Err(StoreError::SchemaTooNew { found, known });
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(usize::try_from(found).unwrap_or(0)) {
        tx.batch_execute(migration)?;
        let version = index as i64 + 1;
        tx.execute("INSERT INTO schema_migrations (version) VALUES ($1)", &[&version])?;
    }
    tx.commit()?;
    Ok(())
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(super) fn stored_versions(tx: &mut postgres::Transaction<'_>) -> Result<(u64, u64), StoreError> {
    let row = tx.query_one("SELECT version, endpoints_version FROM meta WHERE id = 1", &[])?;
    Ok((to_u64(row.get(0)), to_u64(row.get(1))))
}

/// Everything, from one snapshot of the database (a read-only repeatable-read transaction).
fn load_consistent(client: &mut Client) -> Result<Snapshot, StoreError> {
    let mut tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()?;
    let snapshot = load(&mut tx)?;
    tx.commit()?;
    Ok(snapshot)
}

pub(super) fn load(tx: &mut postgres::Transaction<'_>) -> Result<Snapshot, StoreError> {
    let mut load_balancers = BTreeMap::new();
    for row in tx.query("SELECT name, doc FROM load_balancers", &[])? {
        load_balancers.insert(row.get::<_, String>(0), from_doc(row.get(1))?);
    }
    let mut registry = Registry::default();
    for row in tx.query("SELECT id, doc FROM instances", &[])? {
        registry
            .instances
            .insert(row.get::<_, String>(0), from_doc(row.get(1))?);
    }
    let mut keys = Vec::new();
    for row in tx.query(
        "SELECT id, secret, created_at, retired_at FROM cookie_keys ORDER BY created_at, id",
        &[],
    )? {
        let id: i32 = row.get(0);
        let id = u16::try_from(id).map_err(|_| StoreError::Corrupt(format!("key id {id} out of range")))?;
        keys.push(StoredCookieKey {
            id,
            secret: row.get(1),
            created_at: row.get(2),
            retired_at: row.get(3),
        });
    }
    let mut health = Vec::new();
    for row in tx.query("SELECT load_balancer, instance, doc FROM health", &[])? {
        health.push((
            (row.get::<_, String>(0), row.get::<_, String>(1)),
            from_doc(row.get(2))?,
        ));
    }
    let mut certificates = Vec::new();
    for row in tx.query("SELECT doc, sealed_key FROM server_certificates", &[])? {
        certificates.push(stored_certificate(row.get(0), row.get(1))?);
    }
    let (version, endpoints_version) = stored_versions(tx)?;
    Ok(Snapshot {
        certificates,
        health: registered_health(&load_balancers, health),
        load_balancers,
        registry,
        keys,
        version,
        endpoints_version,
    })
}

pub(super) fn require_leader(tx: &mut postgres::Transaction<'_>, holder: &str) -> Result<(), StoreError> {
    let held = tx.query_opt(
        "SELECT 1 FROM leases WHERE name = $1 AND holder = $2 AND expires_at > now()",
        &[&LEADER_LEASE, &holder],
    )?;
    held.map(|_| ()).ok_or(StoreError::NotLeader)
}

pub(super) fn apply(tx: &mut postgres::Transaction<'_>, changes: &[Change<'_>]) -> Result<(), StoreError> {
    for change in changes {
        match change {
            Change::PutLoadBalancer(lb) => {
                tx.execute(
                    "INSERT INTO load_balancers (name, doc) VALUES ($1, $2)
                     ON CONFLICT (name) DO UPDATE SET doc = excluded.doc",
                    &[&lb.name, &to_doc(lb)?],
                )?;
                let registered: Vec<String> = lb.instances.iter().chain(lb.draining.keys()).cloned().collect();
                tx.execute(
                    "DELETE FROM health WHERE load_balancer = $1 AND NOT (instance = ANY($2))",
                    &[&lb.name, &registered],
                )?;
            }
            Change::DeleteLoadBalancer(name) => {
                tx.execute("DELETE FROM load_balancers WHERE name = $1", &[name])?;
                tx.execute("DELETE FROM health WHERE load_balancer = $1", &[name])?;
            }
            Change::ReplaceRegistry(registry) => {
                tx.execute("DELETE FROM instances", &[])?;
                for (id, address) in &registry.instances {
                    tx.execute(
                        "INSERT INTO instances (id, doc) VALUES ($1, $2)",
                        &[id, &to_doc(address)?],
                    )?;
                }
            }
            Change::ReplaceKeys(ring) => {
                tx.execute("DELETE FROM cookie_keys", &[])?;
                for key in ring.iter() {
                    tx.execute(
                        "INSERT INTO cookie_keys (id, secret, created_at, retired_at) VALUES ($1, $2, $3, $4)",
                        &[
                            &i32::from(key.id),
                            &key.secret.as_slice(),
                            &key.created_at,
                            &key.retired_at,
                        ],
                    )?;
                }
            }
            Change::PutCertificate(sealed) => {
                tx.execute(
                    "INSERT INTO server_certificates (id, doc, sealed_key) VALUES ($1, $2, $3)
                     ON CONFLICT (id) DO UPDATE SET doc = excluded.doc, sealed_key = excluded.sealed_key",
                    &[
                        &sealed.certificate.id,
                        &to_doc(&sealed.certificate)?,
                        &sealed.sealed_key,
                    ],
                )?;
            }
            Change::DeleteCertificate(id) => {
                tx.execute("DELETE FROM server_certificates WHERE id = $1", &[id])?;
            }
            Change::PutHealth((lb, id), health) => {
                tx.execute(
                    "INSERT INTO health (load_balancer, instance, doc) VALUES ($1, $2, $3)
                     ON CONFLICT (load_balancer, instance) DO UPDATE SET doc = excluded.doc",
                    &[lb, id, &to_doc(health)?],
                )?;
            }
        }
    }
    Ok(())
}

pub(super) fn commit(
    mut tx: postgres::Transaction<'_>,
    version: u64,
    endpoints_version: u64,
) -> Result<(), StoreError> {
    let (version, endpoints_version) = (to_i64(version), to_i64(endpoints_version));
    tx.execute(
        "UPDATE meta SET version = $1, endpoints_version = $2 WHERE id = 1",
        &[&version, &endpoints_version],
    )?;
    // Delivered to every listening replica when (and only if) the transaction commits.
    tx.execute("SELECT pg_notify($1, $2)", &[&CHANGES_CHANNEL, &version.to_string()])?;
    tx.commit()?;
    Ok(())
}

/// A replica's own connection on which it hears of every commit.
pub struct ChangeListener {
    client: Client,
}

impl ChangeListener {
    pub fn connect(url: &str) -> Result<Self, StoreError> {
        let mut client = connect(url)?;
        client.batch_execute(&format!("LISTEN {CHANGES_CHANNEL}"))?;
        Ok(Self { client })
    }

    /// Waits up to `limit` for a commit's notification; true if one (or more) came.
    pub fn wait(&mut self, limit: Duration) -> Result<bool, StoreError> {
        let mut notifications = self.client.notifications();
        let heard = notifications.timeout_iter(limit).next()?.is_some();
        // Several commits in a row are one reload.
        let mut pending = notifications.iter();
        while pending.next()?.is_some() {}
        Ok(heard)
    }

    pub fn stored_version(&mut self) -> Result<u64, StoreError> {
        let row = self.client.query_one("SELECT version FROM meta WHERE id = 1", &[])?;
        Ok(to_u64(row.get(0)))
    }

    pub fn load(&mut self) -> Result<Snapshot, StoreError> {
        load_consistent(&mut self.client)
    }
}

/// A replica's connection for its lease and heartbeat.
pub struct Coordination {
    client: Client,
}

/// Another replica, as its heartbeat says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub id: String,
    pub url: String,
}

impl Coordination {
    pub fn connect(url: &str) -> Result<Self, StoreError> {
        Ok(Self { client: connect(url)? })
    }

    /// Takes or renews the leader lease for `holder`, for `lease` from the database's clock;
    /// true if `holder` holds it now. Taken only when free or expired.
    pub fn lead(&mut self, holder: &str, lease: Duration) -> Result<bool, StoreError> {
        let row = self.client.query_opt(
            "INSERT INTO leases (name, holder, expires_at)
             VALUES ($1, $2, now() + make_interval(secs => $3))
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
             WHERE leases.holder = excluded.holder OR leases.expires_at < now()
             RETURNING holder",
            &[&LEADER_LEASE, &holder, &lease.as_secs_f64()],
        )?;
        Ok(row.is_some())
    }

    /// Gives the lease up (a clean stop), so another replica takes it at once.
    pub fn step_down(&mut self, holder: &str) -> Result<(), StoreError> {
        self.client.execute(
            "DELETE FROM leases WHERE name = $1 AND holder = $2",
            &[&LEADER_LEASE, &holder],
        )?;
        Ok(())
    }

    /// Who leads now, if anyone.
    pub fn leader(&mut self) -> Result<Option<String>, StoreError> {
        let row = self.client.query_opt(
            "SELECT holder FROM leases WHERE name = $1 AND expires_at > now()",
            &[&LEADER_LEASE],
        )?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Says replica `id` is alive and answers at `url`; returns the other replicas heard from
    /// within `within`.
    pub fn heartbeat(&mut self, id: &str, url: &str, within: Duration) -> Result<Vec<Peer>, StoreError> {
        self.client.execute(
            "INSERT INTO replicas (id, url, seen_at) VALUES ($1, $2, now())
             ON CONFLICT (id) DO UPDATE SET url = excluded.url, seen_at = excluded.seen_at",
            &[&id, &url],
        )?;
        // Replicas long gone are forgotten.
        self.client
            .execute("DELETE FROM replicas WHERE seen_at < now() - interval '1 hour'", &[])?;
        let rows = self.client.query(
            "SELECT id, url FROM replicas WHERE id <> $1 AND seen_at > now() - make_interval(secs => $2)
             ORDER BY id",
            &[&id, &within.as_secs_f64()],
        )?;
        Ok(rows
            .iter()
            .map(|r| Peer {
                id: r.get(0),
                url: r.get(1),
            })
            .collect())
    }

    /// Replica `id` stops: no peer waits for it any more.
    pub fn leave(&mut self, id: &str) -> Result<(), StoreError> {
        self.client.execute("DELETE FROM replicas WHERE id = $1", &[&id])?;
        Ok(())
    }
}
