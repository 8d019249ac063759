//! OAPI's load balancer calls: each request checked against OAPI's shapes and ranges (typed,
//! unknown fields refused), then carried out by the Query API's actions on the one domain model.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::OapiError;
use super::views::{self, BROWSER_SESSION_PERIOD};
use crate::api;
use crate::model::HealthCheck;
use crate::query::Params;
use crate::service::Service;

/// The calls this service answers.
pub const CALLS: [&str; 16] = [
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
];

/// OAPI's health check interval ceiling (ELB's is 300 s).
const MAX_CHECK_INTERVAL: u32 = 600;

fn parse<T: DeserializeOwned>(input: Value) -> Result<T, OapiError> {
    serde_json::from_value(input).map_err(|e| OapiError::shape(&e))
}

/// A Query API action with these parameters, on the same state.
fn query(service: &Service, action: &str, pairs: &[(String, String)]) -> Result<(), OapiError> {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    let params = Params::parse(None, Some(body.as_bytes()))?;
    api::dispatch(service, action, &params)?;
    Ok(())
}

fn pair(name: impl Into<String>, value: impl ToString) -> (String, String) {
    (name.into(), value.to_string())
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

fn read_load_balancer(service: &Service, name: &str) -> Result<Value, OapiError> {
    service.read(|inner| {
        inner
            .load_balancer(name)
            .map(|lb| json!({ "LoadBalancer": views::load_balancer(service, lb) }))
            .ok_or_else(|| OapiError::from(crate::error::ApiError::load_balancer_not_found(name)))
    })
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

/// OAPI listeners as the Query API's `Listeners.member.N.*`.
fn listener_pairs(listeners: &[ListenerForCreation]) -> Result<Vec<(String, String)>, OapiError> {
    if listeners.is_empty() {
        return Err(OapiError::missing("Listeners"));
    }
    let mut pairs = Vec::new();
    for (i, listener) in listeners.iter().enumerate() {
        let n = i + 1;
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
        if listener.server_certificate_id.is_some() {
            return Err(OapiError::unsupported(
                "ServerCertificateId: this service terminates no TLS (HTTP listeners only)",
            ));
        }
        let port = in_range("LoadBalancerPort", listener.load_balancer_port, 1, 65535)?;
        let backend = in_range("BackendPort", listener.backend_port, 1, 65535)?;
        pairs.push(pair(format!("Listeners.member.{n}.Protocol"), &protocol));
        pairs.push(pair(format!("Listeners.member.{n}.LoadBalancerPort"), port));
        pairs.push(pair(
            format!("Listeners.member.{n}.InstanceProtocol"),
            &backend_protocol,
        ));
        pairs.push(pair(format!("Listeners.member.{n}.InstancePort"), backend));
    }
    Ok(pairs)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct ResourceTag {
    key: String,
    value: String,
}

/// The tags checked as AddTags checks them (ELB's characters and lengths, each key once), and
/// so that `held` tags plus these stay within the limit: before anything changes.
fn check_tags(tags: &[(String, String)], with_values: bool, held: &BTreeMap<String, String>) -> Result<(), OapiError> {
    let pairs: Vec<(String, String)> = tags
        .iter()
        .enumerate()
        .flat_map(|(i, (key, value))| {
            let mut pairs = vec![pair(format!("Tags.member.{}.Key", i + 1), key)];
            if with_values {
                pairs.push(pair(format!("Tags.member.{}.Value", i + 1), value));
            }
            pairs
        })
        .collect();
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&pairs)
        .finish();
    let checked = api::tags::tags(&Params::parse(None, Some(body.as_bytes()))?, with_values)?;
    if with_values {
        let total = held.len() + checked.iter().filter(|(key, _)| !held.contains_key(key)).count();
        if total > api::tags::MAX_TAGS {
            return Err(crate::error::ApiError::new(
                crate::error::ErrorCode::TooManyTags,
                format!("a load balancer holds at most {} tags", api::tags::MAX_TAGS),
            )
            .into());
        }
    }
    Ok(())
}

fn tag_pairs(tags: &[ResourceTag]) -> Vec<(String, String)> {
    tags.iter()
        .enumerate()
        .flat_map(|(i, tag)| {
            [
                pair(format!("Tags.member.{}.Key", i + 1), &tag.key),
                pair(format!("Tags.member.{}.Value", i + 1), &tag.value),
            ]
        })
        .collect()
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

fn create_load_balancer(service: &Service, request: CreateLoadBalancer) -> Result<Value, OapiError> {
    refuse_dry_run(request.dry_run)?;
    // Checked here to name OAPI's fields in the error; the Query API's action checks again.
    let fields = &crate::model::OAPI_PLACEMENT_FIELDS;
    let placement = crate::model::Placement {
        zones: request.subregion_names,
        subnets: request.subnets,
        security_groups: request.security_groups,
        internal: request
            .load_balancer_type
            .as_deref()
            .map(|kind| crate::model::Placement::parse_scheme(fields.scheme, kind))
            .transpose()?
            .unwrap_or(false),
    }
    .validated(fields)?;
    if request.public_ip.is_some() {
        return Err(OapiError::unsupported(
            "PublicIp: a load balancer takes the next address of the bouncer's pool",
        ));
    }
    let name = &request.load_balancer_name;
    let mut pairs = vec![pair("LoadBalancerName", name)];
    pairs.extend(listener_pairs(&request.listeners)?);
    let query_fields = &crate::model::ELB_PLACEMENT_FIELDS;
    for (prefix, names) in [
        (query_fields.zones, &placement.zones),
        (query_fields.subnets, &placement.subnets),
        (query_fields.security_groups, &placement.security_groups),
    ] {
        pairs.extend(
            names
                .iter()
                .enumerate()
                .map(|(i, name)| pair(format!("{prefix}.member.{}", i + 1), name)),
        );
    }
    pairs.push(pair(query_fields.scheme, placement.scheme()));
    let tags: Vec<(String, String)> = request.tags.iter().map(|t| (t.key.clone(), t.value.clone())).collect();
    if !tags.is_empty() {
        check_tags(&tags, true, &BTreeMap::new())?;
    }
    query(service, "CreateLoadBalancer", &pairs)?;
    if !request.tags.is_empty() {
        let mut pairs = vec![pair("LoadBalancerNames.member.1", name)];
        pairs.extend(tag_pairs(&request.tags));
        query(service, "AddTags", &pairs)?;
    }
    read_load_balancer(service, name)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct ByName {
    load_balancer_name: String,
    dry_run: Option<bool>,
}

fn delete_load_balancer(service: &Service, request: ByName) -> Result<Value, OapiError> {
    refuse_dry_run(request.dry_run)?;
    let mut answer = read_load_balancer(service, &request.load_balancer_name)?;
    query(
        service,
        "DeleteLoadBalancer",
        &[pair("LoadBalancerName", &request.load_balancer_name)],
    )?;
    // As OAPI answers: the load balancer being deleted.
    answer["LoadBalancer"]["State"] = json!("deleting");
    Ok(answer)
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
            .map(|lb| views::load_balancer(service, lb))
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

fn update_load_balancer(service: &Service, request: UpdateLoadBalancer) -> Result<Value, OapiError> {
    refuse_dry_run(request.dry_run)?;
    let name = &request.load_balancer_name;
    // Everything checked before anything changes.
    if request.public_ip.is_some() || request.security_groups.is_some() || request.server_certificate_id.is_some() {
        return Err(OapiError::unsupported(
            "PublicIp, SecurityGroups and ServerCertificateId: the bouncer's pool gives the address, there are no security groups, and no TLS is terminated",
        ));
    }
    let check = request
        .health_check
        .as_ref()
        .map(HealthCheckRequest::checked)
        .transpose()?;
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
        .map(|port| in_range("LoadBalancerPort", port, 1, 65535))
        .transpose()?;
    if request.policy_names.is_some() && port.is_none() {
        return Err(OapiError::missing("LoadBalancerPort"));
    }
    // What the Query API would refuse, checked on the current state before the first change.
    service.read(|inner| -> Result<(), OapiError> {
        let lb = inner
            .load_balancer(name)
            .ok_or_else(|| crate::error::ApiError::load_balancer_not_found(name))?;
        if let Some(check) = &check {
            check.validate_within(MAX_CHECK_INTERVAL)?;
        }
        if let Some(secured) = request.secured_cookies {
            let changes = crate::attributes::AttributeChanges {
                additional: vec![(crate::attributes::COOKIE_SECURE.to_owned(), secured.to_string())],
                ..Default::default()
            };
            lb.attributes
                .changed(&changes, &service.config.cookie, &lb.app_cookie_names())?;
        }
        if let (Some(names), Some(port)) = (&request.policy_names, port) {
            let port = u16::try_from(port).unwrap_or(0);
            if !lb.listeners.contains_key(&port) {
                return Err(crate::error::ApiError::new(
                    crate::error::ErrorCode::ListenerNotFound,
                    format!("There is no listener on port {port} of {name}"),
                )
                .into());
            }
            if let Some(missing) = names.iter().find(|n| !lb.policies.contains_key(*n)) {
                return Err(crate::error::ApiError::new(
                    crate::error::ErrorCode::PolicyNotFound,
                    format!("There is no policy named {missing} on {name}"),
                )
                .into());
            }
            if names.len() > 1 {
                return Err(crate::error::ApiError::invalid_configuration(
                    "A listener can have at most one stickiness policy",
                )
                .into());
            }
        }
        Ok(())
    })?;
    if let Some(check) = check {
        api::set_health_check(service, name, check, MAX_CHECK_INTERVAL)?;
    }
    if let Some(secured) = request.secured_cookies {
        query(
            service,
            "ModifyLoadBalancerAttributes",
            &[
                pair("LoadBalancerName", name),
                pair(
                    "LoadBalancerAttributes.AdditionalAttributes.member.1.Key",
                    crate::attributes::COOKIE_SECURE,
                ),
                pair("LoadBalancerAttributes.AdditionalAttributes.member.1.Value", secured),
            ],
        )?;
    }
    if let (Some(names), Some(port)) = (&request.policy_names, port) {
        let mut pairs = vec![pair("LoadBalancerName", name), pair("LoadBalancerPort", port)];
        if names.is_empty() {
            // An empty list removes stickiness.
            pairs.push(pair("PolicyNames", ""));
        }
        for (i, policy) in names.iter().enumerate() {
            pairs.push(pair(format!("PolicyNames.member.{}", i + 1), policy));
        }
        query(service, "SetLoadBalancerPoliciesOfListener", &pairs)?;
    }
    read_load_balancer(service, name)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct CreateListeners {
    load_balancer_name: String,
    listeners: Vec<ListenerForCreation>,
    dry_run: Option<bool>,
}

fn create_listeners(service: &Service, request: CreateListeners) -> Result<Value, OapiError> {
    refuse_dry_run(request.dry_run)?;
    let mut pairs = vec![pair("LoadBalancerName", &request.load_balancer_name)];
    pairs.extend(listener_pairs(&request.listeners)?);
    query(service, "CreateLoadBalancerListeners", &pairs)?;
    read_load_balancer(service, &request.load_balancer_name)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct DeleteListeners {
    load_balancer_name: String,
    load_balancer_ports: Vec<i64>,
    dry_run: Option<bool>,
}

fn delete_listeners(service: &Service, request: DeleteListeners) -> Result<Value, OapiError> {
    refuse_dry_run(request.dry_run)?;
    if request.load_balancer_ports.is_empty() {
        return Err(OapiError::missing("LoadBalancerPorts"));
    }
    let mut pairs = vec![pair("LoadBalancerName", &request.load_balancer_name)];
    for (i, port) in request.load_balancer_ports.iter().enumerate() {
        let port = in_range("LoadBalancerPorts", *port, 1, 65535)?;
        pairs.push(pair(format!("LoadBalancerPorts.member.{}", i + 1), port));
    }
    query(service, "DeleteLoadBalancerListeners", &pairs)?;
    read_load_balancer(service, &request.load_balancer_name)
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

fn create_policy(service: &Service, request: CreatePolicy) -> Result<Value, OapiError> {
    refuse_dry_run(request.dry_run)?;
    let name = &request.load_balancer_name;
    let mut pairs = vec![pair("LoadBalancerName", name), pair("PolicyName", &request.policy_name)];
    match request.policy_type.as_str() {
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
            if let Some(period) = period {
                pairs.push(pair("CookieExpirationPeriod", period));
            }
            query(service, "CreateLBCookieStickinessPolicy", &pairs)?;
        }
        "app" => {
            if request.cookie_expiration_period.is_some() {
                return Err(OapiError::invalid(
                    "CookieExpirationPeriod is for PolicyType load_balancer only: an app policy follows the application's cookie",
                ));
            }
            let cookie = request
                .cookie_name
                .as_deref()
                .ok_or_else(|| OapiError::missing("CookieName"))?;
            if cookie.is_empty() || cookie.len() > 255 {
                return Err(OapiError::invalid("CookieName must be 1 to 255 characters"));
            }
            pairs.push(pair("CookieName", cookie));
            query(service, "CreateAppCookieStickinessPolicy", &pairs)?;
        }
        other => {
            return Err(OapiError::invalid(format!(
                "PolicyType must be app or load_balancer, got {other:?}"
            )));
        }
    }
    read_load_balancer(service, name)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct DeletePolicy {
    load_balancer_name: String,
    policy_name: String,
    dry_run: Option<bool>,
}

fn delete_policy(service: &Service, request: DeletePolicy) -> Result<Value, OapiError> {
    refuse_dry_run(request.dry_run)?;
    query(
        service,
        "DeleteLoadBalancerPolicy",
        &[
            pair("LoadBalancerName", &request.load_balancer_name),
            pair("PolicyName", &request.policy_name),
        ],
    )?;
    read_load_balancer(service, &request.load_balancer_name)
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

/// `RegisterInstancesWithLoadBalancer` or `DeregisterInstancesFromLoadBalancer` for VMs named by
/// id or by IP (each IP must be a declared instance's).
fn backends(service: &Service, action: &str, request: Backends, by_ip: bool) -> Result<Value, OapiError> {
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
            .read(|inner| {
                inner
                    .registry()
                    .instances
                    .iter()
                    .find(|(_, instance)| instance.ip == address)
                    .map(|(id, _)| id.clone())
            })
            .ok_or_else(|| {
                OapiError::from(crate::error::ApiError::new(
                    crate::error::ErrorCode::InvalidInstance,
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
    let mut pairs = vec![pair("LoadBalancerName", &request.load_balancer_name)];
    for (i, id) in ids.iter().enumerate() {
        pairs.push(pair(format!("Instances.member.{}.InstanceId", i + 1), id));
    }
    query(service, action, &pairs)?;
    Ok(json!({}))
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
            .ok_or_else(|| OapiError::from(crate::error::ApiError::load_balancer_not_found(name)))?;
        let registered: Vec<String> = lb.instances.iter().chain(lb.draining.keys()).cloned().collect();
        let ids = match request.backend_vm_ids.filter(|ids| !ids.is_empty()) {
            Some(ids) => {
                if let Some(unknown) = ids.iter().find(|id| !registered.contains(id)) {
                    return Err(OapiError::from(crate::error::ApiError::new(
                        crate::error::ErrorCode::InvalidInstance,
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

/// Every named load balancer exists (a tag call changes none unless all are there).
fn all_exist(service: &Service, names: &[String]) -> Result<(), OapiError> {
    if names.is_empty() {
        return Err(OapiError::missing("LoadBalancerNames"));
    }
    service.read(
        |inner| match names.iter().find(|name| inner.load_balancer(name).is_none()) {
            Some(missing) => Err(crate::error::ApiError::load_balancer_not_found(missing).into()),
            None => Ok(()),
        },
    )
}

fn create_tags(service: &Service, request: CreateTags) -> Result<Value, OapiError> {
    refuse_dry_run(request.dry_run)?;
    all_exist(service, &request.load_balancer_names)?;
    if request.tags.is_empty() {
        return Err(OapiError::missing("Tags"));
    }
    let tags: Vec<(String, String)> = request.tags.iter().map(|t| (t.key.clone(), t.value.clone())).collect();
    for name in &request.load_balancer_names {
        let held = service.read(|inner| inner.load_balancer(name).map(|lb| lb.tags.clone()).unwrap_or_default());
        check_tags(&tags, true, &held)?;
    }
    for name in &request.load_balancer_names {
        let mut pairs = vec![pair("LoadBalancerNames.member.1", name)];
        pairs.extend(tag_pairs(&request.tags));
        query(service, "AddTags", &pairs)?;
    }
    Ok(json!({}))
}

fn delete_tags(service: &Service, request: DeleteTags) -> Result<Value, OapiError> {
    refuse_dry_run(request.dry_run)?;
    all_exist(service, &request.load_balancer_names)?;
    if request.tags.is_empty() {
        return Err(OapiError::missing("Tags"));
    }
    let keys: Vec<(String, String)> = request.tags.iter().map(|t| (t.key.clone(), String::new())).collect();
    check_tags(&keys, false, &BTreeMap::new())?;
    for name in &request.load_balancer_names {
        let mut pairs = vec![pair("LoadBalancerNames.member.1", name)];
        for (i, tag) in request.tags.iter().enumerate() {
            pairs.push(pair(format!("Tags.member.{}.Key", i + 1), &tag.key));
        }
        query(service, "RemoveTags", &pairs)?;
    }
    Ok(json!({}))
}

fn read_tags(service: &Service, request: ReadTags) -> Result<Value, OapiError> {
    refuse_dry_run(request.dry_run)?;
    all_exist(service, &request.load_balancer_names)?;
    let tags: Vec<Value> = service.read(|inner| {
        request
            .load_balancer_names
            .iter()
            .filter_map(|name| inner.load_balancer(name))
            .flat_map(|lb| {
                let tags: &BTreeMap<String, String> = &lb.tags;
                tags.iter()
                    .map(|(key, value)| json!({ "LoadBalancerName": lb.name, "Key": key, "Value": value }))
            })
            .collect()
    });
    Ok(json!({ "Tags": tags }))
}

/// Runs `call` (one of [`CALLS`]) with its JSON input; its answer, without `ResponseContext`.
pub fn run(service: &Service, call: &str, input: Value) -> Result<Value, OapiError> {
    match call {
        "CreateLoadBalancer" => create_load_balancer(service, parse(input)?),
        "DeleteLoadBalancer" => delete_load_balancer(service, parse(input)?),
        "ReadLoadBalancers" => read_load_balancers(service, parse(input)?),
        "UpdateLoadBalancer" => update_load_balancer(service, parse(input)?),
        "CreateLoadBalancerListeners" => create_listeners(service, parse(input)?),
        "DeleteLoadBalancerListeners" => delete_listeners(service, parse(input)?),
        "CreateLoadBalancerPolicy" => create_policy(service, parse(input)?),
        "DeleteLoadBalancerPolicy" => delete_policy(service, parse(input)?),
        "RegisterVmsInLoadBalancer" => backends(service, "RegisterInstancesWithLoadBalancer", parse(input)?, false),
        "DeregisterVmsInLoadBalancer" => backends(service, "DeregisterInstancesFromLoadBalancer", parse(input)?, false),
        "LinkLoadBalancerBackendMachines" => {
            backends(service, "RegisterInstancesWithLoadBalancer", parse(input)?, true)
        }
        "UnlinkLoadBalancerBackendMachines" => {
            backends(service, "DeregisterInstancesFromLoadBalancer", parse(input)?, true)
        }
        "ReadVmsHealth" => read_vms_health(service, parse(input)?),
        "CreateLoadBalancerTags" => create_tags(service, parse(input)?),
        "DeleteLoadBalancerTags" => delete_tags(service, parse(input)?),
        "ReadLoadBalancerTags" => read_tags(service, parse(input)?),
        _ => Err(OapiError::unknown_call(call)),
    }
}
