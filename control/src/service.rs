//! The service's state: the domain in memory, mirrored durably in the store, with a version
//! that every change bumps and that long-polling filters wait on.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sticky_core::{CookieSettings, FilterState};
use tokio::sync::watch;

use crate::bootstrap::BootstrapFile;
use crate::error::ApiError;
use crate::followers::Followers;
use crate::health::{HealthStatus, InstanceHealth};
use crate::keys::RotatingKeys;
use crate::metrics::Metrics;
use crate::model::{ListenerBinding, LoadBalancer, Policy, Registry};
use crate::replicas::{Replica, ReplicaConfig};
use crate::sigv4::AccessKeys;
use crate::store::{Change, Snapshot, Store, StoreError};

/// How long after a start every live filter has polled again: the filter's longest retry
/// backoff (`sticky_core::poll::BACKOFF_MAX_MS`) plus a margin.
pub const FOLLOWER_DISCOVERY: Duration = Duration::from_millis(sticky_core::poll::BACKOFF_MAX_MS + 500);

/// An instance as served to Envoy and the filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedTarget {
    pub id: String,
    pub address: std::net::SocketAddr,
    pub health: HealthStatus,
    /// Deregistered, still draining.
    pub draining: bool,
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The first whole Unix second at least `seconds` from now: a drain of `seconds` never ends
/// early, though its end is kept in whole seconds.
pub fn unix_after(seconds: u32) -> i64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let end = now.saturating_add(std::time::Duration::from_secs(u64::from(seconds)));
    let whole = end.as_secs().saturating_add(u64::from(end.subsec_nanos() > 0));
    i64::try_from(whole).unwrap_or(i64::MAX)
}

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
}

/// A change the API or a background task wants to make.
pub enum Write {
    PutLoadBalancer(LoadBalancer),
    DeleteLoadBalancer(String),
    ReplaceRegistry(Registry),
    ReplaceKeys(RotatingKeys),
    /// A health flip of (load balancer, instance).
    PutHealth((String, String), InstanceHealth),
}

/// The store's failures as the API reports them.
fn store_error(e: StoreError) -> ApiError {
    ApiError::internal(e)
}

/// The domain as the API, the prober and the feed read it (through [`Service::read`]); it
/// changes only through [`Service::write`] and [`Service::set_health`].
pub struct Inner {
    load_balancers: BTreeMap<String, LoadBalancer>,
    registry: Registry,
    keys: RotatingKeys,
    /// Whether `keys` is stored (a fresh ring is drawn at a first start, then stored).
    keys_stored: bool,
    version: u64,
    /// The version at which what Envoy is served (listeners, their addresses, their targets'
    /// addresses and health) last changed: a policy or key change need not wait for Envoy.
    endpoints_version: u64,
    /// Health per (load balancer, instance id). On a shared store, flips are stored by the
    /// leader and reach every replica; on SQLite, re-learnt after a restart.
    health: HashMap<(String, String), InstanceHealth>,
}

pub struct Service {
    pub config: ServiceConfig,
    /// Held by one write at a time (taken before `inner`).
    store: Mutex<Store>,
    inner: Mutex<Inner>,
    version: watch::Sender<u64>,
    /// Set once the service is stopping: waiting long-polls answer at once.
    stop: watch::Sender<bool>,
    pub metrics: Metrics,
    pub followers: Followers,
    pub replica: Replica,
}

thread_local! {
    /// The versions the last write on this thread committed (see [`Service::take_committed`]).
    static COMMITTED: std::cell::Cell<Option<(u64, u64)>> = const { std::cell::Cell::new(None) };
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
        let keys_stored = snapshot.keys.is_some();
        let keys = match snapshot.keys {
            Some(keys) => keys,
            None => RotatingKeys::generate(now).map_err(|e| anyhow::anyhow!("cannot draw a key: {e}"))?,
        };
        // Alone on its store, the version moves on at every start (health starts over), so a
        // filter never mistakes new state for old. Replicas share the stored versions: each
        // serves the same state, health included, under the same version.
        let version = if shared { snapshot.version } else { snapshot.version + 1 };
        let endpoints_version = if shared { snapshot.endpoints_version } else { version };
        let inner = Inner {
            load_balancers: snapshot.load_balancers,
            registry: snapshot.registry,
            keys,
            keys_stored,
            version,
            endpoints_version,
            health: snapshot.health,
        };
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
            stop: watch::channel(false).0,
            metrics: Metrics::default(),
            followers: Followers::new(discovery),
            replica,
        });
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
                if !inner.keys_stored {
                    writes.push(Write::ReplaceKeys(inner.keys.clone()));
                }
                if let Some(bootstrap) = bootstrap {
                    writes.extend(
                        bootstrap
                            .writes(inner)
                            .map_err(|e| ApiError::validation(e.to_string()))?,
                    );
                }
                Ok((writes, ()))
            })
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        Ok(service)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the domain half-changed (changes are
        // applied only after the store committed), so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn read<R>(&self, f: impl FnOnce(&Inner) -> R) -> R {
        f(&self.lock())
    }

    /// Computes writes from the current state, commits them durably, then applies them. If the
    /// closure or the store fails, nothing changes. On a shared store the closure sees the
    /// latest stored state (other replicas' writes wait meanwhile).
    pub fn write<R>(&self, f: impl FnOnce(&Inner) -> Result<(Vec<Write>, R), ApiError>) -> Result<R, ApiError> {
        self.write_as(None, f)
    }

    /// [`Service::write`], committed only if `leader` (this replica) still holds the lease.
    fn write_as<R>(
        &self,
        leader: Option<&str>,
        f: impl FnOnce(&Inner) -> Result<(Vec<Write>, R), ApiError>,
    ) -> Result<R, ApiError> {
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
            return Ok(result);
        }
        inner.bind(&mut writes, &self.config.listener_binding)?;
        let version = inner.version + 1;
        let endpoints_changed = writes.iter().any(|w| inner.changes_endpoints(w));
        let endpoints_version = if endpoints_changed {
            version
        } else {
            inner.endpoints_version
        };
        let changes: Vec<Change<'_>> = writes
            .iter()
            .map(|w| match w {
                Write::PutLoadBalancer(lb) => Change::PutLoadBalancer(lb),
                Write::DeleteLoadBalancer(name) => Change::DeleteLoadBalancer(name),
                Write::ReplaceRegistry(registry) => Change::ReplaceRegistry(registry),
                Write::ReplaceKeys(keys) => Change::ReplaceKeys(keys),
                Write::PutHealth(key, health) => Change::PutHealth(key, health),
            })
            .collect();
        if let Some(holder) = leader {
            tx.require_leader(holder).map_err(store_error)?;
        }
        tx.apply(&changes).map_err(store_error)?;
        tx.commit(version, endpoints_version).map_err(store_error)?;
        drop(changes);
        for write in writes {
            match write {
                Write::PutLoadBalancer(lb) => {
                    let name = lb.name.clone();
                    inner.load_balancers.insert(name.clone(), lb);
                    inner.prune_health(&name);
                }
                Write::DeleteLoadBalancer(name) => {
                    inner.load_balancers.remove(&name);
                    inner.prune_health(&name);
                }
                Write::ReplaceRegistry(registry) => inner.registry = registry,
                Write::ReplaceKeys(keys) => {
                    inner.keys = keys;
                    inner.keys_stored = true;
                }
                Write::PutHealth(key, health) => {
                    inner.health.insert(key, health);
                }
            }
        }
        inner.version = version;
        inner.endpoints_version = endpoints_version;
        drop(inner);
        drop(store);
        COMMITTED.set(Some((version, endpoints_version)));
        self.version.send_replace(version);
        Ok(result)
    }

    /// The versions the last write made on this thread committed, if one did since the last
    /// call: what an API call that changed the state waits for its followers to hold.
    pub fn take_committed() -> Option<(u64, u64)> {
        COMMITTED.take()
    }

    /// Takes the state another replica committed, if newer than what this one holds.
    pub fn catch_up(&self, snapshot: Snapshot) {
        let mut inner = self.lock();
        if snapshot.version <= inner.version {
            return;
        }
        inner.load_balancers = snapshot.load_balancers;
        inner.registry = snapshot.registry;
        if let Some(keys) = snapshot.keys {
            inner.keys = keys;
            inner.keys_stored = true;
        }
        inner.health = snapshot.health;
        inner.version = snapshot.version;
        inner.endpoints_version = snapshot.endpoints_version;
        let version = inner.version;
        drop(inner);
        self.metrics.count("sticky_control_catch_ups_total", &[]);
        self.version.send_replace(version);
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
            inner.health.insert(key, health);
            inner.version += 1;
            inner.endpoints_version = inner.version;
            let version = inner.version;
            drop(inner);
            self.version.send_replace(version);
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
                    Policy::AppCookie { .. } => None,
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
    }

    /// Rotates the cookie key now.
    pub fn rotate_keys(&self) -> Result<u16, ApiError> {
        self.write(|inner| {
            let mut keys = inner.keys.clone();
            let id = keys.rotate(unix_now()).map_err(ApiError::internal)?;
            Ok((vec![Write::ReplaceKeys(keys)], id))
        })
    }

    /// The filter state of listener `port` of load balancer `name`.
    pub fn filter_state(&self, name: &str, port: u16) -> Option<FilterState> {
        self.read(|inner| crate::feed::filter_state(inner, &self.config.cookie, name, port))
    }
}

impl Inner {
    pub fn load_balancer(&self, name: &str) -> Option<&LoadBalancer> {
        self.load_balancers.get(name)
    }

    /// Whether load balancer `name` has a listener on `port`.
    pub fn has_listener(&self, name: &str, port: u16) -> bool {
        self.load_balancers
            .get(name)
            .is_some_and(|lb| lb.listeners.contains_key(&port))
    }

    /// Every load balancer, by name.
    pub fn load_balancers(&self) -> impl Iterator<Item = &LoadBalancer> {
        self.load_balancers.values()
    }

    pub fn load_balancer_count(&self) -> usize {
        self.load_balancers.len()
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn keys(&self) -> &RotatingKeys {
        &self.keys
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn endpoints_version(&self) -> u64 {
        self.endpoints_version
    }

    /// The last probe results of instance `id` in load balancer `name`, if probed.
    pub fn health(&self, name: &str, id: &str) -> Option<&InstanceHealth> {
        self.health.get(&(name.to_owned(), id.to_owned()))
    }

    /// Whether `write` would change what EDS and xDS serve (addresses, listeners, targets).
    /// Conservative: a registry change counts.
    fn changes_endpoints(&self, write: &Write) -> bool {
        match write {
            Write::PutLoadBalancer(lb) => self.load_balancers.get(&lb.name).is_none_or(|old| {
                old.instances != lb.instances
                    || old.draining != lb.draining
                    || old.attributes.session_draining != lb.attributes.session_draining
                    || old.attributes.idle_timeout != lb.attributes.idle_timeout
                    || old.address != lb.address
                    || old.listeners.len() != lb.listeners.len()
                    || old
                        .listeners
                        .iter()
                        .zip(&lb.listeners)
                        .any(|((port, a), (new_port, b))| port != new_port || a.instance_port != b.instance_port)
            }),
            Write::DeleteLoadBalancer(name) => self.load_balancers.contains_key(name),
            Write::ReplaceRegistry(registry) => *registry != self.registry,
            Write::ReplaceKeys(_) => false,
            Write::PutHealth(key, health) => self.health.get(key).map(|h| h.status) != Some(health.status),
        }
    }

    /// Gives every load balancer `writes` stores without an address one of its own from the
    /// pool (one no other load balancer holds), and checks that its listeners can bind.
    fn bind(&self, writes: &mut [Write], binding: &ListenerBinding) -> Result<(), ApiError> {
        let mut taken: Vec<std::net::IpAddr> = self.load_balancers.values().filter_map(|lb| lb.address).collect();
        for write in writes.iter_mut() {
            let Write::PutLoadBalancer(lb) = write else { continue };
            let address = match lb
                .address
                .or_else(|| self.load_balancers.get(&lb.name).and_then(|old| old.address))
            {
                Some(address) => address,
                None => {
                    let address = binding.allocate(&taken)?;
                    taken.push(address);
                    address
                }
            };
            lb.address = Some(address);
            for port in lb.listeners.keys() {
                binding.socket(address, *port)?;
            }
        }
        Ok(())
    }

    fn prune_health(&mut self, name: &str) {
        let registered: BTreeSet<String> = self
            .load_balancers
            .get(name)
            .map(|lb| lb.instances.iter().chain(lb.draining.keys()).cloned().collect())
            .unwrap_or_default();
        self.health.retain(|(lb, id), _| lb != name || registered.contains(id));
    }

    /// Health of a registered instance (pending before its first probe).
    pub fn health_of(&self, name: &str, id: &str) -> HealthStatus {
        self.health
            .get(&(name.to_owned(), id.to_owned()))
            .map_or(HealthStatus::Pending, |h| h.status)
    }

    /// The registered and draining instances of `lb` on `instance_port`.
    pub fn targets(&self, lb: &LoadBalancer, instance_port: u16) -> Vec<ServedTarget> {
        let registered = lb.instances.iter().map(|id| (id, false));
        let draining = lb
            .draining
            .keys()
            .filter(|id| !lb.instances.contains(*id))
            .map(|id| (id, true));
        registered
            .chain(draining)
            .filter_map(|(id, draining)| {
                let address = self.registry.resolve(id, instance_port)?;
                Some(ServedTarget {
                    id: id.clone(),
                    address,
                    health: self.health_of(&lb.name, id),
                    draining,
                })
            })
            .collect()
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
    };
    (Service::open(config, store, Some(bootstrap)).unwrap(), dir)
}

#[cfg(test)]
mod tests {
    use super::*;

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
