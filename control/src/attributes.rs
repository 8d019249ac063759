//! A load balancer's attributes (DescribeLoadBalancerAttributes / ModifyLoadBalancerAttributes):
//! ELB's own (ConnectionDraining, ConnectionSettings, CrossZoneLoadBalancing, AccessLog) and the
//! `AdditionalAttributes` keys of this service (the stickiness cookie's attributes, session
//! draining, the session header). Pure: parsing, validation, the effective cookie settings.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sticky_core::cookies::{is_cookie_domain, is_cookie_name, is_cookie_path, is_session_header};
use sticky_core::{CookieSettings, SameSite};

use crate::error::ApiError;

/// The `AdditionalAttributes` keys this service knows, with what each sets.
pub const ADDITIONAL_KEYS: [&str; 10] = [
    COOKIE_NAME,
    COOKIE_PATH,
    COOKIE_DOMAIN,
    COOKIE_SECURE,
    COOKIE_SAMESITE,
    COOKIE_PARTITIONED,
    COOKIE_CORS_TWIN,
    SESSION_HEADER,
    SESSION_DRAINING,
    DESYNC_MITIGATION,
];
pub const COOKIE_NAME: &str = "sticky.cookie.name";
pub const COOKIE_PATH: &str = "sticky.cookie.path";
pub const COOKIE_DOMAIN: &str = "sticky.cookie.domain";
pub const COOKIE_SECURE: &str = "sticky.cookie.secure";
pub const COOKIE_SAMESITE: &str = "sticky.cookie.samesite";
pub const COOKIE_PARTITIONED: &str = "sticky.cookie.partitioned";
pub const COOKIE_CORS_TWIN: &str = "sticky.cookie.cors_twin";
pub const SESSION_HEADER: &str = "sticky.session.header";
pub const SESSION_DRAINING: &str = "sticky.session_draining.enabled";
/// ELB's own additional attribute; stored and shown (Envoy's HTTP parsing is strict whatever
/// its value).
pub const DESYNC_MITIGATION: &str = "elb.http.desyncmitigationmode";

/// ELB's ranges.
const DRAINING_TIMEOUT: std::ops::RangeInclusive<u32> = 1..=3600;
const IDLE_TIMEOUT: std::ops::RangeInclusive<u32> = 1..=4000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Attributes {
    pub connection_draining: ConnectionDraining,
    /// ConnectionSettings.IdleTimeout, seconds.
    pub idle_timeout: u32,
    pub cross_zone: bool,
    /// Unset keys follow the service's defaults (`--cookie-name`, `--cookie-secure`).
    pub cookie: CookieAttributes,
    /// Sessions on a deregistered target stay there until ConnectionDraining.Timeout.
    pub session_draining: bool,
    /// The header carrying sessions of clients without cookies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_header: Option<String>,
    pub desync_mitigation_mode: String,
}

impl Default for Attributes {
    fn default() -> Self {
        Self {
            connection_draining: ConnectionDraining::default(),
            idle_timeout: 60,
            cross_zone: false,
            cookie: CookieAttributes::default(),
            session_draining: false,
            session_header: None,
            desync_mitigation_mode: "defensive".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConnectionDraining {
    pub enabled: bool,
    /// Seconds.
    pub timeout: u32,
}

impl Default for ConnectionDraining {
    fn default() -> Self {
        Self {
            enabled: false,
            timeout: 300,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CookieAttributes {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secure: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub same_site: Option<SameSite>,
    pub partitioned: bool,
    pub cors_twin: bool,
}

/// What ModifyLoadBalancerAttributes asks, each part optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttributeChanges {
    pub draining_enabled: Option<bool>,
    pub draining_timeout: Option<u32>,
    pub idle_timeout: Option<u32>,
    pub cross_zone: Option<bool>,
    pub access_log_enabled: Option<bool>,
    pub additional: Vec<(String, String)>,
}

impl AttributeChanges {
    /// True when the call asks nothing.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

fn boolean(field: &str, value: &str) -> Result<bool, ApiError> {
    match value.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ApiError::validation(format!(
            "{field} must be true or false, got {value:?}"
        ))),
    }
}

/// Parses a boolean query value (`true`/`false`, any case).
pub fn parse_bool(field: &str, value: &str) -> Result<bool, ApiError> {
    boolean(field, value)
}

fn same_site(value: &str) -> Result<SameSite, ApiError> {
    match value.to_ascii_lowercase().as_str() {
        "strict" => Ok(SameSite::Strict),
        "lax" => Ok(SameSite::Lax),
        "none" => Ok(SameSite::None),
        _ => Err(ApiError::validation(format!(
            "{COOKIE_SAMESITE} must be Strict, Lax or None, got {value:?}"
        ))),
    }
}

fn same_site_name(value: SameSite) -> &'static str {
    match value {
        SameSite::Strict => "Strict",
        SameSite::Lax => "Lax",
        SameSite::None => "None",
    }
}

/// An empty value unsets an optional key.
fn optional(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_owned())
}

impl Attributes {
    /// `self` with `changes` applied, validated as a whole (a refused change changes nothing).
    /// `defaults` are the service's cookie settings; `app_cookies` the CookieNames of the load
    /// balancer's app-cookie policies, which the stickiness cookie must not take.
    pub fn changed(
        &self,
        changes: &AttributeChanges,
        defaults: &CookieSettings,
        app_cookies: &[&str],
    ) -> Result<Attributes, ApiError> {
        let mut next = self.clone();
        if let Some(enabled) = changes.draining_enabled {
            next.connection_draining.enabled = enabled;
        }
        if let Some(timeout) = changes.draining_timeout {
            if !DRAINING_TIMEOUT.contains(&timeout) {
                return Err(ApiError::validation(format!(
                    "ConnectionDraining.Timeout must be 1 to 3600 seconds, got {timeout}"
                )));
            }
            next.connection_draining.timeout = timeout;
        }
        if let Some(idle) = changes.idle_timeout {
            if !IDLE_TIMEOUT.contains(&idle) {
                return Err(ApiError::validation(format!(
                    "ConnectionSettings.IdleTimeout must be 1 to 4000 seconds, got {idle}"
                )));
            }
            next.idle_timeout = idle;
        }
        if let Some(cross_zone) = changes.cross_zone {
            next.cross_zone = cross_zone;
        }
        if changes.access_log_enabled == Some(true) {
            return Err(ApiError::invalid_configuration(
                "AccessLog to S3 is not supported by this service: Envoy's access log on the bouncer host is the log; set AccessLog.Enabled to false",
            ));
        }
        let mut seen: Vec<&str> = Vec::new();
        for (key, value) in &changes.additional {
            if seen.contains(&key.as_str()) {
                return Err(ApiError::validation(format!("AdditionalAttributes sets {key} twice")));
            }
            seen.push(key);
            next.set_additional(key, value)?;
        }
        next.validate(defaults, app_cookies)?;
        Ok(next)
    }

    fn set_additional(&mut self, key: &str, value: &str) -> Result<(), ApiError> {
        let cookie = &mut self.cookie;
        match key {
            COOKIE_NAME => cookie.name = optional(value),
            COOKIE_PATH => cookie.path = optional(value),
            COOKIE_DOMAIN => cookie.domain = optional(value),
            COOKIE_SECURE => cookie.secure = Some(boolean(key, value)?),
            COOKIE_SAMESITE => cookie.same_site = Some(same_site(value)?),
            COOKIE_PARTITIONED => cookie.partitioned = boolean(key, value)?,
            COOKIE_CORS_TWIN => cookie.cors_twin = boolean(key, value)?,
            SESSION_HEADER => self.session_header = optional(&value.to_ascii_lowercase()),
            SESSION_DRAINING => self.session_draining = boolean(key, value)?,
            DESYNC_MITIGATION => match value {
                "monitor" | "defensive" | "strictest" => self.desync_mitigation_mode = value.to_owned(),
                _ => {
                    return Err(ApiError::validation(format!(
                        "{DESYNC_MITIGATION} must be monitor, defensive or strictest, got {value:?}"
                    )));
                }
            },
            _ => {
                return Err(ApiError::validation(format!(
                    "AdditionalAttributes key {key:?} is not known; known keys: {}",
                    ADDITIONAL_KEYS.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// The stickiness cookie's settings: these attributes over the service's defaults.
    pub fn cookie_settings(&self, defaults: &CookieSettings) -> CookieSettings {
        let cookie = &self.cookie;
        CookieSettings {
            name: cookie.name.clone().unwrap_or_else(|| defaults.name.clone()),
            path: cookie.path.clone().unwrap_or_else(|| defaults.path.clone()),
            domain: cookie.domain.clone().or_else(|| defaults.domain.clone()),
            secure: cookie.secure.unwrap_or(defaults.secure),
            http_only: defaults.http_only,
            same_site: cookie.same_site.unwrap_or(defaults.same_site),
            partitioned: cookie.partitioned,
            cors_twin: cookie.cors_twin,
        }
    }

    /// Whether the whole is coherent: every value one the filter takes, as the filter checks it.
    pub fn validate(&self, defaults: &CookieSettings, app_cookies: &[&str]) -> Result<(), ApiError> {
        let settings = self.cookie_settings(defaults);
        if !is_cookie_name(&settings.name) {
            return Err(ApiError::validation(format!(
                "{COOKIE_NAME} {:?} must be an RFC 6265 token of at most 128 characters",
                settings.name
            )));
        }
        if settings.cors_twin && !is_cookie_name(&CookieSettings::twin_name(&settings.name)) {
            return Err(ApiError::validation(format!(
                "{COOKIE_NAME} {:?} is too long to have a CORS twin",
                settings.name
            )));
        }
        if !is_cookie_path(&settings.path) {
            return Err(ApiError::validation(format!(
                "{COOKIE_PATH} {:?} must start with '/' and hold no ';', spaces, control or non-ASCII characters",
                settings.path
            )));
        }
        if let Some(domain) = &settings.domain
            && !is_cookie_domain(domain)
        {
            return Err(ApiError::validation(format!(
                "{COOKIE_DOMAIN} {domain:?} must be a host name (letters, digits, hyphens, dots)"
            )));
        }
        if settings.same_site == SameSite::None && !settings.secure {
            return Err(ApiError::invalid_configuration(format!(
                "{COOKIE_SAMESITE}=None needs {COOKIE_SECURE}=true (browsers drop such cookies otherwise)"
            )));
        }
        if settings.partitioned && !settings.secure {
            return Err(ApiError::invalid_configuration(format!(
                "{COOKIE_PARTITIONED}=true needs {COOKIE_SECURE}=true (CHIPS cookies must be Secure)"
            )));
        }
        let twin = CookieSettings::twin_name(&settings.name);
        if let Some(clash) = app_cookies
            .iter()
            .find(|app| **app == settings.name || (settings.cors_twin && **app == twin))
        {
            return Err(ApiError::invalid_configuration(format!(
                "the stickiness cookie (or its CORS twin) would be named {clash}, the CookieName of an app-cookie policy of this load balancer"
            )));
        }
        if let Some(header) = &self.session_header
            && !is_session_header(header)
        {
            return Err(ApiError::validation(format!(
                "{SESSION_HEADER} {header:?} must be a header name (letters, digits, '-', '_', '.') other than cookie, set-cookie, host, authorization or a hop-by-hop header"
            )));
        }
        if self.session_draining && !self.connection_draining.enabled {
            return Err(ApiError::invalid_configuration(format!(
                "{SESSION_DRAINING}=true needs ConnectionDraining.Enabled=true (its Timeout bounds the drain)"
            )));
        }
        Ok(())
    }

    /// Every `AdditionalAttributes` key with its effective value, in [`ADDITIONAL_KEYS`] order.
    pub fn additional(&self, defaults: &CookieSettings) -> BTreeMap<&'static str, String> {
        let settings = self.cookie_settings(defaults);
        ADDITIONAL_KEYS
            .iter()
            .map(|key| {
                let value = match *key {
                    COOKIE_NAME => settings.name.clone(),
                    COOKIE_PATH => settings.path.clone(),
                    COOKIE_DOMAIN => settings.domain.clone().unwrap_or_default(),
                    COOKIE_SECURE => settings.secure.to_string(),
                    COOKIE_SAMESITE => same_site_name(settings.same_site).to_owned(),
                    COOKIE_PARTITIONED => settings.partitioned.to_string(),
                    COOKIE_CORS_TWIN => settings.cors_twin.to_string(),
                    SESSION_HEADER => self.session_header.clone().unwrap_or_default(),
                    SESSION_DRAINING => self.session_draining.to_string(),
                    _ => self.desync_mitigation_mode.clone(),
                };
                (*key, value)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(additional: &[(&str, &str)]) -> AttributeChanges {
        AttributeChanges {
            additional: additional
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..AttributeChanges::default()
        }
    }

    #[test]
    fn cookie_attributes_apply_over_the_service_defaults() {
        let defaults = CookieSettings::default();
        let attributes = Attributes::default()
            .changed(
                &change(&[
                    (COOKIE_NAME, "SID"),
                    (COOKIE_SECURE, "true"),
                    (COOKIE_SAMESITE, "none"),
                    (COOKIE_PARTITIONED, "TRUE"),
                    (COOKIE_DOMAIN, "example.com"),
                    (COOKIE_CORS_TWIN, "true"),
                    (SESSION_HEADER, "X-Sticky-Session"),
                ]),
                &defaults,
                &["session"],
            )
            .unwrap();
        let settings = attributes.cookie_settings(&defaults);
        assert_eq!(
            (
                settings.name.as_str(),
                settings.secure,
                settings.same_site,
                settings.partitioned
            ),
            ("SID", true, SameSite::None, true)
        );
        assert_eq!(settings.domain.as_deref(), Some("example.com"));
        assert_eq!(attributes.session_header.as_deref(), Some("x-sticky-session"));
        let shown = attributes.additional(&defaults);
        assert_eq!(shown[COOKIE_SAMESITE], "None");
        assert_eq!(shown[COOKIE_PATH], "/");
        // An empty value unsets: back to the default.
        let unset = attributes
            .changed(&change(&[(COOKIE_NAME, "")]), &defaults, &[])
            .unwrap();
        assert_eq!(unset.cookie_settings(&defaults).name, "AWSELB");
    }

    #[test]
    fn bad_values_are_refused_and_change_nothing() {
        let defaults = CookieSettings::default();
        let draining_on = AttributeChanges {
            draining_enabled: Some(true),
            ..change(&[(SESSION_DRAINING, "true")])
        };
        let cases: Vec<(AttributeChanges, &str)> = vec![
            (change(&[(COOKIE_NAME, "a;b")]), COOKIE_NAME),
            (change(&[(COOKIE_NAME, "session")]), "app-cookie"),
            (change(&[(COOKIE_PATH, "app")]), COOKIE_PATH),
            (change(&[(COOKIE_PATH, "/a;b")]), COOKIE_PATH),
            (change(&[(COOKIE_DOMAIN, "a b.com")]), COOKIE_DOMAIN),
            (change(&[(COOKIE_DOMAIN, "x.com\r\nSet-Cookie: a=b")]), COOKIE_DOMAIN),
            (change(&[(COOKIE_SAMESITE, "None")]), "secure=true"),
            (change(&[(COOKIE_SAMESITE, "sometimes")]), COOKIE_SAMESITE),
            (change(&[(COOKIE_PARTITIONED, "true")]), "CHIPS"),
            (change(&[(COOKIE_SECURE, "yes")]), COOKIE_SECURE),
            (change(&[(SESSION_HEADER, "cookie")]), SESSION_HEADER),
            (change(&[(SESSION_HEADER, "x-a\r\nb")]), SESSION_HEADER),
            (change(&[(SESSION_DRAINING, "true")]), "ConnectionDraining"),
            (change(&[("sticky.unknown", "1")]), "not known"),
            (change(&[(COOKIE_SECURE, "true"), (COOKIE_SECURE, "false")]), "twice"),
            (change(&[(DESYNC_MITIGATION, "off")]), DESYNC_MITIGATION),
            (
                AttributeChanges {
                    draining_timeout: Some(0),
                    ..draining_on.clone()
                },
                "1 to 3600",
            ),
            (
                AttributeChanges {
                    idle_timeout: Some(4001),
                    ..AttributeChanges::default()
                },
                "1 to 4000",
            ),
            (
                AttributeChanges {
                    access_log_enabled: Some(true),
                    ..AttributeChanges::default()
                },
                "AccessLog",
            ),
        ];
        for (changes, expected) in cases {
            let error = Attributes::default()
                .changed(&changes, &defaults, &["session"])
                .unwrap_err();
            assert!(error.message.contains(expected), "{changes:?}: {}", error.message);
        }
        // The CORS twin's name is taken too.
        let twin = Attributes::default()
            .changed(&change(&[(COOKIE_CORS_TWIN, "true")]), &defaults, &["AWSELBCORS"])
            .unwrap_err();
        assert!(twin.message.contains("app-cookie"), "{}", twin.message);
        assert!(
            Attributes::default()
                .changed(&draining_on, &defaults, &[])
                .unwrap()
                .session_draining
        );
    }
}
