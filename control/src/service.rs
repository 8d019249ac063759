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
use crate::sigv4::AccessKeys;
use crate::store::{Change, Store};

/// How long after a start every live filter has polled again: the filter's longest retry
/// backoff (`sticky_core::poll::BACKOFF_MAX_MS`) plus a margin.
pub const FOLLOWER_DISCOVERY: Duration = Duration::from_millis(sticky_core::poll::BACKOFF_MAX_MS + 500);

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
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
}

/// A change the API or a background task wants to make.
pub enum Write {
    PutLoadBalancer(LoadBalancer),
    DeleteLoadBalancer(String),
    ReplaceRegistry(Registry),
    ReplaceKeys(RotatingKeys),
}

/// The domain as the API, the prober and the feed read it (through [`Service::read`]); it
/// changes only through [`Service::write`] and [`Service::set_health`].
pub struct Inner {
    load_balancers: BTreeMap<String, LoadBalancer>,
    registry: Registry,
    keys: RotatingKeys,
    version: u64,
    /// The version at which what Envoy is served (listeners, their addresses, their targets'
    /// addresses and health) last changed: a policy or key change need not wait for Envoy.
    endpoints_version: u64,
    /// Health per (load balancer, instance id). Not persisted: re-learnt after a restart.
    health: HashMap<(String, String), InstanceHealth>,
    store: Store,
}

pub struct Service {
    pub config: ServiceConfig,
    inner: Mutex<Inner>,
    version: watch::Sender<u64>,
    /// Set once the service is stopping: waiting long-polls answer at once.
    stop: watch::Sender<bool>,
    pub metrics: Metrics,
    pub followers: Followers,
}

impl Service {
    /// Loads the store (creating the key ring on first start), applies the bootstrap file.
    pub fn open(config: ServiceConfig, store: Store, bootstrap: Option<BootstrapFile>) -> anyhow::Result<Arc<Self>> {
        let snapshot = store.load()?;
        let now = unix_now();
        let fresh_keys = snapshot.keys.is_none();
        let keys = match snapshot.keys {
            Some(keys) => keys,
            None => RotatingKeys::generate(now).map_err(|e| anyhow::anyhow!("cannot draw a key: {e}"))?,
        };
        // The version moves on at every start, so a filter never mistakes new state for old.
        let inner = Inner {
            load_balancers: snapshot.load_balancers,
            registry: snapshot.registry,
            keys,
            version: snapshot.version + 1,
            endpoints_version: snapshot.version + 1,
            health: HashMap::new(),
            store,
        };
        let version = inner.version;
        // Filters retry a lost control service within their longest backoff (5 s).
        let discovery = if config.sync_timeout.is_zero() {
            Duration::ZERO
        } else {
            FOLLOWER_DISCOVERY
        };
        let service = Arc::new(Self {
            config,
            inner: Mutex::new(inner),
            version: watch::channel(version).0,
            stop: watch::channel(false).0,
            metrics: Metrics::default(),
            followers: Followers::new(discovery),
        });
        let mut writes = Vec::new();
        // Stored before load balancers had an address of their own: `write` gives them one.
        writes.extend(service.read(|inner| {
            inner
                .load_balancers
                .values()
                .filter(|lb| lb.address.is_none())
                .map(|lb| Write::PutLoadBalancer(lb.clone()))
                .collect::<Vec<_>>()
        }));
        if fresh_keys {
            writes.push(Write::ReplaceKeys(service.read(|i| i.keys.clone())));
        }
        if let Some(bootstrap) = bootstrap {
            writes.extend(service.read(|inner| bootstrap.writes(inner))?);
        }
        service
            .write(|_| Ok((writes, ())))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
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
    /// closure or the store fails, nothing changes.
    pub fn write<R>(&self, f: impl FnOnce(&Inner) -> Result<(Vec<Write>, R), ApiError>) -> Result<R, ApiError> {
        let mut inner = self.lock();
        let (mut writes, result) = f(&inner)?;
        if writes.is_empty() {
            return Ok(result);
        }
        inner.bind(&mut writes, &self.config.listener_binding)?;
        let version = inner.version + 1;
        let changes: Vec<Change<'_>> = writes
            .iter()
            .map(|w| match w {
                Write::PutLoadBalancer(lb) => Change::PutLoadBalancer(lb),
                Write::DeleteLoadBalancer(name) => Change::DeleteLoadBalancer(name),
                Write::ReplaceRegistry(registry) => Change::ReplaceRegistry(registry),
                Write::ReplaceKeys(keys) => Change::ReplaceKeys(keys),
            })
            .collect();
        inner.store.commit(&changes, version).map_err(ApiError::internal)?;
        let mut endpoints_changed = false;
        for write in writes {
            endpoints_changed |= inner.changes_endpoints(&write);
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
                Write::ReplaceKeys(keys) => inner.keys = keys,
            }
        }
        inner.version = version;
        if endpoints_changed {
            inner.endpoints_version = version;
        }
        drop(inner);
        self.version.send_replace(version);
        Ok(result)
    }

    /// Records a health change in memory and wakes the filters.
    pub fn set_health(&self, key: (String, String), health: InstanceHealth) {
        let mut inner = self.lock();
        let still_registered = inner
            .load_balancers
            .get(&key.0)
            .is_some_and(|lb| lb.instances.contains(&key.1));
        if !still_registered {
            return;
        }
        let flipped = inner.health.get(&key).map(|h| h.status) != Some(health.status);
        inner.health.insert(key, health);
        if flipped {
            inner.version += 1;
            inner.endpoints_version = inner.version;
            let version = inner.version;
            drop(inner);
            self.metrics.count("sticky_control_health_flips_total", &[]);
            self.version.send_replace(version);
        }
    }

    /// Stops the service's waits: every long-poll answers now, so a graceful shutdown does not
    /// wait out their time-outs.
    pub fn stop(&self) {
        self.stop.send_replace(true);
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

    /// Rotates the cookie key when due and drops retired keys no cookie can still use.
    pub fn maintain_keys(&self, now: i64) -> Result<bool, ApiError> {
        let rotation = i64::try_from(self.config.key_rotation.as_secs()).unwrap_or(i64::MAX);
        let retention = i64::try_from(self.config.key_retention.as_secs()).unwrap_or(i64::MAX);
        self.write(|inner| {
            let longest_lb_cookie = inner
                .load_balancers
                .values()
                .flat_map(|lb| lb.policies.values())
                .filter_map(|p| match p {
                    Policy::LbCookie {
                        cookie_expiration_period: Some(d),
                    } => i64::try_from(*d).ok(),
                    _ => None,
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
            .map(|lb| lb.instances.clone())
            .unwrap_or_default();
        self.health.retain(|(lb, id), _| lb != name || registered.contains(id));
    }

    /// Health of a registered instance (pending before its first probe).
    pub fn health_of(&self, name: &str, id: &str) -> HealthStatus {
        self.health
            .get(&(name.to_owned(), id.to_owned()))
            .map_or(HealthStatus::Pending, |h| h.status)
    }

    /// The registered instances of `lb` on `instance_port`: `(id, address, in service)`.
    pub fn targets(&self, lb: &LoadBalancer, instance_port: u16) -> Vec<(String, std::net::SocketAddr, bool)> {
        lb.instances
            .iter()
            .filter_map(|id| {
                let address = self.registry.resolve(id, instance_port)?;
                Some((
                    id.clone(),
                    address,
                    self.health_of(&lb.name, id) == HealthStatus::InService,
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example bootstrap applied to a fresh store in its own directory.
    fn example_service(test: &str) -> (Arc<Service>, std::path::PathBuf) {
        let text = include_str!("../bootstrap.example.json");
        let bootstrap: BootstrapFile = serde_json::from_str(text).unwrap();
        let dir = std::env::temp_dir().join(format!("sticky-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::open(&dir.join("db")).unwrap();
        let config = ServiceConfig {
            access_keys: AccessKeys::default(),
            long_poll_timeout: Duration::from_secs(1),
            key_rotation: Duration::from_secs(60),
            key_retention: Duration::from_secs(60),
            cookie: CookieSettings::default(),
            sync_timeout: Duration::ZERO,
            listener_binding: Default::default(),
            target_connect_timeout: crate::xds::resources::DEFAULT_TARGET_CONNECT_TIMEOUT,
        };
        (Service::open(config, store, Some(bootstrap)).unwrap(), dir)
    }

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
        service.set_health(("terraform-balancer".to_owned(), first.unwrap()), healthy);
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
