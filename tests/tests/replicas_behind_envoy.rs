//! Three replicas of the control service sharing PostgreSQL (a real server, started by the
//! test), a real Envoy following any of them and serving their API in front of them: when the
//! replica an Envoy follows dies, it follows another (serving the last state meanwhile) and
//! changes answered afterwards are in force on it; writes acknowledged to boto3 and osc-cli
//! survive the leader's death in the middle of a burst, on every replica.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sticky_demo_target::DemoTargets;
use sticky_testing::clients::{OscCli, venv_bin};
use sticky_tests::live::{ACCESS_KEY, Live, eventually};
use sticky_tests::{STICKY_COOKIE, TARGET_IDS};

fn live_replicas() -> Live {
    let specs: Vec<(&str, u16)> = TARGET_IDS.iter().map(|id| (*id, 0)).collect();
    Live::start_replicated(DemoTargets::start(&specs).unwrap(), 1, 3, &[])
}

/// The metric `name` of replica `n`, `None` while it does not answer.
fn metric(live: &mut Live, n: usize, name: &str) -> Option<u64> {
    let url = live.replica_mut(n).url();
    let text = ureq::get(&format!("{url}/metrics")).call().ok()?.into_string().ok()?;
    Some(
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0),
    )
}

#[test]
fn an_envoy_follows_another_replica_when_its_own_dies() {
    let mut live = live_replicas();
    let (mut cookie, mut pinned) = live.lb_cookie_session(0);
    for round in 0..2 {
        // The replicas the Envoy follows (its xDS stream, its filter's state polls).
        let followed: Vec<usize> = (0..3)
            .filter(|n| metric(&mut live, *n, "sticky_control_followers").unwrap_or(0) > 0)
            .collect();
        let followers: u64 = (0..3)
            .map(|n| metric(&mut live, n, "sticky_control_followers").unwrap_or(0))
            .sum();
        assert!(
            !followed.is_empty() && followed.len() < 3,
            "round {round}: followed by {followed:?}"
        );
        for n in &followed {
            live.replica_mut(*n).kill();
        }
        // Fail static: the session stays where it is meanwhile.
        for _ in 0..5 {
            let reply = live.get(0, "/", &[(STICKY_COOKIE, &cookie)]);
            assert_eq!((reply.status, reply.target()), (200, pinned.clone()));
        }
        eventually(
            Duration::from_secs(15),
            "the Envoy follows the surviving replicas",
            || {
                (0..3)
                    .filter(|n| !followed.contains(n))
                    .map(|n| metric(&mut live, n, "sticky_control_followers").unwrap_or(0))
                    .sum::<u64>()
                    >= followers
            },
        );
        // A change answered now (through Envoy's front of the replicas) is in force at once.
        live.call(
            "DeregisterInstancesFromLoadBalancer",
            &[("Instances.member.1.InstanceId", pinned.as_str())],
        );
        for _ in 0..12 {
            let reply = live.get(0, "/", &[(STICKY_COOKIE, &cookie)]);
            assert_eq!(reply.status, 200);
            assert_ne!(
                reply.target(),
                pinned,
                "round {round}: a deregistered target was reached"
            );
        }
        live.call(
            "RegisterInstancesWithLoadBalancer",
            &[("Instances.member.1.InstanceId", pinned.as_str())],
        );
        for n in &followed {
            live.replica_mut(*n).launch().unwrap_or_else(|e| panic!("{e}"));
        }
        live.wait_all_in_service();
        let first = live.get(0, "/", &[]);
        (cookie, pinned) = (first.sticky_cookie().expect("a cookie"), first.target());
    }
}

#[test]
fn writes_acknowledged_to_boto3_and_osc_cli_survive_the_leaders_death_in_a_burst() {
    let mut live = live_replicas();
    let endpoint = format!("http://{}", live.api_front.unwrap());
    let script = sticky_testing::artifacts::workspace_root().join("tests/clients/elb.py");
    let mut burst = Command::new(venv_bin("python"))
        .arg(script)
        .args([endpoint.as_str(), ACCESS_KEY.0, ACCESS_KEY.1, "burst", "boto", "30"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = {
        let (stdout, lines) = (burst.stdout.take().unwrap(), Arc::clone(&lines));
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        })
    };
    let dir = tempfile::tempdir().unwrap();
    let osc = OscCli::new(dir.path(), &endpoint, ACCESS_KEY, None).unwrap();
    let osc_burst = std::thread::spawn(move || {
        (0..6)
            .map(|i| {
                let name = format!("osc-{i}");
                let outcome = osc.try_lbu(&[
                    "CreateLoadBalancer",
                    "--LoadBalancerName",
                    &name,
                    "--Listeners.member.1.Protocol",
                    "HTTP",
                    "--Listeners.member.1.LoadBalancerPort",
                    "80",
                    "--Listeners.member.1.InstancePort",
                    "80",
                ]);
                (name, outcome)
            })
            .collect::<Vec<_>>()
    });
    eventually(Duration::from_secs(60), "the burst under way", || {
        lines.lock().unwrap().len() >= 5
    });
    let leader = live.leader().expect("a leader");
    live.replica_mut(leader).kill();
    assert!(burst.wait().unwrap().success());
    reader.join().unwrap();
    let osc_outcomes = osc_burst.join().unwrap();
    live.replica_mut(leader).launch().unwrap_or_else(|e| panic!("{e}"));

    let lines = lines.lock().unwrap().clone();
    let mut acknowledged: Vec<String> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("acknowledged ").map(str::to_owned))
        .collect();
    // boto3 retries what the dying replica could not answer: every call is acknowledged.
    assert_eq!(acknowledged.len(), 30, "{lines:#?}");
    for (name, outcome) in &osc_outcomes {
        match outcome {
            Ok(_) => acknowledged.push(name.clone()),
            Err(text) => println!("osc-cli: {name} not acknowledged: {text}"),
        }
    }
    assert!(
        acknowledged.len() > 30,
        "osc-cli had no call acknowledged: {osc_outcomes:#?}"
    );
    for n in 0..3 {
        let api = live.replica_mut(n).client(ACCESS_KEY);
        let described = api.call("DescribeLoadBalancers", &[]).unwrap().ok();
        let names = described.fields("LoadBalancerName");
        for name in &acknowledged {
            assert!(names.contains(name), "{name} acknowledged but not on replica {n}");
        }
    }
    println!(
        "{} writes acknowledged ({} from osc-cli); the leader (replica {leader}) was killed after {} of them",
        acknowledged.len(),
        acknowledged.len() - 30,
        5
    );
}
