//! The aggregated discovery service (ADS, state of the world) every Envoy of the bouncer
//! follows: one gRPC stream per Envoy carries its listeners, routes, clusters and endpoints.
//! A change in the domain is pushed on every stream at once; an Envoy's ACK of what it was
//! sent tells the followers' registry which version it holds, so an API answer still means "in
//! force". [`Session`] is the protocol, without I/O; [`AdsServer`] runs one per stream.

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryService;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::resources::{
    CLUSTER_TYPE, ENDPOINT_TYPE, EnvoyNode, LISTENER_TYPE, ROUTE_TYPE, Resources, ServeOptions, Snapshot,
};
use super::tls::SECRET_TYPE;
use crate::service::Service;

/// Types whose every response carries every resource (the others carry what was asked).
const WILDCARD_TYPES: [&str; 2] = [LISTENER_TYPE, CLUSTER_TYPE];
/// Every type served, in the order a push sends them: clusters before their endpoints,
/// certificates and listeners before their routes (Envoy's warming order).
const SERVED_TYPES: [&str; 5] = [CLUSTER_TYPE, ENDPOINT_TYPE, SECRET_TYPE, LISTENER_TYPE, ROUTE_TYPE];

/// One type's subscription on a stream.
#[derive(Debug, Default)]
struct Subscription {
    /// The names Envoy asked for (LDS and CDS: every resource).
    names: BTreeSet<String>,
    /// What the last response carried, and its nonce.
    sent: Option<(Resources, String)>,
    /// Whether Envoy accepted the last response.
    accepted: bool,
}

/// What a stream must do after an event.
#[derive(Debug, Default, PartialEq)]
pub struct Step {
    /// Responses to send, in order.
    pub responses: Vec<DiscoveryResponse>,
    /// Envoy refused a response: its type and reason.
    pub refused: Option<(String, String)>,
}

/// The protocol of one ADS stream (state of the world), without I/O.
#[derive(Debug, Default)]
pub struct Session {
    subscriptions: BTreeMap<String, Subscription>,
    nonces: u64,
}

impl Session {
    /// Takes one request from Envoy (a subscription, an ACK or a NACK) against `snapshot`,
    /// built at `version`.
    pub fn on_request(&mut self, request: &DiscoveryRequest, snapshot: &Snapshot, version: u64) -> Step {
        let type_url = request.type_url.as_str();
        let mut step = Step::default();
        if snapshot.of(type_url).is_none() {
            return step;
        }
        let subscription = self.subscriptions.entry(type_url.to_owned()).or_default();
        let latest_nonce = subscription.sent.as_ref().map(|(_, nonce)| nonce.as_str());
        if !request.response_nonce.is_empty() && Some(request.response_nonce.as_str()) != latest_nonce {
            // An answer to an older response: the newer one is on its way (xDS protocol).
            return step;
        }
        if !request.response_nonce.is_empty() {
            match &request.error_detail {
                Some(status) => {
                    subscription.accepted = false;
                    step.refused = Some((type_url.to_owned(), status.message.clone()));
                }
                None => subscription.accepted = true,
            }
        }
        let names: BTreeSet<String> = request.resource_names.iter().cloned().collect();
        let resubscribed = names != subscription.names;
        subscription.names = names;
        if request.response_nonce.is_empty() || resubscribed {
            // A new subscription (or a new stream, or a changed one) is answered at once.
            subscription.sent = None;
        }
        step.responses = self.push(snapshot, version);
        step
    }

    /// Sends every subscribed type whose resources differ from what it was last sent.
    pub fn push(&mut self, snapshot: &Snapshot, version: u64) -> Vec<DiscoveryResponse> {
        let mut responses = Vec::new();
        for type_url in SERVED_TYPES {
            let Some(subscription) = self.subscriptions.get_mut(type_url) else {
                continue;
            };
            let wanted = wanted(snapshot, type_url, &subscription.names);
            if subscription.sent.as_ref().is_some_and(|(sent, _)| *sent == wanted) {
                continue;
            }
            self.nonces += 1;
            let nonce = self.nonces.to_string();
            responses.push(DiscoveryResponse {
                version_info: version.to_string(),
                resources: wanted.values().cloned().collect(),
                type_url: type_url.to_owned(),
                nonce: nonce.clone(),
                ..Default::default()
            });
            subscription.sent = Some((wanted, nonce));
            subscription.accepted = false;
        }
        responses
    }

    /// The version whose resources Envoy holds entirely, if it holds a current one: every type
    /// it follows accepted what `snapshot` (built at `version`) serves, and it follows the
    /// endpoints and routes of every cluster and listener it holds.
    pub fn holds(&self, snapshot: &Snapshot, version: u64) -> Option<u64> {
        for type_url in SERVED_TYPES {
            let required: &Resources = match type_url {
                ENDPOINT_TYPE => &snapshot.clusters,
                // The routes of HTTP listeners (TCP and SSL listeners have none).
                ROUTE_TYPE => &snapshot.routes,
                // Only the certificates a listener uses are in the snapshot.
                SECRET_TYPE => &snapshot.secrets,
                _ => &Resources::new(),
            };
            let Some(subscription) = self.subscriptions.get(type_url) else {
                if required.is_empty() {
                    continue;
                }
                return None;
            };
            if !required.keys().all(|name| subscription.names.contains(name)) {
                return None;
            }
            let current = subscription.accepted
                && subscription
                    .sent
                    .as_ref()
                    .is_some_and(|(sent, _)| *sent == wanted(snapshot, type_url, &subscription.names));
            if !current {
                return None;
            }
        }
        Some(version)
    }
}

/// What `names` ask of `type_url` in `snapshot` (every resource for LDS and CDS).
fn wanted(snapshot: &Snapshot, type_url: &str, names: &BTreeSet<String>) -> Resources {
    let all = snapshot.of(type_url).cloned().unwrap_or_default();
    if WILDCARD_TYPES.contains(&type_url) {
        return all;
    }
    all.into_iter().filter(|(name, _)| names.contains(name)).collect()
}

/// The gRPC service: one [`Session`] per stream, pushed to on every change of the domain.
pub struct AdsServer {
    service: Arc<Service>,
    options: ServeOptions,
    streams: AtomicU64,
}

impl AdsServer {
    pub fn new(service: Arc<Service>, options: ServeOptions) -> Self {
        Self {
            service,
            options,
            streams: AtomicU64::new(0),
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
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
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
            self.options.clone(),
            envoy,
            stream,
            first,
            requests,
            tx,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaStream>, Status> {
        Err(Status::unimplemented(
            "this control service speaks state-of-the-world ADS (api_type GRPC), not delta",
        ))
    }
}

/// Runs one stream until Envoy closes it or the service stops.
async fn follow(
    service: Arc<Service>,
    options: ServeOptions,
    envoy: EnvoyNode,
    stream: String,
    first: DiscoveryRequest,
    mut requests: Streaming<DiscoveryRequest>,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
) {
    let _open = service.followers.xds_opened(&stream);
    let mut versions = service.subscribe();
    let mut session = Session::default();
    // Rebuilt only when the domain changed, not for every ACK.
    let mut built: Option<(Snapshot, u64)> = None;
    let mut next = Some(first);
    loop {
        if built.as_ref().is_none_or(|(_, at)| *at != service.version()) {
            built = Some(service.read(|inner| (Snapshot::build(inner, &options, &envoy), inner.version())));
        }
        let Some((snapshot, version)) = &built else { break };
        let (snapshot, version) = (snapshot, *version);
        let step = match next.take() {
            Some(request) => session.on_request(&request, snapshot, version),
            None => Step {
                responses: session.push(snapshot, version),
                refused: None,
            },
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
        if let Some(held) = session.holds(snapshot, version) {
            // Only HTTP listeners have routes, and filters.
            let http_listeners: std::sync::Arc<[String]> = snapshot.routes.keys().cloned().collect();
            service.followers.xds_holds(&stream, held, http_listeners);
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
    use envoy_types::pb::google::protobuf::Any;
    use envoy_types::pb::google::rpc::Status as RpcStatus;

    use super::*;

    fn resource(tag: &str) -> Any {
        Any {
            type_url: "test".to_owned(),
            value: tag.as_bytes().to_vec(),
        }
    }

    /// One listener and one cluster named `shop_80`; `endpoints` stands for their contents.
    fn snapshot(endpoints: &str) -> Snapshot {
        let one = |tag: &str| Resources::from([("shop_80".to_owned(), resource(tag))]);
        Snapshot {
            listeners: one("listener"),
            routes: one("route"),
            clusters: one("cluster"),
            endpoints: one(endpoints),
            secrets: Resources::new(),
        }
    }

    fn request(type_url: &str, names: &[&str], nonce: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            type_url: type_url.to_owned(),
            resource_names: names.iter().map(|n| (*n).to_owned()).collect(),
            response_nonce: nonce.to_owned(),
            ..Default::default()
        }
    }

    /// Subscribes to all four types and ACKs each first response, as Envoy does.
    fn followed(session: &mut Session, snapshot: &Snapshot, version: u64) {
        for (type_url, names) in [
            (CLUSTER_TYPE, vec![]),
            (ENDPOINT_TYPE, vec!["shop_80"]),
            (LISTENER_TYPE, vec![]),
            (ROUTE_TYPE, vec!["shop_80"]),
        ] {
            let step = session.on_request(&request(type_url, &names, ""), snapshot, version);
            let [response] = step.responses.as_slice() else {
                panic!("one response to a new subscription: {step:?}")
            };
            assert_eq!((response.type_url.as_str(), response.resources.len()), (type_url, 1));
            let ack = session.on_request(&request(type_url, &names, &response.nonce), snapshot, version);
            assert_eq!(ack, Step::default(), "an ACK needs no answer");
        }
    }

    #[test]
    fn an_envoy_holds_a_version_once_it_acked_every_type_and_follows_every_cluster_and_listener() {
        let (snapshot, mut session) = (snapshot("a"), Session::default());
        let step = session.on_request(&request(CLUSTER_TYPE, &[], ""), &snapshot, 3);
        assert_eq!(session.holds(&snapshot, 3), None, "sent, not yet accepted");
        let nonce = step.responses[0].nonce.clone();
        session.on_request(&request(CLUSTER_TYPE, &[], &nonce), &snapshot, 3);
        assert_eq!(
            session.holds(&snapshot, 3),
            None,
            "the cluster is held, its endpoints are not yet asked for"
        );
        let mut session = Session::default();
        followed(&mut session, &snapshot, 3);
        assert_eq!(session.holds(&snapshot, 3), Some(3));
    }

    #[test]
    fn a_change_is_pushed_only_for_the_types_it_changes_and_held_once_acked() {
        let (before, mut session) = (snapshot("a"), Session::default());
        followed(&mut session, &before, 3);
        let after = snapshot("b");
        let pushed = session.push(&after, 4);
        assert_eq!(
            pushed.iter().map(|r| r.type_url.as_str()).collect::<Vec<_>>(),
            [ENDPOINT_TYPE]
        );
        assert_eq!(session.holds(&after, 4), None);
        session.on_request(&request(ENDPOINT_TYPE, &["shop_80"], &pushed[0].nonce), &after, 4);
        assert_eq!(session.holds(&after, 4), Some(4));
        assert!(session.push(&after, 5).is_empty(), "nothing new, nothing sent");
        assert_eq!(session.holds(&after, 5), Some(5), "… and the new version is held");
    }

    #[test]
    fn a_refusal_is_reported_and_the_version_is_not_held() {
        let (before, mut session) = (snapshot("a"), Session::default());
        followed(&mut session, &before, 3);
        let after = snapshot("b");
        let pushed = session.push(&after, 4);
        let mut nack = request(ENDPOINT_TYPE, &["shop_80"], &pushed[0].nonce);
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
    }

    #[test]
    fn an_answer_to_an_older_response_is_ignored() {
        let (before, mut session) = (snapshot("a"), Session::default());
        followed(&mut session, &before, 3);
        let pushed = session.push(&snapshot("b"), 4);
        let newer = session.push(&snapshot("c"), 5);
        assert_ne!(pushed[0].nonce, newer[0].nonce);
        let stale = session.on_request(
            &request(ENDPOINT_TYPE, &["shop_80"], &pushed[0].nonce),
            &snapshot("c"),
            5,
        );
        assert_eq!(stale, Step::default());
        assert_eq!(
            session.holds(&snapshot("c"), 5),
            None,
            "the newer response is not accepted yet"
        );
    }
}
