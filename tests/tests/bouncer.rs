//! The operator's launcher, run for real: `sticky-bouncer run --config bouncer.toml` starts the
//! control service and Envoy (with the shell under test) in front of demo targets, declared in
//! its file; a request is served through the load balancer's listener; Envoy killed -9 is
//! started again and serves again; SIGTERM stops both children and the launcher exits 0.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sticky_demo_target::DemoTargets;
use sticky_testing::artifacts::build_bouncer;
use sticky_testing::bouncer::{BouncerProcess, HttpsListener};
use sticky_testing::eventually;
use sticky_testing::tls::TestCa;
use sticky_tests::https::curl;
use sticky_tests::launcher::LauncherSetup;
use sticky_tests::{TARGET_IDS, agent, get};

fn pid_in(file: &Path) -> Option<u32> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

#[test]
fn the_launcher_runs_the_product_restarts_a_crashed_envoy_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let specs: Vec<(&str, u16)> = TARGET_IDS.iter().map(|id| (*id, 0)).collect();
    let targets = DemoTargets::start(&specs).unwrap();
    let mut setup = LauncherSetup::new(dir.path(), targets.addresses());
    setup.file.https = Some(HttpsListener {
        port: 81,
        certificate_name: "terraform-2026".to_owned(),
        certificate_file: dir.path().join("cert.pem"),
        private_key_file: dir.path().join("key.pem"),
        chain_file: dir.path().join("chain.pem"),
    });
    let runtime = setup.file.runtime_dir.clone();
    // The operator's certificate files, issued by a CA the test's client trusts.
    let ca = TestCa::new("launcher").unwrap();
    let issued = ca.issue(&["shop.example"]).unwrap();
    for (file, text) in [
        ("cert.pem", &issued.body),
        ("key.pem", &issued.private_key),
        ("chain.pem", &issued.chain),
        ("root.pem", &ca.root_pem()),
    ] {
        std::fs::write(dir.path().join(file), text).unwrap();
    }
    let config_file = dir.path().join("bouncer.toml");
    std::fs::write(&config_file, setup.file.render()).unwrap();
    let bouncer = build_bouncer().unwrap();

    let checked = Command::new(&bouncer)
        .arg("check")
        .arg("--config")
        .arg(&config_file)
        .output()
        .unwrap();
    assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stderr));

    let log = dir.path().join("bouncer.log");
    let mut run = Command::new(&bouncer);
    run.arg("run").arg("--config").arg(&config_file);
    let mut launcher = BouncerProcess::spawn(run, &log).unwrap();
    let url = format!("http://{}", setup.listener(80));
    let client = agent();
    let serves = || get(&client, &url, "/", &[], &[]).is_ok_and(|r| r.status == 200 && r.try_target().is_some());
    eventually(
        Duration::from_secs(40),
        "a request served through the launcher's Envoy",
        serves,
    );
    // The HTTPS listener the file declares, with the certificate it names.
    let https_at = setup.listener(81);
    let root = dir.path().join("root.pem");
    eventually(Duration::from_secs(10), "the declared HTTPS listener serves", || {
        curl(https_at, "shop.example", &root, "--http2", None).is_ok_and(|r| r.status == 200)
    });

    // Envoy dies: the launcher starts it again, and it serves again.
    let envoy_pid = pid_in(&runtime.join("envoy.pid")).expect("envoy.pid");
    signal(envoy_pid, "KILL");
    eventually(Duration::from_secs(20), "a new Envoy serving", || {
        pid_in(&runtime.join("envoy.pid")).is_some_and(|pid| pid != envoy_pid) && serves()
    });
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("exited; restarting"), "{logged}");
    assert!(!logged.contains('\u{1b}'), "no terminal colours in the log");

    // SIGTERM: both children stop, the launcher exits 0.
    let envoy_pid = pid_in(&runtime.join("envoy.pid")).unwrap();
    let control_pid = pid_in(&runtime.join("control.pid")).unwrap();
    signal(launcher.id(), "TERM");
    let mut status = None;
    eventually(Duration::from_secs(40), "the launcher exits", || {
        status = launcher.try_wait();
        status.is_some()
    });
    assert!(
        status.unwrap().success(),
        "{:?}\n{}",
        status,
        std::fs::read_to_string(&log).unwrap()
    );
    assert!(!alive(envoy_pid), "Envoy still running");
    assert!(!alive(control_pid), "the control service still running");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("stopping: Envoy first"), "{logged}");
}
