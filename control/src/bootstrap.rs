//! The declarative bootstrap file (`--bootstrap`): the instance registry, and the load balancers
//! to create when missing (what terraform creates in the seed deployment). One schema, read by
//! the service and written by the launcher and the tests.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use sticky_core::CookieSettings;

use crate::commands::{Command, CreateLoadBalancer};
use crate::domain::{Domain, Write};
use crate::error::ApiError;
use crate::model::{self, HealthCheck, InstanceAddress, Listener, Registry};

/// The declarative bootstrap file: the instance registry, and load balancers created when
/// missing (what terraform creates in the original deployment).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapFile {
    #[serde(default)]
    pub instances: BTreeMap<String, InstanceAddress>,
    #[serde(default)]
    pub load_balancers: Vec<BootstrapLoadBalancer>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapLoadBalancer {
    pub name: String,
    pub listeners: Vec<BootstrapListener>,
    #[serde(default)]
    pub instances: Vec<String>,
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapListener {
    #[serde(default = "http")]
    pub protocol: String,
    pub load_balancer_port: u16,
    pub instance_port: u16,
}

fn http() -> String {
    "HTTP".to_owned()
}

impl BootstrapFile {
    /// Load balancer `load_balancer` with listener 80 (instance port 80) and `instances` (id,
    /// address) in the registry and registered, each instance's port 80 mapped to its address's
    /// port, with an HTTP health check of `/health` every 5 s (timeout 2 s, thresholds 2/2).
    pub fn one_listener(load_balancer: &str, instances: &[(String, SocketAddr)]) -> Self {
        let registry = instances
            .iter()
            .map(|(id, address)| {
                let entry = InstanceAddress {
                    ip: address.ip(),
                    ports: BTreeMap::from([(80, address.port())]),
                };
                (id.clone(), entry)
            })
            .collect();
        Self {
            instances: registry,
            load_balancers: vec![BootstrapLoadBalancer {
                name: load_balancer.to_owned(),
                listeners: vec![BootstrapListener {
                    protocol: http(),
                    load_balancer_port: 80,
                    instance_port: 80,
                }],
                instances: instances.iter().map(|(id, _)| id.clone()).collect(),
                health_check: Some(HealthCheck {
                    target: "HTTP:80/health".to_owned(),
                    interval: 5,
                    timeout: 2,
                    unhealthy_threshold: 2,
                    healthy_threshold: 2,
                }),
            }],
        }
    }

    /// The file's text.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// Applying the file: the registry as declared, and the load balancers that do not exist yet
/// (created as `CreateLoadBalancer` creates them, with the declared instances registered).
impl Command for BootstrapFile {
    type Output = ();

    fn plan(self, domain: &Domain, cookie: &CookieSettings) -> Result<(Vec<Write>, ()), ApiError> {
        let registry = Registry {
            instances: self.instances,
        };
        let mut writes = Vec::new();
        for lb in self.load_balancers {
            let refused = |message: String| ApiError::validation(format!("load balancer {}: {message}", lb.name));
            model::validate_name("load balancer name", &lb.name)?;
            if domain.load_balancer(&lb.name).is_some() {
                continue;
            }
            let mut listeners = BTreeMap::new();
            for l in &lb.listeners {
                let protocol = model::validate_protocol("protocol", &l.protocol)?;
                if l.load_balancer_port == 0 || l.instance_port == 0 {
                    return Err(refused("ports must be 1 to 65535".to_owned()));
                }
                let listener = Listener {
                    protocol: protocol.clone(),
                    load_balancer_port: l.load_balancer_port,
                    instance_protocol: protocol,
                    instance_port: l.instance_port,
                    policy_names: Vec::new(),
                };
                if listeners.insert(l.load_balancer_port, listener).is_some() {
                    return Err(refused(format!("port {} is declared twice", l.load_balancer_port)));
                }
            }
            let first_port = lb
                .listeners
                .first()
                .map(|l| l.instance_port)
                .ok_or_else(|| refused("no listener".to_owned()))?;
            // Registered against the registry this file declares (written with it).
            if let Some(id) = lb.instances.iter().find(|id| !registry.knows(id)) {
                return Err(refused(format!("instance {id} is not in the registry")));
            }
            let create = CreateLoadBalancer {
                name: lb.name,
                listeners,
                health_check: lb.health_check.unwrap_or_else(|| HealthCheck::default_for(first_port)),
                placement: Default::default(),
                tags: Vec::new(),
            };
            let (mut created, ()) = create.plan(domain, cookie)?;
            for write in &mut created {
                if let Write::PutLoadBalancer(new) = write {
                    new.instances.extend(lb.instances.iter().cloned());
                }
            }
            writes.extend(created);
        }
        if registry != *domain.registry() {
            writes.push(Write::ReplaceRegistry(registry));
        }
        Ok((writes, ()))
    }
}
