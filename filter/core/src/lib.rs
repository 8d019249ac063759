//! Pure core of the sticky-session filter (docs/design.md §2 and §3): the state schema shared with the
//! control service, the cookie codec and key ring, the policy model, and the stickiness
//! decisions, and the glue every shell shares (one exchange through the filter, following the
//! control service, the counters). No I/O and no host calls: the shells provide them.

// Input decides every index here: a slice out of bounds would panic the host's request.
#![deny(clippy::indexing_slicing)]
#![cfg_attr(test, allow(clippy::indexing_slicing))]

pub mod cache;
pub mod codec;
pub mod cookies;
pub mod counters;
pub mod error;
pub mod exchange;
pub mod listener;
pub mod plugin;
pub mod poll;
pub mod state;

#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;

pub use cache::CookieCache;
pub use codec::{Binding, KeyRing, PolicyKind};
pub use counters::{COUNTERS, Counter, ListenerTally};
pub use error::{JsonError, Rejection, StateError};
pub use exchange::{Exchange, ExchangeHost, ExchangeSettings};
pub use listener::{
    CompiledListener, CookieInspection, CookieStatus, RequestDecision, ResponseDecision, ResponseOutcome,
    SealedSession, SessionCarriers, Target, TargetIndex, UNREACHABLE_HOLD_SECONDS, Unreachable, canonical_address,
};
pub use plugin::{ControlSource, PluginConfig, PluginConfigError, UpstreamReport};
pub use poll::{Follower, PollAnswer, PollRequest, PollSchedule};
pub use state::{CookieSettings, FilterState, KeyRingState, KeyState, PolicyState, SameSite, TargetState};
