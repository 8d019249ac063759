//! The one list of behaviour scenarios (`sticky_tests::scenarios`), run against real Envoy with
//! each shell of the filter (the wasm filter, the native dynamic module) and against the
//! testbed: all three must give the same results.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use sticky_core::{FilterState, PluginConfig, PolicyState};
use sticky_envoy::ShellKind;
use sticky_testbed::{Plugin, Testbed};
use sticky_testing::fixtures::{cookie_header, filter_state, named_targets, ring_state};
use sticky_tests::scenarios::{Answer, Proxy, scenarios};
use sticky_tests::{SESSION_HEADER, STICKY_COOKIE, Stack, TARGET_IDS};

struct Envoy(Stack);

impl Proxy for Envoy {
    fn get(&mut self, path: &str, cookies: &[(&str, &str)], routing_header: Option<&str>) -> Answer {
        let headers: Vec<(&str, &str)> = routing_header.map(|h| ("x-sticky-target", h)).into_iter().collect();
        let reply = self.0.get(path, cookies, &headers);
        Answer {
            target: reply.target(),
            set_cookies: reply.set_cookies,
            session: reply.session,
        }
    }

    fn get_with(&mut self, path: &str, headers: &[(&str, &str)]) -> Answer {
        let reply = self.0.get(path, &[], headers);
        Answer {
            target: reply.target(),
            set_cookies: reply.set_cookies,
            session: reply.session,
        }
    }

    fn wait(&mut self, duration: Duration) {
        std::thread::sleep(duration);
    }

    fn address_of(&self, id: &str) -> String {
        self.0.address_of(id)
    }
}

/// The testbed standing in for Envoy and the demo targets: the routing header's target if it is
/// one of the three, else round robin; `/login` and `/logout` answer like the demo target.
struct Simulated {
    plugin: Plugin,
    next: usize,
}

fn address(index: usize) -> String {
    format!("127.0.0.1:{}", 9001 + index)
}

impl Proxy for Simulated {
    fn get(&mut self, path: &str, cookies: &[(&str, &str)], routing_header: Option<&str>) -> Answer {
        let cookie = cookie_header(cookies);
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if !cookies.is_empty() {
            headers.push(("cookie", &cookie));
        }
        if let Some(routing) = routing_header {
            headers.push(("x-sticky-target", routing));
        }
        self.get_with(path, &headers)
    }

    fn get_with(&mut self, path: &str, request_headers: &[(&str, &str)]) -> Answer {
        let mut headers: Vec<(&str, &[u8])> = vec![(":path", path.as_bytes())];
        headers.extend(request_headers.iter().map(|(k, v)| (*k, v.as_bytes())));
        let stream = self.plugin.request(&headers).unwrap();
        // The routing header names its target twice (the second for Envoy's first retry).
        let routed = stream
            .header("x-sticky-target")
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.split(',').next())
            .and_then(|v| (0..3).find(|i| address(*i) == v));
        let index = routed.unwrap_or_else(|| {
            self.next += 1;
            self.next % 3
        });
        let set_cookie = match path {
            "/login" => Some(format!("session=s{}.x; HttpOnly; Path=/", self.next)),
            "/logout" => {
                Some("session=; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; HttpOnly; Path=/".to_owned())
            }
            _ => None,
        };
        let response_headers: Vec<(&str, &[u8])> = set_cookie.iter().map(|c| ("set-cookie", c.as_bytes())).collect();
        let response = self
            .plugin
            .respond(&stream, Some(&address(index)), &response_headers)
            .unwrap();
        Answer {
            target: TARGET_IDS[index].to_owned(),
            set_cookies: response.set_cookies(),
            session: response
                .header(SESSION_HEADER)
                .map(|v| String::from_utf8_lossy(v).into_owned()),
        }
    }

    fn wait(&mut self, duration: Duration) {
        self.plugin.advance(duration);
    }

    fn address_of(&self, id: &str) -> String {
        address(TARGET_IDS.iter().position(|t| *t == id).unwrap())
    }
}

fn simulated(policy: Option<PolicyState>, adjust: fn(&mut FilterState)) -> Simulated {
    let targets = named_targets(TARGET_IDS.iter().enumerate().map(|(i, id)| (*id, address(i))));
    let mut state = filter_state(policy, targets, ring_state(&[(1, 4)], 1));
    adjust(&mut state);
    let wasm = sticky_testing::artifacts::build_filter().unwrap_or_else(|e| panic!("{e}"));
    let testbed = Testbed::load(&wasm).unwrap();
    Simulated {
        plugin: testbed.plugin(&PluginConfig::new(Some(state)).to_json(), &[]).unwrap(),
        next: 0,
    }
}

#[test]
fn every_scenario_gives_the_same_result_on_both_shells_in_envoy_and_on_the_testbed() {
    let mut agreeing = 0;
    let list = scenarios();
    for scenario in &list {
        let on_wasm = (scenario.run)(&mut Envoy(Stack::start_on(
            ShellKind::Wasm,
            scenario.policy.clone(),
            scenario.adjust,
        )));
        let on_native = (scenario.run)(&mut Envoy(Stack::start_on(
            ShellKind::Native,
            scenario.policy.clone(),
            scenario.adjust,
        )));
        let on_testbed = (scenario.run)(&mut simulated(scenario.policy.clone(), scenario.adjust));
        println!(
            "{:<80} wasm: {on_wasm:?}  native: {on_native:?}  testbed: {on_testbed:?}",
            scenario.name
        );
        assert_eq!(on_wasm, Ok(()), "{} fails on Envoy with the wasm shell", scenario.name);
        assert_eq!(
            on_native,
            Ok(()),
            "{} fails on Envoy with the native shell",
            scenario.name
        );
        assert_eq!(
            on_testbed, on_wasm,
            "{}: the testbed disagrees with Envoy",
            scenario.name
        );
        agreeing += 1;
    }
    println!(
        "{agreeing} of {} scenarios agree between Envoy (wasm), Envoy (native) and the testbed",
        list.len()
    );
    let _ = STICKY_COOKIE;
}
