//! The live system for end-to-end tests: demo targets, the control service as a process, and
//! Envoys that take their listener, route, cluster and endpoints from its xDS and whose filter
//! follows its state feed.

use std::collections::HashSet;
use std::time::Duration;

use sticky_control::BootstrapFile;
use sticky_demo_target::DemoTargets;
use sticky_envoy::EnvoyProcess;
use sticky_testing::artifacts::build_control;
use sticky_testing::control_client::{ApiReply, QueryClient};
use sticky_testing::control_process::ControlProcess;
pub use sticky_testing::eventually;

use crate::hosts::{Placement, TargetProcesses};
use crate::xds::{envoy_shift, free_pool, listener_rule_args, start_envoy_following};
use crate::{LOAD_BALANCER, Reply, TARGET_IDS, agent, get};

pub const ACCESS_KEY: (&str, &str) = ("AKIDLIVETEST", "live-test-secret");

/// Health check of the live system: HTTP, every 5 s (ELB's minimum), 2 failures / 2 successes.
pub const HEALTH_CHECK: [(&str, &str); 5] = [
    ("HealthCheck.Target", "HTTP:80/health"),
    ("HealthCheck.Interval", "5"),
    ("HealthCheck.Timeout", "2"),
    ("HealthCheck.UnhealthyThreshold", "2"),
    ("HealthCheck.HealthyThreshold", "2"),
];

/// What the live system needs of its targets: their instance ids and addresses.
pub trait Targets {
    fn addresses(&self) -> Vec<(String, std::net::SocketAddr)>;
}

impl Targets for DemoTargets {
    fn addresses(&self) -> Vec<(String, std::net::SocketAddr)> {
        DemoTargets::addresses(self)
    }
}

impl Targets for sticky_testing::flask::FlaskTargets {
    fn addresses(&self) -> Vec<(String, std::net::SocketAddr)> {
        sticky_testing::flask::FlaskTargets::addresses(self)
    }
}

impl Targets for TargetProcesses {
    fn addresses(&self) -> Vec<(String, std::net::SocketAddr)> {
        TargetProcesses::addresses(self)
    }
}

pub struct Live<T = DemoTargets> {
    pub targets: T,
    /// The control service (the first replica when several share PostgreSQL).
    pub control: ControlProcess,
    /// The other replicas.
    pub more_replicas: Vec<ControlProcess>,
    pub envoys: Vec<EnvoyProcess>,
    /// Where Envoy 0 serves the control service's API in front of the replicas.
    pub api_front: Option<std::net::SocketAddr>,
    pub postgres: Option<sticky_testing::postgres::PostgresServer>,
    agent: ureq::Agent,
    _dir: tempfile::TempDir,
}

impl Live {
    /// Three demo targets (in this process) registered with `terraform-balancer` (listener
    /// 80), the control service (with `control_args`), and `envoys` Envoys following it.
    /// Returns once every target is in service and every Envoy balances over all three.
    pub fn start(envoys: usize, control_args: &[&str]) -> Self {
        let specs: Vec<(&str, u16)> = TARGET_IDS.iter().map(|id| (*id, 0)).collect();
        Self::start_with(DemoTargets::start(&specs).expect("demo targets"), envoys, control_args)
    }

    /// [`Live::start`] with the control service on TLS (Envoys present client certificates).
    pub fn start_over_tls(envoys: usize, control_args: &[&str]) -> Self {
        Self::start_replicated_over_tls(envoys, 1, control_args)
    }

    /// [`Live::start_replicated`] over TLS: replicas ask each other presenting their certificate.
    pub fn start_replicated_over_tls(envoys: usize, replicas: usize, control_args: &[&str]) -> Self {
        let specs: Vec<(&str, u16)> = TARGET_IDS.iter().map(|id| (*id, 0)).collect();
        let targets = DemoTargets::start(&specs).expect("demo targets");
        Self::start_all(targets, envoys, replicas, control_args, true)
    }
}

impl Live<TargetProcesses> {
    /// [`Live::start`] with the three targets as processes placed by `placement`.
    pub fn start_processes(placement: Placement, envoys: usize, control_args: &[&str]) -> Self {
        let targets = TargetProcesses::start(&TARGET_IDS, placement).unwrap_or_else(|e| panic!("{e:#}"));
        Self::start_with(targets, envoys, control_args)
    }
}

impl<T: Targets> Live<T> {
    /// [`Live::start`] in front of `targets` (instance ids [`TARGET_IDS`]).
    pub fn start_with(targets: T, envoys: usize, control_args: &[&str]) -> Self {
        Self::start_replicated(targets, envoys, 1, control_args)
    }

    /// [`Live::start_with`], with `replicas` replicas of the control service sharing a
    /// PostgreSQL of their own when more than one (Envoys follow any of them; Envoy 0 serves
    /// their API in front of them, where [`Live::api`] calls).
    pub fn start_replicated(targets: T, envoys: usize, replicas: usize, control_args: &[&str]) -> Self {
        Self::start_all(targets, envoys, replicas, control_args, false)
    }

    fn start_all(targets: T, envoys: usize, replicas: usize, control_args: &[&str], tls: bool) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let pki = tls.then(|| {
            sticky_testing::tls::ControlPlaneCa::new(&dir.path().join("pki")).expect("the control plane's certificates")
        });
        let bootstrap = BootstrapFile::one_listener(LOAD_BALANCER, &targets.addresses());
        let binary = build_control().unwrap_or_else(|e| panic!("{e}"));
        // The load balancer is the pool's first: it binds `a.b.c.1`, port 80 + the offset.
        let (pool, port_offset) = free_pool();
        let mut args = listener_rule_args(pool, port_offset);
        args.extend(control_args.iter().map(|a| (*a).to_owned()));
        let postgres = (replicas > 1).then(|| {
            let server = sticky_testing::postgres::PostgresServer::start().unwrap_or_else(|e| panic!("{e}"));
            let url = server.create_database("sticky").unwrap_or_else(|e| panic!("{e}"));
            args.extend(["--store".to_owned(), url]);
            server
        });
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut controls: Vec<ControlProcess> = (0..replicas.max(1))
            .map(|n| {
                let (control_dir, port) = (
                    dir.path().join(format!("control-{n}")),
                    sticky_testing::free_port().expect("a free port"),
                );
                ControlProcess::start_with(&binary, &control_dir, port, &bootstrap, ACCESS_KEY, &args, pki.clone())
                    .unwrap_or_else(|e| panic!("{e}"))
            })
            .collect();
        let control = controls.remove(0);
        let addresses: Vec<std::net::SocketAddr> = std::iter::once(control.address())
            .chain(controls.iter().map(ControlProcess::address))
            .collect();
        let api_front = (replicas > 1).then(|| {
            let port = sticky_testing::free_port().expect("a free port");
            std::net::SocketAddr::from(([127, 0, 0, 1], port))
        });
        let shell = crate::shell_under_test().build().unwrap_or_else(|e| panic!("{e}"));
        let [a, b, c, _] = pool.octets();
        let envoys = (0..envoys)
            .map(|i| {
                let front = if i == 0 { api_front } else { None };
                let mut envoy = start_envoy_following(&shell, &control, &addresses, front, dir.path(), i);
                envoy.serve_at(std::net::SocketAddr::from((
                    [a, b, c, 1],
                    80 + port_offset + envoy_shift(i),
                )));
                envoy
            })
            .collect();
        let live = Self {
            targets,
            control,
            more_replicas: controls,
            envoys,
            api_front,
            postgres,
            agent: agent(),
            _dir: dir,
        };
        live.wait_all_in_service();
        for i in 0..live.envoys.len() {
            eventually(
                Duration::from_secs(10),
                "each Envoy balances over the three targets",
                || live.spread(i, 12, &[]).len() == 3,
            );
        }
        live
    }

    /// The API: through Envoy 0's front when there are replicas, else the control service.
    pub fn api(&self) -> QueryClient {
        match self.api_front {
            Some(front) => QueryClient::new(front.to_string(), ACCESS_KEY.0, ACCESS_KEY.1),
            None => self.control.client(ACCESS_KEY),
        }
    }

    /// Where [`Live::api`] calls (`host:port`).
    pub fn api_authority(&self) -> String {
        match self.api_front {
            Some(front) => front.to_string(),
            None => self.control.address().to_string(),
        }
    }

    /// Replica `n` of the control service (0 is [`Live::control`]).
    pub fn replica_mut(&mut self, n: usize) -> &mut ControlProcess {
        match n {
            0 => &mut self.control,
            n => &mut self.more_replicas[n - 1],
        }
    }

    /// How many replicas of the control service there are.
    pub fn replica_count(&self) -> usize {
        1 + self.more_replicas.len()
    }

    /// The replica that leads now (health checks, key rotation), if one answers that it does.
    pub fn leader(&self) -> Option<usize> {
        (0..self.replica_count()).find(|n| {
            let replica = if *n == 0 {
                &self.control
            } else {
                &self.more_replicas[n - 1]
            };
            replica
                .agent()
                .get(&format!("{}/metrics", replica.url()))
                .call()
                .ok()
                .and_then(|r| r.into_string().ok())
                .is_some_and(|text| text.lines().any(|l| l == "sticky_control_leader 1"))
        })
    }

    /// A signed API call that must succeed.
    pub fn call(&self, action: &str, params: &[(&str, &str)]) -> ApiReply {
        let mut all = vec![("LoadBalancerName", LOAD_BALANCER)];
        all.extend_from_slice(params);
        self.api().call(action, &all).unwrap_or_else(|e| panic!("{e}")).ok()
    }

    /// Puts listener 80 under an LB cookie policy (`LBCookie`, 300 s) and starts a session on
    /// Envoy `envoy`: the first request after the API answered already gets a cookie (an answer
    /// means "in force"). Returns the cookie and the target it pins.
    pub fn lb_cookie_session(&self, envoy: usize) -> (String, String) {
        self.create_lb_cookie_policy("LBCookie", 300);
        self.set_policy(Some("LBCookie"));
        let first = self.get(envoy, "/", &[]);
        let cookie = first
            .sticky_cookie()
            .expect("an LB cookie on the first request after the API answered");
        (cookie, first.target())
    }

    pub fn create_lb_cookie_policy(&self, name: &str, period: u64) {
        let period = period.to_string();
        self.call(
            "CreateLBCookieStickinessPolicy",
            &[("PolicyName", name), ("CookieExpirationPeriod", &period)],
        );
    }

    pub fn create_app_cookie_policy(&self, name: &str, cookie: &str) {
        self.call(
            "CreateAppCookieStickinessPolicy",
            &[("PolicyName", name), ("CookieName", cookie)],
        );
    }

    /// SetLoadBalancerPoliciesOfListener on port 80; `None` removes stickiness.
    pub fn set_policy(&self, name: Option<&str>) {
        match name {
            Some(name) => self.call(
                "SetLoadBalancerPoliciesOfListener",
                &[("LoadBalancerPort", "80"), ("PolicyNames.member.1", name)],
            ),
            None => self.call(
                "SetLoadBalancerPoliciesOfListener",
                &[("LoadBalancerPort", "80"), ("PolicyNames", "")],
            ),
        };
    }

    /// Turns ConnectionDraining on with `timeout_seconds`, and session draining when `sessions`.
    pub fn enable_draining(&self, timeout_seconds: u64, sessions: bool) {
        let timeout = timeout_seconds.to_string();
        let sessions = sessions.to_string();
        self.call(
            "ModifyLoadBalancerAttributes",
            &[
                ("LoadBalancerAttributes.ConnectionDraining.Enabled", "true"),
                ("LoadBalancerAttributes.ConnectionDraining.Timeout", &timeout),
                (
                    "LoadBalancerAttributes.AdditionalAttributes.member.1.Key",
                    "sticky.session_draining.enabled",
                ),
                ("LoadBalancerAttributes.AdditionalAttributes.member.1.Value", &sessions),
            ],
        );
    }

    pub fn instance_state(&self, id: &str) -> String {
        self.call("DescribeInstanceHealth", &[("Instances.member.1.InstanceId", id)])
            .field("State")
            .unwrap_or_default()
    }

    pub fn wait_all_in_service(&self) {
        for id in TARGET_IDS {
            eventually(Duration::from_secs(15), "every target in service", || {
                self.instance_state(id) == "InService"
            });
        }
    }

    /// GET through Envoy `envoy`.
    pub fn try_get(&self, envoy: usize, path: &str, cookies: &[(&str, &str)]) -> Result<Reply, String> {
        get(&self.agent, &self.envoys[envoy].url(), path, cookies, &[])
    }

    pub fn get(&self, envoy: usize, path: &str, cookies: &[(&str, &str)]) -> Reply {
        self.try_get(envoy, path, cookies)
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// The targets that answered `n` requests carrying `cookies`.
    pub fn spread(&self, envoy: usize, n: usize, cookies: &[(&str, &str)]) -> HashSet<String> {
        (0..n)
            .filter_map(|_| self.try_get(envoy, "/", cookies).ok())
            .filter(|r| r.status == 200)
            .map(|r| r.target())
            .collect()
    }

    /// The filter counter `sticky.<name>` of Envoy `envoy`.
    pub fn counter(&self, envoy: usize, name: &str) -> u64 {
        self.envoys[envoy]
            .sticky_counter(name)
            .unwrap_or_else(|e| panic!("{e}"))
    }
}
