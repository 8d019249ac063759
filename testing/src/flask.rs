//! The seed's app as targets: `demo/app.py` (Flask + Flask-Session, server-side sessions on each
//! VM's own disk) under gunicorn from the project's `.venv`, one process per instance id, each
//! answering its id as `target` (as the demo target does) on a port of 127.0.0.1.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::artifacts::workspace_root;
use crate::clients::venv_bin;
use crate::free_port;

/// Which app of `demo/` gunicorn serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlaskApp {
    /// The seed's app (`app.py`), two sync workers.
    Seed,
    /// The seed's app with Socket.IO (`realtime.py`): one gthread worker of 100 threads, as
    /// python-socketio's threading mode needs (a connection lives in the worker that opened it).
    Realtime,
}

impl FlaskApp {
    fn gunicorn_args(self) -> &'static [&'static str] {
        match self {
            FlaskApp::Seed => &["--workers", "2", "app:app"],
            FlaskApp::Realtime => &[
                "--worker-class",
                "gthread",
                "--workers",
                "1",
                "--threads",
                "100",
                "realtime:app",
            ],
        }
    }
}

/// gunicorn serving an app of `demo/`, one per instance.
pub struct FlaskTargets {
    processes: Vec<(String, SocketAddr, Child)>,
    /// Each VM's sessions, removed with the targets.
    sessions: PathBuf,
}

impl FlaskTargets {
    /// Starts one gunicorn (2 workers) per id on a free port of 127.0.0.1 and waits until each
    /// accepts connections.
    pub fn start(ids: &[&str]) -> std::io::Result<Self> {
        Self::start_app(ids, FlaskApp::Seed)
    }

    /// [`FlaskTargets::start`] with `app`.
    pub fn start_app(ids: &[&str], app: FlaskApp) -> std::io::Result<Self> {
        let mut placed = Vec::new();
        for id in ids {
            placed.push((*id, SocketAddr::from(([127, 0, 0, 1], free_port()?)), None));
        }
        let targets = Self::start_app_at(&placed, app)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        for (id, address, _) in &targets.processes {
            while TcpStream::connect_timeout(address, Duration::from_millis(200)).is_err() {
                if Instant::now() >= deadline {
                    return Err(std::io::Error::other(format!(
                        "gunicorn for {id} does not listen on {address} (are Flask and python-socketio installed? scripts/setup)"
                    )));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(targets)
    }

    /// Starts one gunicorn per `(id, address, network namespace)`: in that namespace (`ip netns
    /// exec`, which runs gunicorn itself) when one is given. It does not wait: an address inside
    /// a namespace may not be reachable from here (the load balancer's health checks tell).
    pub fn start_at(targets: &[(&str, SocketAddr, Option<&str>)]) -> std::io::Result<Self> {
        Self::start_app_at(targets, FlaskApp::Seed)
    }

    fn start_app_at(targets: &[(&str, SocketAddr, Option<&str>)], app: FlaskApp) -> std::io::Result<Self> {
        let mut random = [0u8; 6];
        let _ = getrandom::fill(&mut random);
        let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let sessions = std::env::temp_dir().join(format!("sticky-flask-{}-{suffix}", std::process::id()));
        std::fs::create_dir_all(&sessions)?;
        let mut started = Self {
            processes: Vec::new(),
            sessions,
        };
        let app_dir: PathBuf = workspace_root().join("demo");
        for (id, address, netns) in targets {
            let mut command = match netns {
                Some(netns) => {
                    let mut command = Command::new("ip");
                    command.args(["netns", "exec", netns]).arg(venv_bin("gunicorn"));
                    command
                }
                None => Command::new(venv_bin("gunicorn")),
            };
            let child = command
                .args(["--bind", &address.to_string(), "--chdir"])
                .arg(&app_dir)
                .args(app.gunicorn_args())
                .env("VM_NAME", id)
                .env("SESSION_DIR", started.sessions.join(id))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            started.processes.push(((*id).to_owned(), *address, child));
        }
        Ok(started)
    }
}

impl FlaskTargets {
    /// Each instance id with its address.
    pub fn addresses(&self) -> Vec<(String, SocketAddr)> {
        self.processes
            .iter()
            .map(|(id, address, _)| (id.clone(), *address))
            .collect()
    }
}

impl Drop for FlaskTargets {
    fn drop(&mut self) {
        for (_, _, child) in &mut self.processes {
            // gunicorn stops its workers on SIGTERM.
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        }
        for (_, _, child) in &mut self.processes {
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.sessions);
    }
}
