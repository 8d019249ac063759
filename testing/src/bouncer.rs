//! The operator's launcher (`sticky-bouncer`) as the demo and the tests run it: its
//! configuration file written from typed values (the format of `deploy/bouncer.example.toml`),
//! and the launcher as a child process that is stopped (SIGTERM: it stops its children) when
//! dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What a launcher configuration declares; [`BouncerFile::render`] writes it.
#[derive(Debug, Clone)]
pub struct BouncerFile {
    pub runtime_dir: PathBuf,
    pub api: SocketAddr,
    pub access_key: (String, String),
    /// A SQLite path or a `postgres://` URL.
    pub store: String,
    /// CIDR of the listeners' addresses, and the port offset.
    pub address_pool: String,
    pub port_offset: u16,
    pub control_binary: PathBuf,
    pub control_args: Vec<String>,
    pub envoy_binary: PathBuf,
    /// `native` or `wasm`, and the filter's artifact for it.
    pub shell: (&'static str, PathBuf),
    pub admin_port: u16,
    pub concurrency: u32,
    /// `[envoy] max_connections`, when not the launcher's default.
    pub max_connections: Option<u64>,
    /// Instance id → its address for instance port 80.
    pub instances: Vec<(String, SocketAddr)>,
    pub load_balancer: String,
    /// `HealthCheck.Target`, e.g. `HTTP:80/health`; every 5 s, 2 failures, 2 successes.
    pub health_target: String,
    /// An HTTPS listener beside HTTP 80, with its certificate's files.
    pub https: Option<HttpsListener>,
    /// `[api.tls]`: the control plane's CA files (made on the first start when missing);
    /// `None`: `plain_http = true`.
    pub control_ca: Option<(PathBuf, PathBuf)>,
}

/// An HTTPS listener of the load balancer (to instance port 80) and its certificate's files.
#[derive(Debug, Clone)]
pub struct HttpsListener {
    pub port: u16,
    pub certificate_name: String,
    pub certificate_file: PathBuf,
    pub private_key_file: PathBuf,
    pub chain_file: PathBuf,
}

/// `text` as a TOML basic string (JSON's escapes are TOML's).
fn quoted(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_owned())
}

fn path(path: &Path) -> String {
    quoted(&path.display().to_string())
}

impl BouncerFile {
    pub fn render(&self) -> String {
        let mut text = format!(
            "runtime_dir = {runtime}\n\n[api]\nlisten = {api}\naccess_keys = [{key}]\n{transport}\n[store]\nlocation = {store}\n\n\
             [listeners]\naddress_pool = {pool}\nport_offset = {offset}\n\n[control]\nbinary = {control}\nextra_args = [{args}]\n\n\
             [envoy]\nbinary = {envoy}\nshell = {shell}\nartifact = {artifact}\nadmin_port = {admin}\nconcurrency = {concurrency}\n\n",
            runtime = path(&self.runtime_dir),
            api = quoted(&self.api.to_string()),
            key = quoted(&format!("{}:{}", self.access_key.0, self.access_key.1)),
            transport = match &self.control_ca {
                Some((certificate, key)) => format!(
                    "\n[api.tls]\nca_certificate = {}\nca_private_key = {}\n",
                    path(certificate),
                    path(key)
                ),
                None => "plain_http = true\n".to_owned(),
            },
            store = quoted(&self.store),
            pool = quoted(&self.address_pool),
            offset = self.port_offset,
            control = path(&self.control_binary),
            args = self
                .control_args
                .iter()
                .map(|a| quoted(a))
                .collect::<Vec<_>>()
                .join(", "),
            envoy = path(&self.envoy_binary),
            shell = quoted(self.shell.0),
            artifact = path(&self.shell.1),
            admin = self.admin_port,
            concurrency = self.concurrency,
        );
        if let Some(max) = self.max_connections {
            // Still in the `[envoy]` table, which ends the text so far with a blank line.
            text.pop();
            text.push_str(&format!("max_connections = {max}\n\n"));
        }
        for (id, address) in &self.instances {
            text.push_str(&format!(
                "[instances.{}]\nip = {}\nports = {{ 80 = {} }}\n\n",
                quoted(id),
                quoted(&address.ip().to_string()),
                address.port()
            ));
        }
        let ids: Vec<String> = self.instances.iter().map(|(id, _)| quoted(id)).collect();
        let mut listeners = "{ load_balancer_port = 80, instance_port = 80 }".to_owned();
        if let Some(https) = &self.https {
            text.push_str(&format!(
                "[[certificates]]\nname = {}\ncertificate_file = {}\nprivate_key_file = {}\nchain_file = {}\n\n",
                quoted(&https.certificate_name),
                path(&https.certificate_file),
                path(&https.private_key_file),
                path(&https.chain_file)
            ));
            listeners.push_str(&format!(
                ", {{ protocol = \"HTTPS\", load_balancer_port = {}, instance_port = 80, certificate = {} }}",
                https.port,
                quoted(&https.certificate_name)
            ));
        }
        text.push_str(&format!(
            "[[load_balancers]]\nname = {}\ninstances = [{}]\nlisteners = [{listeners}]\n\
             health_check = {{ target = {}, interval = 5, timeout = 2, unhealthy_threshold = 2, healthy_threshold = 2 }}\n",
            quoted(&self.load_balancer),
            ids.join(", "),
            quoted(&self.health_target)
        ));
        text
    }
}

/// A running `sticky-bouncer run`; dropping it stops it (and so its children).
pub struct BouncerProcess {
    child: Child,
}

impl BouncerProcess {
    /// Runs `command` (the launcher, possibly behind `ip netns exec`) with its output in `log`.
    pub fn spawn(mut command: Command, log: &Path) -> std::io::Result<Self> {
        let file = std::fs::File::create(log)?;
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()?;
        Ok(Self { child })
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Whether it exited, and how.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM, then waits up to `bound` for it to stop Envoy and the control service and exit
    /// (SIGKILL after that); its exit status.
    pub fn stop(&mut self, bound: Duration) -> Option<std::process::ExitStatus> {
        if let Some(status) = self.try_wait() {
            return Some(status);
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + bound;
        while Instant::now() < deadline {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            // Polls the exit of a child process (no event to wait on without a runtime).
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for BouncerProcess {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(30));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_quotes_what_it_declares() {
        let file = BouncerFile {
            runtime_dir: "/tmp/run \"x\"".into(),
            api: "127.0.0.1:8000".parse().unwrap(),
            access_key: ("AKID".into(), "se\"cret".into()),
            store: "/tmp/db".into(),
            address_pool: "127.0.100.0/22".into(),
            port_offset: 8000,
            control_binary: "/bin/control".into(),
            control_args: vec!["--key-rotation".into(), "60".into()],
            envoy_binary: "/bin/envoy".into(),
            shell: ("native", "/lib/x.so".into()),
            admin_port: 9901,
            concurrency: 1,
            max_connections: None,
            instances: vec![("i-1".into(), "10.0.1.11:80".parse().unwrap())],
            load_balancer: "terraform-balancer".into(),
            health_target: "HTTP:80/health".into(),
            https: None,
            control_ca: Some(("/ca/ca.pem".into(), "/ca/ca-key.pem".into())),
        };
        let text = file.render();
        assert!(text.contains("[api.tls]\nca_certificate = \"/ca/ca.pem\""), "{text}");
        assert!(text.contains(r#"runtime_dir = "/tmp/run \"x\"""#), "{text}");
        assert!(text.contains(r#"access_keys = ["AKID:se\"cret"]"#), "{text}");
        assert!(
            text.contains("[instances.\"i-1\"]\nip = \"10.0.1.11\"\nports = { 80 = 80 }"),
            "{text}"
        );
        assert!(text.contains(r#"extra_args = ["--key-rotation", "60"]"#), "{text}");
    }
}
