//! The HTTP surface: the Query API at `/`, the filters' state feed, Envoy's REST EDS,
//! `/metrics` and `/healthz`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::api;
use crate::error::ApiError;
use crate::followers::is_poller_id;
use crate::health::HealthStatus;
use crate::query::Params;
use crate::service::{Inner, Service};
use crate::sigv4::{self, RequestToVerify};
use crate::xml;

/// Largest request body the API reads.
const MAX_BODY: usize = 1 << 20;
pub const EDS_TYPE_URL: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

/// Options of the HTTP surface.
#[derive(Clone)]
pub struct HttpOptions {
    /// When set, the state feed and EDS require `Authorization: Bearer <token>` (they carry the
    /// cookie keys and the backend addresses).
    pub feed_token: Option<String>,
}

#[derive(Clone)]
struct AppState {
    service: Arc<Service>,
    options: HttpOptions,
}

pub fn app(service: Arc<Service>, options: HttpOptions) -> Router {
    Router::new()
        .route("/", get(query_api).post(query_api))
        .route("/v1/state/{load_balancer}/{port}", get(state_feed))
        .route("/v3/discovery:endpoints", post(endpoints))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(AppState { service, options })
}

fn request_id() -> String {
    let mut bytes = [0u8; 16];
    let _ = getrandom::fill(&mut bytes);
    let hex = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

async fn query_api(State(app): State<AppState>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let request_id = request_id();
    let service = &app.service;
    let mut action_name = String::from("unknown");
    let version_before = service.version();
    let result = (|| -> Result<String, ApiError> {
        let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
        let request = RequestToVerify {
            method: method.as_str(),
            path_and_query,
            headers: &headers,
            body: &body,
        };
        let access_key = sigv4::verify(&service.config.access_keys, &request, SystemTime::now())?;
        let form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
        let params = Params::parse(uri.query(), (method == Method::POST && form).then_some(&body[..]))?;
        let action = params.required("Action")?;
        if api::ACTIONS.contains(&action) {
            action.clone_into(&mut action_name);
        }
        tracing::debug!(%request_id, action, %access_key, "api call");
        let result = api::dispatch(service, action, &params)?;
        Ok(xml::response(action, &result, &request_id))
    })();
    // A change is answered once every live filter and Envoy holds it (bounded).
    let (version_after, endpoints_version) = service.versions();
    if result.is_ok() && version_after != version_before && !service.config.sync_timeout.is_zero() {
        let started = std::time::Instant::now();
        match service
            .followers
            .wait_until_current(version_after, endpoints_version, service.config.sync_timeout)
            .await
        {
            Ok(()) => service.metrics.observe_sync(started.elapsed()),
            Err(lagging) => {
                service.metrics.count("sticky_control_sync_timeouts_total", &[]);
                tracing::warn!(%request_id, version = version_after, ?lagging, "answering before every follower holds the change");
            }
        }
    }
    match result {
        Ok(body) => {
            service.metrics.count(
                "sticky_control_api_requests_total",
                &[("action", &action_name), ("code", "OK")],
            );
            tracing::info!(%request_id, action = %action_name, "ok");
            (StatusCode::OK, [(header::CONTENT_TYPE, "text/xml")], body).into_response()
        }
        Err(error) => {
            service.metrics.count(
                "sticky_control_api_requests_total",
                &[("action", &action_name), ("code", error.code.as_str())],
            );
            tracing::info!(%request_id, action = %action_name, code = error.code.as_str(), message = %error.message, "refused");
            error.into_response_with(&request_id)
        }
    }
}

fn feed_authorised(options: &HttpOptions, headers: &HeaderMap) -> bool {
    let Some(token) = &options.feed_token else { return true };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    presented.is_some_and(|p| p.as_bytes().ct_eq(token.as_bytes()).into())
}

#[derive(Deserialize)]
struct FeedQuery {
    /// The version the caller holds; the answer waits while it is still current.
    version: Option<u64>,
    /// The calling filter VM's id: the service counts it as a follower.
    poller: Option<String>,
    /// How long to wait, at most the service's long-poll timeout.
    timeout_ms: Option<u64>,
}

/// The filter state of one listener. Answers at once when the caller's version is not the
/// current one, otherwise when the state changes or the wait times out.
async fn state_feed(
    State(app): State<AppState>,
    Path((load_balancer, port)): Path<(String, u16)>,
    Query(query): Query<FeedQuery>,
    headers: HeaderMap,
) -> Response {
    if !feed_authorised(&app.options, &headers) {
        return (StatusCode::UNAUTHORIZED, "a valid bearer token is required\n").into_response();
    }
    let service = &app.service;
    let _open = query
        .poller
        .as_deref()
        .filter(|p| is_poller_id(p))
        .map(|p| service.followers.poll_opened(p, query.version.unwrap_or(0)));
    let mut changes = service.subscribe();
    let current = *changes.borrow_and_update();
    if query.version == Some(current) {
        let limit = service.config.long_poll_timeout;
        let wait = query
            .timeout_ms
            .map_or(limit, |ms| Duration::from_millis(ms).min(limit));
        let _ = tokio::time::timeout(wait, changes.changed()).await;
    }
    match service.filter_state(&load_balancer, port) {
        Some(state) => {
            let version = state.version.to_string();
            ([("x-sticky-version", version)], axum::Json(state)).into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": format!("no listener on port {port} of load balancer {load_balancer}")})),
        )
            .into_response(),
    }
}

/// The EDS cluster name of a listener: `<load balancer>_<port>` (load balancer names hold no `_`).
pub fn cluster_name(load_balancer: &str, port: u16) -> String {
    format!("{load_balancer}_{port}")
}

/// Envoy's REST EDS (`api_type: REST`): one ClusterLoadAssignment per requested listener, with
/// each endpoint's health.
async fn endpoints(State(app): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if !feed_authorised(&app.options, &headers) {
        return (StatusCode::UNAUTHORIZED, "a valid bearer token is required\n").into_response();
    }
    let request: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("not a DiscoveryRequest: {e}\n")).into_response(),
    };
    let names: Vec<String> = request["resource_names"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    if let Some(node) = request["node"]["id"].as_str() {
        let accepted = request["version_info"]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        app.service.followers.eds_fetched(node, accepted);
    }
    // The version of the endpoints, not of the whole state: Envoy reports it back on its next
    // fetch, and a change that leaves the endpoints alone need not wait for that fetch.
    let (version, resources) = app.service.read(|inner| {
        let resources: Vec<serde_json::Value> = names
            .iter()
            .filter_map(|cluster| cluster_load_assignment(inner, cluster))
            .collect();
        (inner.endpoints_version, resources)
    });
    axum::Json(json!({"version_info": version.to_string(), "resources": resources, "type_url": EDS_TYPE_URL}))
        .into_response()
}

/// The ClusterLoadAssignment of EDS cluster `cluster` (`<load balancer>_<port>`), if it exists.
fn cluster_load_assignment(inner: &Inner, cluster: &str) -> Option<serde_json::Value> {
    let (lb_name, port) = cluster.rsplit_once('_')?;
    let port: u16 = port.parse().ok()?;
    let lb = inner.load_balancers.get(lb_name)?;
    let listener = lb.listeners.get(&port)?;
    let endpoints: Vec<serde_json::Value> = inner
        .targets(lb, listener.instance_port)
        .into_iter()
        .map(|(id, address, _)| {
            let health = match inner.health_of(lb_name, &id) {
                HealthStatus::InService => "HEALTHY",
                // Pending instances get no traffic, as in ELB.
                HealthStatus::OutOfService | HealthStatus::Pending => "UNHEALTHY",
            };
            let socket_address = json!({"address": address.ip().to_string(), "port_value": address.port()});
            json!({"endpoint": {"address": {"socket_address": socket_address}}, "health_status": health})
        })
        .collect();
    Some(json!({"@type": EDS_TYPE_URL, "cluster_name": cluster, "endpoints": [{"lb_endpoints": endpoints}]}))
}

async fn metrics(State(app): State<AppState>) -> Response {
    let service = &app.service;
    let (load_balancers, keys) =
        service.read(|inner| (inner.load_balancers.len() as u64, inner.keys.keys().len() as u64));
    let text = service.metrics.render(&[
        ("sticky_control_state_version", service.version()),
        ("sticky_control_load_balancers", load_balancers),
        ("sticky_control_cookie_keys", keys),
    ]);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
