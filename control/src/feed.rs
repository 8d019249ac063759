//! What the service serves to the data plane: each listener's filter state (the JSON schema of
//! `sticky_core::FilterState`, followed by every filter VM on a long poll) and Envoy's REST EDS
//! (one `ClusterLoadAssignment` per listener, with each target's health). Pure projections of
//! the domain; the HTTP handlers in `http.rs` only carry them.

use serde::{Deserialize, Serialize};
use sticky_core::{CookieSettings, FilterState, PolicyState, TargetState};

use crate::domain::{Domain, ServedTarget};
use crate::health::HealthStatus;
use crate::model::{Listener, LoadBalancer, Policy};

pub const EDS_TYPE_URL: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

/// The filter state of listener `port` of load balancer `name`, if it exists.
pub fn filter_state(inner: &Domain, cookie: &CookieSettings, name: &str, port: u16) -> Option<FilterState> {
    let lb = inner.load_balancer(name)?;
    let listener = lb.listeners.get(&port)?;
    let policy = lb.listener_policy(port).and_then(|p| match p {
        Policy::LbCookie {
            cookie_expiration_period,
            max_lifetime,
        } => Some(PolicyState::LbCookie {
            expiration_period: cookie_expiration_period.unwrap_or(0),
            max_lifetime: max_lifetime.unwrap_or(0),
        }),
        Policy::AppCookie { cookie_name } => Some(PolicyState::AppCookie {
            app_cookie_name: cookie_name.clone(),
            duration_seconds: None,
        }),
        Policy::SslNegotiation(_) => None,
    });
    // A draining instance stays in the filter's state only with session draining: its sessions
    // keep going to it. Without, it leaves at once (no request goes to it), and only its
    // address stays, so the WebSockets open to it run until the drain ends.
    let (targets, draining): (Vec<_>, Vec<_>) = inner
        .targets(lb, listener.instance_port)
        .into_iter()
        .partition(|t| !t.draining || lb.attributes.session_draining);
    let targets = targets
        .into_iter()
        .map(|t| TargetState {
            id: t.id,
            address: t.address.to_string(),
            healthy: t.health == HealthStatus::InService,
            draining: t.draining,
        })
        .collect();
    let draining_endpoints = draining.into_iter().map(|t| t.address.to_string()).collect();
    Some(FilterState {
        // Moves only when this state does (not with other load balancers' changes).
        version: inner.state_version(name)?,
        load_balancer: name.to_owned(),
        listener_port: port,
        policy,
        cookie: listener_cookie(lb, listener, cookie),
        targets,
        draining_endpoints,
        session_header: lb.attributes.session_header.clone(),
        keys: inner.keys().to_state(),
    })
}

/// The cookie settings of `listener`: the load balancer's, `Secure` by default on HTTPS (a
/// browser then never sends the cookie in clear); an explicit `sticky.cookie.secure` wins.
fn listener_cookie(lb: &LoadBalancer, listener: &Listener, defaults: &CookieSettings) -> CookieSettings {
    let mut settings = lb.attributes.cookie_settings(defaults);
    if listener.is_https() && lb.attributes.cookie.secure.is_none() {
        settings.secure = true;
    }
    settings
}

/// The EDS cluster name of a listener: `<load balancer>_<port>` (load balancer names hold no `_`).
pub fn cluster_name(load_balancer: &str, port: u16) -> String {
    format!("{load_balancer}_{port}")
}

/// The part of Envoy's `DiscoveryRequest` the service reads.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct DiscoveryRequest {
    /// The version Envoy accepted last (absent on its first fetch).
    #[serde(default)]
    pub version_info: Option<String>,
    #[serde(default)]
    pub node: Option<Node>,
    #[serde(default)]
    pub resource_names: Vec<String>,
    #[serde(default)]
    pub type_url: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Node {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub cluster: String,
}

impl DiscoveryRequest {
    /// The endpoints version Envoy reports holding (0 when it holds none).
    pub fn accepted_version(&self) -> u64 {
        self.version_info.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0)
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DiscoveryResponse {
    pub version_info: String,
    pub resources: Vec<ClusterLoadAssignment>,
    pub type_url: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ClusterLoadAssignment {
    #[serde(rename = "@type")]
    pub type_url: String,
    pub cluster_name: String,
    pub endpoints: Vec<LocalityLbEndpoints>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct LocalityLbEndpoints {
    pub lb_endpoints: Vec<LbEndpoint>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct LbEndpoint {
    pub endpoint: Endpoint,
    pub health_status: EndpointHealth,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Endpoint {
    pub address: Address,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Address {
    pub socket_address: SocketAddress,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SocketAddress {
    pub address: String,
    pub port_value: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EndpointHealth {
    Healthy,
    Unhealthy,
    Draining,
}

/// What Envoy is told of a target: pending and failed instances get no traffic, as in ELB; a
/// draining one is DRAINING (no new request from Envoy's own balancing), unless its sessions
/// keep going to it (session draining), where the filter alone keeps new ones off it.
pub fn endpoint_health(lb: &LoadBalancer, target: &ServedTarget) -> EndpointHealth {
    match target.health {
        HealthStatus::InService if target.draining && !lb.attributes.session_draining => EndpointHealth::Draining,
        HealthStatus::InService => EndpointHealth::Healthy,
        HealthStatus::OutOfService | HealthStatus::Pending => EndpointHealth::Unhealthy,
    }
}

/// The answer to `request`: the assignment of every requested listener that exists, at the
/// version of the endpoints (not of the whole state: Envoy reports it back on its next fetch,
/// and a change that leaves the endpoints alone need not wait for that fetch).
pub fn discovery_response(inner: &Domain, request: &DiscoveryRequest) -> DiscoveryResponse {
    DiscoveryResponse {
        version_info: inner.endpoints_version().to_string(),
        resources: request
            .resource_names
            .iter()
            .filter_map(|cluster| cluster_load_assignment(inner, cluster))
            .collect(),
        type_url: EDS_TYPE_URL.to_owned(),
    }
}

/// The assignment of EDS cluster `cluster` (`<load balancer>_<port>`), if it exists.
fn cluster_load_assignment(inner: &Domain, cluster: &str) -> Option<ClusterLoadAssignment> {
    let (lb_name, port) = cluster.rsplit_once('_')?;
    let port: u16 = port.parse().ok()?;
    let lb = inner.load_balancer(lb_name)?;
    let listener = lb.listeners.get(&port)?;
    let lb_endpoints = inner
        .targets(lb, listener.instance_port)
        .into_iter()
        .map(|target| LbEndpoint {
            endpoint: Endpoint {
                address: Address {
                    socket_address: SocketAddress {
                        address: target.address.ip().to_string(),
                        port_value: target.address.port(),
                    },
                },
            },
            health_status: endpoint_health(lb, &target),
        })
        .collect();
    Some(ClusterLoadAssignment {
        type_url: EDS_TYPE_URL.to_owned(),
        cluster_name: cluster.to_owned(),
        endpoints: vec![LocalityLbEndpoints { lb_endpoints }],
    })
}
