//! A do-nothing HTTP filter for Envoy's dynamic modules (Envoy 1.40.0): every hook Envoy requires
//! is exported and lets the stream go on untouched. Envoy opens the module with `RTLD_NOW` and
//! refuses a filter configuration unless every HTTP hook is there, so even doing nothing takes
//! the whole list. The signatures follow Envoy 1.40.0's `source/extensions/dynamic_modules/abi.h`;
//! arguments this module never reads are declared as what they are in the C ABI (pointers and
//! integers), not interpreted.

// Exporting unmangled symbols is what a dynamic module is.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_void};

/// The ABI version Envoy 1.40.0 accepts without a warning.
const ABI_VERSION: &[u8] = b"v0.2.0\0";

/// Envoy treats a null module pointer as a failed configuration: hand it this address instead.
static NOTHING: u8 = 0;

fn non_null() -> *const c_void {
    std::ptr::from_ref(&NOTHING).cast()
}

/// Status hooks answer 0: "continue".
const CONTINUE: u32 = 0;

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    ABI_VERSION.as_ptr().cast()
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    _config_envoy: *mut c_void,
    _name_ptr: *const c_char,
    _name_len: usize,
    _config_ptr: *const c_char,
    _config_len: usize,
) -> *const c_void {
    non_null()
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(_config: *const c_void) {}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_new(
    _name_ptr: *const c_char,
    _name_len: usize,
    _config_ptr: *const c_char,
    _config_len: usize,
) -> *const c_void {
    non_null()
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_destroy(_config: *const c_void) {}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(
    _config: *const c_void,
    _filter_envoy: *mut c_void,
) -> *const c_void {
    non_null()
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(_filter: *const c_void) {}

/// Stream hooks: each lets the stream go on.
macro_rules! continue_hooks {
    ($($name:ident($($arg:ident: $ty:ty),*)),* $(,)?) => {
        $(
            #[unsafe(no_mangle)]
            pub extern "C" fn $name(_filter_envoy: *mut c_void, _filter: *const c_void $(, $arg: $ty)*) -> u32 {
                $(let _ = $arg;)*
                CONTINUE
            }
        )*
    };
}

continue_hooks!(
    envoy_dynamic_module_on_http_filter_request_headers(end_of_stream: bool),
    envoy_dynamic_module_on_http_filter_request_body(end_of_stream: bool),
    envoy_dynamic_module_on_http_filter_request_trailers(),
    envoy_dynamic_module_on_http_filter_response_headers(end_of_stream: bool),
    envoy_dynamic_module_on_http_filter_response_body(end_of_stream: bool),
    envoy_dynamic_module_on_http_filter_response_trailers(),
);

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_local_reply(
    _filter_envoy: *mut c_void,
    _filter: *const c_void,
    _response_code: u32,
    _details_ptr: *const c_char,
    _details_len: usize,
    _reset_imminent: bool,
) -> u32 {
    CONTINUE
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    _filter_envoy: *mut c_void,
    _filter: *const c_void,
) {
}

/// Hooks of features this module never starts (callouts, streams, scheduling) and of
/// watermarks: Envoy requires them; they are never called.
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
    envoy_dynamic_module_on_http_filter_scheduled,
    envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark,
    envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark,
    envoy_dynamic_module_on_http_filter_config_scheduled,
    envoy_dynamic_module_on_http_filter_config_http_callout_done,
    envoy_dynamic_module_on_http_filter_config_http_stream_headers,
    envoy_dynamic_module_on_http_filter_config_http_stream_data,
    envoy_dynamic_module_on_http_filter_config_http_stream_trailers,
    envoy_dynamic_module_on_http_filter_config_http_stream_complete,
    envoy_dynamic_module_on_http_filter_config_http_stream_reset,
);
