//! What the operator page shows, as JSON: read from the service's state in one go.

use serde_json::{Value, json};
use sticky_core::{Counter, Rejection};

use crate::api::{InstanceState, instance_state};
use crate::domain::unix_now;
use crate::model::{LoadBalancer, Policy};
use crate::service::Service;
use crate::tallies::{ListenerTallies, count};
use crate::tls_policy::TlsVersion;

/// A policy in words.
pub fn policy_summary(policy: &Policy) -> String {
    match policy {
        Policy::LbCookie {
            cookie_expiration_period: Some(period),
            max_lifetime,
        } if *period > 0 => {
            let mut text = format!("LB cookie, {period} s after the last request");
            if let Some(lifetime) = max_lifetime.filter(|l| *l > 0) {
                text.push_str(&format!(", at most {lifetime} s in all"));
            }
            text
        }
        Policy::LbCookie { .. } => "LB cookie, for the browser session".to_owned(),
        Policy::AppCookie { cookie_name } => format!("follows the application's cookie `{cookie_name}`"),
        Policy::SslNegotiation(policy) => {
            let lowest = match policy.minimum() {
                TlsVersion::Tls10 => "1.0",
                TlsVersion::Tls11 => "1.1",
                TlsVersion::Tls12 => "1.2",
            };
            let highest = match policy.maximum() {
                None => "1.3",
                Some(TlsVersion::Tls10) => "1.0",
                Some(TlsVersion::Tls11) => "1.1",
                Some(TlsVersion::Tls12) => "1.2",
            };
            let name = policy.reference.as_deref().unwrap_or("custom");
            format!("TLS {lowest} to {highest}, {} suites ({name})", policy.ciphers.len())
        }
    }
}

fn policy_view(name: &str, policy: &Policy) -> Value {
    json!({ "name": name, "type": policy.type_name(), "summary": policy_summary(policy) })
}

/// A listener's counters as its filters reported them.
fn counters_view(tallies: &ListenerTallies, lb: &str, port: u16) -> Value {
    let counts = tallies.totals(lb, port);
    let rejected: serde_json::Map<String, Value> = Rejection::ALL
        .iter()
        .map(|reason| {
            (
                reason.as_str().to_owned(),
                json!(count(&counts, Counter::Rejected(*reason))),
            )
        })
        .collect();
    json!({
        "pinned": count(&counts, Counter::Pinned),
        "assigned": count(&counts, Counter::Assigned),
        "refreshed": count(&counts, Counter::Refreshed),
        "repinned": count(&counts, Counter::Repinned),
        "deleted": count(&counts, Counter::Deleted),
        "no_state": count(&counts, Counter::NoState),
        "rejected": rejected,
    })
}

fn load_balancer_view(
    service: &Service,
    tallies: &ListenerTallies,
    inner: &crate::domain::Domain,
    lb: &LoadBalancer,
    now: i64,
) -> Value {
    let binding = service.config.listener_binding;
    let listeners: Vec<Value> = lb
        .listeners
        .values()
        .map(|listener| {
            let port = listener.load_balancer_port;
            let policy = lb
                .listener_stickiness(port)
                .map(|(name, policy)| policy_view(name, policy));
            let tls_policy = listener.policy_names.iter().find_map(|name| {
                lb.policies
                    .get(name)
                    .filter(|p| !p.is_stickiness())
                    .map(|p| policy_view(name, p))
            });
            // Its certificate's name, hosts and expiry; never its key.
            let certificate = listener
                .certificate
                .as_deref()
                .and_then(|id| inner.certificate(id))
                .map(|c| {
                    json!({
                        "name": c.name,
                        "hosts": c.hosts,
                        "expires": crate::iam::timestamp(c.not_after),
                    })
                });
            json!({
                "protocol": listener.protocol,
                "certificate": certificate,
                "port": port,
                "bound": lb.address.and_then(|a| binding.socket(a, port).ok()).map(|s| s.to_string()),
                "instance_protocol": listener.instance_protocol,
                "instance_port": listener.instance_port,
                "policy": policy,
                "tls_policy": tls_policy,
                "counters": counters_view(tallies, &lb.name, port),
            })
        })
        .collect();
    let instance_port = lb.listeners.values().next().map_or(80, |l| l.instance_port);
    let instances: Vec<Value> = lb
        .instances
        .iter()
        .chain(lb.draining.keys().filter(|id| !lb.instances.contains(*id)))
        .map(|id| {
            let InstanceState {
                state,
                reason,
                description,
                ..
            } = instance_state(inner, lb, id, now);
            json!({
                "id": id,
                "address": inner.registry().resolve(id, instance_port).map(|a| a.to_string()),
                "state": state,
                "reason": reason,
                "description": description,
                "draining": lb.draining.contains_key(id) && !lb.instances.contains(id),
            })
        })
        .collect();
    let policies: Vec<Value> = lb.policies.iter().map(|(name, p)| policy_view(name, p)).collect();
    json!({
        "name": lb.name,
        "dns_name": crate::model::dns_name(&lb.name),
        "address": lb.address.map(|a| a.to_string()),
        "listeners": listeners,
        "policies": policies,
        "instances": instances,
        "health_check": {
            "target": lb.health_check.target,
            "interval": lb.health_check.interval,
            "timeout": lb.health_check.timeout,
            "healthy_threshold": lb.health_check.healthy_threshold,
            "unhealthy_threshold": lb.health_check.unhealthy_threshold,
        },
    })
}

/// Every load balancer, for the operator signed in as `operator`.
pub fn overview(service: &Service, tallies: &ListenerTallies, operator: &str) -> Value {
    let now = unix_now();
    let load_balancers: Vec<Value> = service.read(|inner| {
        inner
            .load_balancers()
            .map(|lb| load_balancer_view(service, tallies, inner, lb, now))
            .collect()
    });
    json!({
        "signed_in_as": operator,
        "now": now,
        "state_version": service.version(),
        "load_balancers": load_balancers,
    })
}
