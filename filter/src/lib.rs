//! The proxy-wasm shell around `sticky-core`: reads the Cookie header once, removes any
//! client-supplied routing header, sets it for pinned requests, learns the answering target
//! from `upstream.address` and sets cookies on responses.
//!
//! Every host call goes through `proxy_wasm::hostcalls`, whose `Result`s are handled here:
//! the SDK's trait helpers `unwrap()` them (and assume UTF-8), and a panic kills the VM.

mod metrics;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::UNIX_EPOCH;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType};
use sticky_core::{Listener, PluginConfig, RequestDecision};

use crate::metrics::Metrics;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    // No panic hook of our own: std's default one already writes the message to stderr
    // (WASI fd_write), which Envoy logs.
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(StickyRoot::default()) });
}}

/// What every HTTP context of a plugin shares.
struct Runtime {
    routing_header: String,
    /// The current listener state; replaced whole when a new state arrives.
    listener: RefCell<Option<Rc<Listener>>>,
    metrics: Metrics,
}

#[derive(Default)]
struct StickyRoot {
    runtime: Option<Rc<Runtime>>,
}

impl Context for StickyRoot {}

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
        let listener = match config.state.as_ref().map(Listener::compile).transpose() {
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
        self.runtime = Some(Rc::new(Runtime {
            routing_header: config.routing_header,
            listener: RefCell::new(listener),
            metrics: Metrics::define(),
        }));
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let runtime = self.runtime.clone()?;
        Some(Box::new(StickyHttp {
            runtime,
            listener: None,
            decision: RequestDecision::UNPINNED,
            now: 0,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct StickyHttp {
    runtime: Rc<Runtime>,
    /// The state this request was decided with; the response is decided with the same.
    listener: Option<Rc<Listener>>,
    decision: RequestDecision,
    now: u64,
}

impl Context for StickyHttp {}

impl HttpContext for StickyHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let runtime = Rc::clone(&self.runtime);
        let listener = runtime.listener.borrow().clone();
        let Some(listener) = listener.filter(|l| l.has_policy()) else {
            if runtime.listener.borrow().is_none() {
                runtime.metrics.no_state.increment();
            }
            remove_routing_header(&runtime.routing_header);
            return Action::Continue;
        };
        self.now = now_secs();
        let cookie = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, "cookie")
            .ok()
            .flatten();
        self.decision = listener.on_request(cookie.as_deref(), self.now);
        runtime.metrics.count_request(&self.decision);
        match self.decision.pinned.and_then(|i| listener.target(i)) {
            // Replacing drops every client-supplied copy of the header.
            Some(target) => {
                let _ = hostcalls::set_map_value_bytes(
                    MapType::HttpRequestHeaders,
                    &runtime.routing_header,
                    Some(target.address.as_bytes()),
                );
            }
            None => remove_routing_header(&runtime.routing_header),
        }
        self.listener = Some(listener);
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(listener) = self.listener.take() else {
            return Action::Continue;
        };
        let upstream = hostcalls::get_property(vec!["upstream", "address"]).ok().flatten();
        let response_headers = if listener.reads_response_cookies() {
            hostcalls::get_map_bytes(MapType::HttpResponseHeaders).unwrap_or_default()
        } else {
            Vec::new()
        };
        let set_cookies = response_headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("set-cookie"))
            .map(|(_, value)| value.as_slice());
        let response = listener.on_response(&self.decision, upstream.as_deref(), set_cookies, self.now, draw_nonce);
        self.runtime.metrics.count_response(response.outcome);
        if let Some(set_cookie) = response.set_cookie {
            let _ = hostcalls::add_map_value(MapType::HttpResponseHeaders, "set-cookie", &set_cookie);
        }
        Action::Continue
    }
}

fn remove_routing_header(name: &str) {
    let _ = hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, name, None);
}

/// Wall-clock Unix seconds, as the host tells it (0 if it cannot, which expires nothing early).
fn now_secs() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

/// A fresh 96-bit nonce from WASI `random_get` (Envoy serves it from BoringSSL's CSPRNG).
fn draw_nonce() -> Option<[u8; 12]> {
    let mut nonce = [0u8; 12];
    getrandom::fill(&mut nonce).ok().map(|()| nonce)
}

fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}
