//! AddTags, RemoveTags, DescribeTags: ELB's tags on load balancers, with ELB's limits (10 tags
//! per load balancer, keys 1-128 characters, values up to 256, no `aws:` prefix).

use std::collections::BTreeMap;

use crate::error::{ApiError, ErrorCode};
use crate::query::Params;
use crate::service::{Service, Write};
use crate::xml::Xml;

use super::load_balancer;

/// Most tags one load balancer holds (classic ELB's limit).
pub const MAX_TAGS: usize = 10;
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

fn validate_key(key: &str) -> Result<(), ApiError> {
    let ok = !key.is_empty()
        && key.chars().count() <= 128
        && key.chars().all(tag_char)
        && !key.to_ascii_lowercase().starts_with("aws:");
    if ok {
        Ok(())
    } else {
        Err(ApiError::validation(format!(
            "Tag key {key:?} must be 1 to 128 letters, digits, spaces or _ . : / = + - @, not starting with aws:"
        )))
    }
}

fn validate_value(value: &str) -> Result<(), ApiError> {
    if value.chars().count() <= 256 && value.chars().all(tag_char) {
        Ok(())
    } else {
        Err(ApiError::validation(format!(
            "Tag value {value:?} must be at most 256 letters, digits, spaces or _ . : / = + - @"
        )))
    }
}

/// The characters ELB allows in tags: Unicode letters, digits and spaces, and `_.:/=+-@`.
fn tag_char(c: char) -> bool {
    c.is_alphanumeric() || c == ' ' || "_.:/=+-@".contains(c)
}

/// `Tags.member.N.Key` (and `.Value` when `with_values`), each key once.
pub(crate) fn tags(params: &Params, with_values: bool) -> Result<Vec<(String, String)>, ApiError> {
    let members = params
        .struct_list("Tags")?
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::new(ErrorCode::MissingParameter, "Tags is required"))?;
    let mut tags: Vec<(String, String)> = Vec::with_capacity(members.len());
    for member in members {
        let key = member
            .get("Key")
            .ok_or_else(|| ApiError::new(ErrorCode::MissingParameter, "Tags.member.N.Key is required"))?;
        validate_key(key)?;
        let value = if with_values {
            member.get("Value").cloned().unwrap_or_default()
        } else {
            String::new()
        };
        validate_value(&value)?;
        if tags.iter().any(|(k, _)| k == key) {
            return Err(ApiError::new(
                ErrorCode::DuplicateTagKeys,
                format!("Tag key {key} is given twice"),
            ));
        }
        tags.push((key.clone(), value));
    }
    Ok(tags)
}

pub fn add_tags(service: &Service, params: &Params) -> Result<String, ApiError> {
    let name = one_load_balancer(params)?;
    let tags = tags(params, true)?;
    service.write(|inner| {
        let mut lb = load_balancer(inner, &name)?.clone();
        for (key, value) in tags {
            lb.tags.insert(key, value);
        }
        if lb.tags.len() > MAX_TAGS {
            return Err(ApiError::new(
                ErrorCode::TooManyTags,
                format!(
                    "{name} would hold {} tags; a load balancer holds at most {MAX_TAGS}",
                    lb.tags.len()
                ),
            ));
        }
        Ok((vec![Write::PutLoadBalancer(lb)], ()))
    })?;
    Ok(String::new())
}

pub fn remove_tags(service: &Service, params: &Params) -> Result<String, ApiError> {
    let name = one_load_balancer(params)?;
    let keys = tags(params, false)?;
    service.write(|inner| {
        let mut lb = load_balancer(inner, &name)?.clone();
        // Removing a key the load balancer does not hold is not an error, as in ELB.
        let before = lb.tags.len();
        for (key, _) in keys {
            lb.tags.remove(&key);
        }
        let writes = if lb.tags.len() == before {
            vec![]
        } else {
            vec![Write::PutLoadBalancer(lb)]
        };
        Ok((writes, ()))
    })?;
    Ok(String::new())
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
