//! HAProxy (Debian package) with `cookie … insert indirect nocache`: the original bouncer's
//! stickiness, as a peer in the benchmarks.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// The cookie HAProxy inserts.
pub const HAPROXY_COOKIE: &str = "HASRV";

/// A running HAProxy; killed when dropped.
pub struct HaproxyProcess {
    child: Child,
    pub port: u16,
    https: bool,
}

/// The configuration: one thread (as Envoy runs one worker), round robin over `targets`,
/// each target's cookie value its index; with `tls` (a PEM file of the certificate chain and
/// its key), HTTPS with ALPN h2 and http/1.1, TLS 1.2 at least.
pub fn config(port: u16, targets: &[SocketAddr], tls: Option<&Path>) -> String {
    let bind = match tls {
        Some(pem) => format!(
            "127.0.0.1:{port} ssl crt {} alpn h2,http/1.1 ssl-min-ver TLSv1.2",
            pem.display()
        ),
        None => format!("127.0.0.1:{port}"),
    };
    let mut text = format!(
        "global
    nbthread 1
    maxconn 4000

defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    option http-keep-alive

frontend bench
    bind {bind}
    default_backend targets

backend targets
    balance roundrobin
    cookie {HAPROXY_COOKIE} insert indirect nocache
"
    );
    for (i, target) in targets.iter().enumerate() {
        text.push_str(&format!("    server t{i} {target} cookie t{i}\n"));
    }
    text
}

/// `haproxy` from PATH, else where Debian puts it (`/usr/sbin`, often not on a user's PATH).
fn binary() -> std::path::PathBuf {
    let sbin = Path::new("/usr/sbin/haproxy");
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|dir| dir.join("haproxy").is_file()))
        .unwrap_or(false);
    if !on_path && sbin.is_file() {
        sbin.to_path_buf()
    } else {
        "haproxy".into()
    }
}

impl HaproxyProcess {
    /// Writes the configuration into `dir` and starts HAProxy in the foreground, bound to
    /// `cpus` if given; returns once it accepts connections.
    pub fn start(dir: &Path, targets: &[SocketAddr], cpus: Option<&str>) -> anyhow::Result<Self> {
        Self::start_with(dir, targets, cpus, None)
    }

    /// [`HaproxyProcess::start`], serving HTTPS with `tls` (see [`config`]) when given.
    pub fn start_with(
        dir: &Path,
        targets: &[SocketAddr],
        cpus: Option<&str>,
        tls: Option<&Path>,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let port = sticky_testing::free_port()?;
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, config(port, targets, tls))?;
        let mut command = match cpus {
            Some(cpus) => {
                let mut command = Command::new("taskset");
                command.args(["-c", cpus]).arg(binary());
                command
            }
            None => Command::new(binary()),
        };
        let log = std::fs::File::create(dir.join("haproxy.log"))?;
        let mut child = command
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot run haproxy; install it with scripts/bench-setup (apt-get install haproxy)")?;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Some(status) = child.try_wait()? {
                let log = std::fs::read_to_string(dir.join("haproxy.log")).unwrap_or_default();
                bail!("haproxy exited ({status}):\n{log}");
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(Self {
                    child,
                    port,
                    https: tls.is_some(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        bail!("haproxy did not listen on {port} within 10 s")
    }

    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `haproxy -v`'s first line.
    pub fn version() -> String {
        Command::new(binary())
            .arg("-v")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).lines().next().map(str::to_owned))
            .unwrap_or_else(|| "haproxy (version unknown)".to_owned())
    }
}

impl Drop for HaproxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_inserts_an_indirect_cookie_per_server() {
        let text = config(8080, &["127.0.0.1:9001".parse().expect("addr")], None);
        assert!(text.contains("bind 127.0.0.1:8080"));
        assert!(text.contains("cookie HASRV insert indirect nocache"));
        assert!(text.contains("server t0 127.0.0.1:9001 cookie t0"));
        assert!(text.contains("nbthread 1"));
    }
}
