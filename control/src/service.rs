//! The service's state: the domain in memory, mirrored durably in the store, with a version
//! that every change bumps and that long-polling filters wait on.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sticky_core::{CookieSettings, FilterState};
use tokio::sync::watch;

use crate::bootstrap::BootstrapFile;
use crate::commands::{Command, RotateKeys};
use crate::domain::{Domain, Write, unix_now};
use crate::error::ApiError;
use crate::followers::Followers;
use crate::health::InstanceHealth;
use crate::keys::RotatingKeys;
use crate::metrics::Metrics;
use crate::model::{ListenerBinding, Policy};
use crate::replica::{Replica, ReplicaConfig};
use crate::sealing::{MasterKey, OpenedWith};
use crate::sigv4::AccessKeys;
use crate::store::{Change, SealedCertificate, Snapshot, Store, StoreError, StoredCookieKey};

/// How long after a start every live filter has polled again: the filter's longest retry
/// backoff (`sticky_core::poll::BACKOFF_MAX_MS`) plus a margin.
pub const FOLLOWER_DISCOVERY: Duration = Duration::from_millis(sticky_core::poll::BACKOFF_MAX_MS + 500);

#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub access_keys: AccessKeys,
    /// How long a long-poll waits for a change before answering with the current state.
    pub long_poll_timeout: Duration,
    /// Rotate the active cookie key this often.
    pub key_rotation: Duration,
    /// Keep a retired key at least this long (and at least the longest LB cookie duration).
    pub key_retention: Duration,
    /// Attributes of the stickiness cookie the filters issue.
    pub cookie: CookieSettings,
    /// How long an API call that changed the state waits, before answering, for every live
    /// follower (filter poll, Envoy EDS or xDS) to hold the change. Zero: answer at once.
    pub sync_timeout: Duration,
    /// Where load balancers' listeners bind on the bouncer (served over xDS).
    pub listener_binding: ListenerBinding,
    /// How long Envoy waits for a target to accept a connection or acknowledge what was sent
    /// to it (served over xDS; `xds::resources::DEFAULT_TARGET_CONNECT_TIMEOUT`).
    pub target_connect_timeout: Duration,
    /// This process among the replicas sharing a store.
    pub replica: ReplicaConfig,
    /// What the store's secrets (cookie keys, certificates' private keys) are sealed under.
    pub master_key: MasterKey,
}

/// Stored certificates with their private keys opened with `master_key`; and the ids of those
/// a previous master key sealed.
fn open_certificates(
    master_key: &MasterKey,
    stored: Vec<SealedCertificate>,
) -> Result<
    (
        std::collections::BTreeMap<String, crate::certificates::ServerCertificate>,
        Vec<String>,
    ),
    String,
> {
    let mut certificates = std::collections::BTreeMap::new();
    let mut stale = Vec::new();
    for sealed in stored {
        let mut certificate = sealed.certificate;
        let (key, opened_with) = master_key
            .open_reporting(&certificate.id, &sealed.sealed_key)
            .map_err(|e| {
                format!(
                    "server certificate {}: {e}: start with the --master-key-file it was sealed under",
                    certificate.name
                )
            })?;
        if opened_with == OpenedWith::Previous {
            stale.push(certificate.id.clone());
        }
        certificate.private_key = Some(crate::certificates::PrivateKeyPem::new(key));
        certificates.insert(certificate.id.clone(), certificate);
    }
    Ok((certificates, stale))
}

/// What a cookie key's sealed secret is bound to: a sealed secret moved to another key's row
/// does not open.
fn cookie_key_record(id: u16, created_at: i64) -> String {
    format!("cookie-key {id} {created_at}")
}

/// The stored key ring opened with `master_key` (none before the first start); and whether it
/// is to be sealed again (a previous master key sealed it, or it was stored in clear by a
/// version that did not seal keys).
fn open_keys(master_key: &MasterKey, stored: Vec<StoredCookieKey>) -> Result<(Option<RotatingKeys>, bool), String> {
    if stored.is_empty() {
        return Ok((None, false));
    }
    let mut stale = false;
    let mut keys = Vec::with_capacity(stored.len());
    for key in stored {
        let secret: Vec<u8> = match std::str::from_utf8(&key.secret)
            .ok()
            .filter(|t| crate::sealing::is_sealed(t))
        {
            Some(sealed) => {
                let (hex_secret, opened_with) = master_key
                    .open_reporting(&cookie_key_record(key.id, key.created_at), sealed)
                    .map_err(|e| {
                        format!(
                            "cookie key {}: {e}: start with the --master-key-file it was sealed under",
                            key.id
                        )
                    })?;
                stale |= opened_with == OpenedWith::Previous;
                hex::decode(hex_secret).map_err(|_| format!("cookie key {} is not hexadecimal", key.id))?
            }
            None => {
                stale = true;
                key.secret
            }
        };
        let secret: [u8; 32] = secret
            .try_into()
            .map_err(|_| format!("cookie key {} is not 32 bytes", key.id))?;
        keys.push(crate::keys::CookieKey {
            id: key.id,
            secret,
            created_at: key.created_at,
            retired_at: key.retired_at,
        });
    }
    RotatingKeys::from_keys(keys).map(|ring| (Some(ring), stale))
}

/// The store's failures as the API reports them.
fn store_error(e: StoreError) -> ApiError {
    ApiError::internal(e)
}

pub struct Service {
    pub config: ServiceConfig,
    /// Held by one write at a time (taken before `inner`).
    store: Mutex<Store>,
    inner: Mutex<Domain>,
    version: watch::Sender<u64>,
    /// Per load balancer with a filter waiting, its state version ([`Domain::state_version`]):
    /// a change wakes the long-polls of the load balancers it changed, not every one.
    state_versions: Mutex<std::collections::HashMap<String, watch::Sender<Option<u64>>>>,
    /// Set once the service is stopping: waiting long-polls answer at once.
    stop: watch::Sender<bool>,
    pub metrics: Metrics,
    pub followers: Followers,
    pub replica: Replica,
}

/// The versions a write committed: what an API call that made it waits for every follower to
/// hold before it answers ("in force").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    pub version: u64,
    /// The endpoints' version after the write (unchanged if it left them alone).
    pub endpoints_version: u64,
}

/// What a write gave: the closure's result, and the versions it committed (none when it had
/// nothing to change).
#[derive(Debug)]
pub struct Done<R> {
    pub value: R,
    pub committed: Option<Committed>,
}

impl<R> Done<R> {
    /// A result that changed nothing (a read).
    pub fn read(value: R) -> Self {
        Self { value, committed: None }
    }

    pub fn map<S>(self, f: impl FnOnce(R) -> S) -> Done<S> {
        Done {
            value: f(self.value),
            committed: self.committed,
        }
    }
}

impl Service {
    /// Loads the store (creating the key ring on first start), applies the bootstrap file.
    pub fn open(
        config: ServiceConfig,
        mut store: Store,
        bootstrap: Option<BootstrapFile>,
    ) -> anyhow::Result<Arc<Self>> {
        let snapshot = store.load()?;
        let shared = store.is_shared();
        let now = unix_now();
        let (keys, keys_stale) = open_keys(&config.master_key, snapshot.keys).map_err(|e| anyhow::anyhow!("{e}"))?;
        let keys_stored = keys.is_some() && !keys_stale;
        let keys = match keys {
            Some(keys) => keys,
            None => RotatingKeys::generate(now).map_err(|e| anyhow::anyhow!("cannot draw a key: {e}"))?,
        };
        // Alone on its store, the version moves on at every start (health starts over), so a
        // filter never mistakes new state for old. Replicas share the stored versions: each
        // serves the same state, health included, under the same version.
        let version = if shared { snapshot.version } else { snapshot.version + 1 };
        let endpoints_version = if shared { snapshot.endpoints_version } else { version };
        let (certificates, stale_certificates) =
            open_certificates(&config.master_key, snapshot.certificates).map_err(|e| anyhow::anyhow!("{e}"))?;
        let inner = Domain::new(
            snapshot.load_balancers,
            snapshot.registry,
            (keys, keys_stored),
            (version, endpoints_version),
            snapshot.health,
            certificates,
        );
        // Filters retry a lost control service within their longest backoff (5 s).
        let discovery = if config.sync_timeout.is_zero() {
            Duration::ZERO
        } else {
            FOLLOWER_DISCOVERY
        };
        let replica = Replica::new(config.replica.clone(), shared);
        let service = Arc::new(Self {
            config,
            store: Mutex::new(store),
            inner: Mutex::new(inner),
            version: watch::channel(version).0,
            state_versions: Mutex::default(),
            stop: watch::channel(false).0,
            metrics: Metrics::default(),
            followers: Followers::new(discovery),
            replica,
        });
        // The bootstrap's certificates first: its listeners name them.
        if let Some(bootstrap) = &bootstrap {
            let uploads = crate::bootstrap::read_certificates(&bootstrap.certificates)
                .map_err(|e| anyhow::anyhow!("{}", e.message))?;
            service
                .execute(crate::commands::certificates::UploadMissingCertificates(uploads))
                .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        }
        // Computed from the latest stored state: replicas starting together draw one key ring
        // and apply a bootstrap once.
        service
            .write(|inner| {
                // Stored before load balancers had an address of their own: `write` gives them one.
                let mut writes: Vec<Write> = inner
                    .load_balancers
                    .values()
                    .filter(|lb| lb.address.is_none())
                    .map(|lb| Write::PutLoadBalancer(lb.clone()))
                    .collect();
                // A first start, or keys and certificates sealed under a previous master key (or
                // keys stored in clear): sealed under the current one.
                if !inner.keys_stored {
                    writes.push(Write::ReplaceKeys(inner.keys.clone()));
                }
                writes.extend(
                    stale_certificates
                        .iter()
                        .filter_map(|id| inner.certificates.get(id))
                        .map(|certificate| Write::PutCertificate(certificate.clone())),
                );
                if let Some(bootstrap) = bootstrap {
                    writes.extend(bootstrap.plan(inner, &service.config.cookie)?.0);
                }
                Ok((writes, ()))
            })
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        Ok(service)
    }

    fn lock(&self) -> MutexGuard<'_, Domain> {
        // A panic while holding the lock cannot leave the domain half-changed (changes are
        // applied only after the store committed), so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn read<R>(&self, f: impl FnOnce(&Domain) -> R) -> R {
        f(&self.lock())
    }

    /// Computes writes from the current state, commits them durably, then applies them. If the
    /// closure or the store fails, nothing changes. On a shared store the closure sees the
    /// latest stored state (other replicas' writes wait meanwhile).
    pub fn write<R>(&self, f: impl FnOnce(&Domain) -> Result<(Vec<Write>, R), ApiError>) -> Result<Done<R>, ApiError> {
        self.write_as(None, f)
    }

    /// Plans `command` on the current state and commits its writes in one transaction.
    pub fn execute<C: Command>(&self, command: C) -> Result<Done<C::Output>, ApiError> {
        self.write(|domain| command.plan(domain, &self.config.cookie))
    }

    /// [`Service::write`], committed only if `leader` (this replica) still holds the lease.
    fn write_as<R>(
        &self,
        leader: Option<&str>,
        f: impl FnOnce(&Domain) -> Result<(Vec<Write>, R), ApiError>,
    ) -> Result<Done<R>, ApiError> {
        let mut store = self.store.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut tx = store.begin().map_err(store_error)?;
        if let Some((stored, _)) = tx.stored_versions().map_err(store_error)?
            && stored > self.version()
        {
            let snapshot = tx.load().map_err(store_error)?;
            self.catch_up(snapshot);
        }
        let mut inner = self.lock();
        let (mut writes, result) = f(&inner)?;
        if writes.is_empty() {
            return Ok(Done::read(result));
        }
        inner.bind(&mut writes, &self.config.listener_binding)?;
        let version = inner.version + 1;
        let endpoints_changed = writes.iter().any(|w| inner.changes_endpoints(w));
        let endpoints_version = if endpoints_changed {
            version
        } else {
            inner.endpoints_version
        };
        let sealed = writes
            .iter()
            .filter_map(|w| match w {
                Write::PutCertificate(certificate) => Some(self.seal(certificate)),
                _ => None,
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut sealed_iter = sealed.iter();
        let sealed_rings = writes
            .iter()
            .filter_map(|w| match w {
                Write::ReplaceKeys(keys) => Some(self.seal_keys(keys)),
                _ => None,
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut sealed_rings_iter = sealed_rings.iter();
        let changes: Vec<Change<'_>> = writes
            .iter()
            .filter_map(|w| {
                Some(match w {
                    Write::PutLoadBalancer(lb) => Change::PutLoadBalancer(lb),
                    Write::DeleteLoadBalancer(name) => Change::DeleteLoadBalancer(name),
                    Write::ReplaceRegistry(registry) => Change::ReplaceRegistry(registry),
                    Write::ReplaceKeys(_) => Change::ReplaceKeys(sealed_rings_iter.next()?),
                    Write::PutHealth(key, health) => Change::PutHealth(key, health),
                    Write::PutCertificate(_) => Change::PutCertificate(sealed_iter.next()?),
                    Write::DeleteCertificate(id) => Change::DeleteCertificate(id),
                })
            })
            .collect();
        if let Some(holder) = leader {
            tx.require_leader(holder).map_err(store_error)?;
        }
        tx.apply(&changes).map_err(store_error)?;
        tx.commit(version, endpoints_version).map_err(store_error)?;
        drop(changes);
        inner.apply(writes, version, endpoints_version);
        drop(inner);
        drop(store);
        self.published(version);
        Ok(Done {
            value: result,
            committed: Some(Committed {
                version,
                endpoints_version,
            }),
        })
    }

    /// `keys` as the store keeps them: each secret sealed under the master key.
    fn seal_keys(&self, keys: &RotatingKeys) -> Result<Vec<StoredCookieKey>, ApiError> {
        keys.keys()
            .iter()
            .map(|key| {
                let sealed = self
                    .config
                    .master_key
                    .seal(&cookie_key_record(key.id, key.created_at), &hex::encode(key.secret))
                    .map_err(ApiError::internal)?;
                Ok(StoredCookieKey {
                    id: key.id,
                    secret: sealed.into_bytes(),
                    created_at: key.created_at,
                    retired_at: key.retired_at,
                })
            })
            .collect()
    }

    /// `certificate` as the store keeps it: its private key sealed under the master key.
    fn seal(&self, certificate: &crate::certificates::ServerCertificate) -> Result<SealedCertificate, ApiError> {
        let master_key = &self.config.master_key;
        let key = certificate
            .private_key
            .as_ref()
            .ok_or_else(|| ApiError::internal(format!("certificate {} has no private key to store", certificate.id)))?;
        Ok(SealedCertificate {
            certificate: crate::certificates::ServerCertificate {
                private_key: None,
                ..certificate.clone()
            },
            sealed_key: master_key
                .seal(&certificate.id, key.expose())
                .map_err(ApiError::internal)?,
        })
    }

    /// Takes the state another replica committed, if newer than what this one holds.
    pub fn catch_up(&self, snapshot: Snapshot) {
        let opened = open_certificates(&self.config.master_key, snapshot.certificates)
            .and_then(|(certificates, _)| Ok((certificates, open_keys(&self.config.master_key, snapshot.keys)?.0)));
        let (certificates, keys) = match opened {
            Ok(opened) => opened,
            Err(error) => {
                tracing::error!(%error, "the store's secrets do not open: this replica keeps the state it has");
                return;
            }
        };
        let mut inner = self.lock();
        if snapshot.version <= inner.version {
            return;
        }
        let (keys, keys_stored) = match keys {
            Some(keys) => (keys, true),
            None => (inner.keys.clone(), inner.keys_stored),
        };
        let newer = Domain::new(
            snapshot.load_balancers,
            snapshot.registry,
            (keys, keys_stored),
            (snapshot.version, snapshot.endpoints_version),
            snapshot.health,
            certificates,
        );
        inner.replace(newer);
        let version = inner.version;
        drop(inner);
        self.metrics.count("sticky_control_catch_ups_total", &[]);
        self.published(version);
    }

    /// Records a probe's result. A flip (a change of status) is a new version: alone on its
    /// store, kept in memory; on a shared store, committed (by the leader only) so that every
    /// replica serves it. Fails only when a shared store could not take a flip.
    pub fn set_health(&self, key: (String, String), health: InstanceHealth) -> Result<(), ApiError> {
        let mut inner = self.lock();
        let still_registered = inner.load_balancers.get(&key.0).is_some_and(|lb| lb.has_target(&key.1));
        if !still_registered {
            return Ok(());
        }
        let flipped = inner.health.get(&key).map(|h| h.status) != Some(health.status);
        if !flipped {
            inner.health.insert(key, health);
            return Ok(());
        }
        if self.replica.is_shared() {
            drop(inner);
            let holder = self.replica.config.id.clone();
            self.write_as(Some(&holder), |inner| {
                let still_registered = inner.load_balancers.get(&key.0).is_some_and(|lb| lb.has_target(&key.1));
                Ok((
                    if still_registered {
                        vec![Write::PutHealth(key, health)]
                    } else {
                        vec![]
                    },
                    (),
                ))
            })?;
        } else {
            inner.health.insert(key.clone(), health);
            inner.version += 1;
            inner.endpoints_version = inner.version;
            let version = inner.version;
            inner.touch(&key.0, version);
            drop(inner);
            self.published(version);
        }
        self.metrics.count("sticky_control_health_flips_total", &[]);
        Ok(())
    }

    /// Stops the service's waits: every long-poll answers now, so a graceful shutdown does not
    /// wait out their time-outs.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    pub fn is_stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Resolves once [`Service::stop`] was called.
    pub async fn stopping(&self) {
        let mut stop = self.stop.subscribe();
        let _ = stop.wait_for(|stopping| *stopping).await;
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Announces `version`, and the state versions it moved to the long-polls waiting on them.
    fn published(&self, version: u64) {
        let mut senders = self
            .state_versions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        senders.retain(|_, sender| sender.receiver_count() > 0);
        if !senders.is_empty() {
            self.read(|inner| {
                for (load_balancer, sender) in senders.iter() {
                    sender.send_if_modified(|held| {
                        let now = inner.state_version(load_balancer);
                        std::mem::replace(held, now) != now
                    });
                }
            });
        }
        drop(senders);
        self.version.send_replace(version);
    }

    /// The state version of load balancer `name`'s listeners, as it moves (`None`: gone).
    pub fn watch_state(&self, name: &str) -> watch::Receiver<Option<u64>> {
        let mut senders = self
            .state_versions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(sender) = senders.get(name) {
            return sender.subscribe();
        }
        let (sender, receiver) = watch::channel(self.read(|inner| inner.state_version(name)));
        senders.insert(name.to_owned(), sender);
        receiver
    }

    pub fn version(&self) -> u64 {
        *self.version.borrow()
    }

    /// The current version, and the version at which the endpoints Envoy fetches last changed.
    pub fn versions(&self) -> (u64, u64) {
        self.read(|inner| (inner.version, inner.endpoints_version))
    }

    /// Whether some drain ends at or before `now`.
    pub fn drains_due(&self, now: i64) -> bool {
        self.read(|inner| {
            inner
                .load_balancers()
                .any(|lb| lb.draining.values().any(|end| *end <= now))
        })
    }

    /// Ends the drains due at `now`: their instances leave EDS (and the filters' state, with
    /// session draining), so the sessions still on them move, with rewritten cookies. On a
    /// shared store, only while this replica holds the leader lease. Returns how many ended.
    pub fn end_drains(&self, now: i64) -> Result<usize, ApiError> {
        let holder = self.replica.is_shared().then(|| self.replica.config.id.clone());
        self.write_as(holder.as_deref(), |inner| {
            let mut writes = Vec::new();
            let mut ended = 0;
            for lb in inner.load_balancers() {
                if lb.draining.values().any(|end| *end <= now) {
                    let mut lb = lb.clone();
                    let before = lb.draining.len();
                    lb.draining.retain(|_, end| *end > now);
                    ended += before - lb.draining.len();
                    writes.push(Write::PutLoadBalancer(lb));
                }
            }
            Ok((writes, ended))
        })
        .map(|done| done.value)
    }

    /// Rotates the cookie key when due and drops retired keys no cookie can still use.
    pub fn maintain_keys(&self, now: i64) -> Result<bool, ApiError> {
        let rotation = i64::try_from(self.config.key_rotation.as_secs()).unwrap_or(i64::MAX);
        let retention = i64::try_from(self.config.key_retention.as_secs()).unwrap_or(i64::MAX);
        // On a shared store, only while this replica holds the leader lease.
        let holder = self.replica.is_shared().then(|| self.replica.config.id.clone());
        self.write_as(holder.as_deref(), |inner| {
            let longest_lb_cookie = inner
                .load_balancers
                .values()
                .flat_map(|lb| lb.policies.values())
                .filter_map(|p| match p {
                    // A cookie lives at most its period past its last issue, or its absolute
                    // lifetime when it has no period.
                    Policy::LbCookie {
                        cookie_expiration_period,
                        max_lifetime,
                    } => i64::try_from(cookie_expiration_period.unwrap_or(0).max(max_lifetime.unwrap_or(0))).ok(),
                    Policy::AppCookie { .. } | Policy::SslNegotiation(_) => None,
                })
                .max()
                .unwrap_or(0);
            let mut keys = inner.keys.clone();
            let mut changed = keys.prune(now, retention.max(longest_lb_cookie));
            if keys.rotation_due(now, rotation) {
                keys.rotate(now).map_err(ApiError::internal)?;
                changed = true;
            }
            Ok(if changed {
                (vec![Write::ReplaceKeys(keys)], true)
            } else {
                (vec![], false)
            })
        })
        .map(|done| done.value)
    }

    /// Rotates the cookie key now.
    pub fn rotate_keys(&self) -> Result<u16, ApiError> {
        self.execute(RotateKeys).map(|done| done.value)
    }

    /// The filter state of listener `port` of load balancer `name`.
    /// Waits until every live follower of this replica holds what `version` (and
    /// `endpoints_version`) serves it: see [`crate::followers::Followers::wait_until_current`].
    pub async fn wait_until_current(
        &self,
        version: u64,
        endpoints_version: u64,
        limit: Duration,
    ) -> Result<(), Vec<String>> {
        let states = |load_balancer: &str| self.read(|inner| inner.state_version(load_balancer));
        self.followers
            .wait_until_current(version, endpoints_version, limit, &states)
            .await
    }

    /// The live followers of this replica still behind what they are served now.
    pub fn lagging(&self) -> Vec<String> {
        let states = |load_balancer: &str| self.read(|inner| inner.state_version(load_balancer));
        self.followers.lagging(u64::MAX, 0, &states)
    }

    pub fn filter_state(&self, name: &str, port: u16) -> Option<FilterState> {
        self.read(|inner| crate::feed::filter_state(inner, &self.config.cookie, name, port))
    }
}

/// The example bootstrap applied to a fresh store in its own directory (for tests).
#[cfg(test)]
pub(crate) fn example_service(test: &str) -> (Arc<Service>, std::path::PathBuf) {
    let text = include_str!("../bootstrap.example.json");
    let bootstrap: BootstrapFile = serde_json::from_str(text).unwrap();
    let dir = std::env::temp_dir().join(format!("sticky-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = Store::open(&crate::store::StoreLocation::Sqlite(dir.join("db"))).unwrap();
    let config = ServiceConfig {
        access_keys: AccessKeys::default(),
        long_poll_timeout: Duration::from_secs(1),
        key_rotation: Duration::from_secs(60),
        key_retention: Duration::from_secs(60),
        cookie: CookieSettings::default(),
        sync_timeout: Duration::ZERO,
        listener_binding: Default::default(),
        target_connect_timeout: crate::xds::resources::DEFAULT_TARGET_CONNECT_TIMEOUT,
        replica: Default::default(),
        master_key: crate::sealing::MasterKey::generate().unwrap(),
    };
    (Service::open(config, store, Some(bootstrap)).unwrap(), dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::HealthStatus;
    use crate::model::LoadBalancer;

    #[test]
    fn the_endpoints_version_moves_only_when_what_eds_serves_changes() {
        let (service, dir) = example_service("endpoints-version");
        let put = |change: &dyn Fn(&mut LoadBalancer)| {
            service
                .write(|inner| {
                    let mut lb = inner.load_balancer("terraform-balancer").unwrap().clone();
                    change(&mut lb);
                    Ok((vec![Write::PutLoadBalancer(lb)], ()))
                })
                .unwrap();
            service.versions()
        };
        let (_, endpoints_at_start) = service.versions();

        let (version, endpoints) = put(&|lb| {
            lb.policies.insert(
                "sticky".to_owned(),
                Policy::LbCookie {
                    cookie_expiration_period: Some(60),
                    max_lifetime: None,
                },
            );
            if let Some(listener) = lb.listeners.get_mut(&80) {
                listener.policy_names = vec!["sticky".to_owned()];
            }
        });
        assert!(version > endpoints_at_start, "a policy change is a new version");
        assert_eq!(endpoints, endpoints_at_start, "… that leaves the endpoints alone");
        service.rotate_keys().unwrap();
        assert_eq!(service.versions().1, endpoints_at_start, "so does a key rotation");

        let (version, endpoints) = put(&|lb| {
            lb.instances.pop_last();
        });
        assert_eq!(endpoints, version, "deregistering a target changes the endpoints");

        let first = service.read(|inner| {
            inner
                .load_balancer("terraform-balancer")
                .unwrap()
                .instances
                .first()
                .cloned()
        });
        let healthy = InstanceHealth {
            status: HealthStatus::InService,
            consecutive_ok: 2,
            consecutive_failed: 0,
            last_failure: String::new(),
        };
        service
            .set_health(("terraform-balancer".to_owned(), first.unwrap()), healthy)
            .unwrap();
        let (version, endpoints) = service.versions();
        assert_eq!(endpoints, version, "so does a health flip");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_example_bootstrap_file_applies() {
        let (service, dir) = example_service("bootstrap-test");
        assert_eq!(
            service.read(|inner| inner.load_balancer("terraform-balancer").unwrap().address),
            Some("127.0.100.1".parse().unwrap()),
            "the pool's first address"
        );
        let state = service.filter_state("terraform-balancer", 80).unwrap();
        let addresses: Vec<&str> = state.targets.iter().map(|t| t.address.as_str()).collect();
        assert_eq!(addresses, ["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"]);
        assert!(
            state.targets.iter().all(|t| !t.healthy),
            "not healthy before the first probe"
        );
        assert!(
            sticky_core::CompiledListener::compile(&state).is_ok(),
            "the feed serves a state the filter accepts"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
