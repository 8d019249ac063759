//! The demo target: a small HTTP app standing in for a stateful web app behind the load
//! balancer. It answers with its own identity and what it received, and on `/login` sets an
//! application cookie named `session` the way a Flask app does.
//!
//! | path | answer |
//! |---|---|
//! | `/login` | sets `session=<signed-looking value>; HttpOnly; Path=/` (with `?permanent=1`, an `Expires` 31 days ahead, like Flask's permanent sessions) |
//! | `/logout` | deletes `session` the way Flask does (`Expires` in 1970, `Max-Age=0`) |
//! | `/health` | `200 ok` (for health checks) |
//! | `/ws` | a WebSocket that echoes every message (for the benchmark) |
//! | anything else | JSON: `target`, `path`, the `cookie` header and the routing header it received; with `?delay_ms=N`, after N ms (at most 10 s), as a slow app would |

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Header the filter sets; echoed so tests can see what reached the target.
pub const ROUTING_HEADER: &str = "x-sticky-target";
/// Name of the application cookie, as Flask names it.
pub const APP_COOKIE: &str = "session";

/// What the demo target answers on every path but `/login`, `/logout` and `/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Echo {
    pub target: String,
    pub path: String,
    /// The `Cookie` header as received (lossy UTF-8), if any.
    pub cookie: Option<String>,
    /// The routing header as received, if any.
    pub routing_header: Option<String>,
    /// What the load balancer says of the client: `X-Forwarded-For`, `-Proto`, `-Port`.
    #[serde(default)]
    pub forwarded_for: Option<String>,
    #[serde(default)]
    pub forwarded_proto: Option<String>,
    #[serde(default)]
    pub forwarded_port: Option<String>,
}

#[derive(Clone)]
struct AppState {
    id: String,
}

/// The demo app for target `id`.
pub fn app(id: &str) -> Router {
    Router::new()
        .route("/login", get(login))
        .route("/logout", get(logout))
        .route("/health", get(|| async { "ok" }))
        .route("/ws", get(echo_websocket))
        .fallback(echo)
        .with_state(AppState { id: id.to_owned() })
}

/// The longest `delay_ms` honoured.
const MAX_DELAY_MS: u64 = 10_000;

async fn echo(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    uri: Uri,
    headers: HeaderMap,
    // Read to the end, as an app does: a server that leaves a request body unread closes the
    // connection after answering, which races with the proxy's next request on it.
    _body: axum::body::Bytes,
) -> axum::Json<Echo> {
    if let Some(delay) = query.get("delay_ms").and_then(|v| v.parse::<u64>().ok()) {
        tokio::time::sleep(Duration::from_millis(delay.min(MAX_DELAY_MS))).await;
    }
    let text = |name: &str| {
        headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    axum::Json(Echo {
        target: state.id,
        path: uri.path().to_owned(),
        cookie: text(header::COOKIE.as_str()),
        routing_header: text(ROUTING_HEADER),
        forwarded_for: text("x-forwarded-for"),
        forwarded_proto: text("x-forwarded-proto"),
        forwarded_port: text("x-forwarded-port"),
    })
}

async fn echo_websocket(upgrade: axum::extract::ws::WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(|mut socket| async move {
        while let Some(Ok(message)) = socket.recv().await {
            let echo = match message {
                axum::extract::ws::Message::Close(_) => break,
                data @ (axum::extract::ws::Message::Text(_) | axum::extract::ws::Message::Binary(_)) => data,
                // Pings are answered by axum itself.
                _ => continue,
            };
            if socket.send(echo).await.is_err() {
                break;
            }
        }
    })
}

async fn login(State(state): State<AppState>, Query(query): Query<HashMap<String, String>>) -> Response {
    let mut random = [0u8; 18];
    if getrandom::fill(&mut random).is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    // Shaped like Flask's itsdangerous token: payload.timestamp.signature.
    let payload = URL_SAFE_NO_PAD.encode(format!("{{\"user\":\"demo\",\"target\":\"{}\"}}", state.id));
    let value = format!(
        "{payload}.{}.{}",
        URL_SAFE_NO_PAD.encode(&random[..6]),
        URL_SAFE_NO_PAD.encode(&random[6..])
    );
    let mut cookie = format!("{APP_COOKIE}={value}; HttpOnly; Path=/");
    if query.get("permanent").is_some_and(|v| v == "1") {
        let expires = SystemTime::now() + Duration::from_secs(31 * 86_400);
        cookie = format!(
            "{APP_COOKIE}={value}; Expires={}; HttpOnly; Path=/",
            httpdate::fmt_http_date(expires)
        );
    }
    (
        [(header::SET_COOKIE, cookie)],
        axum::Json(serde_json::json!({"target": state.id, "login": true})),
    )
        .into_response()
}

async fn logout(State(state): State<AppState>) -> Response {
    let cookie = format!("{APP_COOKIE}=; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; HttpOnly; Path=/");
    (
        [(header::SET_COOKIE, cookie)],
        axum::Json(serde_json::json!({"target": state.id, "logout": true})),
    )
        .into_response()
}

/// Serves target `id` on `listener` until `shutdown` fires. Then every open connection is cut
/// at once, as when a target process dies (keep-alive connections do not linger on).
pub async fn serve(id: &str, listener: TcpListener, shutdown: oneshot::Receiver<()>) -> std::io::Result<()> {
    let app = app(id);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let service = hyper_util::service::TowerToHyperService::new(app.clone());
                connections.spawn(async move {
                    let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
                    // With upgrades: the WebSocket echo on `/ws`.
                    let _ = builder.serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), service).await;
                });
                // Reap finished connections so the set does not grow.
                while connections.try_join_next().is_some() {}
            }
        }
    }
    connections.abort_all();
    // Wait until every connection is really gone, so the target is dead when this returns.
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Demo targets running on loopback in a runtime of their own, for the demo and the tests.
pub struct DemoTargets {
    runtime: tokio::runtime::Runtime,
    targets: Vec<RunningTarget>,
}

/// How to stop a running target's server, and the task to wait for.
type ServerHandle = (oneshot::Sender<()>, tokio::task::JoinHandle<()>);

struct RunningTarget {
    id: String,
    address: SocketAddr,
    stop: Option<ServerHandle>,
}

impl DemoTargets {
    /// Starts one target per id, on the given ports (0: any free port).
    pub fn start(targets: &[(&str, u16)]) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let mut set = Self {
            runtime,
            targets: Vec::new(),
        };
        for (id, port) in targets {
            let address = SocketAddr::from(([127, 0, 0, 1], *port));
            let (address, stop) = set.spawn(id, address)?;
            set.targets.push(RunningTarget {
                id: (*id).to_owned(),
                address,
                stop: Some(stop),
            });
        }
        Ok(set)
    }

    fn spawn(&self, id: &str, address: SocketAddr) -> anyhow::Result<(SocketAddr, ServerHandle)> {
        let listener = self.runtime.block_on(TcpListener::bind(address))?;
        let address = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel();
        let id = id.to_owned();
        let task = self.runtime.spawn(async move {
            let _ = serve(&id, listener, stopped).await;
        });
        Ok((address, (stop, task)))
    }

    /// `(id, ip:port)` of every target.
    pub fn addresses(&self) -> Vec<(String, SocketAddr)> {
        self.targets.iter().map(|t| (t.id.clone(), t.address)).collect()
    }

    /// The id of the target listening on `address`.
    pub fn id_of(&self, address: SocketAddr) -> Option<&str> {
        self.targets
            .iter()
            .find(|t| t.address == address)
            .map(|t| t.id.as_str())
    }

    /// Stops target `id`: when this returns its listener is closed and every connection cut.
    pub fn stop(&mut self, id: &str) {
        if let Some((stop, task)) = self.targets.iter_mut().find(|t| t.id == id).and_then(|t| t.stop.take()) {
            let _ = stop.send(());
            let _ = self.runtime.block_on(task);
        }
    }

    /// Starts target `id` again on its address.
    pub fn restart(&mut self, id: &str) -> anyhow::Result<()> {
        let index = self
            .targets
            .iter()
            .position(|t| t.id == id)
            .ok_or_else(|| anyhow::anyhow!("no target {id}"))?;
        let (_, stop) = self.spawn(id, self.targets[index].address)?;
        self.targets[index].stop = Some(stop);
        Ok(())
    }
}
