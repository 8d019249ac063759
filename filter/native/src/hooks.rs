//! The hooks Envoy 1.40.0 calls (`envoy_dynamic_module_on_*`). Envoy refuses a filter
//! configuration unless the module exports every HTTP hook, so the ones this filter has no use
//! for are here too and let the stream go on. Every hook that runs code catches panics
//! ([`crate::guarded`]).

use std::ffi::{c_char, c_void};
use std::sync::Arc;

use sticky_core::Exchange;

use crate::abi::{self, EnvoyBuffer, EnvoyHttpHeader};
use crate::host::{NativeHost, next_sequence, with_cookie_cache};
use crate::{FilterConfig, guarded, lent};

/// One stream's filter: its configuration and what its request decided.
struct StreamFilter {
    config: Arc<FilterConfig>,
    exchange: Exchange,
    /// Its watch id, once upgraded to a WebSocket ([`crate::upgrades`]).
    upgrade: Option<u64>,
}

impl StreamFilter {
    /// The stream ended: it is no longer watched.
    fn unwatch(&mut self) {
        if let Some(id) = self.upgrade.take() {
            self.config.upgrades.unwatch(id);
        }
    }
}

impl Drop for StreamFilter {
    fn drop(&mut self) {
        self.unwatch();
    }
}

/// The configuration behind Envoy's pointer to it.
///
/// # Safety
/// `config` must come from [`envoy_dynamic_module_on_http_filter_config_new`] and not be destroyed.
unsafe fn config_of<'a>(config: *const c_void) -> Option<&'a FilterConfig> {
    // SAFETY: the caller's promise; `Arc::into_raw` made it.
    unsafe { config.cast::<FilterConfig>().as_ref() }
}

/// The stream filter behind Envoy's pointer to it.
///
/// # Safety
/// `filter` must come from [`envoy_dynamic_module_on_http_filter_new`] and not be destroyed; Envoy
/// calls a stream's hooks one at a time.
unsafe fn filter_of<'a>(filter: *const c_void) -> Option<&'a mut StreamFilter> {
    // SAFETY: the caller's promise; `Box::into_raw` made it.
    unsafe { filter.cast::<StreamFilter>().cast_mut().as_mut() }
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    abi::ABI_VERSION.as_ptr().cast()
}

/// A new filter configuration, from the plugin configuration JSON (`filter_config`, a string);
/// null refuses it.
///
/// # Safety
/// Envoy's pointers, as its ABI promises them: alive for the call, ours as we returned them.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    config_envoy: *mut c_void,
    _name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> *const c_void {
    guarded(std::ptr::null(), || {
        // SAFETY: Envoy lends the configuration for the duration of the hook.
        let bytes = unsafe { lent(config.ptr, config.length) };
        FilterConfig::new(config_envoy, bytes).map_or(std::ptr::null(), |config| Arc::into_raw(config).cast())
    })
}

/// # Safety
/// Envoy's pointers, as its ABI promises them: alive for the call, ours as we returned them.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config: *const c_void) {
    guarded((), || {
        if !config.is_null() {
            // SAFETY: made by `Arc::into_raw` in `config_new`, destroyed once; streams hold
            // their own references.
            drop(unsafe { Arc::from_raw(config.cast::<FilterConfig>()) });
        }
    });
}

/// # Safety
/// Envoy's pointers, as its ABI promises them: alive for the call, ours as we returned them.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    config_envoy: *mut c_void,
    config: *const c_void,
    _event_id: u64,
) {
    guarded((), || {
        // SAFETY: Envoy passes the pointer `config_new` returned, alive until `config_destroy`.
        if let Some(config) = unsafe { config_of(config) } {
            config.poll_control(config_envoy);
        }
    });
}

/// # Safety
/// Envoy's pointers, as its ABI promises them: alive for the call, ours as we returned them.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    config_envoy: *mut c_void,
    config: *const c_void,
    _callout_id: u64,
    result: u32,
    headers: *const EnvoyHttpHeader,
    headers_size: usize,
    body_chunks: *const EnvoyBuffer,
    body_chunks_size: usize,
) {
    guarded((), || {
        // SAFETY: Envoy passes the pointer `config_new` returned, alive until `config_destroy`.
        let Some(config) = (unsafe { config_of(config) }) else {
            return;
        };
        // SAFETY: Envoy lends the answer's arrays (possibly null) for the duration of the hook.
        let (headers, body_chunks) = unsafe { (array(headers, headers_size), array(body_chunks, body_chunks_size)) };
        config.take_poll_answer(config_envoy, result, headers, body_chunks);
    });
}

/// An array Envoy lends; empty when null.
///
/// # Safety
/// `ptr` must be null or point to `length` initialized values that outlive `'a`.
unsafe fn array<'a, T>(ptr: *const T, length: usize) -> &'a [T] {
    if ptr.is_null() || length == 0 {
        &[]
    } else {
        // SAFETY: the caller's promise.
        unsafe { std::slice::from_raw_parts(ptr, length) }
    }
}

/// # Safety
/// Envoy's pointers, as its ABI promises them: alive for the call, ours as we returned them.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config: *const c_void,
    _filter_envoy: *mut c_void,
) -> *const c_void {
    guarded(std::ptr::null(), || {
        if config.is_null() {
            return std::ptr::null();
        }
        // SAFETY: the pointer `config_new` returned; Envoy keeps the configuration alive while
        // it creates streams. The stream takes its own reference.
        let config = unsafe {
            Arc::increment_strong_count(config.cast::<FilterConfig>());
            Arc::from_raw(config.cast::<FilterConfig>())
        };
        let filter = Box::new(StreamFilter {
            config,
            exchange: Exchange::default(),
            upgrade: None,
        });
        Box::into_raw(filter).cast_const().cast()
    })
}

/// # Safety
/// Envoy's pointers, as its ABI promises them: alive for the call, ours as we returned them.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_destroy(filter: *const c_void) {
    guarded((), || {
        if !filter.is_null() {
            // SAFETY: made by `Box::into_raw` in `filter_new`, destroyed once.
            drop(unsafe { Box::from_raw(filter.cast::<StreamFilter>().cast_mut()) });
        }
    });
}

/// Runs a stream hook: `body` gets the stream's exchange, a host over Envoy's stream and the
/// configuration; the stream goes on whatever happens (a panic is caught and counted).
///
/// # Safety
/// `filter` must come from [`envoy_dynamic_module_on_http_filter_new`] and not be destroyed, and
/// `filter_envoy` be Envoy's pointer to the same stream, alive for the call.
unsafe fn stream_hook(
    filter_envoy: *mut c_void,
    filter: *const c_void,
    body: impl FnOnce(&mut Exchange, &mut NativeHost<'_>, &FilterConfig),
) -> u32 {
    guarded(abi::CONTINUE, || {
        // SAFETY: the caller's promise.
        if let Some(filter) = unsafe { filter_of(filter) } {
            let config = &*filter.config;
            let mut host = NativeHost { filter_envoy, config };
            body(&mut filter.exchange, &mut host, config);
        }
        abi::CONTINUE
    })
}

/// # Safety
/// Envoy's pointers, as its ABI promises them: alive for the call, ours as we returned them.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    filter_envoy: *mut c_void,
    filter: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    // SAFETY: Envoy passes its stream and the filter `filter_new` returned for it.
    unsafe {
        stream_hook(filter_envoy, filter, |exchange, host, config| {
            config.count_caught_panics(filter_envoy);
            let listener = config.listener.load_full();
            *exchange = with_cookie_cache(|cache| {
                Exchange::on_request_headers(host, &config.settings, listener, next_sequence, cache)
            });
        })
    }
}

/// # Safety
/// Envoy's pointers, as its ABI promises them: alive for the call, ours as we returned them.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    filter_envoy: *mut c_void,
    filter: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    guarded(abi::CONTINUE, || {
        // SAFETY: Envoy passes its stream and the filter `filter_new` returned for it.
        let Some(filter) = (unsafe { filter_of(filter) }) else {
            return abi::CONTINUE;
        };
        let config = &*filter.config;
        let current = config.listener.load();
        let mut host = NativeHost { filter_envoy, config };
        filter
            .exchange
            .on_response_headers(&mut host, &config.settings, current.as_deref());
        if filter.upgrade.is_none()
            && let Some(address) = filter.exchange.upgraded_to()
        {
            filter.upgrade = config.upgrades.watch(filter_envoy, address);
        }
        abi::CONTINUE
    })
}

/// A watched WebSocket whose target left (committed by [`crate::upgrades::Upgrades::close_left`]):
/// reset on its worker, which closes the client's connection (HTTP/1.1) or stream (HTTP/2) and
/// the target's.
///
/// # Safety
/// Envoy's pointers, as its ABI promises them: alive for the call, ours as we returned them.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    filter_envoy: *mut c_void,
    filter: *const c_void,
    event_id: u64,
) {
    guarded((), || {
        // SAFETY: the pointer `filter_new` returned, alive until `filter_destroy`.
        let Some(filter) = (unsafe { filter_of(filter) }) else {
            return;
        };
        if filter.upgrade != Some(event_id) {
            return;
        }
        filter.unwatch();
        filter
            .config
            .count_from_stream(filter_envoy, sticky_core::Counter::UpgradesClosed, 1);
        let details = b"sticky_target_deregistered";
        // SAFETY: Envoy's stream pointer during the hook; `details` outlives the call.
        unsafe {
            abi::envoy_dynamic_module_callback_http_filter_reset_stream(
                filter_envoy,
                abi::LOCAL_RESET,
                abi::ModuleBuffer::of(details),
            );
        }
    });
}

/// The end of the stream: what the request held is released now (the filter's destroy comes
/// after the stream is gone).
///
/// # Safety
/// Envoy's pointers, as its ABI promises them: alive for the call, ours as we returned them.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    _filter_envoy: *mut c_void,
    filter: *const c_void,
) {
    guarded((), || {
        // SAFETY: the pointer `filter_new` returned, alive until `filter_destroy`.
        if let Some(filter) = unsafe { filter_of(filter) } {
            filter.exchange = Exchange::default();
            filter.unwatch();
        }
    });
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_new(
    _name: EnvoyBuffer,
    _config: EnvoyBuffer,
) -> *const c_void {
    // Per-route configuration is not used; Envoy wants a non-null answer.
    std::ptr::from_ref(&abi::ABI_VERSION).cast()
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_destroy(_config: *const c_void) {}

/// Stream hooks the filter has no use for: each lets the stream go on.
macro_rules! continue_hooks {
    ($($name:ident($($arg:ident: $ty:ty),*)),* $(,)?) => {
        $(
            #[unsafe(no_mangle)]
            pub extern "C" fn $name(_filter_envoy: *mut c_void, _filter: *const c_void $(, $arg: $ty)*) -> u32 {
                $(let _ = $arg;)*
                abi::CONTINUE
            }
        )*
    };
}

continue_hooks!(
    envoy_dynamic_module_on_http_filter_request_body(end_of_stream: bool),
    envoy_dynamic_module_on_http_filter_request_trailers(),
    envoy_dynamic_module_on_http_filter_response_body(end_of_stream: bool),
    envoy_dynamic_module_on_http_filter_response_trailers(),
    envoy_dynamic_module_on_http_filter_local_reply(response_code: u32, details: EnvoyBuffer, reset_imminent: bool),
);

/// Hooks of features this filter never starts (stream call-outs, streams)
/// and of watermarks: Envoy requires them; they do nothing.
macro_rules! unused_hooks {
    ($($name:ident),* $(,)?) => {
        $(
            #[unsafe(no_mangle)]
            pub extern "C" fn $name(_envoy: *mut c_void, _module: *const c_void) {}
        )*
    };
}

unused_hooks!(
    envoy_dynamic_module_on_http_filter_http_callout_done,
    envoy_dynamic_module_on_http_filter_http_stream_headers,
    envoy_dynamic_module_on_http_filter_http_stream_data,
    envoy_dynamic_module_on_http_filter_http_stream_trailers,
    envoy_dynamic_module_on_http_filter_http_stream_complete,
    envoy_dynamic_module_on_http_filter_http_stream_reset,
    envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark,
    envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark,
    envoy_dynamic_module_on_http_filter_config_http_stream_headers,
    envoy_dynamic_module_on_http_filter_config_http_stream_data,
    envoy_dynamic_module_on_http_filter_config_http_stream_trailers,
    envoy_dynamic_module_on_http_filter_config_http_stream_complete,
    envoy_dynamic_module_on_http_filter_config_http_stream_reset,
);
