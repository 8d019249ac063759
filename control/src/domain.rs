//! The domain state every surface reads (the Query API, OAPI, the operator page, xDS, the
//! feed, the prober) and the writes that change it. Concurrency and durability are
//! `service`'s; what may be written is `commands`'.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::certificates::ServerCertificate;
use crate::error::ApiError;
use crate::health::{HealthStatus, InstanceHealth};
use crate::keys::RotatingKeys;
use crate::model::{ListenerBinding, LoadBalancer, Registry};

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

/// A change the API or a background task wants to make.
pub enum Write {
    PutLoadBalancer(LoadBalancer),
    DeleteLoadBalancer(String),
    ReplaceRegistry(Registry),
    ReplaceKeys(RotatingKeys),
    /// A health flip of (load balancer, instance).
    PutHealth((String, String), InstanceHealth),
    /// A server certificate, with its private key (the store seals it).
    PutCertificate(ServerCertificate),
    /// A server certificate, by id.
    DeleteCertificate(String),
}

/// The domain: load balancers, the instance registry, the cookie keys and the targets' health,
/// at one version. Every surface reads it through `Service::read`; it changes only by
/// [`Domain::apply`] of writes the store committed.
pub struct Domain {
    pub(crate) load_balancers: BTreeMap<String, LoadBalancer>,
    pub(crate) registry: Registry,
    pub(crate) keys: RotatingKeys,
    /// Whether `keys` is stored (a fresh ring is drawn at a first start, then stored).
    pub(crate) keys_stored: bool,
    pub(crate) version: u64,
    /// The version at which what Envoy is served (listeners, their addresses, their targets'
    /// addresses and health) last changed: a policy or key change need not wait for Envoy.
    pub(crate) endpoints_version: u64,
    /// Health per (load balancer, instance id). On a shared store, flips are stored by the
    /// leader and reach every replica; on SQLite, re-learnt after a restart.
    pub(crate) health: HashMap<(String, String), InstanceHealth>,
    /// Server certificates by id, with their private keys (in memory only in clear).
    pub(crate) certificates: BTreeMap<String, ServerCertificate>,
    /// The version at which what each load balancer is served last changed (its listeners,
    /// policies, targets, their addresses and health, its certificates): what is built per
    /// load balancer (xDS resources, filter states) is rebuilt only when this moves.
    pub(crate) revisions: HashMap<String, u64>,
    /// The version at which the cookie keys last changed (every filter state holds them).
    pub(crate) keys_revision: u64,
}

impl Domain {
    /// A domain at `version`, everything in it last changed then.
    pub(crate) fn new(
        load_balancers: BTreeMap<String, LoadBalancer>,
        registry: Registry,
        (keys, keys_stored): (RotatingKeys, bool),
        (version, endpoints_version): (u64, u64),
        health: HashMap<(String, String), InstanceHealth>,
        certificates: BTreeMap<String, ServerCertificate>,
    ) -> Self {
        let revisions = load_balancers.keys().map(|name| (name.clone(), version)).collect();
        Self {
            load_balancers,
            registry,
            keys,
            keys_stored,
            version,
            endpoints_version,
            health,
            certificates,
            revisions,
            keys_revision: version,
        }
    }

    /// Applies writes the store committed as `version` (and `endpoints_version`).
    pub(crate) fn apply(&mut self, writes: Vec<Write>, version: u64, endpoints_version: u64) {
        for write in writes {
            match write {
                Write::PutLoadBalancer(lb) => {
                    let name = lb.name.clone();
                    self.load_balancers.insert(name.clone(), lb);
                    self.prune_health(&name);
                    self.revisions.insert(name, version);
                }
                Write::DeleteLoadBalancer(name) => {
                    self.load_balancers.remove(&name);
                    self.prune_health(&name);
                    self.revisions.remove(&name);
                }
                Write::ReplaceRegistry(registry) => {
                    let moved: BTreeSet<&String> = registry
                        .instances
                        .iter()
                        .filter(|(id, entry)| self.registry.instances.get(*id) != Some(*entry))
                        .map(|(id, _)| id)
                        .chain(
                            self.registry
                                .instances
                                .keys()
                                .filter(|id| !registry.instances.contains_key(*id)),
                        )
                        .collect();
                    for lb in self.load_balancers.values() {
                        if lb
                            .instances
                            .iter()
                            .chain(lb.draining.keys())
                            .any(|id| moved.contains(id))
                        {
                            self.revisions.insert(lb.name.clone(), version);
                        }
                    }
                    self.registry = registry;
                }
                Write::ReplaceKeys(keys) => {
                    self.keys = keys;
                    self.keys_stored = true;
                    self.keys_revision = version;
                }
                Write::PutHealth(key, health) => {
                    self.touch(&key.0, version);
                    self.health.insert(key, health);
                }
                Write::PutCertificate(certificate) => {
                    let users: BTreeSet<String> = self
                        .certificate_users(&certificate.id)
                        .into_iter()
                        .map(|(lb, _)| lb.to_owned())
                        .collect();
                    for lb in users {
                        self.touch(&lb, version);
                    }
                    self.certificates.insert(certificate.id.clone(), certificate);
                }
                Write::DeleteCertificate(id) => {
                    self.certificates.remove(&id);
                }
            }
        }
        self.version = version;
        self.endpoints_version = endpoints_version;
    }

    /// Load balancer `name` (if it exists) changed at `version`.
    pub(crate) fn touch(&mut self, name: &str, version: u64) {
        if let Some(revision) = self.revisions.get_mut(name) {
            *revision = version;
        }
    }

    /// Takes everything another replica stored at `newer.version`; what differs is changed then.
    pub(crate) fn replace(&mut self, newer: Domain) {
        let version = newer.version;
        let old = std::mem::replace(self, newer);
        self.keys_revision = if old.keys == self.keys {
            old.keys_revision
        } else {
            version
        };
        self.revisions = self
            .load_balancers
            .values()
            .map(|lb| {
                let unchanged = old.load_balancers.get(&lb.name) == Some(lb)
                    && old.registry == self.registry
                    && lb
                        .listeners
                        .values()
                        .filter_map(|l| l.certificate.as_ref())
                        .all(|id| old.certificates.get(id) == self.certificates.get(id))
                    && lb.instances.iter().chain(lb.draining.keys()).all(|id| {
                        let key = (lb.name.clone(), id.clone());
                        old.health.get(&key).map(|h| h.status) == self.health.get(&key).map(|h| h.status)
                    });
                let revision = match old.revisions.get(&lb.name) {
                    Some(revision) if unchanged => *revision,
                    _ => version,
                };
                (lb.name.clone(), revision)
            })
            .collect();
    }

    /// The version at which what load balancer `name` is served last changed.
    pub fn revision(&self, name: &str) -> Option<u64> {
        self.revisions.get(name).copied()
    }

    /// The version of the filter states of load balancer `name`'s listeners: they change with
    /// it and with the cookie keys. A filter's long-poll is answered when this moves.
    pub fn state_version(&self, name: &str) -> Option<u64> {
        Some(self.revision(name)?.max(self.keys_revision))
    }

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

    /// Every server certificate, by id.
    pub fn certificates(&self) -> impl Iterator<Item = &ServerCertificate> {
        self.certificates.values()
    }

    pub fn certificate(&self, id: &str) -> Option<&ServerCertificate> {
        self.certificates.get(id)
    }

    pub fn certificate_by_name(&self, name: &str) -> Option<&ServerCertificate> {
        self.certificates.values().find(|c| c.name == name)
    }

    /// The certificate an ARN (ELB's SSLCertificateId) or an ORN (OAPI's ServerCertificateId) names.
    pub fn certificate_named_by(&self, reference: &str) -> Option<&ServerCertificate> {
        self.certificates.values().find(|c| c.is_named_by(reference))
    }

    /// The listeners (load balancer, port) serving certificate `id`.
    pub fn certificate_users(&self, id: &str) -> Vec<(&str, u16)> {
        self.load_balancers
            .values()
            .flat_map(|lb| {
                lb.listeners
                    .iter()
                    .filter(|(_, l)| l.certificate.as_deref() == Some(id))
                    .map(|(port, _)| (lb.name.as_str(), *port))
            })
            .collect()
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
    pub(crate) fn changes_endpoints(&self, write: &Write) -> bool {
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
                        .any(|((port, a), (new_port, b))| port != new_port || a.serves_differently(b))
            }),
            Write::DeleteLoadBalancer(name) => self.load_balancers.contains_key(name),
            Write::ReplaceRegistry(registry) => *registry != self.registry,
            Write::ReplaceKeys(_) => false,
            Write::PutHealth(key, health) => self.health.get(key).map(|h| h.status) != Some(health.status),
            // A certificate in use changes what its listeners serve (its id stays, its name
            // is no part of what Envoy gets); one no listener uses changes nothing served.
            Write::PutCertificate(certificate) => {
                self.certificates.get(&certificate.id).is_none_or(|old| {
                    old.full_chain() != certificate.full_chain() || old.private_key != certificate.private_key
                }) && !self.certificate_users(&certificate.id).is_empty()
            }
            Write::DeleteCertificate(id) => !self.certificate_users(id).is_empty(),
        }
    }

    /// Gives every load balancer `writes` stores without an address one of its own from the
    /// pool (one no other load balancer holds), and checks that its listeners can bind.
    pub(crate) fn bind(&self, writes: &mut [Write], binding: &ListenerBinding) -> Result<(), ApiError> {
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

    pub(crate) fn prune_health(&mut self, name: &str) {
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
