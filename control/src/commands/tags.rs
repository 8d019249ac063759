//! Tags on load balancers, with classic ELB's limits (10 tags per load balancer, keys 1-128
//! characters, values up to 256, no `aws:` prefix).

use crate::error::{ApiError, ErrorCode};
use crate::model::LoadBalancer;

/// Most tags one load balancer holds (classic ELB's limit).
pub const MAX_TAGS: usize = 10;

/// Each key once, each key (and value, when `with_values`) of ELB's characters and lengths.
pub fn validate(tags: &[(String, String)], with_values: bool) -> Result<(), ApiError> {
    for (i, (key, value)) in tags.iter().enumerate() {
        validate_key(key)?;
        if with_values {
            validate_value(value)?;
        }
        if tags[..i].iter().any(|(k, _)| k == key) {
            return Err(ApiError::new(
                ErrorCode::DuplicateTagKeys,
                format!("Tag key {key} is given twice"),
            ));
        }
    }
    Ok(())
}

/// Adds (or replaces) `tags` on `lb`, within the limit.
pub(super) fn add(lb: &mut LoadBalancer, tags: Vec<(String, String)>) -> Result<(), ApiError> {
    validate(&tags, true)?;
    for (key, value) in tags {
        lb.tags.insert(key, value);
    }
    if lb.tags.len() > MAX_TAGS {
        return Err(ApiError::new(
            ErrorCode::TooManyTags,
            format!(
                "{} would hold {} tags; a load balancer holds at most {MAX_TAGS}",
                lb.name,
                lb.tags.len()
            ),
        ));
    }
    Ok(())
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
