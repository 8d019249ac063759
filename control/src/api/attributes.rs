//! DescribeLoadBalancerAttributes and ModifyLoadBalancerAttributes. The attributes themselves
//! (ranges, keys, coherence) live in `crate::attributes`.

use crate::attributes::{AttributeChanges, Attributes, parse_bool};
use crate::commands::{Change, ChangeLoadBalancers, load_balancer};
use crate::error::{ApiError, ErrorCode};
use crate::query::Params;
use crate::service::{Done, Service};
use crate::xml::Xml;
use sticky_core::CookieSettings;

const PREFIX: &str = "LoadBalancerAttributes";

fn write_attributes(x: &mut Xml, attributes: &Attributes, defaults: &CookieSettings) {
    x.open("LoadBalancerAttributes");
    x.open("CrossZoneLoadBalancing");
    x.leaf("Enabled", attributes.cross_zone);
    x.close("CrossZoneLoadBalancing");
    x.open("AccessLog");
    x.leaf("Enabled", false);
    x.close("AccessLog");
    x.open("ConnectionDraining");
    x.leaf("Enabled", attributes.connection_draining.enabled);
    x.leaf("Timeout", attributes.connection_draining.timeout);
    x.close("ConnectionDraining");
    x.open("ConnectionSettings");
    x.leaf("IdleTimeout", attributes.idle_timeout);
    x.close("ConnectionSettings");
    x.members(
        "AdditionalAttributes",
        attributes.additional(defaults),
        |x, (key, value)| {
            x.leaf("Key", key);
            x.leaf("Value", value);
        },
    );
    x.close("LoadBalancerAttributes");
}

pub fn describe_attributes(service: &Service, params: &Params) -> Result<String, ApiError> {
    let name = params.required("LoadBalancerName")?.to_owned();
    service.read(|inner| {
        let lb = load_balancer(inner, &name)?;
        let mut xml = Xml::new();
        write_attributes(&mut xml, &lb.attributes, &service.config.cookie);
        Ok(xml.finish())
    })
}

fn number(params: &Params, field: &str) -> Result<Option<u32>, ApiError> {
    params.number::<u32>(&format!("{PREFIX}.{field}"))
}

fn flag(params: &Params, field: &str) -> Result<Option<bool>, ApiError> {
    let name = format!("{PREFIX}.{field}");
    params.get(&name).map(|v| parse_bool(&name, v)).transpose()
}

fn changes(params: &Params) -> Result<AttributeChanges, ApiError> {
    let additional = params
        .struct_list(&format!("{PREFIX}.AdditionalAttributes"))?
        .unwrap_or_default()
        .into_iter()
        .map(|member| {
            let key = member.get("Key").cloned().ok_or_else(|| {
                ApiError::new(
                    ErrorCode::MissingParameter,
                    "AdditionalAttributes.member.N.Key is required",
                )
            })?;
            Ok((key, member.get("Value").cloned().unwrap_or_default()))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let changes = AttributeChanges {
        draining_enabled: flag(params, "ConnectionDraining.Enabled")?,
        draining_timeout: number(params, "ConnectionDraining.Timeout")?,
        idle_timeout: number(params, "ConnectionSettings.IdleTimeout")?,
        cross_zone: flag(params, "CrossZoneLoadBalancing.Enabled")?,
        access_log_enabled: flag(params, "AccessLog.Enabled")?,
        additional,
    };
    if changes.is_empty() {
        return Err(ApiError::new(
            ErrorCode::MissingParameter,
            "LoadBalancerAttributes must set at least one attribute",
        ));
    }
    Ok(changes)
}

pub fn modify_attributes(service: &Service, params: &Params) -> Result<Done<String>, ApiError> {
    let name = params.required("LoadBalancerName")?.to_owned();
    let change = Change::ModifyAttributes(changes(params)?);
    let done = service.execute(ChangeLoadBalancers::one(name.clone(), change))?;
    Ok(done.map(|lbs| {
        let mut xml = Xml::new();
        xml.leaf("LoadBalancerName", &name);
        if let Some(lb) = lbs.first() {
            write_attributes(&mut xml, &lb.attributes, &service.config.cookie);
        }
        xml.finish()
    }))
}
