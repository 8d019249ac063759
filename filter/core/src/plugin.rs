//! The plugin configuration Envoy hands to `on_configure` (a JSON string).

use serde::{Deserialize, Serialize};

use crate::error::JsonError;
use crate::state::FilterState;

/// Header the filter sets to the pinned target's `ip:port`; the cluster's `override_host`
/// load balancing policy reads it.
pub const DEFAULT_ROUTING_HEADER: &str = "x-sticky-target";
/// Response header Envoy's route fills with the last upstream's `ip:port` and Envoy's response
/// flags (`%UPSTREAM_REMOTE_ADDRESS% %RESPONSE_FLAGS%`, see [`UpstreamReport`]); the filter
/// reads it, then removes it before the client sees it. Reading a header costs a fraction of
/// the `upstream.address` property, which is the fallback when the header is absent.
pub const DEFAULT_UPSTREAM_HEADER: &str = "x-sticky-upstream";
/// The value Envoy's route gives the upstream header.
pub const UPSTREAM_HEADER_VALUE: &str = "%UPSTREAM_REMOTE_ADDRESS% %RESPONSE_FLAGS%";
/// The value Envoy's WebSocket route gives it: the same, marked as the answer to an upgrade
/// request, so the filter watches the stream (see [`UpstreamReport::upgrade`]) without asking
/// every response what it was.
pub const UPGRADE_HEADER_VALUE: &str = "%UPSTREAM_REMOTE_ADDRESS% %RESPONSE_FLAGS% upgrade";

/// What the upstream header says: the last upstream Envoy tried, and whether Envoy gave up on
/// it for a connection-level failure (response flags `UF` connect failure, `UC` connection
/// terminated, `UR` reset by the upstream, `URX` retries exhausted): then the answer is Envoy's
/// own 503 and `address` did not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamReport<'a> {
    pub address: &'a [u8],
    pub failed: bool,
    /// The request was a WebSocket upgrade (the route's [`UPGRADE_HEADER_VALUE`]).
    pub upgrade: bool,
}

impl<'a> UpstreamReport<'a> {
    /// Parses `ip:port[ flags[ upgrade]]` (flags comma-separated, `-` for none); a bare address
    /// (the `upstream.address` property, an older route) has no flags.
    pub fn parse(value: &'a [u8]) -> Self {
        let mut words = value.split(|&b| b == b' ').filter(|word| !word.is_empty());
        let address = words.next().unwrap_or_default();
        let failed = words
            .next()
            .unwrap_or_default()
            .split(|&b| b == b',')
            .any(|flag| matches!(flag, b"UF" | b"UC" | b"UR" | b"URX"));
        let upgrade = words.next() == Some(b"upgrade");
        Self {
            address,
            failed,
            upgrade,
        }
    }
}
/// How long the control service may hold a state long-poll open.
pub const DEFAULT_POLL_TIMEOUT_MS: u64 = 25_000;
/// See [`PluginConfig::unreachable_after_ms`]: half of Envoy's default connect timeout here.
pub const DEFAULT_UNREACHABLE_AFTER_MS: u64 = 500;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Name of the routing header (lowercase HTTP token).
    #[serde(default = "default_routing_header")]
    pub routing_header: String,
    /// Name of the response header carrying the answering upstream (lowercase HTTP token).
    #[serde(
        default = "default_upstream_header",
        skip_serializing_if = "is_default_upstream_header"
    )]
    pub upstream_header: String,
    /// A state to start with (and keep, when there is no control service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<FilterState>,
    /// The control service to follow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<ControlSource>,
    /// A target counts as unreachable when Envoy retried a request on another target, or gave
    /// up on it, after waiting at least this long (a connect or acknowledgement timeout: the
    /// target vanished). Quicker failures (connection refused, a keep-alive connection the
    /// target had just closed) cost only Envoy's immediate retry, and mark nothing.
    #[serde(
        default = "default_unreachable_after",
        skip_serializing_if = "is_default_unreachable_after"
    )]
    pub unreachable_after_ms: u64,
}

/// Where the filter long-polls its state: the control service, through an Envoy cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlSource {
    /// The Envoy cluster that reaches the control service.
    pub cluster: String,
    /// `:authority` of the calls.
    #[serde(default = "default_authority")]
    pub authority: String,
    pub load_balancer: String,
    pub listener_port: u16,
    /// How long the control service may hold a poll open (it answers at once on a change).
    #[serde(default = "default_poll_timeout")]
    pub poll_timeout_ms: u64,
    /// Bearer token, when the control service requires one for its feed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

fn default_routing_header() -> String {
    DEFAULT_ROUTING_HEADER.to_owned()
}

fn default_upstream_header() -> String {
    DEFAULT_UPSTREAM_HEADER.to_owned()
}

fn is_default_upstream_header(name: &str) -> bool {
    name == DEFAULT_UPSTREAM_HEADER
}

fn default_unreachable_after() -> u64 {
    DEFAULT_UNREACHABLE_AFTER_MS
}

fn is_default_unreachable_after(ms: &u64) -> bool {
    *ms == DEFAULT_UNREACHABLE_AFTER_MS
}

fn default_authority() -> String {
    "sticky-control".to_owned()
}

fn default_poll_timeout() -> u64 {
    DEFAULT_POLL_TIMEOUT_MS
}

impl ControlSource {
    /// The `:path` of a poll, given the version the filter holds and the poller's id (random
    /// per filter VM: the control service counts who has a change before answering the API
    /// call that made it).
    pub fn path(&self, version: Option<u64>, poller: &str) -> String {
        let mut path = format!(
            "/v1/state/{}/{}?timeout_ms={}",
            self.load_balancer, self.listener_port, self.poll_timeout_ms
        );
        if let Some(version) = version {
            path.push_str("&version=");
            path.push_str(&version.to_string());
        }
        if !poller.is_empty() {
            path.push_str("&poller=");
            path.push_str(poller);
        }
        path
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PluginConfigError {
    #[error("plugin configuration is not valid JSON for the schema: {0}")]
    Json(#[from] JsonError),
    #[error("routing header `{0}` must be a lowercase HTTP token")]
    RoutingHeader(String),
    #[error("upstream header `{0}` must be a lowercase HTTP token, other than the routing header")]
    UpstreamHeader(String),
    #[error("control source: {0}")]
    Control(&'static str),
    #[error("unreachable_after_ms must be 1 to 600000, got {0}")]
    UnreachableAfter(u64),
}

fn is_header_token(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl PluginConfig {
    pub fn new(state: Option<FilterState>) -> Self {
        Self {
            routing_header: default_routing_header(),
            upstream_header: default_upstream_header(),
            state,
            control: None,
            unreachable_after_ms: DEFAULT_UNREACHABLE_AFTER_MS,
        }
    }

    /// The JSON Envoy passes as the plugin's `configuration`.
    pub fn to_json(&self) -> String {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses and validates the configuration. Empty configuration means all defaults.
    pub fn parse(bytes: &[u8]) -> Result<Self, PluginConfigError> {
        let config: PluginConfig = if bytes.iter().all(u8::is_ascii_whitespace) {
            PluginConfig::new(None)
        } else {
            serde_json::from_slice(bytes).map_err(JsonError::from)?
        };
        if !is_header_token(&config.routing_header) {
            return Err(PluginConfigError::RoutingHeader(config.routing_header));
        }
        if !is_header_token(&config.upstream_header) || config.upstream_header == config.routing_header {
            return Err(PluginConfigError::UpstreamHeader(config.upstream_header));
        }
        if !(1..=600_000).contains(&config.unreachable_after_ms) {
            return Err(PluginConfigError::UnreachableAfter(config.unreachable_after_ms));
        }
        if let Some(control) = &config.control {
            let name_ok = !control.load_balancer.is_empty()
                && control.load_balancer.len() <= 64
                && control
                    .load_balancer
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-');
            if !name_ok {
                return Err(PluginConfigError::Control(
                    "load_balancer must be letters, digits and hyphens",
                ));
            }
            if control.cluster.is_empty() || control.authority.is_empty() {
                return Err(PluginConfigError::Control("cluster and authority must not be empty"));
            }
            let visible = |s: &str| s.bytes().all(|b| b.is_ascii_graphic());
            if !visible(&control.authority) || control.token.as_deref().is_some_and(|t| !visible(t)) {
                return Err(PluginConfigError::Control("authority and token must be visible ASCII"));
            }
            if !(1..=600_000).contains(&control.poll_timeout_ms) {
                return Err(PluginConfigError::Control("poll_timeout_ms must be 1 to 600000"));
            }
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
        assert_eq!(config.upstream_header, DEFAULT_UPSTREAM_HEADER);
        assert!(config.state.is_none() && config.control.is_none());
    }

    #[test]
    fn control_source_builds_poll_paths() {
        let config = PluginConfig::parse(
            br#"{"control":{"cluster":"control","load_balancer":"terraform-balancer","listener_port":80,"poll_timeout_ms":1000}}"#,
        )
        .unwrap();
        let control = config.control.unwrap();
        assert_eq!(control.authority, "sticky-control");
        assert_eq!(
            control.path(None, ""),
            "/v1/state/terraform-balancer/80?timeout_ms=1000"
        );
        assert_eq!(
            control.path(Some(7), "0a1b"),
            "/v1/state/terraform-balancer/80?timeout_ms=1000&version=7&poller=0a1b"
        );
    }

    #[test]
    fn bad_configurations_are_refused() {
        for bad in [
            &b"{"[..],
            b"{\"routing_header\":\"X-Upper\"}",
            b"{\"routing_header\":\"a b\"}",
            b"{\"upstream_header\":\"X-Upper\"}",
            b"{\"upstream_header\":\"\"}",
            b"{\"upstream_header\":\"x-sticky-target\"}",
            b"{\"unknown\":1}",
            b"{\"control\":{\"cluster\":\"c\",\"load_balancer\":\"a/b\",\"listener_port\":80}}",
            b"{\"control\":{\"cluster\":\"\",\"load_balancer\":\"a\",\"listener_port\":80}}",
            b"{\"control\":{\"cluster\":\"c\",\"load_balancer\":\"a\",\"listener_port\":80,\"token\":\"a\\nb\"}}",
        ] {
            assert!(PluginConfig::parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
