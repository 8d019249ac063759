//! The README's first command, run as a new user runs it: the demo (`sticky-demo`, what
//! `scripts/demo` starts) is a thin use of the operator's launcher. On loopback, and in the
//! seed's topology (`--topology vms`: a bouncer and three private VMs as network namespaces the
//! demo makes and removes): the seed's Flask app answers through the load balancer from every
//! VM, this host reaches only the bouncer, the API it prints makes the load balancer sticky, and
//! SIGTERM stops everything and leaves nothing behind.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use sticky_testing::artifacts::build_demo;
use sticky_testing::control_client::QueryClient;
use sticky_testing::{free_port, patience};
use sticky_tests::{STICKY_COOKIE, agent, get};

const ACCESS_KEY: (&str, &str) = ("AKIDSTICKYDEMO", "sticky-demo-secret");

/// The demo as a child process; SIGTERM (then SIGKILL) if the test ends early.
struct Demo {
    child: Child,
    lines: mpsc::Receiver<String>,
    printed: Vec<String>,
}

impl Demo {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(build_demo().unwrap())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut demo = Self {
            child,
            lines,
            printed: Vec::new(),
        };
        // Running once it says how to stop it (it waits for the load balancer to serve first).
        let bound = Duration::from_secs(600).mul_f64(patience());
        loop {
            match demo.lines.recv_timeout(bound) {
                Ok(line) => {
                    let last = line.starts_with("Ctrl-C");
                    demo.printed.push(line);
                    if last {
                        break;
                    }
                }
                Err(e) => panic!("the demo did not start ({e}); it printed:\n{}", demo.printed.join("\n")),
            }
        }
        demo
    }

    /// The URL the demo printed for `label` (`envoy`, `control service`).
    fn url(&self, label: &str) -> String {
        self.printed
            .iter()
            .find_map(|line| line.trim_start().strip_prefix(label))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no {label} line in:\n{}", self.printed.join("\n")))
            .to_owned()
    }

    /// SIGTERM; the exit status.
    fn stop(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let (sender, exited) = mpsc::channel();
        let pid = self.child.id();
        let status = std::thread::scope(|scope| {
            scope.spawn(|| {
                let _ = sender.send(self.child.wait());
            });
            exited.recv_timeout(Duration::from_secs(60).mul_f64(patience()))
        });
        match status {
            Ok(Ok(status)) => status,
            _ => panic!("the demo (pid {pid}) did not stop on SIGTERM"),
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let _ = self.child.wait();
        }
    }
}

/// Through the load balancer: every instance answers (no policy), then an LB cookie policy set
/// through the API the demo printed keeps a client on one.
fn serves_and_sticks(demo: &Demo, instances: &[&str]) {
    let envoy = demo.url("envoy");
    let client = agent();
    let answered: HashSet<String> = (0..30)
        .filter_map(|_| get(&client, &envoy, "/", &[], &[]).ok())
        .filter(|r| r.status == 200)
        .filter_map(|r| r.try_target())
        .collect();
    let expected: HashSet<String> = instances.iter().map(|i| (*i).to_owned()).collect();
    assert_eq!(answered, expected, "every VM answers through the load balancer");
    let api = demo.url("control service");
    // Over TLS, verified with the CA the demo printed.
    let ca = std::path::PathBuf::from(demo.url("control CA"));
    let api = QueryClient::new(api.trim_start_matches("https://"), ACCESS_KEY.0, ACCESS_KEY.1)
        .over_tls(sticky_testing::tls::agent_trusting(&ca, None).expect("the CA"));
    let lb = ("LoadBalancerName", "terraform-balancer");
    api.call(
        "CreateLBCookieStickinessPolicy",
        &[lb, ("PolicyName", "demo-sticky"), ("CookieExpirationPeriod", "300")],
    )
    .unwrap()
    .ok();
    api.call(
        "SetLoadBalancerPoliciesOfListener",
        &[lb, ("LoadBalancerPort", "80"), ("PolicyNames.member.1", "demo-sticky")],
    )
    .unwrap()
    .ok();
    let first = get(&client, &envoy, "/", &[], &[]).unwrap();
    let cookie = first
        .sticky_cookie()
        .unwrap_or_else(|| panic!("a stickiness cookie once the API answered: {first:?}"));
    for _ in 0..10 {
        let reply = get(&client, &envoy, "/", &[(STICKY_COOKIE, &cookie)], &[]).unwrap();
        assert_eq!(reply.try_target(), first.try_target());
    }
}

#[test]
fn the_demo_runs_the_seeds_app_behind_the_launcher_on_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let (pool, offset) = sticky_tests::xds::free_pool();
    let control = free_port().unwrap().to_string();
    let admin = free_port().unwrap().to_string();
    let mut demo = Demo::start(&[
        "--dir",
        dir.path().to_str().unwrap(),
        "--control-port",
        &control,
        "--admin-port",
        &admin,
        "--lb-address-pool",
        &format!("{pool}/24"),
        "--lb-port-offset",
        &offset.to_string(),
    ]);
    serves_and_sticks(&demo, &["i-demo1", "i-demo2", "i-demo3"]);
    // The HTTPS listener, tried as the demo says (HTTP/2, its CA trusted).
    let https = demo
        .printed
        .iter()
        .find_map(|line| line.strip_prefix("HTTPS:"))
        .unwrap_or_else(|| panic!("no HTTPS line in:\n{}", demo.printed.join("\n")));
    let tried = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} -sS -o /dev/null -w '%{{http_version}} %{{http_code}}'",
            https.trim()
        ))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&tried.stdout),
        "2 200",
        "{https}: {}",
        String::from_utf8_lossy(&tried.stderr)
    );
    assert!(dir.path().join("bouncer.toml").is_file(), "the launcher's file");
    let log = std::fs::read_to_string(dir.path().join("bouncer.log")).unwrap();
    assert!(log.contains("sticky-bouncer starting"), "{log}");
    assert!(demo.stop().success());
    let log = std::fs::read_to_string(dir.path().join("bouncer.log")).unwrap();
    assert!(
        log.contains("stopping: Envoy first"),
        "the launcher stopped its children: {log}"
    );
}

fn namespaces() -> String {
    String::from_utf8(Command::new("ip").args(["netns", "list"]).output().unwrap().stdout).unwrap()
}

#[test]
fn the_demo_builds_the_seeds_topology_of_a_bouncer_and_private_vms_and_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let tag = format!("stkd{}", std::process::id() % 100_000);
    let mut demo = Demo::start(&[
        "--topology",
        "vms",
        "--netns-tag",
        &tag,
        "--vms-network",
        "198.19.201.0",
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    let listed = namespaces();
    for name in ["bouncer", "vm1", "vm2", "vm3"] {
        assert!(listed.contains(&format!("{tag}-{name}")), "{listed}");
    }
    // This host reaches the bouncer (API and load balancer) only: no route of its own to the
    // VMs' private network goes to the bouncer.
    assert!(demo.url("control service").starts_with("https://198.19.201.2:"));
    let route = Command::new("ip").args(["route", "get", "10.0.1.11"]).output().unwrap();
    let route = String::from_utf8_lossy(&route.stdout);
    assert!(
        !route.contains(&format!("{tag}-h")),
        "a route to a VM through the bouncer: {route}"
    );
    serves_and_sticks(&demo, &["i-vm1", "i-vm2", "i-vm3"]);
    assert!(demo.stop().success());
    let listed = namespaces();
    assert!(!listed.contains(&tag), "namespaces left behind: {listed}");
    let links = String::from_utf8(Command::new("ip").args(["link"]).output().unwrap().stdout).unwrap();
    assert!(!links.contains(&format!("{tag}-h")), "a link left behind: {links}");
}
