//! Fixtures for tests of anything that handles a [`FilterState`]: the core's own tables, the
//! testbed's, the end-to-end tests and the benchmarks. Built with the `testing` feature (and in
//! the core's unit tests); `sticky-testing` re-exports it beside the workspace's other test
//! support.

#![allow(clippy::expect_used)]

use crate::codec::KeyRing;
use crate::state::{CookieSettings, FilterState, KeyRingState, KeyState, PolicyState, TargetState};

/// The load balancer the fixtures name: the seed deployment's.
pub const LOAD_BALANCER: &str = "terraform-balancer";

/// The state of listener 80 of [`LOAD_BALANCER`] at version 1, with the default cookie.
pub fn filter_state(policy: Option<PolicyState>, targets: Vec<TargetState>, keys: KeyRingState) -> FilterState {
    FilterState {
        version: 1,
        load_balancer: LOAD_BALANCER.to_owned(),
        listener_port: 80,
        policy,
        cookie: CookieSettings::default(),
        targets,
        draining_endpoints: Vec::new(),
        session_header: None,
        keys,
    }
}

/// Targets `i-1`, `i-2`, … at `addresses`, healthy unless listed in `unhealthy` (by address).
pub fn targets(addresses: &[&str], unhealthy: &[&str]) -> Vec<TargetState> {
    addresses
        .iter()
        .enumerate()
        .map(|(i, address)| TargetState {
            id: format!("i-{}", i + 1),
            address: (*address).to_owned(),
            healthy: !unhealthy.contains(address),
            draining: false,
        })
        .collect()
}

/// Healthy targets with these ids and addresses.
pub fn named_targets<I: Into<String>, A: ToString>(targets: impl IntoIterator<Item = (I, A)>) -> Vec<TargetState> {
    targets
        .into_iter()
        .map(|(id, address)| TargetState {
            id: id.into(),
            address: address.to_string(),
            healthy: true,
            draining: false,
        })
        .collect()
}

/// Duration-based stickiness for `period` seconds (0: a browser-session cookie).
pub fn lb_cookie_policy(period: u64) -> PolicyState {
    PolicyState::LbCookie {
        expiration_period: period,
        max_lifetime: 0,
    }
}

/// Application-based stickiness following the app's cookie `session`.
pub fn app_cookie_policy(duration_seconds: Option<u64>) -> PolicyState {
    PolicyState::AppCookie {
        app_cookie_name: "session".to_owned(),
        duration_seconds,
    }
}

/// A key ring state of `(id, fill byte)` keys; the fill byte makes each secret distinct.
pub fn ring_state(keys: &[(u16, u8)], active: u16) -> KeyRingState {
    KeyRingState {
        active,
        keys: keys
            .iter()
            .map(|&(id, fill)| KeyState::from_secret(id, &[fill; 32]))
            .collect(),
    }
}

/// [`ring_state`], compiled.
pub fn key_ring(keys: &[(u16, u8)], active: u16) -> KeyRing {
    KeyRing::from_state(&ring_state(keys, active)).expect("a fixture key ring is valid")
}

/// A request `Cookie` header carrying `cookies` (name, value), in order.
pub fn cookie_header(cookies: &[(&str, &str)]) -> String {
    cookies
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The value cookie `name` gets in a response's `Set-Cookie` headers, if one sets it.
pub fn cookie_set<'a>(set_cookies: impl IntoIterator<Item = &'a str>, name: &str) -> Option<String> {
    set_cookies.into_iter().find_map(|header| {
        let pair = header.split(';').next()?;
        let (cookie, value) = pair.split_once('=')?;
        (cookie.trim() == name).then(|| value.trim().to_owned())
    })
}
