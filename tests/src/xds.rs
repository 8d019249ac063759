//! A bouncer configured entirely over xDS: demo targets, the control service as a process
//! (its listener rule: a 127.x.y.0/24 pool of its own and a port offset, so tests run side by
//! side unprivileged), and Envoys whose bootstrap holds only node, admin and the control
//! service's clusters. Load balancers are created through the API, as an operator would.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sticky_control::BootstrapFile;
use sticky_demo_target::DemoTargets;
use sticky_envoy::{ControlClientTls, EnvoyProcess, FilterShell, XdsBootstrap};
use sticky_testing::artifacts::build_control;
use sticky_testing::clients::{OscCli, trusting, venv_bin};
use sticky_testing::control_client::QueryClient;
use sticky_testing::control_process::ControlProcess;
pub use sticky_testing::eventually;
use sticky_testing::tls::ControlPlaneCa;

use crate::live::{ACCESS_KEY, HEALTH_CHECK};
use crate::{Reply, TARGET_IDS, agent, get};

/// Load balancer ports the tests use: 80 and 81 on each load balancer's address.
pub const PORTS: [u16; 2] = [80, 81];
/// Room for this many Envoys on one host (each shifts its ports by 2 × its index).
pub const ENVOYS_MAX: u16 = 4;

pub struct XdsBouncer {
    pub targets: DemoTargets,
    pub control: ControlProcess,
    pub envoys: Vec<EnvoyProcess>,
    /// The pool's network (`a.b.c.0`): load balancer n (in creation order) binds `a.b.c.n`.
    pub pool: Ipv4Addr,
    pub port_offset: u16,
    shell: FilterShell,
    /// osc-cli with a profile for this control service.
    osc: OscCli,
    agent: ureq::Agent,
    dir: tempfile::TempDir,
}

/// A 127.x.y.0/24 pool and an offset such that ports 80–81 (+ 2 per Envoy) are free on its first
/// three addresses.
/// The control service's flags for the listener rule of [`free_pool`]'s pool and offset.
pub fn listener_rule_args(pool: Ipv4Addr, port_offset: u16) -> Vec<String> {
    vec![
        "--lb-address-pool".to_owned(),
        format!("{pool}/24"),
        "--lb-port-offset".to_owned(),
        port_offset.to_string(),
    ]
}

pub fn free_pool() -> (Ipv4Addr, u16) {
    for attempt in 0..50u32 {
        // Tests of one run, and runs side by side, pick different pools.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let seed = (std::process::id() ^ nanos ^ attempt.wrapping_mul(2_654_435_761)).to_le_bytes();
        let random = [seed[0] ^ seed[3], seed[1], seed[2]];
        let pool = Ipv4Addr::new(127, 100 + random[0] % 150, random[1], 0);
        let first = Ipv4Addr::new(127, 100 + random[0] % 150, random[1], 1);
        let Ok(probe) = TcpListener::bind((first, 0)) else {
            continue;
        };
        let Ok(base) = probe.local_addr().map(|a| a.port()) else {
            continue;
        };
        drop(probe);
        if base < 1024 || u32::from(base) + 2 * u32::from(ENVOYS_MAX) + 2 > 65535 {
            continue;
        }
        let all_free = (1..=3u8).all(|host| {
            let address = Ipv4Addr::new(127, pool.octets()[1], pool.octets()[2], host);
            (0..2 * ENVOYS_MAX + 2).all(|i| TcpListener::bind((address, base + i)).is_ok())
        });
        if all_free {
            return (pool, base - PORTS[0]);
        }
    }
    panic!("no free 127.x.y.0/24 pool with free ports");
}

/// How an Envoy authenticates to `control`: its token on plain HTTP, the control plane's
/// certificates over TLS.
pub fn envoy_credentials(control: &ControlProcess, bootstrap: &mut XdsBootstrap) {
    bootstrap.token = control.feed_token.clone();
    bootstrap.tls = control.tls.as_ref().map(|tls| ControlClientTls {
        ca: tls.file("ca.pem"),
        certificate: tls.file("envoy.pem"),
        private_key: tls.file("envoy-key.pem"),
    });
}

/// Starts Envoy number `index` (in `dir/envoy-<index>`) following the control service
/// `control` over xDS; it shifts its listener ports by [`envoy_shift`]`(index)`.
pub fn start_envoy(shell: &FilterShell, control: &ControlProcess, dir: &Path, index: usize) -> EnvoyProcess {
    start_envoy_following(shell, control, &[control.address()], None, dir, index)
}

/// [`start_envoy`] following any of the control service's `replicas` (authenticating as to
/// `control`, one of them), and serving its API in front of them at `api_listener` when given.
pub fn start_envoy_following(
    shell: &FilterShell,
    control: &ControlProcess,
    replicas: &[SocketAddr],
    api_listener: Option<SocketAddr>,
    dir: &Path,
    index: usize,
) -> EnvoyProcess {
    assert!(index < usize::from(ENVOYS_MAX));
    let first = *replicas.first().expect("a control service");
    let admin_port = sticky_testing::free_port().expect("a port");
    let mut bootstrap = XdsBootstrap::new(shell.clone(), first, &format!("bouncer-{index}"), admin_port);
    bootstrap.control = replicas.to_vec();
    bootstrap.api_listener = api_listener;
    bootstrap.port_offset = envoy_shift(index);
    envoy_credentials(control, &mut bootstrap);
    EnvoyProcess::start_xds(&bootstrap, &dir.join(format!("envoy-{index}")), 1).unwrap_or_else(|e| panic!("{e}"))
}

/// One ELB call through boto3 (`tests/clients/elb.py`) against `endpoint` (verified with the
/// CA file `ca` over HTTPS); its output.
pub fn boto3_at(endpoint: &str, ca: Option<&Path>, args: &[&str]) -> String {
    let script = sticky_testing::artifacts::workspace_root().join("tests/clients/elb.py");
    let mut command = Command::new(venv_bin("python"));
    trusting(&mut command, ca);
    let output = command
        .arg(script)
        .args([endpoint, ACCESS_KEY.0, ACCESS_KEY.1])
        .args(args)
        .output()
        .expect("python runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "elb.py {args:?}: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    text
}

/// One OAPI call through osc-sdk-python (`tests/clients/oapi.py`) against `endpoint` (verified
/// with the CA file `ca` over HTTPS); its answer.
pub fn oapi_at(endpoint: &str, ca: Option<&Path>, call: &str, parameters: &serde_json::Value) -> serde_json::Value {
    let script = sticky_testing::artifacts::workspace_root().join("tests/clients/oapi.py");
    let mut command = Command::new(venv_bin("python"));
    trusting(&mut command, ca);
    let output = command
        .arg(script)
        .args([endpoint, ACCESS_KEY.0, ACCESS_KEY.1, call, &parameters.to_string()])
        .output()
        .expect("python runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "oapi.py {call} {parameters}: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("oapi.py {call}: {e}: {text}"))
}

/// How far Envoy number `index` shifts its listener ports (several Envoys on one host).
pub fn envoy_shift(index: usize) -> u16 {
    2 * u16::try_from(index).unwrap_or(0)
}

impl XdsBouncer {
    /// Three demo targets in the registry (no load balancer yet), the control service, and
    /// `envoys` Envoys following it over xDS.
    pub fn start(envoys: usize) -> Self {
        Self::start_with(envoys, None, false)
    }

    /// [`XdsBouncer::start`], the control service on plain HTTP requiring `token` of its peers.
    pub fn start_with_token(envoys: usize, token: &str) -> Self {
        Self::start_with(envoys, Some(token), false)
    }

    /// [`XdsBouncer::start`], the control service on TLS: Envoys present client certificates.
    pub fn start_over_tls(envoys: usize) -> Self {
        Self::start_with(envoys, None, true)
    }

    fn start_with(envoys: usize, token: Option<&str>, tls: bool) -> Self {
        let specs: Vec<(&str, u16)> = TARGET_IDS.iter().map(|id| (*id, 0)).collect();
        let targets = DemoTargets::start(&specs).expect("demo targets");
        let dir = tempfile::tempdir().expect("temp dir");
        let mut bootstrap = BootstrapFile::one_listener("unused", &targets.addresses());
        bootstrap.load_balancers.clear();
        let (pool, port_offset) = free_pool();
        let binary = build_control().unwrap_or_else(|e| panic!("{e}"));
        let mut args = listener_rule_args(pool, port_offset);
        if let Some(token) = token {
            args.extend(["--feed-token".to_owned(), token.to_owned()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (port, control_dir) = (
            sticky_testing::free_port().expect("a free port"),
            dir.path().join("control"),
        );
        let pki = tls.then(|| ControlPlaneCa::new(&dir.path().join("pki")).expect("the control plane's certificates"));
        let control = ControlProcess::start_with(&binary, &control_dir, port, &bootstrap, ACCESS_KEY, &args, pki)
            .unwrap_or_else(|e| panic!("{e}"));
        let shell = crate::shell_under_test().build().unwrap_or_else(|e| panic!("{e}"));
        let ca = control.tls.as_ref().map(|tls| tls.file("ca.pem"));
        let osc = OscCli::new(dir.path(), &control.url(), ACCESS_KEY, ca.as_deref()).expect("osc-cli profile");
        let mut bouncer = Self {
            targets,
            control,
            envoys: Vec::new(),
            pool,
            port_offset,
            shell,
            osc,
            agent: agent(),
            dir,
        };
        for _ in 0..envoys {
            bouncer.add_envoy();
        }
        bouncer
    }

    /// Starts one more Envoy following the control service.
    pub fn add_envoy(&mut self) {
        let envoy = start_envoy(&self.shell, &self.control, self.dir.path(), self.envoys.len());
        self.envoys.push(envoy);
    }

    pub fn api(&self) -> QueryClient {
        self.control.client(ACCESS_KEY)
    }

    /// The address load balancer number `n` (1 for the first created) binds.
    pub fn address(&self, n: u8) -> IpAddr {
        let [a, b, c, _] = self.pool.octets();
        IpAddr::V4(Ipv4Addr::new(a, b, c, n))
    }

    /// Where Envoy `envoy` serves listener `port` of load balancer number `n`.
    pub fn listener(&self, envoy: usize, n: u8, port: u16) -> SocketAddr {
        SocketAddr::new(self.address(n), port + self.port_offset + envoy_shift(envoy))
    }

    pub fn try_get(&self, at: SocketAddr, path: &str, cookies: &[(&str, &str)]) -> Result<Reply, String> {
        get(&self.agent, &format!("http://{at}"), path, cookies, &[])
    }

    pub fn get(&self, at: SocketAddr, path: &str, cookies: &[(&str, &str)]) -> Reply {
        self.try_get(at, path, cookies)
            .unwrap_or_else(|e| panic!("GET {at}{path}: {e}"))
    }

    /// Over TLS: the CA the API's clients verify the control service with.
    pub fn control_ca(&self) -> Option<std::path::PathBuf> {
        self.control.tls.as_ref().map(|tls| tls.file("ca.pem"))
    }

    /// One ELB call through boto3 (`tests/clients/elb.py`); its output.
    pub fn boto3(&self, args: &[&str]) -> String {
        boto3_at(&self.control.url(), self.control_ca().as_deref(), args)
    }

    /// One `osc-cli lbu` call, as an operator types it; its output.
    pub fn osc(&self, args: &[&str]) -> String {
        self.osc.lbu(args)
    }

    /// One `osc-cli api` call (OAPI), as an operator types it; its output.
    pub fn osc_api(&self, args: &[&str]) -> String {
        self.osc.api(args)
    }

    /// [`XdsBouncer::osc_api`]; a refused call's output as the error.
    pub fn try_osc_api(&self, args: &[&str]) -> Result<String, String> {
        self.osc.try_api(args)
    }

    /// One OAPI call through osc-sdk-python; its answer.
    pub fn oapi(&self, call: &str, parameters: &serde_json::Value) -> serde_json::Value {
        oapi_at(&self.control.url(), self.control_ca().as_deref(), call, parameters)
    }

    /// Load balancer `name` with HTTP listeners `ports` (instance port 80), created with boto3,
    /// the live system's health check, and the three targets registered.
    pub fn create_with_targets(&self, name: &str, ports: &[&str]) {
        let mut create = vec!["create", name];
        create.extend(ports);
        self.boto3(&create);
        self.configure_health_check(name);
        let mut register = vec!["register", name];
        register.extend(TARGET_IDS);
        self.boto3(&register);
    }

    /// The live system's health check on load balancer `name`: HTTP, so a target answering
    /// its health page is in service at its first probe.
    pub fn configure_health_check(&self, name: &str) {
        let mut params = vec![("LoadBalancerName", name)];
        params.extend(HEALTH_CHECK);
        self.api().call("ConfigureHealthCheck", &params).expect("api").ok();
    }

    /// Waits until `at` answers, from any target.
    pub fn wait_served(&self, at: SocketAddr) {
        eventually(Duration::from_secs(10), &format!("{at} serves"), || {
            self.try_get(at, "/", &[]).is_ok_and(|r| r.status == 200)
        });
    }
}
