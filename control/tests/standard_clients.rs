//! Standard clients from PyPI, unchanged, against the real service: boto3's `elb` client and the
//! aws CLI. `scripts/setup` installs them into the project's `.venv`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{ACCESS_KEY, Control, SECRET_KEY, bootstrap};
use sticky_testing::clients::{OscCli, venv_bin};

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
fn boto3_elb_client_gets_an_answer_to_every_action_and_drives_attributes_tags_and_draining() {
    let control = control();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/boto3_elb_rest.py");
    run(Command::new(venv_bin("python")).arg(script).args([
        control.url(),
        ACCESS_KEY.to_owned(),
        SECRET_KEY.to_owned(),
    ]));
    // What the filters are told: the cookie attributes, the session header, the draining target.
    let state = control.state("terraform-balancer", 80, None, 0).1;
    assert_eq!(state["cookie"]["same_site"], "None", "{state}");
    assert_eq!(state["cookie"]["cors_twin"], true, "{state}");
    assert_eq!(state["session_header"], "x-sticky-session", "{state}");
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
    let cli = OscCli::new(&control.dir, &control.url(), (ACCESS_KEY, SECRET_KEY), None).unwrap();
    let osc = |args: &[&str]| cli.lbu(args);
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

#[test]
fn osc_cli_drives_attributes_tags_and_generic_policies() {
    let control = control();
    let cli = OscCli::new(&control.dir, &control.url(), (ACCESS_KEY, SECRET_KEY), None).unwrap();
    let osc = |args: &[&str]| cli.lbu(args);
    let lb = ["--LoadBalancerName", "terraform-balancer"];
    let with_lb = |args: &[&str]| -> Vec<String> { lb.iter().chain(args).map(|a| (*a).to_owned()).collect() };
    let run = |args: Vec<String>| osc(&args.iter().map(String::as_str).collect::<Vec<_>>());
    run(with_lb(&[
        "ModifyLoadBalancerAttributes",
        "--LoadBalancerAttributes.ConnectionDraining.Enabled",
        "true",
        "--LoadBalancerAttributes.ConnectionDraining.Timeout",
        "45",
        "--LoadBalancerAttributes.AdditionalAttributes.member.1.Key",
        "sticky.session_draining.enabled",
        "--LoadBalancerAttributes.AdditionalAttributes.member.1.Value",
        "true",
    ]));
    let described = run(with_lb(&["DescribeLoadBalancerAttributes"]));
    assert!(described.contains("\"Timeout\": \"45\""), "{described}");
    run(vec![
        "AddTags".into(),
        "--LoadBalancerNames.member.1".into(),
        "terraform-balancer".into(),
        "--Tags.member.1.Key".into(),
        "env".into(),
        "--Tags.member.1.Value".into(),
        "prod".into(),
    ]);
    let tags = run(vec![
        "DescribeTags".into(),
        "--LoadBalancerNames.member.1".into(),
        "terraform-balancer".into(),
    ]);
    assert!(tags.contains("prod"), "{tags}");
    run(with_lb(&[
        "CreateLoadBalancerPolicy",
        "--PolicyName",
        "Bounded",
        "--PolicyTypeName",
        "LBCookieStickinessPolicyType",
        "--PolicyAttributes.member.1.AttributeName",
        "CookieExpirationPeriod",
        "--PolicyAttributes.member.1.AttributeValue",
        "20",
        "--PolicyAttributes.member.2.AttributeName",
        "CookieMaxLifetime",
        "--PolicyAttributes.member.2.AttributeValue",
        "60",
    ]));
    run(with_lb(&[
        "SetLoadBalancerPoliciesOfListener",
        "--LoadBalancerPort",
        "80",
        "--PolicyNames.member.1",
        "Bounded",
    ]));
    let state = control.state("terraform-balancer", 80, None, 0).1;
    assert_eq!(
        state["policy"],
        serde_json::json!({"kind": "lb_cookie", "expiration_period": 20, "max_lifetime": 60})
    );
    let refused = cli
        .try_lbu(&[
            "AttachLoadBalancerToSubnets",
            "--LoadBalancerName",
            "terraform-balancer",
            "--Subnets.member.1",
            "subnet-1",
        ])
        .unwrap_err();
    assert!(refused.contains("UnsupportedOperation"), "{refused}");
}

/// OAPI with Outscale's Python SDK (`osc-sdk-python`'s Gateway): every load balancer call,
/// answers checked against the specification it ships, the state shared with the Query API both
/// ways, OAPI's errors for bad input.
#[test]
fn osc_sdk_python_drives_the_oapi_load_balancer_calls() {
    let control = control();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/osc_sdk_oapi.py");
    run(Command::new(venv_bin("python")).arg(script).args([
        control.url(),
        ACCESS_KEY.to_owned(),
        SECRET_KEY.to_owned(),
    ]));
}

/// OAPI with `osc-cli api` (OSC4-signed, to `//api/latest/<Call>` as it sends them): the seed's
/// stickiness through OAPI, what the filters are told at each step, and an OAPI error.
#[test]
fn osc_cli_api_drives_stickiness_through_oapi() {
    let control = control();
    let cli = OscCli::new(&control.dir, &control.url(), (ACCESS_KEY, SECRET_KEY), None).unwrap();
    let lb = ["--LoadBalancerName", "terraform-balancer"];
    let api = |call: &str, args: &[&str]| {
        let mut all = vec![call];
        all.extend_from_slice(&lb);
        all.extend_from_slice(args);
        cli.api(&all)
    };
    api(
        "CreateLoadBalancerPolicy",
        &[
            "--PolicyName",
            "AppCookie",
            "--PolicyType",
            "app",
            "--CookieName",
            "session",
        ],
    );
    let updated = api(
        "UpdateLoadBalancer",
        &["--LoadBalancerPort", "80", "--PolicyNames", "[\"AppCookie\"]"],
    );
    assert!(updated.contains("\"AppCookie\""), "{updated}");
    let state = control.state("terraform-balancer", 80, None, 0).1;
    assert_eq!(state["policy"]["app_cookie_name"], "session", "{state}");
    let health = api("ReadVmsHealth", &[]);
    assert!(health.contains("\"VmId\": \"i-1\""), "{health}");
    let read = cli.api(&[
        "ReadLoadBalancers",
        "--Filters",
        "{\"LoadBalancerNames\": [\"terraform-balancer\"]}",
    ]);
    assert!(read.contains("\"CookieName\": \"session\""), "{read}");
    // Out of OAPI's range: refused with its error, nothing changed.
    let refused = cli
        .try_api(&[
            "UpdateLoadBalancer",
            "--LoadBalancerName",
            "terraform-balancer",
            "--HealthCheck",
            "{\"CheckInterval\": 601, \"HealthyThreshold\": 2, \"Port\": 80, \"Protocol\": \"TCP\", \"Timeout\": 5, \"UnhealthyThreshold\": 2}",
        ])
        .unwrap_err();
    assert!(
        refused.contains("4047") && refused.contains("InvalidParameterValue"),
        "{refused}"
    );
    // An empty PolicyNames removes stickiness.
    api(
        "UpdateLoadBalancer",
        &["--LoadBalancerPort", "80", "--PolicyNames", "[]"],
    );
    let state = control.state("terraform-balancer", 80, None, 0).1;
    assert_eq!(
        state["policy"],
        serde_json::Value::Null,
        "stickiness removed through OAPI"
    );
}
