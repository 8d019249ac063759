//! Errors of the core: why a cookie is not honoured, and why a state is refused.

use thiserror::Error;

/// Why a stickiness cookie was not honoured. Never an error to the client: the request is
/// treated as carrying no cookie. Each reason has its own counter (declaration order is
/// [`Rejection::ALL`]'s and the counters').
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Error)]
pub enum Rejection {
    #[error("cookie is not a well-formed sealed value")]
    Malformed,
    #[error("cookie has an unsupported format version")]
    UnsupportedVersion,
    #[error("cookie was sealed with a key the ring does not hold")]
    UnknownKey,
    #[error("cookie failed authentication (tampered, wrong key, or bound elsewhere)")]
    Forged,
    #[error("cookie has expired")]
    Expired,
    #[error("cookie names a target that is not registered")]
    UnknownTarget,
    #[error("cookie names a target that is unhealthy")]
    UnhealthyTarget,
    #[error("cookie names a target Envoy could not reach a moment ago")]
    UnreachableTarget,
}

impl Rejection {
    pub const ALL: [Rejection; 8] = [
        Rejection::Malformed,
        Rejection::UnsupportedVersion,
        Rejection::UnknownKey,
        Rejection::Forged,
        Rejection::Expired,
        Rejection::UnknownTarget,
        Rejection::UnhealthyTarget,
        Rejection::UnreachableTarget,
    ];

    /// Stable snake_case name, used in metric names.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Malformed => "malformed",
            Rejection::UnsupportedVersion => "unsupported_version",
            Rejection::UnknownKey => "unknown_key",
            Rejection::Forged => "forged",
            Rejection::Expired => "expired",
            Rejection::UnknownTarget => "unknown_target",
            Rejection::UnhealthyTarget => "unhealthy_target",
            Rejection::UnreachableTarget => "unreachable_target",
        }
    }

    /// The cookie was authentic and unexpired, but its target cannot take the request:
    /// the session must move (and, for app cookies, the cookie be rewritten).
    pub fn is_target_gone(self) -> bool {
        matches!(
            self,
            Rejection::UnknownTarget | Rejection::UnhealthyTarget | Rejection::UnreachableTarget
        )
    }
}

/// Where and how a JSON document failed to parse. Position and category only: formatting
/// serde_json's full message would pull float formatting into the filter's artifact.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{category} error at line {line}, column {column}")]
pub struct JsonError {
    pub category: &'static str,
    pub line: usize,
    pub column: usize,
}

impl From<serde_json::Error> for JsonError {
    fn from(e: serde_json::Error) -> Self {
        let category = match e.classify() {
            serde_json::error::Category::Io => "i/o",
            serde_json::error::Category::Syntax => "syntax",
            serde_json::error::Category::Data => "schema",
            serde_json::error::Category::Eof => "truncation",
        };
        Self {
            category,
            line: e.line(),
            column: e.column(),
        }
    }
}

/// Why a filter state was refused. The filter then keeps the state it had.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StateError {
    #[error("state is not valid JSON for the schema: {0}")]
    Json(#[from] JsonError),
    #[error("load balancer name must be 1 to 64 bytes")]
    LoadBalancerName,
    #[error("cookie name `{0}` is not an RFC 6265 token")]
    CookieName(String),
    #[error("cookie path `{0}` must start with '/' and hold no ';', control or non-ASCII characters")]
    CookiePath(String),
    #[error("cookie domain `{0}` is not a host name")]
    CookieDomain(String),
    #[error("the Partitioned attribute requires the Secure attribute")]
    PartitionedWithoutSecure,
    #[error("session header `{0}` is not a lowercase header name the filter may use")]
    SessionHeader(String),
    #[error("SameSite=None requires the Secure attribute")]
    SameSiteNoneWithoutSecure,
    #[error("app cookie name equals the stickiness cookie name `{0}`")]
    CookieNameClash(String),
    #[error("target id `{0}` must be 1 to 64 visible ASCII characters")]
    TargetId(String),
    #[error("target `{id}` has address `{address}`, which is not ip:port")]
    TargetAddress { id: String, address: String },
    #[error("target id `{0}` is listed twice")]
    DuplicateTargetId(String),
    #[error("target address `{0}` is listed twice")]
    DuplicateTargetAddress(String),
    #[error("draining endpoint `{0}` is not ip:port")]
    DrainingEndpoint(String),
    #[error("key {0} has no 32-byte base64url secret")]
    KeySecret(u16),
    #[error("key id {0} is listed twice")]
    DuplicateKeyId(u16),
    #[error("active key {0} is not in the key ring")]
    ActiveKeyMissing(u16),
}
