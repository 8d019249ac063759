//! ELB's SSL negotiation policies (SSLNegotiationPolicyType) as Envoy can serve them: a
//! predefined `ELBSecurityPolicy-*` named by `Reference-Security-Policy`, or a custom set of
//! protocols and ciphers. Envoy's TLS library (BoringSSL) offers TLS 1.0 to 1.3 and a subset of
//! the suites ELB names; a policy maps when its protocols form a range and it keeps at least
//! one suite Envoy offers. TLS 1.3 (which classic ELB predates) stays on wherever TLS 1.2 is:
//! its suites are all forward-secret AEAD. Pure: no I/O.

use serde::{Deserialize, Serialize};

use crate::error::ApiError;

pub const TYPE_NAME: &str = "SSLNegotiationPolicyType";
pub const REFERENCE: &str = "Reference-Security-Policy";
pub const SERVER_ORDER: &str = "Server-Defined-Cipher-Order";

/// A TLS version a policy may enable (TLS 1.3 follows TLS 1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TlsVersion {
    #[serde(rename = "TLSv1")]
    Tls10,
    #[serde(rename = "TLSv1.1")]
    Tls11,
    #[serde(rename = "TLSv1.2")]
    Tls12,
}

use TlsVersion::{Tls10, Tls11, Tls12};

/// ELB's protocol attributes this service can enable.
pub const PROTOCOLS: [(&str, TlsVersion); 3] = [
    ("Protocol-TLSv1", Tls10),
    ("Protocol-TLSv1.1", Tls11),
    ("Protocol-TLSv1.2", Tls12),
];

/// ELB's protocol attributes that no policy here may enable.
const REFUSED_PROTOCOLS: [&str; 2] = ["Protocol-SSLv3", "Protocol-SSLv2"];

/// The suites (by ELB's names, which are OpenSSL's) Envoy offers for TLS 1.0 to 1.2, in ELB's
/// order of preference, then the two ChaCha20 suites ELB does not name.
pub const OFFERED_CIPHERS: [&str; 17] = [
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES128-SHA256",
    "ECDHE-RSA-AES128-SHA256",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "AES128-GCM-SHA256",
    "AES128-SHA",
    "AES256-GCM-SHA384",
    "AES256-SHA",
    "DES-CBC3-SHA",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
];

/// Suites of ELB's current policies that BoringSSL dropped (CBC with SHA-384 or SHA-256 MACs
/// outside ECDHE-*-AES128): a predefined policy naming them is served without them.
pub const UNOFFERED_CIPHERS: [&str; 4] = [
    "ECDHE-ECDSA-AES256-SHA384",
    "ECDHE-RSA-AES256-SHA384",
    "AES128-SHA256",
    "AES256-SHA256",
];

const CIPHERS_2016_08: [&str; 18] = [
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES128-SHA256",
    "ECDHE-RSA-AES128-SHA256",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-AES256-SHA384",
    "ECDHE-RSA-AES256-SHA384",
    "ECDHE-RSA-AES256-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "AES128-GCM-SHA256",
    "AES128-SHA256",
    "AES128-SHA",
    "AES256-GCM-SHA384",
    "AES256-SHA256",
    "AES256-SHA",
];

const CIPHERS_TLS_1_2_2017_01: [&str; 12] = [
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES128-SHA256",
    "ECDHE-RSA-AES128-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-AES256-SHA384",
    "ECDHE-RSA-AES256-SHA384",
    "AES128-GCM-SHA256",
    "AES128-SHA256",
    "AES256-GCM-SHA384",
    "AES256-SHA256",
];

/// One of ELB's predefined security policies that maps.
pub struct Predefined {
    pub name: &'static str,
    pub protocols: &'static [TlsVersion],
    /// Its suites, in order: the lists one after the other.
    pub ciphers: &'static [&'static [&'static str]],
}

/// ELB's predefined policies that map, newest first (ELB's default is ELBSecurityPolicy-2016-08).
pub const PREDEFINED: [Predefined; 4] = [
    Predefined {
        name: "ELBSecurityPolicy-TLS-1-2-2017-01",
        protocols: &[Tls12],
        ciphers: &[&CIPHERS_TLS_1_2_2017_01],
    },
    Predefined {
        name: "ELBSecurityPolicy-TLS-1-1-2017-01",
        protocols: &[Tls11, Tls12],
        ciphers: &[&CIPHERS_2016_08],
    },
    Predefined {
        name: "ELBSecurityPolicy-2016-08",
        protocols: &[Tls10, Tls11, Tls12],
        ciphers: &[&CIPHERS_2016_08],
    },
    Predefined {
        name: "ELBSecurityPolicy-2015-05",
        protocols: &[Tls10, Tls11, Tls12],
        ciphers: &[&CIPHERS_2016_08, &["DES-CBC3-SHA"]],
    },
];

/// ELB's older predefined policies, which do not map.
const UNMAPPED: [&str; 7] = [
    "ELBSecurityPolicy-2015-03",
    "ELBSecurityPolicy-2015-02",
    "ELBSecurityPolicy-2014-10",
    "ELBSecurityPolicy-2014-01",
    "ELBSecurityPolicy-2011-08",
    "ELBSample-ELBDefaultCipherPolicy",
    "ELBSample-OpenSSLDefaultCipherPolicy",
];

/// A listener's TLS policy as Envoy serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsPolicy {
    /// The predefined policy it was made from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The versions up to TLS 1.2 it enables, a range, ascending; TLS 1.3 follows TLS 1.2.
    pub protocols: Vec<TlsVersion>,
    /// The TLS 1.0–1.2 suites served, in the server's order of preference.
    pub ciphers: Vec<String>,
}

impl TlsPolicy {
    /// The lowest version enabled.
    pub fn minimum(&self) -> TlsVersion {
        self.protocols.first().copied().unwrap_or(Tls12)
    }

    /// Whether TLS 1.3 is on (with TLS 1.2), else the highest version enabled.
    pub fn maximum(&self) -> Option<TlsVersion> {
        let highest = self.protocols.last().copied().unwrap_or(Tls12);
        (highest != Tls12).then_some(highest)
    }

    /// The attributes DescribeLoadBalancerPolicies shows: each protocol and suite ELB names,
    /// `true` where it is served.
    pub fn attributes(&self) -> Vec<(String, String)> {
        let mut attributes = Vec::new();
        if let Some(reference) = &self.reference {
            attributes.push((REFERENCE.to_owned(), reference.clone()));
        }
        for (name, version) in PROTOCOLS {
            attributes.push((name.to_owned(), self.protocols.contains(&version).to_string()));
        }
        attributes.push((SERVER_ORDER.to_owned(), "true".to_owned()));
        for cipher in OFFERED_CIPHERS.iter().chain(UNOFFERED_CIPHERS.iter()) {
            let on = self.ciphers.iter().any(|c| c == cipher);
            attributes.push(((*cipher).to_owned(), on.to_string()));
        }
        attributes
    }
}

/// Predefined policy `name` as served here.
pub fn predefined(name: &str) -> Result<TlsPolicy, ApiError> {
    if let Some(policy) = PREDEFINED.iter().find(|p| p.name == name) {
        return Ok(TlsPolicy {
            reference: Some(name.to_owned()),
            protocols: policy.protocols.to_vec(),
            ciphers: served(policy.ciphers.iter().flat_map(|list| list.iter().copied())),
        });
    }
    Err(ApiError::invalid_configuration(if UNMAPPED.contains(&name) {
        format!(
            "{name} enables what Envoy's TLS library does not offer (DHE key exchange; in the oldest policies RC4 and SSLv3); use {} or a newer predefined policy",
            PREDEFINED[2].name
        )
    } else {
        format!(
            "{REFERENCE} {name:?} is not a predefined security policy; those that apply here are {}",
            predefined_names().join(", ")
        )
    }))
}

pub fn predefined_names() -> Vec<&'static str> {
    PREDEFINED.iter().map(|p| p.name).collect()
}

/// The suites of `ciphers` Envoy offers, in their order.
fn served<'a>(ciphers: impl Iterator<Item = &'a str>) -> Vec<String> {
    ciphers
        .filter(|c| OFFERED_CIPHERS.contains(c))
        .map(str::to_owned)
        .collect()
}

/// A policy attribute's boolean; a bad one is an invalid configuration, as ELB answers.
fn boolean(attribute: &str, value: &str) -> Result<bool, ApiError> {
    crate::attributes::parse_bool(attribute, value).map_err(|e| ApiError::invalid_configuration(e.message))
}

/// A policy from CreateLoadBalancerPolicy's attributes: `Reference-Security-Policy` alone, or
/// protocols, ciphers and `Server-Defined-Cipher-Order`.
pub fn from_attributes(attributes: &[(String, String)]) -> Result<TlsPolicy, ApiError> {
    if let Some((_, reference)) = attributes.iter().find(|(a, _)| a == REFERENCE) {
        if attributes.len() > 1 {
            return Err(ApiError::invalid_configuration(format!(
                "Give either {REFERENCE} alone or protocols and ciphers, not both"
            )));
        }
        return predefined(reference);
    }
    let mut protocols = Vec::new();
    let mut ciphers = Vec::new();
    for (attribute, value) in attributes {
        let on = boolean(attribute, value)?;
        if let Some((_, version)) = PROTOCOLS.iter().find(|(name, _)| name == attribute) {
            if on {
                protocols.push(*version);
            }
        } else if REFUSED_PROTOCOLS.contains(&attribute.as_str()) {
            if on {
                return Err(ApiError::invalid_configuration(format!(
                    "{attribute} cannot be enabled: Envoy's TLS library offers TLS 1.0 and newer only"
                )));
            }
        } else if attribute == SERVER_ORDER {
            if !on {
                return Err(ApiError::invalid_configuration(format!(
                    "{SERVER_ORDER} false is not offered: Envoy always chooses the suite in the server's order"
                )));
            }
        } else if on {
            if !OFFERED_CIPHERS.contains(&attribute.as_str()) {
                return Err(ApiError::invalid_configuration(format!(
                    "Cipher {attribute} is not offered by Envoy's TLS library; those offered are {}",
                    OFFERED_CIPHERS.join(", ")
                )));
            }
            ciphers.push(attribute.clone());
        }
    }
    protocols.sort();
    if protocols.is_empty() {
        return Err(ApiError::invalid_configuration(
            "An SSL negotiation policy must enable at least one of Protocol-TLSv1, Protocol-TLSv1.1, Protocol-TLSv1.2",
        ));
    }
    let contiguous = protocols.windows(2).all(|w| (w[1] as u8) == (w[0] as u8) + 1);
    if !contiguous {
        return Err(ApiError::invalid_configuration(
            "The protocols enabled must be a range (Envoy enables every version between its lowest and highest)",
        ));
    }
    if ciphers.is_empty() {
        return Err(ApiError::invalid_configuration(
            "An SSL negotiation policy must enable at least one cipher",
        ));
    }
    Ok(TlsPolicy {
        reference: None,
        protocols,
        ciphers,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn attributes(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, v)| ((*a).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn predefined_policies_map_to_versions_and_the_suites_envoy_offers() {
        let cases: [(&str, TlsVersion, Option<TlsVersion>, usize); 4] = [
            ("ELBSecurityPolicy-TLS-1-2-2017-01", Tls12, None, 8),
            ("ELBSecurityPolicy-TLS-1-1-2017-01", Tls11, None, 14),
            ("ELBSecurityPolicy-2016-08", Tls10, None, 14),
            ("ELBSecurityPolicy-2015-05", Tls10, None, 15),
        ];
        for (name, minimum, maximum, suites) in cases {
            let policy = from_attributes(&attributes(&[(REFERENCE, name)])).unwrap();
            assert_eq!(policy.minimum(), minimum, "{name}");
            assert_eq!(policy.maximum(), maximum, "{name}: TLS 1.3 stays on");
            assert_eq!(policy.ciphers.len(), suites, "{name}");
            assert!(policy.ciphers.iter().all(|c| OFFERED_CIPHERS.contains(&c.as_str())));
            assert_eq!(policy.reference.as_deref(), Some(name));
        }
    }

    #[test]
    fn old_or_unknown_predefined_policies_are_refused_with_the_reason() {
        let old = from_attributes(&attributes(&[(REFERENCE, "ELBSecurityPolicy-2015-03")])).unwrap_err();
        assert!(old.message.contains("DHE"), "{}", old.message);
        let unknown = from_attributes(&attributes(&[(REFERENCE, "ELBSecurityPolicy-1999")])).unwrap_err();
        assert!(
            unknown.message.contains("ELBSecurityPolicy-2016-08"),
            "{}",
            unknown.message
        );
        let mixed = from_attributes(&attributes(&[
            (REFERENCE, "ELBSecurityPolicy-2016-08"),
            ("Protocol-TLSv1", "true"),
        ]));
        assert!(mixed.is_err());
    }

    #[test]
    fn custom_policies_take_protocol_ranges_and_offered_suites_only() {
        let ok = from_attributes(&attributes(&[
            ("Protocol-TLSv1.2", "true"),
            ("Protocol-TLSv1.1", "true"),
            ("Protocol-TLSv1", "false"),
            ("Protocol-SSLv3", "false"),
            (SERVER_ORDER, "true"),
            ("ECDHE-RSA-AES128-GCM-SHA256", "true"),
            ("AES128-SHA256", "false"),
        ]))
        .unwrap();
        assert_eq!(ok.protocols, [Tls11, Tls12]);
        assert_eq!(ok.ciphers, ["ECDHE-RSA-AES128-GCM-SHA256"]);
        let refused: [(&[(&str, &str)], &str); 7] = [
            (
                &[
                    ("Protocol-TLSv1", "true"),
                    ("Protocol-TLSv1.2", "true"),
                    ("AES128-SHA", "true"),
                ],
                "range",
            ),
            (&[("Protocol-SSLv3", "true"), ("AES128-SHA", "true")], "SSLv3"),
            (
                &[("Protocol-TLSv1.2", "true"), ("AES256-SHA256", "true")],
                "not offered",
            ),
            (
                &[("Protocol-TLSv1.2", "true"), ("DHE-RSA-AES128-SHA", "true")],
                "not offered",
            ),
            (&[("Protocol-TLSv1.2", "true")], "at least one cipher"),
            (&[("AES128-SHA", "true")], "at least one of"),
            (&[("Protocol-TLSv1.2", "yes"), ("AES128-SHA", "true")], "true or false"),
        ];
        for (pairs, expected) in refused {
            let error = from_attributes(&attributes(pairs)).unwrap_err();
            assert!(error.message.contains(expected), "{pairs:?}: {}", error.message);
        }
        let client_order = from_attributes(&attributes(&[
            ("Protocol-TLSv1.2", "true"),
            ("AES128-SHA", "true"),
            (SERVER_ORDER, "false"),
        ]));
        assert!(client_order.is_err());
    }

    #[test]
    fn attributes_show_what_is_served() {
        let policy = predefined("ELBSecurityPolicy-TLS-1-2-2017-01").unwrap();
        let shown = policy.attributes();
        let value = |name: &str| shown.iter().find(|(a, _)| a == name).map(|(_, v)| v.as_str());
        assert_eq!(value(REFERENCE), Some("ELBSecurityPolicy-TLS-1-2-2017-01"));
        assert_eq!(value("Protocol-TLSv1"), Some("false"));
        assert_eq!(value("Protocol-TLSv1.2"), Some("true"));
        assert_eq!(value("ECDHE-RSA-AES128-GCM-SHA256"), Some("true"));
        assert_eq!(value("AES256-SHA256"), Some("false"), "named by ELB, not served");
        let json = serde_json::to_string(&policy).unwrap();
        assert_eq!(serde_json::from_str::<TlsPolicy>(&json).unwrap(), policy);
    }
}
