//! The LBU / classic ELB actions (Query API 2012-06-01): parameters in, XML out. Every action
//! validates its whole input before changing anything; a rejected call changes nothing.

use std::collections::BTreeMap;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::commands::{Change, ChangeLoadBalancers, CreateLoadBalancer, DeleteLoadBalancer, load_balancer, seconds};
use crate::domain::Domain;
use crate::domain::unix_now;
use crate::error::{ApiError, ErrorCode};
use crate::health::HealthStatus;
use crate::model::{self, HealthCheck, Listener, LoadBalancer, Policy};
use crate::query::Params;
use crate::service::{Done, Service};
use crate::tls_policy;
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
pub fn dispatch(service: &Service, action: &str, params: &Params) -> Result<Done<String>, ApiError> {
    if let Some(reason) = refused::reason(action) {
        return Err(refused::refusal(action, reason));
    }
    let read = match action {
        "AddTags" => return tags::add_tags(service, params),
        "RemoveTags" => return tags::remove_tags(service, params),
        "ModifyLoadBalancerAttributes" => return attributes::modify_attributes(service, params),
        "CreateLoadBalancerPolicy" => return policy_types::create_policy(service, params),
        "CreateLoadBalancer" => return create_load_balancer(service, params),
        "DeleteLoadBalancer" => return delete_load_balancer(service, params),
        "CreateLoadBalancerListeners" => return create_listeners(service, params),
        "DeleteLoadBalancerListeners" => return delete_listeners(service, params),
        "CreateLBCookieStickinessPolicy" => return create_lb_cookie_policy(service, params),
        "CreateAppCookieStickinessPolicy" => return create_app_cookie_policy(service, params),
        "SetLoadBalancerPoliciesOfListener" => return set_listener_policies(service, params),
        "DeleteLoadBalancerPolicy" => return delete_policy(service, params),
        "RegisterInstancesWithLoadBalancer" => return register_instances(service, params),
        "DeregisterInstancesFromLoadBalancer" => return deregister_instances(service, params),
        "ConfigureHealthCheck" => return configure_health_check(service, params),
        "SetLoadBalancerListenerSSLCertificate" => return set_listener_certificate(service, params),
        "DescribeTags" => tags::describe_tags(service, params),
        "DescribeLoadBalancerAttributes" => attributes::describe_attributes(service, params),
        "DescribeLoadBalancerPolicyTypes" => policy_types::describe_policy_types(params),
        "DescribeAccountLimits" => refused::describe_account_limits(service, params),
        "SetLoadBalancerPoliciesForBackendServer" => refused::set_backend_server_policies(service, params),
        "DescribeLoadBalancers" => describe_load_balancers(service, params),
        "DescribeLoadBalancerPolicies" => describe_policies(service, params),
        "DescribeInstanceHealth" => describe_instance_health(service, params),
        _ => Err(ApiError::new(
            ErrorCode::InvalidAction,
            format!("The action {action} is not valid for this web service."),
        )),
    };
    read.map(Done::read)
}

/// SetLoadBalancerListenerSSLCertificate: new handshakes get the new certificate.
fn set_listener_certificate(service: &Service, params: &Params) -> Result<Done<String>, ApiError> {
    let name = params.required("LoadBalancerName")?.to_owned();
    let port: u16 = params.required_number("LoadBalancerPort")?;
    let certificate = params.required("SSLCertificateId")?.to_owned();
    change_one(service, name, Change::SetListenerCertificate { port, certificate })
}

/// `change` to load balancer `name`, for an action whose answer is empty.
pub(super) fn change_one(service: &Service, name: String, change: Change) -> Result<Done<String>, ApiError> {
    Ok(service
        .execute(ChangeLoadBalancers::one(name, change))?
        .map(|_| String::new()))
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
            certificate: member.get("SSLCertificateId").cloned(),
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

fn create_listeners(service: &Service, params: &Params) -> Result<Done<String>, ApiError> {
    let name = params.required("LoadBalancerName")?.to_owned();
    let members = params
        .struct_list("Listeners")?
        .filter(|l| !l.is_empty())
        .ok_or_else(|| ApiError::new(ErrorCode::MissingParameter, "Listeners is required"))?;
    let change = Change::AddListeners(parse_listeners(&members)?);
    change_one(service, name, change)
}

fn delete_listeners(service: &Service, params: &Params) -> Result<Done<String>, ApiError> {
    let name = params.required("LoadBalancerName")?.to_owned();
    let ports = params
        .list("LoadBalancerPorts")?
        .ok_or_else(|| ApiError::new(ErrorCode::MissingParameter, "LoadBalancerPorts is required"))?;
    let ports = ports
        .iter()
        .map(|p| port(Some(p), "LoadBalancerPorts.member.N"))
        .collect::<Result<Vec<u16>, ApiError>>()?;
    let change = Change::RemoveListeners(ports);
    change_one(service, name, change)
}

fn create_load_balancer(service: &Service, params: &Params) -> Result<Done<String>, ApiError> {
    let name = params.required("LoadBalancerName")?.to_owned();
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
    let command = CreateLoadBalancer {
        name: name.clone(),
        listeners,
        health_check: HealthCheck::default_for(first_instance_port),
        placement,
        tags: Vec::new(),
    };
    let done = service.execute(command)?;
    let mut xml = Xml::new();
    xml.leaf("DNSName", model::dns_name(&name));
    Ok(done.map(|()| xml.finish()))
}

fn delete_load_balancer(service: &Service, params: &Params) -> Result<Done<String>, ApiError> {
    let name = params.required("LoadBalancerName")?.to_owned();
    Ok(service.execute(DeleteLoadBalancer { name })?.map(|_| String::new()))
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

fn describe_one(x: &mut Xml, inner: &Domain, lb: &LoadBalancer) {
    x.leaf("LoadBalancerName", &lb.name);
    x.leaf("DNSName", model::dns_name(&lb.name));
    x.members("ListenerDescriptions", lb.listeners.values(), |x, l| {
        x.open("Listener");
        x.leaf("Protocol", &l.protocol);
        x.leaf("LoadBalancerPort", l.load_balancer_port);
        x.leaf("InstanceProtocol", &l.instance_protocol);
        x.leaf("InstancePort", l.instance_port);
        if let Some(certificate) = l.certificate.as_deref().and_then(|id| inner.certificate(id)) {
            x.leaf("SSLCertificateId", certificate.arn());
        }
        x.close("Listener");
        x.members("PolicyNames", &l.policy_names, |x, p| {
            x.leaf_text(p);
        });
    });
    x.open("Policies");
    let app = lb.policies.iter().filter_map(|(n, p)| match p {
        Policy::AppCookie { cookie_name } => Some((n, cookie_name)),
        Policy::LbCookie { .. } | Policy::SslNegotiation(_) => None,
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
        Policy::AppCookie { .. } | Policy::SslNegotiation(_) => None,
    });
    x.members("LBCookieStickinessPolicies", lb_cookie, |x, (name, period)| {
        x.leaf("PolicyName", name);
        if let Some(period) = period {
            x.leaf("CookieExpirationPeriod", period);
        }
    });
    // As ELB, an SSL negotiation policy is one of the "other" policies.
    let other = lb.policies.iter().filter(|(_, p)| !p.is_stickiness()).map(|(n, _)| n);
    x.members("OtherPolicies", other, |x, name| {
        x.leaf_text(name);
    });
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

fn create_lb_cookie_policy(service: &Service, params: &Params) -> Result<Done<String>, ApiError> {
    let policy = Policy::LbCookie {
        cookie_expiration_period: seconds("CookieExpirationPeriod", params.get("CookieExpirationPeriod"))?,
        max_lifetime: None,
    };
    add_policy(service, params, policy)
}

/// `PolicyName` added to load balancer `LoadBalancerName`.
fn add_policy(service: &Service, params: &Params, policy: Policy) -> Result<Done<String>, ApiError> {
    let lb = params.required("LoadBalancerName")?.to_owned();
    let name = params.required("PolicyName")?.to_owned();
    let change = Change::AddPolicy { name, policy };
    change_one(service, lb, change)
}

fn create_app_cookie_policy(service: &Service, params: &Params) -> Result<Done<String>, ApiError> {
    let cookie_name = params.required("CookieName")?.to_owned();
    add_policy(service, params, Policy::AppCookie { cookie_name })
}

fn set_listener_policies(service: &Service, params: &Params) -> Result<Done<String>, ApiError> {
    let name = params.required("LoadBalancerName")?.to_owned();
    let port: u16 = params.required_number("LoadBalancerPort")?;
    // An absent list is the empty list: osc-cli sends no `PolicyNames` at all for an empty
    // list, and removing stickiness is what an operator means by naming no policy.
    let names = params.list("PolicyNames")?.unwrap_or_default();
    let change = Change::SetListenerPolicies { port, names };
    change_one(service, name, change)
}

fn delete_policy(service: &Service, params: &Params) -> Result<Done<String>, ApiError> {
    let name = params.required("LoadBalancerName")?.to_owned();
    let change = Change::DeletePolicy(params.required("PolicyName")?.to_owned());
    change_one(service, name, change)
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
        } else {
            // Without a load balancer: ELB's predefined (sample) policies, those that apply
            // here, as they are served.
            if names.is_empty() {
                for name in tls_policy::predefined_names() {
                    selected.push((name.to_owned(), Policy::SslNegotiation(tls_policy::predefined(name)?)));
                }
            }
            for name in &names {
                let policy = tls_policy::predefined(name).map_err(|e| {
                    ApiError::new(
                        ErrorCode::PolicyNotFound,
                        format!("There is no sample policy named {name} here: {}", e.message),
                    )
                })?;
                selected.push((name.clone(), Policy::SslNegotiation(policy)));
            }
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
                        "CookieExpirationPeriod".to_owned(),
                        cookie_expiration_period.map_or_else(String::new, |p| p.to_string()),
                    )];
                    if let Some(max_lifetime) = max_lifetime {
                        attributes.push((policy_types::COOKIE_MAX_LIFETIME.to_owned(), max_lifetime.to_string()));
                    }
                    attributes
                }
                Policy::AppCookie { cookie_name } => vec![("CookieName".to_owned(), cookie_name.clone())],
                Policy::SslNegotiation(policy) => policy.attributes(),
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

fn register_instances(service: &Service, params: &Params) -> Result<Done<String>, ApiError> {
    change_instances(service, params, Change::Register)
}

/// Registers or deregisters `Instances`; answers the instances registered afterwards.
fn change_instances(
    service: &Service,
    params: &Params,
    change: fn(Vec<String>) -> Change,
) -> Result<Done<String>, ApiError> {
    let name = params.required("LoadBalancerName")?.to_owned();
    let ids = instance_ids(params, true)?.unwrap_or_default();
    let done = service.execute(ChangeLoadBalancers::one(name, change(ids)))?;
    Ok(done.map(|lbs| instances_result(lbs.into_iter().flat_map(|lb| lb.instances))))
}

fn deregister_instances(service: &Service, params: &Params) -> Result<Done<String>, ApiError> {
    change_instances(service, params, Change::Deregister)
}

fn configure_health_check(service: &Service, params: &Params) -> Result<Done<String>, ApiError> {
    let name = params.required("LoadBalancerName")?.to_owned();
    let check = HealthCheck {
        target: params.required("HealthCheck.Target")?.to_owned(),
        interval: params.required_number("HealthCheck.Interval")?,
        timeout: params.required_number("HealthCheck.Timeout")?,
        unhealthy_threshold: params.required_number("HealthCheck.UnhealthyThreshold")?,
        healthy_threshold: params.required_number("HealthCheck.HealthyThreshold")?,
    };
    let change = Change::SetHealthCheck {
        check: check.clone(),
        max_interval: model::MAX_CHECK_INTERVAL,
    };
    let done = service.execute(ChangeLoadBalancers::one(name, change))?;
    let mut xml = Xml::new();
    write_health_check(&mut xml, &check);
    Ok(done.map(|_| xml.finish()))
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
pub fn instance_state(inner: &Domain, lb: &LoadBalancer, id: &str, now: i64) -> InstanceState {
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
        dispatch(service, action, &params).map(|done| done.value)
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
