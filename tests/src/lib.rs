//! Helpers for the end-to-end tests: a stack of real demo targets behind a real Envoy running
//! the filter, and an HTTP client that keeps no cookies of its own (the tests choose exactly
//! what each request carries).

// Test support: an expectation that fails is a test failure, reported by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod bench;
pub mod browser;
pub mod hosts;
pub mod https;
pub mod launcher;
pub mod live;
pub mod resetting;
pub mod scale_down;
pub mod scenarios;
pub mod soak;
pub mod socketio;
pub mod traffic;
pub mod xds;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use sticky_core::{FilterState, PolicyState};
use sticky_demo_target::{DemoTargets, Echo};
use sticky_envoy::{EnvoyBootstrap, EnvoyProcess, ShellKind};
use sticky_testing::artifacts::build_filter;
use sticky_testing::fixtures::{cookie_header, cookie_set, filter_state, named_targets};
use sticky_testing::random_key_ring;

pub const LOAD_BALANCER: &str = "terraform-balancer";
pub const STICKY_COOKIE: &str = "AWSELB";
pub const TARGET_IDS: [&str; 3] = ["i-target1", "i-target2", "i-target3"];

/// The id of the key that sealed a stickiness cookie (its bytes 1–2).
pub fn key_id(cookie: &str) -> u16 {
    use base64::Engine;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cookie)
        .expect("base64url cookie");
    u16::from_be_bytes([raw[1], raw[2]])
}

/// The shell of the filter the end-to-end tests run: `$STICKY_SHELL` (`native` or `wasm`), else
/// the default one. `scripts/test` runs this crate's tests once per shell.
pub fn shell_under_test() -> ShellKind {
    match std::env::var("STICKY_SHELL").as_deref() {
        Ok("wasm") => ShellKind::Wasm,
        Ok("native") => ShellKind::Native,
        Ok(other) => panic!("STICKY_SHELL={other}: expected native or wasm"),
        Err(_) => ShellKind::default(),
    }
}

/// Three demo targets and an Envoy with the filter in front of them.
pub struct Stack {
    pub targets: DemoTargets,
    pub envoy: EnvoyProcess,
    pub state: FilterState,
    agent: ureq::Agent,
    _dir: tempfile::TempDir,
}

/// One response, as the tests look at it.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub set_cookies: Vec<String>,
    /// The session header ([`SESSION_HEADER`]) the response carries, if any.
    pub session: Option<String>,
    pub body: String,
}

/// The session header the tests configure for clients without cookies.
pub const SESSION_HEADER: &str = "x-sticky-session";

impl Reply {
    /// The demo target's echo (every path but /login, /logout, /health).
    pub fn echo(&self) -> Echo {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not an echo ({e}): {}", self.body))
    }

    /// The target that answered, if a demo target's echo answered.
    pub fn try_target(&self) -> Option<String> {
        let value: serde_json::Value = serde_json::from_str(&self.body).ok()?;
        value["target"].as_str().map(str::to_owned)
    }

    /// The target that answered (from the demo target's JSON).
    pub fn target(&self) -> String {
        let value: serde_json::Value =
            serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body));
        value["target"]
            .as_str()
            .unwrap_or_else(|| panic!("no target in {}", self.body))
            .to_owned()
    }

    /// The `Set-Cookie` header for cookie `name`, if the response has one.
    pub fn set_cookie(&self, name: &str) -> Option<&str> {
        self.set_cookies
            .iter()
            .map(String::as_str)
            .find(|c| c.starts_with(&format!("{name}=")))
    }

    /// The value the response sets for cookie `name`.
    pub fn cookie_value(&self, name: &str) -> Option<String> {
        cookie_set(self.set_cookies.iter().map(String::as_str), name)
    }

    /// The stickiness cookie's new value, if one was issued.
    pub fn sticky_cookie(&self) -> Option<String> {
        self.cookie_value(STICKY_COOKIE)
    }
}

/// An HTTP client that keeps no cookies and follows no redirects.
pub fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .redirects(0)
        .build()
}

/// GET `base` + `path` with exactly these cookies and extra headers. HTTP error statuses are
/// replies; only transport failures are errors.
pub fn get(
    agent: &ureq::Agent,
    base: &str,
    path: &str,
    cookies: &[(&str, &str)],
    headers: &[(&str, &str)],
) -> Result<Reply, String> {
    request(agent, "GET", base, path, cookies, headers)
}

/// [`get`] with another method (a POST or PUT sends a small body).
pub fn request(
    agent: &ureq::Agent,
    method: &str,
    base: &str,
    path: &str,
    cookies: &[(&str, &str)],
    headers: &[(&str, &str)],
) -> Result<Reply, String> {
    let mut request = agent.request(method, &format!("{base}{path}"));
    if !cookies.is_empty() {
        request = request.set("Cookie", &cookie_header(cookies));
    }
    for (name, value) in headers {
        request = request.set(name, value);
    }
    let sent = match method {
        "POST" | "PUT" | "PATCH" => request.send_string("form=1"),
        _ => request.call(),
    };
    let response = match sent {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(e) => return Err(e.to_string()),
    };
    let status = response.status();
    let set_cookies = response.all("set-cookie").into_iter().map(str::to_owned).collect();
    let session = response.header(SESSION_HEADER).map(str::to_owned);
    let body = response.into_string().unwrap_or_default();
    Ok(Reply {
        status,
        set_cookies,
        session,
        body,
    })
}

impl Stack {
    /// Starts the stack with `policy` on the listener.
    pub fn start(policy: Option<PolicyState>) -> Self {
        Self::start_with(policy, |_| {})
    }

    /// Starts the stack after `adjust` has had a look at the state.
    pub fn start_with(policy: Option<PolicyState>, adjust: impl FnOnce(&mut FilterState)) -> Self {
        Self::start_on(shell_under_test(), policy, adjust)
    }

    /// Starts the stack with Envoy running `shell`.
    pub fn start_on(shell: ShellKind, policy: Option<PolicyState>, adjust: impl FnOnce(&mut FilterState)) -> Self {
        let specs: Vec<(&str, u16)> = TARGET_IDS.iter().map(|id| (*id, 0)).collect();
        let targets = DemoTargets::start(&specs).expect("start demo targets");
        let listed = named_targets(targets.addresses());
        let mut state = filter_state(policy, listed, random_key_ring(1).expect("key ring"));
        adjust(&mut state);
        let shell = shell.build().unwrap_or_else(|e| panic!("{e}"));
        let bootstrap = EnvoyBootstrap::sticky(shell, state.clone()).expect("bootstrap");
        let dir = tempfile::tempdir().expect("temp dir");
        let envoy = EnvoyProcess::start(&bootstrap, dir.path(), 1).unwrap_or_else(|e| panic!("{e}"));
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(10))
            .redirects(0)
            .build();
        Self {
            targets,
            envoy,
            state,
            agent,
            _dir: dir,
        }
    }

    /// GET `path` with exactly these cookies and extra headers.
    pub fn get(&self, path: &str, cookies: &[(&str, &str)], headers: &[(&str, &str)]) -> Reply {
        get(&self.agent, &self.envoy.url(), path, cookies, headers)
            .unwrap_or_else(|e| panic!("GET {path}: {e}\nenvoy log:\n{}", self.envoy.log_tail()))
    }

    /// Sends raw bytes as one HTTP/1.1 request and returns the status code Envoy answered
    /// (0 if the connection closed without a status line).
    pub fn raw_request(&self, request: &[u8]) -> u16 {
        let mut stream = TcpStream::connect(("127.0.0.1", self.envoy.listen_port)).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        stream.write_all(request).expect("write");
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        let text = String::from_utf8_lossy(&response);
        text.split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0)
    }

    /// `ip:port` of target `id`.
    pub fn address_of(&self, id: &str) -> String {
        self.targets
            .addresses()
            .into_iter()
            .find(|(t, _)| t == id)
            .map(|(_, a)| a.to_string())
            .unwrap_or_else(|| panic!("no target {id}"))
    }

    /// The targets that answered `n` requests without any cookie.
    pub fn spread(&self, n: usize, cookies: &[(&str, &str)], headers: &[(&str, &str)]) -> HashSet<String> {
        (0..n).map(|_| self.get("/", cookies, headers).target()).collect()
    }

    /// The filter's counter `sticky.<name>`.
    pub fn counter(&self, name: &str) -> u64 {
        self.envoy.sticky_counter(name).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Envoy's log, for checking the filter never panicked.
    pub fn envoy_log(&self) -> String {
        std::fs::read_to_string(&self.envoy.log).unwrap_or_default()
    }

    /// Path of the `.wasm` under test.
    pub fn wasm() -> PathBuf {
        build_filter().unwrap_or_else(|e| panic!("{e}"))
    }
}
