//! The proxy-wasm shell around `sticky-core`: reads the Cookie header once, replaces any
//! client-supplied routing header with the target it routes to, learns the answering target
//! from the upstream header the route adds (or the `upstream.address` property), tells the
//! core which target answered (passive detection of unreachable targets) and sets cookies on
//! responses.
//!
//! Every host call goes through `proxy_wasm::hostcalls`, whose `Result`s are handled here:
//! the SDK's trait helpers `unwrap()` them (and assume UTF-8), and a panic kills the VM.

// Input decides every index here: a slice out of bounds would panic the host's request.
#![deny(clippy::indexing_slicing)]
#![cfg_attr(test, allow(clippy::indexing_slicing))]

mod metrics;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};
use sticky_core::{
    CompiledListener, ControlSource, PluginConfig, PollSchedule, RequestDecision, TargetIndex, UpstreamReport,
};

use crate::metrics::FilterMetrics;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    // No panic hook of our own: std's default one already writes the message to stderr
    // (WASI fd_write), which Envoy logs.
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(StickyRoot::default()) });
}}

/// Tick period of a root context following the control service. Short: the first tick comes
/// one period after start, and a poll is sent on the first tick it is due.
const TICK: Duration = Duration::from_millis(100);
/// Extra time Envoy gives a poll beyond the control service's own hold time.
const POLL_GRACE_MS: u64 = 5_000;

/// What every HTTP context of a plugin shares.
struct Runtime {
    routing_header: String,
    upstream_header: String,
    /// See `PluginConfig::unreachable_after_ms`.
    unreachable_after_ms: u64,
    control: Option<ControlSource>,
    /// The current listener state; replaced whole when a new state arrives.
    listener: RefCell<Option<Rc<CompiledListener>>>,
    /// Round-robin position for requests no cookie pins.
    sequence: Cell<u64>,
    metrics: FilterMetrics,
}

#[derive(Default)]
struct StickyRoot {
    runtime: Option<Rc<Runtime>>,
    poll: PollSchedule,
    /// This VM's id in its polls (16 hex digits).
    poller: String,
}

impl StickyRoot {
    /// Sends a state poll to the control service when one is due.
    fn poll_control(&mut self) {
        let Some(runtime) = &self.runtime else { return };
        let Some(control) = &runtime.control else { return };
        let now = now_millis();
        if !self.poll.due(now) {
            return;
        }
        let version = runtime.listener.borrow().as_ref().map(|l| l.version());
        let path = control.path(version, &self.poller);
        let authorization = control.token.as_ref().map(|t| format!("Bearer {t}"));
        let mut headers = vec![
            (":method", "GET"),
            (":path", path.as_str()),
            (":authority", control.authority.as_str()),
        ];
        if let Some(authorization) = &authorization {
            headers.push(("authorization", authorization.as_str()));
        }
        let timeout = Duration::from_millis(control.poll_timeout_ms.saturating_add(POLL_GRACE_MS));
        match hostcalls::dispatch_http_call(&control.cluster, headers, None, vec![], timeout) {
            Ok(_) => self.poll.sent(),
            Err(status) => {
                runtime.metrics.control_errors.increment();
                log(
                    LogLevel::Warn,
                    &format!(
                        "sticky: cannot call the control service on cluster {} (status {})",
                        control.cluster, status as u32
                    ),
                );
                self.poll.failed(now);
            }
        }
    }

    /// Takes a poll's answer: a new state replaces the old whole; anything else keeps the old
    /// one (fail static) and backs off.
    fn take_poll_answer(&mut self, body_size: usize) {
        let Some(runtime) = &self.runtime else { return };
        let now = now_millis();
        let status = hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten();
        if status.as_deref() != Some(b"200") {
            runtime.metrics.control_errors.increment();
            self.poll.failed(now);
            return;
        }
        let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        match CompiledListener::from_json(&body) {
            Ok(listener) => {
                let changed = runtime.listener.borrow().as_ref().map(|l| l.version()) != Some(listener.version());
                if changed {
                    runtime.metrics.state_updates.increment();
                    if let Some(previous) = runtime.listener.borrow().as_ref() {
                        listener.carry_unreachable_from(previous);
                    }
                    *runtime.listener.borrow_mut() = Some(Rc::new(listener));
                }
                self.poll.succeeded(now);
            }
            Err(err) => {
                runtime.metrics.control_errors.increment();
                log(
                    LogLevel::Warn,
                    &format!("sticky: refusing state from the control service: {err}"),
                );
                self.poll.failed(now);
            }
        }
    }
}

impl Context for StickyRoot {
    fn on_http_call_response(&mut self, _token_id: u32, _num_headers: usize, body_size: usize, _num_trailers: usize) {
        self.take_poll_answer(body_size);
        self.poll_control();
    }
}

impl RootContext for StickyRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = hostcalls::get_buffer(proxy_wasm::types::BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .unwrap_or_default();
        let config = match PluginConfig::parse(&bytes) {
            Ok(config) => config,
            Err(err) => {
                log(LogLevel::Error, &format!("sticky: refusing configuration: {err}"));
                return false;
            }
        };
        let listener = match config.state.as_ref().map(CompiledListener::compile).transpose() {
            Ok(listener) => listener.map(Rc::new),
            Err(err) => {
                log(LogLevel::Error, &format!("sticky: refusing state: {err}"));
                return false;
            }
        };
        if let Some(listener) = &listener {
            log(
                LogLevel::Info,
                &format!(
                    "sticky: state version {} with {} targets",
                    listener.version(),
                    listener.targets().len()
                ),
            );
        }
        if config.control.is_some() {
            let mut id = [0u8; 8];
            if getrandom::fill(&mut id).is_ok() {
                self.poller = id.iter().map(|b| format!("{b:02x}")).collect();
            }
            let _ = hostcalls::set_tick_period(TICK);
        }
        self.runtime = Some(Rc::new(Runtime {
            routing_header: config.routing_header,
            upstream_header: config.upstream_header,
            unreachable_after_ms: config.unreachable_after_ms,
            control: config.control,
            listener: RefCell::new(listener),
            sequence: Cell::new(0),
            metrics: FilterMetrics::define(),
        }));
        true
    }

    fn on_tick(&mut self) {
        self.poll_control();
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let runtime = self.runtime.clone()?;
        Some(Box::new(StickyHttp {
            runtime,
            listener: None,
            decision: RequestDecision::UNPINNED,
            routed: None,
            now: 0,
            started_ms: 0,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct StickyHttp {
    runtime: Rc<Runtime>,
    /// The state this request was decided with; the response is decided with the same.
    listener: Option<Rc<CompiledListener>>,
    decision: RequestDecision,
    /// The target named in the routing header.
    routed: Option<TargetIndex>,
    /// Wall-clock Unix seconds, and milliseconds, when the request came.
    now: u64,
    started_ms: u64,
}

impl Context for StickyHttp {}

impl HttpContext for StickyHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let runtime = Rc::clone(&self.runtime);
        let Some(listener) = runtime.listener.borrow().clone() else {
            // No state yet: Envoy balances; a client's routing header never counts.
            runtime.metrics.no_state.increment();
            runtime.remove_routing_header();
            return Action::Continue;
        };
        self.started_ms = now_millis();
        self.now = self.started_ms / 1000;
        if listener.has_policy() {
            let cookie = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, "cookie")
                .ok()
                .flatten();
            self.decision = listener.on_request(cookie.as_deref(), self.now);
            runtime.metrics.count_request(&self.decision);
        }
        // Pinned: the cookie's target. Otherwise the filter balances over the healthy targets
        // of its state itself, so a deregistered target is out at once, not at Envoy's next
        // EDS refresh, and a target Envoy could not reach is skipped.
        self.routed = self.decision.pinned.or_else(|| {
            let sequence = runtime.sequence.get();
            runtime.sequence.set(sequence.wrapping_add(1));
            listener.pick(sequence, self.now)
        });
        match self.routed.and_then(|i| listener.target(i)) {
            // Replacing drops every client-supplied copy of the header.
            Some(target) => {
                let _ = hostcalls::set_map_value_bytes(
                    MapType::HttpRequestHeaders,
                    &runtime.routing_header,
                    Some(target.address.as_bytes()),
                );
            }
            None => runtime.remove_routing_header(),
        }
        if listener.has_policy() || self.routed.is_some() {
            self.listener = Some(listener);
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(listener) = self.listener.take() else {
            self.runtime.remove_upstream_header();
            return Action::Continue;
        };
        let upstream_header = self.runtime.upstream_header.as_str();
        // Every Set-Cookie is needed (the ABI's single-value read returns the first only), but
        // copying the whole header map is dear: only when the response sets any cookie.
        let response_headers = if listener.reads_response_cookies() && response_header("set-cookie").is_some() {
            hostcalls::get_map_bytes(MapType::HttpResponseHeaders).unwrap_or_default()
        } else {
            Vec::new()
        };
        let from_header = match response_headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(upstream_header))
        {
            Some((_, value)) => Some(value.clone()),
            None => response_header(upstream_header),
        };
        let upstream = match from_header {
            Some(address) => {
                self.runtime.remove_upstream_header();
                Some(address)
            }
            // An Envoy whose route does not add the header: ask for the property (dearer).
            None => hostcalls::get_property(vec!["upstream", "address"]).ok().flatten(),
        };
        // Envoy's route reports how many attempts the request took (read only on a failover).
        // What is learnt goes to the state in force now, which may be newer than the one that
        // routed this request.
        let retried = || response_header("x-envoy-attempt-count").is_some_and(|count| count.as_slice() != b"1");
        let waited = || now_millis().saturating_sub(self.started_ms) >= self.runtime.unreachable_after_ms;
        let routed = self
            .routed
            .and_then(|i| listener.target(i))
            .map(|t| t.address.as_bytes());
        let report = upstream.as_deref().map(UpstreamReport::parse);
        let gave_up = report.is_some_and(|r| r.failed);
        let confirm = || waited() && (gave_up || retried());
        let current = self.runtime.listener.borrow().clone();
        let learner = current.as_deref().unwrap_or(&listener);
        if let Some((target, why)) = learner.observe_answer(routed, report, confirm, self.now) {
            self.runtime.metrics.unreachable.increment();
            if let Some(target) = learner.target(target) {
                log(
                    LogLevel::Warn,
                    &format!(
                        "sticky: target {} ({}) unreachable for {} s: {}",
                        target.id,
                        target.address,
                        sticky_core::UNREACHABLE_HOLD_SECONDS,
                        why.as_str()
                    ),
                );
            }
        }
        if !listener.has_policy() {
            return Action::Continue;
        }
        // Envoy's own 503 after giving up on the upstream: nobody answered.
        let answered = report.filter(|r| !r.failed).map(|r| r.address);
        let set_cookies = response_headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("set-cookie"))
            .map(|(_, value)| value.as_slice());
        let response = listener.on_response(&self.decision, answered, set_cookies, self.now, draw_nonce);
        self.runtime.metrics.count_response(response.outcome);
        if let Some(set_cookie) = response.set_cookie {
            let _ = hostcalls::add_map_value(MapType::HttpResponseHeaders, "set-cookie", &set_cookie);
        }
        Action::Continue
    }
}

impl Runtime {
    /// Removes a client-supplied routing header. Reading first: a read of an absent header is
    /// the cheaper call, and clients almost never send it.
    fn remove_routing_header(&self) {
        let present = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, &self.routing_header)
            .ok()
            .flatten()
            .is_some();
        if present {
            let _ = hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, &self.routing_header, None);
        }
    }

    /// Envoy's route adds the upstream header to every response: it never reaches the client.
    fn remove_upstream_header(&self) {
        let _ = hostcalls::set_map_value_bytes(MapType::HttpResponseHeaders, &self.upstream_header, None);
    }
}

fn response_header(name: &str) -> Option<Vec<u8>> {
    hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, name)
        .ok()
        .flatten()
}

/// Wall-clock Unix milliseconds, as the host tells it (0 if it cannot, which expires nothing
/// early): for cookies (in seconds), timing an exchange and scheduling polls.
fn now_millis() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A fresh 96-bit nonce from WASI `random_get` (Envoy serves it from BoringSSL's CSPRNG).
fn draw_nonce() -> Option<[u8; 12]> {
    let mut nonce = [0u8; 12];
    getrandom::fill(&mut nonce).ok().map(|()| nonce)
}

fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}
