//! AddTags, RemoveTags, DescribeTags: ELB's tags on load balancers (their limits are
//! `commands::tags`').

use std::collections::BTreeMap;

use crate::commands::{Change, load_balancer, tags::validate};
use crate::error::{ApiError, ErrorCode};
use crate::query::Params;
use crate::service::{Done, Service};
use crate::xml::Xml;
/// Most load balancers one DescribeTags names.
const MAX_DESCRIBED: usize = 20;

/// `LoadBalancerNames`: classic ELB takes exactly one for AddTags and RemoveTags.
fn one_load_balancer(params: &Params) -> Result<String, ApiError> {
    let names = params
        .list("LoadBalancerNames")?
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::new(ErrorCode::MissingParameter, "LoadBalancerNames is required"))?;
    match names.as_slice() {
        [name] => Ok(name.clone()),
        _ => Err(ApiError::validation(
            "LoadBalancerNames must name exactly one load balancer",
        )),
    }
}

/// `Tags.member.N.Key` (and `.Value` when `with_values`).
fn tags(params: &Params, with_values: bool) -> Result<Vec<(String, String)>, ApiError> {
    let members = params
        .struct_list("Tags")?
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::new(ErrorCode::MissingParameter, "Tags is required"))?;
    let tags = members
        .into_iter()
        .map(|member| {
            let key = member
                .get("Key")
                .cloned()
                .ok_or_else(|| ApiError::new(ErrorCode::MissingParameter, "Tags.member.N.Key is required"))?;
            let value = if with_values {
                member.get("Value").cloned().unwrap_or_default()
            } else {
                String::new()
            };
            Ok((key, value))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    validate(&tags, with_values)?;
    Ok(tags)
}

pub fn add_tags(service: &Service, params: &Params) -> Result<Done<String>, ApiError> {
    let name = one_load_balancer(params)?;
    let change = Change::AddTags(tags(params, true)?);
    super::change_one(service, name, change)
}

pub fn remove_tags(service: &Service, params: &Params) -> Result<Done<String>, ApiError> {
    let name = one_load_balancer(params)?;
    let keys = tags(params, false)?.into_iter().map(|(key, _)| key).collect();
    let change = Change::RemoveTags(keys);
    super::change_one(service, name, change)
}

pub fn describe_tags(service: &Service, params: &Params) -> Result<String, ApiError> {
    let names = params
        .list("LoadBalancerNames")?
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::new(ErrorCode::MissingParameter, "LoadBalancerNames is required"))?;
    if names.len() > MAX_DESCRIBED {
        return Err(ApiError::validation(format!(
            "LoadBalancerNames names at most {MAX_DESCRIBED} load balancers"
        )));
    }
    service.read(|inner| {
        let described = names
            .iter()
            .map(|name| load_balancer(inner, name).map(|lb| (name, &lb.tags)))
            .collect::<Result<Vec<(&String, &BTreeMap<String, String>)>, ApiError>>()?;
        let mut xml = Xml::new();
        xml.members("TagDescriptions", described, |x, (name, tags)| {
            x.leaf("LoadBalancerName", name);
            x.members("Tags", tags, |x, (key, value)| {
                x.leaf("Key", key);
                x.leaf("Value", value);
            });
        });
        Ok(xml.finish())
    })
}
