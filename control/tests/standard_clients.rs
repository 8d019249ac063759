//! Standard clients from PyPI, unchanged, against the real service: boto3's `elb` client and the
//! aws CLI. `scripts/setup` installs them into the project's `.venv`.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{ACCESS_KEY, Control, SECRET_KEY, bootstrap};

fn venv_bin(name: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let venv = std::env::var_os("STICKY_VENV").map_or_else(|| root.join(".venv"), PathBuf::from);
    let path = venv.join("bin").join(name);
    assert!(path.exists(), "{} is missing: run scripts/setup (it installs boto3 and the aws CLI into .venv)", path.display());
    path
}

fn control() -> Control {
    let instances = [("i-1", "127.0.0.1:1".parse().unwrap()), ("i-2", "127.0.0.1:2".parse().unwrap())];
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
    run(Command::new(venv_bin("python")).arg(script).args([control.url(), ACCESS_KEY.to_owned(), SECRET_KEY.to_owned()]));
}

#[test]
fn aws_cli_drives_policies() {
    let control = control();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/aws_cli.sh");
    run(Command::new("bash").arg(script).arg(venv_bin("aws")).args([control.url(), ACCESS_KEY.to_owned(), SECRET_KEY.to_owned()]));
}
