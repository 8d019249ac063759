//! Keeping the children running: each child has a task that starts it, waits for it, and starts
//! it again after a crash, with a backoff (1 s doubling to 30 s; back to 1 s after a minute of
//! running). On shutdown the task sends SIGTERM and waits; a child still there after the grace
//! period is killed.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::watch;

const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A child that ran this long before exiting restarts after the shortest backoff again.
const STEADY: Duration = Duration::from_secs(60);
/// How long a child has to stop after SIGTERM before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(15);

/// What to run, again and again.
pub struct ChildSpec {
    pub name: &'static str,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Where the running child's pid is written.
    pub pid_file: PathBuf,
}

impl ChildSpec {
    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            // Their logs go where the launcher's go (journald, a log shipper).
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        command
    }
}

/// Runs `spec` until `shutdown` turns true; then stops it.
pub async fn keep_running(spec: ChildSpec, mut shutdown: watch::Receiver<bool>) {
    let mut backoff = BACKOFF_START;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let started = Instant::now();
        match spec.command().spawn() {
            Ok(mut child) => {
                let pid = child.id().unwrap_or(0);
                tracing::info!(child = spec.name, pid, "started");
                if let Err(e) = std::fs::write(&spec.pid_file, format!("{pid}\n")) {
                    tracing::warn!(child = spec.name, error = %e, file = %spec.pid_file.display(), "cannot write the pid file");
                }
                tokio::select! {
                    status = child.wait() => {
                        if started.elapsed() >= STEADY {
                            backoff = BACKOFF_START;
                        }
                        let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                        tracing::error!(child = spec.name, pid, %status, restart_in = ?backoff, "exited; restarting");
                    }
                    _ = shutdown.changed() => {
                        stop(spec.name, &mut child).await;
                        let _ = std::fs::remove_file(&spec.pid_file);
                        return;
                    }
                }
            }
            Err(e) => {
                tracing::error!(child = spec.name, program = %spec.program.display(), error = %e, restart_in = ?backoff, "cannot start");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// SIGTERM, then SIGKILL after [`STOP_GRACE`].
async fn stop(name: &str, child: &mut Child) {
    let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) else {
        return;
    };
    tracing::info!(child = name, pid, "stopping (SIGTERM)");
    if kill(Pid::from_raw(pid), Signal::SIGTERM).is_err() {
        return;
    }
    match tokio::time::timeout(STOP_GRACE, child.wait()).await {
        Ok(status) => {
            let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
            tracing::info!(child = name, pid, %status, "stopped");
        }
        Err(_) => {
            tracing::warn!(child = name, pid, grace = ?STOP_GRACE, "still running after SIGTERM: killed");
            let _ = child.kill().await;
        }
    }
}
