//! The standard clients from PyPI that tests drive as operators run them, unchanged
//! (`scripts/setup` installs them into the project's `.venv`).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::artifacts::workspace_root;

/// `.venv/bin/<name>` (or under `$STICKY_VENV`); panics naming the fix when it is missing.
#[allow(clippy::panic)]
pub fn venv_bin(name: &str) -> PathBuf {
    let venv = std::env::var_os("STICKY_VENV").map_or_else(|| workspace_root().join(".venv"), PathBuf::from);
    let path = venv.join("bin").join(name);
    if !path.exists() {
        panic!(
            "{} is missing: run scripts/setup (it installs boto3, the aws CLI and osc-cli into .venv)",
            path.display()
        );
    }
    path
}

/// The environment that makes the Python clients (boto3, the aws CLI, osc-sdk-python) trust
/// the CA file `ca`, and only it.
pub fn trusting(command: &mut Command, ca: Option<&Path>) {
    if let Some(ca) = ca {
        command.env("AWS_CA_BUNDLE", ca).env("REQUESTS_CA_BUNDLE", ca);
    }
}

/// osc-cli with a profile of its own (`--config_path`).
pub struct OscCli {
    config: PathBuf,
}

impl OscCli {
    /// Writes a profile for the service at `endpoint` (`http://…`, or `https://…` verified with
    /// the CA file `ca`) with `access_key` into `dir/osc-config.json`.
    pub fn new(dir: &Path, endpoint: &str, access_key: (&str, &str), ca: Option<&Path>) -> std::io::Result<Self> {
        let mut profile = serde_json::json!({"default": {
            "access_key": access_key.0, "secret_key": access_key.1, "endpoint": endpoint,
            "https": endpoint.starts_with("https://"), "region_name": "eu-west-2", "method": "POST"
        }});
        if let Some(ca) = ca {
            // osc-cli hands it to requests' `verify`.
            profile["default"]["ssl_verify"] = ca.display().to_string().into();
        }
        let config = dir.join("osc-config.json");
        std::fs::write(&config, profile.to_string())?;
        Ok(Self { config })
    }

    /// One `osc-cli lbu …` call, which must succeed (osc-cli prints service errors and exits
    /// 0: any "Error" in its output fails too); its output.
    #[allow(clippy::panic)]
    pub fn lbu(&self, args: &[&str]) -> String {
        self.try_lbu(args)
            .unwrap_or_else(|text| panic!("osc-cli {args:?}:\n{text}"))
    }

    /// One `osc-cli lbu …` call: its output, or, when it failed, its output as the error.
    pub fn try_lbu(&self, args: &[&str]) -> Result<String, String> {
        self.try_call("lbu", args)
    }

    /// One `osc-cli api …` call (OAPI), which must succeed; its output.
    #[allow(clippy::panic)]
    pub fn api(&self, args: &[&str]) -> String {
        self.try_api(args)
            .unwrap_or_else(|text| panic!("osc-cli api {args:?}:\n{text}"))
    }

    /// One `osc-cli api …` call: its output, or, when it failed, its output as the error.
    pub fn try_api(&self, args: &[&str]) -> Result<String, String> {
        self.try_call("api", args)
    }

    fn try_call(&self, service: &str, args: &[&str]) -> Result<String, String> {
        let output = Command::new(venv_bin("osc-cli"))
            .arg(service)
            .args(args)
            .arg("--config_path")
            .arg(&self.config)
            .output()
            .map_err(|e| format!("osc-cli does not run: {e}"))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if !output.status.success() || text.contains("Error") {
            return Err(text);
        }
        Ok(text)
    }
}
