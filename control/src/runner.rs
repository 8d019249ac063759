//! What every surface's API call goes through, whichever surface parsed it (the Query API,
//! OAPI, the operator page): run on a blocking thread (a command commits to the store), counted,
//! logged, and answered once its change is in force on every follower of every replica.

use std::sync::Arc;

use crate::error::ApiError;
use crate::service::{Committed, Done, Service};

/// What running a call takes.
#[derive(Clone)]
pub(crate) struct Runner {
    pub(crate) service: Arc<Service>,
    /// Asks the other replicas whether their followers hold a change.
    pub(crate) peers: reqwest::Client,
    /// The feed's token, presented to the other replicas.
    pub(crate) feed_token: Option<String>,
}

/// A request id in the shape of the real services' (a UUID), for the answer, its log line and
/// its error document.
pub(crate) fn request_id() -> String {
    let mut bytes = [0u8; 16];
    let _ = getrandom::fill(&mut bytes);
    let hex = hex::encode(bytes);
    let part = |range: std::ops::Range<usize>| hex.get(range).unwrap_or_default();
    format!(
        "{}-{}-{}-{}-{}",
        part(0..8),
        part(8..12),
        part(12..16),
        part(16..20),
        part(20..32)
    )
}

/// A refusal as the runner counts and logs it, in whichever surface's words.
pub(crate) trait Refusal: From<ApiError> + Send + 'static {
    /// The code counted in `sticky_control_api_requests_total`.
    fn counted_as(&self) -> &str;
    fn details(&self) -> &str;
}

impl Refusal for ApiError {
    fn counted_as(&self) -> &str {
        self.code.as_str()
    }

    fn details(&self) -> &str {
        &self.message
    }
}

/// Every surface's calls go through here: run on a blocking thread (a command commits to the
/// store), counted, logged, and answered once a change is in force on every follower. `call`
/// gives the call's name (for the metrics and the log) and its result; the answer holds its
/// value and, for a change not in force everywhere in time, where it is not.
pub(crate) async fn run_call<T, E>(
    runner: &Runner,
    surface: &'static str,
    request_id: &str,
    call: impl FnOnce(&Service) -> (String, Result<Done<T>, E>) + Send + 'static,
) -> (Result<T, E>, Option<String>)
where
    T: Send + 'static,
    E: Refusal,
{
    let service = Arc::clone(&runner.service);
    let (name, result) = match tokio::task::spawn_blocking(move || call(&service)).await {
        Ok(answer) => answer,
        Err(e) => ("unknown".to_owned(), Err(E::from(ApiError::internal(e)))),
    };
    let code = result
        .as_ref()
        .map_or_else(|e| e.counted_as().to_owned(), |_| "OK".to_owned());
    runner.service.metrics.count(
        "sticky_control_api_requests_total",
        &[("action", &name), ("code", &code)],
    );
    match result {
        Ok(done) => {
            tracing::info!(%request_id, call = %name, surface, "ok");
            let not_in_force = match done.committed {
                Some(committed) => await_in_force(runner, committed, request_id).await,
                None => None,
            };
            (Ok(done.value), not_in_force)
        }
        Err(error) => {
            tracing::info!(%request_id, call = %name, surface, %code, details = error.details(), "refused");
            (Err(error), None)
        }
    }
}

/// A change is answered once every live filter and Envoy, of every replica, holds it
/// (bounded by the sync time-out); otherwise, which ones do not yet.
async fn await_in_force(runner: &Runner, committed: Committed, request_id: &str) -> Option<String> {
    let Committed {
        version,
        endpoints_version,
    } = committed;
    let service = &runner.service;
    if service.config.sync_timeout.is_zero() {
        return None;
    }
    let started = std::time::Instant::now();
    match crate::replicas::wait_in_force(
        service,
        &runner.peers,
        runner.feed_token.as_deref(),
        version,
        endpoints_version,
        service.config.sync_timeout,
    )
    .await
    {
        Ok(()) => {
            service.metrics.observe_sync(started.elapsed());
            None
        }
        Err(lagging) => {
            service.metrics.count("sticky_control_sync_timeouts_total", &[]);
            tracing::warn!(%request_id, version, ?lagging, "answering before every follower holds the change");
            Some(lagging.join("; "))
        }
    }
}
