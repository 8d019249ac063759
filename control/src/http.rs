//! The HTTP surface: the Query API at `/`, the filters' state feed and Envoy's REST EDS (behind
//! one bearer-token layer), `/metrics` and `/healthz`. Handlers only carry requests to the API
//! (`api`), the projections (`feed`) and the metrics; every route has a time limit and a bound
//! on concurrent requests.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::api;
use crate::error::ApiError;
use crate::feed::{self, DiscoveryRequest};
use crate::followers::is_poller_id;
use crate::query::Params;
use crate::runner::{Runner, request_id, run_call};
use crate::service::{Done, Service};
use crate::sigv4::{self, RequestToVerify};
use crate::tallies::ListenerTallies;
use crate::xds::{AdsServer, ServeOptions};
use crate::xml;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use sticky_core::ListenerTally;

/// Largest request body the API reads.
const MAX_BODY: usize = 4 << 20;
/// API calls served at once; more wait their turn (each may wait for the followers).
const API_CONCURRENCY: usize = 64;
/// Feed long-polls and EDS fetches served at once: one long-poll per filter VM per listener
/// (the follower benchmark measures a replica at 10,000).
const FEED_CONCURRENCY: usize = 20_000;
/// What a request may take beyond its own wait (for followers, or for a change).
const TIME_MARGIN: Duration = Duration::from_secs(30);

/// Who may read what carries key material or the fleet's state: the state feed (cookie keys),
/// xDS and EDS (listeners, backend addresses), `/v1/in-force` and `/v1/hosts`. There is no
/// "anyone": every configuration authenticates its peers.
#[derive(Clone)]
pub enum PeerAuth {
    /// A client certificate the control port's client CA issued ([`crate::control_tls`]).
    ClientCertificate,
    /// `Authorization: Bearer <token>`: plain HTTP on loopback, explicitly enabled.
    Token(String),
}

/// Options of the HTTP surface.
#[derive(Clone)]
pub struct HttpOptions {
    pub peers: PeerAuth,
    /// How this replica asks the others whether their followers hold a change.
    pub replica_client: reqwest::Client,
}

impl HttpOptions {
    /// Peers present `token`; replicas speak plain HTTP.
    pub fn with_token(token: impl Into<String>) -> Self {
        Self {
            peers: PeerAuth::Token(token.into()),
            replica_client: reqwest::Client::builder()
                .no_proxy()
                .connect_timeout(Duration::from_secs(1))
                .build()
                .unwrap_or_default(),
        }
    }

    /// Peers present a client certificate; replicas ask each other through `replica_client`
    /// ([`crate::control_tls::ControlTls::peer_client`]).
    pub fn with_client_certificates(replica_client: reqwest::Client) -> Self {
        Self {
            peers: PeerAuth::ClientCertificate,
            replica_client,
        }
    }

    /// The token peers present, when they present one.
    fn token(&self) -> Option<String> {
        match &self.peers {
            PeerAuth::Token(token) => Some(token.clone()),
            PeerAuth::ClientCertificate => None,
        }
    }
}

/// Per listener (load balancer, port): the version of its cached state, and that state as JSON.
type FeedCache = std::collections::HashMap<(String, u16), (u64, Bytes)>;

#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) service: Arc<Service>,
    /// Shared, not copied: the state is cloned for every request.
    options: Arc<HttpOptions>,
    /// Each listener's filter state, serialized once per version: a change is answered to
    /// every filter (thousands) with the same bytes.
    feed_cache: Arc<std::sync::Mutex<FeedCache>>,
    /// What the API calls run through.
    runner: Runner,
    /// Each listener's counters, as its filters' polls report them.
    tallies: Arc<ListenerTallies>,
}

pub fn app(service: Arc<Service>, options: HttpOptions) -> Router {
    let api_time = service.config.sync_timeout + TIME_MARGIN;
    let feed_time = service.config.long_poll_timeout + TIME_MARGIN;
    // Only the ADS path: tonic's own router would answer any unknown path with a gRPC error
    // and HTTP 200.
    let ads = AggregatedDiscoveryServiceServer::new(AdsServer::new(
        Arc::clone(&service),
        ServeOptions {
            binding: service.config.listener_binding,
            feed_token: options.token(),
            poll_timeout_ms: u64::try_from(service.config.long_poll_timeout.as_millis()).unwrap_or(u64::MAX),
            connect_timeout: service.config.target_connect_timeout,
        },
    ));
    let runner = Runner {
        service: Arc::clone(&service),
        peers: options.replica_client.clone(),
        feed_token: options.token(),
    };
    let state = AppState {
        service,
        options: Arc::new(options),
        runner: runner.clone(),
        feed_cache: Arc::default(),
        tallies: Arc::default(),
    };
    // Behind the feed's token too: the filters' configurations it serves carry it.
    let xds = Router::new()
        .route_service("/envoy.service.discovery.v3.AggregatedDiscoveryService/{*method}", ads)
        .route_layer(middleware::from_fn_with_state(state.clone(), require_peer))
        .with_state(());
    let api = Router::new()
        .route("/", get(query_api).post(query_api))
        // OAPI's calls: `/api/v1/<Call>`, and `//api/latest/<Call>` as osc-cli sends them (a
        // catch-all, so that the doubled slash reaches it; other paths get a 404).
        .route("/{*path}", axum::routing::any(oapi_call))
        .layer(GlobalConcurrencyLimitLayer::new(API_CONCURRENCY))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            api_time,
        ));
    let feed = Router::new()
        .route("/v1/state/{load_balancer}/{port}", get(state_feed))
        .route("/v3/discovery:endpoints", post(endpoints))
        .route("/v1/hosts", get(hosts))
        .route("/v1/in-force", get(in_force))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_peer))
        // One bound shared by the feed and EDS (a layer per route would give each its own).
        .layer(GlobalConcurrencyLimitLayer::new(FEED_CONCURRENCY))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            feed_time,
        ));
    let ui = crate::ui::routes(runner, Arc::clone(&state.tallies))
        .layer(GlobalConcurrencyLimitLayer::new(API_CONCURRENCY))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            api_time,
        ));
    Router::new()
        .merge(api)
        .merge(feed)
        .merge(ui)
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
        // Envoy's xDS (gRPC over HTTP/2 on the same port): long-lived streams, so neither the
        // time limit nor the concurrency bound of the routes above.
        .merge(xds)
}

/// On an answer to a change not every follower held within the sync time-out (or that an Envoy
/// refused): which ones, and why.
pub const NOT_IN_FORCE_HEADER: &str = "x-sticky-not-in-force";

/// `text` as a header value: visible ASCII, at most 2,000 bytes.
fn header_text(text: &str) -> Option<axum::http::HeaderValue> {
    let clean: String = text
        .chars()
        .map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' })
        .take(2000)
        .collect();
    axum::http::HeaderValue::from_str(&clean).ok()
}

/// Each load balancer's DNSName and the bouncer address its listeners bind, as lines of
/// `/etc/hosts` (`address name`).
async fn hosts(State(app): State<AppState>) -> String {
    app.service.read(|inner| {
        inner
            .load_balancers()
            .filter_map(|lb| Some(format!("{} {}\n", lb.address?, crate::model::dns_name(&lb.name))))
            .collect()
    })
}

/// One Query API call.
async fn query_api(State(app): State<AppState>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let request_id = request_id();
    let id = request_id.clone();
    let (result, not_in_force) = run_call(&app.runner, "Query API", &request_id, move |service| {
        verify_and_dispatch(service, &method, &uri, &headers, &body, &id)
    })
    .await;
    match result {
        Ok(body) => with_not_in_force(
            (StatusCode::OK, [(header::CONTENT_TYPE, "text/xml")], body).into_response(),
            not_in_force,
        ),
        Err(error) => error.into_response_with(&request_id),
    }
}

/// Committed, but not (yet) in force everywhere: said beside the answer.
fn with_not_in_force(mut response: Response, not_in_force: Option<String>) -> Response {
    if let Some(value) = not_in_force.and_then(|text| header_text(&text)) {
        response.headers_mut().insert(NOT_IN_FORCE_HEADER, value);
    }
    response
}

/// One OAPI call (`/api/v1/<Call>`).
async fn oapi_call(State(app): State<AppState>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let Some(uri) = crate::oapi::normalized(&uri) else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    let request_id = request_id();
    let (result, not_in_force) = run_call(&app.runner, "OAPI", &request_id, move |service| {
        crate::oapi::verify_and_run(service, &method, &uri, &headers, &body)
    })
    .await;
    match result {
        Ok(answer) => with_not_in_force(crate::oapi::answer_response(answer, &request_id), not_in_force),
        Err(error) => error.into_response_with(&request_id),
    }
}

/// The action's name (when it is one of the API's) and its XML answer.
fn verify_and_dispatch(
    service: &Service,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    request_id: &str,
) -> (String, Result<Done<String>, ApiError>) {
    let mut action_name = String::from("unknown");
    let result = (|| {
        let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
        let request = RequestToVerify {
            method: method.as_str(),
            path_and_query,
            headers,
            body,
        };
        let access_key = sigv4::verify(&service.config.access_keys, &request, SystemTime::now())?;
        let form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
        let params = Params::parse(uri.query(), (*method == Method::POST && form).then_some(body))?;
        let action = params.required("Action")?;
        // IAM's server-certificate calls come with IAM's version; everything else is ELB's.
        let iam = params.get("Version") == Some(crate::iam::VERSION);
        if (iam && crate::iam::ACTIONS.contains(&action)) || (!iam && api::ACTIONS.contains(&action)) {
            action.clone_into(&mut action_name);
        }
        tracing::debug!(%request_id, action, %access_key, "api call");
        if iam {
            let done = crate::iam::dispatch(service, action, &params)?;
            return Ok(done.map(|result| xml::response_in(xml::IAM_NAMESPACE, action, &result, request_id)));
        }
        let done = api::dispatch(service, action, &params)?;
        Ok(done.map(|result| xml::response(action, &result, request_id)))
    })();
    (action_name, result)
}

/// The state feed, xDS, EDS, in-force and hosts answer authenticated peers only.
async fn require_peer(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let authenticated = match &app.options.peers {
        PeerAuth::ClientCertificate => request
            .extensions()
            .get::<crate::control_tls::PeerCertificate>()
            .is_some(),
        PeerAuth::Token(token) => request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|p| bool::from(p.as_bytes().ct_eq(token.as_bytes()))),
    };
    if !authenticated {
        let needed = match app.options.peers {
            PeerAuth::ClientCertificate => {
                "a client certificate issued by the control service's client CA is required\n"
            }
            PeerAuth::Token(_) => "a valid bearer token is required\n",
        };
        return (StatusCode::UNAUTHORIZED, needed).into_response();
    }
    next.run(request).await
}

/// Ready to serve: on a shared store, only while the store is reachable (Envoys health-check
/// the replicas and follow another one meanwhile).
async fn healthz(State(app): State<AppState>) -> Response {
    if app.service.replica.store_reachable() {
        "ok".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "the store is unreachable\n").into_response()
    }
}

#[derive(Deserialize)]
struct InForceQuery {
    version: u64,
    endpoints_version: u64,
    /// How long to wait, at most the service's sync time-out.
    wait_ms: Option<u64>,
}

/// Asked by another replica that committed a change: answers 204 once this replica holds that
/// version and every live follower of it holds the change, or 409 with those still behind.
async fn in_force(State(app): State<AppState>, Query(query): Query<InForceQuery>) -> Response {
    let service = &app.service;
    let limit = service.config.sync_timeout;
    let wait = query.wait_ms.map_or(limit, |ms| Duration::from_millis(ms).min(limit));
    let deadline = tokio::time::Instant::now() + wait;
    let mut versions = service.subscribe();
    let caught_up = matches!(
        tokio::time::timeout_at(deadline, versions.wait_for(|v| *v >= query.version)).await,
        Ok(Ok(_))
    );
    if !caught_up {
        let text = format!(
            "this replica is at version {}, behind {}\n",
            service.version(),
            query.version
        );
        return (StatusCode::CONFLICT, text).into_response();
    }
    let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
    match service
        .wait_until_current(query.version, query.endpoints_version, remaining)
        .await
    {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(lagging) => (StatusCode::CONFLICT, lagging.join("\n") + "\n").into_response(),
    }
}

#[derive(Deserialize)]
struct FeedQuery {
    /// The version the caller holds; the answer waits while it is still current.
    version: Option<u64>,
    /// The calling filter VM's id: the service counts it as a follower.
    poller: Option<String>,
    /// How long to wait, at most the service's long-poll timeout.
    timeout_ms: Option<u64>,
    /// What the filter counted for this listener since it started ([`ListenerTally::report`]).
    counts: Option<String>,
}

/// The filter state of one listener. Answers at once when the caller's version is not the
/// current one, otherwise when the state changes, the wait times out or the service stops.
async fn state_feed(
    State(app): State<AppState>,
    Path((load_balancer, port)): Path<(String, u16)>,
    Query(query): Query<FeedQuery>,
) -> Response {
    let service = &app.service;
    let gone = || {
        (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({
                "error": format!("no listener on port {port} of load balancer {load_balancer}")
            })),
        )
            .into_response()
    };
    // A filter of a listener that does not exist (any more: one Envoy still drains) follows
    // nothing: it is not a follower any change waits for.
    if !service.read(|inner| inner.has_listener(&load_balancer, port)) {
        return gone();
    }
    let poller = query.poller.as_deref().filter(|p| is_poller_id(p));
    if let (Some(poller), Some(counts)) = (poller, query.counts.as_deref().and_then(ListenerTally::parse_report)) {
        app.tallies
            .report(&load_balancer, port, poller, counts, std::time::Instant::now());
    }
    let listener = crate::feed::cluster_name(&load_balancer, port);
    let _open = poller.map(|p| service.followers.poll_opened(p, &listener, query.version.unwrap_or(0)));
    let mut state_version = service.watch_state(&load_balancer);
    if query.version.is_some() && query.version == *state_version.borrow_and_update() {
        // Woken only by a change of this load balancer's state (or the keys).
        let limit = service.config.long_poll_timeout;
        let wait = query
            .timeout_ms
            .map_or(limit, |ms| Duration::from_millis(ms).min(limit));
        tokio::select! {
            _ = tokio::time::timeout(wait, state_version.changed()) => {}
            () = service.stopping() => {}
        }
    }
    match feed_state(&app, &load_balancer, port) {
        Some((version, json)) => (
            [
                ("x-sticky-version", version.to_string()),
                (header::CONTENT_TYPE.as_str(), "application/json".to_owned()),
            ],
            json,
        )
            .into_response(),
        None => {
            if let Some(poller) = poller {
                service.followers.forget_poller(poller);
            }
            gone()
        }
    }
}

/// The current filter state of a listener as JSON, and its version; from the cache when it
/// holds the current version.
fn feed_state(app: &AppState, load_balancer: &str, port: u16) -> Option<(u64, Bytes)> {
    let key = (load_balancer.to_owned(), port);
    let current = app.service.read(|inner| inner.state_version(load_balancer))?;
    let mut cache = app.feed_cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((version, json)) = cache.get(&key)
        && *version == current
    {
        return Some((*version, json.clone()));
    }
    drop(cache);
    let Some(state) = app.service.filter_state(load_balancer, port) else {
        app.feed_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&key);
        return None;
    };
    let json = Bytes::from(serde_json::to_vec(&state).ok()?);
    cache = app.feed_cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    cache.insert(key, (state.version, json.clone()));
    Some((state.version, json))
}

/// Envoy's REST EDS (`api_type: REST`): one ClusterLoadAssignment per requested listener, with
/// each endpoint's health.
async fn endpoints(State(app): State<AppState>, body: Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<DiscoveryRequest>(&body) else {
        return (StatusCode::BAD_REQUEST, "not a DiscoveryRequest\n").into_response();
    };
    if let Some(node) = request.node.as_ref().filter(|n| !n.id.is_empty()) {
        app.service.followers.eds_fetched(&node.id, request.accepted_version());
    }
    let response = app.service.read(|inner| feed::discovery_response(inner, &request));
    axum::Json(response).into_response()
}

async fn metrics(State(app): State<AppState>) -> Response {
    let service = &app.service;
    let (load_balancers, keys) =
        service.read(|inner| (inner.load_balancer_count() as u64, inner.keys().keys().len() as u64));
    let followers = service.followers.census();
    let text = service.metrics.render(&[
        ("sticky_control_state_version", service.version()),
        ("sticky_control_load_balancers", load_balancers),
        ("sticky_control_cookie_keys", keys),
        ("sticky_control_followers", followers.live),
        ("sticky_control_open_polls", followers.open_polls),
        ("sticky_control_discovering_followers", u64::from(followers.discovering)),
        ("sticky_control_leader", u64::from(service.replica.is_leader())),
        ("sticky_control_peer_replicas", service.replica.peers().len() as u64),
        (
            "sticky_control_store_reachable",
            u64::from(service.replica.store_reachable()),
        ),
    ]);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// The routes and the shapes of their answers and errors, in process (axum's `oneshot`); the
/// real binary is driven by `tests/api.rs` and the standard clients.
#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use sticky_core::CookieSettings;
    use tower::ServiceExt;

    use super::*;
    use crate::bootstrap::BootstrapFile;
    use crate::service::ServiceConfig;
    use crate::sigv4::AccessKeys;
    use crate::store::Store;

    const TOKEN: &str = "feed-token";

    fn service() -> Arc<Service> {
        let config = ServiceConfig {
            access_keys: AccessKeys::new([("AKIDTEST".to_owned(), "secret".to_owned())]),
            long_poll_timeout: Duration::from_secs(5),
            key_rotation: Duration::from_secs(3600),
            key_retention: Duration::from_secs(3600),
            cookie: CookieSettings::default(),
            sync_timeout: Duration::ZERO,
            listener_binding: Default::default(),
            target_connect_timeout: crate::xds::resources::DEFAULT_TARGET_CONNECT_TIMEOUT,
            replica: Default::default(),
            master_key: crate::sealing::MasterKey::generate().unwrap(),
        };
        let instances = [("i-1".to_owned(), "127.0.0.1:9001".parse().unwrap())];
        let bootstrap = BootstrapFile::one_listener("terraform-balancer", &instances);
        let store = Store::open(&crate::store::StoreLocation::Sqlite(":memory:".into())).unwrap();
        Service::open(config, store, Some(bootstrap)).unwrap()
    }

    fn app_with_token() -> Router {
        app(service(), HttpOptions::with_token(TOKEN))
    }

    async fn send(app: Router, request: Request<Body>) -> (StatusCode, String) {
        let response = app.oneshot(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), MAX_BODY).await.unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// A request presenting `token`, if any, as a bearer token.
    fn request(method: Method, uri: &str, token: Option<&str>, body: &str) -> Request<Body> {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        request.body(Body::from(body.to_owned())).unwrap()
    }

    fn get(uri: &str, token: Option<&str>) -> Request<Body> {
        request(Method::GET, uri, token, "")
    }

    fn eds(body: &str, token: Option<&str>) -> Request<Body> {
        request(Method::POST, "/v3/discovery:endpoints", token, body)
    }

    #[tokio::test]
    async fn health_and_metrics_need_no_token() {
        assert_eq!(
            send(app_with_token(), get("/healthz", None)).await,
            (StatusCode::OK, "ok".to_owned())
        );
        let (status, text) = send(app_with_token(), get("/metrics", None)).await;
        assert_eq!(status, StatusCode::OK);
        assert!(text.contains("sticky_control_load_balancers 1"), "{text}");
        assert!(text.contains("sticky_control_followers 0"), "{text}");
    }

    #[tokio::test]
    async fn a_filter_of_a_listener_that_is_gone_is_not_a_follower() {
        let service = service();
        let app = app(Arc::clone(&service), HttpOptions::with_token(TOKEN));
        let (status, _) = send(
            app.clone(),
            get("/v1/state/terraform-balancer/81?poller=abc&version=1", Some(TOKEN)),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = send(
            app,
            get("/v1/state/terraform-balancer/80?poller=def&version=1", Some(TOKEN)),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            service.lagging(),
            vec!["filter def at version 1".to_owned()],
            "only the filter of a listener that exists is waited for"
        );
    }

    #[tokio::test]
    async fn the_feed_xds_in_force_and_hosts_answer_authenticated_peers_only() {
        let ads = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";
        let guarded = |token: Option<&str>| {
            [
                get("/v1/state/terraform-balancer/80", token),
                eds(r#"{"resource_names":[]}"#, token),
                request(Method::POST, ads, token, ""),
                get("/v1/in-force?version=0&endpoints_version=0&wait_ms=0", token),
                get("/v1/hosts", token),
            ]
        };
        for token in [None, Some("wrong")] {
            for request in guarded(token) {
                let uri = request.uri().clone();
                let (status, _) = send(app_with_token(), request).await;
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri} with {token:?}");
            }
        }
        let (status, body) = send(app_with_token(), get("/v1/state/terraform-balancer/80", Some(TOKEN))).await;
        assert_eq!(status, StatusCode::OK);
        let state: sticky_core::FilterState = serde_json::from_str(&body).unwrap();
        assert_eq!(state.targets.len(), 1);

        // Over TLS: a verified client certificate, and nothing else, opens them; a token does not.
        let tls = || app(service(), HttpOptions::with_client_certificates(reqwest::Client::new()));
        for token in [None, Some(TOKEN)] {
            for request in guarded(token) {
                let uri = request.uri().clone();
                let (status, body) = send(tls(), request).await;
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri} with {token:?}");
                assert!(body.contains("client certificate"), "{body}");
            }
        }
        let mut request = get("/v1/state/terraform-balancer/80", None);
        request.extensions_mut().insert(crate::control_tls::PeerCertificate);
        let (status, body) = send(tls(), request).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("\"keys\""), "{body}");
        let mut request = get("/v1/hosts", None);
        request.extensions_mut().insert(crate::control_tls::PeerCertificate);
        assert_eq!(send(tls(), request).await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn feed_and_eds_errors_are_plain_and_say_nothing_internal() {
        let (status, body) = send(app_with_token(), get("/v1/state/nope/80", Some(TOKEN))).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("no listener on port 80 of load balancer nope"), "{body}");
        let (status, body) = send(app_with_token(), eds("{not json", Some(TOKEN))).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::BAD_REQUEST, "not a DiscoveryRequest\n")
        );
        let (status, _) = send(
            app_with_token(),
            get("/v1/state/terraform-balancer/notaport", Some(TOKEN)),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _) = send(app_with_token(), get("/nowhere", None)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn eds_answers_typed_assignments_of_the_listeners_asked_for() {
        let request = r#"{"node":{"id":"envoy-1"},"resource_names":["terraform-balancer_80","nope_80","junk"]}"#;
        let (status, body) = send(app_with_token(), eds(request, Some(TOKEN))).await;
        assert_eq!(status, StatusCode::OK);
        let answer: feed::DiscoveryResponse = serde_json::from_str(&body).unwrap();
        assert_eq!(answer.type_url, feed::EDS_TYPE_URL);
        let [assignment] = answer.resources.as_slice() else {
            panic!("one assignment: {body}");
        };
        assert_eq!(assignment.cluster_name, "terraform-balancer_80");
        let endpoint = &assignment.endpoints[0].lb_endpoints[0];
        assert_eq!(endpoint.endpoint.address.socket_address.port_value, 9001);
        assert_eq!(
            endpoint.health_status,
            feed::EndpointHealth::Unhealthy,
            "pending until probed"
        );
    }

    #[tokio::test]
    async fn an_unsigned_api_call_gets_an_elb_error_document() {
        let (status, body) = send(app_with_token(), get("/?Action=DescribeLoadBalancers", None)).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(body.contains("<Code>MissingAuthenticationToken</Code>"), "{body}");
        assert!(body.contains("<RequestId>"), "{body}");
    }

    #[tokio::test]
    async fn a_stopping_service_answers_waiting_long_polls_at_once() {
        let service = service();
        let app = app(Arc::clone(&service), HttpOptions::with_token(TOKEN));
        let version = service.version();
        let poll = tokio::spawn(send(
            app,
            get(
                &format!("/v1/state/terraform-balancer/80?version={version}&timeout_ms=60000"),
                Some(TOKEN),
            ),
        ));
        service.stop();
        let (status, _) = tokio::time::timeout(Duration::from_secs(10), poll)
            .await
            .expect("answered when the service stopped, not at its 60 s time-out")
            .unwrap();
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn a_long_poll_is_answered_by_a_change_of_its_own_load_balancer_only() {
        let service = service();
        let app = app(Arc::clone(&service), HttpOptions::with_token(TOKEN));
        let put = |name: &str, expiration: u64| {
            service
                .write(|inner| {
                    let mut lb = inner.load_balancer("terraform-balancer").unwrap().clone();
                    if name != lb.name {
                        lb.name = name.to_owned();
                        lb.address = inner.load_balancer(name).and_then(|lb| lb.address);
                    }
                    lb.policies.insert(
                        "sticky".to_owned(),
                        crate::model::Policy::LbCookie {
                            cookie_expiration_period: Some(expiration),
                            max_lifetime: None,
                        },
                    );
                    Ok((vec![crate::domain::Write::PutLoadBalancer(lb)], ()))
                })
                .unwrap();
            service.version()
        };
        put("shop", 60);
        let held = service.read(|inner| inner.state_version("terraform-balancer")).unwrap();
        let poll = tokio::spawn({
            let app = app.clone();
            async move {
                let uri = format!("/v1/state/terraform-balancer/80?version={held}&poller=aa&timeout_ms=60000");
                app.oneshot(get(&uri, Some(TOKEN))).await.unwrap()
            }
        });
        while service.followers.census().open_polls == 0 {
            tokio::task::yield_now().await;
        }
        let shop_changed = put("shop", 120);
        let terraform_changed = put("terraform-balancer", 60);
        let answer = tokio::time::timeout(Duration::from_secs(10), poll)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            answer.headers()["x-sticky-version"].to_str().unwrap(),
            terraform_changed.to_string(),
            "not woken by shop's change (version {shop_changed}), by its own"
        );
    }

    /// A JSON request to the operator page's API, with the session cookie when given.
    fn page(uri: &str, session: Option<&str>, body: Option<serde_json::Value>) -> Request<Body> {
        let mut request = Request::builder().uri(uri);
        if let Some(session) = session {
            request = request.header(header::COOKIE, format!("other=1; sticky_operator={session}"));
        }
        match body {
            Some(body) => request
                .method(Method::POST)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .unwrap(),
            None => request.body(Body::empty()).unwrap(),
        }
    }

    /// Signs in to the operator page; the session token.
    async fn sign_in(app: &Router) -> String {
        let login = serde_json::json!({"access_key_id": "AKIDTEST", "secret_access_key": "secret"});
        let response = app
            .clone()
            .oneshot(page("/ui/api/login", None, Some(login)))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let cookie = response.headers()[header::SET_COOKIE].to_str().unwrap().to_owned();
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
            "{cookie}"
        );
        cookie["sticky_operator=".len()..].split(';').next().unwrap().to_owned()
    }

    fn json(text: &str) -> serde_json::Value {
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    #[tokio::test]
    async fn the_operator_page_needs_an_access_key_and_says_so() {
        let app = app(service(), HttpOptions::with_token(TOKEN));
        let (status, body) = send(app.clone(), page("/ui", None, None)).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("/ui/page.js"));
        let (status, body) = send(app.clone(), page("/ui/api/overview", None, None)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(json(&body)["error"]["code"], "SignInRequired");
        let (status, _) = send(app.clone(), page("/ui/api/overview", Some(&"0".repeat(64)), None)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        for (id, secret) in [("AKIDTEST", "wrong"), ("AKIDOTHER", "secret"), ("", "")] {
            let login = serde_json::json!({"access_key_id": id, "secret_access_key": secret});
            let (status, body) = send(app.clone(), page("/ui/api/login", None, Some(login))).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{id}/{secret}");
            assert!(!body.contains("secret\""), "{body}");
        }
        let session = sign_in(&app).await;
        let (status, body) = send(app.clone(), page("/ui/api/overview", Some(&session), None)).await;
        assert_eq!(status, StatusCode::OK);
        let overview = json(&body);
        assert_eq!(overview["signed_in_as"], "AKIDTEST");
        let lb = &overview["load_balancers"][0];
        assert_eq!(lb["name"], "terraform-balancer");
        assert_eq!(lb["listeners"][0]["port"], 80);
        assert_eq!(lb["instances"][0]["id"], "i-1");
        assert!(!body.contains("secret"), "no key material: {body}");
        let (status, _) = send(
            app.clone(),
            page("/ui/api/logout", Some(&session), Some(serde_json::json!({}))),
        )
        .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _) = send(app, page("/ui/api/overview", Some(&session), None)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn a_policy_change_from_the_page_goes_through_the_apis_validation() {
        let service = service();
        let app = app(Arc::clone(&service), HttpOptions::with_token(TOKEN));
        let session = sign_in(&app).await;
        let set = |policy: &str| {
            page(
                "/ui/api/listener-policy",
                Some(&session),
                Some(serde_json::json!({"load_balancer": "terraform-balancer", "port": 80, "policy": policy})),
            )
        };
        // Refused as the API refuses it, with the API's code; nothing changes.
        let version = service.version();
        let (status, body) = send(app.clone(), set("missing")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(json(&body)["error"]["code"], "PolicyNotFound");
        let bad = serde_json::json!({"kind": "app_cookie", "load_balancer": "terraform-balancer", "name": "p", "cookie_name": "bad name;"});
        let (status, body) = send(app.clone(), page("/ui/api/policies", Some(&session), Some(bad))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(json(&body)["error"]["code"], "ValidationError");
        let (status, _) = send(
            app.clone(),
            page(
                "/ui/api/policies",
                Some(&session),
                Some(serde_json::json!({"kind": "x"})),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(service.version(), version);
        // Accepted: the listener is sticky, and the overview says so.
        let lb_cookie = serde_json::json!({"kind": "lb_cookie", "load_balancer": "terraform-balancer", "name": "sticky-300", "expiration_period": 300});
        let (status, body) = send(app.clone(), page("/ui/api/policies", Some(&session), Some(lb_cookie))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, body) = send(app.clone(), set("sticky-300")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            service.read(
                |inner| inner.load_balancer("terraform-balancer").unwrap().listeners[&80]
                    .policy_names
                    .clone()
            ),
            ["sticky-300"]
        );
        let (_, body) = send(app.clone(), page("/ui/api/overview", Some(&session), None)).await;
        let policy = &json(&body)["load_balancers"][0]["listeners"][0]["policy"];
        assert_eq!(policy["name"], "sticky-300");
        assert_eq!(policy["summary"], "LB cookie, 300 s after the last request");
        // An empty choice removes stickiness.
        let (status, _) = send(app.clone(), set("")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(service.read(|inner| {
            inner.load_balancer("terraform-balancer").unwrap().listeners[&80]
                .policy_names
                .is_empty()
        }));
    }

    #[tokio::test]
    async fn a_listeners_counters_are_what_its_filters_polls_report() {
        let app = app(service(), HttpOptions::with_token(TOKEN));
        let session = sign_in(&app).await;
        let tally = ListenerTally::default();
        tally.add(sticky_core::Counter::Pinned, 4);
        tally.add(sticky_core::Counter::Rejected(sticky_core::Rejection::Forged), 2);
        for poller in ["00000000000000aa", "00000000000000bb"] {
            let uri = format!(
                "/v1/state/terraform-balancer/80?poller={poller}&counts={}",
                tally.report()
            );
            let (status, _) = send(app.clone(), get(&uri, Some(TOKEN))).await;
            assert_eq!(status, StatusCode::OK);
        }
        // A report that does not parse is not counted (the poll is answered all the same).
        let (status, _) = send(
            app.clone(),
            get(
                "/v1/state/terraform-balancer/80?poller=00000000000000cc&counts=1,x",
                Some(TOKEN),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let (_, body) = send(app, page("/ui/api/overview", Some(&session), None)).await;
        let counters = &json(&body)["load_balancers"][0]["listeners"][0]["counters"];
        assert_eq!(counters["pinned"], 8);
        assert_eq!(counters["rejected"]["forged"], 4);
        assert_eq!(counters["rejected"]["expired"], 0);
    }

    #[tokio::test]
    async fn the_cookie_inspector_opens_a_cookie_with_the_services_keys_and_shows_no_key() {
        let service = service();
        let app = app(Arc::clone(&service), HttpOptions::with_token(TOKEN));
        let session = sign_in(&app).await;
        let inspect = |cookie: &str| {
            page(
                "/ui/api/inspect",
                Some(&session),
                Some(serde_json::json!({"cookie": cookie})),
            )
        };
        let (_, body) = send(app.clone(), inspect("AWSELB=abc")).await;
        assert_eq!(json(&body)["verdict"], "rejected", "no policy yet: {body}");
        let create = serde_json::json!({"kind": "lb_cookie", "load_balancer": "terraform-balancer", "name": "p", "expiration_period": 600});
        send(app.clone(), page("/ui/api/policies", Some(&session), Some(create))).await;
        let set = serde_json::json!({"load_balancer": "terraform-balancer", "port": 80, "policy": "p"});
        send(app.clone(), page("/ui/api/listener-policy", Some(&session), Some(set))).await;
        let in_service = crate::health::InstanceHealth {
            status: crate::health::HealthStatus::InService,
            consecutive_ok: 1,
            consecutive_failed: 0,
            last_failure: String::new(),
        };
        service
            .set_health(("terraform-balancer".to_owned(), "i-1".to_owned()), in_service)
            .unwrap();
        // A cookie as the filter issues it, sealed with the listener's current state.
        let state = service.filter_state("terraform-balancer", 80).unwrap();
        let listener = sticky_core::CompiledListener::compile(&state).unwrap();
        let now = u64::try_from(crate::domain::unix_now()).unwrap();
        let request = listener.on_request(None, now);
        let response = listener.on_response(
            &request,
            Some(state.targets[0].address.as_bytes()),
            std::iter::empty(),
            now,
            || Some([7; 12]),
        );
        let set_cookie = response.set_cookie.expect("a new session's cookie");
        let value = set_cookie
            .split(';')
            .next()
            .unwrap()
            .split_once('=')
            .unwrap()
            .1
            .to_owned();
        let (status, body) = send(app.clone(), inspect(&format!("Cookie: session=x; AWSELB={value}"))).await;
        assert_eq!(status, StatusCode::OK);
        let answer = json(&body);
        assert_eq!(answer["verdict"], "valid", "{body}");
        assert_eq!(answer["target"], "i-1");
        assert_eq!(answer["cookie_name"], "AWSELB");
        assert_eq!(answer["port"], 80);
        assert_eq!(answer["key_id"], state.keys.active);
        assert_eq!(answer["expires_at"], now + 600);
        for key in &state.keys.keys {
            assert!(!body.contains(&key.secret), "no key material: {body}");
        }
        // Altered: refused with its reason.
        let mut altered = value.into_bytes();
        altered[20] = if altered[20] == b'A' { b'B' } else { b'A' };
        let (_, body) = send(app.clone(), inspect(&String::from_utf8(altered).unwrap())).await;
        assert_eq!(json(&body)["reason"], "forged", "{body}");
        let (_, body) = send(app.clone(), inspect("not-a-cookie")).await;
        assert_eq!(json(&body)["reason"], "malformed", "{body}");
        let (status, _) = send(app, inspect(&"x".repeat(9000))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
}
