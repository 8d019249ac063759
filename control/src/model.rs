//! The domain: load balancers, listeners, stickiness policies, registered instances and health
//! check settings, with ELB's validation rules. Pure: no I/O. The API layer turns requests into
//! calls here; the store persists the results.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::tls_policy::TlsPolicy;

pub use sticky_control_schema::{HealthCheck, HealthTarget, InstanceAddress, MAX_CHECK_INTERVAL, MAX_NAME_LEN};

/// A load balancer name: 1-32 alphanumerics and hyphens, not starting or ending with a hyphen.
pub fn validate_name(kind: &str, name: &str) -> Result<(), ApiError> {
    Ok(sticky_control_schema::validate_name(kind, name)?)
}

/// Most policies one load balancer may hold.
pub const MAX_POLICIES: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadBalancer {
    pub name: String,
    /// Unix seconds.
    pub created_at: i64,
    pub listeners: BTreeMap<u16, Listener>,
    pub policies: BTreeMap<String, Policy>,
    pub instances: BTreeSet<String>,
    pub health_check: HealthCheck,
    /// The bouncer address its listeners bind (see [`ListenerBinding`]); given once, when the
    /// load balancer is first stored, and kept for its life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
    /// Boxed: most writes carry a whole load balancer.
    #[serde(default)]
    pub attributes: Box<crate::attributes::Attributes>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Instances deregistered while ConnectionDraining was on: id → the Unix second their drain
    /// ends. They get no new request (no new session); with session draining, the sessions
    /// already on them keep going to them until then.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub draining: BTreeMap<String, i64>,
    /// Where the cloud would have placed it, as declared. Boxed, as the attributes.
    #[serde(default, skip_serializing_if = "Placement::is_undeclared")]
    pub placement: Box<Placement>,
}

/// A load balancer's zones (ELB's AvailabilityZones, OAPI's SubregionNames), subnets, security
/// groups and scheme, as the client declared them. The bouncer has one network and acts on none
/// of them; they are kept and given back so that declarative clients (Terraform's providers
/// read them back and replace a load balancer whose zones or scheme differ) see what they
/// declared.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_groups: Vec<String>,
    /// ELB's Scheme `internal` (OAPI's LoadBalancerType); `internet-facing` otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub internal: bool,
}

/// What a client's API calls the fields of a [`Placement`], for the errors it gets.
pub struct PlacementFields {
    pub zones: &'static str,
    pub subnets: &'static str,
    pub security_groups: &'static str,
    pub scheme: &'static str,
}

/// ELB's (LBU's) names.
pub const ELB_PLACEMENT_FIELDS: PlacementFields = PlacementFields {
    zones: "AvailabilityZones",
    subnets: "Subnets",
    security_groups: "SecurityGroups",
    scheme: "Scheme",
};

/// OAPI's names.
pub const OAPI_PLACEMENT_FIELDS: PlacementFields = PlacementFields {
    zones: "SubregionNames",
    subnets: "Subnets",
    security_groups: "SecurityGroups",
    scheme: "LoadBalancerType",
};

/// Most zones, subnets or security groups one load balancer may declare (ELB allows five
/// security groups; zones and subnets are one per zone of a region).
pub const MAX_PLACEMENT_NAMES: usize = 16;

impl Placement {
    pub fn is_undeclared(&self) -> bool {
        *self == Self::default()
    }

    /// ELB's Scheme word for [`Placement::internal`].
    pub fn scheme(&self) -> &'static str {
        if self.internal { "internal" } else { "internet-facing" }
    }

    /// `internet-facing` or `internal` (ELB's Scheme, OAPI's LoadBalancerType).
    pub fn parse_scheme(field: &str, value: &str) -> Result<bool, ApiError> {
        match value {
            "internet-facing" => Ok(false),
            "internal" => Ok(true),
            other => Err(ApiError::validation(format!(
                "{field} must be internet-facing or internal, got {other:?}"
            ))),
        }
    }

    /// Zones and subnets exclude each other (a subnet lies in one zone), as in ELB.
    pub fn validated(self, fields: &PlacementFields) -> Result<Self, ApiError> {
        if !self.zones.is_empty() && !self.subnets.is_empty() {
            return Err(ApiError::validation(format!(
                "Give either {} or {}, not both",
                fields.zones, fields.subnets
            )));
        }
        validate_placement_names(fields.zones, &self.zones)?;
        validate_placement_names(fields.subnets, &self.subnets)?;
        validate_placement_names(fields.security_groups, &self.security_groups)?;
        Ok(self)
    }
}

/// Zone, subnet and security group names: 1 to 255 visible ASCII characters, no duplicate.
fn validate_placement_names(field: &str, names: &[String]) -> Result<(), ApiError> {
    if names.len() > MAX_PLACEMENT_NAMES {
        return Err(ApiError::validation(format!(
            "{field} holds {} names; at most {MAX_PLACEMENT_NAMES}",
            names.len()
        )));
    }
    for (i, name) in names.iter().enumerate() {
        if name.is_empty() || name.len() > 255 || !name.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ApiError::validation(format!(
                "{field} {name:?} must be 1 to 255 visible ASCII characters"
            )));
        }
        if names[..i].contains(name) {
            return Err(ApiError::validation(format!("{field} names {name:?} twice")));
        }
    }
    Ok(())
}

/// The DNSName the API gives load balancer `name`; `GET /v1/hosts` maps it to its address.
pub fn dns_name(name: &str) -> String {
    format!("{}.lbu.sticky.internal", name.to_ascii_lowercase())
}

/// Where the listeners of load balancers bind on the bouncer: each load balancer gets its own
/// address from `pool` (the lowest one no other load balancer holds), and listener port `P`
/// binds `P + port_offset` there (an offset lets an unprivileged bouncer serve ports below 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerBinding {
    pub pool: ipnet::IpNet,
    pub port_offset: u16,
}

impl Default for ListenerBinding {
    fn default() -> Self {
        Self {
            pool: ipnet::IpNet::V4(
                ipnet::Ipv4Net::new(std::net::Ipv4Addr::new(127, 0, 100, 0), 24).unwrap_or_default(),
            ),
            port_offset: 0,
        }
    }
}

impl ListenerBinding {
    /// The lowest host address of the pool that none of `taken` holds.
    pub fn allocate<'a>(&self, taken: impl IntoIterator<Item = &'a IpAddr>) -> Result<IpAddr, ApiError> {
        let taken: BTreeSet<&IpAddr> = taken.into_iter().collect();
        self.pool.hosts().find(|a| !taken.contains(a)).ok_or_else(|| {
            ApiError::new(
                crate::error::ErrorCode::TooManyLoadBalancers,
                format!(
                    "every address of the bouncer's pool {} is taken by a load balancer",
                    self.pool
                ),
            )
        })
    }

    /// The socket listener `port` of a load balancer at `address` binds, if the port map allows it.
    pub fn socket(&self, address: IpAddr, port: u16) -> Result<SocketAddr, ApiError> {
        let bound = port.checked_add(self.port_offset).ok_or_else(|| {
            ApiError::validation(format!(
                "listener port {port} plus the bouncer's port offset {} exceeds 65535",
                self.port_offset
            ))
        })?;
        Ok(SocketAddr::new(address, bound))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listener {
    pub protocol: String,
    pub load_balancer_port: u16,
    pub instance_protocol: String,
    pub instance_port: u16,
    pub policy_names: Vec<String>,
    /// An HTTPS listener's server certificate: its id (a surface's ARN or ORN until a command
    /// resolves it). None on HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
}

impl Listener {
    /// Whether Envoy serves `other` differently from this one (port, protocols, certificate);
    /// its policies are the filters' concern.
    pub fn serves_differently(&self, other: &Listener) -> bool {
        self.instance_port != other.instance_port
            || self.protocol != other.protocol
            || self.instance_protocol != other.instance_protocol
            || self.certificate != other.certificate
    }

    /// Whether it terminates TLS (HTTPS, or SSL: TLS over TCP), so names a certificate.
    pub fn is_https(&self) -> bool {
        matches!(self.protocol.as_str(), "HTTPS" | "SSL")
    }

    /// Whether it balances connections, not requests (TCP or SSL): no HTTP, no stickiness.
    pub fn is_layer4(&self) -> bool {
        matches!(self.protocol.as_str(), "TCP" | "SSL")
    }

    /// Whether it speaks TLS to its targets.
    pub fn is_tls_to_targets(&self) -> bool {
        matches!(self.instance_protocol.as_str(), "HTTPS" | "SSL")
    }

    /// ELB's pairing of protocols: HTTP or HTTPS in front of HTTP or HTTPS, TCP or SSL in front
    /// of TCP or SSL.
    pub fn check_protocols(&self) -> Result<(), ApiError> {
        let layer4 = |p: &str| matches!(p, "TCP" | "SSL");
        if layer4(&self.protocol) != layer4(&self.instance_protocol) {
            return Err(ApiError::validation(format!(
                "The listener on port {} pairs {} with InstanceProtocol {}: HTTP and HTTPS take HTTP or HTTPS, TCP and SSL take TCP or SSL",
                self.load_balancer_port, self.protocol, self.instance_protocol
            )));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Policy {
    /// CookieExpirationPeriod: `None` (omitted) or `Some(0)` mean a browser-session cookie.
    LbCookie {
        cookie_expiration_period: Option<u64>,
        /// CookieMaxLifetime (this service's attribute of LBCookieStickinessPolicyType): the
        /// session's absolute lifetime, seconds; `None` or `Some(0)`: none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_lifetime: Option<u64>,
    },
    AppCookie {
        cookie_name: String,
    },
    /// ELB's SSLNegotiationPolicyType: the TLS versions and suites of an HTTPS or SSL listener.
    SslNegotiation(TlsPolicy),
}

impl Policy {
    pub fn type_name(&self) -> &'static str {
        match self {
            Policy::LbCookie { .. } => "LBCookieStickinessPolicyType",
            Policy::AppCookie { .. } => "AppCookieStickinessPolicyType",
            Policy::SslNegotiation(_) => crate::tls_policy::TYPE_NAME,
        }
    }

    /// Whether it is a stickiness policy (LB or app cookie).
    pub fn is_stickiness(&self) -> bool {
        !matches!(self, Policy::SslNegotiation(_))
    }
}

/// A policy name: 1-255 of letters, digits, `-`, `_` and `.`.
pub fn validate_policy_name(name: &str) -> Result<(), ApiError> {
    let ok =
        !name.is_empty() && name.len() <= 255 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::validation(format!(
            "PolicyName {name:?} must be 1 to 255 letters, digits, '-', '_' or '.'"
        )))
    }
}

/// Listener protocols ELB knows: HTTP, HTTPS, TCP and SSL.
pub fn validate_protocol(field: &str, protocol: &str) -> Result<String, ApiError> {
    let upper = protocol.to_ascii_uppercase();
    match upper.as_str() {
        "HTTP" | "HTTPS" | "TCP" | "SSL" => Ok(upper),
        _ => Err(ApiError::validation(format!(
            "{field} {protocol:?} must be one of HTTP, HTTPS, TCP, SSL"
        ))),
    }
}

/// The instance registry: instance id → address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registry {
    pub instances: BTreeMap<String, InstanceAddress>,
}

impl Registry {
    /// Resolves instance `id` on `port`: an id of the form `ip:port` stands for itself.
    pub fn resolve(&self, id: &str, port: u16) -> Option<SocketAddr> {
        if let Ok(address) = id.parse::<SocketAddr>() {
            return Some(address);
        }
        let entry = self.instances.get(id)?;
        Some(SocketAddr::new(
            entry.ip,
            entry.ports.get(&port).copied().unwrap_or(port),
        ))
    }

    pub fn knows(&self, id: &str) -> bool {
        id.parse::<SocketAddr>().is_ok() || self.instances.contains_key(id)
    }
}

impl LoadBalancer {
    /// The stickiness policy set on listener `port`, if any, with its name.
    pub fn listener_stickiness(&self, port: u16) -> Option<(&str, &Policy)> {
        let listener = self.listeners.get(&port)?;
        listener.policy_names.iter().find_map(|name| {
            let policy = self.policies.get(name)?;
            policy.is_stickiness().then_some((name.as_str(), policy))
        })
    }

    /// The stickiness policy set on listener `port`, if any.
    pub fn listener_policy(&self, port: u16) -> Option<&Policy> {
        self.listener_stickiness(port).map(|(_, policy)| policy)
    }

    /// The SSL negotiation policy set on listener `port`, if any (else the service's default).
    pub fn listener_tls_policy(&self, port: u16) -> Option<&TlsPolicy> {
        let listener = self.listeners.get(&port)?;
        listener
            .policy_names
            .iter()
            .find_map(|name| match self.policies.get(name)? {
                Policy::SslNegotiation(policy) => Some(policy),
                _ => None,
            })
    }

    /// Whether instance `id` is registered, or still draining.
    pub fn has_target(&self, id: &str) -> bool {
        self.instances.contains(id) || self.draining.contains_key(id)
    }

    /// The CookieNames of its app-cookie policies.
    pub fn app_cookie_names(&self) -> Vec<&str> {
        self.policies
            .values()
            .filter_map(|p| match p {
                Policy::AppCookie { cookie_name } => Some(cookie_name.as_str()),
                Policy::LbCookie { .. } | Policy::SslNegotiation(_) => None,
            })
            .collect()
    }

    /// Names of the listeners using policy `name`.
    pub fn policy_in_use(&self, name: &str) -> bool {
        self.listeners
            .values()
            .any(|l| l.policy_names.iter().any(|p| p == name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn a_placement_is_kept_as_declared_or_refused_whole() {
        let zoned = Placement {
            zones: names(&["eu-west-2a", "eu-west-2b"]),
            security_groups: names(&["sg-1"]),
            internal: true,
            ..Default::default()
        };
        assert_eq!(zoned.clone().validated(&ELB_PLACEMENT_FIELDS).unwrap(), zoned);
        assert_eq!(zoned.scheme(), "internal");
        assert_eq!(Placement::default().scheme(), "internet-facing");
        let refused = [
            Placement {
                zones: names(&["eu-west-2a"]),
                subnets: names(&["subnet-1"]),
                ..Default::default()
            },
            Placement {
                zones: names(&["eu-west-2a", "eu-west-2a"]),
                ..Default::default()
            },
            Placement {
                subnets: names(&[""]),
                ..Default::default()
            },
            Placement {
                security_groups: names(&["sg 1"]),
                ..Default::default()
            },
            Placement {
                security_groups: (0..=MAX_PLACEMENT_NAMES).map(|i| format!("sg-{i}")).collect(),
                ..Default::default()
            },
        ];
        for placement in refused {
            assert!(
                placement.clone().validated(&ELB_PLACEMENT_FIELDS).is_err(),
                "{placement:?} was accepted"
            );
        }
        assert!(Placement::parse_scheme("Scheme", "internal").unwrap());
        assert!(!Placement::parse_scheme("Scheme", "internet-facing").unwrap());
        assert!(Placement::parse_scheme("Scheme", "public").is_err());
    }

    #[test]
    fn a_load_balancer_stored_before_placements_existed_reads_back_undeclared() {
        let stored = r#"{"name":"web","created_at":0,"listeners":{},"policies":{},"instances":[],
            "health_check":{"target":"HTTP:80/","interval":30,"timeout":5,"unhealthy_threshold":2,"healthy_threshold":10}}"#;
        let lb: LoadBalancer = serde_json::from_str(stored).unwrap();
        assert!(lb.placement.is_undeclared());
        let written = serde_json::to_string(&lb).unwrap();
        assert!(!written.contains("placement"), "{written}");
    }

    #[test]
    fn each_load_balancer_gets_the_lowest_free_address_of_the_pool() {
        let binding = ListenerBinding {
            pool: "127.0.100.0/30".parse().unwrap(),
            port_offset: 8000,
        };
        let first: IpAddr = "127.0.100.1".parse().unwrap();
        let second: IpAddr = "127.0.100.2".parse().unwrap();
        assert_eq!(binding.allocate([]).unwrap(), first);
        assert_eq!(binding.allocate([&first]).unwrap(), second);
        assert_eq!(
            binding.allocate([&second]).unwrap(),
            first,
            "a freed address is given again"
        );
        let full = binding.allocate([&first, &second]).unwrap_err();
        assert_eq!(full.code, crate::error::ErrorCode::TooManyLoadBalancers);
        assert_eq!(binding.socket(first, 80).unwrap(), "127.0.100.1:8080".parse().unwrap());
        assert_eq!(
            binding.socket(first, 60_000).unwrap_err().code,
            crate::error::ErrorCode::ValidationError
        );
    }

    #[test]
    fn names_follow_elb_rules() {
        for good in ["terraform-balancer", "a", "A1-b2", &"x".repeat(32)] {
            assert!(validate_name("LoadBalancerName", good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "a-", "a_b", "a b", "é", &"x".repeat(33)] {
            assert!(validate_name("LoadBalancerName", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn health_check_ranges_and_targets() {
        let good = HealthCheck {
            target: "HTTP:80/health".into(),
            interval: 5,
            timeout: 2,
            unhealthy_threshold: 2,
            healthy_threshold: 2,
        };
        assert!(good.validate().is_ok());
        assert_eq!(
            good.parsed_target().unwrap(),
            (HealthTarget::Http { port: 80 }, "/health".to_owned())
        );
        let tcp = HealthCheck {
            target: "tcp:8080".into(),
            ..good.clone()
        };
        assert_eq!(tcp.parsed_target().unwrap().0, HealthTarget::Tcp { port: 8080 });
        for bad in [
            HealthCheck {
                interval: 4,
                ..good.clone()
            },
            HealthCheck {
                interval: 301,
                ..good.clone()
            },
            HealthCheck {
                timeout: 1,
                ..good.clone()
            },
            HealthCheck {
                timeout: 5,
                ..good.clone()
            },
            HealthCheck {
                unhealthy_threshold: 11,
                ..good.clone()
            },
            HealthCheck {
                healthy_threshold: 1,
                ..good.clone()
            },
            HealthCheck {
                target: "HTTP:80".into(),
                ..good.clone()
            },
            HealthCheck {
                target: "HTTP:0/".into(),
                ..good.clone()
            },
            HealthCheck {
                target: "UDP:53".into(),
                ..good.clone()
            },
            HealthCheck {
                target: "HTTP:80/a b".into(),
                ..good.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn registry_resolves_ids_and_port_maps() {
        let mut registry = Registry::default();
        registry.instances.insert(
            "i-1".into(),
            InstanceAddress {
                ip: "127.0.0.1".parse().unwrap(),
                ports: BTreeMap::from([(80, 9001)]),
            },
        );
        assert_eq!(registry.resolve("i-1", 80), Some("127.0.0.1:9001".parse().unwrap()));
        assert_eq!(registry.resolve("i-1", 81), Some("127.0.0.1:81".parse().unwrap()));
        assert_eq!(
            registry.resolve("10.0.0.5:8080", 80),
            Some("10.0.0.5:8080".parse().unwrap())
        );
        assert_eq!(registry.resolve("i-unknown", 80), None);
    }
}
