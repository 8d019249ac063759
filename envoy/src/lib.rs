//! Envoy for the tests, the benchmarks and the demo (test support, not linked by the product):
//! finding (or explaining how to install) the Envoy binary, building the filter's shells,
//! rendering the hand-written static bootstrap (`envoy/bootstrap.yaml`), and running Envoy as a
//! child process, with either bootstrap (the production one is `sticky-envoy-bootstrap`'s).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use sticky_core::{ControlSource, FilterState, PluginConfig};
pub use sticky_envoy_bootstrap::{
    CONTROL_API_CLUSTER, CONTROL_CLUSTER, ControlClientTls, DEFAULT_CONNECT_TIMEOUT, FilterShell, XDS_CLUSTER,
    XdsBootstrap,
};
use sticky_envoy_bootstrap::{dynamic_module_filter, extend, timeout_ms, upstream_report, wasm_filter};

/// The bootstrap template; see the comments in the file.
pub const BOOTSTRAP_TEMPLATE: &str = include_str!("../bootstrap.yaml");

#[derive(Debug, thiserror::Error)]
pub enum EnvoyError {
    #[error("envoy binary not found ({0}); install it with: envoy/install-envoy.sh (or set ENVOY_BIN)")]
    EnvoyMissing(String),
    #[error(transparent)]
    Build(#[from] sticky_testing::artifacts::BuildError),
    #[error("envoy exited during start-up ({status}); its log {log}:\n{tail}")]
    Exited { status: String, log: String, tail: String },
    #[error("envoy was not ready within {0:?}; its log: {1}")]
    NotReady(Duration, String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The Envoy binary: `$ENVOY_BIN`, else the one `envoy/install-envoy.sh` put in `.venv`.
pub fn envoy_binary() -> Result<PathBuf, EnvoyError> {
    if let Some(bin) = std::env::var_os("ENVOY_BIN") {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(EnvoyError::EnvoyMissing(format!("ENVOY_BIN={}", bin.display())))
        };
    }
    let venv = std::env::var_os("STICKY_VENV").map_or_else(
        || sticky_testing::artifacts::workspace_root().join(".venv"),
        PathBuf::from,
    );
    let lib = venv.join("lib");
    let found = std::fs::read_dir(&lib).ok().and_then(|entries| {
        entries
            .filter_map(Result::ok)
            .map(|e| e.path().join("site-packages/envoy/_bin/envoy"))
            .find(|p| p.is_file())
    });
    found.ok_or_else(|| EnvoyError::EnvoyMissing(format!("nothing under {}", lib.display())))
}

/// Which shell of the filter Envoy runs: both decide with the same core, read the same plugin
/// configuration and state feed, and issue and honour the same cookies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ShellKind {
    /// The Envoy dynamic module (`filter/native`): in-process, the faster.
    #[default]
    Native,
    /// The proxy-wasm filter (`filter/wasm`): sandboxed in Envoy's V8.
    Wasm,
}

impl ShellKind {
    /// Builds this shell's artifact (once per process).
    pub fn build(self) -> Result<FilterShell, EnvoyError> {
        Ok(match self {
            ShellKind::Native => FilterShell::Native(sticky_testing::artifacts::build_native_filter()?),
            ShellKind::Wasm => FilterShell::Wasm(sticky_testing::artifacts::build_filter()?),
        })
    }
}

/// The HTTP filters in front of the router.
#[derive(Debug, Clone)]
pub enum HttpFilters {
    /// The router alone (Envoy without the filter).
    RouterOnly,
    /// The sticky filter (either shell) with this plugin configuration, then the router.
    Sticky {
        shell: FilterShell,
        config: Box<PluginConfig>,
    },
    /// A wasm filter that does nothing (`filter/noop`), then the router: the floor of any wasm
    /// filter's cost, for the benchmarks.
    NoopWasm { wasm: PathBuf },
    /// An Envoy dynamic module that does nothing (`filter/noop-native`, the file `lib<name>.so`),
    /// then the router: the floor of any native module's cost, for the benchmarks.
    ///
    /// With `sticky_routing`, Envoy also does the sticky filter's share of the routing: the
    /// `override_host` policy following the routing header (which the client then sends itself)
    /// and the route adding the upstream header. The benchmarks use it to tell Envoy's part of
    /// the filter's cost from the filter's own.
    NoopModule { module: PathBuf, sticky_routing: bool },
    /// Envoy's native `stateful_session` filter with cookie-based session state (the cookie
    /// names the upstream address in base64, unauthenticated), then the router: the peer the
    /// benchmarks compare with.
    NativeCookieSession { cookie_name: String, ttl_seconds: u64 },
}

/// Where the `targets` cluster's endpoints come from.
#[derive(Debug, Clone)]
pub enum Endpoints {
    /// Listed in the bootstrap.
    Static(Vec<SocketAddr>),
    /// From the control service's REST EDS, which the `control` cluster reaches (over TLS
    /// with `tls`: REST EDS cannot carry a token, so a control service on plain HTTP refuses it).
    Eds {
        control: SocketAddr,
        service_name: String,
        tls: Option<ControlClientTls>,
    },
}

/// Everything the bootstrap template needs.
#[derive(Debug, Clone)]
pub struct EnvoyBootstrap {
    pub node_id: String,
    pub admin_port: u16,
    pub listen_port: u16,
    pub routing_header: String,
    pub endpoints: Endpoints,
    pub filters: HttpFilters,
    /// See [`DEFAULT_CONNECT_TIMEOUT`].
    pub connect_timeout: Duration,
    /// TLS on the listener (HTTPS, ALPN h2 and http/1.1), from PEM files.
    pub tls: Option<ListenerTls>,
}

/// A listener's certificate chain and key, PEM files (the benchmarks' HTTPS rows).
#[derive(Debug, Clone)]
pub struct ListenerTls {
    pub certificate_chain: PathBuf,
    pub private_key: PathBuf,
}

impl EnvoyBootstrap {
    /// A bootstrap for the sticky filter serving `state`'s targets, on fresh ports.
    pub fn sticky(shell: FilterShell, state: FilterState) -> Result<Self, EnvoyError> {
        let endpoints = Endpoints::Static(state.targets.iter().filter_map(|t| t.address.parse().ok()).collect());
        let config = PluginConfig::new(Some(state));
        Ok(Self {
            node_id: "sticky-bouncer".to_owned(),
            admin_port: sticky_testing::free_port()?,
            listen_port: sticky_testing::free_port()?,
            routing_header: config.routing_header.clone(),
            endpoints,
            filters: HttpFilters::Sticky {
                shell: shell.clone(),
                config: Box::new(config),
            },
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            tls: None,
        })
    }

    /// A bootstrap following the control service at `control` (over TLS, with `tls`) for
    /// listener `port` of load balancer `load_balancer`: EDS for the endpoints, the state
    /// long-poll for the filter.
    pub fn following(
        shell: FilterShell,
        control: SocketAddr,
        tls: Option<ControlClientTls>,
        load_balancer: &str,
        port: u16,
        node_id: &str,
    ) -> Result<Self, EnvoyError> {
        let mut config = PluginConfig::new(None);
        config.control = Some(ControlSource {
            cluster: CONTROL_CLUSTER.to_owned(),
            authority: "sticky-control".to_owned(),
            load_balancer: load_balancer.to_owned(),
            listener_port: port,
            poll_timeout_ms: sticky_core::plugin::DEFAULT_POLL_TIMEOUT_MS,
            token: None,
        });
        Ok(Self {
            node_id: node_id.to_owned(),
            admin_port: sticky_testing::free_port()?,
            listen_port: sticky_testing::free_port()?,
            routing_header: config.routing_header.clone(),
            endpoints: Endpoints::Eds {
                control,
                service_name: format!("{load_balancer}_{port}"),
                tls,
            },
            filters: HttpFilters::Sticky {
                shell: shell.clone(),
                config: Box::new(config),
            },
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            tls: None,
        })
    }

    /// The `clusters` list.
    fn clusters(&self) -> serde_json::Value {
        const TARGET_IDLE_TIMEOUT: &str = "1s";
        let address =
            |a: &SocketAddr| json!({"socket_address": {"address": a.ip().to_string(), "port_value": a.port()}});
        let override_host = json!({"policies": [{"typed_extension_config": {
            "name": "envoy.load_balancing_policies.override_host",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.load_balancing_policies.override_host.v3.OverrideHost",
                "override_host_sources": [{"header": self.routing_header}],
                "fallback_policy": {"policies": [{"typed_extension_config": {
                    "name": "envoy.load_balancing_policies.round_robin",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin"}
                }}]}
            }
        }}]});
        // A dead target makes one retry per request sent to it, many at once: Envoy's default
        // cap of 3 concurrent retries would turn the excess into 503s.
        let circuit_breakers = json!({"thresholds": [{"max_retries": 10_000}]});
        // Only the sticky filter sets the routing header; the others get Envoy's plain round robin.
        let load_balancing_policy = match self.filters {
            HttpFilters::Sticky { .. }
            | HttpFilters::NoopModule {
                sticky_routing: true, ..
            } => override_host,
            _ => json!({"policies": [{"typed_extension_config": {
                "name": "envoy.load_balancing_policies.round_robin",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin"}
            }}]}),
        };
        let timeout_ms = timeout_ms(self.connect_timeout);
        let keepalive_seconds = timeout_ms.div_ceil(1000);
        let mut targets = json!({
            "name": "targets",
            "connect_timeout": format!("{}s", self.connect_timeout.as_secs_f64()),
            "load_balancing_policy": load_balancing_policy,
            "circuit_breakers": circuit_breakers,
            // Passive detection: the first connection that times out, is refused or is reset
            // ejects its host from the round robin (local-origin failures only; the
            // application's 5xx never eject). override_host does not skip an ejected host when
            // the routing header names it (measured), so the filter stops naming it too (the
            // core's `CompiledListener::observe_answer`), for as long. The ejection lasts 30 s (longer
            // when repeated), by which time the health check has marked the target OutOfService.
            "outlier_detection": {
                "split_external_local_origin_errors": true,
                "consecutive_local_origin_failure": 1,
                "enforcing_consecutive_local_origin_failure": 100,
                "enforcing_consecutive_5xx": 0,
                "enforcing_consecutive_gateway_failure": 0,
                "enforcing_success_rate": 0,
                "enforcing_local_origin_success_rate": 0,
                "enforcing_failure_percentage": 0,
                "enforcing_failure_percentage_local_origin": 0,
                // As long as the filter stops naming a target Envoy could not reach.
                "base_ejection_time": format!("{}s", sticky_core::UNREACHABLE_HOLD_SECONDS),
                "max_ejection_percent": 100
            },
            // A target that vanishes without a reset (powered off, network cut) never answers:
            // TCP_USER_TIMEOUT aborts a connection whose sent data stays unacknowledged for the
            // connect timeout (a request written on a pooled connection), and keepalive probes
            // after as long idle find one whose request was sent before the target vanished. A
            // slow but live target acknowledges both, so slow responses are never cut.
            "upstream_bind_config": {"socket_options": [{
                "description": "TCP_USER_TIMEOUT",
                "level": 6,
                "name": 18,
                "int_value": timeout_ms,
                "state": "STATE_PREBIND"
            }]},
            // HTTP/1.1, an idle connection closed before common servers' keep-alive timeouts
            // end (gunicorn's 2 s): Envoy never reuses one the target is closing.
            "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "common_http_protocol_options": {"idle_timeout": TARGET_IDLE_TIMEOUT},
                "explicit_http_config": {"http_protocol_options": {}}
            }},
            "upstream_connection_options": {"tcp_keepalive": {
                "keepalive_time": keepalive_seconds,
                "keepalive_interval": keepalive_seconds,
                "keepalive_probes": 2
            }},
        });
        let control_cluster = match &self.endpoints {
            Endpoints::Static(endpoints) => {
                let lb_endpoints: Vec<_> = endpoints
                    .iter()
                    .map(|a| json!({"endpoint": {"address": address(a)}}))
                    .collect();
                extend(
                    &mut targets,
                    json!({
                        "type": "STATIC",
                        "load_assignment": {"cluster_name": "targets", "endpoints": [{"lb_endpoints": lb_endpoints}]},
                    }),
                );
                None
            }
            Endpoints::Eds {
                control,
                service_name,
                tls,
            } => {
                extend(
                    &mut targets,
                    json!({
                        "type": "EDS",
                        "eds_cluster_config": {
                            "service_name": service_name,
                            "eds_config": {
                                "resource_api_version": "V3",
                                "api_config_source": {
                                    "api_type": "REST",
                                    "transport_api_version": "V3",
                                    "cluster_names": [CONTROL_CLUSTER],
                                    "refresh_delay": "0.1s",
                                    "request_timeout": "1s"
                                }
                            }
                        },
                    }),
                );
                let mut cluster = json!({
                    "name": CONTROL_CLUSTER,
                    "connect_timeout": "1s",
                    "type": "STATIC",
                    "load_assignment": {"cluster_name": CONTROL_CLUSTER, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address(control)}}]}]},
                });
                if let Some(tls) = tls {
                    extend(
                        &mut cluster,
                        json!({"transport_socket": tls.transport_socket("http/1.1")}),
                    );
                }
                Some(cluster)
            }
        };
        json!([targets].into_iter().chain(control_cluster).collect::<Vec<_>>())
    }

    /// The listener's TLS (the same TLS parameters as the control service's HTTPS listeners),
    /// or `null`: plain HTTP.
    fn transport_socket(&self) -> serde_json::Value {
        let Some(tls) = &self.tls else {
            return serde_json::Value::Null;
        };
        json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "common_tls_context": {
                    "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
                    "alpn_protocols": ["h2", "http/1.1"],
                    "tls_certificates": [{
                        "certificate_chain": {"filename": tls.certificate_chain.display().to_string()},
                        "private_key": {"filename": tls.private_key.display().to_string()}
                    }]
                }
            }
        })
    }

    /// Renders `envoy/bootstrap.yaml`: every `${NAME}` becomes a JSON value.
    pub fn render(&self) -> String {
        let router = json!({
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
        });
        let filters = match &self.filters {
            HttpFilters::RouterOnly => json!([router]),
            HttpFilters::Sticky { shell, config } => {
                // Envoy waits the connect timeout on a vanished target; a quicker failure is a
                // refused connection or a keep-alive race, which Envoy's retry absorbs.
                let mut config = config.clone();
                config.unreachable_after_ms = timeout_ms(self.connect_timeout).div_ceil(2);
                let filter = match shell {
                    FilterShell::Wasm(wasm) => wasm_filter("sticky", wasm, &config.to_json()),
                    FilterShell::Native(module) => dynamic_module_filter("sticky", module, Some(&config.to_json())),
                };
                json!([filter, router])
            }
            HttpFilters::NoopWasm { wasm } => json!([wasm_filter("noop", wasm, ""), router]),
            HttpFilters::NoopModule { module, .. } => json!([dynamic_module_filter("noop", module, None), router]),
            HttpFilters::NativeCookieSession {
                cookie_name,
                ttl_seconds,
            } => json!([
                {
                    "name": "envoy.filters.http.stateful_session",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.stateful_session.v3.StatefulSession",
                        "session_state": {
                            "name": "envoy.http.stateful_session.cookie",
                            "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.http.stateful_session.cookie.v3.CookieBasedSessionState",
                                "cookie": {"name": cookie_name, "path": "/", "ttl": format!("{ttl_seconds}s")}
                            }
                        }
                    }
                },
                router
            ]),
        };
        let upstream_header = match &self.filters {
            HttpFilters::Sticky { config, .. } => Some(config.upstream_header.as_str()),
            HttpFilters::NoopModule {
                sticky_routing: true, ..
            } => Some(sticky_core::plugin::DEFAULT_UPSTREAM_HEADER),
            _ => None,
        };
        let report = |value| upstream_header.map_or_else(|| json!([]), |header| upstream_report(header, value));
        let response_headers_to_add = report(sticky_core::plugin::UPSTREAM_HEADER_VALUE);
        let upgrade_headers_to_add = report(sticky_core::plugin::UPGRADE_HEADER_VALUE);
        let upstream_header = upstream_header.unwrap_or_default();
        let values = [
            ("NODE_ID", json!(self.node_id)),
            ("UPSTREAM_HEADER", json!(upstream_header)),
            ("RESPONSE_HEADERS_TO_ADD", response_headers_to_add),
            ("UPGRADE_RESPONSE_HEADERS_TO_ADD", upgrade_headers_to_add),
            ("ADMIN_PORT", json!(self.admin_port)),
            ("LISTEN_PORT", json!(self.listen_port)),
            ("ROUTING_HEADER", json!(self.routing_header)),
            ("HTTP_FILTERS", filters),
            ("TRANSPORT_SOCKET", self.transport_socket()),
            ("CLUSTERS", self.clusters()),
        ];
        values
            .iter()
            .fold(BOOTSTRAP_TEMPLATE.to_owned(), |text, (name, value)| {
                text.replace(&format!("${{{name}}}"), &value.to_string())
            })
    }
}

/// What starting an Envoy takes, whichever its bootstrap.
struct Launch<'a> {
    config: String,
    /// The dynamic module it loads, if any (Envoy finds it by name in its directory).
    module: Option<&'a Path>,
    filter_stats: &'static str,
    admin_port: u16,
    /// 0 when the listeners come from xDS.
    listen_port: u16,
}

/// A running Envoy; killed when dropped.
pub struct EnvoyProcess {
    child: Child,
    /// Where Envoy puts the filter's own stats (`wasmcustom.` or `dynamicmodulescustom.`).
    filter_stats: &'static str,
    pub admin_port: u16,
    /// The static bootstrap's listener (0 when the listeners come from xDS).
    pub listen_port: u16,
    /// Where [`EnvoyProcess::url`] points when the listeners come from xDS.
    listener: Option<SocketAddr>,
    /// Whether the static listener speaks TLS.
    https: bool,
    pub log: PathBuf,
}

impl EnvoyProcess {
    /// Writes the bootstrap into `dir`, starts Envoy with `concurrency` workers and waits until
    /// its admin endpoint reports it ready.
    pub fn start(bootstrap: &EnvoyBootstrap, dir: &Path, concurrency: u32) -> Result<Self, EnvoyError> {
        Self::start_on_cpus(bootstrap, dir, concurrency, None)
    }

    /// [`EnvoyProcess::start`], with the process bound to the CPUs `cpus` (a `taskset -c`
    /// list, e.g. `"1"`) when given: benchmarks keep the proxy off the load generator's CPU.
    pub fn start_on_cpus(
        bootstrap: &EnvoyBootstrap,
        dir: &Path,
        concurrency: u32,
        cpus: Option<&str>,
    ) -> Result<Self, EnvoyError> {
        let module = match &bootstrap.filters {
            HttpFilters::NoopModule { module, .. }
            | HttpFilters::Sticky {
                shell: FilterShell::Native(module),
                ..
            } => Some(module.as_path()),
            _ => None,
        };
        let filter_stats = match &bootstrap.filters {
            HttpFilters::Sticky {
                shell: FilterShell::Native(_),
                ..
            } => "dynamicmodulescustom.",
            _ => "wasmcustom.",
        };
        let launch = Launch {
            config: bootstrap.render(),
            module,
            filter_stats,
            admin_port: bootstrap.admin_port,
            listen_port: bootstrap.listen_port,
        };
        let mut envoy = Self::launch(&launch, dir, concurrency, cpus)?;
        envoy.https = bootstrap.tls.is_some();
        Ok(envoy)
    }

    /// Starts an Envoy following the control service over xDS, and waits until it holds its
    /// first configuration (Envoy reports ready only once its initial xDS fetch is done).
    pub fn start_xds(bootstrap: &XdsBootstrap, dir: &Path, concurrency: u32) -> Result<Self, EnvoyError> {
        let (module, filter_stats) = match &bootstrap.shell {
            FilterShell::Native(module) => (Some(module.as_path()), "dynamicmodulescustom."),
            FilterShell::Wasm(_) => (None, "wasmcustom."),
        };
        let launch = Launch {
            config: bootstrap.render(),
            module,
            filter_stats,
            admin_port: bootstrap.admin_port,
            listen_port: 0,
        };
        Self::launch(&launch, dir, concurrency, None)
    }

    fn launch(launch: &Launch<'_>, dir: &Path, concurrency: u32, cpus: Option<&str>) -> Result<Self, EnvoyError> {
        let binary = envoy_binary()?;
        std::fs::create_dir_all(dir)?;
        let config = dir.join("envoy.yaml");
        std::fs::write(&config, &launch.config)?;
        let log = dir.join("envoy.log");
        let log_file = std::fs::File::create(&log)?;
        // taskset execs Envoy, so the child's pid is Envoy's.
        let mut command = match cpus {
            Some(cpus) => {
                let mut command = Command::new("taskset");
                command.args(["-c", cpus]).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        if let Some(dir) = launch.module.and_then(Path::parent) {
            command.env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", dir);
        }
        let child = command
            .arg("-c")
            .arg(&config)
            .args([
                "--concurrency",
                &concurrency.to_string(),
                "--disable-hot-restart",
                "--log-level",
                "warn",
            ])
            .arg("--log-path")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()?;
        let mut envoy = Self {
            child,
            filter_stats: launch.filter_stats,
            admin_port: launch.admin_port,
            listen_port: launch.listen_port,
            listener: None,
            https: false,
            log,
        };
        envoy.wait_ready(Duration::from_secs(60))?;
        Ok(envoy)
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<(), EnvoyError> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.try_wait()? {
                return Err(EnvoyError::Exited {
                    status: status.to_string(),
                    log: self.log.display().to_string(),
                    tail: self.log_tail(),
                });
            }
            let ready = self.admin_get("/ready").is_ok_and(|body| body.trim() == "LIVE");
            let listening =
                self.listen_port == 0 || std::net::TcpStream::connect(("127.0.0.1", self.listen_port)).is_ok();
            if ready && listening {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(EnvoyError::NotReady(limit, self.log.display().to_string()))
    }

    /// The last lines of Envoy's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..]
            .iter()
            .fold(String::new(), |mut out, line| {
                let _ = writeln!(out, "{line}");
                out
            })
    }

    /// GET on the admin endpoint.
    pub fn admin_get(&self, path: &str) -> Result<String, EnvoyError> {
        ureq::get(&format!("http://127.0.0.1:{}{path}", self.admin_port))
            .timeout(Duration::from_secs(5))
            .call()
            .map_err(|e| std::io::Error::other(e.to_string()))?
            .into_string()
            .map_err(EnvoyError::Io)
    }

    /// Counters whose name contains `filter`, from the admin `/stats` endpoint.
    pub fn counters(&self, filter: &str) -> Result<HashMap<String, u64>, EnvoyError> {
        let text = self.admin_get(&format!("/stats?filter={filter}"))?;
        Ok(text
            .lines()
            .filter_map(|line| {
                let (name, value) = line.split_once(": ")?;
                Some((name.to_owned(), value.trim().parse().ok()?))
            })
            .collect())
    }

    /// The filter's counter `sticky.<name>` (0 if not yet defined), from either shell.
    pub fn sticky_counter(&self, name: &str) -> Result<u64, EnvoyError> {
        let prefix = self.filter_stats;
        let counters = self.counters(&format!("^{}sticky\\.", prefix.replace('.', "\\.")))?;
        Ok(counters.get(&format!("{prefix}sticky.{name}")).copied().unwrap_or(0))
    }

    /// The listener's base URL: the static bootstrap's, or the one [`EnvoyProcess::serve_at`] chose.
    pub fn url(&self) -> String {
        match self.listener {
            Some(at) => format!("http://{at}"),
            None if self.https => format!("https://127.0.0.1:{}", self.listen_port),
            None => format!("http://127.0.0.1:{}", self.listen_port),
        }
    }

    /// Points [`EnvoyProcess::url`] at `at`: one of the listeners this Envoy got over xDS.
    pub fn serve_at(&mut self, at: SocketAddr) {
        self.listener = Some(at);
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for EnvoyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
