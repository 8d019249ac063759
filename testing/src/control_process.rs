//! The service as a child process, for tests and tools: start it on a free loopback port with
//! a fresh database, kill it with SIGKILL, start it again on the same port and database.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::control_client::QueryClient;
use sticky_control::bootstrap::BootstrapFile;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("sticky-control exited during start-up ({status}); its log:\n{log}")]
    Exited { status: String, log: String },
    #[error("sticky-control did not answer /healthz within 20 s; its log:\n{0}")]
    NotReady(String),
}

pub struct ControlProcess {
    binary: PathBuf,
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    args: Vec<String>,
}

impl ControlProcess {
    /// Starts `binary` on 127.0.0.1:`port` (tests take one from `sticky_testing::free_port`) in `dir` (database `control.db`
    /// unless `extra` has `--store`, log `control.log`) with `bootstrap` and one access key,
    /// plus `extra` arguments.
    pub fn start(
        binary: &Path,
        dir: &Path,
        port: u16,
        bootstrap: &BootstrapFile,
        access_key: (&str, &str),
        extra: &[&str],
    ) -> Result<Self, ProcessError> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("bootstrap.json"), bootstrap.to_json())?;
        let mut args: Vec<String> = vec!["--listen".into(), format!("127.0.0.1:{port}")];
        // A store of its own unless `extra` names one (replicas sharing PostgreSQL).
        if !extra.contains(&"--store") {
            args.extend(["--store".into(), dir.join("control.db").display().to_string()]);
        }
        args.extend([
            "--bootstrap".into(),
            dir.join("bootstrap.json").display().to_string(),
            "--access-key".into(),
            format!("{}:{}", access_key.0, access_key.1),
        ]);
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let mut control = Self {
            binary: binary.to_owned(),
            child: None,
            port,
            dir: dir.to_owned(),
            args,
        };
        control.launch()?;
        Ok(control)
    }

    /// Starts the process (again) and waits until it answers.
    pub fn launch(&mut self) -> Result<(), ProcessError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("control.log"))?;
        let child = Command::new(&self.binary)
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        let start = Instant::now();
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(2)).build();
        while start.elapsed() < Duration::from_secs(20) {
            if agent.get(&format!("{}/healthz", self.url())).call().is_ok() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                return Err(ProcessError::Exited {
                    status: status.to_string(),
                    log: self.log(),
                });
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Err(ProcessError::NotReady(self.log()))
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn address(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("control.log")).unwrap_or_default()
    }

    /// Kills the process with SIGKILL (no graceful shutdown).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM (what systemd or `kill` send) and waits, at most `limit`, for the process
    /// to exit; returns its exit status, or `None` if it is still running (it is then killed).
    pub fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Kills and starts again on the same port and database.
    pub fn restart(&mut self) -> Result<(), ProcessError> {
        self.kill();
        self.launch()
    }

    /// A client signing with `access_key`.
    pub fn client(&self, access_key: (&str, &str)) -> QueryClient {
        QueryClient::new(format!("127.0.0.1:{}", self.port), access_key.0, access_key.1)
    }
}

impl Drop for ControlProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
