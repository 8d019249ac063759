//! The domain's operations. Every surface (the Query API, OAPI, the operator page, the bootstrap
//! file) parses its own wire format into one of these commands, runs it through
//! `Service::execute`, and renders the typed result in its own words. A command validates its
//! whole input against the current state once and plans every write it makes; the service
//! commits them in one store transaction, so a call is all or nothing whichever surface made it.

use std::collections::BTreeMap;

use sticky_core::CookieSettings;
use sticky_core::cookies::is_cookie_name;

use crate::attributes::AttributeChanges;
use crate::domain::{Domain, Write};
use crate::domain::{unix_after, unix_now};
use crate::error::{ApiError, ErrorCode};
use crate::model::{self, HealthCheck, Listener, LoadBalancer, MAX_POLICIES, Placement, Policy};

pub mod certificates;
pub mod tags;

/// An operation on the domain: from the current state, the writes that carry it out (all
/// checked before any is made) and what it answers.
pub trait Command {
    type Output;
    /// `cookie`: the service's cookie settings (an app cookie must not take their name).
    fn plan(self, domain: &Domain, cookie: &CookieSettings) -> Result<(Vec<Write>, Self::Output), ApiError>;
}

/// A load balancer by name, or ELB's error.
pub fn load_balancer<'a>(domain: &'a Domain, name: &str) -> Result<&'a LoadBalancer, ApiError> {
    domain
        .load_balancer(name)
        .ok_or_else(|| ApiError::load_balancer_not_found(name))
}

/// A new load balancer. Repeating the creation of one that exists with the same listeners
/// changes nothing (ELB's idempotence); with other listeners it is refused.
#[derive(Debug, Clone)]
pub struct CreateLoadBalancer {
    pub name: String,
    pub listeners: BTreeMap<u16, Listener>,
    pub health_check: HealthCheck,
    pub placement: Placement,
    pub tags: Vec<(String, String)>,
}

impl Command for CreateLoadBalancer {
    /// Nothing: the load balancer's address is given when its write commits (read it then).
    type Output = ();

    fn plan(self, domain: &Domain, _: &CookieSettings) -> Result<(Vec<Write>, ()), ApiError> {
        model::validate_name("LoadBalancerName", &self.name)?;
        if self.listeners.is_empty() {
            return Err(ApiError::validation("Listeners must hold at least one listener"));
        }
        self.health_check.validate_within(model::MAX_CHECK_INTERVAL)?;
        let mut listeners = self.listeners;
        for listener in listeners.values_mut() {
            certificates::resolve_listener(domain, listener)?;
        }
        let mut lb = LoadBalancer {
            name: self.name,
            created_at: unix_now(),
            listeners,
            policies: BTreeMap::new(),
            instances: Default::default(),
            health_check: self.health_check,
            address: None,
            attributes: Default::default(),
            tags: BTreeMap::new(),
            draining: BTreeMap::new(),
            placement: Box::new(self.placement),
        };
        tags::add(&mut lb, self.tags)?;
        match domain.load_balancer(&lb.name) {
            None => Ok((vec![Write::PutLoadBalancer(lb)], ())),
            Some(existing)
                if existing.listeners.len() == lb.listeners.len()
                    && existing
                        .listeners
                        .iter()
                        .all(|(port, l)| lb.listeners.get(port).is_some_and(|n| same_listener(n, l))) =>
            {
                Ok((vec![], ()))
            }
            Some(_) => Err(ApiError::new(
                ErrorCode::DuplicateLoadBalancerName,
                format!("Load balancer {} already exists", lb.name),
            )),
        }
    }
}

/// Deletes a load balancer; deleting one that does not exist succeeds, as in ELB. Answers the
/// load balancer as it was.
#[derive(Debug, Clone)]
pub struct DeleteLoadBalancer {
    pub name: String,
}

impl Command for DeleteLoadBalancer {
    type Output = Option<LoadBalancer>;

    fn plan(self, domain: &Domain, _: &CookieSettings) -> Result<(Vec<Write>, Self::Output), ApiError> {
        Ok(match domain.load_balancer(&self.name) {
            Some(lb) => (vec![Write::DeleteLoadBalancer(self.name)], Some(lb.clone())),
            None => (vec![], None),
        })
    }
}

/// The same changes to each of the named load balancers, in order; all of them exist, and
/// every change holds, or nothing changes. Answers the load balancers as they now are.
#[derive(Debug, Clone)]
pub struct ChangeLoadBalancers {
    pub names: Vec<String>,
    pub changes: Vec<Change>,
}

impl ChangeLoadBalancers {
    /// One change to one load balancer.
    pub fn one(name: impl Into<String>, change: Change) -> Self {
        Self {
            names: vec![name.into()],
            changes: vec![change],
        }
    }
}

impl Command for ChangeLoadBalancers {
    type Output = Vec<LoadBalancer>;

    fn plan(self, domain: &Domain, cookie: &CookieSettings) -> Result<(Vec<Write>, Self::Output), ApiError> {
        let mut writes = Vec::new();
        let mut changed = Vec::with_capacity(self.names.len());
        for name in &self.names {
            let mut lb = load_balancer(domain, name)?.clone();
            for change in &self.changes {
                change.clone().apply(domain, cookie, &mut lb)?;
            }
            if domain.load_balancer(name) != Some(&lb) {
                writes.push(Write::PutLoadBalancer(lb.clone()));
            }
            changed.push(lb);
        }
        Ok((writes, changed))
    }
}

/// One change to a load balancer.
#[derive(Debug, Clone)]
pub enum Change {
    /// New listeners; one the load balancer already has the same way is left alone.
    AddListeners(BTreeMap<u16, Listener>),
    /// A port with no listener is not an error, as in ELB.
    RemoveListeners(Vec<u16>),
    AddPolicy {
        name: String,
        policy: Policy,
    },
    /// Refused while a listener uses it.
    DeletePolicy(String),
    /// At most one stickiness policy; none removes stickiness.
    SetListenerPolicies {
        port: u16,
        names: Vec<String>,
    },
    /// Checked with `max_interval` as the interval's ceiling (ELB's 300 s; OAPI's 600 s).
    SetHealthCheck {
        check: HealthCheck,
        max_interval: u32,
    },
    ModifyAttributes(AttributeChanges),
    /// Instances of the registry; registering a draining one ends its drain.
    Register(Vec<String>),
    /// Registered instances; with connection draining on, each drains for its timeout.
    Deregister(Vec<String>),
    /// The server certificate of HTTPS listener `port`: an ARN or ORN (or an id). New
    /// handshakes get it; open connections keep theirs.
    SetListenerCertificate {
        port: u16,
        certificate: String,
    },
    /// At most [`tags::MAX_TAGS`] on the load balancer afterwards.
    AddTags(Vec<(String, String)>),
    /// Removing a key the load balancer does not hold is not an error, as in ELB.
    RemoveTags(Vec<String>),
}

impl Change {
    fn apply(self, domain: &Domain, cookie: &CookieSettings, lb: &mut LoadBalancer) -> Result<(), ApiError> {
        match self {
            Change::AddListeners(listeners) => {
                for (port, mut listener) in listeners {
                    certificates::resolve_listener(domain, &mut listener)?;
                    match lb.listeners.get(&port) {
                        Some(existing) if same_listener(existing, &listener) => {}
                        Some(_) => {
                            return Err(ApiError::new(
                                ErrorCode::DuplicateListener,
                                format!(
                                    "A listener already exists for {} on port {port} with a different configuration",
                                    lb.name
                                ),
                            ));
                        }
                        None => {
                            lb.listeners.insert(port, listener);
                        }
                    }
                }
            }
            Change::RemoveListeners(ports) => {
                for port in &ports {
                    lb.listeners.remove(port);
                }
            }
            Change::AddPolicy { name, policy } => add_policy(lb, &name, policy, cookie)?,
            Change::DeletePolicy(name) => {
                if lb.policy_in_use(&name) {
                    return Err(ApiError::invalid_configuration(format!(
                        "Policy {name} is in use by a listener; remove it from the listener first"
                    )));
                }
                lb.policies.remove(&name);
            }
            Change::SetListenerPolicies { port, names } => set_listener_policies(lb, port, names)?,
            Change::SetHealthCheck { check, max_interval } => {
                check.validate_within(max_interval)?;
                lb.health_check = check;
            }
            Change::ModifyAttributes(changes) => {
                let app_cookies = lb.app_cookie_names();
                *lb.attributes = lb.attributes.changed(&changes, cookie, &app_cookies)?;
                if !lb.attributes.connection_draining.enabled {
                    // Draining turned off: the drains in progress end now.
                    lb.draining.clear();
                }
            }
            Change::Register(ids) => {
                if ids.is_empty() {
                    return Err(ApiError::validation("Instances must list at least one instance"));
                }
                if let Some(id) = ids.iter().find(|id| !domain.registry().knows(id)) {
                    return Err(ApiError::new(
                        ErrorCode::InvalidInstance,
                        format!("The instance {id} is not known (not in the instance registry, not ip:port)"),
                    ));
                }
                for id in ids {
                    // Registered again: its drain ends.
                    lb.draining.remove(&id);
                    lb.instances.insert(id);
                }
            }
            Change::Deregister(ids) => {
                if ids.is_empty() {
                    return Err(ApiError::validation("Instances must list at least one instance"));
                }
                if let Some(id) = ids.iter().find(|id| !lb.instances.contains(*id)) {
                    return Err(ApiError::new(
                        ErrorCode::InvalidInstance,
                        format!("The instance {id} is not registered with {}", lb.name),
                    ));
                }
                let draining = lb.attributes.connection_draining;
                for id in ids {
                    lb.instances.remove(&id);
                    if draining.enabled {
                        lb.draining.insert(id, unix_after(draining.timeout));
                    }
                }
            }
            Change::SetListenerCertificate { port, certificate } => {
                let id = certificates::id_named_by(domain, &certificate)?;
                let name = lb.name.clone();
                let listener = lb.listeners.get_mut(&port).ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::ListenerNotFound,
                        format!("{name} has no listener on port {port}"),
                    )
                })?;
                if !listener.is_https() {
                    return Err(ApiError::invalid_configuration(format!(
                        "The listener on port {port} of {name} is {}; a certificate is for HTTPS and SSL listeners",
                        listener.protocol
                    )));
                }
                listener.certificate = Some(id);
            }
            Change::AddTags(tags) => tags::add(lb, tags)?,
            Change::RemoveTags(keys) => {
                let keys: Vec<(String, String)> = keys.into_iter().map(|key| (key, String::new())).collect();
                tags::validate(&keys, false)?;
                for (key, _) in keys {
                    lb.tags.remove(&key);
                }
            }
        }
        Ok(())
    }
}

/// Rotates the cookie key now; answers the new key's id.
#[derive(Debug, Clone, Copy)]
pub struct RotateKeys;

impl Command for RotateKeys {
    type Output = u16;

    fn plan(self, domain: &Domain, _: &CookieSettings) -> Result<(Vec<Write>, u16), ApiError> {
        let mut keys = domain.keys().clone();
        let id = keys.rotate(unix_now()).map_err(ApiError::internal)?;
        Ok((vec![Write::ReplaceKeys(keys)], id))
    }
}

/// The same listener, policies aside (ELB's test for an idempotent repeat).
fn same_listener(a: &Listener, b: &Listener) -> bool {
    !a.serves_differently(b)
}

/// Adds policy `name`; `defaults` are the service's cookie settings (an app cookie must not
/// take the name of the load balancer's own cookie or its CORS twin).
fn add_policy(lb: &mut LoadBalancer, name: &str, policy: Policy, defaults: &CookieSettings) -> Result<(), ApiError> {
    model::validate_policy_name(name)?;
    if let Policy::AppCookie { cookie_name } = &policy {
        validate_app_cookie_name(cookie_name)?;
        let own = lb.attributes.cookie_settings(defaults);
        let twin = CookieSettings::twin_name(&own.name);
        if *cookie_name == own.name || (own.cors_twin && *cookie_name == twin) {
            return Err(ApiError::invalid_configuration(format!(
                "CookieName {cookie_name} is the load balancer's own cookie"
            )));
        }
    }
    if lb.policies.contains_key(name) {
        return Err(ApiError::new(
            ErrorCode::DuplicatePolicyName,
            format!("Policy {name} already exists for {}", lb.name),
        ));
    }
    if lb.policies.len() >= MAX_POLICIES {
        return Err(ApiError::new(
            ErrorCode::TooManyPolicies,
            format!("{} already holds {MAX_POLICIES} policies", lb.name),
        ));
    }
    lb.policies.insert(name.to_owned(), policy);
    Ok(())
}

/// An app cookie's name must be an RFC 6265 token.
fn validate_app_cookie_name(cookie: &str) -> Result<(), ApiError> {
    if is_cookie_name(cookie) {
        Ok(())
    } else {
        Err(ApiError::validation(format!(
            "CookieName {cookie:?} must be an RFC 6265 token: no spaces, ';', ',', '=', quotes, control or non-ASCII characters"
        )))
    }
}

fn set_listener_policies(lb: &mut LoadBalancer, port: u16, names: Vec<String>) -> Result<(), ApiError> {
    if !lb.listeners.contains_key(&port) {
        return Err(ApiError::new(
            ErrorCode::ListenerNotFound,
            format!("There is no listener on port {port} of {}", lb.name),
        ));
    }
    for (i, name) in names.iter().enumerate() {
        if !lb.policies.contains_key(name) {
            return Err(ApiError::new(
                ErrorCode::PolicyNotFound,
                format!("There is no policy named {name} on {}", lb.name),
            ));
        }
        if names[..i].contains(name) {
            return Err(ApiError::validation(format!("PolicyNames lists {name} twice")));
        }
    }
    let stickiness = names
        .iter()
        .filter(|name| lb.policies.get(*name).is_some_and(Policy::is_stickiness))
        .count();
    let negotiation = names.len() - stickiness;
    if stickiness > 1 {
        return Err(ApiError::invalid_configuration(
            "A listener can have at most one stickiness policy",
        ));
    }
    if negotiation > 1 {
        return Err(ApiError::invalid_configuration(
            "A listener can have at most one SSLNegotiationPolicyType policy",
        ));
    }
    if let Some(listener) = lb.listeners.get(&port) {
        if listener.is_layer4() && stickiness > 0 {
            return Err(ApiError::invalid_configuration(format!(
                "Stickiness policies are only supported on HTTP and HTTPS listeners; the listener on port {port} is {}",
                listener.protocol
            )));
        }
        if !listener.is_https() && negotiation > 0 {
            return Err(ApiError::invalid_configuration(format!(
                "SSLNegotiationPolicyType policies apply to HTTPS and SSL listeners only; the listener on port {port} is {}",
                listener.protocol
            )));
        }
    }
    if let Some(listener) = lb.listeners.get_mut(&port) {
        listener.policy_names = names;
    }
    Ok(())
}

/// A count of seconds, as a policy attribute: a non-negative integer.
pub fn seconds(field: &str, value: Option<&str>) -> Result<Option<u64>, ApiError> {
    let Some(text) = value else {
        return Ok(None);
    };
    match text.parse::<i64>() {
        Ok(p) if p < 0 => Err(ApiError::validation(format!("{field} must not be negative"))),
        Ok(p) => Ok(Some(p.unsigned_abs())),
        Err(_) => Err(ApiError::validation(format!(
            "{field} must be a whole number of seconds, got {text:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::service::example_service;

    /// Every API call is one store transaction, whichever surface made it: OAPI's calls that
    /// carry several changes commit them together (they took two or three commits, each
    /// visible on its own, when OAPI replayed them as Query API actions).
    #[test]
    fn a_call_with_several_changes_commits_once_or_not_at_all() {
        let (service, dir) = example_service("commands-one-commit");
        let before = service.version();
        let create = json!({
            "LoadBalancerName": "shop",
            "Listeners": [{ "BackendPort": 8080, "LoadBalancerPort": 80, "LoadBalancerProtocol": "HTTP" }],
            "Tags": [{ "Key": "team", "Value": "web" }, { "Key": "env", "Value": "prod" }],
        });
        let done = crate::oapi::run(&service, "CreateLoadBalancer", create).unwrap();
        assert_eq!(done.committed.map(|c| c.version), Some(before + 1), "one commit");
        assert_eq!(
            done.value["LoadBalancer"]["PublicIp"], "127.0.100.2",
            "answered as committed: with the address the write gave it"
        );
        let tags = service.read(|domain| domain.load_balancer("shop").map(|lb| lb.tags.len()));
        assert_eq!(tags, Some(2), "created with its tags");

        let policy = json!({ "LoadBalancerName": "shop", "PolicyName": "sticky", "PolicyType": "load_balancer" });
        crate::oapi::run(&service, "CreateLoadBalancerPolicy", policy).unwrap();
        let before = service.version();
        let update = json!({
            "LoadBalancerName": "shop",
            "LoadBalancerPort": 80,
            "PolicyNames": ["sticky"],
            "SecuredCookies": true,
            "HealthCheck": { "CheckInterval": 30, "HealthyThreshold": 2, "UnhealthyThreshold": 3,
                             "Timeout": 5, "Port": 8080, "Protocol": "HTTP", "Path": "/up" },
        });
        let done = crate::oapi::run(&service, "UpdateLoadBalancer", update).unwrap();
        assert_eq!(done.committed.map(|c| c.version), Some(before + 1), "one commit");
        let (check, policies) = service.read(|domain| {
            let lb = domain.load_balancer("shop").unwrap();
            (lb.health_check.target.clone(), lb.listeners[&80].policy_names.clone())
        });
        assert_eq!((check.as_str(), policies), ("HTTP:8080/up", vec!["sticky".to_owned()]));

        // A policy that does not exist: the health check beside it is not applied either.
        let before = service.version();
        let refused = json!({
            "LoadBalancerName": "shop",
            "LoadBalancerPort": 80,
            "PolicyNames": ["missing"],
            "HealthCheck": { "CheckInterval": 60, "HealthyThreshold": 2, "UnhealthyThreshold": 3,
                             "Timeout": 5, "Port": 8080, "Protocol": "HTTP", "Path": "/other" },
        });
        assert!(crate::oapi::run(&service, "UpdateLoadBalancer", refused).is_err());
        assert_eq!(service.version(), before, "nothing committed");
        let check = service.read(|domain| domain.load_balancer("shop").unwrap().health_check.target.clone());
        assert_eq!(check, "HTTP:8080/up");

        // Tags on two load balancers, one of them missing: neither is tagged.
        let tags = json!({ "LoadBalancerNames": ["shop", "missing"], "Tags": [{ "Key": "k", "Value": "v" }] });
        assert!(crate::oapi::run(&service, "CreateLoadBalancerTags", tags).is_err());
        assert_eq!(service.version(), before, "nothing committed");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_change_that_leaves_the_load_balancer_as_it_was_commits_nothing() {
        let (service, dir) = example_service("commands-no-op");
        let before = service.version();
        let done = service
            .execute(ChangeLoadBalancers::one(
                "terraform-balancer",
                Change::RemoveTags(vec!["absent".to_owned()]),
            ))
            .unwrap();
        assert!(done.committed.is_none());
        assert_eq!(service.version(), before);
        let _ = std::fs::remove_dir_all(dir);
    }
}
