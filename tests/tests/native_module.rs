//! Envoy's dynamic modules (the native data plane beside the wasm filter): Envoy 1.40.0 loads
//! this workspace's modules and proxies through them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;

use sticky_demo_target::DemoTargets;
use sticky_envoy::{EnvoyBootstrap, EnvoyProcess, HttpFilters};
use sticky_testing::artifacts::{build_filter, build_noop_module};
use sticky_testing::fixtures::{filter_state, named_targets};
use sticky_testing::random_key_ring;
use sticky_tests::{agent, get};

#[test]
fn envoy_loads_the_do_nothing_module_and_proxies_through_it() {
    let module = build_noop_module().unwrap_or_else(|e| panic!("{e}"));
    let targets = DemoTargets::start(&[("i-1", 0), ("i-2", 0), ("i-3", 0)]).unwrap();
    let state = filter_state(None, named_targets(targets.addresses()), random_key_ring(1).unwrap());
    let mut bootstrap = EnvoyBootstrap::sticky(build_filter().unwrap(), state).unwrap();
    bootstrap.filters = HttpFilters::NoopModule { module };
    let dir = tempfile::tempdir().unwrap();
    // Envoy refuses the configuration (and does not start) unless it loaded the module and
    // found every hook it requires.
    let envoy = EnvoyProcess::start(&bootstrap, dir.path(), 1).unwrap_or_else(|e| panic!("{e}"));
    let agent = agent();
    let mut seen = HashSet::new();
    for _ in 0..12 {
        let reply = get(&agent, &envoy.url(), "/", &[], &[]).unwrap_or_else(|e| panic!("{e}\n{}", envoy.log_tail()));
        assert_eq!(reply.status, 200);
        assert!(reply.set_cookie("AWSELB").is_none(), "the module issues nothing");
        seen.insert(reply.target());
    }
    assert_eq!(
        seen.len(),
        3,
        "requests go on to the router and the cluster's balancing: {seen:?}"
    );
}
