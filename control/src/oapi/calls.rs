//! OAPI's load balancer calls: each request checked against OAPI's shapes and ranges (typed,
//! unknown fields refused), then carried out by one command of the domain (`commands`).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::OapiError;
use super::views::{self, BROWSER_SESSION_PERIOD};
use crate::attributes::{AttributeChanges, COOKIE_SECURE};
use crate::certificates::Upload;
use crate::commands::certificates::{DeleteServerCertificate, UpdateServerCertificate, UploadServerCertificate};
use crate::commands::{self, Change, ChangeLoadBalancers, DeleteLoadBalancer};
use crate::error::{ApiError, ErrorCode};
use crate::model::{self, HealthCheck, Listener, LoadBalancer, Policy};
use crate::service::{Done, Service};

/// The calls this service answers.
pub const CALLS: [&str; 20] = [
    "CreateLoadBalancer",
    "DeleteLoadBalancer",
    "ReadLoadBalancers",
    "UpdateLoadBalancer",
    "CreateLoadBalancerListeners",
    "DeleteLoadBalancerListeners",
    "CreateLoadBalancerPolicy",
    "DeleteLoadBalancerPolicy",
    "RegisterVmsInLoadBalancer",
    "DeregisterVmsInLoadBalancer",
    "LinkLoadBalancerBackendMachines",
    "UnlinkLoadBalancerBackendMachines",
    "ReadVmsHealth",
    "CreateLoadBalancerTags",
    "DeleteLoadBalancerTags",
    "ReadLoadBalancerTags",
    "CreateServerCertificate",
    "ReadServerCertificates",
    "UpdateServerCertificate",
    "DeleteServerCertificate",
];

/// OAPI's health check interval ceiling (ELB's is 300 s).
const MAX_CHECK_INTERVAL: u32 = 600;

fn parse<T: DeserializeOwned>(input: Value) -> Result<T, OapiError> {
    serde_json::from_value(input).map_err(|e| OapiError::shape(&e))
}

/// `value` in `low..=high`, or OAPI's error naming `field`.
fn in_range(field: &str, value: i64, low: i64, high: i64) -> Result<i64, OapiError> {
    if (low..=high).contains(&value) {
        Ok(value)
    } else {
        Err(OapiError::invalid(format!(
            "{field} must be between {low} and {high} (both included), got {value}"
        )))
    }
}

fn refuse_dry_run(dry_run: Option<bool>) -> Result<(), OapiError> {
    if dry_run == Some(true) {
        return Err(OapiError::unsupported(
            "DryRun is not supported: every access key of this service may call every action",
        ));
    }
    Ok(())
}

/// The answer of a call that changed one load balancer: that load balancer as it now is.
fn answer_with(service: &Service, done: Done<Vec<LoadBalancer>>) -> Done<Value> {
    done.map(|lbs| match lbs.first() {
        Some(lb) => json!({ "LoadBalancer": service.read(|domain| views::load_balancer(service, domain, lb)) }),
        None => json!({}),
    })
}

/// One change to load balancer `name`, answered with it.
fn change_one(service: &Service, name: &str, change: Change) -> Result<Done<Value>, OapiError> {
    let done = service.execute(ChangeLoadBalancers::one(name, change))?;
    Ok(answer_with(service, done))
}

const PROTOCOLS: [&str; 4] = ["HTTP", "HTTPS", "TCP", "SSL"];

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct ListenerForCreation {
    backend_port: i64,
    backend_protocol: Option<String>,
    load_balancer_port: i64,
    load_balancer_protocol: String,
    server_certificate_id: Option<String>,
}

/// OAPI listeners as the domain's, by port.
fn listeners(listeners: &[ListenerForCreation]) -> Result<BTreeMap<u16, Listener>, OapiError> {
    if listeners.is_empty() {
        return Err(OapiError::missing("Listeners"));
    }
    let mut by_port = BTreeMap::new();
    for (i, listener) in listeners.iter().enumerate() {
        let protocol = listener.load_balancer_protocol.to_ascii_uppercase();
        let backend_protocol = listener
            .backend_protocol
            .as_deref()
            .map_or_else(|| protocol.clone(), str::to_ascii_uppercase);
        for (field, value) in [
            ("LoadBalancerProtocol", &protocol),
            ("BackendProtocol", &backend_protocol),
        ] {
            if !PROTOCOLS.contains(&value.as_str()) {
                return Err(OapiError::invalid(format!(
                    "Listeners[{i}].{field} must be HTTP, HTTPS, TCP or SSL, got {value:?}"
                )));
            }
        }
        let port = port_of("LoadBalancerPort", listener.load_balancer_port)?;
        let listener = Listener {
            protocol: model::validate_protocol("Protocol", &protocol)?,
            load_balancer_port: port,
            instance_protocol: model::validate_protocol("InstanceProtocol", &backend_protocol)?,
            instance_port: port_of("BackendPort", listener.backend_port)?,
            policy_names: Vec::new(),
            certificate: listener.server_certificate_id.clone(),
        };
        if by_port.insert(port, listener).is_some() {
            return Err(ApiError::new(ErrorCode::DuplicateListener, format!("port {port} is given twice")).into());
        }
    }
    Ok(by_port)
}

/// A port, in OAPI's range.
fn port_of(field: &str, value: i64) -> Result<u16, OapiError> {
    let port = in_range(field, value, 1, 65535)?;
    Ok(u16::try_from(port).unwrap_or_default())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct ResourceTag {
    key: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct CreateLoadBalancer {
    load_balancer_name: String,
    listeners: Vec<ListenerForCreation>,
    #[serde(default)]
    tags: Vec<ResourceTag>,
    /// Kept as declared and given back, not acted on (see [`crate::model::Placement`]).
    #[serde(default)]
    subregion_names: Vec<String>,
    #[serde(default)]
    subnets: Vec<String>,
    #[serde(default)]
    security_groups: Vec<String>,
    load_balancer_type: Option<String>,
    public_ip: Option<String>,
    dry_run: Option<bool>,
}

fn create_load_balancer(service: &Service, request: CreateLoadBalancer) -> Result<Done<Value>, OapiError> {
    refuse_dry_run(request.dry_run)?;
    let fields = &model::OAPI_PLACEMENT_FIELDS;
    let placement = model::Placement {
        zones: request.subregion_names,
        subnets: request.subnets,
        security_groups: request.security_groups,
        internal: request
            .load_balancer_type
            .as_deref()
            .map(|kind| model::Placement::parse_scheme(fields.scheme, kind))
            .transpose()?
            .unwrap_or(false),
    }
    .validated(fields)?;
    if request.public_ip.is_some() {
        return Err(OapiError::unsupported(
            "PublicIp: a load balancer takes the next address of the bouncer's pool",
        ));
    }
    let first_backend_port = request.listeners.first().map(|l| l.backend_port);
    let listeners = listeners(&request.listeners)?;
    let name = request.load_balancer_name;
    let command = commands::CreateLoadBalancer {
        name: name.clone(),
        listeners,
        health_check: HealthCheck::default_for(first_backend_port.and_then(|p| u16::try_from(p).ok()).unwrap_or(80)),
        placement,
        tags: request.tags.into_iter().map(|t| (t.key, t.value)).collect(),
    };
    let done = service.execute(command)?;
    // As committed: with the address the write gave it.
    let created = service.read(|domain| domain.load_balancer(&name).cloned());
    Ok(done.map(|()| json!({ "LoadBalancer": created.map(|lb| service.read(|domain| views::load_balancer(service, domain, &lb))) })))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct ByName {
    load_balancer_name: String,
    dry_run: Option<bool>,
}

fn delete_load_balancer(service: &Service, request: ByName) -> Result<Done<Value>, OapiError> {
    refuse_dry_run(request.dry_run)?;
    let name = request.load_balancer_name;
    let done = service.execute(DeleteLoadBalancer { name: name.clone() })?;
    let deleted = done.value.ok_or_else(|| ApiError::load_balancer_not_found(&name))?;
    // As OAPI answers: the load balancer being deleted.
    let mut answer = service.read(|domain| views::load_balancer(service, domain, &deleted));
    answer["State"] = json!("deleting");
    Ok(Done {
        value: json!({ "LoadBalancer": answer }),
        committed: done.committed,
    })
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct LoadBalancerFilters {
    load_balancer_names: Option<Vec<String>>,
    states: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct ReadLoadBalancers {
    #[serde(default)]
    filters: LoadBalancerFilters,
    dry_run: Option<bool>,
}

fn read_load_balancers(service: &Service, request: ReadLoadBalancers) -> Result<Value, OapiError> {
    refuse_dry_run(request.dry_run)?;
    let names = request.filters.load_balancer_names;
    // Every load balancer here is `active`.
    let active = request
        .filters
        .states
        .is_none_or(|states| states.iter().any(|s| s == "active"));
    let load_balancers: Vec<Value> = service.read(|inner| {
        inner
            .load_balancers()
            .filter(|lb| active && names.as_ref().is_none_or(|names| names.contains(&lb.name)))
            .map(|lb| views::load_balancer(service, inner, lb))
            .collect()
    });
    Ok(json!({ "LoadBalancers": load_balancers }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct HealthCheckRequest {
    check_interval: i64,
    healthy_threshold: i64,
    path: Option<String>,
    port: i64,
    protocol: String,
    timeout: i64,
    unhealthy_threshold: i64,
}

impl HealthCheckRequest {
    /// In OAPI's ranges, as the domain's health check.
    fn checked(&self) -> Result<HealthCheck, OapiError> {
        let interval = in_range("HealthCheck.CheckInterval", self.check_interval, 5, 600)?;
        let healthy = in_range("HealthCheck.HealthyThreshold", self.healthy_threshold, 2, 10)?;
        let unhealthy = in_range("HealthCheck.UnhealthyThreshold", self.unhealthy_threshold, 2, 10)?;
        let timeout = in_range("HealthCheck.Timeout", self.timeout, 2, 60)?;
        let port = in_range("HealthCheck.Port", self.port, 1, 65535)?;
        let protocol = self.protocol.to_ascii_uppercase();
        let target = match (protocol.as_str(), self.path.as_deref()) {
            ("HTTP" | "HTTPS", Some(path)) if path.starts_with('/') => format!("{protocol}:{port}{path}"),
            ("HTTP" | "HTTPS", Some(path)) => {
                return Err(OapiError::invalid(format!(
                    "HealthCheck.Path must start with a slash, got {path:?}"
                )));
            }
            ("HTTP" | "HTTPS", None) => format!("{protocol}:{port}/"),
            ("TCP" | "SSL", None) => format!("{protocol}:{port}"),
            ("TCP" | "SSL", Some(_)) => {
                return Err(OapiError::invalid(
                    "HealthCheck.Path is for the HTTP and HTTPS protocols only",
                ));
            }
            _ => {
                return Err(OapiError::invalid(format!(
                    "HealthCheck.Protocol must be HTTP, HTTPS, TCP or SSL, got {:?}",
                    self.protocol
                )));
            }
        };
        let number = |value: i64| u32::try_from(value).unwrap_or(u32::MAX);
        Ok(HealthCheck {
            target,
            interval: number(interval),
            timeout: number(timeout),
            unhealthy_threshold: number(unhealthy),
            healthy_threshold: number(healthy),
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct AccessLog {
    is_enabled: Option<bool>,
    osu_bucket_name: Option<String>,
    osu_bucket_prefix: Option<String>,
    publication_interval: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct UpdateLoadBalancer {
    load_balancer_name: String,
    load_balancer_port: Option<i64>,
    policy_names: Option<Vec<String>>,
    health_check: Option<HealthCheckRequest>,
    secured_cookies: Option<bool>,
    access_log: Option<AccessLog>,
    public_ip: Option<String>,
    security_groups: Option<Vec<String>>,
    server_certificate_id: Option<String>,
    dry_run: Option<bool>,
}

fn update_load_balancer(service: &Service, request: UpdateLoadBalancer) -> Result<Done<Value>, OapiError> {
    refuse_dry_run(request.dry_run)?;
    let name = &request.load_balancer_name;
    if request.public_ip.is_some() || request.security_groups.is_some() {
        return Err(OapiError::unsupported(
            "PublicIp and SecurityGroups: the bouncer's pool gives the address, and there are no security groups",
        ));
    }
    if let Some(log) = &request.access_log {
        if log.is_enabled == Some(true) || log.osu_bucket_name.is_some() || log.osu_bucket_prefix.is_some() {
            return Err(OapiError::unsupported(
                "AccessLog to an OOS bucket: Envoy's access log on the bouncer host is the log; set IsEnabled to false",
            ));
        }
        if let Some(interval) = log.publication_interval
            && !matches!(interval, 5 | 60)
        {
            return Err(OapiError::invalid(format!(
                "AccessLog.PublicationInterval must be 5 or 60, got {interval}"
            )));
        }
    }
    let port = request
        .load_balancer_port
        .map(|port| port_of("LoadBalancerPort", port))
        .transpose()?;
    if (request.policy_names.is_some() || request.server_certificate_id.is_some()) && port.is_none() {
        return Err(OapiError::missing("LoadBalancerPort"));
    }
    // Every change in one command: all checked on the current state, committed together.
    let mut changes = Vec::new();
    if let Some(check) = &request.health_check {
        changes.push(Change::SetHealthCheck {
            check: check.checked()?,
            max_interval: MAX_CHECK_INTERVAL,
        });
    }
    if let Some(secured) = request.secured_cookies {
        changes.push(Change::ModifyAttributes(AttributeChanges {
            additional: vec![(COOKIE_SECURE.to_owned(), secured.to_string())],
            ..Default::default()
        }));
    }
    if let (Some(certificate), Some(port)) = (request.server_certificate_id, port) {
        changes.push(Change::SetListenerCertificate { port, certificate });
    }
    if let (Some(names), Some(port)) = (request.policy_names, port) {
        // An empty list removes stickiness.
        changes.push(Change::SetListenerPolicies { port, names });
    }
    let done = service.execute(ChangeLoadBalancers {
        names: vec![name.clone()],
        changes,
    })?;
    Ok(answer_with(service, done))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct CreateListeners {
    load_balancer_name: String,
    listeners: Vec<ListenerForCreation>,
    dry_run: Option<bool>,
}

fn create_listeners(service: &Service, request: CreateListeners) -> Result<Done<Value>, OapiError> {
    refuse_dry_run(request.dry_run)?;
    let change = Change::AddListeners(listeners(&request.listeners)?);
    change_one(service, &request.load_balancer_name, change)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct DeleteListeners {
    load_balancer_name: String,
    load_balancer_ports: Vec<i64>,
    dry_run: Option<bool>,
}

fn delete_listeners(service: &Service, request: DeleteListeners) -> Result<Done<Value>, OapiError> {
    refuse_dry_run(request.dry_run)?;
    if request.load_balancer_ports.is_empty() {
        return Err(OapiError::missing("LoadBalancerPorts"));
    }
    let ports = request
        .load_balancer_ports
        .iter()
        .map(|port| port_of("LoadBalancerPorts", *port))
        .collect::<Result<Vec<u16>, OapiError>>()?;
    change_one(service, &request.load_balancer_name, Change::RemoveListeners(ports))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct CreatePolicy {
    load_balancer_name: String,
    policy_name: String,
    policy_type: String,
    cookie_name: Option<String>,
    cookie_expiration_period: Option<i64>,
    dry_run: Option<bool>,
}

fn create_policy(service: &Service, request: CreatePolicy) -> Result<Done<Value>, OapiError> {
    refuse_dry_run(request.dry_run)?;
    let policy = match request.policy_type.as_str() {
        "load_balancer" => {
            if request.cookie_name.is_some() {
                return Err(OapiError::invalid("CookieName is for PolicyType app only"));
            }
            // OAPI's default and its `1` mean a browser-session cookie.
            let period = request
                .cookie_expiration_period
                .map(|p| in_range("CookieExpirationPeriod", p, 1, i64::from(i32::MAX)))
                .transpose()?
                .filter(|p| *p != BROWSER_SESSION_PERIOD as i64);
            Policy::LbCookie {
                cookie_expiration_period: period.map(i64::unsigned_abs),
                max_lifetime: None,
            }
        }
        "app" => {
            if request.cookie_expiration_period.is_some() {
                return Err(OapiError::invalid(
                    "CookieExpirationPeriod is for PolicyType load_balancer only: an app policy follows the application's cookie",
                ));
            }
            let cookie = request.cookie_name.ok_or_else(|| OapiError::missing("CookieName"))?;
            if cookie.is_empty() || cookie.len() > 255 {
                return Err(OapiError::invalid("CookieName must be 1 to 255 characters"));
            }
            Policy::AppCookie { cookie_name: cookie }
        }
        other => {
            return Err(OapiError::invalid(format!(
                "PolicyType must be app or load_balancer, got {other:?}"
            )));
        }
    };
    let change = Change::AddPolicy {
        name: request.policy_name,
        policy,
    };
    change_one(service, &request.load_balancer_name, change)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct DeletePolicy {
    load_balancer_name: String,
    policy_name: String,
    dry_run: Option<bool>,
}

fn delete_policy(service: &Service, request: DeletePolicy) -> Result<Done<Value>, OapiError> {
    refuse_dry_run(request.dry_run)?;
    change_one(
        service,
        &request.load_balancer_name,
        Change::DeletePolicy(request.policy_name),
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct Backends {
    load_balancer_name: String,
    #[serde(default)]
    backend_vm_ids: Vec<String>,
    #[serde(default)]
    backend_ips: Vec<String>,
    dry_run: Option<bool>,
}

/// Registers or deregisters VMs named by id or by IP (each IP must be a declared instance's).
fn backends(
    service: &Service,
    change: fn(Vec<String>) -> Change,
    request: Backends,
    by_ip: bool,
) -> Result<Done<Value>, OapiError> {
    refuse_dry_run(request.dry_run)?;
    if !by_ip && !request.backend_ips.is_empty() {
        return Err(OapiError::invalid(
            "BackendIps is a parameter of Link/UnlinkLoadBalancerBackendMachines",
        ));
    }
    let mut ids = request.backend_vm_ids.clone();
    for ip in &request.backend_ips {
        let address: std::net::IpAddr = ip
            .parse()
            .map_err(|_| OapiError::invalid(format!("BackendIps: {ip:?} is not an IP address")))?;
        let id = service
            .read(|domain| {
                domain
                    .registry()
                    .instances
                    .iter()
                    .find(|(_, instance)| instance.ip == address)
                    .map(|(id, _)| id.clone())
            })
            .ok_or_else(|| {
                OapiError::from(ApiError::new(
                    ErrorCode::InvalidInstance,
                    format!("No declared instance has the IP {ip}"),
                ))
            })?;
        ids.push(id);
    }
    if ids.is_empty() {
        return Err(OapiError::missing(if by_ip {
            "BackendVmIds or BackendIps"
        } else {
            "BackendVmIds"
        }));
    }
    ids.dedup();
    let done = service.execute(ChangeLoadBalancers::one(request.load_balancer_name, change(ids)))?;
    Ok(done.map(|_| json!({})))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct ReadVmsHealth {
    load_balancer_name: String,
    backend_vm_ids: Option<Vec<String>>,
    dry_run: Option<bool>,
}

fn read_vms_health(service: &Service, request: ReadVmsHealth) -> Result<Value, OapiError> {
    refuse_dry_run(request.dry_run)?;
    let name = &request.load_balancer_name;
    service.read(|inner| {
        let lb = inner
            .load_balancer(name)
            .ok_or_else(|| OapiError::from(ApiError::load_balancer_not_found(name)))?;
        let registered: Vec<String> = lb.instances.iter().chain(lb.draining.keys()).cloned().collect();
        let ids = match request.backend_vm_ids.filter(|ids| !ids.is_empty()) {
            Some(ids) => {
                if let Some(unknown) = ids.iter().find(|id| !registered.contains(id)) {
                    return Err(OapiError::from(ApiError::new(
                        ErrorCode::InvalidInstance,
                        format!("The VM {unknown} is not registered with {name}"),
                    )));
                }
                ids
            }
            None => registered,
        };
        let health: Vec<Value> = ids.iter().map(|id| views::vm_health(inner, lb, id)).collect();
        Ok(json!({ "BackendVmHealth": health }))
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct TagKey {
    key: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct CreateTags {
    load_balancer_names: Vec<String>,
    tags: Vec<ResourceTag>,
    dry_run: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct DeleteTags {
    load_balancer_names: Vec<String>,
    tags: Vec<TagKey>,
    dry_run: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct ReadTags {
    load_balancer_names: Vec<String>,
    dry_run: Option<bool>,
}

fn create_tags(service: &Service, request: CreateTags) -> Result<Done<Value>, OapiError> {
    refuse_dry_run(request.dry_run)?;
    if request.load_balancer_names.is_empty() {
        return Err(OapiError::missing("LoadBalancerNames"));
    }
    if request.tags.is_empty() {
        return Err(OapiError::missing("Tags"));
    }
    let tags = request.tags.into_iter().map(|t| (t.key, t.value)).collect();
    let done = service.execute(ChangeLoadBalancers {
        names: request.load_balancer_names,
        changes: vec![Change::AddTags(tags)],
    })?;
    Ok(done.map(|_| json!({})))
}

fn delete_tags(service: &Service, request: DeleteTags) -> Result<Done<Value>, OapiError> {
    refuse_dry_run(request.dry_run)?;
    if request.load_balancer_names.is_empty() {
        return Err(OapiError::missing("LoadBalancerNames"));
    }
    if request.tags.is_empty() {
        return Err(OapiError::missing("Tags"));
    }
    let keys = request.tags.into_iter().map(|t| t.key).collect();
    let done = service.execute(ChangeLoadBalancers {
        names: request.load_balancer_names,
        changes: vec![Change::RemoveTags(keys)],
    })?;
    Ok(done.map(|_| json!({})))
}

fn read_tags(service: &Service, request: ReadTags) -> Result<Value, OapiError> {
    refuse_dry_run(request.dry_run)?;
    if request.load_balancer_names.is_empty() {
        return Err(OapiError::missing("LoadBalancerNames"));
    }
    let tags = service.read(|domain| -> Result<Vec<Value>, ApiError> {
        let mut tags = Vec::new();
        for name in &request.load_balancer_names {
            let lb = commands::load_balancer(domain, name)?;
            tags.extend(
                lb.tags
                    .iter()
                    .map(|(key, value)| json!({ "LoadBalancerName": lb.name, "Key": key, "Value": value })),
            );
        }
        Ok(tags)
    })?;
    Ok(json!({ "Tags": tags }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct CreateServerCertificate {
    name: String,
    body: String,
    private_key: String,
    chain: Option<String>,
    path: Option<String>,
    dry_run: Option<bool>,
}

fn create_certificate(service: &Service, request: CreateServerCertificate) -> Result<Done<Value>, OapiError> {
    refuse_dry_run(request.dry_run)?;
    let upload = Upload {
        name: request.name,
        path: request.path,
        body: request.body,
        chain: request.chain,
        private_key: request.private_key,
    };
    let done = service.execute(UploadServerCertificate(upload))?;
    Ok(done.map(|certificate| json!({ "ServerCertificate": views::server_certificate(&certificate) })))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct UpdateCertificate {
    name: String,
    new_name: Option<String>,
    new_path: Option<String>,
    dry_run: Option<bool>,
}

fn update_certificate(service: &Service, request: UpdateCertificate) -> Result<Done<Value>, OapiError> {
    refuse_dry_run(request.dry_run)?;
    let done = service.execute(UpdateServerCertificate {
        name: request.name,
        new_name: request.new_name,
        new_path: request.new_path,
    })?;
    Ok(done.map(|certificate| json!({ "ServerCertificate": views::server_certificate(&certificate) })))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct DeleteCertificate {
    name: String,
    dry_run: Option<bool>,
}

fn delete_certificate(service: &Service, request: DeleteCertificate) -> Result<Done<Value>, OapiError> {
    refuse_dry_run(request.dry_run)?;
    let done = service.execute(DeleteServerCertificate { name: request.name })?;
    Ok(done.map(|_| json!({})))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct CertificateFilters {
    paths: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct ReadCertificates {
    #[serde(default)]
    filters: CertificateFilters,
    dry_run: Option<bool>,
}

fn read_certificates(service: &Service, request: ReadCertificates) -> Result<Value, OapiError> {
    refuse_dry_run(request.dry_run)?;
    let paths = request.filters.paths;
    let certificates: Vec<Value> = service.read(|domain| {
        domain
            .certificates()
            .filter(|c| paths.as_ref().is_none_or(|paths| paths.contains(&c.path)))
            .map(views::server_certificate)
            .collect()
    });
    Ok(json!({ "ServerCertificates": certificates }))
}

/// Runs `call` (one of [`CALLS`]) with its JSON input; its answer, without `ResponseContext`.
pub fn run(service: &Service, call: &str, input: Value) -> Result<Done<Value>, OapiError> {
    let read = match call {
        "CreateLoadBalancer" => return create_load_balancer(service, parse(input)?),
        "DeleteLoadBalancer" => return delete_load_balancer(service, parse(input)?),
        "UpdateLoadBalancer" => return update_load_balancer(service, parse(input)?),
        "CreateLoadBalancerListeners" => return create_listeners(service, parse(input)?),
        "DeleteLoadBalancerListeners" => return delete_listeners(service, parse(input)?),
        "CreateLoadBalancerPolicy" => return create_policy(service, parse(input)?),
        "DeleteLoadBalancerPolicy" => return delete_policy(service, parse(input)?),
        "RegisterVmsInLoadBalancer" => return backends(service, Change::Register, parse(input)?, false),
        "DeregisterVmsInLoadBalancer" => return backends(service, Change::Deregister, parse(input)?, false),
        "LinkLoadBalancerBackendMachines" => return backends(service, Change::Register, parse(input)?, true),
        "UnlinkLoadBalancerBackendMachines" => return backends(service, Change::Deregister, parse(input)?, true),
        "CreateLoadBalancerTags" => return create_tags(service, parse(input)?),
        "DeleteLoadBalancerTags" => return delete_tags(service, parse(input)?),
        "ReadLoadBalancers" => read_load_balancers(service, parse(input)?),
        "ReadVmsHealth" => read_vms_health(service, parse(input)?),
        "ReadLoadBalancerTags" => read_tags(service, parse(input)?),
        "CreateServerCertificate" => return create_certificate(service, parse(input)?),
        "UpdateServerCertificate" => return update_certificate(service, parse(input)?),
        "DeleteServerCertificate" => return delete_certificate(service, parse(input)?),
        "ReadServerCertificates" => read_certificates(service, parse(input)?),
        _ => Err(OapiError::unknown_call(call)),
    };
    read.map(Done::read)
}
