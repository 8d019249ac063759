//! The declarative bootstrap file (`--bootstrap`): the instance registry, and the load balancers
//! to create when missing (what terraform creates in the seed deployment). One schema, read by
//! the service and written by the launcher and the tests.

use std::collections::BTreeMap;

use sticky_core::CookieSettings;

use crate::certificates::Upload;
use crate::commands::{Command, CreateLoadBalancer};
use crate::domain::{Domain, Write};
use crate::error::ApiError;
use crate::model::{self, HealthCheck, Listener, Registry};

pub use sticky_control_schema::{BootstrapCertificate, BootstrapFile, BootstrapListener, BootstrapLoadBalancer};

/// The file's certificates read from their files, for [`UploadMissingCertificates`]; an
/// unreadable file is named.
pub fn read_certificates(declared: &[BootstrapCertificate]) -> Result<Vec<Upload>, ApiError> {
    let read = |path: &std::path::Path| {
        std::fs::read_to_string(path)
            .map_err(|e| ApiError::validation(format!("certificate file {}: {e}", path.display())))
    };
    declared
        .iter()
        .map(|c| {
            Ok(Upload {
                name: c.name.clone(),
                path: None,
                body: read(&c.certificate_file)?,
                chain: c.chain_file.as_deref().map(read).transpose()?,
                private_key: read(&c.private_key_file)?,
            })
        })
        .collect()
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
                // Named by the certificate's name here (uploaded by the file's certificates).
                let certificate = match &l.certificate {
                    Some(name) => Some(
                        domain
                            .certificate_by_name(name)
                            .map(|c| c.id.clone())
                            .ok_or_else(|| refused(format!("certificate {name} is neither declared nor uploaded")))?,
                    ),
                    None => None,
                };
                let listener = Listener {
                    protocol,
                    load_balancer_port: l.load_balancer_port,
                    instance_protocol: model::validate_protocol("instance_protocol", &l.instance_protocol)?,
                    instance_port: l.instance_port,
                    policy_names: Vec::new(),
                    certificate,
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
