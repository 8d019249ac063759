//! What the xDS server serves an Envoy: per load-balancer listener, a `Listener` bound where
//! the operator's rule says ([`ListenerBinding`]), its `RouteConfiguration`, its `Cluster` and
//! the cluster's `ClusterLoadAssignment` (targets with health). One name for all four:
//! `<load balancer>_<port>` ([`feed::cluster_name`]). Pure projections of the domain, built with
//! Envoy's own API types (`envoy-types`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3 as cluster;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::endpoint::v3 as endpoint;
use envoy_types::pb::envoy::config::listener::v3 as listener;
use envoy_types::pb::envoy::config::route::v3 as route;
use envoy_types::pb::envoy::extensions::dynamic_modules::v3::DynamicModuleConfig;
use envoy_types::pb::envoy::extensions::filters::http::dynamic_modules::v3::DynamicModuleFilter;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::http::wasm::v3::Wasm;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::extensions::load_balancing_policies::override_host::v3::{OverrideHost, override_host};
use envoy_types::pb::envoy::extensions::load_balancing_policies::round_robin::v3::RoundRobin;
use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use envoy_types::pb::envoy::extensions::wasm::v3 as wasm;
use envoy_types::pb::google::protobuf::{Any, Duration as ProtoDuration, StringValue, UInt32Value};
use envoy_types::util::pack_any;
use prost::Message;
use sticky_core::{ControlSource, PluginConfig};

use crate::domain::Domain;
use crate::feed::EndpointHealth;
use crate::feed::cluster_name;
use crate::model::{ListenerBinding, LoadBalancer};

pub const LISTENER_TYPE: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const ROUTE_TYPE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ENDPOINT_TYPE: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

/// The Envoy cluster (in each Envoy's bootstrap) through which the filter long-polls its state.
pub const FEED_CLUSTER: &str = "control";
/// How long Envoy gives a target to accept a connection, and to acknowledge what was sent to
/// it, before giving up on it, unless the operator says otherwise (as
/// `sticky_envoy::DEFAULT_CONNECT_TIMEOUT` for hand-written bootstraps, which explains the figure).
pub const DEFAULT_TARGET_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Which shell of the sticky filter an Envoy runs (node metadata `sticky_shell`: `native` or
/// `wasm`; `sticky_artifact`: the module's name, or the `.wasm`'s path).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FilterArtifact {
    Native { module: String },
    Wasm { path: String },
}

/// What an Envoy's bootstrap says of itself in its node metadata: the filter it loads, and an
/// extra shift of its listener ports (`sticky_port_offset`, for several Envoys on one host).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EnvoyNode {
    pub artifact: FilterArtifact,
    pub port_offset: u16,
}

impl EnvoyNode {
    /// Read from an Envoy's node metadata; `None` when it names no (known) shell.
    pub fn from_node(node: &core::Node) -> Option<Self> {
        use envoy_types::pb::google::protobuf::value::Kind;
        let field = |key: &str| node.metadata.as_ref()?.fields.get(key)?.kind.as_ref();
        let text = |key: &str| match field(key) {
            Some(Kind::StringValue(s)) => Some(s.clone()),
            _ => None,
        };
        let artifact = text("sticky_artifact")?;
        let artifact = match text("sticky_shell")?.as_str() {
            "native" => FilterArtifact::Native { module: artifact },
            "wasm" => FilterArtifact::Wasm { path: artifact },
            _ => return None,
        };
        let port_offset = match field("sticky_port_offset") {
            None => 0,
            Some(Kind::NumberValue(n)) if n.fract() == 0.0 && (0.0..=65535.0).contains(n) => *n as u16,
            Some(_) => return None,
        };
        Some(Self { artifact, port_offset })
    }
}

/// What the listeners' sticky filters need from the service.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub binding: ListenerBinding,
    /// The bearer token of the state feed, which the filters send.
    pub feed_token: Option<String>,
    /// How long a state long-poll may stay open.
    pub poll_timeout_ms: u64,
    /// See [`DEFAULT_TARGET_CONNECT_TIMEOUT`].
    pub connect_timeout: Duration,
}

/// Every resource of one type, by name, encoded: what one Envoy is served.
pub type Resources = BTreeMap<String, Any>;

/// The resource sets an Envoy is served, from the domain as it is.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Snapshot {
    pub listeners: Resources,
    pub routes: Resources,
    pub clusters: Resources,
    pub endpoints: Resources,
    /// The server certificates HTTPS listeners use (SDS), by certificate id.
    pub secrets: Resources,
}

impl Snapshot {
    /// Everything the domain serves `node`, built from scratch.
    pub fn build(inner: &Domain, options: &ServeOptions, node: &EnvoyNode) -> Self {
        let mut snapshot = Snapshot::default();
        for lb in inner.load_balancers() {
            snapshot.add(&Self::of_load_balancer(inner, lb, options, node));
        }
        snapshot
    }

    /// What load balancer `lb` alone is served (its listeners, routes, clusters, endpoints and
    /// certificates): rebuilt only when it changes.
    pub fn of_load_balancer(inner: &Domain, lb: &LoadBalancer, options: &ServeOptions, node: &EnvoyNode) -> Self {
        let mut snapshot = Snapshot::default();
        if let Some(address) = lb.address {
            for (port, l) in &lb.listeners {
                let bound = options.binding.socket(address, *port).ok().and_then(|socket| {
                    Some(SocketAddr::new(
                        socket.ip(),
                        socket.port().checked_add(node.port_offset)?,
                    ))
                });
                let Some(socket) = bound else {
                    continue;
                };
                let name = cluster_name(&lb.name, *port);
                let plugin = plugin_config(&lb.name, *port, options);
                let idle_timeout = Duration::from_secs(u64::from(lb.attributes.idle_timeout));
                let mut listener = if l.is_layer4() {
                    tcp_listener(&name, socket, idle_timeout)
                } else {
                    http_listener(&name, socket, &node.artifact, &plugin, idle_timeout)
                };
                if l.is_https() {
                    // A TLS listener whose certificate is gone (it cannot be: deleting one in
                    // use is refused) is left out rather than served in clear.
                    let Some(secret) = l
                        .certificate
                        .as_deref()
                        .and_then(|id| inner.certificate(id))
                        .and_then(super::tls::secret)
                    else {
                        continue;
                    };
                    for chain in &mut listener.filter_chains {
                        chain.transport_socket = Some(super::tls::downstream(
                            &secret.name,
                            !l.is_layer4(),
                            lb.listener_tls_policy(*port),
                        ));
                    }
                    snapshot.secrets.insert(secret.name.clone(), pack_any(secret));
                }
                snapshot.listeners.insert(name.clone(), pack_any(listener));
                if !l.is_layer4() {
                    snapshot
                        .routes
                        .insert(name.clone(), pack_any(route_configuration(&name, &plugin)));
                }
                let mut cluster = target_cluster(&name, &plugin, options.connect_timeout);
                if l.is_tls_to_targets() {
                    cluster.transport_socket = Some(super::tls::upstream(!l.is_layer4()));
                }
                snapshot.clusters.insert(name.clone(), pack_any(cluster));
                let targets = inner
                    .targets(lb, l.instance_port)
                    .into_iter()
                    .map(|t| (t.address, crate::feed::endpoint_health(lb, &t)))
                    .collect::<Vec<_>>();
                snapshot
                    .endpoints
                    .insert(name.clone(), pack_any(load_assignment(&name, &targets)));
            }
        }
        snapshot
    }

    /// The resources of `type_url` (empty for a type not served).
    pub fn of(&self, type_url: &str) -> Option<&Resources> {
        match type_url {
            LISTENER_TYPE => Some(&self.listeners),
            ROUTE_TYPE => Some(&self.routes),
            CLUSTER_TYPE => Some(&self.clusters),
            ENDPOINT_TYPE => Some(&self.endpoints),
            super::tls::SECRET_TYPE => Some(&self.secrets),
            _ => None,
        }
    }

    fn types_mut(&mut self) -> [&mut Resources; 5] {
        [
            &mut self.listeners,
            &mut self.routes,
            &mut self.clusters,
            &mut self.endpoints,
            &mut self.secrets,
        ]
    }

    fn types(&self) -> [&Resources; 5] {
        [
            &self.listeners,
            &self.routes,
            &self.clusters,
            &self.endpoints,
            &self.secrets,
        ]
    }

    /// The names of `type_url` whose resources differ between `self` and `other` (added,
    /// changed or removed), into `changed`.
    fn differences(&self, other: &Snapshot, changed: &mut Changed) {
        for ((type_url, mine), theirs) in TYPE_ORDER.into_iter().zip(self.types()).zip(other.types()) {
            let names = mine.keys().chain(theirs.keys());
            for name in names {
                if mine.get(name) != theirs.get(name) {
                    changed.entry(type_url).or_default().insert(name.clone());
                }
            }
        }
    }

    /// Adds `part`'s resources.
    fn add(&mut self, part: &Snapshot) {
        for (mine, theirs) in self.types_mut().into_iter().zip(part.types()) {
            mine.extend(theirs.iter().map(|(name, resource)| (name.clone(), resource.clone())));
        }
    }

    /// Removes `part`'s resources but its certificates, which other load balancers may share.
    fn remove(&mut self, part: &Snapshot) {
        for (mine, theirs) in self.types_mut().into_iter().zip(part.types()).take(4) {
            for name in theirs.keys() {
                mine.remove(name);
            }
        }
    }
}

/// The types in the order of [`Snapshot`]'s fields.
const TYPE_ORDER: [&str; 5] = [
    LISTENER_TYPE,
    ROUTE_TYPE,
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    super::tls::SECRET_TYPE,
];

/// The names whose resources a change added, changed or removed, per type.
pub type Changed = BTreeMap<&'static str, std::collections::BTreeSet<String>>;

/// One load balancer's resources, and the revision they were built at.
type Part = (u64, Arc<Snapshot>);

/// What load balancers are built, per kind of Envoy, shared by every xDS stream: a change
/// builds and encodes what it changed once, whatever the number of load balancers and Envoys.
#[derive(Debug, Default)]
pub struct PartCache {
    parts: std::sync::Mutex<std::collections::HashMap<(EnvoyNode, String), Part>>,
    /// Parts built so far.
    builds: std::sync::atomic::AtomicU64,
}

impl PartCache {
    /// Load balancer `lb`'s part at `revision`, built unless cached.
    fn part(
        &self,
        inner: &Domain,
        lb: &LoadBalancer,
        revision: u64,
        options: &ServeOptions,
        node: &EnvoyNode,
    ) -> Arc<Snapshot> {
        let mut parts = self.parts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = (node.clone(), lb.name.clone());
        if let Some((built, part)) = parts.get(&key)
            && *built == revision
        {
            return Arc::clone(part);
        }
        let part = Arc::new(Snapshot::of_load_balancer(inner, lb, options, node));
        self.builds.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        parts.insert(key, (revision, Arc::clone(&part)));
        part
    }

    /// Forgets the parts of load balancers that are gone.
    fn forget(&self, node: &EnvoyNode, name: &str) {
        let mut parts = self.parts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        parts.remove(&(node.clone(), name.to_owned()));
    }
}

/// One Envoy's snapshot, kept up to date by patching in the parts of the load balancers that
/// changed since it was last brought up to date (found by their revisions).
#[derive(Debug, Default)]
pub struct Assembled {
    pub snapshot: Snapshot,
    /// The domain version it is up to date with.
    pub version: u64,
    parts: std::collections::HashMap<String, Part>,
}

impl Assembled {
    /// Brings the snapshot up to date with `inner`: builds (once for every stream of the same
    /// kind of Envoy, in `cache`) and patches in only what changed.
    pub fn update(&mut self, inner: &Domain, cache: &PartCache, options: &ServeOptions, node: &EnvoyNode) -> Changed {
        let mut changed = Changed::new();
        let mut certificates_changed = false;
        let gone: Vec<String> = self
            .parts
            .keys()
            .filter(|name| inner.revision(name).is_none())
            .cloned()
            .collect();
        for name in gone {
            if let Some((_, part)) = self.parts.remove(&name) {
                certificates_changed |= !part.secrets.is_empty();
                part.differences(&Snapshot::default(), &mut changed);
                self.snapshot.remove(&part);
            }
            cache.forget(node, &name);
        }
        for lb in inner.load_balancers() {
            let Some(revision) = inner.revision(&lb.name) else {
                continue;
            };
            if self.parts.get(&lb.name).is_some_and(|(at, _)| *at == revision) {
                continue;
            }
            let part = cache.part(inner, lb, revision, options, node);
            certificates_changed |= !part.secrets.is_empty();
            match self.parts.insert(lb.name.clone(), (revision, Arc::clone(&part))) {
                Some((_, old)) => {
                    certificates_changed |= !old.secrets.is_empty();
                    old.differences(&part, &mut changed);
                    self.snapshot.remove(&old);
                }
                None => Snapshot::default().differences(&part, &mut changed),
            }
            self.snapshot.add(&part);
        }
        // Certificates are diffed as a whole: two load balancers may share one.
        changed.remove(super::tls::SECRET_TYPE);
        if certificates_changed {
            // Only certificates some listener still uses are served.
            let secrets: Resources = self
                .parts
                .values()
                .flat_map(|(_, part)| part.secrets.iter())
                .map(|(name, resource)| (name.clone(), resource.clone()))
                .collect();
            for name in self.snapshot.secrets.keys().chain(secrets.keys()) {
                if self.snapshot.secrets.get(name) != secrets.get(name) {
                    changed.entry(super::tls::SECRET_TYPE).or_default().insert(name.clone());
                }
            }
            self.snapshot.secrets = secrets;
        }
        self.version = inner.version();
        changed
    }
}

/// The sticky filter's configuration on listener `port` of `load_balancer`: it follows the
/// control service's state feed for that listener.
fn plugin_config(load_balancer: &str, port: u16, options: &ServeOptions) -> PluginConfig {
    let mut config = PluginConfig::new(None);
    config.control = Some(ControlSource {
        cluster: FEED_CLUSTER.to_owned(),
        authority: "sticky-control".to_owned(),
        load_balancer: load_balancer.to_owned(),
        listener_port: port,
        poll_timeout_ms: options.poll_timeout_ms,
        token: options.feed_token.clone(),
    });
    // Envoy waits the connect timeout on a vanished target; a quicker failure is a refused
    // connection or a keep-alive race, which Envoy's retry absorbs.
    config.unreachable_after_ms = millis(options.connect_timeout).div_ceil(2);
    config
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn proto_duration(duration: Duration) -> ProtoDuration {
    ProtoDuration {
        seconds: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(duration.subsec_nanos()).unwrap_or(0),
    }
}

fn uint32(value: u32) -> Option<UInt32Value> {
    Some(UInt32Value { value })
}

pub(super) fn ads() -> Option<core::ConfigSource> {
    Some(core::ConfigSource {
        resource_api_version: core::ApiVersion::V3 as i32,
        config_source_specifier: Some(core::config_source::ConfigSourceSpecifier::Ads(
            core::AggregatedConfigSource::default(),
        )),
        ..Default::default()
    })
}

fn socket_address(socket: SocketAddr) -> Option<core::Address> {
    Some(core::Address {
        address: Some(core::address::Address::SocketAddress(core::SocketAddress {
            address: socket.ip().to_string(),
            port_specifier: Some(core::socket_address::PortSpecifier::PortValue(u32::from(socket.port()))),
            ..Default::default()
        })),
    })
}

fn typed_extension<M: prost::Name + Message>(name: &str, config: M) -> core::TypedExtensionConfig {
    core::TypedExtensionConfig {
        name: name.to_owned(),
        typed_config: Some(pack_any(config)),
    }
}

/// The sticky filter, then the router.
fn http_filters(artifact: &FilterArtifact, plugin: &PluginConfig) -> Vec<hcm::HttpFilter> {
    let configuration = Some(pack_any(StringValue {
        value: plugin.to_json(),
    }));
    let (name, config) = match artifact {
        FilterArtifact::Native { module } => (
            "envoy.filters.http.dynamic_modules",
            pack_any(DynamicModuleFilter {
                dynamic_module_config: Some(DynamicModuleConfig {
                    name: module.clone(),
                    do_not_close: true,
                    ..Default::default()
                }),
                filter_name: "sticky".to_owned(),
                filter_config: configuration,
                ..Default::default()
            }),
        ),
        FilterArtifact::Wasm { path } => (
            "envoy.filters.http.wasm",
            pack_any(Wasm {
                config: Some(wasm::PluginConfig {
                    name: "sticky".to_owned(),
                    root_id: "sticky".to_owned(),
                    configuration,
                    // A VM that panicked is replaced on the next request.
                    failure_policy: wasm::FailurePolicy::FailReload as i32,
                    vm: Some(wasm::plugin_config::Vm::VmConfig(wasm::VmConfig {
                        vm_id: "sticky".to_owned(),
                        runtime: "envoy.wasm.runtime.v8".to_owned(),
                        code: Some(core::AsyncDataSource {
                            specifier: Some(core::async_data_source::Specifier::Local(core::DataSource {
                                specifier: Some(core::data_source::Specifier::Filename(path.clone())),
                                ..Default::default()
                            })),
                        }),
                        ..Default::default()
                    })),
                    ..Default::default()
                }),
            }),
        ),
    };
    vec![
        hcm::HttpFilter {
            name: name.to_owned(),
            config_type: Some(hcm::http_filter::ConfigType::TypedConfig(config)),
            ..Default::default()
        },
        hcm::HttpFilter {
            name: "envoy.filters.http.router".to_owned(),
            config_type: Some(hcm::http_filter::ConfigType::TypedConfig(pack_any(Router::default()))),
            ..Default::default()
        },
    ]
}

/// A TCP or SSL listener: connections balanced over the targets as they are (round robin, the
/// cluster's fallback: no request, no cookie, no stickiness), closed after `idle_timeout` idle.
fn tcp_listener(name: &str, socket: SocketAddr, idle_timeout: Duration) -> listener::Listener {
    use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3 as tcp_proxy;
    let proxy = tcp_proxy::TcpProxy {
        stat_prefix: name.to_owned(),
        cluster_specifier: Some(tcp_proxy::tcp_proxy::ClusterSpecifier::Cluster(name.to_owned())),
        idle_timeout: Some(proto_duration(idle_timeout)),
        ..Default::default()
    };
    listener::Listener {
        name: name.to_owned(),
        address: socket_address(socket),
        filter_chains: vec![listener::FilterChain {
            filters: vec![listener::Filter {
                name: "envoy.filters.network.tcp_proxy".to_owned(),
                config_type: Some(listener::filter::ConfigType::TypedConfig(pack_any(proxy))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// How long a client has to send a request's headers: a slow-header client holds a connection
/// for this long at most (Envoy's edge proxy guidance).
pub const REQUEST_HEADERS_TIMEOUT: Duration = Duration::from_secs(10);
/// How long Envoy keeps an idle connection to a target for reuse: below common servers'
/// keep-alive timeouts (gunicorn's 2 s, Node's 5 s), so Envoy closes it before the target does
/// and never sends a request on a connection the target is closing (the keep-alive race).
pub const TARGET_IDLE_TIMEOUT: Duration = Duration::from_secs(1);
/// What one client connection or target connection may buffer (Envoy's edge proxy guidance).
const CONNECTION_BUFFER_BYTES: u32 = 32 * 1024;

fn http_listener(
    name: &str,
    socket: SocketAddr,
    artifact: &FilterArtifact,
    plugin: &PluginConfig,
    idle_timeout: Duration,
) -> listener::Listener {
    use envoy_types::pb::google::protobuf::BoolValue;
    let manager = hcm::HttpConnectionManager {
        stat_prefix: name.to_owned(),
        // ConnectionSettings.IdleTimeout: a client connection idle this long is closed, and so
        // is a stream (a WebSocket, a long poll) on which nothing moved for as long, as in ELB.
        common_http_protocol_options: Some(core::HttpProtocolOptions {
            idle_timeout: Some(proto_duration(idle_timeout)),
            headers_with_underscores_action: core::http_protocol_options::HeadersWithUnderscoresAction::RejectRequest
                as i32,
            max_headers_count: uint32(100),
            ..Default::default()
        }),
        stream_idle_timeout: Some(proto_duration(idle_timeout)),
        request_headers_timeout: Some(proto_duration(REQUEST_HEADERS_TIMEOUT)),
        max_request_headers_kb: uint32(60),
        // RFC 8441: WebSockets over HTTP/2 (extended CONNECT), with Envoy's edge stream limits.
        http2_protocol_options: Some(core::Http2ProtocolOptions {
            allow_connect: true,
            max_concurrent_streams: uint32(100),
            initial_stream_window_size: uint32(65_536),
            initial_connection_window_size: uint32(1_048_576),
            ..Default::default()
        }),
        upgrade_configs: vec![hcm::http_connection_manager::UpgradeConfig {
            upgrade_type: "websocket".to_owned(),
            ..Default::default()
        }],
        // ELB's X-Forwarded-For (the client's address appended to what the client sent),
        // X-Forwarded-Proto (the listener's) and X-Forwarded-Port (the port the client used).
        use_remote_address: Some(BoolValue { value: true }),
        append_x_forwarded_port: true,
        normalize_path: Some(BoolValue { value: true }),
        merge_slashes: true,
        route_specifier: Some(hcm::http_connection_manager::RouteSpecifier::Rds(hcm::Rds {
            config_source: ads(),
            route_config_name: name.to_owned(),
        })),
        http_filters: http_filters(artifact, plugin),
        ..Default::default()
    };
    listener::Listener {
        name: name.to_owned(),
        address: socket_address(socket),
        per_connection_buffer_limit_bytes: uint32(CONNECTION_BUFFER_BYTES),
        filter_chains: vec![listener::FilterChain {
            filters: vec![listener::Filter {
                name: "envoy.filters.network.http_connection_manager".to_owned(),
                config_type: Some(listener::filter::ConfigType::TypedConfig(pack_any(manager))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// One route of the listener: requests matching `methods` (all when `None`) retried on the
/// failures in `retry_on`, on another target than the one that failed.
fn forward(cluster: &str, methods: Option<&str>, retry_on: &str, plugin: &PluginConfig) -> route::Route {
    let headers = methods
        .map(|regex| route::HeaderMatcher {
            name: ":method".to_owned(),
            header_match_specifier: Some(route::header_matcher::HeaderMatchSpecifier::StringMatch(
                envoy_types::pb::envoy::r#type::matcher::v3::StringMatcher {
                    match_pattern: Some(
                        envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern::SafeRegex(
                            envoy_types::pb::envoy::r#type::matcher::v3::RegexMatcher {
                                regex: regex.to_owned(),
                                ..Default::default()
                            },
                        ),
                    ),
                    ..Default::default()
                },
            )),
            ..Default::default()
        })
        .into_iter()
        .collect();
    route::Route {
        r#match: Some(route::RouteMatch {
            path_specifier: Some(route::route_match::PathSpecifier::Prefix("/".to_owned())),
            headers,
            ..Default::default()
        }),
        action: Some(route::route::Action::Route(route::RouteAction {
            cluster_specifier: Some(route::route_action::ClusterSpecifier::Cluster(cluster.to_owned())),
            // No deadline for a whole exchange (a WebSocket lasts for hours): the listener's
            // idle timeout ends one on which nothing moves, as in ELB.
            timeout: Some(proto_duration(Duration::ZERO)),
            retry_policy: Some(route::RetryPolicy {
                retry_on: retry_on.to_owned(),
                num_retries: uint32(2),
                retry_host_predicate: vec![route::retry_policy::RetryHostPredicate {
                    name: "envoy.retry_host_predicates.previous_hosts".to_owned(),
                    config_type: Some(route::retry_policy::retry_host_predicate::ConfigType::TypedConfig(
                        pack_any(PreviousHostsPredicate::default()),
                    )),
                }],
                host_selection_retry_max_attempts: 5,
                ..Default::default()
            }),
            ..Default::default()
        })),
        // The answering upstream and Envoy's response flags, for the filter (which removes it);
        // an upstream cannot plant its own value.
        response_headers_to_add: vec![core::HeaderValueOption {
            header: Some(core::HeaderValue {
                key: plugin.upstream_header.clone(),
                value: sticky_core::plugin::UPSTREAM_HEADER_VALUE.to_owned(),
                ..Default::default()
            }),
            append_action: core::header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The `Sec-WebSocket-Key` Envoy gives a WebSocket opened over HTTP/2 (RFC 8441 has none, and
/// HTTP/1.1 servers refuse an upgrade without one): any 16 bytes in base64 do, as the key only
/// shows the server understood the upgrade, and Envoy does not check the server's answer to it.
pub const H2_WEBSOCKET_KEY: &str = "c3RpY2t5Ym91bmNlci13cw==";

/// `route` for WebSocket upgrades only (Envoy has turned an HTTP/2 extended CONNECT into an
/// HTTP/1.1 upgrade by then), adding the key such a request lacks, and marking its answers for
/// the filter, which watches each upgraded stream to close it when its target leaves.
fn websocket(mut route: route::Route) -> route::Route {
    for added in &mut route.response_headers_to_add {
        if let Some(header) = &mut added.header {
            header.value = sticky_core::plugin::UPGRADE_HEADER_VALUE.to_owned();
        }
    }
    use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern};
    if let Some(matching) = &mut route.r#match {
        matching.headers.push(route::HeaderMatcher {
            name: "upgrade".to_owned(),
            header_match_specifier: Some(route::header_matcher::HeaderMatchSpecifier::StringMatch(
                StringMatcher {
                    match_pattern: Some(MatchPattern::Exact("websocket".to_owned())),
                    ignore_case: true,
                },
            )),
            ..Default::default()
        });
    }
    route.request_headers_to_add.push(core::HeaderValueOption {
        header: Some(core::HeaderValue {
            key: "sec-websocket-key".to_owned(),
            value: H2_WEBSOCKET_KEY.to_owned(),
            ..Default::default()
        }),
        append_action: core::header_value_option::HeaderAppendAction::AddIfAbsent as i32,
        ..Default::default()
    });
    route
}

/// The listener's routes: the same retry rules as the static bootstrap (`envoy/bootstrap.yaml`
/// explains them; `envoy/tests/same_settings_as_xds.rs` checks they agree).
pub fn route_configuration(name: &str, plugin: &PluginConfig) -> route::RouteConfiguration {
    route::RouteConfiguration {
        name: name.to_owned(),
        virtual_hosts: vec![route::VirtualHost {
            name: "all".to_owned(),
            domains: vec!["*".to_owned()],
            include_attempt_count_in_response: true,
            routes: vec![
                websocket(forward(
                    name,
                    Some("GET"),
                    "connect-failure,refused-stream,reset",
                    plugin,
                )),
                forward(
                    name,
                    Some("GET|HEAD|OPTIONS|PUT|DELETE|TRACE"),
                    "connect-failure,refused-stream,reset",
                    plugin,
                ),
                forward(
                    name,
                    None,
                    "connect-failure,refused-stream,reset-before-request",
                    plugin,
                ),
            ],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The listener's targets: endpoints from EDS over ADS, `override_host` following the routing
/// header, passive ejection and dead-peer detection as in the static bootstrap
/// (`sticky_envoy::EnvoyBootstrap`'s `clusters` explains each; `envoy/tests/same_settings_as_xds.rs`
/// checks they agree).
pub fn target_cluster(name: &str, plugin: &PluginConfig, connect_timeout: Duration) -> cluster::Cluster {
    let round_robin = || cluster::LoadBalancingPolicy {
        policies: vec![cluster::load_balancing_policy::Policy {
            typed_extension_config: Some(typed_extension(
                "envoy.load_balancing_policies.round_robin",
                RoundRobin::default(),
            )),
        }],
    };
    let override_host = OverrideHost {
        override_host_sources: vec![override_host::OverrideHostSource {
            header: plugin.routing_header.clone(),
            ..Default::default()
        }],
        fallback_policy: Some(round_robin()),
        ..Default::default()
    };
    let timeout_ms = millis(connect_timeout);
    let keepalive_seconds = u32::try_from(timeout_ms.div_ceil(1000)).unwrap_or(u32::MAX);
    cluster::Cluster {
        name: name.to_owned(),
        cluster_discovery_type: Some(cluster::cluster::ClusterDiscoveryType::Type(
            cluster::cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::cluster::EdsClusterConfig {
            eds_config: ads(),
            service_name: name.to_owned(),
        }),
        connect_timeout: Some(proto_duration(connect_timeout)),
        load_balancing_policy: Some(cluster::LoadBalancingPolicy {
            policies: vec![cluster::load_balancing_policy::Policy {
                typed_extension_config: Some(typed_extension(
                    "envoy.load_balancing_policies.override_host",
                    override_host,
                )),
            }],
        }),
        circuit_breakers: Some(cluster::CircuitBreakers {
            thresholds: vec![cluster::circuit_breakers::Thresholds {
                max_retries: uint32(10_000),
                ..Default::default()
            }],
            ..Default::default()
        }),
        outlier_detection: Some(cluster::OutlierDetection {
            split_external_local_origin_errors: true,
            consecutive_local_origin_failure: uint32(1),
            enforcing_consecutive_local_origin_failure: uint32(100),
            enforcing_consecutive_5xx: uint32(0),
            enforcing_consecutive_gateway_failure: uint32(0),
            enforcing_success_rate: uint32(0),
            enforcing_local_origin_success_rate: uint32(0),
            enforcing_failure_percentage: uint32(0),
            enforcing_failure_percentage_local_origin: uint32(0),
            base_ejection_time: Some(proto_duration(Duration::from_secs(
                sticky_core::UNREACHABLE_HOLD_SECONDS,
            ))),
            max_ejection_percent: uint32(100),
            ..Default::default()
        }),
        upstream_bind_config: Some(core::BindConfig {
            socket_options: vec![core::SocketOption {
                description: "TCP_USER_TIMEOUT".to_owned(),
                level: 6,
                name: 18,
                state: core::socket_option::SocketState::StatePrebind as i32,
                value: Some(core::socket_option::Value::IntValue(
                    i64::try_from(timeout_ms).unwrap_or(i64::MAX),
                )),
                ..Default::default()
            }],
            ..Default::default()
        }),
        per_connection_buffer_limit_bytes: uint32(CONNECTION_BUFFER_BYTES),
        typed_extension_protocol_options: [(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_owned(),
            pack_any(target_protocol_options()),
        )]
        .into(),
        upstream_connection_options: Some(cluster::UpstreamConnectionOptions {
            tcp_keepalive: Some(core::TcpKeepalive {
                keepalive_time: uint32(keepalive_seconds),
                keepalive_interval: uint32(keepalive_seconds),
                keepalive_probes: uint32(2),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// HTTP/1.1 to the targets, with an idle connection closed after [`TARGET_IDLE_TIMEOUT`].
fn target_protocol_options() -> envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions {
    use envoy_types::pb::envoy::extensions::upstreams::http::v3::{HttpProtocolOptions, http_protocol_options};
    HttpProtocolOptions {
        common_http_protocol_options: Some(core::HttpProtocolOptions {
            idle_timeout: Some(proto_duration(TARGET_IDLE_TIMEOUT)),
            ..Default::default()
        }),
        upstream_protocol_options: Some(http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
            http_protocol_options::ExplicitHttpConfig {
                protocol_config: Some(
                    http_protocol_options::explicit_http_config::ProtocolConfig::HttpProtocolOptions(
                        core::Http1ProtocolOptions::default(),
                    ),
                ),
            },
        )),
        ..Default::default()
    }
}

/// The listener's targets with their health: pending instances get no traffic, as in ELB.
fn load_assignment(name: &str, targets: &[(SocketAddr, EndpointHealth)]) -> endpoint::ClusterLoadAssignment {
    endpoint::ClusterLoadAssignment {
        cluster_name: name.to_owned(),
        endpoints: vec![endpoint::LocalityLbEndpoints {
            lb_endpoints: targets
                .iter()
                .map(|(address, health)| endpoint::LbEndpoint {
                    health_status: match health {
                        EndpointHealth::Healthy => core::HealthStatus::Healthy,
                        EndpointHealth::Unhealthy => core::HealthStatus::Unhealthy,
                        EndpointHealth::Draining => core::HealthStatus::Draining,
                    } as i32,
                    host_identifier: Some(endpoint::lb_endpoint::HostIdentifier::Endpoint(endpoint::Endpoint {
                        address: socket_address(*address),
                        ..Default::default()
                    })),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::domain::Write;
    use crate::model::Policy;
    use crate::service::example_service;

    #[test]
    fn a_change_rebuilds_only_its_load_balancer_and_the_patched_snapshot_is_the_whole_one() {
        let (service, dir) = example_service("xds-parts");
        let put = |name: &str, change: &dyn Fn(&mut LoadBalancer)| {
            service
                .write(|inner| {
                    let mut lb = inner.load_balancer("terraform-balancer").unwrap().clone();
                    if name != lb.name {
                        lb.name = name.to_owned();
                        lb.address = inner.load_balancer(name).and_then(|lb| lb.address);
                    }
                    change(&mut lb);
                    Ok((vec![Write::PutLoadBalancer(lb)], ()))
                })
                .unwrap();
        };
        put("shop", &|_| {});
        let options = ServeOptions {
            binding: ListenerBinding::default(),
            feed_token: None,
            poll_timeout_ms: 1_000,
            connect_timeout: DEFAULT_TARGET_CONNECT_TIMEOUT,
        };
        let node = EnvoyNode {
            artifact: FilterArtifact::Native {
                module: "sticky".to_owned(),
            },
            port_offset: 0,
        };
        let (cache, mut assembled) = (PartCache::default(), Assembled::default());
        let mut builds = 0;
        let mut step = |what: &str, rebuilt: u64| {
            service.read(|inner| {
                assembled.update(inner, &cache, &options, &node);
                assert!(
                    assembled.snapshot == Snapshot::build(inner, &options, &node),
                    "{what}: patched as built from scratch"
                );
            });
            let now = cache.builds.load(Ordering::Relaxed);
            assert_eq!(now - builds, rebuilt, "{what}: load balancers built");
            builds = now;
        };
        step("first", 2);
        let versions =
            || service.read(|inner| (inner.state_version("shop"), inner.state_version("terraform-balancer")));
        let (shop, terraform) = versions();

        put("shop", &|lb| {
            lb.policies.insert(
                "sticky".to_owned(),
                Policy::LbCookie {
                    cookie_expiration_period: Some(60),
                    max_lifetime: None,
                },
            );
        });
        step("a policy of shop", 1);
        assert!(versions().0 > shop, "shop's filters get a new state");
        assert_eq!(
            versions().1,
            terraform,
            "terraform-balancer's keep theirs (and their long-polls)"
        );

        put("shop", &|lb| {
            lb.instances.pop_last();
        });
        step("a target of shop", 1);

        service.rotate_keys().unwrap();
        step("a key rotation (not in xDS)", 0);
        assert!(versions().1 > terraform, "every filter state holds the keys");

        service
            .write(|_| Ok((vec![Write::DeleteLoadBalancer("shop".to_owned())], ())))
            .unwrap();
        step("shop deleted", 0);
        assert_eq!(versions().0, None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
