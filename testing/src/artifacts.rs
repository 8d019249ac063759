//! Building what the tests and the demo run, once per process: the filter's two shells (the
//! `.wasm` and the dynamic module's `.so`, the very artifacts Envoy loads), the do-nothing
//! filters the benchmarks compare with, and the service binaries that tests start as processes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The wasm target the filter is built for.
pub const WASM_TARGET: &str = "wasm32-wasip1";
/// The cargo profile of the filter's artifact.
pub const WASM_PROFILE: &str = "wasm";

/// A build that failed, with the command to run to see why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("building failed; run it yourself to see why: {command}\n{stderr}")]
pub struct BuildError {
    pub command: String,
    pub stderr: String,
}

/// The repository root (this crate lives in `testing/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Runs `cargo build` with `args` in the workspace; the error names the exact command.
fn cargo_build(args: &[&str]) -> Result<(), BuildError> {
    let root = workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let command = format!("(cd {} && {cargo} build {})", root.display(), args.join(" "));
    match Command::new(&cargo).arg("build").args(args).current_dir(&root).output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(BuildError {
            command,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }),
        Err(e) => Err(BuildError {
            command,
            stderr: e.to_string(),
        }),
    }
}

/// Builds the filter for `wasm32-wasip1` once per process and returns the `.wasm` path.
pub fn build_filter() -> Result<PathBuf, BuildError> {
    static BUILT: OnceLock<Result<PathBuf, BuildError>> = OnceLock::new();
    build_wasm_once(&BUILT, "sticky-filter-wasm")
}

/// Builds the do-nothing wasm filter (`filter/noop`, the benchmarks' floor) once per process
/// and returns the `.wasm` path.
pub fn build_noop_filter() -> Result<PathBuf, BuildError> {
    static BUILT: OnceLock<Result<PathBuf, BuildError>> = OnceLock::new();
    build_wasm_once(&BUILT, "sticky-noop-filter")
}

fn build_wasm_once(built: &OnceLock<Result<PathBuf, BuildError>>, package: &str) -> Result<PathBuf, BuildError> {
    let args = ["-p", package, "--target", WASM_TARGET, "--profile", WASM_PROFILE];
    built_once(built, &args, || wasm_artifact(package))
}

/// Runs `cargo build --quiet <args>` the first time, and answers `artifact` (or the failure)
/// every time.
fn built_once(
    built: &OnceLock<Result<PathBuf, BuildError>>,
    args: &[&str],
    artifact: impl FnOnce() -> PathBuf,
) -> Result<PathBuf, BuildError> {
    built
        .get_or_init(|| {
            let args: Vec<&str> = std::iter::once("--quiet").chain(args.iter().copied()).collect();
            cargo_build(&args).map(|()| artifact())
        })
        .clone()
}

/// Cargo's target directory: `$CARGO_TARGET_DIR`, else `target/` in the workspace.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace_root().join("target"), PathBuf::from)
}

/// Builds the do-nothing Envoy dynamic module (`filter/noop-native`, release profile: the
/// benchmarks' floor for native modules) once per process and returns the `.so` path.
pub fn build_noop_module() -> Result<PathBuf, BuildError> {
    static BUILT: OnceLock<Result<PathBuf, BuildError>> = OnceLock::new();
    built_once(&BUILT, &["--release", "-p", "sticky-noop-module"], || {
        target_dir().join("release").join("libsticky_noop_module.so")
    })
}

/// Builds the filter's native shell (`filter/native`, an Envoy dynamic module, release profile)
/// once per process and returns the `.so` path.
pub fn build_native_filter() -> Result<PathBuf, BuildError> {
    static BUILT: OnceLock<Result<PathBuf, BuildError>> = OnceLock::new();
    built_once(
        &BUILT,
        &["--release", "-p", "sticky-filter-native"],
        native_filter_artifact,
    )
}

/// Where the filter's native shell is built.
pub fn native_filter_artifact() -> PathBuf {
    target_dir().join("release").join("libsticky_filter_native.so")
}

/// Builds the control service's binary (debug profile) once per process and returns its path.
pub fn build_control() -> Result<PathBuf, BuildError> {
    static BUILT: OnceLock<Result<PathBuf, BuildError>> = OnceLock::new();
    build_binary_once(&BUILT, "sticky-control", "sticky-control")
}

/// Builds the launcher's binary (`sticky-bouncer`, debug profile) once per process and returns
/// its path.
pub fn build_bouncer() -> Result<PathBuf, BuildError> {
    static BUILT: OnceLock<Result<PathBuf, BuildError>> = OnceLock::new();
    build_binary_once(&BUILT, "sticky-bouncer", "sticky-bouncer")
}

/// Builds the launcher's binary with the release profile once per process and returns its
/// path (the demo runs the release binaries).
pub fn build_bouncer_release() -> Result<PathBuf, BuildError> {
    static BUILT: OnceLock<Result<PathBuf, BuildError>> = OnceLock::new();
    built_once(
        &BUILT,
        &["--release", "-p", "sticky-bouncer", "--bin", "sticky-bouncer"],
        || target_dir().join("release").join("sticky-bouncer"),
    )
}

/// Builds the control service's binary with the release profile once per process and returns
/// its path: the benchmarks' figures of the service itself.
pub fn build_control_release() -> Result<PathBuf, BuildError> {
    static BUILT: OnceLock<Result<PathBuf, BuildError>> = OnceLock::new();
    built_once(
        &BUILT,
        &["--release", "-p", "sticky-control", "--bin", "sticky-control"],
        || target_dir().join("release").join("sticky-control"),
    )
}

/// Builds the demo's binary (`sticky-demo`, debug profile; it runs the release builds of the
/// launcher and the control service) once per process and returns its path.
pub fn build_demo() -> Result<PathBuf, BuildError> {
    static BUILT: OnceLock<Result<PathBuf, BuildError>> = OnceLock::new();
    build_binary_once(&BUILT, "sticky-demo", "sticky-demo")
}

/// Builds the demo target's binary (`demo-target`, debug profile) once per process and returns
/// its path: the tests that kill a target's process, or run it on a test host of its own.
pub fn build_demo_target() -> Result<PathBuf, BuildError> {
    static BUILT: OnceLock<Result<PathBuf, BuildError>> = OnceLock::new();
    build_binary_once(&BUILT, "sticky-demo-target", "demo-target")
}

fn build_binary_once(
    built: &OnceLock<Result<PathBuf, BuildError>>,
    package: &str,
    bin: &str,
) -> Result<PathBuf, BuildError> {
    built_once(built, &["-p", package, "--bin", bin], || {
        target_dir().join("debug").join(bin)
    })
}

/// Where the filter's wasm shell is built.
pub fn filter_artifact() -> PathBuf {
    wasm_artifact("sticky-filter-wasm")
}

/// Where the `.wasm` of a cdylib `package` of the workspace is built.
fn wasm_artifact(package: &str) -> PathBuf {
    target_dir()
        .join(WASM_TARGET)
        .join(WASM_PROFILE)
        .join(format!("{}.wasm", package.replace('-', "_")))
}
