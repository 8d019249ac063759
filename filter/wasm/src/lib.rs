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
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};
use sticky_core::{
    CompiledListener, CookieCache, Counter, Exchange, ExchangeHost, ExchangeSettings, Follower, ListenerTally,
    PluginConfig, PollAnswer,
};

use crate::metrics::FilterMetrics;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    // No panic hook of our own: std's default one already writes the message to stderr
    // (WASI fd_write), which Envoy logs.
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        Box::new(StickyRoot {
            context_id,
            ..StickyRoot::default()
        })
    });
}}

/// Tick period of a root context following the control service. Short: the first tick comes
/// one period after start, and a poll is sent on the first tick it is due.
const TICK: Duration = Duration::from_millis(100);

/// What every HTTP context of a plugin shares.
struct Runtime {
    settings: ExchangeSettings,
    /// The current listener state; replaced whole when a new state arrives.
    listener: RefCell<Option<Arc<CompiledListener>>>,
    /// Round-robin position for requests no cookie pins.
    sequence: Cell<u64>,
    /// Cookies this VM already authenticated: a sticky hit skips AES-GCM.
    cookie_cache: RefCell<CookieCache>,
    metrics: FilterMetrics,
    /// This listener's own counts, reported with each poll.
    tally: ListenerTally,
    /// The WebSockets open through this VM: HTTP context id and the target's canonical address
    /// (a list: few, and a map would add kilobytes to the artifact).
    upgrades: RefCell<Vec<(u32, Box<str>)>>,
}

impl Runtime {
    fn count(&self, counter: Counter) {
        self.metrics.increment(counter);
        self.tally.add(counter, 1);
    }
}

#[derive(Default)]
struct StickyRoot {
    context_id: u32,
    runtime: Option<Rc<Runtime>>,
    follower: Option<Follower>,
    /// The state version whose targets the open WebSockets were last checked against.
    upgrades_checked: Option<u64>,
}

impl StickyRoot {
    /// Closes the WebSockets whose target the state in force no longer keeps connections to
    /// (deregistered, and drained if its load balancer drains connections). Envoy keeps a
    /// connection to an endpoint it removed until its stream ends, which an upgraded stream
    /// never does by itself. Run from the tick, never from an HTTP call's answer: the SDK holds
    /// its table of HTTP contexts borrowed during that one, and Envoy may end the reset stream's
    /// context at once, calling back into this VM.
    fn close_left_upgrades(&mut self) {
        let Some(runtime) = &self.runtime else { return };
        let Some(listener) = runtime.listener.borrow().clone() else {
            return;
        };
        if self.upgrades_checked == Some(listener.version()) {
            return;
        }
        self.upgrades_checked = Some(listener.version());
        let left: Vec<u32> = match runtime.upgrades.try_borrow_mut() {
            Ok(mut upgrades) => {
                let mut left = Vec::new();
                upgrades.retain(|(context, address)| {
                    let keep = listener.keeps_connections_to(address);
                    if !keep {
                        left.push(*context);
                    }
                    keep
                });
                left
            }
            Err(_) => return,
        };
        if left.is_empty() {
            return;
        }
        for context in &left {
            // A context that has ended meanwhile is refused (BadArgument): nothing to close.
            // Envoy answers Ok to every reset of an HTTP request, which the SDK requires.
            if hostcalls::set_effective_context(*context).is_ok() && hostcalls::reset_http_request().is_ok() {
                runtime.count(Counter::UpgradesClosed);
            }
        }
        let _ = hostcalls::set_effective_context(self.context_id);
        log(
            LogLevel::Info,
            &format!("sticky: closed {} WebSockets whose target was deregistered", left.len()),
        );
    }

    /// Sends a state poll to the control service when one is due.
    fn poll_control(&mut self) {
        let (Some(runtime), Some(follower)) = (&self.runtime, &mut self.follower) else {
            return;
        };
        let now = now_millis();
        let version = runtime.listener.borrow().as_ref().map(|l| l.version());
        let Some(poll) = follower.due_poll(version, now, &runtime.tally) else {
            return;
        };
        let mut headers = vec![
            (":method", "GET"),
            (":path", poll.path.as_str()),
            (":authority", poll.authority.as_str()),
        ];
        if let Some(authorization) = &poll.authorization {
            headers.push(("authorization", authorization.as_str()));
        }
        let cluster = &follower.control().cluster;
        let timeout = Duration::from_millis(poll.timeout_ms);
        match hostcalls::dispatch_http_call(cluster, headers, None, vec![], timeout) {
            Ok(_) => follower.sent(),
            Err(status) => {
                runtime.count(Counter::ControlErrors);
                log(
                    LogLevel::Warn,
                    &format!(
                        "sticky: cannot call the control service on cluster {cluster} (status {})",
                        status as u32
                    ),
                );
                follower.not_sent(now);
            }
        }
    }

    /// Takes a poll's answer: a new state replaces the old whole; anything else keeps the old
    /// one (fail static) and backs off.
    fn take_poll_answer(&mut self, body_size: usize) {
        let (Some(runtime), Some(follower)) = (&self.runtime, &mut self.follower) else {
            return;
        };
        let status = hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten();
        let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        let current = runtime.listener.borrow().clone();
        let answer = follower.take_answer(
            now_millis(),
            status.as_deref() == Some(b"200"),
            &body,
            current.as_deref(),
        );
        if let Some(counter) = answer.counter() {
            runtime.count(counter);
        }
        match answer {
            PollAnswer::Changed(listener) => *runtime.listener.borrow_mut() = Some(listener),
            PollAnswer::Failed(Some(err)) => log(
                LogLevel::Warn,
                &format!("sticky: refusing state from the control service: {err}"),
            ),
            PollAnswer::Unchanged | PollAnswer::Failed(None) => {}
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
            Ok(listener) => listener.map(Arc::new),
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
        let mut listener = listener;
        if let Some(control) = &config.control {
            let mut id = [0u8; 8];
            let _ = getrandom::fill(&mut id);
            let follower = Follower::new(control.clone(), id);
            // A listener updated by Envoy: start from the state its previous configuration holds.
            listener = listener.or_else(|| follower.handed_over());
            self.follower = Some(follower);
            let _ = hostcalls::set_tick_period(TICK);
        }
        self.runtime = Some(Rc::new(Runtime {
            settings: ExchangeSettings::from(&config),
            listener: RefCell::new(listener),
            sequence: Cell::new(0),
            cookie_cache: RefCell::new(CookieCache::default()),
            metrics: FilterMetrics::define(),
            tally: ListenerTally::default(),
            upgrades: RefCell::new(Vec::new()),
        }));
        true
    }

    fn on_tick(&mut self) {
        self.close_left_upgrades();
        self.poll_control();
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let runtime = self.runtime.clone()?;
        Some(Box::new(StickyHttp {
            context_id,
            runtime,
            exchange: Exchange::default(),
            upgraded: false,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct StickyHttp {
    context_id: u32,
    runtime: Rc<Runtime>,
    exchange: Exchange,
    /// Watched as a WebSocket (in the runtime's `upgrades`).
    upgraded: bool,
}

impl Context for StickyHttp {}

impl Drop for StickyHttp {
    fn drop(&mut self) {
        if self.upgraded
            && let Ok(mut upgrades) = self.runtime.upgrades.try_borrow_mut()
        {
            upgrades.retain(|(context, _)| *context != self.context_id);
        }
    }
}

impl HttpContext for StickyHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let runtime = &*self.runtime;
        let listener = runtime.listener.borrow().clone();
        let sequence = || {
            let sequence = runtime.sequence.get();
            runtime.sequence.set(sequence.wrapping_add(1));
            sequence
        };
        let exchange = match runtime.cookie_cache.try_borrow_mut() {
            Ok(mut cache) => Exchange::on_request_headers(
                &mut WasmHost(runtime),
                &runtime.settings,
                listener,
                sequence,
                &mut cache,
            ),
            // Never nested; were it, a fresh cache decides the same, only slower.
            Err(_) => Exchange::on_request_headers(
                &mut WasmHost(runtime),
                &runtime.settings,
                listener,
                sequence,
                &mut CookieCache::default(),
            ),
        };
        self.exchange = exchange;
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let runtime = &*self.runtime;
        let current = runtime.listener.borrow();
        self.exchange
            .on_response_headers(&mut WasmHost(runtime), &runtime.settings, current.as_deref());
        if !self.upgraded
            && let Some(address) = self.exchange.upgraded_to()
            && let Ok(mut upgrades) = runtime.upgrades.try_borrow_mut()
        {
            upgrades.push((self.context_id, address.into()));
            self.upgraded = true;
        }
        Action::Continue
    }
}

/// The exchange's host: proxy-wasm's calls for the current HTTP context.
struct WasmHost<'r>(&'r Runtime);

/// Every value of a header. The ABI's single-value read returns the first only, and copying the
/// whole header map is dear: only when the header is there at all.
fn header_values(map: MapType, name: &str) -> Vec<Vec<u8>> {
    if hostcalls::get_map_value_bytes(map, name).ok().flatten().is_none() {
        return Vec::new();
    }
    hostcalls::get_map_bytes(map)
        .unwrap_or_default()
        .into_iter()
        .filter(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value)
        .collect()
}

impl ExchangeHost for WasmHost<'_> {
    type Value<'a>
        = Vec<u8>
    where
        Self: 'a;

    fn request_header(&self, name: &str) -> Option<Vec<u8>> {
        hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
            .ok()
            .flatten()
    }

    fn set_request_header(&mut self, name: &str, value: &[u8]) {
        let _ = hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, name, Some(value));
    }

    fn remove_request_header(&mut self, name: &str) {
        let _ = hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, name, None);
    }

    fn response_header(&self, name: &str) -> Option<Vec<u8>> {
        hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, name)
            .ok()
            .flatten()
    }

    fn request_header_values(&self, name: &str) -> Vec<Vec<u8>> {
        header_values(MapType::HttpRequestHeaders, name)
    }

    fn response_header_values(&self, name: &str) -> Vec<Vec<u8>> {
        header_values(MapType::HttpResponseHeaders, name)
    }

    fn remove_response_header(&mut self, name: &str) {
        let _ = hostcalls::set_map_value_bytes(MapType::HttpResponseHeaders, name, None);
    }

    fn add_response_header(&mut self, name: &str, value: &[u8]) {
        let _ = hostcalls::add_map_value_bytes(MapType::HttpResponseHeaders, name, value);
    }

    fn upstream_address(&self) -> Option<Vec<u8>> {
        // An Envoy whose route does not add the upstream header.
        hostcalls::get_property(vec!["upstream", "address"]).ok().flatten()
    }

    fn now_millis(&self) -> u64 {
        now_millis()
    }

    /// A fresh 96-bit nonce from WASI `random_get` (Envoy serves it from BoringSSL's CSPRNG).
    fn nonce(&self) -> Option<[u8; 12]> {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).ok().map(|()| nonce)
    }

    fn count(&self, counter: Counter) {
        self.0.count(counter);
    }

    fn warn(&self, message: &str) {
        log(LogLevel::Warn, message);
    }
}

/// Wall-clock Unix milliseconds, as the host tells it (0 if it cannot, which expires nothing
/// early): for cookies (in seconds), timing an exchange and scheduling polls.
fn now_millis() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}
