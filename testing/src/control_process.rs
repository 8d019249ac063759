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

/// The token the tests' control services on plain HTTP require of their peers.
pub const FEED_TOKEN: &str = "test-feed-token";

/// The master key the tests' replicas on PostgreSQL share (each needs the same one).
pub const REPLICAS_MASTER_KEY: &str = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e";

pub struct ControlProcess {
    binary: PathBuf,
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    args: Vec<String>,
    /// On plain HTTP: the token its peers present.
    pub feed_token: Option<String>,
    /// Over TLS: the control plane's certificates (the agent trusts its CA).
    pub tls: Option<crate::tls::ControlPlaneCa>,
}

impl ControlProcess {
    /// Starts `binary` on 127.0.0.1:`port` (tests take one from `sticky_testing::free_port`) in `dir` (database `control.db`
    /// unless `extra` has `--store`, log `control.log`) with `bootstrap` and one access key,
    /// plus `extra` arguments; on plain HTTP with [`FEED_TOKEN`] unless `extra` gives a token.
    pub fn start(
        binary: &Path,
        dir: &Path,
        port: u16,
        bootstrap: &BootstrapFile,
        access_key: (&str, &str),
        extra: &[&str],
    ) -> Result<Self, ProcessError> {
        Self::start_with(binary, dir, port, bootstrap, access_key, extra, None)
    }

    /// [`ControlProcess::start`], over TLS with the certificates of `tls` when given.
    pub fn start_with(
        binary: &Path,
        dir: &Path,
        port: u16,
        bootstrap: &BootstrapFile,
        access_key: (&str, &str),
        extra: &[&str],
        tls: Option<crate::tls::ControlPlaneCa>,
    ) -> Result<Self, ProcessError> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("bootstrap.json"), bootstrap.to_json())?;
        let mut args: Vec<String> = vec!["--listen".into(), format!("127.0.0.1:{port}")];
        // A store of its own unless `extra` names one (replicas sharing PostgreSQL, and then
        // one master key).
        let shared = extra
            .iter()
            .position(|a| *a == "--store")
            .and_then(|i| extra.get(i + 1))
            .is_some_and(|store| store.starts_with("postgres"));
        if !extra.contains(&"--store") {
            args.extend(["--store".into(), dir.join("control.db").display().to_string()]);
        }
        if shared && !extra.contains(&"--master-key-file") {
            let file = dir.join("master.key");
            std::fs::write(&file, REPLICAS_MASTER_KEY)?;
            args.extend(["--master-key-file".into(), file.display().to_string()]);
        }
        args.extend([
            "--bootstrap".into(),
            dir.join("bootstrap.json").display().to_string(),
            "--access-key".into(),
            format!("{}:{}", access_key.0, access_key.1),
        ]);
        let mut feed_token = None;
        match &tls {
            Some(tls) => args.extend(tls.control_args()),
            None => {
                args.push("--plain-http".into());
                let given = extra.iter().position(|a| *a == "--feed-token");
                let token = given.and_then(|i| extra.get(i + 1)).copied().unwrap_or(FEED_TOKEN);
                if given.is_none() {
                    args.extend(["--feed-token".into(), token.to_owned()]);
                }
                feed_token = Some(token.to_owned());
            }
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let mut control = Self {
            binary: binary.to_owned(),
            child: None,
            port,
            dir: dir.to_owned(),
            args,
            feed_token,
            tls,
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
        let agent = self.agent();
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
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// An agent for its URL: over TLS, trusting its CA and presenting an Envoy's certificate
    /// (a peer); on plain HTTP, a plain one (peer routes need [`ControlProcess::feed_token`]).
    pub fn agent(&self) -> ureq::Agent {
        match &self.tls {
            Some(tls) => tls.agent(true),
            None => ureq::AgentBuilder::new().timeout(Duration::from_secs(2)).build(),
        }
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
    /// A client signing with `access_key`, which reads the peer routes as an Envoy would.
    pub fn client(&self, access_key: (&str, &str)) -> QueryClient {
        let client = QueryClient::new(format!("127.0.0.1:{}", self.port), access_key.0, access_key.1)
            .with_feed_token(self.feed_token.clone());
        match &self.tls {
            Some(tls) => client.over_tls(tls.agent(true)),
            None => client,
        }
    }
}

impl Drop for ControlProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
