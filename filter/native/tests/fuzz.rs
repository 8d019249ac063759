//! Fuzzing the native shell's header handling through its own hooks, with a fake Envoy
//! (`fake_host`): the same corpus as the wasm filter's (`fuzz/corpus/headers-lb/`,
//! `headers-app/`: `cookie \0 routing header \0 set-cookie \0 upstream`), under both policies.
//! A panic would be caught by the shell and counted (`sticky.panics`): the test requires none.
//! Bounded: `STICKY_FUZZ_SECONDS` (default 10) per policy.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod fake_host;

use fake_host::FakeEnvoy;
use sticky_core::testing::{app_cookie_policy, filter_state, lb_cookie_policy, ring_state, targets};
use sticky_core::{FilterState, PluginConfig, PolicyState};

fn state(policy: PolicyState) -> FilterState {
    let addresses = ["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"];
    filter_state(
        Some(policy),
        targets(&addresses, &addresses[2..]),
        ring_state(&[(1, 3)], 1),
    )
}

#[test]
fn fuzz_the_native_shell_with_arbitrary_header_bytes() {
    let seconds = sticky_fuzz::budget(10);
    let mut executions = 0;
    for (name, policy) in [("lb", lb_cookie_policy(600)), ("app", app_cookie_policy(None))] {
        let envoy = FakeEnvoy::load(&PluginConfig::new(Some(state(policy))).to_json()).unwrap();
        let valid: Vec<String> = ["127.0.0.1:9001 -", "127.0.0.1:9002 -"]
            .iter()
            .filter_map(|upstream| {
                let reply = envoy.exchange(
                    &[],
                    &[("x-sticky-upstream", upstream.as_bytes()), ("set-cookie", b"session=s")],
                );
                let set = reply.response_values("set-cookie");
                set.iter()
                    .map(|c| String::from_utf8_lossy(c).into_owned())
                    .find(|c| c.starts_with("AWSELB="))
                    .and_then(|c| c.split(';').next().map(|v| v["AWSELB=".len()..].to_owned()))
            })
            .collect();
        assert!(!valid.is_empty(), "the shell issues cookies");
        let seeds: Vec<Vec<u8>> = valid
            .iter()
            .map(|v| {
                format!("AWSELB={v}; session=s\u{0}127.0.0.1:9002\u{0}session=t; Max-Age=60\u{0}127.0.0.1:9001")
                    .into_bytes()
            })
            .collect();
        let report = sticky_fuzz::run_for(&format!("headers-{name}"), seconds, &seeds, |input| {
            let mut fields = input.split(|b| *b == 0);
            let (cookie, routing, set_cookie) = (
                fields.next().unwrap_or_default(),
                fields.next().unwrap_or_default(),
                fields.next().unwrap_or_default(),
            );
            let mut response: Vec<(&str, &[u8])> = vec![("set-cookie", set_cookie)];
            if let Some(upstream) = fields.next() {
                response.push(("x-sticky-upstream", upstream));
            }
            let reply = envoy.exchange(&[("cookie", cookie), ("x-sticky-target", routing)], &response);
            assert!(reply.request_values("x-sticky-target").len() <= 1);
            assert!(reply.response_values("x-sticky-upstream").is_empty());
            assert_eq!(envoy.counter("sticky.panics"), 0, "no hook panicked");
        });
        executions += report.executions;
        // Panics are counted by the next stream: one more to be sure none was caught.
        envoy.exchange(&[], &[]);
        assert_eq!(envoy.counter("sticky.panics"), 0);
    }
    println!("fuzz (native shell): {executions} executions, 0 panics");
}
