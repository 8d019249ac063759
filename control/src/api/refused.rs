//! The actions of ELB's API that make no sense for a load balancer on a bouncer host (no VPC,
//! subnets or zones here), each refused with its reason; DescribeAccountLimits;
//! and SetLoadBalancerPoliciesForBackendServer, which takes only the empty list.

use crate::error::{ApiError, ErrorCode};
use crate::model::MAX_POLICIES;
use crate::query::Params;
use crate::service::Service;
use crate::xml::Xml;

use crate::commands::load_balancer;

/// Refused actions, with why.
pub const REFUSED: [(&str, &str); 5] = [
    (
        "ApplySecurityGroupsToLoadBalancer",
        "there are no VPC security groups: filter traffic with the bouncer host's firewall (groups given to CreateLoadBalancer are kept as declared, never applied)",
    ),
    (
        "AttachLoadBalancerToSubnets",
        "there are no subnets: a load balancer binds an address of the bouncer's pool (--lb-address-pool); subnets given to CreateLoadBalancer are kept as declared",
    ),
    (
        "DetachLoadBalancerFromSubnets",
        "there are no subnets: a load balancer binds an address of the bouncer's pool (--lb-address-pool); subnets given to CreateLoadBalancer are kept as declared",
    ),
    (
        "EnableAvailabilityZonesForLoadBalancer",
        "there are no availability zones: every instance is reached from the one bouncer; zones given to CreateLoadBalancer are kept as declared",
    ),
    (
        "DisableAvailabilityZonesForLoadBalancer",
        "there are no availability zones: every instance is reached from the one bouncer; zones given to CreateLoadBalancer are kept as declared",
    ),
];

/// Why `action` is refused, if it is.
pub fn reason(action: &str) -> Option<&'static str> {
    REFUSED.iter().find(|(a, _)| *a == action).map(|(_, why)| *why)
}

pub fn refusal(action: &str, reason: &str) -> ApiError {
    ApiError::new(
        ErrorCode::UnsupportedOperation,
        format!("{action} is not supported by this service: {reason}"),
    )
}

pub fn describe_account_limits(service: &Service, params: &Params) -> Result<String, ApiError> {
    if let Some(size) = params.number::<u32>("PageSize")?
        && !(1..=400).contains(&size)
    {
        return Err(ApiError::validation("PageSize must be 1 to 400"));
    }
    let load_balancers = service.config.listener_binding.pool.hosts().count();
    let limits = [
        ("classic-load-balancers", load_balancers),
        ("classic-policies-per-load-balancer", MAX_POLICIES),
        ("classic-tags-per-load-balancer", crate::commands::tags::MAX_TAGS),
    ];
    let mut xml = Xml::new();
    xml.members("Limits", limits, |x, (name, max)| {
        x.leaf("Name", name);
        x.leaf("Max", max);
    });
    Ok(xml.finish())
}

pub fn set_backend_server_policies(service: &Service, params: &Params) -> Result<String, ApiError> {
    let name = params.required("LoadBalancerName")?.to_owned();
    let port: u16 = params.required_number("InstancePort")?;
    let names = params.list("PolicyNames")?.unwrap_or_default();
    service.read(|inner| {
        let lb = load_balancer(inner, &name)?;
        if let Some(missing) = names.iter().find(|n| !lb.policies.contains_key(*n)) {
            return Err(ApiError::new(
                ErrorCode::PolicyNotFound,
                format!("There is no policy named {missing} on {name}"),
            ));
        }
        if let Some(policy) = names.first() {
            return Err(ApiError::invalid_configuration(format!(
                "Policy {policy} cannot apply to instance port {port}: stickiness policies apply to listeners, and backend server policies (ProxyProtocolPolicyType, BackendServerAuthenticationPolicyType) are not supported (the PROXY protocol is not sent, and targets reached over HTTPS or SSL are not authenticated)"
            )));
        }
        // The empty list: no backend server policy, which is the case already.
        Ok(String::new())
    })
}
