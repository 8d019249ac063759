//! Query protocol parameters: `Action=…&Name=…&List.member.N=…`, from the URL query (GET) and
//! the `application/x-www-form-urlencoded` body (POST).

use std::collections::BTreeMap;

use crate::error::{ApiError, ErrorCode};

/// Most parameters one request may carry.
pub const MAX_PARAMS: usize = 2000;
/// Highest list index accepted (`X.member.N`).
pub const MAX_MEMBER_INDEX: usize = 1000;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    values: BTreeMap<String, String>,
}

impl Params {
    /// Parses the URL query and, when present, the form body. A name given twice is refused.
    pub fn parse(query: Option<&str>, form_body: Option<&[u8]>) -> Result<Self, ApiError> {
        let mut values = BTreeMap::new();
        let sources = query.map(str::as_bytes).into_iter().chain(form_body);
        for source in sources {
            for (name, value) in form_urlencoded::parse(source) {
                if values.len() >= MAX_PARAMS {
                    return Err(ApiError::validation(format!("more than {MAX_PARAMS} parameters")));
                }
                if values.insert(name.to_string(), value.into_owned()).is_some() {
                    return Err(ApiError::validation(format!(
                        "parameter {name} is given more than once"
                    )));
                }
            }
        }
        Ok(Self { values })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    pub fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.get(name).ok_or_else(|| {
            ApiError::new(
                ErrorCode::MissingParameter,
                format!("The request must contain the parameter {name}"),
            )
        })
    }

    /// An optional number; present but not a number in range is an error.
    pub fn number<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(text) => text
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| ApiError::validation(format!("{name} must be a number in range, got {text:?}"))),
        }
    }

    pub fn required_number<T: std::str::FromStr>(&self, name: &str) -> Result<T, ApiError> {
        self.required(name)?;
        self.number(name)?
            .ok_or_else(|| ApiError::validation(format!("{name} is missing")))
    }

    /// `prefix.member.N` values in order of N. `prefix=` (empty) is an empty list, which is
    /// how clients send an empty list. `None` when the list is absent altogether.
    pub fn list(&self, prefix: &str) -> Result<Option<Vec<String>>, ApiError> {
        let indexed = self.indexed(prefix, "")?;
        if indexed.is_empty() {
            return Ok(self.get(prefix).map(|_| Vec::new()));
        }
        Ok(Some(indexed.into_values().collect()))
    }

    /// Structures `prefix.member.N.Field`: one map of field → value per N, in order of N.
    pub fn struct_list(&self, prefix: &str) -> Result<Option<Vec<BTreeMap<String, String>>>, ApiError> {
        let mut items: BTreeMap<usize, BTreeMap<String, String>> = BTreeMap::new();
        let start = format!("{prefix}.member.");
        for (name, value) in &self.values {
            let Some(rest) = name.strip_prefix(&start) else {
                continue;
            };
            let Some((index, field)) = rest.split_once('.') else {
                return Err(ApiError::validation(format!(
                    "{name} must name a field of a list member"
                )));
            };
            let index = member_index(name, index)?;
            items.entry(index).or_default().insert(field.to_owned(), value.clone());
        }
        if items.is_empty() {
            return Ok(self.get(prefix).map(|_| Vec::new()));
        }
        Ok(Some(items.into_values().collect()))
    }

    fn indexed(&self, prefix: &str, suffix: &str) -> Result<BTreeMap<usize, String>, ApiError> {
        let start = format!("{prefix}.member.");
        let mut items = BTreeMap::new();
        for (name, value) in &self.values {
            let Some(rest) = name.strip_prefix(&start) else {
                continue;
            };
            let Some(index) = rest.strip_suffix(suffix) else {
                continue;
            };
            if index.contains('.') {
                continue;
            }
            items.insert(member_index(name, index)?, value.clone());
        }
        Ok(items)
    }
}

fn member_index(name: &str, index: &str) -> Result<usize, ApiError> {
    index
        .parse::<usize>()
        .ok()
        .filter(|i| (1..=MAX_MEMBER_INDEX).contains(i))
        .ok_or_else(|| ApiError::validation(format!("{name}: list index must be 1 to {MAX_MEMBER_INDEX}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lists_and_structures_come_back_in_index_order() {
        let params = Params::parse(
            Some("Action=X&PolicyNames.member.2=b&PolicyNames.member.1=a&PolicyNames.member.10=c"),
            Some(b"Listeners.member.1.Protocol=HTTP&Listeners.member.1.LoadBalancerPort=80&Listeners.member.2.Protocol=http"),
        )
        .unwrap();
        assert_eq!(params.list("PolicyNames").unwrap().unwrap(), ["a", "b", "c"]);
        let listeners = params.struct_list("Listeners").unwrap().unwrap();
        assert_eq!(listeners.len(), 2);
        assert_eq!(listeners[0]["LoadBalancerPort"], "80");
        assert_eq!(params.list("Missing").unwrap(), None);
        let empty = Params::parse(Some("PolicyNames="), None).unwrap();
        assert_eq!(empty.list("PolicyNames").unwrap(), Some(vec![]));
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert!(Params::parse(Some("A=1&A=2"), None).is_err());
        let params = Params::parse(Some("L.member.0=a&N=x&M.member.99999=z"), None).unwrap();
        assert!(params.list("L").is_err());
        assert!(params.list("M").is_err());
        assert!(params.number::<u16>("N").is_err());
        assert_eq!(params.required("Q").unwrap_err().code, ErrorCode::MissingParameter);
        let big = Params::parse(Some("P=70000"), None).unwrap();
        assert!(big.number::<u16>("P").is_err());
    }

    proptest! {
        #[test]
        fn parsing_arbitrary_input_never_panics(query in ".{0,200}", body in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(params) = Params::parse(Some(&query), Some(&body)) {
                let _ = params.list("PolicyNames");
                let _ = params.struct_list("Listeners");
                let _ = params.number::<u64>("CookieExpirationPeriod");
            }
        }
    }
}
