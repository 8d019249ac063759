//! The LBU / classic ELB actions (Query API 2012-06-01): parameters in, XML out. Every action
//! validates its whole input before changing anything; a rejected call changes nothing.

use std::collections::BTreeMap;

use sticky_core::CookieSettings;
use sticky_core::cookies::is_cookie_name;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::{ApiError, ErrorCode};
use crate::health::HealthStatus;
use crate::model::{self, HealthCheck, Listener, LoadBalancer, MAX_POLICIES, Policy};
use crate::query::Params;
use crate::service::{Inner, Service, Write, unix_now};
use crate::xml::Xml;

mod attributes;
mod policy_types;
mod refused;
pub(crate) mod tags;

/// Every action of the classic ELB 2012-06-01 API: each is implemented or refused with a
/// reason ([`refused::REFUSED`]); anything else is `InvalidAction`.
pub const ACTIONS: [&str; 29] = [
    "AddTags",
    "ApplySecurityGroupsToLoadBalancer",
    "AttachLoadBalancerToSubnets",
    "ConfigureHealthCheck",
    "CreateAppCookieStickinessPolicy",
    "CreateLBCookieStickinessPolicy",
    "CreateLoadBalancer",
    "CreateLoadBalancerListeners",
    "CreateLoadBalancerPolicy",
    "DeleteLoadBalancer",
    "DeleteLoadBalancerListeners",
    "DeleteLoadBalancerPolicy",
    "DeregisterInstancesFromLoadBalancer",
    "DescribeAccountLimits",
    "DescribeInstanceHealth",
    "DescribeLoadBalancerAttributes",
    "DescribeLoadBalancerPolicies",
    "DescribeLoadBalancerPolicyTypes",
    "DescribeLoadBalancers",
    "DescribeTags",
    "DetachLoadBalancerFromSubnets",
    "DisableAvailabilityZonesForLoadBalancer",
    "EnableAvailabilityZonesForLoadBalancer",
    "ModifyLoadBalancerAttributes",
    "RegisterInstancesWithLoadBalancer",
    "RemoveTags",
    "SetLoadBalancerListenerSSLCertificate",
    "SetLoadBalancerPoliciesForBackendServer",
    "SetLoadBalancerPoliciesOfListener",
];

/// Runs `action`; returns the inner XML of its `{Action}Result`.
pub fn dispatch(service: &Service, action: &str, params: &Params) -> Result<String, ApiError> {
    if let Some(reason) = refused::reason(action) {
        return Err(refused::refusal(action, reason));
    }
    match action {
        "AddTags" => tags::add_tags(service, params),
        "RemoveTags" => tags::remove_tags(service, params),
        "DescribeTags" => tags::describe_tags(service, params),
        "DescribeLoadBalancerAttributes" => attributes::describe_attributes(service, params),
        "ModifyLoadBalancerAttributes" => attributes::modify_attributes(service, params),
        "CreateLoadBalancerPolicy" => policy_types::create_policy(service, params),
        "DescribeLoadBalancerPolicyTypes" => policy_types::describe_policy_types(params),
        "DescribeAccountLimits" => refused::describe_account_limits(service, params),
        "SetLoadBalancerPoliciesForBackendServer" => refused::set_backend_server_policies(service, params),
        "CreateLoadBalancer" => create_load_balancer(service, params),
        "DeleteLoadBalancer" => delete_load_balancer(service, params),
        "CreateLoadBalancerListeners" => create_listeners(service, params),
        "DeleteLoadBalancerListeners" => delete_listeners(service, params),
        "DescribeLoadBalancers" => describe_load_balancers(service, params),
        "CreateLBCookieStickinessPolicy" => create_lb_cookie_policy(service, params),
        "CreateAppCookieStickinessPolicy" => create_app_cookie_policy(service, params),
        "SetLoadBalancerPoliciesOfListener" => set_listener_policies(service, params),
        "DeleteLoadBalancerPolicy" => delete_policy(service, params),
        "DescribeLoadBalancerPolicies" => describe_policies(service, params),
        "RegisterInstancesWithLoadBalancer" => register_instances(service, params),
        "DeregisterInstancesFromLoadBalancer" => deregister_instances(service, params),
        "ConfigureHealthCheck" => configure_health_check(service, params),
        "DescribeInstanceHealth" => describe_instance_health(service, params),
        _ => Err(ApiError::new(
            ErrorCode::InvalidAction,
            format!("The action {action} is not valid for this web service."),
        )),
    }
}

fn load_balancer<'a>(inner: &'a Inner, name: &str) -> Result<&'a LoadBalancer, ApiError> {
    inner
        .load_balancer(name)
        .ok_or_else(|| ApiError::load_balancer_not_found(name))
}

/// Applies `change` to a copy of load balancer `LoadBalancerName` and stores it.
fn update<R>(
    service: &Service,
    params: &Params,
    change: impl FnOnce(&Inner, &mut LoadBalancer) -> Result<R, ApiError>,
) -> Result<R, ApiError> {
    let name = params.required("LoadBalancerName")?.to_owned();
    service.write(|inner| {
        let mut lb = load_balancer(inner, &name)?.clone();
        let result = change(inner, &mut lb)?;
        let writes = if inner.load_balancer(&name) == Some(&lb) {
            vec![]
        } else {
            vec![Write::PutLoadBalancer(lb)]
        };
        Ok((writes, result))
    })
}

fn port(value: Option<&String>, field: &str) -> Result<u16, ApiError> {
    let text = value.ok_or_else(|| ApiError::new(ErrorCode::MissingParameter, format!("{field} is required")))?;
    text.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| ApiError::validation(format!("{field} must be 1 to 65535, got {text:?}")))
}

/// `Listeners.member.N` of CreateLoadBalancer and CreateLoadBalancerListeners, by port.
fn parse_listeners(members: &[BTreeMap<String, String>]) -> Result<BTreeMap<u16, Listener>, ApiError> {
    let mut listeners = BTreeMap::new();
    for member in members {
        let protocol = member
            .get("Protocol")
            .ok_or_else(|| ApiError::new(ErrorCode::MissingParameter, "Listeners.member.N.Protocol is required"))?;
        let protocol = model::validate_protocol("Protocol", protocol)?;
        let instance_protocol = match member.get("InstanceProtocol") {
            Some(p) => model::validate_protocol("InstanceProtocol", p)?,
            None => protocol.clone(),
        };
        let listener = Listener {
            protocol,
            load_balancer_port: port(member.get("LoadBalancerPort"), "LoadBalancerPort")?,
            instance_protocol,
            instance_port: port(member.get("InstancePort"), "InstancePort")?,
            policy_names: Vec::new(),
        };
        if listeners
            .insert(listener.load_balancer_port, listener.clone())
            .is_some()
        {
            return Err(ApiError::new(
                ErrorCode::DuplicateListener,
                format!("port {} is given twice", listener.load_balancer_port),
            ));
        }
    }
    Ok(listeners)
}

/// The same listener, policies aside (ELB's test for an idempotent repeat).
fn same_listener(a: &Listener, b: &Listener) -> bool {
    (a.protocol.as_str(), a.instance_port, a.instance_protocol.as_str())
        == (b.protocol.as_str(), b.instance_port, b.instance_protocol.as_str())
}

fn create_listeners(service: &Service, params: &Params) -> Result<String, ApiError> {
    let members = params
        .struct_list("Listeners")?
        .filter(|l| !l.is_empty())
        .ok_or_else(|| ApiError::new(ErrorCode::MissingParameter, "Listeners is required"))?;
    let listeners = parse_listeners(&members)?;
    update(service, params, |_, lb| {
        for (port, listener) in listeners {
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
        Ok(String::new())
    })
}

fn delete_listeners(service: &Service, params: &Params) -> Result<String, ApiError> {
    let ports = params
        .list("LoadBalancerPorts")?
        .ok_or_else(|| ApiError::new(ErrorCode::MissingParameter, "LoadBalancerPorts is required"))?;
    let ports = ports
        .iter()
        .map(|p| port(Some(p), "LoadBalancerPorts.member.N"))
        .collect::<Result<Vec<u16>, ApiError>>()?;
    // A port with no listener is not an error, as in ELB.
    update(service, params, |_, lb| {
        for port in &ports {
            lb.listeners.remove(port);
        }
        Ok(String::new())
    })
}

fn create_load_balancer(service: &Service, params: &Params) -> Result<String, ApiError> {
    let name = params.required("LoadBalancerName")?.to_owned();
    model::validate_name("LoadBalancerName", &name)?;
    let members = params
        .struct_list("Listeners")?
        .filter(|l| !l.is_empty())
        .ok_or_else(|| ApiError::validation("Listeners must hold at least one listener"))?;
    let listeners = parse_listeners(&members)?;
    let placement = model::Placement {
        zones: params.list("AvailabilityZones")?.unwrap_or_default(),
        subnets: params.list("Subnets")?.unwrap_or_default(),
        security_groups: params.list("SecurityGroups")?.unwrap_or_default(),
        internal: params
            .get("Scheme")
            .map(|scheme| model::Placement::parse_scheme(model::ELB_PLACEMENT_FIELDS.scheme, scheme))
            .transpose()?
            .unwrap_or(false),
    }
    .validated(&model::ELB_PLACEMENT_FIELDS)?;
    let first_instance_port = members
        .first()
        .and_then(|m| m.get("InstancePort"))
        .and_then(|p| p.parse().ok())
        .unwrap_or(80);
    service.write(|inner| {
        if let Some(existing) = inner.load_balancer(&name) {
            // Idempotent for the same listeners, as ELB.
            let same = existing.listeners.len() == listeners.len()
                && existing
                    .listeners
                    .iter()
                    .all(|(p, l)| listeners.get(p).is_some_and(|n| same_listener(n, l)));
            return if same {
                Ok((vec![], ()))
            } else {
                Err(ApiError::new(
                    ErrorCode::DuplicateLoadBalancerName,
                    format!("Load balancer {name} already exists"),
                ))
            };
        }
        let lb = LoadBalancer {
            name: name.clone(),
            created_at: unix_now(),
            listeners,
            policies: BTreeMap::new(),
            instances: Default::default(),
            health_check: HealthCheck::default_for(first_instance_port),
            address: None,
            attributes: Default::default(),
            tags: BTreeMap::new(),
            draining: BTreeMap::new(),
            placement: Box::new(placement),
        };
        Ok((vec![Write::PutLoadBalancer(lb)], ()))
    })?;
    let mut xml = Xml::new();
    xml.leaf("DNSName", dns_name(&name));
    Ok(xml.finish())
}

fn dns_name(name: &str) -> String {
    model::dns_name(name)
}

fn delete_load_balancer(service: &Service, params: &Params) -> Result<String, ApiError> {
    let name = params.required("LoadBalancerName")?.to_owned();
    // Deleting a load balancer that does not exist succeeds, as in ELB.
    service.write(|inner| {
        let writes = if inner.load_balancer(&name).is_some() {
            vec![Write::DeleteLoadBalancer(name.clone())]
        } else {
            vec![]
        };
        Ok((writes, ()))
    })?;
    Ok(String::new())
}

fn describe_load_balancers(service: &Service, params: &Params) -> Result<String, ApiError> {
    let names = params.list("LoadBalancerNames")?.unwrap_or_default();
    let page_size: usize = params.number("PageSize")?.unwrap_or(400);
    if !(1..=400).contains(&page_size) {
        return Err(ApiError::validation("PageSize must be 1 to 400"));
    }
    let marker = params.get("Marker").map(str::to_owned);
    service.read(|inner| {
        let selected: Vec<&LoadBalancer> = if names.is_empty() {
            inner.load_balancers().collect()
        } else {
            names
                .iter()
                .map(|n| load_balancer(inner, n))
                .collect::<Result<_, _>>()?
        };
        let start = marker.as_ref().map_or(0, |m| {
            selected.iter().position(|lb| &lb.name > m).unwrap_or(selected.len())
        });
        let page = &selected[start..selected.len().min(start + page_size)];
        let next_marker = (start + page.len() < selected.len())
            .then(|| page.last().map(|lb| lb.name.clone()))
            .flatten();
        let mut xml = Xml::new();
        xml.members("LoadBalancerDescriptions", page, |x, lb| describe_one(x, inner, lb));
        if let Some(marker) = next_marker {
            xml.leaf("NextMarker", marker);
        }
        Ok(xml.finish())
    })
}

fn describe_one(x: &mut Xml, inner: &Inner, lb: &LoadBalancer) {
    x.leaf("LoadBalancerName", &lb.name);
    x.leaf("DNSName", dns_name(&lb.name));
    x.members("ListenerDescriptions", lb.listeners.values(), |x, l| {
        x.open("Listener");
        x.leaf("Protocol", &l.protocol);
        x.leaf("LoadBalancerPort", l.load_balancer_port);
        x.leaf("InstanceProtocol", &l.instance_protocol);
        x.leaf("InstancePort", l.instance_port);
        x.close("Listener");
        x.members("PolicyNames", &l.policy_names, |x, p| {
            x.leaf_text(p);
        });
    });
    x.open("Policies");
    let app = lb.policies.iter().filter_map(|(n, p)| match p {
        Policy::AppCookie { cookie_name } => Some((n, cookie_name)),
        Policy::LbCookie { .. } => None,
    });
    x.members("AppCookieStickinessPolicies", app, |x, (name, cookie)| {
        x.leaf("PolicyName", name);
        x.leaf("CookieName", cookie);
    });
    let lb_cookie = lb.policies.iter().filter_map(|(n, p)| match p {
        Policy::LbCookie {
            cookie_expiration_period,
            ..
        } => Some((n, cookie_expiration_period)),
        Policy::AppCookie { .. } => None,
    });
    x.members("LBCookieStickinessPolicies", lb_cookie, |x, (name, period)| {
        x.leaf("PolicyName", name);
        if let Some(period) = period {
            x.leaf("CookieExpirationPeriod", period);
        }
    });
    x.members("OtherPolicies", std::iter::empty::<&str>(), |_, _| {});
    x.close("Policies");
    x.members("BackendServerDescriptions", std::iter::empty::<&str>(), |_, _| {});
    x.members("AvailabilityZones", &lb.placement.zones, |x, zone| {
        x.leaf_text(zone);
    });
    x.members("Subnets", &lb.placement.subnets, |x, subnet| {
        x.leaf_text(subnet);
    });
    x.members("Instances", &lb.instances, |x, id| {
        x.leaf("InstanceId", id);
    });
    write_health_check(x, &lb.health_check);
    x.members("SecurityGroups", &lb.placement.security_groups, |x, group| {
        x.leaf_text(group);
    });
    let created = OffsetDateTime::from_unix_timestamp(lb.created_at).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    x.leaf("CreatedTime", created.format(&Rfc3339).unwrap_or_default());
    x.leaf("Scheme", lb.placement.scheme());
    let _ = inner;
}

fn write_health_check(x: &mut Xml, check: &HealthCheck) {
    x.open("HealthCheck");
    x.leaf("Target", &check.target);
    x.leaf("Interval", check.interval);
    x.leaf("Timeout", check.timeout);
    x.leaf("UnhealthyThreshold", check.unhealthy_threshold);
    x.leaf("HealthyThreshold", check.healthy_threshold);
    x.close("HealthCheck");
}

/// Adds policy `name`; `defaults` are the service's cookie settings (an app cookie must not
/// take the name of the load balancer's own cookie or its CORS twin).
fn add_policy(lb: &mut LoadBalancer, name: &str, policy: Policy, defaults: &CookieSettings) -> Result<(), ApiError> {
    if let Policy::AppCookie { cookie_name } = &policy {
        let own = lb.attributes.cookie_settings(defaults);
        let twin = CookieSettings::twin_name(&own.name);
        if *cookie_name == own.name || (own.cors_twin && *cookie_name == twin) {
            return Err(ApiError::invalid_configuration(format!(
                "CookieName {cookie_name} is the load balancer's own cookie"
            )));
        }
    }
    model::validate_policy_name(name)?;
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

fn create_lb_cookie_policy(service: &Service, params: &Params) -> Result<String, ApiError> {
    let name = params.required("PolicyName")?.to_owned();
    let period = seconds("CookieExpirationPeriod", params.get("CookieExpirationPeriod"))?;
    let defaults = service.config.cookie.clone();
    update(service, params, |_, lb| {
        add_policy(
            lb,
            &name,
            Policy::LbCookie {
                cookie_expiration_period: period,
                max_lifetime: None,
            },
            &defaults,
        )
    })?;
    Ok(String::new())
}

/// A count of seconds, as a policy attribute: a non-negative integer.
fn seconds(field: &str, value: Option<&str>) -> Result<Option<u64>, ApiError> {
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

/// An app cookie must be a token and not the load balancer's own cookie (nor its CORS twin).
fn validate_app_cookie_name(cookie: &str) -> Result<(), ApiError> {
    if is_cookie_name(cookie) {
        Ok(())
    } else {
        Err(ApiError::validation(format!(
            "CookieName {cookie:?} must be an RFC 6265 token: no spaces, ';', ',', '=', quotes, control or non-ASCII characters"
        )))
    }
}

fn create_app_cookie_policy(service: &Service, params: &Params) -> Result<String, ApiError> {
    let name = params.required("PolicyName")?.to_owned();
    let cookie = params.required("CookieName")?.to_owned();
    validate_app_cookie_name(&cookie)?;
    let defaults = service.config.cookie.clone();
    update(service, params, |_, lb| {
        add_policy(lb, &name, Policy::AppCookie { cookie_name: cookie }, &defaults)
    })?;
    Ok(String::new())
}

fn set_listener_policies(service: &Service, params: &Params) -> Result<String, ApiError> {
    let port: u16 = params.required_number("LoadBalancerPort")?;
    // An absent list is the empty list: osc-cli sends no `PolicyNames` at all for an empty
    // list, and removing stickiness is what an operator means by naming no policy.
    let names = params.list("PolicyNames")?.unwrap_or_default();
    update(service, params, |_, lb| {
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
        if names.len() > 1 {
            return Err(ApiError::invalid_configuration(
                "A listener can have at most one stickiness policy",
            ));
        }
        if let Some(listener) = lb.listeners.get_mut(&port) {
            listener.policy_names = names.clone();
        }
        Ok(())
    })?;
    Ok(String::new())
}

fn delete_policy(service: &Service, params: &Params) -> Result<String, ApiError> {
    let name = params.required("PolicyName")?.to_owned();
    update(service, params, |_, lb| {
        if lb.policy_in_use(&name) {
            return Err(ApiError::invalid_configuration(format!(
                "Policy {name} is in use by a listener; remove it from the listener first"
            )));
        }
        lb.policies.remove(&name);
        Ok(())
    })?;
    Ok(String::new())
}

fn describe_policies(service: &Service, params: &Params) -> Result<String, ApiError> {
    let names = params.list("PolicyNames")?.unwrap_or_default();
    service.read(|inner| {
        let mut selected: Vec<(String, Policy)> = Vec::new();
        if let Some(lb_name) = params.get("LoadBalancerName") {
            let lb = load_balancer(inner, lb_name)?;
            if names.is_empty() {
                selected = lb.policies.iter().map(|(n, p)| (n.clone(), p.clone())).collect();
            } else {
                for name in &names {
                    let policy = lb.policies.get(name).ok_or_else(|| {
                        ApiError::new(
                            ErrorCode::PolicyNotFound,
                            format!("There is no policy named {name} on {lb_name}"),
                        )
                    })?;
                    selected.push((name.clone(), policy.clone()));
                }
            }
        } else if let Some(name) = names.first() {
            return Err(ApiError::new(
                ErrorCode::PolicyNotFound,
                format!("There is no sample policy named {name}"),
            ));
        }
        let mut xml = Xml::new();
        xml.members("PolicyDescriptions", &selected, |x, (name, policy)| {
            x.leaf("PolicyName", name);
            x.leaf("PolicyTypeName", policy.type_name());
            let attribute = match policy {
                Policy::LbCookie {
                    cookie_expiration_period,
                    max_lifetime,
                } => {
                    let mut attributes = vec![(
                        "CookieExpirationPeriod",
                        cookie_expiration_period.map_or_else(String::new, |p| p.to_string()),
                    )];
                    if let Some(max_lifetime) = max_lifetime {
                        attributes.push((policy_types::COOKIE_MAX_LIFETIME, max_lifetime.to_string()));
                    }
                    attributes
                }
                Policy::AppCookie { cookie_name } => vec![("CookieName", cookie_name.clone())],
            };
            x.members("PolicyAttributeDescriptions", attribute, |x, (a, v)| {
                x.leaf("AttributeName", a);
                x.leaf("AttributeValue", v);
            });
        });
        Ok(xml.finish())
    })
}

fn instance_ids(params: &Params, required: bool) -> Result<Option<Vec<String>>, ApiError> {
    let members = params.struct_list("Instances")?;
    let ids = members
        .map(|members| {
            members
                .into_iter()
                .map(|m| {
                    m.get("InstanceId")
                        .cloned()
                        .ok_or_else(|| ApiError::validation("Instances.member.N.InstanceId is required"))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    if required && ids.as_ref().is_none_or(Vec::is_empty) {
        return Err(ApiError::validation("Instances must list at least one instance"));
    }
    Ok(ids)
}

fn instances_result(lb_instances: impl IntoIterator<Item = String>) -> String {
    let mut xml = Xml::new();
    xml.members("Instances", lb_instances, |x, id| {
        x.leaf("InstanceId", id);
    });
    xml.finish()
}

fn register_instances(service: &Service, params: &Params) -> Result<String, ApiError> {
    let ids = instance_ids(params, true)?.unwrap_or_default();
    let registered = update(service, params, |inner, lb| {
        for id in &ids {
            if !inner.registry().knows(id) {
                return Err(ApiError::new(
                    ErrorCode::InvalidInstance,
                    format!("The instance {id} is not known (not in the instance registry, not ip:port)"),
                ));
            }
        }
        lb.instances.extend(ids.iter().cloned());
        // Registered again: its drain ends.
        for id in &ids {
            lb.draining.remove(id);
        }
        Ok(lb.instances.clone())
    })?;
    Ok(instances_result(registered))
}

fn deregister_instances(service: &Service, params: &Params) -> Result<String, ApiError> {
    let ids = instance_ids(params, true)?.unwrap_or_default();
    let remaining = update(service, params, |_, lb| {
        for id in &ids {
            if !lb.instances.contains(id) {
                return Err(ApiError::new(
                    ErrorCode::InvalidInstance,
                    format!("The instance {id} is not registered with {}", lb.name),
                ));
            }
        }
        let draining = lb.attributes.connection_draining;
        for id in &ids {
            lb.instances.remove(id);
            if draining.enabled {
                lb.draining
                    .insert(id.clone(), crate::service::unix_after(draining.timeout));
            }
        }
        Ok(lb.instances.clone())
    })?;
    Ok(instances_result(remaining))
}

/// Sets load balancer `name`'s health check, checked with `max_interval` as the interval's
/// ceiling (ELB's 300 s; OAPI's 600 s).
pub(crate) fn set_health_check(
    service: &Service,
    name: &str,
    check: HealthCheck,
    max_interval: u32,
) -> Result<(), ApiError> {
    check.validate_within(max_interval)?;
    let params = Params::parse(
        None,
        Some(
            form_urlencoded::Serializer::new(String::new())
                .append_pair("LoadBalancerName", name)
                .finish()
                .as_bytes(),
        ),
    )?;
    update(service, &params, |_, lb| {
        lb.health_check = check;
        Ok(())
    })
}

fn configure_health_check(service: &Service, params: &Params) -> Result<String, ApiError> {
    let check = HealthCheck {
        target: params.required("HealthCheck.Target")?.to_owned(),
        interval: params.required_number("HealthCheck.Interval")?,
        timeout: params.required_number("HealthCheck.Timeout")?,
        unhealthy_threshold: params.required_number("HealthCheck.UnhealthyThreshold")?,
        healthy_threshold: params.required_number("HealthCheck.HealthyThreshold")?,
    };
    check.validate()?;
    update(service, params, |_, lb| {
        lb.health_check = check.clone();
        Ok(())
    })?;
    let mut xml = Xml::new();
    write_health_check(&mut xml, &check);
    Ok(xml.finish())
}

/// An instance's state as DescribeInstanceHealth words it (the operator page shows the same).
pub struct InstanceState {
    pub state: &'static str,
    pub reason: &'static str,
    pub description: String,
    /// Not probed yet (registration in progress).
    pub pending: bool,
}

/// Instance `id` of `lb` at Unix second `now`: probed health, or its draining.
pub fn instance_state(inner: &Inner, lb: &LoadBalancer, id: &str, now: i64) -> InstanceState {
    let health = inner.health(&lb.name, id);
    let drain_end = lb.draining.get(id).filter(|_| !lb.instances.contains(id));
    let (state, reason, description) = match health.map(|h| h.status) {
        // ELB's words for an instance in its connection draining period.
        status if drain_end.is_some() => (
            if status == Some(HealthStatus::InService) {
                "InService"
            } else {
                "OutOfService"
            },
            "ELB",
            format!(
                "Instance deregistration currently in progress. Draining {} for {} s more.",
                if lb.attributes.session_draining {
                    "its sticky sessions"
                } else {
                    "in-flight requests"
                },
                drain_end.map_or(0, |end| end.saturating_sub(now).max(0))
            ),
        ),
        Some(HealthStatus::InService) => ("InService", "N/A", "N/A".to_owned()),
        Some(HealthStatus::OutOfService) => (
            "OutOfService",
            "Instance",
            format!(
                "Instance has failed at least the UnhealthyThreshold number of health checks consecutively: {}",
                health.map_or("", |h| h.last_failure.as_str())
            ),
        ),
        Some(HealthStatus::Pending) | None => (
            "OutOfService",
            "ELB",
            "Instance registration is still in progress.".to_owned(),
        ),
    };
    InstanceState {
        state,
        reason,
        description,
        pending: drain_end.is_none() && health.is_none_or(|h| h.status == HealthStatus::Pending),
    }
}

fn describe_instance_health(service: &Service, params: &Params) -> Result<String, ApiError> {
    let name = params.required("LoadBalancerName")?.to_owned();
    let asked = instance_ids(params, false)?.filter(|ids| !ids.is_empty());
    service.read(|inner| {
        let lb = load_balancer(inner, &name)?;
        let ids: Vec<String> = match asked {
            Some(ids) => {
                if let Some(unknown) = ids.iter().find(|id| !lb.has_target(id)) {
                    return Err(ApiError::new(
                        ErrorCode::InvalidInstance,
                        format!("The instance {unknown} is not registered with {name}"),
                    ));
                }
                ids
            }
            None => lb.instances.iter().chain(lb.draining.keys()).cloned().collect(),
        };
        let now = unix_now();
        let mut xml = Xml::new();
        xml.members("InstanceStates", ids, |x, id| {
            let InstanceState {
                state,
                reason,
                description,
                ..
            } = instance_state(inner, lb, &id, now);
            x.leaf("InstanceId", &id);
            x.leaf("State", state);
            x.leaf("ReasonCode", reason);
            x.leaf("Description", description);
        });
        Ok(xml.finish())
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::service::example_service;

    fn call(service: &Service, action: &str, pairs: &[(&str, &str)]) -> Result<String, ApiError> {
        let query: String = pairs
            .iter()
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let params = Params::parse(Some(&query), None)?;
        dispatch(service, action, &params)
    }

    fn urlencode(value: &str) -> String {
        value
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }

    #[test]
    fn every_action_of_the_2012_06_01_api_is_implemented_or_refused_with_its_reason() {
        let (service, dir) = example_service("api-every-action");
        for action in ACTIONS {
            let answer = call(&service, action, &[]);
            match refused::reason(action) {
                Some(reason) => {
                    let error = answer.unwrap_err();
                    assert_eq!(error.code, ErrorCode::UnsupportedOperation, "{action}");
                    assert!(error.message.contains(reason), "{action}: {}", error.message);
                }
                // Implemented: at worst a missing parameter, never InvalidAction.
                None => {
                    if let Err(error) = answer {
                        assert_ne!(error.code, ErrorCode::InvalidAction, "{action}");
                        assert_ne!(error.code, ErrorCode::UnsupportedOperation, "{action}");
                    }
                }
            }
        }
        assert_eq!(
            call(&service, "DescribeLoadBalancersV2", &[]).unwrap_err().code,
            ErrorCode::InvalidAction
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    const KEYS: [&str; 24] = [
        "LoadBalancerName",
        "LoadBalancerNames.member.1",
        "PolicyName",
        "PolicyTypeName",
        "PolicyTypeNames.member.1",
        "PolicyAttributes.member.1.AttributeName",
        "PolicyAttributes.member.1.AttributeValue",
        "PolicyAttributes.member.2.AttributeName",
        "PolicyAttributes.member.2.AttributeValue",
        "Tags.member.1.Key",
        "Tags.member.1.Value",
        "Tags.member.2.Key",
        "LoadBalancerAttributes.ConnectionDraining.Enabled",
        "LoadBalancerAttributes.ConnectionDraining.Timeout",
        "LoadBalancerAttributes.ConnectionSettings.IdleTimeout",
        "LoadBalancerAttributes.CrossZoneLoadBalancing.Enabled",
        "LoadBalancerAttributes.AccessLog.Enabled",
        "LoadBalancerAttributes.AdditionalAttributes.member.1.Key",
        "LoadBalancerAttributes.AdditionalAttributes.member.1.Value",
        "Instances.member.1.InstanceId",
        "InstancePort",
        "PolicyNames.member.1",
        "CookieExpirationPeriod",
        "PageSize",
    ];
    const VALUES: [&str; 16] = [
        "terraform-balancer",
        "true",
        "false",
        "0",
        "-1",
        "99999999999999999999",
        "LBCookieStickinessPolicyType",
        "AppCookieStickinessPolicyType",
        "CookieMaxLifetime",
        "sticky.cookie.samesite",
        "sticky.session_draining.enabled",
        "None",
        "a;b\r\nSet-Cookie: x=y",
        "i-target1",
        "",
        "\u{e9}\u{0}",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        /// Any action with any mix of its parameters: an answer or a typed error, never a
        /// panic; a refused call changes nothing.
        #[test]
        fn any_parameters_get_an_answer_and_a_refused_call_changes_nothing(
            action in 0..ACTIONS.len(),
            pairs in proptest::collection::vec((0..KEYS.len(), 0..VALUES.len()), 0..8),
        ) {
            let (service, dir) = example_service(&format!("api-proptest-{}", std::thread::current().name().unwrap_or("t").replace("::", "-")));
            let mut seen = std::collections::BTreeMap::new();
            for (k, v) in pairs {
                seen.insert(KEYS[k], VALUES[v]);
            }
            let pairs: Vec<(&str, &str)> = seen.into_iter().collect();
            let before = service.version();
            if call(&service, ACTIONS[action], &pairs).is_err() {
                prop_assert_eq!(service.version(), before);
            }
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
