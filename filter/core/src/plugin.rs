//! The plugin configuration Envoy hands to `on_configure` (a JSON string).

use serde::{Deserialize, Serialize};

use crate::state::FilterState;

/// Header the filter sets to the pinned target's `ip:port`; the cluster's `override_host`
/// load balancing policy reads it.
pub const DEFAULT_ROUTING_HEADER: &str = "x-sticky-target";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Name of the routing header (lowercase HTTP token).
    #[serde(default = "default_routing_header")]
    pub routing_header: String,
    /// The listener's state. Absent: requests pass through without stickiness.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<FilterState>,
}

impl PluginConfig {
    pub fn new(state: Option<FilterState>) -> Self {
        Self {
            routing_header: default_routing_header(),
            state,
        }
    }

    /// The JSON Envoy passes as the plugin's `configuration`.
    pub fn to_json(&self) -> String {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

fn default_routing_header() -> String {
    DEFAULT_ROUTING_HEADER.to_owned()
}

#[derive(Debug, thiserror::Error)]
pub enum PluginConfigError {
    /// Position and category only: formatting serde_json's full message would pull float
    /// formatting into the filter's artifact.
    #[error("plugin configuration is not valid JSON for the schema: {category} error at line {line}, column {column}")]
    Json {
        category: &'static str,
        line: usize,
        column: usize,
    },
    #[error("routing header `{0}` must be a lowercase HTTP token")]
    RoutingHeader(String),
}

impl PluginConfig {
    /// Parses and validates the configuration. Empty configuration means all defaults.
    pub fn parse(bytes: &[u8]) -> Result<Self, PluginConfigError> {
        let config: PluginConfig = if bytes.iter().all(u8::is_ascii_whitespace) {
            PluginConfig {
                routing_header: default_routing_header(),
                state: None,
            }
        } else {
            serde_json::from_slice(bytes).map_err(|e| PluginConfigError::Json {
                category: match e.classify() {
                    serde_json::error::Category::Io => "i/o",
                    serde_json::error::Category::Syntax => "syntax",
                    serde_json::error::Category::Data => "schema",
                    serde_json::error::Category::Eof => "truncation",
                },
                line: e.line(),
                column: e.column(),
            })?
        };
        let header_ok = !config.routing_header.is_empty()
            && config.routing_header.len() <= 64
            && config
                .routing_header
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !header_ok {
            return Err(PluginConfigError::RoutingHeader(config.routing_header));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_configuration_means_defaults() {
        let config = PluginConfig::parse(b"  ").unwrap();
        assert_eq!(config.routing_header, DEFAULT_ROUTING_HEADER);
        assert!(config.state.is_none());
    }

    #[test]
    fn bad_configurations_are_refused() {
        for bad in [
            &b"{"[..],
            b"{\"routing_header\":\"X-Upper\"}",
            b"{\"routing_header\":\"a b\"}",
            b"{\"unknown\":1}",
        ] {
            assert!(PluginConfig::parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
