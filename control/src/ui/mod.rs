//! The operator page (`/ui`): load balancers, listeners and their policy, instances with live
//! health, each listener's counters as its filters report them, a cookie inspector, and policy
//! changes. Signing in takes one of the API's access keys (id and secret); a session cookie
//! (HttpOnly, SameSite=Strict, path `/ui`) then stands for it. Changes are the domain's
//! commands run by the APIs' runner, so they get the same validation and the same "in force on
//! every follower" answer.

mod inspect;
mod sessions;
mod views;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use crate::commands::{Change, ChangeLoadBalancers, Command};
use crate::error::ApiError;
use crate::model::Policy;
use crate::runner::{Runner, request_id, run_call};
use crate::tallies::ListenerTallies;

pub use sessions::OperatorSessions;

/// The session cookie's name.
const SESSION_COOKIE: &str = "sticky_operator";
/// Longest cookie text the inspector reads.
const MAX_INSPECTED: usize = 8 * 1024;

const PAGE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("page.js");
const STYLE: &str = include_str!("page.css");
/// The page loads only its own script and style, and is never framed.
const CSP: &str = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'";

/// What the page's handlers share.
#[derive(Clone)]
struct PageState {
    runner: Runner,
    /// Each listener's counters, as its filters' polls report them (the feed fills them).
    tallies: Arc<ListenerTallies>,
    /// Operators signed in to the page.
    operators: Arc<OperatorSessions>,
}

/// The page's routes, under `/ui`, with their own state.
pub(crate) fn routes<S>(runner: Runner, tallies: Arc<ListenerTallies>) -> Router<S> {
    let state = PageState {
        runner,
        tallies,
        operators: Arc::default(),
    };
    let signed_in = Router::new()
        .route("/ui/api/overview", get(overview))
        .route("/ui/api/listener-policy", post(set_listener_policy))
        .route("/ui/api/policies", post(create_policy))
        .route("/ui/api/inspect", post(inspect_cookie))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_operator));
    Router::new()
        .route("/ui", get(|| asset(PAGE, "text/html; charset=utf-8")))
        .route("/ui/page.js", get(|| asset(SCRIPT, "text/javascript; charset=utf-8")))
        .route("/ui/page.css", get(|| asset(STYLE, "text/css; charset=utf-8")))
        .route("/ui/api/login", post(login))
        .route("/ui/api/logout", post(logout))
        .merge(signed_in)
        .with_state(state)
}

async fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// An answer the page shows as an error: `{"error": {"code", "message"}}`.
fn refusal(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = json!({ "error": { "code": code, "message": message.into() } });
    (status, [(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

fn api_refusal(error: &ApiError) -> Response {
    refusal(error.code.status(), error.code.as_str(), error.message.clone())
}

fn session_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, token)| token)
}

/// Only a signed-in operator gets through; the access key id it signed in with is passed on.
async fn require_operator(State(app): State<PageState>, mut request: Request, next: Next) -> Response {
    let Some(key_id) = session_token(request.headers()).and_then(|token| app.operators.holder(token)) else {
        return refusal(
            StatusCode::UNAUTHORIZED,
            "SignInRequired",
            "Sign in with an access key first.",
        );
    };
    request.extensions_mut().insert(Operator(key_id));
    next.run(request).await
}

/// The access key id a signed-in request came with.
#[derive(Clone)]
struct Operator(String);

#[derive(Deserialize)]
struct Login {
    access_key_id: String,
    secret_access_key: String,
}

async fn login(State(app): State<PageState>, Json(login): Json<Login>) -> Response {
    if !app
        .runner
        .service
        .config
        .access_keys
        .secret_matches(&login.access_key_id, &login.secret_access_key)
    {
        tracing::info!(access_key = %login.access_key_id, "operator page: sign-in refused");
        return refusal(
            StatusCode::UNAUTHORIZED,
            "InvalidClientTokenId",
            "The access key id or its secret is not one this service knows.",
        );
    }
    let token = app.operators.open(&login.access_key_id);
    tracing::info!(access_key = %login.access_key_id, "operator page: signed in");
    let cookie = format!(
        "{SESSION_COOKIE}={token}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}",
        sessions::LIFETIME.as_secs()
    );
    (
        [(header::SET_COOKIE, cookie)],
        Json(json!({ "access_key_id": login.access_key_id })),
    )
        .into_response()
}

async fn logout(State(app): State<PageState>, headers: HeaderMap) -> Response {
    if let Some(token) = session_token(&headers) {
        app.operators.close(token);
    }
    let cookie = format!("{SESSION_COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0");
    ([(header::SET_COOKIE, cookie)], StatusCode::NO_CONTENT).into_response()
}

async fn overview(State(app): State<PageState>, request: Request) -> Response {
    let operator = request
        .extensions()
        .get::<Operator>()
        .map(|o| o.0.clone())
        .unwrap_or_default();
    let view = views::overview(&app.runner.service, &app.tallies, &operator);
    ([(header::CACHE_CONTROL, "no-store")], Json(view)).into_response()
}

/// Runs one command for the page through the API's runner, answered once in force (as the
/// Query API answers); `action` is the Query API's name for it, counted under that name.
async fn execute<C>(app: &PageState, action: &'static str, command: C) -> Response
where
    C: Command + Send + 'static,
    C::Output: Send + 'static,
{
    let request_id = request_id();
    let (result, not_in_force) = run_call(&app.runner, "operator page", &request_id, move |service| {
        (action.to_owned(), service.execute(command))
    })
    .await;
    match result {
        Ok(_) => Json(json!({ "ok": true, "not_in_force": not_in_force })).into_response(),
        Err(error) => api_refusal(&error),
    }
}

#[derive(Deserialize)]
struct ListenerPolicy {
    load_balancer: String,
    port: u16,
    /// The policy to set; none (or empty) removes stickiness.
    policy: Option<String>,
}

async fn set_listener_policy(State(app): State<PageState>, Json(change): Json<ListenerPolicy>) -> Response {
    let names = change.policy.filter(|p| !p.is_empty()).into_iter().collect();
    let command = ChangeLoadBalancers::one(
        change.load_balancer,
        Change::SetListenerPolicies {
            port: change.port,
            names,
        },
    );
    execute(&app, "SetLoadBalancerPoliciesOfListener", command).await
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum NewPolicy {
    LbCookie {
        load_balancer: String,
        name: String,
        /// Seconds; none: a browser-session cookie.
        expiration_period: Option<u64>,
    },
    AppCookie {
        load_balancer: String,
        name: String,
        cookie_name: String,
    },
}

async fn create_policy(State(app): State<PageState>, Json(policy): Json<NewPolicy>) -> Response {
    let (action, load_balancer, name, policy) = match policy {
        NewPolicy::LbCookie {
            load_balancer,
            name,
            expiration_period,
        } => (
            "CreateLBCookieStickinessPolicy",
            load_balancer,
            name,
            Policy::LbCookie {
                cookie_expiration_period: expiration_period,
                max_lifetime: None,
            },
        ),
        NewPolicy::AppCookie {
            load_balancer,
            name,
            cookie_name,
        } => (
            "CreateAppCookieStickinessPolicy",
            load_balancer,
            name,
            Policy::AppCookie { cookie_name },
        ),
    };
    let command = ChangeLoadBalancers::one(load_balancer, Change::AddPolicy { name, policy });
    execute(&app, action, command).await
}

#[derive(Deserialize)]
struct Inspect {
    /// A cookie value, `name=value`, or a whole `Cookie` header.
    cookie: String,
}

async fn inspect_cookie(State(app): State<PageState>, Json(request): Json<Inspect>) -> Response {
    if request.cookie.len() > MAX_INSPECTED {
        return refusal(
            StatusCode::BAD_REQUEST,
            "ValidationError",
            format!("paste at most {MAX_INSPECTED} bytes"),
        );
    }
    let view = inspect::inspect(&app.runner.service, &request.cookie, crate::domain::unix_now());
    ([(header::CACHE_CONTROL, "no-store")], Json(view)).into_response()
}
