//! A python-socketio client as the tests' Socket.IO user (`tests/clients/socketio_client.py`):
//! it stays connected while the test changes the system around it, and says on demand which VM
//! holds its connection and over which transport.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use serde_json::Value;
use sticky_testing::artifacts::workspace_root;
use sticky_testing::clients::venv_bin;

pub struct SocketIoClient {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl SocketIoClient {
    /// Connects to `url` over `transports` (`polling,websocket` or `websocket`) sending
    /// `cookie` as its Cookie header (none when empty). `Err` carries why it could not connect.
    pub fn connect(url: &str, transports: &str, cookie: &str) -> Result<Self, String> {
        let script = workspace_root().join("tests/clients/socketio_client.py");
        let mut child = Command::new(venv_bin("python"))
            .arg(script)
            .args([url, transports, cookie])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("python-socketio client: {e}"))?;
        let (Some(input), Some(output)) = (child.stdin.take(), child.stdout.take()) else {
            return Err("no pipes to the client".to_owned());
        };
        let mut client = Self {
            child,
            input,
            output: BufReader::new(output),
        };
        let first = client.line();
        match first.get("error") {
            Some(error) => Err(error.to_string()),
            None => Ok(client),
        }
    }

    fn line(&mut self) -> Value {
        let mut line = String::new();
        match self.output.read_line(&mut line) {
            Ok(n) if n > 0 => serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}")),
            _ => serde_json::json!({"error": "the client exited"}),
        }
    }

    /// Asks the server which VM holds the connection: `{target, transport, connects,
    /// connected}`, or `{error}`.
    pub fn whoami(&mut self) -> Value {
        if self
            .input
            .write_all(b"whoami\n")
            .and_then(|()| self.input.flush())
            .is_err()
        {
            return serde_json::json!({"error": "the client exited"});
        }
        self.line()
    }

    /// The VM holding the connection, over a WebSocket on the same connection as ever: panics
    /// otherwise.
    pub fn websocket_target(&mut self) -> String {
        let answer = self.whoami();
        assert_eq!(answer["transport"], "websocket", "{answer}");
        assert_eq!(answer["connects"], 1, "the client connected again: {answer}");
        answer["target"]
            .as_str()
            .unwrap_or_else(|| panic!("no target: {answer}"))
            .to_owned()
    }
}

impl Drop for SocketIoClient {
    fn drop(&mut self) {
        // The server sees the connection drop, as when a browser tab closes.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A WebSocket over HTTP/2 (RFC 8441) to Socket.IO at `authority` (`host:port`, cleartext
/// HTTP/2), which asks `count` times which VM holds it (`tests/clients/websocket_h2.py`):
/// `{status, targets}` or `{error}`.
pub fn whoami_over_http2(authority: &str, count: usize, cookie: &str) -> Value {
    let (host, port) = authority.rsplit_once(':').expect("host:port");
    let output = Command::new(venv_bin("python"))
        .arg(workspace_root().join("tests/clients/websocket_h2.py"))
        .args([host, port, &count.to_string(), cookie])
        .output()
        .expect("python runs");
    let text = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("{e}: {text}{}", String::from_utf8_lossy(&output.stderr)))
}
