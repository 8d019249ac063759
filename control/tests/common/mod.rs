//! Test support: the real `sticky-control` binary as a child process.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use sticky_control::BootstrapFile;
pub use sticky_testing::control_client::{ApiReply, QueryClient, Style};
use sticky_testing::control_process::ControlProcess;

pub const ACCESS_KEY: &str = "AKIDSTICKYTEST";
pub const SECRET_KEY: &str = "c2VjcmV0LWtleS1mb3ItdGVzdHM";

pub struct Control {
    process: ControlProcess,
    pub port: u16,
    pub dir: PathBuf,
}

impl Control {
    /// Starts the service with a fresh database and `bootstrap`.
    pub fn start(bootstrap: &BootstrapFile, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap().keep();
        // No filter follows these services: API calls answer at once unless a test says otherwise.
        let mut extra = extra.to_vec();
        if !extra.contains(&"--sync-timeout-ms") {
            extra.extend(["--sync-timeout-ms", "0"]);
        }
        let extra = &extra[..];
        let binary = Path::new(env!("CARGO_BIN_EXE_sticky-control"));
        let process = ControlProcess::start(
            binary,
            &dir,
            sticky_testing::free_port().expect("a free port"),
            bootstrap,
            (ACCESS_KEY, SECRET_KEY),
            extra,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        Self {
            port: process.port,
            dir,
            process,
        }
    }

    pub fn url(&self) -> String {
        self.process.url()
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Sends SIGTERM and waits at most `limit` for the exit; `None` if it did not exit.
    pub fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        self.process.terminate(limit)
    }

    /// Kills and starts again on the same port and database.
    pub fn restart(&mut self) {
        self.process.restart().unwrap_or_else(|e| panic!("{e}"));
    }

    /// Kills the process with SIGKILL.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts it again (after [`Control::kill`]) on the same port and store.
    pub fn launch(&mut self) {
        self.process.launch().unwrap_or_else(|e| panic!("{e}"));
    }

    pub fn client(&self) -> QueryClient {
        self.process.client((ACCESS_KEY, SECRET_KEY))
    }

    /// A correctly signed call.
    pub fn call(&self, action: &str, params: &[(&str, &str)]) -> ApiReply {
        self.client().call(action, params).unwrap()
    }

    pub fn call_as(&self, style: Style, action: &str, params: &[(&str, &str)]) -> ApiReply {
        self.client().call_as(style, action, params).unwrap()
    }

    pub fn send(&self, method: &str, path: &str, headers: &[(String, String)], body: &[u8]) -> ApiReply {
        self.client().send(method, path, headers, body).unwrap()
    }

    pub fn state(&self, lb: &str, port: u16, version: Option<u64>, timeout_ms: u64) -> (u16, serde_json::Value) {
        self.client().state(lb, port, version, timeout_ms).unwrap()
    }

    pub fn eds(&self, clusters: &[&str]) -> serde_json::Value {
        self.client().eds(clusters).unwrap()
    }

    /// The value of an unlabelled counter or gauge on `/metrics` (0 when absent).
    pub fn metric(&self, name: &str) -> u64 {
        let text = ureq::get(&format!("{}/metrics", self.url()))
            .call()
            .unwrap()
            .into_string()
            .unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0)
    }

    /// Waits until the service no longer waits for followers to reconnect after its start.
    pub fn wait_for_discovery(&self) {
        sticky_testing::eventually(
            Duration::from_secs(20),
            "the followers' discovery window closes",
            || self.metric("sticky_control_discovering_followers") == 0,
        );
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        self.process.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A bootstrap with load balancer `terraform-balancer` (listener 80 → instance port 80, ELB's
/// default health check), `instances` in the registry and `registered` registered.
pub fn bootstrap(instances: &[(&str, std::net::SocketAddr)], registered: &[&str]) -> BootstrapFile {
    let instances: Vec<(String, std::net::SocketAddr)> = instances
        .iter()
        .map(|(id, address)| ((*id).to_owned(), *address))
        .collect();
    let mut file = BootstrapFile::one_listener("terraform-balancer", &instances);
    for lb in &mut file.load_balancers {
        lb.instances = registered.iter().map(|id| (*id).to_owned()).collect();
        lb.health_check = None;
    }
    file
}

/// Replicas of the service as processes, sharing one PostgreSQL database of a server of their
/// own.
pub struct Replicas {
    pub replicas: Vec<Control>,
    pub postgres: sticky_testing::postgres::PostgresServer,
    pub url: String,
}

impl Replicas {
    /// `count` replicas on a fresh database, each with `bootstrap` and `extra` arguments.
    pub fn start(count: usize, bootstrap: &BootstrapFile, extra: &[&str]) -> Self {
        let postgres = sticky_testing::postgres::PostgresServer::start().unwrap_or_else(|e| panic!("{e}"));
        let url = postgres.create_database("sticky").unwrap_or_else(|e| panic!("{e}"));
        let mut args = vec!["--store", url.as_str()];
        args.extend(extra);
        let replicas = (0..count).map(|_| Control::start(bootstrap, &args)).collect();
        Self {
            replicas,
            postgres,
            url,
        }
    }

    /// The index of the replica that leads (waits until one does).
    pub fn leader(&self) -> usize {
        let mut leader = None;
        sticky_testing::eventually(Duration::from_secs(20), "a replica leads", || {
            leader = self
                .replicas
                .iter()
                .position(|r| r.metric_or_gone("sticky_control_leader") == Some(1));
            leader.is_some()
        });
        leader.unwrap()
    }

    /// Runs `sql` in the replicas' database; psql's unaligned output.
    pub fn sql(&self, sql: &str) -> String {
        self.postgres.psql("sticky", sql).unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Control {
    /// [`Control::metric`], or `None` when the process does not answer (killed).
    pub fn metric_or_gone(&self, name: &str) -> Option<u64> {
        let text = ureq::get(&format!("{}/metrics", self.url()))
            .call()
            .ok()?
            .into_string()
            .ok()?;
        Some(
            text.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
                .unwrap_or(0),
        )
    }
}
