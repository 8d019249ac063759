//! The filter's `.wasm` (the very artifact Envoy loads) driven through the testbed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::OnceLock;
use std::time::Duration;

use sticky_core::{FilterState, PluginConfig, PolicyState};
use sticky_testbed::{Plugin, Testbed};
use sticky_testing::fixtures::{self, app_cookie_policy, filter_state, lb_cookie_policy, ring_state, targets};

const T1: &str = "127.0.0.1:9001";
const T2: &str = "127.0.0.1:9002";
const T3: &str = "127.0.0.1:9003";
const ROUTING: &str = "x-sticky-target";

fn testbed() -> &'static Testbed {
    static TESTBED: OnceLock<Testbed> = OnceLock::new();
    TESTBED.get_or_init(|| {
        let wasm = sticky_testing::artifacts::build_filter().unwrap_or_else(|e| panic!("{e}"));
        Testbed::load(&wasm).unwrap()
    })
}

fn state(policy: Option<PolicyState>, version: u64) -> FilterState {
    FilterState {
        version,
        ..filter_state(policy, targets(&[T1, T2, T3], &[]), ring_state(&[(1, 7)], 1))
    }
}

/// An unpinned request goes where the filter's round robin over the healthy targets says.
/// The target a routing header names: its address twice (the second for Envoy's first retry).
fn routed_target(header: &[u8]) -> &[u8] {
    let text = std::str::from_utf8(header).expect("an ASCII routing header");
    let (first, second) = text.split_once(',').expect("the address twice");
    assert_eq!(first, second, "{text}");
    first.as_bytes()
}

fn balanced_to(stream_header: Option<&[u8]>, healthy: &[&str]) -> bool {
    stream_header.is_some_and(|v| healthy.iter().any(|t| t.as_bytes() == v))
}

fn plugin(state: FilterState) -> Plugin {
    testbed()
        .plugin(&PluginConfig::new(Some(state)).to_json(), &[])
        .unwrap()
}

fn cookie_header(cookies: &[(&str, &str)]) -> Vec<u8> {
    fixtures::cookie_header(cookies).into_bytes()
}

#[test]
fn lb_cookie_assigns_then_pins_with_six_host_calls_on_a_sticky_hit() {
    let mut plugin = plugin(state(Some(lb_cookie_policy(600)), 1));
    let stream = plugin.request(&[(":path", b"/")]).unwrap();
    assert!(
        balanced_to(stream.header(ROUTING).map(routed_target), &[T1, T2, T3]),
        "unpinned: the filter balances"
    );
    let response = plugin.respond(&stream, Some(T2), &[]).unwrap();
    let cookie = response.cookie("AWSELB").expect("a cookie naming the answering target");
    assert_eq!(plugin.counter("sticky.assigned"), 1);

    plugin.reset_host_calls();
    let header = cookie_header(&[("AWSELB", &cookie)]);
    let stream = plugin.request(&[(":path", b"/"), ("cookie", &header)]).unwrap();
    assert_eq!(stream.header(ROUTING).map(routed_target), Some(T2.as_bytes()));
    let response = plugin.respond(&stream, Some(T2), &[]).unwrap();
    assert!(response.set_cookies().is_empty(), "a fresh cookie is not refreshed");
    assert!(
        response.header("x-sticky-upstream").is_none(),
        "the upstream header never reaches the client"
    );
    // Six cheap calls: in Envoy, reading and removing the route's upstream header costs less
    // than the one `upstream.address` property read it replaced (see README, Benchmarks).
    assert_eq!(
        plugin.host_calls(),
        6,
        "time, Cookie, pinned counter, routing header; upstream header read and removed"
    );
    assert_eq!(plugin.counter("sticky.pinned"), 1);
    assert!(
        plugin.unsupported_calls().is_empty(),
        "{:?}",
        plugin.unsupported_calls()
    );
}

#[test]
fn client_routing_headers_are_removed_or_replaced() {
    let mut plugin = plugin(state(Some(lb_cookie_policy(600)), 1));
    let spoofed = [(":path", &b"/"[..]), (ROUTING, b"10.9.9.9:1"), (ROUTING, b"10.9.9.9:1")];
    let stream = plugin.request(&spoofed).unwrap();
    assert_eq!(stream.header_count(ROUTING), 1, "unpinned: every copy replaced");
    assert!(
        balanced_to(stream.header(ROUTING).map(routed_target), &[T1, T2, T3]),
        "by the filter's choice"
    );
    let cookie = plugin
        .respond(&stream, Some(T1), &[])
        .unwrap()
        .cookie("AWSELB")
        .unwrap();
    let header = cookie_header(&[("AWSELB", &cookie)]);
    let stream = plugin
        .request(&[(ROUTING, T3.as_bytes()), ("cookie", &header), (ROUTING, b"1.2.3.4:5")])
        .unwrap();
    assert_eq!(stream.header_count(ROUTING), 1);
    assert_eq!(
        stream.header(ROUTING).map(routed_target),
        Some(T1.as_bytes()),
        "pinned: only the filter's value"
    );
}

#[test]
fn an_expired_cookie_gets_a_new_target_and_cookie() {
    let mut plugin = plugin(state(Some(lb_cookie_policy(60)), 1));
    let stream = plugin.request(&[]).unwrap();
    let cookie = plugin
        .respond(&stream, Some(T1), &[])
        .unwrap()
        .cookie("AWSELB")
        .unwrap();
    plugin.advance(Duration::from_secs(61));
    let header = cookie_header(&[("AWSELB", &cookie)]);
    let stream = plugin.request(&[("cookie", &header)]).unwrap();
    assert!(
        balanced_to(stream.header(ROUTING).map(routed_target), &[T1, T2, T3]),
        "expired: balanced again"
    );
    let renewed = plugin
        .respond(&stream, Some(T3), &[])
        .unwrap()
        .cookie("AWSELB")
        .unwrap();
    assert_ne!(renewed, cookie);
    assert_eq!(plugin.counter("sticky.rejected.expired"), 1);
}

#[test]
fn the_filter_follows_the_control_service_and_fails_static() {
    let config = r#"{"control":{"cluster":"control","load_balancer":"terraform-balancer","listener_port":80,"poll_timeout_ms":25000}}"#;
    let mut plugin = testbed().plugin(config, &["control"]).unwrap();
    assert_eq!(plugin.tick_period(), Some(Duration::from_millis(100)));
    // Before any state: pass-through, client routing headers still removed.
    let stream = plugin.request(&[(ROUTING, T1.as_bytes())]).unwrap();
    assert_eq!(stream.header(ROUTING).map(routed_target), None);
    assert_eq!(plugin.counter("sticky.no_state"), 1);

    plugin.tick().unwrap();
    let calls = plugin.take_http_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].upstream, "control");
    let path = calls[0].header(":path").unwrap_or_default().to_owned();
    let (poller, counts) = path
        .strip_prefix("/v1/state/terraform-balancer/80?timeout_ms=25000&poller=")
        .and_then(|rest| rest.split_once("&counts="))
        .unwrap_or_else(|| panic!("{path}"));
    assert!(
        poller.len() == 16 && poller.bytes().all(|b| b.is_ascii_hexdigit()),
        "{path}"
    );
    // The poll reports what the listener counted: here the request that came before any state.
    let counts = sticky_core::ListenerTally::parse_report(counts).unwrap_or_else(|| panic!("{path}"));
    assert_eq!(counts[sticky_core::Counter::NoState.index()], 1, "{path}");
    assert_eq!(counts.iter().sum::<u64>(), 1, "{path}");
    plugin.tick().unwrap();
    assert!(plugin.take_http_calls().is_empty(), "one poll in flight");

    let json = serde_json::to_vec(&state(Some(lb_cookie_policy(600)), 7)).unwrap();
    plugin.answer_http_call(&calls[0], 200, &json).unwrap();
    assert_eq!(plugin.counter("sticky.state_updates"), 1);
    let next = plugin.take_http_calls();
    assert_eq!(
        next[0].header(":path").map(str::to_owned),
        Some(format!(
            "/v1/state/terraform-balancer/80?timeout_ms=25000&version=7&poller={poller}&counts=1,1{}",
            ",0".repeat(sticky_core::COUNTERS - 2)
        )),
        "the next poll at once, same poller id, the new state counted"
    );
    let stream = plugin.request(&[]).unwrap();
    let cookie = plugin
        .respond(&stream, Some(T2), &[])
        .unwrap()
        .cookie("AWSELB")
        .expect("the policy applies");

    // The control service fails: the filter keeps its state and backs off.
    plugin.answer_http_call(&next[0], 503, b"no healthy upstream").unwrap();
    assert_eq!(plugin.counter("sticky.control_errors"), 1);
    let header = cookie_header(&[("AWSELB", &cookie)]);
    assert_eq!(
        plugin
            .request(&[("cookie", &header)])
            .unwrap()
            .header(ROUTING)
            .map(routed_target),
        Some(T2.as_bytes()),
        "fail static"
    );
    plugin.tick().unwrap();
    assert!(plugin.take_http_calls().is_empty(), "backing off");
    plugin.advance(Duration::from_millis(150));
    plugin.tick().unwrap();
    let retry = plugin.take_http_calls();
    assert_eq!(retry.len(), 1, "retried after the backoff");
    // A state that does not validate is refused: the filter keeps the one it has.
    plugin.answer_http_call(&retry[0], 200, b"{not json").unwrap();
    assert_eq!(plugin.counter("sticky.control_errors"), 2);
    assert_eq!(
        plugin
            .request(&[("cookie", &header)])
            .unwrap()
            .header(ROUTING)
            .map(routed_target),
        Some(T2.as_bytes())
    );
    assert!(
        plugin.logs().iter().any(|l| l.contains("refusing state")),
        "{:?}",
        plugin.logs()
    );
}

#[test]
fn app_cookie_failover_through_a_state_update() {
    let policy = Some(app_cookie_policy(None));
    let config = r#"{"control":{"cluster":"control","load_balancer":"terraform-balancer","listener_port":80}}"#;
    let mut plugin = testbed().plugin(config, &["control"]).unwrap();
    plugin.tick().unwrap();
    let call = plugin.take_http_calls().remove(0);
    plugin
        .answer_http_call(&call, 200, &serde_json::to_vec(&state(policy.clone(), 1)).unwrap())
        .unwrap();

    let stream = plugin.request(&[]).unwrap();
    let login = plugin
        .respond(&stream, Some(T1), &[("set-cookie", b"session=abc; HttpOnly; Path=/")])
        .unwrap();
    assert_eq!(
        login.set_cookies()[0],
        "session=abc; HttpOnly; Path=/",
        "the app cookie passes untouched"
    );
    let sticky = login.cookie("AWSELB").unwrap();
    let cookies = cookie_header(&[("session", "abc"), ("AWSELB", &sticky)]);
    assert_eq!(
        plugin
            .request(&[("cookie", &cookies)])
            .unwrap()
            .header(ROUTING)
            .map(routed_target),
        Some(T1.as_bytes())
    );

    // i-1 turns unhealthy: the next answer comes from i-3 and the cookie is rewritten.
    let mut failed = state(policy, 2);
    failed.targets[0].healthy = false;
    let call = plugin.take_http_calls().remove(0);
    plugin
        .answer_http_call(&call, 200, &serde_json::to_vec(&failed).unwrap())
        .unwrap();
    let stream = plugin.request(&[("cookie", &cookies)]).unwrap();
    assert!(
        balanced_to(stream.header(ROUTING).map(routed_target), &[T2, T3]),
        "never the unhealthy i-1"
    );
    let moved = plugin
        .respond(&stream, Some(T3), &[])
        .unwrap()
        .cookie("AWSELB")
        .expect("rewritten");
    let cookies = cookie_header(&[("session", "abc"), ("AWSELB", &moved)]);
    assert_eq!(
        plugin
            .request(&[("cookie", &cookies)])
            .unwrap()
            .header(ROUTING)
            .map(routed_target),
        Some(T3.as_bytes())
    );
    assert_eq!(plugin.counter("sticky.repinned"), 1);
}
