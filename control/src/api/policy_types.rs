//! CreateLoadBalancerPolicy and DescribeLoadBalancerPolicyTypes: the generic form of the two
//! stickiness policies and ELB's SSL negotiation policies (the policy types this service
//! applies; the others are refused with the reason).

use std::borrow::Cow;

use crate::commands::{Change, seconds};
use crate::error::{ApiError, ErrorCode};
use crate::model::Policy;
use crate::query::Params;
use crate::service::{Done, Service};
use crate::tls_policy;
use crate::xml::Xml;

/// This service's attribute of LBCookieStickinessPolicyType: the session's absolute lifetime.
pub const COOKIE_MAX_LIFETIME: &str = "CookieMaxLifetime";

const LB_COOKIE: &str = "LBCookieStickinessPolicyType";
const APP_COOKIE: &str = "AppCookieStickinessPolicyType";

/// ELB's other policy types, and why this service does not apply them.
const OTHER_TYPES: [(&str, &str); 4] = [
    (
        "ProxyProtocolPolicyType",
        "the client address reaches HTTP targets in X-Forwarded-For; TCP and SSL listeners send no PROXY protocol header",
    ),
    (
        "BackendServerAuthenticationPolicyType",
        "targets reached over HTTPS or SSL are not authenticated (as ELB without this policy)",
    ),
    (
        "PublicKeyPolicyType",
        "targets reached over HTTPS or SSL are not authenticated (as ELB without a backend authentication policy)",
    ),
    (
        "HTTPSListenerPolicyType",
        "an HTTPS or SSL listener's versions and suites are set with an SSLNegotiationPolicyType policy",
    ),
];

#[derive(Clone)]
struct AttributeType {
    name: &'static str,
    kind: &'static str,
    description: &'static str,
    default: &'static str,
    cardinality: &'static str,
}

struct PolicyType {
    name: &'static str,
    description: &'static str,
    attributes: std::borrow::Cow<'static, [AttributeType]>,
}

const TYPES: [PolicyType; 2] = [
    PolicyType {
        name: APP_COOKIE,
        description: "Sticky sessions that start when the application sets its cookie and last as long as that cookie; HTTP listeners only.",
        attributes: Cow::Borrowed(&[AttributeType {
            name: "CookieName",
            kind: "String",
            description: "The name of the application's session cookie (e.g. Flask's session).",
            default: "",
            cardinality: "ONE",
        }]),
    },
    PolicyType {
        name: LB_COOKIE,
        description: "Sticky sessions held by the load balancer's own cookie, for the browser session or an idle period that slides with use; HTTP listeners only.",
        attributes: Cow::Borrowed(&[
            AttributeType {
                name: "CookieExpirationPeriod",
                kind: "Long",
                description: "Seconds a session may stay idle before it ends (sliding); 0 or absent: until the browser closes.",
                default: "0",
                cardinality: "ZERO_OR_ONE",
            },
            AttributeType {
                name: COOKIE_MAX_LIFETIME,
                kind: "Long",
                description: "Seconds a session lasts at most from its start, however active (HAProxy's maxlife); 0 or absent: no limit. An extension of this service.",
                default: "0",
                cardinality: "ZERO_OR_ONE",
            },
        ]),
    },
];

/// SSLNegotiationPolicyType: a predefined policy by reference, or protocols and suites.
fn ssl_negotiation_type() -> PolicyType {
    let boolean = |name: &'static str, description: &'static str| AttributeType {
        name,
        kind: "Boolean",
        description,
        default: "",
        cardinality: "ZERO_OR_ONE",
    };
    let mut attributes = vec![
        AttributeType {
            name: tls_policy::REFERENCE,
            kind: "String",
            description: "A predefined security policy (ELBSecurityPolicy-TLS-1-2-2017-01, -TLS-1-1-2017-01, -2016-08, -2015-05); given alone.",
            default: "",
            cardinality: "ZERO_OR_ONE",
        },
        boolean(
            tls_policy::SERVER_ORDER,
            "The server's order of preference chooses the suite (always true here).",
        ),
    ];
    for (name, _) in tls_policy::PROTOCOLS {
        attributes.push(boolean(name, "Enables this TLS version (TLS 1.3 follows TLS 1.2)."));
    }
    for cipher in tls_policy::OFFERED_CIPHERS {
        attributes.push(boolean(cipher, "Enables this suite for TLS 1.0 to 1.2."));
    }
    PolicyType {
        name: tls_policy::TYPE_NAME,
        description: "The TLS versions and suites an HTTPS or SSL listener negotiates; without one, TLS 1.2 and 1.3 with forward-secret AEAD suites.",
        attributes: Cow::Owned(attributes),
    }
}

/// The reason this service does not apply policy type `name`, if it is one of ELB's others.
fn other_type(name: &str) -> Option<&'static str> {
    OTHER_TYPES.iter().find(|(n, _)| *n == name).map(|(_, why)| *why)
}

fn not_found(name: &str) -> ApiError {
    ApiError::new(
        ErrorCode::PolicyTypeNotFound,
        format!("There is no policy type named {name}"),
    )
}

pub fn create_policy(service: &Service, params: &Params) -> Result<Done<String>, ApiError> {
    let name = params.required("PolicyName")?.to_owned();
    let type_name = params.required("PolicyTypeName")?.to_owned();
    let members = params.struct_list("PolicyAttributes")?.unwrap_or_default();
    let mut attributes: Vec<(String, String)> = Vec::with_capacity(members.len());
    for member in members {
        let attribute = member.get("AttributeName").cloned().ok_or_else(|| {
            ApiError::new(
                ErrorCode::MissingParameter,
                "PolicyAttributes.member.N.AttributeName is required",
            )
        })?;
        if attributes.iter().any(|(a, _)| *a == attribute) {
            return Err(ApiError::validation(format!(
                "PolicyAttributes gives {attribute} twice"
            )));
        }
        attributes.push((attribute, member.get("AttributeValue").cloned().unwrap_or_default()));
    }
    if type_name == tls_policy::TYPE_NAME {
        let policy = Policy::SslNegotiation(tls_policy::from_attributes(&attributes)?);
        let lb = params.required("LoadBalancerName")?.to_owned();
        return super::change_one(service, lb, Change::AddPolicy { name, policy });
    }
    let Some(policy_type) = TYPES.iter().find(|t| t.name == type_name) else {
        return Err(match other_type(&type_name) {
            Some(why) => ApiError::invalid_configuration(format!(
                "Policy type {type_name} is not supported by this service: {why}"
            )),
            None => not_found(&type_name),
        });
    };
    if let Some((unknown, _)) = attributes
        .iter()
        .find(|(a, _)| !policy_type.attributes.iter().any(|t| t.name == a))
    {
        return Err(ApiError::invalid_configuration(format!(
            "{unknown} is not an attribute of {type_name}; it takes {}",
            policy_type
                .attributes
                .iter()
                .map(|t| t.name)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let value = |attribute: &str| attributes.iter().find(|(a, _)| a == attribute).map(|(_, v)| v.as_str());
    let policy = if policy_type.name == LB_COOKIE {
        Policy::LbCookie {
            cookie_expiration_period: seconds("CookieExpirationPeriod", value("CookieExpirationPeriod"))?,
            max_lifetime: seconds(COOKIE_MAX_LIFETIME, value(COOKIE_MAX_LIFETIME))?.filter(|s| *s > 0),
        }
    } else {
        let cookie = value("CookieName")
            .ok_or_else(|| ApiError::invalid_configuration(format!("{APP_COOKIE} needs the attribute CookieName")))?;
        Policy::AppCookie {
            cookie_name: cookie.to_owned(),
        }
    };
    let lb = params.required("LoadBalancerName")?.to_owned();
    let change = Change::AddPolicy { name, policy };
    super::change_one(service, lb, change)
}

pub fn describe_policy_types(params: &Params) -> Result<String, ApiError> {
    let names = params.list("PolicyTypeNames")?.unwrap_or_default();
    let ssl = ssl_negotiation_type();
    let all: Vec<&PolicyType> = TYPES.iter().chain(std::iter::once(&ssl)).collect();
    let mut selected: Vec<&PolicyType> = Vec::new();
    if names.is_empty() {
        selected.extend(all.iter().copied());
    } else {
        for name in &names {
            match all.iter().find(|t| t.name == name) {
                Some(policy_type) => selected.push(*policy_type),
                None => {
                    return Err(match other_type(name) {
                        Some(why) => ApiError::new(
                            ErrorCode::PolicyTypeNotFound,
                            format!("Policy type {name} is not supported by this service: {why}"),
                        ),
                        None => not_found(name),
                    });
                }
            }
        }
    }
    let mut xml = Xml::new();
    xml.members("PolicyTypeDescriptions", selected, |x, policy_type| {
        x.leaf("PolicyTypeName", policy_type.name);
        x.leaf("Description", policy_type.description);
        x.members(
            "PolicyAttributeTypeDescriptions",
            policy_type.attributes.iter(),
            |x, attribute| {
                x.leaf("AttributeName", attribute.name);
                x.leaf("AttributeType", attribute.kind);
                x.leaf("Description", attribute.description);
                x.leaf("DefaultValue", attribute.default);
                x.leaf("Cardinality", attribute.cardinality);
            },
        );
    });
    Ok(xml.finish())
}
