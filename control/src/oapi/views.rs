//! The domain as OAPI's JSON: `LoadBalancer`, `BackendVmHealth`, `LoadBalancerTag`.

use serde_json::{Value, json};

use crate::api::{InstanceState, instance_state};
use crate::domain::Domain;
use crate::domain::unix_now;
use crate::model::{LoadBalancer, Policy, dns_name};
use crate::service::Service;

/// OAPI's `CookieExpirationPeriod` for a browser-session cookie.
pub const BROWSER_SESSION_PERIOD: u64 = 1;

/// A health check target `HTTP:80/health` as OAPI's `HealthCheck` (`Protocol`, `Port`, `Path`).
fn health_check(lb: &LoadBalancer) -> Value {
    let check = &lb.health_check;
    let (protocol, rest) = check.target.split_once(':').unwrap_or(("TCP", ""));
    let (port, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], Some(&rest[slash..])),
        None => (rest, None),
    };
    let mut view = json!({
        "CheckInterval": check.interval,
        "HealthyThreshold": check.healthy_threshold,
        "Port": port.parse::<u16>().unwrap_or(0),
        "Protocol": protocol.to_ascii_uppercase(),
        "Timeout": check.timeout,
        "UnhealthyThreshold": check.unhealthy_threshold,
    });
    if let (Some(path), Some(object)) = (path, view.as_object_mut()) {
        object.insert("Path".to_owned(), json!(path));
    }
    view
}

pub fn load_balancer(service: &Service, domain: &Domain, lb: &LoadBalancer) -> Value {
    let listeners: Vec<Value> = lb
        .listeners
        .values()
        .map(|l| {
            let mut view = json!({
                "BackendPort": l.instance_port,
                "BackendProtocol": l.instance_protocol,
                "LoadBalancerPort": l.load_balancer_port,
                "LoadBalancerProtocol": l.protocol,
                "PolicyNames": l.policy_names,
            });
            let certificate = l.certificate.as_deref().and_then(|id| domain.certificate(id));
            if let (Some(certificate), Some(object)) = (certificate, view.as_object_mut()) {
                object.insert("ServerCertificateId".to_owned(), json!(certificate.orn()));
            }
            view
        })
        .collect();
    let mut lb_policies = Vec::new();
    let mut app_policies = Vec::new();
    for (name, policy) in &lb.policies {
        match policy {
            Policy::LbCookie {
                cookie_expiration_period,
                ..
            } => lb_policies.push(json!({
                "PolicyName": name,
                "CookieExpirationPeriod": cookie_expiration_period.filter(|p| *p > 0).unwrap_or(BROWSER_SESSION_PERIOD),
            })),
            Policy::AppCookie { cookie_name } => app_policies.push(json!({
                "PolicyName": name,
                "CookieName": cookie_name,
            })),
            // OAPI has no TLS policy objects; the listener's PolicyNames names it.
            Policy::SslNegotiation(_) => {}
        }
    }
    let tags: Vec<Value> = lb
        .tags
        .iter()
        .map(|(key, value)| json!({ "Key": key, "Value": value }))
        .collect();
    let secured = lb.attributes.cookie.secure.unwrap_or(service.config.cookie.secure);
    json!({
        "AccessLog": { "IsEnabled": false, "PublicationInterval": 60 },
        "ApplicationStickyCookiePolicies": app_policies,
        "BackendIps": [],
        "BackendVmIds": lb.instances,
        "DnsName": dns_name(&lb.name),
        "HealthCheck": health_check(lb),
        "Listeners": listeners,
        "LoadBalancerName": lb.name,
        "LoadBalancerStickyCookiePolicies": lb_policies,
        "LoadBalancerType": lb.placement.scheme(),
        "PublicIp": lb.address.map(|a| a.to_string()),
        "SecuredCookies": secured,
        "SecurityGroups": lb.placement.security_groups,
        "State": "active",
        "Subnets": lb.placement.subnets,
        "SubregionNames": lb.placement.zones,
        "Tags": tags,
    })
}

/// A server certificate as OAPI's `ServerCertificate` (never its key).
pub fn server_certificate(certificate: &crate::certificates::ServerCertificate) -> Value {
    json!({
        "ExpirationDate": crate::iam::timestamp(certificate.not_after),
        "Id": certificate.id,
        "Name": certificate.name,
        "Orn": certificate.orn(),
        "Path": certificate.path,
        "UploadDate": crate::iam::timestamp(certificate.uploaded_at),
    })
}

/// One backend VM's health: `UP`, `DOWN`, or `UNKNOWN` before its first probe.
pub fn vm_health(inner: &Domain, lb: &LoadBalancer, id: &str) -> Value {
    let InstanceState {
        state,
        reason,
        description,
        pending,
    } = instance_state(inner, lb, id, unix_now());
    let state = match state {
        "InService" => "UP",
        _ if pending => "UNKNOWN",
        _ => "DOWN",
    };
    json!({
        "VmId": id,
        "State": state,
        "StateReason": reason,
        "Description": description,
    })
}
