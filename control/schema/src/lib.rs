//! What the control service and the operator's launcher share: the bootstrap file's schema,
//! instance addresses, health checks as declared, where the store lives and the rule for names,
//! each checked the same way by both. No I/O.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

/// Longest load balancer name ELB accepts.
pub const MAX_NAME_LEN: usize = 32;

/// Why a value is refused: out of its range or syntax, or valid but not carried out here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("{0}")]
    Value(String),
    #[error("{0}")]
    Unsupported(String),
}

/// A load balancer name: 1-32 alphanumerics and hyphens, not starting or ending with a hyphen.
pub fn validate_name(kind: &str, name: &str) -> Result<(), Invalid> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(Invalid::Value(format!(
            "{kind} {name:?} must be 1 to {MAX_NAME_LEN} letters, digits or hyphens, not starting or ending with a hyphen"
        )))
    }
}

/// Where an instance id points: its IP, and optionally a map from instance ports to the ports
/// actually used (so several "instances" can share one loopback address in tests and demos).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceAddress {
    pub ip: IpAddr,
    #[serde(default)]
    pub ports: BTreeMap<u16, u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HealthTarget {
    /// `HTTP:port/path`: healthy on a 200 answer. The path is stored beside.
    Http { port: u16 },
    /// `TCP:port`: healthy when a connection opens.
    Tcp { port: u16 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// As given, e.g. `HTTP:80/health` or `TCP:80`.
    pub target: String,
    pub interval: u32,
    pub timeout: u32,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
}

impl HealthCheck {
    /// ELB's default for a new load balancer: TCP on the first listener's instance port.
    pub fn default_for(instance_port: u16) -> Self {
        Self {
            target: format!("TCP:{instance_port}"),
            interval: 30,
            timeout: 5,
            unhealthy_threshold: 2,
            healthy_threshold: 10,
        }
    }

    /// Validates against ELB's ranges (Interval 5-300, Timeout 2-60 and below Interval,
    /// thresholds 2-10) and the target syntax.
    pub fn validate(&self) -> Result<(), Invalid> {
        self.validate_within(MAX_CHECK_INTERVAL)
    }

    /// [`HealthCheck::validate`] with another ceiling for the interval (OAPI's is 600 s).
    pub fn validate_within(&self, max_interval: u32) -> Result<(), Invalid> {
        let range = |name: &str, value: u32, low: u32, high: u32| {
            if (low..=high).contains(&value) {
                Ok(())
            } else {
                Err(Invalid::Value(format!(
                    "HealthCheck.{name} must be between {low} and {high}, got {value}"
                )))
            }
        };
        range("Interval", self.interval, 5, max_interval)?;
        range("Timeout", self.timeout, 2, 60)?;
        range("UnhealthyThreshold", self.unhealthy_threshold, 2, 10)?;
        range("HealthyThreshold", self.healthy_threshold, 2, 10)?;
        if self.timeout >= self.interval {
            return Err(Invalid::Value(
                "HealthCheck.Timeout must be smaller than HealthCheck.Interval".to_owned(),
            ));
        }
        self.parsed_target().map(|_| ())
    }

    /// The target as a probe: protocol, port and (for HTTP) path.
    pub fn parsed_target(&self) -> Result<(HealthTarget, String), Invalid> {
        let invalid = || {
            Invalid::Value(format!(
                "HealthCheck.Target {:?} must be HTTP:port/path or TCP:port",
                self.target
            ))
        };
        let (protocol, rest) = self.target.split_once(':').ok_or_else(invalid)?;
        match protocol.to_ascii_uppercase().as_str() {
            "TCP" => {
                let port = parse_port(rest).ok_or_else(invalid)?;
                Ok((HealthTarget::Tcp { port }, String::new()))
            }
            "HTTP" => {
                let slash = rest.find('/').ok_or_else(invalid)?;
                let port = parse_port(&rest[..slash]).ok_or_else(invalid)?;
                let path = &rest[slash..];
                let path_ok = path.len() <= 1024 && path.bytes().all(|b| b.is_ascii_graphic());
                if !path_ok {
                    return Err(invalid());
                }
                Ok((HealthTarget::Http { port }, path.to_owned()))
            }
            "HTTPS" | "SSL" => Err(Invalid::Unsupported(format!(
                "health check protocol {protocol} is not supported by this service; use HTTP or TCP"
            ))),
            _ => Err(invalid()),
        }
    }
}

fn parse_port(text: &str) -> Option<u16> {
    text.parse::<u16>().ok().filter(|p| *p > 0)
}

/// ELB's health check interval ceiling, in seconds (OAPI's is 600).
pub const MAX_CHECK_INTERVAL: u32 = 300;

/// The declarative bootstrap file: the instance registry, and load balancers created when
/// missing (what terraform creates in the original deployment).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapFile {
    #[serde(default)]
    pub instances: BTreeMap<String, InstanceAddress>,
    #[serde(default)]
    pub load_balancers: Vec<BootstrapLoadBalancer>,
    /// Server certificates to upload when missing (by name), from PEM files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<BootstrapCertificate>,
}

/// A server certificate from files: the leaf, its private key, its intermediates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapCertificate {
    pub name: String,
    pub certificate_file: std::path::PathBuf,
    pub private_key_file: std::path::PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_file: Option<std::path::PathBuf>,
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
    /// HTTP (the default) or HTTPS: TLS to the instances.
    #[serde(default = "http")]
    pub instance_protocol: String,
    /// An HTTPS listener's certificate: the name of one of the file's `certificates` (or of
    /// one already uploaded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
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
                    instance_protocol: http(),
                    certificate: None,
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
            certificates: Vec::new(),
        }
    }

    /// The file's text.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// Where the state lives, as `--store` names it: a `postgres://` or `postgresql://` URL, or
/// a SQLite file (`sqlite:PATH` or a plain path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

impl std::str::FromStr for StoreLocation {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            without_sslrootcert(text)
                .0
                .parse::<::postgres::Config>()
                .map_err(|e| format!("not a PostgreSQL connection URL: {e}"))?;
            return Ok(Self::Postgres(text.to_owned()));
        }
        // Another scheme (mysql://, a typo) is refused, not taken for a file name.
        if let Some((scheme, _)) = text.split_once("://")
            && scheme != "sqlite"
        {
            return Err(format!(
                "{scheme}:// is not a store: give a SQLite path (or sqlite:PATH) or a postgres:// URL"
            ));
        }
        let path = text
            .strip_prefix("sqlite://")
            .or_else(|| text.strip_prefix("sqlite:"))
            .unwrap_or(text);
        if path.is_empty() {
            return Err("an empty store path".to_owned());
        }
        Ok(Self::Sqlite(path.into()))
    }
}

impl std::fmt::Display for StoreLocation {
    /// Without the password, for logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            Self::Postgres(url) => f.write_str(&redacted(url)),
        }
    }
}

/// `url` without its `sslrootcert` parameter (which rust-postgres does not know), and that
/// parameter's value.
pub fn without_sslrootcert(url: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), None);
    };
    let mut root = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.strip_prefix("sslrootcert=") {
            Some(value) => {
                root = Some(value.to_owned());
                false
            }
            None => true,
        })
        .collect();
    if rest.is_empty() {
        (base.to_owned(), root)
    } else {
        (format!("{base}?{}", rest.join("&")), root)
    }
}

/// `url` with its password hidden (in the user part and as a `password=` parameter), for logs.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            format!("{user}:***@{host}")
        }
        _ => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some(("password", _)) => "password=***".to_owned(),
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslrootcert_is_taken_out_of_a_postgres_url_for_the_tls_set_up() {
        for (url, rest, root) in [
            ("postgres://u@h/db", "postgres://u@h/db", None),
            (
                "postgres://u@h/db?sslrootcert=/ca.pem",
                "postgres://u@h/db",
                Some("/ca.pem"),
            ),
            (
                "postgres://u@h/db?sslmode=require&sslrootcert=/ca.pem&connect_timeout=3",
                "postgres://u@h/db?sslmode=require&connect_timeout=3",
                Some("/ca.pem"),
            ),
        ] {
            assert_eq!(
                without_sslrootcert(url),
                (rest.to_owned(), root.map(str::to_owned)),
                "{url}"
            );
        }
        assert!("postgres://u@h/db?sslrootcert=/ca.pem".parse::<StoreLocation>().is_ok());
    }

    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(
            redacted("postgres://sticky:s3cret@db.example:5432/sticky"),
            "postgres://sticky:***@db.example:5432/sticky"
        );
        assert_eq!(redacted("postgres://db.example/sticky"), "postgres://db.example/sticky");
        assert_eq!(
            redacted("postgresql://u@h/d?sslmode=disable&password=x"),
            "postgresql://u@h/d?sslmode=disable&password=***"
        );
    }
}
