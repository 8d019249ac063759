//! The native shell through its own hooks, with a fake Envoy (`fake_host`): what it does to the
//! headers and counters of an exchange. Envoy itself runs it in `tests/tests/scenarios.rs` and
//! `tests/tests/native_module.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod fake_host;

use fake_host::FakeEnvoy;
use sticky_core::PluginConfig;
use sticky_core::testing::{filter_state, lb_cookie_policy, ring_state, targets};

const T1: &str = "127.0.0.1:9001";
const T2: &str = "127.0.0.1:9002";
const T3: &str = "127.0.0.1:9003";

fn envoy() -> FakeEnvoy {
    let state = filter_state(
        Some(lb_cookie_policy(600)),
        targets(&[T1, T2, T3], &[]),
        ring_state(&[(1, 7)], 1),
    );
    FakeEnvoy::load(&PluginConfig::new(Some(state)).to_json()).expect("the shell takes the configuration")
}

#[test]
fn a_bad_configuration_is_refused() {
    assert!(FakeEnvoy::load("{not json").is_none());
    assert!(FakeEnvoy::load(r#"{"routing_header": "x", "surprise": 1}"#).is_none());
}

#[test]
fn the_first_answer_gets_a_cookie_that_then_pins_and_client_routing_never_counts() {
    let envoy = envoy();
    let first = envoy.exchange(
        &[(":path", b"/"), ("x-sticky-target", b"10.9.9.9:80")],
        &[("x-sticky-upstream", b"127.0.0.1:9002 -")],
    );
    let routed = first.request_values("x-sticky-target");
    assert_eq!(routed.len(), 1, "one routing header, the filter's");
    assert_ne!(routed[0], b"10.9.9.9:80", "the client's copy never counts");
    assert!(
        first.response_values("x-sticky-upstream").is_empty(),
        "never reaches the client"
    );
    let set_cookie = first.response_values("set-cookie");
    assert_eq!(set_cookie.len(), 1);
    let cookie = String::from_utf8_lossy(set_cookie[0])
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(envoy.counter("sticky.assigned"), 1);

    let hit = envoy.exchange(
        &[(":path", b"/"), ("cookie", cookie.as_bytes())],
        &[("x-sticky-upstream", b"127.0.0.1:9002 -"), ("set-cookie", b"other=1")],
    );
    // The target twice: Envoy's first retry goes to it again.
    assert_eq!(hit.request_values("x-sticky-target"), [format!("{T2},{T2}").as_bytes()]);
    assert_eq!(
        hit.response_values("set-cookie"),
        [b"other=1".as_slice()],
        "a fresh cookie is not reissued"
    );
    assert_eq!(envoy.counter("sticky.pinned"), 1);
    assert_eq!(envoy.counter("sticky.panics"), 0);
}

#[test]
fn a_forged_cookie_is_counted_and_replaced() {
    let envoy = envoy();
    let reply = envoy.exchange(
        &[(
            "cookie",
            b"AWSELB=AQABAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        )],
        &[("x-sticky-upstream", b"127.0.0.1:9001 -")],
    );
    assert_eq!(reply.response_values("set-cookie").len(), 1, "a new session");
    let rejected: u64 = ["forged", "malformed", "unknown_key"]
        .iter()
        .map(|r| envoy.counter(&format!("sticky.rejected.{r}")))
        .sum();
    assert_eq!(rejected, 1);
}
