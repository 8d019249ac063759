//! The native shell around `sticky-core`: an Envoy dynamic module (`libsticky_filter_native.so`)
//! doing what the proxy-wasm filter does, with the same plugin configuration, state feed, cookies
//! and counters. Envoy loads it in-process: no VM, no copies of headers into a sandbox.
//!
//! - One [`FilterConfig`] per filter configuration, shared by every worker: the state in force is
//!   swapped atomically (`arc-swap`), and one follower per Envoy process polls the control
//!   service from the main thread (`follow`).
//! - Each stream runs the core's [`sticky_core::Exchange`] over Envoy's header callbacks (`host`).
//! - No panic crosses into Envoy: every hook catches it, counts it (`sticky.panics`) and lets the
//!   stream go on untouched.

// Calling Envoy's C callbacks and exporting the hooks Envoy calls is what a dynamic module is.
#![allow(unsafe_code)]
// Input decides every index here: a slice out of bounds would panic the host's request.
#![deny(clippy::indexing_slicing)]

pub mod abi;
mod follow;
mod hooks;
mod host;
mod upgrades;

use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use sticky_core::{COUNTERS, CompiledListener, Counter, ExchangeSettings, ListenerTally, PluginConfig};

use crate::abi::ModuleBuffer;
use crate::follow::Following;
use crate::upgrades::Upgrades;

pub use crate::hooks::*;

/// Panics caught where no stream could count them yet; the next stream does.
static UNCOUNTED_PANICS: AtomicU64 = AtomicU64::new(0);

/// One filter configuration: what every stream of every worker shares.
pub struct FilterConfig {
    settings: ExchangeSettings,
    /// The state in force; replaced whole when a new state arrives.
    listener: ArcSwapOption<CompiledListener>,
    /// Envoy's id of each counter (`Counter::index` order); `None` if Envoy refused it.
    counters: [Option<usize>; COUNTERS],
    /// Following the control service, when the configuration names one.
    following: Option<Following>,
    /// This listener's own counts, reported with each poll.
    tally: ListenerTally,
    /// The WebSockets open through this configuration, to close when their target leaves.
    upgrades: Upgrades,
}

/// A pointer Envoy allows any thread to use (a scheduler's commit).
#[derive(Clone, Copy)]
struct SendPointer(*mut c_void);
// SAFETY: Envoy documents its schedulers as usable from any thread.
unsafe impl Send for SendPointer {}
// SAFETY: as above; the module never dereferences it.
unsafe impl Sync for SendPointer {}

impl SendPointer {
    /// The pointer (a method, so a closure captures the `Send` wrapper, not the raw field).
    fn get(self) -> *mut c_void {
        self.0
    }
}

impl FilterConfig {
    /// Builds the configuration from the plugin configuration JSON; `None` (logged) refuses it.
    fn new(config_envoy: *mut c_void, bytes: &[u8]) -> Option<Arc<FilterConfig>> {
        let config = match PluginConfig::parse(bytes) {
            Ok(config) => config,
            Err(err) => {
                log(abi::LOG_ERROR, &format!("sticky: refusing configuration: {err}"));
                return None;
            }
        };
        let listener = match config.state.as_ref().map(CompiledListener::compile).transpose() {
            Ok(listener) => listener.map(Arc::new),
            Err(err) => {
                log(abi::LOG_ERROR, &format!("sticky: refusing state: {err}"));
                return None;
            }
        };
        if let Some(listener) = &listener {
            log(
                abi::LOG_INFO,
                &format!(
                    "sticky: state version {} with {} targets",
                    listener.version(),
                    listener.targets().len()
                ),
            );
        }
        let counters = Counter::ALL.map(|counter| define_counter(config_envoy, counter.name()));
        let following = config
            .control
            .clone()
            .map(|control| Following::start(config_envoy, control));
        // A listener updated by Envoy: start from the state its previous configuration holds.
        let listener = listener.or_else(|| following.as_ref().and_then(Following::handed_over));
        Some(Arc::new(FilterConfig {
            settings: ExchangeSettings::from(&config),
            listener: ArcSwapOption::new(listener),
            counters,
            following,
            tally: ListenerTally::default(),
            upgrades: Upgrades::default(),
        }))
    }

    /// Counts on the main thread (the configuration's own events).
    fn count_from_config(&self, config_envoy: *mut c_void, counter: Counter) {
        self.tally.add(counter, 1);
        if let Some(Some(id)) = self.counters.get(counter.index()) {
            // SAFETY: Envoy's configuration pointer, valid while the configuration lives; no labels.
            unsafe {
                abi::envoy_dynamic_module_callback_http_filter_config_increment_counter(
                    config_envoy,
                    *id,
                    std::ptr::null_mut(),
                    0,
                    1,
                );
            }
        }
    }

    /// Counts from a stream (on its worker).
    fn count_from_stream(&self, filter_envoy: *mut c_void, counter: Counter, value: u64) {
        self.tally.add(counter, value);
        if let Some(Some(id)) = self.counters.get(counter.index()) {
            // SAFETY: Envoy's stream pointer, valid during the hook; no labels.
            unsafe {
                abi::envoy_dynamic_module_callback_http_filter_increment_counter(
                    filter_envoy,
                    *id,
                    std::ptr::null_mut(),
                    0,
                    value,
                );
            }
        }
    }

    /// Counts the panics caught since the last stream did.
    fn count_caught_panics(&self, filter_envoy: *mut c_void) {
        if UNCOUNTED_PANICS.load(Ordering::Relaxed) != 0 {
            let caught = UNCOUNTED_PANICS.swap(0, Ordering::Relaxed);
            self.count_from_stream(filter_envoy, Counter::Panics, caught);
        }
    }
}

fn define_counter(config_envoy: *mut c_void, name: &str) -> Option<usize> {
    let mut id = 0usize;
    // SAFETY: Envoy's configuration pointer during `on_http_filter_config_new`; `name` outlives
    // the call; no labels.
    let result = unsafe {
        abi::envoy_dynamic_module_callback_http_filter_config_define_counter(
            config_envoy,
            ModuleBuffer::of(name.as_bytes()),
            std::ptr::null_mut(),
            0,
            &raw mut id,
        )
    };
    (result == abi::METRICS_SUCCESS).then_some(id)
}

/// Runs a hook's body; a panic is caught (never unwinds into Envoy), counted, and answered with
/// `fallback`.
fn guarded<R>(fallback: R, body: impl FnOnce() -> R) -> R {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|_| {
        UNCOUNTED_PANICS.fetch_add(1, Ordering::Relaxed);
        fallback
    })
}

/// Wall-clock Unix milliseconds (0 if the clock is before 1970, which expires nothing early).
fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Logs through Envoy (its `dynamic_modules` logger).
fn log(level: u32, message: &str) {
    // SAFETY: `message` outlives the call.
    unsafe { abi::envoy_dynamic_module_callback_log(level, ModuleBuffer::of(message.as_bytes())) }
}

/// Bytes Envoy lends for the duration of a hook; empty for a null buffer.
///
/// # Safety
/// `ptr` must be null or point to `length` readable bytes that live as long as `'a`.
unsafe fn lent<'a>(ptr: *const u8, length: usize) -> &'a [u8] {
    if ptr.is_null() || length == 0 {
        &[]
    } else {
        // SAFETY: the caller's promise.
        unsafe { std::slice::from_raw_parts(ptr, length) }
    }
}
