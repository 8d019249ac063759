//! Envoy's dynamic modules (the native data plane beside the wasm filter): Envoy 1.40.0 loads
//! this workspace's modules and proxies through them, and the two shells of the filter are one
//! product: a cookie issued by either is honoured by the other.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;

use sticky_demo_target::DemoTargets;
use sticky_envoy::{EnvoyBootstrap, EnvoyProcess, HttpFilters, ShellKind};
use sticky_testing::artifacts::build_noop_module;
use sticky_testing::fixtures::{app_cookie_policy, filter_state, lb_cookie_policy, named_targets};
use sticky_testing::random_key_ring;
use sticky_tests::{agent, get};

#[test]
fn envoy_loads_the_do_nothing_module_and_proxies_through_it() {
    let module = build_noop_module().unwrap_or_else(|e| panic!("{e}"));
    let targets = DemoTargets::start(&[("i-1", 0), ("i-2", 0), ("i-3", 0)]).unwrap();
    let state = filter_state(None, named_targets(targets.addresses()), random_key_ring(1).unwrap());
    let mut bootstrap = EnvoyBootstrap::sticky(ShellKind::Wasm.build().unwrap(), state).unwrap();
    bootstrap.filters = HttpFilters::NoopModule {
        module,
        sticky_routing: false,
    };
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

/// Two Envoys in front of the same targets with the same state (one key ring), one per shell.
fn both_shells(policy: sticky_core::PolicyState) -> (DemoTargets, [(ShellKind, EnvoyProcess, tempfile::TempDir); 2]) {
    let targets = DemoTargets::start(&[("i-1", 0), ("i-2", 0), ("i-3", 0)]).unwrap();
    let state = filter_state(
        Some(policy),
        named_targets(targets.addresses()),
        random_key_ring(1).unwrap(),
    );
    let start = |shell: ShellKind| {
        let bootstrap = EnvoyBootstrap::sticky(shell.build().unwrap_or_else(|e| panic!("{e}")), state.clone()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let envoy = EnvoyProcess::start(&bootstrap, dir.path(), 1).unwrap_or_else(|e| panic!("{e}"));
        (shell, envoy, dir)
    };
    let envoys = [start(ShellKind::Wasm), start(ShellKind::Native)];
    (targets, envoys)
}

#[test]
fn an_lb_cookie_issued_by_either_shell_pins_on_the_other() {
    let (_targets, envoys) = both_shells(lb_cookie_policy(600));
    let agent = agent();
    for (issuer, honourer) in [(&envoys[0], &envoys[1]), (&envoys[1], &envoys[0])] {
        let first = get(&agent, &issuer.1.url(), "/", &[], &[]).unwrap();
        let cookie = first
            .cookie_value("AWSELB")
            .unwrap_or_else(|| panic!("{:?} issued no cookie", issuer.0));
        let pinned_before = honourer.1.sticky_counter("pinned").unwrap();
        for _ in 0..6 {
            let reply = get(&agent, &honourer.1.url(), "/", &[("AWSELB", &cookie)], &[]).unwrap();
            assert_eq!(
                reply.target(),
                first.target(),
                "a cookie of the {:?} shell pins on the {:?} shell",
                issuer.0,
                honourer.0
            );
            assert!(reply.set_cookie("AWSELB").is_none(), "a fresh cookie is not reissued");
        }
        assert_eq!(honourer.1.sticky_counter("pinned").unwrap() - pinned_before, 6);
    }
}

#[test]
fn an_app_cookie_session_started_on_either_shell_stays_on_the_other() {
    let (_targets, envoys) = both_shells(app_cookie_policy(None));
    let agent = agent();
    for (issuer, honourer) in [(&envoys[0], &envoys[1]), (&envoys[1], &envoys[0])] {
        let login = get(&agent, &issuer.1.url(), "/login", &[], &[]).unwrap();
        let session = login.cookie_value("session").expect("the target set its session");
        let sticky = login
            .cookie_value("AWSELB")
            .unwrap_or_else(|| panic!("{:?} issued no cookie beside the session", issuer.0));
        for _ in 0..6 {
            let reply = get(
                &agent,
                &honourer.1.url(),
                "/",
                &[("session", &session), ("AWSELB", &sticky)],
                &[],
            )
            .unwrap();
            assert_eq!(
                reply.target(),
                login.target(),
                "a session of the {:?} shell stays put on the {:?} shell",
                issuer.0,
                honourer.0
            );
        }
    }
}
