//! `testbed serve` as a process: the whole product without Envoy.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sticky_core::PluginConfig;
use sticky_demo_target::DemoTargets;
use sticky_testing::eventually;
use sticky_testing::fixtures::{filter_state, lb_cookie_policy, named_targets, ring_state};

struct Served(Child, u16);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(args: &[String]) -> Served {
    let port = sticky_testing::free_port().unwrap();
    let wasm = sticky_testing::artifacts::build_filter().unwrap_or_else(|e| panic!("{e}"));
    let child = Command::new(env!("CARGO_BIN_EXE_testbed"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--wasm",
            &wasm.display().to_string(),
        ])
        .args(args)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(30), "testbed serve accepts connections", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    Served(child, port)
}

/// (status, target, stickiness cookie value) of a GET through the proxy.
fn get(port: u16, path: &str, cookie: Option<&str>, routing: Option<&str>) -> (u16, String, Option<String>) {
    let mut request = ureq::get(&format!("http://127.0.0.1:{port}{path}"));
    if let Some(cookie) = cookie {
        request = request.set("Cookie", cookie);
    }
    if let Some(routing) = routing {
        request = request.set("x-sticky-target", routing);
    }
    let response = request.call().unwrap();
    let sticky = sticky_testing::fixtures::cookie_set(response.all("set-cookie"), "AWSELB");
    let status = response.status();
    let body: serde_json::Value = serde_json::from_str(&response.into_string().unwrap()).unwrap();
    (status, body["target"].as_str().unwrap_or_default().to_owned(), sticky)
}

#[test]
fn serve_with_a_static_state_pins_sessions() {
    let targets = DemoTargets::start(&[("i-a", 0), ("i-b", 0), ("i-c", 0)]).unwrap();
    let addresses: Vec<(String, SocketAddr)> = targets.addresses();
    let state = filter_state(
        Some(lb_cookie_policy(600)),
        named_targets(addresses.clone()),
        ring_state(&[(1, 5)], 1),
    );
    let dir = std::env::temp_dir().join(format!("testbed-serve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("plugin.json");
    std::fs::write(&config, PluginConfig::new(Some(state)).to_json()).unwrap();
    let served = serve(&["--config".into(), config.display().to_string()]);

    let seen: HashSet<String> = (0..9).map(|_| get(served.1, "/", None, None).1).collect();
    assert_eq!(seen.len(), 3, "unpinned requests are balanced");
    let (status, pinned, cookie) = get(served.1, "/", None, None);
    assert_eq!(status, 200);
    let cookie = format!("AWSELB={}", cookie.expect("a cookie"));
    let other = addresses.iter().find(|(id, _)| *id != pinned).unwrap().1.to_string();
    for _ in 0..20 {
        assert_eq!(get(served.1, "/", Some(&cookie), Some(&other)).1, pinned);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn serve_follows_the_control_service() {
    use sticky_testing::control_process::ControlProcess;
    let targets = DemoTargets::start(&[("i-a", 0), ("i-b", 0)]).unwrap();
    let bootstrap = sticky_control::BootstrapFile::one_listener("terraform-balancer", &targets.addresses());
    let dir = std::env::temp_dir().join(format!("testbed-control-{}", std::process::id()));
    let binary = sticky_testing::artifacts::build_control().unwrap_or_else(|e| panic!("{e}"));
    let key = ("AKIDTESTBED", "testbed-secret");
    let control = ControlProcess::start(
        &binary,
        &dir,
        sticky_testing::free_port().unwrap(),
        &bootstrap,
        key,
        &[],
    )
    .unwrap();
    let served = serve(&[
        "--control".into(),
        control.address().to_string(),
        "--load-balancer".into(),
        "terraform-balancer".into(),
        "--feed-token".into(),
        control.feed_token.clone().expect("plain HTTP, behind a token"),
    ]);
    let client = control.client(key);
    let lb = ("LoadBalancerName", "terraform-balancer");
    client
        .call(
            "CreateLBCookieStickinessPolicy",
            &[lb, ("PolicyName", "P"), ("CookieExpirationPeriod", "60")],
        )
        .unwrap()
        .ok();
    client
        .call(
            "SetLoadBalancerPoliciesOfListener",
            &[lb, ("LoadBalancerPort", "80"), ("PolicyNames.member.1", "P")],
        )
        .unwrap()
        .ok();
    let mut pinned = None;
    eventually(Duration::from_secs(10), "the policy reaches the testbed", || {
        if let (200, target, Some(cookie)) = get(served.1, "/", None, None) {
            pinned = Some((target, cookie));
        }
        pinned.is_some()
    });
    let (pinned, cookie) = pinned.unwrap();
    let cookie = format!("AWSELB={cookie}");
    for _ in 0..10 {
        assert_eq!(get(served.1, "/", Some(&cookie), None).1, pinned);
    }
    drop(served);
    drop(control);
    let _ = std::fs::remove_dir_all(&dir);
}
