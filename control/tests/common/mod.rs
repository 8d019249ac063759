//! Test support: the real `sticky-control` binary as a child process.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

pub use sticky_control::client::{QueryClient, Reply, SignedRequest, Style};

pub const ACCESS_KEY: &str = "AKIDSTICKYTEST";
pub const SECRET_KEY: &str = "c2VjcmV0LWtleS1mb3ItdGVzdHM";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct Control {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    args: Vec<String>,
}

impl Control {
    /// Starts the service with a fresh database and `bootstrap` (JSON).
    pub fn start(bootstrap: &str, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap().keep();
        std::fs::write(dir.join("bootstrap.json"), bootstrap).unwrap();
        let port = free_port();
        let mut args: Vec<String> = vec![
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--db".into(),
            dir.join("control.db").display().to_string(),
            "--bootstrap".into(),
            dir.join("bootstrap.json").display().to_string(),
            "--access-key".into(),
            format!("{ACCESS_KEY}:{SECRET_KEY}"),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let mut control = Self {
            child: None,
            port,
            dir,
            args,
        };
        control.launch();
        control
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("control.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_sticky-control"))
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if ureq::get(&format!("{}/healthz", self.url())).call().is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("sticky-control exited ({status}):\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("sticky-control did not start:\n{}", self.log());
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
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

    /// Kills and starts again on the same port and database.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    pub fn db(&self) -> &Path {
        &self.dir
    }

    pub fn client(&self) -> QueryClient {
        QueryClient::new(format!("127.0.0.1:{}", self.port), ACCESS_KEY, SECRET_KEY)
    }

    /// A correctly signed call.
    pub fn call(&self, action: &str, params: &[(&str, &str)]) -> Reply {
        self.client().call(action, params).unwrap()
    }

    pub fn call_as(&self, style: Style, action: &str, params: &[(&str, &str)]) -> Reply {
        self.client().call_as(style, action, params).unwrap()
    }

    pub fn signed(
        &self,
        style: Style,
        action: &str,
        params: &[(&str, &str)],
        access_key: &str,
        secret: &str,
        at: SystemTime,
    ) -> SignedRequest {
        self.client()
            .signed(style, action, params, access_key, secret, at)
            .unwrap()
    }

    pub fn send(&self, method: &str, path: &str, headers: &[(String, String)], body: &[u8]) -> Reply {
        self.client().send(method, path, headers, body).unwrap()
    }

    pub fn state(&self, lb: &str, port: u16, version: Option<u64>, timeout_ms: u64) -> (u16, serde_json::Value) {
        self.client().state(lb, port, version, timeout_ms).unwrap()
    }

    pub fn eds(&self, clusters: &[&str]) -> serde_json::Value {
        self.client().eds(clusters).unwrap()
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A bootstrap with load balancer `terraform-balancer` (listener 80 → instance port 80) and
/// the given instances, mapped to loopback addresses.
pub fn bootstrap(instances: &[(&str, std::net::SocketAddr)], registered: &[&str]) -> String {
    let registry: serde_json::Map<String, serde_json::Value> = instances
        .iter()
        .map(|(id, address)| {
            (
                (*id).to_owned(),
                serde_json::json!({"ip": address.ip().to_string(), "ports": {"80": address.port()}}),
            )
        })
        .collect();
    serde_json::json!({
        "instances": registry,
        "load_balancers": [{
            "name": "terraform-balancer",
            "listeners": [{"protocol": "HTTP", "load_balancer_port": 80, "instance_port": 80}],
            "instances": registered,
        }]
    })
    .to_string()
}
