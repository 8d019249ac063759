//! `testbed serve`: a local HTTP proxy that runs the filter for every request, so the product
//! runs without Envoy. It forwards each request to the target the routing header names when that
//! is one of its endpoints (as Envoy's `override_host`), else round robin over the healthy ones;
//! it retries a refused connection on another endpoint (as the Envoy route does), fills
//! `upstream.address`, and carries the filter's `dispatch_http_call`s to the clusters it knows.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::{HttpCall, Plugin};

/// Hop-by-hop headers a proxy does not forward.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
    "host",
];

/// The proxy's endpoints: address and health.
pub type Endpoints = Arc<RwLock<Vec<(SocketAddr, bool)>>>;

pub struct TestbedProxy {
    pub plugin: Mutex<Plugin>,
    pub routing_header: String,
    pub endpoints: Endpoints,
    /// Cluster name → address, for the filter's HTTP calls.
    pub clusters: HashMap<String, SocketAddr>,
    client: reqwest::Client,
    next: AtomicUsize,
}

impl TestbedProxy {
    pub fn new(
        plugin: Plugin,
        routing_header: String,
        endpoints: Endpoints,
        clusters: HashMap<String, SocketAddr>,
    ) -> anyhow::Result<Arc<Self>> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()?;
        Ok(Arc::new(Self {
            plugin: Mutex::new(plugin),
            routing_header,
            endpoints,
            clusters,
            client,
            next: AtomicUsize::new(0),
        }))
    }

    fn plugin(&self) -> std::sync::MutexGuard<'_, Plugin> {
        self.plugin.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The endpoint for a request: the routing header's, if it names an endpoint; else the
    /// next healthy one (all of them if none is healthy), skipping `tried`.
    fn pick(&self, routed: Option<&[u8]>, tried: &[SocketAddr]) -> Option<SocketAddr> {
        let endpoints = self.endpoints.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        // As Envoy's override_host: attempt n goes to the header's n-th address when it is an
        // endpoint; past the list, the fallback balances over the endpoints not tried yet.
        let listed: Vec<SocketAddr> = routed
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(|v| v.split(',').filter_map(|a| a.trim().parse().ok()).collect())
            .unwrap_or_default();
        if let Some(address) = listed
            .get(tried.len())
            .filter(|a| endpoints.iter().any(|(e, _)| e == *a))
        {
            return Some(*address);
        }
        let healthy: Vec<SocketAddr> = endpoints
            .iter()
            .filter(|(a, h)| *h && !tried.contains(a))
            .map(|(a, _)| *a)
            .collect();
        let pool: Vec<SocketAddr> = if healthy.is_empty() {
            endpoints
                .iter()
                .map(|(a, _)| *a)
                .filter(|a| !tried.contains(a))
                .collect()
        } else {
            healthy
        };
        if pool.is_empty() {
            return None;
        }
        Some(pool[self.next.fetch_add(1, Ordering::Relaxed) % pool.len()])
    }

    /// Carries the filter's pending HTTP calls; their answers may dispatch more.
    pub fn drive_calls(self: &Arc<Self>) {
        let calls = self.plugin().take_http_calls();
        for call in calls {
            let proxy = Arc::clone(self);
            tokio::spawn(async move {
                let (status, body) = proxy.perform(&call).await;
                let answered = proxy.plugin().answer_http_call(&call, status, &body);
                if let Err(e) = answered {
                    eprintln!("testbed: the filter trapped on an HTTP call answer: {e}");
                }
                proxy.drive_calls();
            });
        }
    }

    async fn perform(&self, call: &HttpCall) -> (u16, Vec<u8>) {
        let Some(address) = self.clusters.get(&call.upstream) else {
            return (503, b"unknown cluster".to_vec());
        };
        let path = call.header(":path").unwrap_or("/");
        let method = reqwest::Method::from_bytes(call.header(":method").unwrap_or("GET").as_bytes())
            .unwrap_or(reqwest::Method::GET);
        let mut request = self
            .client
            .request(method, format!("http://{address}{path}"))
            .timeout(Duration::from_millis(u64::from(call.timeout_ms.max(1))))
            .body(call.body.clone());
        for (name, value) in call.headers.iter().filter(|(n, _)| !n.starts_with(':')) {
            request = request.header(name.as_str(), value.as_slice());
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                (status, response.bytes().await.map(|b| b.to_vec()).unwrap_or_default())
            }
            // Envoy answers a failed call with a local 503.
            Err(_) => (503, b"upstream connect error".to_vec()),
        }
    }
}

/// Serves every request through the filter.
pub async fn handle(State(proxy): State<Arc<TestbedProxy>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 16 << 20).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n").into_response();
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let authority = parts
        .headers
        .get("host")
        .map(|h| h.as_bytes().to_vec())
        .unwrap_or_default();
    let mut headers: Vec<(String, Vec<u8>)> = vec![
        (":method".into(), parts.method.as_str().as_bytes().to_vec()),
        (":path".into(), path.as_bytes().to_vec()),
        (":authority".into(), authority),
    ];
    headers.extend(
        parts
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec())),
    );
    let borrowed: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect();
    let stream = match proxy.plugin().request(&borrowed) {
        Ok(stream) => stream,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, format!("filter trapped: {e}\n")).into_response(),
    };
    let routed = stream.header(&proxy.routing_header).map(<[u8]>::to_vec);
    let mut tried = Vec::new();
    let (upstream, response) = loop {
        let Some(upstream) = proxy.pick(routed.as_deref(), &tried) else {
            return (StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream\n").into_response();
        };
        match forward(
            &proxy,
            &parts.method,
            &path,
            &stream.request_headers,
            body.clone(),
            upstream,
        )
        .await
        {
            Ok(response) => break (upstream, response),
            // Connection refused (the request never left): retried on another endpoint, at most twice.
            Err(e) if e.is_connect() && tried.len() < 2 => tried.push(upstream),
            Err(e) => {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("upstream connect error: {e}\n"),
                )
                    .into_response();
            }
        }
    };
    let status = response.status();
    let response_headers: Vec<(String, Vec<u8>)> = response
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect();
    let body: Bytes = response.bytes().await.unwrap_or_default();
    let borrowed: Vec<(&str, &[u8])> = response_headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect();
    let upstream_text = upstream.to_string();
    let filtered = match proxy.plugin().respond(&stream, Some(&upstream_text), &borrowed) {
        Ok(filtered) => filtered,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, format!("filter trapped: {e}\n")).into_response(),
    };
    let mut reply = Response::new(Body::from(body));
    *reply.status_mut() = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    for (name, value) in filtered.response_headers {
        if HOP_BY_HOP.contains(&name.as_str()) || name == "content-length" {
            continue;
        }
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(&value)) {
            reply.headers_mut().append(name, value);
        }
    }
    reply
}

async fn forward(
    proxy: &TestbedProxy,
    method: &axum::http::Method,
    path: &str,
    headers: &[(String, Vec<u8>)],
    body: Bytes,
    upstream: SocketAddr,
) -> Result<reqwest::Response, reqwest::Error> {
    let method = reqwest::Method::from_bytes(method.as_str().as_bytes()).unwrap_or(reqwest::Method::GET);
    let mut request = proxy
        .client
        .request(method, format!("http://{upstream}{path}"))
        .timeout(Duration::from_secs(30))
        .body(body);
    for (name, value) in headers
        .iter()
        .filter(|(n, _)| !n.starts_with(':') && !HOP_BY_HOP.contains(&n.as_str()) && n != "content-length")
    {
        request = request.header(name.as_str(), value.as_slice());
    }
    request.send().await
}
