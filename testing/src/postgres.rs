//! A PostgreSQL server of its own for a test: Debian's `postgresql` package's binaries, a fresh
//! cluster in a temporary directory, on a free loopback port, stopped and removed on drop. As
//! root (PostgreSQL refuses to run as root) it runs as the package's `postgres` user.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    #[error(
        "PostgreSQL's server binaries are not installed (/usr/lib/postgresql/<version>/bin): \
         apt-get install postgresql (.ci/run does)"
    )]
    NotInstalled,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("`{command}` failed: {output}")]
    Failed { command: String, output: String },
}

pub struct PostgresServer {
    bin: PathBuf,
    dir: PathBuf,
    pub port: u16,
    /// The user the server runs as when this process is root.
    run_as: Option<&'static str>,
}

/// The newest installed server's binaries.
fn server_binaries() -> Result<PathBuf, PostgresError> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| PostgresError::NotInstalled)?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or(PostgresError::NotInstalled)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl PostgresServer {
    /// Initialises and starts a server; its superuser is `sticky` (trusted on loopback).
    pub fn start() -> Result<Self, PostgresError> {
        Self::start_with(None)
    }

    /// [`PostgresServer::start`], offering TLS with `certificate` (PEM chain, leaf first) and
    /// its `private_key`.
    pub fn start_tls(certificate: &str, private_key: &str) -> Result<Self, PostgresError> {
        Self::start_with(Some((certificate, private_key)))
    }

    fn start_with(tls: Option<(&str, &str)>) -> Result<Self, PostgresError> {
        let bin = server_binaries()?;
        let run_as = is_root().then_some("postgres");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!("sticky-pg-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let server = Self {
            bin,
            port: crate::free_port()?,
            dir,
            run_as,
        };
        if let Some(user) = run_as {
            server.run(Command::new("chown").args(["-R", &format!("{user}:"), &server.dir.display().to_string()]))?;
        }
        let data = server.data().display().to_string();
        server.run(server.tool("initdb").args([
            "-D",
            &data,
            "-U",
            "sticky",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]))?;
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=400 -c shared_buffers=32MB",
            server.port,
            server.dir.display()
        );
        if let Some((certificate, private_key)) = tls {
            let (cert_file, key_file) = (server.dir.join("server.crt"), server.dir.join("server.key"));
            std::fs::write(&cert_file, certificate)?;
            std::fs::write(&key_file, private_key)?;
            // PostgreSQL refuses a key others can read.
            std::fs::set_permissions(&key_file, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
            if let Some(user) = run_as {
                server.run(
                    Command::new("chown")
                        .arg(format!("{user}:"))
                        .arg(&cert_file)
                        .arg(&key_file),
                )?;
            }
            options.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                cert_file.display(),
                key_file.display()
            ));
        }
        let log = server.dir.join("server.log").display().to_string();
        server.run(
            server
                .tool("pg_ctl")
                .args(["-D", &data, "-l", &log, "-o", &options, "-w", "start"]),
        )?;
        Ok(server)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// One of the server's binaries, run as the server's user.
    fn tool(&self, name: &str) -> Command {
        let path = self.bin.join(name);
        match self.run_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(path);
                command
            }
            None => Command::new(path),
        }
    }

    fn run(&self, command: &mut Command) -> Result<Output, PostgresError> {
        let output = command.current_dir(&self.dir).output()?;
        if output.status.success() {
            return Ok(output);
        }
        Err(PostgresError::Failed {
            command: format!("{command:?}"),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        })
    }

    /// Creates database `name`; its URL.
    pub fn create_database(&self, name: &str) -> Result<String, PostgresError> {
        self.run(
            self.tool("createdb")
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "sticky", name]),
        )?;
        Ok(self.url(name))
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://sticky@127.0.0.1:{}/{database}", self.port)
    }

    /// Runs `sql` in `database` with psql; its output (unaligned, tuples only).
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, PostgresError> {
        let output = self.run(
            self.tool("psql")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "sticky",
                    "-d",
                    database,
                ])
                .args(["-v", "ON_ERROR_STOP=1", "-At", "-c", sql]),
        )?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let data = self.data().display().to_string();
        let _ = self.run(self.tool("pg_ctl").args(["-D", &data, "-m", "immediate", "-w", "stop"]));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
