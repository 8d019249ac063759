//! The "Install on a bouncer host" commands of docs/operating.md, run as written, under a temporary root
//! (every absolute path of the install moved below it), then the installed unit's own commands
//! (`ExecStartPre`, `ExecStart` of `deploy/sticky-bouncer.service`) in place of systemd: the
//! installed launcher checks its file, runs the installed control service and Envoy with the
//! installed native module in front of demo targets, serves a request through the load
//! balancer, and stops on SIGTERM. Left out, because they change the machine itself: `useradd`
//! (and the `-g sticky` that needs it), `systemctl` and `journalctl`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sticky_demo_target::DemoTargets;
use sticky_testing::artifacts::workspace_root;
use sticky_testing::bouncer::BouncerProcess;
use sticky_testing::{free_port, patience};
use sticky_tests::xds::free_pool;
use sticky_tests::{TARGET_IDS, agent, get};

/// The install's absolute paths, each moved below the test's root.
const MOVED: [&str; 6] = [
    "/opt/sticky-bouncer",
    "/usr/local/",
    "/etc/sticky-bouncer",
    "/etc/systemd/system/",
    "/var/lib/sticky-bouncer",
    "/run/sticky-bouncer",
];

fn rooted(text: &str, root: &Path) -> String {
    let mut text = text.to_owned();
    for path in MOVED {
        text = text.replace(path, &format!("{}{path}", root.display()));
    }
    text
}

/// The `sh` block of section `heading` of the operators' guide (docs/operating.md).
fn readme_block(heading: &str) -> String {
    let guide = std::fs::read_to_string(workspace_root().join("docs/operating.md")).unwrap();
    let section = guide
        .split_once(&format!("\n## {heading}\n"))
        .unwrap_or_else(|| panic!("no section {heading} in docs/operating.md"))
        .1;
    let block = section.split_once("```sh\n").expect("a sh block").1;
    block.split_once("```").expect("the block's end").0.to_owned()
}

/// `from` → `to` in `text`, which must hold `from` (the example changed otherwise).
fn edit(text: &mut String, from: &str, to: &str) {
    assert!(
        text.contains(from),
        "the example configuration no longer holds {from:?}"
    );
    *text = text.replacen(from, to, 1);
}

#[test]
fn the_readmes_install_commands_install_a_bouncer_that_serves() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let block = readme_block("Install on a bouncer host");
    let mut script = String::from("set -euo pipefail\n");
    let mut left_out = Vec::new();
    // The check runs once the operator edited the file (below).
    let mut checks = Vec::new();
    for line in block.lines() {
        let line = line.trim_end();
        if line.starts_with("useradd") || line.starts_with("systemctl") || line.starts_with("journalctl") {
            left_out.push(line.to_owned());
            continue;
        }
        let line = rooted(&line.replace(" -g sticky", ""), &root);
        if line.starts_with("sticky-bouncer check") {
            checks.push(line);
            continue;
        }
        script.push_str(&line);
        script.push('\n');
    }
    assert_eq!(checks.len(), 1, "the guide's check of the configuration");
    assert_eq!(left_out.len(), 3, "useradd, systemctl, journalctl: {left_out:?}");
    let path = format!(
        "{}:{}",
        root.join("usr/local/bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(workspace_root())
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "the install commands failed:\n{script}\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    for installed in [
        "usr/local/bin/sticky-bouncer",
        "usr/local/bin/sticky-control",
        "usr/local/lib/sticky-bouncer/libsticky_filter_native.so",
        "opt/sticky-bouncer/envoy",
        "etc/sticky-bouncer/bouncer.toml",
        "etc/sticky-bouncer/access-keys",
        "etc/systemd/system/sticky-bouncer.service",
    ] {
        assert!(root.join(installed).exists(), "{installed} not installed");
    }
    let keys = std::fs::read_to_string(root.join("etc/sticky-bouncer/access-keys")).unwrap();
    let (key_id, secret) = keys.trim().split_once(':').expect("ID:SECRET");
    assert_eq!((key_id, secret.len()), ("AKIDEXAMPLE", 48));

    // "edit: instances, pool": what an operator of this machine writes in the example.
    let specs: Vec<(&str, u16)> = TARGET_IDS.iter().map(|id| (*id, 0)).collect();
    let targets = DemoTargets::start(&specs).unwrap();
    let (pool, port_offset) = free_pool();
    let config_file = root.join("etc/sticky-bouncer/bouncer.toml");
    let mut config = rooted(&std::fs::read_to_string(&config_file).unwrap(), &root);
    let api = format!("127.0.0.1:{}", free_port().unwrap());
    edit(
        &mut config,
        "listen = \"127.0.0.1:8000\"",
        &format!("listen = \"{api}\""),
    );
    edit(
        &mut config,
        "address_pool = \"10.0.0.128/28\"",
        &format!("address_pool = \"{pool}/24\""),
    );
    edit(&mut config, "port_offset = 0", &format!("port_offset = {port_offset}"));
    edit(
        &mut config,
        "admin_port = 9901",
        &format!("admin_port = {}", free_port().unwrap()),
    );
    for ((id, address), vm) in targets.addresses().iter().zip(["i-vm1", "i-vm2", "i-vm3"]) {
        let n = vm.trim_start_matches("i-vm");
        edit(
            &mut config,
            &format!("[instances.{vm}]\nip = \"10.0.1.1{n}\""),
            &format!(
                "[instances.{id}]\nip = \"{}\"\nports = {{ 80 = {} }}",
                address.ip(),
                address.port()
            ),
        );
    }
    edit(
        &mut config,
        "instances = [\"i-vm1\", \"i-vm2\", \"i-vm3\"]",
        &format!("instances = {:?}", TARGET_IDS),
    );
    std::fs::write(&config_file, config).unwrap();

    // The guide's check, with the installed binary first in PATH.
    let checked = Command::new("bash")
        .arg("-c")
        .arg(&checks[0])
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(
        checked.status.success() && String::from_utf8_lossy(&checked.stdout).contains("valid"),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );

    // What systemd would run: the installed unit's commands.
    let unit = rooted(
        &std::fs::read_to_string(root.join("etc/systemd/system/sticky-bouncer.service")).unwrap(),
        &root,
    );
    let command_of = |key: &str| -> Vec<String> {
        unit.lines()
            .find_map(|line| line.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in the unit"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    let check = command_of("ExecStartPre=");
    let checked = Command::new(&check[0]).args(&check[1..]).output().unwrap();
    assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stderr));
    let start = command_of("ExecStart=");
    let mut run = Command::new(&start[0]);
    run.args(&start[1..]);
    let log = dir.path().join("bouncer.log");
    let mut bouncer = BouncerProcess::spawn(run, &log).unwrap();
    let url = format!(
        "http://{}:{}",
        std::net::Ipv4Addr::from(u32::from(pool) + 1),
        80 + port_offset
    );
    let client = agent();
    let deadline = std::time::Instant::now() + Duration::from_secs(60).mul_f64(patience());
    while !get(&client, &url, "/", &[], &[]).is_ok_and(|r| r.status == 200 && r.try_target().is_some()) {
        let log = || std::fs::read_to_string(&log).unwrap_or_default();
        assert!(bouncer.try_wait().is_none(), "the launcher exited:\n{}", log());
        assert!(
            std::time::Instant::now() < deadline,
            "no request served by the installed bouncer at {url}; its log:\n{}",
            log()
        );
        // The load balancer serves once its targets pass their first health check.
        std::thread::sleep(Duration::from_millis(100));
    }
    // The installed access key signs API calls, over TLS verified with the CA the launcher made
    // on its first start.
    let ca = root.join("var/lib/sticky-bouncer/ca/ca.pem");
    let api = sticky_testing::control_client::QueryClient::new(api, key_id, secret)
        .over_tls(sticky_testing::tls::agent_trusting(&ca, None).expect("the CA"));
    let described = api.call("DescribeLoadBalancers", &[]).unwrap().ok();
    assert_eq!(
        described.field("LoadBalancerName").as_deref(),
        Some("terraform-balancer")
    );
    let status = bouncer.stop(Duration::from_secs(40)).expect("the launcher's exit");
    assert!(
        status.success(),
        "{status:?}\n{}",
        std::fs::read_to_string(&log).unwrap()
    );
}
