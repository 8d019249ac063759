//! HTTPS as the tests' clients speak it: curl over HTTP/2 or HTTP/1.1, trusting the test's CA,
//! resolving the load balancer's host name to the listener's address.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::STICKY_COOKIE;

/// What curl saw: the HTTP version and status, the Set-Cookie values, the body.
pub struct CurlReply {
    pub version: String,
    pub status: u16,
    pub set_cookies: Vec<String>,
    pub body: String,
}

impl CurlReply {
    pub fn target(&self) -> String {
        let value: Value = serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body));
        value["target"].as_str().unwrap().to_owned()
    }

    pub fn sticky_cookie(&self) -> Option<(String, String)> {
        self.set_cookies.iter().find_map(|line| {
            let (pair, attributes) = line.split_once(';').unwrap_or((line, ""));
            let value = pair.trim().strip_prefix(&format!("{STICKY_COOKIE}="))?;
            Some((value.to_owned(), attributes.to_owned()))
        })
    }
}

/// GET https://`host`:<port>/ at `at` over `http` (`--http2` or `--http1.1`), trusting `ca`,
/// with the stickiness cookie when given.
pub fn curl(at: SocketAddr, host: &str, ca: &Path, http: &str, cookie: Option<&str>) -> Result<CurlReply, String> {
    let mut command = Command::new("curl");
    command
        .args(["-sS", "--max-time", "5", http, "--cacert"])
        .arg(ca)
        .args(["--resolve", &format!("{host}:{}:{}", at.port(), at.ip()), "-D", "-"]);
    if let Some(cookie) = cookie {
        command.args(["-H", &format!("Cookie: {STICKY_COOKIE}={cookie}")]);
    }
    let output = command
        .arg(format!("https://{host}:{}/", at.port()))
        .output()
        .map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no head in {text}"))?;
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let mut words = status_line.split_whitespace();
    let version = words.next().unwrap_or_default().to_owned();
    let status = words.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let set_cookies = lines
        .filter_map(|l| l.split_once(':'))
        .filter(|(name, _)| name.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, value)| value.trim().to_owned())
        .collect();
    Ok(CurlReply {
        version,
        status,
        set_cookies,
        body: body.to_owned(),
    })
}
