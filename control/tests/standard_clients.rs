//! Standard clients from PyPI, unchanged, against the real service: boto3's `elb` client and the
//! aws CLI. `scripts/setup` installs them into the project's `.venv`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{ACCESS_KEY, Control, SECRET_KEY, bootstrap};

fn venv_bin(name: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let venv = std::env::var_os("STICKY_VENV").map_or_else(|| root.join(".venv"), PathBuf::from);
    let path = venv.join("bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup (it installs boto3 and the aws CLI into .venv)",
        path.display()
    );
    path
}

fn control() -> Control {
    let instances = [
        ("i-1", "127.0.0.1:1".parse().unwrap()),
        ("i-2", "127.0.0.1:2".parse().unwrap()),
    ];
    Control::start(&bootstrap(&instances, &["i-1"]), &[])
}

fn run(command: &mut Command) {
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{command:?} failed:\n{stdout}\n{stderr}");
    println!("{stdout}");
}

#[test]
fn boto3_elb_client_drives_policies_and_sees_elb_error_codes() {
    let control = control();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/boto3_elb.py");
    run(Command::new(venv_bin("python")).arg(script).args([
        control.url(),
        ACCESS_KEY.to_owned(),
        SECRET_KEY.to_owned(),
    ]));
}

#[test]
fn aws_cli_drives_policies() {
    let control = control();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/aws_cli.sh");
    run(Command::new("bash").arg(script).arg(venv_bin("aws")).args([
        control.url(),
        ACCESS_KEY.to_owned(),
        SECRET_KEY.to_owned(),
    ]));
}

#[test]
fn osc_cli_runs_the_seed_commands() {
    let control = control();
    let config = control.dir.join("osc-config.json");
    let profile = serde_json::json!({"default": {
        "access_key": ACCESS_KEY, "secret_key": SECRET_KEY, "endpoint": control.url(),
        "https": false, "region_name": "eu-west-2", "method": "POST"
    }});
    std::fs::write(&config, profile.to_string()).unwrap();
    let osc = |args: &[&str]| {
        let output = Command::new(venv_bin("osc-cli"))
            .arg("lbu")
            .args(args)
            .arg("--config_path")
            .arg(&config)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.status.success() && !text.contains("Error"),
            "osc-cli {args:?}:\n{text}"
        );
        text
    };
    // The seed's commands, verbatim.
    osc(&[
        "CreateLBCookieStickinessPolicy",
        "--CookieExpirationPeriod",
        "10",
        "--LoadBalancerName",
        "terraform-balancer",
        "--PolicyName",
        "LBCookie",
    ]);
    osc(&[
        "CreateAppCookieStickinessPolicy",
        "--CookieName",
        "session",
        "--LoadBalancerName",
        "terraform-balancer",
        "--PolicyName",
        "AppCookie",
    ]);
    osc(&[
        "SetLoadBalancerPoliciesOfListener",
        "--LoadBalancerName",
        "terraform-balancer",
        "--LoadBalancerPort",
        "80",
        "--PolicyNames.member.1",
        "AppCookie",
    ]);
    let described = osc(&["DescribeLoadBalancers"]);
    assert!(described.contains("\"member\": \"AppCookie\""), "{described}");
    let state = control.state("terraform-balancer", 80, None, 0).1;
    assert_eq!(
        state["policy"],
        serde_json::json!({"kind": "app_cookie", "app_cookie_name": "session", "duration_seconds": null})
    );
    // Stickiness off, as an operator types it with osc-cli: no PolicyNames at all (osc-cli
    // sends nothing for an empty list).
    osc(&[
        "SetLoadBalancerPoliciesOfListener",
        "--LoadBalancerName",
        "terraform-balancer",
        "--LoadBalancerPort",
        "80",
    ]);
    let described = osc(&["DescribeLoadBalancers"]);
    assert!(!described.contains("\"member\": \"AppCookie\""), "{described}");
    let state = control.state("terraform-balancer", 80, None, 0).1;
    assert_eq!(
        state["policy"],
        serde_json::Value::Null,
        "stickiness removed by osc-cli"
    );
}
