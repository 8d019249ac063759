//! Envoy's bootstrap on a bouncer host: everything Envoy serves comes from the control service
//! over gRPC xDS; the bootstrap holds only what cannot come from there (node, admin, the control
//! service's clusters, the filter shell it loads). What the launcher renders; the test harness
//! (`sticky-envoy`) renders it too, beside its hand-written static bootstrap.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

/// The Envoy cluster that reaches the control service (the filter's state feed, REST EDS).
pub const CONTROL_CLUSTER: &str = "control";
/// The Envoy cluster of the control service's xDS (gRPC, HTTP/2).
pub const XDS_CLUSTER: &str = "xds";
/// How long Envoy gives a target to accept a connection, and to acknowledge what was sent to
/// it, before giving up on it: the request goes to another target and the target is ejected
/// until the health check decides. Targets sit on the bouncer's private network, where a
/// connect takes well under a millisecond and a lost segment is resent within 200 ms; a second
/// is ample for a live target and is the longest a request pays for a target that vanished
/// without a reset (powered off, network cut). `EnvoyBootstrap::connect_timeout` sets it.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A built shell of the filter: the artifact Envoy loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterShell {
    /// The `.wasm` of `filter/wasm`.
    Wasm(PathBuf),
    /// The `lib<name>.so` of `filter/native`.
    Native(PathBuf),
}

impl FilterShell {
    /// The shell's name in the launcher's configuration (`native`, `wasm`) and its artifact.
    pub fn named_artifact(&self) -> (&'static str, PathBuf) {
        match self {
            FilterShell::Wasm(path) => ("wasm", path.clone()),
            FilterShell::Native(path) => ("native", path.clone()),
        }
    }
}

/// An Envoy that takes everything it serves from the control service over gRPC xDS (ADS):
/// its bootstrap holds only what cannot come from there (node, admin, the control service's
/// clusters). The node's metadata tells the control service which filter shell this Envoy
/// loads, so the listeners it is sent use it.
#[derive(Debug, Clone)]
pub struct XdsBootstrap {
    pub node_id: String,
    pub admin_port: u16,
    /// The control service's replicas (xDS over HTTP/2, and the filter's state feed over
    /// HTTP/1.1); with several, each is health-checked and Envoy follows a live one.
    pub control: Vec<SocketAddr>,
    /// Where this Envoy also serves the control service's API, in front of its replicas (one
    /// address that survives a replica's death); none by default.
    pub api_listener: Option<SocketAddr>,
    pub shell: FilterShell,
    /// Shifts this Envoy's listener ports beyond the control service's rule (several Envoys
    /// on one host; 0 otherwise).
    pub port_offset: u16,
    /// With a control service on plain HTTP: its `--feed-token`, sent on the xDS stream.
    pub token: Option<String>,
    /// With a control service on TLS: how this Envoy verifies it and authenticates to it.
    pub tls: Option<ControlClientTls>,
    /// The edge's bounds under load (Envoy's overload manager).
    pub limits: EdgeLimits,
}

/// The name every certificate of the control service carries (a SAN), which Envoys verify: a
/// certificate the same CA issued to an Envoy (without it) cannot pose as the control service.
pub const CONTROL_SERVER_NAME: &str = "control.sticky.internal";

/// How an Envoy reaches a control service that serves TLS: it trusts `ca` for the control
/// service's certificate (which must name [`CONTROL_SERVER_NAME`]) and presents `certificate`
/// (issued by the control service's client CA).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlClientTls {
    pub ca: PathBuf,
    pub certificate: PathBuf,
    pub private_key: PathBuf,
}

impl ControlClientTls {
    /// The clusters' `transport_socket`, offering `alpn` (`h2` for xDS and the feed, `http/1.1` for the API).
    pub fn transport_socket(&self, alpn: &str) -> serde_json::Value {
        let file = |path: &Path| json!({"filename": path.display().to_string()});
        json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": CONTROL_SERVER_NAME,
                "common_tls_context": {
                    "alpn_protocols": [alpn],
                    "tls_certificates": [{
                        "certificate_chain": file(&self.certificate),
                        "private_key": file(&self.private_key)
                    }],
                    "validation_context": {
                        "trusted_ca": file(&self.ca),
                        "match_typed_subject_alt_names": [{
                            "san_type": "DNS",
                            "matcher": {"exact": CONTROL_SERVER_NAME}
                        }]
                    }
                }
            }
        })
    }
}

/// What Envoy's overload manager holds a bouncer to, as Envoy's edge proxy guidance sets it:
/// past `max_connections` client connections across every listener new ones are refused (the
/// established ones keep working); as the heap nears `max_heap_bytes` Envoy frees what it can,
/// then answers new requests 503 rather than be killed for its memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeLimits {
    pub max_connections: u64,
    pub max_heap_bytes: u64,
}

impl Default for EdgeLimits {
    fn default() -> Self {
        Self {
            max_connections: 50_000,
            max_heap_bytes: 1 << 30,
        }
    }
}

impl EdgeLimits {
    /// Envoy's `overload_manager`.
    fn render(&self) -> serde_json::Value {
        const HEAP: &str = "envoy.resource_monitors.fixed_heap";
        const CONNECTIONS: &str = "envoy.resource_monitors.global_downstream_max_connections";
        let at = |monitor: &str, share: f64| json!([{"name": monitor, "threshold": {"value": share}}]);
        json!({
            "refresh_interval": "0.25s",
            "resource_monitors": [
                {"name": HEAP, "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig",
                    "max_heap_size_bytes": self.max_heap_bytes
                }},
                {"name": CONNECTIONS, "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
                    "max_active_downstream_connections": self.max_connections
                }}
            ],
            "actions": [
                {"name": "envoy.overload_actions.shrink_heap", "triggers": at(HEAP, 0.95)},
                {"name": "envoy.overload_actions.stop_accepting_requests", "triggers": at(HEAP, 0.98)}
            ]
        })
    }
}

impl XdsBootstrap {
    /// A bootstrap following the control service at `control`, with its admin on `admin_port`.
    pub fn new(shell: FilterShell, control: SocketAddr, node_id: &str, admin_port: u16) -> Self {
        Self {
            node_id: node_id.to_owned(),
            admin_port,
            control: vec![control],
            api_listener: None,
            shell,
            port_offset: 0,
            token: None,
            tls: None,
            limits: EdgeLimits::default(),
        }
    }

    /// The bootstrap (JSON, which Envoy reads as YAML).
    pub fn render(&self) -> String {
        let (shell, artifact) = match &self.shell {
            FilterShell::Native(module) => ("native", module_name(module)),
            FilterShell::Wasm(wasm) => ("wasm", wasm.display().to_string()),
        };
        // One replica at a time, by priority: this Envoy's xDS stream and its filter's state
        // polls all go to the first healthy replica of its order, so each is one follower of
        // one replica (polls spread over replicas would each count, stale, on the others).
        // The order starts at a replica chosen by the node id, spreading Envoys over replicas.
        let first = self
            .node_id
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(usize::from(b)));
        let replicas = |cluster: &str| {
            let count = self.control.len().max(1);
            let endpoints: Vec<serde_json::Value> = (0..self.control.len())
                .map(|priority| {
                    let a = self.control[(first + priority) % count];
                    json!({
                        "priority": priority,
                        "lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": a.ip().to_string(), "port_value": a.port()}}}}]
                    })
                })
                .collect();
            json!({"cluster_name": cluster, "endpoints": endpoints})
        };
        // With several replicas, one that died or lost its store is left within ~2 s.
        let replica_checks = |codec: &str| {
            if self.control.len() > 1 {
                json!([{
                    "timeout": "1s", "interval": "1s", "no_traffic_interval": "1s",
                    "unhealthy_threshold": 2, "healthy_threshold": 1,
                    "http_health_check": {"path": "/healthz", "codec_client_type": codec}
                }])
            } else {
                json!([])
            }
        };
        let ads = json!({"ads": {}, "resource_api_version": "V3"});
        // HTTP/2 to the control service: xDS, and every filter's state long-poll of a worker
        // multiplexed on one connection (not one connection per listener).
        let http2 = json!({"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {
                // A stream that goes silent (control service host gone) is noticed.
                "connection_keepalive": {"interval": "5s", "timeout": "5s"}
            }}
        }});
        let mut clusters = json!([
                {
                    "name": XDS_CLUSTER,
                    "connect_timeout": "1s",
                    "type": "STATIC",
                    "typed_extension_protocol_options": http2,
                    "health_checks": replica_checks("HTTP2"),
                    "load_assignment": replicas(XDS_CLUSTER)
                },
                {
                    "name": CONTROL_CLUSTER,
                    "connect_timeout": "1s",
                    "type": "STATIC",
                    "typed_extension_protocol_options": http2,
                    "health_checks": replica_checks("HTTP2"),
                    "load_assignment": replicas(CONTROL_CLUSTER)
                }
        ]);
        if let (Some(tls), Some(clusters)) = (&self.tls, clusters.as_array_mut()) {
            for cluster in clusters.iter_mut() {
                extend(cluster, json!({"transport_socket": tls.transport_socket("h2")}));
            }
        }
        if self.api_listener.is_some() {
            // API calls spread over every live replica; a retry goes to another one.
            let endpoints: Vec<serde_json::Value> = self
                .control
                .iter()
                .map(|a| json!({"endpoint": {"address": {"socket_address": {"address": a.ip().to_string(), "port_value": a.port()}}}}))
                .collect();
            if let Some(clusters) = clusters.as_array_mut() {
                let mut cluster = json!({
                    "name": CONTROL_API_CLUSTER,
                    "connect_timeout": "1s",
                    "type": "STATIC",
                    "health_checks": replica_checks("HTTP1"),
                    "load_assignment": {"cluster_name": CONTROL_API_CLUSTER, "endpoints": [{"lb_endpoints": endpoints}]}
                });
                if let Some(tls) = &self.tls {
                    extend(
                        &mut cluster,
                        json!({"transport_socket": tls.transport_socket("http/1.1")}),
                    );
                }
                clusters.push(cluster);
            }
        }
        json!({
            "node": {
                "id": self.node_id,
                "cluster": "sticky-bouncer",
                "metadata": {"sticky_shell": shell, "sticky_artifact": artifact, "sticky_port_offset": self.port_offset}
            },
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": self.admin_port}}},
            "dynamic_resources": {
                "ads_config": {
                    "api_type": "DELTA_GRPC",
                    "transport_api_version": "V3",
                    "set_node_on_first_message_only": true,
                    "grpc_services": [{
                        "envoy_grpc": {
                            "cluster_name": XDS_CLUSTER,
                            // Back within a second of the control service's return.
                            "retry_policy": {"retry_back_off": {"base_interval": "0.1s", "max_interval": "1s"}}
                        },
                        "initial_metadata": self.token.iter()
                            .map(|token| json!({"key": "authorization", "value": format!("Bearer {token}")}))
                            .collect::<Vec<_>>()
                    }]
                },
                "cds_config": ads,
                "lds_config": ads
            },
            "overload_manager": self.limits.render(),
            "static_resources": {"clusters": clusters, "listeners": self.api_listener.map(api_listener).into_iter().collect::<Vec<_>>()}
        })
        .to_string()
    }
}

/// The cluster of the control service's replicas behind [`XdsBootstrap::api_listener`].
pub const CONTROL_API_CLUSTER: &str = "control_api";

/// A listener on `at` passing the control service's API to its replicas: a call that could
/// not reach one (refused) goes to another; what Envoy answers itself (no replica answered, a
/// replica died during the call) is an ELB error document (`ServiceUnavailable`, HTTP 503),
/// which SDKs and the CLIs retry.
pub fn api_listener(at: SocketAddr) -> serde_json::Value {
    json!({
        "name": "control_api",
        "address": {"socket_address": {"address": at.ip().to_string(), "port_value": at.port()}},
        // The operators' API stays reachable when clients hold every connection the edge allows.
        "ignore_global_conn_limit": true,
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "control_api",
                "route_config": {"virtual_hosts": [{
                    "name": "control_api", "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {
                        "cluster": CONTROL_API_CLUSTER,
                        // An API call may wait for its change to be in force everywhere.
                        "timeout": "60s",
                        "retry_policy": {
                            "retry_on": "connect-failure,refused-stream",
                            "num_retries": 3,
                            "retry_host_predicate": [{
                                "name": "envoy.retry_host_predicates.previous_hosts",
                                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}
                            }],
                            "host_selection_retry_max_attempts": 5
                        }
                    }}]
                }]},
                "local_reply_config": {"body_format": {
                    "text_format_source": {"inline_string": concat!(
                        "<ErrorResponse xmlns=\"http://elasticloadbalancing.amazonaws.com/doc/2012-06-01/\">",
                        "<Error><Type>Receiver</Type><Code>ServiceUnavailable</Code>",
                        "<Message>No replica of the control service answered (%RESPONSE_CODE_DETAILS%)</Message></Error>",
                        "<RequestId>%STREAM_ID%</RequestId></ErrorResponse>\n"
                    )},
                    "content_type": "text/xml"
                }},
                "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                }}]
            }
        }]}]
    })
}

/// A route's `response_headers_to_add` that reports the answering upstream in the upstream
/// header `header`, as `value` (`sticky_core::plugin::UPSTREAM_HEADER_VALUE`, or
/// `UPGRADE_HEADER_VALUE` on the WebSocket route).
pub fn upstream_report(header: &str, value: &str) -> serde_json::Value {
    json!([{
        "header": {"key": header, "value": value},
        // An upstream cannot plant its own value.
        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"
    }])
}

/// A timeout in whole milliseconds, at least 1.
pub fn timeout_ms(timeout: Duration) -> u64 {
    u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Adds the fields of the JSON object `more` to the JSON object `object`.
pub fn extend(object: &mut serde_json::Value, more: serde_json::Value) {
    if let (Some(object), serde_json::Value::Object(more)) = (object.as_object_mut(), more) {
        object.extend(more);
    }
}

/// The name Envoy finds dynamic module `<dir>/lib<name>.so` by.
pub fn module_name(module: &Path) -> String {
    module
        .file_stem()
        .map(|stem| stem.to_string_lossy())
        .unwrap_or_default()
        .trim_start_matches("lib")
        .to_owned()
}

/// The dynamic-module HTTP filter loading `module` (`<dir>/lib<name>.so`; Envoy finds it by name
/// in `ENVOY_DYNAMIC_MODULES_SEARCH_PATH`, which [`EnvoyProcess`] sets to `<dir>`), with
/// `configuration` as its filter configuration (a string).
pub fn dynamic_module_filter(filter_name: &str, module: &Path, configuration: Option<&str>) -> serde_json::Value {
    let name = module_name(module);
    let mut filter = json!({
        "name": "envoy.filters.http.dynamic_modules",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
            "dynamic_module_config": {"name": name, "do_not_close": true},
            "filter_name": filter_name
        }
    });
    if let (Some(configuration), Some(typed_config)) = (configuration, filter.get_mut("typed_config")) {
        extend(
            typed_config,
            json!({"filter_config": {
                "@type": "type.googleapis.com/google.protobuf.StringValue",
                "value": configuration
            }}),
        );
    }
    filter
}

/// The `envoy.filters.http.wasm` entry for the plugin `name` (its root id and VM id) running
/// `wasm` with `configuration`.
pub fn wasm_filter(name: &str, wasm: &Path, configuration: &str) -> serde_json::Value {
    json!({
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": name,
                "root_id": name,
                // A VM that panicked is replaced on the next request instead of failing every request.
                "failure_policy": "FAIL_RELOAD",
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": configuration
                },
                "vm_config": {
                    "vm_id": name,
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": wasm.display().to_string()}}
                }
            }
        }
    })
}
