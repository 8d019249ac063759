//! The aggregated discovery service every Envoy of the bouncer follows, incremental (delta
//! ADS, `api_type: DELTA_GRPC`): one gRPC stream per Envoy carries its listeners, routes,
//! clusters, endpoints and certificates, and a change sends only the resources it changed, so
//! its cost does not grow with the number of load balancers. An Envoy's ACKs tell the
//! followers' registry which version it holds, so an API answer still means "in force".
//! [`Session`] is the protocol, without I/O; [`AdsServer`] runs one per stream.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryService;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource,
};
use envoy_types::pb::google::protobuf::Any;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::resources::{
    Assembled, CLUSTER_TYPE, Changed, ENDPOINT_TYPE, EnvoyNode, LISTENER_TYPE, PartCache, ROUTE_TYPE, ServeOptions,
    Snapshot,
};
use super::tls::SECRET_TYPE;
use crate::service::Service;

/// Types Envoy follows whole (wildcard: every resource); it names what it wants of the others.
const WILDCARD_TYPES: [&str; 2] = [LISTENER_TYPE, CLUSTER_TYPE];
/// Every type served, in the order a push sends them: clusters before their endpoints,
/// certificates and listeners before their routes (Envoy's warming order).
const SERVED_TYPES: [&str; 5] = [CLUSTER_TYPE, ENDPOINT_TYPE, SECRET_TYPE, LISTENER_TYPE, ROUTE_TYPE];

/// One type's subscription on a stream.
#[derive(Debug, Default)]
struct Subscription {
    /// The names Envoy asked for (wildcard types: every resource).
    names: BTreeSet<String>,
    /// The version (a digest of its content) of each resource Envoy was sent.
    sent: HashMap<String, String>,
    /// Responses not yet acknowledged, by nonce.
    unacknowledged: BTreeSet<String>,
    /// Envoy refused the last response it answered.
    refused: bool,
}

impl Subscription {
    fn wants(&self, type_url: &str, name: &str) -> bool {
        WILDCARD_TYPES.contains(&type_url) || self.names.contains(name)
    }
}

/// What a stream must do after an event.
#[derive(Debug, Default, PartialEq)]
pub struct Step {
    /// Responses to send, in order.
    pub responses: Vec<DeltaDiscoveryResponse>,
    /// Envoy refused a response: its type and reason.
    pub refused: Option<(String, String)>,
}

/// The protocol of one delta ADS stream, without I/O.
#[derive(Debug, Default)]
pub struct Session {
    subscriptions: BTreeMap<String, Subscription>,
    nonces: u64,
}

/// A resource's version: a digest of its encoding (the same content, the same version).
fn digest(resource: &Any) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    resource.value.hash(&mut hasher);
    resource.type_url.hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

impl Session {
    /// Takes one request from Envoy (an ACK or NACK, and subscription changes) against
    /// `snapshot`, built at `version`.
    pub fn on_request(&mut self, request: &DeltaDiscoveryRequest, snapshot: &Snapshot, version: u64) -> Step {
        let type_url = request.type_url.as_str();
        let mut step = Step::default();
        if snapshot.of(type_url).is_none() {
            return step;
        }
        let subscription = self.subscriptions.entry(type_url.to_owned()).or_default();
        if !request.response_nonce.is_empty() && subscription.unacknowledged.remove(&request.response_nonce) {
            match &request.error_detail {
                Some(status) => {
                    subscription.refused = true;
                    step.refused = Some((type_url.to_owned(), status.message.clone()));
                }
                None => subscription.refused = false,
            }
        }
        let mut wanted = BTreeSet::new();
        for name in &request.resource_names_subscribe {
            if name != "*" && subscription.names.insert(name.clone()) {
                wanted.insert(name.clone());
            }
        }
        for name in &request.resource_names_unsubscribe {
            subscription.names.remove(name);
            subscription.sent.remove(name);
        }
        // A wildcard type's first request (and a reconnected stream's) gets everything.
        let first =
            request.response_nonce.is_empty() && WILDCARD_TYPES.contains(&type_url) && subscription.sent.is_empty();
        if first {
            wanted.extend(snapshot.of(type_url).into_iter().flat_map(|all| all.keys().cloned()));
        }
        if !wanted.is_empty() || first {
            step.responses
                .extend(self.respond(type_url, &wanted, snapshot, version, first));
        }
        step
    }

    /// Sends what `changed` changed of what Envoy follows.
    pub fn push(&mut self, snapshot: &Snapshot, changed: &Changed, version: u64) -> Vec<DeltaDiscoveryResponse> {
        SERVED_TYPES
            .into_iter()
            .filter_map(|type_url| {
                let names = changed.get(type_url)?;
                self.subscriptions.get(type_url)?;
                self.respond(type_url, names, snapshot, version, false)
            })
            .collect()
    }

    /// The response carrying the current `names` of `type_url` Envoy wants and was not sent as
    /// they are (those gone as removed), if any (or `always`).
    fn respond(
        &mut self,
        type_url: &str,
        names: &BTreeSet<String>,
        snapshot: &Snapshot,
        version: u64,
        always: bool,
    ) -> Option<DeltaDiscoveryResponse> {
        let subscription = self.subscriptions.get_mut(type_url)?;
        let all = snapshot.of(type_url)?;
        let (mut resources, mut removed) = (Vec::new(), Vec::new());
        for name in names {
            if !subscription.wants(type_url, name) {
                continue;
            }
            match all.get(name) {
                Some(resource) => {
                    let version = digest(resource);
                    if subscription.sent.get(name) != Some(&version) {
                        subscription.sent.insert(name.clone(), version.clone());
                        resources.push(Resource {
                            name: name.clone(),
                            version,
                            resource: Some(resource.clone()),
                            ..Default::default()
                        });
                    }
                }
                // Gone, or asked for and never there: Envoy stops waiting for it.
                None => {
                    if subscription.sent.remove(name).is_some() || !WILDCARD_TYPES.contains(&type_url) {
                        removed.push(name.clone());
                    }
                }
            }
        }
        if resources.is_empty() && removed.is_empty() && !always {
            return None;
        }
        self.nonces += 1;
        let nonce = self.nonces.to_string();
        subscription.unacknowledged.insert(nonce.clone());
        Some(DeltaDiscoveryResponse {
            system_version_info: version.to_string(),
            resources,
            type_url: type_url.to_owned(),
            removed_resources: removed,
            nonce,
            ..Default::default()
        })
    }

    /// Whether Envoy holds everything `snapshot` (built at `version`) serves it: it
    /// acknowledged every response, and follows the endpoints, routes and certificates of
    /// every cluster and listener it holds.
    pub fn holds(&self, snapshot: &Snapshot, version: u64) -> Option<u64> {
        for type_url in SERVED_TYPES {
            let required = match type_url {
                ENDPOINT_TYPE => &snapshot.clusters,
                // The routes of HTTP listeners (TCP and SSL listeners have none).
                ROUTE_TYPE => &snapshot.routes,
                // Only the certificates a listener uses are in the snapshot.
                SECRET_TYPE => &snapshot.secrets,
                _ => snapshot.of(type_url)?,
            };
            let Some(subscription) = self.subscriptions.get(type_url) else {
                if required.is_empty() {
                    continue;
                }
                return None;
            };
            if subscription.refused || !subscription.unacknowledged.is_empty() {
                return None;
            }
            if !required.keys().all(|name| subscription.sent.contains_key(name)) {
                return None;
            }
        }
        Some(version)
    }
}

/// The gRPC service: one [`Session`] per stream, pushed to on every change of the domain.
pub struct AdsServer {
    service: Arc<Service>,
    options: ServeOptions,
    streams: AtomicU64,
    parts: Arc<PartCache>,
}

impl AdsServer {
    pub fn new(service: Arc<Service>, options: ServeOptions) -> Self {
        Self {
            service,
            options,
            streams: AtomicU64::new(0),
            parts: Arc::default(),
        }
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;
type DeltaStream = Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsServer {
    type StreamAggregatedResourcesStream = ResponseStream;
    type DeltaAggregatedResourcesStream = DeltaStream;

    async fn stream_aggregated_resources(
        &self,
        _request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        Err(Status::unimplemented(
            "this control service speaks incremental ADS: set ads_config.api_type to DELTA_GRPC",
        ))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaStream>, Status> {
        let mut requests = request.into_inner();
        // The first request names the node; its metadata says which filter it runs.
        let first = requests
            .message()
            .await?
            .ok_or_else(|| Status::cancelled("the stream closed before its first request"))?;
        let node = first.node.clone().unwrap_or_default();
        let envoy = EnvoyNode::from_node(&node).ok_or_else(|| {
            Status::invalid_argument(
                "node metadata must say which sticky filter this Envoy runs: sticky_shell \
                 (native or wasm) and sticky_artifact (the module's name or the .wasm's path), \
                 and sticky_port_offset, when given, must be a whole number 0 to 65535",
            )
        })?;
        let number = self.streams.fetch_add(1, Ordering::Relaxed) + 1;
        let stream = format!("{} (stream {number})", node.id);
        tracing::info!(%stream, ?envoy, "xDS stream opened");
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(follow(
            Arc::clone(&self.service),
            Arc::clone(&self.parts),
            self.options.clone(),
            envoy,
            stream,
            first,
            requests,
            tx,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Runs one stream until Envoy closes it or the service stops.
#[allow(clippy::too_many_arguments)]
async fn follow(
    service: Arc<Service>,
    parts: Arc<PartCache>,
    options: ServeOptions,
    envoy: EnvoyNode,
    stream: String,
    first: DeltaDiscoveryRequest,
    mut requests: Streaming<DeltaDiscoveryRequest>,
    tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
) {
    let _open = service.followers.xds_opened(&stream);
    let mut versions = service.subscribe();
    let mut session = Session::default();
    // Patched only when the domain changed, with what changed.
    let mut assembled = Assembled::default();
    service.read(|inner| assembled.update(inner, &parts, &options, &envoy));
    let mut http_listeners: Arc<[String]> = assembled.snapshot.routes.keys().cloned().collect();
    let mut next = Some(first);
    loop {
        let step = match next.take() {
            Some(request) => session.on_request(&request, &assembled.snapshot, assembled.version),
            None => {
                let changed = service.read(|inner| assembled.update(inner, &parts, &options, &envoy));
                if changed.contains_key(ROUTE_TYPE) {
                    // Only HTTP listeners have routes, and filters.
                    http_listeners = assembled.snapshot.routes.keys().cloned().collect();
                }
                Step {
                    responses: session.push(&assembled.snapshot, &changed, assembled.version),
                    refused: None,
                }
            }
        };
        if let Some((type_url, detail)) = step.refused {
            tracing::warn!(%stream, %type_url, %detail, "Envoy refused (NACKed) what it was sent");
            service
                .metrics
                .count("sticky_control_xds_refusals_total", &[("type_url", &type_url)]);
            service.followers.xds_refused(&stream, format!("{type_url}: {detail}"));
        }
        for response in step.responses {
            if tx.send(Ok(response)).await.is_err() {
                return;
            }
        }
        if let Some(held) = session.holds(&assembled.snapshot, assembled.version) {
            service.followers.xds_holds(&stream, held, Arc::clone(&http_listeners));
        }
        tokio::select! {
            request = requests.message() => match request {
                Ok(Some(request)) => next = Some(request),
                Ok(None) => break,
                Err(status) => {
                    tracing::info!(%stream, %status, "xDS stream failed");
                    break;
                }
            },
            changed = versions.changed() => if changed.is_err() { break },
            () = service.stopping() => break,
        }
    }
    tracing::info!(%stream, "xDS stream closed");
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::google::rpc::Status as RpcStatus;

    use super::*;
    use crate::xds::resources::Resources;

    fn resource(tag: &str) -> Any {
        Any {
            type_url: "test".to_owned(),
            value: tag.as_bytes().to_vec(),
        }
    }

    /// Listeners and clusters named `<name>_80`; `endpoints` stands for their endpoints.
    fn snapshot(names: &[&str], endpoints: &str) -> Snapshot {
        let all = |tag: &str| -> Resources {
            names
                .iter()
                .map(|name| (format!("{name}_80"), resource(&format!("{tag} {name}"))))
                .collect()
        };
        Snapshot {
            listeners: all("listener"),
            routes: all("route"),
            clusters: all("cluster"),
            endpoints: all(endpoints),
            secrets: Resources::new(),
        }
    }

    fn request(type_url: &str, subscribe: &[&str], nonce: &str) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            type_url: type_url.to_owned(),
            resource_names_subscribe: subscribe.iter().map(|n| (*n).to_owned()).collect(),
            response_nonce: nonce.to_owned(),
            ..Default::default()
        }
    }

    fn names(response: &DeltaDiscoveryResponse) -> (Vec<&str>, Vec<&str>) {
        (
            response.resources.iter().map(|r| r.name.as_str()).collect(),
            response.removed_resources.iter().map(String::as_str).collect(),
        )
    }

    /// Subscribes as Envoy does (clusters and listeners whole, then the endpoints and routes
    /// of each) and acknowledges every response.
    fn followed(session: &mut Session, snapshot: &Snapshot, version: u64) {
        let named: Vec<&str> = snapshot.clusters.keys().map(String::as_str).collect();
        for (type_url, subscribe) in [
            (CLUSTER_TYPE, vec![]),
            (ENDPOINT_TYPE, named.clone()),
            (LISTENER_TYPE, vec![]),
            (ROUTE_TYPE, named.clone()),
        ] {
            let step = session.on_request(&request(type_url, &subscribe, ""), snapshot, version);
            let [response] = step.responses.as_slice() else {
                panic!("one response to a new subscription: {step:?}")
            };
            assert_eq!(names(response).0, named, "{type_url}: everything asked for");
            let ack = session.on_request(&request(type_url, &[], &response.nonce), snapshot, version);
            assert_eq!(ack, Step::default(), "an ACK needs no answer");
        }
    }

    fn changed(type_url: &'static str, names: &[&str]) -> Changed {
        Changed::from([(type_url, names.iter().map(|n| (*n).to_owned()).collect())])
    }

    #[test]
    fn an_envoy_holds_a_version_once_it_acked_every_response_and_follows_every_cluster_and_listener() {
        let (snapshot, mut session) = (snapshot(&["shop", "cart"], "a"), Session::default());
        let step = session.on_request(&request(CLUSTER_TYPE, &[], ""), &snapshot, 3);
        assert_eq!(session.holds(&snapshot, 3), None, "sent, not yet acknowledged");
        let nonce = step.responses[0].nonce.clone();
        session.on_request(&request(CLUSTER_TYPE, &[], &nonce), &snapshot, 3);
        assert_eq!(
            session.holds(&snapshot, 3),
            None,
            "the clusters are held, their endpoints are not yet asked for"
        );
        let mut session = Session::default();
        followed(&mut session, &snapshot, 3);
        assert_eq!(session.holds(&snapshot, 3), Some(3));
    }

    #[test]
    fn a_change_sends_only_the_resources_it_changed_and_is_held_once_acked() {
        let (before, mut session) = (snapshot(&["shop", "cart"], "a"), Session::default());
        followed(&mut session, &before, 3);
        let mut after = before.clone();
        after.endpoints.insert("cart_80".to_owned(), resource("b cart"));
        let pushed = session.push(&after, &changed(ENDPOINT_TYPE, &["cart_80"]), 4);
        let [response] = pushed.as_slice() else {
            panic!("{pushed:?}")
        };
        assert_eq!(
            (response.type_url.as_str(), names(response)),
            (ENDPOINT_TYPE, (vec!["cart_80"], vec![])),
            "shop's endpoints are not sent again"
        );
        assert_eq!(session.holds(&after, 4), None);
        session.on_request(&request(ENDPOINT_TYPE, &[], &response.nonce), &after, 4);
        assert_eq!(session.holds(&after, 4), Some(4));
        let unchanged = session.push(&after, &changed(ENDPOINT_TYPE, &["cart_80", "shop_80"]), 5);
        assert!(unchanged.is_empty(), "what Envoy holds as it is is not sent");
        assert_eq!(session.holds(&after, 5), Some(5), "… and the new version is held");
    }

    #[test]
    fn a_load_balancer_gone_is_removed_and_a_new_one_added() {
        let (before, mut session) = (snapshot(&["shop", "cart"], "a"), Session::default());
        followed(&mut session, &before, 3);
        let after = snapshot(&["shop", "bike"], "a");
        let mut all = Changed::new();
        for type_url in [CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE] {
            all.insert(type_url, ["cart_80".to_owned(), "bike_80".to_owned()].into());
        }
        let pushed = session.push(&after, &all, 4);
        let sent: Vec<_> = pushed.iter().map(|r| (r.type_url.as_str(), names(r))).collect();
        assert_eq!(
            sent,
            [
                (CLUSTER_TYPE, (vec!["bike_80"], vec!["cart_80"])),
                (ENDPOINT_TYPE, (vec![], vec!["cart_80"])),
                (LISTENER_TYPE, (vec!["bike_80"], vec!["cart_80"])),
                (ROUTE_TYPE, (vec![], vec!["cart_80"])),
            ],
            "clusters before endpoints, listeners before routes; bike's endpoints and routes \
             once Envoy asks for them"
        );
        for response in &pushed {
            session.on_request(&request(&response.type_url, &[], &response.nonce), &after, 4);
        }
        assert_eq!(
            session.holds(&after, 4),
            None,
            "bike's endpoints and routes not followed yet"
        );
        for type_url in [ENDPOINT_TYPE, ROUTE_TYPE] {
            let step = session.on_request(&request(type_url, &["bike_80"], ""), &after, 4);
            assert_eq!(names(&step.responses[0]), (vec!["bike_80"], vec![]));
            session.on_request(&request(type_url, &[], &step.responses[0].nonce), &after, 4);
        }
        assert_eq!(session.holds(&after, 4), Some(4));
    }

    #[test]
    fn a_name_asked_for_that_does_not_exist_is_answered_removed() {
        let (snapshot, mut session) = (snapshot(&["shop"], "a"), Session::default());
        let step = session.on_request(&request(ENDPOINT_TYPE, &["gone_80"], ""), &snapshot, 3);
        assert_eq!(names(&step.responses[0]), (vec![], vec!["gone_80"]));
    }

    #[test]
    fn a_refusal_is_reported_and_the_version_is_not_held_until_a_later_response_is_accepted() {
        let (before, mut session) = (snapshot(&["shop"], "a"), Session::default());
        followed(&mut session, &before, 3);
        let after = snapshot(&["shop"], "b");
        let pushed = session.push(&after, &changed(ENDPOINT_TYPE, &["shop_80"]), 4);
        let mut nack = request(ENDPOINT_TYPE, &[], &pushed[0].nonce);
        nack.error_detail = Some(RpcStatus {
            code: 3,
            message: "bad endpoint".to_owned(),
            details: vec![],
        });
        let step = session.on_request(&nack, &after, 4);
        assert_eq!(
            step.refused,
            Some((ENDPOINT_TYPE.to_owned(), "bad endpoint".to_owned()))
        );
        assert!(step.responses.is_empty(), "the same resources are not sent again");
        assert_eq!(session.holds(&after, 4), None);
        let fixed = snapshot(&["shop"], "c");
        let pushed = session.push(&fixed, &changed(ENDPOINT_TYPE, &["shop_80"]), 5);
        session.on_request(&request(ENDPOINT_TYPE, &[], &pushed[0].nonce), &fixed, 5);
        assert_eq!(session.holds(&fixed, 5), Some(5));
    }

    #[test]
    fn a_version_is_held_only_once_every_outstanding_response_is_acknowledged() {
        let (before, mut session) = (snapshot(&["shop"], "a"), Session::default());
        followed(&mut session, &before, 3);
        let pushed = session.push(&snapshot(&["shop"], "b"), &changed(ENDPOINT_TYPE, &["shop_80"]), 4);
        let newer = snapshot(&["shop"], "c");
        let later = session.push(&newer, &changed(ENDPOINT_TYPE, &["shop_80"]), 5);
        session.on_request(&request(ENDPOINT_TYPE, &[], &later[0].nonce), &newer, 5);
        assert_eq!(session.holds(&newer, 5), None, "the older response is not answered yet");
        session.on_request(&request(ENDPOINT_TYPE, &[], &pushed[0].nonce), &newer, 5);
        assert_eq!(session.holds(&newer, 5), Some(5));
    }
}
