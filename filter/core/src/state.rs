//! The filter's state: the one schema shared by the filter (which reads it) and the control
//! service (which serves it). Serialised as JSON. Validation happens once, when the state is
//! compiled into [`crate::CompiledListener`]; nothing here is trusted before that.

use serde::{Deserialize, Serialize};

/// Everything a filter needs to make stickiness decisions for one listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterState {
    /// Monotonic version of this state; a newer state has a larger version.
    pub version: u64,
    /// Name of the load balancer the listener belongs to (bound into every cookie).
    pub load_balancer: String,
    /// The listener's load balancer port (bound into every cookie).
    pub listener_port: u16,
    /// The stickiness policy set on the listener, if any.
    #[serde(default)]
    pub policy: Option<PolicyState>,
    /// Attributes of the stickiness cookie the filter issues.
    #[serde(default)]
    pub cookie: CookieSettings,
    /// Registered targets with their health.
    #[serde(default)]
    pub targets: Vec<TargetState>,
    /// Addresses (`ip:port`) of targets deregistered with connection draining but not session
    /// draining: no request goes to them, yet Envoy keeps them (`DRAINING`) until
    /// ConnectionDraining.Timeout, and so does every WebSocket already open to them. A
    /// WebSocket whose target is in neither list is closed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub draining_endpoints: Vec<String>,
    /// Sessions for clients without cookies: the request header carrying the sealed session,
    /// returned in the same response header when a session starts or moves (lowercase).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_header: Option<String>,
    /// Keys sealing and opening stickiness cookies.
    pub keys: KeyRingState,
}

/// A stickiness policy, as set on a listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PolicyState {
    /// Duration-based stickiness (CreateLBCookieStickinessPolicy).
    LbCookie {
        /// CookieExpirationPeriod in seconds: the idle time (sliding); 0 means a
        /// browser-session cookie.
        #[serde(default)]
        expiration_period: u64,
        /// Absolute lifetime in seconds, counted from the session's start (sealed in the
        /// cookie), never extended; 0: none.
        #[serde(default, skip_serializing_if = "is_zero")]
        max_lifetime: u64,
    },
    /// Application-based stickiness (CreateAppCookieStickinessPolicy).
    AppCookie {
        /// Name of the application's cookie (e.g. Flask's `session`).
        app_cookie_name: String,
        /// Explicit lifetime of the stickiness cookie; when absent it follows the app cookie.
        #[serde(default)]
        duration_seconds: Option<u64>,
    },
}

/// A registered target. `id` is opaque (an instance id): cookies carry it, never the address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetState {
    pub id: String,
    /// `ip:port`, exactly as the Envoy cluster knows the endpoint.
    pub address: String,
    pub healthy: bool,
    /// Deregistered with session draining: the sessions already on it keep going to it; no new
    /// session is placed on it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub draining: bool,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// Attributes of the stickiness cookie.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CookieSettings {
    /// Cookie name; classic ELB's is `AWSELB`.
    pub name: String,
    pub path: String,
    /// `Domain` attribute; absent: a host-only cookie.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    pub secure: bool,
    pub http_only: bool,
    pub same_site: SameSite,
    /// `Partitioned` (CHIPS); needs `secure`.
    #[serde(skip_serializing_if = "is_false")]
    pub partitioned: bool,
    /// ALB's CORS twin: a second cookie, `<name>CORS`, with `SameSite=None; Secure`, issued
    /// beside the first; a request may carry either (the twin is tried first).
    #[serde(skip_serializing_if = "is_false")]
    pub cors_twin: bool,
}

impl CookieSettings {
    /// The name of the CORS twin of a cookie named `name`.
    pub fn twin_name(name: &str) -> String {
        format!("{name}CORS")
    }
}

impl Default for CookieSettings {
    fn default() -> Self {
        Self {
            name: "AWSELB".to_owned(),
            path: "/".to_owned(),
            domain: None,
            secure: false,
            http_only: true,
            same_site: SameSite::Lax,
            partitioned: false,
            cors_twin: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SameSite {
    Strict,
    Lax,
    None,
}

/// The key ring as delivered: the active key seals, every listed key opens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRingState {
    /// Id of the key new cookies are sealed with.
    pub active: u16,
    pub keys: Vec<KeyState>,
}

/// One AES-256-GCM key. `secret` is 32 bytes, base64url without padding.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyState {
    pub id: u16,
    pub secret: String,
}

/// Key material never appears in logs, even in debug output.
impl std::fmt::Debug for KeyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyState")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl KeyState {
    /// Wraps 32 bytes of key material in its wire form.
    pub fn from_secret(id: u16, secret: &[u8; 32]) -> Self {
        use base64::Engine;
        Self {
            id,
            secret: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret),
        }
    }
}
