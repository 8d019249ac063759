//! Test support: the real `sticky-control` binary as a child process, and a SigV4-signing
//! client for its Query API.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;

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

/// How a call is sent.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// POST with a form body, signed for `elasticloadbalancing` (aws CLI, boto3).
    AwsPost,
    /// GET with the parameters in the query, signed for `lbu` with a dated Version (osc-cli).
    OscGet,
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    /// The text of the first `<tag>` element.
    pub fn field(&self, tag: &str) -> Option<String> {
        let open = format!("<{tag}>");
        let start = self.body.find(&open)? + open.len();
        let end = self.body[start..].find(&format!("</{tag}>"))? + start;
        Some(self.body[start..end].to_owned())
    }

    /// Every `<tag>` text.
    pub fn fields(&self, tag: &str) -> Vec<String> {
        let open = format!("<{tag}>");
        let close = format!("</{tag}>");
        self.body
            .match_indices(&open)
            .filter_map(|(i, _)| {
                let start = i + open.len();
                self.body[start..].find(&close).map(|end| self.body[start..start + end].to_owned())
            })
            .collect()
    }

    pub fn error_code(&self) -> Option<String> {
        self.body.contains("<ErrorResponse").then(|| self.field("Code")).flatten()
    }

    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(self.status, 200, "{}", self.body);
        self
    }

    #[track_caller]
    pub fn err(&self, status: u16, code: &str) {
        assert_eq!((self.status, self.error_code().as_deref()), (status, Some(code)), "{}", self.body);
    }
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
        let mut control = Self { child: None, port, dir, args };
        control.launch();
        control
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("control.log")).unwrap();
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

    /// A correctly signed call.
    pub fn call(&self, action: &str, params: &[(&str, &str)]) -> Reply {
        self.call_as(Style::AwsPost, action, params)
    }

    pub fn call_as(&self, style: Style, action: &str, params: &[(&str, &str)]) -> Reply {
        let (method, path, headers, body) = self.signed(style, action, params, ACCESS_KEY, SECRET_KEY, SystemTime::now());
        self.send(method, &path, &headers, &body)
    }

    /// Builds a signed request: (method, path and query, headers, body).
    pub fn signed(
        &self,
        style: Style,
        action: &str,
        params: &[(&str, &str)],
        access_key: &str,
        secret: &str,
        at: SystemTime,
    ) -> (&'static str, String, Vec<(String, String)>, Vec<u8>) {
        let today = time::OffsetDateTime::now_utc().date().to_string();
        let version = if style == Style::OscGet { today.as_str() } else { "2012-06-01" };
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("Action", action).append_pair("Version", version);
        for (name, value) in params {
            form.append_pair(name, value);
        }
        let encoded = form.finish();
        let host = format!("127.0.0.1:{}", self.port);
        let (method, path, body, service, mut headers) = match style {
            Style::AwsPost => (
                "POST",
                "/".to_owned(),
                encoded.into_bytes(),
                "elasticloadbalancing",
                vec![("content-type".to_owned(), "application/x-www-form-urlencoded; charset=utf-8".to_owned())],
            ),
            Style::OscGet => ("GET", format!("/?{encoded}"), Vec::new(), "lbu", vec![]),
        };
        headers.push(("host".to_owned(), host.clone()));
        let identity = Credentials::new(access_key, secret, None, None, "test").into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region("eu-west-2")
            .name(service)
            .time(at)
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let signable = SignableRequest::new(
            method,
            format!("http://{host}{path}"),
            headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
            SignableBody::Bytes(&body),
        )
        .unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        for (name, value) in instructions.headers() {
            headers.push((name.to_owned(), value.to_owned()));
        }
        (method, path, headers, body)
    }

    pub fn send(&self, method: &str, path: &str, headers: &[(String, String)], body: &[u8]) -> Reply {
        let mut request = ureq::request(method, &format!("{}{path}", self.url()));
        for (name, value) in headers {
            if name != "host" {
                request = request.set(name, value);
            }
        }
        let response = if body.is_empty() { request.call() } else { request.send_bytes(body) };
        let response = match response {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: {e}"),
        };
        Reply { status: response.status(), body: response.into_string().unwrap() }
    }

    /// The state feed of a listener (answers at once when `version` is not current).
    pub fn state(&self, lb: &str, port: u16, version: Option<u64>, timeout_ms: u64) -> (u16, serde_json::Value) {
        let mut url = format!("{}/v1/state/{lb}/{port}?timeout_ms={timeout_ms}", self.url());
        if let Some(v) = version {
            url.push_str(&format!("&version={v}"));
        }
        match ureq::get(&url).timeout(Duration::from_secs(60)).call() {
            Ok(r) => (r.status(), r.into_json().unwrap()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap_or_default()),
            Err(e) => panic!("{url}: {e}"),
        }
    }

    pub fn eds(&self, clusters: &[&str]) -> serde_json::Value {
        let body = serde_json::json!({"node": {"id": "test", "cluster": "test"}, "resource_names": clusters, "type_url": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"});
        ureq::post(&format!("{}/v3/discovery:endpoints", self.url())).send_json(body).unwrap().into_json().unwrap()
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
            ((*id).to_owned(), serde_json::json!({"ip": address.ip().to_string(), "ports": {"80": address.port()}}))
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
